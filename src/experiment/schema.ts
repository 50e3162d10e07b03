// The experiment file format. Every object is strict: an unknown key is an error, so a typo
// never silently falls back to a default.
import { z } from 'zod';
import { describeValue } from './errors.ts';
import { DURATION_HINT, SIZE_HINT, durationProblem, parseDuration, parseSize, sizeProblem } from './units.ts';

/** "64KiB", "1G", "4k", 4096 → bytes via parseSize (binary units: k = KiB = 1024). Kept as written. */
export const Size = z.union(
  [
    z.number().int().nonnegative(),
    z.string().check((ctx) => {
      const problem = sizeProblem(ctx.value);
      if (problem) ctx.issues.push({ code: 'custom', message: problem, input: ctx.value });
    }),
  ],
  { error: (iss) => `${SIZE_HINT}, got ${describeValue(iss.input)}` },
);
/** Size normalised to bytes: for tool schemas, so "4k" and 4096 are the same parameter (and cell hash). */
export const SizeBytes = Size.transform((v) => parseSize(v));

/** "30s", "5m", "1h30m", 120 (seconds) → milliseconds via parseDuration. Kept as written. */
export const Duration = z.union(
  [
    z.number().positive(),
    z.string().check((ctx) => {
      const problem = durationProblem(ctx.value);
      if (problem) ctx.issues.push({ code: 'custom', message: problem, input: ctx.value });
      else if (parseDuration(ctx.value) <= 0) ctx.issues.push({ code: 'custom', message: 'a duration must be longer than 0', input: ctx.value });
    }),
  ],
  { error: (iss) => `${DURATION_HINT}, got ${describeValue(iss.input)}` },
);
/** Duration normalised to milliseconds. */
export const DurationMs = Duration.transform((v) => parseDuration(v));

export const SysctlName = z.string().regex(/^[a-z0-9_]+(\.[a-z0-9_-]+)+$/, 'expected a sysctl name such as vm.max_map_count');

