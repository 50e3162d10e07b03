// guest-fio without a guest: its parameter rules (each bad combination a clear error naming the
// key), the fio argv it runs in the guest (fill pass, stride), and fio-parse on real reports
// captured from these guests (test/fixtures/fio/guest: fio 3.33 in the Debian guest under TCG,
// from a guest-fio run: raw-dax mmap randwrite, qcow2-blk psync direct randwrite, a pcow-dax fill).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fioSamples, parseFioJson, summarizeFio } from '../../src/workloads/fio-parse.ts';
import { GuestFioParams, guestFioArgv, type GuestFioParamsT } from '../../src/workloads/guest-fio.ts';

const dir = path.join(import.meta.dirname, '..', 'fixtures', 'fio', 'guest');
const text = (n: string): string => readFileSync(path.join(dir, n), 'utf8');

const parse = (p: Record<string, unknown>): GuestFioParamsT => GuestFioParams.parse(p) as unknown as GuestFioParamsT;
const problems = (p: Record<string, unknown>): string[] => {
  const r = GuestFioParams.safeParse(p);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
};

describe('guest-fio parameters', () => {
  it('defaults: dax path, steady phase, 256 MiB NVDIMM, 64 KiB clusters', () => {
    const p = parse({ backend: 'pcow' });
    expect(p).toMatchObject({ backend: 'pcow', path: 'dax', phase: 'steady', pm_size: 256 * 1024 * 1024, cluster_size: 65536, stripes: 1, ioengine: 'mmap' });
  });

  it.each([
    [{ backend: 'qcow2', path: 'dax' }, /path: the qcow2 backend is a virtio disk: it has no dax path/],
    [{ backend: 'raw', phase: 'after-snapshot' }, /phase: a raw NVDIMM has no snapshots/],
    [{ backend: 'raw', prealloc_depth: 8 }, /prealloc_depth: prealloc_depth is a pcow option; backend is raw/],
    [{ backend: 'qcow2', path: 'blk', ioengine: 'psync', stripes: 2 }, /stripes: stripes is a pcow option/],
    [{ backend: 'pcow', path: 'blk', ioengine: 'mmap' }, /ioengine: the blk path does read\/write I\/O/],
    [{ backend: 'pcow', size: '250MiB', pm_size: '256MiB' }, /size: size 262144000 bytes does not fit the dax region/],
    [{ backend: 'pcow', rw: 'randwrite', stride: '64k', time_based: false }, /stride: stride applies to sequential rw/],
    [{ backend: 'pcow', rw: 'write', stride: '64k' }, /stride: .*set time_based: false/],
    [{ backend: 'pcow', ioengine: 'mmap', iodepth: 4 }, /iodepth: iodepth=4 needs an async engine/],
    [{ backend: 'pcow', pm_size: '3MiB', size: '1MiB' }, /pm_size: pm_size must be a multiple of 2 MiB/],
    [{ backend: 'nvme' }, /backend: /],
    [{ backend: 'pcow', cow_unit: 'half' }, /cow_unit: expected "whole" or a size such as 4K/],
  ])('%j is refused: %s', (p, re) => {
    expect(problems(p).join('\n')).toMatch(re);
  });

  it('the measured argv is fioArgs over the guest target; stride adds the skip and stops at the end of the region', () => {
    const p = parse({ backend: 'pcow', path: 'blk', ioengine: 'psync', direct: true, rw: 'write', bs: '4k', stride: '64k', time_based: false, size: '32MiB' });
    const a = guestFioArgv(p, '/dev/pmem0', '/root/pcow/fio.json');
    expect(a).toContain('--filename=/dev/pmem0');
    expect(a).toContain('--rw=write:61440');
    expect(a).toContain(`--io_size=${512 * 4096}`);
    expect(a).toContain('--direct=1');
    expect(a).toContain('--output=/root/pcow/fio.json');
  });

  it('the fill pass writes the whole region once, sequentially, with write(2) (direct on the blk path), one job unless each job has its own file', () => {
    const shared = parse({ backend: 'raw', rw: 'randread', bs: '4k', numjobs: 16, size: '64MiB' });
    const f = guestFioArgv(shared, '/mnt/pm/fio-data', 'x', true);
    expect(f).toEqual(expect.arrayContaining(['--name=fill', '--ioengine=psync', '--rw=write', '--bs=1048576', '--numjobs=1', '--time_based=0', '--direct=0']));
    const perJob = parse({ backend: 'raw', numjobs: 4, file_per_job: true, size: '16MiB' });
    expect(guestFioArgv(perJob, '/mnt/pm/fio-data', 'x', true)).toContain('--numjobs=4');
    const blk = parse({ backend: 'qcow2', path: 'blk', ioengine: 'psync', direct: true, size: '16MiB' });
    expect(guestFioArgv(blk, '/dev/vdb', 'x', true)).toContain('--direct=1');
  });
});

describe('fio-parse on reports captured in the guest', () => {
  it.each([
    ['raw-dax-mmap-randwrite.json', 'mmap', 'randwrite'],
    ['qcow2-blk-psync-randwrite.json', 'psync', 'randwrite'],
    ['pcow-dax-fill.json', 'psync', 'write'],
  ])('%s: one write direction, totals equal the report, percentiles exact', (name, engine, rw) => {
    const raw = JSON.parse(text(name)) as { jobs: { 'job options': Record<string, string>; write: { iops: number; bw_bytes: number; total_ios: number; clat_ns: { mean: number } } }[] };
    const job = raw.jobs[0]!;
    expect(job['job options']).toMatchObject({ ioengine: engine, rw });
    const report = parseFioJson(text(name), name);
    expect(report.fioVersion).toBe('fio-3.33');
    const s = summarizeFio(report);
    expect(s.directions).toEqual(['write']);
    expect(s.total.iops).toBeCloseTo(job.write.iops, 6);
    expect(s.total.bw).toBe(job.write.bw_bytes);
    expect(s.total.ios).toBe(job.write.total_ios);
    expect(s.total.clat.mean).toBeCloseTo(job.write.clat_ns.mean, 6);
    expect(s.total.clat.exact).toBe(true);
    const metrics = Object.fromEntries(fioSamples(s).map((x) => [x.metric, x.value]));
    expect(metrics['iops']).toBeGreaterThan(0);
    expect(metrics['lat_p99']).toBeGreaterThanOrEqual(metrics['lat_p50']!);
  });

  it('the captured figures keep the paper\'s ordering: raw-dax 4 KiB IOPS well above qcow2-blk', () => {
    const iops = (n: string): number => summarizeFio(parseFioJson(text(n), n)).total.iops;
    expect(iops('raw-dax-mmap-randwrite.json') / iops('qcow2-blk-psync-randwrite.json')).toBeGreaterThan(5);
  });
});
