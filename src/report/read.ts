// Reads a run directory for the report, checking every record it uses so that a hand-edited or
// truncated file gives an error naming the file, the line and the field, not a blank page.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { Experiment, type ExperimentConfig } from '../experiment/schema.ts';
import type { CellRecord, Manifest, SampleRow } from '../results/types.ts';

const Axes = z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]));
const Status = z.enum(['pending', 'ok', 'failed', 'timeout', 'interrupted']);

const ManifestSchema = z.looseObject({
  schema: z.literal(1),
  runId: z.string(),
  status: z.enum(['running', 'completed', 'failed', 'interrupted']),
  command: z.array(z.string()),
  experiment: z.looseObject({ name: z.string(), description: z.string(), file: z.string(), sha256: z.string() }),
  harness: z.looseObject({ version: z.string(), commit: z.string().nullable(), dirty: z.boolean().nullable(), node: z.string() }),
  startedAt: z.string(),
  endedAt: z.string().nullable(),
  // Grows with the harness (kvm, tcg, none); shown as written.
  accelerator: z.string(),
  pm: z.looseObject({ kind: z.enum(['emulated', 'fsdax']), path: z.string(), device: z.string().optional() }),
  host: z.unknown(),
  tools: z.record(z.string(), z.string().nullable()),
  setup: z.array(z.looseObject({ action: z.string(), detail: z.string(), ok: z.boolean(), at: z.string() })),
  cells: z.looseObject({
    total: z.number(), ok: z.number(), failed: z.number(), timeout: z.number(), interrupted: z.number(), pending: z.number(),
  }),
  error: z.string().optional(),
});

const Repetition = z.looseObject({
  repetition: z.number().int(),
  status: Status.exclude(['pending']),
  startedAt: z.string(),
  endedAt: z.string(),
  durationMs: z.number(),
  rawFiles: z.array(z.string()),
  reason: z.string().optional(),
});

const CellSchema = z.looseObject({
  index: z.number().int(),
  id: z.string().min(1),
  hash: z.string(),
  workload: z.string(),
  tool: z.string(),
  axes: Axes,
  params: z.record(z.string(), z.unknown()),
  status: Status,
  reason: z.string().optional(),
  repetitions: z.array(Repetition),
  details: z.record(z.string(), z.unknown()).optional(),
});

const SampleSchema = z.looseObject({
  cell: z.string(),
  cellHash: z.string(),
  workload: z.string(),
  tool: z.string(),
  repetition: z.number().int(),
  metric: z.string().min(1),
  value: z.number().refine(Number.isFinite, 'expected a finite number'),
  unit: z.string(),
  axes: Axes,
  params: z.record(z.string(), z.unknown()),
});

function issues(e: z.ZodError): string {
  return e.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`)
    .join('; ');
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`${file}: cannot read (${code === 'ENOENT' ? 'no such file' : (code ?? String(e))})`);
  }
}

function parseJsonFile(file: string): unknown {
  const text = readText(file);
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

function check<T>(schema: z.ZodType<T>, value: unknown, where: string): T {
  const r = schema.safeParse(value);
  if (!r.success) throw new Error(`${where}: ${issues(r.error)}`);
  return r.data;
}

export interface RunData {
  dir: string;
  manifest: Manifest;
  config: ExperimentConfig;
  cells: CellRecord[];
  samples: SampleRow[];
  /** Things the reader tolerated (a torn last line, a missing samples file), for the page. */
  warnings: string[];
}

/** samples.jsonl → rows; a torn final line (the harness was killed mid-append) is dropped with a warning. */
export function parseSamples(text: string, file: string, warnings: string[]): SampleRow[] {
  const lines = text.split('\n');
  const rows: SampleRow[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${file}:${i + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(line) as unknown;
    } catch (e) {
      // Only the last line may be torn, and then it has no newline after it.
      if (i === lines.length - 1) {
        warnings.push(`${where}: torn last line dropped (the run was cut off while appending)`);
        return;
      }
      throw new Error(`${where}: not a JSON sample row (${(e as Error).message})`);
    }
    rows.push(check(SampleSchema, value, where) as SampleRow);
  });
  return rows;
}

export function readRun(runDir: string): RunData {
  const dir = path.resolve(runDir);
  if (!existsSync(dir)) throw new Error(`${runDir}: no such run directory`);
  const at = (name: string): string => path.join(dir, name);
  const warnings: string[] = [];
  // Checked field by field above for what the report reads; the rest of Manifest is passed through.
  const manifest = check(ManifestSchema, parseJsonFile(at('manifest.json')), at('manifest.json')) as unknown as Manifest;
  const config = check(Experiment, parseJsonFile(at('config.json')), at('config.json'));
  const cells = check(z.array(CellSchema), parseJsonFile(at('cells.json')), at('cells.json')) as CellRecord[];
  const samplesFile = at('samples.jsonl');
  let samples: SampleRow[] = [];
  if (existsSync(samplesFile)) samples = parseSamples(readText(samplesFile), samplesFile, warnings);
  else warnings.push('samples.jsonl is missing: no repetition finished');
  const known = new Set(cells.map((c) => c.id));
  const strays = [...new Set(samples.filter((s) => !known.has(s.cell)).map((s) => s.cell))];
  if (strays.length) warnings.push(`samples.jsonl has rows of cells not in cells.json: ${strays.join(', ')}`);
  return { dir, manifest, config, cells, samples, warnings };
}
