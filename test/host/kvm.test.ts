// The pieces of the boot probe that need no guest: the cpio writer (checked with real cpio),
// the static-ELF check, the initramfs, and how serial output is read. The boots themselves are
// in probe.test.ts.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { cpioNewc } from '../../src/host/cpio.ts';
import { BUSYBOX, accelArgs, bootStage, ensureProbeInitramfs, isStaticElf, serialLines } from '../../src/host/kvm.ts';
import { run } from '../../src/util/proc.ts';

async function cpioList(archive: Buffer): Promise<string[]> {
  const r = await run('cpio', ['-t', '-v', '--quiet'], { input: archive.toString('latin1'), timeoutMs: 30_000 });
  expect(r.exitCode, r.stderr).toBe(0);
  return r.stdout.trim().split('\n');
}

describe('cpioNewc', () => {
  it('writes an archive real cpio lists, with modes, sizes, links and device nodes', async () => {
    const archive = cpioNewc([
      { kind: 'dir', path: 'bin' },
      { kind: 'file', path: 'bin/hello', data: Buffer.from('hello world\n'), mode: 0o755 },
      { kind: 'symlink', path: 'bin/hi', target: 'hello' },
      { kind: 'dir', path: 'dev' },
      { kind: 'char', path: 'dev/console', major: 5, minor: 1 },
      { kind: 'file', path: '/odd', data: Buffer.alloc(3, 0x41) },
    ]);
    expect(archive.length % 512).toBe(0);
    const lines = await cpioList(archive);
    expect(lines).toHaveLength(6);
    expect(lines[0]).toMatch(/^drwxr-xr-x .* bin$/);
    expect(lines[1]).toMatch(/^-rwxr-xr-x .* 12 .* bin\/hello$/);
    expect(lines[2]).toMatch(/^lrwxrwxrwx .* bin\/hi -> hello$/);
    expect(lines[4]).toMatch(/^crw------- .* 5,\s+1 .* dev\/console$/);
    expect(lines[5]).toMatch(/^-rw-r--r-- .* 3 .* odd$/);
    // Reproducible: the same entries give the same bytes.
    expect(cpioNewc([{ kind: 'dir', path: 'x' }]).equals(cpioNewc([{ kind: 'dir', path: 'x' }]))).toBe(true);
  });

  it('rejects paths that climb out or are empty', () => {
    expect(() => cpioNewc([{ kind: 'dir', path: '../etc' }])).toThrow(/cpio: bad path "..\/etc"/);
    expect(() => cpioNewc([{ kind: 'dir', path: '/' }])).toThrow(/cpio: bad path/);
  });
});

describe('probe initramfs', () => {
  it('holds a static busybox and an /init that prints the marker and powers off', async () => {
    const path = await ensureProbeInitramfs();
    expect(path).toMatch(/\/initramfs\/probe-[0-9a-f]{16}\.cpio\.gz$/);
    expect(await ensureProbeInitramfs()).toBe(path);
    const archive = gunzipSync(readFileSync(path));
    const lines = await cpioList(archive);
    const names = lines.map((l) => l.split(/\s+/).pop());
    expect(names).toEqual(expect.arrayContaining(['init', 'bin/busybox', 'dev/console', 'proc', 'sys']));
    expect(lines.find((l) => l.endsWith(' init'))).toMatch(/^-rwxr-xr-x/);
    const init = archive.toString('latin1');
    expect(init).toContain('echo "PCOW-PROBE-OK ${pcowmarker:-none}"');
    expect(init).toContain('/bin/busybox poweroff -f');
  });

  it('tells a static ELF from a dynamic one', () => {
    expect(isStaticElf(readFileSync(BUSYBOX))).toBe(true);
    expect(isStaticElf(readFileSync(process.execPath))).toBe(false);
    expect(() => isStaticElf(Buffer.from('#!/bin/sh\necho hi\n'.padEnd(80)))).toThrow('not an ELF file');
  });
});

describe('serial output', () => {
  // What a KVM guest on our hosts printed before hanging (escape sequences as QEMU wrote them).
  const hung = '\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\nBooting from ROM...\r\nProbing EDD (edd=off to disable)... ok\r\n\x1bc\x1b[?7l\x1b[2J';
  const ok =
    '\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\nBooting from ROM...\r\nProbing EDD (edd=off to disable)... o' +
    '\x1bc\x1b[?7l\x1b[2JPCOW-PROBE-OK 1a2b3c\r\n[    3.349347] reboot: Power down\r\n';

  it('strips escape sequences and blank lines', () => {
    expect(serialLines(hung)).toEqual(['SeaBIOS (version 1.16.2-debian-1.16.2-1)', 'Booting from ROM...', 'Probing EDD (edd=off to disable)... ok']);
    expect(serialLines(ok)).toEqual([
      'SeaBIOS (version 1.16.2-debian-1.16.2-1)',
      'Booting from ROM...',
      'Probing EDD (edd=off to disable)... o',
      'PCOW-PROBE-OK 1a2b3c',
      '[    3.349347] reboot: Power down',
    ]);
  });

  it('says where a boot stopped', () => {
    expect(bootStage([])).toMatch(/before even the firmware printed/);
    expect(bootStage(serialLines(hung))).toMatch(/after the boot loader handed over to the kernel/);
    expect(bootStage(['SeaBIOS (version 1.16.2)'])).toMatch(/in the firmware/);
    expect(bootStage(['[    0.000000] Linux version 6.1.0', '[    1.2] Kernel panic - not syncing: VFS'])).toBe('the guest kernel panicked');
    expect(bootStage(['[    0.000000] Linux version 6.1.0'])).toMatch(/\/init never reported/);
  });

  it('uses -cpu host without arch-capabilities under KVM and -cpu max under TCG', () => {
    expect(accelArgs('kvm')).toEqual(['-accel', 'kvm', '-cpu', 'host,-arch-capabilities']);
    expect(accelArgs('tcg')).toEqual(['-accel', 'tcg', '-cpu', 'max']);
  });
});
