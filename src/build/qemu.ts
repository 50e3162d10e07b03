// Build stage for the patched QEMU (native/qemu/*.patch: memory-backend-file format=pcow).
// Source: Debian's QEMU (`apt-get source qemu`, adding a deb-src entry as root if none exists),
// or a QEMU source directory or tarball named by the experiment (build.qemu.source). The patches
// are applied to a fresh copy, a minimal x86_64-softmmu is configured against the built libpcow
// (make -C native), built with ninja and installed into the cache under a key of everything that
// decides the binary: source version, patch hash, libpcow source hash, configure flags. A second
// call with the same inputs finds the installed binary and returns in well under a second.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { cacheDir, withCacheLock } from '../host/cache.ts';
import { ensureCommands, step, type CommandRequirement } from '../host/install.ts';
import type { SetupStep } from '../results/types.ts';
import { failure, run } from '../util/proc.ts';
import { debianChangelogVersion, debianSource, fileSha256, localSource, logged, readStamp, type BuildCtx, type Source } from './debian-source.ts';
import { buildNative, hashFiles, nativeDir, nativeLibHash } from './native.ts';

export { debSrcFrom, fileSha256 } from './debian-source.ts';

export const qemuPatchDir = path.join(nativeDir, 'qemu');

/** Debian packages the build needs (DESIGN.md "Facts about the platform"), as files/commands. */
export const QEMU_BUILD_DEPS: CommandRequirement[] = [
  { command: 'ninja', debianPackage: 'ninja-build' },
  { command: 'meson', debianPackage: 'meson' },
  { command: 'pkg-config', debianPackage: 'pkg-config' },
  { command: 'gcc', debianPackage: 'gcc' },
  { command: 'make', debianPackage: 'make' },
  { command: 'patch', debianPackage: 'patch' },
  { command: 'flex', debianPackage: 'flex' },
  { command: 'bison', debianPackage: 'bison' },
  { command: 'dpkg-source', debianPackage: 'dpkg-dev' },
  { command: 'python3', debianPackage: 'python3' },
  { command: '/usr/include/glib-2.0/glib.h', debianPackage: 'libglib2.0-dev' },
  { command: '/usr/include/pixman-1/pixman.h', debianPackage: 'libpixman-1-dev' },
  { command: '/usr/include/slirp/libslirp.h', debianPackage: 'libslirp-dev' },
  { command: '/usr/include/libfdt.h', debianPackage: 'libfdt-dev' },
  { command: '/usr/include/zlib.h', debianPackage: 'zlib1g-dev' },
  // Firmware the binary finds through its compiled-in --firmwarepath (no blobs are built).
  { command: '/usr/share/seabios/bios-256k.bin', debianPackage: 'seabios' },
  { command: '/usr/share/qemu/linuxboot_dma.bin', debianPackage: 'qemu-system-data' },
  { command: '/usr/lib/ipxe/qemu/efi-virtio.rom', debianPackage: 'ipxe-qemu' },
];

/** Firmware directories compiled into the binary (Debian's qemu-system-data, seabios, ipxe-qemu). */
export const QEMU_FIRMWARE_DIRS = ['/usr/share/qemu', '/usr/share/seabios', '/usr/lib/ipxe/qemu'];

/**
 * configure flags that shape the binary (part of the cache key). --prefix and --pcow (paths)
 * are added per build. Devices stay at their defaults: pc, nvdimm, virtio and slirp need them.
 */
export const QEMU_CONFIGURE_FLAGS: readonly string[] = [
  '--target-list=x86_64-softmmu',
  '--enable-kvm',
  '--enable-tcg',
  '--enable-slirp',
  '--disable-docs',
  '--disable-tools',
  '--disable-user',
  '--disable-guest-agent',
  '--disable-werror',
  '--disable-debug-info',
  '--disable-install-blobs',
  `--firmwarepath=${QEMU_FIRMWARE_DIRS.join(':')}`,
];

export interface QemuBuildOptions {
  /** A QEMU source directory or tarball (.tar.xz/.tar.gz/.tar.bz2); default: `apt-get source qemu`. */
  source?: string;
  /** ninja -j (default: number of CPUs). */
  jobs?: number;
  signal?: AbortSignal;
  /** Progress lines. */
  log?: (line: string) => void;
  /** Keep the build tree after install (default: removed, only the installed prefix stays). */
  keepBuildTree?: boolean;
  /** Bound of the whole build (default 30 min). */
  timeoutMs?: number;
}

export interface QemuBuild {
  /** Absolute path of the installed qemu-system-x86_64. */
  binary: string;
  /** Extra argv for firmware: [] (the firmware path is compiled in; see firmwareDirs). */
  firmwareArgs: string[];
  firmwareDirs: string[];
  /** "debian:7.2+dfsg-7+deb12u18", "dir:/src/qemu (VERSION 7.2.0)", "tarball:<sha256>" */
  sourceVersion: string;
  /** sha256 over native/qemu/*.patch (names and contents). */
  patchHash: string;
  /** The patch files applied, in order. */
  patches: string[];
  /** sha256 of the installed binary. */
  binaryHash: string;
  /** libpcow + runtime source hash linked into it. */
  nativeHash: string;
  configureFlags: string[];
  /** Cache key and directory of this build. */
  key: string;
  dir: string;
  logFile: string;
  cached: boolean;
  seconds: number;
  steps: SetupStep[];
}

