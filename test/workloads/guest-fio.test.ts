// guest-fio end to end: the real lifecycle boots the cached Debian guest (TCG here) once per
// cell repetition over each backend (raw NVDIMM, pcow NVDIMM through the patched QEMU, qcow2
// virtio disk), runs fio over SSH and parses the real report; a guest whose QEMU is killed with
// kill -9 mid-cell ends that cell as failed with the reason and the serial tail
// while the run goes on; SIGINT stops the CLI with no QEMU left; --resume re-runs only the
// cells that were lost.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runExperiment } from '../../src/run/lifecycle.ts';
import type { CellRecord, Manifest } from '../../src/results/types.ts';
import { repoRoot } from '../../src/util/paths.ts';
import { run } from '../../src/util/proc.ts';
import { liveVmCount } from '../../src/vm/machine.ts';
import { ensureDebianImage } from '../../src/vm/image.ts';

let tmp = '';
const pmDirs: string[] = [];
const quiet = { write: () => undefined, isTTY: false };
const silent = (): undefined => undefined;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'pcow-guest-fio-test-'));
  await ensureDebianImage({ log: (l) => console.log(l) });
}, 30 * 60_000);
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
  for (const d of pmDirs) await rm(d, { recursive: true, force: true });
});

async function experiment(name: string, body: string): Promise<string> {
  const pm = `/dev/shm/pcow-test-${name}-${process.pid}`;
  pmDirs.push(pm);
  const f = path.join(tmp, `${name}.yaml`);
  await writeFile(f, `name: ${name}\nhost:\n  pm: { kind: emulated, dir: ${pm} }\n${body}`);
  return f;
}

/** QEMU processes whose command line mentions `needle`. */
async function qemusWith(needle: string): Promise<string[]> {
  const r = await run('ps', ['-eo', 'pid=,args='], { timeoutMs: 10_000 });
  return r.stdout.split('\n').filter((l) => /qemu-system/.test(l) && l.includes(needle));
}

const readJson = async <T>(f: string): Promise<T> => JSON.parse(await readFile(f, 'utf8')) as T;

async function onlyRunDir(results: string, name: string): Promise<string> {
  const [id] = await readdir(path.join(results, name));
  return path.join(results, name, id as string);
}

