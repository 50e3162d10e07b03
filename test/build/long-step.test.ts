// The long build steps (QEMU's ninja, Redis' make) share longStep: output in files next to the
// build log, and a failure names the step and carries the error lines of its output.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { longStep, type BuildCtx } from '../../src/build/debian-source.ts';

let dir = '';
let ctx: BuildCtx;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pcow-longstep-'));
  ctx = { name: 'thing', log: () => undefined, steps: [], logFile: join(dir, 'build.log') };
  await writeFile(ctx.logFile, '');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('longStep', () => {
  it('keeps the output in NAME.log/.err and notes the command in the build log', async () => {
    await longStep(ctx, 'make', 'sh', ['-c', 'echo compiled a.c; echo warn >&2'], 10_000, () => null);
    expect(await readFile(join(dir, 'make.log'), 'utf8')).toBe('compiled a.c\n');
    expect(await readFile(join(dir, 'make.err'), 'utf8')).toBe('warn\n');
    expect(await readFile(ctx.logFile, 'utf8')).toMatch(/=== sh -c echo compiled a\.c; echo warn >&2 \(output in .*make\.log\)/);
  });

  it('a failure names the build and the command and quotes the error lines, not the chatter', async () => {
    const script = 'for i in 1 2 3; do echo "[$i/9] cc x$i.c"; done; echo "x3.c:7: error: expected ;" >&2; echo "FAILED: x3.o"; exit 1';
    const err = await longStep(ctx, 'ninja', 'sh', ['-c', script], 10_000, () => null).catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^thing build: sh -c .* failed \(/);
    expect((err as Error).message).toContain('FAILED: x3.o');
    expect((err as Error).message).toContain('x3.c:7: error: expected ;');
    expect((err as Error).message).not.toContain('[1/9]');
    expect((err as Error).message).toContain(join(dir, 'ninja.log'));
  });
});
