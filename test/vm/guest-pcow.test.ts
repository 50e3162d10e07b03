// Guests on pcow NVDIMMs through the patched QEMU (src/build/qemu.ts: built once, then cached):
// data the guest writes is in the image after power-off; a 4 GiB image written at three places
// stays a few clusters; offline (pcow-img) and live (QMP) snapshots roll back to what the guest
// wrote before; a base image's data is visible to the guest and its writes never reach the base;
// a full image gives user-space stores in the guest SIGBUS BUS_MCEERR_AR (machine checks from
// QEMU, KVM or TCG) while guest and QEMU keep running.
import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeBins } from '../../src/build/native.ts';
import { patchedQemu, type PatchedQemu } from './patched-qemu.ts';
import { runChecked } from '../../src/util/proc.ts';
import { repoRoot } from '../../src/util/paths.ts';
import { bootInitrd, ensureGuestImage, guestScript } from '../../src/vm/guest.ts';
import { GiB, MiB, Vm, VmError, liveVmCount, type Disk } from '../../src/vm/machine.ts';
import { guestAccel } from '../../src/vm/accel.ts';
import { runGuest, type GuestRunOptions } from '../../src/vm/session.ts';
import { pcowImgCheck, pcowImgInfo } from '../../src/workloads/pcow-img.ts';

// The boot probe's verdict (KVM where a guest really boots under it), or PCOW_VM_ACCEL.
const { accel } = await guestAccel({ log: (l) => console.log(l) });
const guestScriptsDir = join(repoRoot, 'guest-scripts');
// tmpfs under the full-image test's image: its 192 KiB, the devdax info block, ~a dozen clusters.
const FULL_FS_KIB = 1024;
// Linux recovers from a machine check in user space only with Intel-style MCA severities (or
// AMD's overflow-recov, which QEMU 7.2 cannot give a TCG CPU): TCG's -cpu max is an AMD K8, whose
// guest panics ("Uncorrected error without MCA Recovery"), so the memory-error test gives the
// guest an Intel vendor. KVM passes the host CPU as it is.
const mceCpuArgs = accel === 'tcg' ? ['-cpu', 'max,vendor=GenuineIntel'] : [];
const pcowImg = nativeBins().pcowImg;
let qemu: PatchedQemu;
let dir = '';
// Emulated PM, where experiments keep their images on this host (a tmpfs, as the harness's
// emulated-PM setup uses); `dir` is on the disk file system of tmpdir().
let pmDir = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pcow-vm-pcow-'));
  pmDir = await mkdtemp('/dev/shm/pcow-vm-pcow-');
  qemu = await patchedQemu();
}, 30 * 60_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await rm(pmDir, { recursive: true, force: true });
});

async function img(...args: string[]): Promise<string> {
  return (await runChecked(pcowImg, args, { timeoutMs: 120_000 })).stdout;
}

/** What the image holds at `off` (its first `len` bytes, trailing NULs dropped). */
async function imgRead(image: string, off: number, len = 16): Promise<string> {
  const r = await runChecked(pcowImg, ['read', '-U', image, String(off), String(len)], { timeoutMs: 60_000 });
  return r.stdout.replace(/\0+$/, '');
}

async function expectClean(image: string): Promise<void> {
  const c = (await pcowImgCheck(pcowImg, image)).result;
  expect(c, JSON.stringify(c.messages)).toMatchObject({ status: 'clean', corruptions: 0, leaks: 0, checkErrors: 0 });
}

function pcowDisk(path: string, size: number): Disk {
  return { kind: 'nvdimm', backend: { type: 'pcow', path, size } };
}

async function guest(image: string, size: number, env: Record<string, string>, more: Partial<GuestRunOptions> & { scriptName?: string } = {}) {
  const { scriptName, ...rest } = more;
  const r = await runGuest({
    accel,
    qemu: qemu.binary,
    extraArgs: qemu.firmwareArgs,
    disks: [pcowDisk(image, size)],
    script: await guestScript(scriptName ?? 'write-offsets.sh'),
    env,
    ...rest,
  });
  if (r.rc !== null) expect(r.rc, r.lines.slice(-25).join('\n')).toBe(0);
  return r;
}

