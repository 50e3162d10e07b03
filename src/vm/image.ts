// Build stage for the Debian guest the experiments log into over SSH (DESIGN.md "Facts about
// guests"; next to guest.ts's initramfs, with src/build/qemu.ts's lock and log helpers): a
// bookworm rootfs from `debootstrap --variant=minbase` with the workload packages, trimmed, as an
// ext4 image (`mkfs.ext4 -d`, no loop mount) converted to qcow2; a small busybox initrd that
// loads virtio/ext4, finds the root disk by its virtio serial and switch_roots to
// guest-scripts/debian-init; an ed25519 host key generated here and pinned by the harness, and a
// client key pair for root. debootstrap itself comes from `apt-get download` + `dpkg-deb -x`
// (never installed on the host). Cached under <cache>/guest-image/<key>, the key a hash of
// every input (package list and candidate versions, debootstrap version, mirror, scripts,
// kernel, modules, busybox); a second call with the same inputs returns in a few seconds.
// Boot with ./debian.ts (a throw-away qcow2 overlay per run).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, chmod, copyFile, mkdir, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { logged, readStamp, type BuildCtx } from '../build/debian-source.ts';
import { cacheDir, withCacheLock } from '../host/cache.ts';
import { cpioNewc, cpioTree } from '../host/cpio.ts';
import { aptRun, ensureCommands, step, type InstallOptions } from '../host/install.ts';
import { BUSYBOX, ensureProbeKernel, isStaticElf, type ProbeKernel } from '../host/kvm.ts';
import type { SetupStep } from '../results/types.ts';
import { repoRoot } from '../util/paths.ts';
import { failure, run } from '../util/proc.ts';
import { ensureVmlinux } from './guest.ts';
import { resolveModules } from './modules.ts';

/** Packages debootstrap adds to minbase (names checked with apt-cache in bookworm). */
export const GUEST_PACKAGES: readonly string[] = [
  'openssh-server',
  'fio',
  'redis-server',
  'redis-tools',
  'e2fsprogs',
  'ndctl',
  'daxctl',
  'kmod',
  'iproute2',
  'pmdk-tools',
  'libpmemobj1',
  'libpmem2',
  'libpmem1',
  'procps',
];

export const GUEST_SUITE = 'bookworm';

/** Loaded by the initrd (insmod, dependencies first) to reach the root file system. */
export const INITRD_MODULES: readonly string[] = ['virtio_pci', 'virtio_blk', 'crc32c_generic', 'ext4'];
/** Also in the rootfs (modprobe by debian-init): the NIC and the NVDIMM/DAX stack. */
export const ROOTFS_MODULES: readonly string[] = [...INITRD_MODULES, 'virtio_net', 'libnvdimm', 'nfit', 'nd_btt', 'nd_pmem', 'dax_pmem', 'device_dax'];

/** The root disk's virtio serial (the initrd looks for it: pcowroot=...). */
export const ROOT_SERIAL = 'pcowroot';

const INIT_SCRIPT = path.join(repoRoot, 'guest-scripts', 'debian-init');
const INITRD_SCRIPT = path.join(repoRoot, 'guest-scripts', 'debian-initrd');
/** Bump when the build steps below change what ends up in the image. */
const BUILD_FORMAT = 'pcow-debian-guest-v1';
/** Free space left in the root file system for the guest's own files (logs, job outputs). */
const ROOT_SLACK = 512 * 1024 * 1024;

export type GuestImageSetup = Pick<InstallOptions, 'signal' | 'install' | 'log'> & { timeoutMs?: number };

export interface DebianImage {
  key: string;
  dir: string;
  /** What QEMU boots (the kernel's vmlinux through PVH when it can). */
  bootKernel: string;
  kernel: ProbeKernel;
  initrd: string;
  /** The read-only base qcow2 (boot a throw-away overlay of it, never this file). */
  rootImage: string;
  /** The pinned host key, an OpenSSH public key line. */
  hostKey: string;
  /** root's private key (OpenSSH format). */
  clientKey: string;
  /** Every package in the image with its version (from the image's dpkg status). */
  packages: string[];
  rootImageBytes: number;
  rootfsBytes: number;
  buildSeconds: number;
  logFile: string;
  cached: boolean;
  seconds: number;
  steps: SetupStep[];
}

