import { describe, expect, it } from 'vitest';
import { groupSamples, groupValue, summarize, tCritical95, tQuantileTwoSided } from '../../src/report/stats.ts';
import type { SampleRow } from '../../src/results/types.ts';

describe('tCritical95', () => {
  it('has the textbook values for small df', () => {
    expect(tCritical95(1)).toBeCloseTo(12.706, 3);
    expect(tCritical95(2)).toBeCloseTo(4.303, 3);
    expect(tCritical95(4)).toBeCloseTo(2.776, 3);
    expect(tCritical95(9)).toBeCloseTo(2.262, 3);
    expect(tCritical95(29)).toBeCloseTo(2.045, 3);
  });

  it('agrees with the inverted t distribution for every tabled df (two independent sources)', () => {
    for (let df = 1; df <= 30; df++) expect(Math.abs(tCritical95(df) - tQuantileTwoSided(df, 0.05))).toBeLessThan(1e-6);
  });

  it('computes df beyond the table and tends to the normal 1.96', () => {
    expect(tCritical95(40)).toBeCloseTo(2.021, 3);
    expect(tCritical95(60)).toBeCloseTo(2.000, 3);
    expect(tCritical95(120)).toBeCloseTo(1.980, 3);
    expect(tCritical95(1_000_000)).toBeCloseTo(1.95996, 4);
    // Monotone across the table's edge.
    expect(tCritical95(30)).toBeGreaterThan(tCritical95(31));
  });

  it('rejects df that is not a positive integer', () => {
    expect(() => tCritical95(0)).toThrow(/degrees of freedom must be an integer >= 1, got 0/);
    expect(() => tCritical95(2.5)).toThrow(/got 2.5/);
  });
});

describe('summarize', () => {
  it('matches hand-computed values for 1..5', () => {
    // mean 3, sd = sqrt(10/4) = 1.58114, se = sd/sqrt(5) = 0.70711, t(4) = 2.77645 → half-width 1.96324
    const s = summarize([5, 3, 1, 4, 2]);
    expect(s.n).toBe(5);
    expect(s.mean).toBe(3);
    expect(s.median).toBe(3);
    expect(s.min).toBe(1);
    expect(s.max).toBe(5);
    expect(s.sd).toBeCloseTo(1.581139, 6);
    expect(s.ci95Half).toBeCloseTo(1.963243, 6);
    expect(s.ci95Low).toBeCloseTo(1.036757, 6);
    expect(s.ci95High).toBeCloseTo(4.963243, 6);
    expect(s.cv).toBeCloseTo(1.581139 / 3, 6);
    expect(s.note).toBeUndefined();
  });

  it('n=2 uses t(1) = 12.706: a wide interval, as it should be', () => {
    // mean 11, sd sqrt(2), se 1 → half-width 12.7062
    const s = summarize([10, 12]);
    expect(s.mean).toBe(11);
    expect(s.median).toBe(11);
    expect(s.sd).toBeCloseTo(Math.SQRT2, 12);
    expect(s.ci95Low).toBeCloseTo(11 - 12.706205, 5);
    expect(s.ci95High).toBeCloseTo(11 + 12.706205, 5);
  });

  it('n=1 has no interval and says so', () => {
    const s = summarize([7.5]);
    expect(s).toMatchObject({ n: 1, mean: 7.5, median: 7.5, min: 7.5, max: 7.5, sd: null, ci95Low: null, ci95High: null, ci95Half: null, cv: null });
    expect(s.note).toBe('n=1: no confidence interval');
  });

  it('constant values give a zero-width interval, exactly', () => {
    const s = summarize([0.1, 0.1, 0.1]);
    expect(s.mean).toBe(0.1);
    expect(s.sd).toBe(0);
    expect(s.ci95Low).toBe(0.1);
    expect(s.ci95High).toBe(0.1);
    expect(s.cv).toBe(0);
  });

  it('mean 0: no coefficient of variation, with a note', () => {
    const s = summarize([-1, 1]);
    expect(s.cv).toBeNull();
    expect(s.note).toMatch(/mean is 0/);
  });

  it('median of an even count is the middle pair average', () => {
    expect(summarize([4, 1, 3, 2]).median).toBe(2.5);
  });

  it('rejects empty input and non-finite values, naming the index', () => {
    expect(() => summarize([])).toThrow(/no values/);
    expect(() => summarize([1, Number.NaN])).toThrow(/value 1 is not a finite number \(NaN\)/);
    expect(() => summarize([Infinity])).toThrow(/value 0/);
  });
});

function row(cell: string, axes: SampleRow['axes'], metric: string, value: number, repetition = 0): SampleRow {
  return { cell, cellHash: `h-${cell}`, workload: 'w', tool: 'fio', repetition, metric, value, unit: 'IOPS', axes, params: {} };
}

describe('groupSamples', () => {
  const rows = [
    row('a', { backend: 'raw', bs: 4096 }, 'iops', 10, 0),
    row('b', { backend: 'pcow', bs: 4096 }, 'iops', 20, 0),
    row('a', { backend: 'raw', bs: 4096 }, 'iops', 12, 1),
    row('c', { backend: 'raw', bs: '4096' }, 'iops', 30, 0),
    row('a', { backend: 'raw', bs: 4096 }, 'lat', 5, 0),
  ];

  it('groups by axes in first-seen order, keeping 4096 and "4096" apart', () => {
    const g = groupSamples(rows, ['backend', 'bs', 'metric']);
    expect(g.map((x) => x.key)).toEqual([
      { backend: 'raw', bs: 4096, metric: 'iops' },
      { backend: 'pcow', bs: 4096, metric: 'iops' },
      { backend: 'raw', bs: '4096', metric: 'iops' },
      { backend: 'raw', bs: 4096, metric: 'lat' },
    ]);
    expect(g[0]?.values).toEqual([10, 12]);
    expect(g[0]?.rows.map((r) => r.repetition)).toEqual([0, 1]);
  });

  it('groups by row fields too, and an axis of the same name wins', () => {
    expect(groupSamples(rows, ['cell']).map((x) => x.key.cell)).toEqual(['a', 'b', 'c']);
    const r = row('x', { workload: 'from-axis' }, 'iops', 1);
    expect(groupValue(r, 'workload')).toBe('from-axis');
  });

  it('names the row and the missing axis', () => {
    expect(() => groupSamples(rows, ['rw'])).toThrow(/sample 0 \(cell a, metric iops\) has no axis or field "rw"/);
  });
});

describe('bootstrapDifference', () => {
  it('gives mean(a) - mean(b) with a seeded interval around it, zero-width for constant groups', async () => {
    const { bootstrapDifference } = await import('../../src/report/stats.ts');
    const a = [70, 72, 68, 71];
    const b = [25, 24, 27, 26];
    const d = bootstrapDifference(a, b, { seed: 7 });
    expect(d.difference).toBeCloseTo(70.25 - 25.5, 12);
    expect(d.ciLow).toBeLessThan(d.difference);
    expect(d.ciHigh).toBeGreaterThan(d.difference);
    expect(d.ciLow).toBeGreaterThan(40);
    expect(bootstrapDifference(a, b, { seed: 7 })).toEqual(d);
    const c = bootstrapDifference([5, 5], [2, 2]);
    expect([c.difference, c.ciLow, c.ciHigh]).toEqual([3, 3, 3]);
  });
});
