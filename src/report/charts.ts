// One vega-lite chart per figure of the experiment: the mean over repetitions of one metric,
// bound to the matrix axes named by the figure (x, colour, facet), with the 95% confidence
// interval as error bars; rendered headless to SVG (vega) and PNG (resvg).
import { readdirSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { Field } from 'vega-lite/types_unstable/channeldef.js';
import type { UnitSpec } from 'vega-lite/types_unstable/spec/unit.js';
import { sameValue } from '../experiment/matrix.ts';
import type { AxisScalar, FigureConfig } from '../experiment/schema.ts';
import type { SampleRow } from '../results/types.ts';
import type { MetricInfo } from '../workloads/types.ts';
import { chartFontWidths, textWidth } from './fontmetrics.ts';
import { groupSamples, summarize } from './stats.ts';

/** axis name → its values in the order the experiment lists them (sorts x, legend and facets). */
export type AxisOrder = Record<string, readonly AxisScalar[]>;

/** Field names of the statistics in a chart's data; an axis may not use one of these names. */
export const STAT_FIELDS = [
  'mean', 'ci95_low', 'ci95_high', 'ci95_half', 'ci95_low_plot', 'ci95_clipped', 'n', 'sd', 'cv', 'median', 'min', 'max', 'cells',
] as const;

/** A plotted value: a chart shows strings and numbers (booleans become "true"/"false"). */
export type PlotValue = string | number;

/** One point of a figure: its axis values (by axis name) and the statistics of its samples. */
export type FigurePoint = Record<string, PlotValue | boolean | null>;

export interface FigureData {
  points: FigurePoint[];
  /** Ids of the cells whose samples the figure plots, in order of first appearance. */
  cells: string[];
  /** Axes (other than x/colour/facet) that differ between cells pooled into one point. */
  pooledAxes: string[];
  /** Smallest and largest number of samples behind a point. */
  nMin: number;
  nMax: number;
  unit: string;
  /** Each drawn axis's values in the experiment's order (sorts x, legend and facets). */
  order: Record<string, PlotValue[]>;
  /** Caveats to show with the chart (pooled cells, clipped intervals, dropped points). */
  notes: string[];
  /** Longer explanations of the notes (cell lists, what to change), for the page only. */
  details: string[];
  /** yScale log: the bottom of the y axis; a clipped whisker (ci95_clipped) ends there. */
  logFloor?: number;
}

/** A figure that cannot be drawn (no matching samples, unknown axis): the message says why. */
export class FigureError extends Error {
  constructor(
    readonly figure: string,
    message: string,
    /** no-samples: nothing matched (cells failed or did not run); invalid: the figure is wrong. */
    readonly kind: 'no-samples' | 'invalid' = 'invalid',
  ) {
    super(`figure ${figure}: ${message}`);
    this.name = 'FigureError';
  }
}

function plotValue(v: AxisScalar): PlotValue {
  return typeof v === 'boolean' ? String(v) : v;
}

/** The figure's axes in role order, without repeats. */
function figureAxes(fig: FigureConfig): string[] {
  return [...new Set([fig.x, fig.color, fig.facet].filter((a): a is string => a !== undefined))];
}

/**
 * A cell's value on a figure dimension: its axis of that name, or for `workload` its workload
 * (charted even when the experiment has one workload and so no workload axis). Undefined when
 * the axis does not apply to the cell's workload (the planner leaves such axes out of the cell).
 */
export function dimValue(axes: Record<string, AxisScalar>, workload: string, name: string): AxisScalar | undefined {
  if (Object.hasOwn(axes, name)) return axes[name];
  return name === 'workload' ? workload : undefined;
}

/** Whether a cell (its axes and workload) matches every `where` entry; 4096 and "4096" are one value, as in the planner. */
export function matchesWhere(axes: Record<string, AxisScalar>, workload: string, where: Record<string, AxisScalar>): boolean {
  return Object.entries(where).every(([k, v]) => {
    const have = dimValue(axes, workload, k);
    return have !== undefined && sameValue(have, v);
  });
}

/** Whether a cell has a value on every axis the figure draws (x, colour, facet). */
export function hasFigureAxes(fig: FigureConfig, axes: Record<string, AxisScalar>, workload: string): boolean {
  return figureAxes(fig).every((a) => dimValue(axes, workload, a) !== undefined);
}

/** Rows of the figure's metric whose cells match every `where` entry. */
export function figureRows(fig: FigureConfig, rows: readonly SampleRow[]): SampleRow[] {
  return rows.filter((r) => r.metric === fig.metric && matchesWhere(r.axes, r.workload, fig.where));
}

/** Values of `axis` sorted as the experiment lists them; values it does not list follow in order seen. */
function orderedValues(axis: string, seen: readonly AxisScalar[], axisOrder: AxisOrder | undefined): PlotValue[] {
  // The values as the samples have them, in the order the experiment lists their equals.
  const out: AxisScalar[] = [];
  for (const v of axisOrder?.[axis] ?? []) {
    const u = seen.find((x) => sameValue(x, v));
    if (u !== undefined && !out.includes(u)) out.push(u);
  }
  for (const v of seen) if (!out.includes(v)) out.push(v);
  return out.map(plotValue);
}

/**
 * Groups the figure's samples into points (one per x/colour/facet combination) and summarizes
 * each. Throws FigureError when an axis is unknown or nothing matches.
 */
export function figureData(fig: FigureConfig, rows: readonly SampleRow[], axisOrder?: AxisOrder): FigureData {
  const axes = figureAxes(fig);
  for (const a of axes) {
    if ((STAT_FIELDS as readonly string[]).includes(a)) {
      throw new FigureError(fig.id, `axis "${a}" has the name of a statistics field (${STAT_FIELDS.join(', ')}); rename the axis`);
    }
  }
  const known = new Set<string>(Object.keys(axisOrder ?? {}));
  for (const r of rows) for (const k of Object.keys(r.axes)) known.add(k);
  if (known.size > 0) known.add('workload');
  for (const [role, a] of [['x', fig.x], ['color', fig.color], ['facet', fig.facet]] as const) {
    if (a !== undefined && known.size > 0 && !known.has(a)) {
      throw new FigureError(fig.id, `${role} "${a}" is not a matrix axis (axes: ${[...known].join(', ') || 'none'})`);
    }
  }
  for (const k of Object.keys(fig.where)) {
    if (known.size > 0 && !known.has(k)) {
      throw new FigureError(fig.id, `where key "${k}" is not a matrix axis (axes: ${[...known].join(', ')})`);
    }
  }
  const matching = figureRows(fig, rows);
  if (matching.length === 0) {
    const whereText = Object.keys(fig.where).length ? ` matching where ${JSON.stringify(fig.where)}` : '';
    throw new FigureError(fig.id, `no samples of metric "${fig.metric}"${whereText}`, 'no-samples');
  }
  // Cells of a workload an axis does not apply to have no value on it: they cannot be placed.
  const notes: string[] = [];
  const details: string[] = [];
  const selected = matching.filter((r) => hasFigureAxes(fig, r.axes, r.workload));
  const axisless = [...new Set(matching.filter((r) => !selected.includes(r)).map((r) => r.cell))];
  if (selected.length === 0) {
    throw new FigureError(fig.id, `no samples of metric "${fig.metric}" from cells with a value on every axis the figure draws (${axes.join(', ')})`, 'no-samples');
  }
  if (axisless.length) {
    const missingAxes = axes.filter((a) => matching.some((r) => !selected.includes(r) && dimValue(r.axes, r.workload, a) === undefined));
    notes.push(`left out ${axisless.length} cell(s) without a value for ${missingAxes.join(', ')}`);
    details.push(`${missingAxes.join(', ')} does not apply to the workload of: ${axisless.join(', ')}`);
  }
  const units = [...new Set(selected.map((r) => r.unit))];
  if (units.length > 1) {
    throw new FigureError(fig.id, `metric "${fig.metric}" comes in several units (${units.join(', ')}); one chart cannot mix them`);
  }

  const pooled = new Set<string>();
  const cells: string[] = [];
  const points: FigurePoint[] = [];
  for (const g of groupSamples(selected, axes)) {
    const s = summarize(g.values);
    const groupCells = [...new Set(g.rows.map((r) => r.cell))];
    for (const c of groupCells) if (!cells.includes(c)) cells.push(c);
    if (groupCells.length > 1) {
      const first = g.rows[0] as SampleRow;
      for (const r of g.rows) {
        for (const k of new Set([...Object.keys(r.axes), ...Object.keys(first.axes)])) {
          if (!axes.includes(k) && first.axes[k] !== r.axes[k]) pooled.add(k);
        }
      }
    }
    const p: FigurePoint = {};
    for (const a of axes) p[a] = plotValue(g.key[a] as AxisScalar);
    Object.assign(p, {
      mean: s.mean,
      ci95_low: s.ci95Low,
      ci95_high: s.ci95High,
      ci95_half: s.ci95Half,
      ci95_low_plot: s.ci95Low,
      ci95_clipped: false,
      n: s.n,
      sd: s.sd,
      cv: s.cv,
      median: s.median,
      min: s.min,
      max: s.max,
      cells: groupCells.join(', '),
    });
    points.push(p);
  }
  if (pooled.size > 0) {
    notes.push(`points pool cells that differ in ${[...pooled].join(', ')}`);
    details.push(`to separate the pooled cells, add ${[...pooled].join(', ')} to the figure's where, color or facet`);
  }

  let plotted = points;
  let logFloor: number | undefined;
  if (fig.yScale === 'log') {
    const dropped = points.filter((p) => (p.mean as number) <= 0);
    if (dropped.length) {
      notes.push(`${dropped.length} point(s) with mean <= 0 left out: a log scale cannot show them`);
      plotted = points.filter((p) => (p.mean as number) > 0);
      if (plotted.length === 0) throw new FigureError(fig.id, `every mean of "${fig.metric}" is <= 0; a log scale cannot show them (use yScale: linear)`);
    }
    // A lower bound <= 0 has no place on a log axis. The axis starts at the decade below the
    // smallest positive value drawn; a whisker whose bound lies below that runs to the bottom of
    // the axis and ends in an arrow (not a tick), so no made-up value reads as a real bound.
    const positives = plotted.flatMap((p) => [p.mean as number, p.ci95_low as number | null]).filter((v): v is number => v !== null && v > 0);
    logFloor = 10 ** Math.floor(Math.log10(Math.min(...positives) * 0.999));
    let clipped = 0;
    for (const p of plotted) {
      if (p.ci95_low !== null && (p.ci95_low as number) <= 0) {
        p.ci95_low_plot = logFloor;
        p.ci95_clipped = true;
        clipped++;
      }
    }
    if (clipped) {
      notes.push(`${clipped} lower CI bound(s) <= 0: a log axis cannot show them; their whiskers run off the bottom of the axis, marked ▼`);
      details.push('the real bounds are in the cell table and the tooltips (95% CI low)');
    }
  }

  // Sort points by the experiment's order so tables and tooltips follow it too.
  const orders = Object.fromEntries(
    axes.map((a) => [a, orderedValues(a, selected.map((r) => dimValue(r.axes, r.workload, a) as AxisScalar), axisOrder)]),
  );
  const rank = (p: FigurePoint): number[] => [fig.facet, fig.x, fig.color].filter((a): a is string => a !== undefined).map((a) => (orders[a] as PlotValue[]).indexOf(p[a] as PlotValue));
  plotted.sort((a, b) => {
    const ra = rank(a);
    const rb = rank(b);
    for (let i = 0; i < ra.length; i++) if (ra[i] !== rb[i]) return (ra[i] as number) - (rb[i] as number);
    return 0;
  });
  const ns = plotted.map((p) => p.n as number);
  if (Math.min(...ns) === 1) notes.push('points with n=1 have no confidence interval (no error bar)');
  return {
    points: plotted,
    cells,
    pooledAxes: [...pooled],
    nMin: Math.min(...ns),
    nMax: Math.max(...ns),
    unit: units[0] as string,
    order: orders,
    notes,
    details,
    ...(logFloor !== undefined ? { logFloor } : {}),
  };
}

function axisTitle(fig: FigureConfig, metric: MetricInfo | undefined, unit: string): string {
  const name = metric?.name ?? fig.metric;
  const u = metric?.unit ?? unit;
  return u ? `${name} (${u})` : name;
}

/** The vega-lite spec of a figure: inline data (one row per point), mean mark + 95% CI error bars. */
export function figureSpec(
  fig: FigureConfig,
  rows: readonly SampleRow[],
  metric: MetricInfo | undefined,
  axisOrder?: AxisOrder,
): TopLevelSpec {
  const data = figureData(fig, rows, axisOrder);
  const axes = figureAxes(fig);
  // Values of dropped points (log scale) stay out of the scales.
  const order = (a: string): PlotValue[] => (data.order[a] ?? []).filter((v) => data.points.some((p) => p[a] === v));
  const yTitle = axisTitle(fig, metric, data.unit);
  const nText = data.nMin === data.nMax ? `n = ${data.nMin}` : `n = ${data.nMin}–${data.nMax}`;
  const better = metric ? ` · ${metric.better} is better` : '';
  const subtitle = [`${nText} samples per point · error bars: 95% CI of the mean (Student's t)${better}`, ...data.notes];

  const xValues = order(fig.x);
  const colorValues = fig.color ? order(fig.color) : [];
  const longest = Math.max(...xValues.map((v) => String(v).length));
  const isBar = fig.mark === 'bar';
  const perX = isBar ? Math.max(48, 22 * Math.max(1, colorValues.length) + 20) : 64;
  const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));
  const width = fig.facet ? clamp(xValues.length * perX, 160, 380) : clamp(xValues.length * perX, 320, 860);
  const height = fig.facet ? 240 : 300;

  // Millions and more read better with SI prefixes (2.15G) than with ten digits.
  const big = data.points.some((p) => Math.abs(p.mean as number) >= 1e6 || Math.abs((p.ci95_high as number | null) ?? 0) >= 1e6);
  const fmt = big ? '.4~s' : ',.4~g';
  const tooltip = [
    ...axes.map((a) => ({ field: a, type: 'nominal' as const, title: a })),
    { field: 'mean', type: 'quantitative' as const, title: `mean ${yTitle}`, format: fmt },
    { field: 'ci95_low', type: 'quantitative' as const, title: '95% CI low', format: fmt },
    { field: 'ci95_high', type: 'quantitative' as const, title: '95% CI high', format: fmt },
    { field: 'n', type: 'quantitative' as const, title: 'n' },
    { field: 'sd', type: 'quantitative' as const, title: 'sd', format: fmt },
    { field: 'cv', type: 'quantitative' as const, title: 'cv', format: '.1%' },
    { field: 'cells', type: 'nominal' as const, title: 'cells' },
  ];
  // A log axis has no 0: bars grow from the decade below the smallest value drawn (figureData's
  // logFloor), or the smallest bar would have no height at all.
  const yScale = fig.yScale === 'log' ? { type: 'log' as const, domainMin: data.logFloor } : {};
  const colorEnc = fig.color
    ? { color: { field: fig.color, type: 'nominal' as const, sort: colorValues, title: fig.color } }
    : {};
  const offsetEnc = isBar && fig.color ? { xOffset: { field: fig.color, type: 'nominal' as const, sort: colorValues } } : {};

  const meanMark =
    fig.mark === 'bar'
      ? { type: 'bar' as const, opacity: 0.9 }
      : fig.mark === 'line'
        ? { type: 'line' as const, point: true }
        : { type: 'point' as const, filled: true, size: 70 };
  const layer = [
    {
      mark: meanMark,
      encoding: {
        // No stacking: grouped bars sit side by side (xOffset), and a stacked bar starts at 0,
        // which a log axis cannot draw (the bars vanished on yScale: log).
        y: { field: 'mean', type: 'quantitative' as const, title: yTitle, scale: yScale, stack: null, ...(big ? { axis: { format: '~s' } } : {}) },
        ...colorEnc,
        tooltip,
      },
    },
    // The 95% CI whisker: a rule between the bounds with a tick at each end. Points with n = 1
    // have no interval and get no whisker. A lower bound a log axis cannot show (ci95_clipped)
    // gets no tick: its rule runs to the bottom of the axis and ends in a down arrow.
    ...whiskerLayers(yTitle, yScale, isBar || !fig.color ? '#222' : undefined, isBar ? {} : colorEnc, tooltip, data.points.some((p) => p.ci95_clipped === true)),
  ];
  const encoding = {
    x: {
      field: fig.x,
      type: 'ordinal' as const,
      sort: xValues,
      title: fig.x,
      axis: { labelAngle: longest > 10 ? -35 : 0, labelLimit: 160 },
    },
    ...offsetEnc,
  };
  const top = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: fig.title, subtitle, anchor: 'start' as const, subtitleColor: '#555', subtitleFontSize: 11, fontSize: 15 },
    description: `${fig.title}: mean ${yTitle} by ${axes.join(', ')} with 95% confidence intervals over repetitions`,
    background: 'white',
    padding: 12,
    data: { values: data.points },
    config: { view: { stroke: '#ddd' }, axis: { labelFontSize: 11, titleFontSize: 12 }, legend: { labelFontSize: 11, titleFontSize: 12 } },
  };
  if (fig.facet) {
    return {
      ...top,
      facet: { column: { field: fig.facet, type: 'ordinal', sort: order(fig.facet), title: fig.facet } },
      spec: { width, height, encoding, layer },
    } as TopLevelSpec; // the literal is built from typed pieces; vega-lite's union is too deep for inference
  }
  return { ...top, width, height, encoding, layer } as TopLevelSpec; // as above
}

