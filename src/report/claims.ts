// The paper's claims as executable checks: experiments/claims/claims.yaml says, per claim, which
// experiment, metric and cells it compares and what relation the paper reports; evaluateClaims
// checks the claims of one run against its samples, with a seeded bootstrap 95% interval.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { AxisValue } from '../experiment/schema.ts';
import type { AxisScalar } from '../experiment/schema.ts';
import type { CellRecord, Manifest, SampleRow } from '../results/types.ts';
import type { TopLevelSpec } from 'vega-lite';
import { matchesWhere } from './charts.ts';
import { bootstrapChange, bootstrapDifference, seedFrom, summarize } from './stats.ts';

export const DEFAULT_CLAIMS_FILE = fileURLToPath(new URL('../../experiments/claims/claims.yaml', import.meta.url));

const Selection = z.record(z.string(), AxisValue);

const Claim = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9][\w.-]*$/, 'expected an id such as C1-overhead'),
  /** The row of PAPER.md's table (C1..C8), or "host" for a claim measured on the host only. */
  paper: z.string().min(1),
  claim: z.string().min(1),
  experiment: z.string().min(1),
  metric: z.string().min(1),
  /** ratio = mean(numerator) / mean(denominator); difference = mean(numerator) - mean(denominator); value = mean(numerator). */
  compare: z.enum(['ratio', 'difference', 'value']),
  /** Axis values (and `workload`) every compared cell has. */
  where: Selection.default({}),
  numerator: Selection,
  denominator: Selection.optional(),
  /** Multiplies a difference or value (e.g. 0.001: ns to us), with the unit it gives. */
  scale: z.number().positive().default(1),
  unit: z.string().default(''),
  expect: z.strictObject({
    relation: z.enum(['>=', '<=', '~']),
    value: z.number(),
    /** Relative: >= holds at value*(1-tol), <= at value*(1+tol), ~ within |ours/value - 1| <= tol. */
    tolerance: z.number().min(0).max(1).default(0),
  }),
  /** What the paper reports, in words and as a number in the claim's terms. */
  paperValue: z.strictObject({ text: z.string().min(1), value: z.number() }),
  requires: z.strictObject({ accelerator: z.enum(['kvm', 'tcg', 'none']).optional(), pm: z.enum(['fsdax', 'emulated']).optional(), why: z.string().optional() }).default({}),
  minRepetitions: z.number().int().min(1).default(2),
});
export type ClaimConfig = z.infer<typeof Claim>;

const ClaimsFile = z.strictObject({ claims: z.array(Claim).min(1) });

/** Parses and checks a claims file's text; errors name the claim (by id when it has one) and the field. */
export function parseClaims(text: string, file = 'claims.yaml'): ClaimConfig[] {
  let raw: unknown;
  try {
    raw = parseYaml(text) as unknown;
  } catch (e) {
    throw new Error(`${file}: not valid YAML (${(e as Error).message})`);
  }
  const r = ClaimsFile.safeParse(raw);
  if (!r.success) {
    const list = (raw as { claims?: unknown } | null)?.claims;
    const msgs = r.error.issues.slice(0, 5).map((i) => {
      const [top, idx, ...rest] = i.path;
      if (top === 'claims' && typeof idx === 'number') {
        const id = Array.isArray(list) ? (list[idx] as { id?: unknown } | undefined)?.id : undefined;
        const who = typeof id === 'string' ? `claim ${id}` : `claim #${idx + 1}`;
        return `${who}: ${rest.length ? rest.join('.') : '(the claim)'}: ${i.message}`;
      }
      return `${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`;
    });
    throw new Error(`${file}: ${msgs.join('; ')}`);
  }
  const claims = r.data.claims;
  const seen = new Set<string>();
  for (const c of claims) {
    if (seen.has(c.id)) throw new Error(`${file}: claim ${c.id}: id: used twice`);
    seen.add(c.id);
    if (c.compare !== 'value' && !c.denominator) throw new Error(`${file}: claim ${c.id}: denominator: required when compare is ${c.compare}`);
    if (c.compare === 'value' && c.denominator) throw new Error(`${file}: claim ${c.id}: denominator: not allowed when compare is value`);
  }
  return claims;
}

export function loadClaims(file = DEFAULT_CLAIMS_FILE): ClaimConfig[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  return parseClaims(text, file);
}

export type ClaimStatus = 'held' | 'not held' | 'not run' | 'not checkable';

export interface ClaimResult {
  claim: ClaimConfig;
  status: ClaimStatus;
  /** Ours in the claim's terms (ratio, or difference/value times scale), with its 95% interval. */
  ours?: { value: number; ciLow: number | null; ciHigh: number | null; n: [number, number] | [number] };
  accelerator: string;
  pm: string;
  reason?: string;
}

function describeSel(sel: Record<string, AxisScalar>): string {
  return `{${Object.entries(sel).map(([k, v]) => `${k}: ${String(v)}`).join(', ')}}`;
}

