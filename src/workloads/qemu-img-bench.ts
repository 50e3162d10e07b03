// `qemu-img bench` over a raw or qcow2 image in the PM directory: QEMU's block layer (format
// driver + file protocol + aio backend) without a guest, i.e. the I/O-virtualization path's
// host-side cost.
//
// Decisions (documented for the researcher):
// - fill (default true): prepare writes the whole image once (1 MiB requests, pattern 0xa5) so
//   that reads hit allocated data and writes overwrite allocated clusters: steady-state numbers.
//   fill=false measures the unallocated path instead: every run then starts from a freshly
//   created image, so every repetition measures the same thing (allocation on first write;
//   reads of holes, which qcow2 answers without touching the file).
// - count or runtime: qemu-img prints the time with millisecond resolution, so with a runtime
//   (default 2 s when count is not given) prepare calibrates the request count with short runs
//   until one lasts >= 100 ms, and scales it to the target. The count used is in the details.
// - depth defaults to 1 (qemu-img's own default is 64) to match fio's iodepth=1 cells.
// - cache=none/directsync open the image with O_DIRECT. On tmpfs (the emulated PM) that works
//   on Linux >= 6.6 only (older kernels: "Invalid argument" at open) and bypasses nothing,
//   because tmpfs data lives in the page cache. aio=native needs cache=none or directsync.
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { Duration, SizeBytes } from '../experiment/schema.ts';
import { parseDuration } from '../experiment/units.ts';
import { failure, run, which } from '../util/proc.ts';
import { parseQemuImgBench, parseQemuImgInfo, qemuImgBenchSamples, type QemuImgBenchResult, type QemuImgInfo } from './qemu-img-parse.ts';
import type { MetricInfo, Workload, WorkloadContext, WorkloadResult } from './types.ts';

const INT_MAX = 2147483647;
const DIRECT_CACHES: readonly string[] = ['none', 'directsync'];