type Tooltip = { field: string; type: 'nominal' | 'quantitative'; title: string; format?: string }[];

function whiskerLayers(
  yTitle: string,
  yScale: { type?: 'log'; domainMin?: number },
  color: string | undefined,
  colorEnc: { color?: { field: string; type: 'nominal'; sort: PlotValue[]; title: string } },
  tooltip: Tooltip,
  anyClipped: boolean,
): UnitSpec<Field>[] {
  const fixed = color ? { color } : {};
  const y = (field: string) => ({ field, type: 'quantitative' as const, title: yTitle, scale: yScale });
  const hasCi = { filter: { field: 'ci95_low_plot', valid: true } };
  const layers: UnitSpec<Field>[] = [
    { transform: [hasCi], mark: { type: 'rule', strokeWidth: 1.5, ...fixed }, encoding: { y: y('ci95_low_plot'), y2: { field: 'ci95_high' }, ...colorEnc, tooltip } },
    { transform: [hasCi], mark: { type: 'tick', size: 12, thickness: 1.5, ...fixed }, encoding: { y: y('ci95_high'), ...colorEnc, tooltip } },
    {
      transform: [hasCi, { filter: 'datum.ci95_clipped !== true' }],
      mark: { type: 'tick', size: 12, thickness: 1.5, ...fixed },
      encoding: { y: y('ci95_low_plot'), ...colorEnc, tooltip },
    },
  ];
  if (anyClipped) {
    layers.push({
      transform: [{ filter: 'datum.ci95_clipped === true' }],
      mark: { type: 'point', shape: 'triangle-down', filled: true, size: 70, opacity: 1, ...fixed },
      encoding: { y: y('ci95_low_plot'), ...colorEnc, tooltip },
    });
  }
  return layers;
}

