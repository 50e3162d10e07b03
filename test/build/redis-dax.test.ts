// redis+pmem-AOF (pcow's patch to Debian redis 7.0, not Intel pmem-redis) on a real fs-dax mount:
// this host has no pmem, a TCG guest does (a raw NVDIMM made an fsdax namespace, ext4 -o dax).
// There pmem_map_file gets MAP_SYNC, pmem_is_pmem is true and the patch persists each AOF write
// by cache-line flush + fence (guest-scripts/redis-pmem-dax.sh). The binaries are the cached
// build, copied into the guest with their libraries.
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureRedis, REDIS_PMEM_LABEL } from '../../src/build/redis.ts';
import { guestAccel } from '../../src/vm/accel.ts';
import { guestScript } from '../../src/vm/guest.ts';
import { GiB, liveVmCount } from '../../src/vm/machine.ts';
import { runGuest } from '../../src/vm/session.ts';
import { parseRedisBenchmark } from '../../src/workloads/redis-bench-parse.ts';

const { accel } = await guestAccel({ log: (l) => console.log(l) });
let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pcow-redis-dax-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('redis+pmem-AOF on ext4 -o dax inside a guest', () => {
  it('persists by flush + fence (aof_pmem: pmem), keeps every acknowledged write across kill -9, and benchmarks against the stock AOF', async () => {
    const r = await ensureRedis({ log: (l) => process.stderr.write(`${l}\n`) });
    const size = GiB / 2;
    const img = join(dir, 'dax.raw');
    await writeFile(img, '');
    await truncate(img, size);
    const reps = 2;
    const run = await runGuest({
      accel,
      memory: GiB,
      disks: [{ kind: 'nvdimm', backend: { type: 'raw', path: img, size } }],
      script: await guestScript('redis-pmem-dax.sh'),
      binaries: [r.server, r.cli, r.benchmark, r.checkAof],
      env: { BENCH_N: '5000', BENCH_REPS: String(reps) },
      timeoutMs: 15 * 60_000,
    });
    const res = run.results;
    expect(run.rc, run.lines.slice(-40).join('\n')).toBe(0);
    expect(res.get('mounts')).toMatch(/^\/dev\/pmem0 \/mnt ext4 \S*dax=always/);
    expect(res.get('aof-pmem-mode')).toBe('pmem');
    expect(res.get('aof-pmem-log')).toMatch(/persistent memory \(pmem_is_pmem=1\), each write persisted by cache-line flush \+ fence/);
    const acked = Number(res.get('crash-acked'));
    expect(acked).toBeGreaterThan(0);
    expect(res.get('crash-missing')).toBe('0');
    expect(res.get('crash-last')).toBe(`v:${acked - 1}`);
    expect(Number(res.get('crash-after'))).toBeGreaterThanOrEqual(Number(res.get('crash-before')) + acked);
    expect(res.get('check-aof')).toMatch(/is a pmem AOF \(aof-pmem\).*All AOF files and manifest are valid/);
    const rps: Record<'no' | 'yes', number[]> = { no: [], yes: [] };
    for (let i = 0; i < reps; i++) {
      for (const mode of ['no', 'yes'] as const) {
        const line = res.get(`bench-${mode}-${i}`) ?? '';
        const [m, csv] = [line.split(' ')[0], line.slice(line.indexOf(' ') + 1)];
        expect(m).toBe(mode === 'yes' ? 'pmem' : 'off');
        const header = '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"';
        rps[mode].push(parseRedisBenchmark(`${header}\n${csv}\n`, `bench-${mode}-${i}`)[0]!.rps);
      }
    }
    expect(liveVmCount()).toBe(0);
    const med = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
    console.log(
      `${REDIS_PMEM_LABEL} on ext4 -o dax in a ${accel} guest (${res.get('kernel')}): kill -9 after ${acked} acknowledged SETs, none missing; ` +
        `redis-benchmark -t set -n 5000 -c 50 -r 1000000 -d 64, appendfsync always: stock AOF ${rps.no.map((x) => x.toFixed(0)).join(', ')} req/s, ` +
        `pmem AOF ${rps.yes.map((x) => x.toFixed(0)).join(', ')} req/s (ratio of medians ${(med(rps.yes) / med(rps.no)).toFixed(2)}); guest run ${(run.totalMs / 1000).toFixed(0)} s`,
    );
  }, 20 * 60_000);
});
