// The regression gate end to end: a real small experiment (fio dax and blk on emulated PM) run
// three times as CLI processes, the third with the test-only knob PCOW_TEST_SLOW making the dax
// backend slower for real (fio stalls after every I/O). compare of two same-config runs finds no
// regression (exit 0), compare with the slowed run finds the dax cell's and exits 3.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordCalibration } from '../../src/compare/calibration.ts';
import { compareRuns } from '../../src/compare/compare.ts';
import type { Manifest } from '../../src/results/types.ts';
import { repoRoot } from '../../src/util/paths.ts';

let tmp: string;
const pm = `/dev/shm/pcow-test-gate-${process.pid}`;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'pcow-gate-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
  await rm(pm, { recursive: true, force: true });
});

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(repoRoot, 'bin/pcow-harness.mjs'), ...args], {
      env: { ...process.env, INIT_CWD: repoRoot, PCOW_CACHE: path.join(tmp, 'cache'), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

async function runOnce(results: string, env: Record<string, string> = {}): Promise<string> {
  const file = path.join(tmp, 'gate.yaml');
  const r = await cli(['run', file, '--results', results], env);
  expect(r.code, r.stderr).toBe(0);
  const dir = path.join(results, 'gate');
  const [id] = await readdir(dir);
  return path.join(dir, id!);
}

describe('regression gate on real runs', () => {
  it('two same-config runs: no regression; a deliberately slowed backend: a regression and exit 3', async () => {
    await writeFile(
      path.join(tmp, 'gate.yaml'),
      `name: gate
host:
  pm: { kind: emulated, dir: ${pm} }
repetitions: 4
timeout: 1m
workloads:
  dax: { tool: fio, ioengine: mmap, size: 4MiB, runtime: 200ms }
  blk: { tool: fio, ioengine: psync, size: 4MiB, runtime: 200ms }
matrix:
  axes:
    workload: [dax, blk]
`,
    );
    const a = await runOnce(path.join(tmp, 'a'));
    const b = await runOnce(path.join(tmp, 'b'));
    // 200 us of stall after every 4 KiB I/O: at most 5 k IOPS, against 0.2-1.5 M unslowed here.
    const c = await runOnce(path.join(tmp, 'c'), { PCOW_TEST_SLOW: 'dax=200' });
    const slowManifest = JSON.parse(await readFile(path.join(c, 'manifest.json'), 'utf8')) as Manifest;
    expect(slowManifest.testKnobs).toEqual({ PCOW_TEST_SLOW: 'dax=200' });

    // This 2-core host shared with other jobs moves fio IOPS by tens of percent between runs
    // (A/A: up to ±50% measured, more under a parallel suite), so the gate needs a 10x change (threshold 90%); the slowdown is far beyond it.
    const gate = ['--metric', 'iops', '--threshold', '90', '--fail-on-regression'];
    const same = await cli(['compare', a, b, ...gate]);
    expect(same.code, same.stdout + same.stderr).toBe(0);
    expect(same.stdout).toMatch(/^0 regressions/m);

    const md = path.join(tmp, 'gate.md');
    const slow = await cli(['compare', a, c, ...gate, '--markdown', md]);
    expect(slow.code, slow.stdout + slow.stderr).toBe(3);
    expect(slow.stdout).toMatch(/^1 regression,/m);
    expect(slow.stdout).toMatch(/^regression\s+dax\s+iops ↑/m);
    expect(slow.stdout).toMatch(/note: NEW ran with test-only knobs: PCOW_TEST_SLOW=dax=200/);
    const text = await readFile(md, 'utf8');
    expect(text).toMatch(/\| 🔴 regression \| `dax` \| iops/);
    expect(text).not.toMatch(/🔴 regression \| `blk`/);

    // The two same-config runs as a calibration: compare takes its noise floor as the threshold.
    const cal = await recordCalibration([a, b], path.join(tmp, 'cal.json'));
    expect(Object.values(cal.calibration.cells).map((x) => x.id).sort()).toEqual(['blk', 'dax']);
    const calibrated = compareRuns(a, c, { calibration: cal.calibration, metrics: ['iops'] });
    const dax = calibrated.rows.find((r) => r.cell === 'dax');
    expect(dax).toMatchObject({ verdict: 'regression', thresholdSource: 'calibration (cell)' });
    expect(dax!.thresholdPct).toBe(cal.calibration.cells[dax!.cellHash]!.metrics.iops!.p95AbsChangePct);
  });

  it('calibrate runs a cell A/A N times and stores its noise where compare finds it', async () => {
    const file = path.join(tmp, 'cal.yaml');
    await writeFile(
      file,
      `name: cal
host:
  pm: { kind: emulated, dir: ${pm} }
repetitions: 2
timeout: 1m
workloads:
  blk: { tool: fio, ioengine: psync, size: 2MiB, runtime: 100ms }
matrix:
  axes:
    bs: [4k, 64k]
`,
    );
    const bad = await cli(['calibrate', file, '--runs', '1']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--runs must be a whole number >= 2/);
    const r = await cli(['calibrate', file, '--cell', 'blk.bs=4k', '--runs', '2', '--results', path.join(tmp, 'cal-runs')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^blk\.bs=4k: iops ±[\d.]+%/m);
    const stored = r.stdout.match(/noise calibration \(2 A\/A runs, 1 cells\): (\S+)/)![1]!;
    // In the cache, keyed by host and experiment.
    expect(stored.startsWith(path.join(tmp, 'cache', 'calibration'))).toBe(true);
    expect(stored.endsWith('/cal.json')).toBe(true);
    const cal = JSON.parse(await readFile(stored, 'utf8')) as { cells: Record<string, { id: string; runs: string[]; metrics: Record<string, { absChangesPct: number[] }> }> };
    const cells = Object.values(cal.cells);
    expect(cells.map((c) => c.id)).toEqual(['blk.bs=4k']);
    expect(cells[0]!.runs).toHaveLength(2);
    expect(cells[0]!.metrics.iops!.absChangesPct).toHaveLength(1);
    // compare of those two A/A runs finds the stored calibration on its own.
    const runs = (await readdir(path.join(tmp, 'cal-runs', 'cal'))).sort().map((d) => path.join(tmp, 'cal-runs', 'cal', d));
    const c = await cli(['compare', runs[0]!, runs[1]!, '--metric', 'iops', '--min-reps', '2', '--json', path.join(tmp, 'cal-cmp.json')]);
    expect(c.code, c.stderr).toBe(0);
    const cmp = JSON.parse(await readFile(path.join(tmp, 'cal-cmp.json'), 'utf8')) as { rows: { thresholdSource: string; verdict: string }[] };
    expect(cmp.rows[0]).toMatchObject({ thresholdSource: 'calibration (cell)' });
    expect(cmp.rows[0]!.verdict).not.toBe('regression');
  });
});
