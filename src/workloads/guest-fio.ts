// fio inside the Debian guest (src/vm/debian.ts), one guest per cell repetition, over one of the
// three ways to give a VM persistent memory (the `backend` parameter, a matrix axis):
//   raw    memory-backend-file over a raw file + nvdimm (memory virtualization, stock QEMU);
//   pcow   format=pcow + nvdimm through the patched QEMU (src/build/qemu.ts), the runtime's
//          options (prealloc-depth, cow-unit, handler-threads, read-fill) as parameters;
//   qcow2  virtio-blk over a qcow2 image with cache=none (I/O virtualization).
// The image files live in the cell's dataDir (the experiment's PM directory).
//
// In the guest (guest-scripts/guest-fio-setup.sh): an NVDIMM's label-less namespace0.0 becomes
// fsdax (/dev/pmem0, the same for raw and pcow); path `dax` = ext4 -o dax on it and fio's mmap
// (or libpmem) engine on a file there; path `blk` = direct I/O (psync/libaio) on /dev/pmem0 or
// on the virtio disk. fio runs detached (a dropped SSH connection loses no result); its JSON is
// downloaded into the cell's outDir and parsed with fio-parse.
//
// Phases (what the measured pass finds):
//   steady         the region was written once before (a fill pass): no allocation is measured;
//   first-touch    a fresh image: every first write to a cluster allocates (pcow: expansion);
//   after-snapshot the region was filled, then snapshotted live over QMP (pcow:
//                  pcow-snapshot-create; qcow2: blockdev-snapshot-internal-sync on the data
//                  disk; raw has no snapshot and is refused): first writes copy on write.
// `stride` gives one I/O every `stride` bytes (rw=write only): stride = the cluster size puts
// exactly one write in each cluster, so every measured write is an expansion or a COW.
//
// prepare boots the guest, sets the device up and runs the fill/snapshot; run is the measured
// fio pass (a second run in the same guest, i.e. a warmup, is refused for the first-touch and
// after-snapshot phases: it would measure writes that allocate nothing); cleanup stops QEMU.
// Another guest workload (Redis, C7) reuses the backend part: BACKEND_SHAPE, startBackendGuest,
// stopBackendGuest.
import { copyFile, mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { SizeBytes } from '../experiment/schema.ts';
import { parseDuration } from '../experiment/units.ts';
import { guestAccel } from '../vm/accel.ts';
import { DebianGuest } from '../vm/debian.ts';
import type { Accel, Disk } from '../vm/machine.ts';
import { MiB } from '../vm/machine.ts';
import { repoRoot } from '../util/paths.ts';
import { runChecked } from '../util/proc.ts';
import { nativeBins } from '../build/native.ts';
import { FIO_METRICS, FioParams, fioArgs, type FioParamsT } from './fio.ts';
import { assertNoFioJobErrors, fioSamples, parseFioJson, summarizeFio } from './fio-parse.ts';
import type { Workload, WorkloadContext, WorkloadResult } from './types.ts';
import { sharedOnce } from '../util/once.ts';

export const GUEST_BACKENDS = ['raw', 'pcow', 'qcow2'] as const;
export type GuestBackend = (typeof GUEST_BACKENDS)[number];

const DATA_SERIAL = 'pcowdata';
const GUEST_DIR = '/root/pcow';
const GUEST_DAX_FILE = '/mnt/pm/fio-data';
const SETUP_SCRIPT = 'guest-fio-setup.sh';

/** The guest-only parameters; the rest are fio's (src/workloads/fio.ts FioParams). */
const GuestShape = {
  backend: z.enum(GUEST_BACKENDS),
  /** dax: ext4 -o dax + mmap/libpmem engine; blk: direct I/O on the block device. */
  path: z.enum(['dax', 'blk']).default('dax'),
  phase: z.enum(['steady', 'first-touch', 'after-snapshot']).default('steady'),
  /** One I/O every `stride` bytes (rw=write): stride = cluster size = one write per cluster. */
  stride: SizeBytes.optional(),
  /** Size of the NVDIMM / the virtio disk. */
  pm_size: SizeBytes.default(256 * MiB),
  /** pcow and qcow2 cluster size. */
  cluster_size: SizeBytes.default(64 * 1024),
  /** pcow: data spread over this many files (pcow-img create --stripes). */
  stripes: z.number().int().min(1).max(64).default(1),
  /** pcow: the stripe unit (default: the cluster size). */
  stripe_unit: SizeBytes.optional(),
  /** pcow runtime properties (QEMU memory-backend-file format=pcow). */
  prealloc_depth: z.number().int().min(0).optional(),
  cow_unit: z.string().regex(/^(whole|0|\d+[KkMm]?)$/, 'expected "whole" or a size such as 4K').optional(),
  handler_threads: z.number().int().min(0).max(64).optional(),
  read_fill: z.string().regex(/^\d+[KkMm]?$/, 'expected a size such as 64K').optional(),
  /** Guest RAM and vCPUs. */
  memory: SizeBytes.default(512 * MiB),
  smp: z.number().int().min(1).max(64).default(2),
};

const fioShape = FioParams.def.shape as unknown as z.ZodRawShape;

export const GuestFioParams = z.strictObject({ ...fioShape, ...GuestShape }).superRefine((p, ctx) => {
  const issue = (k: string, message: string): void => ctx.addIssue({ code: 'custom', path: [k], message });
  const g = p as unknown as GuestFioParamsT;
  // fio's own rules (iodepth vs engine, sizes, direct alignment), reported under the same keys.
  const fio = FioParams.safeParse(fioPart(p as Record<string, unknown>));
  if (!fio.success) for (const i of fio.error.issues) ctx.addIssue({ code: 'custom', path: i.path as PropertyKey[], message: i.message });
  if (g.backend === 'qcow2' && g.path === 'dax') issue('path', 'the qcow2 backend is a virtio disk: it has no dax path (use path: blk)');
  if (g.path === 'dax' && !['mmap', 'libpmem', 'psync', 'sync'].includes(g.ioengine)) issue('ioengine', `on the dax path use mmap or libpmem (got ${g.ioengine})`);
  if (g.path === 'blk' && ['mmap', 'libpmem'].includes(g.ioengine)) issue('ioengine', `the blk path does read/write I/O: use psync or libaio (got ${g.ioengine})`);
  if (g.backend === 'raw' && g.phase === 'after-snapshot') issue('phase', 'a raw NVDIMM has no snapshots: after-snapshot needs backend pcow or qcow2');
  if (g.stride !== undefined) {
    if (g.rw !== 'write' && g.rw !== 'read') issue('stride', `stride applies to sequential rw (write, read), not rw=${g.rw}`);
    if (g.stride < g.bs) issue('stride', `stride (${g.stride}) is smaller than bs (${g.bs})`);
    if (g.time_based) issue('stride', 'stride writes each stride once: set time_based: false (a time-based job would wrap around and write them again)');
  }
  if (g.backend !== 'pcow') {
    for (const k of ['prealloc_depth', 'cow_unit', 'handler_threads', 'read_fill', 'stripe_unit'] as const) {
      if (g[k] !== undefined) issue(k, `${k} is a pcow option; backend is ${g.backend}`);
    }
    if (g.stripes !== 1) issue('stripes', `stripes is a pcow option; backend is ${g.backend}`);
  }
  if (g.pm_size % (2 * MiB) !== 0) issue('pm_size', `pm_size must be a multiple of 2 MiB (the fsdax namespace's alignment), got ${g.pm_size}`);
  const region = g.file_per_job ? g.size * g.numjobs : g.size;
  // ext4 and the fsdax namespace's page map take a few per cent of the device.
  const usable = g.path === 'dax' ? Math.floor(g.pm_size * 0.85) : g.pm_size - 4 * MiB;
  if (region > usable) issue('size', `${g.file_per_job ? `numjobs x size = ${region}` : `size ${region}`} bytes does not fit the ${g.path} region of pm_size ${g.pm_size} (about ${usable} usable): raise pm_size`);
});

export type GuestFioParamsT = FioParamsT & {
  backend: GuestBackend;
  path: 'dax' | 'blk';
  phase: 'steady' | 'first-touch' | 'after-snapshot';
  stride?: number;
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
};

/** The fio parameters of a guest-fio parameter set. */
function fioPart(p: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(p).filter(([k]) => k in fioShape));
}

