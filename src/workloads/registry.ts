// tool name → workload implementation. A new workload is added to this list.
import type { AnyWorkload } from './types.ts';

const workloads: readonly AnyWorkload[] = [
  // fio (host dax/blk paths) and qemu-img bench are added by their modules' authors here.
];

export function workloadTools(): string[] {
  return workloads.map((w) => w.tool);
}

export function getWorkload(tool: string): AnyWorkload | undefined {
  return workloads.find((w) => w.tool === tool);
}

export function allWorkloads(): readonly AnyWorkload[] {
  return workloads;
}
