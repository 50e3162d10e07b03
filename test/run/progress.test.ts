import { describe, expect, it } from 'vitest';
import { Progress, formatDuration } from '../../src/run/progress.ts';

function sink(isTTY: boolean) {
  const out: string[] = [];
  return { out, s: { write: (t: string) => void out.push(t), isTTY, columns: 200 } };
}

describe('progress', () => {
  it('writes plain timestamped lines when not a TTY', () => {
    const { out, s } = sink(false);
    const p = new Progress(2, s);
    p.start('a rep 1/1');
    p.finish('a rep 1/1', 'ok');
    p.start('b rep 1/1');
    p.finish('b rep 1/1', 'failed', 'fio: exit code 1\nmore');
    p.stop();
    const text = out.join('');
    expect(text).not.toContain('\x1b');
    expect(text).toMatch(/^\d{4}-\d\d-\d\dT[^ ]+ start a rep 1\/1 \(1\/2\)$/m);
    expect(text).toMatch(/ok {3}a rep 1\/1 \(00:00\)/);
    expect(text).toMatch(/FAILED b rep 1\/1 \(00:00\): fio: exit code 1$/m);
  });

  it('redraws one status line with done/total, current cell, elapsed and ETA on a TTY', () => {
    const { out, s } = sink(true);
    const p = new Progress(4, s);
    p.skip(1);
    p.start('cell-x rep 1/3');
    const status = p.status();
    expect(status).toMatch(/^\[1\/4\] cell-x rep 1\/3 · elapsed 00:00 · ETA --:--$/);
    p.finish('cell-x rep 1/3', 'ok');
    expect(p.status()).toMatch(/^\[2\/4\] idle · elapsed 00:00 · ETA 00:00$/);
    p.log('a message');
    p.stop();
    const text = out.join('');
    expect(text).toContain('\r\x1b[2K[1/4] cell-x');
    expect(text).toContain('a message\n');
  });

  it('formats durations', () => {
    expect(formatDuration(0)).toBe('00:00');
    expect(formatDuration(61_000)).toBe('01:01');
    expect(formatDuration(3_725_000)).toBe('1:02:05');
    expect(formatDuration(Number.NaN)).toBe('--:--');
  });
});