describe('guest-fio: one small cell per backend', () => {
  it('raw-dax, pcow-dax and qcow2-blk each boot a guest, run fio over SSH and give parsed samples; query-pcow kept with the pcow cell; no QEMU left', async () => {
    const file = await experiment(
      'gfio-backends',
      `build: { qemu: {} }
repetitions: 1
timeout: 4m
workloads:
  dax: { tool: guest-fio, path: dax, ioengine: mmap, rw: randwrite, bs: 4k, size: 16MiB, runtime: 1s, pm_size: 64MiB }
  blk: { tool: guest-fio, path: blk, ioengine: psync, direct: true, rw: randwrite, bs: 4k, size: 16MiB, runtime: 1s, pm_size: 64MiB }
matrix:
  axes:
    workload: [dax, blk]
    backend: [raw, pcow, qcow2]
  exclude:
    - { workload: dax, backend: qcow2 }
    - { workload: blk, backend: raw }
    - { workload: blk, backend: pcow }
`,
    );
    const results = path.join(tmp, 'res-backends');
    const out = await runExperiment({ file, resultsRoot: results, sink: quiet, print: silent, skipReport: true });
    const runDir = out.runDir as string;
    const cells = await readJson<CellRecord[]>(path.join(runDir, 'cells.json'));
    expect(cells.map((c) => `${c.id}:${c.status}:${c.repetitions[0]?.reason ?? ''}`)).toEqual(['dax.backend=raw:ok:', 'dax.backend=pcow:ok:', 'blk.backend=qcow2:ok:']);
    expect(out.exitCode).toBe(0);
    const manifest = await readJson<Manifest>(path.join(runDir, 'manifest.json'));
    const samples = (await readFile(path.join(runDir, 'samples.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { cell: string; metric: string; value: number });
    const iops = Object.fromEntries(samples.filter((s) => s.metric === 'iops').map((s) => [s.cell, s.value]));
    for (const c of cells) {
      expect(iops[c.id], c.id).toBeGreaterThan(0);
      const d = c.details as Record<string, unknown>;
      expect(d['accelerator']).toBe(manifest.accelerator);
      expect(d['fioVersion']).toMatch(/^fio-3/);
      const setup = d['guestSetup'] as Record<string, string>;
      if (c.id.startsWith('dax')) {
        expect(setup['mount']).toMatch(/^\/dev\/pmem0 \/mnt\/pm ext4 \S*dax=always/);
        expect(JSON.parse(setup['namespace'] as string)).toMatchObject({ mode: 'fsdax', blockdev: 'pmem0' });
      } else {
        expect(setup['blockdev']).toMatch(/^\/dev\/vd[b-z]$/);
      }
      // The raw report and the console are kept with the repetition.
      const rep = path.join(runDir, 'cells', c.id, 'rep-0');
      expect((await readdir(rep)).sort()).toEqual(expect.arrayContaining(['fio.json', 'fio-fill.json', 'serial.log']));
    }
    const pcow = cells.find((c) => c.id === 'dax.backend=pcow')!.details as Record<string, unknown>;
    expect(pcow['queryPcow']).toEqual([expect.objectContaining({ id: 'pmem1', stats: expect.objectContaining({ errors: 0 }) })]);
    expect(String(pcow['qemu'])).toMatch(/\.cache\/pcow\/qemu\//);
    // Same-run figures, for the log (not asserted: the host is noisy).
    console.log(`guest-fio (${manifest.accelerator}) 4 KiB randwrite IOPS: raw-dax ${iops['dax.backend=raw']?.toFixed(0)}, pcow-dax ${iops['dax.backend=pcow']?.toFixed(0)}, qcow2-blk ${iops['blk.backend=qcow2']?.toFixed(0)}`);
    expect(liveVmCount()).toBe(0);
    expect(await qemusWith(pmDirs[pmDirs.length - 1] as string)).toEqual([]);
  }, 10 * 60_000);
});

describe('guest-fio: a killed guest, SIGINT and --resume', () => {
  it('kill -9 of a cell\'s QEMU fails that cell with the reason and the serial tail, the run goes on; SIGINT leaves no QEMU; --resume re-runs only the lost cells', async () => {
    const name = 'gfio-kill';
    const file = await experiment(
      name,
      `repetitions: 1
timeout: 4m
workloads:
  w: { tool: guest-fio, backend: raw, path: dax, ioengine: mmap, bs: 4k, size: 16MiB, pm_size: 64MiB }
matrix:
  axes:
    rw: [randread, randwrite, read]
    runtime: [1s, 8s, 9s]
  zip:
    - [rw, runtime]
`,
    );
    const pm = pmDirs[pmDirs.length - 1] as string;
    const results = path.join(tmp, 'res-kill');
    const child = spawn(process.execPath, [path.join(repoRoot, 'bin', 'pcow-harness.mjs'), 'run', file, '--results', results], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stdout.on('data', () => undefined);
    let exitCode: number | null | undefined;
    const exited = new Promise<number | null>((resolve) =>
      child.on('exit', (c) => {
        exitCode = c;
        resolve(c);
      }),
    );
    // One listener for the whole run (chunks arriving between two waits must not be lost).
    const waiters = new Set<() => void>();
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      for (const w of waiters) w();
    });
    // Resolves when the CLI's log shows `re`; fails at once (with the log) if the CLI ends first.
    const seen = (re: RegExp): Promise<void> =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (re.test(err)) {
            waiters.delete(check);
            resolve();
          } else if (exitCode !== undefined) {
            waiters.delete(check);
            reject(new Error(`the CLI exited (${exitCode}) before ${re}:\n${err}`));
          }
        };
        waiters.add(check);
        void exited.then(check);
        check();
      });
    // Cell 2: kill its QEMU once the measured pass is under way (the fill is done).
    await seen(/w\.rw=randwrite\.runtime=8s: filled the region/);
    await new Promise((r) => setTimeout(r, 1500));
    const q = await qemusWith(pm);
    expect(q, err).toHaveLength(1);
    process.kill(Number.parseInt((q[0] as string).trim(), 10), 'SIGKILL');
    // The run goes on to cell 3; interrupt it while its guest runs.
    await seen(/w\.rw=read\.runtime=9s: guest up/);
    child.kill('SIGINT');
    const code = await exited;
    expect(code, err).toBe(130);
    expect(await qemusWith(pm)).toEqual([]);

    const runDir = await onlyRunDir(results, name);
    expect((await readJson<Manifest>(path.join(runDir, 'manifest.json'))).status).toBe('interrupted');
    const before = await readJson<CellRecord[]>(path.join(runDir, 'cells.json'));
    const status = Object.fromEntries(before.map((c) => [c.id, c.status]));
    expect(status).toEqual({ 'w.rw=randread.runtime=1s': 'ok', 'w.rw=randwrite.runtime=8s': 'failed', 'w.rw=read.runtime=9s': 'interrupted' });
    const killed = before.find((c) => c.status === 'failed')!.repetitions[0]!;
    expect(killed.reason).toMatch(/killed by SIGKILL/);
    expect(killed.reason).toMatch(/--- serial console, last \d+ lines ---/);

    const first = before.find((c) => c.status === 'ok')!;
    const resumed = await runExperiment({ file, resume: runDir, sink: quiet, print: silent, skipReport: true });
    expect(resumed.exitCode).toBe(0);
    const after = await readJson<CellRecord[]>(path.join(runDir, 'cells.json'));
    expect(after.every((c) => c.status === 'ok')).toBe(true);
    // The finished cell was not run again: its record is the same.
    expect(after.find((c) => c.hash === first.hash)!.repetitions).toEqual(first.repetitions);
    expect(liveVmCount()).toBe(0);
    expect(await qemusWith(pm)).toEqual([]);
  }, 15 * 60_000);
});
