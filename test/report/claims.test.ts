// Claims as executable checks: the schema's errors, the evaluation on synthetic runs (held, not
// held, not run, not checkable), and the claims table on the report page, in headless Chromium.
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { claimsMarkdown, evaluateClaims, loadClaims, parseClaims } from '../../src/report/claims.ts';
import { writeReport } from '../../src/report/index.ts';
import { readRun } from '../../src/report/read.ts';
import { makeRunDir, metricInfo } from './fixture.ts';

const CHROMIUM = '/usr/bin/chromium';
const dirs: string[] = [];
function runDir(): string {
  const { dir } = makeRunDir();
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

// The fixture's run (experiment "synthetic", TCG, emulated PM): iops raw 41000·(1, .96, 1.05),
// pcow 37000·(same) at bs 4096, so pcow/raw = 0.902 exactly; qcow2's cells failed.
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
  - id: S-not-held
    paper: C1
    claim: pcow equals raw
    experiment: synthetic
    metric: iops
    compare: ratio
    where: { bs: 4096 }
    numerator: { backend: pcow }
    denominator: { backend: raw }
    expect: { relation: '~', value: 1, tolerance: 0.05 }
    paperValue: { text: no overhead, value: 1 }
  - id: S-failed-cells
    paper: C1
    claim: pcow beats qcow2
    experiment: synthetic
    metric: iops
    compare: ratio
    numerator: { backend: pcow, bs: 4096 }
    denominator: { backend: qcow2, bs: 4096 }
    expect: { relation: '>=', value: 50 }
    paperValue: { text: about 50x, value: 50 }
  - id: S-missing-cells
    paper: C1
    claim: pcow vs xen
    experiment: synthetic
    metric: iops
    compare: ratio
    numerator: { backend: pcow }
    denominator: { backend: xen }
    expect: { relation: '>=', value: 1 }
    paperValue: { text: faster, value: 1 }
  - id: S-kvm
    paper: C3
    claim: needs KVM
    experiment: synthetic
    metric: iops
    compare: ratio
    where: { bs: 4096 }
    numerator: { backend: pcow }
    denominator: { backend: raw }
    expect: { relation: '>=', value: 100 }
    paperValue: { text: hundreds of times, value: 100 }
    requires: { accelerator: kvm }
  - id: S-reps
    paper: C1
    claim: needs 4 repetitions
    experiment: synthetic
    metric: iops
    compare: ratio
    where: { bs: 4096 }
    numerator: { backend: pcow }
    denominator: { backend: raw }
    expect: { relation: '>=', value: 0.5 }
    paperValue: { text: x, value: 1 }
    minRepetitions: 4
  - id: S-diff
    paper: C5
    claim: pcow's mean latency exceeds raw's by about 3 us
    experiment: synthetic
    metric: lat_mean
    compare: difference
    where: { bs: 4096 }
    numerator: { backend: pcow }
    denominator: { backend: raw }
    scale: 1
    unit: us
    expect: { relation: '~', value: 3, tolerance: 0.2 }
    paperValue: { text: about 3 us, value: 3 }
  - id: other-experiment
    paper: C2
    claim: not this run's
    experiment: c2-fio-1m-16jobs
    metric: bw
    compare: value
    numerator: {}
    expect: { relation: '>=', value: 1 }
    paperValue: { text: x, value: 1 }
`;

describe('claims file schema', () => {
  it('names the claim and the field of a bad entry', () => {
    const bad = (mutate: (c: Record<string, unknown>) => void): string => {
      const doc = parseYaml(CLAIMS) as { claims: Record<string, unknown>[] };
      mutate(doc.claims[1] as Record<string, unknown>);
      try {
        parseClaims(JSON.stringify(doc), 'x.yaml');
      } catch (e) {
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(bad((c) => delete c.metric)).toMatch(/^x\.yaml: claim S-not-held: metric: /);
    expect(bad((c) => ((c.expect as Record<string, unknown>).relation = '>'))).toMatch(/claim S-not-held: expect\.relation: /);
    expect(bad((c) => (c.requires = { accelerator: 'xen' }))).toMatch(/claim S-not-held: requires\.accelerator: /);
    expect(bad((c) => (c.colour = 'red'))).toMatch(/claim S-not-held: \(the claim\): .*colour/);
    expect(bad((c) => delete c.denominator)).toBe('x.yaml: claim S-not-held: denominator: required when compare is ratio');
    expect(bad((c) => (c.id = 'S-held'))).toBe('x.yaml: claim S-held: id: used twice');
    expect(bad((c) => delete c.id)).toMatch(/claim #2: id: /);
    expect(() => parseClaims('claims: [', 'y.yaml')).toThrow(/^y\.yaml: not valid YAML/);
    expect(() => parseClaims('claims: []', 'y.yaml')).toThrow(/^y\.yaml: claims: /);
  });

  it('the shipped claims file is valid and names real experiments, C1-C8 and the host claims', () => {
    const claims = loadClaims();
    const papers = new Set(claims.map((c) => c.paper));
    for (const p of ['C1', 'C2', 'C3', 'C4', 'C5', 'C6', 'C7', 'C8', 'host']) expect(papers).toContain(p);
    for (const c of claims) {
      const file = readdirSync('experiments').find((f) => f.endsWith('.yaml') && (parseYaml(readFileSync(path.join('experiments', f), 'utf8')) as { name: string }).name === c.experiment);
      expect(file, `claim ${c.id}: no experiments/*.yaml named ${c.experiment}`).toBeDefined();
      const text = readFileSync(path.join('experiments', file as string), 'utf8');
      expect((parseYaml(text) as { name: string }).name, c.id).toBe(c.experiment);
    }
  });
});

describe('evaluateClaims', () => {
  it('gives held, not held, not run and not checkable with reasons on a synthetic run', () => {
    const run = readRun(runDir());
    const results = evaluateClaims(parseClaims(CLAIMS), run);
    const by = Object.fromEntries(results.map((r) => [r.claim.id, r]));
    expect(Object.keys(by)).toEqual(['S-held', 'S-not-held', 'S-failed-cells', 'S-missing-cells', 'S-kvm', 'S-reps', 'S-diff']);
    expect(by['S-held']?.status).toBe('held');
    expect(by['S-held']?.ours?.value).toBeCloseTo(37000 / 41000, 12);
    // Both groups are the same jitter times a constant: the interval straddles 0.902.
    expect(by['S-held']?.ours?.ciLow).toBeLessThan(0.9024);
    expect(by['S-held']?.ours?.ciHigh).toBeGreaterThan(0.9024);
    expect(by['S-held']?.accelerator).toBe('tcg');
    expect(by['S-held']?.pm).toBe('emulated');
    expect(by['S-not-held']?.status).toBe('not held');
    expect(by['S-failed-cells']).toMatchObject({ status: 'not run', reason: 'no iops sample for {backend: qcow2, bs: 4096} (fio.backend=qcow2.bs=4096 failed)' });
    expect(by['S-missing-cells']).toMatchObject({ status: 'not run', reason: 'no cell of the run matches {backend: xen}' });
    expect(by['S-kvm']).toMatchObject({ status: 'not checkable', reason: 'not checkable here: TCG' });
    expect(by['S-kvm']?.ours?.value).toBeCloseTo(0.902, 3);
    expect(by['S-reps']).toMatchObject({ status: 'not checkable', reason: 'too few repetitions (3 < 4)' });
    // lat_mean = 1e6/base · (2 - jitter): mean (2 - 1.00333) · 1e6 · (1/37000 - 1/41000) = 2.627 us.
    expect(by['S-diff']?.ours?.value).toBeCloseTo((2 - (1 + 0.96 + 1.05) / 3) * 1e6 * (1 / 37000 - 1 / 41000), 6);
    expect(by['S-diff']?.status).toBe('held');
    // Seeded: the same run gives the same interval.
    const again = evaluateClaims(parseClaims(CLAIMS), run);
    expect(again.map((r) => r.ours)).toEqual(results.map((r) => r.ours));
  });

  it('a KVM claim is checked on a KVM run', () => {
    const run = readRun(runDir());
    run.manifest.accelerator = 'kvm';
    const r = evaluateClaims(parseClaims(CLAIMS), run).find((x) => x.claim.id === 'S-kvm');
    expect(r?.status).toBe('not held');
  });

  it('prints a markdown table', () => {
    const md = claimsMarkdown(evaluateClaims(parseClaims(CLAIMS), readRun(runDir())));
    expect(md.split('\n')[0]).toBe('| claim | paper | expected | ours (95% CI) | accelerator | PM | status | reason |');
    expect(md).toMatch(/\| S-held: pcow close to raw \| no overhead \| ≥ 0\.85x \| 0\.902x \[[\d.]+, [\d.]+\] \| tcg \| emulated \| held \|/);
    expect(md).toContain('| not checkable | not checkable here: TCG |');
  });
});

describe('the claims table in the report', () => {
  const haveChromium = existsSync(CHROMIUM);

  it('is absent when no claim applies, and a bad claims file is said in its place', async () => {
    const dir = runDir();
    const r = await writeReport(dir, { metricInfo });
    expect(r.claims).toEqual([]);
    expect(readFileSync(r.index, 'utf8')).not.toContain('id="claims"');
    const bad = path.join(dir, 'bad-claims.yaml');
    writeFileSync(bad, 'claims: [{id: x}]\n');
    const r2 = await writeReport(dir, { metricInfo, claimsFile: bad });
    expect(r2.claimsProblem).toMatch(/^claims not checked: .*bad-claims\.yaml: claim x: /);
    expect(r2.figures).toHaveLength(2);
    expect(readFileSync(r2.index, 'utf8')).toContain('claims not checked');
  });

  it.skipIf(!haveChromium)('shows paper value, ours with CI, accelerator, PM and status per claim in headless Chromium', async () => {
    const dir = runDir();
    const file = path.join(dir, 'claims.yaml');
    writeFileSync(file, CLAIMS);
    const r = await writeReport(dir, { metricInfo, claimsFile: file });
    expect(r.claims).toHaveLength(7);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--no-first-run'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const problems: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      await page.goto(pathToFileURL(r.index).href, { waitUntil: 'load' });
      const rows = await page.$$eval('#claims-table tbody tr', (trs) =>
        trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => (td as HTMLElement).innerText.trim())),
      );
      expect(rows).toHaveLength(7);
      const held = rows[0] as string[];
      expect(held[0]).toContain('S-held');
      expect(held[1]).toBe('no overhead');
      expect(held[3]).toMatch(/^0\.902x \[[\d.]+, [\d.]+\]$/);
      expect(held.slice(4, 7)).toEqual(['TCG', 'emulated', 'held']);
      expect(rows.map((x) => x[6])).toEqual(['held', 'not held', 'not run', 'not run', 'not checkable', 'not checkable', 'held']);
      expect(rows[4]?.[7]).toBe('not checkable here: TCG');
      expect(await page.locator('nav a[href="#claims"]').count()).toBe(1);
      expect(await page.locator('#claims-table').isVisible()).toBe(true);
      expect(problems).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
