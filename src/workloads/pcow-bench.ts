// pcow-bench as a workload: one benchmark case of the pcow runtime per cell, on the host (no
// guest), with the image built in the cell's PM directory.
//
//   case floor      the bare userfaultfd round trip (the floor every fault path is measured against)
//   case expansion  first-touch write latency per cluster (pre-allocation on/off)
//   case cow        first write after a snapshot (COW unit vs whole cluster)
//   case steady     loads/stores over a fully allocated image vs a raw file mmap (throughput)
//   case open       open + map time and VMA count of an image with N allocated clusters
//   case stripes    sequential bandwidth of an image striped over N files
//
// Decisions (documented for the researcher):
// - A parameter that does not apply to the case is an error, so a matrix cannot silently vary
//   something the case ignores. cow_unit is a runtime option and so applies to expansion too
//   (it has no effect there: an experiment crossing it should exclude the duplicates).
// - The steady access pattern is given as bs + write (+ random), the names qemu-img-bench uses,
//   so one figure can put pcow, raw mmap and QEMU's block layer side by side on a shared axis.
//   (`workload` is the matrix's own axis name, so it cannot be a parameter.)
// - Defaults are filled in per case after validation, so a cell's parameters (and its hash)
//   say exactly what ran.
// - The image is kept after each run (`--keep`) and inspected with pcow-img info/check; the
//   state goes into the cell's details, and a check that finds corruption fails the cell.
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { SizeBytes } from '../experiment/schema.ts';
import { run } from '../util/proc.ts';
import { PCOW_BENCH_METRICS, parsePcowBench, pcowBenchSamples, type PcowBenchCaseT } from './pcow-bench-parse.ts';
import { pcowImgCheck, pcowImgInfo, type PcowImgCheck, type PcowImgInfo } from './pcow-img.ts';
import type { Sample, Workload, WorkloadContext, WorkloadResult } from './types.ts';

export const PCOW_BENCH_CASES = ['floor', 'expansion', 'cow', 'steady', 'open', 'stripes'] as const;
export type PcowBenchCaseName = (typeof PCOW_BENCH_CASES)[number];

const KiB = 1024;
const MiB = 1024 * KiB;

/** Parameters each case accepts (besides `case`). */
export const CASE_PARAMS: Record<PcowBenchCaseName, readonly string[]> = {
  floor: ['variant', 'faults'],
  expansion: ['cluster_size', 'prealloc', 'cow_unit', 'clusters'],
  cow: ['cluster_size', 'prealloc', 'cow_unit', 'clusters'],
  steady: ['backend', 'bs', 'write', 'random', 'threads', 'size', 'seconds', 'cluster_size'],
  open: ['clusters', 'cluster_size', 'virtual_size'],
  stripes: ['stripes', 'size', 'threads', 'seconds', 'cluster_size'],
};

/** What pcow-bench uses when a parameter is not given (the same as the C tool's defaults). */
const CASE_DEFAULTS: Record<PcowBenchCaseName, Omit<PcowBenchParamsT, 'case'>> = {
  floor: { variant: 'both', faults: 20000 },
  expansion: { cluster_size: 64 * KiB, prealloc: 0, cow_unit: 'whole', clusters: 2000 },
  cow: { cluster_size: 64 * KiB, prealloc: 0, cow_unit: 'whole', clusters: 1500 },
  steady: { backend: 'pcow', bs: 4 * KiB, write: false, random: true, threads: 1, size: 256 * MiB, seconds: 1, cluster_size: 64 * KiB },
  open: { clusters: 10000, cluster_size: 4 * KiB },
  stripes: { stripes: 1, size: 256 * MiB, threads: 1, seconds: 1, cluster_size: 64 * KiB },
};

const pow2 = (v: number): boolean => v > 0 && Number.isInteger(Math.log2(v));
const human = (v: number): string =>
  v >= MiB && v % MiB === 0 ? `${v / MiB} MiB` : v >= KiB && v % KiB === 0 ? `${v / KiB} KiB` : `${v} bytes`;

/** The smallest COW unit: the sub-unit of the images pcow-bench creates (the format's default, 4 KiB at every cluster size). */
export const SUBUNIT = 4 * KiB;

