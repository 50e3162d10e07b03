// The host probe behind `doctor` and every run's provenance: kernel, CPU, memory, whether KVM
// works (by booting a guest, see kvm.ts), userfaultfd (uffd.ts), pmem and DAX mounts, sysctls
// and tool versions. A probe changes nothing on the host unless asked to install (install: true,
// what a run does; `doctor --install`): then the boot and uffd probes install what they need
// first and the tool versions are read after that. Whatever a probe did (installs, cache files)
// is listed in `actions`.
import { readdir, readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import { run } from '../util/proc.ts';
import { isRoot, locate } from './install.ts';
import { type AcceleratorProbe, type KvmStatus, type TcgStatus, DEFAULT_KVM_TIMEOUT_MS, probeAccelerator } from './kvm.ts';
import { daxOption, readMounts } from './mounts.ts';
import { type UserfaultfdStatus, probeUserfaultfd } from './uffd.ts';

export const TOOLS = ['qemu-system-x86_64', 'qemu-img', 'fio', 'redis-server', 'redis-benchmark', 'cc', 'make'] as const;
export type ToolName = (typeof TOOLS)[number];

/** The Debian package that provides each tool. */
export const TOOL_PACKAGES: Record<ToolName, string> = {
  'qemu-system-x86_64': 'qemu-system-x86',
  'qemu-img': 'qemu-utils',
  fio: 'fio',
  'redis-server': 'redis-server',
  'redis-benchmark': 'redis-tools',
  cc: 'gcc',
  make: 'make',
};

export const PROBED_SYSCTLS = [
  'vm.max_map_count',
  'vm.unprivileged_userfaultfd',
  'vm.overcommit_memory',
  'vm.nr_hugepages',
  'vm.swappiness',
  'kernel.perf_event_paranoid',
] as const;

/** Below this the pcow runtime may run out of mappings on large images (DESIGN constraint 4). */
export const RECOMMENDED_MAX_MAP_COUNT = 262_144;

export interface CpuFlags {
  clwb: boolean;
  clflushopt: boolean;
  clflush: boolean;
  avx512f: boolean;
  /** Hardware virtualization visible to this host (Intel VT-x / AMD-V). */
  vmx: boolean;
  svm: boolean;
  /** This host is itself a guest. */
  hypervisor: boolean;
  pku: boolean;
}

export interface PmemDevice {
  path: string;
  kind: 'pmem' | 'devdax';
  sizeBytes: number | null;
}

export interface DaxMount {
  device: string;
  mountpoint: string;
  fstype: string;
  options: string;
}

export interface HostProbe {
  probedAt: string;
  durationMs: number;
  hostname: string;
  root: boolean;
  os: string | null;
  kernel: { release: string; version: string; cmdline: string };
  cpu: { model: string; cores: number; flags: CpuFlags };
  memoryBytes: number;
  transparentHugepages: string | null;
  kvm: KvmStatus;
  tcg: TcgStatus;
  /** What guests of this host run on: KVM only when a KVM guest actually booted. */
  accelerator: 'kvm' | 'tcg';
  /** The kernel the boot probes used (the guest kernel), if one was available. */
  guestKernel: AcceleratorProbe['kernel'];
  userfaultfd: UserfaultfdStatus;
  pmem: { devices: PmemDevice[]; daxMounts: DaxMount[] };
  sysctls: Record<string, string | null>;
  /** Tool → parsed version string, or null when the tool is missing (read after any install). */
  tools: Record<ToolName, string | null>;
  /** What the probe did to the host or the cache (installs, downloads, builds); [] when nothing. */
  actions: string[];
}

export interface ProbeOptions {
  kvmTimeoutMs?: number;
  tcgTimeoutMs?: number;
  /** Skip the guest boots (KVM and TCG): fast, but the accelerator is then assumed to be TCG. */
  skipKvm?: boolean;
  /** An earlier boot probe's verdict for this host boot (src/vm/accel.ts): no guest is booted. */
  accelerator?: AcceleratorProbe;
  signal?: AbortSignal;
  /** Install what the boot and uffd probes need (as root) instead of reporting it missing. Default false. */
  install?: boolean;
  /** Called with each action as it happens (also collected in HostProbe.actions). */
  log?: (line: string) => void;
}

async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return null;
  }
}

export async function readSysctl(name: string): Promise<string | null> {
  const v = await readText(`/proc/sys/${name.replace(/\./g, '/')}`);
  return v === null ? null : v.trim().replace(/\s+/g, ' ');
}

