// The qemu-img-bench workload: schema, argv builders, and real qemu-img runs on tmpfs.
import { constants } from 'node:fs';
import { open, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  QemuImgBenchParams,
  qemuImgBenchArgs,
  qemuImgBenchWorkload,
  qemuImgCreateArgs,
  qemuImgFillArgs,
  type QemuImgBenchParamsInput,
} from '../../src/workloads/qemu-img-bench.ts';
import { getWorkload } from '../../src/workloads/registry.ts';
import { liveChildCount } from '../../src/util/proc.ts';
import { testContext, type TestContext } from './context.ts';

const params = (p: QemuImgBenchParamsInput) => QemuImgBenchParams.parse(p);
const problems = (p: unknown): string => {
  const r = QemuImgBenchParams.safeParse(p);
  return r.success ? '' : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n');
};

describe('QemuImgBenchParams', () => {
  it('defaults', () => {
    expect(params({})).toEqual({
      format: 'qcow2',
      size: 64 * 1024 * 1024,
      bs: 4096,
      depth: 1,
      write: false,
      cache: 'writeback',
      aio: 'threads',
      fill: true,
    });
    expect(params({ size: '1GiB', bs: '64k', cluster_size: '64KiB' })).toMatchObject({ size: 1 << 30, bs: 65536, cluster_size: 65536 });
  });

  it('rejects combinations qemu-img refuses or silently ignores, naming the field', () => {
    expect(problems({ count: 10, runtime: '1s' })).toBe('runtime: give count or runtime, not both');
    expect(problems({ aio: 'native' })).toBe('aio: aio=native needs cache=none or directsync (got cache=writeback)');
    expect(problems({ pattern: 7 })).toBe('pattern: pattern only applies to write benchmarks (write: true)');
    expect(problems({ write: true, depth: 8, flush_interval: 4 })).toBe('flush_interval: flush_interval (4) must be at least depth (8)');
    expect(problems({ flush_interval: 4 })).toBe('flush_interval: flush_interval only applies to write benchmarks (write: true)');
    expect(problems({ no_drain: true })).toBe('no_drain: no_drain only applies with flush_interval');
    expect(problems({ format: 'raw', cluster_size: '64k' })).toBe('cluster_size: cluster_size only applies to format qcow2');
    expect(problems({ cluster_size: '3k' })).toBe('cluster_size: cluster_size must be a power of two from 512 B to 2 MiB (got 3072)');
    expect(problems({ format: 'raw', preallocation: 'metadata' })).toBe('preallocation: preallocation=metadata only applies to format qcow2');
    expect(problems({ size: 1000, bs: 512 })).toBe('size: size must be a positive multiple of 512 bytes (got 1000)');
    expect(problems({ size: '4k', bs: '8k' })).toBe('bs: bs (8192 bytes) is larger than the image (4096 bytes)');
    expect(problems({ cache: 'none', bs: 100 })).toBe('bs: cache=none (O_DIRECT) needs bs to be a multiple of 512 (got 100)');
    expect(problems({ offset: '64MiB' })).toBe('offset: offset (67108864) is beyond the image (67108864 bytes)');
    expect(problems({ format: 'vmdk' })).toMatch(/^format: /);
    expect(problems({ depth: 0 })).toMatch(/^depth: /);
    expect(problems({ flush: 3 })).toMatch(/Unrecognized key.*"flush"/);
  });
});

