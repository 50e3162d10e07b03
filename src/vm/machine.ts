// One QEMU guest owned by the harness: the argv (built here and nowhere else), the QMP
// connection, the serial console in a file with a watcher for markers and panics, a boot
// timeout, and a teardown that always leaves no QEMU process behind.
//
// Teardown layers: Vm.stop() (SIGTERM, then SIGKILL of QEMU's process group, through
// src/util/proc.ts's tracked children, which the harness's SIGINT/SIGTERM handler also kills);
// a process 'exit' hook that SIGKILLs every VM still alive; and `setpriv --pdeathsig SIGKILL`
// so a harness killed with -9 takes its QEMUs with it.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { accelArgs, bootStage, serialLines, type Accel } from '../host/kvm.ts';
import { run, type RunResult } from '../util/proc.ts';
import { QmpClient } from './qmp.ts';

export type { Accel };

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
/** With a label area, ndctl wants the pmem part (size - label) to be a multiple of this. */
export const LABELLED_PMEM_ALIGN = 16 * MiB;

/** What backs an NVDIMM's memory. */
export type NvdimmBackend =
  /** A plain file mapped by memory-backend-file (stock QEMU). */
  | { type: 'raw'; path: string; size: number }
  /**
   * A pcow image through the patched QEMU's memory-backend-file format=pcow; QEMU takes the
   * size from the image (`size` here is only for maxmem and the label check), `props` are the
   * runtime properties (prealloc-depth, cow-unit, handler-threads, read-fill).
   */
  | { type: 'pcow'; path: string; size: number; props?: Record<string, string | number | boolean> };

export type Disk =
  | { kind: 'nvdimm'; backend: NvdimmBackend; /** Bytes at the end of the device for namespace labels (e.g. 128 KiB); none: a raw-mode namespace. */ labelSize?: number }
  /** A block disk (for the guests issue: qcow2 root file systems); `serial` names it in the guest. */
  | { kind: 'virtio-blk'; path: string; format: 'qcow2' | 'raw'; serial: string; cache?: 'none' | 'writeback'; readOnly?: boolean };

export interface VmSpec {
  /** The QEMU binary (default qemu-system-x86_64 on PATH; the patched one for pcow). */
  qemu?: string;
  accel: Accel;
  /** Guest RAM (default 1 GiB). */
  memory?: number;
  smp?: number;
  kernel: string;
  initrd: string;
  /** Kernel command line after the harness's own console/panic settings. */
  append?: string;
  disks?: Disk[];
  /** Extra QEMU arguments (firmware -L for a build-tree binary, say). */
  extraArgs?: string[];
  /**
   * A second serial port (the guest's /dev/ttyS1) on a unix socket: the host sends lines with
   * Vm.send(), the guest reads them (guest-scripts/init: wait_host). The console stays ttyS0.
   */
  control?: boolean;
  /**
   * A virtio NIC on QEMU's user-mode network (slirp; the guest is 10.0.2.15) with the guest's
   * port 22 forwarded from 127.0.0.1:sshPort on the host (src/vm/debian.ts picks the port).
   */
  sshPort?: number;
}

/** Where a VM keeps its files. */
export interface VmPaths {
  serial: string;
  qmp: string;
  pidfile: string;
  /** The control channel's socket (used when spec.control). */
  control: string;
}

/** A value inside a QEMU -object/-device option list: commas are doubled. */
export function optValue(v: string | number | boolean): string {
  const s = typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v);
  if (/[\n\r]/.test(s)) throw new Error(`QEMU option value ${JSON.stringify(s)} contains a line break`);
  return s.replace(/,/g, ',,');
}

function sizeText(n: number): string {
  return n % MiB === 0 ? `${n / MiB} MiB` : n % 1024 === 0 ? `${n / 1024} KiB` : `${n} bytes`;
}

