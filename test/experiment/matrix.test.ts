import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import type { Cell } from '../../src/experiment/cell.ts';
import { CellFilterError, ExperimentError } from '../../src/experiment/errors.ts';
import { loadExperiment } from '../../src/experiment/load.ts';
import { canonicalJson, cellHash, describeCells, expandMatrix, filterCells, sanitiseId } from '../../src/experiment/matrix.ts';
import { Experiment } from '../../src/experiment/schema.ts';
import { fakeLookup, fakeOpts, fakeTools } from './fake-workloads.ts';

const fx = (name: string): string => `test/fixtures/experiments/${name}`;

/** Expand an inline experiment (YAML text) with the fake registry. */
function cellsOf(yaml: string): Cell[] {
  return expandMatrix(Experiment.parse(parseYaml(yaml)), fakeLookup, fakeTools);
}

const ids = (cells: readonly Cell[]): string[] => cells.map((c) => c.id);

describe('cross product', () => {
  it('crosses axes in written order, first axis outermost, and numbers the cells', async () => {
    const { cells, config, file, text, sha256 } = await loadExperiment(fx('cross.yaml'), fakeOpts);
    expect(ids(cells)).toEqual([
      'fio-dax.bs=4k.rw=randread',
      'fio-dax.bs=4k.rw=randwrite',
      'fio-dax.bs=64KiB.rw=randread',
      'fio-dax.bs=64KiB.rw=randwrite',
      'fio-dax.bs=1M.rw=randread',
      'fio-dax.bs=1M.rw=randwrite',
    ]);
    expect(cells.map((c) => c.index)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(cells[2]!.axes).toEqual({ bs: '64KiB', rw: 'randread' });
    expect(cells[2]!.workload).toBe('fio-dax');
    expect(cells[2]!.tool).toBe('fio');
    // Parameters: the spec, the axis values, and the tool's defaults, as the tool parsed them.
    expect(cells[2]!.params).toEqual({
      bs: 65536,
      rw: 'randread',
      numjobs: 1,
      iodepth: 1,
      size: 128 * 1024 * 1024,
      runtime: 2000,
      engine: 'mmap',
      direct: false,
    });
    expect(config.repetitions).toBe(5);
    expect(config.timeout).toBe('90s');
    expect(config.host).toEqual({ pm: { kind: 'emulated' }, sysctls: {} });
    expect(file).toBe(`${process.cwd()}/${fx('cross.yaml')}`);
    expect(sha256).toBe(createHash('sha256').update(text).digest('hex'));
  });

  it('a matrix without axes is one cell of the only workload', () => {
    const cells = cellsOf('name: one\nworkloads: {fio: {tool: fio, bs: 64k}}');
    expect(ids(cells)).toEqual(['fio']);
    expect(cells[0]!.axes).toEqual({});
    expect(cells[0]!.params['bs']).toBe(65536);
  });
});

describe('zip and exclude', () => {
  it('zipped axes advance together; excluded combinations are dropped and the rest renumbered', async () => {
    const { cells, config } = await loadExperiment(fx('zip-exclude.yaml'), fakeOpts);
    expect(ids(cells)).toEqual(['fio.bs=4k.iodepth=1.numjobs=1', 'fio.bs=4k.iodepth=32.numjobs=1', 'fio.bs=1M.iodepth=1.numjobs=16']);
    expect(cells.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(cells.map((c) => [c.params['bs'], c.params['iodepth'], c.params['numjobs']])).toEqual([
      [4096, 1, 1],
      [4096, 32, 1],
      [1048576, 1, 16],
    ]);
    expect(config.host.pm).toEqual({ kind: 'fsdax', device: '/dev/pmem0', mount: '/mnt/pmem' });
    expect(config.host.sysctls).toEqual({ 'vm.max_map_count': 262144 });
  });

  it('a zip group sits where its first axis is written', () => {
    const cells = cellsOf(`
name: zip-order
workloads: {fio: {tool: fio}}
matrix:
  axes: {rw: [read, write], bs: [4k, 8k, 16k], numjobs: [1, 2, 4]}
  zip: [[numjobs, bs]]
`);
    expect(ids(cells)).toEqual([
      'fio.rw=read.bs=4k.numjobs=1',
      'fio.rw=read.bs=8k.numjobs=2',
      'fio.rw=read.bs=16k.numjobs=4',
      'fio.rw=write.bs=4k.numjobs=1',
      'fio.rw=write.bs=8k.numjobs=2',
      'fio.rw=write.bs=16k.numjobs=4',
    ]);
  });

  it('an exclude rule drops every cell matching all its keys', () => {
    const cells = cellsOf(`
name: excl
workloads: {fio: {tool: fio}}
matrix:
  axes: {bs: [4k, 64k], rw: [read, write], numjobs: [1, 4]}
  exclude: [{bs: 64k, rw: write}, {numjobs: 4, rw: read}]
`);
    expect(ids(cells)).toEqual(['fio.bs=4k.rw=read.numjobs=1', 'fio.bs=4k.rw=write.numjobs=1', 'fio.bs=4k.rw=write.numjobs=4', 'fio.bs=64k.rw=read.numjobs=1']);
  });
});

describe('several workloads', () => {
  it('an axis applies to the workloads whose tool has that parameter; the others do not multiply', async () => {
    const { cells } = await loadExperiment(fx('two-tools.yaml'), fakeOpts);
    expect(ids(cells)).toEqual([
      'fio-blk.bs=4k.rw=randread',
      'fio-blk.bs=4k.rw=randwrite',
      'fio-blk.bs=64k.rw=randread',
      'fio-blk.bs=64k.rw=randwrite',
      'img.bs=4k.format=raw',
      'img.bs=4k.format=qcow2',
      'img.bs=64k.format=raw',
      'img.bs=64k.format=qcow2',
    ]);
    expect(cells[4]!.axes).toEqual({ workload: 'img', bs: '4k', format: 'raw' });
    expect(cells[4]!.params).toEqual({ format: 'raw', count: 5000, depth: 1, bs: 4096, write: false });
    expect(cells[0]!.axes).toEqual({ workload: 'fio-blk', bs: '4k', rw: 'randread' });
    expect(cells[0]!.params['direct']).toBe(true);
  });

  it('an axis no workload in use accepts is an error naming the tools', () => {
    expect(() =>
      cellsOf(`
name: x
workloads: {fio: {tool: fio}}
matrix: {axes: {format: [raw, qcow2]}}
`),
    ).toThrow('matrix.axes.format: axis "format" is not a parameter of fio');
  });
});

describe('names that are also JavaScript object properties', () => {
  it('are plain names: no crash, the usual errors', () => {
    expect(() => cellsOf('name: x\nworkloads: {fio: {tool: fio}}\nmatrix: {axes: {constructor: [1]}}')).toThrow(
      'matrix.axes.constructor: axis "constructor" is not a parameter of fio',
    );
    expect(() => cellsOf('name: x\nworkloads: {fio: {tool: fio}}\nmatrix: {axes: {workload: [toString]}}')).toThrow(
      'matrix.axes.workload[0]: no workload named "toString"',
    );
    expect(() => cellsOf('name: x\nworkloads: {fio: {tool: fio}}\nmatrix: {axes: {bs: [4k]}, zip: [[bs, hasOwnProperty]]}')).toThrow(
      'matrix.zip[0][1]: unknown axis "hasOwnProperty"',
    );
  });
});

describe('cell ids', () => {
  it('are sanitised to file-name characters', () => {
    expect(sanitiseId('fio.label=/dev/shm x')).toBe('fio.label=_dev_shm_x');
    const cells = cellsOf(`
name: x
workloads: {v: {tool: verbatim}}
matrix: {axes: {label: ["a b", "c/d", "1.5", "x:y"]}}
`);
    expect(ids(cells)).toEqual(['v.label=a_b', 'v.label=c_d', 'v.label=1.5', 'v.label=x_y']);
  });

  it('must be unique', () => {
    expect(() =>
      cellsOf(`
name: x
workloads: {v: {tool: verbatim}}
matrix: {axes: {label: ["a b", "a/b"]}}
`),
    ).toThrow(/would both get the id "v.label=a_b"/);
  });
});

describe('cell hash', () => {
  const base = `
name: h
workloads: {fio: {tool: fio, size: 64MiB, numjobs: 2}}
matrix: {axes: {bs: [4k, 64k]}}
`;

  it('is the first 16 hex digits of sha256 over canonical JSON of {tool, params}', () => {
    const cell = cellsOf(base)[0]!;
    const canonical = canonicalJson({ tool: cell.tool, params: cell.params });
    expect(canonical).toBe(
      '{"params":{"bs":4096,"direct":false,"engine":"psync","iodepth":1,"numjobs":2,"runtime":10000,"rw":"randread","size":67108864},"tool":"fio"}',
    );
    expect(cell.hash).toBe(createHash('sha256').update(canonical).digest('hex').slice(0, 16));
    expect(cell.hash).toMatch(/^[0-9a-f]{16}$/);
    // Pinned: a change here invalidates every resumable run, so it must be deliberate.
    expect(cell.hash).toBe('3d29d54bc7a0e966');
  });

  it('is stable: key order, spelling of sizes, defaults written out, workload names do not matter', () => {
    const [a] = cellsOf(base);
    const [b] = cellsOf(`
name: other-name
repetitions: 9
workloads: {renamed: {numjobs: 2, tool: fio, size: 67108864, engine: psync, direct: false}}
matrix: {axes: {bs: [4096, 64k]}}
`);
    expect(b!.id).toBe('renamed.bs=4096');
    expect(b!.hash).toBe(a!.hash);
    expect(cellHash('fio', { b: 1, a: { y: 2, x: 1 } })).toBe(cellHash('fio', { a: { x: 1, y: 2 }, b: 1 }));
  });

  it('changes with any parameter, the axis values, and the tool', () => {
    const [a, a64] = cellsOf(base);
    const [c] = cellsOf(base.replace('numjobs: 2', 'numjobs: 3'));
    const [d] = cellsOf(base.replace('size: 64MiB', 'size: 65MiB'));
    const hashes = new Set([a!.hash, a64!.hash, c!.hash, d!.hash]);
    expect(hashes.size).toBe(4);
    expect(cellHash('fio', { bs: 4096 })).not.toBe(cellHash('verbatim', { bs: 4096 }));
  });

  it('follows the tool: a tool that keeps sizes as written tells 4k from 4096', () => {
    const cells = cellsOf(`
name: v
workloads: {v: {tool: verbatim}}
matrix: {axes: {bs: [4k, 4096]}}
`);
    expect(cells[0]!.hash).not.toBe(cells[1]!.hash);
    expect(() => cellsOf('name: f\nworkloads: {fio: {tool: fio}}\nmatrix: {axes: {bs: [4k, 4096]}}')).toThrow(
      /bs=4096 means the same as bs=4k to fio/,
    );
  });
});

describe('expandMatrix without a file', () => {
  it('throws ExperimentError with key paths and no positions', () => {
    try {
      cellsOf('name: x\nworkloads: {fio: {tool: fi}}');
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ExperimentError);
      expect((e as Error).message).toBe('<experiment x>: workloads.fio.tool: unknown tool "fi" (did you mean "fio"?)');
    }
  });
});

describe('problems reported together', () => {
  it('an unknown tool does not hide the other workloads\' problems', () => {
    expect(() => cellsOf('name: x\nworkloads: {a: {tool: fioo}, b: {tool: fio, numjob: 2}}\nmatrix: {axes: {workload: [a, b]}}')).toThrow(
      '<experiment x>: workloads.a.tool: unknown tool "fioo" (did you mean "fio"?)\n' +
        '<experiment x>: workloads.b.numjob: unknown key "numjob" (did you mean "numjobs"?)',
    );
  });

  it('a matrix too large to run is refused before it is built', () => {
    const axis = (n: number): string => `[${Array.from({ length: 20 }, (_, i) => i + n * 100).join(', ')}]`;
    expect(() =>
      cellsOf(`name: x\nworkloads: {v: {tool: verbatim}}\nmatrix: {axes: {a: ${axis(1)}, b: ${axis(2)}, c: ${axis(3)}, d: ${axis(4)}}}`),
    ).toThrow('matrix.axes: the axes give 160000 combinations (20 × 20 × 20 × 20), more than 100000');
  });
});

describe('filterCells (--only)', () => {
  const cells = cellsOf(`
name: f
workloads:
  fio: {tool: fio}
  img: {tool: qemu-img-bench, format: raw}
matrix:
  axes:
    workload: [fio, img]
    bs: [4k, 64k]
    rw: [read, write]
`);

  it('one filter keeps the matching cells', () => {
    expect(ids(filterCells(cells, ['bs=64k']))).toEqual(['fio.bs=64k.rw=read', 'fio.bs=64k.rw=write', 'img.bs=64k']);
    expect(ids(filterCells(cells, ['workload=img']))).toEqual(['img.bs=4k', 'img.bs=64k']);
    expect(ids(filterCells(cells, ['tool=qemu-img-bench']))).toEqual(['img.bs=4k', 'img.bs=64k']);
    expect(ids(filterCells(cells, ['id=fio.bs=4k.rw=write']))).toEqual(['fio.bs=4k.rw=write']);
    expect(ids(filterCells(cells, [`hash=${cells[0]!.hash}`]))).toEqual([cells[0]!.id]);
    expect(filterCells(cells, [])).toEqual(cells);
  });

  it('the same key twice is OR, different keys are AND', () => {
    expect(ids(filterCells(cells, ['rw=read', 'rw=write', 'bs=4k']))).toEqual(['fio.bs=4k.rw=read', 'fio.bs=4k.rw=write']);
    expect(ids(filterCells(cells, ['workload=fio', 'workload=img', 'bs=4k']))).toEqual(['fio.bs=4k.rw=read', 'fio.bs=4k.rw=write', 'img.bs=4k']);
  });

  it('keeps the cells numbered as in the whole plan', () => {
    expect(filterCells(cells, ['workload=img']).map((c) => c.index)).toEqual([4, 5]);
  });

  it('rejects unknown keys, values that match nothing and malformed filters, saying what is valid', () => {
    expect(() => filterCells(cells, ['bz=4k'])).toThrow(CellFilterError);
    expect(() => filterCells(cells, ['bz=4k'])).toThrow('--only bz=4k: unknown key "bz" (did you mean "bs"?)');
    expect(() => filterCells(cells, ['zzzz=4k'])).toThrow('unknown key "zzzz"; valid keys: "workload", "bs", "rw", "tool", "id", "hash"');
    expect(() => filterCells(cells, ['bs=8k'])).toThrow('--only bs=8k: no cell has bs=8k (did you mean "4k"?); values of bs: "4k", "64k"');
    expect(() => filterCells(cells, ['workload=fi'])).toThrow('no cell has workload=fi (did you mean "fio"?); values of workload: "fio", "img"');
    expect(() => filterCells(cells, ['bs'])).toThrow('--only "bs": expected key=value');
    expect(() => filterCells(cells, ['workload=img', 'rw=read'])).toThrow('no cell matches all of these filters together');
  });
});

describe('describeCells (--dry-run)', () => {
  it('lists every cell with index, id, hash and the parameters that vary, aligned', async () => {
    const { cells } = await loadExperiment(fx('two-tools.yaml'), fakeOpts);
    const text = describeCells(cells);
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^#\s+id\s+hash\s+tool\s+bs\s+rw\s+format$/);
    for (const c of cells) {
      const row = lines[c.index + 1]!;
      expect(row.trimStart().startsWith(`${c.index}  ${c.id}`)).toBe(true);
      expect(row).toContain(c.hash);
      // Columns line up: the hash starts at the same offset on every row.
      expect(row.indexOf(c.hash)).toBe(lines[0]!.indexOf('hash'));
    }
    expect(lines[1]).toMatch(/fio\s+4096\s+randread\s+-$/);
    expect(lines[5]).toMatch(/qemu-img-bench\s+4096\s+-\s+raw$/);
    // What every cell of a workload shares is listed once, below the table.
    expect(text).toContain('same in every cell:');
    expect(text).toContain('  fio-blk (fio): direct=true engine=psync iodepth=1 numjobs=1 runtime=10000 size=67108864');
    expect(text).toContain('  img (qemu-img-bench): count=5000 depth=1 write=false');
  });

  it('says so when there are no cells', () => {
    expect(describeCells([])).toBe('(no cells)');
  });
});
