// The Debian guest (src/vm/image.ts) booted for one run: a throw-away qcow2 overlay
// over the cached base image, the kernel + small initrd, the root disk found by its virtio
// serial, guest port 22 forwarded from a free host port, and an SSH connection with the
// image's pinned host key. The boot watches the serial console (ready marker, panic) and QEMU
// itself, so a guest that dies or hangs ends with the reason and the console's tail, never a
// wait on SSH alone. stop() always leaves no QEMU behind.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureDebianImage, ROOT_SERIAL, type DebianImage, type GuestImageSetup } from './image.ts';
import { failure, run } from '../util/proc.ts';
import { Vm, VmError, type Accel, type Disk, type VmSpec } from './machine.ts';
import { GuestSsh, type SshTarget } from './ssh.ts';

export interface DebianGuestOptions extends GuestImageSetup {
  /** The guest's name in messages (default "debian-<random>"). */
  name?: string;
  accel?: Accel;
  qemu?: string;
  memory?: number;
  smp?: number;
  /** Disks besides the root disk (NVDIMMs, a virtio disk for the qcow2 backend). */
  disks?: Disk[];
  extraArgs?: string[];
  /** QEMU start to SSH up (default 90 s under TCG, 30 s under KVM). */
  bootTimeoutMs?: number;
  /** Directory for the overlay, serial log and sockets (default: a temp dir removed by stop()). */
  dir?: string;
}

/** A TCP port on 127.0.0.1 nobody listens on right now (QEMU binds it a moment later; see boot's retry). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('no port from listen(0)'))));
    });
  });
}

/** QEMU refused to start because the forwarded host port was taken (the retry's test). */
export function portTaken(e: unknown): boolean {
  return e instanceof VmError && /Could not set up host forwarding|Address already in use/i.test(e.message);
}

export class DebianGuest {
  private constructor(
    readonly name: string,
    readonly image: DebianImage,
    readonly vm: Vm,
    readonly target: SshTarget,
    readonly ssh: GuestSsh,
    /** QEMU start to the ready marker (sshd started). */
    readonly bootMs: number,
    /** QEMU start to the first SSH connection. */
    readonly sshMs: number,
    private readonly dir: string,
    private readonly ownDir: boolean,
  ) {}

  static async boot(opts: DebianGuestOptions = {}): Promise<DebianGuest> {
    const image = await ensureDebianImage(opts);
    const name = opts.name ?? `debian-${randomBytes(3).toString('hex')}`;
    const accel = opts.accel ?? 'tcg';
    const timeoutMs = opts.bootTimeoutMs ?? (accel === 'kvm' ? 30_000 : 90_000);
    const ownDir = opts.dir === undefined;
    const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'pcow-debian-')));
    await mkdir(dir, { recursive: true });
    let vm: Vm | undefined;
    try {
      const overlay = join(dir, 'root-overlay.qcow2');
      const r = await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', image.rootImage, overlay], { signal: opts.signal, timeoutMs: 60_000 });
      const why = failure(r);
      if (why) throw new Error(`guest ${name}: creating the root overlay over ${image.rootImage}: ${why}`);
      const token = randomBytes(6).toString('hex');
      let port = 0;
      // The port is free when chosen, and QEMU binds it a moment later: if another process took
      // it in between, QEMU refuses to start ("Could not set up host forwarding"): pick again.
      for (let attempt = 1; ; attempt++) {
        port = await freePort();
        const spec: VmSpec = {
          qemu: opts.qemu,
          accel,
          memory: opts.memory,
          smp: opts.smp,
          kernel: image.bootKernel,
          initrd: image.initrd,
          append: `pcowtoken=${token} pcowroot=${ROOT_SERIAL}`,
          disks: [{ kind: 'virtio-blk', path: overlay, format: 'qcow2', serial: ROOT_SERIAL, cache: 'writeback' }, ...(opts.disks ?? [])],
          extraArgs: opts.extraArgs,
          sshPort: port,
        };
        try {
          vm = await Vm.start(spec, { dir, signal: opts.signal });
          break;
        } catch (e) {
          if (attempt < 4 && portTaken(e)) continue;
          throw e;
        }
      }
      const started = Date.now() - vm.uptimeMs;
      const deadline = started + timeoutMs;
      await vm.waitFor(new RegExp(`PCOW-SSH-READY ${token}`), Math.max(0, deadline - Date.now()), `the guest ${name}'s ready marker (sshd started)`);
      const bootMs = Date.now() - started;
      const theVm = vm;
      const target: SshTarget = {
        name,
        host: '127.0.0.1',
        port,
        user: 'root',
        privateKey: await readFile(image.clientKey),
        hostKey: image.hostKey,
        serialTail: () => theVm.serialTail(25),
        dead: () => theVm.gone(),
      };
      const ssh = await GuestSsh.waitReady(target, { timeoutMs: Math.max(5000, deadline - Date.now()), signal: opts.signal });
      return new DebianGuest(name, image, vm, target, ssh, bootMs, Date.now() - started, dir, ownDir);
    } catch (e) {
      await vm?.stop();
      if (ownDir) await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /** A second, independent connection (e.g. to re-attach to a detached job after a drop). */
  connect(timeoutMs = 30_000): Promise<GuestSsh> {
    return GuestSsh.waitReady(this.target, { timeoutMs });
  }

  /** sync and power off through sysrq (QEMU runs with -no-reboot, so it exits); then stop(). */
  async poweroff(timeoutMs = 20_000): Promise<void> {
    try {
      if (!this.vm.result) {
        const ssh = this.ssh.connected ? this.ssh : await this.connect(10_000);
        // The connection drops as the guest goes down: that is the expected outcome.
        await ssh.execScript('sync; echo o > /proc/sysrq-trigger', { timeoutMs: 15_000 }, 'poweroff').catch(() => undefined);
        await this.vm.waitExit(timeoutMs).catch(() => undefined);
      }
    } finally {
      await this.stop();
    }
  }

  /** Close SSH, stop QEMU (SIGTERM, then SIGKILL), remove a temp dir. Idempotent. */
  async stop(): Promise<void> {
    this.ssh.close();
    await this.vm.stop();
    if (this.ownDir) await rm(this.dir, { recursive: true, force: true });
  }
}
