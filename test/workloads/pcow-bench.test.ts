// The pcow-bench workload: parameters per case, argv, the C tool's own argument checks, and
// real runs of tiny cells through prepare → run → cleanup on tmpfs.
import { existsSync } from 'node:fs';
import { readFile, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildNative, nativeBinDir, nativeBins } from '../../src/build/native.ts';
import {
  CASE_PARAMS,
  DESCRIPTION,
  PCOW_BENCH_CASES,
  PcowBenchParams,
  describeFile,
  imageName,
  inspectImage,
  keepsImage,
  pcowBenchArgs,
  pcowBenchWorkload,
  loadDescription,
  SUBUNIT,
  type PcowBenchCaseName,
  type PcowBenchParamsInput,
} from '../../src/workloads/pcow-bench.ts';
import { getWorkload } from '../../src/workloads/registry.ts';
import { liveChildCount, run } from '../../src/util/proc.ts';
import { testContext, type TestContext } from './context.ts';

const params = (p: PcowBenchParamsInput) => PcowBenchParams.parse(p);
const problems = (p: unknown): string => {
  const r = PcowBenchParams.safeParse(p);
  return r.success ? '' : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n');
};

/** argv for parameters the harness refuses: each given as pcow-bench's flag, to see the C tool refuse them too. */
function rawArgv(p: PcowBenchParamsInput): string[] {
  const a = ['case', String(p.case), '--dir', '/dev/shm'];
  for (const [k, v] of Object.entries(p)) {
    if (k === 'case') continue;
    if (k === 'write' || k === 'random') a.push('--rw', `${p.random === false ? '' : 'rand'}${p.write ? 'write' : 'read'}`);
    else a.push(`--${k.replace(/_/g, '-')}`, String(v));
  }
  return a;
}

