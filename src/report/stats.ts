// Statistics over repetitions: mean, spread and a Student's t 95% confidence interval of the mean.
// Benchmarks run few repetitions (2-10), where the normal 1.96 badly understates the interval,
// so the t critical value is exact: a table for small df, the inverted t distribution beyond it.
import type { AxisScalar } from '../experiment/schema.ts';
import type { SampleRow } from '../results/types.ts';

export interface Summary {
  n: number;
  mean: number;
  /** Sample standard deviation (n-1); null when n = 1. */
  sd: number | null;
  min: number;
  max: number;
  median: number;
  /** Bounds of the 95% confidence interval of the mean; null when n = 1 (no interval exists). */
  ci95Low: number | null;
  ci95High: number | null;
  /** Half the interval's width (t * sd / sqrt(n)); null when n = 1. */
  ci95Half: number | null;
  /** Coefficient of variation sd/|mean|; null when n = 1 or mean = 0. */
  cv: number | null;
  /** Why a field is null, for display ("n=1: no confidence interval"). */
  note?: string;
}

/** Two-sided 95% Student's t critical values t(0.975, df) for df = 1..30. */
const T975: readonly number[] = [
  12.706204736, 4.30265273, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252,
  2.306004135, 2.262157163, 2.228138852, 2.20098516, 2.17881283, 2.160368656, 2.144786688,
  2.131449546, 2.119905299, 2.109815578, 2.10092204, 2.093024054, 2.085963447, 2.079613845,
  2.073873068, 2.06865761, 2.063898562, 2.059538553, 2.055529439, 2.051830516, 2.048407142,
  2.045229642, 2.042272456,
];

/** t(0.975, df): the table for df <= 30, the inverted distribution function beyond. */
export function tCritical95(df: number): number {
  if (!Number.isInteger(df) || df < 1) throw new Error(`tCritical95: degrees of freedom must be an integer >= 1, got ${df}`);
  const tabled = T975[df - 1];
  if (tabled !== undefined) return tabled;
  return tQuantileTwoSided(df, 0.05);
}

/**
 * The t with P(|T| > t) = alpha for T ~ Student(df), by bisection on the distribution function.
 * Exported so tests can check the table against it.
 */
export function tQuantileTwoSided(df: number, alpha: number): number {
  if (!(df > 0)) throw new Error(`tQuantileTwoSided: df must be > 0, got ${df}`);
  if (!(alpha > 0 && alpha < 1)) throw new Error(`tQuantileTwoSided: alpha must be in (0, 1), got ${alpha}`);
  // P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2), decreasing in t.
  const tail = (t: number): number => regularizedIncompleteBeta(df / (df + t * t), df / 2, 0.5);
  let lo = 0;
  let hi = 1;
  while (tail(hi) > alpha) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-12 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (tail(mid) > alpha) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

function logGamma(x: number): number {
  // Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for x > 0.
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
    -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
    1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const xm = x - 1;
  let a = c[0] as number;
  const t = xm + 7.5;
  for (let i = 1; i < 9; i++) a += (c[i] as number) / (xm + i);
  return 0.5 * Math.log(2 * Math.PI) + (xm + 0.5) * Math.log(t) - t + Math.log(a);
}

/** I_x(a, b) by the continued fraction (Numerical Recipes' betacf), using the symmetry for convergence. */
function regularizedIncompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x));
  if (x < (a + 1) / (a + b + 2)) return (front * betaContinuedFraction(x, a, b)) / a;
  return 1 - (front * betaContinuedFraction(1 - x, b, a)) / b;
}

function betaContinuedFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 1000; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return h;
}

export function summarize(values: readonly number[]): Summary {
  const n = values.length;
  if (n === 0) throw new Error('summarize: no values (a group of samples must hold at least one)');
  values.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`summarize: value ${i} is not a finite number (${String(v)})`);
  });
  const sorted = [...values].sort((a, b) => a - b);
  const mean = sorted[0] === sorted[n - 1] ? (sorted[0] as number) : values.reduce((s, v) => s + v, 0) / n;
  const mid = Math.floor(n / 2);
  const median = n % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  const base = { n, mean, min: sorted[0] as number, max: sorted[n - 1] as number, median };
  if (n === 1) {
    return { ...base, sd: null, ci95Low: null, ci95High: null, ci95Half: null, cv: null, note: 'n=1: no confidence interval' };
  }
  // Equal values get exactly 0: summing squared rounding residues would give a tiny false spread.
  const sd = base.min === base.max ? 0 : Math.sqrt(values.reduce((s, v) => s + (v - mean) * (v - mean), 0) / (n - 1));
  const half = (tCritical95(n - 1) * sd) / Math.sqrt(n);
  const cv = mean === 0 ? null : sd / Math.abs(mean);
  return {
    ...base,
    sd,
    ci95Low: mean - half,
    ci95High: mean + half,
    ci95Half: half,
    cv,
    ...(cv === null ? { note: 'mean is 0: no coefficient of variation' } : {}),
  };
}

/** Fields of a SampleRow that may be grouped by besides the axes (an axis of the same name wins). */
const ROW_FIELDS = ['cell', 'cellHash', 'workload', 'tool', 'metric', 'unit'] as const;

export interface SampleGroup {
  /** The grouping key: one value per name in `by`. */
  key: Record<string, AxisScalar>;
  rows: SampleRow[];
  values: number[];
}

