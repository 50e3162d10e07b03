// Where a result came from: the harness's own version and git state.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../util/proc.ts';

/** The repository root (this file lives in src/results/). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface HarnessInfo {
  version: string;
  commit: string | null;
  dirty: boolean | null;
  node: string;
}

export async function harnessInfo(): Promise<HarnessInfo> {
  const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version?: string };
  const head = await run('git', ['-C', repoRoot, 'rev-parse', 'HEAD']);
  const status = await run('git', ['-C', repoRoot, 'status', '--porcelain', '--untracked-files=no']);
  return {
    version: pkg.version ?? '0.0.0',
    // Not a git checkout (e.g. an unpacked tarball): say so rather than guess.
    commit: head.exitCode === 0 ? head.stdout.trim() : null,
    dirty: status.exitCode === 0 ? status.stdout.trim() !== '' : null,
    node: process.version,
  };
}
