// `run --shard I/N`: a deterministic, balanced part of the matrix. A cell is the unit (all its
// repetitions and warmups run in one shard, so one host measures a cell and hosts never mix
// inside it). Cells are placed by their hash (tool + resolved parameters), never by their place
// in the file, so reordering the YAML's workloads or axis values moves no cell to another shard.
import type { Cell } from './cell.ts';
import { parseDuration } from './units.ts';
import { CellFilterError } from './errors.ts';

export interface ShardSpec {
  /** 1-based. */
  index: number;
  count: number;
}

/** "2/4" → { index: 2, count: 4 }; anything else is a CellFilterError naming what is wrong. */
export function parseShard(text: string): ShardSpec {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  if (!m) throw new CellFilterError(`--shard ${JSON.stringify(text)}: expected I/N such as 1/2 (shard I of N, 1-based)`);
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (count < 1) throw new CellFilterError(`--shard ${text}: N must be at least 1`);
  if (index < 1 || index > count) throw new CellFilterError(`--shard ${text}: I must be between 1 and ${count}`);
  return { index, count };
}

/**
 * An estimate of one repetition's duration in ms from the parameters every time-bound tool has
 * (fio/qemu-img-bench `runtime`, pcow-bench `seconds`), else 1 s. Only relative sizes matter.
 */
export function estimatedCostMs(cell: Pick<Cell, 'params'>): number {
  const p = cell.params;
  try {
    if (typeof p.runtime === 'string' || typeof p.runtime === 'number') return Math.max(1, parseDuration(p.runtime));
    if (typeof p.seconds === 'number') return Math.max(1, p.seconds * 1000);
  } catch {
    // An unparseable value was already reported by validation; fall back to the default.
  }
  return 1000;
}

/**
 * Every cell's shard (1-based), by longest processing time first: cells sorted by estimated cost
 * (descending), ties by hash, each placed on the shard with the least cost so far (ties: the
 * lowest index). Equal costs make this round-robin over the hash order: shard sizes then differ
 * by at most one cell.
 */
export function assignShards(cells: readonly Cell[], count: number): Map<string, number> {
  const order = [...cells].sort((a, b) => estimatedCostMs(b) - estimatedCostMs(a) || (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0));
  const load = new Array<number>(count).fill(0);
  const out = new Map<string, number>();
  for (const c of order) {
    let best = 0;
    for (let i = 1; i < count; i++) if ((load[i] as number) < (load[best] as number)) best = i;
    load[best] = (load[best] as number) + estimatedCostMs(c);
    out.set(c.hash, best + 1);
  }
  return out;
}

/** The cells of shard `spec`, in the plan's order. */
export function shardCells(cells: readonly Cell[], spec: ShardSpec): Cell[] {
  const where = assignShards(cells, spec.count);
  return cells.filter((c) => where.get(c.hash) === spec.index);
}
