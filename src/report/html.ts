// report/index.html: one self-contained page (no scripts, no network: a Content-Security-Policy
// forbids both) with the run's provenance, every chart, every cell and links to the raw files.
import type { CellRecord, Manifest, SampleRow } from '../results/types.ts';
import type { ExperimentConfig } from '../experiment/schema.ts';
import type { MetricInfo } from '../workloads/types.ts';
import { summarize, type Summary } from './stats.ts';
import { describeExpect, formatOurs, type ClaimAcrossRuns, type ClaimResult } from './claims.ts';

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text for HTML element content and quoted attribute values. */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c] as string);
}

/** A relative URL from report/ to a file of the run: each path segment percent-encoded. */
export function hrefTo(relFromReport: string): string {
  return relFromReport
    .split('/')
    .map((s) => (s === '..' || s === '.' ? s : encodeURIComponent(s)))
    .join('/');
}

export interface FigureView {
  id: string;
  title: string;
  metric: string;
  /** The chart as SVG text; absent when it could not be drawn. */
  svg?: string;
  /** File names (relative to report/) of what was written for this figure. */
  files: { spec?: string; svg?: string; png?: string };
  /** Caveats drawn from the data (pooled cells, clipped intervals). */
  notes: string[];
  /** Cells of the figure that failed while others have data. */
  missing?: string;
  /** Why there is no chart ("no data: cells X failed (reason)", an unknown axis, a render error). */
  problem?: string;
}

export interface ReportModel {
  manifest: Manifest;
  config: ExperimentConfig;
  cells: CellRecord[];
  samples: SampleRow[];
  figures: FigureView[];
  metricInfo: (tool: string, metric: string) => MetricInfo | undefined;
  /** Run files that exist, relative to the run directory (linked from the page). */
  runFiles: string[];
  /** Cell ids whose raw output directory (cells/<id>/) exists. */
  cellDirs: Set<string>;
  warnings: string[];
  generatedAt: string;
  /** The paper's and host claims checked on this run (experiments/claims/claims.yaml); absent or empty: no section. */
  claims?: ClaimResult[];
  /** Why the claims could not be checked (an unreadable claims file), shown in their place. */
  claimsProblem?: string;
  /** The reproduced-vs-reported chart (SVG), when a claim has a value to draw. */
  claimsChart?: string;
}

const nf4 = new Intl.NumberFormat('en-US', { maximumSignificantDigits: 4 });
const nf2 = new Intl.NumberFormat('en-US', { maximumSignificantDigits: 2 });

const SI: readonly [number, string][] = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M']];

/**
 * A number for people: `digits` significant digits with separators below a million, SI prefixes
 * from there (2.15 G, the unit is in the column header), exponent form when very small or huge.
 */
export function formatNumber(v: number, digits: 2 | 4 = 4): string {
  // Round first, so that 999,999 becomes 1 M rather than 1,000,000.
  const r = Number(v.toPrecision(digits));
  const a = Math.abs(r);
  if (r !== 0 && (a < 1e-3 || a >= 1e15)) return v.toExponential(digits - 1);
  const si = SI.find(([scale]) => a >= scale);
  if (si) return `${Number((r / si[0]).toPrecision(digits))} ${si[1]}`;
  return (digits === 4 ? nf4 : nf2).format(r);
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  let s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return [h ? `${h} h` : '', m ? `${m} min` : '', `${s} s`].filter(Boolean).join(' ');
}

/** The first string found at one of `paths` ("a.b") in an unknown object (a manifest written by another version). */
export function pick(obj: unknown, paths: readonly string[]): string | undefined {
  for (const p of paths) {
    let cur: unknown = obj;
    for (const k of p.split('.')) {
      cur = cur !== null && typeof cur === 'object' && Object.hasOwn(cur, k) ? (cur as Record<string, unknown>)[k] : undefined;
    }
    if (typeof cur === 'string' && cur.trim() !== '') return cur;
    if (typeof cur === 'number') return String(cur);
  }
  return undefined;
}

function statusBadge(status: string): string {
  return `<span class="badge st-${escapeHtml(status)}">${escapeHtml(status)}</span>`;
}

function row(label: string, valueHtml: string): string {
  return `<tr><th scope="row">${escapeHtml(label)}</th><td>${valueHtml}</td></tr>`;
}

function code(v: unknown): string {
  return `<code>${escapeHtml(v)}</code>`;
}