export interface RenderedFigure {
  svg: string;
  png: Buffer;
  /** vega-lite's compile warnings (an empty list for a healthy spec). */
  warnings: string[];
}

interface TextItem {
  fontSize?: number | string | null;
  fontWeight?: number | string | null;
  limit?: number | string | null;
}
/** vega-scenegraph's textMetrics (re-exported by vega, missing from its typings). */
interface TextMetrics {
  width: (item: TextItem, text: unknown) => number;
}
let metricsInstalled = false;

/** Makes headless vega measure text with the real font's advance widths instead of 0.8 em per character. */
function installTextMetrics(): void {
  if (metricsInstalled) return;
  metricsInstalled = true;
  const fonts = chartFontWidths();
  const tm = (vega as unknown as { textMetrics?: TextMetrics }).textMetrics;
  if (!fonts || !tm) return;
  tm.width = (item, text) => {
    const size = item.fontSize != null ? Number(item.fontSize) || 0 : 11;
    if (size <= 0 || text == null) return 0;
    const w = item.fontWeight;
    const bold = w === 'bold' || w === 'bolder' || (typeof w === 'number' && w >= 600) || (typeof w === 'string' && Number(w) >= 600);
    const width = textWidth(bold ? fonts.bold : fonts.regular, String(text).trim(), size);
    // A label with a limit is truncated to it when drawn (vega does the truncating).
    const limit = Number(item.limit);
    return limit > 0 ? Math.min(width, limit) : width;
  };
}

