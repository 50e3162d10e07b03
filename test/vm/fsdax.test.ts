// A guest formats its NVDIMM as an fsdax namespace, mkfs.ext4, mount -o dax, writes files,
// syncs and is killed (SIGKILL of QEMU) while still writing; the next boot finds the synced
// files intact and e2fsck -fn clean.
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guestScript } from '../../src/vm/guest.ts';
import { MiB, liveVmCount, type Disk } from '../../src/vm/machine.ts';
import { guestAccel } from '../../src/vm/accel.ts';
import { runGuest } from '../../src/vm/session.ts';
import { nativeBins } from '../../src/build/native.ts';
import { patchedQemu } from './patched-qemu.ts';
import { runChecked } from '../../src/util/proc.ts';
import { pcowImgCheck } from '../../src/workloads/pcow-img.ts';

// The boot probe's verdict (KVM where a guest really boots under it), or PCOW_VM_ACCEL.
const { accel } = await guestAccel({ log: (l) => console.log(l) });
let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pcow-vm-dax-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function daxCrash(disks: Disk[], qemu?: { binary: string; firmwareArgs: string[] }, env: Record<string, string> = {}): Promise<{ bootMs: number; killedMs: number; secondMs: number; stats: unknown }> {
  let stats: unknown = null;
  const first = await runGuest({
    accel,
    qemu: qemu?.binary,
    extraArgs: qemu?.firmwareArgs,
    disks,
    script: await guestScript('fsdax-write.sh'),
    env: { FILES: '3', FILE_KIB: '192', ...env },
    atMarker: {
      pattern: /PCOW-SYNCED/,
      action: async (vm) => {
        if (qemu) stats = await vm.qmp!.execute('query-pcow');
        await new Promise((r) => setTimeout(r, 300)); // let the unsynced writes start
        await vm.kill9();
      },
    },
  });
  expect(first.results.get('mounts')).toMatch(/^\/dev\/pmem0 \/mnt ext4 \S*dax=always/);
  expect(first.results.get('queue-dax')).toBe('1');
  expect(JSON.parse(first.results.get('namespace') ?? '{}')).toMatchObject({ mode: 'fsdax', blockdev: 'pmem0' });
  const sums = ['f1', 'f2', 'f3'].map((f) => first.results.get(`sum-${f}`));
  expect(new Set(sums).size).toBe(3);

  const second = await runGuest({ accel, qemu: qemu?.binary, extraArgs: qemu?.firmwareArgs, disks, script: await guestScript('fsdax-check.sh') });
  expect(second.rc, second.lines.slice(-20).join('\n')).toBe(0);
  expect(second.results.get('namespace-mode')).toBe('memory'); // sysfs name of fsdax
  expect(second.results.get('mounts')).toMatch(/dax=always/);
  expect(['f1', 'f2', 'f3'].map((f) => second.results.get(`sum-${f}`))).toEqual(sums);
  expect(second.results.get('fsck-rc'), second.lines.slice(-30).join('\n')).toBe('0');
  expect(liveVmCount()).toBe(0);
  return { bootMs: first.bootMs, killedMs: first.totalMs, secondMs: second.totalMs, stats };
}

describe('fs-dax ext4 on the NVDIMM survives kill -9 of QEMU', () => {
  it('raw NVDIMM (stock QEMU): synced files intact, e2fsck -fn clean after the crash', async () => {
    const size = 256 * MiB;
    const img = join(dir, 'dax.raw');
    await writeFile(img, '');
    await truncate(img, size);
    const t = await daxCrash([{ kind: 'nvdimm', backend: { type: 'raw', path: img, size } }]);
    console.log(`fs-dax crash test, raw (${accel}): first boot to init ${(t.bootMs / 1000).toFixed(1)} s, killed at ${(t.killedMs / 1000).toFixed(1)} s; second boot ${(t.secondMs / 1000).toFixed(1)} s`);
  });

  it('pcow NVDIMM with a label area (patched QEMU): labels initialized, synced files intact, e2fsck -fn clean, pcow-img check clean; query-pcow after mkfs + writes', async () => {
    const qemu = await patchedQemu();
    // label-size 128K: the pmem part must be N x 16 MiB, so the image is 256 MiB + the label.
    const labelSize = 128 * 1024;
    const size = 256 * MiB + labelSize;
    const img = join(dir, 'dax.pcow');
    await runChecked(nativeBins().pcowImg, ['create', '-c', '64K', img, String(size)]);
    const t = await daxCrash([{ kind: 'nvdimm', labelSize, backend: { type: 'pcow', path: img, size } }], qemu, { LABELS: '1' });
    const check = (await pcowImgCheck(nativeBins().pcowImg, img)).result;
    expect(check, JSON.stringify(check.messages)).toMatchObject({ status: 'clean', corruptions: 0, checkErrors: 0 });
    expect(t.stats).toEqual([expect.objectContaining({ id: 'pmem0', stats: expect.anything() })]);
    console.log(`fs-dax crash test, pcow (${accel}): first boot to init ${(t.bootMs / 1000).toFixed(1)} s, killed at ${(t.killedMs / 1000).toFixed(1)} s; second boot ${(t.secondMs / 1000).toFixed(1)} s; query-pcow after mkfs + 3 files: ${JSON.stringify(t.stats)}`);
  }, 30 * 60_000);
});
