// A huge experiment (tens of thousands of workloads, axis values, exclude rules, problems) is
// validated in time linear in its size, and its error message stays short: the first problems,
// each with lists cut to a few items, and a count of the rest. Each file below hits one of the
// paths that used to be quadratic (duplicate-value checks, did-you-mean against every name,
// exclude rules against every cell, placing each problem by a scan of its mapping).
import { describe, expect, it } from 'vitest';
import { ExperimentError, MAX_PROBLEMS_SHOWN } from '../../src/experiment/errors.ts';
import { parseExperiment } from '../../src/experiment/load.ts';
import { fakeOpts } from './fake-workloads.ts';

const workloads = (n: number): string => {
  let s = 'name: big\nworkloads:\n';
  for (let i = 0; i < n; i++) s += `  w${i}: {tool: fio, rw: randread, size: 1MiB}\n`;
  return s;
};
const flow = (items: string[]): string => `[${items.join(', ')}]`;

/** Every workload is named on the axis, but by a misspelt name (x<i>): n problems with suggestions. */
function badAxisValues(n: number): string {
  return `${workloads(n)}matrix:\n  axes:\n    workload: ${flow(Array.from({ length: n }, (_, i) => `x${i}`))}\n`;
}

/** n identical workloads × bs, n rules excluding bs=8k of each: n - 1 duplicate-cell problems. */
function duplicates(n: number): string {
  let s = `${workloads(n)}matrix:\n  axes:\n    workload: ${flow(Array.from({ length: n }, (_, i) => `w${i}`))}\n    bs: [4k, 8k]\n  exclude:\n`;
  for (let i = 0; i < n; i++) s += `    - {workload: w${i}, bs: 8k}\n`;
  return s;
}

/** n workloads and no workload axis: one problem that used to list every name. */
function noAxis(n: number): string {
  return workloads(n);
}

/** Validate; `ms` is the CPU time this process spent (less disturbed by a busy host than wall time). */
function problemsOf(text: string): { error: ExperimentError; ms: number } {
  const t0 = process.cpuUsage();
  const cpuMs = (): number => {
    const d = process.cpuUsage(t0);
    return (d.user + d.system) / 1000;
  };
  try {
    parseExperiment(text, 'big.yaml', fakeOpts);
  } catch (e) {
    if (e instanceof ExperimentError) return { error: e, ms: cpuMs() };
    throw e;
  }
  throw new Error('validated without an error');
}

/** Best of two runs: the CPU time of validating a file. */
function best(text: string): number {
  return Math.min(problemsOf(text).ms, problemsOf(text).ms);
}

function expectShortMessage(e: ExperimentError): void {
  const lines = e.message.split('\n');
  expect(lines.length).toBeLessThanOrEqual(MAX_PROBLEMS_SHOWN + 1);
  expect(Math.max(...lines.map((l) => l.length))).toBeLessThan(400);
}

describe('a huge experiment', () => {
  const small = 500;
  const large = 4000;

  for (const [name, make, count] of [
    ['misspelt axis values', badAxisValues, (n: number) => n],
    ['duplicate cells and exclude rules', duplicates, (n: number) => n - 1],
    ['many workloads and no workload axis', noAxis, () => 1],
  ] as const) {
    it(`${name}: linear time, every problem kept, a capped message`, () => {
      const { error, ms: first } = problemsOf(make(large));
      expect(error.problems).toHaveLength(count(large));
      expectShortMessage(error);
      if (count(large) > MAX_PROBLEMS_SHOWN) {
        expect(error.message).toMatch(new RegExp(`\\.\\.\\. and ${count(large) - MAX_PROBLEMS_SHOWN} more problems \\(${count(large)} in all\\)`));
      }
      // 8x the input: linear work takes about 8x as long (less, with the JIT warm), quadratic 64x.
      const ratio = Math.min(first, problemsOf(make(large)).ms) / best(make(small));
      expect(ratio, `${large} vs ${small}: ${ratio.toFixed(1)}x`).toBeLessThan(24);
    });
  }

  it('cuts long lists in a message to the first 10 and a count', () => {
    const { error } = problemsOf(noAxis(5000));
    expect(error.problems[0]!.message).toBe(
      'there are 5000 workloads (w0, w1, w2, w3, w4, w5, w6, w7, w8, w9 and 4990 more) but no "workload" axis to choose between them; add `workload: [...]` listing them under matrix.axes',
    );
    const bad = problemsOf(badAxisValues(3000)).error.problems[0]!.message;
    expect(bad).toBe('no workload named "x0"; workloads: "w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9" and 2990 more');
  });
});
