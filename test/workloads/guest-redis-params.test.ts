// guest-redis without a guest: its parameter rules (each bad combination a clear error naming the
// key), the redis-server and redis-benchmark argv it runs in the guest, the pmem AOF's size, the
// metric names, and redis-bench-parse on outputs captured from these guests
// (test/fixtures/redis-benchmark/guest: redis-benchmark 7.0.15 --csv in the Debian guest under
// TCG, from guest-redis runs of experiments/c7-redis.yaml's ci profile).
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REDIS_PMEM_LABEL } from '../../src/build/redis.ts';
import { parseRedisBenchmark } from '../../src/workloads/redis-bench-parse.ts';
import {
  GuestRedisParams,
  REDIS_METRICS,
  aofSpaceNeeded,
  guestRedisWorkload,
  pmemAofSize,
  redisBenchmarkArgv,
  redisResultsToSamples,
  redisServerArgs,
  type GuestRedisParamsT,
} from '../../src/workloads/guest-redis.ts';

const MiB = 1024 * 1024;
const dir = path.join(import.meta.dirname, '..', 'fixtures', 'redis-benchmark', 'guest');
const fixtures = readdirSync(dir).filter((f) => f.endsWith('.csv')).sort();
const text = (n: string): string => readFileSync(path.join(dir, n), 'utf8');

const parse = (p: Record<string, unknown>): GuestRedisParamsT => GuestRedisParams.parse(p) as unknown as GuestRedisParamsT;
const problems = (p: Record<string, unknown>): string[] => {
  const r = GuestRedisParams.safeParse(p);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
};

