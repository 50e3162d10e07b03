import { mkdtemp, readFile, rm, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse } from 'csv-parse/sync';
import type { Cell } from '../../src/experiment/cell.ts';
import type { ExperimentConfig } from '../../src/experiment/schema.ts';
import { RunDir, readSamples, cellStatus } from '../../src/results/rundir.ts';
import type { Manifest, SampleRow } from '../../src/results/types.ts';

const cells: Cell[] = [
  { index: 0, id: 'w.bs=4096', workload: 'w', tool: 'fake', axes: { bs: 4096 }, params: { bs: 4096 }, hash: 'aaaaaaaaaaaaaaaa' },
  { index: 1, id: 'w.bs=1048576', workload: 'w', tool: 'fake', axes: { bs: 1048576 }, params: { bs: 1048576 }, hash: 'bbbbbbbbbbbbbbbb' },
];
const config = { name: 'unit', description: '', repetitions: 2 } as unknown as ExperimentConfig;
const manifest: Omit<Manifest, 'runId' | 'cells' | 'status' | 'endedAt'> = {
  schema: 1,
  command: ['run', 'x.yaml'],
  experiment: { name: 'unit', description: '', file: 'x.yaml', sha256: 'f'.repeat(64) },
  harness: { version: '0.1.0', commit: null, dirty: null, node: process.version },
  startedAt: new Date().toISOString(),
  accelerator: 'none',
  pm: { kind: 'emulated', path: '/dev/shm/x' },
  host: {},
  tools: {},
  setup: [],
  build: {},
};