describe('argv builders', () => {
  it('bench, create and fill', () => {
    const p = params({ format: 'qcow2', size: '16MiB', bs: '4k', depth: 4, write: true, cache: 'none', aio: 'native', pattern: 7, step: '64k', offset: 512, flush_interval: 32, no_drain: true, cluster_size: '64k', preallocation: 'metadata' });
    expect(qemuImgBenchArgs(p, '/pm/img.qcow2', 1000)).toEqual([
      'bench', '-f', 'qcow2', '-c', '1000', '-d', '4', '-s', '4096', '-S', '65536', '-o', '512', '-w', '--pattern=7', '--flush-interval=32', '--no-drain', '-t', 'none', '-i', 'native', '/pm/img.qcow2',
    ]);
    expect(qemuImgCreateArgs(p, '/pm/img.qcow2')).toEqual(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536,preallocation=metadata', '/pm/img.qcow2', '16777216']);
    expect(qemuImgCreateArgs(params({ format: 'raw', size: '1MiB' }), '/pm/i.raw')).toEqual(['create', '-q', '-f', 'raw', '/pm/i.raw', '1048576']);
    expect(qemuImgFillArgs(p, '/pm/img.qcow2')).toEqual(['bench', '-f', 'qcow2', '-w', '-c', '16', '-d', '16', '-s', '1048576', '--pattern=165', '-t', 'writeback', '/pm/img.qcow2']);
    // A size that 1 MiB does not divide is filled in smaller requests.
    expect(qemuImgFillArgs(params({ size: 1536 * 1024 }), 'i')).toEqual(expect.arrayContaining(['-c', '24', '-s', '65536']));
  });

  it('is registered as tool "qemu-img-bench" and requires qemu-utils', () => {
    expect(getWorkload('qemu-img-bench')).toBe(qemuImgBenchWorkload);
    expect(qemuImgBenchWorkload.requires).toEqual([{ command: 'qemu-img', debianPackage: 'qemu-utils' }]);
    expect(qemuImgBenchWorkload.metrics.map((m) => [m.name, m.unit, m.better])).toEqual([
      ['iops', 'IOPS', 'higher'],
      ['bw', 'B/s', 'higher'],
      ['seconds', 's', 'lower'],
    ]);
  });
});

async function odirectOnTmpfs(dir: string): Promise<boolean> {
  const f = path.join(dir, 'odirect-probe');
  try {
    await (await open(f, constants.O_CREAT | constants.O_RDWR | constants.O_DIRECT)).close();
    return true;
  } catch {
    return false;
  } finally {
    await rm(f, { force: true });
  }
}

describe('qemu-img bench for real on tmpfs', () => {
  let ctx: TestContext | undefined;
  afterEach(async () => {
    await ctx?.dispose();
    ctx = undefined;
    expect(liveChildCount()).toBe(0);
  });

  const metrics = (samples: { metric: string; value: number }[]): Record<string, number> => {
    const m = Object.fromEntries(samples.map((s) => [s.metric, s.value]));
    expect(Object.keys(m)).toEqual(['iops', 'bw', 'seconds']);
    for (const [k, v] of Object.entries(m)) expect(v, k).toBeGreaterThan(0);
    return m;
  };

  it('raw reads of a filled image: prepare creates and fills, run measures, cleanup removes', async () => {
    ctx = await testContext('qib-raw');
    const p = params({ format: 'raw', size: '4MiB', count: 20000 });
    await qemuImgBenchWorkload.prepare(ctx, p);
    const image = path.join(ctx.dataDir, 'qemu-img-bench.raw');
    // Filled: every byte allocated on tmpfs, with the fill pattern.
    expect((await stat(image)).blocks * 512).toBe(4 * 1024 * 1024);
    const buf = await readFile(image);
    expect(buf[0]).toBe(0xa5);
    expect(buf[buf.length - 1]).toBe(0xa5);
    const r = await qemuImgBenchWorkload.run(ctx, p);
    const m = metrics(r.samples);
    expect(m.iops).toBeCloseTo(20000 / m.seconds!, 6);
    expect(m.bw).toBeCloseTo(m.iops! * 4096, 0);
    expect(r.rawFiles).toEqual(['qemu-img-bench.txt', 'qemu-img-bench.stderr', 'qemu-img-info.json']);
    expect(await readFile(path.join(ctx.outDir, 'qemu-img-bench.txt'), 'utf8')).toMatch(/^Sending 20000 read requests, 4096 bytes each, 1 in parallel/);
    expect(r.details).toMatchObject({ requests: 20000, op: 'read', depth: 1, image: { format: 'raw', virtualSize: 4 << 20, actualSize: 4 << 20 } });
    await qemuImgBenchWorkload.cleanup(ctx, p);
    expect(await ctx.leftovers()).toEqual([]);
  });

  it('qcow2 writes for a target runtime: the count is calibrated in prepare', async () => {
    ctx = await testContext('qib-qcow2');
    const p = params({ format: 'qcow2', size: '8MiB', write: true, depth: 4, runtime: '300ms', cluster_size: '64k' });
    await qemuImgBenchWorkload.prepare(ctx, p);
    const r = await qemuImgBenchWorkload.run(ctx, p);
    metrics(r.samples);
    const d = r.details as { requests: number; calibration: { count: number; seconds: number }[]; image: { clusterSize: number; actualSize: number } };
    expect(d.calibration.length).toBeGreaterThan(0);
    expect(d.calibration[d.calibration.length - 1]!.seconds).toBeGreaterThan(0);
    expect(d.requests).toBeGreaterThan(d.calibration[0]!.count);
    expect(d.image.clusterSize).toBe(65536);
    expect(d.image.actualSize).toBeGreaterThanOrEqual(8 << 20); // filled: data clusters + metadata
    await qemuImgBenchWorkload.cleanup(ctx, p);
    expect(await ctx.leftovers()).toEqual([]);
  });

  it('fill=false: every run starts from a fresh image, so reads hit holes and allocate nothing', async () => {
    ctx = await testContext('qib-holes');
    const p = params({ format: 'qcow2', size: '8MiB', count: 5000, fill: false });
    await qemuImgBenchWorkload.prepare(ctx, p);
    const r = await qemuImgBenchWorkload.run(ctx, p);
    metrics(r.samples);
    const d = r.details as { image: { actualSize: number } };
    expect(d.image.actualSize).toBeLessThan(1 << 20); // header, L1 and refcount blocks only
    await qemuImgBenchWorkload.cleanup(ctx, p);
    expect(await ctx.leftovers()).toEqual([]);
  });

  it('cache=none with native aio (O_DIRECT on tmpfs, or the hint where the kernel lacks it)', async () => {
    ctx = await testContext('qib-direct');
    const p = params({ format: 'qcow2', size: '4MiB', count: 5000, cache: 'none', aio: 'native', write: true });
    if (await odirectOnTmpfs(ctx.dataDir)) {
      await qemuImgBenchWorkload.prepare(ctx, p);
      metrics((await qemuImgBenchWorkload.run(ctx, p)).samples);
    } else {
      await expect(qemuImgBenchWorkload.prepare(ctx, p).then(() => qemuImgBenchWorkload.run(ctx!, p))).rejects.toThrow(/O_DIRECT/);
    }
    await qemuImgBenchWorkload.cleanup(ctx, p);
    expect(await ctx.leftovers()).toEqual([]);
  });

  it('qemu-img failing: the command, the exit status and its message', async () => {
    ctx = await testContext('qib-fail');
    const p = params({ format: 'qcow2', size: '1MiB', count: 100 });
    await qemuImgBenchWorkload.prepare(ctx, p);
    await rm(path.join(ctx.dataDir, 'qemu-img-bench.qcow2'));
    await expect(qemuImgBenchWorkload.run(ctx, p)).rejects.toThrow(/qemu-img bench .*: exit code 1\n.*Could not open .*qemu-img-bench\.qcow2.*No such file or directory/);
    await expect(qemuImgBenchWorkload.run({ ...ctx, dataDir: path.join(ctx.root, 'nowhere') }, p)).rejects.toThrow(/qemu-img-bench\.state\.json unreadable \(was prepare run\?\)/);
  });

  it('aborting the context signal stops qemu-img', async () => {
    ctx = await testContext('qib-abort');
    const p = params({ format: 'raw', size: '1MiB', count: 2_000_000_000, fill: false });
    await qemuImgBenchWorkload.prepare(ctx, p);
    const running = qemuImgBenchWorkload.run(ctx, p);
    setTimeout(() => ctx!.abort.abort(), 300);
    await expect(running).rejects.toThrow(/aborted/);
  });

  it('qemu-img missing from PATH: a clear error naming the Debian package', async () => {
    ctx = await testContext('qib-missing');
    const saved = process.env.PATH;
    process.env.PATH = ctx.root;
    try {
      await expect(qemuImgBenchWorkload.prepare(ctx, params({}))).rejects.toThrow('qemu-img: command not found on PATH (install the Debian package "qemu-utils")');
    } finally {
      process.env.PATH = saved;
    }
  });
});
