// The lifecycle's bookkeeping, on real fio cells (emulated PM on tmpfs): warmups kept apart from
// measured repetitions, tool versions read after setup, teardown on any error.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runExperiment } from '../../src/run/lifecycle.ts';
import type { CellRecord, Manifest } from '../../src/results/types.ts';

let tmp: string;
const pmDirs: string[] = [];
const silent = (): void => undefined;
const quiet = { write: silent, isTTY: false };

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'pcow-lifecycle-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
  for (const d of pmDirs) await rm(d, { recursive: true, force: true });
});

async function experiment(name: string, body: string): Promise<{ file: string; pm: string }> {
  // The PM directory is two levels below /dev/shm: setup creates both, teardown removes both.
  const pm = `/dev/shm/pcow-test-lc-${name}-${process.pid}/pm`;
  pmDirs.push(path.dirname(pm));
  const file = path.join(tmp, `${name}.yaml`);
  await writeFile(file, `name: ${name}\nhost:\n  pm: { kind: emulated, dir: ${pm} }\n${body}`);
  return { file, pm };
}

describe('lifecycle', () => {
  it('a warmup has its own record, time and listed output; repetition 1 does not include it', async () => {
    const { file, pm } = await experiment(
      'warm',
      `repetitions: 2
warmup: 1
timeout: 1m
workloads:
  w: { tool: fio, ioengine: psync, size: 2MiB, runtime: 800ms }
`,
    );
    const out = await runExperiment({ file, resultsRoot: path.join(tmp, 'results'), sink: quiet, print: silent, skipReport: true });
    expect(out.exitCode).toBe(0);
    const [cell] = JSON.parse(await readFile(path.join(out.runDir!, 'cells.json'), 'utf8')) as CellRecord[];
    expect(cell!.warmups).toHaveLength(1);
    const w = cell!.warmups![0]!;
    expect(w).toMatchObject({ warmup: 0, status: 'ok' });
    expect(w.durationMs).toBeGreaterThanOrEqual(700);
    expect(w.rawFiles.length).toBeGreaterThan(0);
    for (const f of w.rawFiles) {
      expect(f.startsWith(path.join('cells', cell!.id, 'warmup-0'))).toBe(true);
      expect(existsSync(path.join(out.runDir!, f)), f).toBe(true);
    }
    const [r0, r1] = cell!.repetitions;
    // Both measured repetitions run fio once; with the warmup counted, r0 took about twice r1.
    expect(r0!.durationMs).toBeLessThan(1.5 * r1!.durationMs);
    expect(r0!.durationMs).toBeGreaterThanOrEqual(700);
    expect(Date.parse(w.startedAt)).toBeGreaterThanOrEqual(Date.parse(r0!.startedAt));
    expect(Date.parse(w.endedAt)).toBeLessThanOrEqual(Date.parse(r0!.endedAt));
    // Samples come from measured runs only.
    const samples = (await readFile(path.join(out.runDir!, 'samples.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { repetition: number });
    expect([...new Set(samples.map((s) => s.repetition))].sort()).toEqual([0, 1]);

    // Tool versions are read after setup (installs included) and name the tools the cells used.
    const m = JSON.parse(await readFile(path.join(out.runDir!, 'manifest.json'), 'utf8')) as Manifest;
    expect(m.tools['fio']).toMatch(/^\d+\.\d+/);
    const setupSteps = m.setup.filter((s) => !/^(removed|emptied)|restored/.test(s.detail));
    expect(setupSteps.map((s) => s.action)).toContain('mkdir');
    for (const s of setupSteps) expect(Date.parse(m.toolsProbedAt!), `${s.action}: ${s.detail}`).toBeGreaterThanOrEqual(Date.parse(s.at));
    // Teardown removed the PM directory and the parent setup created for it.
    expect(existsSync(pm)).toBe(false);
    expect(existsSync(path.dirname(pm))).toBe(false);
  });

  it('an unexpected error after setup still tears down, records the run as failed, and is rethrown', async () => {
    const { file, pm } = await experiment('boom', `repetitions: 1\nworkloads:\n  w: { tool: fio, ioengine: psync, size: 1MiB, runtime: 100ms }\n`);
    let thrown = false;
    let sawPm = false;
    const sink = {
      isTTY: false,
      write: (t: string): void => {
        if (/ start /.test(t) && !thrown) {
          sawPm = existsSync(pm);
          thrown = true;
          throw new Error('sink exploded');
        }
      },
    };
    await expect(runExperiment({ file, resultsRoot: path.join(tmp, 'results'), sink, print: silent, skipReport: true })).rejects.toThrow('sink exploded');
    expect(sawPm).toBe(true); // the error came after setup
    expect(existsSync(pm)).toBe(false);
    expect(existsSync(path.dirname(pm))).toBe(false);
    const runs = path.join(tmp, 'results', 'boom');
    const { readdir } = await import('node:fs/promises');
    const [id] = await readdir(runs);
    const m = JSON.parse(await readFile(path.join(runs, id!, 'manifest.json'), 'utf8')) as Manifest;
    expect(m.status).toBe('failed');
    expect(m.error).toBe('sink exploded');
    expect(m.setup.some((s) => s.action === 'pm' && s.detail.startsWith(`removed ${pm}`))).toBe(true);
  });
});
