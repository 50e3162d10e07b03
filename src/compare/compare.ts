// `pcow-harness compare BASE NEW`: per cell and metric, the change of the mean in percent with a
// seeded percentile-bootstrap 95% interval, and a verdict that needs both significance (the
// interval excludes 0) and a practical threshold (|change| above it). The direction comes from
// the workload's declaration of the metric (`better`).
//
// Why the bootstrap and not Mann-Whitney: the verdict compares the size of the change with a
// threshold in percent, and the bootstrap gives an interval of exactly that quantity; a
// Mann-Whitney p-value says only whether the two sets differ, and with 3 repetitions against 3
// it cannot go below 0.1 (two-sided), so it could never decide at the repetitions benchmarks run.
// The bootstrap's weakness, too-narrow intervals at tiny n, is what --min-reps guards against.
import path from 'node:path';
import { readRun, type RunData } from '../report/read.ts';
import { bootstrapChange, groupSamples, seedFrom } from '../report/stats.ts';
import type { CellRecord } from '../results/types.ts';
import type { MetricInfo } from '../workloads/types.ts';
import { getWorkload } from '../workloads/registry.ts';
import { formatNumber } from '../report/html.ts';
import { cellProvenance, provenanceDifferences, type ComparedField, type ProvenanceDifference } from './provenance.ts';
import { loadCalibration, noiseThreshold, type Calibration } from './calibration.ts';

export type Verdict = 'regression' | 'improvement' | 'no change' | 'inconclusive';

export const DEFAULT_THRESHOLD_PCT = 5;
export const DEFAULT_MIN_REPS = 3;
export const BOOTSTRAP_ITERATIONS = 10_000;

export interface CompareOptions {
  /** Practical threshold in percent for every metric; default: the calibrated noise, else 5. */
  thresholdPct?: number;
  /** Fewer repetitions than this on either side: inconclusive. */
  minReps?: number;
  /** Only these metrics (default: every metric both runs have). */
  metrics?: string[];
  /** Compare even when the provenance differs. */
  force?: boolean;
  /**
   * Fields whose difference is expected and accepted (e.g. qemu and libpcow when a nightly job
   * compares new code with the baseline): reported, not refused. The others still refuse.
   */
  allow?: readonly ComparedField[];
  /** Noise calibration to use instead of the one stored for the new run's host. */
  calibration?: Calibration;
  /** Where stored calibrations are looked up (default: the cache). */
  calibrationLookup?: (host: unknown, experiment: string) => Calibration | undefined;
  metricInfo?: (tool: string, metric: string) => MetricInfo | undefined;
}

export interface MetricComparison {
  cell: string;
  cellHash: string;
  metric: string;
  unit: string;
  better: 'higher' | 'lower' | null;
  nBase: number;
  nNew: number;
  baseMean: number;
  newMean: number;
  changePct: number | null;
  ciLowPct: number | null;
  ciHighPct: number | null;
  thresholdPct: number;
  thresholdSource: 'option' | 'calibration (cell)' | 'calibration (metric)' | 'default';
  verdict: Verdict;
  /** Why, in a few words ("inconclusive: n < 3", "significant, below the threshold"). */
  reason: string;
}

export interface Comparison {
  base: { dir: string; runId: string; experiment: string };
  next: { dir: string; runId: string; experiment: string };
  differences: ProvenanceDifference[];
  /** The provenance differs and --force was not given: nothing was compared. */
  refused: boolean;
  forced: boolean;
  /** Fields whose differences were accepted (--allow). */
  allowed: ComparedField[];
  rows: MetricComparison[];
  onlyBase: string[];
  onlyNew: string[];
  /** Cells in both runs with no samples on one side (failed, not run), with why. */
  noSamples: string[];
  notes: string[];
  counts: Record<Verdict, number>;
  minReps: number;
  /** Per metric over the cells that have it (2 or more): the geometric mean of new/base, as a change in percent. */
  geomean: { metric: string; cells: number; changePct: number }[];
}

