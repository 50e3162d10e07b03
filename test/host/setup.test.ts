// Host setup and teardown on this machine: emulated PM on tmpfs, a sysctl applied and restored,
// and the refusals (fsdax without a device, a non-tmpfs directory, a foreign directory, ...).
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { HostSetupError, PM_MARKER, mkdirTracked, setupHost, type HostConfig } from '../../src/host/setup.ts';

const root = process.getuid?.() === 0;
const TMPFS_MAGIC = 0x01021994;
const maxMapCount = (): string => readFileSync('/proc/sys/vm/max_map_count', 'utf8').trim();
const cleanup: string[] = [];
afterEach(() => {
  for (const p of cleanup.splice(0)) rmSync(p, { recursive: true, force: true });
});

function emulated(dir?: string, sysctls: HostConfig['sysctls'] = {}): HostConfig {
  return { pm: dir === undefined ? { kind: 'emulated' } : { kind: 'emulated', dir }, sysctls };
}

async function setupError(config: HostConfig, name = `t-${process.pid}`, root?: boolean): Promise<HostSetupError> {
  const e = await setupHost(config, name, { root }).then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(HostSetupError);
  return e as HostSetupError;
}

describe('setupHost: emulated PM', () => {
  it.skipIf(!root)('makes the default dir on tmpfs, raises vm.max_map_count, and teardown undoes both', async () => {
    const name = `hosttest-${process.pid}`;
    const dir = `/dev/shm/pcow-${name}`;
    cleanup.push(dir);
    const before = maxMapCount();
    const want = String(Number(before) + 4096);
    const s = await setupHost(emulated(undefined, { 'vm.max_map_count': Number(want) }), name);
    try {
      expect(s.pm).toEqual({ kind: 'emulated', path: dir });
      expect(existsSync(join(dir, PM_MARKER))).toBe(true);
      expect(statfsSync(dir).type).toBe(TMPFS_MAGIC);
      expect(maxMapCount()).toBe(want);
      expect(s.steps.map((x) => x.action)).toEqual(['sysctl', 'mkdir', 'pm']);
      expect(s.steps[0]!.detail).toBe(`vm.max_map_count: ${before} → ${want}`);
      for (const st of s.steps) {
        expect(st.ok).toBe(true);
        expect(Number.isNaN(Date.parse(st.at))).toBe(false);
      }
      writeFileSync(join(dir, 'image.pcow'), 'x');
    } finally {
      const down = await s.teardown();
      expect(down.map((x) => x.detail)).toEqual([`removed ${dir}`, `vm.max_map_count: restored ${want} → ${before}`]);
    }
    expect(maxMapCount()).toBe(before);
    expect(existsSync(dir)).toBe(false);
    expect(await s.teardown()).toEqual([]);
  });

  it('empties the leftovers of an earlier run in a directory it made, and removes it at teardown', async () => {
    const dir = mkdtempSync('/dev/shm/pcow-hosttest-');
    cleanup.push(dir);
    writeFileSync(join(dir, PM_MARKER), '');
    writeFileSync(join(dir, 'old.img'), 'old');
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'x'), 'x');
    const lines: string[] = [];
    const s = await setupHost(emulated(dir), 'x', { log: (l) => lines.push(l) });
    expect(readdirSync(dir)).toEqual([PM_MARKER]);
    expect(lines[0]).toBe(`pm: reused ${dir}, removed 2 leftover entries of an earlier run`);
    expect(s.steps.find((x) => x.action === 'pm')!.detail).toBe(`reused ${dir}, removed 2 leftover entries of an earlier run`);
    await s.teardown();
    expect(existsSync(dir)).toBe(false);
  });

  it('keeps an empty directory the user made, emptying it at teardown', async () => {
    const dir = mkdtempSync('/dev/shm/pcow-hosttest-');
    cleanup.push(dir);
    const s = await setupHost(emulated(dir), 'x');
    writeFileSync(join(dir, 'img'), 'y');
    const down = await s.teardown();
    expect(down[0]!.detail).toBe(`emptied ${dir} (kept: it existed before this run)`);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('teardown removes every directory setup created, parents included, deepest first', async () => {
    const top = `/dev/shm/pcow-hosttest-parents-${process.pid}`;
    cleanup.push(top);
    const dir = join(top, 'a', 'b');
    const s = await setupHost(emulated(dir), 'x');
    expect(s.steps.find((x) => x.action === 'mkdir')!.detail).toBe(`created ${dir} (and its parents ${join(top, 'a')}, ${top})`);
    writeFileSync(join(dir, 'img'), 'y');
    const down = await s.teardown();
    expect(down[0]!.detail).toBe(`removed ${dir}; parents it created: removed ${join(top, 'a')}, ${top}`);
    expect(existsSync(top)).toBe(false);
    expect(existsSync('/dev/shm')).toBe(true);
  });

  it('teardown keeps a parent it created that now holds something else, and what is in it', async () => {
    const top = `/dev/shm/pcow-hosttest-shared-${process.pid}`;
    cleanup.push(top);
    const dir = join(top, 'pm');
    const s = await setupHost(emulated(dir), 'x');
    writeFileSync(join(top, 'other'), 'not ours');
    const down = await s.teardown();
    expect(down[0]!.detail).toBe(`removed ${dir}; parents it created: kept ${top} (not empty: something else is in it)`);
    expect(existsSync(dir)).toBe(false);
    expect(readFileSync(join(top, 'other'), 'utf8')).toBe('not ours');
  });

  it('mkdirTracked names exactly the directories it created, deepest first', async () => {
    const base = mkdtempSync(join(tmpdir(), 'pcow-hosttest-'));
    cleanup.push(base);
    expect(await mkdirTracked(base)).toEqual([]);
    expect(await mkdirTracked(join(base, 'x', 'y', 'z'))).toEqual([join(base, 'x', 'y', 'z'), join(base, 'x', 'y'), join(base, 'x')]);
    expect(await mkdirTracked(join(base, 'x', 'w'))).toEqual([join(base, 'x', 'w')]);
  });

  it('refuses a directory that is not on tmpfs, naming the key and the file system', async (ctx) => {
    const parent = mkdtempSync(join(tmpdir(), 'pcow-hosttest-'));
    cleanup.push(parent);
    if (statfsSync(parent).type === TMPFS_MAGIC) ctx.skip('the temp dir is on tmpfs here: nothing to refuse');
    const dir = join(parent, 'pm');
    const e = await setupError(emulated(dir));
    expect(e.message).toMatch(new RegExp(`^host\\.pm\\.dir: ${dir} is on \\w+ \\(mounted at /[^)]*\\), not tmpfs; emulated PM must live in DRAM`));
    expect(existsSync(dir)).toBe(false); // nothing was created on the wrong file system
    expect(e.steps.at(-1)).toMatchObject({ action: 'error', ok: false });
  });

  it('refuses a non-empty directory it did not make, and a mount point', async () => {
    const dir = mkdtempSync('/dev/shm/pcow-hosttest-');
    cleanup.push(dir);
    writeFileSync(join(dir, 'precious'), 'keep me');
    const e = await setupError(emulated(dir));
    expect(e.message).toBe(`host.pm.dir: ${dir} exists, is not empty and was not made by pcow (no ${PM_MARKER} in it); empty it or choose another directory`);
    expect(readFileSync(join(dir, 'precious'), 'utf8')).toBe('keep me');

    const m = await setupError(emulated('/dev/shm'));
    expect(m.message).toBe('host.pm.dir: /dev/shm is a mount point; use a directory inside it, e.g. /dev/shm/pcow');
  });

  it('refuses a relative directory', async () => {
    const e = await setupError(emulated('shm/pm'));
    expect(e.message).toBe('host.pm.dir: shm/pm is not an absolute path');
  });
});