function checkDisk(d: Disk, i: number): void {
  if (d.kind !== 'nvdimm') return;
  const { size } = d.backend;
  if (!Number.isSafeInteger(size) || size <= 0 || size % 4096 !== 0) throw new Error(`nvdimm ${i} (${d.backend.path}): size ${size} is not a positive multiple of 4 KiB`);
  if (d.labelSize !== undefined) {
    if (d.labelSize < 128 * 1024 || d.labelSize % 4096 !== 0) throw new Error(`nvdimm ${i}: label-size ${d.labelSize} must be at least 128 KiB and a multiple of 4 KiB`);
    const pmem = size - d.labelSize;
    if (pmem <= 0 || pmem % LABELLED_PMEM_ALIGN !== 0) {
      const n = Math.max(1, Math.round(pmem / LABELLED_PMEM_ALIGN));
      throw new Error(
        `nvdimm ${i} (${d.backend.path}): with label-size ${sizeText(d.labelSize)} the pmem part (size ${sizeText(size)} - label) must be a multiple of 16 MiB for ndctl; use size ${n * LABELLED_PMEM_ALIGN + d.labelSize} (${n} x 16 MiB + label)`,
      );
    }
  }
}

/** The whole QEMU argv for a spec (without the binary). Pure: tests check it directly. */
export function qemuArgv(spec: VmSpec, paths: VmPaths): string[] {
  const disks = spec.disks ?? [];
  disks.forEach(checkDisk);
  const memory = spec.memory ?? GiB;
  if (memory % MiB !== 0) throw new Error(`guest memory ${memory} is not a whole number of MiB`);
  const nvdimms = disks.filter((d): d is Extract<Disk, { kind: 'nvdimm' }> => d.kind === 'nvdimm');
  const args = [...accelArgs(spec.accel), '-machine', nvdimms.length ? 'pc,nvdimm=on' : 'pc'];
  if (nvdimms.length) {
    const hotplug = nvdimms.reduce((s, d) => s + Math.ceil(d.backend.size / MiB) * MiB, 0);
    args.push('-m', `${memory / MiB}M,slots=${Math.max(2, nvdimms.length)},maxmem=${(memory + hotplug) / MiB}M`);
  } else {
    args.push('-m', `${memory / MiB}M`);
  }
  args.push(
    '-smp', String(spec.smp ?? 1),
    '-nodefaults',
    '-display', 'none',
    '-no-reboot',
    '-serial', `file:${paths.serial}`,
    '-qmp', `unix:${paths.qmp},server=on,wait=off`,
    '-pidfile', paths.pidfile,
    '-kernel', spec.kernel,
    '-initrd', spec.initrd,
    // panic=-1: a panicking guest reboots at once, and -no-reboot turns that into QEMU's exit.
    '-append', ['console=ttyS0', 'panic=-1', 'loglevel=4', spec.append ?? ''].join(' ').trim(),
  );
  if (spec.sshPort !== undefined) {
    if (!Number.isInteger(spec.sshPort) || spec.sshPort < 1 || spec.sshPort > 65535) throw new Error(`sshPort ${spec.sshPort} is not a TCP port`);
    // romfile= : no iPXE option ROM (the kernel is booted directly; it only costs boot time).
    args.push('-netdev', `user,id=net0,hostfwd=tcp:127.0.0.1:${spec.sshPort}-:22`, '-device', 'virtio-net-pci,netdev=net0,romfile=');
  }
  if (spec.control) args.push('-chardev', `socket,id=ctl,path=${optValue(paths.control)},server=on,wait=off`, '-device', 'isa-serial,chardev=ctl');
  let n = 0;
  for (const d of disks) {
    const i = n++;
    if (d.kind === 'nvdimm') {
      const b = d.backend;
      const obj = [`memory-backend-file`, `id=pmem${i}`, 'share=on', `mem-path=${optValue(b.path)}`];
      if (b.type === 'raw') obj.push(`size=${b.size}`);
      else {
        obj.push('format=pcow');
        for (const [k, v] of Object.entries(b.props ?? {})) {
          if (!/^[a-z][a-z0-9-]*$/.test(k)) throw new Error(`pcow property name ${JSON.stringify(k)} is not a QEMU property name`);
          obj.push(`${k}=${optValue(v)}`);
        }
      }
      args.push('-object', obj.join(','));
      args.push('-device', [`nvdimm`, `id=nvdimm${i}`, `memdev=pmem${i}`, ...(d.labelSize !== undefined ? [`label-size=${d.labelSize}`] : [])].join(','));
    } else {
      const drive = [`file=${optValue(d.path)}`, `format=${d.format}`, 'if=none', `id=disk${i}`, `cache=${d.cache ?? 'none'}`];
      if (d.readOnly) drive.push('readonly=on');
      args.push('-drive', drive.join(','), '-device', `virtio-blk-pci,drive=disk${i},serial=${optValue(d.serial)}`);
    }
  }
  args.push(...(spec.extraArgs ?? []));
  return args;
}