interface Stamp {
  key: string;
  sourceVersion: string;
  patchHash: string;
  nativeHash: string;
  configureFlags: string[];
  binaryHash: string;
  buildSeconds: number;
  builtAt: string;
}

const QEMU_BIN = 'qemu-system-x86_64';

export async function qemuPatches(): Promise<string[]> {
  if (!existsSync(qemuPatchDir)) throw new Error(`${qemuPatchDir} is missing: no QEMU patch series to apply`);
  const files = (await readdir(qemuPatchDir)).filter((f) => /^\d{4}-.*\.patch$/.test(f)).sort();
  if (files.length === 0) throw new Error(`${qemuPatchDir} has no NNNN-*.patch files`);
  return files.map((f) => path.join(qemuPatchDir, f));
}

export async function qemuPatchHash(patches?: string[]): Promise<string> {
  return hashFiles(patches ?? (await qemuPatches()), qemuPatchDir); // relative path = the patch's name
}

type Ctx = BuildCtx;

async function readVersionFile(dir: string): Promise<string> {
  const v = existsSync(path.join(dir, 'VERSION')) ? (await readFile(path.join(dir, 'VERSION'), 'utf8')).trim() : 'unknown';
  const deb = await debianChangelogVersion(dir);
  return deb ? `${v}, debian ${deb}` : v;
}

async function resolveSource(o: Ctx, source: string | undefined): Promise<Source> {
  if (source === undefined) return debianSource(o, 'qemu', 'build.qemu.source');
  return localSource(
    o,
    source,
    'build.qemu.source',
    'a QEMU',
    (abs) => (!existsSync(path.join(abs, 'configure')) || !existsSync(path.join(abs, 'backends', 'hostmem-file.c')) ? 'no configure or backends/hostmem-file.c' : null),
    async (abs) => `VERSION ${await readVersionFile(abs)}`,
  );
}

export function qemuCacheKey(parts: { sourceVersion: string; patchHash: string; nativeHash: string; configureFlags: readonly string[] }): string {
  const h = createHash('sha256');
  h.update(JSON.stringify([parts.sourceVersion, parts.patchHash, parts.nativeHash, parts.configureFlags]));
  return h.digest('hex').slice(0, 16);
}

/** ninja with its output in a file, its [N/M] progress reported every 15 s. */
async function ninjaBuild(o: Ctx, buildDir: string, args: string[], timeoutMs: number, name: string): Promise<void> {
  const ninjaLog = path.join(path.dirname(o.logFile), `${name}.log`);
  await appendFile(o.logFile, `\n=== ninja ${args.join(' ')} (output in ${ninjaLog})\n`);
  let last = '';
  const timer = setInterval(() => {
    void readFile(ninjaLog, 'utf8')
      .then((t) => {
        const m = [...t.matchAll(/^\[(\d+)\/(\d+)\]/gm)].pop();
        if (m && m[0] !== last) {
          last = m[0];
          o.log(`qemu: ninja ${m[1]}/${m[2]} (${Math.round((100 * Number(m[1])) / Number(m[2]))}%)`);
        }
      })
      .catch(() => undefined);
  }, 15_000);
  try {
    const r = await run('ninja', ['-C', buildDir, ...args], { signal: o.signal, timeoutMs, stdoutFile: ninjaLog, stderrFile: path.join(path.dirname(o.logFile), `${name}.err`) });
    const why = failure(r);
    if (why) {
      const tail = (await readFile(ninjaLog, 'utf8').catch(() => '')).split('\n').filter((l) => /error|Error|FAILED/.test(l)).slice(-8).join('\n');
      throw new Error(`qemu build: ninja ${args.join(' ')} failed (${why.split('\n')[0]})\n${tail}\n(full log: ${ninjaLog})`);
    }
  } finally {
    clearInterval(timer);
  }
}

/**
 * The patched QEMU for these inputs: reused from the cache when it was built before (seconds),
 * else fetched, patched, configured, built and installed (cold: ~6 min on 2 idle cores).
 */