function manifestSection(m: Manifest, config: ExperimentConfig): string {
  const started = Date.parse(m.startedAt);
  const ended = m.endedAt ? Date.parse(m.endedAt) : NaN;
  const duration = Number.isFinite(started) && Number.isFinite(ended) ? formatDuration(ended - started) : m.endedAt ? '—' : 'still running or cut off';
  const commit = m.harness.commit
    ? `${code(m.harness.commit)}${m.harness.dirty ? ' <span class="warn">dirty (uncommitted changes)</span>' : m.harness.dirty === false ? ' clean' : ' (dirty state unknown)'}`
    : '<span class="warn">not a git checkout</span>';
  const host = m.host;
  // Field names of HostProbe (src/host/probe.ts); a manifest from another version may lack any.
  const kernel = pick(host, ['kernel.release']);
  const cmdline = pick(host, ['kernel.cmdline']);
  const cpu = pick(host, ['cpu.model']);
  const cpus = pick(host, ['cpu.cores']);
  const hostname = pick(host, ['hostname']);
  const nativeHash = pick(m, ['build.native.sourceHash']);
  const nativeMs = pick(m, ['build.native.durationMs']);
  const c = m.cells;
  const counts = `${c.total} total: ${c.ok} ok${c.failed ? `, <span class="bad">${c.failed} failed</span>` : ''}${c.timeout ? `, <span class="bad">${c.timeout} timed out</span>` : ''}${c.interrupted ? `, ${c.interrupted} interrupted` : ''}${c.pending ? `, ${c.pending} pending` : ''}`;
  const rows = [
    row('status', `${statusBadge(m.status)}${m.error ? ` <span class="bad">${escapeHtml(m.error)}</span>` : ''}`),
    row('run id', code(m.runId)),
    row('started', escapeHtml(m.startedAt)),
    row('ended', escapeHtml(m.endedAt ?? '—')),
    row('duration', escapeHtml(duration)),
    row('cells', counts),
    row('repetitions per cell', `${config.repetitions} (warmup ${config.warmup}, order ${escapeHtml(config.order)})`),
    row('experiment file', `${code(m.experiment.file)} sha256 ${code(m.experiment.sha256)}`),
    row('command', code(m.command.join(' '))),
    row('harness', `${escapeHtml(m.harness.version)}, commit ${commit}, node ${escapeHtml(m.harness.node)}`),
    row(
      'accelerator',
      m.accelerator === 'tcg'
        ? `${code('tcg')} <span class="warn">(emulation: guest numbers are not hardware-speed)</span>`
        : m.accelerator === 'none'
          ? `${code('none')} <span class="dim">(no cell booted a guest)</span>`
          : code(m.accelerator),
    ),
    row('persistent memory', `${escapeHtml(m.pm.kind === 'fsdax' ? 'real fs-dax' : 'emulated (file on tmpfs)')}: ${code(m.pm.path)}${m.pm.device ? ` on ${code(m.pm.device)}` : ''}`),
    row('host kernel', kernel ? code(kernel) : '<span class="dim">not recorded</span>'),
    ...(cmdline ? [row('kernel command line', code(cmdline))] : []),
    row('host CPU', cpu ? `${escapeHtml(cpu)}${cpus ? ` (${escapeHtml(cpus)} CPUs)` : ''}` : '<span class="dim">not recorded</span>'),
    ...(hostname ? [row('host name', code(hostname))] : []),
    ...(m.shard ? [row('shard', `${m.shard.index}/${m.shard.count}: ${m.shard.cells.length} of ${m.shard.planCells} cells`)] : []),
    ...(m.shards
      ? [
          row(
            'merged from',
            m.shards
              .map(
                (s) =>
                  `shard ${s.index}/${m.shards?.length ?? 0}: ${s.cells.length} cells on ${code(pick(s.host, ['hostname']) ?? '?')} (${escapeHtml(pick(s.host, ['cpu.model']) ?? 'CPU not recorded')}), accelerator ${code(s.accelerator)}, PM ${escapeHtml(s.pm.kind)}, run ${code(s.runId)} ${statusBadge(s.status)}`,
              )
              .join('<br>'),
          ),
        ]
      : []),
    ...(m.testKnobs ? [row('test knobs', `<span class="warn">${escapeHtml(Object.entries(m.testKnobs).map(([k, v]) => `${k}=${v}`).join(' '))} (test-only: not a baseline)</span>`)] : []),
    ...(nativeHash ? [row('native build', `source sha256 ${code(nativeHash)}${nativeMs ? `, built in ${escapeHtml(formatDuration(Number(nativeMs)))}` : ''}`)] : []),
  ];
  const tools = Object.entries(m.tools);
  const toolTable = tools.length
    ? `<table class="kv tools"><caption>tool versions</caption>${tools.map(([k, v]) => row(k, v === null ? '<span class="warn">not found</span>' : code(v))).join('')}</table>`
    : '<p class="dim">no tool versions recorded</p>';
  const setup = m.setup.length
    ? `<details><summary>host setup steps (${m.setup.length}${m.setup.some((s) => !s.ok) ? `, <span class="bad">${m.setup.filter((s) => !s.ok).length} failed</span>` : ''})</summary><table class="grid"><thead><tr><th>action</th><th>detail</th><th>ok</th><th>at</th></tr></thead><tbody>${m.setup
        .map((s) => `<tr><td>${escapeHtml(s.action)}</td><td>${escapeHtml(s.detail)}</td><td>${s.ok ? 'yes' : '<span class="bad">no</span>'}</td><td>${escapeHtml(s.at)}</td></tr>`)
        .join('')}</tbody></table></details>`
    : '';
  const hostJson = host === undefined || host === null ? '' : `<details><summary>host probe (as recorded)</summary><pre>${escapeHtml(JSON.stringify(host, null, 2))}</pre></details>`;
  return `<section id="run"><h2>Run</h2><div class="cols"><table class="kv">${rows.join('')}</table>${toolTable}</div>${setup}${hostJson}</section>`;
}

