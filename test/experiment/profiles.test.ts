// Experiment profiles: `profiles: { ci: {...}, paper: {...} }` override repetitions, timeout,
// workload parameters and matrix axes; `run --profile NAME` picks one (default ci); an unknown
// profile is an error naming the choices; the run's manifest records the profile and a resume
// keeps it.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExperimentError } from '../../src/experiment/errors.ts';
import { loadExperiment } from '../../src/experiment/load.ts';
import { runExperiment } from '../../src/run/lifecycle.ts';
import type { Manifest } from '../../src/results/types.ts';
import { ConfigError } from '../../src/util/errors.ts';
import { fakeOpts } from './fake-workloads.ts';

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'pcow-profiles-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const BASE = `name: prof
repetitions: 3
workloads:
  w: { tool: fio, size: 4MiB, runtime: 300ms }
matrix:
  axes:
    bs: [4k, 1m]
`;

async function file(text: string): Promise<string> {
  const f = path.join(dir, `p${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(f, text);
  return f;
}

async function loadError(f: string, profile?: string): Promise<ExperimentError> {
  try {
    await loadExperiment(f, { ...fakeOpts, profile });
  } catch (e) {
    if (e instanceof ExperimentError) return e;
    throw e;
  }
  throw new Error('loaded without an error');
}

const WITH_PROFILES = `${BASE}profiles:
  ci:
    repetitions: 1
    workloads:
      w: { size: 1MiB }
    matrix:
      axes:
        bs: [4k]
  paper:
    description: big
    repetitions: 5
    timeout: 20m
    workloads:
      w: { size: 64MiB, runtime: 2s }
`;

describe('experiment profiles', () => {
  it('ci is the default; --profile paper picks the other; each overrides repetitions, parameters and axes', async () => {
    const f = await file(WITH_PROFILES);
    const ci = await loadExperiment(f, fakeOpts);
    expect(ci.profile).toBe('ci');
    expect(ci.config.repetitions).toBe(1);
    expect(ci.cells.map((c) => c.id)).toEqual(['w.bs=4k']);
    expect(ci.cells[0]!.params).toMatchObject({ size: 1024 * 1024, runtime: 300, bs: 4096 });

    const paper = await loadExperiment(f, { ...fakeOpts, profile: 'paper' });
    expect(paper.profile).toBe('paper');
    expect(paper.config.repetitions).toBe(5);
    expect(paper.config.timeout).toBe('20m');
    expect(paper.config.description).toContain('[profile paper: big]');
    expect(paper.cells.map((c) => c.id)).toEqual(['w.bs=4k', 'w.bs=1m']);
    expect(paper.cells[0]!.params).toMatchObject({ size: 64 * 1024 * 1024, runtime: 2000 });
    // Different parameters, different cells: a ci result is never mistaken for a paper one.
    expect(paper.cells[0]!.hash).not.toBe(ci.cells[0]!.hash);
  });

  it('a file without profiles loads as before; --profile on it is an error saying there are none', async () => {
    const f = await file(BASE);
    const plain = await loadExperiment(f, fakeOpts);
    expect(plain.profile).toBeUndefined();
    expect(plain.config.repetitions).toBe(3);
    expect((await loadError(f, 'ci')).message).toMatch(/--profile ci: this experiment defines no profiles/);
  });

  it('an unknown profile names the choices', async () => {
    const e = await loadError(await file(WITH_PROFILES), 'nightly');
    expect(e.message).toMatch(/unknown profile "nightly"; this experiment has: ci, paper/);
  });

  it('a profile overriding a workload that does not exist, or with an unknown key, is an error with its place', async () => {
    const e1 = await loadError(await file(`${BASE}profiles:\n  ci:\n    workloads:\n      nope: { size: 1MiB }\n`));
    expect(e1.message).toMatch(/profiles\.ci\.workloads\.nope: profile ci overrides workload "nope", which is not in workloads: \(have: w\)/);
    const e2 = await loadError(await file(`${BASE}profiles:\n  ci:\n    repetitons: 1\n`));
    expect(e2.message).toMatch(/profiles\.ci/);
    expect(e2.message).toMatch(/repetitons/);
    // A bad parameter value that only the profile sets is caught by the tool's schema.
    const e3 = await loadError(await file(`${BASE}profiles:\n  ci:\n    workloads:\n      w: { numjobs: 0 }\n`));
    expect(e3.message).toMatch(/numjobs/);
  });

  it('the run records its profile in the manifest; --dry-run names it; a resume keeps it and refuses another', async () => {
    const f = await file(WITH_PROFILES.replace('name: prof', `name: prof\nhost:\n  pm: { kind: emulated, dir: /dev/shm/pcow-test-prof-${process.pid} }`));
    let printed = '';
    await runExperiment({ file: f, dryRun: true, profile: 'paper', print: (t) => (printed += t) });
    expect(printed).toMatch(/^prof \(profile paper\): 2 cells × 5 repetitions/);
    const results = path.join(dir, 'results');
    const quiet = { write: () => undefined, isTTY: false };
    const out = await runExperiment({ file: f, resultsRoot: results, sink: quiet, print: () => undefined, skipReport: true });
    expect(out.exitCode).toBe(0);
    const manifest = JSON.parse(await readFile(path.join(out.runDir!, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest.profile).toBe('ci');
    await expect(runExperiment({ file: f, resume: out.runDir, profile: 'paper', sink: quiet, print: () => undefined, skipReport: true })).rejects.toThrow(ConfigError);
    await expect(runExperiment({ file: f, resume: out.runDir, profile: 'paper', sink: quiet, print: () => undefined, skipReport: true })).rejects.toThrow(/that run used profile ci, not paper/);
    const again = await runExperiment({ file: f, resume: out.runDir, sink: quiet, print: () => undefined, skipReport: true });
    expect(again.exitCode).toBe(0);
    expect((JSON.parse(await readFile(path.join(out.runDir!, 'manifest.json'), 'utf8')) as Manifest).profile).toBe('ci');
  });
});
