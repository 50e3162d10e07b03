// The report stage: from a run directory to report/<figure>.{vl.json,svg,png} and report/index.html,
// in one step. One figure that cannot be drawn never stops the others or the page: it shows why.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { FigureConfig } from '../experiment/schema.ts';
import type { CellRecord } from '../results/types.ts';
import { getWorkload } from '../workloads/registry.ts';
import type { MetricInfo } from '../workloads/types.ts';
import { figureData, figureSpec, FigureError, hasFigureAxes, matchesWhere, specToSvg, svgToPng, type AxisOrder } from './charts.ts';
import { claimsPageHtml, renderIndexHtml, type FigureView } from './html.ts';
import { readRun } from './read.ts';
import { claimsChartSpec, evaluateAcrossRuns, evaluateClaims, loadClaims, type ClaimAcrossRuns, type ClaimResult } from './claims.ts';

export { summarize, groupSamples, tCritical95 } from './stats.ts';
export { figureSpec, renderFigure, figureData } from './charts.ts';
export { readRun } from './read.ts';

export interface ReportOptions {
  /** Where to write; default <runDir>/report. */
  outDir?: string;
  /** A metric's name, unit and direction; default: the workload registry's declaration. */
  metricInfo?: (tool: string, metric: string) => MetricInfo | undefined;
  /** Progress lines (one per figure). */
  log?: (line: string) => void;
  /** The claims file checked against the run; default experiments/claims/claims.yaml. */
  claimsFile?: string;
}

export interface ReportResult {
  /** Absolute path of report/index.html. */
  index: string;
  /** Figures drawn, with absolute paths of their files. */
  figures: { id: string; svg: string; png: string; spec: string }[];
  /** Figures that could not be drawn in full, and why (also shown on the page). */
  problems: { figure: string; message: string }[];
  /** The claims whose experiment is this run's, checked (empty when none applies). */
  claims: ClaimResult[];
  /** Why no claim was checked (an unreadable claims file). */
  claimsProblem?: string;
}

function defaultMetricInfo(tool: string, metric: string): MetricInfo | undefined {
  return getWorkload(tool)?.metrics.find((m) => m.name === metric);
}

/** "cells a, b failed (reason)" — cells grouped by status and reason, at most `limit` ids named. */
export function describeFailedCells(cells: readonly CellRecord[], limit = 8): string {
  const groups = new Map<string, string[]>();
  for (const c of cells) {
    const reason = c.reason ?? c.repetitions.find((r) => r.status !== 'ok' && r.reason)?.reason;
    const verb = c.status === 'pending' ? 'did not run' : c.status === 'timeout' ? 'timed out' : c.status;
    const key = `${verb}${reason ? ` (${reason})` : ''}`;
    const ids = groups.get(key) ?? [];
    ids.push(c.id);
    groups.set(key, ids);
  }
  return [...groups.entries()]
    .map(([what, ids]) => {
      const named = ids.slice(0, limit).join(', ');
      const more = ids.length > limit ? ` and ${ids.length - limit} more` : '';
      return `${ids.length === 1 ? 'cell' : 'cells'} ${named}${more} ${what}`;
    })
    .join('; ');
}

function listRunFiles(dir: string): string[] {
  const names = ['manifest.json', 'experiment.yaml', 'config.json', 'cells.json', 'samples.jsonl', 'samples.csv'];
  const out = names.filter((n) => existsSync(path.join(dir, n)));
  if (existsSync(path.join(dir, 'cells'))) out.push('cells/');
  return out;
}

function cellDirs(dir: string): Set<string> {
  const root = path.join(dir, 'cells');
  try {
    return new Set(readdirSync(root).filter((n) => statSync(path.join(root, n)).isDirectory()));
  } catch {
    return new Set();
  }
}

async function writeFigure(
  fig: FigureConfig,
  run: ReturnType<typeof readRun>,
  axisOrder: AxisOrder,
  metricInfo: NonNullable<ReportOptions['metricInfo']>,
  outDir: string,
): Promise<{ view: FigureView; written?: ReportResult['figures'][number] }> {
  const view: FigureView = { id: fig.id, title: fig.title, metric: fig.metric, files: {}, notes: [] };
  // The cells this figure would plot: matching `where` and having every axis it draws.
  const whereOnly = run.cells.filter((c) => matchesWhere(c.axes, c.workload, fig.where));
  const whereCells = whereOnly.filter((c) => hasFigureAxes(fig, c.axes, c.workload));
  const failed = whereCells.filter((c) => c.status !== 'ok');
  let data;
  try {
    data = figureData(fig, run.samples, axisOrder);
  } catch (e) {
    if (!(e instanceof FigureError)) throw e;
    if (whereOnly.length === 0) {
      view.problem = `no data: no cell matches where ${JSON.stringify(fig.where)}`;
    } else if (failed.length > 0 && e.kind === 'no-samples') {
      view.problem = `no data: ${describeFailedCells(failed)}`;
    } else {
      view.problem = `cannot draw: ${e.message}`;
    }
    return { view };
  }
  view.notes = [...data.notes, ...data.details];
  const withData = new Set(data.cells);
  const missing = failed.filter((c) => !withData.has(c.id));
  if (missing.length) view.missing = `missing from the chart: ${describeFailedCells(missing)}`;
  // The figure's metric is declared by the workload of the cells it plots.
  const first = run.samples.find((s) => withData.has(s.cell) && s.metric === fig.metric);
  const metric = first ? metricInfo(first.tool, fig.metric) : undefined;
  const spec = figureSpec(fig, run.samples, metric, axisOrder);
  const files = { spec: `${fig.id}.vl.json`, svg: `${fig.id}.svg`, png: `${fig.id}.png` };
  await writeFile(path.join(outDir, files.spec), `${JSON.stringify(spec, null, 2)}\n`);
  view.files.spec = files.spec;
  const { svg, warnings } = await specToSvg(spec);
  for (const w of warnings) view.notes.push(`vega-lite ${w}`);
  await writeFile(path.join(outDir, files.svg), svg);
  view.svg = svg;
  view.files.svg = files.svg;
  try {
    await writeFile(path.join(outDir, files.png), svgToPng(svg));
    view.files.png = files.png;
  } catch (e) {
    view.problem = `PNG not written: ${(e as Error).message}`;
    return { view };
  }
  const abs = (f: string): string => path.join(outDir, f);
  return { view, written: { id: fig.id, spec: abs(files.spec), svg: abs(files.svg), png: abs(files.png) } };
}

