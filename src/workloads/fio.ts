// fio on the host: the "dax" path (ioengine=mmap on a file in the PM directory: loads/stores
// through a shared file mapping) and the "blk" path (psync/libaio/pvsync2/sync: read/write
// system calls on a file). The job builder `fioArgs` is pure so that guest runs build the same
// argv for a file inside the guest.
//
// Engine notes, checked with fio 3.33 on Linux 6.x:
// - mmap + direct=1: fio msyncs (MS_SYNC) every I/O's range after the memcpy, so direct=1 turns
//   the dax path into "store + msync per I/O"; direct=0 is plain loads/stores.
// - On tmpfs (the emulated PM) O_DIRECT opens succeed only on Linux >= 6.6; older kernels fail
//   the job with EINVAL. It is accepted there but changes nothing: tmpfs data lives in the page
//   cache anyway.
// - libaio on tmpfs: tmpfs has no asynchronous path, so io_submit does the copy itself (slat
//   ~1 us at 4 KiB, clat tiny at iodepth=1). A deeper queue adds waiting, not parallelism: at
//   iodepth=16 IOPS rose ~10% while clat grew ~70x (Little's law). Compare libaio cells by
//   lat_total_mean (slat + clat) and IOPS, not by lat_mean (clat) alone.
// - libpmem needs a DAX file system; on tmpfs the job fails with EOPNOTSUPP ("does not point to
//   persistent memory").
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { Duration, SizeBytes } from '../experiment/schema.ts';
import { parseDuration } from '../experiment/units.ts';
import { failure, run, which, type RunResult } from '../util/proc.ts';
import { assertNoFioJobErrors, fioSamples, parseFioJson, summarizeFio, type FioJobFailure, type FioReport } from './fio-parse.ts';
import type { MetricInfo, Workload, WorkloadContext, WorkloadResult } from './types.ts';

export const FIO_ENGINES = ['mmap', 'psync', 'libaio', 'pvsync2', 'sync', 'libpmem'] as const;
const ASYNC_ENGINES: readonly string[] = ['libaio'];
const MIXED_RW: readonly string[] = ['rw', 'readwrite', 'randrw'];

const count = (min: number) => z.number().int().min(min);

/** Field names are fio's, so a job file and an experiment file read alike. */
export const FioParams = z
  .strictObject({
    /** mmap = the host-side dax path; psync/libaio/pvsync2/sync = the blk path. */
    ioengine: z.enum(FIO_ENGINES).default('mmap'),
    rw: z.enum(['read', 'write', 'randread', 'randwrite', 'rw', 'readwrite', 'randrw']).default('randread'),
    /** Percentage of reads in a mixed (rw/randrw) workload. */
    rwmixread: z.number().int().min(0).max(100).optional(),
    /** Block size of one I/O (bytes after parsing; "4k" = 4096). */
    bs: SizeBytes.default(4096),
    /** File size (the I/O region of every job). */
    size: SizeBytes.default(64 * 1024 * 1024),
    numjobs: count(1).max(1024).default(1),
    /** Outstanding I/Os per job; above 1 only for async engines (libaio). */
    iodepth: count(1).max(65536).default(1),
    /** Measured time (time_based) or an upper bound. A bare number is seconds. */
    runtime: Duration.default('10s'),
    /** Unmeasured time before the measured runtime. */
    ramp_time: Duration.optional(),
    time_based: z.boolean().default(true),
    /** O_DIRECT; with ioengine=mmap it means msync(MS_SYNC) after every I/O. */
    direct: z.boolean().default(false),
    /** fsync after every N writes (0 = never). */
    fsync: count(0).optional(),
    /** fdatasync after every N writes (0 = never). */
    fdatasync: count(0).optional(),
    /** Open with O_SYNC (sync) or O_DSYNC (dsync). */
    sync: z.enum(['none', 'sync', 'dsync']).optional(),
    /** fsync the file when a job's writes are done (counted in the job's runtime). */
    end_fsync: z.boolean().optional(),
    /** Threads instead of forked processes for the jobs. */
    thread: z.boolean().optional(),
    /** Each job gets its own file (<file>.<jobnum>) instead of all jobs sharing one. */
    file_per_job: z.boolean().default(false),
    /** Do not track which blocks were hit (random I/O may repeat blocks; cheaper for big files). */
    norandommap: z.boolean().optional(),
    /** Same random sequence every run (fio's default true). */
    randrepeat: z.boolean().optional(),
  })
  .superRefine((p, ctx) => {
    const issue = (pathKey: string, message: string): void => {
      ctx.addIssue({ code: 'custom', path: [pathKey], message });
    };
    if (p.rwmixread !== undefined && !MIXED_RW.includes(p.rw)) issue('rwmixread', `rwmixread only applies to a mixed rw (rw, readwrite, randrw), not rw=${p.rw}`);
    if (p.iodepth > 1 && !ASYNC_ENGINES.includes(p.ioengine)) issue('iodepth', `iodepth=${p.iodepth} needs an async engine (${ASYNC_ENGINES.join(', ')}); ${p.ioengine} does one I/O at a time`);
    if (p.bs === 0) issue('bs', 'bs must be larger than 0');
    if (p.size < p.bs) issue('size', `size (${p.size} bytes) is smaller than bs (${p.bs} bytes)`);
    if (p.direct && p.bs % 512 !== 0) issue('bs', `direct=true needs bs to be a multiple of 512 (got ${p.bs})`);
    if (p.time_based && parseDuration(p.runtime) <= 0) issue('runtime', 'time_based needs a runtime above 0');
  });

