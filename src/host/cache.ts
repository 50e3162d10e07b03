// Where the harness keeps what it downloads or builds once and reuses (kernels, initramfs,
// compiled probes, patched QEMU builds), keyed by the hash of their inputs: $PCOW_CACHE, else
// $XDG_CACHE_HOME/pcow, else ~/.cache/pcow. Outside the checkout on purpose: a fresh clone (CI,
// a second worktree) reuses a QEMU build instead of spending minutes on it again.
import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve, sep } from 'node:path';

/** The cache's root directory (not created). */
export function cacheRoot(): string {
  if (process.env.PCOW_CACHE) return resolve(process.env.PCOW_CACHE);
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.cache'), 'pcow');
}

/** `cacheDir('kernel', 'x')` → <cache>/kernel/x, created on demand. Parts may not climb out. */
export function cacheDir(...parts: string[]): string {
  const base = cacheRoot();
  const dir = resolve(base, ...parts);
  if (dir !== base && !dir.startsWith(base + sep)) {
    throw new Error(`cacheDir: ${JSON.stringify(parts)} leaves the cache directory ${base}`);
  }
  mkdirSync(dir, { recursive: true });
  return dir;
}
