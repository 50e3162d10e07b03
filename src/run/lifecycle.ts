// One run of an experiment: plan → setup → build → per cell repetition (prepare → warmups → run
// → collect) → teardown → report. Teardown always runs (finally): on a cell error, a setup or
// build error, a timeout, SIGINT or SIGTERM.
// A failing cell is recorded with its status and reason and the run goes on.
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import { loadExperiment } from '../experiment/load.ts';
import { describeCells, filterCells } from '../experiment/matrix.ts';
import { shardCells, type ShardSpec } from '../experiment/shard.ts';
import { parseDuration } from '../experiment/units.ts';
import type { Cell } from '../experiment/cell.ts';
import type { ExperimentConfig } from '../experiment/schema.ts';
import { probeHost, probeTools } from '../host/probe.ts';
import { rememberAccel, rememberedProbe } from '../vm/accel.ts';
import { setupHost, type HostSession } from '../host/setup.ts';
import { ensureCommands, step } from '../host/install.ts';
import { buildNative, nativeBinDir } from '../build/native.ts';
import { getWorkload, registryLookup } from '../workloads/registry.ts';
import type { AnyWorkload, WorkloadContext } from '../workloads/types.ts';
import { harnessInfo, qemuProvenance, redisProvenance } from '../results/provenance.ts';
import { repoRoot } from '../util/paths.ts';
import { RunDir, readJson } from '../results/rundir.ts';
import { ConfigError } from '../util/errors.ts';
import { existsSync } from 'node:fs';
import type { CellStatus, Manifest, RepetitionRecord, SampleRow, SetupStep } from '../results/types.ts';
import { writeReport } from '../report/index.ts';
import { killAllChildren } from '../util/proc.ts';
import { Progress, type ProgressSink } from './progress.ts';

export interface RunRequest {
  file: string;
  dryRun?: boolean;
  /** Continue this run directory instead of starting a new one. */
  resume?: string;
  only?: string[];
  /** Default: <repo>/results. */
  resultsRoot?: string;
  /** Where progress and log lines go (default: stderr). */
  sink?: ProgressSink;
  /** Where the dry-run listing and the final summary go (default: stdout). */
  print?: (text: string) => void;
  /** Skip the HTML/chart report (tests that only look at samples). */
  skipReport?: boolean;
  /** The argv that started the run, for the manifest. */
  command?: string[];
  /** Run only this shard of the (filtered) matrix. */
  shard?: ShardSpec;
  /** The experiment's profile (default: `ci` when it has profiles; a resumed run keeps its own). */
  profile?: string;
}

export interface RunOutcome {
  exitCode: number;
  runDir?: string;
  status?: Manifest['status'];
}

/** One unit of work: one repetition of one cell. */
interface Unit {
  cell: Cell;
  repetition: number;
}

/** Interleaved: repetition r of every cell before r+1, so drift spreads over all backends alike. */
export function planUnits(cells: Cell[], repetitions: number, order: ExperimentConfig['order']): Unit[] {
  const units: Unit[] = [];
  if (order === 'interleaved') {
    for (let r = 0; r < repetitions; r++) for (const cell of cells) units.push({ cell, repetition: r });
  } else {
    for (const cell of cells) for (let r = 0; r < repetitions; r++) units.push({ cell, repetition: r });
  }
  return units;
}

/** PCOW_TEST_* variables (test-only knobs such as PCOW_TEST_SLOW): recorded in the manifest. */
function testKnobs(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[0].startsWith('PCOW_TEST_') && e[1] !== undefined));
}

