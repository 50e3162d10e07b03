// `pcow-harness claims RUN...`: one page with every claim, each checked on the newest given run of
// its experiment; a claim whose experiment is not among the runs is "not run", naming it.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { claimChartPoints, claimsChartSpec, claimsMarkdown } from '../../src/report/claims.ts';
import { writeClaimsPage } from '../../src/report/index.ts';
import { makeRunDir } from './fixture.ts';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const CLAIMS = `
claims:
  - id: S-held
    paper: C1
    claim: pcow close to raw
    experiment: synthetic
    metric: iops
    compare: ratio
    where: { bs: 4096 }
    numerator: { backend: pcow }
    denominator: { backend: raw }
    expect: { relation: '>=', value: 0.85 }
    paperValue: { text: no overhead, value: 1 }
  - id: S-elsewhere
    paper: C7
    claim: redis with a PM AOF beats the AOF
    experiment: c7-redis
    metric: set_rps
    compare: ratio
    numerator: { variant: pmem }
    denominator: { variant: aof }
    expect: { relation: '>=', value: 1 }
    paperValue: { text: beats it, value: 1 }
`;

describe('the claims page across runs', () => {
  it('checks each claim on the newest run of its experiment, lists the runs, says which claims had no run', async () => {
    const older = makeRunDir().dir;
    const newer = makeRunDir().dir;
    const work = mkdtempSync(path.join(tmpdir(), 'pcow-claims-page-'));
    dirs.push(older, newer, work);
    const mf = path.join(newer, 'manifest.json');
    const m = JSON.parse(readFileSync(mf, 'utf8')) as { startedAt: string; runId: string };
    writeFileSync(mf, JSON.stringify({ ...m, startedAt: '2999-01-01T00:00:00.000Z', runId: 'the-newer-run' }));
    const claimsFile = path.join(work, 'claims.yaml');
    writeFileSync(claimsFile, CLAIMS);
    const out = path.join(work, 'page', 'claims.html');
    const results = await writeClaimsPage([older, newer], out, { claimsFile });
    expect(results.map((r) => [r.claim.id, r.status, r.runId])).toEqual([
      ['S-held', 'held', 'the-newer-run'],
      ['S-elsewhere', 'not run', null],
    ]);
    expect(results[1]!.reason).toBe('no run of experiment c7-redis among the runs given');
    const md = claimsMarkdown(results);
    expect(md.split('\n')[0]).toMatch(/\| run \|$/);
    expect(md).toContain('| held |  | the-newer-run |');
    const html = readFileSync(out, 'utf8');
    expect(html).toContain('<th>run</th>');
    expect(html).toMatch(/<tr data-claim="S-held">.*held.*the-newer-run/);
    expect(html).toMatch(/<tr data-claim="S-elsewhere">.*not run.*no run of experiment c7-redis among the runs given/);
    expect(html).toContain('1 held · 1 not run');
    expect(html).toContain(older);
    // Reproduced next to reported: ours over the paper's value, one point per claim with a value.
    expect(claimChartPoints(results).map((p) => [p.claim, Number(p.relative.toFixed(3)), p.status])).toEqual([['S-held', 0.902, 'held']]);
    const svg = Buffer.from(/id="claims-chart"[^>]*src="data:image\/svg\+xml;base64,([^"]+)"/.exec(html)![1]!, 'base64').toString('utf8');
    expect(svg).toMatch(/^<svg/);
    expect(svg).toContain('Reproduced next to reported');
    expect(claimsChartSpec(results.filter((r) => r.status === 'not run'))).toBeNull();
  });
});
