// `pcow-bench case ...` stdout (one JSON object) → typed result and samples. Pure; every error
// names the source file. The object is {tool, schema, mode: "case", case, host, params, result,
// floor (latency cases), runtime (pcow_runtime_stats_json, when an image was mapped), image}.
// Objects are loose: a newer pcow-bench may add fields.
import { z } from 'zod';
import type { MetricInfo, Sample } from './types.ts';

export class PcowBenchOutputError extends Error {
  override readonly name = 'PcowBenchOutputError';
  constructor(
    readonly source: string,
    message: string,
  ) {
    super(`${source}: ${message}`);
  }
}

const n = z.number().nonnegative();
const int = z.number().int().nonnegative();

export const Hist = z.looseObject({ count: int, p50_ns: int, p90_ns: int, p99_ns: int, mean_ns: n, min_ns: int, max_ns: int });
export type HistT = z.infer<typeof Hist>;

/** pcow_runtime_stats_json: counters and handler-side histograms. */
export const RuntimeStats = z.looseObject({
  faults: int,
  expansions: int,
  cows: int,
  cow_bytes: int,
  errors: int,
  pool_hits: int,
  pool_misses: int,
  mmaps: int,
  vmas: int,
  cluster_size: int,
  cow_unit: int,
  prealloc_depth: int,
  fault_service: Hist,
  expansion: Hist,
  cow: Hist,
  read_fill: Hist,
});
export type RuntimeStatsT = z.infer<typeof RuntimeStats>;

const Floor = z.looseObject({ faults: int, uffdio_copy: Hist.optional(), mmap_fixed_wake: Hist.optional() });
const ratio = z.number().positive().nullable();

const common = {
  tool: z.literal('pcow-bench'),
  schema: z.literal(1),
  mode: z.literal('case'),
  host: z.looseObject({ kernel: z.string(), cpus: z.number().int(), dir: z.string(), dir_fs: z.string() }),
  runtime: RuntimeStats.optional(),
  image: z.string().nullable(),
};

const Throughput = z.looseObject({ bytes_per_s: n, ops_per_s: n, rounds_bytes_per_s: z.array(n).min(1) });

export const PcowBenchCase = z.discriminatedUnion('case', [
  z.looseObject({
    ...common,
    case: z.literal('floor'),
    params: z.looseObject({ variant: z.enum(['copy', 'mmap', 'both']), faults: int }),
    result: Floor,
  }),
  z.looseObject({
    ...common,
    case: z.enum(['expansion', 'cow']),
    // cow_unit: the bytes a COW copies (cow only; outputs before it was refused for expansion carry it there too)
    params: z.looseObject({ cluster_size: int, prealloc: int, cow_unit: int.optional(), clusters: int, pace_ns: int }),
    floor: Floor,
    result: z.looseObject({ touch: Hist, p50_over_floor: ratio, p50_over_floor_mmap: ratio, vmas_in_range: z.number().int() }),
  }),
  z.looseObject({
    ...common,
    case: z.literal('steady'),
    params: z.looseObject({
      backend: z.enum(['pcow', 'raw', 'both']),
      rw: z.enum(['randread', 'randwrite', 'read', 'write']),
      bs: int,
      threads: int,
      size: int,
      seconds: n,
      cluster_size: int,
      rounds: int,
    }),
    result: z.looseObject({
      seconds_per_round: n,
      raw: Throughput.optional(),
      pcow: Throughput.optional(),
      pcow_over_raw: z.number().positive().optional(),
      /** Distribution-free 95% confidence interval of pcow_over_raw, the median of the paired round ratios (rounds >= 6; older outputs lack it). */
      pcow_over_raw_ci95: z.tuple([z.number().positive(), z.number().positive()]).optional(),
      pcow_over_raw_gmean: z.number().positive().optional(),
      ratio_min: z.number().optional(),
      ratio_max: z.number().optional(),
      faults_during_runs: int.optional(),
      vmas_in_range: z.number().int().optional(),
    }),
  }),
  z.looseObject({
    ...common,
    case: z.literal('open'),
    params: z.looseObject({ clusters: int, cluster_size: int, virtual_size: int }),
    result: z.looseObject({ build_s: n, open_s: n, map_s: n, open_map_s: n, vmas_in_range: z.number().int() }),
  }),
  z.looseObject({
    ...common,
    case: z.literal('stripes'),
    params: z.looseObject({ stripes: int, stripe_unit: int, size: int, threads: int, seconds: n, cluster_size: int }),
    result: z.looseObject({ first_touch_s: n, seqwrite_bytes_per_s: n, seqread_bytes_per_s: n, vmas_in_range: z.number().int() }),
  }),
]);
export type PcowBenchCaseT = z.infer<typeof PcowBenchCase>;

