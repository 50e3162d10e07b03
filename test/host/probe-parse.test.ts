// The probe's parsers and the doctor text, on real tool output captured on our Debian 12 hosts,
// and a quick probe without guest boots.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { daxOption, mountOf, parseMounts } from '../../src/host/mounts.ts';
import { type HostProbe, formatProbe, parseCpuinfo, parseToolVersion, probeHost, TOOLS } from '../../src/host/probe.ts';

describe('parseToolVersion', () => {
  it.each([
    ['qemu-system-x86_64', 'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n', '7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)'],
    ['qemu-img', 'qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n', '7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)'],
    ['qemu-system-x86_64', 'QEMU emulator version 8.2.50 (v8.2.0-1234-gdeadbeef)\n', '8.2.50 (v8.2.0-1234-gdeadbeef)'],
    ['fio', 'fio-3.33\n', '3.33'],
    ['redis-server', 'Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=c4e7f6bf175a885b\n', '7.0.15'],
    ['redis-benchmark', 'redis-benchmark 7.0.15\n', '7.0.15'],
    ['cc', 'cc (Debian 12.2.0-14+deb12u1) 12.2.0\nCopyright (C) 2022 Free Software Foundation, Inc.\n', 'gcc 12.2.0 (Debian 12.2.0-14+deb12u1)'],
    ['cc', 'Debian clang version 14.0.6\nTarget: x86_64-pc-linux-gnu\n', 'clang 14.0.6'],
    ['make', 'GNU Make 4.3\nBuilt for x86_64-pc-linux-gnu\n', '4.3'],
    ['fio', 'something unexpected\n', 'something unexpected'],
    ['make', '\n\n', null],
  ] as const)('%s: %j', (tool, out, want) => {
    expect(parseToolVersion(tool, out)).toBe(want);
  });
});

describe('parseCpuinfo', () => {
  it('reads the model and the flags of the first processor', () => {
    const text = 'processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor @ 2.50GHz\nflags\t\t: fpu clflush hypervisor clflushopt clwb avx512f\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: vmx\n';
    expect(parseCpuinfo(text)).toEqual({
      model: 'Intel(R) Xeon(R) Processor @ 2.50GHz',
      flags: { clwb: true, clflushopt: true, clflush: true, avx512f: true, vmx: false, svm: false, hypervisor: true, pku: false },
    });
  });

  it('reads this machine', () => {
    const c = parseCpuinfo(readFileSync('/proc/cpuinfo', 'utf8'));
    expect(c.model).not.toBe('unknown');
    expect(c.flags.clflush).toBe(true); // every x86-64 CPU has it
  });
});

describe('mounts', () => {
  const text = [
    '/dev/vda / ext4 rw,relatime 0 0',
    'tmpfs /dev/shm tmpfs rw,relatime,size=24683656k 0 0',
    'tmpfs /dev/shm tmpfs rw,relatime,size=100k 0 0',
    '/dev/pmem0 /mnt/pm\\040one ext4 rw,relatime,dax=always 0 0',
    '/dev/pmem1 /mnt/pm2 xfs rw,dax 0 0',
    '/dev/pmem2 /mnt/pm3 ext4 rw,dax=never 0 0',
  ].join('\n');
  const mounts = parseMounts(text);

  it('decodes escapes and finds the mount of a path (the last of equal mount points wins)', () => {
    expect(mounts[3]!.mountpoint).toBe('/mnt/pm one');
    expect(mountOf('/dev/shm/pcow-x/img', mounts)?.options).toContain('size=100k');
    expect(mountOf('/dev/shmem', mounts)?.mountpoint).toBe('/');
    expect(mountOf('/mnt/pm one/a', mounts)?.device).toBe('/dev/pmem0');
  });

  it('knows which options mean DAX', () => {
    expect(mounts.map(daxOption)).toEqual([null, null, null, 'dax=always', 'dax', null]);
  });
});

describe('probeHost without guest boots', () => {
  it('is quick and says KVM was not probed', async () => {
    const p = await probeHost({ skipKvm: true });
    expect(p.accelerator).toBe('tcg');
    expect(p.tcg.working).toBeNull();
    if (p.kvm.devicePresent && p.kvm.accessible) expect(p.kvm.verdict).toBe('present, not probed → TCG');
    expect(Object.keys(p.tools)).toEqual([...TOOLS]);
    expect(formatProbe(p)).toMatch(/KVM was not probed/);
  });
});

