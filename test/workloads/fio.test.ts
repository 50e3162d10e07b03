// The fio workload: parameter schema, the pure argv builder, and real fio runs on tmpfs.
import { constants } from 'node:fs';
import { open, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FioParams, fioArgs, fioTarget, fioWorkload, runFio, type FioParamsInput } from '../../src/workloads/fio.ts';
import { FioJobError } from '../../src/workloads/fio-parse.ts';
import { getWorkload } from '../../src/workloads/registry.ts';
import { liveChildCount, which } from '../../src/util/proc.ts';
import { testContext, type TestContext } from './context.ts';

const params = (p: FioParamsInput) => FioParams.parse(p);
const problems = (p: unknown): string => {
  const r = FioParams.safeParse(p);
  return r.success ? '' : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n');
};

describe('FioParams', () => {
  it('defaults: the dax path (mmap), 4 KiB random reads, one job', () => {
    expect(params({})).toEqual({
      ioengine: 'mmap',
      rw: 'randread',
      bs: 4096,
      size: 64 * 1024 * 1024,
      numjobs: 1,
      iodepth: 1,
      runtime: '10s',
      time_based: true,
      direct: false,
      file_per_job: false,
    });
  });

  it('sizes are normalised to bytes, durations kept as written', () => {
    const p = params({ bs: '1MiB', size: '1g', runtime: 30, ramp_time: '500ms' });
    expect([p.bs, p.size, p.runtime, p.ramp_time]).toEqual([1048576, 1073741824, 30, '500ms']);
    // Parsing the parsed value again changes nothing (the harness may validate twice).
    expect(params(p)).toEqual(p);
  });

  it('rejects what fio would reject or silently ignore, naming the field', () => {
    expect(problems({ engine: 'mmap' })).toMatch(/Unrecognized key.*"engine"/);
    expect(problems({ ioengine: 'spdk' })).toMatch(/^ioengine: /);
    expect(problems({ ioengine: 'psync', iodepth: 16 })).toBe('iodepth: iodepth=16 needs an async engine (libaio); psync does one I/O at a time');
    expect(problems({ rw: 'randread', rwmixread: 70 })).toBe('rwmixread: rwmixread only applies to a mixed rw (rw, readwrite, randrw), not rw=randread');
    expect(problems({ rw: 'randrw', rwmixread: 101 })).toMatch(/^rwmixread: /);
    expect(problems({ bs: '4q' })).toMatch(/^bs: .*4096, 4k, 64KiB/);
    expect(problems({ bs: '8k', size: '4k' })).toBe('size: size (4096 bytes) is smaller than bs (8192 bytes)');
    expect(problems({ direct: true, bs: 1000 })).toBe('bs: direct=true needs bs to be a multiple of 512 (got 1000)');
    expect(problems({ runtime: 'fast' })).toMatch(/^runtime: /);
    expect(problems({ numjobs: 0 })).toMatch(/^numjobs: /);
    expect(problems({ direct: 'yes' })).toMatch(/^direct: /);
  });
});

