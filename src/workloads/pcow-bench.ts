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
// - The parameters, defaults, ranges and rules between parameters come from pcow-bench's own
//   table (native/runtime/bench/options.c, with the runtime options from the runtime's table in
//   native/runtime/options.c), printed by `pcow-bench case --describe`. That JSON is committed
//   as native/runtime/bench/describe.json rather than produced at validation time: an
//   experiment file must validate on a fresh clone before anything is built (`--dry-run`).
//   `make -C native/runtime describe` regenerates it; bench-test and test/workloads/
//   pcow-bench.test.ts fail when it differs from the built tool's output, so it cannot go stale.
// - A parameter that does not apply to the case is an error, so a matrix cannot silently vary
//   something the case ignores (cow_unit is not a parameter of expansion: it has no effect there).
// - The steady access pattern is given as bs + write (+ random), the names qemu-img-bench uses,
//   so one figure can put pcow, raw mmap and QEMU's block layer side by side on a shared axis;
//   this adapter turns write/random into pcow-bench's --rw (the only parameter it renames).
//   (`workload` is the matrix's own axis name, so it cannot be a parameter.)
// - Defaults are filled in per case after validation, so a cell's parameters (and its hash)
//   say exactly what ran.
// - The image is kept after each run (`--keep`) and inspected with pcow-img info/check; the
//   state goes into the cell's details, and a check that finds corruption fails the cell.
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { SizeBytes } from '../experiment/schema.ts';
import { repoRoot } from '../util/paths.ts';
import { run } from '../util/proc.ts';
import { PCOW_BENCH_METRICS, parsePcowBench, pcowBenchSamples, type PcowBenchCaseT } from './pcow-bench-parse.ts';
import { pcowImgCheck, pcowImgInfo, type PcowImgCheck, type PcowImgInfo } from './pcow-img.ts';
import type { Sample, Workload, WorkloadContext, WorkloadResult } from './types.ts';

export const PCOW_BENCH_CASES = ['floor', 'expansion', 'cow', 'steady', 'open', 'stripes'] as const;
export type PcowBenchCaseName = (typeof PCOW_BENCH_CASES)[number];

const KiB = 1024;
const MiB = 1024 * KiB;

// ---- pcow-bench's description of its cases (describe.json) ----
const Operand = z.union([z.string(), z.number()]);
const DescribedParam = z.looseObject({
  name: z.string(),
  flag: z.string().startsWith('--'),
  type: z.enum(['size', 'count', 'seconds', 'enum']),
  values: z.array(z.string()).optional(),
  min: z.number().optional(),
  max: z.number().nullable().optional(),
  pow2: z.boolean().optional(),
  /** Set for a runtime option: 0 is allowed and means `zero`; `keyword` is the word for 0. */
  runtime: z.string().optional(),
  zero: z.string().optional(),
  keyword: z.string().nullable().optional(),
  default: z.union([z.number(), z.string(), z.null()]),
  help: z.string(),
});
const DescribedRule = z.looseObject({
  param: z.string(),
  kind: z.enum(['divides', 'multiple_of', 'at_least_product']),
  of: z.array(Operand).min(1),
  why: z.string().nullable(),
});
const Description = z.looseObject({
  tool: z.literal('pcow-bench'),
  mode: z.literal('describe'),
  subunit: z.number(),
  cases: z.array(z.looseObject({ name: z.string(), image: z.boolean(), help: z.string(), params: z.array(DescribedParam), rules: z.array(DescribedRule) })),
});
export type PcowBenchDescription = z.infer<typeof Description>;
type DescribedParamT = z.infer<typeof DescribedParam>;

export const describeFile = path.join(repoRoot, 'native', 'runtime', 'bench', 'describe.json');

