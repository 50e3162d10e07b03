// run --shard 1/2 and 2/2 of a real small experiment as two processes, merged, give the cells of
// the unsharded run; the report renders from the merged run; merge names missing, duplicate and
// foreign shards.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareRuns } from '../../src/compare/compare.ts';
import type { CellRecord, Manifest, SampleRow } from '../../src/results/types.ts';
import { readSamples } from '../../src/results/rundir.ts';
import { repoRoot } from '../../src/util/paths.ts';

let tmp: string;
const pm = `/dev/shm/pcow-test-shard-${process.pid}`;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'pcow-shard-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
  await rm(pm, { recursive: true, force: true });
});

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(repoRoot, 'bin/pcow-harness.mjs'), ...args], {
      env: { ...process.env, INIT_CWD: repoRoot, PCOW_CACHE: path.join(tmp, 'cache') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

async function onlyRun(results: string): Promise<string> {
  const dir = path.join(results, 'shards');
  const [id] = await readdir(dir);
  return path.join(dir, id!);
}

const json = async <T>(file: string): Promise<T> => JSON.parse(await readFile(file, 'utf8')) as T;

describe('shards and merge of a real experiment', () => {
  it('1/2 + 2/2 merged equal the unsharded run, and the report renders from the merged run', async () => {
    const file = path.join(tmp, 'shards.yaml');
    await writeFile(
      file,
      `name: shards
host:
  pm: { kind: emulated, dir: ${pm} }
repetitions: 2
timeout: 1m
workloads:
  dax: { tool: fio, ioengine: mmap, size: 2MiB, runtime: 150ms }
  blk: { tool: fio, ioengine: psync, size: 2MiB, runtime: 150ms }
matrix:
  axes:
    workload: [dax, blk]
    bs: [4k, 64k]
figures:
  - { id: iops, title: IOPS by backend, metric: iops, x: workload, color: bs }
`,
    );
    // The shards run one after the other here (they share this host's PM directory); on a fleet each is its own host.
    const s1 = await cli(['run', file, '--shard', '1/2', '--results', path.join(tmp, 's1')]);
    expect(s1.code, s1.stderr).toBe(0);
    const s2 = await cli(['run', file, '--shard', '2/2', '--results', path.join(tmp, 's2')]);
    expect(s2.code, s2.stderr).toBe(0);
    const whole = await cli(['run', file, '--results', path.join(tmp, 'whole')]);
    expect(whole.code, whole.stderr).toBe(0);
    const [d1, d2, dw] = await Promise.all([onlyRun(path.join(tmp, 's1')), onlyRun(path.join(tmp, 's2')), onlyRun(path.join(tmp, 'whole'))]);

    const m1 = await json<Manifest>(path.join(d1, 'manifest.json'));
    expect(m1.shard).toMatchObject({ index: 1, count: 2, planCells: 4 });
    expect(m1.shard!.cells).toHaveLength(2);

    const out = path.join(tmp, 'merged');
    const merged = await cli(['merge', out, d2, d1]);
    expect(merged.code, merged.stderr).toBe(0);
    expect(merged.stdout).toMatch(/merged 2 shards, 4 cells \(4 ok\)/);

    const cellsOf = async (d: string) => (await json<CellRecord[]>(path.join(d, 'cells.json'))).map((c) => `${c.id} ${c.hash} ${c.status}`).sort();
    expect(await cellsOf(out)).toEqual(await cellsOf(dw));
    // Every repetition of a cell is in the merged samples, from the one shard that ran the cell.
    const count = (rows: SampleRow[]): string[] => {
      const n = new Map<string, number>();
      for (const r of rows) if (r.metric === 'iops') n.set(r.cell, (n.get(r.cell) ?? 0) + 1);
      return [...n].map(([k, v]) => `${k}:${v}`).sort();
    };
    expect(count(await readSamples(out))).toEqual(count(await readSamples(dw)));
    const mm = await json<Manifest>(path.join(out, 'manifest.json'));
    expect(mm.status).toBe('completed');
    expect(mm.shards!.map((s) => s.index)).toEqual([1, 2]);
    expect(mm.shards!.flatMap((s) => s.cells).sort()).toEqual((await json<CellRecord[]>(path.join(dw, 'cells.json'))).map((c) => c.hash).sort());
    for (const s of mm.shards!) expect(s.host).toMatchObject({ hostname: expect.any(String) });
    // Raw outputs came along, at the paths cells.json names.
    for (const c of await json<CellRecord[]>(path.join(out, 'cells.json'))) for (const r of c.repetitions) for (const f of r.rawFiles) expect(existsSync(path.join(out, f)), f).toBe(true);

    const rep = await cli(['report', out]);
    expect(rep.code, rep.stderr).toBe(0);
    const html = await readFile(path.join(out, 'report', 'index.html'), 'utf8');
    expect(html).toContain('IOPS by backend');
    expect(html).toMatch(/merged from/);
    expect(existsSync(path.join(out, 'report', 'iops.svg'))).toBe(true);

    // The merged run compares with the unsharded one like any run (same host kind: comparable).
    const c = compareRuns(dw, out, { metrics: ['iops'], calibrationLookup: () => undefined });
    expect(c.refused).toBe(false);
    expect(c.onlyBase).toEqual([]);
    expect(c.onlyNew).toEqual([]);
    expect(c.rows).toHaveLength(4);

    // Missing and duplicate shards, a foreign experiment, a non-shard run: errors naming them (exit 2).
    const missing = await cli(['merge', path.join(tmp, 'm1'), d1]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/missing shard 2\/2 \(given: 1\/2\)/);
    const copy = path.join(tmp, 'copy-of-1');
    await cp(d1, copy, { recursive: true });
    const dup = await cli(['merge', path.join(tmp, 'm2'), d1, copy, d2]);
    expect(dup.code).toBe(2);
    expect(dup.stderr).toContain(`duplicate shard 1/2: ${d1}, ${copy}`);
    const foreign = path.join(tmp, 'foreign-2');
    await cp(d2, foreign, { recursive: true });
    const fm = await json<Manifest>(path.join(foreign, 'manifest.json'));
    fm.experiment.sha256 = 'f'.repeat(64);
    await writeFile(path.join(foreign, 'manifest.json'), JSON.stringify(fm));
    const other = await cli(['merge', path.join(tmp, 'm3'), d1, foreign]);
    expect(other.code).toBe(2);
    expect(other.stderr).toMatch(new RegExp(`${foreign}: experiment file sha256 ffffffffffff differs`));
    const notShard = await cli(['merge', path.join(tmp, 'm4'), d1, dw]);
    expect(notShard.code).toBe(2);
    expect(notShard.stderr).toContain(`${dw}: not a shard`);
    // A shard resumes only as the same shard.
    const resumeWhole = await cli(['run', file, '--resume', d1]);
    expect(resumeWhole.code).toBe(2);
    expect(resumeWhole.stderr).toContain(`--resume ${d1}: that run is shard 1/2; resume it with --shard 1/2`);
    const resumeOther = await cli(['run', file, '--resume', d1, '--shard', '2/2']);
    expect(resumeOther.code).toBe(2);
    const notEmpty = await cli(['merge', out, d1, d2]);
    expect(notEmpty.code).toBe(2);
    expect(notEmpty.stderr).toMatch(/exists and is not empty/);
  });
});