export const PcowBenchParams = z
  .strictObject({
    case: z.enum(PCOW_BENCH_CASES),
    /** Image cluster size, 4 KiB .. 2 MiB (power of two). */
    cluster_size: SizeBytes.optional(),
    /** Clusters the pre-allocation thread keeps ready (0 = off). */
    prealloc: z.number().int().min(0).max(65536).optional(),
    /** Bytes copied on a copy-on-write, or "whole" (the cluster). */
    cow_unit: z.union([z.literal('whole'), SizeBytes]).optional(),
    /** Clusters touched (expansion, cow) or allocated (open). */
    clusters: z.number().int().min(1).max(100_000_000).optional(),
    /** steady: the pcow image, a raw file mmap, or both interleaved in one process (gives pcow_over_raw). */
    backend: z.enum(['pcow', 'raw', 'both']).optional(),
    /** steady: bytes per access (power of two, 512 B .. 64 MiB). */
    bs: SizeBytes.optional(),
    /** steady: stores instead of loads. */
    write: z.boolean().optional(),
    /** steady: random block order (else sequential, one slice per thread). */
    random: z.boolean().optional(),
    threads: z.number().int().min(1).max(64).optional(),
    /** steady, stripes: size of the image (and of the raw file). */
    size: SizeBytes.optional(),
    /** steady, stripes: measured seconds (per backend; with backend both split into 3 alternating rounds). */
    seconds: z.number().min(0.01).max(3600).optional(),
    /** stripes: files the image is striped over. */
    stripes: z.number().int().min(1).max(8).optional(),
    /** floor: UFFDIO_COPY, mmap(MAP_FIXED)+UFFDIO_WAKE, or both. */
    variant: z.enum(['copy', 'mmap', 'both']).optional(),
    /** floor: faults measured (the first 16 are warm-up). */
    faults: z.number().int().min(100).max(10_000_000).optional(),
    /** open: virtual size (default: 5/4 of the allocated part). */
    virtual_size: SizeBytes.optional(),
  })
  .superRefine((p, ctx) => {
    const issue = (key: string, message: string): void => {
      ctx.addIssue({ code: 'custom', path: [key], message });
    };
    const allowed = CASE_PARAMS[p.case];
    for (const [k, v] of Object.entries(p)) {
      if (k === 'case' || v === undefined || allowed.includes(k)) continue;
      issue(k, `${k} does not apply to case ${p.case} (its parameters: ${allowed.join(', ')})`);
    }
    const d = { ...CASE_DEFAULTS[p.case], ...Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) } as Record<string, unknown>;
    const cs = d.cluster_size as number | undefined;
    if (p.cluster_size !== undefined && (!pow2(p.cluster_size) || p.cluster_size < 4 * KiB || p.cluster_size > 2 * MiB)) {
      issue('cluster_size', `cluster_size must be a power of two from 4 KiB to 2 MiB (got ${p.cluster_size})`);
      return;
    }
    if (p.cow_unit !== undefined && p.cow_unit !== 'whole' && cs !== undefined) {
      const u = p.cow_unit;
      if (!pow2(u) || u > cs || cs % u !== 0) {
        issue('cow_unit', `cow_unit ${human(u)} does not divide cluster_size ${human(cs)} (a power of two up to the cluster size, or "whole")`);
      } else if (u < SUBUNIT) {
        issue('cow_unit', `cow_unit ${human(u)} is below the image's sub-unit (${human(SUBUNIT)}): the format records copies in 4 KiB units`);
      }
    }
    if (p.bs !== undefined && (!pow2(p.bs) || p.bs < 512 || p.bs > 64 * MiB)) issue('bs', `bs must be a power of two from 512 B to 64 MiB (got ${p.bs})`);
    if ((p.case === 'steady' || p.case === 'stripes') && cs !== undefined) {
      const size = d.size as number;
      const unit = p.case === 'stripes' ? Math.max(2 * MiB, cs) : cs;
      if (size < 16 * MiB || size % unit !== 0) issue('size', `size must be at least 16 MiB and a multiple of ${human(unit)} (got ${size} bytes)`);
      const bs = p.case === 'stripes' ? MiB : (d.bs as number);
      const threads = d.threads as number;
      if (size / bs < threads) issue('size', `size (${human(size)}) is too small for ${threads} threads of ${human(bs)} accesses`);
    }
    if (p.case === 'open' && p.virtual_size !== undefined && cs !== undefined) {
      const clusters = d.clusters as number;
      if (p.virtual_size % cs !== 0 || p.virtual_size < clusters * cs) {
        issue('virtual_size', `virtual_size must be a multiple of cluster_size and hold the ${clusters} clusters (at least ${human(clusters * cs)})`);
      }
    }
  })
  .transform((p) => {
    const given = Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) as Omit<PcowBenchParamsT, 'case'>;
    const out: PcowBenchParamsT = { ...CASE_DEFAULTS[p.case], ...given, case: p.case };
    // A unit of the whole cluster is "whole": 64K at 64 KiB clusters is the same cell.
    if (typeof out.cow_unit === 'number' && out.cow_unit === out.cluster_size) out.cow_unit = 'whole';
    return out;
  });

