// End-to-end: the real CLI/lifecycle with real fio and qemu-img on emulated PM (tmpfs).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'csv-parse/sync';
import { runExperiment } from '../../src/run/lifecycle.ts';
import type { CellRecord, Manifest } from '../../src/results/types.ts';
import { repoRoot } from '../../src/util/paths.ts';
import { run } from '../../src/util/proc.ts';

let tmp: string;
const pmDirs: string[] = [];

function experiment(name: string, body: string): string {
  const pm = `/dev/shm/pcow-test-${name}-${process.pid}`;
  pmDirs.push(pm);
  return `name: ${name}\nhost:\n  pm: { kind: emulated, dir: ${pm} }\n${body}`;
}

async function write(name: string, text: string): Promise<string> {
  const f = path.join(tmp, `${name}.yaml`);
  await writeFile(f, text);
  return f;
}

const quiet = { write: () => undefined, isTTY: false };
const silent = () => undefined;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'pcow-e2e-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
  for (const d of pmDirs) await rm(d, { recursive: true, force: true });
});

/** Processes whose command line mentions `needle` (left-over children). */
async function processesMentioning(needle: string): Promise<string[]> {
  const r = await run('pgrep', ['-af', needle]);
  return r.stdout.split('\n').filter((l) => l.trim() !== '' && !l.includes('pgrep'));
}

describe('a tiny experiment end to end', () => {
  it('runs fio and qemu-img bench cells and leaves manifest, samples and a report', async () => {
    const file = await write(
      'tiny',
      experiment(
        'tiny',
        `repetitions: 2
warmup: 1
timeout: 1m
workloads:
  dax: { tool: fio, ioengine: mmap, size: 4MiB, runtime: 300ms }
  qimg: { tool: qemu-img-bench, format: qcow2, size: 4MiB, count: 256 }
matrix:
  axes:
    workload: [dax, qimg]
    bs: [4k, 64k]
figures:
  - { id: iops, title: IOPS by block size, metric: iops, x: workload, color: bs }
`,
      ),
    );
    const lines: string[] = [];
    const out = await runExperiment({ file, resultsRoot: path.join(tmp, 'results'), sink: { write: (t) => lines.push(t), isTTY: false }, print: silent });
    expect(out.exitCode, lines.join('')).toBe(0);
    const dir = out.runDir!;
    const manifest = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest.status).toBe('completed');
    expect(manifest.cells).toMatchObject({ total: 4, ok: 4 });
    expect(manifest.experiment.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(manifest.harness.node).toBe(process.version);
    expect(manifest.accelerator).toBe('none');
    expect(manifest.pm.kind).toBe('emulated');
    expect(manifest.tools['fio']).toMatch(/^\d+\.\d+/);
    expect(manifest.setup.some((s) => /pm|tmpfs|emulated/i.test(`${s.action} ${s.detail}`))).toBe(true);
    expect(manifest.endedAt).not.toBeNull();

    const cells = JSON.parse(await readFile(path.join(dir, 'cells.json'), 'utf8')) as CellRecord[];
    expect(cells.map((c) => c.id).sort()).toEqual(['dax.bs=4k', 'dax.bs=64k', 'qimg.bs=4k', 'qimg.bs=64k'].sort());
    for (const c of cells) {
      expect(c.status).toBe('ok');
      expect(c.repetitions.map((r) => r.repetition)).toEqual([0, 1]);
      for (const r of c.repetitions) for (const f of r.rawFiles) expect(existsSync(path.join(dir, f)), f).toBe(true);
    }
    // Warmup output is kept apart from measured repetitions.
    expect(await readdir(path.join(dir, 'cells', 'dax.bs=4k'))).toEqual(expect.arrayContaining(['rep-0', 'rep-1', 'warmup-0']));

    const csv = parse(await readFile(path.join(dir, 'samples.csv'), 'utf8'), { columns: true }) as Record<string, string>[];
    const iops = csv.filter((r) => r.metric === 'iops');
    expect(iops).toHaveLength(8); // 4 cells × 2 repetitions
    for (const r of iops) {
      expect(Number(r.value)).toBeGreaterThan(0);
      expect(r.unit).toBe('IOPS');
      expect(['4k', '64k']).toContain(r.bs);
      expect(['dax', 'qimg']).toContain(r.workload);
    }
    const html = await readFile(path.join(dir, 'report', 'index.html'), 'utf8');
    expect(html).toContain('IOPS by block size');
    expect(existsSync(path.join(dir, 'report', 'iops.svg'))).toBe(true);
    expect(existsSync(path.join(dir, 'report', 'iops.png'))).toBe(true);
    // The PM directory is removed at teardown.
    expect(existsSync(pmDirs[pmDirs.length - 1]!)).toBe(false);
  });

  it('records a failing cell and a timed-out cell with their reasons and goes on', async () => {
    const file = await write(
      'failing',
      experiment(
        'failing',
        `repetitions: 1
timeout: 2s
workloads:
  good: { tool: fio, ioengine: psync, size: 1MiB, runtime: 200ms }
  pmem: { tool: fio, ioengine: libpmem, size: 1MiB, runtime: 200ms }
  slow: { tool: fio, ioengine: psync, size: 1MiB, runtime: 30s }
matrix:
  axes:
    workload: [pmem, slow, good]
`,
      ),
    );
    const t0 = Date.now();
    const out = await runExperiment({ file, resultsRoot: path.join(tmp, 'results'), sink: quiet, print: silent, skipReport: true });
    expect(Date.now() - t0).toBeLessThan(25_000);
    expect(out.exitCode).toBe(1);
    const cells = JSON.parse(await readFile(path.join(out.runDir!, 'cells.json'), 'utf8')) as CellRecord[];
    const by = Object.fromEntries(cells.map((c) => [c.workload, c]));
    expect(by.pmem!.status).toBe('failed');
    expect(by.pmem!.reason).toMatch(/fio|libpmem|DAX|dax/i);
    expect(by.slow!.status).toBe('timeout');
    expect(by.slow!.reason).toMatch(/timed out after 2s/);
    expect(by.good!.status).toBe('ok');
    expect(await processesMentioning(pmDirs[pmDirs.length - 1]!)).toEqual([]);
  });

  it('--dry-run lists every cell with its id and parameters and runs nothing', async () => {
    const file = await write(
      'dry',
      experiment('dry', `workloads:\n  w: { tool: fio, size: 1MiB }\nmatrix:\n  axes:\n    bs: [4k, 8k]\n    rw: [randread, randwrite]\n`),
    );
    let printed = '';
    const out = await runExperiment({ file, dryRun: true, print: (t) => (printed += t) });
    expect(out.exitCode).toBe(0);
    expect(out.runDir).toBeUndefined();
    for (const id of ['w.bs=4k.rw=randread', 'w.bs=4k.rw=randwrite', 'w.bs=8k.rw=randread', 'w.bs=8k.rw=randwrite']) expect(printed).toContain(id);
    expect(printed).toContain('4 cells');
  });
});

