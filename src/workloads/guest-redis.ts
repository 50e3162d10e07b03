// Redis with its AOF on persistent memory inside the Debian guest (the paper's C7: "Redis on
// PMDK (pcow-pba) beats Redis AOF (pcow-aof); pcow close to raw"), one guest per cell
// repetition over one backend (guest-fio.ts's startBackendGuest: raw or pcow NVDIMM, ext4 -o dax
// on its fsdax namespace at /mnt/pm; qcow2: ext4 without dax on the virtio disk).
//
// variant (a matrix axis):
//   aof   Debian's stock redis-server 7.0.15 from the guest image (or, aof_server: patched, our
//         build with aof-pmem no): appendonly yes, appendfsync always, the AOF on the mount,
//         each write persisted by write(2) + fdatasync;
//   pmem  redis+pmem-AOF (pcow's patch to Debian redis 7.0), not Intel pmem-redis (ensureRedis;
//         the binary is uploaded and its sha256 checked in the guest): aof-pmem yes, the INCR AOF
//         mapped with libpmem and persisted by cache-line flush + fence (INFO aof_pmem:pmem on a
//         DAX mount; anything else fails the cell). Values stay in DRAM: this is not pba.
// The client is the guest's redis-benchmark (Debian's redis-tools 7.0.15) for both variants,
// run detached over SSH with --csv; its output is downloaded into the cell's outDir and parsed
// with redis-bench-parse. Each run starts a fresh server in a fresh directory and shuts it down
// after (so a warmup run leaves the measured one an empty AOF); RDB snapshots and automatic
// AOF rewrites are off, so the measured pass is appends only.
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { z } from 'zod';
import { ensureRedis, REDIS_PMEM_LABEL, type RedisBuild } from '../build/redis.ts';
import { SizeBytes } from '../experiment/schema.ts';
import { MiB } from '../vm/machine.ts';
import { JOB_ROOT } from '../vm/ssh.ts';
import { repoRoot } from '../util/paths.ts';
import { BACKEND_SHAPE, GUEST_WORKLOAD_REQUIRES, startBackendGuest, stopBackendGuest, type BackendGuest } from './guest-fio.ts';
import { parseRedisBenchmark, redisBenchSamples, type RedisBenchResult } from './redis-bench-parse.ts';
import type { MetricInfo, Workload, WorkloadContext, WorkloadResult } from './types.ts';

export const REDIS_TESTS = ['set', 'get'] as const;
export type RedisTest = (typeof REDIS_TESTS)[number];

/** What the aof variant runs, in results. */
export const REDIS_DEBIAN_LABEL = "Debian's stock redis-server 7.0 (guest image), AOF appendfsync always";

const GUEST_DIR = '/root/pcow';
const SCRIPT = 'guest-redis.sh';
const MOUNT = '/mnt/pm';
const PMEM_SERVER = `${GUEST_DIR}/redis-server-pmem`;
const DEBIAN_SERVER = '/usr/bin/redis-server';
/** Bytes of one SET in the AOF besides its value (RESP framing, "SET", a 16-byte key). */
const AOF_RECORD_OVERHEAD = 64;
/** The pmem INCR file's initial size (aof-pmem-size's default in the patch). */
const PMEM_AOF_DEFAULT = 64 * MiB;

const { backend, pm_size, cluster_size, stripes, stripe_unit, prealloc_depth, cow_unit, handler_threads, read_fill, memory, smp } = BACKEND_SHAPE;

