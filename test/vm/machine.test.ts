// The VM harness pieces that need no guest: QEMU argv per backend, the NVDIMM label-size rule,
// option escaping, module dependency resolution from .modinfo, and the QMP client against a
// scripted fake QEMU on a unix socket.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ensureProbeKernel } from '../../src/host/kvm.ts';
import { GiB, MiB, optValue, qemuArgv, type VmSpec } from '../../src/vm/machine.ts';
import { modinfo, resolveModules } from '../../src/vm/modules.ts';
import { QmpClient, QmpError } from '../../src/vm/qmp.ts';

const paths = { serial: '/r/serial.log', qmp: '/r/qmp.sock', pidfile: '/r/qemu.pid', control: '/r/ctl.sock' };
const base: VmSpec = { accel: 'tcg', kernel: '/k/vmlinuz', initrd: '/k/initrd' };

function after(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1] ?? ''] : []));
}

describe('qemuArgv', () => {
  it('raw NVDIMM: nvdimm machine, hotplug room for the device, memory-backend-file with size, TCG cpu', () => {
    const argv = qemuArgv({ ...base, disks: [{ kind: 'nvdimm', backend: { type: 'raw', path: '/img/a,b.raw', size: 64 * MiB } }] }, paths);
    expect(argv.slice(0, 4)).toEqual(['-accel', 'tcg', '-cpu', 'max']);
    expect(after(argv, '-machine')).toEqual(['pc,nvdimm=on']);
    expect(after(argv, '-m')).toEqual(['1024M,slots=2,maxmem=1088M']);
    expect(after(argv, '-object')).toEqual(['memory-backend-file,id=pmem0,share=on,mem-path=/img/a,,b.raw,size=67108864']);
    expect(after(argv, '-device')).toEqual(['nvdimm,id=nvdimm0,memdev=pmem0']);
    expect(after(argv, '-serial')).toEqual(['file:/r/serial.log']);
    expect(after(argv, '-qmp')).toEqual(['unix:/r/qmp.sock,server=on,wait=off']);
    expect(after(argv, '-append')[0]).toMatch(/^console=ttyS0 panic=-1 /);
    expect(argv).toContain('-no-reboot');
  });

  it('pcow NVDIMM: format=pcow with its runtime properties and no size (QEMU takes it from the image); KVM cpu', () => {
    const argv = qemuArgv(
      { ...base, accel: 'kvm', memory: 512 * MiB, disks: [{ kind: 'nvdimm', labelSize: 128 * 1024, backend: { type: 'pcow', path: '/i.pcow', size: 4 * GiB + 128 * 1024, props: { 'prealloc-depth': 8, 'read-fill': true } } }] },
      paths,
    );
    expect(argv.slice(0, 4)).toEqual(['-accel', 'kvm', '-cpu', 'host,-arch-capabilities']);
    expect(after(argv, '-object')).toEqual(['memory-backend-file,id=pmem0,share=on,mem-path=/i.pcow,format=pcow,prealloc-depth=8,read-fill=on']);
    expect(after(argv, '-device')).toEqual(['nvdimm,id=nvdimm0,memdev=pmem0,label-size=131072']);
    expect(after(argv, '-m')).toEqual(['512M,slots=2,maxmem=4609M']);
  });

  it('virtio-blk disks (for root file systems) get a drive and a serial; no nvdimm machine option', () => {
    const argv = qemuArgv({ ...base, disks: [{ kind: 'virtio-blk', path: '/r.qcow2', format: 'qcow2', serial: 'root' }] }, paths);
    expect(after(argv, '-machine')).toEqual(['pc']);
    expect(after(argv, '-m')).toEqual(['1024M']);
    expect(after(argv, '-drive')).toEqual(['file=/r.qcow2,format=qcow2,if=none,id=disk0,cache=none']);
    expect(after(argv, '-device')).toEqual(['virtio-blk-pci,drive=disk0,serial=root']);
  });

  it('rejects a labelled NVDIMM whose pmem part is not N x 16 MiB, naming the size to use', () => {
    const spec = (size: number): VmSpec => ({ ...base, disks: [{ kind: 'nvdimm', labelSize: 128 * 1024, backend: { type: 'raw', path: '/x', size } }] });
    expect(() => qemuArgv(spec(64 * MiB), paths)).toThrow(/with label-size 128 KiB the pmem part .* must be a multiple of 16 MiB .* use size 67239936 \(4 x 16 MiB \+ label\)/);
    expect(() => qemuArgv(spec(64 * MiB + 128 * 1024), paths)).not.toThrow();
    expect(() => qemuArgv({ ...base, disks: [{ kind: 'nvdimm', labelSize: 4096, backend: { type: 'raw', path: '/x', size: 64 * MiB } }] }, paths)).toThrow(/label-size 4096 must be at least 128 KiB/);
    expect(() => qemuArgv({ ...base, disks: [{ kind: 'nvdimm', backend: { type: 'raw', path: '/x', size: 1000 } }] }, paths)).toThrow(/size 1000 is not a positive multiple of 4 KiB/);
  });

  it('escapes commas and refuses line breaks and odd property names', () => {
    expect(optValue('a,b,,c')).toBe('a,,b,,,,c');
    expect(optValue(false)).toBe('off');
    expect(() => optValue('a\nb')).toThrow(/line break/);
    expect(() => qemuArgv({ ...base, disks: [{ kind: 'nvdimm', backend: { type: 'pcow', path: '/x', size: 64 * MiB, props: { 'x,y=1': 1 } } }] }, paths)).toThrow(/not a QEMU property name/);
  });
});

