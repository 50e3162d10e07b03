// fio's JSON report (`--output-format=json` or `json+`, written with `--output=FILE`) → a checked,
// typed report → aggregated samples. Pure functions: no I/O, every error names the source file.
//
// Aggregation rules (what a "sample" means):
// - Totals are over every job entry and every direction that did I/O: iops and bw are summed
//   (jobs run concurrently; read and write of one job share its runtime).
// - Latency is fio's completion latency (clat_ns). A single part is exact. Several parts are
//   exact when fio merged them itself (group_reporting merges jobs, unified_rw_reporting=both
//   adds a `mixed` direction) or when json+ histogram bins are present (merged here with fio's
//   own percentile rule); otherwise percentiles are N-weighted means of the parts' percentiles,
//   which is an approximation and is reported as a warning.
import { getSystemErrorMap } from 'node:util';
import { z } from 'zod';
import type { Sample } from './types.ts';

export class FioReportError extends Error {
  override readonly name = 'FioReportError';
  constructor(
    readonly source: string,
    message: string,
  ) {
    super(`${source}: ${message}`);
  }
}

/** A job that fio reports with a non-zero `error`. */
export interface FioJobFailure {
  job: string;
  groupid: number;
  /** Index in `jobs[]`. */
  index: number;
  errno: number;
  /** e.g. "EOPNOTSUPP (Operation not supported)". */
  errnoText: string;
}

export class FioJobError extends Error {
  override readonly name = 'FioJobError';
  constructor(
    readonly source: string,
    readonly failures: FioJobFailure[],
    hint?: string,
  ) {
    const list = failures.map((f) => `job "${f.job}" (jobs[${f.index}], group ${f.groupid}) failed with error ${f.errno} ${f.errnoText}`);
    super(`${source}: ${list.join('; ')}${hint ? ` — ${hint}` : ''}`);
  }
}

const num = z.number();
const count = z.number().int().nonnegative();

const LatencyStats = z.looseObject({
  min: num,
  max: num,
  mean: num,
  N: count,
  /** "50.000000" → ns. Absent when N is 0 or percentiles are off. */
  percentile: z.record(z.string(), num).optional(),
  /** json+ only: latency histogram, bucket value (ns) → count. */
  bins: z.record(z.string(), count).optional(),
});

const DirectionStats = z.looseObject({
  io_bytes: count,
  bw_bytes: num,
  iops: num,
  runtime: count,
  total_ios: count,
  clat_ns: LatencyStats,
  lat_ns: LatencyStats,
});

const SyncStats = z.looseObject({ total_ios: count, lat_ns: LatencyStats });

const Job = z.looseObject({
  jobname: z.string(),
  groupid: count,
  error: count,
  read: DirectionStats.optional(),
  write: DirectionStats.optional(),
  trim: DirectionStats.optional(),
  mixed: DirectionStats.optional(),
  sync: SyncStats.optional(),
  job_runtime: count.optional(),
  usr_cpu: num.optional(),
  sys_cpu: num.optional(),
});

const Report = z.looseObject({
  'fio version': z.string(),
  jobs: z.array(Job),
});

export type FioLatencyStats = z.infer<typeof LatencyStats>;
export type FioDirectionStats = z.infer<typeof DirectionStats>;
export type FioJob = z.infer<typeof Job>;

export interface FioReport {
  source: string;
  fioVersion: string;
  jobs: FioJob[];
  /** Non-JSON lines fio put before or after the report (kept, not fatal). */
  noise: string[];
}

function issuePath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : /^[A-Za-z_]\w*$/.test(String(seg)) ? `${out ? '.' : ''}${String(seg)}` : `[${JSON.stringify(String(seg))}]`;
  return out || '(document)';
}

/**
 * Parse fio's JSON output. Throws FioReportError (naming `sourceName` and the JSON path) when the
 * text is empty, not JSON, or lacks a field the aggregation reads. Job errors are not thrown
 * here: see fioJobFailures / assertNoFioJobErrors.
 */
