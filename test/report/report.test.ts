import { existsSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync, appendFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { writeReport } from '../../src/report/index.ts';
import { escapeHtml, formatDuration, formatNumber, hrefTo } from '../../src/report/html.ts';
import { FAILED_REASON, makeRunDir, metricInfo } from './fixture.ts';

const CHROMIUM = '/usr/bin/chromium';
const keep = process.env.PCOW_KEEP_REPORT === '1';
const dirs: string[] = [];
function runDir(): string {
  const { dir } = makeRunDir();
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  if (keep) console.log(`report test directories kept: ${dirs.join(' ')}`);
  else for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function listTree(dir: string, rel = ''): string[] {
  return readdirSync(path.join(dir, rel)).flatMap((n) => {
    const r = path.join(rel, n);
    return statSync(path.join(dir, r)).isDirectory() ? [`${r}/`, ...listTree(dir, r)] : [r];
  });
}

describe('html helpers', () => {
  it('escapes everything that could open markup or leave an attribute', () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  });
  it('builds relative links with encoded segments', () => {
    expect(hrefTo('../cells/fio.bs=4k #1/')).toBe('../cells/fio.bs%3D4k%20%231/');
  });
  it('formats numbers and durations for people', () => {
    expect(formatNumber(41234.5678)).toBe('41,230');
    expect(formatNumber(0.00012)).toBe('1.200e-4');
    expect(formatNumber(1234, 2)).toBe('1,200');
    expect(formatNumber(2_150_000_000)).toBe('2.15 G');
    expect(formatNumber(-1_234_567, 2)).toBe('-1.2 M');
    expect(formatNumber(999_999)).toBe('1 M');
    expect(formatNumber(999_949)).toBe('999,900');
    expect(formatDuration(750_000)).toBe('12 min 30 s');
    expect(formatDuration(3_600_000 + 5_000)).toBe('1 h 5 s');
    expect(formatDuration(420)).toBe('420 ms');
  });
});

describe('writeReport', () => {
  it('writes the figures and index.html under report/ and nothing else', async () => {
    const dir = runDir();
    const before = listTree(dir);
    const r = await writeReport(dir, { metricInfo });
    const added = listTree(dir).filter((f) => !before.includes(f));
    expect(added.sort()).toEqual(
      ['report/', 'report/index.html', 'report/iops.png', 'report/iops.svg', 'report/iops.vl.json', 'report/latency.png', 'report/latency.svg', 'report/latency.vl.json'].sort(),
    );
    expect(r.index).toBe(path.join(dir, 'report', 'index.html'));
    expect(r.figures.map((f) => f.id)).toEqual(['iops', 'latency']);
    for (const f of r.figures) {
      expect(readFileSync(f.svg, 'utf8')).toMatch(/^<svg/);
      expect(readFileSync(f.png).subarray(1, 4).toString()).toBe('PNG');
      expect(JSON.parse(readFileSync(f.spec, 'utf8')).$schema).toMatch(/vega-lite\/v6/);
    }
    // The figure whose every cell failed is a problem with the cells' reasons, not an empty chart.
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]?.figure).toBe('qcow2-only');
    expect(r.problems[0]?.message).toBe(
      `no data: cell fio.backend=qcow2.bs=4096 failed (${FAILED_REASON}); cell fio.backend=qcow2.bs=65536 timed out (timed out after 10m)`,
    );
  });

  it('puts provenance, charts, notes and every cell on the page, escaped', async () => {
    const dir = runDir();
    const r = await writeReport(dir, { metricInfo });
    const html = readFileSync(r.index, 'utf8');
    expect(html).toContain('Synthetic &lt;b&gt;run&lt;/b&gt; for the report &amp; its &quot;escaping&quot; test');
    expect(html).not.toContain('<b>run</b>');
    expect(html).not.toContain('<script');
    expect(html).toContain('&lt;script&gt;'); // the kernel command line of the fixture
    expect(html).toContain(escapeHtml(FAILED_REASON));
    for (const s of ['6.1.0-28-amd64', 'Intel(R) Xeon(R) CPU @ 2.20GHz', '4ce5c3b0123456789abcdef0123456789abcdef0', 'dirty', 'fio-3.33', 'qemu-img version 7.2.15', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', '/dev/shm/pcow-synthetic', '12 min 30 s', 'tcg']) {
      expect(html).toContain(s);
    }
    expect((html.match(/<img class="chart"/g) ?? []).length).toBe(2);
    expect(html).toContain('missing from the chart: cell fio.backend=qcow2.bs=4096 failed');
    // raw/4096 iops: 41000, 39360, 43050 → mean 41136.7, sd 1848.8, half-width t(2)·sd/√3 = 4.3027·1848.8/1.7321 = 4592.6
    expect(html).toContain('41,140 <span class="pm">± 4,600</span>');
    expect(html).toContain('95% CI [36,540, 45,730]');
    expect(html).toContain('href="../cells/fio.backend%3Draw.bs%3D4096/"');
    expect(html).toContain('href="../samples.jsonl"');
    expect(html).toContain('href="iops.vl.json"');
    expect(html).toMatch(/Content-Security-Policy" content="default-src 'none'/);
  });

  it('draws the other figures when one names an unknown axis', async () => {
    const dir = runDir();
    const cfgFile = path.join(dir, 'config.json');
    const cfg = JSON.parse(readFileSync(cfgFile, 'utf8'));
    cfg.figures.push({ id: 'typo', title: 'Typo', metric: 'iops', x: 'backnd', where: {}, mark: 'bar', yScale: 'linear' });
    writeFileSync(cfgFile, JSON.stringify(cfg));
    const r = await writeReport(dir, { metricInfo });
    expect(r.figures.map((f) => f.id)).toEqual(['iops', 'latency']);
    expect(r.problems.map((p) => p.message)).toContain('cannot draw: figure typo: x "backnd" is not a matrix axis (axes: backend, bs, workload)');
  });

  it('drops a torn last line of samples.jsonl with a warning, and rejects a bad line in the middle', async () => {
    const dir = runDir();
    const file = path.join(dir, 'samples.jsonl');
    appendFileSync(file, '{"cell":"fio.backend=raw.bs=4096","cellHa');
    const r = await writeReport(dir, { metricInfo });
    expect(readFileSync(r.index, 'utf8')).toMatch(/samples\.jsonl:25: torn last line dropped/);
    const lines = readFileSync(file, 'utf8').split('\n');
    lines[3] = '{"cell": "x", "value": "fast"}';
    writeFileSync(file, lines.slice(0, -1).join('\n') + '\n');
    await expect(writeReport(dir, { metricInfo })).rejects.toThrow(/samples\.jsonl:4: .*cellHash/);
    lines[3] = 'not json';
    writeFileSync(file, lines.slice(0, -1).join('\n') + '\n');
    await expect(writeReport(dir, { metricInfo })).rejects.toThrow(/samples\.jsonl:4: not a JSON sample row/);
  });

  it('names the file and field of a bad or missing input', async () => {
    const dir = runDir();
    const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
    manifest.harness.commit = 42;
    writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
    await expect(writeReport(dir)).rejects.toThrow(/manifest\.json: harness\.commit: /);
    writeFileSync(path.join(dir, 'cells.json'), '[{"id": 1}');
    unlinkSync(path.join(dir, 'manifest.json'));
    await expect(writeReport(dir)).rejects.toThrow(/manifest\.json: cannot read \(no such file\)/);
    await expect(writeReport(path.join(dir, 'nope'))).rejects.toThrow(/nope: no such run directory/);
  });

  it('renders a page even when no cell produced a sample, and drops charts of an earlier report', async () => {
    const dir = runDir();
    await writeReport(dir, { metricInfo });
    expect(existsSync(path.join(dir, 'report', 'iops.png'))).toBe(true);
    unlinkSync(path.join(dir, 'samples.jsonl'));
    const r = await writeReport(dir, { metricInfo });
    expect(readdirSync(path.join(dir, 'report'))).toEqual(['index.html']);
    expect(r.figures).toEqual([]);
    expect(r.problems).toHaveLength(3);
    const html = readFileSync(r.index, 'utf8');
    expect(html).toContain('samples.jsonl is missing');
    expect((html.match(/class="nodata"/g) ?? []).length).toBe(3);
  });
});

