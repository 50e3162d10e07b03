// `pcow-img info --output=json` and `pcow-img check --output=json` → typed image state, so a cell
// records what its image holds (allocated clusters, layers) and whether it is consistent.
// Parsers are pure and name their source; the runners name the image and the command.
// check's exit status follows qemu-img: 0 clean, 2 corruptions, 3 leaks only (results), 1 the
// check could not run or hit errors (an error here, with its messages).
import { z } from 'zod';
import { run } from '../util/proc.ts';

export class PcowImgError extends Error {
  override readonly name = 'PcowImgError';
  constructor(
    /** The image (or output file) the message is about. */
    readonly source: string,
    /** The message without the source prefix. */
    readonly detail: string,
  ) {
    super(`${source}: ${detail}`);
  }
}

const count = z.number().int().nonnegative();

const InfoLayer = z.looseObject({
  id: z.number().int().positive(),
  name: z.string(),
  parent_id: count,
  active: z.boolean(),
  date: z.string(),
  clusters: count,
});

const InfoJson = z.looseObject({
  filename: z.string(),
  format: z.literal('pcow'),
  version: z.number().int().positive(),
  virtual_size: count,
  cluster_size: z.number().int().positive(),
  subunit_size: z.number().int().positive(),
  clusters: count,
  allocated_clusters: count,
  total_data_clusters: count,
  file_size: count,
  dirty: z.boolean(),
  stripes: z.looseObject({ count: z.number().int().min(1), unit: z.number().int().positive(), files: z.array(z.string()).min(1) }),
  base: z.looseObject({ path: z.string(), resolved_path: z.string().optional(), format: z.string() }).nullable(),
  layers: z.array(InfoLayer).min(1),
  active_layer: z.number().int().positive(),
});

export interface PcowImgLayer {
  id: number;
  name: string;
  parentId: number;
  active: boolean;
  date: string;
  /** Data clusters this layer owns. */
  clusters: number;
}

export interface PcowImgInfo {
  filename: string;
  version: number;
  virtualSize: number;
  clusterSize: number;
  subunitSize: number;
  /** Data clusters of the active layer. */
  allocatedClusters: number;
  /** Data clusters of all layers. */
  totalDataClusters: number;
  /** Bytes on disk (all stripe files). */
  fileSize: number;
  dirty: boolean;
  stripes: { count: number; unit: number; files: string[] };
  base: { path: string; format: string } | null;
  layers: PcowImgLayer[];
  activeLayer: number;
}

function parseJson(text: string, source: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const head = text.trim().slice(0, 80);
    throw new PcowImgError(source, `${what} is not valid JSON (${(e as Error).message})${head ? `: ${JSON.stringify(head)}` : ': empty output'}`);
  }
}

function describeIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .slice(0, 5)
    .map((i) => `${i.path.map(String).join('.') || '(document)'}: ${i.message}`)
    .join('; ');
}

/** Parse `pcow-img info --output=json`. */
export function parsePcowImgInfo(text: string, source: string): PcowImgInfo {
  const r = InfoJson.safeParse(parseJson(text, source, 'pcow-img info output'));
  if (!r.success) throw new PcowImgError(source, `not pcow-img info JSON: ${describeIssues(r.error.issues)}`);
  const d = r.data;
  if (!d.layers.some((l) => l.id === d.active_layer && l.active)) {
    throw new PcowImgError(source, `active_layer ${d.active_layer} is not among the layers marked active`);
  }
  return {
    filename: d.filename,
    version: d.version,
    virtualSize: d.virtual_size,
    clusterSize: d.cluster_size,
    subunitSize: d.subunit_size,
    allocatedClusters: d.allocated_clusters,
    totalDataClusters: d.total_data_clusters,
    fileSize: d.file_size,
    dirty: d.dirty,
    stripes: { count: d.stripes.count, unit: d.stripes.unit, files: d.stripes.files },
    base: d.base ? { path: d.base.path, format: d.base.format } : null,
    layers: d.layers.map((l) => ({ id: l.id, name: l.name, parentId: l.parent_id, active: l.active, date: l.date, clusters: l.clusters })),
    activeLayer: d.active_layer,
  };
}

const CheckJson = z.looseObject({
  filename: z.string(),
  format: z.literal('pcow'),
  'check-errors': count,
  leaks: count,
  'leaks-fixed': count,
  corruptions: count,
  'corruptions-fixed': count,
  'image-end-offset': count,
  'allocated-clusters': count,
  'total-clusters': count,
  messages: z.array(z.looseObject({ severity: z.string(), message: z.string() })),
});

