// Host setup for a run: sysctls (old → new, restored at teardown) and the PM the backends use:
// emulated (a directory on tmpfs, i.e. DRAM, as the paper emulated PM) or fsdax (a pmem device
// mounted with -o dax; mkfs only when the YAML asks). Every step is recorded; teardown undoes
// only what setup did.
import { type Stats, constants } from 'node:fs';
import { access, lstat, mkdir, readFile, readdir, realpath, rm, rmdir, stat, statfs, writeFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import type { ExperimentConfig } from '../experiment/schema.ts';
import type { SetupStep } from '../results/types.ts';
import { failure, run } from '../util/proc.ts';
import { isRoot, step } from './install.ts';
import { type MountEntry, daxOption, mountOf, readMounts } from './mounts.ts';

export type HostConfig = ExperimentConfig['host'];

export interface HostSession {
  steps: SetupStep[];
  /** Where image files go: the emulated PM directory, or a directory on the DAX mount. */
  pm: { kind: 'emulated' | 'fsdax'; path: string; device?: string };
  /** Undo what setup did (restore sysctls, remove the PM directory, unmount). Never throws. */
  teardown(): Promise<SetupStep[]>;
}

export interface SetupOptions {
  signal?: AbortSignal;
  /** Override the root check (tests use it to see the non-root messages). */
  root?: boolean;
  /** Called with each step as it is recorded. */
  onStep?: (s: SetupStep) => void;
  /** Progress lines, one per step ("sysctl: vm.max_map_count: 65530 → 262144"). */
  log?: (line: string) => void;
}

/** Setup failed; `steps` holds what was done (and undone) before the error. */
export class HostSetupError extends Error {
  constructor(
    message: string,
    readonly steps: SetupStep[],
  ) {
    super(message);
    this.name = 'HostSetupError';
  }
}

const TMPFS_MAGIC = 0x01021994;
/** Left in every PM directory the harness makes: only such directories are ever emptied. */
export const PM_MARKER = '.pcow-pm';

export function sysctlPath(name: string): string {
  if (!/^[a-z0-9_]+(\.[a-z0-9_-]+)+$/.test(name)) throw new Error(`host.sysctls: ${JSON.stringify(name)} is not a sysctl name such as vm.max_map_count`);
  return `/proc/sys/${name.replace(/\./g, '/')}`;
}

/** Values compare as the kernel prints them: whitespace-separated fields. */
function normalize(v: string): string {
  return v.trim().split(/\s+/).join(' ');
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * `mkdir -p dir`, returning the directories it created, deepest first: the only ones teardown may
 * remove. [] when dir already existed.
 */
export async function mkdirTracked(dir: string): Promise<string[]> {
  const target = resolve(dir);
  const first = await mkdir(target, { recursive: true });
  if (first === undefined) return [];
  const top = resolve(first);
  const created: string[] = [];
  for (let d = target; ; d = dirname(d)) {
    created.push(d);
    if (d === top || dirname(d) === d) break;
  }
  return created;
}

/**
 * Remove directories this run created (deepest first) that are empty now; one that is not empty
 * any more holds something of someone else's and is kept, and so are the ones above it.
 * Returns what was removed and what was kept.
 */
export async function removeCreatedDirs(dirs: readonly string[]): Promise<{ removed: string[]; kept: string[] }> {
  const removed: string[] = [];
  const kept: string[] = [];
  for (const d of dirs) {
    if (kept.length > 0) {
      kept.push(d);
      continue;
    }
    try {
      await rmdir(d);
      removed.push(d);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') continue;
      kept.push(d);
    }
  }
  return { removed, kept };
}

/** "removed a, b; kept c (not empty: not only ours)" for teardown steps. */
function describeRemoval(r: { removed: string[]; kept: string[] }): string {
  const parts: string[] = [];
  if (r.removed.length) parts.push(`removed ${r.removed.join(', ')}`);
  if (r.kept.length) parts.push(`kept ${r.kept.join(', ')} (not empty: something else is in it)`);
  return parts.join('; ');
}

async function nearestExisting(p: string): Promise<string> {
  let cur = p;
  while (!(await exists(cur))) {
    const up = dirname(cur);
    if (up === cur) break;
    cur = up;
  }
  return realpath(cur);
}

export async function setupHost(config: HostConfig, experimentName: string, opts: SetupOptions = {}): Promise<HostSession> {
  const steps: SetupStep[] = [];
  const undo: (() => Promise<SetupStep>)[] = [];
  const root = opts.root ?? isRoot();
  const report = (s: SetupStep): void => {
    opts.onStep?.(s);
    opts.log?.(`${s.ok ? '' : 'FAILED '}${s.action}: ${s.detail}`);
  };
  const record = (s: SetupStep): SetupStep => {
    steps.push(s);
    report(s);
    return s;
  };
  const fail = (msg: string): never => {
    record(step('error', msg, false));
    throw new Error(msg);
  };
  let tornDown = false;
  const teardown = async (): Promise<SetupStep[]> => {
    if (tornDown) return [];
    tornDown = true;
    const out: SetupStep[] = [];
    for (const u of undo.reverse()) {
      try {
        out.push(await u());
      } catch (e) {
        out.push(step('teardown', `failed: ${(e as Error).message}`, false));
      }
    }
    for (const s of out) report(s);
    return out;
  };

  try {
    // It becomes a directory name (/dev/shm/pcow-<name>): the experiment schema allows no more.
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(experimentName)) fail(`name: ${JSON.stringify(experimentName)} is not a file-name stem`);
    // Sysctls first: cheap, and a missing root shows up before anything is created.
    for (const [name, value] of Object.entries(config.sysctls)) {
      const key = `host.sysctls.${name}`;
      const path = sysctlPath(name);
      let old: string;
      try {
        old = normalize(await readFile(path, 'utf8'));
      } catch {
        fail(`${key}: no such sysctl on this kernel (${path} does not exist)`);
        continue;
      }
      const want = normalize(String(value));
      if (old === want) {
        record(step('sysctl', `${name} is already ${want}`));
        continue;
      }
      if (!root) fail(`${key}: changing ${old} → ${want} needs root; run: sysctl -w ${name}=${want.includes(' ') ? `"${want}"` : want}`);
      try {
        await writeFile(path, `${want}\n`);
      } catch (e) {
        fail(`${key}: writing ${want} to ${path} failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      const now = normalize(await readFile(path, 'utf8'));
      if (now !== want) {
        await writeFile(path, `${old}\n`).catch(() => undefined);
        fail(`${key}: wrote ${want} but the kernel reads back ${now} (value out of range?)`);
      }
      record(step('sysctl', `${name}: ${old} → ${want}`));
      undo.push(async () => {
        await writeFile(path, `${old}\n`);
        return step('sysctl', `${name}: restored ${want} → ${old}`);
      });
    }

    let pm: HostSession['pm'];
    if (config.pm.kind === 'emulated') {
      const dir = config.pm.dir ?? `/dev/shm/pcow-${experimentName}`;
      const key = config.pm.dir === undefined ? `host.pm.dir (default ${dir})` : 'host.pm.dir';
      if (!isAbsolute(dir)) fail(`${key}: ${dir} is not an absolute path`);
      const resolved = resolve(dir);
      // Judge the file system before creating anything on it.
      const anchor = await nearestExisting(resolved);
      const fs = await statfs(anchor);
      if (fs.type !== TMPFS_MAGIC) {
        const m = mountOf(anchor, await readMounts());
        fail(
          `${key}: ${dir} is on ${m ? `${m.fstype} (mounted at ${m.mountpoint})` : `a file system with magic 0x${fs.type.toString(16)}`}, not tmpfs; ` +
            'emulated PM must live in DRAM: use a directory under /dev/shm or another tmpfs mount',
        );
      }
      pm = { kind: 'emulated', path: await preparePmDir(resolved, key, record, fail, undo) };
      const free = await statfs(pm.path);
      record(step('pm', `emulated PM: ${pm.path} on tmpfs, ${((free.bavail * free.bsize) / 2 ** 30).toFixed(1)} GiB free`));
    } else {
      const { device, mount, mkfs } = config.pm;
      const dev: Stats | null = await stat(device).catch(() => null);
      if (dev === null) {
        const pmems = (await readdir('/dev').catch(() => [] as string[])).filter((n) => /^pmem\d/.test(n)).map((n) => `/dev/${n}`);
        return fail(
          `host.pm.device: ${device} does not exist (${pmems.length ? `pmem devices here: ${pmems.join(', ')}` : 'no pmem devices on this host; use pm: {kind: emulated}'})`,
        );
      }
      if (!dev.isBlockDevice()) fail(`host.pm.device: ${device} is not a block device (fs-dax needs a pmem block device such as /dev/pmem0)`);
      if (!isAbsolute(mount)) fail(`host.pm.mount: ${mount} is not an absolute path`);
      const devReal = await realpath(device);
      let mounts = await readMounts();
      const sameDev = async (m: MountEntry): Promise<boolean> => m.device === device || m.device === devReal || (await realpath(m.device).catch(() => m.device)) === devReal;
      const atMount = mounts.filter((m) => m.mountpoint === mount).pop();
      const devMounts: MountEntry[] = [];
      for (const m of mounts) if (await sameDev(m)) devMounts.push(m);
      if (atMount && !(await sameDev(atMount))) fail(`host.pm.mount: ${mount} already has ${atMount.device} (${atMount.fstype}) mounted; pick another mount point or unmount it`);
      const elsewhere = devMounts.find((m) => m.mountpoint !== mount);
      if (elsewhere) fail(`host.pm.device: ${device} is already mounted at ${elsewhere.mountpoint}; unmount it or set host.pm.mount: ${elsewhere.mountpoint}`);
      if (atMount) {
        if (!daxOption(atMount)) fail(`host.pm.mount: ${mount} is mounted from ${device} without dax (options ${atMount.options.join(',')}); run: umount ${mount} (setup then mounts it with -o dax)`);
        if (mkfs) fail(`host.pm.mkfs: ${device} is mounted at ${mount}; refusing to run mkfs.${mkfs} on a mounted device`);
        record(step('mount', `${device} is already mounted at ${mount} with ${daxOption(atMount)}; left as it is`));
      } else {
        if (!root) fail(`host.pm: mounting ${device} needs root; run as root, or: mkdir -p ${mount} && mount -o dax ${device} ${mount}`);
        if (mkfs) {
          const argv = mkfs === 'ext4' ? ['mkfs.ext4', '-F', '-q', device] : ['mkfs.xfs', '-f', '-q', '-m', 'reflink=0', device];
          const r = await run(argv[0]!, argv.slice(1), { signal: opts.signal, timeoutMs: 10 * 60_000 });
          const why = failure(r);
          if (why) fail(`host.pm.mkfs: ${why}`);
          record(step('mkfs', `${argv.join(' ')} (host.pm.mkfs: ${mkfs})`));
        }
        if (!(await exists(mount))) {
          const made = await mkdirTracked(mount);
          record(step('mkdir', `created mount point ${mount}${made.length > 1 ? ` (and ${made.slice(1).join(', ')})` : ''}`));
          undo.push(async () => {
            const r = await removeCreatedDirs(made);
            return step('rmdir', `mount point: ${describeRemoval(r)}`);
          });
        }
        const r = await run('mount', ['-o', 'dax', device, mount], { signal: opts.signal, timeoutMs: 120_000 });
        const why = failure(r);
        if (why) {
          const kmsg = await kernelSays(device);
          fail(
            `host.pm.device: mount -o dax ${device} ${mount} failed: ${why}` +
              (kmsg ? `\nkernel: ${kmsg}` : '') +
              (mkfs ? '' : '\nif the device has no file system yet, set host.pm.mkfs: ext4 (destroys its contents)') +
              '\n"DAX unsupported by block device" means the namespace is not in fsdax mode: ndctl create-namespace -f -e <namespace> --mode=fsdax',
          );
        }
        const mounted = async (): Promise<SetupStep> => {
          const u = await run('umount', [mount], { timeoutMs: 120_000 });
          const w = failure(u);
          return step('umount', w ?? `unmounted ${device} from ${mount}`, w === null);
        };
        undo.push(mounted);
        mounts = await readMounts();
        const now = mounts.filter((m) => m.mountpoint === mount).pop();
        const dax = now ? daxOption(now) : null;
        if (!dax || dax === 'dax=inode') {
          fail(`host.pm.device: ${device} mounted at ${mount} but /proc/mounts shows no dax option (${now?.options.join(',') ?? 'not listed'}): the device does not support DAX`);
        }
        record(step('mount', `mount -o dax ${device} ${mount}: ${now!.fstype}, ${dax}`));
      }
      pm = { kind: 'fsdax', path: await preparePmDir(join(mount, `pcow-${experimentName}`), 'host.pm.mount', record, fail, undo), device };
    }
    return { steps, pm, teardown };
  } catch (e) {
    const undone = await teardown();
    steps.push(...undone);
    throw new HostSetupError((e as Error).message, steps);
  }
}

/** The kernel's last log line about a device (why a mount failed), or null. */
async function kernelSays(device: string): Promise<string | null> {
  const r = await run('dmesg', [], { timeoutMs: 5000 }).catch(() => null);
  if (!r || r.exitCode !== 0) return null;
  const name = basename(device);
  const hits = r.stdout.split('\n').filter((l) => l.includes(`(${name})`) || l.includes(`${name}:`));
  return hits.length ? hits[hits.length - 1]!.replace(/^\[[\s\d.]+\]\s*/, '').trim() : null;
}

/**
 * Create (or take back) the PM directory and empty what an earlier run left. A directory is
 * only emptied if it carries our marker or is empty; a mount point is never used directly.
 */
async function preparePmDir(
  dir: string,
  key: string,
  record: (s: SetupStep) => SetupStep,
  fail: (msg: string) => never,
  undo: (() => Promise<SetupStep>)[],
): Promise<string> {
  let created = false;
  // Parents this run made for the directory (deepest first), removed after it at teardown.
  let parents: string[] = [];
  if (await exists(dir)) {
    const s = await lstat(dir);
    if (!s.isDirectory()) fail(`${key}: ${dir} exists and is not a directory`);
    const real = await realpath(dir);
    const mounts = await readMounts();
    if (mounts.some((m) => m.mountpoint === real)) fail(`${key}: ${dir} is a mount point; use a directory inside it, e.g. ${join(dir, 'pcow')}`);
    const entries = await readdir(dir);
    const ours = entries.includes(PM_MARKER);
    if (entries.length > 0 && !ours) {
      fail(`${key}: ${dir} exists, is not empty and was not made by pcow (no ${PM_MARKER} in it); empty it or choose another directory`);
    }
    const leftovers = entries.filter((e) => e !== PM_MARKER);
    for (const e of leftovers) await rm(join(dir, e), { recursive: true, force: true });
    record(step('pm', `reused ${dir}${leftovers.length ? `, removed ${leftovers.length} leftover entr${leftovers.length === 1 ? 'y' : 'ies'} of an earlier run` : ''}`));
    // A directory an earlier pcow run made is ours to remove; a user's empty one is kept.
    created = ours;
  } else {
    const made = await mkdirTracked(dir);
    created = true;
    parents = made.slice(1);
    record(step('mkdir', `created ${dir}${parents.length ? ` (and its parents ${parents.join(', ')})` : ''}`));
  }
  await access(dir, constants.W_OK);
  await writeFile(join(dir, PM_MARKER), 'made by the pcow harness; emptied and removed by it\n');
  undo.push(async () => {
    if (created) {
      await rm(dir, { recursive: true, force: true });
      if (parents.length === 0) return step('pm', `removed ${dir}`);
      const r = await removeCreatedDirs(parents);
      return step('pm', `removed ${dir}; parents it created: ${describeRemoval(r)}`);
    }
    for (const e of await readdir(dir)) await rm(join(dir, e), { recursive: true, force: true });
    return step('pm', `emptied ${dir} (kept: it existed before this run)`);
  });
  return dir;
}