interface Stamp {
  key: string;
  inputs: string[];
  packages: string[];
  rootImageBytes: number;
  rootfsBytes: number;
  buildSeconds: number;
  builtAt: string;
}

/** Mirror URI of the host's Debian entries (deb822 or one-line), else deb.debian.org. */
export function debianMirror(sources: string): string {
  for (const stanza of sources.split(/\n\s*\n/)) {
    if (!/^Types:(.*\s)?deb(\s|$)/m.test(stanza) || !/^Suites:.*\bbookworm\b/m.test(stanza)) continue;
    const m = /^URIs:\s*(\S+)/m.exec(stanza);
    if (m?.[1] && !/security/.test(m[1])) return m[1];
  }
  const line = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/m.exec(sources);
  return line?.[1] ?? 'http://deb.debian.org/debian';
}

async function hostMirror(): Promise<string> {
  let text = '';
  for (const f of ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list']) text += `${await readFile(f, 'utf8').catch(() => '')}\n\n`;
  return debianMirror(text);
}

/** "pkg=version" for each name, from apt-cache (the mirror's Packages the host has fetched). */
async function candidateVersions(names: readonly string[], opts: GuestImageSetup): Promise<string[]> {
  const show = await aptRun('apt-cache', ['show', '--no-all-versions', ...names], { signal: opts.signal, timeoutMs: 60_000, root: opts.install === false ? false : undefined });
  const found = new Map<string, string>();
  for (const m of show.matchAll(/^Package:\s*(\S+)\s*\n(?:.*\n)*?Version:\s*(\S+)/gm)) found.set(m[1]!, m[2]!);
  const missing = names.filter((n) => !found.has(n));
  if (missing.length) throw new Error(`guest image: apt-cache show knows no ${missing.join(', ')} (package names for ${GUEST_SUITE}?)`);
  return names.map((n) => `${n}=${found.get(n)}`);
}

/** debootstrap extracted from its .deb into the cache (not installed): [script, DEBOOTSTRAP_DIR]. */
async function ensureDebootstrap(version: string, o: BuildCtx): Promise<{ bin: string; dir: string }> {
  const base = cacheDir('guest-debs', `debootstrap-${version.replace(/[^\w.+-]/g, '_')}`);
  const out = { bin: path.join(base, 'root', 'usr', 'sbin', 'debootstrap'), dir: path.join(base, 'root', 'usr', 'share', 'debootstrap') };
  if (existsSync(path.join(base, 'done'))) return out;
  o.log(`guest-image: apt-get download debootstrap=${version} (extracted into ${base}, not installed)`);
  await rm(path.join(base, 'root'), { recursive: true, force: true });
  await aptRun('apt-get', ['download', `debootstrap=${version}`], { cwd: base, signal: o.signal, timeoutMs: 5 * 60_000 });
  const deb = (await readdir(base)).find((f) => f.startsWith('debootstrap_') && f.endsWith('.deb'));
  if (!deb) throw new Error(`apt-get download debootstrap=${version} left no .deb in ${base}`);
  await logged(o, 'extract debootstrap', 'dpkg-deb', ['-x', path.join(base, deb), path.join(base, 'root')]);
  await rm(path.join(base, deb));
  await writeFile(path.join(base, 'done'), `${version}\n`);
  return out;
}

async function sha256(data: Buffer | string): Promise<string> {
  return createHash('sha256').update(data).digest('hex');
}

/** Bytes used by a directory tree (apparent sizes, as mkfs.ext4 -d copies them). */
async function treeBytes(dir: string): Promise<number> {
  const r = await run('du', ['-sb', '--', dir], { timeoutMs: 120_000 });
  const why = failure(r);
  if (why) throw new Error(`du ${dir}: ${why}`);
  return Number(r.stdout.split(/\s/)[0]);
}

/** The package=version lines of a dpkg status file (installed packages only). */
export function installedPackages(status: string): string[] {
  const out: string[] = [];
  for (const stanza of status.split(/\n\s*\n/)) {
    const p = /^Package:\s*(\S+)/m.exec(stanza)?.[1];
    const v = /^Version:\s*(\S+)/m.exec(stanza)?.[1];
    if (p && v && /^Status:.*\binstalled$/m.test(stanza)) out.push(`${p}=${v}`);
  }
  return out.sort();
}

/** Mount points in /proc/self/mountinfo (field 5, octal escapes decoded) at or under `dir`. */
export function mountsUnder(mountinfo: string, dir: string): string[] {
  const base = path.resolve(dir);
  return mountinfo
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => m !== undefined)
    .map((m) => m.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))))
    .filter((m) => m === base || m.startsWith(`${base}/`))
    .sort((a, b) => b.length - a.length);
}

