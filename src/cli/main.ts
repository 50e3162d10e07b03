// pcow-harness command line: run, report, doctor.
import { parseArgs } from 'node:util';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../util/errors.ts';
import { repoRoot } from '../util/paths.ts';
// Command modules are imported when their command runs: `deps` must work before anything else
// is installed, and `doctor` should not load the chart renderer.

const DEFAULT_EXPERIMENT = 'experiments/quick.yaml';

export const usage = `pcow-harness — reproduce and keep checking the pcow paper

usage:
  pcow-harness run [FILE] [--dry-run] [--resume RUN_DIR] [--only key=value ...] [--results DIR]
      Run an experiment (default: ${DEFAULT_EXPERIMENT}). --dry-run lists every cell with its id and
      parameters; --resume continues RUN_DIR, skipping repetitions that already completed; --only keeps
      the cells whose axis has that value (repeat a key for OR, different keys for AND).
  pcow-harness report RUN_DIR
      Re-make samples.csv and report/ (charts, index.html) of a run directory.
  pcow-harness doctor [--json] [--no-kvm] [--install]
      Probe this host: kernel, CPU flags, KVM (boots a tiny guest to see whether it works), userfaultfd,
      pmem/DAX, sysctls and tool versions. It installs nothing unless --install (as root: the packages the
      KVM and userfaultfd probes need), and lists what it did (also cache files: probe kernel, initramfs).

  pcow-harness deps
      Install (as root) the Debian packages the tests need, or print the exact apt-get command.
  pcow-harness build-qemu [--source DIR|TARBALL] [--json]
      Build QEMU with native/qemu/*.patch (memory-backend-file format=pcow) into the cache, or reuse
      the cached build of the same source, patches, libpcow and configure flags. Default source:
      \`apt-get source qemu\` (as root it adds a deb-src entry if there is none).
  pcow-harness build-redis [--source DIR|TARBALL] [--json]
      Build "redis+pmem-AOF (pcow's patch to Debian redis 7.0), not Intel pmem-redis": Debian's Redis
      with native/redis/*.patch (aof-pmem: the AOF persisted through PMDK's libpmem) into the cache,
      or reuse the cached build of the same source, patches, make flags and libraries. Default
      source: \`apt-get source redis\`.
  pcow-harness boot [IMAGE] [--size SIZE] [--accel tcg|kvm]   (default: the boot probe's verdict)
      Build (or reuse) the patched QEMU and boot the test guest on the pcow image IMAGE (default
      pcow-guest.img; created with SIZE, default 4G, when missing): it writes at three offsets of
      /dev/pmem0 and powers off; prints boot times, clusters used, pcow-img check and query-pcow.

npm run experiment -- FILE is "run FILE".`;

/** A wrong command line: printed with the usage text. */
class UsageError extends ConfigError {}

/** The experiment files shipped in experiments/, as paths relative to `cwd`. */
export function availableExperiments(cwd: string): string[] {
  const dir = path.join(repoRoot, 'experiments');
  try {
    return readdirSync(dir)
      .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
      .sort()
      .map((f) => path.relative(cwd, path.join(dir, f)) || f);
  } catch {
    return [];
  }
}

type Options = NonNullable<NonNullable<Parameters<typeof parseArgs>[0]>['options']>;

