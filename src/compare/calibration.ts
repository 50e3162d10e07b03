// Noise calibration: the same cells run A/A several times back to back; the change of each cell's
// mean between every two of those runs is pure noise, and its 95th percentile (|change|) is this
// host's noise floor for that cell and metric. `compare` uses it as the practical threshold.
//
// Stored in the cache, one file per host and experiment:
//   <cache>/calibration/<hostname>-<hash of the host kind>/<experiment>.json
// holding entries per cell hash (a later calibration of other cells adds to the file).
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { cacheRoot } from '../host/cache.ts';
import { readRun, type RunData } from '../report/read.ts';
import { groupSamples, quantile } from '../report/stats.ts';
import { writeFileAtomic } from '../results/rundir.ts';
import { hostKey, hostKind } from './provenance.ts';
import { pick } from '../report/html.ts';

export interface MetricNoise {
  /** 95th percentile of |change of the mean| between two A/A runs, in percent. */
  p95AbsChangePct: number;
  maxAbsChangePct: number;
  /** Every |change| measured (one per pair of runs). */
  absChangesPct: number[];
}

export interface CellNoise {
  id: string;
  runs: string[];
  calibratedAt: string;
  metrics: Record<string, MetricNoise>;
}

export interface Calibration {
  schema: 1;
  host: { key: string; hostname: string; kind: string };
  experiment: { name: string; sha256: string };
  updatedAt: string;
  /** cell hash → its noise. */
  cells: Record<string, CellNoise>;
}

/** Where the calibration of `experiment` on `host` (a host probe) is stored. */
export function calibrationPath(host: unknown, experiment: string): string {
  return path.join(cacheRoot(), 'calibration', hostKey(host), `${experiment}.json`);
}

export function readCalibration(file: string): Calibration {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, 'utf8')) as unknown;
  } catch (e) {
    throw new Error(`${file}: not a readable calibration (${(e as Error).message})`);
  }
  const c = data as Partial<Calibration>;
  if (c.schema !== 1 || typeof c.cells !== 'object' || c.cells === null) throw new Error(`${file}: not a pcow noise calibration (schema ${String(c.schema)})`);
  return c as Calibration;
}

/** The stored calibration for a host and experiment, if any. */
export function loadCalibration(host: unknown, experiment: string): Calibration | undefined {
  const file = calibrationPath(host, experiment);
  return existsSync(file) ? readCalibration(file) : undefined;
}

/**
 * The practical threshold from a calibration: the cell's own noise for the metric, else the 95th
 * percentile over every calibrated cell's changes of that metric; undefined when neither exists.
 */
export function noiseThreshold(cal: Calibration, cellHash: string, metric: string): { pct: number; source: 'cell' | 'metric' } | undefined {
  const own = cal.cells[cellHash]?.metrics[metric];
  if (own) return { pct: own.p95AbsChangePct, source: 'cell' };
  const pooled = Object.values(cal.cells).flatMap((c) => c.metrics[metric]?.absChangesPct ?? []);
  if (pooled.length === 0) return undefined;
  return { pct: quantile([...pooled].sort((a, b) => a - b), 0.95), source: 'metric' };
}

/** Noise per cell and metric from A/A runs of the same cells (at least two runs). */
export function noiseFromRuns(runs: readonly RunData[]): Record<string, CellNoise> {
  if (runs.length < 2) throw new Error(`calibration needs at least 2 runs, got ${runs.length}`);
  const means = runs.map((r) => {
    const m = new Map<string, number>();
    for (const g of groupSamples(r.samples, ['cellHash', 'metric'])) m.set(`${String(g.key.cellHash)}\u0000${String(g.key.metric)}`, g.values.reduce((s, v) => s + v, 0) / g.values.length);
    return m;
  });
  const out: Record<string, CellNoise> = {};
  const at = new Date().toISOString();
  for (const cell of runs[0]?.cells ?? []) {
    const metrics: Record<string, MetricNoise> = {};
    const names = new Set([...(means[0]?.keys() ?? [])].filter((k) => k.startsWith(`${cell.hash}\u0000`)).map((k) => k.slice(cell.hash.length + 1)));
    for (const metric of names) {
      const changes: number[] = [];
      for (let i = 0; i < means.length; i++) {
        for (let j = i + 1; j < means.length; j++) {
          const a = means[i]?.get(`${cell.hash}\u0000${metric}`);
          const b = means[j]?.get(`${cell.hash}\u0000${metric}`);
          if (a !== undefined && b !== undefined && a !== 0) changes.push(Math.abs(100 * (b / a - 1)));
        }
      }
      if (changes.length === 0) continue;
      const sorted = [...changes].sort((x, y) => x - y);
      metrics[metric] = { p95AbsChangePct: quantile(sorted, 0.95), maxAbsChangePct: sorted[sorted.length - 1] as number, absChangesPct: changes };
    }
    if (Object.keys(metrics).length) out[cell.hash] = { id: cell.id, runs: runs.map((r) => r.manifest.runId), calibratedAt: at, metrics };
  }
  return out;
}

/** Adds the noise measured in `runDirs` (A/A runs of one experiment on this host) to its calibration file. */
export async function recordCalibration(runDirs: readonly string[], file?: string): Promise<{ file: string; calibration: Calibration; added: string[] }> {
  const runs = runDirs.map((d) => readRun(d));
  const first = runs[0];
  if (!first) throw new Error('recordCalibration: no runs');
  for (const r of runs) {
    if (r.manifest.experiment.sha256 !== first.manifest.experiment.sha256) throw new Error(`${r.dir}: another experiment file than ${first.dir} (an A/A calibration runs one configuration)`);
  }
  const target = file ?? calibrationPath(first.manifest.host, first.manifest.experiment.name);
  const prev = existsSync(target) ? readCalibration(target) : undefined;
  const cells = noiseFromRuns(runs);
  const calibration: Calibration = {
    schema: 1,
    host: { key: hostKey(first.manifest.host), hostname: pick(first.manifest.host, ['hostname']) ?? 'unknown', kind: hostKind(first.manifest.host) },
    experiment: { name: first.manifest.experiment.name, sha256: first.manifest.experiment.sha256 },
    updatedAt: new Date().toISOString(),
    cells: { ...(prev?.cells ?? {}), ...cells },
  };
  await mkdir(path.dirname(target), { recursive: true });
  await writeFileAtomic(target, `${JSON.stringify(calibration, null, 2)}\n`);
  return { file: target, calibration, added: Object.values(cells).map((c) => c.id) };
}
