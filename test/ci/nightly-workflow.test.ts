// .github/workflows/nightly.yml: parses, has the shard matrix the harness expects (shards 1..N of
// every host kind on self-hosted runners labelled by kind), merges and compares per kind with
// options the CLI has, and every run script is valid bash.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { usage } from '../../src/cli/main.ts';
import { repoRoot } from '../../src/util/paths.ts';

interface Step {
  name?: string;
  run?: string;
  uses?: string;
  with?: Record<string, unknown>;
  if?: string;
}
interface Job {
  'runs-on': string | string[];
  needs?: string | string[];
  strategy?: { matrix: Record<string, unknown[]>; 'fail-fast'?: boolean };
  steps: Step[];
}
interface Workflow {
  on: { schedule?: { cron: string }[]; workflow_dispatch?: unknown };
  env: Record<string, string | number>;
  jobs: Record<string, Job>;
}

const file = path.join(repoRoot, '.github/workflows/nightly.yml');
const wf = parse(readFileSync(file, 'utf8')) as Workflow;

describe('nightly workflow', () => {
  it('runs nightly as a job matrix of shards 1..N per host kind on self-hosted runners', () => {
    expect(wf.on.schedule?.[0]?.cron).toMatch(/^\S+ \S+ \* \* \*$/);
    const shard = wf.jobs.shard!;
    const n = Number(wf.env.SHARDS);
    expect(shard.strategy!.matrix.shard).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    const kinds = shard.strategy!.matrix['host-kind']!;
    expect(kinds.length).toBeGreaterThan(0);
    expect(shard['runs-on']).toEqual(expect.arrayContaining(['self-hosted', '${{ matrix.host-kind }}']));
    expect(shard.strategy!['fail-fast']).toBe(false);
    const run = shard.steps.find((s) => s.run?.includes('pcow-harness.mjs run'))!.run!;
    expect(run).toMatch(/--shard "\$\{\{ matrix\.shard \}\}\/\$SHARDS"/);
    const upload = shard.steps.find((s) => s.uses?.startsWith('actions/upload-artifact'))!;
    expect(upload.with!.name).toBe('shard-${{ matrix.host-kind }}-${{ matrix.shard }}');

    const gate = wf.jobs.gate!;
    expect(gate.needs).toBe('shard');
    expect(gate.strategy!.matrix['host-kind']).toEqual(kinds);
    const dl = gate.steps.find((s) => s.uses?.startsWith('actions/download-artifact'))!;
    expect(dl.with!.pattern).toBe('shard-${{ matrix.host-kind }}-*');
    const scripts = gate.steps.map((s) => s.run ?? '').join('\n');
    expect(scripts).toMatch(/pcow-harness\.mjs merge merged shards\/\*\/"\$EXPERIMENT_NAME"\/\*/);
    expect(scripts).toMatch(/pcow-harness\.mjs report merged/);
    expect(scripts).toMatch(/pcow-harness\.mjs compare "\$base\/run" merged .*--fail-on-regression/s);
  });

  it('names the experiment it runs consistently, and uses only commands and options the CLI has', () => {
    const exp = parse(readFileSync(path.join(repoRoot, String(wf.env.EXPERIMENT)), 'utf8')) as { name: string };
    expect(exp.name).toBe(wf.env.EXPERIMENT_NAME);
    const all = Object.values(wf.jobs).flatMap((j) => j.steps.map((s) => s.run ?? '')).join('\n');
    const calls = [...all.matchAll(/pcow-harness\.mjs (\w[\w-]*)([^\n]*(?:\\\n[^\n]*)*)/g)];
    expect(calls.length).toBeGreaterThanOrEqual(4);
    for (const [, cmd, rest] of calls) {
      expect(usage, cmd).toContain(`pcow-harness ${cmd}`);
      for (const opt of rest!.match(/--[a-z][a-z-]*/g) ?? []) expect(usage, `${cmd} ${opt}`).toContain(opt);
    }
  });

  it('every run script is valid bash', () => {
    for (const [name, job] of Object.entries(wf.jobs)) {
      for (const step of job.steps) {
        if (!step.run) continue;
        // GitHub substitutes ${{ ... }} before bash sees the script.
        const script = step.run.replace(/\$\{\{[^}]*\}\}/g, 'X');
        const r = spawnSync('bash', ['-n'], { input: script, encoding: 'utf8' });
        expect(r.status, `${name}/${step.name ?? step.run.slice(0, 40)}: ${r.stderr}`).toBe(0);
      }
    }
  });
});
