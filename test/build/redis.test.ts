// redis+pmem-AOF (pcow's patch to Debian redis 7.0, not Intel pmem-redis), built by
// src/build/redis.ts (the first run builds it, ~2.5 min on 2 cores; later runs reuse the cache).
// The server runs on the host with its AOF in a tmpfs directory (emulated PM: pmem_is_pmem is
// false there, so the patch persists with pmem_msync), `appendonly yes`, `appendfsync always`.
// PCOW_REDIS_SEED=N replays the randomized model test; PCOW_REDIS_MODEL_SECONDS sets its length;
// PCOW_REDIS_DIR=DIR runs the server tests against a development build (e.g. `make SANITIZER=address`
// in a patched tree: DIR/redis-server, redis-benchmark, redis-check-aof).
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REDIS_ALLOWED_NEEDED, REDIS_PMEM_LABEL, ensureRedis, neededFromReadelf, redisCacheKey, type RedisBuild } from '../../src/build/redis.ts';
import { parseRedisBenchmark } from '../../src/workloads/redis-bench-parse.ts';
import { run } from '../../src/util/proc.ts';
import type { Manifest } from '../../src/results/types.ts';
import { runExperiment } from '../../src/run/lifecycle.ts';
import { RedisServer, RespClient, RespError, type ServerOptions } from './redis-server.ts';

let r: RedisBuild;
let bin: { server: string; benchmark: string; checkAof: string };
const dirs: string[] = [];
const servers: RedisServer[] = [];

beforeAll(async () => {
  r = await ensureRedis({ log: (l) => process.stderr.write(`${l}\n`) });
  const dev = process.env.PCOW_REDIS_DIR;
  bin = dev ? { server: path.join(dev, 'redis-server'), benchmark: path.join(dev, 'redis-benchmark'), checkAof: path.join(dev, 'redis-check-aof') } : r;
}, 30 * 60_000);

