// The patched QEMU (native/qemu/*.patch) built by src/build/qemu.ts, and what its format=pcow
// backend refuses or reports without a guest: `-machine none -S`, QMP over stdio. The first run
// builds QEMU (~6 min on 2 cores); later runs reuse the cached binary in seconds.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeBins } from '../../src/build/native.ts';
import { Experiment } from '../../src/experiment/schema.ts';
import type { Manifest } from '../../src/results/types.ts';
import { runExperiment } from '../../src/run/lifecycle.ts';
import { debSrcFrom, ensureQemu, qemuCacheKey, type QemuBuild } from '../../src/build/qemu.ts';
import { run } from '../../src/util/proc.ts';

let q: QemuBuild;
let dir: string;
const { pcowImg, pcowBench } = nativeBins();

beforeAll(async () => {
  q = await ensureQemu({ log: (l) => process.stderr.write(`${l}\n`) });
  dir = mkdtempSync(path.join(tmpdir(), 'pcow-qemu-'));
}, 30 * 60_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function createImage(name: string, size = '64M'): Promise<string> {
  const img = path.join(dir, name);
  const r = await run(pcowImg, ['create', '-c', '64K', img, size]);
  expect(r.exitCode, r.stderr).toBe(0);
  return img;
}

function backend(img: string, extra = ''): string[] {
  return ['-object', `memory-backend-file,id=m,mem-path=${img},format=pcow,share=on${extra}`];
}

const BASE = ['-machine', 'none', '-nodefaults', '-display', 'none', '-S'];

/** QEMU that must refuse to start: its exit code and stderr. */
async function qemuFails(args: string[]): Promise<string> {
  const r = await run(q.binary, [...BASE, ...args], { timeoutMs: 30_000 });
  expect(r.timedOut, `QEMU did not exit: ${r.stderr}`).toBe(false);
  expect(r.exitCode, r.stderr).toBe(1);
  return r.stderr;
}

/** A QEMU with QMP on stdio: send a command, get its reply (events skipped). */
class Qmp {
  private buf = '';
  private waiters: ((o: Record<string, unknown>) => void)[] = [];
  private queue: Record<string, unknown>[] = [];
  stderr = '';
  readonly exited: Promise<number | null>;
  constructor(readonly proc: ChildProcessWithoutNullStreams) {
    proc.stdout.setEncoding('utf8');
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (d: string) => (this.stderr += d));
    proc.stdout.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        const o = JSON.parse(line) as Record<string, unknown>;
        if ('event' in o) continue;
        const w = this.waiters.shift();
        if (w) w(o);
        else this.queue.push(o);
      }
    });
    this.exited = new Promise((res) => proc.on('exit', (code) => res(code)));
  }
  next(): Promise<Record<string, unknown>> {
    const o = this.queue.shift();
    if (o) return Promise.resolve(o);
    return new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error(`no QMP reply in 30 s; stderr: ${this.stderr}`)), 30_000);
      this.waiters.push((x) => {
        clearTimeout(t);
        res(x);
      });
    });
  }
  async cmd(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    this.proc.stdin.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
    return this.next();
  }
  static async start(args: string[]): Promise<Qmp> {
    const proc = spawn(q.binary, [...BASE, '-qmp', 'stdio', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const m = new Qmp(proc);
    const greeting = await m.next();
    expect(greeting, m.stderr).toHaveProperty('QMP');
    expect(await m.cmd('qmp_capabilities')).toEqual({ return: {} });
    return m;
  }
}

describe('the build', () => {
  it('is cached: a second call reuses the binary in seconds, with its provenance', async () => {
    const again = await ensureQemu();
    expect(again.cached).toBe(true);
    expect(again.seconds).toBeLessThan(15);
    expect(again.binary).toBe(q.binary);
    expect(again.binaryHash).toMatch(/^[0-9a-f]{64}$/);
    expect(again.patchHash).toBe(q.patchHash);
    expect(again.sourceVersion).toMatch(/^(debian|dir|tarball):/);
    expect(again.patches.length).toBeGreaterThanOrEqual(3);
    const v = await run(q.binary, ['--version']);
    expect(v.stdout).toMatch(/QEMU emulator version 7\.2/);
  });

  it('keys the cache by every input', () => {
    const base = { sourceVersion: 'debian:7.2', patchHash: 'p', nativeHash: 'n', configureFlags: ['--a'] };
    const k = qemuCacheKey(base);
    expect(qemuCacheKey({ ...base })).toBe(k);
    for (const change of [{ sourceVersion: 'debian:7.3' }, { patchHash: 'q' }, { nativeHash: 'm' }, { configureFlags: ['--b'] }]) {
      expect(qemuCacheKey({ ...base, ...change })).not.toBe(k);
    }
  });

  it('derives deb-src entries from deb822 and one-line sources', () => {
    const deb822 = 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n\nTypes: deb\nURIs: http://x/security\nSuites: bookworm-security\n';
    expect(debSrcFrom(deb822)).toBe('Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n\nTypes: deb-src\nURIs: http://x/security\nSuites: bookworm-security\n');
    expect(debSrcFrom('# c\ndeb http://deb.debian.org/debian bookworm main\n')).toBe('deb-src http://deb.debian.org/debian bookworm main\n');
    expect(debSrcFrom('# nothing\n')).toBeNull();
    // a deb-src-only stanza has no deb entries to mirror
    expect(debSrcFrom('Types: deb-src\nURIs: http://x/debian\nSuites: bookworm\n')).toBeNull();
    expect(debSrcFrom('Types: deb deb-src\nURIs: http://x/debian\nSuites: bookworm\n')).toBe('Types: deb-src\nURIs: http://x/debian\nSuites: bookworm\n');
  });
});

describe('an experiment that uses QEMU', () => {
  it('build.qemu is checked strictly: a typo is an error, not a default', () => {
    const base = { name: 'x', workloads: { a: { tool: 'fio' } } };
    expect(Experiment.parse({ ...base, build: { qemu: { source: '/src/qemu' } } }).build.qemu).toEqual({ source: '/src/qemu' });
    expect(Experiment.parse(base).build).toEqual({});
    expect(Experiment.safeParse({ ...base, build: { qemu: { sorce: '/x' } } }).success).toBe(false);
    expect(Experiment.safeParse({ ...base, build: { qemuu: {} } }).success).toBe(false);
  });

  it('puts the binary hash, source version and patch hash into the run manifest', async () => {
    const pm = `/dev/shm/pcow-test-qemu-${process.pid}`;
    const file = path.join(dir, 'qemu-exp.yaml');
    await writeFile(
      file,
      `name: qemu-prov\nhost:\n  pm: { kind: emulated, dir: ${pm} }\nrepetitions: 1\ntimeout: 1m\nbuild:\n  qemu: {}\n` +
        `workloads:\n  qimg: { tool: qemu-img-bench, format: qcow2, size: 4MiB, count: 4096 }\n`,
    );
    const lines: string[] = [];
    const out = await runExperiment({ file, resultsRoot: path.join(dir, 'results'), sink: { write: (t) => lines.push(t), isTTY: false }, print: () => undefined });
    expect(out.exitCode, lines.join('')).toBe(0);
    const manifest = JSON.parse(await readFile(path.join(out.runDir!, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest.build.qemu).toMatchObject({
      binary: q.binary,
      binaryHash: q.binaryHash,
      sourceVersion: q.sourceVersion,
      patchHash: q.patchHash,
      nativeHash: q.nativeHash,
      cached: true,
    });
    rmSync(pm, { recursive: true, force: true });
  });
});

describe('format=pcow refuses what cannot work, with clear messages', () => {
  it('prealloc=on, discard-data=on, readonly=on, share=off', async () => {
    const img = await createImage('refuse.img');
    expect(await qemuFails(backend(img, ',prealloc=on'))).toMatch(/format=pcow: prealloc=on is not supported/);
    expect(await qemuFails(backend(img, ',discard-data=on'))).toMatch(/format=pcow: discard-data=on is not supported/);
    expect(await qemuFails(backend(img, ',readonly=on'))).toMatch(/format=pcow: readonly=on is not supported/);
    expect(await qemuFails(['-object', `memory-backend-file,id=m,mem-path=${img},format=pcow`])).toMatch(/format=pcow: needs share=on/);
    // Nothing of it touched the image.
    const c = await run(pcowImg, ['check', img]);
    expect(c.exitCode, c.stdout + c.stderr).toBe(0);
  });

  it('a size that disagrees with the image, naming both sizes', async () => {
    const img = await createImage('size.img', '64M');
    const err = await qemuFails(backend(img, ',size=32M'));
    expect(err).toMatch(/size=33554432 disagrees with the virtual size 67108864 of image .*size\.img/);
  });

  it('a bad runtime option, with the runtime\'s own message (as pcow-bench prints it)', async () => {
    const img = await createImage('opt.img');
    const err = await qemuFails(backend(img, ',cow-unit=3000'));
    const bench = await run(pcowBench, ['case', 'cow', '--cow-unit', '3000']);
    const rule = /--cow-unit (.*)$/m.exec(bench.stderr)?.[1];
    expect(rule, bench.stderr).toBeTruthy();
    expect(err).toContain(`format=pcow: cow-unit ${rule}`);
    // A rule that needs the image (cow-unit above the 64K cluster) comes from the runtime's check.
    expect(await qemuFails(backend(img, ',cow-unit=128K'))).toMatch(/format=pcow: .*cow-unit/);
    // Runtime options on a raw backend are an error, not ignored.
    expect(await qemuFails(['-object', `memory-backend-file,id=m,mem-path=${path.join(dir, 'raw')},size=4M,share=on,read-fill=4K`])).toMatch(
      /read-fill is an option of format=pcow/,
    );
    expect(await qemuFails(backend(img, ',format=qcow2'))).toMatch(/format=qcow2: expected raw or pcow/);
  });
});

describe('a running format=pcow backend', () => {
  it('locks the image, blocks migration, answers query-pcow, snapshots live, refuses rollback while running, and tears down on quit', async () => {
    const img = await createImage('live.img');
    const a = await Qmp.start(backend(img));
    try {
      // A second QEMU on the same image: the library's lock message.
      expect(await qemuFails(backend(img))).toMatch(/format=pcow: .*live\.img: image is locked by another process/);

      const info = (await a.cmd('query-pcow')) as { return: { id: string; 'mem-path': string; stats: Record<string, unknown> }[] };
      expect(info.return).toHaveLength(1);
      expect(info.return[0]!.id).toBe('m');
      expect(info.return[0]!['mem-path']).toBe(img);
      expect(info.return[0]!.stats).toHaveProperty('faults');
      expect(info.return[0]!.stats).toHaveProperty('expansions');

      const mig = (await a.cmd('migrate', { uri: 'exec:cat >/dev/null' })) as { error?: { desc: string } };
      expect(mig.error?.desc).toMatch(/format=pcow .*migration, savevm and background snapshots are not supported/);

      expect(await a.cmd('cont')).toEqual({ return: {} });
      const snap = (await a.cmd('pcow-snapshot-create', { name: 'first' })) as { return: { 'pause-ns': number; 'switch-ns': number; id: string } };
      expect(snap.return.id).toBe('m');
      expect(snap.return['pause-ns']).toBeGreaterThan(0);
      expect(snap.return['switch-ns']).toBeGreaterThan(0);
      expect(snap.return['pause-ns']).toBeGreaterThanOrEqual(snap.return['switch-ns']);

      const refused = (await a.cmd('pcow-snapshot-rollback', { name: 'first' })) as { error?: { desc: string } };
      expect(refused.error?.desc).toMatch(/the guest is running; stop it first/);
      expect(await a.cmd('stop')).toEqual({ return: {} });
      const rb = (await a.cmd('pcow-snapshot-rollback', { id: 'm', name: 'first' })) as { return?: { 'pause-ns': number } };
      expect(rb.return?.['pause-ns']).toBe(0);
      const bad = (await a.cmd('pcow-snapshot-create', { id: 'nope', name: 'x' })) as { error?: { desc: string } };
      expect(bad.error?.desc).toMatch(/no memory-backend-file with id 'nope' and format=pcow/);
      const dup = (await a.cmd('pcow-snapshot-create', { name: '12' })) as { error?: { desc: string } };
      expect(dup.error?.desc).toMatch(/pcow-snapshot-create: /);

      await a.cmd('quit');
      expect(await a.exited).toBe(0);
    } finally {
      a.proc.kill('SIGKILL');
    }
    // quit made it durable and unlocked it: the image is clean and holds the snapshot.
    const c = await run(pcowImg, ['check', img]);
    expect(c.exitCode, c.stdout + c.stderr).toBe(0);
    const l = await run(pcowImg, ['snapshot', '-l', img]);
    expect(l.stdout).toMatch(/first/);
    const i = await run(pcowImg, ['info', '--output=json', img]);
    expect(JSON.parse(i.stdout)).toMatchObject({ dirty: false });
  });
});