/** Lazily unmount everything under dir (deepest first) before it is removed; returns what stays mounted. */
async function unmountUnder(dir: string): Promise<string[]> {
  const read = async (): Promise<string[]> => mountsUnder(await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''), dir);
  for (const m of await read()) await run('umount', ['-l', '--', m], { timeoutMs: 30_000 });
  return read();
}

/** debootstrap with its output in the log, its last "I:" line reported every 15 s. */
async function debootstrap(o: BuildCtx, ds: { bin: string; dir: string }, args: string[], timeoutMs: number): Promise<void> {
  const out = path.join(path.dirname(o.logFile), 'debootstrap.log');
  await appendFile(o.logFile, `\n=== debootstrap ${args.join(' ')} (output in ${out})\n`);
  let last = '';
  const timer = setInterval(() => {
    void readFile(out, 'utf8')
      .then((t) => {
        const m = [...t.matchAll(/^I: (.*)$/gm)].pop();
        if (m?.[1] && m[1] !== last) {
          last = m[1];
          o.log(`guest-image: debootstrap: ${m[1]}`);
        }
      })
      .catch(() => undefined);
  }, 15_000);
  try {
    const r = await run(ds.bin, args, { signal: o.signal, timeoutMs, env: { DEBOOTSTRAP_DIR: ds.dir }, stdoutFile: out, stderrFile: `${out}.err` });
    const why = failure(r);
    if (why) {
      const text = `${await readFile(out, 'utf8').catch(() => '')}\n${await readFile(`${out}.err`, 'utf8').catch(() => '')}`;
      const tail = text.split('\n').filter((l) => /^[EW]:|error|fail/i.test(l)).slice(-8).join('\n');
      throw new Error(`guest-image build: debootstrap failed (${why.split('\n')[0]})\n${tail}\n(full log: ${out}; the rootfs's debootstrap/debootstrap.log has more)`);
    }
  } finally {
    clearInterval(timer);
  }
}

let once: Promise<DebianImage> | undefined;

/** The Debian guest image for the current inputs: from the cache, else built (a few minutes). */
export function ensureDebianImage(opts: GuestImageSetup = {}): Promise<DebianImage> {
  once ??= buildImage(opts).catch((e: unknown) => {
    once = undefined;
    throw e;
  });
  return once;
}