/** Whether `ours` meets the expected relation (point estimate; the interval is shown beside it). */
export function meets(ours: number, expect: ClaimConfig['expect']): boolean {
  const { relation, value, tolerance } = expect;
  if (relation === '>=') return ours >= value * (1 - tolerance);
  if (relation === '<=') return ours <= value * (1 + tolerance);
  return value === 0 ? Math.abs(ours) <= tolerance : Math.abs(ours / value - 1) <= tolerance;
}

export function describeExpect(c: ClaimConfig): string {
  const { relation, value, tolerance } = c.expect;
  const rel = relation === '~' ? '≈' : relation === '>=' ? '≥' : '≤';
  const u = c.unit ? ` ${c.unit}` : c.compare === 'ratio' ? 'x' : '';
  return `${rel} ${value}${u}${tolerance ? ` (±${Math.round(tolerance * 100)}%)` : ''}`;
}

export interface RunForClaims {
  manifest: Manifest;
  cells: CellRecord[];
  samples: SampleRow[];
}

/** The claims of `claims` whose experiment is the run's, each checked against the run. */
export function evaluateClaims(claims: readonly ClaimConfig[], run: RunForClaims): ClaimResult[] {
  const name = run.manifest.experiment.name;
  return claims.filter((c) => c.experiment === name).map((c) => evaluateClaim(c, run));
}

export function evaluateClaim(claim: ClaimConfig, run: RunForClaims): ClaimResult {
  const accelerator = run.manifest.accelerator;
  const pm = run.manifest.pm.kind;
  const base = { claim, accelerator, pm };
  const sels = [claim.numerator, ...(claim.denominator ? [claim.denominator] : [])].map((s) => ({ ...claim.where, ...s }));
  const groups: number[][] = [];
  for (const sel of sels) {
    const cells = run.cells.filter((c) => matchesWhere(c.axes, c.workload, sel));
    if (cells.length === 0) return { ...base, status: 'not run', reason: `no cell of the run matches ${describeSel(sel)}` };
    const ids = new Set(cells.map((c) => c.id));
    const values = run.samples.filter((s) => ids.has(s.cell) && s.metric === claim.metric).map((s) => s.value);
    if (values.length === 0) {
      const bad = cells.filter((c) => c.status !== 'ok').map((c) => `${c.id} ${c.status}`);
      return { ...base, status: 'not run', reason: `no ${claim.metric} sample for ${describeSel(sel)}${bad.length ? ` (${bad.join(', ')})` : ''}` };
    }
    groups.push(values);
  }
  const seed = seedFrom(claim.id);
  const [a, b] = groups as [number[], number[] | undefined];
  let ours: ClaimResult['ours'];
  if (claim.compare === 'ratio' && b) {
    if (summarize(b).mean === 0) return { ...base, status: 'not checkable', reason: `the mean of ${claim.metric} over ${describeSel(sels[1] ?? {})} is 0: no ratio` };
    const e = bootstrapChange(b, a, { seed });
    const r = (pct: number): number => 1 + pct / 100;
    ours = { value: r(e.changePct), ciLow: r(e.ciLowPct), ciHigh: r(e.ciHighPct), n: [a.length, b.length] };
  } else if (claim.compare === 'difference' && b) {
    const e = bootstrapDifference(a, b, { seed });
    ours = { value: e.difference * claim.scale, ciLow: e.ciLow * claim.scale, ciHigh: e.ciHigh * claim.scale, n: [a.length, b.length] };
  } else {
    const s = summarize(a);
    ours = { value: s.mean * claim.scale, ciLow: s.ci95Low === null ? null : s.ci95Low * claim.scale, ciHigh: s.ci95High === null ? null : s.ci95High * claim.scale, n: [a.length] };
  }
  const unmet: string[] = [];
  if (claim.requires.accelerator && claim.requires.accelerator !== accelerator) unmet.push(accelerator.toUpperCase());
  if (claim.requires.pm && claim.requires.pm !== pm) unmet.push(pm === 'emulated' ? 'PM emulated' : `PM ${pm}`);
  if (unmet.length) {
    const why = claim.requires.why ? ` (${claim.requires.why})` : '';
    return { ...base, ours, status: 'not checkable', reason: `not checkable here: ${unmet.join(', ')}${why}` };
  }
  const fewest = Math.min(...ours.n);
  if (fewest < claim.minRepetitions) {
    return { ...base, ours, status: 'not checkable', reason: `too few repetitions (${fewest} < ${claim.minRepetitions})` };
  }
  const held = meets(ours.value, claim.expect);
  // The verdict is the point estimate's; an interval that crosses the bound is said beside it.
  const lo = ours.ciLow;
  const hi = ours.ciHigh;
  const straddles = lo !== null && hi !== null && meets(lo, claim.expect) !== meets(hi, claim.expect);
  return { ...base, ours, status: held ? 'held' : 'not held', ...(straddles ? { reason: 'the 95% interval crosses the bound' } : {}) };
}

export interface ClaimAcrossRuns extends ClaimResult {
  /** The run directory the claim was checked on (the newest run of its experiment); null: none. */
  runDir: string | null;
  runId: string | null;
}

/**
 * Every claim, each checked on the newest of `runs` that ran its experiment (one page for a set
 * of runs, e.g. the eight ci experiments); a claim whose experiment is not among them is "not
 * run", naming the experiment.
 */
