// The smallest guest that serves the VM tests: the Debian kernel the boot probe already caches
// (src/host/kvm.ts) and a busybox-static initramfs holding
//   - the NVDIMM and ext4 modules with their dependencies (resolved from the modules' own
//     .modinfo, src/vm/modules.ts: the host has no depmod and the package ships no modules.dep),
//   - mke2fs/mkfs.ext4 and e2fsck with their libraries (copied from the host's e2fsprogs),
//   - ndctl with its libraries (apt-get download + dpkg-deb -x, never installed on the host),
//   - guest-scripts/init as /init.
// The base archive is cached by a hash of all of that; each boot appends a small second cpio
// with the test script (the kernel unpacks concatenated archives in order).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { cacheDir } from '../host/cache.ts';
import { cpioNewc, cpioTree, type CpioEntry } from '../host/cpio.ts';
import { aptRun, ensureCommands, type InstallOptions } from '../host/install.ts';
import { BUSYBOX, ensureProbeKernel, isStaticElf, type ProbeKernel } from '../host/kvm.ts';
import { repoRoot } from '../util/paths.ts';
import { failure, run } from '../util/proc.ts';
import { resolveModules, type ModuleInfo } from './modules.ts';
import { sharedOnce } from '../util/once.ts';

export type GuestSetup = Pick<InstallOptions, 'signal' | 'install' | 'log'>;

/** What the guest loads at boot, in this order after dependency resolution. */
export const GUEST_MODULES = [
  'libnvdimm',
  'nfit',
  'nd_btt',
  'nd_pmem',
  'dax_pmem',
  // /dev/daxX.Y for a devdax namespace (a user-space DAX mapping: the memory-error test).
  'device_dax',
  // ext4 has a soft dependency on crc32c (metadata checksums): load it before.
  'crc32c_generic',
  'ext4',
];

/** Host binaries copied into the guest (with the libraries they link). */
const HOST_BINARIES = ['/usr/sbin/mke2fs', '/usr/sbin/e2fsck'];

/** ndctl and the libraries it needs that a minimal host may lack (downloaded, not installed). */
const NDCTL_PACKAGES = ['ndctl', 'libndctl6', 'libdaxctl1', 'libcxl1', 'libiniparser1', 'libjson-c5', 'libkeyutils1', 'libtraceevent1', 'libtracefs1', 'libkmod2', 'libudev1'];

export const GUEST_INIT = join(repoRoot, 'guest-scripts', 'init');

export interface GuestImage {
  kernel: ProbeKernel;
  /**
   * What QEMU boots: the uncompressed vmlinux through PVH when the kernel supports it (under
   * TCG the xz decompressor alone costs ~4 s of an ~8 s boot), else the vmlinuz.
   */
  bootKernel: string;
  /** The cached base initramfs (gzip'd cpio). */
  initramfs: string;
  modules: ModuleInfo[];
}

/** The extracted ndctl packages (a directory tree), cached by package versions. */
const ensureNdctlTree: (opts?: GuestSetup) => Promise<string> = sharedOnce((opts: GuestSetup = {}) => fetchNdctl(opts));