const RedisShape = {
  backend,
  pm_size,
  cluster_size,
  stripes,
  stripe_unit,
  prealloc_depth,
  cow_unit,
  handler_threads,
  read_fill,
  memory,
  smp,
  /** aof: stock AOF (write + fdatasync); pmem: redis+pmem-AOF (flush + fence). */
  variant: z.enum(['aof', 'pmem']),
  /** The aof variant's server: Debian's (default) or our build with aof-pmem no (same binary as pmem). */
  aof_server: z.enum(['debian', 'patched']).default('debian'),
  /** redis-benchmark -t, in this order. */
  tests: z.array(z.enum(REDIS_TESTS)).min(1).default(['set', 'get']),
  /** redis-benchmark -n: requests per test. */
  requests: z.number().int().min(1).max(1_000_000_000).default(10_000),
  /** redis-benchmark -c. */
  clients: z.number().int().min(1).max(10_000).default(50),
  /** redis-benchmark -d: the value size in bytes. */
  value_size: SizeBytes.default(64),
  /** redis-benchmark -P: requests per pipeline. */
  pipeline: z.number().int().min(1).max(10_000).default(1),
  /** redis-benchmark -r: random keys out of this many (0: one key for every request). */
  keyspace: z.number().int().min(0).max(1_000_000_000).default(100_000),
  /** unix socket or TCP over loopback. */
  connection: z.enum(['unix', 'tcp']).default('unix'),
  /** pmem: the INCR file's initial size (aof-pmem-size; default: the estimated AOF, at least 64 MiB). */
  aof_pmem_size: SizeBytes.optional(),
};

export type GuestRedisParamsT = {
  backend: 'raw' | 'pcow' | 'qcow2';
  pm_size: number;
  cluster_size: number;
  stripes: number;
  stripe_unit?: number;
  prealloc_depth?: number;
  cow_unit?: string;
  handler_threads?: number;
  read_fill?: string;
  memory: number;
  smp: number;
  variant: 'aof' | 'pmem';
  aof_server: 'debian' | 'patched';
  tests: RedisTest[];
  requests: number;
  clients: number;
  value_size: number;
  pipeline: number;
  keyspace: number;
  connection: 'unix' | 'tcp';
  aof_pmem_size?: number;
};

/** Bytes the measured pass appends to the AOF (an estimate: value + RESP framing per SET). */
export function aofAppendBytes(p: GuestRedisParamsT): number {
  return p.tests.includes('set') ? p.requests * (p.value_size + AOF_RECORD_OVERHEAD) : 0;
}

/**
 * The pmem INCR file's initial size: aof_pmem_size, else the estimated AOF rounded up to a MiB
 * (at least the server's 64 MiB default), so the measured pass never doubles and remaps it.
 */
export function pmemAofSize(p: GuestRedisParamsT): number {
  return p.aof_pmem_size ?? Math.max(PMEM_AOF_DEFAULT, Math.ceil(aofAppendBytes(p) / MiB) * MiB);
}

/** Bytes the measured pass's AOF may need on the mount (pmem: pre-allocated, doubling when full). */
export function aofSpaceNeeded(p: GuestRedisParamsT): number {
  const appended = aofAppendBytes(p);
  if (p.variant === 'aof') return appended;
  let size = pmemAofSize(p);
  while (size < appended) size *= 2;
  return size + 4096;
}