describe('fioArgs', () => {
  it('builds the full argv for the paper\'s 4 KiB, 16-thread cell on a guest path', () => {
    const p = params({ ioengine: 'mmap', rw: 'randwrite', bs: '4k', size: '1GiB', numjobs: 16, runtime: '30s', thread: true });
    expect(fioArgs(p, '/mnt/pmem/fio-data', { output: '/root/out/fio.json' })).toEqual([
      '--output-format=json',
      '--output=/root/out/fio.json',
      '--name=pcow',
      '--filename=/mnt/pmem/fio-data',
      '--ioengine=mmap',
      '--rw=randwrite',
      '--bs=4096',
      '--size=1073741824',
      '--numjobs=16',
      '--iodepth=1',
      '--direct=0',
      '--time_based=1',
      '--runtime=30000ms',
      '--thread=1',
      '--group_reporting=1',
      '--unified_rw_reporting=both',
    ]);
  });

  it('optional fields, per-job files and the layout pass', () => {
    const p = params({
      ioengine: 'libaio',
      rw: 'randrw',
      rwmixread: 70,
      iodepth: 8,
      direct: true,
      ramp_time: 2,
      fsync: 4,
      fdatasync: 8,
      sync: 'dsync',
      end_fsync: true,
      norandommap: true,
      randrepeat: false,
      file_per_job: true,
      time_based: false,
    });
    const a = fioArgs(p, '/data/cell/fio-data', { createOnly: true, name: 'x' });
    expect(a).toContain('--name=x');
    expect(a).not.toContain('--filename=/data/cell/fio-data');
    expect(a).toEqual(expect.arrayContaining(['--directory=/data/cell', '--filename_format=fio-data.$jobnum']));
    expect(a).toEqual(
      expect.arrayContaining(['--rwmixread=70', '--iodepth=8', '--direct=1', '--time_based=0', '--ramp_time=2000ms', '--fsync=4', '--fdatasync=8', '--sync=dsync', '--end_fsync=1', '--norandommap=1', '--randrepeat=0']),
    );
    expect(a[a.length - 1]).toBe('--create_only=1');
    expect(a.some((x) => x.startsWith('--output='))).toBe(false);
  });

  it('is registered as tool "fio" and requires fio', () => {
    expect(getWorkload('fio')).toBe(fioWorkload);
    expect(fioWorkload.requires).toEqual([{ command: 'fio', debianPackage: 'fio' }]);
    const names = fioWorkload.metrics.map((m) => m.name);
    expect(names).toEqual(expect.arrayContaining(['iops', 'bw', 'lat_mean', 'lat_p50', 'lat_p99', 'lat_p999', 'read_iops', 'write_lat_p99']));
    expect(fioWorkload.metrics.find((m) => m.name === 'lat_p99')).toMatchObject({ unit: 'ns', better: 'lower' });
    expect(fioWorkload.metrics.find((m) => m.name === 'bw')).toMatchObject({ unit: 'B/s', better: 'higher' });
  });
});

/** Can this kernel open a file on /dev/shm with O_DIRECT (tmpfs: Linux >= 6.6)? */
async function odirectOnTmpfs(dir: string): Promise<boolean> {
  const f = path.join(dir, 'odirect-probe');
  try {
    const h = await open(f, constants.O_CREAT | constants.O_RDWR | constants.O_DIRECT);
    await h.close();
    return true;
  } catch {
    return false;
  } finally {
    await rm(f, { force: true });
  }
}

