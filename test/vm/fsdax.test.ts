// A guest formats its NVDIMM as an fsdax namespace, mkfs.ext4, mount -o dax, writes files,
// syncs and is killed (SIGKILL of QEMU) while still writing; the next boot finds the synced
// files intact and e2fsck -fn clean.
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guestScript } from '../../src/vm/guest.ts';
import { MiB, liveVmCount, type Accel, type Disk } from '../../src/vm/machine.ts';
import { runGuest } from '../../src/vm/session.ts';

const accel = (process.env.PCOW_VM_ACCEL ?? 'tcg') as Accel;
let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pcow-vm-dax-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('fs-dax ext4 on the NVDIMM survives kill -9 of QEMU', () => {
  it('raw NVDIMM (stock QEMU): synced files intact, e2fsck -fn clean after the crash', async () => {
    const size = 256 * MiB;
    const img = join(dir, 'dax.raw');
    await writeFile(img, '');
    await truncate(img, size);
    const disks: Disk[] = [{ kind: 'nvdimm', backend: { type: 'raw', path: img, size } }];
    const first = await runGuest({
      accel,
      disks,
      script: await guestScript('fsdax-write.sh'),
      env: { FILES: '3', FILE_KIB: '192' },
      atMarker: {
        pattern: /PCOW-SYNCED/,
        action: async (vm) => {
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

    const second = await runGuest({ accel, disks, script: await guestScript('fsdax-check.sh') });
    expect(second.rc, second.lines.slice(-20).join('\n')).toBe(0);
    expect(second.results.get('namespace-mode')).toBe('memory'); // sysfs name of fsdax
    expect(second.results.get('mounts')).toMatch(/dax=always/);
    expect(['f1', 'f2', 'f3'].map((f) => second.results.get(`sum-${f}`))).toEqual(sums);
    expect(second.results.get('fsck-rc'), second.lines.slice(-30).join('\n')).toBe('0');
    console.log(`fs-dax crash test (${accel}): first boot to init ${(first.bootMs / 1000).toFixed(1)} s, killed at ${(first.totalMs / 1000).toFixed(1)} s; second boot ${(second.totalMs / 1000).toFixed(1)} s`);
    expect(liveVmCount()).toBe(0);
  });
});
