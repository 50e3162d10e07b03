// Where the harness keeps what it downloads or builds once and reuses (kernels, initramfs,
// compiled probes): $PCOW_CACHE, or <repo root>/.cache (git-ignored).
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The repository root: the nearest ancestor of this file holding the pcow package.json. */
export function repoRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        const name: unknown = (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name;
        if (name === 'pcow') return (root = dir);
      } catch {
        // not ours, keep walking
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the pcow repository root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** `cacheDir('kernel', 'x')` → <cache>/kernel/x, created on demand. Parts may not climb out. */
export function cacheDir(...parts: string[]): string {
  const base = process.env.PCOW_CACHE ? resolve(process.env.PCOW_CACHE) : join(repoRoot(), '.cache');
  const dir = resolve(base, ...parts);
  if (dir !== base && !dir.startsWith(base + sep)) {
    throw new Error(`cacheDir: ${JSON.stringify(parts)} leaves the cache directory ${base}`);
  }
  mkdirSync(dir, { recursive: true });
  return dir;
}
