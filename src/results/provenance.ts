// Where a result came from: the harness's own version and git state.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { run } from '../util/proc.ts';
import { repoRoot } from '../util/paths.ts';
import type { Manifest } from './types.ts';

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

/** What a run's redis+pmem-AOF is made of, for the manifest (build.redis). */
export function redisProvenance(r: {
  label: string;
  server: string;
  binaryHash: string;
  version: string;
  sourceVersion: string;
  patchHash: string;
  needed: string[];
  cached: boolean;
  seconds: number;
}): NonNullable<Manifest['build']['redis']> {
  return {
    label: r.label,
    binary: r.server,
    binaryHash: r.binaryHash,
    version: r.version,
    sourceVersion: r.sourceVersion,
    patchHash: r.patchHash,
    needed: [...r.needed],
    cached: r.cached,
    seconds: Math.round(r.seconds * 10) / 10,
  };
}

/** What a run's QEMU binary is made of, for the manifest (build.qemu). */
export function qemuProvenance(q: {
  binary: string;
  binaryHash: string;
  sourceVersion: string;
  patchHash: string;
  nativeHash: string;
  cached: boolean;
  seconds: number;
}): NonNullable<Manifest['build']['qemu']> {
  return {
    binary: q.binary,
    binaryHash: q.binaryHash,
    sourceVersion: q.sourceVersion,
    patchHash: q.patchHash,
    nativeHash: q.nativeHash,
    cached: q.cached,
    seconds: Math.round(q.seconds * 10) / 10,
  };
}
