// The guest kernel as a fresh machine gets it: apt-get download of the package linux-image-amd64
// points at, dpkg-deb -x into an empty cache, nothing installed on the host.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';

const cache = mkdtempSync('/var/tmp/pcow-kernel-test-');
process.env.PCOW_CACHE = cache;
afterAll(() => rmSync(cache, { recursive: true, force: true }));

describe('ensureProbeKernel', () => {
  it('downloads and extracts the metapackage kernel into an empty cache, once', async () => {
    const { ensureProbeKernel, resolveKernelPackage } = await import('../../src/host/kvm.ts');
    const wanted = await resolveKernelPackage();
    expect(wanted.package).toMatch(/^linux-image-\d+\.\d+\.\d+-\d+-amd64$/);

    const release = wanted.package.slice('linux-image-'.length);
    const hostHad = [`/boot/vmlinuz-${release}`, `/lib/modules/${release}`].map((p) => existsSync(p));
    const k = await ensureProbeKernel();
    expect(k.package).toBe(wanted.package);
    expect(k.version).toBe(wanted.version);
    expect(k.release).toBe(release);
    expect(k.root.startsWith(`${cache}/kernel/`)).toBe(true);
    expect(statSync(k.vmlinuz).size).toBeGreaterThan(1 << 20);
    expect(readFileSync(k.config, 'utf8')).toMatch(/^CONFIG_X86_64=y$/m);
    // The modules a guest needs for its NVDIMM come along (DESIGN: libnvdimm, nd_pmem, ...).
    expect(readdirSync(`${k.modulesDir}/kernel/drivers/nvdimm`)).toEqual(expect.arrayContaining(['libnvdimm.ko', 'nd_pmem.ko']));
    // No .deb and no temp dirs are left; the host's /boot and /lib/modules are untouched.
    expect(readdirSync(`${cache}/kernel`)).toEqual([`${k.package}_${k.version}`.replace(/[^A-Za-z0-9._+-]/g, '_')]);
    expect([`/boot/vmlinuz-${release}`, `/lib/modules/${release}`].map((p) => existsSync(p))).toEqual(hostHad);

    expect(await ensureProbeKernel()).toEqual(k);
  });
});
