// userfaultfd as pcow needs it: an fd that also takes kernel-mode faults (KVM, vhost, read()
// into guest memory), MISSING registration on anonymous memory, UFFDIO_COPY. Measured by a
// small C program (native/probe/uffd_probe.c) compiled into the cache and run as this user.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { failure, run } from '../util/proc.ts';
import { cacheDir } from './cache.ts';
import { repoRoot } from '../util/paths.ts';
import { ensureCommands, type InstallOptions } from './install.ts';
import { sharedOnce } from '../util/once.ts';

type ProbeSetup = Pick<InstallOptions, 'signal' | 'install' | 'log'>;

export const UFFD_PROBE_CFLAGS = ['-O2', '-std=c11', '-Wall', '-Wextra', '-Werror', '-pthread'] as const;

const Attempt = z.strictObject({ ok: z.boolean(), errno: z.number().int(), error: z.string() });
const Fault = z.strictObject({ tried: z.boolean(), ok: z.boolean(), us: z.number(), error: z.string() });

/** What uffd_probe prints. */
export const UffdProbeOutput = z.strictObject({
  syscall: Attempt,
  syscallUserModeOnly: Attempt,
  devNodePresent: z.boolean(),
  devNode: Attempt,
  via: z.enum(['syscall', 'devnode', 'syscall-user-mode-only', 'none']),
  api: Attempt,
  features: z.string().regex(/^0x[0-9a-f]+$/),
  ioctls: z.string().regex(/^0x[0-9a-f]+$/),
  offered: z.strictObject({
    missing: z.boolean(),
    wp: z.boolean(),
    wpUnpopulated: z.boolean(),
    wpAsync: z.boolean(),
    minorShmem: z.boolean(),
    minorHugetlbfs: z.boolean(),
    sigbus: z.boolean(),
    poison: z.boolean(),
    move: z.boolean(),
    exactAddress: z.boolean(),
  }),
  userFault: Fault,
  kernelFault: Fault,
});
export type UffdProbeOutput = z.infer<typeof UffdProbeOutput>;

export function uffdProbeSource(): string {
  return join(repoRoot, 'native', 'probe', 'uffd_probe.c');
}

/** Compile uffd_probe.c into the cache (keyed by source and flags) once; returns the binary. */
export const ensureUffdProbe: (opts?: ProbeSetup) => Promise<string> = sharedOnce((opts: ProbeSetup = {}) => compile(opts));

async function compile(opts: ProbeSetup): Promise<string> {
  const src = uffdProbeSource();
  const text = await readFile(src);
  const hash = createHash('sha256').update(UFFD_PROBE_CFLAGS.join(' ')).update('\0').update(text).digest('hex').slice(0, 16);
  const out = join(cacheDir('probe'), `uffd_probe-${hash}`);
  if (existsSync(out)) return out;
  await ensureCommands(
    [
      { command: 'cc', debianPackage: 'gcc' },
      { command: '/usr/include/stdio.h', debianPackage: 'libc6-dev' },
      { command: '/usr/include/linux/userfaultfd.h', debianPackage: 'linux-libc-dev' },
    ],
    opts,
  );
  const tmp = `${out}.${process.pid}.tmp`;
  const r = await run('cc', [...UFFD_PROBE_CFLAGS, '-o', tmp, src], { signal: opts.signal, timeoutMs: 120_000 });
  const why = failure(r);
  if (why) {
    await rm(tmp, { force: true });
    throw new Error(`compiling the userfaultfd probe failed: ${why}`);
  }
  await rename(tmp, out);
  opts.log?.(`compiled the userfaultfd probe into the cache: ${out}`);
  return out;
}

