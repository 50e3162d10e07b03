// What a run directory holds. Layout:
//   results/<experiment>/<run-id>/
//     manifest.json        Manifest (provenance, status)
//     experiment.yaml      the input file as it was read
//     config.json          the validated, defaulted ExperimentConfig
//     cells.json           CellRecord[] (every cell of the plan with its status), rewritten atomically
//     samples.jsonl        one SampleRow per line, appended as repetitions finish
//     samples.csv          the same rows flattened (written at the end and by `report`)
//     cells/<cell-id>/rep-<n>/   raw tool output of one repetition
//     cells/<cell-id>/warmup-<n>/  raw output of an unmeasured warmup run (listed in cells.json)
//     report/index.html, report/<figure>.{vl.json,svg,png}
import type { AxisScalar } from '../experiment/schema.ts';

export type CellStatus = 'pending' | 'ok' | 'failed' | 'timeout' | 'interrupted';

/** One run of a cell's workload: when, how it ended, its raw output. */
interface RunRecord {
  status: Exclude<CellStatus, 'pending'>;
  startedAt: string;
  endedAt: string;
  durationMs: number;
  /** Paths relative to the run directory. */
  rawFiles: string[];
  reason?: string;
}

/** A measured repetition: durationMs is prepare + the measured run + cleanup; warmup runs are
 * not included (see CellRecord.warmups). */
export interface RepetitionRecord extends RunRecord {
  repetition: number;
}

/** An unmeasured run before a cell's first repetition: its own time and output (under
 * cells/<cell-id>/warmup-<n>/), no samples. */
export interface WarmupRecord extends RunRecord {
  /** 0-based index of the warmup run. */
  warmup: number;
}

export interface CellRecord {
  index: number;
  id: string;
  hash: string;
  workload: string;
  tool: string;
  axes: Record<string, AxisScalar>;
  params: Record<string, unknown>;
  /** ok only when every repetition is ok. */
  status: CellStatus;
  reason?: string;
  repetitions: RepetitionRecord[];
  /** Warmup runs done before the first measured repetition (absent when the experiment has none). */
  warmups?: WarmupRecord[];
  details?: Record<string, unknown>;
}

export interface SampleRow {
  cell: string;
  cellHash: string;
  workload: string;
  tool: string;
  repetition: number;
  metric: string;
  value: number;
  unit: string;
  axes: Record<string, AxisScalar>;
  params: Record<string, unknown>;
}

export interface SetupStep {
  action: string;
  detail: string;
  ok: boolean;
  at: string;
}

export interface Manifest {
  schema: 1;
  runId: string;
  status: 'running' | 'completed' | 'failed' | 'interrupted';
  command: string[];
  experiment: { name: string; description: string; file: string; sha256: string };
  harness: { version: string; commit: string | null; dirty: boolean | null; node: string };
  startedAt: string;
  endedAt: string | null;
  /** Which accelerator guests of this run use (the boot probe's verdict); none when no cell boots a guest. */
  accelerator: 'kvm' | 'tcg' | 'none';
  pm: { kind: 'emulated' | 'fsdax'; path: string; device?: string };
  /** The host probe (src/host) as it was at the start of the run. */
  host: unknown;
  /** Tool versions, read after setup (so including what the run installed). */
  tools: Record<string, string | null>;
  /** When `tools` was read. */
  toolsProbedAt?: string;
  setup: SetupStep[];
  build: {
    native?: { sourceHash: string; durationMs: number };
    /** The patched QEMU the run's guests use (src/build/qemu.ts): what the binary is made of. */
    qemu?: { binary: string; binaryHash: string; sourceVersion: string; patchHash: string; nativeHash: string; cached: boolean; seconds: number };
    /** redis+pmem-AOF (src/build/redis.ts): its label, what redis-server is made of and needs. */
    redis?: { label: string; binary: string; binaryHash: string; version: string; sourceVersion: string; patchHash: string; needed: string[]; cached: boolean; seconds: number };
  };
  cells: { total: number; ok: number; failed: number; timeout: number; interrupted: number; pending: number };
  error?: string;
  /** The experiment profile the run used (`run --profile`; ci by default when the file has profiles). */
  profile?: string;
  /** `run --shard I/N`: which part of the matrix this run is (src/experiment/shard.ts). */
  shard?: ShardRecord;
  /** A merged run (`pcow-harness merge`): each shard's own provenance and cells. */
  shards?: MergedShard[];
  /** Test-only knobs set in the environment (PCOW_TEST_*): a run measured with one is not a baseline. */
  testKnobs?: Record<string, string>;
}

export interface ShardRecord {
  /** 1-based. */
  index: number;
  count: number;
  /** --only filters applied before sharding (every shard of a run must use the same). */
  only: string[];
  /** Cells in the whole (filtered) plan, and the hashes of this shard's cells. */
  planCells: number;
  cells: string[];
}

/** One shard of a merged run: where it ran and with what. */
export interface MergedShard {
  index: number;
  runId: string;
  /** The shard's run directory as given to merge. */
  source: string;
  status: Manifest['status'];
  accelerator: Manifest['accelerator'];
  pm: Manifest['pm'];
  host: unknown;
  tools: Manifest['tools'];
  build: Manifest['build'];
  harness: Manifest['harness'];
  startedAt: string;
  endedAt: string | null;
  testKnobs?: Record<string, string>;
  /** Hashes of the cells this shard measured. */
  cells: string[];
}
