import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExperimentError } from '../../src/experiment/errors.ts';
import { loadExperiment, type LoadOptions } from '../../src/experiment/load.ts';
import { registryLookup } from '../../src/workloads/registry.ts';
import { fakeOpts } from './fake-workloads.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'pcow-experiment-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function errorOf(text: string, opts: LoadOptions = fakeOpts): Promise<ExperimentError> {
  const file = path.join(dir, `e${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, text);
  try {
    await loadExperiment(file, opts);
  } catch (e) {
    if (e instanceof ExperimentError) return e;
    throw e;
  }
  throw new Error('loaded without an error');
}

describe('loadExperiment', () => {
  it('accepts YAML anchors and merge keys, and places problems inside them', async () => {
    const { cells } = await loadExperiment('test/fixtures/experiments/merge-keys.yaml', fakeOpts);
    expect(cells.map((c) => [c.id, c.params['numjobs'], c.params['engine'], c.params['size']])).toEqual([
      ['fio-a', 2, 'psync', 64 * 1024 * 1024],
      ['fio-b', 3, 'mmap', 64 * 1024 * 1024],
    ]);
    const e = await errorOf('name: m\nworkloads:\n  a: &c\n    tool: fio\n  b:\n    <<: *c\n    numjob: 3\nmatrix: {axes: {workload: [a, b]}}\n');
    expect(e.problems.map((p) => [p.line, p.col, p.path, p.message])).toEqual([[7, 5, 'workloads.b.numjob', 'unknown key "numjob" (did you mean "numjobs"?)']]);
  });

  it('with the real workload registry, suggests its tool names', async () => {
    const e = await errorOf('name: r\nworkloads:\n  w:\n    tool: fioo\n', registryLookup());
    expect(e.problems).toHaveLength(1);
    expect(e.problems[0]!.message).toBe('unknown tool "fioo" (did you mean "fio"?)');
  });

  it('lists the registered tools when nothing is close', async () => {
    const e = await errorOf('name: r\nworkloads:\n  w:\n    tool: redis\n');
    expect(e.problems[0]!.message).toBe('unknown tool "redis"; registered tools: "fio", "qemu-img-bench", "verbatim"');
  });

  it('lists valid keys when an unknown key is close to none', async () => {
    const e = await errorOf('name: r\nworkloads:\n  w:\n    tool: verbatim\n    zzzzzz: 1\n');
    expect(e.problems[0]!.message).toBe('unknown key "zzzzzz"; valid keys: "bs", "label"');
    expect([e.problems[0]!.line, e.problems[0]!.col]).toEqual([5, 5]);
  });

  it('reports every bad axis value once, with all the workloads it fails for', async () => {
    const e = await errorOf(
      'name: r\nworkloads:\n  f: {tool: fio}\n  q: {tool: qemu-img-bench, format: raw}\nmatrix:\n  axes:\n    workload: [f, q]\n    bs: [4k, huge]\n    rw: [read, write]\n',
    );
    expect(e.message).toBe(
      `${e.problems[0]!.file}:8:14: matrix.axes.bs[1]: invalid size "huge": expected a size such as 4096, 4k, 64KiB, 1GiB; in workloads f, q`,
    );
  });

  it('explains a value that fits no branch of a union type', async () => {
    const e = await errorOf('name: r\nworkloads:\n  w:\n    tool: verbatim\n    bs: 1.5\n');
    expect(e.problems[0]!.path).toBe('workloads.w.bs');
    expect(e.problems[0]!.message).toBe('expected a size such as 4096, 4k, 64KiB, 1GiB, got 1.5');
  });

  it('reports a problem the tool finds across parameters at the workload, naming the cell', async () => {
    const e = await errorOf('name: r\nworkloads:\n  v: {tool: verbatim, bs: 4k}\nmatrix:\n  axes:\n    label: [small, big]\n');
    expect(e.problems.map((p) => [p.line, p.col, p.path, p.message])).toEqual([
      [3, 3, 'workloads.v', 'in cell v.label=big: label "big" needs a bs other than 4k'],
    ]);
  });

  it('reports YAML syntax problems and duplicate keys together', async () => {
    const e = await errorOf('name: d\nname: e\nworkloads:\n  w: {tool: fio\n');
    expect(e.problems.map((p) => p.line)).toEqual([2, 5]);
    expect(e.problems[0]!.message).toBe('duplicate key "name" (first at line 1:1)');
    expect(e.problems[1]!.message).toMatch(/^YAML syntax: /);
  });

  it('rejects a second YAML document', async () => {
    const e = await errorOf('name: a\nworkloads: {w: {tool: fio}}\n---\nname: b\n');
    expect(e.problems[0]!.message).toMatch(/YAML syntax: .*multiple documents/i);
  });
});
