// qemu-img bench / info parsers against real qemu-img 7.2 output (test/fixtures/qemu-img, capture.sh).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { QemuImgOutputError, parseQemuImgBench, parseQemuImgInfo, qemuImgBenchSamples } from '../../src/workloads/qemu-img-parse.ts';

const dir = path.join(import.meta.dirname, '..', 'fixtures', 'qemu-img');
const text = (name: string): string => readFileSync(path.join(dir, name), 'utf8');
/** The time qemu-img printed, read independently of the parser. */
const secondsIn = (name: string): number => Number(/Run completed in ([\d.]+) seconds/.exec(text(name))![1]);

describe('parseQemuImgBench', () => {
  it('reads of a raw image', () => {
    const r = parseQemuImgBench(text('read-raw.txt'), 'read-raw.txt');
    expect(r).toEqual({ requests: 20000, op: 'read', bufferSize: 4096, depth: 1, offset: 0, step: 4096, seconds: secondsIn('read-raw.txt') });
    const s = qemuImgBenchSamples(r, 'read-raw.txt');
    expect(s).toEqual([
      { metric: 'iops', value: 20000 / r.seconds, unit: 'IOPS' },
      { metric: 'bw', value: (20000 * 4096) / r.seconds, unit: 'B/s' },
      { metric: 'seconds', value: r.seconds, unit: 's' },
    ]);
  });

  it('writes to qcow2 (O_DIRECT, native aio, depth 4) and reads with io_uring at depth 16', () => {
    expect(parseQemuImgBench(text('write-qcow2-none-native.txt'), 'w')).toMatchObject({ requests: 20000, op: 'write', depth: 4 });
    expect(parseQemuImgBench(text('read-qcow2-io_uring-qd16.txt'), 'r')).toMatchObject({ requests: 20000, op: 'read', depth: 16 });
  });

  it('offset, step and the flush line', () => {
    expect(parseQemuImgBench(text('write-qcow2-flush.txt'), 'f')).toEqual({
      requests: 5000,
      op: 'write',
      bufferSize: 4096,
      depth: 1,
      offset: 512,
      step: 65536,
      flushInterval: 32,
      seconds: secondsIn('write-qcow2-flush.txt'),
    });
  });

  it('a run below the 1 ms clock parses but yields no samples', () => {
    const r = parseQemuImgBench(text('too-short.txt'), '/o/qemu-img-bench.txt');
    expect(r.seconds).toBe(0);
    expect(() => qemuImgBenchSamples(r, '/o/qemu-img-bench.txt')).toThrow(
      '/o/qemu-img-bench.txt: the run took less than 1 ms (qemu-img printed 0.000 s): raise count or use runtime',
    );
  });

  it('errors name the file and what is missing', () => {
    // qemu-img refused the options: nothing on stdout (the reason is on stderr).
    expect(text('refused.stderr')).toMatch(/aio=native was specified, but it requires cache.direct=on/);
    expect(() => parseQemuImgBench(text('refused.txt'), 'refused.txt')).toThrow(
      'refused.txt: no "Sending N read|write requests, B bytes each, D in parallel" line: not qemu-img bench output',
    );
    // Killed before the end: the first line only.
    const first = text('read-raw.txt').split('\n')[0]!;
    expect(() => parseQemuImgBench(`${first}\n`, 'cut.txt')).toThrow('cut.txt: no "Run completed in N seconds." line: the benchmark did not finish');
    expect(() => parseQemuImgBench(`${text('read-raw.txt')}${first}\n`, 'two.txt')).toThrow(/^two\.txt: line 3: a second "Sending N requests" line/);
    expect(() => parseQemuImgBench('Run completed in 1.000 seconds.\n', 'x.txt')).toThrow(QemuImgOutputError);
  });
});

describe('parseQemuImgInfo', () => {
  it('qcow2 and raw images', () => {
    expect(parseQemuImgInfo(text('info-qcow2.json'), 'i')).toEqual({
      format: 'qcow2',
      virtualSize: 16777216,
      actualSize: JSON.parse(text('info-qcow2.json'))['actual-size'],
      clusterSize: 65536,
      dirty: false,
    });
    expect(parseQemuImgInfo(text('info-raw.json'), 'i')).toEqual({ format: 'raw', virtualSize: 16777216, actualSize: 16777216, dirty: false });
  });

  it('bad input names the file and the field', () => {
    expect(() => parseQemuImgInfo('qemu-img: Could not open', 'info.json')).toThrow(/^info\.json: not valid JSON: /);
    const doc = JSON.parse(text('info-raw.json'));
    delete doc['virtual-size'];
    expect(() => parseQemuImgInfo(JSON.stringify(doc), 'info.json')).toThrow(/^info\.json: not qemu-img info JSON: virtual-size: /);
  });
});
