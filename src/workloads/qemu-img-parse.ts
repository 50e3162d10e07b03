// `qemu-img bench` stdout and `qemu-img info --output=json` → typed values. Pure; errors name
// the source file. qemu-img 7.2 bench prints exactly (the -q flag does not silence it):
//   Sending <n> <read|write> requests, <bs> bytes each, <depth> in parallel (starting at offset <o>, step size <s>)
//   Sending flush every <f> requests            (only with --flush-interval)
//   Run completed in <seconds, 3 decimals> seconds.
import { z } from 'zod';
import type { Sample } from './types.ts';

export class QemuImgOutputError extends Error {
  override readonly name = 'QemuImgOutputError';
  constructor(
    readonly source: string,
    message: string,
  ) {
    super(`${source}: ${message}`);
  }
}

export interface QemuImgBenchResult {
  requests: number;
  op: 'read' | 'write';
  /** Bytes per request (-s). */
  bufferSize: number;
  /** Requests in flight (-d). */
  depth: number;
  offset: number;
  step: number;
  /** Requests between flushes (--flush-interval), when set. */
  flushInterval?: number;
  /** Wall time of the request loop as qemu-img prints it (millisecond resolution). */
  seconds: number;
}

const sendingRe = /^Sending (\d+) (read|write) requests, (\d+) bytes each, (\d+) in parallel \(starting at offset (\d+), step size (\d+)\)$/;
const flushRe = /^Sending flush every (\d+) requests$/;
const completedRe = /^Run completed in (\d+(?:\.\d+)?) seconds\.$/;

export function parseQemuImgBench(text: string, sourceName: string): QemuImgBenchResult {
  const lines = text.split('\n').map((l) => l.trim());
  let sending: RegExpExecArray | null = null;
  let flush: RegExpExecArray | null = null;
  let completed: RegExpExecArray | null = null;
  for (const [i, line] of lines.entries()) {
    const s = sendingRe.exec(line);
    const f = flushRe.exec(line);
    const c = completedRe.exec(line);
    if (s) {
      if (sending) throw new QemuImgOutputError(sourceName, `line ${i + 1}: a second "Sending N requests" line (one bench run per file)`);
      sending = s;
    } else if (f) flush = f;
    else if (c) {
      if (!sending) throw new QemuImgOutputError(sourceName, `line ${i + 1}: "Run completed" before any "Sending N requests" line`);
      completed = c;
    }
  }
  if (!sending) throw new QemuImgOutputError(sourceName, 'no "Sending N read|write requests, B bytes each, D in parallel" line: not qemu-img bench output');
  if (!completed) throw new QemuImgOutputError(sourceName, 'no "Run completed in N seconds." line: the benchmark did not finish');
  const n = (s: string | undefined): number => Number(s);
  return {
    requests: n(sending[1]),
    op: sending[2] as 'read' | 'write',
    bufferSize: n(sending[3]),
    depth: n(sending[4]),
    offset: n(sending[5]),
    step: n(sending[6]),
    ...(flush ? { flushInterval: n(flush[1]) } : {}),
    seconds: n(completed[1]),
  };
}

/** iops, bw (B/s), seconds. Throws when the run was too short for qemu-img's 1 ms clock. */
export function qemuImgBenchSamples(r: QemuImgBenchResult, sourceName: string): Sample[] {
  if (r.seconds <= 0) {
    throw new QemuImgOutputError(sourceName, `the run took less than 1 ms (qemu-img printed ${r.seconds.toFixed(3)} s): raise count or use runtime`);
  }
  return [
    { metric: 'iops', value: r.requests / r.seconds, unit: 'IOPS' },
    { metric: 'bw', value: (r.requests * r.bufferSize) / r.seconds, unit: 'B/s' },
    { metric: 'seconds', value: r.seconds, unit: 's' },
  ];
}

const Info = z.looseObject({
  'virtual-size': z.number().int().nonnegative(),
  'actual-size': z.number().int().nonnegative().optional(),
  format: z.string(),
  filename: z.string(),
  'cluster-size': z.number().int().positive().optional(),
  'dirty-flag': z.boolean().optional(),
});

export interface QemuImgInfo {
  format: string;
  virtualSize: number;
  /** Bytes allocated on the host file system (absent for some protocols). */
  actualSize?: number;
  clusterSize?: number;
  dirty?: boolean;
}

export function parseQemuImgInfo(text: string, sourceName: string): QemuImgInfo {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new QemuImgOutputError(sourceName, `not valid JSON: ${(e as Error).message}`);
  }
  const r = Info.safeParse(doc);
  if (!r.success) {
    const problems = r.error.issues.slice(0, 5).map((i) => `${i.path.map(String).join('.') || '(document)'}: ${i.message}`);
    throw new QemuImgOutputError(sourceName, `not qemu-img info JSON: ${problems.join('; ')}`);
  }
  const d = r.data;
  return {
    format: d.format,
    virtualSize: d['virtual-size'],
    ...(d['actual-size'] !== undefined ? { actualSize: d['actual-size'] } : {}),
    ...(d['cluster-size'] !== undefined ? { clusterSize: d['cluster-size'] } : {}),
    ...(d['dirty-flag'] !== undefined ? { dirty: d['dirty-flag'] } : {}),
  };
}
