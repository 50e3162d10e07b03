// Build stage for "redis+pmem-AOF (pcow's patch to Debian redis 7.0), not Intel pmem-redis":
// Debian bookworm's Redis (`apt-get source redis`, Debian's own patches applied by dpkg-source)
// or a Redis source directory/tarball, plus native/redis/*.patch (the INCR AOF mapped with PMDK's
// libpmem and persisted by cache-line flush + fence: native/redis/README.md), built with make and
// installed into the cache under a key of everything that decides the binaries: source version,
// patch hash, make flags and the versions of the -dev packages linked in. A second call with
// the same inputs finds the installed binaries and returns in about a second.
//
// Linking: dynamic, like Debian's redis-server. Beyond libc/libm the binary needs
// libpmem.so.1 (libpmem1) and libjemalloc.so.2 (libjemalloc2): the Debian guest image installs
// libpmem1 and redis-server (which depends on libjemalloc2), so the binary runs there as built.
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
import { hashFiles, nativeDir } from './native.ts';

/** What this build is, in every result and report that names it. */
export const REDIS_PMEM_LABEL = "redis+pmem-AOF (pcow's patch to Debian redis 7.0), not Intel pmem-redis";

export const redisPatchDir = path.join(nativeDir, 'redis');

/** Debian packages the build needs, as files/commands (the -dev ones are also in the cache key). */
export const REDIS_BUILD_DEPS: CommandRequirement[] = [
  { command: 'gcc', debianPackage: 'gcc' },
  { command: 'make', debianPackage: 'make' },
  { command: 'patch', debianPackage: 'patch' },
  { command: 'pkg-config', debianPackage: 'pkg-config' },
  { command: 'dpkg-source', debianPackage: 'dpkg-dev' },
  { command: 'readelf', debianPackage: 'binutils' },
  { command: '/usr/include/libpmem.h', debianPackage: 'libpmem-dev' },
  { command: '/usr/include/jemalloc/jemalloc.h', debianPackage: 'libjemalloc-dev' },
];

/** Packages whose version goes into the cache key (what is linked in). */
const LINKED_DEV_PACKAGES = ['libpmem-dev', 'libjemalloc-dev', 'libc6-dev'];

/**
 * make flags that shape the binaries (part of the cache key). Debian's allocator (the system
 * jemalloc, as Debian's package builds it); no TLS and no systemd (the guests need neither, and
 * each would add a library the guest must have). Optimization: upstream's default (-O2).
 */
export const REDIS_MAKE_FLAGS: readonly string[] = ['USE_SYSTEM_JEMALLOC=yes', 'USE_JEMALLOC=yes', 'MALLOC=jemalloc', 'BUILD_TLS=no', 'USE_SYSTEMD=no'];

/** The dynamic libraries the binaries may need: those the Debian guest image installs. */
export const REDIS_ALLOWED_NEEDED: readonly string[] = ['libc.so.6', 'libm.so.6', 'libpmem.so.1', 'libjemalloc.so.2', 'libdl.so.2', 'libpthread.so.0', 'ld-linux-x86-64.so.2'];

const BINARIES = ['redis-server', 'redis-cli', 'redis-benchmark', 'redis-check-aof'] as const;

export interface RedisBuildOptions {
  /** A Redis source directory or tarball; default: `apt-get source redis` (Debian bookworm). */
  source?: string;
  /** make -j (default: number of CPUs). */
  jobs?: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
  /** Keep the build tree after install (default: removed, only the installed binaries stay). */
  keepBuildTree?: boolean;
  /** Bound of the whole build (default 20 min). */
  timeoutMs?: number;
}

export interface RedisBuild {
  label: string;
  /** Installed binaries (absolute paths). */
  server: string;
  cli: string;
  benchmark: string;
  checkAof: string;
  binDir: string;
  /** "debian:5:7.0.15-1~deb12u10", "dir:/src/redis (7.0.15)", "tarball:<name> sha256:<16>" */
  sourceVersion: string;
  /** sha256 over native/redis/*.patch (names and contents). */
  patchHash: string;
  patches: string[];
  /** sha256 of the installed redis-server. */
  binaryHash: string;
  /** `redis-server --version`. */
  version: string;
  makeFlags: string[];
  /** Versions of the -dev packages linked in. */
  linked: Record<string, string>;
  /** DT_NEEDED of redis-server. */
  needed: string[];
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
  makeFlags: string[];
  linked: Record<string, string>;
  binaryHash: string;
  version: string;
  needed: string[];
  buildSeconds: number;
  builtAt: string;
}

export async function redisPatches(): Promise<string[]> {
  if (!existsSync(redisPatchDir)) throw new Error(`${redisPatchDir} is missing: no Redis patch series to apply`);
  const files = (await readdir(redisPatchDir)).filter((f) => /^\d{4}-.*\.patch$/.test(f)).sort();
  if (files.length === 0) throw new Error(`${redisPatchDir} has no NNNN-*.patch files`);
  return files.map((f) => path.join(redisPatchDir, f));
}

