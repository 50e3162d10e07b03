// tool name → workload implementation. A new workload is added to this list.
import { fioWorkload } from './fio.ts';
import { guestFioWorkload } from './guest-fio.ts';
import { guestRedisWorkload } from './guest-redis.ts';
import { pcowBenchWorkload } from './pcow-bench.ts';
import { qemuImgBenchWorkload } from './qemu-img-bench.ts';
import type { AnyWorkload } from './types.ts';
import type { LoadOptions } from '../experiment/load.ts';

const workloads: readonly AnyWorkload[] = [
  fioWorkload,
  qemuImgBenchWorkload,
  pcowBenchWorkload,
  guestFioWorkload,
  // C7: Redis AOF / redis+pmem-AOF in the guest, over guest-fio.ts's startBackendGuest.
  guestRedisWorkload,
];

export function workloadTools(): string[] {
  return workloads.map((w) => w.tool);
}

export function getWorkload(tool: string): AnyWorkload | undefined {
  return workloads.find((w) => w.tool === tool);
}

/** loadExperiment's options for the real tools: resolve `tool:` here, suggest registered names. */
export function registryLookup(): LoadOptions {
  return { lookup: getWorkload, tools: workloadTools() };
}
