// Does KVM work? /dev/kvm existing proves nothing (on nested-virtualization hosts a KVM guest
// can hang right after the boot loader), so boot a tiny real guest under a time bound and
// watch its serial console for a marker. The same guest under TCG checks the fallback.
//
// The guest: the Debian kernel the linux-image-amd64 metapackage points at (apt-get download +
// dpkg-deb -x, cached under <cache>/kernel/<package>_<version>/, never installed on the host)
// and an initramfs of busybox-static whose /init prints the marker and powers off.
import { createHash, randomBytes } from 'node:crypto';
import { constants, existsSync } from 'node:fs';
import { access, chmod, mkdtemp, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { failure, run } from '../util/proc.ts';
import { cacheDir } from './cache.ts';
import { cpioNewc } from './cpio.ts';
import { aptRun, ensureCommands, type InstallOptions } from './install.ts';
import { sharedOnce } from '../util/once.ts';

/** What the probe may do: install missing packages (install) and what it reports doing (log). */
export type ProbeSetup = Pick<InstallOptions, 'signal' | 'install' | 'log'>;

export type Accel = 'kvm' | 'tcg';

export interface ProbeKernel {
  /** Debian binary package, e.g. linux-image-6.1.0-56-amd64. */
  package: string;
  /** Its Debian version, e.g. 6.1.192-2. */
  version: string;
  /** The kernel release (uname -r inside a guest), e.g. 6.1.0-56-amd64. */
  release: string;
  /** The extracted package tree (boot/, lib/modules/<release>/). */
  root: string;
  vmlinuz: string;
  /** <root>/lib/modules/<release>: the modules a guest initramfs or rootfs can take (no modules.dep). */
  modulesDir: string;
  /** The kernel's build config (boot/config-<release>). */
  config: string;
}

interface KernelMeta {
  package: string;
  version: string;
  release: string;
  fetchedAt: string;
}

const META = 'kernel.json';

function keyOf(pkg: string, version: string): string {
  return `${pkg}_${version}`.replace(/[^A-Za-z0-9._+-]/g, '_');
}

function kernelFrom(dir: string, meta: KernelMeta): ProbeKernel {
  const root = join(dir, 'root');
  return {
    package: meta.package,
    version: meta.version,
    release: meta.release,
    root,
    vmlinuz: join(root, 'boot', `vmlinuz-${meta.release}`),
    modulesDir: join(root, 'lib', 'modules', meta.release),
    config: join(root, 'boot', `config-${meta.release}`),
  };
}

async function readCached(dir: string): Promise<ProbeKernel | null> {
  try {
    const meta = JSON.parse(await readFile(join(dir, META), 'utf8')) as KernelMeta;
    if (typeof meta.package !== 'string' || typeof meta.version !== 'string' || typeof meta.release !== 'string') return null;
    const k = kernelFrom(dir, meta);
    return existsSync(k.vmlinuz) ? k : null;
  } catch {
    return null;
  }
}

/** The kernel package the linux-image-amd64 metapackage depends on, with its candidate version. */
export async function resolveKernelPackage(opts: ProbeSetup = {}): Promise<{ package: string; version: string }> {
  // Without install, no `apt-get update` either: the package lists are host state too.
  const root = opts.install === false ? false : undefined;
  const deps = await aptRun('apt-cache', ['depends', 'linux-image-amd64'], { signal: opts.signal, timeoutMs: 60_000, root });
  const m = /^\s*\|?Depends:\s*(linux-image-[A-Za-z0-9.+-]+)\s*$/m.exec(deps);
  if (!m?.[1]) throw new Error(`apt-cache depends linux-image-amd64 names no linux-image-* package:\n${deps.trim()}`);
  const pkg = m[1];
  const show = await aptRun('apt-cache', ['show', '--no-all-versions', pkg], { signal: opts.signal, timeoutMs: 60_000, root });
  const v = /^Version:\s*(\S+)\s*$/m.exec(show);
  if (!v?.[1]) throw new Error(`apt-cache show ${pkg} gives no Version`);
  return { package: pkg, version: v[1] };
}

/**
 * The probe/guest kernel, downloaded and extracted once into the cache. Offline (apt cannot
 * answer) it falls back to the newest kernel already in the cache.
 */
export const ensureProbeKernel: (opts?: ProbeSetup) => Promise<ProbeKernel> = sharedOnce((opts: ProbeSetup = {}) => fetchKernel(opts));

async function fetchKernel(opts: ProbeSetup): Promise<ProbeKernel> {
  const base = cacheDir('kernel');
  let wanted: { package: string; version: string };
  try {
    await ensureCommands([{ command: 'dpkg-deb', debianPackage: 'dpkg' }, { command: 'apt-get', debianPackage: 'apt' }], opts);
    wanted = await resolveKernelPackage(opts);
  } catch (e) {
    const cached = await newestCached(base);
    if (cached) return cached;
    throw new Error(`no probe kernel: cannot resolve linux-image-amd64 with apt (${(e as Error).message}) and none is cached in ${base}`);
  }
  const dir = join(base, keyOf(wanted.package, wanted.version));
  const hit = await readCached(dir);
  if (hit) return hit;

  await removeStaleTemps(base);
  const tmp = await mkdtemp(join(base, '.tmp-'));
  try {
    opts.log?.(`downloading ${wanted.package} ${wanted.version} into the cache ${base} (apt-get download; not installed on the host)`);
    await aptRun('apt-get', ['download', `${wanted.package}=${wanted.version}`], { cwd: tmp, signal: opts.signal, timeoutMs: 10 * 60_000, root: opts.install === false ? false : undefined });
    const deb = (await readdir(tmp)).find((f) => f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${wanted.package}=${wanted.version} left no .deb in ${tmp}`);
    const x = await run('dpkg-deb', ['-x', join(tmp, deb), join(tmp, 'root')], { signal: opts.signal, timeoutMs: 5 * 60_000 });
    const why = failure(x);
    if (why) throw new Error(why);
    await rm(join(tmp, deb));
    const vmlinuz = (await readdir(join(tmp, 'root', 'boot'))).find((f) => f.startsWith('vmlinuz-'));
    if (!vmlinuz) throw new Error(`${wanted.package} ${wanted.version} holds no /boot/vmlinuz-*`);
    const meta: KernelMeta = { ...wanted, release: vmlinuz.slice('vmlinuz-'.length), fetchedAt: new Date().toISOString() };
    await writeFile(join(tmp, META), `${JSON.stringify(meta, null, 2)}\n`);
    await chmod(tmp, 0o755); // mkdtemp makes it private; the cache is shared
    try {
      await rename(tmp, dir);
    } catch (e) {
      // Another process finished the same kernel first: use theirs.
      const theirs = await readCached(dir);
      if (theirs) return theirs;
      throw e;
    }
    return kernelFrom(dir, meta);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Extractions an interrupted run left behind (older than an hour: not one in progress). */
async function removeStaleTemps(base: string): Promise<void> {
  for (const name of await readdir(base).catch(() => [] as string[])) {
    if (!name.startsWith('.tmp-')) continue;
    const s = await stat(join(base, name)).catch(() => null);
    if (s && Date.now() - s.mtimeMs > 3_600_000) await rm(join(base, name), { recursive: true, force: true });
  }
}

async function newestCached(base: string): Promise<ProbeKernel | null> {
  const found: { k: ProbeKernel; mtime: number }[] = [];
  for (const name of await readdir(base).catch(() => [] as string[])) {
    if (name.startsWith('.')) continue;
    const k = await readCached(join(base, name));
    if (k) found.push({ k, mtime: (await stat(join(base, name, META))).mtimeMs });
  }
  found.sort((a, b) => b.mtime - a.mtime);
  return found[0]?.k ?? null;
}

// ---------------------------------------------------------------------------------------------
// initramfs

export const BUSYBOX = '/bin/busybox';
const MARKER = 'PCOW-PROBE-OK';

// Unknown key=value kernel parameters without a dot reach init as environment variables, so
// each boot passes a fresh token and a stale log can never count as success.
const INIT = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "${MARKER} \${pcowmarker:-none}"
/bin/busybox poweroff -f
`;

/** True if the ELF file has no PT_INTERP program header (statically linked). */
export function isStaticElf(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  if (elf[4] !== 2 || elf[5] !== 1) throw new Error('not a 64-bit little-endian ELF file');
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  if (phentsize < 4 || phoff + phnum * phentsize > elf.length) throw new Error('ELF program headers out of range');
  for (let i = 0; i < phnum; i++) {
    if (elf.readUInt32LE(phoff + i * phentsize) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

/** A gzip'd cpio initramfs (busybox-static + the probe /init), cached by content hash. */
export const ensureProbeInitramfs: (opts?: ProbeSetup) => Promise<string> = sharedOnce((opts: ProbeSetup = {}) => buildInitramfs(opts));

async function buildInitramfs(opts: ProbeSetup): Promise<string> {
  await ensureCommands([{ command: BUSYBOX, debianPackage: 'busybox-static' }], opts);
  const busybox = await readFile(BUSYBOX);
  if (!isStaticElf(busybox)) {
    throw new Error(`${BUSYBOX} is dynamically linked (Debian package busybox); the probe initramfs needs busybox-static: apt-get install -y --no-install-recommends busybox-static`);
  }
  const hash = createHash('sha256').update('probe-initramfs-v1\0').update(INIT).update('\0').update(busybox).digest('hex').slice(0, 16);
  const out = join(cacheDir('initramfs'), `probe-${hash}.cpio.gz`);
  if (existsSync(out)) return out;
  const archive = cpioNewc([
    { kind: 'dir', path: 'bin' },
    { kind: 'dir', path: 'dev' },
    { kind: 'dir', path: 'proc' },
    { kind: 'dir', path: 'sys' },
    { kind: 'char', path: 'dev/console', major: 5, minor: 1 },
    { kind: 'char', path: 'dev/ttyS0', major: 4, minor: 64 },
    { kind: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    { kind: 'file', path: 'init', data: Buffer.from(INIT), mode: 0o755 },
  ]);
  const tmp = `${out}.${process.pid}.tmp`;
  await writeFile(tmp, gzipSync(archive, { level: 9 }));
  await rename(tmp, out);
  opts.log?.(`built the probe initramfs into the cache: ${out}`);
  return out;
}

// ---------------------------------------------------------------------------------------------
// booting

export interface BootProbeOptions extends ProbeSetup {
  /** Default 25 s for kvm, 40 s for tcg. */
  timeoutMs?: number;
  kernel?: ProbeKernel;
  initramfs?: string;
}

export interface BootProbeResult {
  accel: Accel;
  /** The guest printed this boot's marker on its serial console. */
  working: boolean;
  timedOut: boolean;
  exitCode: number | null;
  durationMs: number;
  /** What was seen, in words. */
  detail: string;
  /** The last lines of the serial console, escape sequences removed. */
  serialTail: string[];
  argv: string[];
}

export const DEFAULT_KVM_TIMEOUT_MS = 25_000;
export const DEFAULT_TCG_TIMEOUT_MS = 40_000;

export function accelArgs(accel: Accel): string[] {
  // -cpu host under KVM failed on MSR 0x10a on our hosts; dropping arch-capabilities passes it.
  return accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host,-arch-capabilities'] : ['-accel', 'tcg', '-cpu', 'max'];
}

/** Printable serial text: ANSI escapes and carriage returns removed, non-empty lines. */
export function serialLines(raw: string): string[] {
  return raw
    .replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[A-Za-z]/g, '\n')
    .replace(/\r/g, '')
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.trim() !== '');
}

/** Where a boot got to, judged from its serial output. */
export function bootStage(lines: readonly string[]): string {
  if (lines.length === 0) return 'the guest hung before even the firmware printed anything';
  const text = lines.join('\n');
  if (/Kernel panic/.test(text)) return 'the guest kernel panicked';
  if (/^\[\s*\d+\.\d+\]/m.test(text) || /Run \/init|Freeing unused/.test(text)) return 'the kernel printed messages but /init never reported';
  if (/Decompressing Linux|Booting the kernel/.test(text)) return 'the guest hung in or right after kernel decompression';
  if (/Probing EDD|Booting from ROM/.test(text)) return 'the guest hung after the boot loader handed over to the kernel (kernel decompression or early boot), before any kernel message';
  if (/SeaBIOS/.test(text)) return 'the guest hung in the firmware';
  return 'the guest stopped at an unrecognised point';
}

/** Boot the probe guest under `accel` and report whether it reached userspace in time. */
export async function bootProbe(accel: Accel, opts: BootProbeOptions = {}): Promise<BootProbeResult> {
  const timeoutMs = opts.timeoutMs ?? (accel === 'kvm' ? DEFAULT_KVM_TIMEOUT_MS : DEFAULT_TCG_TIMEOUT_MS);
  await ensureCommands([{ command: 'qemu-system-x86_64', debianPackage: 'qemu-system-x86' }], opts);
  const [kernel, initrd] = await Promise.all([
    opts.kernel ?? ensureProbeKernel(opts),
    opts.initramfs ?? ensureProbeInitramfs(opts),
  ]);
  const dir = await mkdtemp(join(tmpdir(), `pcow-boot-${accel}-`));
  const log = join(dir, 'serial.log');
  const token = randomBytes(6).toString('hex');
  const args = [
    ...accelArgs(accel),
    '-m', '256M',
    '-smp', '1',
    '-nodefaults',
    '-display', 'none',
    '-no-reboot',
    '-serial', `file:${log}`,
    '-kernel', kernel.vmlinuz,
    '-initrd', initrd,
    // loglevel=1 instead of quiet: kernel chatter off, but the decompressor's lines stay, which
    // tell where a hung guest stopped.
    '-append', `console=ttyS0 panic=-1 loglevel=1 pcowmarker=${token}`,
  ];
  try {
    const r = await run('qemu-system-x86_64', args, { timeoutMs, signal: opts.signal, graceMs: 1000 });
    const raw = await readFile(log, 'utf8').catch(() => '');
    const lines = serialLines(raw);
    const working = lines.some((l) => l.includes(`${MARKER} ${token}`));
    const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
    const last = lines.length > 0 ? `the last serial output was "${lines[lines.length - 1]}"` : 'no serial output at all';
    let detail: string;
    if (working) {
      detail = `guest reached userspace and printed its marker in ${secs(r.durationMs)}`;
    } else if (r.aborted) {
      detail = 'aborted before the guest reported';
    } else if (r.timedOut) {
      detail = `no marker on the serial console within ${secs(timeoutMs)}; ${last}: ${bootStage(lines)}`;
    } else if (r.exitCode !== 0) {
      const err = r.stderr.trim().split('\n').slice(-3).join(' | ');
      detail = `qemu exited with ${r.signal ? `signal ${r.signal}` : `code ${r.exitCode}`} after ${secs(r.durationMs)}${err ? `: ${err}` : ''}`;
    } else {
      detail = `the guest stopped after ${secs(r.durationMs)} without printing the marker; ${last}: ${bootStage(lines)}`;
    }
    return {
      accel,
      working,
      timedOut: r.timedOut,
      exitCode: r.exitCode,
      durationMs: r.durationMs,
      detail,
      serialTail: lines.slice(-8),
      argv: ['qemu-system-x86_64', ...args],
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// the verdict

export interface KvmStatus {
  devicePresent: boolean;
  /** /dev/kvm can be opened read-write by this process. */
  accessible: boolean;
  /** A guest booted under KVM; null when not tried. */
  working: boolean | null;
  /** In words, ending in the accelerator chosen, e.g. "present, not working → TCG". */
  verdict: string;
  detail: string;
  probeMs: number;
}

export interface TcgStatus {
  working: boolean | null;
  detail: string;
  probeMs: number;
}

export interface AcceleratorProbe {
  kvm: KvmStatus;
  tcg: TcgStatus;
  accelerator: Accel;
  kernel: { package: string; version: string; release: string } | null;
}

export async function kvmDevice(): Promise<{ present: boolean; accessible: boolean; detail: string }> {
  try {
    const s = await stat('/dev/kvm');
    if (!s.isCharacterDevice()) return { present: false, accessible: false, detail: '/dev/kvm exists but is not a character device' };
  } catch {
    return { present: false, accessible: false, detail: 'no /dev/kvm (no KVM module loaded, or no hardware virtualization exposed to this host)' };
  }
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
    const fh = await open('/dev/kvm', 'r+');
    await fh.close();
    return { present: true, accessible: true, detail: '/dev/kvm opens read-write' };
  } catch (e) {
    return {
      present: true,
      accessible: false,
      detail: `/dev/kvm cannot be opened read-write (${(e as NodeJS.ErrnoException).code ?? String(e)}): run as root or add the user to the kvm group`,
    };
  }
}

/** Probe KVM and TCG by booting the probe guest under both, concurrently. */
export async function probeAccelerator(
  opts: { kvmTimeoutMs?: number; tcgTimeoutMs?: number; skipKvm?: boolean } & ProbeSetup = {},
): Promise<AcceleratorProbe> {
  const started = Date.now();
  const dev = await kvmDevice();
  if (opts.skipKvm) {
    // Skipping the boot probes: nothing is known about either accelerator beyond the device.
    return {
      kvm: {
        devicePresent: dev.present,
        accessible: dev.accessible,
        working: dev.present && dev.accessible ? null : false,
        verdict: !dev.present ? 'absent → TCG' : dev.accessible ? 'present, not probed → TCG' : 'present, not accessible → TCG',
        detail: dev.present && dev.accessible ? 'the boot probe was skipped' : dev.detail,
        probeMs: 0,
      },
      tcg: { working: null, detail: 'the boot probe was skipped', probeMs: 0 },
      accelerator: 'tcg',
      kernel: null,
    };
  }
  let kernel: ProbeKernel;
  let initramfs: string;
  try {
    [kernel, initramfs] = await Promise.all([ensureProbeKernel(opts), ensureProbeInitramfs(opts)]);
  } catch (e) {
    const why = `no probe guest: ${(e as Error).message}`;
    const ms = Date.now() - started;
    return {
      kvm: {
        devicePresent: dev.present,
        accessible: dev.accessible,
        working: null,
        verdict: dev.present ? 'present, not probed → TCG' : 'absent → TCG',
        detail: dev.present ? why : dev.detail,
        probeMs: ms,
      },
      tcg: { working: null, detail: why, probeMs: ms },
      accelerator: 'tcg',
      kernel: null,
    };
  }
  const prepMs = Date.now() - started;
  const timed = async (accel: Accel, timeoutMs: number | undefined): Promise<BootProbeResult | Error> => {
    try {
      return await bootProbe(accel, { kernel, initramfs, timeoutMs, signal: opts.signal, install: opts.install, log: opts.log });
    } catch (e) {
      return e as Error;
    }
  };
  const tryKvm = dev.present && dev.accessible;
  const [kvmBoot, tcgBoot] = await Promise.all([
    tryKvm ? timed('kvm', opts.kvmTimeoutMs) : Promise.resolve(null),
    timed('tcg', opts.tcgTimeoutMs),
  ]);

  let kvm: KvmStatus;
  if (!dev.present) {
    kvm = { devicePresent: false, accessible: false, working: false, verdict: 'absent → TCG', detail: dev.detail, probeMs: 0 };
  } else if (!dev.accessible) {
    kvm = { devicePresent: true, accessible: false, working: false, verdict: 'present, not accessible → TCG', detail: dev.detail, probeMs: 0 };
  } else if (kvmBoot === null) {
    throw new Error('unreachable: KVM boot not run for an accessible device');
  } else if (kvmBoot instanceof Error) {
    kvm = { devicePresent: true, accessible: true, working: null, verdict: 'present, not probed → TCG', detail: `the KVM boot probe could not run: ${kvmBoot.message}`, probeMs: Date.now() - started };
  } else {
    kvm = {
      devicePresent: true,
      accessible: true,
      working: kvmBoot.working,
      verdict: kvmBoot.working ? 'present, working → KVM' : 'present, not working → TCG',
      detail: kvmBoot.detail,
      probeMs: prepMs + kvmBoot.durationMs,
    };
  }
  const tcg: TcgStatus =
    tcgBoot === null
      ? { working: null, detail: 'not probed', probeMs: 0 }
      : tcgBoot instanceof Error
        ? { working: null, detail: `the TCG boot probe could not run: ${tcgBoot.message}`, probeMs: Date.now() - started }
        : { working: tcgBoot.working, detail: tcgBoot.detail, probeMs: prepMs + tcgBoot.durationMs };
  return {
    kvm,
    tcg,
    accelerator: kvm.working === true ? 'kvm' : 'tcg',
    kernel: { package: kernel.package, version: kernel.version, release: kernel.release },
  };
}
