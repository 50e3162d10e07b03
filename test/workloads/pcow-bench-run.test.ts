// pcow-bench cells through the real lifecycle: the build stage makes pcow-bench (needsNative),
// cells record samples and the image state, and the PM directory is left empty.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runExperiment } from '../../src/run/lifecycle.ts';
import type { CellRecord, Manifest } from '../../src/results/types.ts';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('a pcow-bench experiment end to end', () => {
  it('expansion and cow cells: samples, image state in cells.json, nothing left on PM', async () => {
    const tmp = await mkdtemp(path.join(tmpdir(), 'pcow-bench-run-'));
    const pm = `/dev/shm/pcow-test-bench-run-${process.pid}`;
    dirs.push(tmp, pm);
    const file = path.join(tmp, 'tiny-pcow.yaml');
    await writeFile(
      file,
      `name: tiny-pcow
host:
  pm: { kind: emulated, dir: ${pm} }
repetitions: 2
warmup: 1
timeout: 1m
workloads:
  exp: { tool: pcow-bench, case: expansion, clusters: 100 }
  cow: { tool: pcow-bench, case: cow, clusters: 50, cow_unit: 4K }
matrix:
  axes:
    workload: [exp, cow]
    prealloc: [0, 16]
  exclude: []
`,
    );
    const lines: string[] = [];
    const out = await runExperiment({
      file,
      resultsRoot: path.join(tmp, 'results'),
      sink: { write: (t) => lines.push(t), isTTY: false },
      print: () => undefined,
      skipReport: true,
    });
    expect(out.exitCode, lines.join('')).toBe(0);
    const dir = out.runDir!;
    const manifest = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest.build.native).toMatchObject({ sourceHash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const cells = JSON.parse(await readFile(path.join(dir, 'cells.json'), 'utf8')) as CellRecord[];
    expect(cells.map((c) => c.id)).toEqual(['exp.prealloc=0', 'exp.prealloc=16', 'cow.prealloc=0', 'cow.prealloc=16']);
    for (const c of cells) {
      expect(c.status, c.id).toBe('ok');
      const image = (c.details as { image?: { allocatedClusters: number; layers: unknown[]; check: { status: string } } }).image;
      expect(image?.check.status, c.id).toBe('clean');
      expect(image?.allocatedClusters, c.id).toBe(c.workload === 'cow' ? 50 : 100);
      expect(image?.layers, c.id).toHaveLength(c.workload === 'cow' ? 2 : 1);
    }
    const samples = (await readFile(path.join(dir, 'samples.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { cell: string; metric: string; value: number; repetition: number });
    const exp = samples.filter((s) => s.cell === 'exp.prealloc=16' && s.metric === 'lat_p50_over_floor');
    expect(exp.map((s) => s.repetition)).toEqual([0, 1]);
    expect(samples.find((s) => s.cell === 'cow.prealloc=0' && s.metric === 'cow_bytes')?.value).toBe(50 * 4096);
    const raw = path.join(dir, 'cells', 'exp.prealloc=16', 'rep-0');
    expect(existsSync(path.join(raw, 'pcow-bench.json'))).toBe(true);
    expect(existsSync(path.join(raw, 'pcow-img-info.json'))).toBe(true);
    // teardown removed the emulated PM directory (and with it every image)
    expect(existsSync(pm) ? await readdir(pm) : []).toEqual([]);
  });
});

describe('a case parameter on an axis shared with a case that does not take it', () => {
  it('is refused at load time, naming the file, the axis value and the case', async () => {
    const tmp = await mkdtemp(path.join(tmpdir(), 'pcow-bench-axis-'));
    dirs.push(tmp);
    const file = path.join(tmp, 'mixed.yaml');
    await writeFile(
      file,
      `name: mixed
workloads:
  exp: { tool: pcow-bench, case: expansion }
  steady: { tool: pcow-bench, case: steady }
matrix:
  axes:
    workload: [exp, steady]
    prealloc: [0, 16]
`,
    );
    await expect(runExperiment({ file, dryRun: true, print: () => undefined })).rejects.toThrow(
      /mixed\.yaml:8:16: matrix\.axes\.prealloc\[0\]: prealloc does not apply to case steady \(its parameters: backend, bs, write, random, threads, size, seconds, rounds, cluster_size\); in workload steady/,
    );
  });
});