const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

describe('guests on a pcow NVDIMM (patched QEMU)', () => {
  it('4 GiB image: guest writes at three places are in the image (read, convert, map), a few clusters on disk; offline snapshot, overwrite, rollback, boot: old data back', async () => {
    const size = 4 * GiB;
    const image = join(dir, 'thin.pcow');
    await img('create', '-c', '64K', image, '4G');
    const offsets = [0, 2 * GiB, size - 4096];
    const first = await guest(image, size, { OFFSETS: offsets.join(' '), READ_OFFSETS: '', TAG: 'gen1' });
    expect(first.results.get('pmem0-bytes')).toBe(String(size));
    for (const off of offsets) expect(await imgRead(image, off)).toBe(`pcow-gen1-${off}`.slice(0, 16));
    await expectClean(image);

    // Thin: three 4 KiB writes (plus what boot touched) out of 65536 clusters.
    const info = (await pcowImgInfo(pcowImg, image)).result;
    expect(info.allocatedClusters).toBeGreaterThanOrEqual(3);
    expect(info.allocatedClusters).toBeLessThanOrEqual(8);
    const du = (await stat(image)).blocks * 512;
    expect(du).toBeLessThan(4 * MiB);
    const map = JSON.parse(await img('map', '--output=json', image)) as { start: number; length: number; data: boolean }[];
    for (const off of offsets) expect(map.some((e) => e.data && e.start <= off && off < e.start + e.length), `map covers ${off}`).toBe(true);
    const raw = join(dir, 'thin.raw');
    await img('convert', '-f', 'pcow', '-O', 'raw', image, raw);
    expect((await stat(raw)).size).toBe(size);
    const fh = await open(raw, 'r');
    for (const off of offsets) {
      const b = Buffer.alloc(32);
      await fh.read(b, 0, 32, off);
      expect(b.toString('latin1').replace(/\0+$/, '')).toBe(`pcow-gen1-${off}`);
    }
    await fh.close();
    await rm(raw);

    await img('snapshot', '-c', 'before', image);
    const second = await guest(image, size, { OFFSETS: offsets.join(' '), READ_OFFSETS: String(2 * GiB), TAG: 'gen2' });
    expect(second.results.get(`read-${2 * GiB}`)).toBe(`pcow-gen1-${2 * GiB}`);
    for (const off of offsets) expect(await imgRead(image, off)).toBe(`pcow-gen2-${off}`.slice(0, 16));
    await expectClean(image);

    await img('rollback', image, 'before');
    const third = await guest(image, size, { OFFSETS: '', READ_OFFSETS: offsets.join(' '), TAG: 'none' });
    for (const off of offsets) expect(third.results.get(`read-${off}`)).toBe(`pcow-gen1-${off}`);
    await expectClean(image);
    console.log(`pcow 4 GiB guest (${accel}): boot to init ${secs(first.bootMs)}, power-off ${secs(first.totalMs)}; ${info.allocatedClusters} clusters, du ${du} bytes`);
    expect(liveVmCount()).toBe(0);
  });

  // The pause is reported for an image on emulated PM (where experiments keep images here; on
  // Optane, fs-dax) and on a disk file system (where each commit of the snapshot is a journal
  // commit: native/qemu/README.md).
  it.each([
    ['emulated PM (tmpfs)', (): string => pmDir],
    ['a disk file system', (): string => dir],
  ])('live snapshot over QMP while the guest writes, image on %s: the guest pause is reported, rollback + boot gives the data from before', async (where, at) => {
    const size = 256 * MiB;
    const image = join(at(), 'live.pcow');
    await img('create', '-c', '64K', image, '256M');
    const offsets = [4096, 100 * MiB];
    let snap: Record<string, unknown> = {};
    let stats: unknown;
    const run = await guest(
      image,
      size,
      { OFFSETS: offsets.join(' '), BUSY_OFFSET: String(200 * MiB) },
      {
        scriptName: 'live-snapshot.sh',
        control: true,
        whileRunning: async (vm) => {
          await vm.waitFor(/PCOW-WAIT-HOST snapshot-taken/, 60_000);
          snap = await vm.qmp!.execute<Record<string, unknown>>('pcow-snapshot-create', { name: 'live' });
          stats = await vm.qmp!.execute('query-pcow');
          await vm.send('snapshot-taken');
        },
      },
    );
    expect(snap).toMatchObject({ name: 'live' });
    expect(typeof snap['pause-ns']).toBe('number');
    expect(typeof snap['sync-ns']).toBe('number');
    expect(stats).toEqual([expect.objectContaining({ id: 'pmem0', stats: expect.anything() })]);
    expect(run.results.get('busy-last')).toMatch(/^busy-\d{8}$/);
    for (const off of offsets) expect(await imgRead(image, off)).toBe(`pcow-gen2-${off}`.slice(0, 16));
    await expectClean(image);
    expect(await img('snapshot', '-l', image)).toMatch(/\blive\b/);

    await img('rollback', image, 'live');
    const after = await guest(image, size, { OFFSETS: '', READ_OFFSETS: offsets.join(' '), TAG: 'none' });
    for (const off of offsets) expect(after.results.get(`read-${off}`)).toBe(`pcow-gen1-${off}`);
    await expectClean(image);
    console.log(`live snapshot (${accel}, image on ${where}): pause ${((snap['pause-ns'] as number) / 1e6).toFixed(2)} ms, switch ${((snap['switch-ns'] as number) / 1e6).toFixed(2)} ms, persist point before the pause ${((snap['sync-ns'] as number) / 1e6).toFixed(2)} ms`);
  });

  it('an image on a base: the guest reads the base data, its writes go to the image and never reach the base', async () => {
    const size = 64 * MiB;
    const base = join(dir, 'base.pcow');
    const image = join(dir, 'over.pcow');
    await img('create', '-c', '64K', base, '64M');
    const planted = join(dir, 'planted');
    await writeFile(planted, 'from-the-base');
    await img('write', base, String(8 * MiB), planted);
    await img('write', base, String(16 * MiB), planted);
    await img('create', '-c', '64K', '-b', 'base.pcow', '-F', 'pcow', image, '64M');
    const baseHash = createHash('sha256').update(await readFile(base)).digest('hex');

    const r = await guest(image, size, { OFFSETS: `${16 * MiB} ${32 * MiB}`, READ_OFFSETS: `${8 * MiB} ${16 * MiB}`, TAG: 'over' });
    expect(r.results.get(`read-${8 * MiB}`)).toBe('from-the-base');
    expect(r.results.get(`read-${16 * MiB}`)).toBe('from-the-base');
    expect(createHash('sha256').update(await readFile(base)).digest('hex')).toBe(baseHash);
    expect(await imgRead(image, 8 * MiB)).toBe('from-the-base');
    expect(await imgRead(image, 16 * MiB)).toBe(`pcow-over-${16 * MiB}`.slice(0, 16));
    expect(await imgRead(image, 32 * MiB)).toBe(`pcow-over-${32 * MiB}`.slice(0, 16));
    expect(await imgRead(base, 16 * MiB)).toBe('from-the-base');
    await expectClean(image);
    await expectClean(base);
  });

  it('a second QEMU on an image a running guest holds fails at start with the lock message; the first keeps running', async () => {
    const image = join(dir, 'locked.pcow');
    await img('create', '-c', '64K', image, '64M');
    const g = await ensureGuestImage();
    const initrd = await bootInitrd(g.initramfs, join(dir, 'lock-initrd.cpio'), 'sleep 600\n'); // the guest stays up
    const spec = { accel, qemu: qemu.binary, extraArgs: qemu.firmwareArgs, kernel: g.bootKernel, initrd, append: 'pcowtoken=lock', disks: [pcowDisk(image, 64 * MiB)] };
    const first = await Vm.start(spec);
    try {
      const err = await Vm.start(spec).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(VmError);
      expect((err as Error).message).toMatch(/QEMU exited during startup \(before its QMP socket was ready\); QEMU exited with code 1 .*QEMU stderr: .*locked\.pcow.*locked by another process/);
      await expect(first.qmp!.execute('query-status')).resolves.toMatchObject({ status: 'running' });
    } finally {
      await first.stop();
    }
    expect(liveVmCount()).toBe(0);
  });

  // The runtime answers a store it cannot back (the image's file system is full) with a memory
  // error (UFFDIO_POISON: SIGBUS BUS_MCEERR_AR on QEMU's vCPU thread). QEMU turns it into a
  // machine check at the faulting store (KVM; under TCG native/qemu 0006), the guest kernel's
  // memory-failure handling sends the storing process SIGBUS BUS_MCEERR_AR, and everyone else
  // keeps running. The stores come from user space through a devdax mapping: a machine check on
  // a kernel-mode store (the pmem driver's copy, ext4-dax zeroing) panics the guest.
  it('an image whose file system fills up: user-space DAX stores past the end get SIGBUS BUS_MCEERR_AR, the guest and QEMU keep running, the image is clean', async () => {
    await runChecked('make', ['-C', guestScriptsDir], { timeoutMs: 120_000 });
    const fsDir = await mkdtemp(join(tmpdir(), 'pcow-vm-full-'));
    // Room for the image (192 KiB), the namespace's info block and a dozen 64 KiB clusters.
    await runChecked('mount', ['-t', 'tmpfs', '-o', `size=${FULL_FS_KIB}k`, 'tmpfs', fsDir]);
    try {
      const image = join(fsDir, 'full.pcow');
      await img('create', '-c', '64K', image, '64M');
      let status: unknown;
      let stats: { stats?: { errors?: number; expansions?: number } }[] = [];
      let qemuErr = '';
      const step = 64 * 1024;
      const count = 32;
      const r = await runGuest({
        accel,
        qemu: qemu.binary,
        extraArgs: [...qemu.firmwareArgs, ...mceCpuArgs],
        disks: [pcowDisk(image, 64 * MiB)],
        script: await guestScript('dax-full.sh'),
        // read-first: each byte is loaded, then stored. Under TCG the first failing store then
        // takes the TLB fast path in generated code, the later ones QEMU's store helper (gdb on
        // the SIGBUSes: 1 in code_gen_buffer, 20 in full_stb_mmu): both paths are delivered.
        env: { STEP: String(step), COUNT: String(count), READ_FIRST: 'read-first' },
        binaries: [join(guestScriptsDir, 'build', 'dax-store')],
        control: true,
        whileRunning: async (vm) => {
          await vm.waitFor(/PCOW-WAIT-HOST checked/, 60_000);
          status = await vm.qmp!.execute('query-status');
          stats = await vm.qmp!.execute('query-pcow');
          qemuErr = await readFile(vm.stderrFile, 'utf8');
          await vm.send('checked');
        },
      });
      const res = r.results;
      const ok = Number(res.get('store-ok'));
      const bus = Number(res.get('store-sigbus'));
      const why = `${r.lines.filter((l) => /PCOW-(RESULT|DMESG)|mce|Memory failure/i.test(l)).join('\n')}\nQEMU stderr:\n${qemuErr}`;
      // Stores before the file system filled up completed, every later one got SIGBUS BUS_MCEERR_AR.
      expect(ok, why).toBeGreaterThan(0);
      expect(bus, why).toBeGreaterThan(0);
      expect(ok + bus).toBe(count);
      expect(res.get('store-order'), why).toBe('ok-then-sigbus');
      expect(res.get('store-first-code'), why).toBe('BUS_MCEERR_AR');
      expect(Number(res.get('store-mceerr-ar'))).toBe(bus);
      expect(res.get('store-readback-bad')).toBe('0');
      expect(Number(res.get('dmesg-memory-failure')), why).toBeGreaterThan(0);
      // The guest went on after the errors (its marker, no panic) and powered off by itself.
      expect(r.lines.some((l) => l === 'PCOW-STORES-DONE')).toBe(true);
      expect(r.lines.some((l) => /Kernel panic/.test(l))).toBe(false);
      expect(r.rc, r.lines.slice(-25).join('\n')).toBe(0);
      // QEMU answered while the guest ran, counted the errors, and said which image and why.
      expect(status).toMatchObject({ status: 'running' });
      expect(stats[0]?.stats?.errors, JSON.stringify(stats)).toBeGreaterThanOrEqual(bus);
      expect(qemuErr).toMatch(/memory error at offset \d+ of memory-backend-file format=pcow \S*full\.pcow: .*No space left on device/);
      expect(qemuErr).toMatch(/Guest MCE Memory Error at QEMU addr \S+ and GUEST addr 0x[0-9a-f]+ of type BUS_MCEERR_AR injected/);
      // The completed stores are in the image, at the dax device's data offset.
      const base = Number(res.get('data-offset'));
      expect(Number.isSafeInteger(base) && base > 0, `data-offset ${res.get('data-offset')}`).toBe(true);
      const lastOk = Number(res.get('store-last-ok'));
      expect(await imgRead(image, base, 1)).toBe('P');
      expect(await imgRead(image, base + lastOk, 1)).toBe('P');
      await expectClean(image);
      console.log(
        `full image (${accel}, tmpfs ${FULL_FS_KIB} KiB): ${ok} of ${count} stores of one byte per 64 KiB done, ${bus} got SIGBUS ${res.get('store-first-code')} ` +
          `(first at +${res.get('store-first-sigbus')}, si_addr_lsb ${res.get('store-first-lsb')}); query-pcow errors ${stats[0]?.stats?.errors}; guest dmesg:\n` +
          r.lines.filter((l) => l.startsWith('PCOW-DMESG')).join('\n'),
      );
    } finally {
      await runChecked('umount', [fsDir]);
      await rm(fsDir, { recursive: true, force: true });
    }
  });

  // A guest CPU without machine-check architecture cannot be told: QEMU stops, and says which
  // image failed, why, and why the error could not be delivered (TCG; KVM exits the same way).
  it('a full image under a guest CPU without MCA: QEMU stops with the image, the reason and why it could not tell the guest', async () => {
    const fsDir = await mkdtemp(join(tmpdir(), 'pcow-vm-nomca-'));
    await runChecked('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', fsDir]);
    try {
      const image = join(fsDir, 'nomca.pcow');
      await img('create', '-c', '64K', image, '64M');
      const err = await runGuest({
        accel,
        qemu: qemu.binary,
        extraArgs: [...qemu.firmwareArgs, '-cpu', `${accel === 'kvm' ? 'host,-arch-capabilities' : 'max'},mce=off,mca=off`],
        disks: [pcowDisk(image, 64 * MiB)],
        script: await guestScript('fill.sh'),
        env: { MIB: '4' },
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(VmError);
      const msg = (err as Error).message;
      expect(msg).toMatch(/QEMU exited before the done marker/);
      expect(msg).toMatch(/memory error at offset \d+ of memory-backend-file format=pcow \S*nomca\.pcow: .*No space left on device/);
      if (accel === 'tcg') {
        expect(msg).toMatch(/QEMU was killed by SIGBUS/);
        expect(msg).toMatch(/cannot be delivered to the guest \(the guest CPU has no recoverable machine-check architecture/);
      }
      // Killed mid-write: dirty as after any crash, but no corruption and no leak.
      const c = (await pcowImgCheck(pcowImg, image)).result;
      expect(c, JSON.stringify(c.messages)).toMatchObject({ corruptions: 0, leaks: 0, checkErrors: 0 });
    } finally {
      await runChecked('umount', [fsDir]);
      await rm(fsDir, { recursive: true, force: true });
    }
    expect(liveVmCount()).toBe(0);
  });
});
