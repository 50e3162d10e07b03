// A real WorkloadContext over a fresh directory on tmpfs (/dev/shm), as the lifecycle gives one.
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { WorkloadContext } from '../../src/workloads/types.ts';

export interface TestContext extends WorkloadContext {
  root: string;
  lines: string[];
  abort: AbortController;
  /** Names left in dataDir. */
  leftovers(): Promise<string[]>;
  dispose(): Promise<void>;
}

export async function testContext(name: string): Promise<TestContext> {
  const root = await mkdtemp(path.join('/dev/shm', `pcow-test-${name}-`));
  const dataDir = path.join(root, 'data');
  const outDir = path.join(root, 'out');
  await mkdir(dataDir);
  await mkdir(outDir);
  const lines: string[] = [];
  const abort = new AbortController();
  return {
    cellId: name,
    dataDir,
    outDir,
    repetition: 0,
    signal: abort.signal,
    nativeBin: '',
    log: (l) => lines.push(l),
    root,
    lines,
    abort,
    leftovers: () => readdir(dataDir),
    dispose: () => rm(root, { recursive: true, force: true }),
  };
}