function figureSection(f: FigureView): string {
  const links = [
    f.files.spec ? `<a href="${escapeHtml(hrefTo(f.files.spec))}">vega-lite spec</a>` : '',
    f.files.svg ? `<a href="${escapeHtml(hrefTo(f.files.svg))}">SVG</a>` : '',
    f.files.png ? `<a href="${escapeHtml(hrefTo(f.files.png))}">PNG</a>` : '',
  ].filter(Boolean);
  // Shown a quarter larger than vega's pixel size: the SVG scales crisply and reads better on a page.
  const size = /^<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"/.exec(f.svg ?? '');
  const dims = size ? ` width="${Math.round(Number(size[1]) * 1.25)}" height="${Math.round(Number(size[2]) * 1.25)}"` : '';
  const body = f.svg
    ? `<img class="chart"${dims} alt="${escapeHtml(`${f.title}: chart of ${f.metric}`)}" src="data:image/svg+xml;base64,${Buffer.from(f.svg, 'utf8').toString('base64')}">`
    : `<div class="nodata" role="note"><h3>${escapeHtml(f.title)}</h3><p>${escapeHtml(f.problem ?? 'no data')}</p></div>`;
  const notes = [
    ...(f.svg && f.problem ? [`<li class="bad">${escapeHtml(f.problem)}</li>`] : []),
    ...(f.missing ? [`<li class="bad">${escapeHtml(f.missing)}</li>`] : []),
    ...f.notes.map((n) => `<li>${escapeHtml(n)}</li>`),
  ];
  return `<figure class="fig" id="fig-${escapeHtml(f.id)}">${body}<figcaption><span class="figid">${escapeHtml(f.id)}</span> · metric ${code(f.metric)}${links.length ? ` · ${links.join(' · ')}` : ''}${notes.length ? `<ul class="notes">${notes.join('')}</ul>` : ''}</figcaption></figure>`;
}

interface MetricColumn {
  metric: string;
  unit: string;
  better?: 'higher' | 'lower';
}

