// compare on synthetic run directories whose differences are known: a real 10% change is found
// with enough repetitions, too few repetitions are inconclusive, calibrated noise is not a
// regression, mixed provenance is refused naming the field (unless --force), and the exit codes.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compareRuns, judge, toMarkdown, type Comparison } from '../../src/compare/compare.ts';
import { noiseFromRuns, noiseThreshold, type Calibration } from '../../src/compare/calibration.ts';
import { readRun } from '../../src/report/read.ts';
import { bootstrapChange, quantile } from '../../src/report/stats.ts';
import type { Manifest } from '../../src/results/types.ts';
import { repoRoot } from '../../src/util/paths.ts';
import { HOST, makeRun, noisy } from './synthetic.ts';

// No stored calibration of the test machine may change the thresholds under test.
const noCalibration = { calibrationLookup: () => undefined };

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'bin/pcow-harness.mjs'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, INIT_CWD: repoRoot, PCOW_CACHE: mkdtempSync(path.join(tmpdir(), 'pcow-cache-')) },
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const row = (c: Comparison, cell: string, metric = 'iops') => {
  const r = c.rows.find((x) => x.cell === cell && x.metric === metric);
  if (!r) throw new Error(`no row ${cell}/${metric}`);
  return r;
};

describe('statistics for compare', () => {
  it('quantile interpolates between order statistics (type 7)', () => {
    expect(quantile([1, 2, 3, 4], 0)).toBe(1);
    expect(quantile([1, 2, 3, 4], 1)).toBe(4);
    expect(quantile([1, 2, 3, 4], 0.5)).toBe(2.5);
    expect(quantile([10], 0.95)).toBe(10);
    expect(() => quantile([], 0.5)).toThrow(/no values/);
  });

  it('the bootstrap interval is deterministic for a seed and brackets the change', () => {
    const a = noisy(100, 8, 0.02, 3);
    const b = noisy(90, 8, 0.02, 4);
    const x = bootstrapChange(a, b, { seed: 42 });
    expect(bootstrapChange(a, b, { seed: 42 })).toEqual(x);
    expect(x.ciLowPct).toBeLessThan(x.changePct);
    expect(x.ciHighPct).toBeGreaterThan(x.changePct);
    expect(x.changePct).toBeGreaterThan(-13);
    expect(x.changePct).toBeLessThan(-7);
    expect(() => bootstrapChange([0, 0], [1, 1])).toThrow(/mean before is 0/);
  });

  it('judge needs both significance and the threshold', () => {
    expect(judge({ changePct: -10, ciLowPct: -12, ciHighPct: -8 }, 'higher', 5).verdict).toBe('regression');
    expect(judge({ changePct: -10, ciLowPct: -12, ciHighPct: -8 }, 'lower', 5).verdict).toBe('improvement');
    expect(judge({ changePct: -10, ciLowPct: -12, ciHighPct: -8 }, 'higher', 15)).toMatchObject({ verdict: 'no change', reason: expect.stringMatching(/interval within/) });
    expect(judge({ changePct: -10, ciLowPct: -16, ciHighPct: -4 }, 'higher', 12)).toMatchObject({ verdict: 'no change', reason: expect.stringMatching(/significant but within/) });
    expect(judge({ changePct: -10, ciLowPct: -25, ciHighPct: 3 }, 'higher', 5).verdict).toBe('inconclusive');
    expect(judge({ changePct: 1, ciLowPct: -2, ciHighPct: 3 }, 'higher', 5).verdict).toBe('no change');
    expect(judge({ changePct: -10, ciLowPct: -12, ciHighPct: -8 }, null, 5).verdict).toBe('inconclusive');
  });
});

