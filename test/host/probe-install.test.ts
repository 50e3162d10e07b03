// A probe changes nothing unless asked to install, and reports the state it found. The host's
// apt-get is replaced by a fake on PATH that logs its calls (and, to show the order of install
// and version probe, "installs" cc as a wrapper around /usr/bin/cc); PATH holds nothing else, so
// every tool looks missing. A fresh cache forces the uffd probe to be compiled.
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRoot } from '../../src/host/install.ts';
import { formatProbe, probeHost } from '../../src/host/probe.ts';

let tmp: string;
let bin: string;
let aptLog: string;
const saved = { PATH: process.env.PATH, PCOW_CACHE: process.env.PCOW_CACHE };

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'pcow-probe-apt-'));
  bin = path.join(tmp, 'bin');
  aptLog = path.join(tmp, 'apt-get.log');
  await rm(bin, { recursive: true, force: true });
  await import('node:fs/promises').then((fs) => fs.mkdir(bin));
  const fakeApt = `#!/bin/sh
echo "$*" >> ${aptLog}
if [ "$1" = install ]; then
  for p in "$@"; do
    if [ "$p" = gcc ]; then
      printf '#!/bin/sh\\nPATH=/usr/bin:/bin exec /usr/bin/cc "$@"\\n' > ${bin}/cc
      /bin/chmod 755 ${bin}/cc
    fi
  done
fi
exit 0
`;
  await writeFile(path.join(bin, 'apt-get'), fakeApt);
  await chmod(path.join(bin, 'apt-get'), 0o755);
  process.env.PATH = bin;
  process.env.PCOW_CACHE = path.join(tmp, 'cache');
});
afterAll(async () => {
  process.env.PATH = saved.PATH;
  if (saved.PCOW_CACHE === undefined) delete process.env.PCOW_CACHE;
  else process.env.PCOW_CACHE = saved.PCOW_CACHE;
  await rm(tmp, { recursive: true, force: true });
});

describe('probeHost and installs', () => {
  it('without install (doctor): runs no apt-get, reports the missing tools and why the probes could not run', async () => {
    const p = await probeHost({ tcgTimeoutMs: 5000, kvmTimeoutMs: 5000 });
    expect(existsSync(aptLog), 'apt-get was called').toBe(false);
    expect(p.actions.filter((a) => /install|apt-get (install|update)/.test(a))).toEqual([]);
    expect(p.tools['qemu-system-x86_64']).toBeNull();
    expect(p.tools.cc).toBeNull();
    // The boot probes did not run; they say so instead of claiming TCG or KVM does not work.
    expect(p.tcg.working).toBeNull();
    expect(p.userfaultfd.available).toBe(false);
    expect(p.userfaultfd.detail).toMatch(/not probed: missing: cc \(package gcc\).*not installed by this probe/s);
    const text = formatProbe(p);
    expect(text).toMatch(/^qemu-system-x86_64\s+missing/m);
    expect(text).toMatch(/^cc\s+missing/m);
    // The cache files it made are listed; nothing on the host changed.
    for (const a of p.actions) expect(a).toMatch(/into the cache/);
    expect(text).toMatch(p.actions.length ? /What this probe did:/ : /This probe changed nothing on the host/);
  });

  it.skipIf(!isRoot())('with install (a run, doctor --install): installs first, says so, and reads versions after', async () => {
    const p = await probeHost({ skipKvm: true, install: true });
    const calls = await readFile(aptLog, 'utf8');
    expect(calls).toMatch(/^install -y --no-install-recommends .*\bgcc\b/m);
    expect(p.actions.some((a) => /apt-get install .*gcc/.test(a))).toBe(true);
    // cc did not exist when the probe started; its version is read after the install.
    expect(p.tools.cc).toMatch(/^(gcc|clang) /);
    expect(p.userfaultfd.detail).not.toMatch(/not probed/);
    expect(formatProbe(p)).toMatch(/What this probe did:\n(\s+- .*\n)*\s+- .*apt-get install/);
  });
});
