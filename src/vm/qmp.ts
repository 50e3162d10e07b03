// A QMP client over a unix socket: the greeting, capability negotiation, commands matched to
// their replies by id, events kept in arrival order, and a timeout on everything that waits.
import { createConnection, type Socket } from 'node:net';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends Error {
  constructor(
    message: string,
    /** QMP's error class (e.g. GenericError, CommandNotFound), or 'Timeout' / 'Closed'. */
    readonly errorClass: string,
  ) {
    super(message);
    this.name = 'QmpError';
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface EventWaiter {
  match: (e: QmpEvent) => boolean;
  resolve: (e: QmpEvent) => void;
  reject: (e: Error) => void;
}

export class QmpClient {
  /** Every event received so far, oldest first. */
  readonly events: QmpEvent[] = [];
  /** The greeting's QEMU version, e.g. { major: 7, minor: 2, micro: 22 }. */
  version: { major: number; minor: number; micro: number } | null = null;
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private waiters: EventWaiter[] = [];
  private closedReason: string | null = null;
  private greeting: { resolve: (g: Record<string, unknown>) => void; reject: (e: Error) => void } | null = null;

  private constructor(
    private readonly sock: Socket,
    readonly path: string,
  ) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('error', (e) => this.close(`socket error: ${e.message}`));
    sock.on('close', () => this.close('QEMU closed the QMP connection'));
  }

  /** Connect, read the greeting and leave capability negotiation mode. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const sock = createConnection(path);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        sock.destroy();
        reject(new QmpError(`QMP ${path}: no connection within ${timeoutMs} ms`, 'Timeout'));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(t);
        resolve();
      });
      sock.once('error', (e) => {
        clearTimeout(t);
        reject(new QmpError(`QMP ${path}: cannot connect: ${e.message}`, 'Closed'));
      });
    });
    const c = new QmpClient(sock, path);
    const greeting = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const t = setTimeout(() => reject(new QmpError(`QMP ${path}: no greeting within ${timeoutMs} ms`, 'Timeout')), timeoutMs);
      c.greeting = {
        resolve: (g) => {
          clearTimeout(t);
          resolve(g);
        },
        // QEMU may accept the connection and exit before greeting (a device that fails to start).
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      };
    }).catch((e: unknown) => {
      c.close('no greeting');
      throw e;
    });
    const v = (greeting.QMP as { version?: { qemu?: { major: number; minor: number; micro: number } } } | undefined)?.version?.qemu;
    if (v) c.version = v;
    await c.execute('qmp_capabilities', undefined, timeoutMs);
    return c;
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.close(`QEMU sent a line that is not JSON: ${line.slice(0, 200)}`);
      return;
    }
    if ('QMP' in msg) {
      this.greeting?.resolve(msg);
      this.greeting = null;
      return;
    }
    if (typeof msg.event === 'string') {
      const ev = msg as unknown as QmpEvent;
      this.events.push(ev);
      const still: EventWaiter[] = [];
      for (const w of this.waiters) {
        if (w.match(ev)) w.resolve(ev);
        else still.push(w);
      }
      this.waiters = still;
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const p = id !== undefined ? this.pending.get(id) : undefined;
    if (!p || id === undefined) return; // a reply nobody waits for (timed out already)
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in msg) {
      const err = msg.error as { class?: string; desc?: string };
      p.reject(new QmpError(`QMP ${p.command}: ${err.desc ?? 'error'} (${err.class ?? 'unknown class'})`, err.class ?? 'unknown'));
    } else {
      p.resolve(msg.return);
    }
  }

  /** Run a command; resolves with its `return` value, rejects with a QmpError naming it. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
    if (this.closedReason !== null) return Promise.reject(new QmpError(`QMP ${command}: connection closed (${this.closedReason})`, 'Closed'));
    const id = `pcow-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpError(`QMP ${command}: no reply within ${timeoutMs} ms`, 'Timeout'));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.sock.write(`${JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id })}\n`);
    });
  }

  /** The first event (already received or future) named `name` that satisfies `match`. */
  waitEvent(name: string, timeoutMs = 30_000, match: (e: QmpEvent) => boolean = () => true, since = 0): Promise<QmpEvent> {
    const seen = this.events.slice(since).find((e) => e.event === name && match(e));
    if (seen) return Promise.resolve(seen);
    if (this.closedReason !== null) return Promise.reject(new QmpError(`QMP: waiting for ${name}, but the connection is closed (${this.closedReason})`, 'Closed'));
    return new Promise<QmpEvent>((resolve, reject) => {
      const w: EventWaiter = {
        match: (e) => e.event === name && match(e),
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new QmpError(`QMP: no ${name} event within ${timeoutMs} ms`, 'Timeout'));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  get closed(): boolean {
    return this.closedReason !== null;
  }

  /** Close the connection; pending commands fail with the reason. */
  close(reason = 'closed by the harness'): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    this.greeting?.reject(new QmpError(`QMP ${this.path}: ${reason} before its greeting`, 'Closed'));
    this.greeting = null;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new QmpError(`QMP ${p.command}: ${reason}`, 'Closed'));
    }
    this.pending.clear();
    for (const w of this.waiters) w.reject(new QmpError(`QMP: event wait ended: ${reason}`, 'Closed'));
    this.waiters = [];
    this.sock.destroy();
  }
}