/** The value a row has for a grouping name: its axis of that name, else one of its own fields. */
export function groupValue(row: SampleRow, name: string): AxisScalar | undefined {
  if (Object.hasOwn(row.axes, name)) return row.axes[name];
  if ((ROW_FIELDS as readonly string[]).includes(name)) return row[name as (typeof ROW_FIELDS)[number]];
  return undefined;
}

/**
 * Groups rows by the values of `by` (axis names, or cell/workload/tool/metric/unit), in the order
 * each group is first seen. A row lacking one of the names is an error naming the row's cell.
 */
export function groupSamples(rows: readonly SampleRow[], by: readonly string[]): SampleGroup[] {
  const groups = new Map<string, SampleGroup>();
  rows.forEach((row, i) => {
    const key: Record<string, AxisScalar> = {};
    for (const name of by) {
      const v = groupValue(row, name);
      if (v === undefined) {
        throw new Error(`groupSamples: sample ${i} (cell ${row.cell}, metric ${row.metric}) has no axis or field "${name}"`);
      }
      key[name] = v;
    }
    // Type-tagged so that the number 1 and the string "1" stay apart.
    const k = JSON.stringify(by.map((name) => [typeof key[name], key[name]]));
    let g = groups.get(k);
    if (!g) {
      g = { key, rows: [], values: [] };
      groups.set(k, g);
    }
    g.rows.push(row);
    g.values.push(row.value);
  });
  return [...groups.values()];
}

/**
 * The p-quantile (0 <= p <= 1) of sorted values by linear interpolation between order statistics
 * (Hyndman & Fan type 7, R's and numpy's default).
 */
export function quantile(sorted: readonly number[], p: number): number {
  const n = sorted.length;
  if (n === 0) throw new Error('quantile: no values');
  if (!(p >= 0 && p <= 1)) throw new Error(`quantile: p must be in [0, 1], got ${p}`);
  const h = (n - 1) * p;
  const lo = Math.floor(h);
  const a = sorted[lo] as number;
  const b = sorted[Math.min(lo + 1, n - 1)] as number;
  return a + (h - lo) * (b - a);
}

/** A small seeded PRNG (mulberry32): the same seed gives the same stream on every machine. */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A 32-bit seed from a string (FNV-1a), so each comparison has its own fixed stream. */
export function seedFrom(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export interface ChangeEstimate {
  /** 100 * (mean(after) / mean(before) - 1). */
  changePct: number;
  /** Percentile-bootstrap 95% interval of changePct. */
  ciLowPct: number;
  ciHighPct: number;
  iterations: number;
  seed: number;
}

/**
 * The relative change of the mean from `before` to `after` in percent, with a percentile
 * bootstrap 95% interval: both groups are resampled independently with replacement `iterations`
 * times from a seeded stream, so the same inputs always give the same interval. Means, not
 * medians: with the 3-10 repetitions of a benchmark a resampled median takes only a handful of
 * values, and the report's figures are means too. Throws when mean(before) is 0.
 */
export function bootstrapChange(
  before: readonly number[],
  after: readonly number[],
  opts: { iterations?: number; seed?: number } = {},
): ChangeEstimate {
  const iterations = opts.iterations ?? 10_000;
  const seed = opts.seed ?? 1;
  const a = summarize(before);
  const b = summarize(after);
  if (a.mean === 0) throw new Error('bootstrapChange: the mean before is 0 (no relative change exists)');
  const changes = bootstrapMeans(before, after, iterations, seed, (ma, mb) => (ma !== 0 ? 100 * (mb / ma - 1) : undefined));
  return {
    changePct: 100 * (b.mean / a.mean - 1),
    ciLowPct: quantile(changes, 0.025),
    ciHighPct: quantile(changes, 0.975),
    iterations,
    seed,
  };
}

/**
 * The statistic `stat(mean(a*), mean(b*))` over `iterations` independent resamples with replacement
 * of `a` and `b` from a seeded stream, sorted; resamples where `stat` returns undefined (no ratio
 * exists) are left out. The one resampling loop of bootstrapChange and bootstrapDifference.
 */
function bootstrapMeans(
  a: readonly number[],
  b: readonly number[],
  iterations: number,
  seed: number,
  stat: (ma: number, mb: number) => number | undefined,
): number[] {
  const rand = seededRandom(seed);
  const resampledMean = (xs: readonly number[]): number => {
    let s = 0;
    for (let i = 0; i < xs.length; i++) s += xs[Math.floor(rand() * xs.length)] as number;
    return s / xs.length;
  };
  const out: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const ma = resampledMean(a);
    const mb = resampledMean(b);
    const v = stat(ma, mb);
    if (v !== undefined) out.push(v);
  }
  return out.sort((x, y) => x - y);
}

export interface DifferenceEstimate {
  /** mean(a) - mean(b). */
  difference: number;
  /** Percentile-bootstrap 95% interval of the difference. */
  ciLow: number;
  ciHigh: number;
  iterations: number;
  seed: number;
}

/** mean(a) - mean(b) with a seeded percentile-bootstrap 95% interval (as bootstrapChange, in units). */
export function bootstrapDifference(
  a: readonly number[],
  b: readonly number[],
  opts: { iterations?: number; seed?: number } = {},
): DifferenceEstimate {
  const iterations = opts.iterations ?? 10_000;
  const seed = opts.seed ?? 1;
  const sa = summarize(a);
  const sb = summarize(b);
  const diffs = bootstrapMeans(a, b, iterations, seed, (ma, mb) => ma - mb);
  return { difference: sa.mean - sb.mean, ciLow: quantile(diffs, 0.025), ciHigh: quantile(diffs, 0.975), iterations, seed };
}