/** Run the probe and validate what it printed. */
export async function runUffdProbe(opts: ProbeSetup = {}): Promise<UffdProbeOutput> {
  const bin = await ensureUffdProbe(opts);
  const r = await run(bin, [], { signal: opts.signal, timeoutMs: 30_000 });
  const why = failure(r);
  if (why) throw new Error(`the userfaultfd probe failed: ${why}`);
  let json: unknown;
  try {
    json = JSON.parse(r.stdout);
  } catch (e) {
    throw new Error(`the userfaultfd probe printed no JSON (${(e as Error).message}): ${r.stdout.slice(0, 200)}`);
  }
  const parsed = UffdProbeOutput.safeParse(json);
  if (!parsed.success) throw new Error(`the userfaultfd probe's output is not as expected: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

export interface UserfaultfdStatus {
  /** userfaultfd(2) without flags succeeds (root, CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1). */
  syscall: boolean;
  /** userfaultfd(2) with UFFD_USER_MODE_ONLY succeeds (any user on 5.11+): not enough for KVM. */
  syscallUserModeOnly: boolean;
  devNode: { present: boolean; usable: boolean; error: string | null };
  /** vm.unprivileged_userfaultfd, or null if the sysctl does not exist. */
  unprivilegedSysctl: number | null;
  /** This process can get an fd that takes kernel-mode faults (flag-less syscall or /dev/userfaultfd). */
  kernelFaults: boolean;
  /** Which fd the fault tests used. */
  via: UffdProbeOutput['via'] | null;
  features: UffdProbeOutput['offered'] | null;
  featureBits: string | null;
  /** A user-mode fault on a MISSING-registered anonymous page was served with UFFDIO_COPY. */
  userFaultResolved: boolean;
  /** A kernel-mode fault (pread() into a registered page) was served. */
  kernelFaultResolved: boolean;
  /** Everything pcow needs works. */
  available: boolean;
  detail: string;
  /** What to do when it is not available; null when it is. */
  remedy: string | null;
}

async function readSysctlNumber(name: string): Promise<number | null> {
  try {
    const v = Number.parseInt((await readFile(`/proc/sys/${name.replace(/\./g, '/')}`, 'utf8')).trim(), 10);
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

/** Judge a probe output (split from probeUserfaultfd so the wording can be tested on any input). */
export function judgeUserfaultfd(o: UffdProbeOutput, unprivilegedSysctl: number | null): UserfaultfdStatus {
  const kernelFaults = o.syscall.ok || o.devNode.ok;
  const available = kernelFaults && o.userFault.ok && o.kernelFault.ok && o.offered.missing;
  const how = [
    `syscall ${o.syscall.ok ? 'ok' : `refused (${o.syscall.error})`}`,
    `user-mode-only syscall ${o.syscallUserModeOnly.ok ? 'ok' : `refused (${o.syscallUserModeOnly.error})`}`,
    `/dev/userfaultfd ${!o.devNodePresent ? 'absent' : o.devNode.ok ? 'ok' : `refused (${o.devNode.error})`}`,
    `vm.unprivileged_userfaultfd=${unprivilegedSysctl ?? 'n/a'}`,
  ].join(', ');
  const faults = o.userFault.tried
    ? `user-mode fault ${o.userFault.ok ? 'resolved' : `not resolved (${o.userFault.error})`}; kernel-mode fault (pread) ${o.kernelFault.ok ? 'resolved' : `not resolved (${o.kernelFault.error})`}`
    : `no fault test (${o.api.ok ? 'no fd' : `UFFDIO_API failed: ${o.api.error}`})`;
  let remedy: string | null = null;
  if (!available) {
    if (!kernelFaults) {
      remedy = o.devNodePresent
        ? 'run the harness as root, or give this user /dev/userfaultfd (e.g. `setfacl -m u:$USER:rw /dev/userfaultfd`), or `sysctl -w vm.unprivileged_userfaultfd=1`'
        : 'run the harness as root (CAP_SYS_PTRACE) or `sysctl -w vm.unprivileged_userfaultfd=1`';
    } else {
      remedy = 'the kernel refused a basic userfaultfd operation; pcow needs Linux >= 5.11 with CONFIG_USERFAULTFD';
    }
  }
  return {
    syscall: o.syscall.ok,
    syscallUserModeOnly: o.syscallUserModeOnly.ok,
    devNode: { present: o.devNodePresent, usable: o.devNode.ok, error: o.devNode.ok ? null : o.devNode.error },
    unprivilegedSysctl,
    kernelFaults,
    via: o.via,
    features: o.offered,
    featureBits: o.features,
    userFaultResolved: o.userFault.ok,
    kernelFaultResolved: o.kernelFault.ok,
    available,
    detail: `${how}; ${faults}`,
    remedy,
  };
}

/** Compile and run the probe and read the sysctl; never throws (a failure is in detail). */
export async function probeUserfaultfd(opts: ProbeSetup = {}): Promise<UserfaultfdStatus> {
  const sysctl = await readSysctlNumber('vm.unprivileged_userfaultfd');
  try {
    return judgeUserfaultfd(await runUffdProbe(opts), sysctl);
  } catch (e) {
    return {
      syscall: false,
      syscallUserModeOnly: false,
      devNode: { present: existsSync('/dev/userfaultfd'), usable: false, error: null },
      unprivilegedSysctl: sysctl,
      kernelFaults: false,
      via: null,
      features: null,
      featureBits: null,
      userFaultResolved: false,
      kernelFaultResolved: false,
      available: false,
      detail: `not probed: ${(e as Error).message}`,
      remedy: 'fix the probe error above (a C compiler is needed: apt-get install -y --no-install-recommends gcc libc6-dev)',
    };
  }
}