describe('setupHost: sysctls', () => {
  it('without root, fails with the exact sysctl -w command and changes nothing', async () => {
    const before = maxMapCount();
    const want = Number(before) + 1;
    const e = await setupError(emulated(undefined, { 'vm.max_map_count': want }), 'x', false);
    expect(e.message).toBe(`host.sysctls.vm.max_map_count: changing ${before} → ${want} needs root; run: sysctl -w vm.max_map_count=${want}`);
    expect(maxMapCount()).toBe(before);
  });

  it('a value already in place is a no-op step and is not "restored"', async () => {
    const dir = mkdtempSync('/dev/shm/pcow-hosttest-');
    cleanup.push(dir);
    const s = await setupHost(emulated(dir, { 'vm.max_map_count': maxMapCount() }), 'x', { root: false });
    expect(s.steps[0]!.detail).toBe(`vm.max_map_count is already ${maxMapCount()}`);
    const down = await s.teardown();
    expect(down.some((x) => x.action === 'sysctl')).toBe(false);
  });

  it('names an unknown sysctl', async () => {
    const e = await setupError(emulated(undefined, { 'vm.no_such_knob': 1 }));
    expect(e.message).toBe('host.sysctls.vm.no_such_knob: no such sysctl on this kernel (/proc/sys/vm/no_such_knob does not exist)');
  });

  it.skipIf(!root)('restores the sysctls it applied when a later step fails', async () => {
    const before = maxMapCount();
    const e = await setupError(emulated('/dev/shm', { 'vm.max_map_count': Number(before) + 8192 }));
    expect(e.message).toMatch(/is a mount point/);
    expect(maxMapCount()).toBe(before);
    expect(e.steps.map((x) => x.action)).toEqual(['sysctl', 'error', 'sysctl']);
    expect(e.steps[2]!.detail).toBe(`vm.max_map_count: restored ${Number(before) + 8192} → ${before}`);
  });
});