export function parseCpuinfo(text: string): { model: string; flags: CpuFlags } {
  const first = text.split(/\n\s*\n/)[0] ?? '';
  const field = (name: string): string => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(first)?.[1]?.trim() ?? '';
  const set = new Set(field('flags').split(/\s+/));
  return {
    model: field('model name') || 'unknown',
    flags: {
      clwb: set.has('clwb'),
      clflushopt: set.has('clflushopt'),
      clflush: set.has('clflush'),
      avx512f: set.has('avx512f'),
      vmx: set.has('vmx'),
      svm: set.has('svm'),
      hypervisor: set.has('hypervisor'),
      pku: set.has('pku'),
    },
  };
}

/** The version from a tool's version output, or the first line when the format is unknown. */
export function parseToolVersion(tool: ToolName, output: string): string | null {
  const line = output.split('\n').find((l) => l.trim() !== '')?.trim();
  if (!line) return null;
  let m: RegExpExecArray | null;
  switch (tool) {
    case 'qemu-system-x86_64':
    case 'qemu-img':
      // "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)", "qemu-img version 7.2.22 (...)"
      m = /version\s+(\d[\w.+~-]*)(?:\s+\(([^)]*)\))?/.exec(line);
      return m ? (m[2] ? `${m[1]} (${m[2]})` : m[1]!) : line;
    case 'fio':
      m = /^fio-(\S+)/.exec(line); // "fio-3.33"
      return m ? m[1]! : line;
    case 'redis-server':
      m = /\bv=(\S+)/.exec(line); // "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=..."
      return m ? m[1]! : line;
    case 'redis-benchmark':
      m = /^redis-benchmark\s+(\S+)/.exec(line); // "redis-benchmark 7.0.15"
      return m ? m[1]! : line;
    case 'cc': {
      // "cc (Debian 12.2.0-14+deb12u1) 12.2.0", "Debian clang version 14.0.6"
      const clang = /clang version\s+(\S+)/.exec(line);
      if (clang) return `clang ${clang[1]}`;
      m = /^\S+\s+\(([^)]*)\)\s+(\S+)/.exec(line);
      return m ? `gcc ${m[2]} (${m[1]})` : line;
    }
    case 'make':
      m = /^GNU Make\s+(\S+)/.exec(line); // "GNU Make 4.3"
      return m ? m[1]! : line;
  }
}

async function toolVersion(tool: ToolName, signal?: AbortSignal): Promise<string | null> {
  const path = await locate(tool);
  if (path === null) return null;
  const r = await run(path, ['--version'], { timeoutMs: 10_000, signal });
  const out = `${r.stdout}\n${r.stderr}`;
  // Present but not answering --version: still present; say so rather than claim it is missing.
  return parseToolVersion(tool, out) ?? `unknown version (${path})`;
}

async function pmemDevices(): Promise<PmemDevice[]> {
  const names = await readdir('/dev').catch(() => [] as string[]);
  const out: PmemDevice[] = [];
  for (const name of names.sort()) {
    if (/^pmem\d+(\.\d+)?s?$/.test(name)) {
      const sectors = await readText(`/sys/class/block/${name}/size`);
      const s = await stat(`/dev/${name}`).catch(() => null);
      if (!s?.isBlockDevice()) continue;
      out.push({ path: `/dev/${name}`, kind: 'pmem', sizeBytes: sectors === null ? null : Number(sectors.trim()) * 512 });
    } else if (/^dax\d+\.\d+$/.test(name)) {
      const size = await readText(`/sys/bus/dax/devices/${name}/size`);
      out.push({ path: `/dev/${name}`, kind: 'devdax', sizeBytes: size === null ? null : Number(size.trim()) });
    }
  }
  return out;
}

async function daxMounts(): Promise<DaxMount[]> {
  const mounts = await readMounts().catch(() => []);
  return mounts
    .filter((m) => daxOption(m) !== null)
    .map((m) => ({ device: m.device, mountpoint: m.mountpoint, fstype: m.fstype, options: m.options.join(',') }));
}

async function osPrettyName(): Promise<string | null> {
  const text = await readText('/etc/os-release');
  const m = text ? /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(text) : null;
  return m?.[1] ?? null;
}

async function thp(): Promise<string | null> {
  const text = await readText('/sys/kernel/mm/transparent_hugepage/enabled');
  return text ? (/\[(\w+)\]/.exec(text)?.[1] ?? text.trim()) : null;
}

/** Every tool's version (null when missing), read now. */
export async function probeTools(signal?: AbortSignal): Promise<Record<ToolName, string | null>> {
  const values = await Promise.all(TOOLS.map((t) => toolVersion(t, signal).catch(() => null)));
  return Object.fromEntries(TOOLS.map((t, i) => [t, values[i] ?? null])) as Record<ToolName, string | null>;
}

