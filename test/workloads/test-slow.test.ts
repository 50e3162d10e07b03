// PCOW_TEST_SLOW, the test-only knob that makes one fio workload really slower (thinktime).
import { describe, expect, it } from 'vitest';
import { testSlowdownUs } from '../../src/workloads/fio.ts';

describe('PCOW_TEST_SLOW', () => {
  it('matches the workload of a cell id and nothing else', () => {
    expect(testSlowdownUs('dax', 'dax=20')).toBe(20);
    expect(testSlowdownUs('dax.bs=4k', 'blk=5,dax=20')).toBe(20);
    expect(testSlowdownUs('dax2.bs=4k', 'dax=20')).toBeUndefined();
    expect(testSlowdownUs('blk', 'dax=20')).toBeUndefined();
    expect(testSlowdownUs('blk', undefined)).toBeUndefined();
  });
  it('names a malformed value', () => {
    expect(() => testSlowdownUs('dax', 'dax:20')).toThrow(/PCOW_TEST_SLOW: expected workload=usec\[,workload=usec\], got "dax:20"/);
  });
});
