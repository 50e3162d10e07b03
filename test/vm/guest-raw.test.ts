// Real guests under TCG (KVM with PCOW_VM_ACCEL=kvm) over a raw-file NVDIMM with Debian's
// stock QEMU: what the guest writes to /dev/pmem0 is in the file after power-off, what the
// host put there the guest reads; a dead or slow guest gives an error naming the reason with
// the console tail, and no QEMU outlives a run.
import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killAllChildren } from '../../src/util/proc.ts';
import { ensureGuestImage, guestScript } from '../../src/vm/guest.ts';
import { MiB, Vm, VmError, liveVmCount } from '../../src/vm/machine.ts';
import { guestAccel } from '../../src/vm/accel.ts';
import { runGuest } from '../../src/vm/session.ts';

// The boot probe's verdict (KVM where a guest really boots under it), or PCOW_VM_ACCEL.
const { accel } = await guestAccel({ log: (l) => console.log(l) });
let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pcow-vm-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function qemuGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

describe('guest over a raw NVDIMM file (stock QEMU)', () => {
  it('guest writes at several offsets of /dev/pmem0 land in the file; host data is read by the guest; QMP and the control channel work while it runs', async () => {
    const size = 64 * MiB;
    const img = join(dir, 'raw.img');
    await writeFile(img, '');
    await truncate(img, size);
    const fh = await open(img, 'r+');
    await fh.write(Buffer.from('host-planted'), 0, 12, 8 * MiB);
    await fh.close();
    const offsets = [0, MiB + 4096, size - 4096];
    let pid = 0;
    let status: unknown;
    const r = await runGuest({
      accel,
      disks: [{ kind: 'nvdimm', backend: { type: 'raw', path: img, size } }],
      script: await guestScript('write-offsets.sh'),
      env: { OFFSETS: offsets.join(' '), READ_OFFSETS: String(8 * MiB), TAG: 'raw', WAIT_HOST: 'write-now' },
      control: true,
      whileRunning: async (vm) => {
        pid = await vm.pid();
        status = await vm.qmp!.execute('query-status');
        // The guest holds its writes until told on the control channel.
        await vm.waitFor(/PCOW-WAIT-HOST write-now/, 60_000);
        expect((await readFile(img)).subarray(0, 8).toString('latin1')).toBe('\0'.repeat(8));
        await vm.send('write-now');
      },
    });
    expect(r.rc, r.lines.slice(-20).join('\n')).toBe(0);
    expect(r.results.get('pmem0-bytes')).toBe(String(size));
    expect(r.results.get(`read-${8 * MiB}`)).toBe('host-planted');
    expect(status).toMatchObject({ status: 'running' });
    const data = await readFile(img);
    for (const off of offsets) expect(data.subarray(off, off + 32).toString('latin1').replace(/\0+$/, '')).toBe(`pcow-raw-${off}`);
    console.log(`raw NVDIMM guest (${accel}): init after ${(r.bootMs / 1000).toFixed(1)} s, powered off after ${(r.totalMs / 1000).toFixed(1)} s`);
    expect(qemuGone(pid)).toBe(true);
    expect(liveVmCount()).toBe(0);
  });

  it('a guest that panics gives an error naming the panic, with the serial console tail; QEMU is gone', async () => {
    const err = await runGuest({ accel, disks: [], script: 'echo about-to-crash\necho c > /proc/sysrq-trigger\nsleep 30\n' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmError);
    expect((err as VmError).message).toMatch(/the guest kernel panicked \(Kernel panic - not syncing: sysrq triggered crash\) before the done marker/);
    expect((err as VmError).serialTail.join("\n")).toMatch(/about-to-crash(.|\n)*Kernel panic - not syncing/);
    expect(liveVmCount()).toBe(0);
  });

  it('a boot timeout names what it waited for and where the boot got to; QEMU is killed', async () => {
    const err = await runGuest({ accel, disks: [], script: 'true\n', timeoutMs: 1500 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmError);
    expect((err as VmError).message).toMatch(/timed out waiting for the guest init to start \(1\.\d s after QEMU started\); .*(firmware|kernel|boot loader|hung)/);
    expect(liveVmCount()).toBe(0);
  });
});

describe('teardown', () => {
  it("the harness's SIGINT/SIGTERM path (killAllChildren) kills a running QEMU, and stop() then returns", async () => {
    const guest = await ensureGuestImage();
    const vm = await Vm.start({ accel, kernel: guest.bootKernel, initrd: guest.initramfs, append: 'pcowtoken=teardown' });
    const pid = await vm.pid();
    expect(qemuGone(pid)).toBe(false);
    expect(killAllChildren('SIGKILL')).toBeGreaterThanOrEqual(1);
    const r = await vm.stop();
    expect(r.signal).toBe('SIGKILL');
    expect(qemuGone(pid)).toBe(true);
    expect(liveVmCount()).toBe(0);
  });
});

describe('Vm.start failures', () => {
  it('a QEMU that refuses its arguments: the error holds QEMU stderr and the argv', async () => {
    const img = join(dir, 'missing', 'nothing.img');
    expect(existsSync(img)).toBe(false);
    const err = await runGuest({ accel, disks: [{ kind: 'nvdimm', backend: { type: 'raw', path: img, size: 16 * MiB } }], script: 'true\n' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmError);
    expect((err as Error).message).toMatch(/QEMU exited during startup \(before its QMP socket was ready\); QEMU exited with code 1 .*QEMU stderr: .*nothing\.img/);
    expect(liveVmCount()).toBe(0);
  });
});
