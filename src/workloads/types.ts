// The contract every workload (fio, qemu-img bench, pcow-bench, later redis) implements.
// The lifecycle calls prepare → run (warmup runs, then measured runs) → cleanup for each cell.
import type { z } from 'zod';

/** One measured value. Units are SI-ish strings: "IOPS", "B/s", "ns", "us", "s", "bytes", "count". */
export interface Sample {
  metric: string;
  value: number;
  unit: string;
}

export interface MetricInfo {
  name: string;
  unit: string;
  /** Which direction is an improvement; used by claim checks and the regression gate. */
  better: 'higher' | 'lower';
  description: string;
}

/** Where a workload may put files and what it may run. */
export interface WorkloadContext {
  /** Stable id of the cell (e.g. "fio-dax.bs=4k.rw=randread"). */
  cellId: string;
  /** Directory on the (emulated or real) PM for this cell's data files; created, empty at prepare. */
  dataDir: string;
  /** Directory under the run directory where raw tool output must be written. */
  outDir: string;
  /** Repetition index (0-based); -1 for a warmup run. */
  repetition: number;
  /** Aborted on timeout, SIGINT/SIGTERM: pass it to every child process. */
  signal: AbortSignal;
  /** Paths of the native tools built by the harness (pcow-img, pcow-bench), absolute. */
  nativeBin: string;
  log: (line: string) => void;
}

export interface WorkloadResult {
  samples: Sample[];
  /** Raw output files written under ctx.outDir (relative names), kept as evidence. */
  rawFiles: string[];
  /** Tool-specific facts worth keeping with the cell (e.g. image state from pcow-img info). */
  details?: Record<string, unknown>;
}

export interface Workload<P = Record<string, unknown>> {
  /** The `tool:` value in YAML that selects this workload. */
  tool: string;
  description: string;
  /** zod schema of the parameters (strict: unknown keys are errors). */
  params: z.ZodType<P>;
  metrics: MetricInfo[];
  /** Executables it needs on the host, with the Debian package that provides each. */
  requires: { command: string; debianPackage: string }[];
  /** Needs the native build (pcow-img, pcow-bench): the build stage runs make -C native first. */
  needsNative?: boolean;
  /** Boots a guest: the run probes KVM and records the accelerator. */
  needsGuest?: boolean;
  prepare(ctx: WorkloadContext, params: P): Promise<void>;
  run(ctx: WorkloadContext, params: P): Promise<WorkloadResult>;
  cleanup(ctx: WorkloadContext, params: P): Promise<void>;
}

// Workloads are registered heterogeneously; their params are validated by their own schema first.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the registry erases P on purpose
export type AnyWorkload = Workload<any>;
