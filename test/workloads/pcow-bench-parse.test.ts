// pcow-bench single-case output → samples, on real outputs captured from the tool
// (test/fixtures/pcow-bench/capture.sh), and the errors for output that is not that.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PCOW_BENCH_METRICS, PcowBenchOutputError, parsePcowBench, pcowBenchSamples } from '../../src/workloads/pcow-bench-parse.ts';
import type { Sample } from '../../src/workloads/types.ts';

const dir = 'test/fixtures/pcow-bench';
const fixture = (name: string): string => readFileSync(path.join(dir, name), 'utf8');
const parse = (name: string) => parsePcowBench(fixture(name), name);
const byMetric = (s: Sample[]): Record<string, Sample> => Object.fromEntries(s.map((x) => [x.metric, x]));
const declared = new Map(PCOW_BENCH_METRICS.map((m) => [m.name, m]));

/** Every sample is a declared metric with the declared unit. */
function expectDeclared(samples: Sample[]): void {
  for (const s of samples) {
    expect(declared.get(s.metric), `metric ${s.metric} is declared`).toBeDefined();
    expect(s.unit, `unit of ${s.metric}`).toBe(declared.get(s.metric)!.unit);
    expect(Number.isFinite(s.value)).toBe(true);
  }
}

describe('pcow-bench case output', () => {
  it('expansion: touch latency, same-run floor and ratio, runtime counters', () => {
    const d = parse('case-expansion.json');
    expect(d.case).toBe('expansion');
    const s = pcowBenchSamples(d, 'case-expansion.json');
    expectDeclared(s);
    const m = byMetric(s);
    if (d.case !== 'expansion') throw new Error('unreachable');
    expect(m.lat_p50!.value).toBe(d.result.touch.p50_ns);
    expect(m.lat_p99!.value).toBe(d.result.touch.p99_ns);
    expect(m.lat_mean!.value).toBe(d.result.touch.mean_ns);
    expect(m.floor_p50!.value).toBe(d.floor.uffdio_copy!.p50_ns);
    expect(m.lat_p50_over_floor!.value).toBe(d.result.p50_over_floor);
    // the ratio is the quotient of the two medians printed next to it
    expect(m.lat_p50_over_floor!.value).toBeCloseTo(m.lat_p50!.value / m.floor_p50!.value, 3);
    expect(m.expansions!.value).toBe(d.params.clusters);
    expect(m.cows!.value).toBe(0);
    expect(m.service_p50!.value).toBe(d.runtime!.expansion.p50_ns);
    expect(d.params.prealloc).toBe(64);
    expect(d.image).toMatch(/pcow-bench\.img$/);
  });

  it('cow: the unit copied shows in cow_bytes', () => {
    const d = parse('case-cow.json');
    const m = byMetric(pcowBenchSamples(d, 'case-cow.json'));
    if (d.case !== 'cow') throw new Error('unreachable');
    expect(m.cows!.value).toBe(d.params.clusters);
    expect(m.cow_bytes!.value).toBe(d.params.clusters * d.params.cow_unit!);
    expect(m.service_p50!.value).toBe(d.runtime!.cow.p50_ns);
    expect(m.expansions!.value).toBe(0);
  });

  it('steady, backend both: pcow is iops/bw, raw and the paired ratio come along', () => {
    const d = parse('case-steady-both.json');
    const s = pcowBenchSamples(d, 'case-steady-both.json');
    expectDeclared(s);
    const m = byMetric(s);
    if (d.case !== 'steady') throw new Error('unreachable');
    expect(m.bw!.value).toBe(d.result.pcow!.bytes_per_s);
    expect(m.iops!.value).toBe(d.result.pcow!.ops_per_s);
    expect(m.iops!.value).toBeCloseTo(m.bw!.value / d.params.bs, 0);
    expect(m.bw_raw!.value).toBe(d.result.raw!.bytes_per_s);
    expect(m.pcow_over_raw!.value).toBe(d.result.pcow_over_raw);
    expect(d.params.rounds).toBe(6);
    expect(d.result.raw!.rounds_bytes_per_s).toHaveLength(6);
    // the 95% CI of the paired ratios' median comes along as two metrics, and brackets the median
    const [lo, hi] = d.result.pcow_over_raw_ci95!;
    expect(m.pcow_over_raw_ci_lo!.value).toBe(lo);
    expect(m.pcow_over_raw_ci_hi!.value).toBe(hi);
    expect(lo).toBeLessThanOrEqual(d.result.pcow_over_raw!);
    expect(hi).toBeGreaterThanOrEqual(d.result.pcow_over_raw!);
    // an output without the interval (one round, or an older pcow-bench) has no CI samples
    const old = JSON.parse(fixture('case-steady-both.json')) as { result: Record<string, unknown> };
    delete old.result.pcow_over_raw_ci95;
    const om = byMetric(pcowBenchSamples(parsePcowBench(JSON.stringify(old), 'old.json'), 'old.json'));
    expect(om.pcow_over_raw).toBeDefined();
    expect(om.pcow_over_raw_ci_lo).toBeUndefined();
    // an interval upside down is refused, naming the file
    const flipped = JSON.parse(fixture('case-steady-both.json')) as { result: { pcow_over_raw_ci95: number[] } };
    flipped.result.pcow_over_raw_ci95 = [1.2, 0.9];
    expect(() => pcowBenchSamples(parsePcowBench(JSON.stringify(flipped), 'f.json'), 'f.json')).toThrow(/^f\.json: pcow_over_raw_ci95 \[1\.2, 0\.9\] is not an interval/);
  });

  it('steady, backend raw: iops/bw are the raw file mmap, no ratio, no image', () => {
    const d = parse('case-steady-raw.json');
    const m = byMetric(pcowBenchSamples(d, 'case-steady-raw.json'));
    if (d.case !== 'steady') throw new Error('unreachable');
    expect(m.bw!.value).toBe(d.result.raw!.bytes_per_s);
    expect(m.pcow_over_raw).toBeUndefined();
    expect(m.vmas).toBeUndefined();
    expect(d.runtime).toBeUndefined();
    expect(d.image).toBeNull();
  });

  it('floor, open and stripes', () => {
    const f = byMetric(pcowBenchSamples(parse('case-floor.json'), 'case-floor.json'));
    expect(f.lat_p50!.value).toBe(f.floor_p50!.value);
    expect(f.floor_mmap_p50!.value).toBeGreaterThan(0);
    const o = parse('case-open.json');
    const om = byMetric(pcowBenchSamples(o, 'case-open.json'));
    if (o.case !== 'open') throw new Error('unreachable');
    expect(om.open_map_s!.value).toBe(o.result.open_map_s);
    expect(om.vmas!.value).toBe(o.result.vmas_in_range);
    const st = parse('case-stripes.json');
    const sm = byMetric(pcowBenchSamples(st, 'case-stripes.json'));
    if (st.case !== 'stripes') throw new Error('unreachable');
    expect(st.params.stripes).toBe(2);
    expect(sm.bw_write!.value).toBe(st.result.seqwrite_bytes_per_s);
    expect(sm.bw_read!.value).toBe(st.result.seqread_bytes_per_s);
    for (const name of ['case-floor.json', 'case-open.json', 'case-stripes.json']) expectDeclared(pcowBenchSamples(parse(name), name));
  });

  it('errors name the file and what is wrong', () => {
    expect(() => parsePcowBench('', 'out.json')).toThrow(/^out\.json: not valid JSON .*: empty output/);
    expect(() => parsePcowBench('{"tool":"pcow-bench", "schema": 1', 'out.json')).toThrow(/^out\.json: not valid JSON/);
    expect(() => parsePcowBench('{"tool":"fio"}', 'out.json')).toThrow(PcowBenchOutputError);
    expect(() => parsePcowBench('{"tool":"fio"}', 'out.json')).toThrow(/^out\.json: not pcow-bench case output: /);
    // the full-suite document is recognised and refused with the reason
    const suite = JSON.stringify({ tool: 'pcow-bench', schema: 1, host: {}, floor: {}, targets: [], errors: [] });
    expect(() => parsePcowBench(suite, 'suite.json')).toThrow(/full-suite output/);
    // a field of the wrong type is named by its path
    const bad = JSON.parse(fixture('case-expansion.json')) as { result: { touch: { p50_ns: unknown } } };
    bad.result.touch.p50_ns = 'fast';
    expect(() => parsePcowBench(JSON.stringify(bad), 'x.json')).toThrow(/x\.json: .*result\.touch\.p50_ns/);
    // backend both without the ratio: parsed, but no samples
    const noRatio = JSON.parse(fixture('case-steady-both.json')) as { result: Record<string, unknown> };
    delete noRatio.result.pcow_over_raw;
    const d = parsePcowBench(JSON.stringify(noRatio), 'y.json');
    expect(() => pcowBenchSamples(d, 'y.json')).toThrow(/^y\.json: backend both: the result has no pcow_over_raw/);
    // a latency case without touches
    const none = JSON.parse(fixture('case-cow.json')) as { result: { touch: { count: number } } };
    none.result.touch.count = 0;
    expect(() => pcowBenchSamples(parsePcowBench(JSON.stringify(none), 'z.json'), 'z.json')).toThrow(/^z\.json: the cow case recorded no touches/);
  });
});
