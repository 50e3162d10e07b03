// A synthetic run directory as the run stage leaves it: manifest, config, cells (two failed),
// samples and raw files, for the report tests.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Experiment } from '../../src/experiment/schema.ts';
import type { CellRecord, Manifest, SampleRow } from '../../src/results/types.ts';
import type { MetricInfo } from '../../src/workloads/types.ts';

export const METRICS: MetricInfo[] = [
  { name: 'iops', unit: 'IOPS', better: 'higher', description: 'I/O operations per second' },
  { name: 'lat_mean', unit: 'us', better: 'lower', description: 'mean completion latency' },
];

export const metricInfo = (tool: string, metric: string): MetricInfo | undefined =>
  tool === 'fio' ? METRICS.find((m) => m.name === metric) : undefined;

export const FAILED_REASON = 'qemu-img exited 1: "Could not open <image>" & gave up';

export function makeRunDir(): { dir: string; cells: CellRecord[] } {
  const dir = mkdtempSync(path.join(tmpdir(), 'pcow-report-'));
  const config = Experiment.parse({
    name: 'synthetic',
    description: 'Synthetic <b>run</b> for the report & its "escaping" test',
    repetitions: 3,
    workloads: { fio: { tool: 'fio', rw: 'randread' } },
    matrix: { axes: { backend: ['raw', 'pcow', 'qcow2'], bs: [4096, 65536] } },
    figures: [
      { id: 'iops', title: 'Random read IOPS by backend', metric: 'iops', x: 'backend', color: 'bs' },
      { id: 'latency', title: 'Mean latency', metric: 'lat_mean', x: 'bs', color: 'backend', mark: 'line', yScale: 'log' },
      { id: 'qcow2-only', title: 'qcow2 alone', metric: 'iops', x: 'bs', where: { backend: 'qcow2' } },
    ],
  });
  const cells: CellRecord[] = [];
  const samples: SampleRow[] = [];
  const t0 = Date.parse('2025-01-02T03:04:05.000Z');
  let index = 0;
  for (const backend of ['raw', 'pcow', 'qcow2']) {
    for (const bs of [4096, 65536]) {
      const id = `fio.backend=${backend}.bs=${bs}`;
      const failed = backend === 'qcow2';
      const status = failed ? (bs === 4096 ? 'failed' : 'timeout') : 'ok';
      const reps = failed ? [0] : [0, 1, 2];
      const cell: CellRecord = {
        index: index++,
        id,
        hash: `hash${index}`,
        workload: 'fio',
        tool: 'fio',
        axes: { backend, bs },
        params: { rw: 'randread', bs },
        status,
        ...(failed ? { reason: bs === 4096 ? FAILED_REASON : 'timed out after 10m' } : {}),
        repetitions: reps.map((r) => ({
          repetition: r,
          status: status as 'ok' | 'failed' | 'timeout',
          startedAt: new Date(t0 + r * 60_000).toISOString(),
          endedAt: new Date(t0 + r * 60_000 + 30_000).toISOString(),
          durationMs: 30_000,
          rawFiles: [`cells/${id}/rep-${r}/fio.json`],
          ...(failed ? { reason: bs === 4096 ? FAILED_REASON : 'timed out after 10m' } : {}),
        })),
      };
      cells.push(cell);
      for (const r of reps) {
        mkdirSync(path.join(dir, 'cells', id, `rep-${r}`), { recursive: true });
        writeFileSync(path.join(dir, 'cells', id, `rep-${r}`, 'fio.json'), '{}\n');
        if (failed) continue;
        const base = (backend === 'raw' ? 41000 : 37000) * (bs === 4096 ? 1 : 0.28);
        const jitter = [1, 0.96, 1.05][r] as number;
        for (const [metric, value, unit] of [
          ['iops', base * jitter, 'IOPS'],
          ['lat_mean', (1e6 / base) * (2 - jitter), 'us'],
        ] as const) {
          samples.push({ cell: id, cellHash: cell.hash, workload: 'fio', tool: 'fio', repetition: r, metric, value, unit, axes: { backend, bs }, params: cell.params });
        }
      }
    }
  }
  const manifest: Manifest = {
    schema: 1,
    runId: '20250102T030405Z-ab12',
    status: 'completed',
    command: ['run', 'experiments/synthetic.yaml'],
    experiment: { name: 'synthetic', description: config.description, file: 'experiments/synthetic.yaml', sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' },
    harness: { version: '0.1.0', commit: '4ce5c3b0123456789abcdef0123456789abcdef0', dirty: true, node: 'v20.19.0' },
    startedAt: '2025-01-02T03:04:05.000Z',
    endedAt: '2025-01-02T03:16:35.000Z',
    accelerator: 'tcg',
    pm: { kind: 'emulated', path: '/dev/shm/pcow-synthetic' },
    host: { kernel: { release: '6.1.0-28-amd64', cmdline: 'BOOT_IMAGE=/vmlinuz root=/dev/sda1 <script>' }, cpu: { model: 'Intel(R) Xeon(R) CPU @ 2.20GHz', count: 2 } },
    tools: { fio: 'fio-3.33', 'qemu-img': 'qemu-img version 7.2.15', redis: null },
    setup: [{ action: 'pm', detail: 'created /dev/shm/pcow-synthetic', ok: true, at: '2025-01-02T03:04:06.000Z' }],
    build: { native: { sourceHash: 'abc123', durationMs: 4200 } },
    cells: { total: 6, ok: 4, failed: 1, timeout: 1, interrupted: 0, pending: 0 },
  };
  writeFileSync(path.join(dir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  writeFileSync(path.join(dir, 'experiment.yaml'), 'name: synthetic\n');
  writeFileSync(path.join(dir, 'cells.json'), `${JSON.stringify(cells, null, 2)}\n`);
  writeFileSync(path.join(dir, 'samples.jsonl'), samples.map((s) => `${JSON.stringify(s)}\n`).join(''));
  return { dir, cells };
}