export const GuestRedisParams = z.strictObject(RedisShape).superRefine((p, ctx) => {
  const issue = (k: string, message: string): void => ctx.addIssue({ code: 'custom', path: [k], message });
  const g = p as unknown as GuestRedisParamsT;
  if (g.variant === 'pmem' && g.backend === 'qcow2') issue('variant', 'the pmem variant needs a DAX mount (backend raw or pcow): on the qcow2 virtio disk libpmem would fall back to msync');
  if (g.variant === 'pmem' && p.aof_server !== 'debian') issue('aof_server', 'aof_server chooses the aof variant\'s server; the pmem variant always runs redis+pmem-AOF');
  if (g.variant === 'aof' && g.aof_pmem_size !== undefined) issue('aof_pmem_size', 'aof_pmem_size is a pmem-variant option; variant is aof');
  if (g.aof_pmem_size !== undefined && g.aof_pmem_size < MiB) issue('aof_pmem_size', `aof_pmem_size must be at least 1 MiB (the server's minimum), got ${g.aof_pmem_size}`);
  if (new Set(g.tests).size !== g.tests.length) issue('tests', `each test once: ${g.tests.join(', ')}`);
  if (g.value_size < 1) issue('value_size', 'value_size must be at least 1 byte');
  if (g.backend !== 'pcow') {
    for (const k of ['prealloc_depth', 'cow_unit', 'handler_threads', 'read_fill', 'stripe_unit'] as const) {
      if (g[k] !== undefined) issue(k, `${k} is a pcow option; backend is ${g.backend}`);
    }
    if (g.stripes !== 1) issue('stripes', `stripes is a pcow option; backend is ${g.backend}`);
  }
  if (g.pm_size % (2 * MiB) !== 0) issue('pm_size', `pm_size must be a multiple of 2 MiB (the fsdax namespace's alignment), got ${g.pm_size}`);
  // ext4 (and on the NVDIMM the fsdax namespace's page map) take a few per cent of the device.
  const usable = Math.floor(g.pm_size * 0.85);
  const need = aofSpaceNeeded(g);
  if (need > usable) {
    issue('pm_size', `the AOF of ${g.requests} SETs of ${g.value_size} bytes needs about ${need} bytes${g.variant === 'pmem' ? ' (the pmem AOF file starts at aof_pmem_size and doubles when full)' : ''}: more than the about ${usable} usable of pm_size ${g.pm_size}: raise pm_size or lower requests`);
  }
  // The data set lives in the guest's DRAM (values are not in PM in either variant).
  const keys = g.keyspace === 0 ? 1 : Math.min(g.keyspace, g.requests);
  const dataset = g.tests.includes('set') ? keys * (g.value_size + 100) : 0;
  if (dataset > g.memory / 2) issue('memory', `${keys} keys of ${g.value_size} bytes (about ${dataset} bytes in DRAM) need more than half the guest's memory ${g.memory}: raise memory or lower keyspace`);
});

/** redis-benchmark's argv in the guest (its output on stdout: --csv). */
export function redisBenchmarkArgv(p: GuestRedisParamsT): string[] {
  const conn = p.connection === 'unix' ? ['-s', '/run/pcow-redis.sock'] : ['-h', '127.0.0.1', '-p', '6379'];
  return [
    'redis-benchmark',
    ...conn,
    '-t',
    p.tests.join(','),
    '-n',
    String(p.requests),
    '-c',
    String(p.clients),
    '-d',
    String(p.value_size),
    '-P',
    String(p.pipeline),
    ...(p.keyspace > 0 ? ['-r', String(p.keyspace)] : []),
    '--csv',
  ];
}

/** The server's configuration on its command line, after guest-redis.sh's own (daemonize, dir, listen). */
export function redisServerArgs(p: GuestRedisParamsT): string[] {
  const args = [
    '--appendonly', 'yes',
    '--appendfsync', 'always',
    // No RDB snapshots, no automatic rewrite: the measured pass is appends only.
    '--save', '',
    '--auto-aof-rewrite-percentage', '0',
  ];
  if (p.variant === 'pmem') {
    args.push('--aof-pmem', 'yes', '--aof-pmem-size', String(pmemAofSize(p)));
  } else if (p.aof_server === 'patched') {
    args.push('--aof-pmem', 'no');
  }
  return args;
}

/** Metric names: <test>_rps and <test>_lat_{avg,p50,p95,p99,max}. */
export const REDIS_METRICS: MetricInfo[] = REDIS_TESTS.flatMap((t) => {
  const T = t.toUpperCase();
  return [
    { name: `${t}_rps`, unit: 'req/s', better: 'higher' as const, description: `${T} requests per second (redis-benchmark)` },
    { name: `${t}_lat_avg`, unit: 'ms', better: 'lower' as const, description: `${T} mean latency` },
    { name: `${t}_lat_p50`, unit: 'ms', better: 'lower' as const, description: `${T} median latency` },
    { name: `${t}_lat_p95`, unit: 'ms', better: 'lower' as const, description: `${T} 95th percentile latency` },
    { name: `${t}_lat_p99`, unit: 'ms', better: 'lower' as const, description: `${T} 99th percentile latency` },
    { name: `${t}_lat_max`, unit: 'ms', better: 'lower' as const, description: `${T} maximum latency` },
  ];
});