describe('PcowBenchParams', () => {
  it('fills the case\'s defaults, and only those', () => {
    expect(params({ case: 'expansion', prealloc: 64 })).toEqual({ case: 'expansion', cluster_size: 65536, prealloc: 64, clusters: 2000 });
    expect(params({ case: 'steady', backend: 'both', size: '128MiB', bs: '1m', write: true })).toEqual({
      case: 'steady',
      backend: 'both',
      bs: 1 << 20,
      write: true,
      random: true,
      threads: 1,
      size: 128 << 20,
      seconds: 1,
      rounds: 10,
      cluster_size: 65536,
    });
    expect(params({ case: 'floor' })).toEqual({ case: 'floor', variant: 'both', faults: 20000 });
    expect(params({ case: 'cow' })).toEqual({ case: 'cow', cluster_size: 65536, prealloc: 0, cow_unit: 'whole', clusters: 1500 });
    expect(params({ case: 'cow', cluster_size: '2M', cow_unit: '32K' })).toMatchObject({ cluster_size: 2 << 20, cow_unit: 32768 });
    // a unit of the whole cluster is "whole", so the two spellings are one cell
    expect(params({ case: 'cow', cow_unit: '64K' }).cow_unit).toBe('whole');
    // open's virtual size is computed by pcow-bench when not given
    expect(params({ case: 'open' })).toEqual({ case: 'open', clusters: 10000, cluster_size: 4096 });
  });

  it('comes from pcow-bench\'s description (describe.json), the one table of cases and parameters', () => {
    expect(DESCRIPTION.cases.map((c) => c.name)).toEqual([...PCOW_BENCH_CASES]);
    for (const c of DESCRIPTION.cases) {
      const names = c.params.map((p) => p.name);
      expect(CASE_PARAMS[c.name as PcowBenchCaseName], c.name).toEqual(names.flatMap((n) => (n === 'rw' ? ['write', 'random'] : [n])));
      // every rule names parameters of its own case
      for (const r of c.rules) for (const o of [r.param, ...r.of]) if (typeof o === 'string') expect(names, `${c.name}: ${o}`).toContain(o);
    }
    // every described parameter (rw aside) is a key of the schema, typed in PcowBenchParamsT
    const keys = Object.keys(PcowBenchParams.in.def.shape);
    for (const c of DESCRIPTION.cases) for (const p of c.params) if (p.name !== 'rw') expect(keys).toContain(p.name);
    expect(() => loadDescription('{', 'd.json')).toThrow(/^d\.json: not valid JSON .*make -C native\/runtime describe/);
    expect(() => loadDescription('{"tool":"pcow-bench","mode":"describe","subunit":4096,"cases":[]}', 'd.json')).toThrow(/^d\.json: cases ; this harness knows floor, expansion/);
  });

  it('rejects a parameter the case does not use, naming the case\'s parameters', () => {
    expect(problems({ case: 'expansion', stripes: 2 })).toBe('stripes: stripes does not apply to case expansion (its parameters: cluster_size, prealloc, clusters)');
    // the COW unit changes nothing in an expansion: not accepted there
    expect(problems({ case: 'expansion', cow_unit: '4K' })).toBe('cow_unit: cow_unit does not apply to case expansion (its parameters: cluster_size, prealloc, clusters)');
    expect(problems({ case: 'floor', cluster_size: '64K' })).toBe('cluster_size: cluster_size does not apply to case floor (its parameters: variant, faults)');
    expect(problems({ case: 'steady', prealloc: 64 })).toMatch(/^prealloc: prealloc does not apply to case steady/);
  });

  it('checks the COW unit against the cluster and the format\'s sub-unit', () => {
    expect(SUBUNIT).toBe(4096);
    // 4 KiB copies at 2 MiB clusters: 512 sub-units, recorded in a 64-byte bitmap record.
    expect(problems({ case: 'cow', cluster_size: '2M', cow_unit: '4K' })).toBe('');
    expect(problems({ case: 'cow', cow_unit: 0 })).toBe('');
    expect(problems({ case: 'cow', cow_unit: '24K' })).toBe('cow_unit: cow_unit must be a power of two from 4 KiB to 2 MiB, or "whole" (got 24 KiB)');
    expect(problems({ case: 'cow', cow_unit: '128K' })).toBe('cow_unit: cow_unit 128 KiB does not divide cluster_size 64 KiB (a power of two up to it, or "whole")');
    // the cluster size is what changed: the message still names the COW unit
    expect(problems({ case: 'cow', cow_unit: '1M', cluster_size: '512K' })).toMatch(/^cow_unit: cow_unit 1 MiB does not divide cluster_size 512 KiB/);
    expect(problems({ case: 'cow', cluster_size: '64K', cow_unit: 2048 })).toMatch(/^cow_unit: cow_unit must be a power of two from 4 KiB to 2 MiB, or "whole" \(got 2 KiB\)/);
    expect(problems({ case: 'cow', cow_unit: 'half' })).toMatch(/^cow_unit: /);
    expect(problems({ case: 'cow', prealloc: 70000 })).toBe('prealloc: prealloc must be a whole number from 1 to 65536, or 0 (off) (got 70000)');
  });

  it('checks sizes, counts, enums and the rules between parameters', () => {
    expect(problems({ case: 'expansion', cluster_size: '3K' })).toBe('cluster_size: cluster_size must be a power of two from 4 KiB to 2 MiB (got 3 KiB)');
    expect(problems({ case: 'steady', size: '8M' })).toBe('size: size must be at least 16 MiB (got 8 MiB)');
    expect(problems({ case: 'steady', size: '24M', cluster_size: '16M' })).toMatch(/^cluster_size: cluster_size must be a power of two from 4 KiB to 2 MiB/);
    expect(problems({ case: 'steady', size: '16388K' })).toBe('size: size 16388 KiB is not a multiple of 64 KiB (cluster_size 64 KiB)');
    expect(problems({ case: 'steady', size: '16M', bs: '16M', threads: 2 })).toBe('size: size (16 MiB) is too small for threads 2 × bs 16 MiB (one block per thread)');
    expect(problems({ case: 'steady', bs: 3000 })).toBe('bs: bs must be a power of two from 512 B to 64 MiB (got 3000 B)');
    expect(problems({ case: 'stripes', size: '17M' })).toBe('size: size 17 MiB is not a multiple of 2 MiB (cluster_size 64 KiB and 2 MiB) (whole stripe units)');
    expect(problems({ case: 'open', clusters: 1000, virtual_size: '1M' })).toBe('virtual_size: virtual_size (1 MiB) is too small for clusters 1000 × cluster_size 4 KiB (room for the clusters)');
    expect(problems({ case: 'open', virtual_size: '1000K' })).toMatch(/^virtual_size: virtual_size 1000 KiB is not a multiple of 4 KiB|^virtual_size: virtual_size \(1000 KiB\) is too small/);
    // a rule broken by a default is reported at the parameter that was given
    expect(problems({ case: 'steady', cluster_size: '2M', size: '17M' })).toMatch(/^size: size 17 MiB is not a multiple of 2 MiB/);
    expect(problems({ case: 'steady', seconds: 0 })).toBe('seconds: seconds must be a number of seconds from 0.01 to 3600 (got 0)');
    expect(problems({ case: 'steady', rounds: 0 })).toBe('rounds: rounds must be a whole number from 1 to 1000 (got 0)');
    expect(problems({ case: 'steady', backend: 'qcow2' })).toMatch(/^backend: /);
    expect(problems({ case: 'steady', threads: 0 })).toMatch(/^threads: threads must be a whole number from 1 to 64 \(got 0\)/);
    expect(problems({ case: 'steady', threads: 1.5 })).toMatch(/^threads: /);
    expect(problems({ case: 'nope' })).toMatch(/^case: /);
    expect(problems({})).toMatch(/^case: /);
    expect(problems({ case: 'floor', flavour: 'x' })).toMatch(/Unrecognized key.*"flavour"/);
    expect(problems({ case: 'steady', rw: 'randread' })).toMatch(/Unrecognized key.*"rw"/);
  });

  it('argv: only the case\'s options in pcow-bench\'s order, --rw from write/random, --keep when an image stays', () => {
    const st = params({ case: 'steady', backend: 'both', write: true, random: false, bs: '1M', size: '64M' });
    expect(pcowBenchArgs(st, '/d', '/d/pcow-bench.img')).toEqual([
      'case', 'steady', '--dir', '/d', '--backend', 'both', '--bs', '1048576', '--rw', 'write', '--threads', '1',
      '--size', '67108864', '--seconds', '1', '--rounds', '10', '--cluster-size', '65536', '--keep', '/d/pcow-bench.img',
    ]);
    expect(pcowBenchArgs(params({ case: 'cow', cow_unit: '4K' }), '/d')).toEqual([
      'case', 'cow', '--dir', '/d', '--cluster-size', '65536', '--prealloc', '0', '--cow-unit', '4096', '--clusters', '1500',
    ]);
    expect(pcowBenchArgs(params({ case: 'cow' }), '/d')).toContain('whole');
    expect(keepsImage(params({ case: 'floor' }))).toBe(false);
    expect(keepsImage(params({ case: 'steady', backend: 'raw' }))).toBe(false);
    expect(keepsImage(params({ case: 'steady', backend: 'both' }))).toBe(true);
    expect(getWorkload('pcow-bench')).toBe(pcowBenchWorkload);
    expect(pcowBenchWorkload.needsNative).toBe(true);
  });
});