describe('compare BASE NEW on synthetic runs', () => {
  it('finds a real 10% change with enough repetitions, in the direction the metric declares', () => {
    const root = mkdtempSync(path.join(tmpdir(), 'pcow-cmp-'));
    const base = makeRun(
      [
        { id: '4k', values: { iops: noisy(1000, 10, 0.03, 1), lat_mean: noisy(500, 10, 0.03, 2) } },
        { id: '64k', values: { iops: noisy(200, 10, 0.03, 3) } },
      ],
      {},
      { root, name: 'base' },
    );
    const next = makeRun(
      [
        // iops 10% lower (worse, higher is better), latency 10% lower (better, lower is better)
        { id: '4k', values: { iops: noisy(900, 10, 0.03, 5), lat_mean: noisy(450, 10, 0.03, 6) } },
        { id: '64k', values: { iops: noisy(200, 10, 0.03, 7) } },
      ],
      {},
      { root, name: 'new' },
    );
    const c = compareRuns(base, next, noCalibration);
    expect(c.refused).toBe(false);
    expect(row(c, '4k')).toMatchObject({ verdict: 'regression', better: 'higher', thresholdPct: 5, thresholdSource: 'default' });
    expect(row(c, '4k').changePct).toBeGreaterThan(-12);
    expect(row(c, '4k').changePct).toBeLessThan(-8);
    expect(row(c, '4k').ciHighPct).toBeLessThan(0);
    expect(row(c, '4k', 'lat_mean').verdict).toBe('improvement');
    expect(['no change', 'inconclusive']).toContain(row(c, '64k').verdict);
    expect(c.counts.regression).toBe(1);
    // The geometric mean over both cells' iops: about sqrt(0.9 * 1.0) - 1 = -5%.
    const g = c.geomean.find((x) => x.metric === 'iops')!;
    expect(g.cells).toBe(2);
    expect(g.changePct).toBeGreaterThan(-7);
    expect(g.changePct).toBeLessThan(-3);
    // Deterministic: the same inputs give the same intervals.
    expect(compareRuns(base, next, noCalibration).rows).toEqual(c.rows);
    const md = toMarkdown(c);
    expect(md).toMatch(/\*\*1 regression, 1 improvement/);
    expect(md).toMatch(/\| 🔴 regression \| `4k` \| iops \(↑\)/);
  });

  it('says inconclusive with too few repetitions, whatever the change', () => {
    const root = mkdtempSync(path.join(tmpdir(), 'pcow-cmp-'));
    const base = makeRun([{ id: '4k', values: { iops: [1000, 1010] } }], {}, { root, name: 'base' });
    const next = makeRun([{ id: '4k', values: { iops: [500, 505] } }], {}, { root, name: 'new' });
    const c = compareRuns(base, next, noCalibration);
    expect(row(c, '4k')).toMatchObject({ verdict: 'inconclusive', reason: expect.stringMatching(/^n < 3 \(2 vs 2/) });
    expect(row(c, '4k').changePct).toBeCloseTo(-50, 0);
    // The minimum is configurable.
    expect(row(compareRuns(base, next, { ...noCalibration, minReps: 2 }), '4k').verdict).toBe('regression');
  });

  it('ignores a change within the calibrated noise floor that the default threshold would flag', () => {
    const root = mkdtempSync(path.join(tmpdir(), 'pcow-cmp-'));
    const base = makeRun([{ id: '4k', values: { iops: noisy(1000, 8, 0.01, 1) } }, { id: '64k', values: { iops: noisy(100, 8, 0.01, 2) } }], {}, { root, name: 'base' });
    const next = makeRun([{ id: '4k', values: { iops: noisy(930, 8, 0.01, 3) } }, { id: '64k', values: { iops: noisy(93, 8, 0.01, 4) } }], {}, { root, name: 'new' });
    expect(row(compareRuns(base, next, noCalibration), '4k').verdict).toBe('regression');
    // A/A runs of this host moved 4k's iops by up to ~12%: 7% is noise here.
    const aa = [0, 1, 2, 3].map((i) => makeRun([{ id: '4k', values: { iops: noisy(1000 * (1 + [0, 0.12, -0.05, 0.08][i]!), 8, 0.01, 10 + i) } }], {}, { root, name: `aa${i}` }));
    const cal: Calibration = {
      schema: 1,
      host: { key: 'k', hostname: 'optane-1', kind: 'x' },
      experiment: { name: 'synthetic', sha256: 'a'.repeat(64) },
      updatedAt: 't',
      cells: noiseFromRuns(aa.map((d) => readRun(d))),
    };
    const noise = noiseThreshold(cal, 'h-4k', 'iops');
    expect(noise?.source).toBe('cell');
    expect(noise!.pct).toBeGreaterThan(10);
    const c = compareRuns(base, next, { calibration: cal });
    expect(row(c, '4k')).toMatchObject({ verdict: 'no change', thresholdSource: 'calibration (cell)' });
    // A cell without its own calibration gets the pooled noise of the metric.
    expect(row(c, '64k')).toMatchObject({ verdict: 'no change', thresholdSource: 'calibration (metric)' });
    // An explicit --threshold wins over the calibration.
    expect(row(compareRuns(base, next, { calibration: cal, thresholdPct: 5 }), '4k').verdict).toBe('regression');
  });

  it('lists cells present in only one run instead of dropping them', () => {
    const root = mkdtempSync(path.join(tmpdir(), 'pcow-cmp-'));
    const base = makeRun([{ id: '4k', values: { iops: [1, 1, 1] } }, { id: 'old', values: { iops: [1, 1, 1] } }], {}, { root, name: 'base' });
    const next = makeRun([{ id: '4k', values: { iops: [1, 1, 1] } }, { id: 'new', values: { iops: [1, 1, 1] } }], {}, { root, name: 'new' });
    const c = compareRuns(base, next, noCalibration);
    expect(c.onlyBase).toEqual(['old']);
    expect(c.onlyNew).toEqual(['new']);
    expect(row(c, '4k').verdict).toBe('no change');
    expect(toMarkdown(c)).toMatch(/Cells only in BASE \(1\): `old`[\s\S]*Cells only in NEW \(1\): `new`/);
    // A cell that failed in NEW has nothing to compare: listed with its status and reason.
    const failed = makeRun([{ id: '4k', values: { iops: [] } }], {}, { root, name: 'failed' });
    const f = compareRuns(base, failed, noCalibration);
    expect(f.noSamples).toEqual(['4k: no samples in NEW 4k (failed: fio exited 1)']);
    expect(toMarkdown(f)).toMatch(/Cells with nothing to compare:\n\n- 4k: no samples in NEW/);
  });

  it('refuses runs of different provenance naming each field; --force compares them', () => {
    const cells = [{ id: '4k', values: { iops: noisy(1000, 5, 0.01) } }];
    const root = mkdtempSync(path.join(tmpdir(), 'pcow-cmp-'));
    const base = makeRun(cells, {}, { root, name: 'base' });
    const cases: [string, Partial<Manifest>][] = [
      ['accelerator', { accelerator: 'tcg' }],
      ['pm', { pm: { kind: 'emulated', path: '/dev/shm/x' } }],
      ['qemu', { build: { native: { sourceHash: 'n'.repeat(64), durationMs: 1 }, qemu: { binary: '/q', binaryHash: 'z'.repeat(64), sourceVersion: '7.2', patchHash: 'p', nativeHash: 'n', cached: true, seconds: 1 } } }],
      ['libpcow', { build: { native: { sourceHash: 'm'.repeat(64), durationMs: 1 }, qemu: { binary: '/q', binaryHash: 'q'.repeat(64), sourceVersion: '7.2', patchHash: 'p', nativeHash: 'n', cached: true, seconds: 1 } } }],
      ['host', { host: { ...HOST, cpu: { ...HOST.cpu, model: 'AMD EPYC 7763' } } }],
      ['experiment', { experiment: { name: 'synthetic', description: '', file: 'x.yaml', sha256: 'b'.repeat(64) } }],
    ];
    for (const [field, m] of cases) {
      const next = makeRun(cells, m, { root, name: `new-${field}` });
      const c = compareRuns(base, next, noCalibration);
      expect(c.refused, field).toBe(true);
      expect(c.differences.map((d) => d.field)).toEqual([field]);
      expect(c.rows).toEqual([]);
      const forced = compareRuns(base, next, { ...noCalibration, force: true });
      expect(forced.refused).toBe(false);
      expect(row(forced, '4k').verdict).toBe('no change');
    }
    // Another host name of the same kind (a fleet's runners) is compared, with a note.
    const renamed = compareRuns(base, makeRun(cells, { host: { ...HOST, hostname: 'optane-2' } }, { root, name: 'renamed' }), noCalibration);
    expect(renamed.refused).toBe(false);
    expect(renamed.notes.join(' ')).toMatch(/host names differ.*optane-1 → optane-2/);
  });

  it('reads the provenance of a merged run per cell (its shard host)', () => {
    const root = mkdtempSync(path.join(tmpdir(), 'pcow-cmp-'));
    const cells = [
      { id: '4k', values: { iops: [1, 1, 1] } },
      { id: '64k', values: { iops: [1, 1, 1] } },
    ];
    const base = makeRun(cells, {}, { root, name: 'base' });
    const shard = (index: number, host: unknown, hashes: string[]) => ({
      index, runId: `s${index}`, source: `/s${index}`, status: 'completed' as const, accelerator: 'kvm' as const, pm: { kind: 'fsdax' as const, path: '/mnt/pmem' },
      host, tools: {}, build: JSON.parse(readFileSync(path.join(base, 'manifest.json'), 'utf8')).build as Manifest['build'], harness: { version: '0', commit: null, dirty: null, node: 'v' },
      startedAt: 't', endedAt: 't', cells: hashes,
    });
    const merged = makeRun(cells, { shards: [shard(1, HOST, ['h-4k']), shard(2, { ...HOST, memoryBytes: 64 * 2 ** 30 }, ['h-64k'])] }, { root, name: 'merged' });
    const c = compareRuns(base, merged, noCalibration);
    expect(c.refused).toBe(true);
    expect(c.differences).toEqual([expect.objectContaining({ field: 'host', cells: ['64k'] })]);
  });
});

describe('pcow-harness compare (CLI)', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'pcow-cmp-cli-'));
  const base = makeRun([{ id: '4k', values: { iops: noisy(1000, 6, 0.01, 1) } }], {}, { root, name: 'base' });
  const same = makeRun([{ id: '4k', values: { iops: noisy(1000, 6, 0.01, 2) } }], {}, { root, name: 'same' });
  const slower = makeRun([{ id: '4k', values: { iops: noisy(850, 6, 0.01, 3) } }], {}, { root, name: 'slower' });
  const tcg = makeRun([{ id: '4k', values: { iops: noisy(850, 6, 0.01, 3) } }], { accelerator: 'tcg' }, { root, name: 'tcg' });

  it('exit 0 without a regression; 3 with one and --fail-on-regression; 0 without the flag', () => {
    expect(cli('compare', base, same, '--fail-on-regression').status).toBe(0);
    const r = cli('compare', base, slower, '--fail-on-regression', '--markdown', path.join(root, 'summary.md'));
    expect(r.status, r.stderr).toBe(3);
    expect(r.stdout).toMatch(/^regression\s+4k\s+iops ↑/m);
    expect(readFileSync(path.join(root, 'summary.md'), 'utf8')).toMatch(/🔴 regression/);
    expect(cli('compare', base, slower).status).toBe(0);
    // Markdown on stdout for a CI log; a threshold above the change makes it no regression.
    const md = cli('compare', base, slower, '--markdown', '-', '--threshold', '20', '--fail-on-regression');
    expect(md.status).toBe(0);
    expect(md.stdout).toMatch(/^## pcow compare: synthetic/);
    expect(md.stdout).toMatch(/\| no change \| `4k`/);
  });

  it('exit 4 for mixed provenance naming the field; --force compares (and gates) anyway', () => {
    const r = cli('compare', base, tcg, '--fail-on-regression');
    expect(r.status).toBe(4);
    expect(r.stderr).toMatch(/not comparable: the runs' provenance differs in accelerator:\n\s+accelerator: BASE kvm ≠ NEW tcg/);
    const f = cli('compare', base, tcg, '--fail-on-regression', '--force', '--json', path.join(root, 'c.json'));
    expect(f.status).toBe(3);
    expect(f.stdout).toMatch(/forced despite differing provenance/);
    const json = JSON.parse(readFileSync(path.join(root, 'c.json'), 'utf8')) as Comparison;
    expect(json.counts.regression).toBe(1);
  });

  it('exit 2 for a directory that is not a run or a bad option', () => {
    const notRun = mkdtempSync(path.join(tmpdir(), 'pcow-cmp-empty-'));
    writeFileSync(path.join(notRun, 'x'), '');
    const a = cli('compare', base, notRun);
    expect(a.status).toBe(2);
    expect(a.stderr).toMatch(/not a run directory/);
    expect(cli('compare', base).status).toBe(2);
    const t = cli('compare', base, same, '--threshold', 'lots');
    expect(t.status).toBe(2);
    expect(t.stderr).toMatch(/--threshold must be a number/);
  });
});