/**
 * Reads manifest.json, config.json, cells.json and samples.jsonl of `runDir` and writes the
 * figures and index.html under report/ (nothing else). Unreadable inputs throw, naming the file.
 */
export async function writeReport(runDir: string, opts: ReportOptions = {}): Promise<ReportResult> {
  const run = readRun(runDir);
  const outDir = path.resolve(opts.outDir ?? path.join(run.dir, 'report'));
  await mkdir(outDir, { recursive: true });
  const metricInfo = opts.metricInfo ?? defaultMetricInfo;
  const axisOrder: AxisOrder = { ...run.config.matrix.axes };
  // The workload axis is implicit when the experiment has one workload: its order is the file's.
  if (!axisOrder.workload) axisOrder.workload = Object.keys(run.config.workloads);

  const views: FigureView[] = [];
  const result: ReportResult = { index: path.join(outDir, 'index.html'), figures: [], problems: [], claims: [] };
  // A bad claims file costs the claims table, never the rest of the page.
  try {
    result.claims = evaluateClaims(loadClaims(opts.claimsFile), run);
  } catch (e) {
    result.claimsProblem = `claims not checked: ${(e as Error).message}`;
  }
  for (const fig of run.config.figures) {
    let view: FigureView;
    try {
      const r = await writeFigure(fig, run, axisOrder, metricInfo, outDir);
      view = r.view;
      if (r.written) result.figures.push(r.written);
    } catch (e) {
      // A bug or an I/O error in one figure: report it on the page and go on with the rest.
      view = { id: fig.id, title: fig.title, metric: fig.metric, files: {}, notes: [], problem: `cannot draw: ${(e as Error).message}` };
    }
    if (view.problem) result.problems.push({ figure: fig.id, message: view.problem });
    // A chart from an earlier report of this run must not outlive the data it showed.
    for (const ext of ['vl.json', 'svg', 'png'] as const) {
      const key = ext === 'vl.json' ? 'spec' : ext;
      if (!view.files[key]) await rm(path.join(outDir, `${fig.id}.${ext}`), { force: true });
    }
    opts.log?.(`figure ${fig.id}: ${view.problem ?? 'ok'}`);
    views.push(view);
  }
  const html = renderIndexHtml({
    manifest: run.manifest,
    config: run.config,
    cells: run.cells,
    samples: run.samples,
    figures: views,
    metricInfo,
    runFiles: listRunFiles(run.dir),
    cellDirs: cellDirs(run.dir),
    warnings: run.warnings,
    generatedAt: new Date().toISOString(),
    claims: result.claims,
    claimsChart: await claimsChartSvg(result.claims),
    ...(result.claimsProblem ? { claimsProblem: result.claimsProblem } : {}),
  });
  await writeFile(result.index, html);
  return result;
}

/** The reproduced-vs-reported chart as SVG (undefined when no claim has a value to draw). */
async function claimsChartSvg(results: readonly ClaimResult[]): Promise<string | undefined> {
  const spec = claimsChartSpec(results);
  return spec ? (await specToSvg(spec)).svg : undefined;
}

/**
 * One page with every claim of the claims file, each checked on the newest of `runDirs` that ran
 * its experiment (e.g. the runs of the eight ci experiments), written to `outFile`.
 */
export async function writeClaimsPage(runDirs: readonly string[], outFile: string, opts: { claimsFile?: string } = {}): Promise<ClaimAcrossRuns[]> {
  const runs = runDirs.map((dir) => ({ dir, run: readRun(dir) }));
  const results = evaluateAcrossRuns(loadClaims(opts.claimsFile), runs);
  const listed = runs.map((r) => ({ dir: r.dir, runId: r.run.manifest.runId, experiment: r.run.manifest.experiment.name }));
  await mkdir(path.dirname(outFile), { recursive: true });
  await writeFile(outFile, claimsPageHtml(results, listed, await claimsChartSvg(results)));
  return results;
}