function now(): string {
  return new Date().toISOString();
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Reject as soon as the signal aborts, even if the promise never settles (a wedged workload). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

class Interrupted extends Error {
  constructor(readonly sig: NodeJS.Signals) {
    super(`interrupted by ${sig}`);
  }
}
class CellTimeout extends Error {}
type Verdict = { status: Exclude<CellStatus, 'pending'>; reason: string };
/** A warmup run failed: the repetition takes its status (a warmup timeout is a timeout). */
class WarmupFailed extends Error {
  constructor(
    index: number,
    readonly verdict: Verdict,
  ) {
    super(`warmup ${index + 1}: ${verdict.reason}`);
  }
}

export async function runExperiment(req: RunRequest): Promise<RunOutcome> {
  const print = req.print ?? ((t: string) => process.stdout.write(t));
  // A resumed run keeps the profile it was started with: another one would be other cells.
  let profile = req.profile;
  if (req.resume && existsSync(path.join(req.resume, 'manifest.json'))) {
    const prev = await readJson<Manifest>(path.join(req.resume, 'manifest.json')).catch(() => undefined);
    if (prev?.profile !== undefined) {
      if (profile !== undefined && profile !== prev.profile) throw new ConfigError(`--resume ${req.resume}: that run used profile ${prev.profile}, not ${profile}; resume it with --profile ${prev.profile} (or without --profile)`);
      profile = prev.profile;
    }
  }
  const loaded = await loadExperiment(req.file, { ...registryLookup(), profile });
  const config = loaded.config;
  const planned = req.only && req.only.length > 0 ? filterCells(loaded.cells, req.only) : loaded.cells;
  const cells = req.shard ? shardCells(planned, req.shard) : planned;
  const shardNote = req.shard ? ` (shard ${req.shard.index}/${req.shard.count} of ${planned.length} cells)` : '';

  if (req.dryRun) {
    print(`${config.name}${loaded.profile ? ` (profile ${loaded.profile})` : ''}: ${cells.length} cells${shardNote} × ${config.repetitions} repetitions (+${config.warmup} warmup)\n`);
    print(`${describeCells(cells)}\n`);
    return { exitCode: 0 };
  }

  const workloads = new Map<string, AnyWorkload>();
  for (const c of cells) {
    const w = getWorkload(c.tool);
    if (!w) throw new Error(`internal: tool ${c.tool} passed validation but has no workload`);
    workloads.set(c.tool, w);
  }
  const needsGuest = [...workloads.values()].some((w) => w.needsGuest);
  const needsNative = [...workloads.values()].some((w) => w.needsNative);

  // Signals: the first SIGINT/SIGTERM aborts the run (children are killed through the signal,
  // teardown still runs); a second one kills every child at once and exits.
  const runAbort = new AbortController();
  let caught: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (caught) {
      killAllChildren('SIGKILL');
      process.exit(sig === 'SIGINT' ? 130 : 143);
    }
    caught = sig;
    runAbort.abort(new Interrupted(sig));
  };
  const onInt = (): void => onSignal('SIGINT');
  const onTerm = (): void => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);

  const progress = new Progress(cells.length * config.repetitions, req.sink);
  let rd: RunDir | undefined;
  let session: HostSession | undefined;
  let failure: { error: unknown } | undefined;
  try {
    // A run directory to continue is checked before anything slow or host-changing happens.
    if (req.resume) {
      // A shard continues as the same shard: another plan would mix cells of other shards into it.
      const prev = existsSync(path.join(req.resume, 'manifest.json')) ? await readJson<Manifest>(path.join(req.resume, 'manifest.json')).catch(() => undefined) : undefined;
      const was = prev?.shard ? `${prev.shard.index}/${prev.shard.count}` : undefined;
      const now = req.shard ? `${req.shard.index}/${req.shard.count}` : undefined;
      if (prev && was !== now) {
        throw new ConfigError(`--resume ${req.resume}: that run is ${was ? `shard ${was}` : 'not a shard'}; resume it ${was ? `with --shard ${was}` : 'without --shard'}`);
      }
      rd = await RunDir.resume(req.resume, { config, experimentText: loaded.text, cells });
    }
    // Installs first: the probe below then records the versions of what this run uses.
    const reqs = [...workloads.values()].flatMap((w) => w.requires);
    const installSteps = await ensureCommands(reqs, { signal: runAbort.signal, log: (l) => progress.log(l) });
    progress.log(`${config.name}: probing the host${needsGuest ? ' (including a KVM boot probe)' : ''}`);
    let remembered = false;
    const [probe, harness] = await Promise.all([
      // A run installs what its probes need (as root), as it does for its workloads.
      // A guest run records the boot probe's verdict; one remembered for this host boot (doctor,
      // an earlier run) is used instead of booting the probe guests again.
      (needsGuest ? rememberedProbe() : Promise.resolve(null)).then((accelerator) => {
        remembered = accelerator !== null;
        return probeHost({ skipKvm: !needsGuest, accelerator: accelerator ?? undefined, signal: runAbort.signal, install: true, log: (l) => progress.log(l) });
      }),
      harnessInfo(),
    ]);
    if (needsGuest && !remembered) await rememberAccel({ kvm: probe.kvm, tcg: probe.tcg, accelerator: probe.accelerator, kernel: probe.guestKernel }).catch((e: unknown) => progress.log(`warning: the accelerator verdict was not remembered: ${(e as Error).message}`));
    const manifestBase = {
      schema: 1 as const,
      command: req.command ?? ['run', req.file],
      experiment: {
        name: config.name,
        description: config.description,
        file: path.relative(repoRoot, loaded.file) || loaded.file,
        sha256: loaded.sha256,
      },
      harness,
      startedAt: now(),
      accelerator: needsGuest ? probe.accelerator : ('none' as const),
      pm: { kind: config.host.pm.kind, path: '' },
      host: probe,
      tools: probe.tools,
      setup: [] as SetupStep[],
      build: {},
      ...(req.shard
        ? { shard: { index: req.shard.index, count: req.shard.count, only: req.only ?? [], planCells: planned.length, cells: cells.map((c) => c.hash) } }
        : {}),
      ...(Object.keys(testKnobs()).length ? { testKnobs: testKnobs() } : {}),
      ...(loaded.profile ? { profile: loaded.profile } : {}),
    };
    if (rd) {
      // A resumed run keeps its original start and setup record; the probe is refreshed.
      rd.manifest.host = probe;
      rd.manifest.tools = probe.tools;
      rd.manifest.command = manifestBase.command;
      rd.manifest.experiment = manifestBase.experiment;
      rd.manifest.harness = harness;
      if (manifestBase.shard) rd.manifest.shard = manifestBase.shard;
      if (manifestBase.testKnobs) rd.manifest.testKnobs = manifestBase.testKnobs;
    } else {
      rd = await RunDir.create({
        resultsRoot: req.resultsRoot ?? path.join(repoRoot, 'results'),
        config,
        experimentText: loaded.text,
        manifest: manifestBase,
        cells,
      });
    }
    const runDir = rd;
    progress.log(`run directory: ${path.relative(process.cwd(), runDir.dir) || runDir.dir}`);

    // setup
    runDir.manifest.setup.push(...installSteps, ...probe.actions.map((a) => step('probe', a)));
    session = await setupHost(config.host, config.name, { signal: runAbort.signal, log: (l) => progress.log(l) });
    runDir.manifest.setup.push(...session.steps);
    runDir.manifest.pm = session.pm;
    // The versions of the tools as the cells will find them: after every install of the setup.
    runDir.manifest.tools = await probeTools(runAbort.signal);
    runDir.manifest.toolsProbedAt = now();
    await runDir.saveManifest();

    // build
    if (needsNative) {
      const b = await buildNative({ signal: runAbort.signal, log: (l) => progress.log(l) });
      runDir.manifest.build.native = { sourceHash: b.sourceHash, durationMs: b.durationMs };
      await runDir.saveManifest();
    }
    if (config.build.qemu) {
      const { ensureQemu } = await import('../build/qemu.ts');
      const q = await ensureQemu({ source: config.build.qemu.source, signal: runAbort.signal, log: (l) => progress.log(l) });
      runDir.manifest.setup.push(...q.steps);
      runDir.manifest.build.qemu = qemuProvenance(q);
      await runDir.saveManifest();
    }
    if (config.build.redis) {
      const { ensureRedis } = await import('../build/redis.ts');
      const r = await ensureRedis({ source: config.build.redis.source, signal: runAbort.signal, log: (l) => progress.log(l) });
      runDir.manifest.setup.push(...r.steps);
      runDir.manifest.build.redis = redisProvenance(r);
      await runDir.saveManifest();
    }

    // cells
    const units = planUnits(cells, config.repetitions, config.order);
    const todo = units.filter((u) => !runDir.hasRepetition(u.cell.hash, u.repetition));
    progress.skip(units.length - todo.length);
    if (units.length > todo.length) progress.log(`resume: ${units.length - todo.length} repetitions already done, ${todo.length} to run`);
    const timeoutMs = parseDuration(config.timeout);
    const warmedUp = new Set<string>();
    // Measured runs never overlap: one at a time, whatever the machine.
    const serial = pLimit(1);
    const pmPath = session.pm.path;
    for (const unit of todo) {
      if (runAbort.signal.aborted) break;
      await serial(() =>
        runUnit({
          unit,
          config,
          workload: workloads.get(unit.cell.tool) as AnyWorkload,
          rd: runDir,
          pmPath,
          runSignal: runAbort.signal,
          timeoutMs,
          warmup: warmedUp.has(unit.cell.hash) || unit.repetition > 0 ? 0 : config.warmup,
          progress,
        }),
      );
      warmedUp.add(unit.cell.hash);
    }
  } catch (e) {
    if (rd) rd.manifest.error = errorText(e);
    // An interruption is an outcome (exit 130/143), not an error to rethrow.
    if (!(e instanceof Interrupted) && !runAbort.signal.aborted) failure = { error: e };
  } finally {
    // Teardown and the record of the run happen whatever went wrong above.
    await finish();
  }
  if (failure) throw failure.error;
  // Exit 0 only when the run completed and every cell is ok: CI can gate on it.
  const allOk = rd !== undefined && rd.cells.every((c) => c.status === 'ok');
  return {
    exitCode: caught ? (caught === 'SIGINT' ? 130 : 143) : rd?.manifest.status === 'completed' && allOk ? 0 : 1,
    runDir: rd?.dir,
    status: rd?.manifest.status,
  };

  async function finish(): Promise<void> {
    try {
      if (session) {
        const steps = await session.teardown();
        rd?.manifest.setup.push(...steps);
      }
    } catch (e) {
      progress.log(`teardown failed: ${errorText(e)}`);
      if (rd) rd.manifest.error = `${rd.manifest.error ? `${rd.manifest.error}; ` : ''}teardown: ${errorText(e)}`;
    }
    progress.stop();
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    if (!rd) return;
    rd.manifest.endedAt = now();
    const failedCells = rd.cells.filter((c) => c.status !== 'ok' && c.status !== 'pending').length;
    rd.manifest.status = caught ? 'interrupted' : rd.manifest.error ? 'failed' : 'completed';
    await rd.saveManifest();
    await rd.writeCsv();
    if (!req.skipReport) {
      try {
        const r = await writeReport(rd.dir);
        print(`report: ${r.index}\n`);
      } catch (e) {
        print(`report failed: ${errorText(e)}\n`);
      }
    }
    const c = rd.manifest.cells;
    print(
      `${rd.manifest.status}: ${c.ok}/${c.total} cells ok` +
        (failedCells ? `, ${failedCells} not ok (see cells.json)` : '') +
        (c.pending ? `, ${c.pending} pending (continue with --resume ${rd.dir})` : '') +
        `\nresults: ${rd.dir}\n`,
    );
  }
}

