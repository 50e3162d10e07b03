// What makes two measurements of a cell comparable: the accelerator, the PM kind, the QEMU binary,
// the libpcow/native sources, the kind of host, and the experiment file. A merged run (shards on
// several hosts) has these per shard, so they are read per cell.
import { createHash } from 'node:crypto';
import type { Manifest } from '../results/types.ts';
import { pick } from '../report/html.ts';

export interface CellProvenance {
  accelerator: string;
  pm: string;
  qemu: string;
  libpcow: string;
  /** CPU model, CPU count and memory: what performance depends on (not the host's name). */
  host: string;
  experiment: string;
  /** Shown, not compared: runners of one kind in a fleet have different names and kernels move. */
  hostname: string;
  kernel: string;
}

/** The fields compare refuses to mix, in the order they are reported. */
export const COMPARED_FIELDS = ['accelerator', 'pm', 'qemu', 'libpcow', 'host', 'experiment'] as const;
export type ComparedField = (typeof COMPARED_FIELDS)[number];

/** "Intel Xeon ... , 2 CPUs, 8 GiB" from a host probe (src/host/probe.ts HostProbe). */
export function hostKind(host: unknown): string {
  const cpu = pick(host, ['cpu.model']) ?? 'unknown CPU';
  const cores = pick(host, ['cpu.cores']) ?? '?';
  const mem = Number(pick(host, ['memoryBytes']));
  // Rounded to whole GiB: the kernel's MemTotal moves by a few MiB between boots.
  const gib = Number.isFinite(mem) && mem > 0 ? `${Math.round(mem / 2 ** 30)} GiB` : '? GiB';
  return `${cpu}, ${cores} CPUs, ${gib}`;
}

/** A short file-name-safe key of a host: its name and a hash of its kind. */
export function hostKey(host: unknown): string {
  const name = (pick(host, ['hostname']) ?? 'unknown-host').replace(/[^A-Za-z0-9._-]/g, '_');
  return `${name}-${createHash('sha256').update(hostKind(host)).digest('hex').slice(0, 8)}`;
}

interface ProvenanceSource {
  accelerator: string;
  pm: { kind: string };
  host: unknown;
  build: Manifest['build'];
}

function fromSource(s: ProvenanceSource, experiment: string): CellProvenance {
  return {
    accelerator: s.accelerator,
    pm: s.pm.kind,
    qemu: s.build.qemu?.binaryHash ?? 'none',
    libpcow: s.build.native?.sourceHash ?? 'none',
    host: hostKind(s.host),
    experiment,
    hostname: pick(s.host, ['hostname']) ?? 'unknown',
    kernel: pick(s.host, ['kernel.release']) ?? 'unknown',
  };
}

/** The provenance of the measurement of cell `hash` in a run (its shard's, in a merged run). */
export function cellProvenance(m: Manifest, hash: string): CellProvenance {
  const shard = m.shards?.find((s) => s.cells.includes(hash));
  return fromSource(shard ?? m, m.experiment.sha256);
}

export interface ProvenanceDifference {
  field: ComparedField;
  base: string;
  new: string;
  /** Ids of the cells (present in both runs) whose measurements differ in this field. */
  cells: string[];
}

/** Differences of the compared fields over the cells both runs have, one entry per field and value pair. */
export function provenanceDifferences(
  base: Manifest,
  next: Manifest,
  cells: readonly { id: string; hash: string }[],
): ProvenanceDifference[] {
  const out = new Map<string, ProvenanceDifference>();
  const check = (a: CellProvenance, b: CellProvenance, id: string): void => {
    for (const field of COMPARED_FIELDS) {
      if (a[field] === b[field]) continue;
      const k = JSON.stringify([field, a[field], b[field]]);
      const d = out.get(k) ?? { field, base: a[field], new: b[field], cells: [] };
      d.cells.push(id);
      out.set(k, d);
    }
  };
  for (const c of cells) check(cellProvenance(base, c.hash), cellProvenance(next, c.hash), c.id);
  // Without common cells the runs' own provenance is compared (the cell lists are reported anyway).
  if (cells.length === 0) check(cellProvenance(base, ''), cellProvenance(next, ''), '(run)');
  return [...out.values()];
}