export function parsePcowBench(text: string, source: string): PcowBenchCaseT {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    const head = text.trim().slice(0, 80);
    throw new PcowBenchOutputError(source, `not valid JSON (${(e as Error).message})${head ? `: ${JSON.stringify(head)}` : ': empty output'}`);
  }
  if (doc && typeof doc === 'object' && (doc as Record<string, unknown>).mode === undefined && 'targets' in doc) {
    throw new PcowBenchOutputError(source, 'this is the full-suite output of pcow-bench; the harness reads single-case output (pcow-bench case NAME ...)');
  }
  const r = PcowBenchCase.safeParse(doc);
  if (!r.success) {
    const problems = r.error.issues.slice(0, 5).map((i) => `${i.path.map(String).join('.') || '(document)'}: ${i.message}`);
    throw new PcowBenchOutputError(source, `not pcow-bench case output: ${problems.join('; ')}`);
  }
  return r.data;
}

export const PCOW_BENCH_METRICS: MetricInfo[] = [
  { name: 'lat_p50', unit: 'ns', better: 'lower', description: 'Median latency seen by the faulting thread: a first touch (expansion), a first write after a snapshot (cow), a bare fault (floor)' },
  { name: 'lat_p90', unit: 'ns', better: 'lower', description: '90th percentile of that latency' },
  { name: 'lat_p99', unit: 'ns', better: 'lower', description: '99th percentile of that latency' },
  { name: 'lat_mean', unit: 'ns', better: 'lower', description: 'Mean of that latency' },
  { name: 'service_p50', unit: 'ns', better: 'lower', description: "Median handler-side service time of the case's faults (runtime histogram: expansion or cow)" },
  { name: 'floor_p50', unit: 'ns', better: 'lower', description: 'Median bare userfaultfd round trip (UFFDIO_COPY of a page), same process' },
  { name: 'floor_mmap_p50', unit: 'ns', better: 'lower', description: 'Median bare round trip served by mmap(MAP_FIXED) of a file page + UFFDIO_WAKE, same process' },
  { name: 'lat_p50_over_floor', unit: 'ratio', better: 'lower', description: 'lat_p50 / floor_p50 (same run)' },
  { name: 'lat_p50_over_floor_mmap', unit: 'ratio', better: 'lower', description: 'lat_p50 / floor_mmap_p50 (same run)' },
  { name: 'iops', unit: 'IOPS', better: 'higher', description: 'Accesses of bs bytes per second (steady: the pcow backend, or raw with backend raw)' },
  { name: 'bw', unit: 'B/s', better: 'higher', description: 'Bytes per second (steady: the pcow backend, or raw with backend raw)' },
  { name: 'iops_raw', unit: 'IOPS', better: 'higher', description: 'Accesses per second of the raw file mmap measured in the same run (backend both)' },
  { name: 'bw_raw', unit: 'B/s', better: 'higher', description: 'Bytes per second of the raw file mmap measured in the same run (backend both)' },
  { name: 'pcow_over_raw', unit: 'ratio', better: 'higher', description: 'Median over interleaved rounds of pcow / raw throughput (backend both; 1.0 = no overhead)' },
  { name: 'pcow_over_raw_ci_lo', unit: 'ratio', better: 'higher', description: 'Lower end of the 95% confidence interval of pcow_over_raw (order statistics of the paired rounds; backend both, rounds >= 6)' },
  { name: 'pcow_over_raw_ci_hi', unit: 'ratio', better: 'higher', description: 'Upper end of that 95% confidence interval' },
  { name: 'open_map_s', unit: 's', better: 'lower', description: 'pcow_open + pcow_runtime_map of an image with N allocated clusters' },
  { name: 'open_s', unit: 's', better: 'lower', description: 'pcow_open alone' },
  { name: 'map_s', unit: 's', better: 'lower', description: 'pcow_runtime_map alone' },
  { name: 'bw_write', unit: 'B/s', better: 'higher', description: 'Sequential 1 MiB write bandwidth of a striped image (all threads)' },
  { name: 'bw_read', unit: 'B/s', better: 'higher', description: 'Sequential 1 MiB read bandwidth of a striped image (all threads)' },
  { name: 'first_touch_s', unit: 's', better: 'lower', description: 'Time to allocate a whole striped image by first touches' },
  { name: 'vmas', unit: 'count', better: 'lower', description: 'Memory mappings (VMAs) of the mapped range' },
  { name: 'expansions', unit: 'count', better: 'lower', description: 'Clusters the runtime allocated on first writes (fixed by the case: a change means behaviour changed)' },
  { name: 'cows', unit: 'count', better: 'lower', description: 'Copy-on-writes the runtime served (fixed by the case)' },
  { name: 'cow_bytes', unit: 'bytes', better: 'lower', description: 'Bytes copied by the copy-on-writes (the COW unit at work)' },
  { name: 'pool_misses', unit: 'count', better: 'lower', description: 'Expansions that found no pre-allocated cluster ready' },
  { name: 'allocated_clusters', unit: 'count', better: 'lower', description: 'Data clusters of the active layer after the run (pcow-img info)' },
  { name: 'file_size', unit: 'bytes', better: 'lower', description: 'Bytes the image files take after the run (pcow-img info)' },
  { name: 'leaked_clusters', unit: 'count', better: 'lower', description: 'Leaked clusters pcow-img check reports after the run' },
];