export type FioParamsInput = z.input<typeof FioParams>;
export type FioParamsT = z.output<typeof FioParams>;

export interface FioArgsOptions {
  /** Where fio writes its JSON report (--output); omitted → stdout. */
  output?: string;
  /** Only lay the file(s) out (--create_only=1), no measured I/O. */
  createOnly?: boolean;
  /** Job name (default "pcow"). */
  name?: string;
}

const flag = (b: boolean): string => (b ? '1' : '0');

/** Milliseconds in fio's time syntax; fio accepts an "ms" suffix for runtime and ramp_time. */
function fioTime(d: string | number): string {
  return `${parseDuration(d)}ms`;
}

/**
 * The fio argv (without the `fio` command) for one job over `target`, a file path (all jobs share
 * it) or, with file_per_job, the prefix of per-job files `<target>.<jobnum>`. Pure: used by the
 * host workload and by guest runs. Always group_reporting (one exact entry per job group) and
 * unified_rw_reporting=both (exact combined read+write latency as `mixed`).
 */
export function fioArgs(params: FioParamsT, target: string, opts: FioArgsOptions = {}): string[] {
  const args = ['--output-format=json'];
  if (opts.output !== undefined) args.push(`--output=${opts.output}`);
  args.push(`--name=${opts.name ?? 'pcow'}`);
  if (params.file_per_job) {
    // fio expands $jobnum itself; the value is an argv element, never shell text.
    args.push(`--directory=${path.dirname(target)}`, `--filename_format=${path.basename(target)}.$jobnum`);
  } else {
    args.push(`--filename=${target}`);
  }
  args.push(`--ioengine=${params.ioengine}`, `--rw=${params.rw}`);
  if (params.rwmixread !== undefined) args.push(`--rwmixread=${params.rwmixread}`);
  args.push(
    `--bs=${params.bs}`,
    `--size=${params.size}`,
    `--numjobs=${params.numjobs}`,
    `--iodepth=${params.iodepth}`,
    `--direct=${flag(params.direct)}`,
    `--time_based=${flag(params.time_based)}`,
    `--runtime=${fioTime(params.runtime)}`,
  );
  if (params.ramp_time !== undefined) args.push(`--ramp_time=${fioTime(params.ramp_time)}`);
  if (params.fsync !== undefined) args.push(`--fsync=${params.fsync}`);
  if (params.fdatasync !== undefined) args.push(`--fdatasync=${params.fdatasync}`);
  if (params.sync !== undefined) args.push(`--sync=${params.sync}`);
  if (params.end_fsync !== undefined) args.push(`--end_fsync=${flag(params.end_fsync)}`);
  if (params.thread !== undefined) args.push(`--thread=${flag(params.thread)}`);
  if (params.norandommap !== undefined) args.push(`--norandommap=${flag(params.norandommap)}`);
  if (params.randrepeat !== undefined) args.push(`--randrepeat=${flag(params.randrepeat)}`);
  args.push('--group_reporting=1', '--unified_rw_reporting=both');
  if (opts.createOnly) args.push('--create_only=1');
  return args;
}

