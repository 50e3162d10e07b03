// A small workload registry for the experiment tests, passed through loadExperiment's `lookup`
// (the documented injection point). Only the parameter schemas and metric lists matter here:
// nothing is ever prepared or run, so the lifecycle methods refuse to be called.
import { z } from 'zod';
import { Size, SizeBytes, DurationMs } from '../../src/experiment/schema.ts';
import type { AnyWorkload, MetricInfo } from '../../src/workloads/types.ts';

const notRun = async (): Promise<never> => {
  throw new Error('the experiment tests never run a workload');
};

const metric = (name: string, unit: string, better: MetricInfo['better']): MetricInfo => ({ name, unit, better, description: name });

/** fio-like: sizes normalised to bytes (so 4k and 4096 are the same cell), durations to ms. */
export const fakeFio: AnyWorkload = {
  tool: 'fio',
  description: 'fio-shaped parameters',
  requires: [],
  params: z.strictObject({
    bs: SizeBytes.prefault('4k'),
    rw: z.enum(['read', 'write', 'randread', 'randwrite', 'randrw']).default('randread'),
    rwmixread: z.number().int().min(0).max(100).optional(),
    numjobs: z.number().int().min(1).max(64).default(1),
    iodepth: z.number().int().min(1).default(1),
    size: SizeBytes.prefault('64MiB'),
    runtime: DurationMs.prefault('10s'),
    engine: z.enum(['mmap', 'psync', 'libaio', 'libpmem']).default('psync'),
    direct: z.boolean().default(false),
  }),
  metrics: [metric('iops', 'IOPS', 'higher'), metric('bw', 'B/s', 'higher'), metric('lat_mean', 'ns', 'lower'), metric('lat_p99', 'ns', 'lower')],
  prepare: notRun,
  run: notRun,
  cleanup: notRun,
};

/** qemu-img-bench-like: `size` is required (no default), so a spec may leave it to an axis. */
export const fakeBench: AnyWorkload = {
  tool: 'qemu-img-bench',
  description: 'qemu-img bench-shaped parameters',
  requires: [],
  params: z.strictObject({
    format: z.enum(['raw', 'qcow2', 'pcow']),
    count: z.number().int().min(1).default(1000),
    depth: z.number().int().min(1).default(1),
    bs: SizeBytes.prefault('4k'),
    write: z.boolean().default(false),
  }),
  metrics: [metric('seconds', 's', 'lower'), metric('ops_per_s', 'ops/s', 'higher')],
  prepare: notRun,
  run: notRun,
  cleanup: notRun,
};

/** Keeps sizes as written: 4k and 4096 are different parameters to it. */
export const fakeVerbatim: AnyWorkload = {
  tool: 'verbatim',
  description: 'keeps sizes as written',
  requires: [],
  // A rule across two parameters, as real tools have (e.g. "bs larger than the image").
  params: z
    .strictObject({ bs: Size.default('4k'), label: z.string().default('') })
    .refine((p) => !(p.label === 'big' && p.bs === '4k'), 'label "big" needs a bs other than 4k'),
  metrics: [metric('value', 'count', 'higher')],
  prepare: notRun,
  run: notRun,
  cleanup: notRun,
};

export const fakeWorkloads: readonly AnyWorkload[] = [fakeFio, fakeBench, fakeVerbatim];
export const fakeLookup = (tool: string): AnyWorkload | undefined => fakeWorkloads.find((w) => w.tool === tool);
export const fakeTools: readonly string[] = fakeWorkloads.map((w) => w.tool);
export const fakeOpts = { lookup: fakeLookup, tools: fakeTools };