export function parseFioJson(text: string, sourceName: string): FioReport {
  if (text.trim() === '') throw new FioReportError(sourceName, 'empty: fio wrote no JSON report');
  // fio can print notes into its --output file around the JSON document; keep them as noise.
  const start = text.search(/^\{/m);
  const end = text.lastIndexOf('}');
  if (start < 0 || end < start) throw new FioReportError(sourceName, `no JSON object found (starts with ${JSON.stringify(text.slice(0, 60))})`);
  const noise = [...text.slice(0, start).split('\n'), ...text.slice(end + 1).split('\n')].map((l) => l.trim()).filter((l) => l !== '');
  let doc: unknown;
  try {
    doc = JSON.parse(text.slice(start, end + 1));
  } catch (e) {
    throw new FioReportError(sourceName, `not valid JSON: ${(e as Error).message}`);
  }
  const r = Report.safeParse(doc);
  if (!r.success) {
    const problems = r.error.issues.slice(0, 5).map((i) => `${issuePath(i.path)}: ${i.message}`);
    throw new FioReportError(sourceName, `not a fio JSON report: ${problems.join('; ')}`);
  }
  const jobs = r.data.jobs;
  if (jobs.length === 0) throw new FioReportError(sourceName, 'jobs: the report lists no jobs');
  jobs.forEach((j, i) => {
    if (j.error !== 0) return; // a failed job may lack its statistics
    if (!j.mixed && !(j.read && j.write)) {
      throw new FioReportError(sourceName, `jobs[${i}] ("${j.jobname}"): has neither read/write statistics nor a mixed section`);
    }
  });
  return { source: sourceName, fioVersion: r.data['fio version'], jobs, noise };
}

// strerror texts for what fio jobs commonly fail with; node's own map is libuv's wording.
const ERRNO_TEXT: Record<number, [string, string]> = {
  1: ['EPERM', 'Operation not permitted'],
  2: ['ENOENT', 'No such file or directory'],
  5: ['EIO', 'Input/output error'],
  6: ['ENXIO', 'No such device or address'],
  9: ['EBADF', 'Bad file descriptor'],
  11: ['EAGAIN', 'Resource temporarily unavailable'],
  12: ['ENOMEM', 'Cannot allocate memory'],
  13: ['EACCES', 'Permission denied'],
  14: ['EFAULT', 'Bad address'],
  16: ['EBUSY', 'Device or resource busy'],
  17: ['EEXIST', 'File exists'],
  19: ['ENODEV', 'No such device'],
  20: ['ENOTDIR', 'Not a directory'],
  21: ['EISDIR', 'Is a directory'],
  22: ['EINVAL', 'Invalid argument'],
  24: ['EMFILE', 'Too many open files'],
  27: ['EFBIG', 'File too large'],
  28: ['ENOSPC', 'No space left on device'],
  30: ['EROFS', 'Read-only file system'],
  38: ['ENOSYS', 'Function not implemented'],
  84: ['EILSEQ', 'Invalid or incomplete multibyte or wide character (fio: verify failure)'],
  95: ['EOPNOTSUPP', 'Operation not supported'],
  110: ['ETIMEDOUT', 'Connection timed out'],
};

export function errnoText(errno: number): string {
  const known = ERRNO_TEXT[errno] ?? getSystemErrorMap().get(-errno);
  return known ? `${known[0]} (${known[1]})` : '(unknown errno)';
}

export function fioJobFailures(report: FioReport): FioJobFailure[] {
  return report.jobs.flatMap((j, index) =>
    j.error === 0 ? [] : [{ job: j.jobname, groupid: j.groupid, index, errno: j.error, errnoText: errnoText(j.error) }],
  );
}

/** Throw FioJobError naming every failed job (jobs[].error != 0); `hint` is appended when given. */
export function assertNoFioJobErrors(report: FioReport, hint?: (failures: FioJobFailure[]) => string | undefined): void {
  const failures = fioJobFailures(report);
  if (failures.length > 0) throw new FioJobError(report.source, failures, hint?.(failures));
}

// ---------------------------------------------------------------------------------------------
// Aggregation

export interface LatencySummary {
  /** Number of completions the latency covers. */
  n: number;
  mean: number;
  p50: number;
  p99: number;
  p999: number;
  /** False when the percentiles are N-weighted means of several parts' percentiles. */
  exact: boolean;
}

export interface DirectionSummary {
  ios: number;
  ioBytes: number;
  iops: number;
  /** Bytes per second. */
  bw: number;
  /** Completion latency (clat_ns), ns. */
  clat: LatencySummary;
  /** Total latency (submission + completion, lat_ns) mean, ns. */
  latTotalMean: number;
}

export interface FioSummary {
  total: DirectionSummary;
  read?: DirectionSummary;
  write?: DirectionSummary;
  trim?: DirectionSummary;
  /** fsync/fdatasync statistics when the job issued any. */
  sync?: { ios: number; latMean: number };
  /** Directions that did I/O. */
  directions: ('read' | 'write' | 'trim')[];
  warnings: string[];
}

interface Part {
  ios: number;
  ioBytes: number;
  iops: number;
  bw: number;
  clat: LatencySummary;
  clatBins?: Map<number, number>;
  latTotalN: number;
  latTotalMean: number;
}

function percentileOf(stats: FioLatencyStats, p: number, where: string, source: string): number {
  const entries = Object.entries(stats.percentile ?? {});
  const hit = entries.find(([k]) => Math.abs(Number(k) - p) < 1e-6);
  if (!hit) throw new FioReportError(source, `${where}.clat_ns.percentile: no ${p}th percentile (fio's percentile_list must include 50, 99 and 99.9)`);
  return hit[1];
}

function toPart(d: FioDirectionStats, where: string, source: string): Part {
  const c = d.clat_ns;
  const bins = c.bins ? new Map(Object.entries(c.bins).map(([k, v]) => [Number(k), v] as [number, number])) : undefined;
  return {
    ios: d.total_ios,
    ioBytes: d.io_bytes,
    iops: d.iops,
    bw: d.bw_bytes,
    clat: {
      n: c.N,
      mean: c.mean,
      p50: percentileOf(c, 50, where, source),
      p99: percentileOf(c, 99, where, source),
      p999: percentileOf(c, 99.9, where, source),
      exact: true,
    },
    ...(bins ? { clatBins: bins } : {}),
    latTotalN: d.lat_ns.N,
    latTotalMean: d.lat_ns.mean,
  };
}

/** fio's rule (stat.c calc_clat_percentiles): the first bucket whose cumulative count reaches p% of N. */
export function percentileFromBins(bins: Map<number, number>, p: number): number {
  const sorted = [...bins.entries()].filter(([, c]) => c > 0).sort((a, b) => a[0] - b[0]);
  const n = sorted.reduce((s, [, c]) => s + c, 0);
  if (n === 0) return 0;
  const want = (p / 100) * n;
  let sum = 0;
  for (const [v, c] of sorted) {
    sum += c;
    if (sum >= want) return v;
  }
  return sorted[sorted.length - 1]![0];
}

function weighted(parts: Part[], value: (p: Part) => number, weight: (p: Part) => number): number {
  const w = parts.reduce((s, p) => s + weight(p), 0);
  return w === 0 ? 0 : parts.reduce((s, p) => s + value(p) * weight(p), 0) / w;
}

function combine(parts: Part[]): Part {
  if (parts.length === 1) return parts[0]!;
  const n = parts.reduce((s, p) => s + p.clat.n, 0);
  const base = {
    ios: parts.reduce((s, p) => s + p.ios, 0),
    ioBytes: parts.reduce((s, p) => s + p.ioBytes, 0),
    iops: parts.reduce((s, p) => s + p.iops, 0),
    bw: parts.reduce((s, p) => s + p.bw, 0),
    latTotalN: parts.reduce((s, p) => s + p.latTotalN, 0),
    latTotalMean: weighted(parts, (p) => p.latTotalMean, (p) => p.latTotalN),
  };
  const mean = weighted(parts, (p) => p.clat.mean, (p) => p.clat.n);
  if (parts.every((p) => p.clatBins)) {
    const bins = new Map<number, number>();
    for (const p of parts) for (const [v, c] of p.clatBins!) bins.set(v, (bins.get(v) ?? 0) + c);
    const pct = (q: number): number => percentileFromBins(bins, q);
    return { ...base, clatBins: bins, clat: { n, mean, p50: pct(50), p99: pct(99), p999: pct(99.9), exact: true } };
  }
  const w = (f: (l: LatencySummary) => number): number => weighted(parts, (p) => f(p.clat), (p) => p.clat.n);
  return { ...base, clat: { n, mean, p50: w((l) => l.p50), p99: w((l) => l.p99), p999: w((l) => l.p999), exact: false } };
}

function toSummary(p: Part): DirectionSummary {
  return { ios: p.ios, ioBytes: p.ioBytes, iops: p.iops, bw: p.bw, clat: p.clat, latTotalMean: p.latTotalMean };
}

const DIRECTIONS = ['read', 'write', 'trim'] as const;

/**
 * Aggregate a report (see the file comment). Throws FioJobError if any job failed and
 * FioReportError if no job did any I/O or a needed percentile is missing.
 */
export function summarizeFio(report: FioReport): FioSummary {
  assertNoFioJobErrors(report);
  const src = report.source;
  const warnings: string[] = [];
  const groups = new Set(report.jobs.map((j) => j.groupid));
  if (groups.size > 1) warnings.push(`${groups.size} reporting groups summed as if they ran concurrently (stonewall/new_group runs them one after another)`);

  const perDir: Record<(typeof DIRECTIONS)[number], Part[]> = { read: [], write: [], trim: [] };
  const jobTotals: Part[] = [];
  let syncIos = 0;
  let syncLatSum = 0;
  report.jobs.forEach((j, i) => {
    const active: Part[] = [];
    for (const d of DIRECTIONS) {
      const s = j[d];
      if (s && s.total_ios > 0) {
        const part = toPart(s, `jobs[${i}].${d}`, src);
        perDir[d].push(part);
        active.push(part);
      }
    }
    if (j.mixed && j.mixed.total_ios > 0) jobTotals.push(toPart(j.mixed, `jobs[${i}].mixed`, src));
    else if (active.length > 0) jobTotals.push(combine(active));
    if (j.sync && j.sync.total_ios > 0) {
      syncIos += j.sync.total_ios;
      syncLatSum += j.sync.lat_ns.mean * j.sync.total_ios;
    }
  });
  if (jobTotals.length === 0) throw new FioReportError(src, 'no job did any I/O (every direction has total_ios 0)');

  const total = combine(jobTotals);
  const summary: FioSummary = { total: toSummary(total), directions: [], warnings };
  for (const d of DIRECTIONS) {
    if (perDir[d].length === 0) continue;
    const c = combine(perDir[d]);
    summary[d] = toSummary(c);
    summary.directions.push(d);
    if (!c.clat.exact) warnings.push(`${d} latency percentiles approximated from ${perDir[d].length} jobs (use group_reporting or json+)`);
  }
  if (!total.clat.exact) warnings.push(`total latency percentiles approximated (N-weighted mean over ${jobTotals.length > 1 ? 'jobs' : 'directions'}; use group_reporting and unified_rw_reporting=both, or json+)`);
  if (syncIos > 0) summary.sync = { ios: syncIos, latMean: syncLatSum / syncIos };
  return summary;
}

function latencySamples(prefix: string, d: DirectionSummary): Sample[] {
  return [
    { metric: `${prefix}iops`, value: d.iops, unit: 'IOPS' },
    { metric: `${prefix}bw`, value: d.bw, unit: 'B/s' },
    { metric: `${prefix}lat_mean`, value: d.clat.mean, unit: 'ns' },
    { metric: `${prefix}lat_p50`, value: d.clat.p50, unit: 'ns' },
    { metric: `${prefix}lat_p99`, value: d.clat.p99, unit: 'ns' },
    { metric: `${prefix}lat_p999`, value: d.clat.p999, unit: 'ns' },
  ];
}

/** Samples: totals always; read_/write_/trim_ ones when more than one direction did I/O. */
export function fioSamples(s: FioSummary): Sample[] {
  const out = [...latencySamples('', s.total), { metric: 'lat_total_mean', value: s.total.latTotalMean, unit: 'ns' }];
  if (s.directions.length > 1) for (const d of s.directions) out.push(...latencySamples(`${d}_`, s[d]!));
  if (s.sync) out.push({ metric: 'sync_lat_mean', value: s.sync.latMean, unit: 'ns' });
  return out;
}