/** Every data file of this workload starts with this name inside ctx.dataDir. */
const DATA_PREFIX = 'fio-data';

export function fioTarget(dataDir: string): string {
  return path.join(dataDir, DATA_PREFIX);
}

const latencyMetrics = (prefix: string, what: string): MetricInfo[] => [
  { name: `${prefix}iops`, unit: 'IOPS', better: 'higher', description: `${what} I/O operations per second` },
  { name: `${prefix}bw`, unit: 'B/s', better: 'higher', description: `${what} bandwidth, bytes per second` },
  { name: `${prefix}lat_mean`, unit: 'ns', better: 'lower', description: `${what} mean completion latency (clat)` },
  { name: `${prefix}lat_p50`, unit: 'ns', better: 'lower', description: `${what} median completion latency` },
  { name: `${prefix}lat_p99`, unit: 'ns', better: 'lower', description: `${what} 99th percentile completion latency` },
  { name: `${prefix}lat_p999`, unit: 'ns', better: 'lower', description: `${what} 99.9th percentile completion latency` },
];

export const FIO_METRICS: MetricInfo[] = [
  ...latencyMetrics('', 'All jobs and directions:'),
  { name: 'lat_total_mean', unit: 'ns', better: 'lower', description: 'Mean total latency (submission + completion, lat_ns)' },
  ...latencyMetrics('read_', 'Reads (mixed workloads only):'),
  ...latencyMetrics('write_', 'Writes (mixed workloads only):'),
  { name: 'sync_lat_mean', unit: 'ns', better: 'lower', description: 'Mean fsync/fdatasync latency (when the job issues them)' },
];

/** What a job error most likely means for this configuration. */
function jobErrorHint(params: FioParamsT, failures: FioJobFailure[]): string | undefined {
  if (failures.some((f) => f.errno === 95) && params.ioengine === 'libpmem') {
    return 'the libpmem engine needs a file on a DAX file system (tmpfs and ordinary ext4 are not)';
  }
  if (failures.some((f) => f.errno === 22) && params.direct) {
    return 'direct=true: the file system may not support O_DIRECT (tmpfs before Linux 6.6 does not)';
  }
  if (failures.some((f) => f.errno === 28)) return 'the PM directory is full: lower size or numjobs';
  return undefined;
}

async function readTail(file: string, lines = 5): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * Test-only knob PCOW_TEST_SLOW="<workload>=<usec>[,<workload>=<usec>...]": fio's `thinktime`
 * (a stall of <usec> after every I/O) for the cells of that workload, so a test can make one
 * backend really slower without changing its parameters (the cell hash stays the same and
 * `compare` matches the cells). The run's manifest records the variable (testKnobs).
 */
export function testSlowdownUs(cellId: string, env: string | undefined = process.env.PCOW_TEST_SLOW): number | undefined {
  if (!env) return undefined;
  for (const part of env.split(',')) {
    const m = /^\s*([A-Za-z0-9_-]+)=(\d+)\s*$/.exec(part);
    if (!m) throw new Error(`PCOW_TEST_SLOW: expected workload=usec[,workload=usec], got ${JSON.stringify(part)}`);
    const w = m[1] as string;
    if (cellId === w || cellId.startsWith(`${w}.`)) return Number(m[2]);
  }
  return undefined;
}

async function requireFio(): Promise<string> {
  const fio = await which('fio');
  if (!fio) throw new Error('fio: command not found on PATH (install the Debian package "fio")');
  return fio;
}

/**
 * Run fio with its JSON report in `outFile` and stderr in `errFile`; return the checked report.
 * The report is read even when fio exits non-zero, because a job error is the clearer message.
 */
