// redis-benchmark output parser against real redis-benchmark 7.0.15 output (test/fixtures/redis-benchmark).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RedisBenchOutputError, parseRedisBenchmark, redisBenchSamples } from '../../src/workloads/redis-bench-parse.ts';

const dir = path.join(import.meta.dirname, '..', 'fixtures', 'redis-benchmark');
const text = (name: string): string => readFileSync(path.join(dir, name), 'utf8');

describe('parseRedisBenchmark', () => {
  it('reads --csv', () => {
    expect(parseRedisBenchmark(text('set.csv'), 'set.csv')).toEqual([
      { test: 'SET', rps: 26666.67, avgMs: 0.457, minMs: 0.048, p50Ms: 0.191, p95Ms: 2.711, p99Ms: 4.223, maxMs: 10.495 },
    ]);
  });

  it('reads -q output, ignoring the \\r progress lines', () => {
    expect(parseRedisBenchmark(text('set-get.quiet.txt'), 'q')).toEqual([
      { test: 'SET', rps: 24271.84, p50Ms: 0.207 },
      { test: 'GET', rps: 28328.61, p50Ms: 0.183 },
    ]);
  });

  it('reads the full form: requests, seconds, throughput and latency summaries', () => {
    expect(parseRedisBenchmark(text('set.full.txt'), 'full')).toEqual([
      { test: 'SET', rps: 41322.31, avgMs: 0.351, minMs: 0.048, p50Ms: 0.175, p95Ms: 1.175, p99Ms: 6.383, maxMs: 7.919, requests: 5000, seconds: 0.12 },
    ]);
  });

  it('samples: rps and the latencies present', () => {
    const [q] = parseRedisBenchmark(text('set-get.quiet.txt'), 'q');
    expect(redisBenchSamples(q!)).toEqual([
      { metric: 'rps', value: 24271.84, unit: 'req/s' },
      { metric: 'lat_p50', value: 0.207, unit: 'ms' },
    ]);
    const [c] = parseRedisBenchmark(text('set.csv'), 'c');
    expect(redisBenchSamples(c!).map((s) => s.metric)).toEqual(['rps', 'lat_avg', 'lat_p50', 'lat_p95', 'lat_p99', 'lat_max']);
  });

  it('bad outputs: errors name the source and what is wrong', () => {
    const err = (t: string): string => {
      try {
        parseRedisBenchmark(t, 'out.txt');
      } catch (e) {
        expect(e).toBeInstanceOf(RedisBenchOutputError);
        return (e as Error).message;
      }
      throw new Error('no error');
    };
    expect(err('')).toBe('out.txt: empty output: redis-benchmark printed no result');
    expect(err('Could not connect to Redis at /x/s: Connection refused\n')).toMatch(/^out.txt: no result line .*not redis-benchmark output$/);
    expect(err('"test","rps"\n"SET","1"\n')).toMatch(/^out.txt: line 1: CSV header "test,rps" is not redis-benchmark's/);
    const csv = text('set.csv').replace('"26666.67"', '"-nan"');
    expect(err(csv)).toBe('out.txt: line 2, rps: "-nan" is not a non-negative number');
    // A run cut short: the section started, no summary.
    const cut = text('set.full.txt').split('Summary:')[0]!;
    expect(err(cut)).toBe('out.txt: test "SET" (line 1) has no summary: the benchmark did not finish');
  });
});