/** Probe the host. Takes up to the KVM/TCG boot bounds (about 40 s) unless skipKvm. */
export async function probeHost(opts: ProbeOptions = {}): Promise<HostProbe> {
  const started = Date.now();
  const probedAt = new Date(started).toISOString();
  const actions: string[] = [];
  const setup = {
    signal: opts.signal,
    install: opts.install ?? false,
    log: (line: string): void => {
      actions.push(line);
      opts.log?.(line);
    },
  };
  const [accel, userfaultfd, cpuinfo, cmdline, osName, thpMode, devices, dax, sysctlValues] = await Promise.all([
    opts.accelerator && !opts.skipKvm
      ? Promise.resolve(opts.accelerator)
      : probeAccelerator({
          kvmTimeoutMs: opts.kvmTimeoutMs ?? DEFAULT_KVM_TIMEOUT_MS,
          tcgTimeoutMs: opts.tcgTimeoutMs,
          skipKvm: opts.skipKvm,
          ...setup,
        }),
    probeUserfaultfd(setup),
    readText('/proc/cpuinfo'),
    readText('/proc/cmdline'),
    osPrettyName(),
    thp(),
    pmemDevices(),
    daxMounts(),
    Promise.all(PROBED_SYSCTLS.map((s) => readSysctl(s))),
  ]);
  // After the boot and uffd probes: they may have installed qemu-system-x86_64 or cc.
  const tools = await probeTools(opts.signal);
  const cpu = parseCpuinfo(cpuinfo ?? '');
  return {
    probedAt,
    durationMs: Date.now() - started,
    hostname: os.hostname(),
    root: isRoot(),
    os: osName,
    kernel: { release: os.release(), version: os.version(), cmdline: (cmdline ?? '').trim() },
    cpu: { model: cpu.model, cores: os.cpus().length, flags: cpu.flags },
    memoryBytes: os.totalmem(),
    transparentHugepages: thpMode,
    kvm: accel.kvm,
    tcg: accel.tcg,
    accelerator: accel.accelerator,
    guestKernel: accel.kernel,
    userfaultfd,
    pmem: { devices, daxMounts: dax },
    sysctls: Object.fromEntries(PROBED_SYSCTLS.map((s, i) => [s, sysctlValues[i] ?? null])),
    tools,
    actions,
  };
}

// ---------------------------------------------------------------------------------------------
// doctor output

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

function yn(b: boolean | null): string {
  return b === null ? 'unknown' : b ? 'yes' : 'no';
}