function defaultMetricInfo(tool: string, metric: string): MetricInfo | undefined {
  return getWorkload(tool)?.metrics.find((m) => m.name === metric);
}

/** The verdict from an estimate: significance and the practical threshold together. */
export function judge(
  est: { changePct: number; ciLowPct: number; ciHighPct: number },
  better: 'higher' | 'lower' | null,
  thresholdPct: number,
): { verdict: Verdict; reason: string } {
  const significant = est.ciLowPct > 0 || est.ciHighPct < 0;
  const big = Math.abs(est.changePct) > thresholdPct;
  if (significant && big) {
    if (better === null) return { verdict: 'inconclusive', reason: 'changed, but the metric declares no direction' };
    const worse = better === 'higher' ? est.changePct < 0 : est.changePct > 0;
    return { verdict: worse ? 'regression' : 'improvement', reason: `significant and beyond ±${fmtPct(thresholdPct, false)}` };
  }
  if (est.ciLowPct >= -thresholdPct && est.ciHighPct <= thresholdPct) return { verdict: 'no change', reason: `interval within ±${fmtPct(thresholdPct, false)}` };
  if (significant) return { verdict: 'no change', reason: `significant but within ±${fmtPct(thresholdPct, false)}` };
  return { verdict: 'inconclusive', reason: `interval spans 0 and reaches beyond ±${fmtPct(thresholdPct, false)}: more repetitions needed` };
}