export async function runFio(
  fio: string,
  args: string[],
  files: { outFile: string; errFile: string },
  params: FioParamsT,
  signal: AbortSignal,
): Promise<{ report: FioReport; result: RunResult }> {
  const result = await run(fio, args, { signal, stderrFile: files.errFile });
  if (result.aborted || result.timedOut) throw new Error(failure(result) ?? `${result.command}: stopped`);
  const stderrTail = async (): Promise<string> => {
    const t = await readTail(files.errFile);
    return t ? `\n${t}` : '';
  };
  let text: string;
  try {
    text = await readFile(files.outFile, 'utf8');
  } catch {
    text = '';
  }
  let report: FioReport;
  try {
    report = parseFioJson(text, files.outFile);
  } catch (e) {
    // No usable report: fio most likely rejected its options (the reason is on stderr).
    if (result.exitCode !== 0) throw new Error(`${failure(result)}${await stderrTail()}\n(${(e as Error).message})`);
    throw e;
  }
  assertNoFioJobErrors(report, (f) => jobErrorHint(params, f));
  if (result.exitCode !== 0) throw new Error(`${failure(result)}${await stderrTail()}`);
  return { report, result };
}

export const fioWorkload: Workload<FioParamsT> = {
  tool: 'fio',
  description: 'fio on a file in the PM directory: ioengine=mmap is the host-side dax path, psync/libaio the blk path',
  params: FioParams,
  metrics: FIO_METRICS,
  requires: [{ command: 'fio', debianPackage: 'fio' }],

  async prepare(ctx: WorkloadContext, params: FioParamsT): Promise<void> {
    const fio = await requireFio();
    await mkdir(ctx.dataDir, { recursive: true });
    await mkdir(ctx.outDir, { recursive: true });
    // Lay the file(s) out now so the measured run never includes block allocation.
    const outFile = path.join(ctx.outDir, 'fio-layout.json');
    const errFile = path.join(ctx.outDir, 'fio-layout.stderr');
    await runFio(fio, fioArgs(params, fioTarget(ctx.dataDir), { output: outFile, createOnly: true }), { outFile, errFile }, params, ctx.signal);
    ctx.log(`fio: laid out ${params.file_per_job ? `${params.numjobs} files` : '1 file'} of ${params.size} bytes`);
  },

  async run(ctx: WorkloadContext, params: FioParamsT): Promise<WorkloadResult> {
    const fio = await requireFio();
    await mkdir(ctx.outDir, { recursive: true });
    const outFile = path.join(ctx.outDir, 'fio.json');
    const errFile = path.join(ctx.outDir, 'fio.stderr');
    const args = fioArgs(params, fioTarget(ctx.dataDir), { output: outFile });
    const slowUs = testSlowdownUs(ctx.cellId);
    if (slowUs !== undefined) {
      ctx.log(`fio: PCOW_TEST_SLOW: thinktime ${slowUs} us after every I/O (test-only slowdown)`);
      args.push(`--thinktime=${slowUs}`, '--thinktime_blocks=1');
    }
    const { report, result } = await runFio(fio, args, { outFile, errFile }, params, ctx.signal);
    const summary = summarizeFio(report);
    for (const w of summary.warnings) ctx.log(`fio: ${w}`);
    const job = report.jobs[0];
    return {
      samples: fioSamples(summary),
      rawFiles: ['fio.json', 'fio.stderr'],
      details: {
        fioVersion: report.fioVersion,
        command: result.command,
        directions: summary.directions,
        ios: summary.total.ios,
        ioBytes: summary.total.ioBytes,
        percentilesExact: summary.total.clat.exact,
        ...(slowUs !== undefined ? { testSlowThinktimeUs: slowUs } : {}),
        ...(job?.job_runtime !== undefined ? { jobRuntimeMs: job.job_runtime } : {}),
        ...(job?.usr_cpu !== undefined ? { usrCpuPct: job.usr_cpu, sysCpuPct: job.sys_cpu } : {}),
        ...(summary.warnings.length > 0 ? { warnings: summary.warnings } : {}),
        ...(report.noise.length > 0 ? { fioNotes: report.noise } : {}),
      },
    };
  },

  async cleanup(ctx: WorkloadContext): Promise<void> {
    let names: string[];
    try {
      names = await readdir(ctx.dataDir);
    } catch {
      return; // nothing was created
    }
    await Promise.all(names.filter((n) => n.startsWith(DATA_PREFIX)).map((n) => rm(path.join(ctx.dataDir, n), { force: true })));
  },
};
