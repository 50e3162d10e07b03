// The fio JSON parser against real fio 3.33 reports (test/fixtures/fio, made by capture.sh).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  FioJobError,
  FioReportError,
  fioJobFailures,
  fioSamples,
  parseFioJson,
  percentileFromBins,
  summarizeFio,
  type FioSummary,
} from '../../src/workloads/fio-parse.ts';

const dir = path.join(import.meta.dirname, '..', 'fixtures', 'fio');
const text = (name: string): string => readFileSync(path.join(dir, name), 'utf8');
/** The raw JSON, to compute expectations independently of the parser. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- test-side view of fio's JSON
const raw = (name: string): any => JSON.parse(text(name));
const parse = (name: string) => parseFioJson(text(name), name);
const sample = (s: FioSummary, metric: string): number | undefined => fioSamples(s).find((x) => x.metric === metric)?.value;

describe('parseFioJson + summarizeFio on real reports', () => {
  it('one read-only job without group/unified reporting: the read direction as is', () => {
    const j = raw('randread-psync-direct.json').jobs[0];
    const s = summarizeFio(parse('randread-psync-direct.json'));
    expect(s.directions).toEqual(['read']);
    expect(s.total.iops).toBe(j.read.iops);
    expect(s.total.bw).toBe(j.read.bw_bytes);
    expect(s.total.clat).toEqual({
      n: j.read.clat_ns.N,
      mean: j.read.clat_ns.mean,
      p50: j.read.clat_ns.percentile['50.000000'],
      p99: j.read.clat_ns.percentile['99.000000'],
      p999: j.read.clat_ns.percentile['99.900000'],
      exact: true,
    });
    expect(s.warnings).toEqual([]);
    const metrics = fioSamples(s).map((x) => x.metric);
    expect(metrics).toEqual(['iops', 'bw', 'lat_mean', 'lat_p50', 'lat_p99', 'lat_p999', 'lat_total_mean']);
    expect(metrics.some((m) => m.startsWith('read_'))).toBe(false);
  });

  it("the harness's own shape (mmap randwrite): totals from fio's mixed section", () => {
    const j = raw('randwrite-mmap.json').jobs[0];
    const r = parse('randwrite-mmap.json');
    expect(r.fioVersion).toBe('fio-3.33');
    const s = summarizeFio(r);
    expect(s.directions).toEqual(['write']);
    expect(s.total.iops).toBe(j.mixed.iops);
    expect(s.total.clat.p99).toBe(j.mixed.clat_ns.percentile['99.000000']);
    expect(s.total.iops).toBeCloseTo(j.write.iops, 6);
    for (const x of fioSamples(s)) expect(x.value).toBeGreaterThan(0);
    expect(sample(s, 'bw')).toBeCloseTo(s.total.iops * 4096, -5);
  });

  it('mixed randrw, two jobs merged by group_reporting: exact totals plus read_/write_ samples', () => {
    const jobs = raw('randrw-2jobs-group.json').jobs;
    expect(jobs).toHaveLength(1);
    const j = jobs[0];
    const s = summarizeFio(parse('randrw-2jobs-group.json'));
    expect(s.directions).toEqual(['read', 'write']);
    expect(s.total.clat.exact).toBe(true);
    expect(sample(s, 'lat_p999')).toBe(j.mixed.clat_ns.percentile['99.900000']);
    expect(sample(s, 'read_iops')).toBe(j.read.iops);
    expect(sample(s, 'write_lat_p50')).toBe(j.write.clat_ns.percentile['50.000000']);
    // fio's mixed section is the sum of the directions (up to fio's own rounding).
    expect(sample(s, 'iops')!).toBeCloseTo(j.read.iops + j.write.iops, -1);
    expect(Math.abs(sample(s, 'bw')! - (j.read.bw_bytes + j.write.bw_bytes))).toBeLessThanOrEqual(2);
    // ~70% reads as asked.
    expect(s.read!.ios / s.total.ios).toBeGreaterThan(0.6);
    expect(s.read!.ios / s.total.ios).toBeLessThan(0.8);
  });

  it('two jobs reported separately: sums, N-weighted means, and a warning that percentiles are approximate', () => {
    const jobs = raw('randrw-2jobs-nogroup.json').jobs;
    expect(jobs).toHaveLength(2);
    const parts = jobs.flatMap((j: { read: unknown; write: unknown }) => [j.read, j.write]);
    const s = summarizeFio(parse('randrw-2jobs-nogroup.json'));
    const sum = (f: (p: any) => number): number => parts.reduce((a: number, p: unknown) => a + f(p), 0); // eslint-disable-line @typescript-eslint/no-explicit-any
    expect(s.total.iops).toBeCloseTo(sum((p) => p.iops), 6);
    expect(s.total.bw).toBe(sum((p) => p.bw_bytes));
    expect(s.total.ios).toBe(sum((p) => p.total_ios));
    expect(s.total.clat.mean).toBeCloseTo(sum((p) => p.clat_ns.mean * p.clat_ns.N) / sum((p) => p.clat_ns.N), 6);
    expect(s.total.clat.exact).toBe(false);
    expect(s.read!.iops).toBeCloseTo(jobs[0].read.iops + jobs[1].read.iops, 6);
    expect(s.warnings.join('\n')).toMatch(/approximated/);
  });

  it('json+ bins: fio\'s percentile rule reproduces every percentile fio printed, and merged parts stay exact', () => {
    const doc = raw('randrw-2jobs-nogroup-jsonplus.json');
    for (const j of doc.jobs) {
      for (const d of ['read', 'write']) {
        const c = j[d].clat_ns;
        const bins = new Map<number, number>(Object.entries(c.bins as Record<string, number>).map(([k, v]) => [Number(k), v]));
        for (const [p, v] of Object.entries(c.percentile as Record<string, number>)) {
          expect(percentileFromBins(bins, Number(p)), `${d} p${p}`).toBe(v);
        }
      }
    }
    const s = summarizeFio(parse('randrw-2jobs-nogroup-jsonplus.json'));
    expect(s.total.clat.exact).toBe(true);
    expect(s.warnings).toEqual([]);
    // The merged median lies between the parts' medians.
    const medians = doc.jobs.flatMap((j: any) => [j.read, j.write].map((d: any) => d.clat_ns.percentile['50.000000'])); // eslint-disable-line @typescript-eslint/no-explicit-any
    expect(s.total.clat.p50).toBeGreaterThanOrEqual(Math.min(...medians));
    expect(s.total.clat.p50).toBeLessThanOrEqual(Math.max(...medians));
    expect(s.total.ios).toBe(600);
  });

  it('libaio at queue depth 16: total latency (slat + clat) is reported next to clat', () => {
    const j = raw('randread-libaio-qd16.json').jobs[0];
    const s = summarizeFio(parse('randread-libaio-qd16.json'));
    expect(sample(s, 'lat_total_mean')).toBe(j.mixed.lat_ns.mean);
    expect(sample(s, 'lat_total_mean')!).toBeGreaterThan(sample(s, 'lat_mean')!);
  });

  it('fsync every 4 writes: sync_lat_mean from the sync section', () => {
    const j = raw('write-fsync.json').jobs[0];
    const s = summarizeFio(parse('write-fsync.json'));
    expect(j.sync.total_ios).toBeGreaterThan(0);
    expect(s.sync).toEqual({ ios: j.sync.total_ios, latMean: j.sync.lat_ns.mean });
    expect(sample(s, 'sync_lat_mean')).toBe(j.sync.lat_ns.mean);
  });

  it('the create_only layout report parses, has no job error and no I/O to summarize', () => {
    const r = parse('create-only.json');
    expect(fioJobFailures(r)).toEqual([]);
    expect(() => summarizeFio(r)).toThrow(/create-only\.json: no job did any I\/O/);
  });
});

describe('job errors', () => {
  it('libpmem on tmpfs: the job, its errno name and text, and the file are named', () => {
    const r = parse('error-libpmem.json');
    expect(fioJobFailures(r)).toEqual([{ job: 'pm', groupid: 0, index: 0, errno: 95, errnoText: 'EOPNOTSUPP (Operation not supported)' }]);
    let err: unknown;
    try {
      summarizeFio(r);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FioJobError);
    expect((err as Error).message).toBe('error-libpmem.json: job "pm" (jobs[0], group 0) failed with error 95 EOPNOTSUPP (Operation not supported)');
  });

  it('only the failing one of two jobs is reported', () => {
    const r = parse('error-second-job.json');
    expect(fioJobFailures(r).map((f) => [f.job, f.index, f.errno])).toEqual([['bad', 1, 95]]);
    expect(() => summarizeFio(r)).toThrow(/error-second-job\.json: job "bad" \(jobs\[1\], group 0\) failed with error 95/);
  });
});

describe('malformed reports name the file and what is wrong', () => {
  const good = text('randrw-2jobs-group.json');

  it('fio rejected an option (its message instead of JSON)', () => {
    expect(() => parse('bad-option.json')).toThrow(/^bad-option\.json: no JSON object found \(starts with "fio: data is not a directory/);
  });

  it('empty and truncated files', () => {
    expect(() => parseFioJson('', '/run/x/fio.json')).toThrow('/run/x/fio.json: empty: fio wrote no JSON report');
    expect(() => parseFioJson(good.slice(0, good.length / 2), '/run/x/fio.json')).toThrow(/^\/run\/x\/fio\.json: not valid JSON: /);
  });

  it('a missing field is named by its JSON path', () => {
    const doc = JSON.parse(good);
    delete doc.jobs[0].read.clat_ns.mean;
    expect(() => parseFioJson(JSON.stringify(doc), 'f.json')).toThrow(/^f\.json: not a fio JSON report: jobs\[0\]\.read\.clat_ns\.mean: /);
    const noJobs = JSON.parse(good);
    delete noJobs.jobs;
    expect(() => parseFioJson(JSON.stringify(noJobs), 'f.json')).toThrow(/^f\.json: not a fio JSON report: jobs: /);
    const wrongType = JSON.parse(good);
    wrongType.jobs[0].error = 'EIO';
    expect(() => parseFioJson(JSON.stringify(wrongType), 'f.json')).toThrow(/jobs\[0\]\.error: /);
  });

  it('a successful job without statistics, and an empty job list', () => {
    const doc = JSON.parse(good);
    delete doc.jobs[0].read;
    delete doc.jobs[0].mixed;
    expect(() => parseFioJson(JSON.stringify(doc), 'f.json')).toThrow('f.json: jobs[0] ("pcow"): has neither read/write statistics nor a mixed section');
    expect(() => parseFioJson(JSON.stringify({ 'fio version': 'fio-3.33', jobs: [] }), 'f.json')).toThrow('f.json: jobs: the report lists no jobs');
  });

  it('a missing percentile is named (fio percentile_list without 99.9)', () => {
    const doc = JSON.parse(good);
    delete doc.jobs[0].mixed.clat_ns.percentile['99.900000'];
    const r = parseFioJson(JSON.stringify(doc), 'f.json');
    expect(() => summarizeFio(r)).toThrow('f.json: jobs[0].mixed.clat_ns.percentile: no 99.9th percentile');
  });

  it('notes fio printed around the JSON are kept, not fatal', () => {
    const r = parseFioJson(`fio: note: something odd\n${good}\nfio: trailing note\n`, 'f.json');
    expect(r.noise).toEqual(['fio: note: something odd', 'fio: trailing note']);
    expect(summarizeFio(r).total.iops).toBeGreaterThan(0);
  });

  it('FioReportError carries the source', () => {
    let caught: unknown;
    try {
      parseFioJson('{', 'here.json');
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(FioReportError);
    expect((caught as FioReportError).source).toBe('here.json');
  });
});
