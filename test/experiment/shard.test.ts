// run --shard I/N: each cell in exactly one shard, shards balanced, placement independent of the
// order the YAML lists workloads and axis values in.
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import type { Cell } from '../../src/experiment/cell.ts';
import { CellFilterError } from '../../src/experiment/errors.ts';
import { expandMatrix } from '../../src/experiment/matrix.ts';
import { Experiment } from '../../src/experiment/schema.ts';
import { assignShards, estimatedCostMs, parseShard, shardCells } from '../../src/experiment/shard.ts';
import { fakeLookup, fakeTools } from './fake-workloads.ts';

function cellsOf(yaml: string): Cell[] {
  return expandMatrix(Experiment.parse(parseYaml(yaml)), fakeLookup, fakeTools);
}

const EXP = `name: s
workloads:
  dax: { tool: fio, engine: mmap, runtime: 1s }
  blk: { tool: fio, engine: psync, runtime: 1s }
matrix:
  axes:
    workload: [dax, blk]
    bs: [4k, 8k, 16k, 64k, 1m]
    rw: [randread, randwrite, read]
`;
// The same experiment with workloads and axis values in another order.
const REORDERED = `name: s
workloads:
  blk: { tool: fio, engine: psync, runtime: 1s }
  dax: { tool: fio, engine: mmap, runtime: 1s }
matrix:
  axes:
    rw: [read, randwrite, randread]
    bs: [1m, 64k, 4k, 16k, 8k]
    workload: [blk, dax]
`;

const idsOf = (cells: readonly Cell[]): string[] => cells.map((c) => `${c.workload}/${c.hash}`).sort();

describe('--shard I/N', () => {
  it('parses I/N and names what is wrong', () => {
    expect(parseShard('2/3')).toEqual({ index: 2, count: 3 });
    for (const bad of ['0/2', '3/2', '1/0', 'a/b', '1-2', '']) expect(() => parseShard(bad), bad).toThrow(CellFilterError);
    expect(() => parseShard('3/2')).toThrow(/--shard 3\/2: I must be between 1 and 2/);
  });

  it('puts every cell in exactly one shard, with sizes within one cell of each other', () => {
    const cells = cellsOf(EXP);
    expect(cells).toHaveLength(30);
    for (const n of [1, 2, 3, 4, 7, 30, 31]) {
      const parts = Array.from({ length: n }, (_, i) => shardCells(cells, { index: i + 1, count: n }));
      expect(idsOf(parts.flat()), `N=${n}`).toEqual(idsOf(cells));
      const sizes = parts.map((p) => p.length);
      expect(Math.max(...sizes) - Math.min(...sizes), `N=${n}: ${sizes.join(',')}`).toBeLessThanOrEqual(1);
    }
  });

  it('is the same for the same file and does not move cells when the YAML is reordered', () => {
    const a = cellsOf(EXP);
    const b = cellsOf(REORDERED);
    expect(idsOf(a)).toEqual(idsOf(b));
    for (const n of [2, 3, 5]) {
      for (let i = 1; i <= n; i++) {
        expect(idsOf(shardCells(a, { index: i, count: n }))).toEqual(idsOf(shardCells(b, { index: i, count: n })));
        expect(shardCells(a, { index: i, count: n })).toEqual(shardCells(cellsOf(EXP), { index: i, count: n }));
      }
    }
  });

  it('balances by the estimated cost (runtime) when cells differ in length', () => {
    const cells = cellsOf(`name: s
workloads:
  long: { tool: fio, runtime: 60s }
  short: { tool: fio, runtime: 1s }
matrix:
  axes:
    workload: [long, short]
    bs: [4k, 8k, 16k, 32k]
`);
    expect(estimatedCostMs(cells[0]!)).toBeGreaterThan(estimatedCostMs(cells[7]!));
    const where = assignShards(cells, 2);
    const cost = (i: number): number => cells.filter((c) => where.get(c.hash) === i).reduce((s, c) => s + estimatedCostMs(c), 0);
    // 4 long cells of 60 and 4 short of 1: two long and two short per shard.
    expect(cost(1)).toBe(cost(2));
    for (const i of [1, 2]) expect(cells.filter((c) => where.get(c.hash) === i && c.workload === 'long')).toHaveLength(2);
  });
});