export async function redisPatchHash(patches?: string[]): Promise<string> {
  return hashFiles(patches ?? (await redisPatches()), redisPatchDir);
}

export function redisCacheKey(parts: { sourceVersion: string; patchHash: string; makeFlags: readonly string[]; linked: Record<string, string> }): string {
  const h = createHash('sha256');
  const linked = Object.keys(parts.linked)
    .sort()
    .map((k) => [k, parts.linked[k]]);
  h.update(JSON.stringify([parts.sourceVersion, parts.patchHash, parts.makeFlags, linked]));
  return h.digest('hex').slice(0, 16);
}

/** The DT_NEEDED entries of `readelf -d` output. */
export function neededFromReadelf(out: string): string[] {
  return [...out.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!);
}

async function linkedVersions(signal?: AbortSignal): Promise<Record<string, string>> {
  const r = await run('dpkg-query', ['-W', '-f', '${Package} ${Version}\\n', ...LINKED_DEV_PACKAGES], { signal, timeoutMs: 30_000 });
  const out: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const [pkg, version] = line.trim().split(/\s+/);
    if (pkg && version) out[pkg] = version;
  }
  for (const p of LINKED_DEV_PACKAGES) if (!out[p]) throw new Error(`redis build: ${p} is not installed (dpkg-query: ${r.stderr.trim() || 'no version'})`);
  return out;
}

async function redisVersionOf(dir: string): Promise<string> {
  const vh = path.join(dir, 'src', 'version.h');
  const m = existsSync(vh) ? /REDIS_VERSION "([^"]+)"/.exec(await readFile(vh, 'utf8')) : null;
  const deb = await debianChangelogVersion(dir);
  return `${m ? m[1] : 'unknown'}${deb ? `, debian ${deb}` : ''}`;
}

async function resolveSource(o: BuildCtx, source: string | undefined): Promise<Source> {
  if (source === undefined) return debianSource(o, 'redis', 'build-redis --source');
  return localSource(
    o,
    source,
    'build-redis --source',
    'a Redis',
    (abs) => (!existsSync(path.join(abs, 'src', 'aof.c')) || !existsSync(path.join(abs, 'src', 'Makefile')) ? 'no src/aof.c or src/Makefile' : null),
    redisVersionOf,
  );
}

/** make with its output in a file, the number of compiled files reported every 15 s. */
async function makeBuild(o: BuildCtx, src: string, args: string[], timeoutMs: number): Promise<void> {
  const makeLog = path.join(path.dirname(o.logFile), 'make.log');
  await appendFile(o.logFile, `\n=== make ${args.join(' ')} (output in ${makeLog})\n`);
  let last = 0;
  const timer = setInterval(() => {
    void readFile(makeLog, 'utf8')
      .then((t) => {
        const n = (t.match(/^\s*(?:\S*CC\S*|cc|gcc)\s/gm) ?? []).length;
        if (n !== last) {
          last = n;
          o.log(`redis: make: ${n} files compiled`);
        }
      })
      .catch(() => undefined);
  }, 15_000);
  try {
    const r = await run('make', ['-C', src, ...args], { signal: o.signal, timeoutMs, stdoutFile: makeLog, stderrFile: makeLog.replace(/\.log$/, '.err') });
    const why = failure(r);
    if (why) {
      const text = (await readFile(makeLog, 'utf8').catch(() => '')) + (await readFile(makeLog.replace(/\.log$/, '.err'), 'utf8').catch(() => ''));
      const tail = text
        .split('\n')
        .filter((l) => /error|Error/.test(l))
        .slice(-8)
        .join('\n');
      throw new Error(`redis build: make failed (${why.split('\n')[0]})\n${tail}\n(full log: ${makeLog})`);
    }
  } finally {
    clearInterval(timer);
  }
}

/**
 * The patched Redis for these inputs: reused from the cache when it was built before, else
 * fetched, patched, built and installed (cold: 39-151 s on 2 shared cores).
 */
