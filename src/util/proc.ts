// Child processes for the harness. Every child runs in its own process group so that a timeout,
// an abort or SIGINT of the harness kills the whole tree (fio forks its jobs; qemu may fork
// helpers), and every live group is tracked so the signal handler can reap what is left.
import { execa } from 'execa';

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Aborting kills the process group (SIGTERM, then SIGKILL after graceMs). */
  signal?: AbortSignal;
  timeoutMs?: number;
  graceMs?: number;
  /** Write stdout / stderr to these files instead of buffering them. */
  stdoutFile?: string;
  stderrFile?: string;
  input?: string;
}

export interface RunResult {
  command: string;
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  aborted: boolean;
  durationMs: number;
}

export class ProcessError extends Error {
  constructor(
    message: string,
    readonly result: RunResult,
  ) {
    super(message);
    this.name = 'ProcessError';
  }
}

const liveGroups = new Set<number>();

/** Kill every process group the harness started and that is still alive (used on SIGINT/SIGTERM). */
export function killAllChildren(sig: NodeJS.Signals = 'SIGKILL'): number {
  let n = 0;
  for (const pgid of liveGroups) {
    try {
      process.kill(-pgid, sig);
      n++;
    } catch {
      // already gone
    }
  }
  return n;
}

export function liveChildCount(): number {
  return liveGroups.size;
}

function killGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // the group is gone already
  }
}

function quote(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/**
 * Run a command (argv form, never a shell). Resolves with the result whatever the exit status;
 * use `check` or `runChecked` when a non-zero exit is an error.
 */
export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  const graceMs = opts.graceMs ?? 3000;
  const child = execa(cmd, args, {
    cwd: opts.cwd,
    env: opts.env,
    extendEnv: true,
    detached: true,
    reject: false,
    stripFinalNewline: false,
    input: opts.input,
    stdin: opts.input === undefined ? 'ignore' : 'pipe',
    stdout: opts.stdoutFile ? { file: opts.stdoutFile } : 'pipe',
    stderr: opts.stderrFile ? { file: opts.stderrFile } : 'pipe',
    encoding: 'utf8',
  });
  const pid = child.pid;
  let timedOut = false;
  let aborted = false;
  let forceTimer: NodeJS.Timeout | undefined;
  const stop = (): void => {
    if (pid === undefined) return;
    killGroup(pid, 'SIGTERM');
    forceTimer = setTimeout(() => killGroup(pid, 'SIGKILL'), graceMs);
    forceTimer.unref();
  };
  const onAbort = (): void => {
    aborted = true;
    stop();
  };
  if (pid !== undefined) liveGroups.add(pid);
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const timer =
    opts.timeoutMs !== undefined
      ? setTimeout(() => {
          timedOut = true;
          stop();
        }, opts.timeoutMs)
      : undefined;
  try {
    const r = await child;
    return {
      command: quote(cmd, args),
      exitCode: r.exitCode ?? null,
      signal: r.signal ?? null,
      stdout: typeof r.stdout === 'string' ? r.stdout : '',
      stderr: typeof r.stderr === 'string' ? r.stderr : '',
      timedOut,
      aborted,
      durationMs: Date.now() - started,
    };
  } finally {
    if (timer) clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    // The leader exited; make sure nothing it forked outlives it.
    if (pid !== undefined) {
      killGroup(pid, 'SIGKILL');
      liveGroups.delete(pid);
    }
    if (forceTimer) clearTimeout(forceTimer);
  }
}

/** Describe why a finished process did not succeed, or null if it did. */
export function failure(r: RunResult): string | null {
  if (r.timedOut) return `${r.command}: timed out after ${r.durationMs} ms`;
  if (r.aborted) return `${r.command}: aborted`;
  if (r.exitCode === 0) return null;
  const tail = (r.stderr || r.stdout).trim().split('\n').slice(-5).join('\n');
  const how = r.signal ? `killed by ${r.signal}` : `exit code ${r.exitCode}`;
  return `${r.command}: ${how}${tail ? `\n${tail}` : ''}`;
}

/** Run and throw a ProcessError (with the command and the tail of stderr) unless it exits 0. */
export async function runChecked(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  const why = failure(r);
  if (why) throw new ProcessError(why, r);
  return r;
}

/** Absolute path of a command on PATH, or null. */
export async function which(cmd: string): Promise<string | null> {
  const dirs = (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':');
  const { access, constants } = await import('node:fs/promises');
  for (const d of [...dirs, '/usr/sbin', '/sbin']) {
    const p = `${d}/${cmd}`;
    try {
      await access(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}