/** Read and check describe.json; the case names must be PCOW_BENCH_CASES (the type the harness uses). */
export function loadDescription(text: string, source: string): PcowBenchDescription {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`${source}: not valid JSON (${(e as Error).message}); regenerate it with make -C native/runtime describe`);
  }
  const r = Description.safeParse(doc);
  if (!r.success) throw new Error(`${source}: not a pcow-bench description: ${r.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const names = r.data.cases.map((c) => c.name);
  if (names.join() !== PCOW_BENCH_CASES.join()) throw new Error(`${source}: cases ${names.join(', ')}; this harness knows ${PCOW_BENCH_CASES.join(', ')}`);
  return r.data;
}

export const DESCRIPTION: PcowBenchDescription = loadDescription(readFileSync(describeFile, 'utf8'), describeFile);
const caseOf = (name: PcowBenchCaseName) => DESCRIPTION.cases.find((c) => c.name === name)!;

/** The adapter's own spelling of pcow-bench's `rw`: write (stores) and random (block order). */
const RW_PARAMS = ['write', 'random'] as const;

/** Parameters each case accepts (besides `case`), in pcow-bench's order, rw spelled write, random. */
export const CASE_PARAMS = Object.fromEntries(
  PCOW_BENCH_CASES.map((c) => [c, caseOf(c).params.flatMap((p) => (p.name === 'rw' ? [...RW_PARAMS] : [p.name]))]),
) as unknown as Record<PcowBenchCaseName, readonly string[]>;

/** Every described parameter by name (one table in C: a name means the same in every case). */
const PARAMS = new Map<string, DescribedParamT>(DESCRIPTION.cases.flatMap((c) => c.params.map((p) => [p.name, p] as const)));

const pow2 = (v: number): boolean => v > 0 && Number.isInteger(Math.log2(v));
const human = (v: number): string =>
  v >= MiB && v % MiB === 0 ? `${v / MiB} MiB` : v >= KiB && v % KiB === 0 ? `${v / KiB} KiB` : `${v} B`;
const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/** The smallest COW unit: the sub-unit of the images pcow-bench creates (the format's default, 4 KiB at every cluster size). */
export const SUBUNIT = DESCRIPTION.subunit;

function zodFor(p: DescribedParamT): z.ZodType {
  switch (p.type) {
    case 'size':
      return p.keyword ? z.union([z.literal(p.keyword), SizeBytes]) : SizeBytes;
    case 'count':
      return z.number().int().nonnegative();
    case 'seconds':
      return z.number();
    case 'enum':
      return z.enum(p.values as [string, ...string[]]);
  }
}

/** What a value of a range-checked parameter must be, as a message (null: it is fine). */
function rangeProblem(p: DescribedParamT, v: number): string | null {
  if (p.runtime !== undefined && v === 0) return null; // a runtime option's 0: its default meaning
  const max = p.max ?? undefined;
  if (v >= (p.min ?? 0) && (max === undefined || v <= max) && (!p.pow2 || pow2(v)) && (p.type !== 'count' || Number.isInteger(v))) return null;
  const show = (x: number): string => (p.type === 'size' ? human(x) : String(x));
  const zero = p.runtime === undefined ? '' : p.keyword ? `, or "${p.keyword}"` : `, or 0 (${p.zero})`;
  const what =
    p.type === 'seconds'
      ? `a number of seconds from ${p.min} to ${max}`
      : max === undefined
        ? `at least ${show(p.min ?? 0)}`
        : `${p.pow2 ? 'a power of two' : p.type === 'count' ? 'a whole number' : 'a size'} from ${show(p.min ?? 0)} to ${show(max)}`;
  return `${p.name} must be ${what}${zero} (got ${p.type === 'size' ? human(v) : v})`;
}

const paramShape: Record<string, z.ZodType> = { case: z.enum(PCOW_BENCH_CASES) };
for (const [name, p] of PARAMS) if (name !== 'rw') paramShape[name] = zodFor(p).optional();
for (const name of RW_PARAMS) paramShape[name] = z.boolean().optional();

export const PcowBenchParams = z
  .strictObject(paramShape)
  .superRefine((raw, ctx) => {
    const p = raw as Record<string, unknown> & { case: PcowBenchCaseName };
    const issue = (key: string, message: string): void => {
      ctx.addIssue({ code: 'custom', path: [key], message });
    };
    const allowed = CASE_PARAMS[p.case];
    let bad = false;
    for (const [k, v] of Object.entries(p)) {
      if (k === 'case' || v === undefined || allowed.includes(k)) continue;
      issue(k, `${k} does not apply to case ${p.case} (its parameters: ${allowed.join(', ')})`);
      bad = true;
    }
    const desc = caseOf(p.case);
    const given = (k: string): boolean => p[k] !== undefined;
    // ranges of the given values (defaults are in range by construction)
    for (const d of desc.params) {
      const v = p[d.name];
      if (typeof v !== 'number') continue;
      const problem = rangeProblem(d, v);
      if (problem) {
        issue(d.name, problem);
        bad = true;
      }
    }
    if (bad) return;
    // the rules between parameters, on the values in effect
    const value = (k: string): number | undefined => {
      const v = p[k] ?? desc.params.find((d) => d.name === k)?.default;
      return typeof v === 'number' ? v : undefined;
    };
    for (const r of desc.rules) {
      const v = value(r.param);
      if (v === undefined || v === 0) continue; // computed default, or a keyword ("whole")
      const ops = r.of.map((o) => (typeof o === 'number' ? { text: human(o), v: o } : { text: `${o} ${human(value(o) ?? 0)}`, v: value(o) ?? 0 }));
      const opsText = r.of.map((o, i) => (typeof o === 'number' ? ops[i]!.text : PARAMS.get(o)?.type === 'size' ? ops[i]!.text : `${o} ${ops[i]!.v}`));
      const why = r.why ? ` (${r.why})` : '';
      const where = given(r.param) ? r.param : (r.of.find((o): o is string => typeof o === 'string' && given(o)) ?? r.param);
      if (r.kind === 'divides') {
        const c = ops[0]!.v;
        if (v > c || c % v !== 0) issue(where, `${r.param} ${human(v)} does not divide ${opsText[0]} (a power of two up to it${PARAMS.get(r.param)?.keyword ? `, or "${PARAMS.get(r.param)!.keyword}"` : ''})`);
      } else if (r.kind === 'multiple_of') {
        const m = ops.reduce((acc, o) => (acc / gcd(acc, o.v)) * o.v, 1);
        if (v % m !== 0) issue(where, `${r.param} ${human(v)} is not a multiple of ${human(m)}${r.of.length > 1 || typeof r.of[0] === 'string' ? ` (${opsText.join(' and ')})` : ''}${why}`);
      } else {
        const need = ops.reduce((acc, o) => acc * o.v, 1);
        if (v < need) issue(where, `${r.param} (${human(v)}) is too small for ${opsText.join(' × ')}${why}`);
      }
    }
  })
  .transform((raw) => {
    const p = raw as Record<string, unknown> & { case: PcowBenchCaseName };
    const out: Record<string, unknown> = { case: p.case };
    for (const d of caseOf(p.case).params) {
      if (d.name === 'rw') {
        const rw = String(d.default);
        out.write = p.write ?? rw.endsWith('write');
        out.random = p.random ?? rw.startsWith('rand');
        continue;
      }
      const v = p[d.name] ?? d.default;
      if (v !== null && v !== undefined) out[d.name] = v;
    }
    // A unit of the whole cluster is "whole": 64K at 64 KiB clusters is the same cell.
    if (out.cow_unit === 0 || (typeof out.cow_unit === 'number' && out.cow_unit === out.cluster_size)) out.cow_unit = 'whole';
    return out as unknown as PcowBenchParamsT;
  });

export type PcowBenchParamsInput = { case: PcowBenchCaseName } & Partial<Record<string, string | number | boolean>>;
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
  rounds?: number;
  stripes?: number;
  variant?: 'copy' | 'mmap' | 'both';
  faults?: number;
  virtual_size?: number;
}

const PREFIX = 'pcow-bench';
export const imageName = `${PREFIX}.img`;

/** Whether a run of these parameters leaves an image to inspect. */
export function keepsImage(p: PcowBenchParamsT): boolean {
  return caseOf(p.case).image && !(p.case === 'steady' && p.backend === 'raw');
}

/** argv (without the binary) of one case run, in pcow-bench's parameter order. Pure. */
export function pcowBenchArgs(p: PcowBenchParamsT, dir: string, keep?: string): string[] {
  const a = ['case', p.case, '--dir', dir];
  const v = p as unknown as Record<string, unknown>;
  for (const d of caseOf(p.case).params) {
    if (d.name === 'rw') {
      if (p.write !== undefined || p.random !== undefined) a.push(d.flag, `${p.random === false ? '' : 'rand'}${p.write ? 'write' : 'read'}`);
    } else if (v[d.name] !== undefined) a.push(d.flag, String(v[d.name]));
  }
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