/** Compiles a vega-lite spec and renders it headless to an SVG string. */
export async function specToSvg(spec: TopLevelSpec): Promise<{ svg: string; warnings: string[] }> {
  const warnings: string[] = [];
  const collect = (level: string) => (...args: readonly unknown[]) => {
    warnings.push(`${level}: ${args.map(String).join(' ')}`);
  };
  // vega-lite's LoggerInterface returns `this` from every method; a plain object does that.
  interface Logger {
    level(): Logger;
    error(...a: readonly unknown[]): Logger;
    warn(...a: readonly unknown[]): Logger;
    info(): Logger;
    debug(): Logger;
  }
  const logger: Logger = {
    level: () => logger,
    error: (...a) => (collect('error')(...a), logger),
    warn: (...a) => (collect('warn')(...a), logger),
    info: () => logger,
    debug: () => logger,
  };
  installTextMetrics();
  const compiled = compile(spec, { logger });
  const view = new vega.View(vega.parse(compiled.spec), { renderer: 'none' });
  try {
    const svg = await view.toSVG();
    return { svg, warnings };
  } finally {
    view.finalize();
  }
}

const FONT_DIRS = ['/usr/share/fonts', '/usr/local/share/fonts'];
/** Families tried for the SVG's generic "sans-serif", first found wins; file → family name. */
const PREFERRED_FONTS: readonly [string, string][] = [
  ['/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf', 'DejaVu Sans'],
  ['/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf', 'Liberation Sans'],
];

