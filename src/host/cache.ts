// Where the harness keeps what it downloads or builds once and reuses (kernels, initramfs,
// compiled probes): $PCOW_CACHE, or <repo root>/.cache (git-ignored).
import { mkdirSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { repoRoot } from '../util/paths.ts';

/** `cacheDir('kernel', 'x')` → <cache>/kernel/x, created on demand. Parts may not climb out. */
export function cacheDir(...parts: string[]): string {
  const base = process.env.PCOW_CACHE ? resolve(process.env.PCOW_CACHE) : join(repoRoot, '.cache');
  const dir = resolve(base, ...parts);
  if (dir !== base && !dir.startsWith(base + sep)) {
    throw new Error(`cacheDir: ${JSON.stringify(parts)} leaves the cache directory ${base}`);
  }
  mkdirSync(dir, { recursive: true });
  return dir;
}