export const QemuImgBenchParams = z
  .strictObject({
    format: z.enum(['raw', 'qcow2']).default('qcow2'),
    /** Virtual size of the image. */
    size: SizeBytes.default(64 * 1024 * 1024),
    /** Bytes per request (-s). */
    bs: SizeBytes.default(4096),
    /** Requests to send (-c); exclusive with runtime. */
    count: z.number().int().min(1).max(INT_MAX).optional(),
    /** Target duration; the count is calibrated in prepare (default 2s when count is absent). */
    runtime: Duration.optional(),
    /** Requests in flight (-d). */
    depth: z.number().int().min(1).max(65536).default(1),
    /** Write requests instead of reads (-w). */
    write: z.boolean().default(false),
    /** Cache mode (-t), as for -drive cache=. */
    cache: z.enum(['none', 'writeback', 'writethrough', 'directsync', 'unsafe']).default('writeback'),
    /** AIO backend (-i). */
    aio: z.enum(['threads', 'native', 'io_uring']).default('threads'),
    /** Byte written by write requests (--pattern). */
    pattern: z.number().int().min(0).max(255).optional(),
    /** Distance between consecutive requests (-S); default bs (sequential). */
    step: SizeBytes.optional(),
    /** First request's offset (-o). */
    offset: SizeBytes.optional(),
    /** A flush every N requests (--flush-interval); writes only, N >= depth. */
    flush_interval: z.number().int().min(1).max(INT_MAX).optional(),
    /** Do not drain in-flight requests before each flush (--no-drain). */
    no_drain: z.boolean().optional(),
    /** qcow2 cluster size (power of two, 512 B to 2 MiB). */
    cluster_size: SizeBytes.optional(),
    /** qemu-img create -o preallocation= (metadata is qcow2 only). */
    preallocation: z.enum(['off', 'metadata', 'falloc', 'full']).optional(),
    /** Write the whole image in prepare (see the file comment). */
    fill: z.boolean().default(true),
  })
  .superRefine((p, ctx) => {
    const issue = (key: string, message: string): void => {
      ctx.addIssue({ code: 'custom', path: [key], message });
    };
    if (p.count !== undefined && p.runtime !== undefined) issue('runtime', 'give count or runtime, not both');
    if (p.size === 0 || p.size % 512 !== 0) issue('size', `size must be a positive multiple of 512 bytes (got ${p.size})`);
    if (p.bs === 0 || p.bs > INT_MAX) issue('bs', `bs must be between 1 byte and 2 GiB (got ${p.bs})`);
    else if (p.bs > p.size) issue('bs', `bs (${p.bs} bytes) is larger than the image (${p.size} bytes)`);
    if (p.step !== undefined && p.step > INT_MAX) issue('step', 'step must be below 2 GiB');
    if (p.offset !== undefined && p.offset >= p.size) issue('offset', `offset (${p.offset}) is beyond the image (${p.size} bytes)`);
    if (p.aio === 'native' && !DIRECT_CACHES.includes(p.cache)) issue('aio', `aio=native needs cache=none or directsync (got cache=${p.cache})`);
    if (DIRECT_CACHES.includes(p.cache) && p.bs % 512 !== 0) issue('bs', `cache=${p.cache} (O_DIRECT) needs bs to be a multiple of 512 (got ${p.bs})`);
    if (p.pattern !== undefined && !p.write) issue('pattern', 'pattern only applies to write benchmarks (write: true)');
    if (p.flush_interval !== undefined) {
      if (!p.write) issue('flush_interval', 'flush_interval only applies to write benchmarks (write: true)');
      if (p.flush_interval < p.depth) issue('flush_interval', `flush_interval (${p.flush_interval}) must be at least depth (${p.depth})`);
    }
    if (p.no_drain !== undefined && p.flush_interval === undefined) issue('no_drain', 'no_drain only applies with flush_interval');
    if (p.cluster_size !== undefined) {
      if (p.format !== 'qcow2') issue('cluster_size', 'cluster_size only applies to format qcow2');
      const c = p.cluster_size;
      if (c < 512 || c > 2 * 1024 * 1024 || (c & (c - 1)) !== 0) issue('cluster_size', `cluster_size must be a power of two from 512 B to 2 MiB (got ${c})`);
    }
    if (p.preallocation === 'metadata' && p.format !== 'qcow2') issue('preallocation', 'preallocation=metadata only applies to format qcow2');
  });

export type QemuImgBenchParamsInput = z.input<typeof QemuImgBenchParams>;
export type QemuImgBenchParamsT = z.output<typeof QemuImgBenchParams>;

/** argv (without `qemu-img`) that creates the image. */
export function qemuImgCreateArgs(params: QemuImgBenchParamsT, image: string): string[] {
  const opts: string[] = [];
  if (params.cluster_size !== undefined) opts.push(`cluster_size=${params.cluster_size}`);
  if (params.preallocation !== undefined) opts.push(`preallocation=${params.preallocation}`);
  return ['create', '-q', '-f', params.format, ...(opts.length > 0 ? ['-o', opts.join(',')] : []), image, String(params.size)];
}

/** argv (without `qemu-img`) of one measured bench run of `count` requests. Pure. */
export function qemuImgBenchArgs(params: QemuImgBenchParamsT, image: string, count: number): string[] {
  const args = ['bench', '-f', params.format, '-c', String(count), '-d', String(params.depth), '-s', String(params.bs)];
  if (params.step !== undefined) args.push('-S', String(params.step));
  if (params.offset !== undefined) args.push('-o', String(params.offset));
  if (params.write) args.push('-w');
  if (params.pattern !== undefined) args.push(`--pattern=${params.pattern}`);
  if (params.flush_interval !== undefined) args.push(`--flush-interval=${params.flush_interval}`);
  if (params.no_drain) args.push('--no-drain');
  args.push('-t', params.cache, '-i', params.aio, image);
  return args;
}

const FILL_PATTERN = 0xa5;

