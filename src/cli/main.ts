// pcow-harness command line: run, report, merge, compare, calibrate, doctor.
import { parseArgs } from 'node:util';
import { existsSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../util/errors.ts';
import { repoRoot } from '../util/paths.ts';
import type { AccelChoice } from '../vm/accel.ts';
// Command modules are imported when their command runs: `deps` must work before anything else
// is installed, and `doctor` should not load the chart renderer.

const DEFAULT_EXPERIMENT = 'experiments/quick.yaml';

export const usage = `pcow-harness — reproduce and keep checking the pcow paper

usage:
  pcow-harness run [FILE] [--profile NAME] [--dry-run] [--resume RUN_DIR] [--only key=value ...] [--results DIR] [--shard I/N]
      Run an experiment (default: ${DEFAULT_EXPERIMENT}). --dry-run lists every cell with its id and
      parameters; --resume continues RUN_DIR, skipping repetitions that already completed; --only keeps
      the cells whose axis has that value (repeat a key for OR, different keys for AND); --shard I/N runs
      part I of N of the matrix (whole cells, placed by cell hash and estimated cost: deterministic).
      --profile NAME applies the file's profile NAME (default: ci when the file has profiles; e.g.
      ci = small sizes for a TCG host, paper = the paper's sizes for KVM/Optane hosts).
  pcow-harness report RUN_DIR
      Re-make samples.csv and report/ (charts, index.html) of a run directory.
  pcow-harness merge OUT SHARD_DIR...
      Join the run directories of shards 1..N of one run into the new run directory OUT (each shard's
      host provenance kept). Missing or duplicate shards, or another experiment file, are errors (2).
  pcow-harness compare BASE NEW [--threshold PCT] [--min-reps K] [--metric NAME ...] [--markdown FILE|-]
                       [--json FILE] [--calibration FILE] [--fail-on-regression] [--allow FIELD ...] [--force]
      Per cell and metric: change of the mean with a bootstrap 95% interval and a verdict (regression,
      improvement, no change, inconclusive) that needs the interval to exclude 0 and |change| above the
      threshold (default: the host's calibrated noise, else 5%), from at least K repetitions per side
      (default 3). Exit: 0 compared; 3 a regression with --fail-on-regression; 4 not comparable
      (fields accelerator, pm, qemu, libpcow, host [kind], experiment differ) unless --force, or --allow FIELD
      for an expected difference (a nightly job comparing new code: --allow qemu --allow libpcow).
  pcow-harness calibrate [FILE] [--cell ID ...] [--only key=value ...] [--runs N] [--out FILE] [--results DIR]
      Run the cells N times back to back (default 5) and store this host's noise floor per cell and
      metric (95th percentile of |change| between two A/A runs) in
      ~/.cache/pcow/calibration/<host>/<experiment>.json (or --out), where compare finds it.
  pcow-harness claims RUN_DIR... [--out FILE] [--claims FILE]
      One page (default results/claims.html) with every claim of experiments/claims/claims.yaml,
      each checked on the newest given run of its experiment (e.g. the eight ci runs); also printed
      as markdown. A claim whose experiment is not among the runs is "not run".
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
  pcow-harness build-guest [--boot] [--accel tcg|kvm] [--json]   (default accel: the boot probe's verdict)
      Build (or reuse) the Debian guest image the experiments log into over SSH (debootstrap bookworm
      minbase + fio, redis, ndctl, PMDK; qcow2 + initrd + pinned host key) in the cache; --boot also
      boots it once and prints the time to SSH.
  pcow-harness build-redis [--source DIR|TARBALL] [--json]
      Build "redis+pmem-AOF (pcow's patch to Debian redis 7.0), not Intel pmem-redis": Debian's Redis
      with native/redis/*.patch (aof-pmem: the AOF persisted through PMDK's libpmem) into the cache,
      or reuse the cached build of the same source, patches, make flags and libraries. Default
      source: \`apt-get source redis\`.
  pcow-harness boot [IMAGE] [--size SIZE] [--accel tcg|kvm]   (default accel: the boot probe's verdict)
      Build (or reuse) the patched QEMU and boot the test guest on the pcow image IMAGE (default
      pcow-guest.img; created with SIZE, default 4G, when missing): it writes at three offsets of
      /dev/pmem0 and powers off; prints boot times, clusters used, pcow-img check and query-pcow.

npm run experiment -- FILE is "run FILE".`;

/** compare --fail-on-regression found a regression. */
export const EXIT_REGRESSION = 3;
/** compare refused runs whose provenance differs (no --force). */
export const EXIT_NOT_COMPARABLE = 4;

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

/** --accel if given (checked), else the boot probe's verdict (src/vm/accel.ts), logged with why. */
async function chooseAccel(given: string | undefined, log: (line: string) => void): Promise<AccelChoice['accel']> {
  if (given !== undefined && given !== 'tcg' && given !== 'kvm') throw new UsageError(`--accel must be tcg or kvm, got "${given}"`);
  const { guestAccel } = await import('../vm/accel.ts');
  const chosen: AccelChoice = given === 'tcg' || given === 'kvm' ? { accel: given, why: '--accel' } : await guestAccel({ log });
  log(`accelerator: ${chosen.accel} (${chosen.why})`);
  return chosen.accel;
}

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
          shard: { type: 'string' },
          profile: { type: 'string' },
        });
        if (positionals.length > 1) throw new UsageError(`run takes one experiment file, got ${positionals.length}: ${positionals.join(' ')}`);
        const { parseShard } = await import('../experiment/shard.ts');
        const shard = values.shard === undefined ? undefined : parseShard(values.shard as string);
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
          shard,
          profile: values.profile as string | undefined,
        });
        return out.exitCode;
      }
      case 'merge': {
        const { positionals } = parse(rest, {});
        if (positionals.length < 2) throw new UsageError('merge takes the output directory and at least one shard run directory');
        const cwd = process.env.INIT_CWD ?? process.cwd();
        const [out, ...dirs] = positionals.map((p) => path.resolve(cwd, p));
        const { mergeShards } = await import('../results/merge.ts');
        const m = await mergeShards(out as string, dirs);
        process.stdout.write(`merged ${dirs.length} shards, ${m.cells} cells (${m.manifest.cells.ok} ok): ${m.dir}\n`);
        return m.manifest.status === 'completed' ? 0 : 1;
      }
      case 'compare': {
        const { values, positionals } = parse(rest, {
          threshold: { type: 'string' },
          'min-reps': { type: 'string' },
          metric: { type: 'string', multiple: true },
          markdown: { type: 'string' },
          json: { type: 'string' },
          calibration: { type: 'string' },
          'fail-on-regression': { type: 'boolean' },
          force: { type: 'boolean' },
          allow: { type: 'string', multiple: true },
        });
        if (positionals.length !== 2) throw new UsageError(`compare takes two run directories (BASE NEW), got ${positionals.length}`);
        const cwd = process.env.INIT_CWD ?? process.cwd();
        const [base, next] = positionals.map((p) => path.resolve(cwd, p)) as [string, string];
        for (const [d, given] of [[base, positionals[0]], [next, positionals[1]]] as const) {
          if (!existsSync(path.join(d, 'manifest.json'))) throw new ConfigError(`${given}: not a run directory (no manifest.json)`);
        }
        const number = (name: string, v: unknown, min: number): number | undefined => {
          if (v === undefined) return undefined;
          const n = Number(v);
          if (!Number.isFinite(n) || n < min) throw new UsageError(`--${name} must be a number >= ${min}, got "${String(v)}"`);
          return n;
        };
        const thresholdPct = number('threshold', values.threshold, 0);
        const minReps = number('min-reps', values['min-reps'], 1);
        if (minReps !== undefined && !Number.isInteger(minReps)) throw new UsageError(`--min-reps must be a whole number, got "${String(values['min-reps'])}"`);
        const { compareRuns, toMarkdown, toTable, refusalMessage } = await import('../compare/compare.ts');
        const { COMPARED_FIELDS } = await import('../compare/provenance.ts');
        const allow = (values.allow as string[] | undefined) ?? [];
        for (const f of allow) {
          if (!(COMPARED_FIELDS as readonly string[]).includes(f)) throw new UsageError(`--allow ${f}: not a provenance field; fields: ${COMPARED_FIELDS.join(', ')}`);
        }
        const { readCalibration } = await import('../compare/calibration.ts');
        const calibration = values.calibration ? readCalibration(path.resolve(cwd, values.calibration as string)) : undefined;
        const c = compareRuns(base, next, {
          thresholdPct,
          minReps,
          metrics: values.metric as string[] | undefined,
          force: Boolean(values.force),
          allow: allow as (typeof COMPARED_FIELDS)[number][],
          calibration,
        });
        const md = values.markdown as string | undefined;
        if (md === '-') process.stdout.write(toMarkdown(c));
        else {
          process.stdout.write(toTable(c));
          if (md) await writeFile(path.resolve(cwd, md), toMarkdown(c));
        }
        if (values.json) await writeFile(path.resolve(cwd, values.json as string), `${JSON.stringify(c, null, 2)}\n`);
        if (c.refused) {
          process.stderr.write(`error: ${refusalMessage(c)}\n`);
          return EXIT_NOT_COMPARABLE;
        }
        return values['fail-on-regression'] && c.counts.regression > 0 ? EXIT_REGRESSION : 0;
      }
      case 'calibrate': {
        const { values, positionals } = parse(rest, {
          cell: { type: 'string', multiple: true },
          only: { type: 'string', multiple: true },
          runs: { type: 'string' },
          out: { type: 'string' },
          results: { type: 'string' },
        });
        if (positionals.length > 1) throw new UsageError(`calibrate takes one experiment file, got ${positionals.length}`);
        const runs = values.runs === undefined ? 5 : Number(values.runs);
        if (!Number.isInteger(runs) || runs < 2) throw new UsageError(`--runs must be a whole number >= 2, got "${String(values.runs)}"`);
        const cwd = process.env.INIT_CWD ?? process.cwd();
        const file = positionals[0] ? path.resolve(cwd, positionals[0]) : path.join(repoRoot, DEFAULT_EXPERIMENT);
        if (!existsSync(file)) throw new ConfigError(`experiment file not found: ${positionals[0] ?? file}`);
        const only = [...((values.only as string[] | undefined) ?? []), ...((values.cell as string[] | undefined) ?? []).map((id) => `id=${id}`)];
        const { runExperiment } = await import('../run/lifecycle.ts');
        const { recordCalibration } = await import('../compare/calibration.ts');
        const dirs: string[] = [];
        for (let i = 0; i < runs; i++) {
          process.stderr.write(`calibrate: A/A run ${i + 1}/${runs}\n`);
          const out = await runExperiment({
            file: path.relative(cwd, file) || file,
            only,
            resultsRoot: values.results ? path.resolve(cwd, values.results as string) : undefined,
            skipReport: true,
            command: ['calibrate', ...rest],
          });
          if (out.exitCode !== 0 || !out.runDir) {
            process.stderr.write(`error: calibration run ${i + 1} did not complete (exit ${out.exitCode}${out.runDir ? `, ${out.runDir}` : ''}): no calibration recorded\n`);
            return out.exitCode || 1;
          }
          dirs.push(out.runDir);
        }
        const r = await recordCalibration(dirs, values.out ? path.resolve(cwd, values.out as string) : undefined);
        const { fmtPct } = await import('../compare/compare.ts');
        for (const hash of Object.keys(r.calibration.cells).filter((h) => r.added.includes(r.calibration.cells[h]?.id ?? ''))) {
          const c = r.calibration.cells[hash];
          if (!c) continue;
          const shown = Object.entries(c.metrics).slice(0, 6).map(([m, n]) => `${m} ±${fmtPct(n.p95AbsChangePct, false)}`);
          process.stdout.write(`${c.id}: ${shown.join(', ')}${Object.keys(c.metrics).length > 6 ? ', …' : ''}\n`);
        }
        process.stdout.write(`noise calibration (${runs} A/A runs, ${r.added.length} cells): ${r.file}\n`);
        return 0;
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
        if (r.claims.length) {
          const { claimsMarkdown } = await import('../report/claims.ts');
          process.stdout.write(claimsMarkdown(r.claims));
        }
        if (r.claimsProblem) process.stderr.write(`warning: ${r.claimsProblem}\n`);
        process.stdout.write(`report: ${r.index}\n`);
        return 0;
      }
      case 'claims': {
        const { values, positionals } = parse(rest, { out: { type: 'string' }, claims: { type: 'string' } });
        if (positionals.length === 0) throw new UsageError('claims takes one or more run directories');
        const cwd = process.env.INIT_CWD ?? process.cwd();
        const dirs = positionals.map((d) => path.resolve(cwd, d));
        for (const [i, d] of dirs.entries()) {
          if (!existsSync(path.join(d, 'manifest.json'))) throw new ConfigError(`${positionals[i]}: not a run directory (no manifest.json)`);
        }
        const out = path.resolve(cwd, (values.out as string | undefined) ?? 'results/claims.html');
        const { writeClaimsPage } = await import('../report/index.ts');
        const { claimsMarkdown } = await import('../report/claims.ts');
        const results = await writeClaimsPage(dirs, out, { claimsFile: values.claims as string | undefined });
        process.stdout.write(claimsMarkdown(results));
        process.stdout.write(`claims: ${out}\n`);
        return 0;
      }
      case 'doctor': {
        const { values, positionals } = parse(rest, { json: { type: 'boolean' }, 'no-kvm': { type: 'boolean' }, install: { type: 'boolean' } });
        if (positionals.length > 0) throw new UsageError(`doctor takes no arguments, got: ${positionals.join(' ')}`);
        const { probeHost, formatProbe } = await import('../host/probe.ts');
        const p = await probeHost({ skipKvm: Boolean(values['no-kvm']), install: Boolean(values.install) });
        // Guests booted later (boot, tests, runs) use this verdict without probing again.
        const { rememberAccel } = await import('../vm/accel.ts');
        await rememberAccel({ kvm: p.kvm, tcg: p.tcg, accelerator: p.accelerator, kernel: p.guestKernel }).catch((e: unknown) => process.stderr.write(`warning: the accelerator verdict was not remembered: ${(e as Error).message}\n`));
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
      case 'build-guest': {
        const { values, positionals } = parse(rest, { boot: { type: 'boolean' }, accel: { type: 'string' }, json: { type: 'boolean' } });
        if (positionals.length > 0) throw new UsageError(`build-guest takes no arguments, got: ${positionals.join(' ')}`);
        const log = (l: string): void => void process.stderr.write(`${l}\n`);
        const accel = await chooseAccel(values.accel as string | undefined, log);
        const { ensureDebianImage } = await import('../vm/image.ts');
        const img = await ensureDebianImage({ log });
        let boot: { bootMs: number; sshMs: number; uname: string } | undefined;
        if (values.boot) {
          const { DebianGuest } = await import('../vm/debian.ts');
          const g = await DebianGuest.boot({ accel, name: 'build-guest', log });
          try {
            boot = { bootMs: g.bootMs, sshMs: g.sshMs, uname: (await g.ssh.check(['uname', '-r'])).stdout.trim() };
            await g.poweroff();
          } finally {
            await g.stop();
          }
        }
        process.stdout.write(
          values.json
            ? `${JSON.stringify({ ...img, boot }, null, 2)}\n`
            : `${img.rootImage}\n  ${img.packages.length} packages, qcow2 ${(img.rootImageBytes / 1e6).toFixed(0)} MB (files ${(img.rootfsBytes / 1e6).toFixed(0)} MB), kernel ${img.kernel.release}\n  ${img.cached ? `cached (built in ${img.buildSeconds.toFixed(0)} s)` : 'built'} in ${img.seconds.toFixed(1)} s (log: ${img.logFile})\n` +
                (boot ? `  boot (${accel}): ready marker ${(boot.bootMs / 1000).toFixed(1)} s, SSH ${(boot.sshMs / 1000).toFixed(1)} s after QEMU started (uname -r: ${boot.uname})\n` : ''),
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
        const log = (l: string): void => void process.stderr.write(`${l}\n`);
        const accel = await chooseAccel(values.accel as string | undefined, log);
        const { bootSmoke } = await import('./smoke.ts');
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
