// The run directory: created at the start of a run, updated after every repetition so that a
// crash or SIGKILL leaves a consistent record that `--resume` can continue from.
import { createHash, randomBytes } from 'node:crypto';
import { appendFile, mkdir, readFile, rename, writeFile, open } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'csv-stringify/sync';
import type { Cell } from '../experiment/cell.ts';
import type { ExperimentConfig } from '../experiment/schema.ts';
import { ConfigError } from '../util/errors.ts';
import type { CellRecord, Manifest, RepetitionRecord, SampleRow, WarmupRecord } from './types.ts';

export const MANIFEST = 'manifest.json';
export const CELLS = 'cells.json';
export const SAMPLES_JSONL = 'samples.jsonl';
export const SAMPLES_CSV = 'samples.csv';
export const CONFIG = 'config.json';
export const EXPERIMENT_COPY = 'experiment.yaml';

/** Write a file so that readers see either the old or the new content, never a torn one. */
export async function writeFileAtomic(file: string, data: string | Buffer): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
}

export async function readJson<T>(file: string): Promise<T> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

/** A new run id: UTC time (sortable) + a few random hex digits (two runs in one second). */
export function newRunId(now = new Date()): string {
  const t = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${t}-${randomBytes(2).toString('hex')}`;
}

export function cellRecordFor(cell: Cell): CellRecord {
  return {
    index: cell.index,
    id: cell.id,
    hash: cell.hash,
    workload: cell.workload,
    tool: cell.tool,
    axes: cell.axes,
    params: cell.params,
    status: 'pending',
    repetitions: [],
  };
}

/** ok when every wanted repetition is ok; otherwise the worst status seen; pending while incomplete. */
export function cellStatus(rec: CellRecord, repetitions: number): CellRecord['status'] {
  const done = new Map<number, RepetitionRecord>();
  for (const r of rec.repetitions) if (r.repetition >= 0) done.set(r.repetition, r);
  const statuses = [...done.values()].map((r) => r.status);
  for (const bad of ['interrupted', 'timeout', 'failed'] as const) if (statuses.includes(bad)) return bad;
  return done.size >= repetitions ? 'ok' : 'pending';
}

export class RunDir {
  private constructor(
    readonly dir: string,
    public manifest: Manifest,
    public cells: CellRecord[],
  ) {}

  /** Start a fresh run directory under `resultsRoot/<experiment>/<run-id>`. */
  static async create(opts: {
    resultsRoot: string;
    config: ExperimentConfig;
    experimentText: string;
    manifest: Omit<Manifest, 'runId' | 'cells' | 'status' | 'endedAt'>;
    cells: Cell[];
  }): Promise<RunDir> {
    const runId = newRunId();
    const dir = path.resolve(opts.resultsRoot, opts.config.name, runId);
    await mkdir(dir, { recursive: true });
    const manifest: Manifest = {
      ...opts.manifest,
      runId,
      status: 'running',
      endedAt: null,
      cells: { total: 0, ok: 0, failed: 0, timeout: 0, interrupted: 0, pending: 0 },
    };
    const rd = new RunDir(dir, manifest, opts.cells.map(cellRecordFor));
    await writeFile(path.join(dir, EXPERIMENT_COPY), opts.experimentText);
    await writeFile(path.join(dir, CONFIG), `${JSON.stringify(opts.config, null, 2)}\n`);
    await writeFile(path.join(dir, SAMPLES_JSONL), '');
    await rd.saveCells();
    await rd.saveManifest();
    return rd;
  }

  /**
   * Reopen a run directory to continue it. The plan is the current experiment file's: cells whose
   * hash finished repetitions there keep them; new or changed cells start from scratch.
   */
  static async resume(dir: string, opts: { config: ExperimentConfig; experimentText: string; cells: Cell[] }): Promise<RunDir> {
    const abs = path.resolve(dir);
    if (!existsSync(path.join(abs, MANIFEST))) {
      throw new ConfigError(`--resume ${dir}: not a run directory (no ${MANIFEST} in ${abs})`);
    }
    const manifest = await readJson<Manifest>(path.join(abs, MANIFEST));
    if (manifest.schema !== 1 || typeof manifest.runId !== 'string') {
      throw new ConfigError(`--resume ${dir}: ${MANIFEST} is not a pcow run manifest (schema ${String(manifest.schema)})`);
    }
    if (manifest.experiment?.name !== opts.config.name) {
      throw new ConfigError(
        `--resume ${dir}: that run is of experiment "${manifest.experiment?.name}", not "${opts.config.name}"`,
      );
    }
    const old = existsSync(path.join(abs, CELLS)) ? await readJson<CellRecord[]>(path.join(abs, CELLS)) : [];
    const byHash = new Map(old.map((c) => [c.hash, c]));
    const cells = opts.cells.map((cell) => {
      const rec = cellRecordFor(cell);
      const prev = byHash.get(cell.hash);
      // Only successful repetitions carry over: a failed or interrupted one is run again.
      if (prev) rec.repetitions = prev.repetitions.filter((r) => r.status === 'ok');
      if (prev?.warmups && rec.repetitions.length > 0) rec.warmups = prev.warmups;
      rec.status = cellStatus(rec, opts.config.repetitions);
      return rec;
    });
    // Samples of repetitions that will be redone must not be counted twice.
    const keep = new Set(cells.flatMap((c) => c.repetitions.map((r) => `${c.hash}/${r.repetition}`)));
    const samples = await readSamples(abs);
    const kept = samples.filter((s) => keep.has(`${s.cellHash}/${s.repetition}`));
    await writeFileAtomic(path.join(abs, SAMPLES_JSONL), kept.map((s) => `${JSON.stringify(s)}\n`).join(''));
    manifest.status = 'running';
    manifest.endedAt = null;
    delete manifest.error;
    const rd = new RunDir(abs, manifest, cells);
    await writeFile(path.join(abs, EXPERIMENT_COPY), opts.experimentText);
    await writeFile(path.join(abs, CONFIG), `${JSON.stringify(opts.config, null, 2)}\n`);
    await rd.saveCells();
    await rd.saveManifest();
    return rd;
  }

  cell(hash: string): CellRecord {
    const c = this.cells.find((x) => x.hash === hash);
    if (!c) throw new Error(`internal: no cell with hash ${hash} in ${this.dir}`);
    return c;
  }

  hasRepetition(hash: string, repetition: number): boolean {
    return this.cell(hash).repetitions.some((r) => r.repetition === repetition && r.status === 'ok');
  }

  /** Directory for one repetition's raw output (created). Warmups go to warmup-<n>. */
  async repDir(cell: Cell, repetition: number, warmup = false): Promise<string> {
    const d = path.join(this.dir, 'cells', cell.id, warmup ? `warmup-${repetition}` : `rep-${repetition}`);
    await mkdir(d, { recursive: true });
    return d;
  }

  /** Record one warmup run of a cell (replacing an earlier record of the same index). */
  async recordWarmup(cell: Cell, w: WarmupRecord): Promise<void> {
    const rec = this.cell(cell.hash);
    rec.warmups = [...(rec.warmups ?? []).filter((x) => x.warmup !== w.warmup), w].sort((a, b) => a.warmup - b.warmup);
    await this.saveCells();
  }

  /** Record one finished repetition: samples first (append), then the cell record (atomic). */
  async recordRepetition(
    cell: Cell,
    rep: RepetitionRecord,
    samples: SampleRow[],
    repetitions: number,
    details?: Record<string, unknown>,
  ): Promise<void> {
    if (samples.length > 0) {
      await appendFile(path.join(this.dir, SAMPLES_JSONL), samples.map((s) => `${JSON.stringify(s)}\n`).join(''));
    }
    const rec = this.cell(cell.hash);
    rec.repetitions = rec.repetitions.filter((r) => r.repetition !== rep.repetition);
    rec.repetitions.push(rep);
    rec.repetitions.sort((a, b) => a.repetition - b.repetition);
    if (details) rec.details = { ...rec.details, ...details };
    rec.status = cellStatus(rec, repetitions);
    rec.reason = rep.status === 'ok' ? rec.reason : rep.reason;
    await this.saveCells();
  }

  async saveCells(): Promise<void> {
    await writeFileAtomic(path.join(this.dir, CELLS), `${JSON.stringify(this.cells, null, 2)}\n`);
  }

  async saveManifest(): Promise<void> {
    const counts = { total: this.cells.length, ok: 0, failed: 0, timeout: 0, interrupted: 0, pending: 0 };
    for (const c of this.cells) counts[c.status]++;
    this.manifest.cells = counts;
    await writeFileAtomic(path.join(this.dir, MANIFEST), `${JSON.stringify(this.manifest, null, 2)}\n`);
  }

  async writeCsv(): Promise<string> {
    return writeSamplesCsv(this.dir);
  }
}

export async function readSamples(dir: string): Promise<SampleRow[]> {
  const file = path.join(dir, SAMPLES_JSONL);
  if (!existsSync(file)) return [];
  const text = await readFile(file, 'utf8');
  const rows: SampleRow[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      rows.push(JSON.parse(line) as SampleRow);
    } catch {
      // A torn last line (the harness was killed mid-append) is dropped; anything else is corruption.
      if (i < text.split('\n').length - 2) throw new Error(`${file}:${i + 1}: not a JSON sample row`);
    }
  });
  return rows;
}

/** The fixed columns of samples.csv, before the axis columns. */
export const CSV_FIXED_COLUMNS = ['cell', 'cell_hash', 'workload', 'tool', 'repetition', 'metric', 'value', 'unit'] as const;

/**
 * samples.csv: one row per {cell, repetition, metric}; every matrix axis becomes its own column
 * (so a spreadsheet can pivot on it) and the full parameters are kept as JSON in the last column.
 * The `workload` axis is the `workload` column already; an axis named like another fixed column
 * gets the column `axis_<name>`, so every column name is unique.
 */
export async function writeSamplesCsv(dir: string): Promise<string> {
  const rows = await readSamples(dir);
  const fixed: readonly string[] = CSV_FIXED_COLUMNS;
  const axisNames = new Set<string>();
  for (const r of rows) for (const k of Object.keys(r.axes)) if (k !== 'workload') axisNames.add(k);
  const axes = [...axisNames];
  const column = (a: string): string => (fixed.includes(a) || a === 'parameters' ? `axis_${a}` : a);
  const header = [...fixed, ...axes.map(column), 'parameters'];
  const body = rows.map((r) => [
    r.cell,
    r.cellHash,
    r.workload,
    r.tool,
    r.repetition,
    r.metric,
    r.value,
    r.unit,
    ...axes.map((a) => (r.axes[a] === undefined ? '' : String(r.axes[a]))),
    JSON.stringify(r.params),
  ]);
  const file = path.join(dir, SAMPLES_CSV);
  await writeFileAtomic(file, stringify([header, ...body]));
  return file;
}

export function sha256(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}