function cellsSection(model: ReportModel): string {
  const { cells, samples, config } = model;
  const columns: MetricColumn[] = [];
  const byCell = new Map<string, Map<string, number[]>>();
  for (const s of samples) {
    if (!columns.some((c) => c.metric === s.metric)) {
      const info = model.metricInfo(s.tool, s.metric);
      columns.push({ metric: s.metric, unit: s.unit, ...(info ? { better: info.better } : {}) });
    }
    let m = byCell.get(s.cell);
    if (!m) byCell.set(s.cell, (m = new Map()));
    let vs = m.get(s.metric);
    if (!vs) m.set(s.metric, (vs = []));
    vs.push(s.value);
  }
  const axisNames: string[] = Object.keys(config.matrix.axes);
  for (const c of cells) for (const k of Object.keys(c.axes)) if (!axisNames.includes(k)) axisNames.push(k);
  const head = [
    '<th>#</th><th>cell</th>',
    ...axisNames.map((a) => `<th class="axis">${escapeHtml(a)}</th>`),
    '<th>status</th><th>repetitions ok</th>',
    ...columns.map((c) => `<th class="num" title="${escapeHtml(c.better ? `${c.better} is better` : '')}">${escapeHtml(c.metric)}${c.unit ? ` <span class="unit">(${escapeHtml(c.unit)})</span>` : ''}</th>`),
    '<th>raw</th>',
  ].join('');
  const body = cells
    .map((c) => {
      const okReps = new Set(c.repetitions.filter((r) => r.repetition >= 0 && r.status === 'ok').map((r) => r.repetition)).size;
      const badReps = c.repetitions.filter((r) => r.status !== 'ok');
      const reason = c.reason ?? badReps.find((r) => r.reason)?.reason;
      const stats = byCell.get(c.id);
      const metricCells = columns.map((col) => {
        const vs = stats?.get(col.metric);
        if (!vs || vs.length === 0) return '<td class="num dim">—</td>';
        const s: Summary = summarize(vs);
        const title = `n=${s.n}, median ${formatNumber(s.median)}, min ${formatNumber(s.min)}, max ${formatNumber(s.max)}${s.sd !== null ? `, sd ${formatNumber(s.sd)}` : ''}${s.cv !== null ? `, cv ${(s.cv * 100).toFixed(1)}%` : ''}${s.ci95Low !== null && s.ci95High !== null ? `, 95% CI [${formatNumber(s.ci95Low)}, ${formatNumber(s.ci95High)}]` : ''}`;
        const text = s.ci95Half === null ? `${formatNumber(s.mean)} <span class="dim">(n=1)</span>` : `${formatNumber(s.mean)} <span class="pm">± ${formatNumber(s.ci95Half, 2)}</span>`;
        return `<td class="num" title="${escapeHtml(title)}">${text}</td>`;
      });
      const raw = model.cellDirs.has(c.id) ? `<a href="${escapeHtml(hrefTo(`../cells/${c.id}/`))}">files</a>` : '<span class="dim">—</span>';
      return `<tr class="st-row-${escapeHtml(c.status)}"><td class="num">${c.index}</td><td class="id"><code>${escapeHtml(c.id).replace(/\./g, '.<wbr>')}</code>${reason && c.status !== 'ok' ? `<div class="reason">${escapeHtml(reason)}</div>` : ''}</td>${axisNames
        .map((a) => `<td>${Object.hasOwn(c.axes, a) ? escapeHtml(c.axes[a]) : '<span class="dim">—</span>'}</td>`)
        .join('')}<td>${statusBadge(c.status)}</td><td class="num">${okReps}/${config.repetitions}</td>${metricCells.join('')}<td>${raw}</td></tr>`;
    })
    .join('');
  return `<section id="cells"><h2>Cells (${cells.length})</h2><p class="dim">Each metric: mean over the repetitions ± half-width of its 95% confidence interval (Student's t); hover for n, median, range, sd and CV.</p><div class="scroll"><table class="grid cells" id="cell-table"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div></section>`;
}

/** The claims table; with runs (the page across runs) a column names the run each was checked on. */
function claimsTable(results: readonly (ClaimResult & { runId?: string | null })[]): string {
  const across = results.some((r) => r.runId !== undefined);
  const st = (s: string): string => `<span class="badge claim-${escapeHtml(s.replace(' ', '-'))}">${escapeHtml(s)}</span>`;
  const body = results
    .map((r) => {
      const c = r.claim;
      const run = across ? `<td>${r.runId ? code(r.runId) : '—'}</td>` : '';
      return `<tr data-claim="${escapeHtml(c.id)}"><td><code>${escapeHtml(c.id)}</code><div class="dim">${escapeHtml(c.claim)}</div></td><td class="num">${escapeHtml(c.paperValue.text)}</td><td class="num">${escapeHtml(describeExpect(c))}</td><td class="num ours">${escapeHtml(formatOurs(r))}</td><td>${escapeHtml(r.accelerator.toUpperCase())}</td><td>${escapeHtml(r.pm === 'fsdax' ? 'fs-dax' : r.pm)}</td><td>${st(r.status)}</td><td class="reason">${escapeHtml(r.reason ?? '')}</td>${run}</tr>`;
    })
    .join('');
  return `<div class="scroll"><table class="grid" id="claims-table"><thead><tr><th>claim</th><th>paper</th><th>expected</th><th>ours (95% CI)</th><th>accelerator</th><th>PM</th><th>status</th><th>reason</th>${across ? '<th>run</th>' : ''}</tr></thead><tbody>${body}</tbody></table></div>`;
}