afterEach(async () => {
  for (const s of servers.splice(0)) await s.kill9().catch(() => undefined);
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fresh directory on tmpfs (emulated PM). */
function pmDir(): string {
  const d = mkdtempSync('/dev/shm/pcow-redis-');
  dirs.push(d);
  return d;
}

async function start(dir: string, o: ServerOptions): Promise<RedisServer> {
  const s = await RedisServer.start(bin.server, dir, o);
  servers.push(s);
  return s;
}

const aofDir = (dir: string): string => path.join(dir, 'appendonlydir');
const manifest = (dir: string): string => readFileSync(path.join(aofDir(dir), 'appendonly.aof.manifest'), 'utf8');
const incrFiles = (dir: string): string[] => [...manifest(dir).matchAll(/^file (\S+) seq \d+ type i$/gm)].map((m) => m[1]!);

function magicOf(file: string): string {
  const fd = openSync(file, 'r');
  const b = Buffer.alloc(8);
  readSync(fd, b, 0, 8, 0);
  closeSync(fd);
  return b.toString('latin1');
}

/** The committed length field of a pmem AOF (offset 16, little endian). */
function committedLength(file: string): bigint {
  const fd = openSync(file, 'r');
  const b = Buffer.alloc(8);
  readSync(fd, b, 0, 8, 16);
  closeSync(fd);
  return b.readBigUInt64LE(0);
}

async function bench(s: RedisServer, args: string[], env: Record<string, string> = {}): Promise<string> {
  const out = await run(bin.benchmark, ['-s', s.sock, ...args], { timeoutMs: 120_000, env });
  expect(out.exitCode, out.stderr).toBe(0);
  return out.stdout;
}

async function dbsize(s: RedisServer): Promise<number> {
  const c = await s.client();
  try {
    return (await c.call('DBSIZE')) as number;
  } finally {
    c.close();
  }
}

/**
 * Pipelined SETs w:<i> = v:<i> until the server dies (kill9 is called after `killAfter` acks):
 * returns the indices the server acknowledged.
 */
async function writeUntilKilled(s: RedisServer, killAfter: number): Promise<number[]> {
  const c = await s.client();
  const acked: number[] = [];
  let killing: Promise<void> | null = null;
  let i = 0;
  const inflight = new Set<Promise<void>>();
  try {
    for (;;) {
      while (inflight.size < 32) {
        const n = i++;
        const p: Promise<void> = c.send('SET', `w:${n}`, `v:${n}`).then(
          (reply) => {
            if (reply === 'OK') acked.push(n);
            if (!killing && acked.length >= killAfter) killing = s.kill9();
          },
          () => undefined,
        );
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
      }
      await Promise.race(inflight);
      if (killing) break;
    }
    await killing;
    await Promise.allSettled([...inflight]);
  } finally {
    c.close();
  }
  return acked;
}

async function expectAcked(s: RedisServer, acked: number[]): Promise<void> {
  const c = await s.client();
  try {
    for (let k = 0; k < acked.length; k += 500) {
      const chunk = acked.slice(k, k + 500);
      const values = (await c.call('MGET', ...chunk.map((n) => `w:${n}`))) as (Buffer | null)[];
      const missing = chunk.filter((n, j) => values[j]?.toString() !== `v:${n}`);
      expect(missing, `acknowledged writes missing after the restart (first: w:${missing[0]})`).toEqual([]);
    }
  } finally {
    c.close();
  }
}

describe('the build', () => {
  it('is cached, labelled, versioned and needs only libraries the Debian guest has', async () => {
    const again = await ensureRedis();
    expect(again.cached).toBe(true);
    expect(again.seconds).toBeLessThan(15);
    expect(again.server).toBe(r.server);
    expect(again.label).toBe(REDIS_PMEM_LABEL);
    expect(REDIS_PMEM_LABEL).toBe("redis+pmem-AOF (pcow's patch to Debian redis 7.0), not Intel pmem-redis");
    expect(again.binaryHash).toMatch(/^[0-9a-f]{64}$/);
    expect(again.sourceVersion).toMatch(/^(debian:|dir:|tarball:)/);
    expect(again.version).toMatch(/^Redis server v=7\.0\.\d+ .*malloc=jemalloc/);
    expect(again.patches.length).toBeGreaterThanOrEqual(1);
    // Dynamic: libpmem1 and libjemalloc2 (redis-server's dependency) are in the guest image.
    const elf = await run('readelf', ['-d', again.server]);
    const needed = neededFromReadelf(elf.stdout);
    expect(needed).toEqual(again.needed);
    expect(needed).toContain('libpmem.so.1');
    expect(needed.filter((l) => !REDIS_ALLOWED_NEEDED.includes(l))).toEqual([]);
  });

  it('an experiment with build.redis records it in the manifest, labelled', async () => {
    const dir = pmDir();
    const file = path.join(dir, 'e.yaml');
    writeFileSync(
      file,
      `name: redis-prov\nhost:\n  pm: { kind: emulated, dir: ${dir}/pm }\nrepetitions: 1\ntimeout: 1m\nbuild:\n  redis: {}\n` +
        `workloads:\n  qimg: { tool: qemu-img-bench, format: raw, size: 4MiB, count: 1024 }\n`,
    );
    const lines: string[] = [];
    const out = await runExperiment({ file, resultsRoot: path.join(dir, 'results'), sink: { write: (t) => lines.push(t), isTTY: false }, print: () => undefined });
    expect(out.exitCode, lines.join('')).toBe(0);
    const m = JSON.parse(readFileSync(path.join(out.runDir!, 'manifest.json'), 'utf8')) as Manifest;
    expect(m.build.redis).toMatchObject({
      label: REDIS_PMEM_LABEL,
      binary: r.server,
      binaryHash: r.binaryHash,
      version: r.version,
      sourceVersion: r.sourceVersion,
      patchHash: r.patchHash,
      needed: r.needed,
      cached: true,
    });
  });

  it('keys the cache by every input', () => {
    const base = { sourceVersion: 'debian:7.0.15', patchHash: 'p', makeFlags: ['A=1'], linked: { 'libpmem-dev': '1.12.1-2' } };
    const k = redisCacheKey(base);
    expect(redisCacheKey({ ...base, linked: { 'libpmem-dev': '1.12.1-2' } })).toBe(k);
    for (const change of [{ sourceVersion: 'debian:7.0.16' }, { patchHash: 'q' }, { makeFlags: ['A=2'] }, { linked: { 'libpmem-dev': '1.12.1-3' } }]) {
      expect(redisCacheKey({ ...base, ...change })).not.toBe(k);
    }
  });
});

describe('aof-pmem on tmpfs (emulated PM)', () => {
  it('persists with pmem_msync and says so; the file grows past aof-pmem-size; every acknowledged write survives kill -9', async () => {
    const dir = pmDir();
    const o = { pmem: true, extra: ['--aof-pmem-size', '1mb'] };
    let s = await start(dir, o);
    expect(await s.info('aof_pmem')).toBe('msync');
    expect(s.log()).toMatch(/aof-pmem: AOF incr file appendonly\.aof\.1\.incr\.aof mapped with libpmem .*NOT persistent memory \(pmem_is_pmem=0.*pmem_msync/);
    // ~1.9 MB of AOF text: the 1 MiB file doubles.
    await bench(s, ['-t', 'set', '-n', '20000', '-c', '20', '-r', '1000000', '-d', '32', '-q']);
    const before = await dbsize(s);
    expect(before).toBeGreaterThan(15000);
    const acked = await writeUntilKilled(s, 3000);
    expect(acked.length).toBeGreaterThanOrEqual(3000);
    const [incr] = incrFiles(dir);
    const file = path.join(aofDir(dir), incr!);
    expect(magicOf(file)).toBe('PMEM-AOF');
    expect(statSync(file).size).toBeGreaterThan(2 * 1024 * 1024);
    expect(Number(committedLength(file))).toBeGreaterThan(1024 * 1024);

    s = await start(dir, o);
    expect(await dbsize(s)).toBeGreaterThanOrEqual(before + acked.length);
    await expectAcked(s, acked);
    expect(Number(await s.info('aof_current_size'))).toBe(Number(committedLength(file)) + statSync(path.join(aofDir(dir), 'appendonly.aof.1.base.rdb')).size);
    await s.kill9();

    const check = await run(bin.checkAof, [path.join(aofDir(dir), 'appendonly.aof.manifest')]);
    expect(check.exitCode, check.stdout).toBe(0);
    expect(check.stdout).toContain(`${incr} is a pmem AOF (aof-pmem): checking its ${committedLength(file)} committed bytes`);
    expect(check.stdout).toContain('All AOF files and manifest are valid');
  });

  it('stock semantics (aof-pmem no): a plain AOF, and every acknowledged write survives kill -9', async () => {
    const dir = pmDir();
    let s = await start(dir, { pmem: false });
    expect(await s.info('aof_pmem')).toBe('off');
    expect(s.log()).not.toContain('aof-pmem:');
    await bench(s, ['-t', 'set', '-n', '5000', '-c', '20', '-r', '1000000', '-q']);
    const before = await dbsize(s);
    const acked = await writeUntilKilled(s, 2000);
    const file = path.join(aofDir(dir), incrFiles(dir)[0]!);
    expect(magicOf(file).startsWith('*')).toBe(true);
    s = await start(dir, { pmem: false });
    expect(await dbsize(s)).toBeGreaterThanOrEqual(before + acked.length);
    await expectAcked(s, acked);
  });

  it('BGREWRITEAOF opens a new pmem incr file; switching aof-pmem off and on starts a new incr file each time; nothing is lost', async () => {
    const dir = pmDir();
    let s = await start(dir, { pmem: true });
    const c = await s.client();
    for (let i = 0; i < 1000; i++) void c.send('SET', `a:${i}`, `x${i}`);
    await c.call('PING');
    await c.call('BGREWRITEAOF');
    for (let t = 0; t < 600 && (await s.info('aof_rewrite_in_progress')) !== '0'; t++) await new Promise((res) => setTimeout(res, 50));
    // The rewrite is done when its handler ran: a base of seq 2 in the manifest.
    for (let t = 0; t < 600 && !/seq 2 type b/.test(manifest(dir)); t++) await new Promise((res) => setTimeout(res, 50));
    expect(await s.info('aof_last_bgrewrite_status')).toBe('ok');
    const incr = incrFiles(dir);
    expect(incr).toEqual(['appendonly.aof.2.incr.aof']);
    expect(magicOf(path.join(aofDir(dir), incr[0]!))).toBe('PMEM-AOF');
    expect(readdirSync(aofDir(dir)).sort()).toEqual(['appendonly.aof.2.base.rdb', 'appendonly.aof.2.incr.aof', 'appendonly.aof.manifest']);
    for (let i = 0; i < 500; i++) void c.send('SET', `b:${i}`, `y${i}`);
    await c.call('PING');
    c.close();
    await s.kill9();

    // aof-pmem no: the pmem incr file loads, and appends go to a new plain incr file.
    s = await start(dir, { pmem: false });
    expect(s.log()).toContain('aof-pmem is no but the last AOF incr file appendonly.aof.2.incr.aof is a pmem AOF: starting a new incr file');
    expect(await dbsize(s)).toBe(1500);
    expect(incrFiles(dir)).toEqual(['appendonly.aof.2.incr.aof', 'appendonly.aof.3.incr.aof']);
    const c2 = await s.client();
    await c2.call('SET', 'c:0', 'z');
    c2.close();
    await s.kill9();
    expect(magicOf(path.join(aofDir(dir), 'appendonly.aof.3.incr.aof')).startsWith('*')).toBe(true);

    // And back: both formats load, a fourth (pmem) incr file takes the appends.
    s = await start(dir, { pmem: true });
    expect(await dbsize(s)).toBe(1501);
    expect(incrFiles(dir)).toEqual(['appendonly.aof.2.incr.aof', 'appendonly.aof.3.incr.aof', 'appendonly.aof.4.incr.aof']);
    const c3 = await s.client();
    expect((await c3.call('GET', 'a:999')) as Buffer).toEqual(Buffer.from('x999'));
    expect((await c3.call('GET', 'b:499')) as Buffer).toEqual(Buffer.from('y499'));
    expect((await c3.call('GET', 'c:0')) as Buffer).toEqual(Buffer.from('z'));
    c3.close();
  });

  it('a torn committed tail is dropped by aof-load-truncated (the committed length is lowered), or refused without it', async () => {
    const dir = pmDir();
    let s = await start(dir, { pmem: true });
    const c = await s.client();
    for (let i = 0; i < 10; i++) await c.call('SET', `k${i}`, `v${i}`);
    c.close();
    await s.kill9();
    const file = path.join(aofDir(dir), incrFiles(dir)[0]!);
    const len = committedLength(file);
    // Cut the last SET in half by lowering the committed length.
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(len - 5n);
    const raw = readFileSync(file);
    b.copy(raw, 16);
    writeFileSync(file, raw);
    const sha = createHash('sha256').update(raw).digest('hex');

    const refused = await run(bin.server, RedisServer.argv(dir, { pmem: true, extra: ['--aof-load-truncated', 'no'] }), { timeoutMs: 30_000 });
    expect(refused.exitCode).toBe(1);
    expect(readFileSync(path.join(dir, 'redis.log'), 'utf8')).toMatch(/Unexpected end of file reading the append only file appendonly\.aof\.1\.incr\.aof/);
    expect(createHash('sha256').update(readFileSync(file)).digest('hex')).toBe(sha); // untouched

    s = await start(dir, { pmem: true });
    expect(s.log()).toMatch(/Truncating the AOF appendonly\.aof\.1\.incr\.aof at offset \d+/);
    expect(await dbsize(s)).toBe(9);
    await s.kill9();
    expect(committedLength(file)).toBeLessThan(len - 5n);
  });

  it('redis-check-aof --fix drops a torn tail of a pmem incr file by lowering its committed length', async () => {
    const dir = pmDir();
    let s = await start(dir, { pmem: true });
    const c = await s.client();
    for (let i = 0; i < 5; i++) await c.call('SET', `k${i}`, `v${i}`);
    c.close();
    await s.kill9();
    const file = path.join(aofDir(dir), incrFiles(dir)[0]!);
    const len = committedLength(file);
    const raw = readFileSync(file);
    raw.writeBigUInt64LE(len - 3n, 16);
    writeFileSync(file, raw);
    const m = path.join(aofDir(dir), 'appendonly.aof.manifest');
    const bad = await run(bin.checkAof, [m]);
    expect(bad.exitCode).toBe(1);
    expect(bad.stdout).toContain('appendonly.aof.1.incr.aof is not valid. Use the --fix option to try fixing it.');
    const fixed = await run(bin.checkAof, ['--fix', m], { input: 'y\n' });
    expect(fixed.exitCode, fixed.stdout).toBe(0);
    expect(fixed.stdout).toContain('Successfully truncated AOF appendonly.aof.1.incr.aof');
    const cut = committedLength(file);
    expect(cut).toBeLessThan(len - 3n);
    expect(statSync(file).size).toBe(raw.length); // the pre-allocated file keeps its size
    s = await start(dir, { pmem: true, extra: ['--aof-load-truncated', 'no'] });
    expect(await dbsize(s)).toBe(4);
  });

  it('an incr file left by an interrupted creation (zeros, not in the manifest yet) is created again', async () => {
    const dir = pmDir();
    // A crash while the first start zero-filled the new incr file: the manifest was not written.
    mkdirSync(aofDir(dir));
    writeFileSync(path.join(aofDir(dir), 'appendonly.aof.1.incr.aof'), Buffer.alloc(100_000));
    let s = await start(dir, { pmem: true, extra: ['--aof-pmem-size', '1mb'] });
    expect(incrFiles(dir)).toEqual(['appendonly.aof.1.incr.aof']);
    expect(magicOf(path.join(aofDir(dir), 'appendonly.aof.1.incr.aof'))).toBe('PMEM-AOF');
    const c = await s.client();
    await c.call('SET', 'k', 'v');
    c.close();
    await s.kill9();
    s = await start(dir, { pmem: true });
    const c2 = await s.client();
    expect((await c2.call('GET', 'k')) as Buffer).toEqual(Buffer.from('v'));
    c2.close();
  });

  it('a bad header (length beyond the file) stops the server with the file and the field named; the file is untouched', async () => {
    const dir = pmDir();
    const s = await start(dir, { pmem: true, extra: ['--aof-pmem-size', '1mb'] });
    const c = await s.client();
    await c.call('SET', 'k', 'v');
    c.close();
    await s.kill9();
    const file = path.join(aofDir(dir), incrFiles(dir)[0]!);
    const raw = readFileSync(file);
    raw.writeBigUInt64LE(BigInt(raw.length), 16);
    writeFileSync(file, raw);
    const sha = createHash('sha256').update(raw).digest('hex');
    const out = await run(bin.server, RedisServer.argv(dir, { pmem: true }), { timeoutMs: 30_000 });
    expect(out.exitCode).toBe(1);
    const log = readFileSync(path.join(dir, 'redis.log'), 'utf8');
    expect(log).toContain(`Invalid pmem AOF file appendonly.aof.1.incr.aof: header field 'length' is ${raw.length}, beyond the file's data area (${raw.length - 4096} bytes)`);
    expect(createHash('sha256').update(readFileSync(file)).digest('hex')).toBe(sha);
    const check = await run(bin.checkAof, [path.join(aofDir(dir), 'appendonly.aof.manifest')]);
    expect(check.exitCode).toBe(1);
    expect(check.stdout).toContain("header field 'length'");
  });

  it('bad option values: a clear error naming the option (command line and config file)', async () => {
    const dir = pmDir();
    const bad = async (args: string[]): Promise<string> => {
      const out = await run(bin.server, args, { timeoutMs: 30_000 });
      expect(out.exitCode).toBe(1);
      return out.stdout + out.stderr;
    };
    expect(await bad(['--port', '0', '--aof-pmem', 'maybe'])).toMatch(/>>> 'aof-pmem "maybe"'\n.*argument must be 'yes' or 'no'/);
    expect(await bad(['--port', '0', '--aof-pmem-size', '1000'])).toMatch(/>>> 'aof-pmem-size "1000"'\n.*argument must be between 1048576 and \d+ inclusive/);
    expect(await bad(['--port', '0', '--aof-pmem-size', 'lots'])).toMatch(/>>> 'aof-pmem-size "lots"'\n.*argument must be a memory value/);
    const conf = path.join(dir, 'redis.conf');
    writeFileSync(conf, 'port 0\naof-pmem perhaps\n');
    expect(await bad([conf])).toMatch(/Reading the configuration file, at line 2\n>>> 'aof-pmem perhaps'\nargument must be 'yes' or 'no'/);
    // Immutable at run time: CONFIG SET names it.
    const s = await start(dir, { pmem: true });
    const c = await s.client();
    const reply = await c.send('CONFIG', 'SET', 'aof-pmem', 'no');
    c.close();
    expect(reply).toBeInstanceOf(RespError);
    expect((reply as RespError).message).toMatch(/can't set immutable config.*'aof-pmem'|aof-pmem.*immutable/i);
  });
});

// ---- randomized model test: random writes vs a shadow map, kill -9 + restart and rewrites ----

/** xorshift32: a small seeded generator (the seed is printed so a failure replays). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

describe('aof-pmem model test', () => {
  it('random SET/APPEND/DEL/INCRBY (binary values, 0 B to 300 KiB) vs a shadow map, compared after each batch and after each kill -9 + restart', async () => {
    const seed = Number(process.env.PCOW_REDIS_SEED ?? Date.now() % 1_000_000);
    const seconds = Number(process.env.PCOW_REDIS_MODEL_SECONDS ?? 12);
    process.stderr.write(`redis model test: seed ${seed} (PCOW_REDIS_SEED=${seed} replays it), ${seconds} s\n`);
    const rand = rng(seed);
    const pick = (n: number): number => Math.floor(rand() * n);
    const dir = pmDir();
    const o = { pmem: true, extra: ['--aof-pmem-size', '1mb'] };
    let s = await start(dir, o);
    let c = await s.client();
    const shadow = new Map<string, Buffer>();
    const value = (): Buffer => {
      const sizes = [0, 1, 63, 64, 65, 4095, 4096, 4097, pick(2000), pick(70000), 300 * 1024];
      const n = sizes[pick(rand() < 0.97 ? sizes.length - 1 : sizes.length)]!;
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = pick(4) === 0 ? 0 : pick(256); // zeros and CR/LF bytes included
      return b;
    };
    const compareAll = async (when: string): Promise<void> => {
      const keys = ((await c.call('KEYS', '*')) as Buffer[]).map((k) => k.toString()).sort();
      expect(keys, `${when}: key set (seed ${seed})`).toEqual([...shadow.keys()].sort());
      for (const k of keys) {
        const v = (await c.call('GET', k)) as Buffer;
        expect(v.equals(shadow.get(k)!), `${when}: value of ${k} (seed ${seed})`).toBe(true);
      }
    };
    const deadline = Date.now() + seconds * 1000;
    let restarts = 0;
    let rewrites = 0;
    let ops = 0;
    while (Date.now() < deadline) {
      const batch = 1 + pick(40);
      const touched = new Set<string>();
      const replies: Promise<unknown>[] = [];
      for (let j = 0; j < batch; j++) {
        const key = `k${pick(60)}`;
        touched.add(key);
        const op = pick(10);
        if (op < 5) {
          const v = value();
          shadow.set(key, v);
          replies.push(c.call('SET', key, v));
        } else if (op < 7) {
          const v = value().subarray(0, 3000);
          shadow.set(key, Buffer.concat([shadow.get(key) ?? Buffer.alloc(0), v]));
          replies.push(c.call('APPEND', key, v));
        } else if (op < 9) {
          shadow.delete(key);
          replies.push(c.call('DEL', key));
        } else {
          const ck = `n${pick(5)}`;
          touched.add(ck);
          const by = pick(1000) - 500;
          shadow.set(ck, Buffer.from(String(Number(shadow.get(ck)?.toString() ?? '0') + by)));
          replies.push(c.call('INCRBY', ck, by));
        }
        ops++;
      }
      await Promise.all(replies); // acknowledged: the AOF holds them
      for (const k of touched) {
        const v = (await c.call('GET', k)) as Buffer | null;
        expect(v === null ? undefined : v.equals(shadow.get(k)!), `after a batch: ${k} (seed ${seed})`).toBe(shadow.has(k) ? true : undefined);
      }
      const event = pick(20);
      if (event === 0) {
        c.close();
        await s.kill9();
        s = await start(dir, o);
        c = await s.client();
        restarts++;
        await compareAll(`after kill -9 + restart ${restarts}`);
      } else if (event === 1 && (await s.info('aof_rewrite_in_progress')) === '0') {
        await c.call('BGREWRITEAOF');
        rewrites++;
      }
    }
    c.close();
    await s.kill9();
    s = await start(dir, o);
    c = await s.client();
    await compareAll('after the final kill -9 + restart');
    c.close();
    process.stderr.write(`redis model test: seed ${seed}: ${ops} ops, ${restarts + 1} kill -9 restarts, ${rewrites} rewrites, ${shadow.size} keys\n`);
    expect(restarts + 1).toBeGreaterThanOrEqual(1);
  }, 120_000);
});

// ---- host figures: redis-benchmark SET with the AOF, stock vs pmem, same command, same run ----

describe('figures (host, tmpfs)', () => {
  it('redis-benchmark SET, appendfsync always: stock write+fdatasync vs aof-pmem (pmem_msync) vs aof-pmem flush path (PMEM_IS_PMEM_FORCE=1)', async () => {
    const cmd = ['-t', 'set', '-n', '30000', '-c', '50', '-r', '1000000', '-d', '64', '--csv'];
    const configs: { name: string; o: ServerOptions }[] = [
      { name: 'stock AOF (write+fdatasync)', o: { pmem: false } },
      { name: 'redis+pmem-AOF, pmem_msync', o: { pmem: true } },
      { name: 'redis+pmem-AOF, flush+fence (PMEM_IS_PMEM_FORCE=1)', o: { pmem: true, env: { PMEM_IS_PMEM_FORCE: '1' } } },
    ];
    const rps = new Map<string, number[]>(configs.map((x) => [x.name, []]));
    for (let rep = 0; rep < 3; rep++) {
      for (const cfg of configs) {
        const dir = pmDir();
        const s = await start(dir, cfg.o);
        const mode = await s.info('aof_pmem');
        expect(mode).toBe(cfg.o.pmem ? (cfg.o.env ? 'pmem' : 'msync') : 'off');
        const [res] = parseRedisBenchmark(await bench(s, cmd), cfg.name);
        rps.get(cfg.name)!.push(res!.rps);
        await s.kill9();
        rmSync(dir, { recursive: true, force: true });
      }
    }
    const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
    const stock = median(rps.get(configs[0]!.name)!);
    const lines = configs.map((cfg) => {
      const m = median(rps.get(cfg.name)!);
      return `  ${cfg.name.padEnd(52)} median ${m.toFixed(0).padStart(7)} req/s  (${rps.get(cfg.name)!.map((x) => x.toFixed(0)).join(', ')})  ratio to stock ${(m / stock).toFixed(2)}`;
    });
    process.stderr.write(`${REDIS_PMEM_LABEL}\nredis-benchmark -s SOCK ${cmd.join(' ')}, 3 interleaved repetitions, AOF on tmpfs:\n${lines.join('\n')}\n`);
    for (const v of rps.values()) for (const x of v) expect(x).toBeGreaterThan(0);
  }, 300_000);
});