async function fetchNdctl(opts: GuestSetup): Promise<string> {
  const root = opts.install === false ? false : undefined;
  let show: string;
  try {
    show = await aptRun('apt-cache', ['show', '--no-all-versions', ...NDCTL_PACKAGES], { signal: opts.signal, timeoutMs: 60_000, root });
  } catch (e) {
    // Offline: any complete earlier download will do.
    const base = cacheDir('guest-debs');
    for (const name of (await readdir(base).catch(() => [] as string[])).sort().reverse()) {
      if (name.startsWith('ndctl-') && existsSync(join(base, name, 'done'))) return join(base, name, 'root');
    }
    throw new Error(`no ndctl for the guest: apt-cache cannot answer (${(e as Error).message}) and none is cached in ${base}`);
  }
  const versions = [...show.matchAll(/^Package:\s*(\S+)\s*\n(?:.*\n)*?Version:\s*(\S+)/gm)].map((m) => `${m[1]}=${m[2]}`).sort();
  if (versions.length !== NDCTL_PACKAGES.length) throw new Error(`apt-cache show found ${versions.length} of the ${NDCTL_PACKAGES.length} packages ${NDCTL_PACKAGES.join(' ')}`);
  const key = createHash('sha256').update(versions.join('\n')).digest('hex').slice(0, 16);
  const base = cacheDir('guest-debs');
  const dir = join(base, `ndctl-${key}`);
  if (existsSync(join(dir, 'done'))) return join(dir, 'root');
  const tmp = await mkdtemp(join(base, '.tmp-'));
  try {
    opts.log?.(`downloading ${versions.join(' ')} for the guest initramfs (apt-get download; not installed on the host)`);
    await aptRun('apt-get', ['download', ...versions], { cwd: tmp, signal: opts.signal, timeoutMs: 10 * 60_000, root });
    for (const deb of (await readdir(tmp)).filter((f) => f.endsWith('.deb'))) {
      const x = await run('dpkg-deb', ['-x', join(tmp, deb), join(tmp, 'root')], { signal: opts.signal, timeoutMs: 120_000 });
      const why = failure(x);
      if (why) throw new Error(why);
      await rm(join(tmp, deb));
    }
    await writeFile(join(tmp, 'done'), `${versions.join('\n')}\n`);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return join(dir, 'root');
}

/**
 * Shared libraries `binary` needs, as [soname path in the guest, file on the host], found with
 * the host's loader (ldd) searching `extraLibDirs` first. A library nobody provides is an error.
 */
export async function sharedLibraries(binary: string, extraLibDirs: readonly string[] = []): Promise<Map<string, string>> {
  const r = await run('ldd', [binary], { env: extraLibDirs.length ? { LD_LIBRARY_PATH: extraLibDirs.join(':') } : {}, timeoutMs: 30_000 });
  const out = new Map<string, string>();
  // A static executable (e.g. guest-scripts' programs) needs none; ldd says so and exits 1.
  if (r.exitCode !== 0 && /not a dynamic executable/.test(r.stdout + r.stderr)) return out;
  const why = failure(r);
  if (why) throw new Error(`ldd ${binary}: ${why}`);
  const missing: string[] = [];
  for (const line of r.stdout.split('\n')) {
    let m = /^\s*(\S+)\s+=>\s+not found/.exec(line);
    if (m?.[1]) {
      missing.push(m[1]);
      continue;
    }
    m = /^\s*(\S+)\s+=>\s+(\/\S+)\s+\(/.exec(line);
    if (m?.[1] && m[2]) {
      out.set(`lib/x86_64-linux-gnu/${m[1]}`, m[2]);
      continue;
    }
    m = /^\s*(\/\S+ld-linux[^\s]*)\s+\(/.exec(line);
    if (m?.[1]) out.set(m[1].replace(/^\/+/, ''), m[1]);
  }
  if (missing.length) throw new Error(`${binary} needs ${missing.join(', ')}, found neither on the host nor in ${extraLibDirs.join(', ') || '(no extra directory)'}`);
  return out;
}

/** The guest kernel and base initramfs, built once per input hash and cached. */
export const ensureGuestImage: (opts?: GuestSetup) => Promise<GuestImage> = sharedOnce((opts: GuestSetup = {}) => buildGuest(opts));

async function buildGuest(opts: GuestSetup): Promise<GuestImage> {
  await ensureCommands(
    [
      { command: BUSYBOX, debianPackage: 'busybox-static' },
      { command: 'mke2fs', debianPackage: 'e2fsprogs' },
      { command: 'ldd', debianPackage: 'libc-bin' },
      { command: 'dpkg-deb', debianPackage: 'dpkg' },
    ],
    opts,
  );
  const [kernel, ndctlRoot] = await Promise.all([ensureProbeKernel(opts), ensureNdctlTree(opts)]);
  const busybox = await readFile(BUSYBOX);
  if (!isStaticElf(busybox)) throw new Error(`${BUSYBOX} is dynamically linked; the guest needs busybox-static`);
  const modules = await resolveModules(kernel.modulesDir, GUEST_MODULES);

  // Binaries and their libraries: ndctl's from the extracted packages first, then the host.
  const ndctlLibDirs = [join(ndctlRoot, 'usr/lib/x86_64-linux-gnu'), join(ndctlRoot, 'lib/x86_64-linux-gnu')];
  const files = new Map<string, string>(); // guest path -> host path
  const ndctlBin = join(ndctlRoot, 'usr/bin/ndctl');
  const binaries: [string, string][] = [...HOST_BINARIES.map((b): [string, string] => [b.replace(/^\/+/, ''), b]), ['usr/bin/ndctl', ndctlBin]];
  for (const [guestPath, hostPath] of binaries) {
    files.set(guestPath, hostPath);
    for (const [g, h] of await sharedLibraries(hostPath, ndctlLibDirs)) files.set(g, h);
  }
  const init = await readFile(GUEST_INIT);

  const hash = createHash('sha256').update('pcow-guest-initramfs-v1\0').update(kernel.release).update('\0').update(init).update(busybox);
  const blobs = new Map<string, Buffer>();
  for (const [g, h] of [...files].sort()) {
    const data = await readFile(h);
    blobs.set(g, data);
    hash.update(g).update('\0').update(data);
  }
  for (const m of modules) hash.update(m.path).update('\0');
  const key = hash.digest('hex').slice(0, 16);
  // Uncompressed: gunzip of ~15 MB in a TCG guest costs ~1 s per boot; the file is only read.
  const out = join(cacheDir('initramfs'), `guest-${key}.cpio`);
  const bootKernel = await ensureVmlinux(kernel, opts);
  if (existsSync(out)) return { kernel, bootKernel, initramfs: out, modules };

  const { entries, addDir } = cpioTree();
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'etc', 'tmp', 'mnt', 'run', 'lib64', 'lib/x86_64-linux-gnu']) addDir(d);
  entries.push(
    { kind: 'char', path: 'dev/console', major: 5, minor: 1 },
    { kind: 'char', path: 'dev/ttyS0', major: 4, minor: 64 },
    { kind: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    { kind: 'file', path: 'init', data: init, mode: 0o755 },
  );
  for (const [g, data] of blobs) {
    addDir(g.slice(0, g.lastIndexOf('/')));
    entries.push({ kind: 'file', path: g, data, mode: 0o755 });
  }
  entries.push({ kind: 'symlink', path: 'usr/sbin/mkfs.ext4', target: 'mke2fs' });
  const modDir = `lib/modules/${kernel.release}`;
  for (const m of modules) {
    addDir(`${modDir}/${m.path.slice(0, m.path.lastIndexOf('/'))}`);
    entries.push({ kind: 'file', path: `${modDir}/${m.path}`, data: await readFile(join(kernel.modulesDir, m.path)) });
  }
  entries.push({ kind: 'file', path: 'etc/pcow-modules', data: Buffer.from(`${modules.map((m) => m.path).join('\n')}\n`) });
  // mke2fs reads its defaults (ext4 features) from here; without it it falls back to ext2-era ones.
  entries.push({ kind: 'file', path: 'etc/mke2fs.conf', data: await readFile('/etc/mke2fs.conf').catch(() => Buffer.from('')) });

  const tmp = `${out}.${process.pid}.tmp`;
  await writeFile(tmp, cpioNewc(entries));
  await rename(tmp, out);
  opts.log?.(`built the guest initramfs ${basename(out)} (${modules.length} modules, ndctl, e2fsprogs)`);
  return { kernel, bootKernel, initramfs: out, modules };
}

/**
 * The kernel's uncompressed vmlinux (an ELF QEMU boots through PVH), extracted once from the
 * vmlinuz's xz payload into the cache; the vmlinuz itself when the kernel has no PVH entry or
 * the payload is not xz.
 */
export async function ensureVmlinux(kernel: ProbeKernel, opts: GuestSetup): Promise<string> {
  const config = await readFile(kernel.config, 'utf8').catch(() => '');
  if (!/^CONFIG_PVH=y$/m.test(config) || !/^CONFIG_KERNEL_XZ=y$/m.test(config)) return kernel.vmlinuz;
  const out = join(cacheDir('vmlinux'), `vmlinux-${kernel.release}-${kernel.version.replace(/[^\w.+-]/g, '_')}`);
  if (existsSync(out)) return out;
  const bz = await readFile(kernel.vmlinuz);
  const at = bz.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
  if (at < 0) {
    opts.log?.(`${kernel.vmlinuz}: no xz payload found; booting the compressed kernel`);
    return kernel.vmlinuz;
  }
  const tmp = `${out}.${process.pid}.tmp`;
  const payload = `${tmp}.xz`;
  await writeFile(payload, bz.subarray(at));
  try {
    const r = await run('xz', ['-dc', '--single-stream', payload], { stdoutFile: tmp, timeoutMs: 120_000 });
    const why = failure(r);
    if (why) throw new Error(`extracting vmlinux from ${kernel.vmlinuz}: ${why}`);
    const head = Buffer.alloc(4);
    const fh = await open(tmp, 'r');
    await fh.read(head, 0, 4, 0);
    await fh.close();
    if (head.readUInt32BE(0) !== 0x7f454c46) throw new Error(`extracting vmlinux from ${kernel.vmlinuz}: the xz payload is not an ELF file`);
    await rename(tmp, out);
  } finally {
    await rm(payload, { force: true });
    await rm(tmp, { force: true });
  }
  return out;
}

/**
 * The initrd for one boot: the cached base archive (uncompressed) followed by a small archive holding the
 * test script (/test.sh), its parameters (/test.env, shell assignments) and `binaries` (host
 * executables, as /usr/bin/NAME with their shared libraries).
 */
export async function bootInitrd(base: string, outFile: string, script: string, env: Record<string, string> = {}, binaries: readonly string[] = []): Promise<string> {
  const envText = Object.entries(env)
    .map(([k, v]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`guest env: bad variable name ${JSON.stringify(k)}`);
      return `${k}='${v.replace(/'/g, `'\\''`)}'\n`;
    })
    .join('');
  const entries: CpioEntry[] = [
    { kind: 'file', path: 'test.sh', data: Buffer.from(script), mode: 0o755 },
    { kind: 'file', path: 'test.env', data: Buffer.from(envText) },
  ];
  // Host binaries for this boot (e.g. the native tools) as /usr/bin/NAME, with their libraries
  // (into directories the base archive already has: lib/x86_64-linux-gnu, lib64).
  const files = new Map<string, string>();
  for (const b of binaries) {
    const name = basename(b);
    if (files.has(`usr/bin/${name}`)) throw new Error(`guest binaries: two named ${name}`);
    files.set(`usr/bin/${name}`, b);
    for (const [g, h] of await sharedLibraries(b)) files.set(g, h);
  }
  for (const [g, h] of [...files].sort()) entries.push({ kind: 'file', path: g, data: await readFile(h), mode: 0o755 });
  const extra = cpioNewc(entries);
  await writeFile(outFile, Buffer.concat([await readFile(base), extra]));
  return outFile;
}

/** A script from guest-scripts/ by name. */
export async function guestScript(name: string): Promise<string> {
  if (!/^[\w.-]+$/.test(name)) throw new Error(`guest script name ${JSON.stringify(name)} is not a plain file name`);
  return readFile(join(repoRoot, 'guest-scripts', name), 'utf8');
}