async function buildImage(opts: GuestImageSetup): Promise<DebianImage> {
  const started = Date.now();
  const log = opts.log ?? (() => undefined);
  const steps: SetupStep[] = await ensureCommands(
    [
      { command: 'apt-get', debianPackage: 'apt' },
      { command: 'dpkg-deb', debianPackage: 'dpkg' },
      { command: 'mkfs.ext4', debianPackage: 'e2fsprogs' },
      { command: 'qemu-img', debianPackage: 'qemu-utils' },
      { command: 'ssh-keygen', debianPackage: 'openssh-client' },
      { command: 'wget', debianPackage: 'wget' },
      { command: 'gpgv', debianPackage: 'gpgv' },
      { command: '/usr/share/keyrings/debian-archive-keyring.gpg', debianPackage: 'debian-archive-keyring' },
      { command: BUSYBOX, debianPackage: 'busybox-static' },
    ],
    opts,
  );
  const kernel = await ensureProbeKernel(opts);
  const [bootKernel, pkgVersions, [dsVersion], mirror, initScript, initrdScript, busybox] = await Promise.all([
    ensureVmlinux(kernel, opts),
    candidateVersions(GUEST_PACKAGES, opts),
    candidateVersions(['debootstrap'], opts),
    hostMirror(),
    readFile(INIT_SCRIPT),
    readFile(INITRD_SCRIPT),
    readFile(BUSYBOX),
  ]);
  if (!isStaticElf(busybox)) throw new Error(`${BUSYBOX} is dynamically linked; the guest initrd needs busybox-static`);
  const initrdModules = await resolveModules(kernel.modulesDir, INITRD_MODULES);
  const rootfsModules = await resolveModules(kernel.modulesDir, ROOTFS_MODULES);
  const inputs = [
    BUILD_FORMAT,
    `suite=${GUEST_SUITE}`,
    `mirror=${mirror}`,
    `debootstrap=${dsVersion!.split('=')[1]}`,
    ...pkgVersions,
    `kernel=${kernel.package}=${kernel.version}`,
    `initrd-modules=${initrdModules.map((m) => m.name).join(',')}`,
    `rootfs-modules=${rootfsModules.map((m) => m.name).join(',')}`,
    `debian-init=${await sha256(initScript)}`,
    `debian-initrd=${await sha256(initrdScript)}`,
    `busybox=${await sha256(busybox)}`,
  ];
  const key = (await sha256(inputs.join('\n'))).slice(0, 16);
  const base = cacheDir('guest-image');
  const dir = path.join(base, key);
  const stampFile = path.join(dir, 'stamp.json');
  const logFile = path.join(dir, 'build.log');
  const files = {
    initrd: path.join(dir, 'initrd.cpio'),
    rootImage: path.join(dir, 'root.qcow2'),
    hostKey: path.join(dir, 'ssh_host_ed25519_key.pub'),
    clientKey: path.join(dir, 'client_key'),
  };
  const result = async (stamp: Stamp, cached: boolean): Promise<DebianImage> => ({
    key,
    dir,
    bootKernel,
    kernel,
    initrd: files.initrd,
    rootImage: files.rootImage,
    hostKey: (await readFile(files.hostKey, 'utf8')).trim(),
    clientKey: files.clientKey,
    packages: stamp.packages,
    rootImageBytes: stamp.rootImageBytes,
    rootfsBytes: stamp.rootfsBytes,
    buildSeconds: stamp.buildSeconds,
    logFile,
    cached,
    seconds: (Date.now() - started) / 1000,
    steps,
  });
  const reuse = async (): Promise<DebianImage | null> => {
    const stamp = await readStamp<Stamp>(stampFile);
    if (!stamp || stamp.key !== key || !Object.values(files).every((f) => existsSync(f))) return null;
    const size = (await stat(files.rootImage)).size;
    if (size !== stamp.rootImageBytes) {
      log(`guest-image: ${files.rootImage} is ${size} bytes, built as ${stamp.rootImageBytes}: rebuilding`);
      return null;
    }
    return result(stamp, true);
  };
  const hit = await reuse();
  if (hit) {
    log(`guest-image: cached ${key} (${GUEST_SUITE}, ${hit.packages.length} packages, kernel ${kernel.release}): ${dir}`);
    return hit;
  }
  const o: BuildCtx = { signal: opts.signal, log, steps, logFile: path.join(base, 'last-resolve.log'), name: 'guest-image' };
  return withCacheLock(`${dir}.lock`, 'guest-image: another build of this key', o, async () => {
    const again = await reuse();
    if (again) return again;
    const busy = await unmountUnder(dir);
    if (busy.length) throw new Error(`guest-image: cannot rebuild ${dir}: still mounted inside it: ${busy.join(', ')} (unmount them)`);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await writeFile(logFile, `pcow Debian guest image ${key}\n${inputs.join('\n')}\n`);
    const c: BuildCtx = { ...o, logFile };
    const rootfs = path.join(dir, 'rootfs');
    const rootExt4 = path.join(dir, 'root.ext4');
    try {
      log(`guest-image: building ${key} (log: ${logFile})`);
      const ds = await ensureDebootstrap(dsVersion!.split('=')[1]!, c);
      const t0 = Date.now();
      log(`guest-image: debootstrap --variant=minbase ${GUEST_SUITE} from ${mirror} with ${GUEST_PACKAGES.length} packages`);
      await debootstrap(
        c,
        ds,
        ['--variant=minbase', `--include=${GUEST_PACKAGES.join(',')}`, `--cache-dir=${cacheDir('guest-debs', 'debootstrap-cache')}`, GUEST_SUITE, rootfs, mirror],
        opts.timeoutMs ?? 30 * 60_000,
      );
      log(`guest-image: debootstrap done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      const packages = installedPackages(await readFile(path.join(rootfs, 'var/lib/dpkg/status'), 'utf8'));
      await configureRootfs(c, rootfs, kernel, rootfsModules.map((m) => m.path), initScript, files, key);
      const rootfsBytes = await treeBytes(rootfs);
      // ext4 overhead (inodes, journal) plus room for the guest's own files; whole MiB.
      const imageBytes = Math.ceil((rootfsBytes * 1.25 + ROOT_SLACK) / (1024 * 1024)) * 1024 * 1024;
      const fh = await open(rootExt4, 'w');
      await fh.truncate(imageBytes);
      await fh.close();
      log(`guest-image: mkfs.ext4 -d (${(rootfsBytes / 1e6).toFixed(0)} MB of files in a ${(imageBytes / 1e6).toFixed(0)} MB file system), qemu-img convert to qcow2`);
      await logged(c, 'mkfs.ext4 -d', 'mkfs.ext4', ['-q', '-F', '-L', 'pcowroot', '-d', rootfs, rootExt4]);
      await logged(c, 'qemu-img convert', 'qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rootExt4, files.rootImage]);
      await chmod(files.rootImage, 0o444); // the base of every overlay: nothing writes it
      await rm(rootExt4, { force: true });
      await rm(rootfs, { recursive: true, force: true });
      await writeFile(files.initrd, await initrdArchive(kernel, initrdModules.map((m) => m.path), initrdScript, busybox));
      const stamp: Stamp = {
        key,
        inputs,
        packages,
        rootImageBytes: (await stat(files.rootImage)).size,
        rootfsBytes,
        buildSeconds: (Date.now() - started) / 1000,
        builtAt: new Date().toISOString(),
      };
      await writeFile(stampFile, JSON.stringify(stamp, null, 2) + '\n');
      steps.push(step('build-guest-image', `${files.rootImage} (${(stamp.rootImageBytes / 1e6).toFixed(0)} MB, ${packages.length} packages, ${stamp.buildSeconds.toFixed(0)} s)`));
      log(`guest-image: ready in ${stamp.buildSeconds.toFixed(0)} s: ${files.rootImage} (${(stamp.rootImageBytes / 1e6).toFixed(0)} MB)`);
      return result(stamp, false);
    } catch (e) {
      // Keep the log; drop the half-built tree (a killed debootstrap leaves proc/sys/dev mounted in it).
      if ((await unmountUnder(rootfs)).length === 0) await rm(rootfs, { recursive: true, force: true }).catch(() => undefined);
      await rm(rootExt4, { force: true });
      throw e;
    }
  });
}

/** Trim the rootfs, install keys, sshd settings, kernel modules and the PID-1 script. */
async function configureRootfs(
  c: BuildCtx,
  rootfs: string,
  kernel: ProbeKernel,
  modules: string[],
  initScript: Buffer,
  files: { hostKey: string; clientKey: string },
  key: string,
): Promise<void> {
  const r = (p: string): string => path.join(rootfs, p);
  // Trim: apt caches and lists, docs, man pages, locales (DESIGN.md: 408 MB -> ~218 MB).
  for (const d of ['var/cache/apt', 'var/lib/apt/lists', 'usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale', 'usr/share/lintian', 'var/log']) {
    await rm(r(d), { recursive: true, force: true });
    await mkdir(r(d), { recursive: true });
  }
  await mkdir(r('var/lib/apt/lists/partial'), { recursive: true });
  // Noisy `ndctl load-keys` at nvdimm probe (DESIGN.md).
  await rm(r('etc/modprobe.d/nvdimm-security.conf'), { force: true });
  // Keys: one ed25519 host key, generated here and pinned by the harness; root logs in by key.
  for (const f of await readdir(r('etc/ssh'))) if (f.startsWith('ssh_host_')) await rm(r(`etc/ssh/${f}`));
  await logged(c, 'host key', 'ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `pcow-guest-${key}`, '-f', r('etc/ssh/ssh_host_ed25519_key')]);
  await copyFile(r('etc/ssh/ssh_host_ed25519_key.pub'), files.hostKey);
  await logged(c, 'client key', 'ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `pcow-harness-${key}`, '-f', files.clientKey]);
  await mkdir(r('root/.ssh'), { recursive: true, mode: 0o700 });
  await chmod(r('root/.ssh'), 0o700);
  await copyFile(`${files.clientKey}.pub`, r('root/.ssh/authorized_keys'));
  await chmod(r('root/.ssh/authorized_keys'), 0o600);
  // Included before the defaults in Debian's sshd_config, so these win (first value counts).
  await writeFile(
    r('etc/ssh/sshd_config.d/pcow.conf'),
    [
      '# pcow harness guest (src/vm/image.ts)',
      'HostKey /etc/ssh/ssh_host_ed25519_key',
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'UseDNS no',
      'PrintMotd no',
      'ClientAliveInterval 15',
      'ClientAliveCountMax 8',
      '',
    ].join('\n'),
  );
  await writeFile(r('etc/hostname'), 'pcow-guest\n');
  await writeFile(r('etc/hosts'), '127.0.0.1 localhost\n127.0.1.1 pcow-guest\n');
  await writeFile(r('etc/fstab'), '# mounted by /sbin/pcow-init\n');
  // Kernel modules for the guest's modprobe: the ones it loads and their dependencies, depmod'ed
  // by the guest's own kmod (the kernel package ships no modules.dep).
  const modDir = `lib/modules/${kernel.release}`;
  for (const m of modules) {
    await mkdir(path.dirname(r(`${modDir}/${m}`)), { recursive: true });
    await copyFile(path.join(kernel.modulesDir, m), r(`${modDir}/${m}`));
  }
  for (const f of ['modules.builtin', 'modules.builtin.modinfo', 'modules.order']) {
    if (existsSync(path.join(kernel.modulesDir, f))) await copyFile(path.join(kernel.modulesDir, f), r(`${modDir}/${f}`));
  }
  await logged(c, 'depmod', 'chroot', [rootfs, 'depmod', '-a', kernel.release]);
  await writeFile(r('etc/pcow-modules'), `${ROOTFS_MODULES.join('\n')}\n`);
  await writeFile(r('sbin/pcow-init'), initScript, { mode: 0o755 });
  await chmod(r('sbin/pcow-init'), 0o755);
  await mkdir(r('var/lib/pcow/jobs'), { recursive: true });
}

/** The initrd: busybox-static, the virtio/ext4 modules and guest-scripts/debian-initrd as /init. */
async function initrdArchive(kernel: ProbeKernel, modules: string[], init: Buffer, busybox: Buffer): Promise<Buffer> {
  const { entries, addDir } = cpioTree();
  for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys', 'etc', 'newroot']) addDir(d);
  entries.push(
    { kind: 'char', path: 'dev/console', major: 5, minor: 1 },
    { kind: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    { kind: 'file', path: 'init', data: init, mode: 0o755 },
  );
  const modDir = `lib/modules/${kernel.release}`;
  for (const m of modules) {
    addDir(`${modDir}/${m.slice(0, m.lastIndexOf('/'))}`);
    entries.push({ kind: 'file', path: `${modDir}/${m}`, data: await readFile(path.join(kernel.modulesDir, m)) });
  }
  entries.push({ kind: 'file', path: 'etc/pcow-modules', data: Buffer.from(`${modules.join('\n')}\n`) });
  return cpioNewc(entries);
}
