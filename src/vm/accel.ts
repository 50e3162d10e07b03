// Which accelerator a guest boots under when nobody says: the boot probe's verdict (kvm.ts:
// KVM only if a guest really booted under it, else TCG), remembered per host boot so that every
// guest after the first (tests, `boot`, runs) reuses it in no time. `doctor` and every run store
// the verdict they probed; PCOW_VM_ACCEL=tcg|kvm overrides it.
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cacheDir, withCacheLock } from '../host/cache.ts';
import { type AcceleratorProbe, type Accel, probeAccelerator } from '../host/kvm.ts';

export interface AccelChoice {
  accel: Accel;
  /** How it was chosen, in words (goes into logs and test names). */
  why: string;
}

interface Verdict {
  bootId: string;
  accelerator: Accel;
  kvm: string;
  detail: string;
  probedAt: string;
  /** The whole probe, for runs that record it instead of booting the probe guests again. */
  probe?: AcceleratorProbe;
}

const BOOT_ID = '/proc/sys/kernel/random/boot_id';

async function bootId(): Promise<string> {
  return (await readFile(BOOT_ID, 'utf8')).trim();
}

function verdictFile(): string {
  return join(cacheDir('probe'), 'accelerator.json');
}

/** PCOW_VM_ACCEL, checked; undefined when unset. */
export function accelFromEnv(env: NodeJS.ProcessEnv = process.env): Accel | undefined {
  const v = env.PCOW_VM_ACCEL;
  if (v === undefined || v === '') return undefined;
  if (v !== 'tcg' && v !== 'kvm') throw new Error(`PCOW_VM_ACCEL must be "tcg" or "kvm", got ${JSON.stringify(v)}`);
  return v;
}

async function readVerdict(): Promise<Verdict | null> {
  try {
    const v = JSON.parse(await readFile(verdictFile(), 'utf8')) as Partial<Verdict>;
    if ((v.accelerator !== 'kvm' && v.accelerator !== 'tcg') || typeof v.bootId !== 'string') return null;
    return v as Verdict;
  } catch {
    return null;
  }
}

/**
 * Remember a probe's verdict for this host boot. A probe that did not boot under KVM although
 * /dev/kvm is usable (skipped, or could not run) says nothing and is not stored.
 */
export async function rememberAccel(probe: Pick<AcceleratorProbe, 'kvm' | 'accelerator'> & Partial<Pick<AcceleratorProbe, 'tcg' | 'kernel'>>): Promise<void> {
  const k = probe.kvm;
  if (k.devicePresent && k.accessible && k.working === null) return;
  const whole = probe.tcg !== undefined && probe.kernel !== undefined ? { kvm: k, tcg: probe.tcg, accelerator: probe.accelerator, kernel: probe.kernel } : undefined;
  const v: Verdict = { bootId: await bootId(), accelerator: probe.accelerator, kvm: k.verdict, detail: k.detail, probedAt: new Date().toISOString(), probe: whole };
  const file = verdictFile();
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(v, null, 2)}\n`);
  await rename(tmp, file);
}

/**
 * This host boot's remembered probe (the whole of it), for a run that records the accelerator
 * without booting the probe guests again (~30 s when KVM hangs); null when there is none. The
 * details say it was remembered and when it was probed.
 */
export async function rememberedProbe(): Promise<AcceleratorProbe | null> {
  const v = await readVerdict();
  if (!v?.probe || v.bootId !== (await bootId())) return null;
  const note = ` (remembered: probed ${v.probedAt}, this host boot)`;
  return { ...v.probe, kvm: { ...v.probe.kvm, detail: v.probe.kvm.detail + note }, tcg: { ...v.probe.tcg, detail: v.probe.tcg.detail + note } };
}

/**
 * The accelerator for the next guest: PCOW_VM_ACCEL, else this boot's remembered verdict, else a
 * boot probe now (up to ~25 s when KVM hangs, once per host boot; concurrent callers wait for one).
 */
export async function guestAccel(
  o: { log?: (line: string) => void; signal?: AbortSignal; probe?: typeof probeAccelerator } = {},
): Promise<AccelChoice> {
  const env = accelFromEnv();
  if (env) return { accel: env, why: 'PCOW_VM_ACCEL' };
  const id = await bootId();
  const known = async (): Promise<AccelChoice | null> => {
    const v = await readVerdict();
    return v && v.bootId === id ? { accel: v.accelerator, why: `boot probe of ${v.probedAt}: KVM ${v.kvm}` } : null;
  };
  const first = await known();
  if (first) return first;
  const log = o.log ?? ((): void => {});
  return withCacheLock(join(cacheDir('probe'), 'accelerator.lock'), 'another accelerator probe', { log, signal: o.signal }, async () => {
    const again = await known();
    if (again) return again;
    log('probing which accelerator guests can use (a KVM and a TCG boot, up to ~40 s, once per host boot)');
    const p = await (o.probe ?? probeAccelerator)({ signal: o.signal, log });
    await rememberAccel(p);
    return { accel: p.accelerator, why: `boot probe: KVM ${p.kvm.verdict} (${p.kvm.detail})` };
  });
}