/** The patched QEMU, or PCOW_QEMU (a development build): ensureQemu once per process. */
const patchedOnce = sharedOnce((log: (l: string) => void, signal: AbortSignal) =>
  import('../build/qemu.ts').then(({ ensureQemu }) => ensureQemu({ log, signal })),
);
async function patchedQemu(log: (l: string) => void, signal: AbortSignal): Promise<{ binary: string; firmwareArgs: string[] }> {
  const own = process.env.PCOW_QEMU;
  if (own) {
    const { QEMU_FIRMWARE_DIRS } = await import('../build/qemu.ts');
    return { binary: own, firmwareArgs: QEMU_FIRMWARE_DIRS.flatMap((d) => ['-L', d]) };
  }
  return patchedOnce(log, signal);
}

/** The disk of this cell and the QMP-visible facts to keep. Pure except for file creation. */
async function createBackend(ctx: WorkloadContext, p: BackendParams): Promise<{ disk: Disk; image: string }> {
  const image = path.join(ctx.dataDir, `pm.${p.backend}`);
  if (p.backend === 'raw') {
    await writeFile(image, '');
    await truncate(image, p.pm_size);
    return { image, disk: { kind: 'nvdimm', backend: { type: 'raw', path: image, size: p.pm_size } } };
  }
  if (p.backend === 'pcow') {
    const args = ['create', '-c', String(p.cluster_size)];
    if (p.stripes > 1) args.push('--stripes', String(p.stripes), '--stripe-unit', String(p.stripe_unit ?? p.cluster_size));
    await runChecked(nativeBins().pcowImg, [...args, image, String(p.pm_size)], { signal: ctx.signal, timeoutMs: 60_000 });
    const props: Record<string, string | number | boolean> = {};
    if (p.prealloc_depth !== undefined) props['prealloc-depth'] = p.prealloc_depth;
    if (p.cow_unit !== undefined) props['cow-unit'] = p.cow_unit;
    if (p.handler_threads !== undefined) props['handler-threads'] = p.handler_threads;
    if (p.read_fill !== undefined) props['read-fill'] = p.read_fill;
    return { image, disk: { kind: 'nvdimm', backend: { type: 'pcow', path: image, size: p.pm_size, props } } };
  }
  await runChecked('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${p.cluster_size}`, image, String(p.pm_size)], { signal: ctx.signal, timeoutMs: 60_000 });
  return { image, disk: { kind: 'virtio-blk', path: image, format: 'qcow2', serial: DATA_SERIAL, cache: 'none' } };
}

/** The fio argv for the measured pass or the fill, for a target in the guest. */
export function guestFioArgv(p: GuestFioParamsT, target: string, output: string, fill = false): string[] {
  let fp: FioParamsT = FioParams.parse(fioPart(p as unknown as Record<string, unknown>));
  if (fill) {
    // One sequential pass over the whole region (each job's own file, or the shared region
    // once), by write(2): as fast as the guest writes, and what it writes is what matters.
    fp = {
      ...fp,
      ioengine: 'psync',
      rw: 'write',
      bs: Math.min(MiB, fp.size),
      numjobs: fp.file_per_job ? fp.numjobs : 1,
      iodepth: 1,
      time_based: false,
      direct: p.path === 'blk',
      ramp_time: undefined,
    };
  }
  const args = fioArgs(fp, target, { output, name: fill ? 'fill' : 'pcow' });
  if (!fill && p.stride !== undefined && p.stride > p.bs) {
    // rw=write:SKIP moves SKIP bytes on after each I/O; io_size stops the job at the end of
    // the region (fio would otherwise wrap around and write the same offsets again).
    const i = args.indexOf(`--rw=${fp.rw}`);
    args[i] = `--rw=${fp.rw}:${p.stride - p.bs}`;
    args.splice(i + 1, 0, `--io_size=${Math.floor(fp.size / p.stride) * p.bs}`);
  }
  return args;
}

/** A booted guest over one backend with its device set up (startBackendGuest). */
export interface BackendGuest {
  guest: DebianGuest;
  accel: Accel;
  accelWhy: string;
  /** What guest-fio-setup.sh reported: namespace (ndctl JSON), blockdev, mount, queue_dax. */
  setup: Record<string, string>;
  /** The backend's image file (raw, pcow or qcow2) in the cell's dataDir. */
  image: string;
  qemu: string;
}

/** The backend parameters a guest workload shares with guest-fio (e.g. a Redis workload, C7). */
export type BackendParams = Pick<
  GuestFioParamsT,
  'backend' | 'pm_size' | 'cluster_size' | 'stripes' | 'stripe_unit' | 'prealloc_depth' | 'cow_unit' | 'handler_threads' | 'read_fill' | 'memory' | 'smp'
>;
/** Their zod shape, to spread into another guest workload's parameter schema. */
export const BACKEND_SHAPE = GuestShape;

/**
 * The hook for every guest workload: create the backend's image in ctx.dataDir, boot the Debian
 * guest over it (accelerator from the probe, the patched QEMU for every backend), upload and run
 * guest-fio-setup.sh (fsdax namespace; on the dax path ext4 -o dax at /mnt/pm). `onDir` gets the
 * VM directory (overlay, serial log) before the boot, for the caller's cleanup. On a failure
 * after the boot the guest is stopped before the error is thrown.
 */
export async function startBackendGuest(ctx: WorkloadContext, p: BackendParams, guestPath: 'dax' | 'blk', onDir: (vmDir: string) => void): Promise<BackendGuest> {
  const { accel, why } = await guestAccel({ log: ctx.log, signal: ctx.signal });
  const { disk, image } = await createBackend(ctx, p);
  // Every backend runs the same (patched) emulator: a pcow/raw or pcow/qcow2 ratio then compares
  // backends, not QEMU builds (it is stock QEMU 7.2 plus format=pcow).
  const qemu = await patchedQemu(ctx.log, ctx.signal);
  // Not under dataDir: a cell id holds "=", which QEMU's -qmp unix:PATH,... syntax cannot take.
  const vmDir = await mkdtemp(path.join(tmpdir(), 'pcow-guest-fio-'));
  onDir(vmDir);
  const guest = await DebianGuest.boot({
    name: `${ctx.cellId}#${ctx.repetition}`,
    accel,
    qemu: qemu.binary,
    extraArgs: qemu.firmwareArgs,
    memory: p.memory,
    smp: p.smp,
    disks: [disk],
    dir: vmDir,
    signal: ctx.signal,
    log: ctx.log,
  });
  try {
    ctx.log(`guest up under ${accel} (${why}): ready marker ${(guest.bootMs / 1000).toFixed(1)} s, SSH ${(guest.sshMs / 1000).toFixed(1)} s`);
    await guest.ssh.check(['mkdir', '-p', GUEST_DIR]);
    await guest.ssh.upload(path.join(repoRoot, 'guest-scripts', SETUP_SCRIPT), `${GUEST_DIR}/${SETUP_SCRIPT}`);
    const device = p.backend === 'qcow2' ? `virtio:${DATA_SERIAL}` : 'nvdimm';
    const r = await guest.ssh.check(['sh', `${GUEST_DIR}/${SETUP_SCRIPT}`, device, guestPath], { timeoutMs: 120_000 });
    const setup = keyValues(r.stdout);
    if (guestPath === 'dax' && setup['queue_dax'] !== '1') throw new Error(`the guest's ${setup['blockdev']} is not a DAX device (queue/dax = ${setup['queue_dax']}; mount: ${setup['mount']})`);
    return { guest, accel, accelWhy: why, setup, image, qemu: qemu.binary };
  } catch (e) {
    await guest.stop();
    throw e;
  }
}

/** Stop the guest (if any), keep its serial console in ctx.outDir, remove the VM directory. */
export async function stopBackendGuest(ctx: WorkloadContext, bg: BackendGuest | undefined, vmDir: string | undefined): Promise<void> {
  if (bg) await bg.guest.stop();
  if (!vmDir) return;
  // The console is the evidence of how the guest ran (and why it failed).
  await copyFile(path.join(vmDir, 'serial.log'), path.join(ctx.outDir, 'serial.log')).catch(() => undefined);
  await rm(vmDir, { recursive: true, force: true });
}

interface CellState extends BackendGuest {
  target: string;
  fillMs?: number;
  snapshot?: unknown;
  runs: number;
}

/** Live guests by cell id (the lifecycle runs one unit at a time; prepare → run(s) → cleanup). */
const cells = new Map<string, CellState>();
/** Each cell's VM directory (overlay, serial log, sockets), removed by cleanup. */
const vmDirs = new Map<string, string>();

function keyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1] as string] = m[2] as string;
  }
  return out;
}

