// Build stage for the patched QEMU (native/qemu/*.patch: memory-backend-file format=pcow).
// Source: Debian's QEMU (`apt-get source qemu`, adding a deb-src entry as root if none exists),
// or a QEMU source directory or tarball named by the experiment (build.qemu.source). The patches
// are applied to a fresh copy, a minimal x86_64-softmmu is configured against the built libpcow
// (make -C native), built with ninja and installed into the cache under a key of everything that
// decides the binary: source version, patch hash, libpcow source hash, configure flags. A second
// call with the same inputs finds the installed binary and returns in well under a second.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { cacheDir, withCacheLock } from '../host/cache.ts';
import { ensureCommands, isRoot, step, type CommandRequirement } from '../host/install.ts';
import type { SetupStep } from '../results/types.ts';
import { failure, run, type RunOptions } from '../util/proc.ts';
import { buildNative, hashFiles, nativeDir, nativeLibHash } from './native.ts';

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

export async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

const aptEnv = { DEBIAN_FRONTEND: 'noninteractive', APT_LISTCHANGES_FRONTEND: 'none' };

/** The Debian source package's version apt would fetch, from `apt-get source --print-uris`. */
function dscFromPrintUris(out: string): { url: string; file: string; version: string } | null {
  // "'http://.../qemu_7.2%2bdfsg-7.dsc' qemu_7.2+dfsg-7.dsc 5521 SHA256:...": the second field is decoded.
  const m = /^'([^']+\.dsc)'\s+(qemu_([^_\s]+)\.dsc)\s/m.exec(out);
  return m ? { url: m[1]!, file: m[2]!, version: m[3]! } : null;
}

/** deb-src entries mirroring the deb ones (deb822 .sources files or one-line lists). */
export function debSrcFrom(sources: string): string | null {
  const deb822 = sources
    .split(/\n\s*\n/)
    .filter((stanza) => /^Types:\s*.*\bdeb\b/m.test(stanza))
    .map((stanza) => stanza.replace(/^Types:.*$/m, 'Types: deb-src').trim());
  if (deb822.length > 0) return deb822.join('\n\n') + '\n';
  const lines = sources.split('\n').filter((l) => /^deb\s/.test(l.trim()));
  return lines.length > 0 ? lines.map((l) => l.trim().replace(/^deb\s/, 'deb-src ')).join('\n') + '\n' : null;
}

const DEB_SRC_FILE = '/etc/apt/sources.list.d/pcow-deb-src.sources';

/** Make `apt-get source qemu` possible: add deb-src entries (as root) and apt-get update. */
async function ensureDebSrc(o: Ctx): Promise<{ url: string; file: string; version: string }> {
  const probe = async () => {
    const r = await run('apt-get', ['source', '--print-uris', 'qemu'], { env: aptEnv, signal: o.signal, timeoutMs: 120_000 });
    return r.exitCode === 0 ? dscFromPrintUris(r.stdout) : null;
  };
  let dsc = await probe();
  if (dsc) return dsc;
  const candidates = ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list'];
  let text: string | null = null;
  let from = '';
  for (const c of candidates) {
    if (!existsSync(c)) continue;
    text = debSrcFrom(await readFile(c, 'utf8'));
    if (text) {
      from = c;
      break;
    }
  }
  const ext = text && !text.startsWith('Types:') ? '.list' : '.sources';
  const target = DEB_SRC_FILE.replace(/\.sources$/, ext);
  if (!isRoot() || !text) {
    throw new Error(
      `apt-get source qemu needs a deb-src entry, and ${!text ? `none could be derived from ${candidates.join(' or ')}` : 'the harness is not root'}. ` +
        `As root, add one mirroring your deb entries (e.g. copy /etc/apt/sources.list.d/debian.sources to ${DEB_SRC_FILE} with "Types: deb-src"), then run:\n  apt-get update\n` +
        `or name a QEMU source directory or tarball in the experiment (build.qemu.source).`,
    );
  }
  await writeFile(target, `# Added by the pcow harness (src/build/qemu.ts) from ${from}: apt-get source qemu\n${text}`);
  o.steps.push(step('qemu-source', `added deb-src entries to ${target} (from ${from})`));
  o.log(`qemu: added deb-src entries to ${target}; apt-get update`);
  const u = await run('apt-get', ['update'], { env: aptEnv, signal: o.signal, timeoutMs: 10 * 60_000 });
  const why = failure(u);
  o.steps.push(step('qemu-source', `apt-get update: ${why ?? 'ok'}`, why === null));
  if (why) throw new Error(`apt-get update after adding ${target}: ${why}`);
  dsc = await probe();
  if (!dsc) throw new Error(`apt-get source --print-uris qemu found no qemu source package even after adding ${target}`);
  return dsc;
}

