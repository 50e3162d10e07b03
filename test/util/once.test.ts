import { describe, expect, it } from 'vitest';
import { sharedOnce } from '../../src/util/once.ts';

describe('sharedOnce', () => {
  it('runs the work once for concurrent and later callers, and again after a failure', async () => {
    let n = 0;
    let fail = true;
    const get = sharedOnce(async (x: number) => {
      n++;
      await new Promise((r) => setTimeout(r, 10));
      if (fail) throw new Error(`attempt ${n} failed`);
      return x * 2;
    });
    await expect(Promise.all([get(1), get(2)])).rejects.toThrow('attempt 1 failed');
    expect(n).toBe(1);
    fail = false;
    expect(await Promise.all([get(3), get(4)])).toEqual([6, 6]);
    expect(await get(5)).toBe(6);
    expect(n).toBe(2);
  });
});