/** argv of the fill pass: the whole image, in the largest request (<= 1 MiB) that divides it. */
export function qemuImgFillArgs(params: QemuImgBenchParamsT, image: string): string[] {
  const chunk = [1 << 20, 64 << 10, 4 << 10, 512].find((c) => params.size % c === 0) ?? 512;
  const count = params.size / chunk;
  // Writeback cache and depth 16: the fill is not measured, only its result matters.
  return ['bench', '-f', params.format, '-w', '-c', String(count), '-d', String(Math.min(16, count)), '-s', String(chunk), `--pattern=${FILL_PATTERN}`, '-t', 'writeback', image];
}

const PREFIX = 'qemu-img-bench';
const imagePath = (ctx: WorkloadContext, p: QemuImgBenchParamsT): string => path.join(ctx.dataDir, `${PREFIX}.${p.format}`);
const statePath = (ctx: WorkloadContext): string => path.join(ctx.dataDir, `${PREFIX}.state.json`);

interface BenchState {
  count: number;
  calibration: { count: number; seconds: number }[];
}

export const QEMU_IMG_BENCH_METRICS: MetricInfo[] = [
  { name: 'iops', unit: 'IOPS', better: 'higher', description: 'Requests per second (count / seconds)' },
  { name: 'bw', unit: 'B/s', better: 'higher', description: 'Bytes per second (count × bs / seconds)' },
  { name: 'seconds', unit: 's', better: 'lower', description: 'Time qemu-img took for the requests (1 ms resolution)' },
];

async function requireQemuImg(): Promise<string> {
  const q = await which('qemu-img');
  if (!q) throw new Error('qemu-img: command not found on PATH (install the Debian package "qemu-utils")');
  return q;
}

function cacheHint(params: QemuImgBenchParamsT, text: string): string {
  if (DIRECT_CACHES.includes(params.cache) && /Invalid argument/i.test(text)) {
    return `\nhint: cache=${params.cache} opens with O_DIRECT, which this file system may not support (tmpfs before Linux 6.6)`;
  }
  return '';
}

/** Run qemu-img; throw with the command, exit status, stderr tail and a hint on failure. */
async function qemuImg(
  bin: string,
  args: string[],
  params: QemuImgBenchParamsT,
  signal: AbortSignal,
  files?: { stdoutFile: string; stderrFile: string },
): Promise<{ text: string; command: string }> {
  const r = await run(bin, args, { signal, ...(files ?? {}) });
  let why = failure(r);
  if (why) {
    if (files) {
      const err = await readFile(files.stderrFile, 'utf8').catch(() => '');
      if (err.trim()) why += `\n${err.trim().split('\n').slice(-5).join('\n')}`;
    }
    throw new Error(why + cacheHint(params, why));
  }
  return { text: files ? await readFile(files.stdoutFile, 'utf8') : r.stdout, command: r.command };
}

async function createImage(bin: string, ctx: WorkloadContext, params: QemuImgBenchParamsT): Promise<void> {
  const image = imagePath(ctx, params);
  await rm(image, { force: true });
  await qemuImg(bin, qemuImgCreateArgs(params, image), params, ctx.signal);
}

/** Short runs until one lasts >= 100 ms, then scale the count to the target duration. */
async function calibrate(bin: string, ctx: WorkloadContext, params: QemuImgBenchParamsT, targetMs: number): Promise<BenchState> {
  const image = imagePath(ctx, params);
  const calibration: BenchState['calibration'] = [];
  let count = 256;
  for (let i = 0; i < 8; i++) {
    const { text } = await qemuImg(bin, qemuImgBenchArgs(params, image, count), params, ctx.signal);
    const r = parseQemuImgBench(text, `qemu-img bench calibration run ${i + 1}`);
    calibration.push({ count, seconds: r.seconds });
    if (r.seconds >= 0.1 || count >= INT_MAX) break;
    count = Math.min(INT_MAX, Math.ceil(count * (r.seconds > 0 ? Math.min(50, 0.15 / r.seconds) : 50)));
  }
  const last = calibration[calibration.length - 1]!;
  const rate = last.count / Math.max(last.seconds, 0.001);
  return { count: Math.max(1, Math.min(INT_MAX, Math.round((rate * targetMs) / 1000))), calibration };
}