describe('SIGINT and --resume', () => {
  it('SIGINT leaves no child behind; --resume finishes without redoing finished cells', async () => {
    const file = await write(
      'interrupt',
      experiment(
        'interrupt',
        `repetitions: 1
workloads:
  w: { tool: fio, ioengine: psync, size: 2MiB, runtime: 1500ms }
matrix:
  axes:
    bs: [4k, 8k, 16k, 32k]
`,
      ),
    );
    const results = path.join(tmp, 'results-int');
    const cli = path.join(repoRoot, 'bin', 'pcow-harness.mjs');
    const child = spawn(process.execPath, [cli, 'run', file, '--results', results], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const firstDone = new Promise<void>((resolve) => {
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        if (/\bok\s+w\.bs=/.test(err)) resolve();
      });
    });
    await firstDone;
    // Interrupt while the second cell's fio is running.
    await new Promise((r) => setTimeout(r, 400));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(code, err).toBe(130);
    const pm = pmDirs[pmDirs.length - 1]!;
    expect(await processesMentioning(pm)).toEqual([]);
    expect(existsSync(pm)).toBe(false);

    const expDir = path.join(results, 'interrupt');
    const [runId] = await readdir(expDir);
    const runDir = path.join(expDir, runId!);
    const manifest = JSON.parse(await readFile(path.join(runDir, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest.status).toBe('interrupted');
    const before = JSON.parse(await readFile(path.join(runDir, 'cells.json'), 'utf8')) as CellRecord[];
    const finished = before.filter((c) => c.status === 'ok');
    expect(finished.length).toBeGreaterThanOrEqual(1);
    expect(finished.length).toBeLessThan(4);

    const resumed = await runExperiment({ file, resume: runDir, sink: quiet, print: silent, skipReport: true });
    expect(resumed.exitCode).toBe(0);
    expect(resumed.runDir).toBe(runDir);
    const after = JSON.parse(await readFile(path.join(runDir, 'cells.json'), 'utf8')) as CellRecord[];
    expect(after.every((c) => c.status === 'ok')).toBe(true);
    for (const f of finished) {
      // Same repetition record: the finished cell was not run again.
      expect(after.find((c) => c.hash === f.hash)!.repetitions).toEqual(f.repetitions);
    }
    const csv = parse(await readFile(path.join(runDir, 'samples.csv'), 'utf8'), { columns: true }) as Record<string, string>[];
    expect(csv.filter((r) => r.metric === 'iops')).toHaveLength(4);
    void out;
  });
});
