// The accelerator guests boot under when nobody says: PCOW_VM_ACCEL, else this host boot's
// remembered probe verdict, else one probe (concurrent callers share it).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AcceleratorProbe, KvmStatus } from '../../src/host/kvm.ts';
import { accelFromEnv, guestAccel, rememberAccel, rememberedProbe } from '../../src/vm/accel.ts';

let dir = '';
const saved = { cache: process.env.PCOW_CACHE, accel: process.env.PCOW_VM_ACCEL };
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pcow-accel-'));
  process.env.PCOW_CACHE = dir;
  delete process.env.PCOW_VM_ACCEL;
});
afterEach(async () => {
  for (const [k, v] of [['PCOW_CACHE', saved.cache], ['PCOW_VM_ACCEL', saved.accel]] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  await rm(dir, { recursive: true, force: true });
});

const kvm = (working: boolean | null, over: Partial<KvmStatus> = {}): KvmStatus => ({
  devicePresent: true,
  accessible: true,
  working,
  verdict: working ? 'present, working → KVM' : working === null ? 'present, not probed → TCG' : 'present, not working → TCG',
  detail: 'seen',
  probeMs: 1,
  ...over,
});

function fakeProbe(k: KvmStatus, calls: { n: number }): () => Promise<AcceleratorProbe> {
  return async () => {
    calls.n++;
    await new Promise((r) => setTimeout(r, 50));
    return { kvm: k, tcg: { working: true, detail: '', probeMs: 1 }, accelerator: k.working ? 'kvm' : 'tcg', kernel: null };
  };
}

describe('guestAccel', () => {
  it('PCOW_VM_ACCEL wins and is checked', async () => {
    process.env.PCOW_VM_ACCEL = 'kvm';
    await expect(guestAccel({ probe: fakeProbe(kvm(false), { n: 0 }) })).resolves.toEqual({ accel: 'kvm', why: 'PCOW_VM_ACCEL' });
    expect(() => accelFromEnv({ PCOW_VM_ACCEL: 'hvf' })).toThrow(/PCOW_VM_ACCEL must be "tcg" or "kvm", got "hvf"/);
    expect(accelFromEnv({})).toBeUndefined();
  });

  it('probes once per host boot, concurrent callers share the probe, the verdict is reused', async () => {
    const calls = { n: 0 };
    const probe = fakeProbe(kvm(false), calls);
    const all = await Promise.all([guestAccel({ probe }), guestAccel({ probe }), guestAccel({ probe })]);
    expect(all.map((c) => c.accel)).toEqual(['tcg', 'tcg', 'tcg']);
    expect(calls.n).toBe(1);
    const again = await guestAccel({ probe });
    expect(again.accel).toBe('tcg');
    expect(again.why).toMatch(/boot probe of .*present, not working → TCG/);
    expect(calls.n).toBe(1);
  });

  it('a verdict from another host boot is probed again; doctor verdicts are remembered', async () => {
    await rememberAccel({ kvm: kvm(true), accelerator: 'kvm' });
    const file = join(dir, 'probe', 'accelerator.json');
    const v = JSON.parse(await readFile(file, 'utf8')) as { bootId: string; accelerator: string };
    expect(v.accelerator).toBe('kvm');
    const calls = { n: 0 };
    await expect(guestAccel({ probe: fakeProbe(kvm(false), calls) })).resolves.toMatchObject({ accel: 'kvm' });
    expect(calls.n).toBe(0);
    await writeFile(file, JSON.stringify({ ...v, bootId: 'another-boot' }));
    await expect(guestAccel({ probe: fakeProbe(kvm(false), calls) })).resolves.toMatchObject({ accel: 'tcg' });
    expect(calls.n).toBe(1);
  });

  it('a probe that did not try a usable /dev/kvm (doctor --no-kvm) is not remembered', async () => {
    await rememberAccel({ kvm: kvm(null), accelerator: 'tcg' });
    await expect(readFile(join(dir, 'probe', 'accelerator.json'), 'utf8')).rejects.toThrow(/ENOENT/);
    await rememberAccel({ kvm: kvm(false, { devicePresent: false, accessible: false, verdict: 'absent → TCG' }), accelerator: 'tcg' });
    await expect(guestAccel({ probe: fakeProbe(kvm(true), { n: 0 }) })).resolves.toMatchObject({ accel: 'tcg' });
  });

  it('a run records a remembered whole probe of this host boot instead of booting the probe guests again', async () => {
    await expect(rememberedProbe()).resolves.toBeNull();
    // Only the verdict (as a test-injected probe stores it): nothing whole to record.
    await rememberAccel({ kvm: kvm(false), accelerator: 'tcg' });
    await expect(rememberedProbe()).resolves.toBeNull();
    const kernel = { package: 'linux-image-6.1.0-57-amd64', version: '6.1.158-1', release: '6.1.0-57-amd64' };
    await rememberAccel({ kvm: kvm(false), tcg: { working: true, detail: 'marker in 6.0 s', probeMs: 6000 }, accelerator: 'tcg', kernel });
    const p = await rememberedProbe();
    expect(p).toMatchObject({ accelerator: 'tcg', kernel, kvm: { working: false, verdict: 'present, not working → TCG' }, tcg: { working: true } });
    expect(p!.kvm.detail).toMatch(/^seen \(remembered: probed \d{4}-.*, this host boot\)$/);
    const file = join(dir, 'probe', 'accelerator.json');
    const v = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    await writeFile(file, JSON.stringify({ ...v, bootId: 'another-boot' }));
    await expect(rememberedProbe()).resolves.toBeNull();
  });
});
