// Synthetic run directories with known values, for the compare tests: every cell's samples are
// given, so the right verdict is known in advance.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Experiment } from '../../src/experiment/schema.ts';
import type { CellRecord, Manifest, SampleRow } from '../../src/results/types.ts';

export const HOST = {
  hostname: 'optane-1',
  cpu: { model: 'Intel Xeon Gold 6230', cores: 40, flags: {} },
  memoryBytes: 192 * 2 ** 30,
  kernel: { release: '6.1.0-18-amd64', version: '#1', cmdline: '' },
};

export interface SyntheticCell {
  id: string;
  /** metric → one value per repetition */
  values: Record<string, number[]>;
}

/** Deterministic "noise": value * (1 + spread * u), u in [-1, 1] from a fixed sequence. */
export function noisy(center: number, n: number, spread: number, seed = 1): number[] {
  let s = seed;
  return Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return center * (1 + spread * ((s / 2147483648) * 2 - 1));
  });
}

export function makeRun(
  cells: SyntheticCell[],
  manifest: Partial<Manifest> = {},
  opts: { root?: string; name?: string } = {},
): string {
  const root = opts.root ?? mkdtempSync(path.join(tmpdir(), 'pcow-compare-'));
  const dir = path.join(root, opts.name ?? 'run');
  mkdirSync(dir, { recursive: true });
  const config = Experiment.parse({ name: 'synthetic', repetitions: 3, workloads: { w: { tool: 'fio' } }, matrix: { axes: { bs: ['4k', '64k', '1m'] } } });
  const records: CellRecord[] = [];
  const samples: SampleRow[] = [];
  cells.forEach((c, index) => {
    const n = Math.max(...Object.values(c.values).map((v) => v.length));
    const hash = `h-${c.id}`;
    records.push({
      index,
      id: c.id,
      hash,
      workload: 'w',
      tool: 'fio',
      axes: { bs: c.id },
      params: { bs: c.id },
      // A cell without values failed (as the run stage records one).
      ...(n > 0 ? { status: 'ok' as const } : { status: 'failed' as const, reason: 'fio exited 1' }),
      repetitions: Array.from({ length: n }, (_, r) => ({ repetition: r, status: 'ok' as const, startedAt: 't', endedAt: 't', durationMs: 1, rawFiles: [] })),
    });
    for (const [metric, vals] of Object.entries(c.values)) {
      vals.forEach((value, repetition) =>
        samples.push({ cell: c.id, cellHash: hash, workload: 'w', tool: 'fio', repetition, metric, value, unit: metric === 'iops' ? 'IOPS' : 'ns', axes: { bs: c.id }, params: { bs: c.id } }),
      );
    }
  });
  const m: Manifest = {
    schema: 1,
    runId: opts.name ?? 'run',
    status: 'completed',
    command: ['run'],
    experiment: { name: 'synthetic', description: '', file: 'x.yaml', sha256: 'a'.repeat(64) },
    harness: { version: '0', commit: null, dirty: null, node: 'v20' },
    startedAt: '2026-01-01T00:00:00Z',
    endedAt: '2026-01-01T00:10:00Z',
    accelerator: 'kvm',
    pm: { kind: 'fsdax', path: '/mnt/pmem' },
    host: HOST,
    tools: {},
    setup: [],
    build: { native: { sourceHash: 'n'.repeat(64), durationMs: 1 }, qemu: { binary: '/q', binaryHash: 'q'.repeat(64), sourceVersion: '7.2', patchHash: 'p', nativeHash: 'n', cached: true, seconds: 1 } },
    cells: { total: cells.length, ok: cells.length, failed: 0, timeout: 0, interrupted: 0, pending: 0 },
    ...manifest,
  };
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m, null, 2));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  writeFileSync(path.join(dir, 'cells.json'), JSON.stringify(records, null, 2));
  writeFileSync(path.join(dir, 'samples.jsonl'), samples.map((s) => `${JSON.stringify(s)}\n`).join(''));
  return dir;
}