function latency(h: HistT, prefix = 'lat'): Sample[] {
  return [
    { metric: `${prefix}_p50`, value: h.p50_ns, unit: 'ns' },
    { metric: `${prefix}_p90`, value: h.p90_ns, unit: 'ns' },
    { metric: `${prefix}_p99`, value: h.p99_ns, unit: 'ns' },
    { metric: `${prefix}_mean`, value: h.mean_ns, unit: 'ns' },
  ];
}

/** The samples of one case run (image state samples are added by the workload). */
export function pcowBenchSamples(d: PcowBenchCaseT, source: string): Sample[] {
  const fail = (m: string): never => {
    throw new PcowBenchOutputError(source, m);
  };
  const s: Sample[] = [];
  const rt = d.runtime;
  switch (d.case) {
    case 'floor': {
      const { uffdio_copy: copy, mmap_fixed_wake: mm } = d.result;
      const main = copy ?? mm ?? fail('floor result has neither uffdio_copy nor mmap_fixed_wake');
      if (main.count === 0) fail('the floor recorded no faults');
      s.push(...latency(main));
      if (copy) s.push({ metric: 'floor_p50', value: copy.p50_ns, unit: 'ns' });
      if (mm) s.push({ metric: 'floor_mmap_p50', value: mm.p50_ns, unit: 'ns' });
      break;
    }
    case 'expansion':
    case 'cow': {
      const r = d.result;
      if (r.touch.count === 0) fail(`the ${d.case} case recorded no touches`);
      if (!rt) fail(`the ${d.case} case output has no runtime stats`);
      const copy = d.floor.uffdio_copy ?? fail('no floor (uffdio_copy) measured next to the case');
      if (r.p50_over_floor === null) fail('p50_over_floor is null (a floor or touch median of 0)');
      s.push(...latency(r.touch));
      s.push({ metric: 'service_p50', value: (d.case === 'cow' ? rt!.cow : rt!.expansion).p50_ns, unit: 'ns' });
      s.push({ metric: 'floor_p50', value: copy.p50_ns, unit: 'ns' });
      if (d.floor.mmap_fixed_wake) s.push({ metric: 'floor_mmap_p50', value: d.floor.mmap_fixed_wake.p50_ns, unit: 'ns' });
      s.push({ metric: 'lat_p50_over_floor', value: r.p50_over_floor!, unit: 'ratio' });
      if (r.p50_over_floor_mmap !== null) s.push({ metric: 'lat_p50_over_floor_mmap', value: r.p50_over_floor_mmap, unit: 'ratio' });
      s.push(
        { metric: 'expansions', value: rt!.expansions, unit: 'count' },
        { metric: 'cows', value: rt!.cows, unit: 'count' },
        { metric: 'cow_bytes', value: rt!.cow_bytes, unit: 'bytes' },
        { metric: 'pool_misses', value: rt!.pool_misses, unit: 'count' },
        { metric: 'vmas', value: r.vmas_in_range, unit: 'count' },
      );
      break;
    }
    case 'steady': {
      const r = d.result;
      const be = d.params.backend;
      const main = (be === 'raw' ? r.raw : r.pcow) ?? fail(`backend ${be}: the result has no "${be === 'raw' ? 'raw' : 'pcow'}" throughput`);
      s.push({ metric: 'iops', value: main.ops_per_s, unit: 'IOPS' }, { metric: 'bw', value: main.bytes_per_s, unit: 'B/s' });
      if (be === 'both') {
        const raw = r.raw ?? fail('backend both: the result has no "raw" throughput');
        const ratioValue = r.pcow_over_raw ?? fail('backend both: the result has no pcow_over_raw');
        s.push(
          { metric: 'iops_raw', value: raw.ops_per_s, unit: 'IOPS' },
          { metric: 'bw_raw', value: raw.bytes_per_s, unit: 'B/s' },
          { metric: 'pcow_over_raw', value: ratioValue, unit: 'ratio' },
        );
        const ci = r.pcow_over_raw_ci95;
        if (ci) {
          if (!(ci[0] <= ci[1])) fail(`pcow_over_raw_ci95 [${ci[0]}, ${ci[1]}] is not an interval`);
          s.push({ metric: 'pcow_over_raw_ci_lo', value: ci[0], unit: 'ratio' }, { metric: 'pcow_over_raw_ci_hi', value: ci[1], unit: 'ratio' });
        }
      }
      if (be !== 'raw' && r.vmas_in_range !== undefined) s.push({ metric: 'vmas', value: r.vmas_in_range, unit: 'count' });
      break;
    }
    case 'open': {
      const r = d.result;
      s.push(
        { metric: 'open_map_s', value: r.open_map_s, unit: 's' },
        { metric: 'open_s', value: r.open_s, unit: 's' },
        { metric: 'map_s', value: r.map_s, unit: 's' },
        { metric: 'vmas', value: r.vmas_in_range, unit: 'count' },
      );
      break;
    }
    case 'stripes': {
      const r = d.result;
      s.push(
        { metric: 'bw_write', value: r.seqwrite_bytes_per_s, unit: 'B/s' },
        { metric: 'bw_read', value: r.seqread_bytes_per_s, unit: 'B/s' },
        { metric: 'first_touch_s', value: r.first_touch_s, unit: 's' },
        { metric: 'vmas', value: r.vmas_in_range, unit: 'count' },
      );
      if (rt) s.push({ metric: 'expansions', value: rt.expansions, unit: 'count' });
      break;
    }
  }
  for (const x of s) if (!Number.isFinite(x.value)) fail(`${x.metric} is not a finite number`);
  return s;
}
