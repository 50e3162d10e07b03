// Installing what the harness needs from Debian. As root the harness runs apt-get itself and
// records the step; otherwise it stops with the exact command to run.
import { access, constants } from 'node:fs/promises';
import type { SetupStep } from '../results/types.ts';
import { failure, run, which } from '../util/proc.ts';

export interface CommandRequirement {
  /** A command name looked up on PATH, or an absolute path that must exist (a header, say). */
  command: string;
  /** The Debian package that provides it. */
  debianPackage: string;
}

export interface InstallOptions {
  signal?: AbortSignal;
  /** Override the root check (tests use it to see the non-root message). */
  root?: boolean;
  /** Bound of one apt-get run (default 15 min). */
  timeoutMs?: number;
  /** Progress lines (what is being installed, and each step's outcome). */
  log?: (line: string) => void;
  /**
   * false: only check, never run apt-get (probes such as `doctor` change nothing on the host);
   * a missing command then throws MissingCommandsError with the command that would install it.
   * Default true.
   */
  install?: boolean;
}

/** Commands are missing and the harness may not install them: the message holds the command. */
export class MissingCommandsError extends Error {
  constructor(
    message: string,
    readonly missing: CommandRequirement[],
    readonly installCommand: string[],
  ) {
    super(message);
    this.name = 'MissingCommandsError';
  }
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export function step(action: string, detail: string, ok = true): SetupStep {
  return { action, detail, ok, at: new Date().toISOString() };
}

/** Where a requirement is found, or null. */
export async function locate(command: string): Promise<string | null> {
  if (command.includes('/')) {
    try {
      await access(command, constants.F_OK);
      return command;
    } catch {
      return null;
    }
  }
  return which(command);
}

// apt-get holds a lock: two concurrent installs (say the KVM probe and the uffd probe) would
// fail on it, so installs in this process run one at a time.
let queue: Promise<unknown> = Promise.resolve();
function serialized<T>(fn: () => Promise<T>): Promise<T> {
  const next = queue.then(fn, fn);
  queue = next.catch(() => undefined);
  return next;
}

const aptEnv = { DEBIAN_FRONTEND: 'noninteractive', APT_LISTCHANGES_FRONTEND: 'none' };

function installArgv(pkgs: string[]): string[] {
  return ['apt-get', 'install', '-y', '--no-install-recommends', ...pkgs];
}

/** apt-get's way of saying its package lists are missing or stale. */
function listsLookStale(out: string): boolean {
  return /Unable to locate package|has no installation candidate|Unable to fetch some archives|404\s+Not Found|Failed to fetch/i.test(out);
}

/**
 * Make sure every command exists. Missing ones are installed with apt-get when running as root
 * (after `apt-get update` if the package lists are missing), and each apt-get run is returned
 * as a step; when not root, throws MissingCommandsError naming the exact command to run.
 * Returns [] when nothing was missing.
 */
export async function ensureCommands(reqs: readonly CommandRequirement[], opts: InstallOptions = {}): Promise<SetupStep[]> {
  const missing = await missingOf(reqs);
  if (missing.length === 0) return [];
  return serialized(async () => {
    // Another caller may have installed them while we waited for the queue.
    const still = await missingOf(missing);
    if (still.length === 0) return [];
    const pkgs = [...new Set(still.map((r) => r.debianPackage))].sort();
    const argv = installArgv(pkgs);
    const what = still.map((r) => `${r.command} (package ${r.debianPackage})`).join(', ');
    if (opts.install === false) {
      throw new MissingCommandsError(`missing: ${what} (not installed by this probe; install with: ${argv.join(' ')})`, still, argv);
    }
    const root = opts.root ?? isRoot();
    if (!root) {
      throw new MissingCommandsError(
        `missing: ${what}. Install as root with:\n  ${argv.join(' ')}`,
        still,
        argv,
      );
    }
    if ((await which('apt-get')) === null) {
      throw new MissingCommandsError(
        `missing: ${what}, and apt-get is not available on this host to install them; install the packages ${pkgs.join(' ')} (Debian names) with the system's package manager`,
        still,
        argv,
      );
    }
    const steps: SetupStep[] = [];
    const timeoutMs = opts.timeoutMs ?? 15 * 60_000;
    const install = async (): Promise<string | null> => {
      opts.log?.(`installing ${pkgs.join(' ')} (missing ${still.map((x) => x.command).join(', ')}): ${argv.join(' ')}`);
      const r = await run(argv[0]!, argv.slice(1), { env: aptEnv, signal: opts.signal, timeoutMs });
      const why = failure(r);
      steps.push(step('install', `${argv.join(' ')} (for ${still.map((x) => x.command).join(', ')}): ${why === null ? `ok in ${(r.durationMs / 1000).toFixed(1)} s` : why}`, why === null));
      return why === null ? null : `${r.stdout}\n${r.stderr}`;
    };
    let out = await install();
    if (out !== null && listsLookStale(out)) {
      const u = await run('apt-get', ['update'], { env: aptEnv, signal: opts.signal, timeoutMs });
      const why = failure(u);
      steps.push(step('install', `apt-get update (package lists missing or stale): ${why ?? 'ok'}`, why === null));
      if (why === null) out = await install();
    }
    for (const s of steps) opts.log?.(`${s.action}: ${s.detail}`);
    const after = await missingOf(still);
    if (out !== null || after.length > 0) {
      const last = steps[steps.length - 1];
      throw new MissingCommandsError(
        `could not install ${pkgs.join(' ')}: ${last?.detail ?? 'unknown error'}` +
          (after.length > 0 ? `\nstill missing: ${after.map((r) => r.command).join(', ')}` : ''),
        after.length > 0 ? after : still,
        argv,
      );
    }
    return steps;
  });
}

async function missingOf(reqs: readonly CommandRequirement[]): Promise<CommandRequirement[]> {
  const found = await Promise.all(reqs.map((r) => locate(r.command)));
  return reqs.filter((_, i) => found[i] === null);
}

/**
 * Run an apt query (apt-cache, apt-get download); if it fails because the package lists are
 * missing and we are root, run `apt-get update` once and retry. Returns the final result's
 * stdout, throws with the command and its error otherwise.
 */
export async function aptRun(
  cmd: string,
  args: string[],
  opts: { cwd?: string; signal?: AbortSignal; timeoutMs?: number; root?: boolean } = {},
): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 10 * 60_000;
  const once = () => run(cmd, args, { cwd: opts.cwd, env: aptEnv, signal: opts.signal, timeoutMs });
  let r = await once();
  let why = failure(r);
  // apt-cache prints "E: No packages found" / "Unable to locate" with an empty package list.
  if (why !== null && (opts.root ?? isRoot()) && (listsLookStale(`${r.stdout}\n${r.stderr}`) || /No packages found|Can't select|not available/i.test(r.stderr))) {
    await serialized(() => run('apt-get', ['update'], { env: aptEnv, signal: opts.signal, timeoutMs }));
    r = await once();
    why = failure(r);
  }
  if (why !== null) throw new Error(why);
  return r.stdout;
}
