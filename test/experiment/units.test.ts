import { describe, expect, it } from 'vitest';
import { formatDuration, formatSize, parseDuration, parseSize } from '../../src/experiment/units.ts';
import { closest, didYouMean, editDistance } from '../../src/experiment/suggest.ts';

describe('parseSize', () => {
  it('reads bytes and binary units, whatever the spelling of k', () => {
    expect(parseSize(4096)).toBe(4096);
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('512B')).toBe(512);
    for (const s of ['4k', '4K', '4KB', '4kb', '4KiB', '4kib', '4 KiB']) expect(parseSize(s)).toBe(4096);
    expect(parseSize('64KiB')).toBe(65536);
    expect(parseSize('1M')).toBe(1048576);
    expect(parseSize('1G')).toBe(1024 ** 3);
    expect(parseSize('1GiB')).toBe(1024 ** 3);
    expect(parseSize('2T')).toBe(2 * 1024 ** 4);
    expect(parseSize('1.5M')).toBe(1572864);
    expect(parseSize(0)).toBe(0);
  });

  it('rejects what is not a whole number of bytes, with the value and the expected form', () => {
    expect(() => parseSize('lots')).toThrow('invalid size "lots": expected a size such as 4096, 4k, 64KiB, 1GiB');
    expect(() => parseSize('4kbit')).toThrow('invalid size "4kbit"');
    expect(() => parseSize('4Ki')).toThrow('invalid size "4Ki"');
    expect(() => parseSize('-4k')).toThrow('invalid size "-4k"');
    expect(() => parseSize('')).toThrow('invalid size ""');
    expect(() => parseSize('1.1k')).toThrow('invalid size "1.1k": 1126.4 is not a whole number of bytes');
    expect(() => parseSize(1.5)).toThrow('invalid size 1.5');
    expect(() => parseSize(-1)).toThrow('invalid size -1');
    expect(() => parseSize('9999999P')).toThrow('too large');
  });
});

describe('formatSize', () => {
  it('uses the largest exact binary unit, and round-trips', () => {
    expect(formatSize(0)).toBe('0B');
    expect(formatSize(512)).toBe('512B');
    expect(formatSize(4096)).toBe('4KiB');
    expect(formatSize(65536)).toBe('64KiB');
    expect(formatSize(1536)).toBe('1536B');
    expect(formatSize(3 * 1024 ** 3)).toBe('3GiB');
    for (const n of [1, 1000, 4096, 1536, 1048576 + 4096, 5 * 1024 ** 4]) expect(parseSize(formatSize(n))).toBe(n);
    expect(() => formatSize(-1)).toThrow('not a byte count');
  });
});

describe('parseDuration', () => {
  it('reads units and bare numbers as seconds, in milliseconds', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('5m')).toBe(300_000);
    expect(parseDuration('5min')).toBe(300_000);
    expect(parseDuration('2h')).toBe(7_200_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('1m 30s')).toBe(90_000);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration(120)).toBe(120_000);
    expect(parseDuration(0.25)).toBe(250);
  });

  it('rejects anything else with the expected form', () => {
    expect(() => parseDuration('10 minutes')).toThrow('invalid duration "10 minutes": expected a duration such as 500ms, 30s, 5m');
    expect(() => parseDuration('5x')).toThrow('invalid duration "5x"');
    expect(() => parseDuration('')).toThrow('invalid duration ""');
    expect(() => parseDuration('s')).toThrow('invalid duration "s"');
    expect(() => parseDuration(-1)).toThrow('invalid duration -1');
    // A quoted number has no unit: say how to write it.
    expect(() => parseDuration('30')).toThrow('write the unit, e.g. "30s"');
  });

  it('formatDuration round-trips', () => {
    for (const ms of [500, 1000, 30_000, 90_000, 5_400_000, 1500]) expect(parseDuration(formatDuration(ms))).toBe(ms);
    expect(formatDuration(5_400_000)).toBe('1h30m');
    expect(formatDuration(1500)).toBe('1500ms');
  });
});

describe('suggestions', () => {
  it('edit distance counts a transposition as one edit', () => {
    expect(editDistance('bra', 'bar')).toBe(1);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('same', 'same')).toBe(0);
  });

  it('suggests close names only', () => {
    expect(closest('descripton', ['name', 'description', 'host'])).toEqual(['description']);
    expect(closest('rw_mix', ['rw', 'rwmixread', 'bs'])).toEqual(['rwmixread']);
    expect(closest('NumJobs', ['numjobs', 'iodepth'])).toEqual(['numjobs']);
    expect(closest('xyz', ['numjobs', 'iodepth'])).toEqual([]);
    expect(closest('blocksize', ['bs', 'rw'])).toEqual([]);
    expect(didYouMean('bra', ['bar', 'line', 'point'])).toBe(' (did you mean "bar"?)');
    expect(didYouMean('rwmix', ['rwmixread', 'rwmixwrite'])).toBe(' (did you mean "rwmixread" or "rwmixwrite"?)');
    expect(didYouMean('zzz', ['bar'])).toBe('');
  });
});
