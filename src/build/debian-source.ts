// What the builds of patched Debian packages share (QEMU: src/build/qemu.ts, Redis:
// src/build/redis.ts): the Debian source package from `apt-get source` (a deb-src entry is added
// as root when none exists), or a source directory or tarball; steps logged to the build's log
// file; the stamp that says what a cached build was made from.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { cacheDir } from '../host/cache.ts';
import { isRoot, step } from '../host/install.ts';
import type { SetupStep } from '../results/types.ts';
import { failure, run, type RunOptions } from '../util/proc.ts';

export async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export const aptEnv = { DEBIAN_FRONTEND: 'noninteractive', APT_LISTCHANGES_FRONTEND: 'none' };

/** One build's context: its name in messages ("qemu", "redis"), progress, steps and log file. */
export interface BuildCtx {
  name: string;
  signal?: AbortSignal;
  log: (line: string) => void;
  steps: SetupStep[];
  logFile: string;
}

/** Run a step, its output appended to the build log; throws with the command and the log's tail. */
export async function logged(o: BuildCtx, what: string, cmd: string, args: string[], opts: RunOptions = {}): Promise<void> {
  await appendFile(o.logFile, `\n=== ${what}: ${[cmd, ...args].join(' ')}${opts.cwd ? ` (in ${opts.cwd})` : ''}\n`);
  const r = await run(cmd, args, { signal: o.signal, ...opts });
  await appendFile(o.logFile, r.stdout + r.stderr);
  const why = failure(r);
  if (why) throw new Error(`${o.name} build: ${what} failed: ${why}\n(full log: ${o.logFile})`);
}

export interface DscInfo {
  url: string;
  file: string;
  version: string;
}

/** The Debian source package's version apt would fetch, from `apt-get source --print-uris PKG`. */
export function dscFromPrintUris(out: string, pkg: string): DscInfo | null {
  // "'http://.../qemu_7.2%2bdfsg-7.dsc' qemu_7.2+dfsg-7.dsc 5521 SHA256:...": the second field is decoded.
  const name = pkg.replace(/[.+]/g, '\\$&');
  const m = new RegExp(`^'([^']+\\.dsc)'\\s+(${name}_([^_\\s]+)\\.dsc)\\s`, 'm').exec(out);
  return m ? { url: m[1]!, file: m[2]!, version: m[3]! } : null;
}

/** deb-src entries mirroring the deb ones (deb822 .sources files or one-line lists). */
export function debSrcFrom(sources: string): string | null {
  const deb822 = sources
    .split(/\n\s*\n/)
    // "Types: deb deb-src" has deb entries; "Types: deb-src" alone does not (\bdeb\b matches it).
    .filter((stanza) => (/^Types:(.*)$/m.exec(stanza)?.[1] ?? '').trim().split(/\s+/).includes('deb'))
    .map((stanza) => stanza.replace(/^Types:.*$/m, 'Types: deb-src').trim());
  if (deb822.length > 0) return deb822.join('\n\n') + '\n';
  const lines = sources.split('\n').filter((l) => /^deb\s/.test(l.trim()));
  return lines.length > 0 ? lines.map((l) => l.trim().replace(/^deb\s/, 'deb-src ')).join('\n') + '\n' : null;
}

const DEB_SRC_FILE = '/etc/apt/sources.list.d/pcow-deb-src.sources';

/**
 * Make `apt-get source PKG` possible: add deb-src entries (as root) and apt-get update.
 * `sourceOption` names the experiment/CLI option that avoids apt (for the error message).
 */
export async function ensureDebSrc(o: BuildCtx, pkg: string, sourceOption: string): Promise<DscInfo> {
  const probe = async () => {
    const r = await run('apt-get', ['source', '--print-uris', pkg], { env: aptEnv, signal: o.signal, timeoutMs: 120_000 });
    return r.exitCode === 0 ? dscFromPrintUris(r.stdout, pkg) : null;
  };
  let dsc = await probe();
  if (dsc) return dsc;
  const candidates = ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list'];
  let text: string | null = null;
  let from = '';
  for (const c of candidates) {
    if (!existsSync(c)) continue;
    text = debSrcFrom(await readFile(c, 'utf8'));
    if (text) {
      from = c;
      break;
    }
  }
  const ext = text && !text.startsWith('Types:') ? '.list' : '.sources';
  const target = DEB_SRC_FILE.replace(/\.sources$/, ext);
  if (!isRoot() || !text) {
    throw new Error(
      `apt-get source ${pkg} needs a deb-src entry, and ${!text ? `none could be derived from ${candidates.join(' or ')}` : 'the harness is not root'}. ` +
        `As root, add one mirroring your deb entries (e.g. copy /etc/apt/sources.list.d/debian.sources to ${DEB_SRC_FILE} with "Types: deb-src"), then run:\n  apt-get update\n` +
        `or name a ${pkg} source directory or tarball (${sourceOption}).`,
    );
  }
  await writeFile(target, `# Added by the pcow harness (src/build/debian-source.ts) from ${from}: apt-get source ${pkg}\n${text}`);
  o.steps.push(step(`${o.name}-source`, `added deb-src entries to ${target} (from ${from})`));
  o.log(`${o.name}: added deb-src entries to ${target}; apt-get update`);
  const u = await run('apt-get', ['update'], { env: aptEnv, signal: o.signal, timeoutMs: 10 * 60_000 });
  const why = failure(u);
  o.steps.push(step(`${o.name}-source`, `apt-get update: ${why ?? 'ok'}`, why === null));
  if (why) throw new Error(`apt-get update after adding ${target}: ${why}`);
  dsc = await probe();
  if (!dsc) throw new Error(`apt-get source --print-uris ${pkg} found no ${pkg} source package even after adding ${target}`);
  return dsc;
}