describe('module dependencies from .modinfo', () => {
  it('reads depends= from a real module and orders the NVDIMM/ext4 set dependencies first', async () => {
    const k = await ensureProbeKernel();
    const mods = await resolveModules(k.modulesDir, ['nd_pmem', 'ext4']);
    const names = mods.map((m) => m.name);
    expect(names).toContain('libnvdimm');
    expect(names).toContain('jbd2');
    for (const m of mods) for (const d of m.depends) expect(names.indexOf(d), `${d} before ${m.name}`).toBeLessThan(names.indexOf(m.name));
    await expect(resolveModules(k.modulesDir, ['no_such_module'])).rejects.toThrow(/kernel module no_such_module is neither in .* nor built in/);
    expect(() => modinfo(Buffer.from('not an elf at all, but long enough to have a header of sixty-four bytes'))).toThrow(/not an ELF/);
  });
});

describe('QmpClient (against a scripted fake QEMU)', () => {
  let dir = '';
  let server: Server | undefined;
  afterEach(async () => {
    server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function fake(onCommand: (cmd: { execute: string; id?: string; arguments?: unknown }, sock: Socket) => void): Promise<string> {
    dir = await mkdtemp(join(tmpdir(), 'pcow-qmp-test-'));
    const path = join(dir, 'qmp.sock');
    server = createServer((sock) => {
      sock.write(`${JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 } }, capabilities: [] } })}\r\n`);
      let buf = '';
      sock.on('data', (d) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string; id?: string };
          buf = buf.slice(nl + 1);
          if (cmd.execute === 'qmp_capabilities') sock.write(`${JSON.stringify({ return: {}, id: cmd.id })}\r\n`);
          else onCommand(cmd, sock);
        }
      });
    });
    await new Promise<void>((r) => server!.listen(path, r));
    return path;
  }

  it('negotiates, matches replies by id (out of order), keeps events, reports errors and timeouts by command name', async () => {
    let held: { id?: string; sock: Socket } | undefined;
    const path = await fake((cmd, sock) => {
      if (cmd.execute === 'slow') held = { id: cmd.id, sock };
      else if (cmd.execute === 'query-status') {
        sock.write(`${JSON.stringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 2 } })}\n`);
        sock.write(`${JSON.stringify({ return: { status: 'running' }, id: cmd.id })}\n`);
        if (held) sock.write(`${JSON.stringify({ return: 'late', id: held.id })}\n`);
      } else if (cmd.execute === 'bad') sock.write(`${JSON.stringify({ error: { class: 'GenericError', desc: 'no way' }, id: cmd.id })}\n`);
      // 'silent' never gets a reply
    });
    const q = await QmpClient.connect(path, 2000);
    expect(q.version).toEqual({ major: 7, minor: 2, micro: 22 });
    const slow = q.execute('slow');
    await new Promise((r) => setTimeout(r, 50));
    await expect(q.execute('query-status')).resolves.toEqual({ status: 'running' });
    await expect(slow).resolves.toBe('late');
    await expect(q.waitEvent('STOP', 100)).resolves.toMatchObject({ event: 'STOP' });
    await expect(q.execute('bad')).rejects.toThrow(/QMP bad: no way \(GenericError\)/);
    const t = q.execute('silent', { x: 1 }, 100);
    await expect(t).rejects.toBeInstanceOf(QmpError);
    await expect(t).rejects.toThrow(/QMP silent: no reply within 100 ms/);
    await expect(q.waitEvent('RESUME', 100)).rejects.toThrow(/no RESUME event within 100 ms/);
    const pending = q.execute('silent', undefined, 5000);
    server!.close();
    q.close('test over');
    await expect(pending).rejects.toThrow(/QMP silent: test over/);
    await expect(q.execute('query-status')).rejects.toThrow(/connection closed \(test over\)/);
  });

  it('a QEMU that accepts the connection and exits before its greeting fails the connect at once, not at the timeout', async () => {
    dir = await mkdtemp(join(tmpdir(), 'pcow-qmp-test-'));
    const path = join(dir, 'qmp.sock');
    server = createServer((sock) => sock.destroy());
    await new Promise<void>((r) => server!.listen(path, r));
    const t = Date.now();
    await expect(QmpClient.connect(path, 10_000)).rejects.toThrow(/QEMU closed the QMP connection before its greeting/);
    expect(Date.now() - t).toBeLessThan(2000);
  });

  it('fails clearly when nothing listens', async () => {
    dir = await mkdtemp(join(tmpdir(), 'pcow-qmp-test-'));
    await expect(QmpClient.connect(join(dir, 'none.sock'), 500)).rejects.toThrow(/none\.sock: cannot connect/);
  });
});
