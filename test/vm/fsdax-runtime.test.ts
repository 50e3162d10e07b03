// The runtime on a real fs-dax mount: this host has no pmem, a TCG guest does. The guest makes
// its raw NVDIMM an fsdax namespace, mounts ext4 -o dax and runs the runtime's C tests
// (rt-test, rt-model) and pcow-bench cases with their images there (guest-scripts/fsdax-runtime.sh),
// so MAP_SYNC, DAX faults and the fs-dax persistence path run for real. The guest kernel (6.1)
// has no UFFDIO_POISON: that test skips, the fallback error test runs.
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guestScript } from '../../src/vm/guest.ts';
import { GiB, liveVmCount } from '../../src/vm/machine.ts';
import { guestAccel } from '../../src/vm/accel.ts';
import { runGuest } from '../../src/vm/session.ts';
import { nativeBins, nativeDir, runtimeDir } from '../../src/build/native.ts';
import { runChecked } from '../../src/util/proc.ts';

// The boot probe's verdict (KVM where a guest really boots under it), or PCOW_VM_ACCEL.
const { accel } = await guestAccel({ log: (l) => console.log(l) });
let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pcow-vm-daxrt-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface BenchOut {
  result: Record<string, unknown>;
  runtime: { dax: boolean; persist: string; expansions: number; cows: number; poison_supported: boolean };
}

describe('the runtime on an ext4 -o dax mount inside a guest', () => {
  it('rt-test and rt-model pass, pcow-bench expansion/cow/steady run with MAP_SYNC (dax: true)', async () => {
    await runChecked('make', ['-C', nativeDir, 'build/pcow-img'], { timeoutMs: 600_000 });
    await runChecked('make', ['-C', runtimeDir, 'all', 'build/rt-test', 'build/rt-model'], { timeoutMs: 600_000 });
    const bins = nativeBins();
    const size = GiB;
    const img = join(dir, 'dax.raw');
    await writeFile(img, '');
    await truncate(img, size);
    const run = await runGuest({
      accel,
      memory: GiB,
      disks: [{ kind: 'nvdimm', backend: { type: 'raw', path: img, size } }],
      script: await guestScript('fsdax-runtime.sh'),
      binaries: [join(runtimeDir, 'build/rt-test'), join(runtimeDir, 'build/rt-model'), bins.pcowImg, bins.pcowBench],
      env: { PCOW_TEST_TIMEOUT_SCALE: '5', CRASH_TRIALS: '6', PCOW_MODEL_SECONDS: '3', EXP_CLUSTERS: '200', COW_CLUSTERS: '200', STEADY_SIZE: '64M', STEADY_SECONDS: '4', STEADY_ROUNDS: '4' },
      timeoutMs: 40 * 60_000,
    });
    const tail = (re: RegExp): string => run.lines.filter((l) => re.test(l)).slice(-60).join('\n');
    expect(run.rc, run.lines.slice(-40).join('\n')).toBe(0);
    const r = run.results;
    expect(r.get('mounts')).toMatch(/^\/dev\/pmem0 \/mnt ext4 \S*dax=always/);
    expect(r.get('rt-test-rc'), tail(/rt-test/)).toBe('0');
    expect(r.get('rt-test-summary')).toMatch(/^(\d+)\/\1 runtime tests passed$/);
    if (!/^6\.([6-9]|\d\d)|^[7-9]\./.test(r.get('kernel') ?? '')) {
      // < 6.6: the POISON test says why it skipped, it does not fail
      expect(run.lines.join('\n')).toMatch(/skipped: this kernel's userfaultfd has no UFFDIO_POISON/);
    }
    expect(r.get('rt-model-rc'), tail(/rt-model/)).toBe('0');
    const exp = JSON.parse(r.get('bench-expansion') ?? '{}') as BenchOut;
    const cow = JSON.parse(r.get('bench-cow') ?? '{}') as BenchOut;
    const steady = JSON.parse(r.get('bench-steady') ?? '{}') as BenchOut;
    for (const b of [exp, cow, steady]) expect(b.runtime).toMatchObject({ dax: true, persist: 'map_sync+fdatasync' });
    expect(exp.runtime.expansions).toBeGreaterThanOrEqual(200);
    expect(cow.runtime.cows).toBeGreaterThan(0);
    // The fs_dax trace events work: the raw file's 64 MiB range is mapped with 2 MiB PMDs
    // (pcow's range falls back to 4 KiB PTEs today: printed, see native/runtime/README.md).
    expect(r.get('steady-dax-faults')).toMatch(/steady\.raw pmd NOPAGE=\d+/);
    expect(liveVmCount()).toBe(0);
    console.log(
      `runtime on fs-dax (${accel}, guest ${r.get('kernel')}, /dev/userfaultfd: ${r.get('userfaultfd-dev')}): ${r.get('rt-test-summary')} (${r.get('rt-test-skipped')} skipped); ` +
        `expansion p50/floor ${String(exp.result.p50_over_floor)}, 4 KiB COW p50/floor ${String(cow.result.p50_over_floor)}, steady pcow/raw ${String(steady.result.pcow_over_raw)} (pcow VMAs in range ${String(steady.result.vmas_in_range)}); ` +
        `smaps during steady: ${r.get('steady-smaps')}; DAX faults during steady (file, size, result=count): ${r.get('steady-dax-faults')}; guest run ${(run.totalMs / 1000).toFixed(0)} s`,
    );
  }, 45 * 60_000);
});
