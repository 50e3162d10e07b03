// redis-benchmark (7.0) output → one result per test. Pure; errors name the source. Three forms:
//   --csv:  "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
//           "SET","26666.67","0.457","0.048","0.191","2.711","4.223","10.495"
//   -q:     SET: 24271.84 requests per second, p50=0.207 msec      (after \r-separated progress)
//   full:   ====== SET ====== ... Summary:
//             throughput summary: 41322.31 requests per second
//             latency summary (msec):
//                     avg       min       p50       p95       p99       max
//                   0.351     0.048     0.175     1.175     6.383     7.919
import type { Sample } from './types.ts';

export class RedisBenchOutputError extends Error {
  override readonly name = 'RedisBenchOutputError';
  constructor(
    readonly source: string,
    message: string,
  ) {
    super(`${source}: ${message}`);
  }
}

export interface RedisBenchResult {
  /** The test's name as redis-benchmark prints it: "SET", "GET", "LPUSH (needed to benchmark LPOP)". */
  test: string;
  rps: number;
  /** Latencies in milliseconds; -q output has only p50. */
  p50Ms: number;
  avgMs?: number;
  minMs?: number;
  p95Ms?: number;
  p99Ms?: number;
  maxMs?: number;
  /** Requests and seconds of the full form's "N requests completed in S seconds" line. */
  requests?: number;
  seconds?: number;
}

function num(source: string, where: string, s: string | undefined): number {
  const v = Number(s);
  if (s === undefined || s.trim() === '' || !Number.isFinite(v) || v < 0) {
    throw new RedisBenchOutputError(source, `${where}: ${JSON.stringify(s ?? '')} is not a non-negative number`);
  }
  return v;
}

function parseCsv(lines: string[], source: string): RedisBenchResult[] {
  const header = lines[0]!.split(',').map((c) => c.replace(/^"|"$/g, ''));
  const expected = ['test', 'rps', 'avg_latency_ms', 'min_latency_ms', 'p50_latency_ms', 'p95_latency_ms', 'p99_latency_ms', 'max_latency_ms'];
  if (header.join(',') !== expected.join(',')) {
    throw new RedisBenchOutputError(source, `line 1: CSV header ${JSON.stringify(header.join(','))} is not redis-benchmark's (${expected.join(',')})`);
  }
  const out: RedisBenchResult[] = [];
  for (const [i, line] of lines.slice(1).entries()) {
    // Fields are quoted; a test name may hold commas ("LPUSH (needed to benchmark LPOP)" does not, MSET (10 keys) does not, but be safe).
    const cells = [...line.matchAll(/"((?:[^"]|"")*)"/g)].map((m) => m[1]!.replace(/""/g, '"'));
    if (cells.length !== expected.length) throw new RedisBenchOutputError(source, `line ${i + 2}: ${cells.length} fields, expected ${expected.length}: ${line}`);
    const at = (k: number): number => num(source, `line ${i + 2}, ${expected[k]}`, cells[k]);
    out.push({ test: cells[0]!, rps: at(1), avgMs: at(2), minMs: at(3), p50Ms: at(4), p95Ms: at(5), p99Ms: at(6), maxMs: at(7) });
  }
  return out;
}

const quietRe = /^(.+?): (\d+(?:\.\d+)?) requests per second, p50=(\d+(?:\.\d+)?) msec$/;
const sectionRe = /^====== (.+) ======$/;
const completedRe = /^(\d+) requests completed in (\d+(?:\.\d+)?) seconds$/;
const throughputRe = /^throughput summary: (\d+(?:\.\d+)?) requests per second$/;

export function parseRedisBenchmark(text: string, source: string): RedisBenchResult[] {
  // -q and the full form redraw a progress line with \r: only what follows the last \r counts.
  const lines = text
    .split('\n')
    .map((l) => (l.split('\r').pop() ?? '').trim())
    .filter((l) => l.length > 0);
  if (lines.length === 0) throw new RedisBenchOutputError(source, 'empty output: redis-benchmark printed no result');
  if (lines[0]!.startsWith('"test"')) return parseCsv(lines, source);

  const out: RedisBenchResult[] = [];
  let section: { test: string; requests?: number; seconds?: number; rps?: number; line: number } | null = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const q = quietRe.exec(line);
    if (q) {
      out.push({ test: q[1]!, rps: num(source, `line ${i + 1}, rps`, q[2]), p50Ms: num(source, `line ${i + 1}, p50`, q[3]) });
      continue;
    }
    const s = sectionRe.exec(line);
    if (s) {
      if (section) throw new RedisBenchOutputError(source, `line ${i + 1}: test "${s[1]}" starts before test "${section.test}" (line ${section.line}) printed its summary`);
      section = { test: s[1]!, line: i + 1 };
      continue;
    }
    if (!section) continue;
    const c = completedRe.exec(line);
    if (c) {
      section.requests = num(source, `line ${i + 1}, requests`, c[1]);
      section.seconds = num(source, `line ${i + 1}, seconds`, c[2]);
      continue;
    }
    const t = throughputRe.exec(line);
    if (t) {
      section.rps = num(source, `line ${i + 1}, throughput`, t[1]);
      continue;
    }
    if (/^avg\s+min\s+p50\s+p95\s+p99\s+max$/.test(line)) {
      const values = (lines[i + 1] ?? '').split(/\s+/);
      if (values.length !== 6) throw new RedisBenchOutputError(source, `line ${i + 2}: expected 6 latency values (avg min p50 p95 p99 max), got ${JSON.stringify(lines[i + 1] ?? '')}`);
      if (section.rps === undefined) throw new RedisBenchOutputError(source, `line ${i + 1}: latency summary of "${section.test}" without a throughput summary`);
      const at = (k: number, name: string): number => num(source, `line ${i + 2}, ${name}`, values[k]);
      out.push({
        test: section.test,
        rps: section.rps,
        avgMs: at(0, 'avg'),
        minMs: at(1, 'min'),
        p50Ms: at(2, 'p50'),
        p95Ms: at(3, 'p95'),
        p99Ms: at(4, 'p99'),
        maxMs: at(5, 'max'),
        ...(section.requests !== undefined ? { requests: section.requests, seconds: section.seconds } : {}),
      });
      section = null;
      i++;
    }
  }
  if (section) throw new RedisBenchOutputError(source, `test "${section.test}" (line ${section.line}) has no summary: the benchmark did not finish`);
  if (out.length === 0) throw new RedisBenchOutputError(source, 'no result line ("SET: N requests per second", a CSV header or a "====== TEST ======" section): not redis-benchmark output');
  return out;
}

/** rps (req/s) and the latencies (ms) a result has. */
export function redisBenchSamples(r: RedisBenchResult): Sample[] {
  const out: Sample[] = [{ metric: 'rps', value: r.rps, unit: 'req/s' }];
  const lat: [keyof RedisBenchResult, string][] = [
    ['avgMs', 'lat_avg'],
    ['p50Ms', 'lat_p50'],
    ['p95Ms', 'lat_p95'],
    ['p99Ms', 'lat_p99'],
    ['maxMs', 'lat_max'],
  ];
  for (const [k, metric] of lat) {
    const v = r[k];
    if (typeof v === 'number') out.push({ metric, value: v, unit: 'ms' });
  }
  return out;
}