export const PmEmulated = z.strictObject({
  kind: z.literal('emulated'),
  /** Directory on a tmpfs; created if missing. Default: /dev/shm/pcow-<experiment>. */
  dir: z.string().regex(/^\//, 'expected an absolute path such as /dev/shm/pcow').optional(),
});

export const PmFsdax = z.strictObject({
  kind: z.literal('fsdax'),
  /** The pmem block device, e.g. /dev/pmem0. */
  device: z.string().regex(/^\/dev\//, 'expected a device path under /dev'),
  /** Where to mount it with -o dax. */
  mount: z.string().regex(/^\//, 'expected an absolute path'),
  /** Only when true does setup run mkfs on the device (destroys its contents). */
  mkfs: z.enum(['ext4', 'xfs']).optional(),
});

export const Pm = z.discriminatedUnion('kind', [PmEmulated, PmFsdax]);

export const Host = z.strictObject({
  pm: Pm.default({ kind: 'emulated' }),
  sysctls: z.record(SysctlName, z.union([z.string(), z.number()])).default({}),
});

/** A scalar axis value. Objects are not allowed: every cell must have a printable id. */
export const AxisValue = z.union([z.string(), z.number(), z.boolean()], {
  error: (iss) => `expected a scalar (string, number or true/false), got ${describeValue(iss.input)}`,
});

export const Matrix = z.strictObject({
  /** axis name → values; the cells are the cross product (modulo zip groups). */
  axes: z.record(
    z.string().regex(/^[A-Za-z_][A-Za-z0-9_-]*$/, 'axis names are identifiers (letters, digits, _ and -, not starting with a digit)'),
    z
      .array(AxisValue, {
        error: (iss) => (iss.code === 'invalid_type' ? `expected a list of values such as [4k, 64k], got ${describeValue(iss.input)}` : undefined),
      })
      .min(1, 'an axis needs at least one value'),
  ),
  /** Each group lists axes of equal length that vary together instead of being crossed. */
  zip: z.array(z.array(z.string()).min(2)).default([]),
  /** A cell matching every key of any rule is dropped. */
  exclude: z.array(z.record(z.string(), AxisValue)).default([]),
});

export const Figure = z.strictObject({
  /** File name stem of the chart; unique within the experiment. */
  id: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, {
    error: (iss) => `figure ids name chart files: expected a lower-case stem (a-z, 0-9, _ and -) such as "iops-4k", got ${describeValue(iss.input)}`,
  }),
  title: z.string(),
  /** The sample metric plotted on y (e.g. iops, bw, lat_mean). */
  metric: z.string(),
  /** Axis on x. */
  x: z.string(),
  /** Optional axis for colour (grouped bars / lines). */
  color: z.string().optional(),
  /** Optional axis for small multiples (one column per value). */
  facet: z.string().optional(),
  /** Keep only cells whose axes have these values. */
  where: z.record(z.string(), AxisValue).default({}),
  mark: z.enum(['bar', 'line', 'point']).default('bar'),
  yScale: z.enum(['linear', 'log']).default('linear'),
});

/** The patched QEMU (src/build/qemu.ts): present when the experiment's guests need it. */
export const BuildQemu = z.strictObject({
  /** A QEMU source directory or tarball; default: Debian's (`apt-get source qemu`). */
  source: z.string().min(1).optional(),
});

/** redis+pmem-AOF (src/build/redis.ts): present when the experiment's guests run it. */
export const BuildRedis = z.strictObject({
  /** A Redis source directory or tarball; default: Debian's (`apt-get source redis`). */
  source: z.string().min(1).optional(),
});

export const Build = z.strictObject({
  qemu: BuildQemu.optional(),
  redis: BuildRedis.optional(),
});

/** A named workload: `tool` selects the runner, the rest are its parameters (checked by the tool). */
export const WorkloadSpec = z.looseObject({ tool: z.string() });

/**
 * A named variant of the experiment (`run --profile NAME`; default `ci` when the file has one):
 * its keys override the file's. `workloads.NAME` entries are merged into that workload's
 * parameters, `matrix.axes` entries replace those axes, `exclude`/`zip` replace the lists.
 */
export const Profile = z.strictObject({
  description: z.string().optional(),
  repetitions: z.number().int().min(1).max(1000).optional(),
  warmup: z.number().int().min(0).max(100).optional(),
  timeout: Duration.optional(),
  workloads: z.record(z.string(), z.record(z.string(), z.unknown())).optional(),
  matrix: z
    .strictObject({
      axes: z.record(z.string(), z.array(AxisValue).min(1, 'an axis needs at least one value')).optional(),
      zip: z.array(z.array(z.string()).min(2)).optional(),
      exclude: z.array(z.record(z.string(), AxisValue)).optional(),
    })
    .optional(),
});

export const PROFILE_NAME = /^[a-z0-9][a-z0-9_-]*$/;

export const Experiment = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, {
    error: (iss) => `expected a lower-case file-name stem (a-z, 0-9, _ and -) such as "fig5-iops", got ${describeValue(iss.input)}`,
  }),
  description: z.string().default(''),
  host: Host.default({ pm: { kind: 'emulated' }, sysctls: {} }),
  /** Measured runs per cell. */
  repetitions: z.number().int().min(1).max(1000).default(3),
  /** Unmeasured runs before a cell's first measured run. */
  warmup: z.number().int().min(0).max(100).default(0),
  /** Wall-clock bound of one cell run (prepare + run + collect). */
  timeout: Duration.default('10m'),
  /** interleaved: repetition r of every cell before r+1 (spreads machine drift over backends). */
  order: z.enum(['interleaved', 'sequential']).default('interleaved'),
  /** name → workload; the `workload` axis picks one per cell (or the only one). */
  /** Builds beyond the native code (which workloads ask for themselves). */
  build: Build.default({}),
  workloads: z.record(z.string().regex(/^[A-Za-z0-9_-]+$/, 'workload names may use letters, digits, _ and - (they become part of cell ids)'), WorkloadSpec),
  matrix: Matrix.default({ axes: {}, zip: [], exclude: [] }),
  figures: z.array(Figure).default([]),
  /** Named variants (e.g. ci: small sizes for a TCG host, paper: the paper's sizes). */
  profiles: z.record(z.string().regex(PROFILE_NAME, 'profile names are lower-case stems (a-z, 0-9, _ and -)'), Profile).optional(),
});

export type ExperimentConfig = z.infer<typeof Experiment>;
export type FigureConfig = z.infer<typeof Figure>;
export type AxisScalar = z.infer<typeof AxisValue>;
