import { Resvg } from '@resvg/resvg-js';
import { describe, expect, it } from 'vitest';
import { Figure, type FigureConfig } from '../../src/experiment/schema.ts';
import {
  figureData,
  FigureError,
  figureSpec,
  fontsForPng,
  rasterize,
  renderFigure,
  specToSvg,
  type FigurePoint,
} from '../../src/report/charts.ts';
import { chartFontWidths, textWidth } from '../../src/report/fontmetrics.ts';
import type { SampleRow } from '../../src/results/types.ts';
import type { MetricInfo } from '../../src/workloads/types.ts';

const iops: MetricInfo = { name: 'iops', unit: 'IOPS', better: 'higher', description: 'I/O operations per second' };

function row(axes: SampleRow['axes'], metric: string, value: number, repetition: number, unit = 'IOPS'): SampleRow {
  const cell = `fio${Object.entries(axes).map(([k, v]) => `.${k}=${String(v)}`).join('')}`;
  return { cell, cellHash: cell, workload: 'fio', tool: 'fio', repetition, metric, value, unit, axes, params: {} };
}

/** backend x bs x rw, 3 repetitions; iops of (raw, 4096, randread) is 1..3 so its CI is known. */
function synthetic(): SampleRow[] {
  const rows: SampleRow[] = [];
  const base: Record<string, number> = { raw: 40000, pcow: 36000, qcow2: 9000 };
  for (let rep = 0; rep < 3; rep++) {
    for (const backend of ['raw', 'pcow', 'qcow2']) {
      for (const bs of [4096, 65536]) {
        for (const rw of ['randread', 'randwrite']) {
          const v = backend === 'raw' && bs === 4096 && rw === 'randread' ? rep + 1 : (base[backend] as number) * (bs === 4096 ? 1 : 0.3) * (1 + 0.05 * rep);
          rows.push(row({ backend, bs, rw }, 'iops', v, rep));
          rows.push(row({ backend, bs, rw }, 'lat_mean', 100 + rep, rep, 'us'));
        }
      }
    }
  }
  return rows;
}

const order = { backend: ['raw', 'pcow', 'qcow2'], bs: [4096, 65536], rw: ['randread', 'randwrite'] };
const fig = (f: Record<string, unknown>): FigureConfig => Figure.parse({ id: 'f', title: 'IOPS by backend', metric: 'iops', x: 'backend', ...f });

// The spec is a plain JSON tree; tests walk it without vega-lite's deep union types.
type Json = Record<string, unknown>;
const asJson = (v: unknown): Json => v as Json;
const layers = (spec: Json): Json[] => ((spec.layer ?? asJson(spec.spec).layer) as Json[]);