export async function ensureRedis(opts: RedisBuildOptions = {}): Promise<RedisBuild> {
  const started = Date.now();
  const log = opts.log ?? (() => undefined);
  const steps: SetupStep[] = await ensureCommands(REDIS_BUILD_DEPS, { signal: opts.signal, log });
  const patches = await redisPatches();
  const patchHash = await redisPatchHash(patches);
  const linked = await linkedVersions(opts.signal);
  const base = cacheDir('redis');
  const tmpLog = path.join(base, 'last-resolve.log');
  await writeFile(tmpLog, '');
  const pre: BuildCtx = { name: 'redis', signal: opts.signal, log, steps, logFile: tmpLog };
  const source = await resolveSource(pre, opts.source);
  const makeFlags = [...REDIS_MAKE_FLAGS];
  const key = redisCacheKey({ sourceVersion: source.version, patchHash, makeFlags, linked });
  const dir = path.join(base, key);
  const binDir = path.join(dir, 'install', 'bin');
  const server = path.join(binDir, 'redis-server');
  const stampFile = path.join(dir, 'stamp.json');
  const logFile = path.join(dir, 'build.log');
  const result = (stamp: Stamp, cached: boolean): RedisBuild => ({
    label: REDIS_PMEM_LABEL,
    server,
    cli: path.join(binDir, 'redis-cli'),
    benchmark: path.join(binDir, 'redis-benchmark'),
    checkAof: path.join(binDir, 'redis-check-aof'),
    binDir,
    sourceVersion: source.version,
    patchHash,
    patches: patches.map((p) => path.basename(p)),
    binaryHash: stamp.binaryHash,
    version: stamp.version,
    makeFlags,
    linked,
    needed: stamp.needed,
    key,
    dir,
    logFile,
    cached,
    seconds: (Date.now() - started) / 1000,
    steps,
  });
  const reuse = async (): Promise<RedisBuild | null> => {
    const stamp = await readStamp<Stamp>(stampFile);
    if (!stamp || !BINARIES.every((b) => existsSync(path.join(binDir, b)))) return null;
    const hash = await fileSha256(server);
    if (hash !== stamp.binaryHash) {
      log(`redis: ${server} differs from the one built (sha256 ${hash.slice(0, 12)} != ${stamp.binaryHash.slice(0, 12)}): rebuilding`);
      return null;
    }
    return result(stamp, true);
  };
  const hit = await reuse();
  if (hit) {
    log(`redis: cached build ${key} (${source.version}, patches ${patchHash.slice(0, 12)}): ${server}`);
    return hit;
  }
  return withCacheLock(`${dir}.lock`, 'redis: another build of this key', pre, async () => {
    const again = await reuse();
    if (again) return again;
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await writeFile(
      logFile,
      `pcow Redis build ${key} (${REDIS_PMEM_LABEL})\nsource: ${source.version}\npatches: ${patches.map((p) => path.basename(p)).join(' ')} (sha256 ${patchHash})\n` +
        `make: ${makeFlags.join(' ')}\nlinked: ${Object.entries(linked)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')}\n`,
    );
    const o: BuildCtx = { name: 'redis', signal: opts.signal, log, steps, logFile };
    const src = path.join(dir, 'src');
    const timeoutMs = opts.timeoutMs ?? 20 * 60_000;
    log(`redis: building ${key} from ${source.version} (log: ${logFile})`);
    await source.unpack(src);
    for (const p of patches) {
      log(`redis: applying ${path.basename(p)}`);
      await logged(o, `patch ${path.basename(p)}`, 'patch', ['-p1', '--batch', '--forward', '-i', p], { cwd: src });
    }
    const jobs = opts.jobs ?? availableParallelism();
    const t0 = Date.now();
    log(`redis: make -j${jobs} ${makeFlags.join(' ')} (output: ${path.join(dir, 'make.log')})`);
    await makeBuild(o, src, [`-j${jobs}`, ...makeFlags], timeoutMs);
    log(`redis: built in ${((Date.now() - t0) / 1000).toFixed(0)} s; installing into ${binDir}`);
    await mkdir(binDir, { recursive: true });
    for (const b of BINARIES) await logged(o, `install ${b}`, 'install', ['-m', '0755', path.join(src, 'src', b), path.join(binDir, b)]);
    if (!opts.keepBuildTree) await rm(src, { recursive: true, force: true });
    const v = await run(server, ['--version'], { timeoutMs: 30_000 });
    if (failure(v)) throw new Error(`redis build: ${server} --version failed: ${failure(v)}`);
    const elf = await run('readelf', ['-d', server], { timeoutMs: 30_000 });
    if (failure(elf)) throw new Error(`redis build: readelf -d ${server} failed: ${failure(elf)}`);
    const stamp: Stamp = {
      key,
      sourceVersion: source.version,
      patchHash,
      makeFlags,
      linked,
      binaryHash: await fileSha256(server),
      version: v.stdout.trim(),
      needed: neededFromReadelf(elf.stdout),
      buildSeconds: (Date.now() - started) / 1000,
      builtAt: new Date().toISOString(),
    };
    await writeFile(stampFile, JSON.stringify(stamp, null, 2) + '\n');
    steps.push(step('build-redis', `${server} (${source.version}, ${stamp.buildSeconds.toFixed(0)} s)`));
    log(`redis: ready in ${stamp.buildSeconds.toFixed(0)} s: ${binDir}`);
    return result(stamp, false);
  });
}