describe('the report in headless Chromium', () => {
  const haveChromium = existsSync(CHROMIUM);
  if (!haveChromium) console.warn(`skipping the browser test: ${CHROMIUM} is absent (apt-get install chromium)`);

  it.skipIf(!haveChromium)('opens offline with no console errors, shows the charts and the cell table', async () => {
    const dir = runDir();
    const r = await writeReport(dir, { metricInfo });
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const problems: string[] = [];
      const requests: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('requestfailed', (q) => problems.push(`request failed: ${q.url()}`));
      page.on('request', (q) => requests.push(q.url()));
      await page.goto(pathToFileURL(r.index).href, { waitUntil: 'load' });

      expect(await page.title()).toBe('synthetic — run 20250102T030405Z-ab12');
      const charts = await page.$$eval('img.chart', (imgs) => (imgs as HTMLImageElement[]).map((i) => ({ done: i.complete, w: i.naturalWidth, h: i.naturalHeight })));
      expect(charts).toHaveLength(2);
      for (const c of charts) {
        expect(c.done).toBe(true);
        expect(c.w).toBeGreaterThan(300);
        expect(c.h).toBeGreaterThan(200);
      }
      expect(await page.locator('#cell-table tbody tr').count()).toBe(6);
      expect(await page.locator('#cell-table thead').innerText()).toMatch(/iops[\s\S]*lat_mean/);
      expect(await page.locator('.nodata').innerText()).toContain('no data: cell fio.backend=qcow2.bs=4096 failed');
      expect(await page.locator('h1').innerText()).toContain('synthetic');
      // Nothing but the page itself and its inline images was requested: it works offline.
      expect(requests.filter((u) => !u.startsWith('data:') && u !== pathToFileURL(r.index).href)).toEqual([]);

      const shot = path.join(dir, 'screenshot.png');
      await page.screenshot({ path: shot, fullPage: true });
      const png = readFileSync(shot);
      expect(png.subarray(1, 4).toString()).toBe('PNG');
      expect(png.readUInt32BE(16)).toBe(1280);
      expect(png.readUInt32BE(20)).toBeGreaterThan(900);
      expect(png.length).toBeGreaterThan(50_000);
      expect(problems).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