export type PcowBenchParamsInput = z.input<typeof PcowBenchParams>;
/** Validated, with the case's defaults filled in; parameters of other cases are absent. */
export interface PcowBenchParamsT {
  case: PcowBenchCaseName;
  cluster_size?: number;
  prealloc?: number;
  cow_unit?: 'whole' | number;
  clusters?: number;
  backend?: 'pcow' | 'raw' | 'both';
  bs?: number;
  write?: boolean;
  random?: boolean;
  threads?: number;
  size?: number;
  seconds?: number;
  stripes?: number;
  variant?: 'copy' | 'mmap' | 'both';
  faults?: number;
  virtual_size?: number;
}

const PREFIX = 'pcow-bench';
export const imageName = `${PREFIX}.img`;

/** Whether a run of these parameters leaves an image to inspect. */
export function keepsImage(p: PcowBenchParamsT): boolean {
  return p.case !== 'floor' && !(p.case === 'steady' && p.backend === 'raw');
}

/** argv (without the binary) of one case run. Pure. */
export function pcowBenchArgs(p: PcowBenchParamsT, dir: string, keep?: string): string[] {
  const a = ['case', p.case, '--dir', dir];
  const opt = (flag: string, v: string | number | undefined): void => {
    if (v !== undefined) a.push(flag, String(v));
  };
  opt('--cluster-size', p.cluster_size);
  opt('--prealloc', p.prealloc);
  opt('--cow-unit', p.cow_unit);
  opt('--clusters', p.clusters);
  opt('--backend', p.backend);
  if (p.case === 'steady') opt('--rw', `${p.random === false ? '' : 'rand'}${p.write ? 'write' : 'read'}`);
  opt('--bs', p.bs);
  opt('--threads', p.threads);
  opt('--size', p.size);
  opt('--seconds', p.seconds);
  opt('--stripes', p.stripes);
  opt('--variant', p.variant);
  opt('--faults', p.faults);
  opt('--virtual-size', p.virtual_size);
  if (keep !== undefined) a.push('--keep', keep);
  return a;
}

export interface ImageState {
  path: string;
  info: PcowImgInfo;
  check: PcowImgCheck;
}

/**
 * pcow-img info + check of an image a run left. Throws when check finds corruption (or cannot
 * complete): the run's result would not be trustworthy. Raw outputs go to outDir when given.
 */
export async function inspectImage(pcowImg: string, image: string, signal?: AbortSignal, outDir?: string): Promise<ImageState> {
  // check first: info refuses to open an image whose entries are out of range.
  const check = await pcowImgCheck(pcowImg, image, signal);
  if (outDir) await writeFile(path.join(outDir, 'pcow-img-check.json'), check.text);
  const c = check.result;
  if (c.status === 'corrupt') {
    const msgs = c.messages.filter((m) => m.severity !== 'leak').slice(0, 5).map((m) => m.message);
    throw new Error(`${image}: pcow-img check found ${c.corruptions} corruption${c.corruptions === 1 ? '' : 's'} after the run:\n${msgs.join('\n')}`);
  }
  const info = await pcowImgInfo(pcowImg, image, signal);
  if (outDir) await writeFile(path.join(outDir, 'pcow-img-info.json'), info.text);
  return { path: image, info: info.result, check: c };
}

function tools(ctx: WorkloadContext): { bench: string; img: string } {
  const bench = path.join(ctx.nativeBin, 'pcow-bench');
  const img = path.join(ctx.nativeBin, 'pcow-img');
  for (const b of [bench, img]) {
    if (!existsSync(b)) throw new Error(`${b} not found: the native build makes it (make -C native/runtime; the harness's build stage runs it for workloads with needsNative)`);
  }
  return { bench, img };
}