describe('figureData / figureSpec', () => {
  it('keeps only the figure metric and the where values, one point per x/colour', () => {
    const d = figureData(fig({ color: 'bs', where: { rw: 'randread' } }), synthetic(), order);
    expect(d.points).toHaveLength(6);
    expect(d.points.every((p) => p.n === 3)).toBe(true);
    expect(d.cells.every((c) => c.includes('rw=randread'))).toBe(true);
    expect(d.pooledAxes).toEqual([]);
    expect(d.unit).toBe('IOPS');
    const p = d.points.find((x) => x.backend === 'raw' && x.bs === 4096) as FigurePoint;
    // 1, 2, 3: mean 2, sd 1, half-width t(2)/sqrt(3) = 4.302653/1.732051 = 2.484138
    expect(p.mean).toBe(2);
    expect(p.ci95_half as number).toBeCloseTo(2.484138, 5);
    expect(p.ci95_low as number).toBeCloseTo(2 - 2.484138, 5);
    expect(p.ci95_high as number).toBeCloseTo(2 + 2.484138, 5);
  });

  it('sorts points, x, legend and facets in the experiment order, not alphabetically', () => {
    const d = figureData(fig({ color: 'bs', where: { rw: 'randread' } }), synthetic(), order);
    expect(d.points.map((p) => `${p.backend}/${p.bs}`)).toEqual([
      'raw/4096', 'raw/65536', 'pcow/4096', 'pcow/65536', 'qcow2/4096', 'qcow2/65536',
    ]);
    const reversed = { backend: ['qcow2', 'pcow', 'raw'], bs: [65536, 4096], rw: ['randwrite', 'randread'] };
    const spec = asJson(figureSpec(fig({ color: 'bs', facet: 'rw' }), synthetic(), iops, reversed));
    expect(asJson(asJson(spec.facet).column)).toMatchObject({ field: 'rw', sort: ['randwrite', 'randread'], title: 'rw' });
    const enc = asJson(asJson(spec.spec).encoding);
    expect(asJson(enc.x)).toMatchObject({ field: 'backend', type: 'ordinal', sort: ['qcow2', 'pcow', 'raw'], title: 'backend' });
    expect(asJson(enc.xOffset)).toMatchObject({ field: 'bs', sort: [65536, 4096] });
    expect(asJson(asJson(layers(spec)[0]?.encoding).color)).toMatchObject({ field: 'bs', sort: [65536, 4096], title: 'bs' });
  });

  it('binds y to the mean and the error bar to the CI, with titles, tooltips and the n/CI subtitle', () => {
    const spec = asJson(figureSpec(fig({ where: { rw: 'randread', bs: 4096 } }), synthetic(), iops, order));
    const [mean, err] = layers(spec);
    expect(asJson(mean?.mark).type).toBe('bar');
    const y = asJson(asJson(mean?.encoding).y);
    expect(y).toMatchObject({ field: 'mean', type: 'quantitative', title: 'iops (IOPS)' });
    expect(asJson(err?.mark).type).toBe('rule');
    expect(asJson(asJson(err?.encoding).y).field).toBe('ci95_low_plot');
    expect(asJson(asJson(err?.encoding).y2).field).toBe('ci95_high');
    // A tick at each end; no arrow layer when nothing is clipped.
    const rest = layers(spec).slice(2);
    expect(rest.map((l) => [asJson(l.mark).type, asJson(asJson(l.encoding).y).field])).toEqual([['tick', 'ci95_high'], ['tick', 'ci95_low_plot']]);
    const tips = (asJson(mean?.encoding).tooltip as Json[]).map((t) => t.field);
    expect(tips).toEqual(expect.arrayContaining(['backend', 'mean', 'ci95_low', 'ci95_high', 'n']));
    const sub = asJson(spec.title).subtitle as string[];
    expect(sub[0]).toMatch(/^n = 3 samples per point · error bars: 95% CI/);
    expect(sub[0]).toMatch(/higher is better/);
    const values = asJson(spec.data).values as FigurePoint[];
    expect(values.map((v) => v.backend)).toEqual(['raw', 'pcow', 'qcow2']);
    for (const v of values) for (const k of ['mean', 'ci95_low', 'ci95_high', 'n']) expect(v).toHaveProperty(k);
  });

  it('uses the unit from the samples when the metric is not declared', () => {
    const spec = asJson(figureSpec(fig({ metric: 'lat_mean', where: { rw: 'randread', bs: 4096 } }), synthetic(), undefined, order));
    expect(asJson(asJson(layers(spec)[0]?.encoding).y).title).toBe('lat_mean (us)');
  });

  it('log scale: a lower bound <= 0 is marked clipped (arrow at the axis bottom, no tick), as the caption says', () => {
    const f = fig({ mark: 'line', yScale: 'log', color: 'bs', where: { rw: 'randread' } });
    const spec = asJson(figureSpec(f, synthetic(), iops, order));
    const [mean, err, high, low, arrow] = layers(spec);
    expect(asJson(asJson(mean?.mark)).type).toBe('line');
    const scale = asJson(asJson(asJson(mean?.encoding).y).scale);
    expect(scale).toMatchObject({ type: 'log' });
    expect(asJson(asJson(asJson(err?.encoding).y).scale)).toEqual(scale);
    const values = asJson(spec.data).values as FigurePoint[];
    const clipped = values.filter((v) => v.ci95_clipped === true);
    // Only raw/4096 (1, 2, 3) has a CI reaching below 0.
    expect(clipped).toHaveLength(1);
    expect(clipped[0]?.ci95_low as number).toBeLessThan(0);
    // The whisker ends at the bottom of the axis, not at an invented value inside the plot.
    expect(clipped[0]?.ci95_low_plot).toBe(scale.domainMin);
    expect(values.filter((v) => v.ci95_clipped !== true).every((v) => v.ci95_low_plot === v.ci95_low)).toBe(true);
    // The upper tick for every whisker, the lower tick only where the bound is real, an arrow where it is not.
    expect(asJson(high?.mark).type).toBe('tick');
    expect(asJson(low?.mark).type).toBe('tick');
    expect(JSON.stringify(low?.transform)).toContain('datum.ci95_clipped !== true');
    expect(asJson(arrow?.mark)).toMatchObject({ type: 'point', shape: 'triangle-down', filled: true });
    expect(JSON.stringify(arrow?.transform)).toContain('datum.ci95_clipped === true');
    expect(asJson(asJson(arrow?.encoding).y).field).toBe('ci95_low_plot');
    const caption = (asJson(spec.title).subtitle as string[]).join('\n');
    expect(caption).toMatch(/1 lower CI bound\(s\) <= 0: .*run off the bottom of the axis, marked ▼/);
    expect(figureData(f, synthetic(), order).notes.join('\n')).toContain('marked ▼');
  });

  it('renders a clipped whisker with one arrow and no lower tick', async () => {
    const rows = synthetic().filter((r) => r.axes.rw === 'randread' && r.axes.bs === 4096);
    const spec = figureSpec(fig({ mark: 'point', yScale: 'log', where: { rw: 'randread', bs: 4096 } }), rows, iops, order);
    const n = (asJson(asJson(spec).data).values as FigurePoint[]).length;
    const { svg, warnings } = await specToSvg(spec);
    expect(warnings).toEqual([]);
    const marks = (cls: string): number => {
      const body = new RegExp(`<g class="mark-${cls} role-mark (layer_\\d+)_marks"[^>]*>(.*?)</g>`, 'gs');
      return [...svg.matchAll(body)].map((m) => (m[2]!.match(/<path /g) ?? []).length).reduce((a, b) => a + b, 0);
    };
    // n points + 1 arrow (symbols), n upper + (n - 1) lower ticks (rects).
    expect(marks('symbol')).toBe(n + 1);
    expect(marks('rect')).toBe(2 * n - 1);
  });

  it('says when points pool cells that differ in an axis the figure does not show', () => {
    const d = figureData(fig({ where: { rw: 'randread' } }), synthetic(), order);
    expect(d.pooledAxes).toEqual(['bs']);
    expect(d.points[0]?.n).toBe(6);
    expect(d.notes).toEqual(['points pool cells that differ in bs']);
    expect(d.details).toEqual(["to separate the pooled cells, add bs to the figure's where, color or facet"]);
  });

  it('notes points with n=1, which get no error bar', () => {
    const rows = synthetic().filter((r) => r.repetition === 0);
    const d = figureData(fig({ color: 'bs', where: { rw: 'randread' } }), rows, order);
    expect(d.points.every((p) => p.ci95_low === null && p.ci95_low_plot === null)).toBe(true);
    expect(d.notes.join()).toMatch(/n=1 have no confidence interval/);
  });

  it('fails clearly on unknown axes, no matches and mixed units', () => {
    expect(() => figureData(fig({ x: 'nope' }), synthetic(), order)).toThrow(/figure f: x "nope" is not a matrix axis \(axes: backend, bs, rw, workload\)/);
    expect(() => figureData(fig({ color: 'bogus' }), synthetic(), order)).toThrow(/color "bogus" is not a matrix axis/);
    expect(() => figureData(fig({ where: { mode: 1 } }), synthetic(), order)).toThrow(/where key "mode" is not a matrix axis/);
    const e = (() => {
      try {
        figureData(fig({ where: { backend: 'nvme' } }), synthetic(), order);
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    expect(e).toBeInstanceOf(FigureError);
    expect((e as FigureError).kind).toBe('no-samples');
    expect((e as Error).message).toBe('figure f: no samples of metric "iops" matching where {"backend":"nvme"}');
    const mixed = [row({ backend: 'raw' }, 'iops', 1, 0, 'IOPS'), row({ backend: 'pcow' }, 'iops', 1, 0, 'kIOPS')];
    expect(() => figureData(fig({}), mixed)).toThrow(/several units \(IOPS, kIOPS\)/);
    const clash = [row({ mean: 'x' }, 'iops', 1, 0)];
    expect(() => figureData(fig({ x: 'mean' }), clash)).toThrow(/axis "mean" has the name of a statistics field/);
  });

  it('leaves out cells of workloads an axis does not apply to, with a note', () => {
    // As the planner makes them: fio cells have rw, qemu-img cells have format instead.
    const rows: SampleRow[] = [];
    for (const rep of [0, 1]) {
      for (const rw of ['randread', 'randwrite']) rows.push({ ...row({ workload: 'fio-dax', rw, bs: '4k' }, 'iops', 100 + rep, rep), workload: 'fio-dax' });
      for (const format of ['raw', 'qcow2']) rows.push({ ...row({ workload: 'qemu-img', format, bs: '4k' }, 'iops', 50 + rep, rep), workload: 'qemu-img', tool: 'qemu-img-bench' });
    }
    const d = figureData(fig({ x: 'workload', color: 'rw', where: { bs: '4k' } }), rows, { workload: ['fio-dax', 'qemu-img'], rw: ['randread', 'randwrite'] });
    expect(d.points.map((p) => `${p.workload}/${p.rw}`)).toEqual(['fio-dax/randread', 'fio-dax/randwrite']);
    expect(d.notes).toContain('left out 2 cell(s) without a value for rw');
    expect(d.details).toContain('rw does not apply to the workload of: fio.workload=qemu-img.format=raw.bs=4k, fio.workload=qemu-img.format=qcow2.bs=4k');
    expect(d.pooledAxes).toEqual([]);
    // Only such cells: nothing to draw, said as "no samples" (they may have failed).
    const onlyQemu = rows.filter((r) => r.workload === 'qemu-img');
    expect(() => figureData(fig({ x: 'workload', color: 'rw' }), onlyQemu, { rw: ['randread'] })).toThrow(/no samples of metric "iops" from cells with a value on every axis the figure draws \(workload, rw\)/);
  });

  it('charts the workload when it is not an axis, and matches where values as the planner does (4096 = "4096")', () => {
    const rows = [0, 1].flatMap((rep) => [4096, 65536].map((bs) => row({ bs }, 'iops', bs / 1000 + rep, rep)));
    const d = figureData(fig({ x: 'workload', where: { bs: '4096' } }), rows);
    expect(d.points).toHaveLength(1);
    expect(d.points[0]).toMatchObject({ workload: 'fio', n: 2, mean: 4.596 });
    const sorted = figureData(fig({ x: 'bs' }), rows, { bs: ['65536', '4096'] });
    expect(sorted.points.map((p) => p.bs)).toEqual([65536, 4096]);
  });

  it('shows booleans as text and keeps their order', () => {
    const rows = [true, false].flatMap((cow) => [0, 1].map((rep) => row({ cow }, 'iops', cow ? 5 + rep : 7 + rep, rep)));
    const d = figureData(fig({ x: 'cow' }), rows, { cow: [false, true] });
    expect(d.points.map((p) => p.cow)).toEqual(['false', 'true']);
  });
});

/** Count of pixels darker than light grey (text, axes, marks). */
function darkPixels(svg: string): number {
  const { pixels } = rasterize(svg);
  let n = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if ((pixels[i] as number) + (pixels[i + 1] as number) + (pixels[i + 2] as number) < 3 * 110) n++;
  }
  return n;
}

describe('renderFigure', () => {
  it('renders SVG with the titles and a PNG that really shows text', async () => {
    const spec = figureSpec(fig({ color: 'bs', facet: 'rw' }), synthetic(), iops, order);
    const r = await renderFigure(spec);
    expect(r.warnings).toEqual([]);
    expect(r.svg).toMatch(/^<svg/);
    for (const t of ['IOPS by backend', 'iops (IOPS)', '>backend<', '>bs<', '>rw<', 'randread', 'qcow2', 'error bars: 95% CI']) {
      expect(r.svg).toContain(t);
    }
    // PNG signature and IHDR: twice the SVG's size.
    expect(r.png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    const w = r.png.readUInt32BE(16);
    const h = r.png.readUInt32BE(20);
    const svgW = Number(/width="(\d+(\.\d+)?)"/.exec(r.svg)?.[1]);
    expect(w).toBe(Math.round(svgW * 2));
    expect(w).toBeGreaterThan(600);
    expect(h).toBeGreaterThan(400);
    expect(r.png.length).toBeGreaterThan(20_000);
    // Without fonts resvg silently drops text: the same SVG minus its text must lose many dark pixels.
    const withText = darkPixels(r.svg);
    const withoutText = darkPixels(r.svg.replace(/<text[^>]*>[^<]*<\/text>/g, ''));
    expect(withText - withoutText).toBeGreaterThan(5000);
  });

  it('renders all three marks and log scales without vega-lite warnings', async () => {
    for (const mark of ['bar', 'line', 'point'] as const) {
      for (const yScale of ['linear', 'log'] as const) {
        const { svg, warnings } = await specToSvg(figureSpec(fig({ mark, yScale, color: 'bs', where: { rw: 'randwrite' } }), synthetic(), iops, order));
        expect(warnings, `${mark}/${yScale}`).toEqual([]);
        expect(svg).toContain('iops (IOPS)');
      }
    }
  });

  it('draws every bar on a log scale (bars are not stacked from 0)', async () => {
    const { svg } = await specToSvg(figureSpec(fig({ mark: 'bar', yScale: 'log', color: 'bs', where: { rw: 'randwrite' } }), synthetic(), iops, order));
    const rects = /<g class="mark-rect role-mark[^"]*"[^>]*>(.*?)<\/g>/s.exec(svg)?.[1] ?? '';
    const bars = rects.match(/<path [^>]*d="M[^"]+"/g) ?? [];
    expect(bars.length).toBeGreaterThan(0);
    for (const b of bars) {
      expect(b).not.toMatch(/NaN|Infinity/);
      // d="Mx,yhWvHh-WZ": a bar of height 0 is invisible.
      expect(Number(/v(-?[\d.]+)/.exec(b)?.[1]), b).not.toBe(0);
    }
  });

  it('lays text out with the real font: the chart is not padded by 0.8 em per character', async () => {
    const spec = figureSpec(fig({ title: 'A rather long title for a chart of four bars', where: { rw: 'randread', bs: 4096 } }), synthetic(), iops, order);
    const { svg } = await specToSvg(spec);
    const width = Number(/width="(\d+(\.\d+)?)"/.exec(svg)?.[1]);
    // 320 px plot + axis + padding; the 0.8 em estimate of the subtitle alone would be > 800 px.
    expect(width).toBeLessThan(700);
  });
});

describe('font metrics', () => {
  it('finds a font for PNG text', () => {
    expect(fontsForPng().dirs.length).toBeGreaterThan(0);
  });

  it('measures text as resvg draws it (within 5%)', () => {
    const fonts = chartFontWidths();
    expect(fonts, 'fonts-dejavu-core or fonts-liberation must be installed').not.toBeNull();
    const { family } = fontsForPng();
    for (const [text, bold] of [['iops (IOPS) by backend', false], ['Random read IOPS, 4 KiB', true]] as const) {
      const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="600" height="40"><text x="0" y="24" font-family="${family}" font-size="20" font-weight="${bold ? 'bold' : 'normal'}">${text}</text></svg>`;
      const bbox = new Resvg(svg, { font: { loadSystemFonts: false, fontDirs: fontsForPng().dirs } }).getBBox();
      const measured = textWidth(bold ? (fonts?.bold as never) : (fonts?.regular as never), text, 20);
      expect(bbox).toBeDefined();
      expect(Math.abs(measured - (bbox?.width ?? 0)) / measured).toBeLessThan(0.05);
    }
  });
});