/** The parsed results of the requested tests, each exactly once, as <test>_* samples. */
export function redisResultsToSamples(results: RedisBenchResult[], tests: readonly RedisTest[], source: string) {
  const out = [];
  for (const t of tests) {
    const found = results.filter((r) => r.test.toLowerCase() === t);
    if (found.length !== 1) throw new Error(`${source}: expected one ${t.toUpperCase()} result, found ${found.length} (tests in the output: ${results.map((r) => r.test).join(', ') || 'none'})`);
    for (const s of redisBenchSamples(found[0] as RedisBenchResult)) out.push({ ...s, metric: `${t}_${s.metric}` });
  }
  return out;
}

function keyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z_0-9]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1] as string] = m[2] as string;
  }
  return out;
}

/** redis+pmem-AOF once per process (cached build: ~2.5 s). */
let build: Promise<RedisBuild> | undefined;
function redisBuild(log: (l: string) => void, signal: AbortSignal): Promise<RedisBuild> {
  build ??= ensureRedis({ log, signal });
  return build.catch((e: unknown) => {
    build = undefined;
    throw e;
  });
}

/**
 * redis-server gzipped (7 MB -> ~2.5 MB): SFTP into a TCG guest moves about 1 MB/s on a loaded
 * host, gunzip in the guest is quicker. Named by the binary's sha256, made once.
 */
async function gzippedServer(r: RedisBuild): Promise<string> {
  const gz = path.join(tmpdir(), `pcow-redis-server-${r.binaryHash.slice(0, 16)}.gz`);
  if (!existsSync(gz)) {
    const tmp = `${gz}.${process.pid}.tmp`;
    await writeFile(tmp, await promisify(gzip)(await readFile(r.server)));
    await chmod(tmp, 0o755);
    await rename(tmp, gz);
  }
  return gz;
}

interface CellState extends BackendGuest {
  /** The server binary in the guest and what it is. */
  server: string;
  serverSha256?: string;
  redis?: RedisBuild;
  runs: number;
}

const cells = new Map<string, CellState>();
const vmDirs = new Map<string, string>();

const benchTimeoutMs = (p: GuestRedisParamsT): number => 5 * 60_000 + p.tests.length * p.requests * 10; // at least 100 req/s

