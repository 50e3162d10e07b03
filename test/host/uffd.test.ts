// The userfaultfd probe: compiled with -Werror, run for real, one fault served end to end.
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { run, which } from '../../src/util/proc.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureUffdProbe, judgeUserfaultfd, probeUserfaultfd, runUffdProbe, uffdProbeSource, UffdProbeOutput } from '../../src/host/uffd.ts';

const root = process.getuid?.() === 0;

describe('uffd_probe', () => {
  it('compiles once into the cache, keyed by its source', async () => {
    const a = await ensureUffdProbe();
    const b = await ensureUffdProbe();
    expect(a).toBe(b);
    expect(a).toMatch(/\/probe\/uffd_probe-[0-9a-f]{16}$/);
    expect(existsSync(a)).toBe(true);
  });

  it('resolves a user-mode and a kernel-mode fault with UFFDIO_COPY', async () => {
    const o = await runUffdProbe();
    expect(o.api.ok).toBe(true);
    expect(o.offered.missing).toBe(true);
    expect(o.userFault, o.userFault.error).toMatchObject({ tried: true, ok: true });
    expect(o.userFault.us).toBeGreaterThan(0);
    if (root) {
      // As root the flag-less syscall works, so kernel-mode faults reach the handler.
      expect(o.syscall.ok).toBe(true);
      expect(o.via).toBe('syscall');
      expect(o.kernelFault, o.kernelFault.error).toMatchObject({ tried: true, ok: true });
    }
  });

  it('runs clean under ASan and UBSan', async () => {
    const clang = await which('clang');
    if (clang === null) throw new Error('clang is needed for the sanitizer build (apt-get install -y clang libclang-rt-14-dev)');
    const dir = mkdtempSync(join(tmpdir(), 'pcow-uffd-san-'));
    try {
      const bin = join(dir, 'uffd_probe');
      const cc = await run(clang, ['-O1', '-g', '-std=c11', '-Wall', '-Wextra', '-Werror', '-pthread', '-fsanitize=address,undefined', '-fno-sanitize-recover=all', '-o', bin, uffdProbeSource()], { timeoutMs: 120_000 });
      expect(cc.exitCode, cc.stderr).toBe(0);
      const r = await run(bin, [], { timeoutMs: 60_000, env: { ASAN_OPTIONS: 'detect_leaks=1', UBSAN_OPTIONS: 'print_stacktrace=1' } });
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      expect(UffdProbeOutput.parse(JSON.parse(r.stdout)).userFault.ok).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports available with the sysctl read', async () => {
    const s = await probeUserfaultfd();
    expect(s.unprivilegedSysctl === null || s.unprivilegedSysctl === 0 || s.unprivilegedSysctl === 1).toBe(true);
    if (root) {
      expect(s.available, s.detail).toBe(true);
      expect(s.remedy).toBeNull();
      expect(s.detail).toMatch(/kernel-mode fault \(pread\) resolved/);
    }
  });

  it.skipIf(!root)('as an unprivileged user: user-mode-only fd, kernel faults refused, remedy named', async () => {
    const setpriv = await which('setpriv');
    if (setpriv === null) throw new Error('setpriv (util-linux) is needed for this test');
    const bin = await ensureUffdProbe();
    const r = await run(setpriv, ['--reuid=65534', '--regid=65534', '--clear-groups', bin], { timeoutMs: 30_000 });
    expect(r.exitCode, r.stderr).toBe(0);
    const o = UffdProbeOutput.parse(JSON.parse(r.stdout));
    const sysctl = Number((await import('node:fs')).readFileSync('/proc/sys/vm/unprivileged_userfaultfd', 'utf8'));
    const s = judgeUserfaultfd(o, sysctl);
    if (sysctl === 0 && o.devNodePresent && !o.devNode.ok) {
      expect(o.syscall.ok).toBe(false);
      expect(o.syscallUserModeOnly.ok).toBe(true);
      expect(o.via).toBe('syscall-user-mode-only');
      // A user-mode fault still works; the kernel-mode one cannot reach a user-mode-only fd.
      expect(o.userFault.ok).toBe(true);
      expect(o.kernelFault.ok).toBe(false);
      expect(o.kernelFault.error).toMatch(/pread\(\) raised no fault event: it failed with Bad address/);
      expect(s.available).toBe(false);
      expect(s.kernelFaults).toBe(false);
      expect(s.remedy).toMatch(/\/dev\/userfaultfd/);
      expect(s.remedy).toMatch(/sysctl -w vm\.unprivileged_userfaultfd=1/);
    }
  });
});
