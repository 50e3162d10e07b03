// Every malformed experiment under test/fixtures/bad-yaml/ must be rejected with the problem
// pinned to the right line, column and key path, and a message that says what to type.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExperimentError, type Problem } from '../../src/experiment/errors.ts';
import { loadExperiment } from '../../src/experiment/load.ts';
import { fakeOpts } from './fake-workloads.ts';

const dir = 'test/fixtures/bad-yaml';

/** file → [line, col, key path (exact), message substring]. */
const cases: Record<string, [number, number, string, string]> = {
  // YAML itself
  'syntax-unclosed-flow.yaml': [8, 5, 'matrix.axes.bs[1]', 'YAML syntax: Flow sequence in block collection must be sufficiently indented and end with a ]'],
  'syntax-tab-indent.yaml': [4, 1, '', 'Tabs are not allowed as indentation; indent with spaces'],
  'syntax-missing-colon.yaml': [5, 5, 'workloads.fio["numjobs 4"]', 'is the ": " after a key missing?'],
  'duplicate-key.yaml': [7, 5, 'workloads.fio.bs', 'duplicate key "bs" (first at line 5:5)'],
  'empty-file.yaml': [1, 1, '', 'the file is empty'],
  'top-level-list.yaml': [1, 1, '', 'expected a mapping, got a list'],
  // the schema
  'unknown-top-level-key.yaml': [2, 1, 'descripton', 'unknown key "descripton" (did you mean "description"?)'],
  'unknown-nested-key.yaml': [5, 5, 'host.pm.dri', 'unknown key "dri" (did you mean "dir"?)'],
  'wrong-type.yaml': [2, 9, 'warmup', 'expected a number, got "three"'],
  'bad-duration.yaml': [2, 10, 'timeout', 'invalid duration "10 minutes": expected a duration such as 500ms, 30s, 5m'],
  'bad-pm-kind.yaml': [4, 11, 'host.pm.kind', 'unknown kind "fsdx" (did you mean "fsdax"?); expected one of "emulated", "fsdax"'],
  'fsdax-without-device.yaml': [4, 5, 'host.pm.device', 'missing required key "device"'],
  'repetitions-zero.yaml': [2, 14, 'repetitions', 'must be at least 1, got 0'],
  'missing-name.yaml': [1, 1, 'name', 'missing required key "name"'],
  'missing-workloads.yaml': [1, 1, 'workloads', 'missing required key "workloads"'],
  'bad-enum-mark.yaml': [10, 11, 'figures[0].mark', 'expected one of "bar", "line", "point", got "bra" (did you mean "bar"?)'],
  'non-scalar-axis-value.yaml': [7, 14, 'matrix.axes.bs[1]', 'expected a scalar (string, number or true/false), got a mapping'],
  'axis-not-a-list.yaml': [7, 9, 'matrix.axes.bs', 'expected a list of values such as [4k, 64k], got "4k"'],
  'bad-sysctl-name.yaml': [5, 5, 'host.sysctls.MaxMapCount', 'invalid key "MaxMapCount": expected a sysctl name such as vm.max_map_count'],
  'bad-experiment-name.yaml': [1, 7, 'name', 'expected a lower-case file-name stem (a-z, 0-9, _ and -) such as "fig5-iops", got "My Experiment"'],
  // workloads and their tools' parameters
  'no-workloads.yaml': [2, 12, 'workloads', 'no workloads: define at least one'],
  'unknown-tool.yaml': [4, 11, 'workloads.qemu.tool', 'unknown tool "qemu-img-bnch" (did you mean "qemu-img-bench"?)'],
  'bad-tool-param.yaml': [5, 14, 'workloads.fio.numjobs', 'must be at least 1, got 0'],
  'unknown-tool-param.yaml': [5, 5, 'workloads.fio.rw_mix', 'unknown key "rw_mix" (did you mean "rwmixread"?)'],
  'bad-size.yaml': [5, 11, 'workloads.fio.size', 'invalid size "12 parsecs": expected a size such as 4096, 4k, 64KiB, 1GiB'],
  'empty-value.yaml': [5, 5, 'workloads.fio.rw', 'got an empty value'],
  'axis-missing-required-param.yaml': [4, 5, 'workloads.bench.format', 'missing required key "format" (one of "raw", "qcow2", "pcow")'],
  // the matrix
  'axis-not-a-param.yaml': [8, 5, 'matrix.axes.numjob', 'axis "numjob" is not a parameter of fio (did you mean "numjobs"?)'],
  'axis-bad-value.yaml': [7, 14, 'matrix.axes.bs[1]', 'invalid size "lots": expected a size such as 4096, 4k, 64KiB, 1GiB'],
  'duplicate-axis-value.yaml': [7, 23, 'matrix.axes.rw[2]', '"read" is already listed on axis "rw" (at [0])'],
  'duplicate-cells.yaml': [7, 18, 'matrix.axes.bs[2]', 'bs=4096 means the same as bs=4k to fio: cells "fio.bs=4k" and "fio.bs=4096" have the same parameters'],
  'two-workloads-no-axis.yaml': [2, 1, 'workloads', 'there are 2 workloads (fio, bench) but no "workload" axis'],
  'workload-axis-unknown.yaml': [10, 25, 'matrix.axes.workload[1]', 'no workload named "fio-bl" (did you mean "fio-blk"?); workloads: "fio-dax", "fio-blk"'],
  'zip-length-mismatch.yaml': [10, 7, 'matrix.zip[0]', 'zipped axes must have the same number of values: bs has 3, numjobs has 2'],
  'zip-unknown-axis.yaml': [10, 12, 'matrix.zip[0][1]', 'unknown axis "numjob" (did you mean "numjobs"?)'],
  'zip-axis-twice.yaml': [12, 17, 'matrix.zip[1][1]', 'axis "bs" is already in zip group matrix.zip[0]'],
  'exclude-unknown-axis.yaml': [10, 16, 'matrix.exclude[0].mode', 'unknown axis "mode"; axes: "bs", "rw"'],
  'exclude-unknown-value.yaml': [11, 11, 'matrix.exclude[0].rw', '"wrte" is not a value of axis "rw" (did you mean "write"?); values: "read", "write"'],
  'exclude-never-matches.yaml': [12, 7, 'matrix.exclude[0]', 'this rule never matches: no cell has bs=4k together with numjobs=16 (bs, numjobs are zipped'],
  'empty-matrix-after-exclude.yaml': [8, 3, 'matrix.exclude', 'the matrix expands to no cells: the exclude rules drop all 2 combinations'],
  // figures
  'figure-metric-unknown.yaml': [11, 13, 'figures[0].metric', 'unknown metric "iop" (did you mean "iops"?); metrics of fio: iops, bw, lat_mean, lat_p99'],
  'figure-x-not-axis.yaml': [12, 8, 'figures[0].x', '"blocksize" is not a matrix axis; axes: "bs", "workload"'],
  'figure-duplicate-id.yaml': [13, 9, 'figures[1].id', 'figure id "iops" is already used by figures[0]'],
  'figure-where-bad-value.yaml': [14, 17, 'figures[0].where.rw', '"reed" is not a value of axis "rw" (did you mean "read"?)'],
};