export function fmtPct(v: number | null, sign = true): string {
  if (v === null) return '—';
  const s = Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${sign && v > 0 ? '+' : ''}${s}%`;
}

export function compareRunData(base: RunData, next: RunData, opts: CompareOptions = {}): Comparison {
  const minReps = opts.minReps ?? DEFAULT_MIN_REPS;
  const metricInfo = opts.metricInfo ?? defaultMetricInfo;
  const baseCells = new Map(base.cells.map((c) => [c.hash, c]));
  const newCells = new Map(next.cells.map((c) => [c.hash, c]));
  const common = next.cells.filter((c) => baseCells.has(c.hash));
  const label = (c: CellRecord): string => `${c.id} (${c.status}${c.reason ? `: ${c.reason}` : ''})`;
  const cmp: Comparison = {
    base: { dir: base.dir, runId: base.manifest.runId, experiment: base.manifest.experiment.name },
    next: { dir: next.dir, runId: next.manifest.runId, experiment: next.manifest.experiment.name },
    differences: provenanceDifferences(base.manifest, next.manifest, common),
    refused: false,
    forced: Boolean(opts.force),
    allowed: [...(opts.allow ?? [])],
    rows: [],
    onlyBase: base.cells.filter((c) => !newCells.has(c.hash)).map((c) => c.id),
    onlyNew: next.cells.filter((c) => !baseCells.has(c.hash)).map((c) => c.id),
    noSamples: [],
    notes: [],
    counts: { regression: 0, improvement: 0, 'no change': 0, inconclusive: 0 },
    minReps,
    geomean: [],
  };
  for (const [which, run] of [['BASE', base], ['NEW', next]] as const) {
    if (run.manifest.testKnobs) cmp.notes.push(`${which} ran with test-only knobs: ${Object.entries(run.manifest.testKnobs).map(([k, v]) => `${k}=${v}`).join(' ')}`);
    if (run.manifest.status !== 'completed') cmp.notes.push(`${which} run is ${run.manifest.status}${run.manifest.error ? ` (${run.manifest.error})` : ''}`);
  }
  const names = new Set(common.map((c) => `${cellProvenance(base.manifest, c.hash).hostname} → ${cellProvenance(next.manifest, c.hash).hostname}`));
  if ([...names].some((n) => n.split(' → ')[0] !== n.split(' → ')[1])) cmp.notes.push(`host names differ (not compared, the host kind is): ${[...names].join(', ')}`);
  const allowed = cmp.differences.filter((d) => opts.allow?.includes(d.field));
  if (allowed.length) cmp.notes.push(`accepted differences (--allow): ${allowed.map((d) => `${d.field} ${d.base.slice(0, 16)} → ${d.new.slice(0, 16)}`).join(', ')}`);
  if (cmp.differences.some((d) => !opts.allow?.includes(d.field)) && !opts.force) {
    cmp.refused = true;
    return cmp;
  }

  // cell hash → metric → values, in the order the samples were written.
  const group = (run: RunData): Map<string, Map<string, number[]>> => {
    const m = new Map<string, Map<string, number[]>>();
    for (const g of groupSamples(run.samples, ['cellHash', 'metric'])) {
      const cellHash = String(g.key.cellHash);
      const byMetric = m.get(cellHash) ?? new Map<string, number[]>();
      byMetric.set(String(g.key.metric), g.values);
      m.set(cellHash, byMetric);
    }
    return m;
  };
  const baseValues = group(base);
  const newValues = group(next);
  const units = new Map(next.samples.map((s) => [`${s.cellHash}\u0000${s.metric}`, s.unit]));
  const calibrations = new Map<string, Calibration | undefined>();
  const calibrationFor = (hash: string): Calibration | undefined => {
    if (opts.calibration) return opts.calibration;
    const host = next.manifest.shards?.find((s) => s.cells.includes(hash))?.host ?? next.manifest.host;
    const key = JSON.stringify(host);
    if (!calibrations.has(key)) calibrations.set(key, (opts.calibrationLookup ?? loadCalibration)(host, next.manifest.experiment.name));
    return calibrations.get(key);
  };

  for (const cell of common) {
    const bm = baseValues.get(cell.hash) ?? new Map<string, number[]>();
    const nm = newValues.get(cell.hash) ?? new Map<string, number[]>();
    if (bm.size === 0 || nm.size === 0) {
      cmp.noSamples.push(`${cell.id}: no samples in ${bm.size === 0 ? `BASE ${label(baseCells.get(cell.hash) as CellRecord)}` : ''}${bm.size === 0 && nm.size === 0 ? ' and ' : ''}${nm.size === 0 ? `NEW ${label(cell)}` : ''}`);
      continue;
    }
    for (const metric of [...bm.keys()].filter((m) => nm.has(m) && (!opts.metrics || opts.metrics.includes(m)))) {
      const a = bm.get(metric) as number[];
      const b = nm.get(metric) as number[];
      const info = metricInfo(cell.tool, metric);
      const unit = units.get(`${cell.hash}\u0000${metric}`) ?? '';
      let thresholdPct = DEFAULT_THRESHOLD_PCT;
      let thresholdSource: MetricComparison['thresholdSource'] = 'default';
      if (opts.thresholdPct !== undefined) {
        thresholdPct = opts.thresholdPct;
        thresholdSource = 'option';
      } else {
        const cal = calibrationFor(cell.hash);
        const t = cal ? noiseThreshold(cal, cell.hash, metric) : undefined;
        if (t) {
          thresholdPct = t.pct;
          thresholdSource = t.source === 'cell' ? 'calibration (cell)' : 'calibration (metric)';
        }
      }
      const mean = (xs: number[]): number => xs.reduce((s, v) => s + v, 0) / xs.length;
      const row: MetricComparison = {
        cell: cell.id,
        cellHash: cell.hash,
        metric,
        unit,
        better: info?.better ?? null,
        nBase: a.length,
        nNew: b.length,
        baseMean: mean(a),
        newMean: mean(b),
        changePct: null,
        ciLowPct: null,
        ciHighPct: null,
        thresholdPct,
        thresholdSource,
        verdict: 'inconclusive',
        reason: '',
      };
      if (row.baseMean === 0) {
        row.reason = 'the base mean is 0: no relative change';
      } else {
        const est = bootstrapChange(a, b, { iterations: BOOTSTRAP_ITERATIONS, seed: seedFrom(`${cell.hash}/${metric}`) });
        row.changePct = est.changePct;
        row.ciLowPct = est.ciLowPct;
        row.ciHighPct = est.ciHighPct;
        if (a.length < minReps || b.length < minReps) {
          row.reason = `n < ${minReps} (${a.length} vs ${b.length} repetitions)`;
        } else {
          const j = judge(est, row.better, thresholdPct);
          row.verdict = j.verdict;
          row.reason = j.reason;
        }
      }
      cmp.rows.push(row);
      cmp.counts[row.verdict]++;
    }
  }
  // benchstat's summary row: one figure per metric for "did everything get slower a little?".
  const logs = new Map<string, number[]>();
  for (const r of cmp.rows) if (r.baseMean > 0 && r.newMean > 0) logs.set(r.metric, [...(logs.get(r.metric) ?? []), Math.log(r.newMean / r.baseMean)]);
  for (const [metric, l] of logs) if (l.length >= 2) cmp.geomean.push({ metric, cells: l.length, changePct: 100 * (Math.exp(l.reduce((s, v) => s + v, 0) / l.length) - 1) });
  const rank: Record<Verdict, number> = { regression: 0, improvement: 1, inconclusive: 2, 'no change': 3 };
  cmp.rows.sort((x, y) => rank[x.verdict] - rank[y.verdict]);
  return cmp;
}

export function compareRuns(baseDir: string, newDir: string, opts: CompareOptions = {}): Comparison {
  return compareRunData(readRun(baseDir), readRun(newDir), opts);
}

function describeDifferences(c: Comparison): string[] {
  return c.differences.filter((d) => !c.allowed.includes(d.field)).map(
    (d) => `${d.field}: BASE ${d.base} ≠ NEW ${d.new}${d.cells.length && d.cells[0] !== '(run)' ? ` (${d.cells.length} cell${d.cells.length === 1 ? '' : 's'}: ${d.cells.slice(0, 5).join(', ')}${d.cells.length > 5 ? ', …' : ''})` : ''}`,
  );
}

/** The refusal message: every differing field named. */
export function refusalMessage(c: Comparison): string {
  return `not comparable: the runs' provenance differs in ${[...new Set(c.differences.filter((d) => !c.allowed.includes(d.field)).map((d) => d.field))].join(', ')}:\n${describeDifferences(c)
    .map((l) => `  ${l}`)
    .join('\n')}\n(--force compares them anyway)`;
}

function headline(c: Comparison): string {
  const n = c.counts;
  return `${n.regression} regression${n.regression === 1 ? '' : 's'}, ${n.improvement} improvement${n.improvement === 1 ? '' : 's'}, ${n['no change']} no change, ${n.inconclusive} inconclusive`;
}

function method(c: Comparison): string {
  const sources = [...new Set(c.rows.map((r) => r.thresholdSource))];
  return `change of the mean, percentile bootstrap 95% interval (${BOOTSTRAP_ITERATIONS} resamples, seeded); a verdict needs the interval to exclude 0 and |change| above the threshold (${sources.join(', ') || 'none'}); at least ${c.minReps} repetitions per side`;
}

const num = (v: number): string => formatNumber(v);

/** Markdown for CI logs and job summaries. */
export function toMarkdown(c: Comparison): string {
  const out: string[] = [];
  out.push(`## pcow compare: ${c.next.experiment}`, '', `BASE \`${c.base.runId}\` → NEW \`${c.next.runId}\``, '');
  if (c.refused) {
    out.push(`**Not comparable**: the provenance differs (use \`--force\` to compare anyway):`, '', ...describeDifferences(c).map((l) => `- ${l}`), '');
    return `${out.join('\n')}\n`;
  }
  out.push(`**${headline(c)}**`, '', `_${method(c)}_`, '');
  if (c.geomean.length) out.push(`Geometric mean of new/base per metric: ${c.geomean.map((g) => `${g.metric} ${fmtPct(g.changePct)} (${g.cells} cells)`).join(', ')}`, '');
  if (c.forced && describeDifferences(c).length) out.push('**Forced** despite differing provenance:', '', ...describeDifferences(c).map((l) => `- ${l}`), '');
  for (const n of c.notes) out.push(`> ${n}`, '');
  if (c.rows.length) {
    out.push('| verdict | cell | metric | base | new | change | 95% CI | threshold | n | why |', '|---|---|---|---:|---:|---:|---|---:|---|---|');
    for (const r of c.rows) {
      const v = r.verdict === 'regression' ? '🔴 regression' : r.verdict === 'improvement' ? '🟢 improvement' : r.verdict === 'inconclusive' ? '⚪ inconclusive' : 'no change';
      out.push(
        `| ${v} | \`${r.cell}\` | ${r.metric}${r.better ? ` (${r.better === 'higher' ? '↑' : '↓'})` : ''} | ${num(r.baseMean)} | ${num(r.newMean)} ${r.unit} | ${fmtPct(r.changePct)} | [${fmtPct(r.ciLowPct)}, ${fmtPct(r.ciHighPct)}] | ±${fmtPct(r.thresholdPct, false)} | ${r.nBase}/${r.nNew} | ${r.reason} |`,
      );
    }
    out.push('');
  }
  if (c.onlyBase.length) out.push(`Cells only in BASE (${c.onlyBase.length}): ${c.onlyBase.map((x) => `\`${x}\``).join(', ')}`, '');
  if (c.onlyNew.length) out.push(`Cells only in NEW (${c.onlyNew.length}): ${c.onlyNew.map((x) => `\`${x}\``).join(', ')}`, '');
  if (c.noSamples.length) out.push('Cells with nothing to compare:', '', ...c.noSamples.map((x) => `- ${x}`), '');
  return `${out.join('\n')}\n`;
}

/** A plain aligned table for a terminal. */
export function toTable(c: Comparison): string {
  const out: string[] = [`compare ${path.basename(c.base.dir)} → ${path.basename(c.next.dir)} (${c.next.experiment})`];
  if (c.refused) return `${out[0]}\n${refusalMessage(c)}\n`;
  out.push(headline(c), method(c));
  if (c.geomean.length) out.push(`geomean new/base: ${c.geomean.map((g) => `${g.metric} ${fmtPct(g.changePct)} (${g.cells} cells)`).join(', ')}`);
  if (c.forced && describeDifferences(c).length) out.push(`forced despite differing provenance:\n${describeDifferences(c).map((l) => `  ${l}`).join('\n')}`);
  for (const n of c.notes) out.push(`note: ${n}`);
  const header = ['verdict', 'cell', 'metric', 'base', 'new', 'change', '95% CI', 'thr', 'n', 'why'];
  const body = c.rows.map((r) => [
    r.verdict,
    r.cell,
    `${r.metric}${r.better ? (r.better === 'higher' ? ' ↑' : ' ↓') : ''}`,
    num(r.baseMean),
    `${num(r.newMean)} ${r.unit}`,
    fmtPct(r.changePct),
    `[${fmtPct(r.ciLowPct)}, ${fmtPct(r.ciHighPct)}]`,
    `±${fmtPct(r.thresholdPct, false)}`,
    `${r.nBase}/${r.nNew}`,
    r.reason,
  ]);
  if (body.length) {
    const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] as string).length)));
    const line = (cols: string[]): string => cols.map((x, i) => (i === cols.length - 1 ? x : x.padEnd(widths[i] as number))).join('  ');
    out.push('', line(header), ...body.map(line));
  } else {
    out.push('no metric to compare');
  }
  if (c.onlyBase.length) out.push(`only in BASE (${c.onlyBase.length}): ${c.onlyBase.join(', ')}`);
  if (c.onlyNew.length) out.push(`only in NEW (${c.onlyNew.length}): ${c.onlyNew.join(', ')}`);
  for (const x of c.noSamples) out.push(`nothing to compare: ${x}`);
  return `${out.join('\n')}\n`;
}