/** Run fio detached in the guest, download its JSON (and stderr) to outDir/<name>.*, parse it. */
async function guestFio(st: CellState, ctx: WorkloadContext, argv: string[], name: string, timeoutMs: number) {
  const g = st.guest;
  const remote = `${GUEST_DIR}/${name}.json`;
  const jobArgv = ['fio', ...argv.map((a) => (a.startsWith('--output=') ? `--output=${remote}` : a))];
  const id = await g.ssh.startDetached(jobArgv, { cwd: GUEST_DIR });
  const job = await g.ssh.waitJob(id, { timeoutMs });
  await writeFile(path.join(ctx.outDir, `${name}.stderr`), job.stderr);
  const local = path.join(ctx.outDir, `${name}.json`);
  try {
    await g.ssh.download(remote, local);
  } catch (e) {
    throw new Error(`fio in the guest (${jobArgv.join(' ')}) exited with ${job.exitCode} and left no report: ${job.stderr.trim().split('\n').slice(-5).join(' | ') || (e as Error).message}`);
  }
  const report = parseFioJson(await readFile(local, 'utf8'), local);
  assertNoFioJobErrors(report, (f) => (f.some((x) => x.errno === 95) ? 'the libpmem engine needs a file on a DAX mount (path: dax)' : f.some((x) => x.errno === 28) ? 'the region is full: lower size or raise pm_size' : undefined));
  if (job.exitCode !== 0) throw new Error(`fio in the guest exited with ${job.exitCode}: ${job.stderr.trim().split('\n').slice(-5).join(' | ')}`);
  return { report, command: jobArgv.join(' ') };
}