export const guestRedisWorkload: Workload<GuestRedisParamsT> = {
  tool: 'guest-redis',
  description: `Redis in a Debian guest (one per cell repetition) with its AOF on a raw or pcow NVDIMM (ext4 -o dax) or a qcow2 virtio disk; variant aof = Debian's redis-server, appendfsync always; variant pmem = ${REDIS_PMEM_LABEL} (aof-pmem yes); redis-benchmark in the guest`,
  params: GuestRedisParams as unknown as z.ZodType<GuestRedisParamsT>,
  metrics: REDIS_METRICS,
  requires: GUEST_WORKLOAD_REQUIRES,
  needsNative: true,
  needsGuest: true,

  async prepare(ctx: WorkloadContext, p: GuestRedisParamsT): Promise<void> {
    await mkdir(ctx.outDir, { recursive: true });
    const old = cells.get(ctx.cellId);
    if (old) await old.guest.stop();
    cells.delete(ctx.cellId);
    const patched = p.variant === 'pmem' || p.aof_server === 'patched';
    // Built (or found) before the boot: a build failure costs no guest.
    const redis = patched ? await redisBuild(ctx.log, ctx.signal) : undefined;
    const bg = await startBackendGuest(ctx, p, p.backend === 'qcow2' ? 'blk' : 'dax', (vmDir) => vmDirs.set(ctx.cellId, vmDir));
    const st: CellState = { ...bg, server: redis ? PMEM_SERVER : DEBIAN_SERVER, runs: 0, ...(redis ? { redis } : {}) };
    cells.set(ctx.cellId, st);
    const ssh = st.guest.ssh;
    await ssh.upload(path.join(repoRoot, 'guest-scripts', SCRIPT), `${GUEST_DIR}/${SCRIPT}`);
    if (p.backend === 'qcow2') {
      const r = await ssh.check(['sh', `${GUEST_DIR}/${SCRIPT}`, 'mount-ext4', st.setup['blockdev'] as string], { timeoutMs: 120_000 });
      Object.assign(st.setup, keyValues(r.stdout));
    }
    if (redis) {
      const t0 = Date.now();
      await ssh.upload(await gzippedServer(redis), `${PMEM_SERVER}.gz`);
      await ssh.check(['gunzip', '-f', `${PMEM_SERVER}.gz`]);
      const r = await ssh.check(['sha256sum', PMEM_SERVER]);
      st.serverSha256 = r.stdout.split(/\s+/)[0] ?? '';
      if (st.serverSha256 !== redis.binaryHash) throw new Error(`the redis-server uploaded to the guest has sha256 ${st.serverSha256}, not the build's ${redis.binaryHash}`);
      ctx.log(`uploaded ${REDIS_PMEM_LABEL} (${redis.server}) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
  },

  async run(ctx: WorkloadContext, p: GuestRedisParamsT): Promise<WorkloadResult> {
    const st = cells.get(ctx.cellId);
    if (!st) throw new Error(`guest-redis: no guest for cell ${ctx.cellId} (prepare did not run or failed)`);
    await mkdir(ctx.outDir, { recursive: true });
    const ssh = st.guest.ssh;
    const n = st.runs++;
    const dir = `${MOUNT}/redis-${n}`;
    const log = `${GUEST_DIR}/redis-server-${n}.log`;
    const script = ['sh', `${GUEST_DIR}/${SCRIPT}`];
    const fetchLog = async (): Promise<string> => {
      const local = path.join(ctx.outDir, 'redis-server.log');
      await ssh.download(log, local).catch(() => undefined);
      return readFile(local, 'utf8').catch(() => '');
    };
    const withLog = async (e: unknown): Promise<Error> => {
      const tail = (await fetchLog()).trim().split('\n').slice(-10).join('\n');
      return new Error(`${(e as Error).message}${tail ? `\n--- redis-server log, last lines ---\n${tail}` : ''}`);
    };
    let started: Record<string, string>;
    try {
      started = keyValues((await ssh.check([...script, 'start', st.server, dir, p.connection, log, ...redisServerArgs(p)], { timeoutMs: 120_000 })).stdout);
    } catch (e) {
      throw await withLog(e);
    }
    // The variant must persist the way it claims to.
    const mode = started['aof_pmem'];
    const wanted = p.variant === 'pmem' ? 'pmem' : p.aof_server === 'patched' ? 'off' : 'absent';
    if (mode !== wanted || started['aof_enabled'] !== '1') {
      throw await withLog(new Error(`redis-server in the guest reports aof_enabled:${started['aof_enabled']} aof_pmem:${mode}, expected aof_enabled:1 aof_pmem:${wanted}${p.variant === 'pmem' ? ` (${started['pmem_log'] || 'no aof-pmem log line'})` : ''}`));
    }
    ctx.log(`redis-server up (${started['version']}; aof_pmem: ${mode}); redis-benchmark ${p.tests.join(',')} x ${p.requests}`);

    const argv = redisBenchmarkArgv(p);
    const t0 = Date.now();
    const id = await ssh.startDetached(argv, { cwd: GUEST_DIR });
    const job = await ssh.waitJob(id, { timeoutMs: benchTimeoutMs(p) });
    const benchMs = Date.now() - t0;
    await writeFile(path.join(ctx.outDir, 'redis-benchmark.stderr'), job.stderr);
    const local = path.join(ctx.outDir, 'redis-benchmark.csv');
    await ssh.download(`${JOB_ROOT}/${id}/stdout`, local);
    const text = await readFile(local, 'utf8');
    if (job.exitCode !== 0) throw await withLog(new Error(`redis-benchmark in the guest (${argv.join(' ')}) exited with ${job.exitCode}: ${(job.stderr.trim() || text.trim()).split('\n').slice(-5).join(' | ')}`));
    let results: RedisBenchResult[];
    let samples;
    try {
      results = parseRedisBenchmark(text, local);
      samples = redisResultsToSamples(results, p.tests, local);
    } catch (e) {
      throw await withLog(e);
    }
    let finished: Record<string, string>;
    try {
      finished = keyValues((await ssh.check([...script, 'finish', dir, p.connection], { timeoutMs: 120_000 })).stdout);
    } catch (e) {
      throw await withLog(e);
    }
    await fetchLog();
    const bench = await ssh.exec(['redis-benchmark', '--version']).catch(() => undefined);
    let queryPcow: unknown;
    if (p.backend === 'pcow') {
      const q = st.guest.vm.qmp;
      queryPcow = q ? await q.execute('query-pcow').catch((e: unknown) => ({ error: (e as Error).message })) : { error: 'QMP not connected' };
    }
    const info = Object.fromEntries(Object.entries(finished).filter(([k]) => k.startsWith('info_')).map(([k, v]) => [k.slice(5), v]));
    return {
      samples,
      // serial.log is copied there by cleanup, before the lifecycle records the repetition.
      rawFiles: ['redis-benchmark.csv', 'redis-benchmark.stderr', 'redis-server.log', 'serial.log'],
      details: {
        label: p.variant === 'pmem' ? REDIS_PMEM_LABEL : p.aof_server === 'patched' ? `${REDIS_PMEM_LABEL}, with aof-pmem no (stock AOF of the same binary)` : REDIS_DEBIAN_LABEL,
        variant: p.variant,
        backend: p.backend,
        persistence: p.variant === 'pmem' ? 'libpmem mapping, cache-line flush + fence (aof_pmem:pmem)' : 'write(2) + fdatasync per write (appendfsync always)',
        filesystem: st.setup['mount'],
        server: st.server,
        serverVersion: started['version'],
        ...(st.redis ? { redisBuild: { label: st.redis.label, binaryHash: st.redis.binaryHash, guestSha256: st.serverSha256, version: st.redis.version, sourceVersion: st.redis.sourceVersion, patchHash: st.redis.patchHash } } : {}),
        aofPmem: mode,
        ...(started['pmem_log'] ? { aofPmemLog: started['pmem_log'] } : {}),
        aofDirBytes: Number(finished['aof_dir_bytes']),
        aofFiles: finished['aof_files']?.trim(),
        dbsize: Number(finished['dbsize']),
        shutdown: finished['shutdown'],
        info,
        command: argv.join(' '),
        serverArgs: redisServerArgs(p),
        benchmarkVersion: bench?.stdout.trim(),
        benchMs,
        results,
        accelerator: st.accel,
        acceleratorWhy: st.accelWhy,
        qemu: st.qemu,
        guestBootMs: st.guest.bootMs,
        guestSshMs: st.guest.sshMs,
        guestSetup: st.setup,
        ...(queryPcow !== undefined ? { queryPcow } : {}),
      },
    };
  },

  async cleanup(ctx: WorkloadContext): Promise<void> {
    const st = cells.get(ctx.cellId);
    cells.delete(ctx.cellId);
    const vmDir = vmDirs.get(ctx.cellId);
    vmDirs.delete(ctx.cellId);
    await stopBackendGuest(ctx, st, vmDir);
  },
};
