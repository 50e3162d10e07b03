// A cell is one point of the experiment matrix: one workload with fully resolved parameters.
import type { AxisScalar } from './schema.ts';

export interface Cell {
  /** Position in the expanded matrix (0-based), stable for a given file. */
  index: number;
  /** Human-readable, file-name safe id: "<workload>" + ".<axis>=<value>" for every axis. */
  id: string;
  /** Name of the entry under `workloads:`. */
  workload: string;
  /** The workload's `tool:` (fio, qemu-img-bench, pcow-bench, ...). */
  tool: string;
  /** This cell's value of every matrix axis (including `workload` when it is an axis). */
  axes: Record<string, AxisScalar>;
  /** Workload parameters after axis overrides, validated by the tool's schema. */
  params: Record<string, unknown>;
  /** sha256 (hex, 16 chars) of {tool, params}: the resume key. */
  hash: string;
}