describe('pcow-bench on this host', () => {
  let bench = '';
  beforeAll(async () => {
    const b = await buildNative();
    bench = b.bins.pcowBench;
    expect(b.bins).toEqual(nativeBins());
    expect(existsSync(bench)).toBe(true);
  });

  let ctx: TestContext | undefined;
  afterEach(async () => {
    await ctx?.dispose();
    ctx = undefined;
    expect(liveChildCount()).toBe(0);
  });

  it('the C tool validates its arguments: exit 2, a message naming the problem, nothing on stdout', async () => {
    const cases: [string[], RegExp][] = [
      [['case', 'bogus'], /unknown case 'bogus' \(known: floor, expansion, cow, steady, open, stripes\)/],
      [['case', 'steady', '--size', '12Q'], /case steady: --size '12Q' is not a size \(use e\.g\. 4096, 64K, 2M, 1G\)/],
      [['case', 'cow', '--cow-unit', '24K'], /case cow: --cow-unit 24K must be a power of two from 4K to 2M, or "whole"/],
      [['case', 'cow', '--cow-unit', '128K'], /case cow: --cow-unit 128K does not divide the cluster size 64K/],
      [['case', 'cow', '--prealloc', '70000'], /case cow: --prealloc '70000' must be a whole number from 0 \(off\) to 65536/],
      [['case', 'expansion', '--stripes', '2'], /case expansion: --stripes does not apply to this case \(its options: --cluster-size --prealloc --clusters --dir --keep\)/],
      [['case', 'expansion', '--cow-unit', '4K'], /case expansion: --cow-unit does not apply to this case/],
      [['case', 'floor', '--keep', '/dev/shm/x.img'], /case floor: --keep does not apply to this case/],
      [['case', 'steady', '--threads', '0'], /--threads '0' must be a whole number from 1 to 64/],
      [['case', 'steady', '--size', '16M', '--bs', '16M', '--threads', '2'], /case steady: --size 16M is too small for --threads 2 x --bs 16M/],
      [['case', 'stripes', '--size', '17M'], /case stripes: --size 17M must be a multiple of 2M/],
      [['case', 'steady', '--backend', 'raw', '--keep', '/dev/shm/x.img'], /--keep needs a pcow image/],
      [['case', 'expansion', '--clusters'], /--clusters needs a value/],
      [['case', 'expansion', '--cluster-size', '2M', '--clusters', '100000000'], /needs about 190\.7T in \/dev\/shm, which has .* free/],
      [['case', '--describe', 'x'], /case --describe takes no other arguments/],
      [['--size', '1X'], /--size '1X' is not a size/],
    ];
    for (const [args, msg] of cases) {
      const r = await run(bench, args);
      expect(r.exitCode, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(msg);
      expect(r.stdout, args.join(' ')).toBe('');
    }
  });

  it('describe.json is what the built pcow-bench prints (make -C native/runtime describe regenerates it)', async () => {
    const r = await run(bench, ['case', '--describe']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout, 'native/runtime/bench/describe.json is stale: run make -C native/runtime describe and commit it').toBe(await readFile(describeFile, 'utf8'));
  });

  it('the harness and the C tool accept and reject the same parameters, and fill in the same defaults', async () => {
    const sets: PcowBenchParamsInput[] = [
      { case: 'floor' },
      { case: 'floor', variant: 'mmap', faults: 100 },
      { case: 'floor', faults: 99 },
      { case: 'expansion', prealloc: 64, cluster_size: '2M', clusters: 256 },
      { case: 'expansion', cow_unit: '4K' },
      { case: 'expansion', prealloc: 65537 },
      { case: 'cow' },
      { case: 'cow', cow_unit: '4K', cluster_size: '2M' },
      { case: 'cow', cow_unit: '64K' },
      { case: 'cow', cow_unit: '24K' },
      { case: 'cow', cow_unit: '128K' },
      { case: 'cow', cow_unit: '2K' },
      { case: 'cow', cow_unit: '1M', cluster_size: '512K' },
      { case: 'steady' },
      { case: 'steady', backend: 'both', write: true, random: false, bs: '1M', threads: 2, size: '64M', rounds: 20 },
      { case: 'steady', size: '8M' },
      { case: 'steady', size: '16388K' },
      { case: 'steady', size: '16M', bs: '16M', threads: 2 },
      { case: 'steady', cluster_size: '2M', size: '18M' },
      { case: 'steady', bs: 3000 },
      { case: 'steady', seconds: 0.001 },
      { case: 'steady', rounds: 1001 },
      { case: 'open' },
      { case: 'open', clusters: 1000, virtual_size: '1M' },
      { case: 'open', clusters: 100, virtual_size: '1001K' },
      { case: 'open', clusters: 100, virtual_size: '1M' },
      { case: 'stripes', stripes: 4, size: '64M', threads: 2 },
      { case: 'stripes', size: '17M' },
      { case: 'stripes', stripes: 9 },
    ];
    for (const set of sets) {
      const ts = PcowBenchParams.safeParse(set);
      const argv = ts.success ? pcowBenchArgs(ts.data, '/dev/shm') : rawArgv(set);
      const c = await run(bench, [...argv, '--check']);
      const what = `${JSON.stringify(set)} -> pcow-bench ${argv.join(' ')}: ${c.stderr.trim()}`;
      expect(c.exitCode === 0, what).toBe(ts.success);
      if (!ts.success) continue;
      // the C tool's parameters as used = the harness's cell parameters
      const cParams = (JSON.parse(c.stdout) as { params: Record<string, unknown> }).params;
      const { case: _c, write, random, ...mine } = ts.data as unknown as Record<string, unknown>;
      for (const [k, v] of Object.entries(mine)) {
        const expected = k === 'cow_unit' && v === 'whole' ? cParams.cluster_size : v;
        expect(k === 'seconds' ? Number(cParams[k]) : cParams[k], `${what}: ${k}`).toEqual(expected);
      }
      if (cParams.rw !== undefined) expect(cParams.rw, what).toBe(`${random === false ? '' : 'rand'}${write ? 'write' : 'read'}`);
    }
  });

  it('steady, backend both: the CI of pcow_over_raw is the order-statistics interval of the paired ratios\' median', async () => {
    const one = async (rounds: number) => {
      const r = await run(bench, ['case', 'steady', '--backend', 'both', '--size', '16M', '--seconds', '0.2', '--rounds', String(rounds)]);
      expect(r.exitCode, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { result: { ratios: number[]; pcow_over_raw: number; pcow_over_raw_ci95?: [number, number] } }).result;
    };
    const r = await one(20);
    const s = [...r.ratios].sort((a, b) => a - b);
    expect(s).toHaveLength(20);
    // n = 20: P(Binomial(20, 1/2) < 6) = 2.1% <= 2.5% < P(< 7): the 6th smallest and the 6th largest
    expect(r.pcow_over_raw_ci95).toEqual([s[5], s[14]]);
    expect(r.pcow_over_raw).toBeCloseTo((s[9]! + s[10]!) / 2, 3);
    // fewer than 6 rounds cannot give 95%: no interval rather than a made-up one
    expect((await one(5)).pcow_over_raw_ci95).toBeUndefined();
  });

  it('the suite reports expansion / floor at 64K-2M clusters and 4 KiB COW / mmap floor as same-run targets', async () => {
    const r = await run(bench, ['--json', '--quick', '--only', 'expansion,cow']);
    expect(r.exitCode, r.stderr).toBe(0);
    type H = { p50_ns: number };
    const d = JSON.parse(r.stdout) as {
      floor: { uffdio_copy: H; mmap_fixed_wake: H };
      expansion: { cells: { cluster_size: number; burst: { touch: H }; prealloc_on: { touch: H }; prealloc_off: { touch: H } }[] };
      cow: { c64k_unit4k: { touch: H } };
      targets: { id: string; value: number | null; op: string; limit: number; pass: boolean | null }[];
      errors: string[];
    };
    expect(d.errors).toEqual([]);
    const t = new Map(d.targets.map((x) => [x.id, x]));
    const expectTarget = (id: string, value: number, limit: number) => {
      const x = t.get(id);
      expect(x, id).toMatchObject({ op: '<=', limit, pass: expect.any(Boolean) });
      expect(x!.value, id).toBeCloseTo(value, 3); // printed with 4 decimals
      if (Math.abs(x!.value! - limit) > 1e-3) expect(x!.pass, id).toBe(x!.value! <= limit); // pass is decided unrounded
    };
    expect(d.expansion.cells.map((c) => c.cluster_size)).toEqual([64 << 10, 256 << 10, 1 << 20, 2 << 20]);
    for (const [i, id] of ['64k', '256k', '1m', '2m'].entries()) {
      const c = d.expansion.cells[i]!;
      expectTarget(`expansion_p50_prealloc_burst_over_floor_${id}`, c.burst.touch.p50_ns / d.floor.uffdio_copy.p50_ns, 2);
      expect(c.prealloc_on.touch.p50_ns, id).toBeGreaterThan(0); // the sustained stream is reported too
      expect(c.prealloc_off.touch.p50_ns, id).toBeGreaterThan(0);
    }
    expectTarget('cow4k_p50_over_floor_mmap', d.cow.c64k_unit4k.touch.p50_ns / d.floor.mmap_fixed_wake.p50_ns, 1.3);
  });

  it('a tiny expansion cell: prepare → run → samples, the kept image in details → cleanup leaves nothing', async () => {
    ctx = await testContext('pcow-bench-exp');
    ctx.nativeBin = nativeBinDir;
    const p = params({ case: 'expansion', prealloc: 16, clusters: 200 });
    await pcowBenchWorkload.prepare(ctx, p);
    const r = await pcowBenchWorkload.run(ctx, p);
    const m = Object.fromEntries(r.samples.map((s) => [s.metric, s.value]));
    expect(m.expansions).toBe(200);
    expect(m.allocated_clusters).toBe(200);
    expect(m.leaked_clusters).toBe(0);
    expect(m.lat_p50).toBeGreaterThan(0);
    expect(m.floor_p50).toBeGreaterThan(0);
    expect(m.lat_p50_over_floor).toBeCloseTo(m.lat_p50! / m.floor_p50!, 3);
    const names = new Set(pcowBenchWorkload.metrics.map((x) => x.name));
    for (const s of r.samples) expect(names.has(s.metric), s.metric).toBe(true);
    expect(r.rawFiles).toEqual(['pcow-bench.json', 'pcow-bench.stderr', 'pcow-img-check.json', 'pcow-img-info.json']);
    for (const f of r.rawFiles) expect(existsSync(path.join(ctx.outDir, f)), f).toBe(true);
    const d = r.details as { image: { allocatedClusters: number; layers: { active: boolean; clusters: number }[]; check: { status: string } }; runtime: { prealloc_depth: number } };
    expect(d.image.allocatedClusters).toBe(200);
    expect(d.image.layers).toEqual([{ id: 1, name: '', active: true, clusters: 200 }]);
    expect(d.image.check.status).toBe('clean');
    expect(d.runtime.prealloc_depth).toBe(16);
    expect(await ctx.leftovers()).toEqual([imageName]);
    // a second run (warmup, then the measured run) starts from nothing again
    await pcowBenchWorkload.run(ctx, p);
    await pcowBenchWorkload.cleanup(ctx, p);
    expect(await ctx.leftovers()).toEqual([]);
  });

  it('a tiny cow cell keeps the snapshot and the copies; a steady raw cell keeps nothing', async () => {
    ctx = await testContext('pcow-bench-cow');
    ctx.nativeBin = nativeBinDir;
    const cow = params({ case: 'cow', cow_unit: '4K', clusters: 100 });
    await pcowBenchWorkload.prepare(ctx, cow);
    const r = await pcowBenchWorkload.run(ctx, cow);
    const m = Object.fromEntries(r.samples.map((s) => [s.metric, s.value]));
    expect(m.cows).toBe(100);
    expect(m.cow_bytes).toBe(100 * 4096);
    const layers = (r.details as { image: { layers: { name: string; active: boolean }[] } }).image.layers;
    expect(layers.map((l) => [l.name, l.active])).toEqual([['base', false], ['', true]]);
    await pcowBenchWorkload.cleanup(ctx, cow);

    const raw = params({ case: 'steady', backend: 'raw', size: '16M', seconds: 0.05 });
    await pcowBenchWorkload.prepare(ctx, raw);
    const rr = await pcowBenchWorkload.run(ctx, raw);
    expect(rr.samples.map((s) => s.metric).sort()).toEqual(['bw', 'iops']);
    expect(rr.details?.image).toBeUndefined();
    expect(await ctx.leftovers()).toEqual([]);
  });

  it('a failing pcow-bench fails the run with its command and stderr', async () => {
    ctx = await testContext('pcow-bench-fail');
    ctx.nativeBin = nativeBinDir;
    const p = params({ case: 'expansion', clusters: 10 });
    await pcowBenchWorkload.prepare(ctx, p);
    // the data directory vanishes between prepare and run
    const gone = path.join(ctx.root, 'gone');
    const err = await pcowBenchWorkload.run({ ...ctx, dataDir: gone }, p).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/pcow-bench case expansion --dir .*gone .*: exit code 2\npcow-bench: case expansion: --dir .*gone: No such file or directory\n\(stderr: .*pcow-bench\.stderr\)/);
    expect(await readFile(path.join(ctx.outDir, 'pcow-bench.stderr'), 'utf8')).toMatch(/No such file or directory/);
  });

  it('without the native tools the run says how to build them', async () => {
    ctx = await testContext('pcow-bench-nobin');
    ctx.nativeBin = path.join(ctx.root, 'nowhere');
    await expect(pcowBenchWorkload.prepare(ctx, params({ case: 'floor' }))).rejects.toThrow(/nowhere\/pcow-bench not found: the native build makes it \(make -C native\/runtime/);
  });

  it('pcow-bench output that is not JSON fails the run naming the file', async () => {
    ctx = await testContext('pcow-bench-badjson');
    ctx.nativeBin = nativeBinDir;
    const p = params({ case: 'floor', faults: 200 });
    // the real tool, asked for the help text: exit 0, but not a case object
    const { parsePcowBench } = await import('../../src/workloads/pcow-bench-parse.ts');
    const help = await run(bench, ['case', '--help']);
    expect(help.exitCode).toBe(0);
    expect(() => parsePcowBench(help.stdout, 'help.txt')).toThrow(/^help\.txt: not valid JSON .*"usage: pcow-bench case floor/);
    // and a floor cell runs without an image
    const r = await pcowBenchWorkload.run(ctx, p);
    expect(r.rawFiles).toEqual(['pcow-bench.json', 'pcow-bench.stderr']);
    expect(r.samples.find((s) => s.metric === 'floor_p50')?.value).toBeGreaterThan(0);
  });

  it('an image pcow-img check finds corrupt fails the cell, naming the image and the problem', async () => {
    ctx = await testContext('pcow-bench-corrupt');
    ctx.nativeBin = nativeBinDir;
    const image = path.join(ctx.dataDir, imageName);
    const r = await run(bench, ['case', 'expansion', '--clusters', '20', '--dir', ctx.dataDir, '--keep', image]);
    expect(r.exitCode).toBe(0);
    const { pcowImg } = nativeBins();
    const good = await inspectImage(pcowImg, image, undefined, ctx.outDir);
    expect(good.check.status).toBe('clean');
    expect(JSON.parse(await readFile(path.join(ctx.outDir, 'pcow-img-check.json'), 'utf8'))).toMatchObject({ corruptions: 0 });
    // cut the last data cluster off: its entry now points past the end of the file
    await truncate(image, (await stat(image)).size - 65536);
    await expect(inspectImage(pcowImg, image)).rejects.toThrow(/pcow-bench\.img: pcow-img check found 1 corruption after the run:\n.*lies outside the file/);
    await writeFile(path.join(ctx.dataDir, 'unrelated'), '');
    await pcowBenchWorkload.cleanup(ctx, params({ case: 'expansion' }));
    expect(await ctx.leftovers()).toEqual(['unrelated']);
  });
});