/** The human `doctor` report: one fact per line, aligned, then what to do about what is missing. */
export function formatProbe(p: HostProbe): string {
  const rows: [string, string][] = [];
  const add = (k: string, v: string): void => {
    rows.push([k, v]);
  };
  add('host', `${p.hostname}${p.root ? ' (running as root)' : ' (not root)'}`);
  add('os', p.os ?? 'unknown');
  add('kernel', `${p.kernel.release} ${p.kernel.version}`);
  add('kernel cmdline', p.kernel.cmdline || '(empty)');
  add('cpu', `${p.cpu.model}, ${p.cpu.cores} logical CPUs`);
  const f = p.cpu.flags;
  add('cpu flags', `clwb ${yn(f.clwb)}, clflushopt ${yn(f.clflushopt)}, avx512f ${yn(f.avx512f)}, vmx/svm ${yn(f.vmx || f.svm)}, hypervisor ${yn(f.hypervisor)}`);
  add('memory', `${gib(p.memoryBytes)}${p.transparentHugepages ? `, transparent hugepages ${p.transparentHugepages}` : ''}`);
  add('KVM', p.kvm.verdict);
  add('  what was seen', p.kvm.detail);
  if (p.kvm.probeMs > 0) add('  probe time', `${(p.kvm.probeMs / 1000).toFixed(1)} s`);
  add('TCG', p.tcg.working === null ? `not probed (${p.tcg.detail})` : p.tcg.working ? `works: ${p.tcg.detail}` : `NOT working: ${p.tcg.detail}`);
  add('accelerator', `${p.accelerator.toUpperCase()} (guests of this host run on it; every result records it)`);
  if (p.guestKernel) add('guest kernel', `${p.guestKernel.package} ${p.guestKernel.version}`);
  const u = p.userfaultfd;
  add('userfaultfd', u.available ? 'available (kernel-mode faults allowed)' : u.kernelFaults ? 'NOT available: fault test failed' : 'NOT available: no fd that takes kernel-mode faults');
  add('  how', u.detail);
  if (u.features) {
    const on = Object.entries(u.features).filter(([, v]) => v).map(([k]) => k);
    const off = Object.entries(u.features).filter(([, v]) => !v).map(([k]) => k);
    add('  features', `${on.join(' ') || 'none'}${off.length ? `; not offered: ${off.join(' ')}` : ''}`);
  }
  add('pmem devices', p.pmem.devices.length ? p.pmem.devices.map((d) => `${d.path} (${d.kind}${d.sizeBytes !== null ? `, ${gib(d.sizeBytes)}` : ''})`).join(', ') : 'none');
  add('DAX mounts', p.pmem.daxMounts.length ? p.pmem.daxMounts.map((m) => `${m.device} on ${m.mountpoint} (${m.fstype}, ${m.options})`).join('; ') : 'none');
  for (const [k, v] of Object.entries(p.sysctls)) add(k, v ?? '(absent)');
  for (const t of TOOLS) add(t, p.tools[t] ?? `missing (Debian package ${TOOL_PACKAGES[t]})`);

  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  const lines = [`pcow doctor: host probe (${(p.durationMs / 1000).toFixed(1)} s, ${p.probedAt})`, ''];
  for (const [k, v] of rows) lines.push(`${k.padEnd(width)}${v}`);

  const todo: string[] = [];
  if (p.kvm.working === false && p.kvm.devicePresent && p.kvm.accessible) {
    todo.push(
      'KVM is present but a KVM guest did not boot: guests run under TCG (much slower; results are marked tcg and are not comparable with KVM hosts). ' +
        (f.hypervisor
          ? 'This host is itself a virtual machine: nested virtualization is what fails; use a bare-metal host for KVM numbers.'
          : 'Check the firmware (BIOS) virtualization setting and dmesg for kvm errors.'),
    );
  } else if (!p.kvm.devicePresent) {
    todo.push('No /dev/kvm: guests run under TCG. Load kvm_intel/kvm_amd (modprobe kvm_intel) on a host with VT-x/AMD-V.');
  } else if (!p.kvm.accessible) {
    todo.push(`/dev/kvm is not usable by this user: run as root or \`usermod -aG kvm ${os.userInfo().username}\` (then log in again).`);
  } else if (p.kvm.working === null) {
    todo.push(`KVM was not probed (${p.kvm.detail}); TCG is assumed. Run doctor without skipping the probe to check.`);
  }
  if (p.tcg.working === false) todo.push(`TCG guests do not boot either (${p.tcg.detail}): no guest can run; check the qemu-system-x86 installation.`);
  if (!u.available && u.remedy) todo.push(`userfaultfd: ${u.remedy}.`);
  const missing = TOOLS.filter((t) => p.tools[t] === null);
  if (missing.length) {
    const pkgs = [...new Set(missing.map((t) => TOOL_PACKAGES[t]))].sort();
    todo.push(`missing ${missing.join(', ')}: a run installs what its workloads need when run as root (doctor --install installs what the probes need), or run: apt-get install -y --no-install-recommends ${pkgs.join(' ')}`);
  }
  const mmc = Number(p.sysctls['vm.max_map_count'] ?? NaN);
  if (Number.isFinite(mmc) && mmc < RECOMMENDED_MAX_MAP_COUNT) {
    todo.push(`vm.max_map_count is ${mmc}: large sparse pcow images may need more mappings; set it per experiment (host: {sysctls: {vm.max_map_count: ${RECOMMENDED_MAX_MAP_COUNT}}}) and host setup applies and restores it.`);
  }
  if (p.pmem.devices.length === 0) todo.push('No pmem devices: experiments use emulated PM (host: {pm: {kind: emulated}}, a tmpfs directory), as the paper emulated PM with DRAM.');
  if (!f.clwb && !f.clflushopt) todo.push('The CPU has neither clwb nor clflushopt: persistence falls back to clflush (slower flushes).');

  lines.push('');
  if (p.actions.length === 0) {
    lines.push('This probe changed nothing on the host (doctor --install installs what the probes need, as root).');
  } else {
    lines.push('What this probe did:');
    for (const a of p.actions) lines.push(`  - ${a}`);
  }
  lines.push('');
  if (todo.length === 0) {
    lines.push('Nothing to do: this host has everything the harness uses.');
  } else {
    lines.push('Notes and what to do:');
    for (const t of todo) lines.push(`  - ${t}`);
  }
  return `${lines.join('\n')}\n`;
}
