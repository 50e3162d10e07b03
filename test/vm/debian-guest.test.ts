// The Debian guest over SSH under TCG (KVM with PCOW_VM_ACCEL=kvm): the cached image boots to
// SSH, commands run with their exit codes, files and directories go up and come back, a
// detached job survives a dropped connection and is re-attached, the workload tools are there,
// a wrong host key is refused, and a guest killed mid-command ends with an error naming the
// guest, the command and the serial tail, leaving no QEMU behind.
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureDebianImage } from '../../src/vm/image.ts';
import { run } from '../../src/util/proc.ts';
import { repoRoot } from '../../src/util/paths.ts';
import { DebianGuest } from '../../src/vm/debian.ts';
import { VmError, liveVmCount, type Accel } from '../../src/vm/machine.ts';
import { GuestSsh, HostKeyMismatchError } from '../../src/vm/ssh.ts';

const accel = (process.env.PCOW_VM_ACCEL ?? 'tcg') as Accel;
let dir = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pcow-debian-test-'));
  // Cold, the image build takes ~2 min (debootstrap); warm, a few seconds.
  const img = await ensureDebianImage({ log: (l) => console.log(l) });
  console.log(`guest image ${img.key}: ${img.cached ? 'cached' : 'built'} in ${img.seconds.toFixed(1)} s, ${(img.rootImageBytes / 1e6).toFixed(0)} MB qcow2`);
}, 30 * 60_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** QEMU processes whose command line mentions `needle` (a guest's own directory). */
async function qemusWith(needle: string): Promise<string[]> {
  const r = await run('ps', ['-eo', 'pid=,args='], { timeoutMs: 10_000 });
  return r.stdout.split('\n').filter((l) => /qemu-system/.test(l) && l.includes(needle));
}

describe('Debian guest over SSH', () => {
  it('boots to SSH, runs commands, uploads, runs a job detached across a dropped connection, downloads, and powers off', async () => {
    const g = await DebianGuest.boot({ accel, name: 'ssh-e2e', dir: join(dir, 'vm1') });
    try {
      console.log(`boot to ready marker ${g.bootMs} ms, to SSH ${g.sshMs} ms (${accel})`);
      const r = await g.ssh.exec(['sh', '-c', 'echo "$1"; echo to-stderr >&2; exit 5', 'x', "quoted 'arg' $HOME"]);
      expect(r).toMatchObject({ stdout: "quoted 'arg' $HOME\n", stderr: 'to-stderr\n', exitCode: 5 });
      const v = await g.ssh.check(['sh', '-c', 'fio --version; redis-server --version; ndctl --version; pmempool --version 2>&1 | head -1; uname -r']);
      expect(v.stdout).toMatch(/^fio-3\.\d+/m);
      expect(v.stdout).toMatch(/Redis server v=7\./);
      expect(v.stdout).toContain(g.image.kernel.release);
      // The NVDIMM module stack is loadable (no nvdimm attached here, so no /dev/pmem0).
      expect((await g.ssh.check(['sh', '-c', 'lsmod'])).stdout).toMatch(/^nd_pmem\b/m);

      // A directory (guest-scripts/) and a script of our own go up.
      await g.ssh.upload(join(repoRoot, 'guest-scripts'), '/opt/guest-scripts');
      const listed = (await g.ssh.check(['ls', '/opt/guest-scripts'])).stdout.split('\n').filter(Boolean).sort();
      expect(listed).toEqual((await readdir(join(repoRoot, 'guest-scripts'))).sort());
      expect((await g.ssh.check(['test', '-x', '/opt/guest-scripts/debian-init'])).exitCode).toBe(0);
      const script = join(dir, 'job.sh');
      await writeFile(script, '#!/bin/sh\necho "job started $1"\nsleep 4\nmkdir -p /root/out && echo payload > /root/out/result.txt\necho "job finished"\nexit 3\n', { mode: 0o755 });
      await g.ssh.upload(script, '/root/job.sh');

      const id = await g.ssh.startDetached(['/root/job.sh', 'arg with space'], { cwd: '/root' });
      expect((await g.ssh.jobStatus(id)).state).toBe('running');
      // Drop the connection while the job runs; it goes on in the guest.
      g.ssh.close();
      await expect(g.ssh.exec(['true'])).rejects.toThrow(/ssh-e2e.*connection is closed/s);
      const again = await g.connect();
      try {
        const done = await again.waitJob(id, { timeoutMs: 120_000 });
        expect(done.exitCode).toBe(3);
        expect(done.stdout).toBe('job started arg with space\njob finished\n');
        await again.download('/root/out', join(dir, 'out'));
        expect(await readFile(join(dir, 'out', 'result.txt'), 'utf8')).toBe('payload\n');
        // The job's process was reaped by the guest's PID 1 (no zombie left).
        expect((await again.check(['ps', '-eo', 'stat='])).stdout).not.toMatch(/^Z/m);
        // A command over its bound is killed in the guest and named in the error.
        await expect(again.exec(['sleep', '30'], { timeoutMs: 2000 })).rejects.toThrow(/guest ssh-e2e: command "sleep 30" timed out after 2 s/);
      } finally {
        again.close();
      }
      const t0 = Date.now();
      await g.poweroff();
      console.log(`poweroff ${Date.now() - t0} ms`);
      expect(g.vm.result?.exitCode).toBe(0);
    } finally {
      await g.stop();
    }
    expect(await qemusWith(join(dir, 'vm1'))).toEqual([]);
  }, 300_000);

  it('a wrong pinned host key is refused; a guest killed mid-command fails naming the guest, the command and the serial tail, and leaves no QEMU', async () => {
    const g = await DebianGuest.boot({ accel, name: 'kill-e2e', dir: join(dir, 'vm2') });
    try {
      const other = join(dir, 'otherkey');
      expect((await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other], { timeoutMs: 30_000 })).exitCode).toBe(0);
      const wrong = { ...g.target, hostKey: (await readFile(`${other}.pub`, 'utf8')).trim() };
      const t0 = Date.now();
      await expect(GuestSsh.waitReady(wrong, { timeoutMs: 30_000 })).rejects.toThrow(HostKeyMismatchError);
      expect(Date.now() - t0).toBeLessThan(15_000); // refused at once, not retried until the bound
      await expect(GuestSsh.connect(wrong)).rejects.toThrow(/kill-e2e.*does not match the pinned one/);

      const pending = g.ssh.exec(['sleep', '120'], { timeoutMs: 180_000 });
      const caught = pending.catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 1500));
      await g.vm.kill9();
      const e = await caught;
      expect(e).toBeInstanceOf(VmError);
      const msg = (e as VmError).message;
      expect(msg).toMatch(/guest kill-e2e: command "sleep 120" the connection was lost/);
      expect(msg).toMatch(/QEMU was killed by SIGKILL/);
      expect((e as VmError).serialTail.join('\n')).toMatch(/PCOW-SSH-READY/);
      // A later command fails the same way, at once.
      await expect(g.ssh.exec(['true'])).rejects.toThrow(/kill-e2e.*QEMU was killed by SIGKILL/s);
      await expect(g.connect(5000)).rejects.toThrow(/guest kill-e2e: never reached SSH: QEMU was killed by SIGKILL/);
    } finally {
      await g.stop();
    }
    expect(liveVmCount()).toBe(0);
    expect(await qemusWith(join(dir, 'vm2'))).toEqual([]);
  }, 300_000);
});
