// guest-redis end to end: the real lifecycle boots the cached Debian guest (TCG here) over a pcow
// NVDIMM once per cell, runs redis-server with its AOF on ext4 -o dax — Debian's stock server
// (variant aof) and redis+pmem-AOF (variant pmem, uploaded) — and redis-benchmark over SSH, and
// parses the real output. A first cell whose QEMU is killed with kill -9 while redis-benchmark
// runs ends as failed with the reason and the serial tail, and the run goes on to the others.
import { readFile, readdir, rm, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REDIS_PMEM_LABEL } from '../../src/build/redis.ts';
import { runExperiment } from '../../src/run/lifecycle.ts';
import type { CellRecord, Manifest } from '../../src/results/types.ts';
import { run } from '../../src/util/proc.ts';
import { ensureDebianImage } from '../../src/vm/image.ts';
import { liveVmCount } from '../../src/vm/machine.ts';
import { REDIS_DEBIAN_LABEL } from '../../src/workloads/guest-redis.ts';

let tmp = '';
let pm = '';
const silent = (): undefined => undefined;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'pcow-guest-redis-test-'));
  pm = `/dev/shm/pcow-test-gredis-${process.pid}`;
  await ensureDebianImage({ log: (l) => console.log(l) });
}, 30 * 60_000);
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
  await rm(pm, { recursive: true, force: true });
});

/** QEMU processes whose command line mentions `needle`. */
async function qemusWith(needle: string): Promise<string[]> {
  const r = await run('ps', ['-eo', 'pid=,args='], { timeoutMs: 10_000 });
  return r.stdout.split('\n').filter((l) => /qemu-system/.test(l) && l.includes(needle));
}

const readJson = async <T>(f: string): Promise<T> => JSON.parse(await readFile(f, 'utf8')) as T;

describe('guest-redis: one small cell per variant on pcow, and a killed guest', () => {
  it('aof (Debian redis-server) and pmem (redis+pmem-AOF, aof_pmem:pmem) each boot a pcow guest, run redis-benchmark over SSH and give parsed samples; a kill -9 of the first cell\'s QEMU fails only that cell', async () => {
    const file = path.join(tmp, 'gredis.yaml');
    // `long` is GET-only (appends nothing) and long enough to be killed mid-benchmark.
    await writeFile(
      file,
      `name: gredis
host:
  pm: { kind: emulated, dir: ${pm} }
build: { qemu: {}, redis: {} }
repetitions: 1
timeout: 4m
workloads:
  long: { tool: guest-redis, backend: raw, tests: [get], requests: 100000000, pm_size: 64MiB }
  w: { tool: guest-redis, backend: pcow, requests: 2000, clients: 20, pm_size: 128MiB }
matrix:
  axes:
    workload: [long, w]
    variant: [aof, pmem]
  exclude:
    - { workload: long, variant: pmem }
`,
    );
    let out = '';
    let killed = '';
    const sink = {
      isTTY: false,
      write: (s: string): boolean => {
        out += s;
        if (!killed && /long\.variant=aof: redis-server up/.test(out)) {
          killed = 'pending';
          // Let redis-benchmark start, then kill the guest's QEMU.
          setTimeout(() => {
            void qemusWith(pm).then((q) => {
              killed = q.join('\n') || 'none';
              if (q.length === 1) process.kill(Number.parseInt((q[0] as string).trim(), 10), 'SIGKILL');
            });
          }, 3000);
        }
        return true;
      },
    };
    const res = await runExperiment({ file, resultsRoot: path.join(tmp, 'res'), sink, print: silent, skipReport: true });
    const runDir = res.runDir as string;
    expect(killed.split('\n'), out).toHaveLength(1);
    const cells = await readJson<CellRecord[]>(path.join(runDir, 'cells.json'));
    expect(cells.map((c) => `${c.id}:${c.status}`)).toEqual(['long.variant=aof:failed', 'w.variant=aof:ok', 'w.variant=pmem:ok']);
    expect(res.exitCode).toBe(1);
    const reason = cells[0]!.repetitions[0]!.reason ?? '';
    expect(reason).toMatch(/killed by SIGKILL/);
    expect(reason).toMatch(/--- serial console, last \d+ lines ---/);

    const manifest = await readJson<Manifest>(path.join(runDir, 'manifest.json'));
    expect(manifest.build.redis?.label).toBe(REDIS_PMEM_LABEL);
    const samples = (await readFile(path.join(runDir, 'samples.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { cell: string; metric: string; value: number });
    const metric = (cell: string, m: string): number | undefined => samples.find((s) => s.cell === cell && s.metric === m)?.value;
    for (const c of cells.slice(1)) {
      for (const m of ['set_rps', 'get_rps', 'set_lat_p50', 'set_lat_p99', 'get_lat_p99']) expect(metric(c.id, m), `${c.id} ${m}`).toBeGreaterThan(0);
      const d = c.details as Record<string, unknown>;
      const pmem = c.id.endsWith('pmem');
      expect(d['label']).toBe(pmem ? REDIS_PMEM_LABEL : REDIS_DEBIAN_LABEL);
      expect(d['accelerator']).toBe(manifest.accelerator);
      expect(d['filesystem']).toMatch(/^\/dev\/pmem0 \/mnt\/pm ext4 \S*dax=always/);
      expect(d['serverVersion']).toMatch(/^Redis server v=7\.0\.15 /);
      expect(d['benchmarkVersion']).toMatch(/^redis-benchmark 7\.0\.15/);
      expect(d['aofPmem']).toBe(pmem ? 'pmem' : 'absent');
      if (pmem) {
        expect(d['aofPmemLog']).toMatch(/persistent memory \(pmem_is_pmem=1\), each write persisted by cache-line flush \+ fence/);
        const b = d['redisBuild'] as Record<string, string>;
        expect(b['guestSha256']).toBe(manifest.build.redis?.binaryHash);
      }
      // The AOF really holds the SETs: 2000 of 64-byte values, and the server saw them.
      const info = d['info'] as Record<string, string>;
      expect(info['aof_enabled']).toBe('1');
      expect(info['aof_last_write_status']).toBe('ok');
      expect(Number(info['aof_current_size'])).toBeGreaterThan(2000 * 64);
      expect(Number(d['dbsize'])).toBeGreaterThan(0);
      expect(d['shutdown']).toBe('clean');
      expect(d['queryPcow']).toEqual([expect.objectContaining({ id: 'pmem1', stats: expect.objectContaining({ errors: 0 }) })]);
      const rep = path.join(runDir, 'cells', c.id, 'rep-0');
      expect((await readdir(rep)).sort()).toEqual(expect.arrayContaining(['redis-benchmark.csv', 'redis-server.log', 'serial.log']));
    }
    // Same-run figures, for the log (not asserted: the host is noisy).
    console.log(
      `guest-redis (${manifest.accelerator}) pcow, SET req/s: aof ${metric('w.variant=aof', 'set_rps')?.toFixed(0)}, pmem ${metric('w.variant=pmem', 'set_rps')?.toFixed(0)}; ` +
        `GET req/s: aof ${metric('w.variant=aof', 'get_rps')?.toFixed(0)}, pmem ${metric('w.variant=pmem', 'get_rps')?.toFixed(0)}`,
    );
    expect(liveVmCount()).toBe(0);
    expect(await qemusWith(pm)).toEqual([]);
  }, 15 * 60_000);
});
