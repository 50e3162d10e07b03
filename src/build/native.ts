// Build stage for the C side: libpcow and pcow-img (make -C native), then the userfaultfd
// runtime and pcow-bench (make -C native/runtime, which asks native/ for libpcow first). Both
// tools land in native/build/, the directory workloads get as ctx.nativeBin. make is the
// incremental cache; the source hash goes into the manifest so a result names the code that
// produced it.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../util/paths.ts';
import { runChecked } from '../util/proc.ts';

export const nativeDir = path.join(repoRoot, 'native');
export const nativeBinDir = path.join(nativeDir, 'build');
export const runtimeDir = path.join(nativeDir, 'runtime');

/** The native tools workloads run, absolute, all in nativeBinDir. */
export interface NativeBins {
  pcowImg: string;
  pcowBench: string;
}

export function nativeBins(binDir: string = nativeBinDir): NativeBins {
  return { pcowImg: path.join(binDir, 'pcow-img'), pcowBench: path.join(binDir, 'pcow-bench') };
}

async function listSources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name === 'build' || e.name.startsWith('.') || e.name.startsWith('corpus')) continue;
      out.push(...(await listSources(p)));
    } else if (/\.(c|h|mk)$|^Makefile$/.test(e.name)) {
      out.push(p);
    }
  }
  return out.sort();
}

/** sha256 over native sources (path + content), stable across machines. */
export async function nativeSourceHash(): Promise<string> {
  if (!existsSync(nativeDir)) return 'none';
  return hashFiles(await listSources(nativeDir));
}

/** What QEMU links statically: libpcow and libpcow-runtime (sources, headers, Makefiles), not
 * the tests, tools or benchmarks, so that a test change does not rebuild QEMU. */
export async function nativeLibHash(): Promise<string> {
  if (!existsSync(nativeDir)) return 'none';
  const lib = (await listSources(nativeDir)).filter((f) => {
    const r = path.relative(nativeDir, f);
    return /^(src|include)\//.test(r) || r === 'Makefile' || /^runtime\/([^/]+\.[ch]|Makefile|include\/.*)$/.test(r);
  });
  return hashFiles(lib);
}

/** sha256 over files: each one's path relative to base, then its content (NUL-separated). */
export async function hashFiles(files: readonly string[], base: string = nativeDir): Promise<string> {
  const h = createHash('sha256');
  for (const f of files) {
    h.update(path.relative(base, f));
    h.update('\0');
    h.update(await readFile(f));
    h.update('\0');
  }
  return h.digest('hex');
}

export interface NativeBuild {
  sourceHash: string;
  binDir: string;
  bins: NativeBins;
  durationMs: number;
}

export async function buildNative(opts: { signal?: AbortSignal; log?: (l: string) => void } = {}): Promise<NativeBuild> {
  if (!existsSync(path.join(nativeDir, 'Makefile'))) {
    throw new Error(`native/Makefile is missing in ${repoRoot}: cannot build libpcow and pcow-img`);
  }
  if (!existsSync(path.join(runtimeDir, 'Makefile'))) {
    throw new Error(`native/runtime/Makefile is missing in ${repoRoot}: cannot build the runtime and pcow-bench`);
  }
  const started = Date.now();
  opts.log?.('build: make -C native');
  await runChecked('make', ['-C', nativeDir, '-j2'], { signal: opts.signal });
  opts.log?.('build: make -C native/runtime (libpcow-runtime, pcow-bench)');
  await runChecked('make', ['-C', runtimeDir, '-j2'], { signal: opts.signal });
  const bins = nativeBins();
  for (const b of Object.values(bins)) {
    if (!existsSync(b)) throw new Error(`the native build finished but ${b} is missing (check native/Makefile and native/runtime/Makefile)`);
  }
  return { sourceHash: await nativeSourceHash(), binDir: nativeBinDir, bins, durationMs: Date.now() - started };
}