/** Fixtures with several problems, tested one by one below. */
const multi = ['many-problems.yaml', 'all-sections-at-once.yaml'];

async function problemsOf(file: string): Promise<{ error: ExperimentError; problems: readonly Problem[] }> {
  try {
    await loadExperiment(file, fakeOpts);
  } catch (e) {
    if (e instanceof ExperimentError) return { error: e, problems: e.problems };
    throw e;
  }
  throw new Error(`${file} loaded without an error`);
}

describe('malformed experiment files', () => {
  it('has a case for every fixture and a fixture for every case', () => {
    const files = readdirSync(dir).filter((f) => f.endsWith('.yaml') && !multi.includes(f));
    expect(files.sort()).toEqual(Object.keys(cases).sort());
    expect(files.length).toBeGreaterThanOrEqual(20);
  });

  for (const [name, [line, col, keyPath, message]] of Object.entries(cases)) {
    it(`${name} → ${line}:${col} ${keyPath}`, async () => {
      const file = path.join(dir, name);
      const { error, problems } = await problemsOf(file);
      expect(problems).toHaveLength(1);
      const p = problems[0]!;
      expect({ file: p.file, line: p.line, col: p.col, path: p.path }).toEqual({ file, line, col, path: keyPath });
      expect(p.message).toContain(message);
      // One line per problem: `file:line:col: path: message`, file as given (relative).
      const prefix = keyPath ? `${file}:${line}:${col}: ${keyPath}: ` : `${file}:${line}:${col}: `;
      expect(error.message.startsWith(prefix)).toBe(true);
      expect(error.message).not.toContain('\n');
    });
  }

  it('reports every schema problem of a file at once, in file order', async () => {
    const file = path.join(dir, 'many-problems.yaml');
    const { error, problems } = await problemsOf(file);
    expect(problems.map((p) => [p.line, p.col, p.path])).toEqual([
      [2, 14, 'repetitions'],
      [3, 9, 'warmup'],
      [7, 5, 'host.pm.dri'],
      [16, 11, 'figures[0].mark'],
      [17, 5, 'figures[0].colour'],
    ]);
    expect(problems[4]!.message).toBe('unknown key "colour" (did you mean "color"?)');
    expect(error.message.split('\n')).toEqual([
      `${file}:2:14: repetitions: must be at least 1, got 0`,
      `${file}:3:9: warmup: must be at least 0, got -1`,
      `${file}:7:5: host.pm.dri: unknown key "dri" (did you mean "dir"?)`,
      `${file}:16:11: figures[0].mark: expected one of "bar", "line", "point", got "bra" (did you mean "bar"?)`,
      `${file}:17:5: figures[0].colour: unknown key "colour" (did you mean "color"?)`,
    ]);
  });

  it('runs the matrix and figure checks even when another section fails the schema', async () => {
    const { problems } = await problemsOf(path.join(dir, 'all-sections-at-once.yaml'));
    expect(problems.map((p) => [p.line, p.col, p.path, p.message])).toEqual([
      [3, 14, 'repetitions', 'must be at least 1, got 0'],
      [5, 14, 'host.pm.kind', 'unknown kind "fsdx" (did you mean "fsdax"?); expected one of "emulated", "fsdax"'],
      [7, 20, 'workloads.fio.rw_mix', 'unknown key "rw_mix" (did you mean "rwmixread"?)'],
      [10, 14, 'matrix.axes.bs[1]', 'invalid size "lots": expected a size such as 4096, 4k, 64KiB, 1GiB'],
      [11, 5, 'matrix.axes.numjob', 'axis "numjob" is not a parameter of fio (did you mean "numjobs"?)'],
      [13, 31, 'figures[0].metric', 'unknown metric "iop" (did you mean "iops"?); metrics of fio: iops, bw, lat_mean, lat_p99'],
      [13, 39, 'figures[0].x', '"bz" is not a matrix axis (did you mean "bs"?)'],
    ]);
  });

  it('names a file that cannot be read, as given', async () => {
    const { error, problems } = await problemsOf('test/fixtures/bad-yaml/does-not-exist.yaml');
    expect(problems).toHaveLength(1);
    expect(error.message).toBe('test/fixtures/bad-yaml/does-not-exist.yaml: cannot read the experiment: no such file');
  });
});
