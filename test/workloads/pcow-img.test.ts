// pcow-img info/check --output=json: parsers on real outputs (test/fixtures/pcow-bench), and the
// runners against real images on tmpfs (clean, corrupt, leaking, unreadable, missing).
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildNative, nativeBins } from '../../src/build/native.ts';
import { PcowImgError, parsePcowImgCheck, parsePcowImgInfo, pcowImgCheck, pcowImgInfo } from '../../src/workloads/pcow-img.ts';
import { runChecked } from '../../src/util/proc.ts';

const fx = (name: string): string => readFileSync(path.join('test/fixtures/pcow-bench', name), 'utf8');
const exitOf = (name: string): number => Number(fx(`check-${name}.exit`).trim());

describe('parsePcowImgInfo', () => {
  it('an expansion image: one active layer holding every touched cluster', () => {
    const i = parsePcowImgInfo(fx('info-expansion.json'), 'info-expansion.json');
    expect(i.allocatedClusters).toBe(300);
    expect(i.totalDataClusters).toBe(300);
    expect(i.clusterSize).toBe(65536);
    expect(i.layers).toHaveLength(1);
    expect(i.layers[0]).toMatchObject({ active: true, clusters: 300 });
    expect(i.activeLayer).toBe(i.layers[0]!.id);
    expect(i.base).toBeNull();
    expect(i.fileSize).toBeGreaterThanOrEqual(300 * 65536);
  });

  it('a cow image: the snapshot "base" and the active layer with the copies', () => {
    const i = parsePcowImgInfo(fx('info-cow.json'), 'info-cow.json');
    expect(i.layers.map((l) => [l.name, l.active, l.clusters])).toEqual([
      ['base', false, 300],
      ['', true, 300],
    ]);
    expect(i.totalDataClusters).toBe(600);
    expect(i.subunitSize).toBe(4096);
  });

  it('a striped image lists its files', () => {
    const i = parsePcowImgInfo(fx('info-striped.json'), 'info-striped.json');
    expect(i.stripes.count).toBe(2);
    expect(i.stripes.files).toHaveLength(2);
  });

  it('errors name the source and the field', () => {
    expect(() => parsePcowImgInfo('nope', 'x.img')).toThrow(/^x\.img: pcow-img info output is not valid JSON .*"nope"/);
    const doc = JSON.parse(fx('info-expansion.json')) as Record<string, unknown>;
    delete doc.allocated_clusters;
    expect(() => parsePcowImgInfo(JSON.stringify(doc), 'x.img')).toThrow(/^x\.img: not pcow-img info JSON: allocated_clusters: /);
    const qcow = { ...JSON.parse(fx('info-expansion.json')), format: 'qcow2' } as Record<string, unknown>;
    expect(() => parsePcowImgInfo(JSON.stringify(qcow), 'x.img')).toThrow(/format: /);
  });
});

describe('parsePcowImgCheck', () => {
  it('clean, corrupt (exit 2) and leaks (exit 3) are results', () => {
    const c = parsePcowImgCheck(fx('check-clean.json'), 0, 'clean');
    expect(c).toMatchObject({ status: 'clean', corruptions: 0, leaks: 0, allocatedClusters: 300, messages: [] });
    expect(exitOf('corrupt')).toBe(2);
    const k = parsePcowImgCheck(fx('check-corrupt.json'), 2, 'corrupt');
    expect(k.status).toBe('corrupt');
    expect(k.corruptions).toBe(1);
    expect(k.messages[0]!.message).toMatch(/lies outside the file/);
    expect(exitOf('leaks')).toBe(3);
    const l = parsePcowImgCheck(fx('check-leaks.json'), 3, 'leaks');
    expect(l).toMatchObject({ status: 'leaks', leaks: 1, corruptions: 0 });
  });

  it('an exit status that disagrees with the counts is an error', () => {
    expect(() => parsePcowImgCheck(fx('check-clean.json'), 2, 'c.img')).toThrow(/^c\.img: exit status 2 \(corrupt\) disagrees with the report: 0 corruptions, 0 leaks/);
    expect(() => parsePcowImgCheck(fx('check-corrupt.json'), 0, 'c.img')).toThrow(/disagrees/);
    expect(() => parsePcowImgCheck('{}', 0, 'c.img')).toThrow(/^c\.img: not pcow-img check JSON: /);
  });
});

describe('pcow-img runners on real images', () => {
  let dir = '';
  let bin = '';
  beforeAll(async () => {
    await buildNative();
    bin = nativeBins().pcowImg;
    dir = await mkdtemp('/dev/shm/pcow-test-img-');
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function twoClusters(name: string): Promise<{ image: string; size: number }> {
    const image = path.join(dir, name);
    await runChecked(bin, ['create', '-c', '64K', image, '1M']);
    const data = path.join(dir, 'data');
    await writeFile(data, Buffer.alloc(65536, 0x5a));
    await runChecked(bin, ['write', image, '0', data]);
    await runChecked(bin, ['write', image, '131072', data]);
    return { image, size: (await stat(image)).size };
  }

  it('info and check of a good image', async () => {
    const { image } = await twoClusters('good.img');
    const info = await pcowImgInfo(bin, image);
    expect(info.result.allocatedClusters).toBe(2);
    expect(info.command).toContain('info --output=json');
    expect(JSON.parse(info.text)).toMatchObject({ allocated_clusters: 2 });
    const check = await pcowImgCheck(bin, image);
    expect(check.result.status).toBe('clean');
  });

  it('check of a corrupt image is a result (exit 2), of an unreadable one an error naming the image and messages', async () => {
    const { image, size } = await twoClusters('corrupt.img');
    await truncate(image, size - 65536);
    const check = await pcowImgCheck(bin, image);
    expect(check.result.status).toBe('corrupt');
    expect(check.result.corruptions).toBe(1);

    // cut inside a cluster: a table lies beyond the end (corruption), the tail is a leak
    const cut = (await twoClusters('cut.img')).image;
    await truncate(cut, 200000);
    const cutCheck = await pcowImgCheck(bin, cut);
    expect(cutCheck.result.status).toBe('corrupt');
    expect(cutCheck.text).toMatch(/L2 table .* lies outside the file/);
    expect(cutCheck.text).toMatch(/unaligned tail/);

    // not an image at all: the check cannot run (exit 1), the error names the file and why
    const broken = path.join(dir, 'broken.img');
    await mkdir(broken);
    const err = await pcowImgCheck(bin, broken).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PcowImgError);
    expect((err as Error).message).toMatch(new RegExp(`^${broken.replace(/[.]/g, '\\.')}: .*pcow-img check --output=json -U .*broken\\.img: exit code 1 \\(the check could not complete\\)`));
    expect((err as Error).message).toMatch(/is a directory, not a regular file/);
  });

  it('a missing image: both runners fail with the command and pcow-img\'s message', async () => {
    const missing = path.join(dir, 'missing.img');
    await expect(pcowImgInfo(bin, missing)).rejects.toThrow(/missing\.img: .*pcow-img info --output=json -U .*missing\.img: exit code 1\n.*cannot open: No such file or directory/);
    await expect(pcowImgCheck(bin, missing)).rejects.toThrow(/missing\.img: .*exit code 1 \(the check could not complete\)\n.*cannot open/);
  });
});