export interface PcowImgCheck {
  /** clean: exit 0; corrupt: exit 2; leaks: exit 3 (leaked clusters only). */
  status: 'clean' | 'corrupt' | 'leaks';
  exitCode: 0 | 2 | 3;
  checkErrors: number;
  corruptions: number;
  leaks: number;
  allocatedClusters: number;
  totalClusters: number;
  imageEndOffset: number;
  messages: { severity: string; message: string }[];
}

const CHECK_STATUS = { 0: 'clean', 2: 'corrupt', 3: 'leaks' } as const;

/**
 * Parse `pcow-img check --output=json` given its exit status (0, 2 or 3; anything else is the
 * caller's error). Throws when the status and the counts disagree.
 */
export function parsePcowImgCheck(text: string, exitCode: 0 | 2 | 3, source: string): PcowImgCheck {
  const r = CheckJson.safeParse(parseJson(text, source, 'pcow-img check output'));
  if (!r.success) throw new PcowImgError(source, `not pcow-img check JSON: ${describeIssues(r.error.issues)}`);
  const d = r.data;
  const status = CHECK_STATUS[exitCode];
  const consistent =
    status === 'corrupt' ? d.corruptions > 0 : status === 'leaks' ? d.leaks > 0 && d.corruptions === 0 : d.corruptions === d['corruptions-fixed'];
  if (!consistent) {
    throw new PcowImgError(source, `exit status ${exitCode} (${status}) disagrees with the report: ${d.corruptions} corruptions, ${d.leaks} leaks`);
  }
  return {
    status,
    exitCode,
    checkErrors: d['check-errors'],
    corruptions: d.corruptions,
    leaks: d.leaks,
    allocatedClusters: d['allocated-clusters'],
    totalClusters: d['total-clusters'],
    imageEndOffset: d['image-end-offset'],
    messages: d.messages.map((m) => ({ severity: m.severity, message: m.message })),
  };
}

export interface PcowImgRun<T> {
  result: T;
  /** The command as run (argv joined for reading). */
  command: string;
  /** pcow-img's stdout, verbatim (keep it as the raw file). */
  text: string;
}

function tail(s: string): string {
  const t = s.trim().split('\n').slice(-5).join('\n');
  return t ? `\n${t}` : '';
}

/** `pcow-img info --output=json -U IMAGE` (-U: read without taking the image lock). */
export async function pcowImgInfo(bin: string, image: string, signal?: AbortSignal): Promise<PcowImgRun<PcowImgInfo>> {
  const r = await run(bin, ['info', '--output=json', '-U', image], { signal });
  if (r.aborted || r.timedOut) throw new PcowImgError(image, `${r.command}: ${r.aborted ? 'aborted' : 'timed out'}`);
  if (r.exitCode !== 0) {
    throw new PcowImgError(image, `${r.command}: ${r.signal ? `killed by ${r.signal}` : `exit code ${r.exitCode}`}${tail(r.stderr || r.stdout)}`);
  }
  try {
    return { result: parsePcowImgInfo(r.stdout, image), command: r.command, text: r.stdout };
  } catch (e) {
    throw e instanceof PcowImgError ? new PcowImgError(image, `${r.command}: ${e.detail}`) : e;
  }
}

/**
 * `pcow-img check --output=json -U IMAGE`. Exit 0/2/3 are results (clean, corrupt, leaks); exit
 * 1 (the check could not run or hit read errors) throws with the report's messages or stderr.
 */
export async function pcowImgCheck(bin: string, image: string, signal?: AbortSignal): Promise<PcowImgRun<PcowImgCheck>> {
  const r = await run(bin, ['check', '--output=json', '-U', image], { signal });
  if (r.aborted || r.timedOut) throw new PcowImgError(image, `${r.command}: ${r.aborted ? 'aborted' : 'timed out'}`);
  const code = r.exitCode;
  if (code !== 0 && code !== 2 && code !== 3) {
    // Exit 1 may still carry a report (e.g. a table outside the file and a short read).
    let why = tail(r.stderr);
    const rep = CheckJson.safeParse((() => {
      try {
        return JSON.parse(r.stdout) as unknown;
      } catch {
        return undefined;
      }
    })());
    if (rep.success && rep.data.messages.length > 0) {
      why = `\n${rep.data.messages.slice(0, 5).map((m) => `${m.severity}: ${m.message}`).join('\n')}`;
    }
    const how = r.signal ? `killed by ${r.signal}` : `exit code ${code}`;
    throw new PcowImgError(image, `${r.command}: ${how} (the check could not complete)${why}`);
  }
  try {
    return { result: parsePcowImgCheck(r.stdout, code, image), command: r.command, text: r.stdout };
  } catch (e) {
    throw e instanceof PcowImgError ? new PcowImgError(image, `${r.command}: ${e.detail}`) : e;
  }
}