/** A cached build in progress (this QEMU build, the guest image's): shared by logged and the cache lock. */
export interface Ctx {
  signal?: AbortSignal;
  log: (line: string) => void;
  steps: SetupStep[];
  logFile: string;
  /** The build's name in messages (default "qemu"). */
  stage?: string;
}

/** Run a step, its output appended to the build log; throws with the command and the build log's path. */
export async function logged(o: Ctx, what: string, cmd: string, args: string[], opts: RunOptions = {}): Promise<void> {
  await appendFile(o.logFile, `\n=== ${what}: ${[cmd, ...args].join(' ')}${opts.cwd ? ` (in ${opts.cwd})` : ''}\n`);
  const r = await run(cmd, args, { signal: o.signal, ...opts });
  await appendFile(o.logFile, r.stdout + r.stderr);
  const why = failure(r);
  if (why) throw new Error(`${o.stage ?? 'qemu'} build: ${what} failed: ${why}\n(full log: ${o.logFile})`);
}

interface Source {
  version: string;
  /** Unpack/copy the pristine source into dest (which must not exist). */
  unpack: (dest: string) => Promise<void>;
}

async function readVersionFile(dir: string): Promise<string> {
  const v = existsSync(path.join(dir, 'VERSION')) ? (await readFile(path.join(dir, 'VERSION'), 'utf8')).trim() : 'unknown';
  const cl = path.join(dir, 'debian', 'changelog');
  if (existsSync(cl)) {
    const first = (await readFile(cl, 'utf8')).split('\n')[0] ?? '';
    const m = /\(([^)]+)\)/.exec(first);
    if (m) return `${v}, debian ${m[1]}`;
  }
  return v;
}

async function resolveSource(o: Ctx, source: string | undefined): Promise<Source> {
  if (source !== undefined) {
    const abs = path.resolve(source);
    const st = await stat(abs).catch(() => null);
    if (!st) throw new Error(`build.qemu.source: ${abs} does not exist (expected a QEMU source directory or tarball)`);
    if (st.isDirectory()) {
      if (!existsSync(path.join(abs, 'configure')) || !existsSync(path.join(abs, 'backends', 'hostmem-file.c'))) {
        throw new Error(`build.qemu.source: ${abs} is not a QEMU source tree (no configure or backends/hostmem-file.c)`);
      }
      return {
        version: `dir:${abs} (VERSION ${await readVersionFile(abs)})`,
        unpack: async (dest) => {
          await logged(o, 'copy source', 'cp', ['-a', '--', abs, dest]);
          await rm(path.join(dest, 'build'), { recursive: true, force: true });
        },
      };
    }
    if (!/\.tar(\.(xz|gz|bz2|zst))?$|\.tgz$/.test(abs)) throw new Error(`build.qemu.source: ${abs} is neither a directory nor a .tar[.xz|.gz|.bz2] tarball`);
    const sum = await fileSha256(abs);
    return {
      version: `tarball:${path.basename(abs)} sha256:${sum.slice(0, 16)}`,
      unpack: async (dest) => {
        await mkdir(dest, { recursive: true });
        await logged(o, 'unpack tarball', 'tar', ['-xf', abs, '-C', dest, '--strip-components=1']);
      },
    };
  }
  const dsc = await ensureDebSrc(o);
  const srcCache = cacheDir('qemu-src', dsc.version);
  return {
    version: `debian:${dsc.version}`,
    unpack: async (dest) => {
      if (!existsSync(path.join(srcCache, dsc.file))) {
        // Unpinned (the file name drops the epoch, "1:"): the same candidate --print-uris named.
        o.log(`qemu: apt-get source --download-only qemu (${dsc.file}, into ${srcCache})`);
        await logged(o, 'apt-get source', 'apt-get', ['source', '--download-only', 'qemu'], { cwd: srcCache, env: aptEnv, timeoutMs: 10 * 60_000 });
        if (!existsSync(path.join(srcCache, dsc.file))) throw new Error(`apt-get source qemu did not download ${dsc.file} into ${srcCache} (log: ${o.logFile})`);
      }
      // dpkg-source applies Debian's own patches (as the Debian package is built).
      await logged(o, 'dpkg-source -x', 'dpkg-source', ['-x', path.join(srcCache, dsc.file), dest]);
    },
  };
}

export function qemuCacheKey(parts: { sourceVersion: string; patchHash: string; nativeHash: string; configureFlags: readonly string[] }): string {
  const h = createHash('sha256');
  h.update(JSON.stringify([parts.sourceVersion, parts.patchHash, parts.nativeHash, parts.configureFlags]));
  return h.digest('hex').slice(0, 16);
}

export async function readStamp<T = Stamp>(file: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch {
    return null;
  }
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
  const pre: Ctx = { signal: opts.signal, log, steps, logFile: tmpLog };
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
    const stamp = await readStamp(stampFile);
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
    const o: Ctx = { signal: opts.signal, log, steps, logFile };
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
