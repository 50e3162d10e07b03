// The CLI's exit status: 2 for every usage or configuration error (wrong command line, experiment
// file, --only filter, --resume or report directory), with a message that says what is valid.
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../../src/util/paths.ts';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'pcow-cli-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function cli(...args: string[]): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'bin/pcow-harness.mjs'), ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    env: { ...process.env, INIT_CWD: repoRoot },
    timeout: 60_000,
  });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

describe('pcow-harness exit status', () => {
  it('an unknown command or option is a usage error (2) with the usage text', () => {
    for (const args of [['frobnicate'], ['run', '--bogus'], ['doctor', 'extra'], ['report']]) {
      const r = cli(...args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/usage:/);
    }
  });

  it('claims without run directories, or with one that is not a run, is 2 naming it', () => {
    const none = cli('claims');
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('claims takes one or more run directories');
    const bad = cli('claims', tmp);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain(`${tmp}: not a run directory (no manifest.json)`);
  });

  it('a missing experiment file is 2 and lists the available experiments', () => {
    const r = cli('run', '--dry-run', 'experiments/nope.yaml');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('experiment file not found: experiments/nope.yaml');
    expect(r.stderr).toContain('experiments/quick.yaml');
  });

  it('a --only filter naming no axis, or a value no cell has, is 2 (not 1)', () => {
    const unknownKey = cli('run', '--dry-run', '--only', 'backend=bogus', 'experiments/quick.yaml');
    expect(unknownKey.status, unknownKey.stderr).toBe(2);
    expect(unknownKey.stderr).toMatch(/unknown key "backend"; valid keys: .*"workload"/);
    const unknownValue = cli('run', '--dry-run', '--only', 'workload=bogus', 'experiments/quick.yaml');
    expect(unknownValue.status, unknownValue.stderr).toBe(2);
    expect(unknownValue.stderr).toMatch(/no cell has workload=bogus/);
  });

  it('--shard I/N: a bad spec is 2; a good one lists the shard in a dry run', () => {
    const bad = cli('run', '--dry-run', '--shard', '3/2', 'experiments/quick.yaml');
    expect(bad.status, bad.stderr).toBe(2);
    expect(bad.stderr).toMatch(/--shard 3\/2: I must be between 1 and 2/);
    const ok = cli('run', '--dry-run', '--shard', '1/2', 'experiments/quick.yaml');
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^quick: 12 cells \(shard 1\/2 of 24 cells\)/);
  });

  it('an invalid experiment file is 2 with file:line:col', async () => {
    const f = path.join(tmp, 'bad.yaml');
    await writeFile(f, 'name: bad\nworkloads:\n  w: { tool: fio, ioengnie: mmap }\n');
    const r = cli('run', '--dry-run', f);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/bad\.yaml:3:\d+: workloads\.w\.ioengnie: unknown key/);
    // A host setting that cannot work is a configuration error too, found before anything runs.
    await writeFile(f, 'name: bad\nhost: { pm: { kind: emulated, dir: shm/pm } }\nworkloads:\n  w: { tool: fio }\n');
    const rel = cli('run', f);
    expect(rel.status).toBe(2);
    expect(rel.stderr).toMatch(/bad\.yaml:2:\d+: host\.pm\.dir: "shm\/pm" does not match|host\.pm\.dir: .*absolute path/);
  });

  it('report and --resume of a directory that is not a run directory are 2', async () => {
    const rep = cli('report', tmp);
    expect(rep.status, rep.stderr).toBe(2);
    expect(rep.stderr).toMatch(/not a run directory/);
    const res = cli('run', '--resume', tmp, 'experiments/quick.yaml');
    expect(res.status, res.stderr).toBe(2);
    expect(res.stderr).toMatch(/--resume .*not a run directory/);
  });
});