async function removeOurFiles(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  await Promise.all(names.filter((n) => n.startsWith(PREFIX)).map((n) => rm(path.join(dir, n), { force: true, recursive: true })));
}

function imageSamples(s: ImageState): Sample[] {
  return [
    { metric: 'allocated_clusters', value: s.info.allocatedClusters, unit: 'count' },
    { metric: 'file_size', value: s.info.fileSize, unit: 'bytes' },
    { metric: 'leaked_clusters', value: s.check.leaks, unit: 'count' },
  ];
}

export const pcowBenchWorkload: Workload<PcowBenchParamsT> = {
  tool: 'pcow-bench',
  description: "pcow-bench: one benchmark case of the pcow runtime (fault floor, expansion, COW, steady state vs raw mmap, open, stripes) on the host",
  params: PcowBenchParams,
  metrics: PCOW_BENCH_METRICS,
  requires: [
    { command: 'make', debianPackage: 'make' },
    { command: 'cc', debianPackage: 'gcc' },
  ],
  needsNative: true,

  async prepare(ctx: WorkloadContext): Promise<void> {
    tools(ctx);
    await mkdir(ctx.dataDir, { recursive: true });
    await removeOurFiles(ctx.dataDir);
  },

  async run(ctx: WorkloadContext, params: PcowBenchParamsT): Promise<WorkloadResult> {
    const { bench, img } = tools(ctx);
    await mkdir(ctx.outDir, { recursive: true });
    // Each run builds its own image: a warmup run's image must not be there.
    await removeOurFiles(ctx.dataDir);
    const keep = keepsImage(params) ? path.join(ctx.dataDir, imageName) : undefined;
    const stdoutFile = path.join(ctx.outDir, 'pcow-bench.json');
    const stderrFile = path.join(ctx.outDir, 'pcow-bench.stderr');
    const args = pcowBenchArgs(params, ctx.dataDir, keep);
    const r = await run(bench, args, { signal: ctx.signal, stdoutFile, stderrFile });
    if (r.exitCode !== 0 || r.aborted || r.timedOut) {
      const err = (await readFile(stderrFile, 'utf8').catch(() => '')).trim();
      const how = r.aborted ? 'aborted' : r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit code ${r.exitCode}`;
      throw new Error(`${r.command}: ${how}${err ? `\n${err.split('\n').slice(-8).join('\n')}` : ''}\n(stderr: ${stderrFile})`);
    }
    const out: PcowBenchCaseT = parsePcowBench(await readFile(stdoutFile, 'utf8'), stdoutFile);
    if (out.case !== params.case) throw new Error(`${stdoutFile}: pcow-bench ran case ${out.case}, asked for ${params.case}`);
    const samples = pcowBenchSamples(out, stdoutFile);
    const rawFiles = ['pcow-bench.json', 'pcow-bench.stderr'];
    let image: ImageState | undefined;
    if (keep) {
      if (out.image !== keep) throw new Error(`${stdoutFile}: pcow-bench reports image ${JSON.stringify(out.image)}, expected ${keep}`);
      image = await inspectImage(img, keep, ctx.signal, ctx.outDir);
      rawFiles.push('pcow-img-check.json', 'pcow-img-info.json');
      samples.push(...imageSamples(image));
      if (image.check.status === 'leaks') ctx.log(`pcow-img check: ${image.check.leaks} leaked cluster(s) in ${keep}`);
    }
    const { result, runtime, host } = out;
    return {
      samples,
      rawFiles,
      details: {
        command: r.command,
        case: out.case,
        benchParams: out.params,
        host,
        ...('floor' in out ? { floor: out.floor } : {}),
        result,
        ...(runtime ? { runtime } : {}),
        ...(image
          ? {
              image: {
                allocatedClusters: image.info.allocatedClusters,
                totalDataClusters: image.info.totalDataClusters,
                fileSize: image.info.fileSize,
                clusterSize: image.info.clusterSize,
                virtualSize: image.info.virtualSize,
                stripes: image.info.stripes.count,
                layers: image.info.layers.map((l) => ({ id: l.id, name: l.name, active: l.active, clusters: l.clusters })),
                check: { status: image.check.status, corruptions: image.check.corruptions, leaks: image.check.leaks, messages: image.check.messages },
              },
            }
          : {}),
      },
    };
  },

  async cleanup(ctx: WorkloadContext): Promise<void> {
    await removeOurFiles(ctx.dataDir);
  },
};
