// Boot the test guest once: a script from guest-scripts/ (or inline) runs as the guest's test,
// its `result KEY VALUE` lines come back parsed, and QEMU is gone when this returns.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serialLines } from '../host/kvm.ts';
import { guestAccel } from './accel.ts';
import { bootInitrd, ensureGuestImage, type GuestSetup } from './guest.ts';
import { Vm, type Accel, type Disk, type VmSpec } from './machine.ts';

export interface GuestRunOptions extends GuestSetup {
  /** Default: the boot probe's verdict (accel.ts). */
  accel?: Accel;
  qemu?: string;
  disks: Disk[];
  /** The test script's text (see guest-scripts/init for the helpers it may call). */
  script: string;
  env?: Record<string, string>;
  /** Host executables the script runs, as /usr/bin/NAME (their shared libraries come along). */
  binaries?: string[];
  /** Boot + test + power-off bound (default 90 s under TCG, 30 s under KVM). */
  timeoutMs?: number;
  memory?: number;
  extraArgs?: string[];
  /** Give the guest a control channel (/dev/ttyS1, Vm.send; the script's wait_host). */
  control?: boolean;
  /** Called once the guest's init is up (PCOW-INIT seen), e.g. to drive QMP while it runs. */
  whileRunning?: (vm: Vm) => Promise<void>;
  /**
   * Stop waiting at this marker (a line the script prints) instead of the done marker, run
   * `atMarker`, and leave the end to it (kill -9 tests).
   */
  atMarker?: { pattern: RegExp; action: (vm: Vm) => Promise<void> };
}

export interface GuestRun {
  /** `result KEY VALUE...` lines from the script: KEY -> rest of the line. */
  results: Map<string, string>;
  /** The test script's exit status (null when the run ended at a marker). */
  rc: number | null;
  /** Serial console lines (escapes removed). */
  lines: string[];
  /** QEMU start to the init's first line. */
  bootMs: number;
  /** QEMU start to QEMU gone. */
  totalMs: number;
}

export async function runGuest(opts: GuestRunOptions): Promise<GuestRun> {
  const accel = opts.accel ?? (await guestAccel({ signal: opts.signal })).accel;
  const guest = await ensureGuestImage(opts);
  const dir = await mkdtemp(join(tmpdir(), 'pcow-guest-'));
  const token = randomBytes(6).toString('hex');
  const timeoutMs = opts.timeoutMs ?? (accel === 'kvm' ? 30_000 : 90_000);
  let vm: Vm | undefined;
  try {
    const initrd = await bootInitrd(guest.initramfs, join(dir, 'initrd.cpio'), opts.script, opts.env, opts.binaries);
    const spec: VmSpec = {
      qemu: opts.qemu,
      accel,
      memory: opts.memory,
      kernel: guest.bootKernel,
      initrd,
      append: `pcowtoken=${token}`,
      disks: opts.disks,
      extraArgs: opts.extraArgs,
      control: opts.control,
    };
    const started = Date.now();
    vm = await Vm.start(spec, { dir, signal: opts.signal });
    const deadline = started + timeoutMs;
    const left = (): number => Math.max(0, deadline - Date.now());
    await vm.waitFor(new RegExp(`PCOW-INIT ${token}`), left(), 'the guest init to start');
    const bootMs = Date.now() - started;
    let rc: number | null = null;
    if (opts.atMarker) {
      await vm.waitFor(opts.atMarker.pattern, left(), `${opts.atMarker.pattern}`);
      await opts.atMarker.action(vm);
    } else {
      if (opts.whileRunning) await opts.whileRunning(vm);
      const m = await vm.waitFor(new RegExp(`PCOW-DONE ${token} rc=(\\d+)`), left(), 'the done marker');
      rc = Number(m[1]);
      await vm.waitExit(Math.max(left(), 10_000));
    }
    await vm.stop();
    const lines = serialLines(await vm.serial());
    const results = new Map<string, string>();
    for (const l of lines) {
      const r = /^PCOW-RESULT (\S+) ?(.*)$/.exec(l);
      if (r?.[1]) results.set(r[1], r[2] ?? '');
    }
    return { results, rc, lines, bootMs, totalMs: Date.now() - started };
  } finally {
    await vm?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