export async function ensureQemu(opts: QemuBuildOptions = {}): Promise<QemuBuild> {
  const started = Date.now();
  const log = opts.log ?? (() => undefined);
  const steps: SetupStep[] = await ensureCommands(QEMU_BUILD_DEPS, { signal: opts.signal, log });
  // libpcow and the runtime are linked statically: build them first (make is incremental).
  await buildNative({ signal: opts.signal, log });
  const patches = await qemuPatches();
  const patchHash = await qemuPatchHash(patches);
  const nativeHash = await nativeLibHash();
  const base = cacheDir('qemu');
  const tmpLog = path.join(base, 'last-resolve.log');
  await writeFile(tmpLog, '');
  const pre: Ctx = { name: 'qemu', signal: opts.signal, log, steps, logFile: tmpLog };
  const source = await resolveSource(pre, opts.source);
  const configureFlags = [...QEMU_CONFIGURE_FLAGS];
  const key = qemuCacheKey({ sourceVersion: source.version, patchHash, nativeHash, configureFlags });
  const dir = path.join(base, key);
  const prefix = path.join(dir, 'install');
  const binary = path.join(prefix, 'bin', QEMU_BIN);
  const stampFile = path.join(dir, 'stamp.json');
  const logFile = path.join(dir, 'build.log');
  const result = (stamp: Stamp, cached: boolean): QemuBuild => ({
    binary,
    firmwareArgs: [],
    firmwareDirs: [...QEMU_FIRMWARE_DIRS],
    sourceVersion: source.version,
    patchHash,
    patches: patches.map((p) => path.basename(p)),
    binaryHash: stamp.binaryHash,
    nativeHash,
    configureFlags,
    key,
    dir,
    logFile,
    cached,
    seconds: (Date.now() - started) / 1000,
    steps,
  });
  const reuse = async (): Promise<QemuBuild | null> => {
    const stamp = await readStamp<Stamp>(stampFile);
    if (!stamp || !existsSync(binary)) return null;
    const hash = await fileSha256(binary);
    if (hash !== stamp.binaryHash) {
      log(`qemu: ${binary} differs from the one built (sha256 ${hash.slice(0, 12)} != ${stamp.binaryHash.slice(0, 12)}): rebuilding`);
      return null;
    }
    return result(stamp, true);
  };
  const hit = await reuse();
  if (hit) {
    log(`qemu: cached build ${key} (${source.version}, patches ${patchHash.slice(0, 12)}, libpcow ${nativeHash.slice(0, 12)}): ${binary}`);
    return hit;
  }
  return withCacheLock(`${dir}.lock`, 'qemu: another build of this key', pre, async () => {
    const again = await reuse();
    if (again) return again;
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await writeFile(logFile, `pcow QEMU build ${key}\nsource: ${source.version}\npatches: ${patches.map((p) => path.basename(p)).join(' ')} (sha256 ${patchHash})\nlibpcow: ${nativeHash}\nconfigure: ${configureFlags.join(' ')}\n`);
    const o: Ctx = { name: 'qemu', signal: opts.signal, log, steps, logFile };
    const src = path.join(dir, 'src');
    const buildDir = path.join(src, 'build');
    const timeoutMs = opts.timeoutMs ?? 30 * 60_000;
    log(`qemu: building ${key} from ${source.version} (log: ${logFile})`);
    await source.unpack(src);
    for (const p of patches) {
      log(`qemu: applying ${path.basename(p)}`);
      await logged(o, `patch ${path.basename(p)}`, 'patch', ['-p1', '--batch', '--forward', '-i', p], { cwd: src });
    }
    await mkdir(buildDir, { recursive: true });
    log(`qemu: configure ${configureFlags.join(' ')}`);
    await logged(o, 'configure', path.join(src, 'configure'), [`--prefix=${prefix}`, `--pcow=${nativeDir}`, ...configureFlags], { cwd: buildDir, timeoutMs: 10 * 60_000 });
    const jobs = opts.jobs ?? availableParallelism();
    const t0 = Date.now();
    log(`qemu: ninja -j${jobs} (output: ${path.join(dir, 'ninja.log')})`);
    await ninjaBuild(o, buildDir, [`-j${jobs}`, QEMU_BIN], timeoutMs, 'ninja');
    log(`qemu: built in ${((Date.now() - t0) / 1000).toFixed(0)} s; installing into ${prefix}`);
    // Only the emulator: `ninja install` would first build every default target (~960 more,
    // mostly tests). Firmware comes from the compiled-in --firmwarepath; nothing else is read
    // from the data directory by a -display none guest.
    await mkdir(path.dirname(binary), { recursive: true });
    await logged(o, 'install', 'install', ['-m', '0755', path.join(buildDir, QEMU_BIN), binary]);
    if (!opts.keepBuildTree) await rm(src, { recursive: true, force: true });
    const stamp: Stamp = {
      key,
      sourceVersion: source.version,
      patchHash,
      nativeHash,
      configureFlags,
      binaryHash: await fileSha256(binary),
      buildSeconds: (Date.now() - started) / 1000,
      builtAt: new Date().toISOString(),
    };
    await writeFile(stampFile, JSON.stringify(stamp, null, 2) + '\n');
    steps.push(step('build-qemu', `${binary} (${source.version}, ${stamp.buildSeconds.toFixed(0)} s)`));
    log(`qemu: ready in ${stamp.buildSeconds.toFixed(0)} s: ${binary}`);
    return result(stamp, false);
  });
}