function parse(args: string[], options: Options) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'run': {
        const { values, positionals } = parse(rest, {
          'dry-run': { type: 'boolean' },
          resume: { type: 'string' },
          only: { type: 'string', multiple: true },
          results: { type: 'string' },
        });
        if (positionals.length > 1) throw new UsageError(`run takes one experiment file, got ${positionals.length}: ${positionals.join(' ')}`);
        // npm runs scripts from the package root; a relative FILE is taken from where the user typed it.
        const cwd = process.env.INIT_CWD ?? process.cwd();
        const file = positionals[0] ? path.resolve(cwd, positionals[0]) : path.join(repoRoot, DEFAULT_EXPERIMENT);
        if (!existsSync(file)) {
          const have = availableExperiments(cwd);
          throw new ConfigError(
            `experiment file not found: ${positionals[0] ?? file}` +
              (have.length ? `; available experiments:\n${have.map((f) => `  ${f}`).join('\n')}` : ' (and there are no experiments/*.yaml)'),
          );
        }
        const { runExperiment } = await import('../run/lifecycle.ts');
        const out = await runExperiment({
          file: path.relative(cwd, file) || file,
          dryRun: values['dry-run'] as boolean | undefined,
          resume: values.resume ? path.resolve(cwd, values.resume as string) : undefined,
          only: values.only as string[] | undefined,
          resultsRoot: values.results ? path.resolve(cwd, values.results as string) : undefined,
          command: ['run', ...rest],
        });
        return out.exitCode;
      }
      case 'report': {
        const { positionals } = parse(rest, {});
        const dir = positionals[0];
        if (!dir || positionals.length > 1) throw new UsageError('report takes one run directory');
        const abs = path.resolve(process.env.INIT_CWD ?? process.cwd(), dir);
        if (!existsSync(path.join(abs, 'manifest.json'))) throw new ConfigError(`${dir}: not a run directory (no manifest.json)`);
        const { writeSamplesCsv } = await import('../results/rundir.ts');
        const { writeReport } = await import('../report/index.ts');
        await writeSamplesCsv(abs);
        const r = await writeReport(abs);
        process.stdout.write(`report: ${r.index}\n`);
        return 0;
      }
      case 'doctor': {
        const { values, positionals } = parse(rest, { json: { type: 'boolean' }, 'no-kvm': { type: 'boolean' }, install: { type: 'boolean' } });
        if (positionals.length > 0) throw new UsageError(`doctor takes no arguments, got: ${positionals.join(' ')}`);
        const { probeHost, formatProbe } = await import('../host/probe.ts');
        const p = await probeHost({ skipKvm: Boolean(values['no-kvm']), install: Boolean(values.install) });
        // Guests booted later (boot, tests, runs) use this verdict without probing again.
        const { rememberAccel } = await import('../vm/accel.ts');
        await rememberAccel(p).catch((e: unknown) => process.stderr.write(`warning: the accelerator verdict was not remembered: ${(e as Error).message}\n`));
        process.stdout.write(values.json ? `${JSON.stringify(p, null, 2)}\n` : `${formatProbe(p)}\n`);
        return 0;
      }
      case 'deps': {
        parse(rest, {});
        const { ensureTestDeps } = await import('./deps.ts');
        await ensureTestDeps((l) => process.stderr.write(`${l}\n`));
        return 0;
      }
      case 'build-qemu': {
        const { values, positionals } = parse(rest, { source: { type: 'string' }, json: { type: 'boolean' } });
        if (positionals.length > 0) throw new UsageError(`build-qemu takes no arguments, got: ${positionals.join(' ')}`);
        const { ensureQemu } = await import('../build/qemu.ts');
        const q = await ensureQemu({ source: values.source as string | undefined, log: (l) => process.stderr.write(`${l}\n`) });
        process.stdout.write(
          values.json
            ? `${JSON.stringify(q, null, 2)}\n`
            : `${q.binary}\n  source ${q.sourceVersion}, patches ${q.patchHash.slice(0, 12)}, libpcow ${q.nativeHash.slice(0, 12)}, binary sha256 ${q.binaryHash.slice(0, 12)}\n  ${q.cached ? 'cached' : 'built'} in ${q.seconds.toFixed(1)} s (log: ${q.logFile})\n`,
        );
        return 0;
      }
      case 'build-redis': {
        const { values, positionals } = parse(rest, { source: { type: 'string' }, json: { type: 'boolean' } });
        if (positionals.length > 0) throw new UsageError(`build-redis takes no arguments, got: ${positionals.join(' ')}`);
        const { ensureRedis } = await import('../build/redis.ts');
        const r = await ensureRedis({ source: values.source as string | undefined, log: (l) => process.stderr.write(`${l}\n`) });
        process.stdout.write(
          values.json
            ? `${JSON.stringify(r, null, 2)}\n`
            : `${r.server}\n  ${r.label}\n  source ${r.sourceVersion}, patches ${r.patchHash.slice(0, 12)}, binary sha256 ${r.binaryHash.slice(0, 12)}, needs ${r.needed.join(' ')}\n  ${r.cached ? 'cached' : 'built'} in ${r.seconds.toFixed(1)} s (log: ${r.logFile})\n`,
        );
        return 0;
      }
      case 'boot': {
        const { values, positionals } = parse(rest, { size: { type: 'string' }, accel: { type: 'string' } });
        if (positionals.length > 1) throw new UsageError(`boot takes one image, got: ${positionals.join(' ')}`);
        const given = values.accel as string | undefined;
        if (given !== undefined && given !== 'tcg' && given !== 'kvm') throw new UsageError(`--accel must be tcg or kvm, got "${given}"`);
        const forced: 'tcg' | 'kvm' | undefined = given;
        const { bootSmoke } = await import('../vm/smoke.ts');
        const { guestAccel } = await import('../vm/accel.ts');
        const log = (l: string): void => void process.stderr.write(`${l}\n`);
        const chosen = forced ? { accel: forced, why: '--accel' } : await guestAccel({ log });
        log(`accelerator: ${chosen.accel} (${chosen.why})`);
        const accel = chosen.accel;
        const image = path.resolve(process.env.INIT_CWD ?? process.cwd(), positionals[0] ?? 'pcow-guest.img');
        const out = await bootSmoke({ image, size: values.size as string | undefined, accel, log });
        process.stdout.write(`${out}\n`);
        return 0;
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(`${usage}\n`);
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${cmd}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`error: ${e.message}\n\n${usage}\n`);
      return 2;
    }
    // Experiment errors carry their own file:line:col lines; print them as they are.
    const name = (e as Error).name;
    process.stderr.write(`${name === 'ExperimentError' ? '' : 'error: '}${(e as Error).message}\n`);
    // Usage and configuration errors (the experiment, --only, --resume, a run directory): 2.
    return e instanceof ConfigError ? 2 : 1;
  }
}