async function qmp<T = unknown>(st: CellState, cmd: string, args?: Record<string, unknown>): Promise<T> {
  const q = st.guest.vm.qmp;
  if (!q) throw new Error(`QMP of guest ${st.guest.name} is not connected`);
  return q.execute<T>(cmd, args);
}

/** query-block: the QEMU device name of the drive over `file`. */
async function driveOf(st: CellState, file: string): Promise<string> {
  const blocks = await qmp<{ device: string; inserted?: { file?: string } }[]>(st, 'query-block');
  const b = blocks.find((x) => x.inserted?.file === file);
  if (!b) throw new Error(`query-block lists no drive over ${file} (have: ${blocks.map((x) => `${x.device}=${x.inserted?.file}`).join(', ')})`);
  return b.device;
}

const fioTimeoutMs = (p: GuestFioParamsT): number => 5 * 60_000 + (p.time_based ? parseDuration(p.runtime) : 0);

/** What every guest workload runs on the host: QEMU (the probe's stock binary) and qemu-img. */
export const GUEST_WORKLOAD_REQUIRES = [
  { command: 'qemu-system-x86_64', debianPackage: 'qemu-system-x86' },
  { command: 'qemu-img', debianPackage: 'qemu-utils' },
];

export const guestFioWorkload: Workload<GuestFioParamsT> = {
  tool: 'guest-fio',
  description: 'fio inside a Debian guest (one per cell repetition) over a raw NVDIMM, a pcow NVDIMM or a qcow2 virtio disk: dax (ext4 -o dax, mmap/libpmem) or blk (direct I/O) path',
  params: GuestFioParams as unknown as z.ZodType<GuestFioParamsT>,
  metrics: FIO_METRICS,
  requires: GUEST_WORKLOAD_REQUIRES,
  needsNative: true,
  needsGuest: true,

  async prepare(ctx: WorkloadContext, p: GuestFioParamsT): Promise<void> {
    await mkdir(ctx.outDir, { recursive: true });
    const old = cells.get(ctx.cellId);
    if (old) await old.guest.stop();
    cells.delete(ctx.cellId);
    // Registered before the boot: cleanup removes the VM directory even when the boot fails.
    const bg = await startBackendGuest(ctx, p, p.path, (vmDir) => vmDirs.set(ctx.cellId, vmDir));
    const st: CellState = { ...bg, target: '', runs: 0 };
    cells.set(ctx.cellId, st);
    st.target = p.path === 'dax' ? GUEST_DAX_FILE : (st.setup['blockdev'] as string);
    if (p.phase !== 'first-touch') {
      const t0 = Date.now();
      await guestFio(st, ctx, guestFioArgv(p, st.target, 'x', true), 'fio-fill', fioTimeoutMs(p));
      await st.guest.ssh.check(['sync']);
      st.fillMs = Date.now() - t0;
      ctx.log(`filled the region in ${(st.fillMs / 1000).toFixed(1)} s`);
    }
    if (p.phase === 'after-snapshot') {
      st.snapshot =
        p.backend === 'pcow'
          ? await qmp(st, 'pcow-snapshot-create', { name: 'filled' })
          : await qmp(st, 'blockdev-snapshot-internal-sync', { device: await driveOf(st, st.image), name: 'filled' });
      ctx.log(`snapshot "filled" taken live over QMP`);
    }
  },

  async run(ctx: WorkloadContext, p: GuestFioParamsT): Promise<WorkloadResult> {
    const st = cells.get(ctx.cellId);
    if (!st) throw new Error(`guest-fio: no guest for cell ${ctx.cellId} (prepare did not run or failed)`);
    if (st.runs > 0 && p.phase !== 'steady') throw new Error(`guest-fio: phase ${p.phase} measures first writes, which a second run in the same guest would not find: use warmup: 0`);
    st.runs++;
    await mkdir(ctx.outDir, { recursive: true });
    const { report, command } = await guestFio(st, ctx, guestFioArgv(p, st.target, 'x'), 'fio', fioTimeoutMs(p));
    const summary = fioSamples(summarizeFio(report));
    const s = summarizeFio(report);
    for (const w of s.warnings) ctx.log(`fio: ${w}`);
    let pcowStats: unknown;
    if (p.backend === 'pcow') pcowStats = await qmp(st, 'query-pcow').catch((e: unknown) => ({ error: (e as Error).message }));
    const job = report.jobs[0];
    return {
      samples: summary,
      // serial.log is copied there by cleanup, before the lifecycle records the repetition.
      rawFiles: ['fio.json', 'fio.stderr', 'serial.log', ...(p.phase !== 'first-touch' && st.runs === 1 ? ['fio-fill.json', 'fio-fill.stderr'] : [])],
      details: {
        backend: p.backend,
        path: p.path,
        phase: p.phase,
        accelerator: st.accel,
        acceleratorWhy: st.accelWhy,
        qemu: st.qemu,
        guestBootMs: st.guest.bootMs,
        guestSshMs: st.guest.sshMs,
        guestSetup: st.setup,
        fioTarget: st.target,
        command,
        fioVersion: report.fioVersion,
        ios: s.total.ios,
        ioBytes: s.total.ioBytes,
        ...(st.fillMs !== undefined ? { fillMs: st.fillMs } : {}),
        ...(st.snapshot !== undefined ? { snapshot: st.snapshot } : {}),
        ...(pcowStats !== undefined ? { queryPcow: pcowStats } : {}),
        ...(job?.job_runtime !== undefined ? { jobRuntimeMs: job.job_runtime } : {}),
        ...(s.warnings.length > 0 ? { warnings: s.warnings } : {}),
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