function rows(cell: Cell, repetition: number, value: number): SampleRow[] {
  return [
    { cell: cell.id, cellHash: cell.hash, workload: 'w', tool: 'fake', repetition, metric: 'iops', value, unit: 'IOPS', axes: cell.axes, params: cell.params },
  ];
}
const rep = (repetition: number, status: 'ok' | 'failed' = 'ok') => ({
  repetition,
  status,
  startedAt: 't0',
  endedAt: 't1',
  durationMs: 5,
  rawFiles: [],
  ...(status === 'ok' ? {} : { reason: 'boom, "quoted"' }),
});

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'pcow-rundir-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('run directory', () => {
  it('records repetitions, cell status and a CSV with one column per axis', async () => {
    const rd = await RunDir.create({ resultsRoot: root, config, experimentText: 'name: unit\n', manifest, cells });
    expect(rd.dir.startsWith(path.join(root, 'unit'))).toBe(true);
    await rd.recordRepetition(cells[0]!, rep(0), rows(cells[0]!, 0, 100), 2);
    expect(rd.cell(cells[0]!.hash).status).toBe('pending');
    await rd.recordRepetition(cells[0]!, rep(1), rows(cells[0]!, 1, 110), 2);
    expect(rd.cell(cells[0]!.hash).status).toBe('ok');
    await rd.recordRepetition(cells[1]!, rep(0, 'failed'), [], 2);
    expect(rd.cell(cells[1]!.hash).status).toBe('failed');
    expect(rd.cell(cells[1]!.hash).reason).toBe('boom, "quoted"');
    await rd.saveManifest();
    const m = JSON.parse(await readFile(path.join(rd.dir, 'manifest.json'), 'utf8')) as Manifest;
    expect(m.cells).toEqual({ total: 2, ok: 1, failed: 1, timeout: 0, interrupted: 0, pending: 0 });

    const csvFile = await rd.writeCsv();
    const table = parse(await readFile(csvFile, 'utf8'), { columns: true }) as Record<string, string>[];
    expect(table).toHaveLength(2);
    expect(table[0]).toMatchObject({ cell: 'w.bs=4096', repetition: '0', metric: 'iops', value: '100', unit: 'IOPS', bs: '4096' });
    expect(JSON.parse(table[1]!.parameters!)).toEqual({ bs: 4096 });
  });

  it('samples.csv names every column once: the workload axis is the workload column, a clashing axis gets axis_<name>', async () => {
    const two: Cell[] = [
      { index: 0, id: 'a.unit=x', workload: 'a', tool: 'fake', axes: { workload: 'a', unit: 'x', bs: 1 }, params: { unit: 'x', bs: 1 }, hash: 'dddddddddddddddd' },
      { index: 1, id: 'b.unit=y', workload: 'b', tool: 'fake', axes: { workload: 'b', unit: 'y', bs: 2 }, params: { unit: 'y', bs: 2 }, hash: 'eeeeeeeeeeeeeeee' },
    ];
    const rd = await RunDir.create({ resultsRoot: root, config, experimentText: 'x', manifest, cells: two });
    for (const c of two) {
      const row: SampleRow = { cell: c.id, cellHash: c.hash, workload: c.workload, tool: 'fake', repetition: 0, metric: 'iops', value: 1, unit: 'IOPS', axes: c.axes, params: c.params };
      await rd.recordRepetition(c, rep(0), [row], 2);
    }
    const text = await readFile(await rd.writeCsv(), 'utf8');
    const header = (parse(text) as string[][])[0]!;
    expect(header).toEqual(['cell', 'cell_hash', 'workload', 'tool', 'repetition', 'metric', 'value', 'unit', 'axis_unit', 'bs', 'parameters']);
    const table = parse(text, { columns: true }) as Record<string, string>[];
    expect(table.map((r) => [r.workload, r.unit, r.axis_unit, r.bs])).toEqual([['a', 'IOPS', 'x', '1'], ['b', 'IOPS', 'y', '2']]);
  });

  it('resume keeps only successful repetitions of cells whose hash is unchanged', async () => {
    const rd = await RunDir.create({ resultsRoot: root, config, experimentText: 'x', manifest, cells });
    await rd.recordRepetition(cells[0]!, rep(0), rows(cells[0]!, 0, 1), 2);
    await rd.recordRepetition(cells[0]!, rep(1, 'failed'), [], 2);
    await rd.recordRepetition(cells[1]!, rep(0), rows(cells[1]!, 0, 2), 2);
    // A changed cell (new hash) starts over; its old samples are dropped.
    const changed: Cell[] = [cells[0]!, { ...cells[1]!, params: { bs: 1 }, hash: 'cccccccccccccccc' }];
    const again = await RunDir.resume(rd.dir, { config, experimentText: 'x', cells: changed });
    expect(again.hasRepetition(cells[0]!.hash, 0)).toBe(true);
    expect(again.hasRepetition(cells[0]!.hash, 1)).toBe(false);
    expect(again.hasRepetition('cccccccccccccccc', 0)).toBe(false);
    const samples = await readSamples(again.dir);
    expect(samples.map((s) => [s.cellHash, s.repetition])).toEqual([[cells[0]!.hash, 0]]);
  });

  it('tolerates a torn last line in samples.jsonl but not corruption in the middle', async () => {
    const rd = await RunDir.create({ resultsRoot: root, config, experimentText: 'x', manifest, cells });
    await rd.recordRepetition(cells[0]!, rep(0), rows(cells[0]!, 0, 1), 2);
    await appendFile(path.join(rd.dir, 'samples.jsonl'), '{"cell":"w.b');
    expect(await readSamples(rd.dir)).toHaveLength(1);
    await appendFile(path.join(rd.dir, 'samples.jsonl'), '\n{"cell":1}\n');
    await expect(readSamples(rd.dir)).rejects.toThrow(/samples.jsonl:2: not a JSON sample row/);
  });

  it('refuses to resume something that is not a run directory, or another experiment', async () => {
    await expect(RunDir.resume(root, { config, experimentText: 'x', cells })).rejects.toThrow(/not a run directory/);
    const rd = await RunDir.create({ resultsRoot: root, config, experimentText: 'x', manifest, cells });
    const other = { ...config, name: 'other' } as ExperimentConfig;
    await expect(RunDir.resume(rd.dir, { config: other, experimentText: 'x', cells })).rejects.toThrow(/experiment "unit", not "other"/);
  });

  it('derives cell status from its repetitions', () => {
    const rec = { repetitions: [rep(0), rep(1)] } as never;
    expect(cellStatus(rec, 2)).toBe('ok');
    expect(cellStatus(rec, 3)).toBe('pending');
  });
});