describe('fio for real on tmpfs (runtime 1 s)', () => {
  let ctx: TestContext | undefined;
  afterEach(async () => {
    await ctx?.dispose();
    ctx = undefined;
    expect(liveChildCount()).toBe(0);
  });

  const sane = (samples: { metric: string; value: number; unit: string }[], bs: number): Record<string, number> => {
    const m = Object.fromEntries(samples.map((s) => [s.metric, s.value]));
    for (const s of samples) {
      expect(Number.isFinite(s.value), s.metric).toBe(true);
      expect(s.value, s.metric).toBeGreaterThan(0);
    }
    expect(m.iops).toBeGreaterThan(100);
    // bw and iops come from one report: bw = iops × bs within rounding.
    expect(m.bw! / (m.iops! * bs)).toBeCloseTo(1, 2);
    expect(m.lat_p50!).toBeLessThanOrEqual(m.lat_p99!);
    expect(m.lat_p99!).toBeLessThanOrEqual(m.lat_p999!);
    return m;
  };

  it('dax path: mmap random reads — prepare lays the file out, run measures, cleanup removes it', async () => {
    ctx = await testContext('fio-dax');
    const p = params({ ioengine: 'mmap', rw: 'randread', size: '4MiB', runtime: '1s' });
    await fioWorkload.prepare(ctx, p);
    expect((await stat(fioTarget(ctx.dataDir))).size).toBe(4 * 1024 * 1024);
    const r = await fioWorkload.run(ctx, p);
    sane(r.samples, 4096);
    expect(r.samples.map((s) => s.metric)).not.toContain('read_iops');
    expect(r.rawFiles).toEqual(['fio.json', 'fio.stderr']);
    const report = JSON.parse(await readFile(path.join(ctx.outDir, 'fio.json'), 'utf8'));
    expect(report.jobs[0]['job options'].ioengine).toBe('mmap');
    expect(r.details).toMatchObject({ fioVersion: expect.stringMatching(/^fio-/), directions: ['read'], percentilesExact: true });
    await fioWorkload.cleanup(ctx, p);
    expect(await ctx.leftovers()).toEqual([]);
  });

  it('blk path: psync O_DIRECT random writes (or the O_DIRECT hint where tmpfs lacks it)', async () => {
    ctx = await testContext('fio-blk');
    const p = params({ ioengine: 'psync', rw: 'randwrite', direct: true, size: '4MiB', runtime: '1s' });
    if (await odirectOnTmpfs(ctx.dataDir)) {
      await fioWorkload.prepare(ctx, p);
      const r = await fioWorkload.run(ctx, p);
      sane(r.samples, 4096);
      expect(r.details).toMatchObject({ directions: ['write'] });
    } else {
      await expect(fioWorkload.prepare(ctx, p).then(() => fioWorkload.run(ctx!, p))).rejects.toThrow(/O_DIRECT/);
    }
    await fioWorkload.cleanup(ctx, p);
    expect(await ctx.leftovers()).toEqual([]);
  });

  it('libaio mixed randrw, 2 jobs with a file each: exact totals and per-direction samples', async () => {
    ctx = await testContext('fio-mixed');
    const p = params({ ioengine: 'libaio', rw: 'randrw', rwmixread: 70, iodepth: 4, numjobs: 2, file_per_job: true, size: '2MiB', runtime: '1s' });
    await fioWorkload.prepare(ctx, p);
    expect((await ctx.leftovers()).sort()).toEqual(['fio-data.0', 'fio-data.1']);
    const r = await fioWorkload.run(ctx, p);
    const m = sane(r.samples, 4096);
    expect(m.read_iops! + m.write_iops!).toBeCloseTo(m.iops!, -2);
    expect(m.read_iops!).toBeGreaterThan(m.write_iops!);
    expect(r.details).toMatchObject({ directions: ['read', 'write'], percentilesExact: true });
    await fioWorkload.cleanup(ctx, p);
    expect(await ctx.leftovers()).toEqual([]);
  });

  it('a job error (libpmem off DAX) names the job, the errno and the cause', async () => {
    ctx = await testContext('fio-pmem');
    const p = params({ ioengine: 'libpmem', size: '1MiB', runtime: '1s' });
    await fioWorkload.prepare(ctx, p); // the layout pass does not load the engine's file check
    const err = await fioWorkload.run(ctx, p).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(FioJobError);
    expect((err as Error).message).toBe(
      `${path.join(ctx.outDir, 'fio.json')}: job "pcow" (jobs[0], group 0) failed with error 95 EOPNOTSUPP (Operation not supported) — the libpmem engine needs a file on a DAX file system (tmpfs and ordinary ext4 are not)`,
    );
    await fioWorkload.cleanup(ctx, p);
    expect(await ctx.leftovers()).toEqual([]);
  });

  it('fio refusing its options: the exit status, fio\'s message and the unusable report are reported', async () => {
    ctx = await testContext('fio-badopt');
    const fio = (await which('fio'))!;
    const outFile = path.join(ctx.outDir, 'fio.json');
    const errFile = path.join(ctx.outDir, 'fio.stderr');
    const notADir = path.join(ctx.dataDir, 'plain-file');
    await (await open(notADir, 'w')).close();
    const args = ['--output-format=json', `--output=${outFile}`, '--name=x', `--directory=${notADir}`, '--rw=read', '--size=1M'];
    await expect(runFio(fio, args, { outFile, errFile }, params({}), ctx.signal)).rejects.toThrow(/exit code 1\n(.|\n)*is not a directory(.|\n)*fio\.json: no JSON object found/);
  });

  it('aborting the context signal stops fio (the process group is killed)', async () => {
    ctx = await testContext('fio-abort');
    const p = params({ ioengine: 'psync', size: '1MiB', runtime: '60s' });
    await fioWorkload.prepare(ctx, p);
    const running = fioWorkload.run(ctx, p);
    setTimeout(() => ctx!.abort.abort(), 300);
    await expect(running).rejects.toThrow(/aborted/);
  });

  it('fio missing from PATH: a clear error naming the Debian package', async () => {
    ctx = await testContext('fio-missing');
    const saved = process.env.PATH;
    process.env.PATH = ctx.root; // an empty directory
    try {
      await expect(fioWorkload.prepare(ctx, params({}))).rejects.toThrow('fio: command not found on PATH (install the Debian package "fio")');
    } finally {
      process.env.PATH = saved;
    }
  });
});
