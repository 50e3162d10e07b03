// SSH into a harness guest (the Debian image, src/vm/image.ts) with ssh2: a ready-wait
// with backoff and a bound that also watches the guest (QEMU gone, kernel panic: polling SSH
// alone would spin until its bound), keepalive, a timeout per command, file and directory
// upload/download over SFTP, and long commands run detached in the guest with a status
// directory, so a dropped connection loses no result and a new connection can re-attach.
//
// Every command is an argv array quoted here for the remote shell (shJoin); no command line is
// ever built by pasting values. Errors are VmErrors naming the guest, the command and the
// serial console's tail.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import ssh2 from 'ssh2';
import type { ClientChannel, ConnectConfig, SFTPWrapper } from 'ssh2';
import { VmError } from './machine.ts';

const { Client } = ssh2;
type Client = InstanceType<typeof Client>;

/** One word for a POSIX shell: single-quoted unless plainly safe. NUL cannot be passed at all. */
export function shQuote(s: string): string {
  if (s.includes('\0')) throw new Error(`a shell argument cannot hold a NUL byte: ${JSON.stringify(s)}`);
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** An argv as one shell command line (each word quoted). */
export function shJoin(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error('empty command');
  return argv.map(shQuote).join(' ');
}

// ---------------------------------------------------------------------------------------------
// Detached jobs. A job is a directory <root>/<id> in the guest holding
//   cmd     the command line (for humans),
//   pid     the job's process (a session leader: setsid),
//   stdout, stderr   its output,
//   rc      its exit status, written (rc.tmp, then rename) only once it has ended.
// The status of a job follows from those files alone, so any connection can ask for it.

export const JOB_ROOT = '/var/lib/pcow/jobs';

export type JobState = 'running' | 'done' | 'lost' | 'missing';

export interface JobStatus {
  state: JobState;
  /** The exit status once done (128+N when killed by signal N, as the shell reports it). */
  exitCode: number | null;
  pid: number | null;
}

function checkJobId(id: string): void {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new Error(`job id ${JSON.stringify(id)} is not [A-Za-z0-9_-]{1,64}`);
}

/** A fresh job id (time-ordered, random suffix). */
export function newJobId(): string {
  return `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

/** Shell text that starts argv detached as job `id` and prints "started PID". */
export function detachedLaunchScript(id: string, argv: readonly string[], opts: { cwd?: string; root?: string } = {}): string {
  checkJobId(id);
  const d = `${opts.root ?? JOB_ROOT}/${id}`;
  // The job's own shell: run the command with its output in files, then publish its status.
  // It publishes its pid first, from inside its new session: the launcher returns only then, so
  // whoever ran the launcher may kill the launcher's process group (the harness's run() does,
  // the end of an SSH session may) without killing a job that had not reached setsid yet.
  const inner = `echo $$ >"$1/pid.tmp"; mv "$1/pid.tmp" "$1/pid"; ${shJoin(argv)} >"$1/stdout" 2>"$1/stderr" </dev/null; echo $? >"$1/rc.tmp"; mv "$1/rc.tmp" "$1/rc"`;
  return [
    'set -e',
    `d=${shQuote(d)}`,
    `mkdir -p ${shQuote(opts.root ?? JOB_ROOT)}`,
    // Not -p: an existing id is an error, never a second job writing into the first one's files.
    'mkdir "$d"',
    `printf '%s\\n' ${shQuote(shJoin(argv))} >"$d/cmd"`,
    `cd ${shQuote(opts.cwd ?? '/')}`,
    // setsid: its own session, so the end of the SSH session (SIGHUP to its group) spares it.
    `setsid sh -c ${shQuote(inner)} pcow-job "$d" </dev/null >/dev/null 2>&1 &`,
    // Wait (up to 10 s) for the job to publish its pid from inside its session.
    'i=0',
    'while [ ! -e "$d/pid" ]; do',
    `  i=$((i + 1)); [ "$i" -le 1000 ] || { echo "job ${id} did not start within 10 s" >&2; exit 1; }`,
    '  sleep 0.01',
    'done',
    'echo "started $(cat "$d/pid")"',
  ].join('\n');
}

const STATUS_FN = (d: string): string =>
  [
    `d=${shQuote(d)}`,
    'status() {',
    '  if [ -e "$d/rc" ]; then echo "state=done rc=$(cat "$d/rc")"; return; fi',
    '  if [ ! -d "$d" ]; then echo "state=missing"; return; fi',
    '  p=$(cat "$d/pid" 2>/dev/null || true)',
    // A zombie (state Z after the ")" of /proc/PID/stat) has ended: its parent did not reap it yet.
    '  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(sed \'s/.*) //\' "/proc/$p/stat" 2>/dev/null | cut -c1)" != Z ]; then echo "state=running pid=$p"; return; fi',
    // The job may have ended between the two tests: look for its status once more.
    '  if [ -e "$d/rc" ]; then echo "state=done rc=$(cat "$d/rc")"; return; fi',
    '  echo "state=lost pid=${p:-none}"',
    '}',
  ].join('\n');

/** Shell text printing the job's status line (see parseJobStatus). */
export function jobStatusScript(id: string, root = JOB_ROOT): string {
  checkJobId(id);
  return `${STATUS_FN(`${root}/${id}`)}\nstatus`;
}

/**
 * Shell text that waits in the guest until the job is no longer running or `seconds` pass,
 * then prints its status line: one round trip per wait, not one per poll.
 */
export function jobWaitScript(id: string, seconds: number, root = JOB_ROOT): string {
  checkJobId(id);
  if (!Number.isInteger(seconds) || seconds < 0) throw new Error(`job wait: ${seconds} is not a whole number of seconds`);
  return [
    STATUS_FN(`${root}/${id}`),
    // Polls counted, not date(1) seconds: those would make a 1 s wait anything from 0 to 1 s.
    `n=${seconds * 5}`,
    'while :; do',
    '  s=$(status)',
    '  case "$s" in state=running*) [ "$n" -gt 0 ] || break; n=$((n - 1)); sleep 0.2 ;; *) break ;; esac',
    'done',
    'echo "$s"',
  ].join('\n');
}

/** The status line printed by jobStatusScript/jobWaitScript. */
export function parseJobStatus(text: string): JobStatus {
  const line = text.trim().split('\n').pop() ?? '';
  const m = /^state=(running|done|lost|missing)(?: rc=(\d+))?(?: pid=(\d+|none))?$/.exec(line.trim());
  if (!m) throw new Error(`job status: cannot parse ${JSON.stringify(text.trim())}`);
  const state = m[1] as JobState;
  if (state === 'done' && m[2] === undefined) throw new Error(`job status: done without an exit status: ${JSON.stringify(line)}`);
  return { state, exitCode: m[2] !== undefined ? Number(m[2]) : null, pid: m[3] !== undefined && m[3] !== 'none' ? Number(m[3]) : null };
}

// ---------------------------------------------------------------------------------------------

export interface SshTarget {
  /** The guest's name in messages. */
  name: string;
  host: string;
  port: number;
  user: string;
  privateKey: Buffer | string;
  /** The pinned host key, an OpenSSH public key line ("ssh-ed25519 AAAA... comment"). */
  hostKey: string;
  /** The serial console's last lines, for errors. */
  serialTail?: () => Promise<string[]>;
  /** Why the guest cannot answer any more (QEMU exited, kernel panic), or null while it may. */
  dead?: () => Promise<string | null>;
}

export interface ExecOptions {
  /** Bound of the command (default 60 s); it is also killed in the guest (timeout(1)). */
  timeoutMs?: number;
  cwd?: string;
  /** Bytes for the command's stdin. */
  input?: string | Buffer;
}

export interface ExecResult {
  command: string;
  stdout: string;
  stderr: string;
  exitCode: number | null;
  signal: string | null;
  durationMs: number;
}

/** The raw key blob of an OpenSSH public key line. */
export function publicKeyBlob(line: string): Buffer {
  const m = /^(\S+)\s+([A-Za-z0-9+/=]+)(\s|$)/.exec(line.trim());
  if (!m?.[2]) throw new Error(`not an OpenSSH public key line: ${JSON.stringify(line.slice(0, 80))}`);
  const blob = Buffer.from(m[2], 'base64');
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  if (len < 0 || blob.toString('latin1', 4, 4 + len) !== m[1]) throw new Error(`public key line: the blob does not start with its type ${m[1]}`);
  return blob;
}

/** Host key algorithm of an OpenSSH public key line, as ssh2 names it. */
function keyType(line: string): string {
  return line.trim().split(/\s+/)[0] ?? '';
}

export class HostKeyMismatchError extends Error {
  constructor(target: SshTarget, offered: Buffer) {
    super(`guest ${target.name} (${target.host}:${target.port}): the SSH host key does not match the pinned one (offered ${keyType(target.hostKey)} ${offered.toString('base64').slice(0, 24)}..., pinned ${target.hostKey.split(/\s+/)[1]?.slice(0, 24)}...); refusing to connect`);
    this.name = 'HostKeyMismatchError';
  }
}

/** The client key is unusable (no attempt can succeed). */
export class SshKeyError extends Error {
  override name = 'SshKeyError';
}

export interface ReadyOptions {
  /** Overall bound (default 60 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** One connection attempt's bound (default 10 s). */
  attemptMs?: number;
}

export class GuestSsh {
  private closed = false;
  private lost: Error | null = null;

  private constructor(
    readonly target: SshTarget,
    private readonly client: Client,
  ) {
    client.on('close', () => {
      this.closed = true;
    });
    client.on('error', (e: Error) => {
      this.lost = e;
    });
  }

  /** One connection attempt; a wrong host key fails with HostKeyMismatchError. */
  static connect(target: SshTarget, timeoutMs = 10_000): Promise<GuestSsh> {
    const pinned = publicKeyBlob(target.hostKey);
    // A key ssh2 cannot read would fail every attempt the same way: say so once, up front.
    const parsed = ssh2.utils.parseKey(target.privateKey);
    if (parsed instanceof Error) return Promise.reject(new SshKeyError(`guest ${target.name}: the client private key cannot be used: ${parsed.message}`));
    return new Promise((resolve, reject) => {
      const client = new Client();
      let mismatch: HostKeyMismatchError | null = null;
      let settled = false;
      const done = (e: Error | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (e) {
          client.removeAllListeners('ready');
          client.on('error', () => {}); // late errors of a dead attempt
          client.destroy();
          reject(e);
        } else {
          resolve(new GuestSsh(target, client));
        }
      };
      const timer = setTimeout(() => done(new Error(`SSH to ${target.host}:${target.port} did not complete within ${timeoutMs} ms`)), timeoutMs);
      client.once('ready', () => done(null));
      client.once('error', (e: Error) => done(mismatch ?? e));
      client.once('close', () => done(mismatch ?? new Error(`SSH to ${target.host}:${target.port}: connection closed during the handshake`)));
      const config: ConnectConfig = {
        host: target.host,
        port: target.port,
        username: target.user,
        privateKey: target.privateKey,
        readyTimeout: timeoutMs,
        // The guest runs under TCG on a loaded host: tolerate a minute of silence.
        keepaliveInterval: 10_000,
        keepaliveCountMax: 6,
        algorithms: { serverHostKey: [keyType(target.hostKey) as 'ssh-ed25519'] },
        hostVerifier: (key: Buffer): boolean => {
          if (key.equals(pinned)) return true;
          mismatch = new HostKeyMismatchError(target, key);
          return false;
        },
      };
      client.connect(config);
    });
  }

  /**
   * Connect once the guest's sshd answers: attempts with backoff (0.25 s doubling to 2 s) until
   * `timeoutMs`, failing at once when the guest is dead (target.dead) or the host key is wrong.
   */
  static async waitReady(target: SshTarget, opts: ReadyOptions = {}): Promise<GuestSsh> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    let delay = 250;
    let last: Error | null = null;
    let attempts = 0;
    for (;;) {
      if (opts.signal?.aborted) throw new Error(`guest ${target.name}: SSH wait aborted`);
      const dead = await target.dead?.();
      if (dead) throw await guestError(target, `never reached SSH: ${dead}`, last);
      attempts++;
      try {
        return await GuestSsh.connect(target, Math.min(opts.attemptMs ?? 10_000, Math.max(1000, deadline - Date.now())));
      } catch (e) {
        if (e instanceof HostKeyMismatchError || e instanceof SshKeyError) throw e;
        last = e as Error;
      }
      if (Date.now() + delay > deadline) {
        throw await guestError(target, `SSH not ready within ${(timeoutMs / 1000).toFixed(0)} s (${attempts} attempts)`, last);
      }
      await sleep(delay);
      delay = Math.min(2000, delay * 2);
    }
  }

  get connected(): boolean {
    return !this.closed;
  }

  /** Close the connection (a detached job keeps running in the guest). */
  close(): void {
    this.closed = true;
    this.client.end();
    this.client.destroy();
  }

  /** Run argv (quoted for the remote shell) and collect its output; a non-zero exit is not an error. */
  exec(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.execScript(shJoin(argv), opts, shJoin(argv));
  }

  /** exec, throwing (with stderr) on a non-zero exit. */
  async check(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const r = await this.exec(argv, opts);
    if (r.exitCode !== 0) throw await this.error(r.command, `exited with ${r.exitCode ?? `signal ${r.signal}`}: ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-5).join(' | ')}`);
    return r;
  }

  /**
   * Run shell text in the guest (the caller quoted every value in it: build it with shQuote or
   * use exec). Bounded by timeout(1) in the guest and by a host timer a little later.
   */
  async execScript(script: string, opts: ExecOptions = {}, label = script.split('\n')[0] ?? script): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const secs = Math.max(1, Math.ceil(timeoutMs / 1000));
    const body = opts.cwd ? `cd ${shQuote(opts.cwd)} && ${script}` : script;
    const remote = `timeout -k 2 ${secs} sh -c ${shQuote(body)}`;
    const started = Date.now();
    if (this.closed) throw await this.error(label, `the SSH connection is closed${this.lost ? ` (${this.lost.message})` : ''}`);
    let stream: ClientChannel;
    try {
      stream = await new Promise<ClientChannel>((resolve, reject) => {
        this.client.exec(remote, (err, s) => (err ? reject(err) : resolve(s)));
      });
    } catch (e) {
      throw await this.error(label, `could not start: ${(e as Error).message}`);
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    stream.on('data', (b: Buffer) => out.push(b));
    stream.stderr.on('data', (b: Buffer) => err.push(b));
    if (opts.input !== undefined) stream.end(opts.input);
    else stream.end();
    let code: number | null = null;
    let signal: string | null = null;
    stream.on('exit', (c: number | null, s?: string) => {
      code = c;
      signal = s ?? null;
    });
    const outcome = await new Promise<'closed' | 'timeout' | 'dropped'>((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), timeoutMs + 5000);
      const onClientClose = (): void => resolve('dropped');
      this.client.once('close', onClientClose);
      stream.once('close', () => {
        clearTimeout(timer);
        this.client.removeListener('close', onClientClose);
        resolve('closed');
      });
    });
    const result: ExecResult = {
      command: label,
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8'),
      exitCode: code,
      signal,
      durationMs: Date.now() - started,
    };
    if (outcome === 'timeout') {
      stream.close();
      throw await this.error(label, `no answer within ${(timeoutMs / 1000).toFixed(0)} s (+5 s grace)`);
    }
    if (outcome === 'dropped' || (code === null && signal === null)) {
      throw await this.error(label, `the connection was lost while it ran${this.lost ? ` (${this.lost.message})` : ''}`);
    }
    if (code === 124 && Date.now() - started >= secs * 1000) {
      throw await this.error(label, `timed out after ${secs} s (killed in the guest by timeout(1))`);
    }
    return result;
  }

  /** Start argv detached as a job in the guest; returns its id (see waitJob, jobStatus). */
  async startDetached(argv: readonly string[], opts: { cwd?: string; id?: string } = {}): Promise<string> {
    const id = opts.id ?? newJobId();
    const r = await this.execScript(detachedLaunchScript(id, argv, { cwd: opts.cwd }), { timeoutMs: 30_000 }, `detached ${shJoin(argv)}`);
    if (r.exitCode !== 0 || !/^started \d+/m.test(r.stdout)) throw await this.error(`detached ${shJoin(argv)}`, `did not start (exit ${r.exitCode}): ${r.stderr.trim()}`);
    return id;
  }

  async jobStatus(id: string): Promise<JobStatus> {
    const r = await this.execScript(jobStatusScript(id), { timeoutMs: 30_000 }, `status of job ${id}`);
    return parseJobStatus(r.stdout);
  }

  /**
   * Wait for a detached job to end and fetch its output. Throws when the job is lost (its
   * process is gone without an exit status: the guest was reset) or missing, or at timeoutMs.
   */
  async waitJob(id: string, opts: { timeoutMs?: number } = {}): Promise<JobStatus & { stdout: string; stderr: string }> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10 * 60_000);
    for (;;) {
      const left = Math.max(0, Math.floor((deadline - Date.now()) / 1000));
      const slice = Math.min(left, 30);
      const r = await this.execScript(jobWaitScript(id, slice), { timeoutMs: (slice + 30) * 1000 }, `wait for job ${id}`);
      const st = parseJobStatus(r.stdout);
      if (st.state === 'done') {
        const d = `${JOB_ROOT}/${id}`;
        const [o, e] = await Promise.all([this.exec(['cat', `${d}/stdout`]), this.exec(['cat', `${d}/stderr`])]);
        return { ...st, stdout: o.stdout, stderr: e.stdout };
      }
      if (st.state !== 'running') throw await this.error(`job ${id}`, st.state === 'lost' ? 'the job ended without an exit status (killed, or the guest restarted)' : `no such job in ${JOB_ROOT}`);
      if (Date.now() >= deadline) throw await this.error(`job ${id}`, `still running after ${((opts.timeoutMs ?? 600_000) / 1000).toFixed(0)} s`);
    }
  }

  private sftp(): Promise<SFTPWrapper> {
    return new Promise((resolve, reject) => this.client.sftp((e, s) => (e ? reject(e) : resolve(s))));
  }

  /** Copy a local file or directory (recursively, modes kept) to `remote` in the guest. */
  async upload(local: string, remote: string): Promise<void> {
    const label = `upload ${local} -> ${remote}`;
    try {
      const sftp = await this.sftp();
      try {
        const put = async (from: string, to: string): Promise<void> => {
          const st = await stat(from);
          if (st.isDirectory()) {
            await new Promise<void>((resolve, reject) => sftp.mkdir(to, { mode: st.mode & 0o7777 }, (e) => (e && (e as { code?: number }).code !== 4 ? reject(e) : resolve())));
            for (const name of (await readdir(from)).sort()) await put(join(from, name), posix.join(to, name));
          } else {
            await new Promise<void>((resolve, reject) => sftp.fastPut(from, to, { mode: st.mode & 0o7777 }, (e) => (e ? reject(e) : resolve())));
          }
        };
        await put(local, remote);
      } finally {
        sftp.end();
      }
    } catch (e) {
      throw await this.error(label, (e as Error).message);
    }
  }

  /** Copy a guest file or directory (recursively) to `local`. */
  async download(remote: string, local: string): Promise<void> {
    const label = `download ${remote} -> ${local}`;
    try {
      const sftp = await this.sftp();
      try {
        const get = async (from: string, to: string): Promise<void> => {
          const st = await new Promise<{ isDirectory(): boolean }>((resolve, reject) => sftp.stat(from, (e, s) => (e ? reject(e) : resolve(s))));
          if (st.isDirectory()) {
            await mkdir(to, { recursive: true });
            const list = await new Promise<{ filename: string }[]>((resolve, reject) => sftp.readdir(from, (e, l) => (e ? reject(e) : resolve(l))));
            for (const { filename } of list.sort((a, b) => a.filename.localeCompare(b.filename))) await get(posix.join(from, filename), join(to, filename));
          } else {
            await new Promise<void>((resolve, reject) => sftp.fastGet(from, to, (e) => (e ? reject(e) : resolve())));
          }
        };
        await get(remote, local);
      } finally {
        sftp.end();
      }
    } catch (e) {
      throw await this.error(label, (e as Error).message);
    }
  }

  /** A VmError naming the guest, the command, why, and (if the guest died) how. */
  private async error(command: string, why: string): Promise<VmError> {
    // QEMU's death reaches the host socket before the harness reaps QEMU: give it a moment.
    let dead = await this.target.dead?.();
    if (!dead && (this.closed || this.lost)) {
      await sleep(500);
      dead = await this.target.dead?.();
    }
    return guestError(this.target, `command ${JSON.stringify(command)} ${why}${dead ? `; the guest is gone: ${dead}` : ''}`, null);
  }
}

async function guestError(target: SshTarget, what: string, cause: Error | null): Promise<VmError> {
  const tail = (await target.serialTail?.().catch(() => [] as string[])) ?? [];
  return new VmError(`guest ${target.name}: ${what}${cause ? ` (last error: ${cause.message})` : ''}`, tail);
}