describe('setupHost: fsdax', () => {
  it('fails clearly when the device does not exist', async (ctx) => {
    const e = await setupError({ pm: { kind: 'fsdax', device: '/dev/pmem0', mount: '/mnt/pcow-pm' }, sysctls: {} });
    const here = readdirSync('/dev').filter((n) => /^pmem\d/.test(n));
    if (here.includes('pmem0')) ctx.skip('a real pmem host: /dev/pmem0 exists');
    expect(e.message).toBe(
      here.length === 0
        ? 'host.pm.device: /dev/pmem0 does not exist (no pmem devices on this host; use pm: {kind: emulated})'
        : `host.pm.device: /dev/pmem0 does not exist (pmem devices here: ${here.map((n) => `/dev/${n}`).join(', ')})`,
    );
    expect(existsSync('/mnt/pcow-pm')).toBe(false);
  });

  it('refuses a device that is not a block device', async () => {
    const e = await setupError({ pm: { kind: 'fsdax', device: '/dev/null', mount: '/mnt/pcow-pm' }, sysctls: {} });
    expect(e.message).toBe('host.pm.device: /dev/null is not a block device (fs-dax needs a pmem block device such as /dev/pmem0)');
  });
});

describe.skipIf(!root)('setupHost: fsdax on a loop device (no DAX support)', () => {
  it('runs mkfs only when asked, reports the failed dax mount with the kernel reason, and removes the mount point it made', async (ctx) => {
    const { run } = await import('../../src/util/proc.ts');
    const work = mkdtempSync('/var/tmp/pcow-hosttest-');
    cleanup.push(work);
    const img = join(work, 'disk.img');
    writeFileSync(img, '');
    await run('truncate', ['-s', '64M', img]);
    const lo = await run('losetup', ['-f', '--show', img], { timeoutMs: 30_000 });
    if (lo.exitCode !== 0) ctx.skip(`no loop device: ${lo.stderr.trim()}`);
    const device = lo.stdout.trim();
    try {
      const mount = join(work, 'mnt');
      // A blank device without mkfs: mount fails, and the message says how to get a file system.
      const blank = await setupError({ pm: { kind: 'fsdax', device, mount }, sysctls: {} });
      expect(blank.message).toMatch(new RegExp(`^host\\.pm\\.device: mount -o dax ${device} ${mount} failed: `));
      expect(blank.message).toContain('set host.pm.mkfs: ext4 (destroys its contents)');
      expect(existsSync(mount)).toBe(false);

      // mkfs: ext4 as the YAML says; ext4 on a loop device has no DAX, so the mount is refused.
      const e = await setupError({ pm: { kind: 'fsdax', device, mount, mkfs: 'ext4' }, sysctls: {} });
      expect(e.steps.map((x) => x.action)).toEqual(['mkfs', 'mkdir', 'error', 'rmdir']);
      expect(e.steps[0]!.detail).toBe(`mkfs.ext4 -F -q ${device} (host.pm.mkfs: ext4)`);
      expect(e.message).toMatch(/kernel: .*DAX unsupported by block device/);
      expect(existsSync(mount)).toBe(false);
      expect(readFileSync('/proc/mounts', 'utf8')).not.toContain(mount);
    } finally {
      await run('losetup', ['-d', device]);
    }
  });
});
