// Build stage for the C side (libpcow, pcow-img, later pcow-bench). make is the incremental
// cache; the source hash goes into the manifest so a result names the code that produced it.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../util/paths.ts';
import { runChecked } from '../util/proc.ts';

export const nativeDir = path.join(repoRoot, 'native');
export const nativeBinDir = path.join(nativeDir, 'build');

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
  const h = createHash('sha256');
  if (!existsSync(nativeDir)) return 'none';
  for (const f of await listSources(nativeDir)) {
    h.update(path.relative(nativeDir, f));
    h.update('\0');
    h.update(await readFile(f));
    h.update('\0');
  }
  return h.digest('hex');
}

export interface NativeBuild {
  sourceHash: string;
  binDir: string;
  durationMs: number;
}

export async function buildNative(opts: { signal?: AbortSignal; log?: (l: string) => void } = {}): Promise<NativeBuild> {
  if (!existsSync(path.join(nativeDir, 'Makefile'))) {
    throw new Error(`native/Makefile is missing in ${repoRoot}: cannot build libpcow and pcow-img`);
  }
  const started = Date.now();
  opts.log?.('build: make -C native');
  await runChecked('make', ['-C', nativeDir, '-j2'], { signal: opts.signal });
  return { sourceHash: await nativeSourceHash(), binDir: nativeBinDir, durationMs: Date.now() - started };
}