describe('formatProbe', () => {
  const base: HostProbe = {
    probedAt: '2026-01-01T00:00:00.000Z',
    durationMs: 31_000,
    hostname: 'h',
    root: false,
    os: 'Debian GNU/Linux 12 (bookworm)',
    kernel: { release: '6.1.0-18-amd64', version: '#1 SMP', cmdline: 'quiet' },
    cpu: { model: 'Xeon', cores: 2, flags: { clwb: false, clflushopt: false, clflush: true, avx512f: false, vmx: false, svm: false, hypervisor: true, pku: false } },
    memoryBytes: 8 * 2 ** 30,
    transparentHugepages: 'madvise',
    kvm: { devicePresent: true, accessible: true, working: false, verdict: 'present, not working → TCG', detail: 'no marker on the serial console within 25.0 s', probeMs: 25_500 },
    tcg: { working: true, detail: 'guest reached userspace and printed its marker in 9.0 s', probeMs: 9000 },
    accelerator: 'tcg',
    guestKernel: { package: 'linux-image-6.1.0-56-amd64', version: '6.1.192-2', release: '6.1.0-56-amd64' },
    userfaultfd: {
      syscall: false,
      syscallUserModeOnly: true,
      devNode: { present: true, usable: false, error: 'Permission denied' },
      unprivilegedSysctl: 0,
      kernelFaults: false,
      via: 'syscall-user-mode-only',
      features: null,
      featureBits: null,
      userFaultResolved: true,
      kernelFaultResolved: false,
      available: false,
      detail: 'syscall refused (Operation not permitted)',
      remedy: 'run the harness as root, or `sysctl -w vm.unprivileged_userfaultfd=1`',
    },
    pmem: { devices: [], daxMounts: [] },
    sysctls: { 'vm.max_map_count': '65530', 'vm.unprivileged_userfaultfd': '0' },
    tools: { 'qemu-system-x86_64': '7.2.22', 'qemu-img': '7.2.22', fio: null, 'redis-server': null, 'redis-benchmark': null, cc: 'gcc 12.2.0', make: '4.3' },
    actions: [],
  };

  it('states the verdicts plainly, aligned, and says what to do about each gap', () => {
    const text = formatProbe(base);
    const rows = text.split('\n').filter((l) => /^\S.*\s{2,}\S/.test(l));
    const col = rows.map((l) => /^\S+(?: \S+)*\s{2,}/.exec(l)![0].length);
    expect(new Set(col).size).toBe(1); // one value column
    expect(text).toMatch(/^KVM\s+present, not working → TCG$/m);
    expect(text).toMatch(/^userfaultfd\s+NOT available: no fd that takes kernel-mode faults$/m);
    expect(text).toMatch(/^fio\s+missing \(Debian package fio\)$/m);
    expect(text).toContain('apt-get install -y --no-install-recommends fio redis-server redis-tools');
    expect(text).toContain('userfaultfd: run the harness as root');
    expect(text).toContain('nested virtualization');
    expect(text).toContain('vm.max_map_count is 65530');
    expect(text).toContain('No pmem devices');
    expect(text).toContain('falls back to clflush');
  });

  it('has nothing to say about a complete host', () => {
    const text = formatProbe({
      ...base,
      root: true,
      cpu: { ...base.cpu, flags: { ...base.cpu.flags, clwb: true, hypervisor: false } },
      kvm: { ...base.kvm, working: true, verdict: 'present, working → KVM' },
      accelerator: 'kvm',
      userfaultfd: { ...base.userfaultfd, available: true, kernelFaults: true, remedy: null },
      pmem: { devices: [{ path: '/dev/pmem0', kind: 'pmem', sizeBytes: 2 ** 34 }], daxMounts: [{ device: '/dev/pmem0', mountpoint: '/mnt/pm', fstype: 'ext4', options: 'rw,dax=always' }] },
      sysctls: { 'vm.max_map_count': '1048576' },
      tools: { ...base.tools, fio: '3.33', 'redis-server': '7.0.15', 'redis-benchmark': '7.0.15' },
    });
    expect(text).toMatch(/^pmem devices\s+\/dev\/pmem0 \(pmem, 16\.0 GiB\)$/m);
    expect(text).toContain('Nothing to do');
  });
});
