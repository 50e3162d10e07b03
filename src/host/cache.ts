// Where the harness keeps what it downloads or builds once and reuses (kernels, initramfs,
// compiled probes, patched QEMU builds), keyed by the hash of their inputs: $PCOW_CACHE, else
// $XDG_CACHE_HOME/pcow, else ~/.cache/pcow. Outside the checkout on purpose: a fresh clone (CI,
// a second worktree) reuses a QEMU build instead of spending minutes on it again.
import { mkdirSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
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

/**
 * Run `fn` holding a lock directory, so that two harness processes never build (or probe) into
 * the same cache entry at once. A lock left by a dead process is taken over.
 */
export async function withCacheLock<T>(
  lockDir: string,
  holder: string,
  o: { log: (line: string) => void; signal?: AbortSignal },
  fn: () => Promise<T>,
): Promise<T> {
  const pidFile = join(lockDir, 'pid');
  let announced = false;
  for (;;) {
    try {
      await mkdir(lockDir);
      await writeFile(pidFile, String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
      let alive = false;
      if (pid > 0) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch {
          alive = false;
        }
      }
      if (!alive && pid > 0) {
        await rm(lockDir, { recursive: true, force: true });
        continue;
      }
      if (!announced) {
        o.log(`waiting for ${holder} (pid ${pid || '?'}, lock ${lockDir})`);
        announced = true;
      }
      if (o.signal?.aborted) throw new Error(`aborted while waiting for ${holder} (lock ${lockDir})`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockDir, { recursive: true, force: true });
  }
}