/** The reproduced-vs-reported chart as an image (its SVG inline as a data: URL). */
function claimsChartImg(svg: string | undefined): string {
  if (!svg) return '';
  return `<img class="chart" id="claims-chart" alt="Reproduced next to reported: ours over the paper's value per claim" src="data:image/svg+xml;base64,${Buffer.from(svg, 'utf8').toString('base64')}">`;
}

const CLAIMS_NOTE =
  'Reported (the paper) next to reproduced: ours is a ratio or difference of means with a seeded bootstrap 95% interval; the status is the point estimate\'s against the expected relation.';

function claimsSection(model: ReportModel): string {
  const results = model.claims ?? [];
  if (model.claimsProblem) return `<section id="claims"><h2>Claims</h2><p class="bad">${escapeHtml(model.claimsProblem)}</p></section>`;
  if (results.length === 0) return '';
  return `<section id="claims"><h2>Claims (${results.length})</h2><p class="dim">${escapeHtml(CLAIMS_NOTE)} (This run.)</p>${claimsTable(results)}${claimsChartImg(model.claimsChart)}</section>`;
}

/** One page with every claim, each checked on the newest given run of its experiment. */
export function claimsPageHtml(results: readonly ClaimAcrossRuns[], runs: readonly { dir: string; runId: string; experiment: string }[], chartSvg?: string): string {
  const counts = new Map<string, number>();
  for (const r of results) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
  const summary = [...counts].map(([s, n]) => `${n} ${s}`).join(' · ');
  const list = runs.map((r) => `<li>${code(r.runId)} ${escapeHtml(r.experiment)} <span class="dim">${escapeHtml(r.dir)}</span></li>`).join('');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>pcow: the paper's claims</title>
<style>${CSS}</style>
</head>
<body>
<header>
<h1>The paper's claims</h1>
<p class="dim">${escapeHtml(summary)}</p>
</header>
<main>
<section id="claims"><h2>Claims (${results.length})</h2><p class="dim">${escapeHtml(CLAIMS_NOTE)}</p>${claimsTable(results)}${claimsChartImg(chartSvg)}</section>
<section id="runs"><h2>Runs (${runs.length})</h2><ul class="files">${list}</ul></section>
</main>
</body>
</html>
`;
}

const CSS = `
:root { color-scheme: light; --fg: #1d232b; --dim: #667080; --line: #dde2e8; --bg: #fff; --soft: #f5f7fa; --bad: #b42318; --warn: #9a6700; --ok: #1a7f37; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, "DejaVu Sans", "Liberation Sans", sans-serif; color: var(--fg); background: var(--bg); }
header, main, footer { max-width: 1240px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; border-bottom: 1px solid var(--line); padding-bottom: 12px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 0 0 6px; }
nav a { margin-right: 14px; }
a { color: #0b5cad; }
code { font: 12.5px/1.3 "DejaVu Sans Mono", monospace; background: var(--soft); padding: 1px 4px; border-radius: 3px; word-break: break-all; }
pre { font: 12px/1.35 "DejaVu Sans Mono", monospace; background: var(--soft); padding: 10px; overflow: auto; max-height: 420px; }
.desc { margin: 4px 0; color: #333; max-width: 900px; }
.dim { color: var(--dim); }
.bad { color: var(--bad); }
.warn { color: var(--warn); }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; background: #6e7781; }
.st-ok, .st-completed { background: var(--ok); }
.st-failed, .st-timeout { background: var(--bad); }
.st-interrupted, .st-running { background: var(--warn); }
.cols { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
table { border-collapse: collapse; }
table.kv th { text-align: left; font-weight: 600; padding: 3px 14px 3px 0; vertical-align: top; white-space: nowrap; color: #3a4450; }
table.kv td { padding: 3px 0; }
table.kv caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
table.grid { width: 100%; font-size: 13px; }
table.grid th, table.grid td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
table.grid thead th { position: sticky; top: 0; background: var(--soft); white-space: nowrap; }
table.grid tbody tr:nth-child(even) { background: #fafbfc; }
table.cells code { word-break: normal; overflow-wrap: normal; }
table.cells td.id { min-width: 15em; }
table.cells tr.st-row-failed, table.cells tr.st-row-timeout { background: #fff5f4 !important; }
.num { text-align: right !important; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pm, .unit { color: var(--dim); }
.reason { color: var(--bad); font-size: 12px; margin-top: 2px; max-width: 520px; }
.scroll { overflow-x: auto; }
.figs { display: flex; flex-wrap: wrap; gap: 20px; }
figure.fig { margin: 0; padding: 12px; border: 1px solid var(--line); border-radius: 6px; background: #fff; max-width: 100%; width: fit-content; }
img.chart { display: block; max-width: 100%; height: auto; }
/* The caption wraps to the chart's width instead of widening the card. */
figcaption { width: 0; min-width: 100%; margin-top: 6px; font-size: 12.5px; color: var(--dim); }
.figid { font-weight: 600; color: var(--fg); }
ul.notes { margin: 4px 0 0; padding-left: 18px; }
.nodata { width: 480px; max-width: 100%; padding: 24px; border: 2px dashed #e3b4ae; border-radius: 6px; background: #fffaf9; }
.nodata p { color: var(--bad); margin: 0; }
ul.files { columns: 3 220px; padding-left: 18px; }
details { margin: 10px 0; }
summary { cursor: pointer; color: #3a4450; }
footer { color: var(--dim); font-size: 12px; padding: 24px; }
.claim-held { color: var(--ok); } .claim-not-held { color: var(--bad); } .claim-not-run, .claim-not-checkable { color: var(--warn); }
`;

export function renderIndexHtml(model: ReportModel): string {
  const { manifest: m, config } = model;
  const title = `${config.name} — run ${m.runId}`;
  const figures = model.figures.length
    ? `<div class="figs">${model.figures.map(figureSection).join('')}</div>`
    : '<p class="dim">The experiment defines no figures.</p>';
  const warnings = model.warnings.length
    ? `<ul class="notes warn">${model.warnings.map((w) => `<li>${escapeHtml(w)}</li>`).join('')}</ul>`
    : '';
  const files = model.runFiles.map((f) => `<li><a href="${escapeHtml(hrefTo(`../${f}`))}">${escapeHtml(f)}</a></li>`).join('');
  const figFiles = model.figures
    .flatMap((f) => [f.files.spec, f.files.svg, f.files.png])
    .filter((f): f is string => f !== undefined)
    .map((f) => `<li><a href="${escapeHtml(hrefTo(f))}">report/${escapeHtml(f)}</a></li>`)
    .join('');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="generator" content="pcow harness ${escapeHtml(m.harness.version)}">
<title>${escapeHtml(title)}</title>
<style>${CSS}</style>
</head>
<body>
<header>
<h1>${escapeHtml(config.name)} ${statusBadge(m.status)}</h1>
${config.description ? `<p class="desc">${escapeHtml(config.description)}</p>` : ''}
<p class="dim">run ${code(m.runId)} · ${escapeHtml(m.startedAt)} · ${escapeHtml(m.accelerator.toUpperCase())} · PM ${escapeHtml(m.pm.kind)}</p>
<nav>${(model.claims?.length ?? 0) > 0 || model.claimsProblem ? '<a href="#claims">Claims</a>' : ''}<a href="#run">Run</a><a href="#figures">Figures (${model.figures.length})</a><a href="#cells">Cells (${model.cells.length})</a><a href="#files">Files</a></nav>
${warnings}
</header>
<main>
${claimsSection(model)}
${manifestSection(m, config)}
<section id="figures"><h2>Figures</h2><p class="dim">Bars, lines or points are means over repetitions; error bars are 95% confidence intervals of the mean (Student's t).</p>${figures}</section>
${cellsSection(model)}
<section id="files"><h2>Files</h2><ul class="files">${files}${figFiles}</ul></section>
</main>
<footer>Generated ${escapeHtml(model.generatedAt)} by the pcow harness ${escapeHtml(m.harness.version)}.</footer>
</body>
</html>
`;
}
