// The full host probe on this machine, guest boots included (the one slow test of test/host):
// the KVM verdict must agree with what booting showed, TCG must boot, userfaultfd must work.
import { describe, expect, it } from 'vitest';
import { formatProbe, probeHost } from '../../src/host/probe.ts';

describe('probeHost (boots the probe guest under KVM and TCG)', () => {
  it('answers with a KVM verdict consistent with the boot, a working TCG and userfaultfd', async () => {
    const p = await probeHost();

    expect(p.kernel.release).toMatch(/^\d+\.\d+/);
    expect(p.cpu.cores).toBeGreaterThan(0);
    expect(p.cpu.model).not.toBe('unknown');
    expect(p.memoryBytes).toBeGreaterThan(2 ** 30);
    expect(p.tools['qemu-system-x86_64']).toMatch(/^\d+\.\d+/);
    expect(p.tools['qemu-img']).toMatch(/^\d+\.\d+/);
    expect(p.sysctls['vm.max_map_count']).toMatch(/^\d+$/);

    // TCG is the fallback every host relies on: it must boot the guest.
    expect(p.tcg.working, p.tcg.detail).toBe(true);
    expect(p.guestKernel?.package).toMatch(/^linux-image-/);

    if (!p.kvm.devicePresent) {
      expect(p.kvm.verdict).toBe('absent → TCG');
      expect(p.accelerator).toBe('tcg');
    } else if (p.kvm.working) {
      expect(p.kvm.verdict).toBe('present, working → KVM');
      expect(p.accelerator).toBe('kvm');
      expect(p.kvm.detail).toMatch(/printed its marker/);
    } else {
      // Our machines: /dev/kvm exists, a KVM guest hangs.
      expect(p.kvm.working).toBe(false);
      expect(p.kvm.verdict).toBe('present, not working → TCG');
      expect(p.accelerator).toBe('tcg');
      expect(p.kvm.detail).toMatch(/no marker on the serial console within 25\.0 s|qemu exited|without printing the marker/);
    }

    expect(p.userfaultfd.available, p.userfaultfd.detail).toBe(true);
    expect(p.userfaultfd.kernelFaults).toBe(true);
    expect(p.userfaultfd.kernelFaultResolved).toBe(true);

    const text = formatProbe(p);
    expect(text).toContain(`KVM`);
    expect(text).toContain(p.kvm.verdict);
    expect(text).toMatch(/^userfaultfd\s+available \(kernel-mode faults allowed\)$/m);
    expect(text).toMatch(/^accelerator\s+(KVM|TCG)/m);
    for (const [tool, v] of Object.entries(p.tools)) {
      expect(text).toMatch(new RegExp(`^${tool}\\s+${v === null ? 'missing' : v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 'm'));
    }
  });
});