interface FontSetup {
  dirs: string[];
  family: string | undefined;
}
let fontSetup: FontSetup | undefined;

function hasFontFile(dir: string, depth = 0): boolean {
  if (depth > 6) return false;
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return false;
  }
  for (const e of entries) {
    const p = join(dir, e);
    if (/\.(ttf|otf|ttc)$/i.test(e)) return true;
    try {
      if (statSync(p).isDirectory() && hasFontFile(p, depth + 1)) return true;
    } catch {
      // A dangling link is no font; look on.
    }
  }
  return false;
}

/**
 * The font directories for resvg. Without a font, resvg silently drops every text element, and a
 * chart without axis titles is worse than no chart, so this fails loudly instead.
 */
export function fontsForPng(): FontSetup {
  if (fontSetup) return fontSetup;
  const dirs = FONT_DIRS.filter((d) => existsSync(d) && hasFontFile(d));
  if (dirs.length === 0) {
    throw new Error(
      `PNG rendering needs a TrueType/OpenType font, and none is under ${FONT_DIRS.join(' or ')}: install the Debian package fonts-dejavu-core`,
    );
  }
  const family = PREFERRED_FONTS.find(([file]) => existsSync(file))?.[1];
  fontSetup = { dirs, family };
  return fontSetup;
}

function resvgFor(svg: string): Resvg {
  const fonts = fontsForPng();
  return new Resvg(svg, {
    font: {
      loadSystemFonts: false,
      fontDirs: fonts.dirs,
      ...(fonts.family ? { defaultFontFamily: fonts.family, sansSerifFamily: fonts.family } : {}),
    },
    fitTo: { mode: 'zoom', value: 2 },
    background: 'white',
    logLevel: 'off',
  });
}

/** Rasterizes an SVG at twice its size (crisp on high-density screens and in papers). */
export function svgToPng(svg: string): Buffer {
  return resvgFor(svg).render().asPng();
}

/** The raw RGBA pixels svgToPng encodes (for checks that text and marks were drawn). */
export function rasterize(svg: string): { width: number; height: number; pixels: Buffer } {
  const img = resvgFor(svg).render();
  return { width: img.width, height: img.height, pixels: img.pixels };
}

/** vega-lite spec → SVG (vega, headless) → PNG (resvg). */
export async function renderFigure(spec: TopLevelSpec): Promise<RenderedFigure> {
  const { svg, warnings } = await specToSvg(spec);
  return { svg, png: svgToPng(svg), warnings };
}