async function runUnit(a: {
  unit: Unit;
  config: ExperimentConfig;
  workload: AnyWorkload;
  rd: RunDir;
  pmPath: string;
  runSignal: AbortSignal;
  timeoutMs: number;
  warmup: number;
  progress: Progress;
}): Promise<void> {
  const { cell, repetition } = a.unit;
  const label = `${cell.id} rep ${repetition + 1}/${a.config.repetitions}`;
  a.progress.start(label);
  const dataDir = path.join(a.pmPath, cell.id);
  const ctx = (out: string, rep: number, signal: AbortSignal): WorkloadContext => ({
    cellId: cell.id,
    dataDir,
    outDir: out,
    repetition: rep,
    signal,
    nativeBin: nativeBinDir,
    log: (l) => a.progress.log(`  ${cell.id}: ${l}`),
  });
  /**
   * Run one step within `ms`; running out throws CellTimeout. The repetition (prepare + measured
   * run) shares one bound of `timeout`; each warmup run has a bound of its own.
   */
  const bounded = async <T>(ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> => {
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(new CellTimeout(`timed out after ${a.config.timeout}`)), Math.max(1, ms));
    const signal = AbortSignal.any([a.runSignal, timeout.signal]);
    try {
      return await untilAborted(fn(signal), signal);
    } catch (e) {
      if (timeout.signal.aborted && !a.runSignal.aborted) throw timeout.signal.reason as CellTimeout;
      throw e;
    } finally {
      clearTimeout(timer);
    }
  };
  const verdict = (e: unknown): Verdict =>
    a.runSignal.aborted
      ? { status: 'interrupted', reason: errorText(a.runSignal.reason) }
      : e instanceof CellTimeout
        ? { status: 'timeout', reason: e.message }
        : { status: 'failed', reason: errorText(e) };
  const relative = (dir: string, files: string[]): string[] => files.map((f) => path.relative(a.rd.dir, path.resolve(dir, f)));

  const startedAt = now();
  const t0 = Date.now();
  let warmupMs = 0;
  let status: Exclude<CellStatus, 'pending'> = 'ok';
  let reason: string | undefined;
  let samples: SampleRow[] = [];
  let rawFiles: string[] = [];
  let details: Record<string, unknown> | undefined;
  const outDir = await a.rd.repDir(cell, repetition);
  try {
    await rm(dataDir, { recursive: true, force: true });
    await mkdir(dataDir, { recursive: true });
    const p0 = Date.now();
    await bounded(a.timeoutMs, (signal) => a.workload.prepare(ctx(outDir, repetition, signal), cell.params));
    const left = a.timeoutMs - (Date.now() - p0);
    // Warmups: unmeasured, each with its own record, time bound and output directory.
    for (let w = 0; w < a.warmup; w++) {
      const wdir = await a.rd.repDir(cell, w, true);
      const wStartedAt = now();
      const w0 = Date.now();
      let wFiles: string[] = [];
      let failed: Verdict | undefined;
      try {
        const r = await bounded(a.timeoutMs, (signal) => a.workload.run(ctx(wdir, -1, signal), cell.params));
        wFiles = relative(wdir, r.rawFiles);
      } catch (e) {
        failed = verdict(e);
      }
      const ms = Date.now() - w0;
      warmupMs += ms;
      await a.rd.recordWarmup(cell, {
        warmup: w,
        status: failed?.status ?? 'ok',
        startedAt: wStartedAt,
        endedAt: now(),
        durationMs: ms,
        rawFiles: wFiles,
        ...(failed ? { reason: failed.reason } : {}),
      });
      if (failed) throw new WarmupFailed(w, failed);
    }
    const result = await bounded(left, (signal) => a.workload.run(ctx(outDir, repetition, signal), cell.params));
    rawFiles = relative(outDir, result.rawFiles);
    details = result.details;
    samples = result.samples.map((s) => ({
      cell: cell.id,
      cellHash: cell.hash,
      workload: cell.workload,
      tool: cell.tool,
      repetition,
      metric: s.metric,
      value: s.value,
      unit: s.unit,
      axes: cell.axes,
      params: cell.params,
    }));
    const bad = samples.find((s) => !Number.isFinite(s.value));
    if (bad) throw new Error(`${a.workload.tool} reported a non-numeric ${bad.metric} (${String(bad.value)})`);
  } catch (e) {
    samples = [];
    const v = e instanceof WarmupFailed ? { status: e.verdict.status, reason: e.message } : verdict(e);
    status = v.status;
    reason = v.reason;
  }
  try {
    // Cleanup runs with a fresh bound: the cell's own signal may already be aborted.
    const fresh = AbortSignal.timeout(60_000);
    await untilAborted(a.workload.cleanup(ctx(outDir, repetition, fresh), cell.params), fresh);
  } catch (e) {
    a.progress.log(`  ${cell.id}: cleanup failed: ${errorText(e)}`);
  }
  await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
  const rep: RepetitionRecord = {
    repetition,
    status,
    startedAt,
    endedAt: now(),
    durationMs: Date.now() - t0 - warmupMs,
    rawFiles,
    ...(reason ? { reason } : {}),
  };
  await a.rd.recordRepetition(cell, rep, samples, a.config.repetitions, details);
  a.progress.finish(label, status, reason);
}