describe('compare --allow', () => {
  it('accepts the named differences (new code) and still refuses the others', () => {
    const root = mkdtempSync(path.join(tmpdir(), 'pcow-cmp-'));
    const cells = [{ id: '4k', values: { iops: noisy(1000, 5, 0.01) } }];
    const base = makeRun(cells, {}, { root, name: 'base' });
    const build = { native: { sourceHash: 'm'.repeat(64), durationMs: 1 }, qemu: { binary: '/q', binaryHash: 'z'.repeat(64), sourceVersion: '7.2', patchHash: 'p', nativeHash: 'm', cached: true, seconds: 1 } };
    const newCode = makeRun(cells, { build }, { root, name: 'code' });
    const c = compareRuns(base, newCode, { ...noCalibration, allow: ['qemu', 'libpcow'] });
    expect(c.refused).toBe(false);
    expect(c.notes.join(' ')).toMatch(/accepted differences \(--allow\): qemu .* libpcow/);
    const tcg = makeRun(cells, { build, accelerator: 'tcg' }, { root, name: 'code-tcg' });
    const r = compareRuns(base, tcg, { ...noCalibration, allow: ['qemu', 'libpcow'] });
    expect(r.refused).toBe(true);
    expect(cli('compare', base, tcg, '--allow', 'qemu', '--allow', 'libpcow').stderr).toMatch(/differs in accelerator:\n\s+accelerator: BASE kvm ≠ NEW tcg \(1 cell: 4k\)\n\(--force/);
    expect(cli('compare', base, tcg, '--allow', 'compiler').status).toBe(2);
  });
});