/** A boot that did not end as expected: the reason, and the console's last lines. */
export class VmError extends Error {
  constructor(
    message: string,
    readonly serialTail: string[],
  ) {
    super(serialTail.length ? `${message}\n--- serial console, last ${serialTail.length} lines ---\n${serialTail.join('\n')}` : `${message}\n(no serial output)`);
    this.name = 'VmError';
  }
}

const live = new Set<Vm>();
let exitHook = false;

export interface StartOptions {
  /** Directory for the serial log, QMP socket and pidfile (default: a fresh temp dir, removed by stop()). */
  dir?: string;
  signal?: AbortSignal;
  /** How long QEMU may take to open its QMP socket (default 15 s). */
  qmpTimeoutMs?: number;
}

export class Vm {
  readonly argv: string[];
  qmp: QmpClient | null = null;
  /** Set once QEMU has exited. */
  result: RunResult | null = null;
  private serialBuf = Buffer.alloc(0);
  private readonly exited: Promise<RunResult>;
  private readonly ac = new AbortController();
  private readonly startedAt = Date.now();

  private constructor(
    readonly spec: VmSpec,
    readonly paths: VmPaths,
    readonly dir: string,
    private readonly ownDir: boolean,
    readonly binary: string,
    readonly stderrFile: string,
  ) {
    this.argv = qemuArgv(spec, paths);
    const [cmd, args] = existsSync('/usr/bin/setpriv')
      ? ['/usr/bin/setpriv', ['--pdeathsig', 'SIGKILL', '--', binary, ...this.argv]]
      : [binary, this.argv];
    this.exited = run(cmd, args, { signal: this.ac.signal, graceMs: 2000, stdoutFile: join(dir, 'qemu.stdout'), stderrFile: stderrFile }).then((r) => {
      this.result = r;
      live.delete(this);
      return r;
    });
    live.add(this);
    if (!exitHook) {
      exitHook = true;
      process.once('exit', () => {
        for (const vm of live) vm.killNow();
      });
    }
  }