export const qemuImgBenchWorkload: Workload<QemuImgBenchParamsT> = {
  tool: 'qemu-img-bench',
  description: "qemu-img bench over a raw or qcow2 image in the PM directory: QEMU's block layer without a guest",
  params: QemuImgBenchParams,
  metrics: QEMU_IMG_BENCH_METRICS,
  requires: [{ command: 'qemu-img', debianPackage: 'qemu-utils' }],

  async prepare(ctx: WorkloadContext, params: QemuImgBenchParamsT): Promise<void> {
    const bin = await requireQemuImg();
    await mkdir(ctx.dataDir, { recursive: true });
    await createImage(bin, ctx, params);
    if (params.fill) await qemuImg(bin, qemuImgFillArgs(params, imagePath(ctx, params)), params, ctx.signal);
    const state: BenchState =
      params.count !== undefined
        ? { count: params.count, calibration: [] }
        : await calibrate(bin, ctx, params, parseDuration(params.runtime ?? '2s'));
    await writeFile(statePath(ctx), JSON.stringify(state));
    ctx.log(`qemu-img bench: ${params.format} image of ${params.size} bytes${params.fill ? ', filled' : ''}; ${state.count} requests per run`);
  },

  async run(ctx: WorkloadContext, params: QemuImgBenchParamsT): Promise<WorkloadResult> {
    const bin = await requireQemuImg();
    await mkdir(ctx.outDir, { recursive: true });
    let state: BenchState;
    try {
      state = JSON.parse(await readFile(statePath(ctx), 'utf8')) as BenchState;
    } catch (e) {
      throw new Error(`qemu-img-bench: ${statePath(ctx)} unreadable (was prepare run?): ${(e as Error).message}`);
    }
    const image = imagePath(ctx, params);
    if (!params.fill) await createImage(bin, ctx, params); // every run measures a fresh image
    const stdoutFile = path.join(ctx.outDir, 'qemu-img-bench.txt');
    const stderrFile = path.join(ctx.outDir, 'qemu-img-bench.stderr');
    const args = qemuImgBenchArgs(params, image, state.count);
    const { text, command } = await qemuImg(bin, args, params, ctx.signal, { stdoutFile, stderrFile });
    const result: QemuImgBenchResult = parseQemuImgBench(text, stdoutFile);
    const samples = qemuImgBenchSamples(result, stdoutFile);
    if (result.seconds < 0.1) ctx.log(`qemu-img bench: run took ${result.seconds} s; the 1 ms clock makes that imprecise (raise count or use runtime)`);
    const infoFile = path.join(ctx.outDir, 'qemu-img-info.json');
    const { text: infoText } = await qemuImg(bin, ['info', '--output=json', '-f', params.format, image], params, ctx.signal);
    await writeFile(infoFile, infoText);
    const info: QemuImgInfo = parseQemuImgInfo(infoText, infoFile);
    return {
      samples,
      rawFiles: ['qemu-img-bench.txt', 'qemu-img-bench.stderr', 'qemu-img-info.json'],
      details: {
        command,
        requests: result.requests,
        op: result.op,
        depth: result.depth,
        bufferSize: result.bufferSize,
        ...(state.calibration.length > 0 ? { calibration: state.calibration } : {}),
        image: info,
      },
    };
  },

  async cleanup(ctx: WorkloadContext): Promise<void> {
    let names: string[];
    try {
      names = await readdir(ctx.dataDir);
    } catch {
      return;
    }
    await Promise.all(names.filter((n) => n.startsWith(PREFIX)).map((n) => rm(path.join(ctx.dataDir, n), { force: true })));
  },
};