describe('guest-redis parameters', () => {
  it('defaults: SET and GET, 10000 requests, 50 clients, 64 B values, no pipeline, 100000 keys, unix socket, Debian server for aof', () => {
    expect(parse({ backend: 'pcow', variant: 'aof' })).toMatchObject({
      backend: 'pcow',
      variant: 'aof',
      aof_server: 'debian',
      tests: ['set', 'get'],
      requests: 10000,
      clients: 50,
      value_size: 64,
      pipeline: 1,
      keyspace: 100000,
      connection: 'unix',
      pm_size: 256 * MiB,
    });
    expect(parse({ backend: 'raw', variant: 'pmem', value_size: '4k' }).value_size).toBe(4096);
  });

  it.each([
    [{ backend: 'qcow2', variant: 'pmem' }, /variant: the pmem variant needs a DAX mount \(backend raw or pcow\)/],
    [{ backend: 'raw', variant: 'pmem', aof_server: 'patched' }, /aof_server: aof_server chooses the aof variant's server/],
    [{ backend: 'raw', variant: 'aof', aof_pmem_size: '64MiB' }, /aof_pmem_size: aof_pmem_size is a pmem-variant option; variant is aof/],
    [{ backend: 'raw', variant: 'pmem', aof_pmem_size: '512KiB' }, /aof_pmem_size: aof_pmem_size must be at least 1 MiB/],
    [{ backend: 'raw', variant: 'aof', tests: ['set', 'set'] }, /tests: each test once/],
    [{ backend: 'raw', variant: 'aof', tests: ['lpush'] }, /tests\.0: /],
    [{ backend: 'raw', variant: 'aof', tests: [] }, /tests: /],
    [{ backend: 'raw', variant: 'aof', requests: 0 }, /requests: /],
    [{ backend: 'raw', variant: 'aof', pipeline: 0 }, /pipeline: /],
    [{ backend: 'raw', variant: 'aof', prealloc_depth: 4 }, /prealloc_depth: prealloc_depth is a pcow option; backend is raw/],
    [{ backend: 'qcow2', variant: 'aof', stripes: 2 }, /stripes: stripes is a pcow option; backend is qcow2/],
    [{ backend: 'raw', variant: 'aof', pm_size: '255MiB' }, /pm_size: pm_size must be a multiple of 2 MiB/],
    [{ backend: 'raw', variant: 'aof', requests: 1_000_000, value_size: 4096 }, /pm_size: the AOF of 1000000 SETs of 4096 bytes needs about 4160000000 bytes: more than/],
    [{ backend: 'raw', variant: 'pmem', pm_size: '64MiB', requests: 1000 }, /pm_size: .*the pmem AOF file starts at aof_pmem_size and doubles when full/],
    [{ backend: 'raw', variant: 'aof', requests: 100_000, keyspace: 100_000, value_size: 4096, pm_size: '1GiB' }, /memory: 100000 keys of 4096 bytes .* raise memory or lower keyspace/],
    [{ backend: 'raw', variant: 'aof', connection: 'tcp6' }, /connection: /],
    [{ backend: 'raw', variant: 'blob' }, /variant: /],
    [{ backend: 'raw', variant: 'aof', rw: 'write' }, /Unrecognized key|unrecognized/i],
  ])('%j is refused: %s', (p, re) => {
    expect(problems(p).join('\n')).toMatch(re);
  });

  it('GET-only runs append nothing: no AOF space is asked for', () => {
    expect(aofSpaceNeeded(parse({ backend: 'raw', variant: 'aof', tests: ['get'], requests: 1e8 }))).toBe(0);
  });

  it('the pmem AOF is pre-allocated to hold the whole pass (at least 64 MiB), unless aof_pmem_size says otherwise', () => {
    expect(pmemAofSize(parse({ backend: 'raw', variant: 'pmem', requests: 1000 }))).toBe(64 * MiB);
    const big = parse({ backend: 'raw', variant: 'pmem', requests: 100_000, value_size: 1024, keyspace: 1000, pm_size: '512MiB' });
    expect(pmemAofSize(big)).toBe(Math.ceil((100_000 * (1024 + 64)) / MiB) * MiB);
    expect(pmemAofSize(big)).toBeGreaterThanOrEqual(100_000 * (1024 + 64));
    expect(pmemAofSize(parse({ backend: 'raw', variant: 'pmem', aof_pmem_size: '8MiB' }))).toBe(8 * MiB);
    // With a small initial size the file doubles: the space check counts the doubled file.
    expect(aofSpaceNeeded(parse({ backend: 'raw', variant: 'pmem', aof_pmem_size: '8MiB', requests: 100_000, keyspace: 1000 }))).toBe(16 * MiB + 4096);
  });
});

describe('guest-redis argv', () => {
  it('redis-benchmark: -t in order, -n -c -d -P, -r unless keyspace 0, CSV on stdout, over the unix socket or TCP', () => {
    const p = parse({ backend: 'pcow', variant: 'aof', tests: ['set', 'get'], requests: 5000, clients: 20, value_size: '1k', pipeline: 8, keyspace: 1000 });
    expect(redisBenchmarkArgv(p)).toEqual(['redis-benchmark', '-s', '/run/pcow-redis.sock', '-t', 'set,get', '-n', '5000', '-c', '20', '-d', '1024', '-P', '8', '-r', '1000', '--csv']);
    const tcp = parse({ backend: 'raw', variant: 'pmem', tests: ['get'], keyspace: 0, connection: 'tcp' });
    const a = redisBenchmarkArgv(tcp);
    expect(a.slice(0, 5)).toEqual(['redis-benchmark', '-h', '127.0.0.1', '-p', '6379']);
    expect(a).not.toContain('-r');
  });

  it('redis-server: AOF on, appendfsync always, no RDB and no automatic rewrite; pmem adds aof-pmem yes and its size; the patched aof server says aof-pmem no', () => {
    const common = ['--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--auto-aof-rewrite-percentage', '0'];
    expect(redisServerArgs(parse({ backend: 'raw', variant: 'aof' }))).toEqual(common);
    expect(redisServerArgs(parse({ backend: 'raw', variant: 'aof', aof_server: 'patched' }))).toEqual([...common, '--aof-pmem', 'no']);
    expect(redisServerArgs(parse({ backend: 'pcow', variant: 'pmem' }))).toEqual([...common, '--aof-pmem', 'yes', '--aof-pmem-size', String(64 * MiB)]);
  });

  it('the workload names the pmem variant by its label and declares a direction for every metric', () => {
    expect(guestRedisWorkload.description).toContain(REDIS_PMEM_LABEL);
    expect(REDIS_METRICS.map((m) => m.name)).toEqual(expect.arrayContaining(['set_rps', 'set_lat_p50', 'set_lat_p99', 'get_rps', 'get_lat_p99']));
    for (const m of REDIS_METRICS) expect(m.better).toBe(m.name.endsWith('_rps') ? 'higher' : 'lower');
  });
});

describe('redis-benchmark output captured in the guest', () => {
  it('has fixtures', () => {
    expect(fixtures.length).toBeGreaterThan(0);
  });

  it.each(fixtures)('%s: SET then GET, every latency column, ordered percentiles; samples named set_* and get_*', (name) => {
    const results = parseRedisBenchmark(text(name), name);
    expect(results.map((r) => r.test)).toEqual(['SET', 'GET']);
    for (const r of results) {
      expect(r.rps).toBeGreaterThan(0);
      expect(r.minMs!).toBeLessThanOrEqual(r.p50Ms);
      expect(r.p50Ms).toBeLessThanOrEqual(r.p95Ms!);
      expect(r.p95Ms!).toBeLessThanOrEqual(r.p99Ms!);
      expect(r.p99Ms!).toBeLessThanOrEqual(r.maxMs!);
    }
    const samples = redisResultsToSamples(results, ['set', 'get'], name);
    expect(samples.map((s) => s.metric)).toEqual(['set_rps', 'set_lat_avg', 'set_lat_p50', 'set_lat_p95', 'set_lat_p99', 'set_lat_max', 'get_rps', 'get_lat_avg', 'get_lat_p50', 'get_lat_p95', 'get_lat_p99', 'get_lat_max']);
    const declared = new Set(REDIS_METRICS.map((m) => m.name));
    for (const s of samples) expect(declared.has(s.metric), s.metric).toBe(true);
    expect(samples[0]).toEqual({ metric: 'set_rps', value: results[0]!.rps, unit: 'req/s' });
  });

  it('a test asked for but missing from the output is an error naming the file and what it has', () => {
    const name = fixtures[0]!;
    const results = parseRedisBenchmark(text(name), name).filter((r) => r.test === 'SET');
    expect(() => redisResultsToSamples(results, ['set', 'get'], name)).toThrow(`${name}: expected one GET result, found 0 (tests in the output: SET)`);
  });
});