export interface Source {
  version: string;
  /** Unpack/copy the pristine source into dest (which must not exist). */
  unpack: (dest: string) => Promise<void>;
}

/** Debian's source package PKG (with Debian's own patches applied), downloaded once into the cache. */
export async function debianSource(o: BuildCtx, pkg: string, sourceOption: string): Promise<Source> {
  const dsc = await ensureDebSrc(o, pkg, sourceOption);
  const srcCache = cacheDir(`${pkg}-src`, dsc.version);
  return {
    version: `debian:${dsc.version}`,
    unpack: async (dest) => {
      if (!existsSync(path.join(srcCache, dsc.file))) {
        // Unpinned (the file name drops the epoch, "1:"): the same candidate --print-uris named.
        o.log(`${o.name}: apt-get source --download-only ${pkg} (${dsc.file}, into ${srcCache})`);
        await logged(o, 'apt-get source', 'apt-get', ['source', '--download-only', pkg], { cwd: srcCache, env: aptEnv, timeoutMs: 10 * 60_000 });
        if (!existsSync(path.join(srcCache, dsc.file))) throw new Error(`apt-get source ${pkg} did not download ${dsc.file} into ${srcCache} (log: ${o.logFile})`);
      }
      // dpkg-source applies Debian's own patches (as the Debian package is built).
      await logged(o, 'dpkg-source -x', 'dpkg-source', ['-x', path.join(srcCache, dsc.file), dest]);
    },
  };
}

/**
 * A source directory or tarball given by the user. `check` says why a directory is not the
 * expected source tree (null when it is); `describe` names its version for the cache key.
 */
export async function localSource(
  o: BuildCtx,
  source: string,
  sourceOption: string,
  what: string,
  check: (dir: string) => string | null,
  describe: (dir: string) => Promise<string>,
): Promise<Source> {
  const abs = path.resolve(source);
  const st = await stat(abs).catch(() => null);
  if (!st) throw new Error(`${sourceOption}: ${abs} does not exist (expected ${what} source directory or tarball)`);
  if (st.isDirectory()) {
    const why = check(abs);
    if (why) throw new Error(`${sourceOption}: ${abs} is not ${what} source tree (${why})`);
    return {
      version: `dir:${abs} (${await describe(abs)})`,
      unpack: async (dest) => {
        await logged(o, 'copy source', 'cp', ['-a', '--', abs, dest]);
        await rm(path.join(dest, 'build'), { recursive: true, force: true });
      },
    };
  }
  if (!/\.tar(\.(xz|gz|bz2|zst))?$|\.tgz$/.test(abs)) throw new Error(`${sourceOption}: ${abs} is neither a directory nor a .tar[.xz|.gz|.bz2] tarball`);
  const sum = await fileSha256(abs);
  return {
    version: `tarball:${path.basename(abs)} sha256:${sum.slice(0, 16)}`,
    unpack: async (dest) => {
      await mkdir(dest, { recursive: true });
      await logged(o, 'unpack tarball', 'tar', ['-xf', abs, '-C', dest, '--strip-components=1']);
    },
  };
}

/** The first line of debian/changelog's version, if the tree has one. */
export async function debianChangelogVersion(dir: string): Promise<string | null> {
  const cl = path.join(dir, 'debian', 'changelog');
  if (!existsSync(cl)) return null;
  const first = (await readFile(cl, 'utf8')).split('\n')[0] ?? '';
  const m = /\(([^)]+)\)/.exec(first);
  return m ? m[1]! : null;
}

/** A build's stamp (JSON next to the installed files), or null when missing or unreadable. */
export async function readStamp<T>(file: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch {
    return null;
  }
}
