// Test helpers for the redis+pmem-AOF build: a redis-server on a unix socket in a directory
// (tmpfs in the tests: emulated PM), killed with SIGKILL or stopped, and a minimal RESP client
// that pipelines binary-safe commands (so a test knows exactly which writes were acknowledged).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export type Reply = string | number | Buffer | null | Reply[] | RespError;

export class RespError extends Error {
  override readonly name = 'RespError';
}

/** Parse one reply at buf[at]; null when incomplete. */
function parseReply(buf: Buffer, at: number): { value: Reply; next: number } | null {
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return null;
  const type = String.fromCharCode(buf[at]!);
  const line = buf.toString('latin1', at + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+':
      return { value: line, next };
    case '-':
      return { value: new RespError(line), next };
    case ':':
      return { value: Number(line), next };
    case '$': {
      const n = Number(line);
      if (n < 0) return { value: null, next };
      if (buf.length < next + n + 2) return null;
      return { value: buf.subarray(next, next + n), next: next + n + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return { value: null, next };
      const items: Reply[] = [];
      let p = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, p);
        if (!r) return null;
        items.push(r.value);
        p = r.next;
      }
      return { value: items, next: p };
    }
    default:
      throw new Error(`RESP: unexpected type byte ${JSON.stringify(type)} in reply`);
  }
}

export function encodeCommand(args: readonly (string | Buffer | number)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a));
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** One connection; commands are pipelined and their replies resolve in order. */
export class RespClient {
  private buf: Buffer = Buffer.alloc(0);
  private waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];
  private closedWith: Error | null = null;
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      let at = 0;
      for (;;) {
        const r = parseReply(this.buf, at);
        if (!r) break;
        at = r.next;
        this.waiting.shift()?.resolve(r.value);
      }
      this.buf = this.buf.subarray(at);
    });
    const fail = (e: Error): void => {
      this.closedWith ??= e;
      for (const w of this.waiting.splice(0)) w.reject(this.closedWith);
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('connection closed')));
  }

  static connect(socketPath: string): Promise<RespClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(socketPath);
      s.once('connect', () => resolve(new RespClient(s)));
      s.once('error', reject);
    });
  }

  send(...args: (string | Buffer | number)[]): Promise<Reply> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.sock.write(encodeCommand(args));
    });
  }

  /** Like send, but a Redis error reply throws. */
  async call(...args: (string | Buffer | number)[]): Promise<Reply> {
    const r = await this.send(...args);
    if (r instanceof RespError) throw new Error(`${args.slice(0, 2).join(' ')}: ${r.message}`);
    return r;
  }

  close(): void {
    this.sock.destroy();
  }
}

export interface ServerOptions {
  /** aof-pmem yes/no. */
  pmem: boolean;
  extra?: string[];
  env?: Record<string, string>;
}

/** A redis-server with its AOF in `dir`, reachable on dir/redis.sock. */
export class RedisServer {
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private constructor(
    readonly proc: ChildProcess,
    readonly dir: string,
    readonly sock: string,
    readonly logFile: string,
  ) {
    this.exited = new Promise((res) => proc.once('exit', (code, signal) => res({ code, signal })));
  }

  static argv(dir: string, o: ServerOptions, logName = 'redis.log'): string[] {
    return [
      '--port', '0',
      '--unixsocket', path.join(dir, 'redis.sock'),
      '--dir', dir,
      '--logfile', path.join(dir, logName),
      '--save', '',
      '--appendonly', 'yes',
      '--appendfsync', 'always',
      '--aof-pmem', o.pmem ? 'yes' : 'no',
      ...(o.extra ?? []),
    ];
  }

  static async start(binary: string, dir: string, o: ServerOptions): Promise<RedisServer> {
    const sock = path.join(dir, 'redis.sock');
    const logFile = path.join(dir, 'redis.log');
    const proc = spawn(binary, RedisServer.argv(dir, o), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(o.env ?? {}) } });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const s = new RedisServer(proc, dir, sock, logFile);
    let done = false;
    void s.exited.then(() => (done = true));
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (done) throw new Error(`redis-server exited at start: ${out}\n${s.logTail()}`);
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`redis-server did not answer PING in 60 s\n${s.logTail()}`);
      }
      if (existsSync(sock)) {
        const c = await RespClient.connect(sock).catch(() => null);
        if (c) {
          const r = await c.send('PING').catch(() => null);
          c.close();
          if (r === 'PONG') return s;
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  logTail(lines = 30): string {
    if (!existsSync(this.logFile)) return '(no log)';
    return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n');
  }

  log(): string {
    return existsSync(this.logFile) ? readFileSync(this.logFile, 'utf8') : '';
  }

  client(): Promise<RespClient> {
    return RespClient.connect(this.sock);
  }

  async kill9(): Promise<void> {
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** The INFO field `name` (persistence section and others). */
  async info(name: string): Promise<string> {
    const c = await this.client();
    try {
      const text = ((await c.call('INFO')) as Buffer).toString();
      const m = new RegExp(`^${name}:(.*)\\r?$`, 'm').exec(text);
      if (!m) throw new Error(`INFO has no field ${name}`);
      return m[1]!.trim();
    } finally {
      c.close();
    }
  }
}