export function evaluateAcrossRuns(claims: readonly ClaimConfig[], runs: readonly { dir: string; run: RunForClaims }[]): ClaimAcrossRuns[] {
  return claims.map((claim) => {
    const mine = runs
      .filter((r) => r.run.manifest.experiment.name === claim.experiment)
      .sort((a, b) => (a.run.manifest.startedAt < b.run.manifest.startedAt ? 1 : -1));
    const newest = mine[0];
    if (!newest) {
      return { claim, status: 'not run' as const, accelerator: '—', pm: '—', reason: `no run of experiment ${claim.experiment} among the runs given`, runDir: null, runId: null };
    }
    return { ...evaluateClaim(claim, newest.run), runDir: newest.dir, runId: newest.run.manifest.runId };
  });
}

function fmt(v: number): string {
  const a = Math.abs(v);
  return a !== 0 && (a < 0.01 || a >= 1e6) ? v.toExponential(2) : String(Number(v.toPrecision(3)));
}

/** "1.02x [0.97, 1.08]" or "44.1 us [30.2, 58.0]". */
export function formatOurs(r: ClaimResult): string {
  if (!r.ours) return '—';
  const u = r.claim.unit ? ` ${r.claim.unit}` : r.claim.compare === 'ratio' ? 'x' : '';
  const ci = r.ours.ciLow !== null && r.ours.ciHigh !== null ? ` [${fmt(r.ours.ciLow)}, ${fmt(r.ours.ciHigh)}]` : '';
  return `${fmt(r.ours.value)}${u}${ci}`;
}

/** The claims table as markdown, for stdout and CI logs (with a run column across runs). */
export function claimsMarkdown(results: readonly (ClaimResult & { runId?: string | null })[]): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|');
  const across = results.some((r) => r.runId !== undefined);
  const lines = [
    `| claim | paper | expected | ours (95% CI) | accelerator | PM | status | reason |${across ? ' run |' : ''}`,
    `|---|---|---|---|---|---|---|---|${across ? '---|' : ''}`,
    ...results.map(
      (r) =>
        `| ${esc(`${r.claim.id}: ${r.claim.claim}`)} | ${esc(r.claim.paperValue.text)} | ${esc(describeExpect(r.claim))} | ${esc(formatOurs(r))} | ${r.accelerator} | ${r.pm} | ${r.status} | ${esc(r.reason ?? '')} |${across ? ` ${r.runId ?? '—'} |` : ''}`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}

/** One point of the reproduced-vs-reported chart: ours over the paper's value (1 = the paper). */
export interface ClaimChartPoint {
  claim: string;
  relative: number;
  low: number | null;
  high: number | null;
  status: ClaimStatus;
}

/** Ours relative to the paper's value, for every claim that has both (and can be drawn on a log axis). */
export function claimChartPoints(results: readonly ClaimResult[]): ClaimChartPoint[] {
  const pts: ClaimChartPoint[] = [];
  for (const r of results) {
    const paper = r.claim.paperValue.value;
    if (!r.ours || paper === 0) continue;
    const rel = r.ours.value / paper;
    if (!(rel > 0) || !Number.isFinite(rel)) continue;
    const lo = r.ours.ciLow === null ? null : r.ours.ciLow / paper;
    const hi = r.ours.ciHigh === null ? null : r.ours.ciHigh / paper;
    const ok = lo !== null && hi !== null && lo > 0 && hi > 0;
    pts.push({ claim: r.claim.id, relative: rel, low: ok ? lo : null, high: ok ? hi : null, status: r.status });
  }
  return pts;
}

/**
 * Reproduced next to reported: per claim, ours divided by the paper's value with its 95% interval,
 * against a rule at 1 (the paper). Null when no claim has a value to draw.
 */
export function claimsChartSpec(results: readonly ClaimResult[]): TopLevelSpec | null {
  const values = claimChartPoints(results);
  if (values.length === 0) return null;
  const y = { field: 'claim', type: 'nominal', title: null, sort: null };
  const x = { type: 'quantitative', scale: { type: 'log' }, title: "ours / the paper's value (1 = as reported; 95% interval)" };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Reproduced next to reported',
    width: 420,
    data: { values },
    layer: [
      { data: { values: [{ one: 1 }] }, mark: { type: 'rule', strokeDash: [4, 3], color: '#667080' }, encoding: { x: { field: 'one', ...x } } },
      { transform: [{ filter: 'datum.low !== null' }], mark: { type: 'rule' }, encoding: { y, x: { field: 'low', ...x }, x2: { field: 'high' } } },
      {
        mark: { type: 'point', filled: true, size: 70 },
        encoding: {
          y,
          x: { field: 'relative', ...x },
          color: { field: 'status', type: 'nominal', scale: { domain: ['held', 'not held', 'not checkable', 'not run'], range: ['#1a7f37', '#b42318', '#9a6700', '#667080'] } },
          tooltip: [{ field: 'claim' }, { field: 'relative', format: '.3g' }, { field: 'status' }],
        },
      },
    ],
  } as TopLevelSpec; // built from typed pieces; vega-lite's union is too deep for inference
}