  /** Start QEMU and connect QMP. On any failure QEMU is stopped before the error is thrown. */
  static async start(spec: VmSpec, opts: StartOptions = {}): Promise<Vm> {
    const ownDir = opts.dir === undefined;
    const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'pcow-vm-')));
    await mkdir(dir, { recursive: true });
    // unix socket paths are limited to 107 bytes: keep the socket short when the dir is deep.
    const qmp = join(dir, 'qmp.sock').length < 100 ? join(dir, 'qmp.sock') : join(tmpdir(), `pcow-qmp-${randomBytes(6).toString('hex')}.sock`);
    const control = qmp.replace(/qmp\.sock$/, 'ctl.sock').replace(/(pcow-qmp-[0-9a-f]+)\.sock$/, '$1-ctl.sock');
    const paths: VmPaths = { serial: join(dir, 'serial.log'), qmp, pidfile: join(dir, 'qemu.pid'), control };
    const vm = new Vm(spec, paths, dir, ownDir, spec.qemu ?? 'qemu-system-x86_64', join(dir, 'qemu.stderr'));
    const onAbort = (): void => void vm.stop();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const deadline = Date.now() + (opts.qmpTimeoutMs ?? 15_000);
      while (!existsSync(qmp)) {
        if (vm.result) throw await vm.failed('QEMU exited during startup (before its QMP socket was ready)');
        if (Date.now() > deadline) throw await vm.failed(`QEMU opened no QMP socket within ${opts.qmpTimeoutMs ?? 15_000} ms`);
        await sleep(20);
      }
      try {
        // QEMU binds the socket (the file appears) a moment before it listens: a connection in
        // between is refused. Retry that while QEMU runs and time is left.
        for (;;) {
          try {
            vm.qmp = await QmpClient.connect(qmp, Math.max(1000, deadline - Date.now()));
            break;
          } catch (e) {
            if (!/ECONNREFUSED/.test((e as Error).message) || vm.result || Date.now() > deadline) throw e;
            await sleep(20);
          }
        }
      } catch (e) {
        // QEMU opens the socket before it creates the devices: a bad -object/-device makes it
        // exit right after. Say that rather than a bare connection error.
        await Promise.race([vm.exited, sleep(1000)]);
        throw await vm.failed(vm.result ? 'QEMU exited during startup (before its QMP socket was ready)' : `QMP did not come up: ${(e as Error).message}`);
      }
      return vm;
    } catch (e) {
      await vm.stop();
      throw e;
    }
  }

  /** Milliseconds since QEMU was started. */
  get uptimeMs(): number {
    return Date.now() - this.startedAt;
  }

  /** QEMU's pid (from its pidfile). */
  async pid(): Promise<number> {
    const p = Number.parseInt(await readFile(this.paths.pidfile, 'utf8'), 10);
    if (!Number.isInteger(p) || p <= 0) throw new Error(`${this.paths.pidfile}: no pid`);
    return p;
  }

  /** The serial console so far (raw text). */
  async serial(): Promise<string> {
    const fh = await open(this.paths.serial, 'r').catch(() => null);
    if (fh) {
      try {
        const { size } = await fh.stat();
        if (size > this.serialBuf.length) {
          // Bytes, not characters: a read may end inside a UTF-8 sequence.
          const b = Buffer.alloc(size - this.serialBuf.length);
          const { bytesRead } = await fh.read(b, 0, b.length, this.serialBuf.length);
          this.serialBuf = Buffer.concat([this.serialBuf, b.subarray(0, bytesRead)]);
        }
      } finally {
        await fh.close();
      }
    }
    return this.serialBuf.toString('utf8');
  }

  async serialTail(n = 25): Promise<string[]> {
    return serialLines(await this.serial()).slice(-n);
  }

  private async stderrTail(): Promise<string> {
    const t = await readFile(this.stderrFile, 'utf8').catch(() => '');
    return t.trim().split('\n').slice(-5).join(' | ');
  }

  /** A VmError saying what happened, with QEMU's exit status, stderr and the console tail. */
  async failed(what: string, around?: RegExp): Promise<VmError> {
    const parts = [what];
    if (this.result) {
      const r = this.result;
      parts.push(`QEMU ${r.signal ? `was killed by ${r.signal}` : `exited with code ${r.exitCode}`} after ${(r.durationMs / 1000).toFixed(1)} s`);
    }
    const err = await this.stderrTail();
    if (err) parts.push(`QEMU stderr: ${err}`);
    const lines = await this.serialTail(1000);
    // Where the boot got to, unless QEMU never got as far as running the guest.
    if (this.qmp && !/PCOW-INIT/.test(lines.join('\n'))) parts.push(bootStage(lines));
    // The tail, or the lines around `around` (a panic's trace keeps arriving after its first line).
    const at = around ? lines.findIndex((l) => around.test(l)) : -1;
    const tail = at >= 0 ? lines.slice(Math.max(0, at - 10), at + 15) : lines.slice(-25);
    return new VmError(`${parts.join('; ')} [argv: ${this.binary} ${this.argv.join(' ')}]`, tail);
  }

  /**
   * Wait until the console shows `pattern` (checked every 50 ms). Rejects with a VmError when
   * the guest panics, QEMU exits first, or `timeoutMs` passes; each names the reason.
   */
  async waitFor(pattern: RegExp, timeoutMs: number, what = `${pattern}`): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const exitedBefore = this.result !== null;
      const text = serialLines(await this.serial()).join('\n');
      const m = pattern.exec(text);
      if (m) return m;
      const panic = /Kernel panic - not syncing[^\n]*/.exec(text);
      if (panic) throw await this.failed(`the guest kernel panicked (${panic[0]}) before ${what}`, /Kernel panic - not syncing/);
      if (exitedBefore) throw await this.failed(`QEMU exited before ${what} appeared on the serial console`);
      if (Date.now() > deadline) throw await this.failed(`timed out waiting for ${what} (${(this.uptimeMs / 1000).toFixed(1)} s after QEMU started)`);
      await sleep(50);
    }
  }

  /**
   * Why the guest cannot run any more, or null while it may: QEMU has exited (how), or the
   * serial console shows a kernel panic. Cheap enough to poll.
   */
  async gone(): Promise<string | null> {
    const r = this.result;
    if (r) return `QEMU ${r.signal ? `was killed by ${r.signal}` : `exited with code ${r.exitCode}`} after ${(r.durationMs / 1000).toFixed(1)} s`;
    const panic = /Kernel panic - not syncing[^\n]*/.exec(await this.serial());
    return panic ? `the guest kernel panicked (${panic[0].trim()})` : null;
  }

  /** Wait for QEMU to exit by itself (guest power-off); throws after timeoutMs. */
  async waitExit(timeoutMs: number): Promise<RunResult> {
    let t: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      t = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    try {
      const r = await Promise.race([this.exited, timeout]);
      if (r === 'timeout') throw await this.failed(`QEMU did not exit within ${(timeoutMs / 1000).toFixed(1)} s`);
      return r;
    } finally {
      clearTimeout(t);
    }
  }

  private ctl: Socket | null = null;

  /** Send one line to the guest's /dev/ttyS1 (needs spec.control). */
  async send(line: string): Promise<void> {
    if (!this.spec.control) throw new Error('Vm.send: this VM was started without a control channel (spec.control)');
    if (/[\r\n]/.test(line)) throw new Error(`Vm.send: ${JSON.stringify(line)} holds a line break`);
    if (!this.ctl) {
      const sock = createConnection(this.paths.control);
      await new Promise<void>((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', (e) => reject(new Error(`control channel ${this.paths.control}: ${e.message}`)));
      });
      sock.on('data', () => {}); // the guest tty's echo, if any
      sock.on('error', () => {});
      this.ctl = sock;
    }
    const ctl = this.ctl;
    await new Promise<void>((resolve, reject) => ctl.write(`${line}\n`, (e) => (e ? reject(e) : resolve())));
  }

  /** SIGKILL QEMU now (a crash, as the tests need) and wait for it to be gone. */
  async kill9(): Promise<void> {
    if (this.result) return;
    process.kill(await this.pid(), 'SIGKILL');
    await this.exited;
  }

  private killNow(): void {
    try {
      // An 'exit' handler must be synchronous: no awaiting the child, just the signal.
      const pid = Number.parseInt(readFileSync(this.paths.pidfile, 'utf8'), 10);
      if (pid > 0) process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
    this.ac.abort();
  }

  /** Stop QEMU (SIGTERM, SIGKILL after 2 s), close QMP, remove a temp dir. Idempotent. */
  async stop(): Promise<RunResult> {
    this.qmp?.close('VM stopped');
    this.ctl?.destroy();
    if (!this.result) this.ac.abort();
    const r = await this.exited;
    if (!this.paths.qmp.startsWith(this.dir)) await Promise.all([rm(this.paths.qmp, { force: true }), rm(this.paths.control, { force: true })]);
    if (this.ownDir) await rm(this.dir, { recursive: true, force: true });
    return r;
  }
}

/** Number of VMs started in this process and not yet exited. */
export function liveVmCount(): number {
  return live.size;
}
