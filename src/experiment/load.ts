// Read an experiment file: YAML (positions kept) → schema → cross-checks → cells. Every problem
// found is reported at once, each as `file:line:col: key.path: message`.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { LineCounter, parseDocument, type Document } from 'yaml';
import type { Cell } from './cell.ts';
import { checkExperiment } from './check.ts';
import { ExperimentError, formatPath, type PathProblem, type Problem } from './errors.ts';
import { duplicateKeys, locate, pathAtOffset } from './locate.ts';
import type { PlanOptions, WorkloadLookup } from './matrix.ts';
import { Experiment, type ExperimentConfig } from './schema.ts';
import { convertIssues, friendlyError } from './zod-issues.ts';

export interface LoadedExperiment {
  /** Absolute path. */
  file: string;
  /** The file's text as read (kept with the results). */
  text: string;
  /** sha256 (hex) of the text. */
  sha256: string;
  config: ExperimentConfig;
  cells: Cell[];
  /** The profile applied (run --profile; `ci` by default when the file has profiles). */
  profile?: string;
}

export interface LoadOptions {
  /** Where `tool:` names are resolved: the workload registry's `registryLookup`, or a fake in tests. */
  lookup: WorkloadLookup;
  /** Tool names offered as suggestions for an unknown `tool:`. */
  tools?: readonly string[];
  /** The profile to apply (default: `ci` when the file defines profiles). */
  profile?: string;
}

/** Load and validate an experiment; throws ExperimentError listing every problem. */
export async function loadExperiment(file: string, opts: LoadOptions): Promise<LoadedExperiment> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EISDIR' ? 'is a directory, not an experiment file' : err.message;
    throw new ExperimentError([{ file, line: 0, col: 0, path: '', message: `cannot read the experiment: ${why}` }]);
  }
  const { config, cells, profile } = parseExperiment(text, file, { lookup: opts.lookup, tools: opts.tools, profile: opts.profile });
  return { file: abs, text, sha256: createHash('sha256').update(text).digest('hex'), config, cells, ...(profile ? { profile } : {}) };
}

/** The synchronous core of loadExperiment: `file` is only used in messages. */
export function parseExperiment(
  text: string,
  file: string,
  opts: PlanOptions & { profile?: string },
): { config: ExperimentConfig; cells: Cell[]; profile?: string } {
  const lc = new LineCounter();
  // uniqueKeys off: duplicateKeys() reports both places of a repeated key, yaml would say one.
  // merge: `<<: *common` lets workloads share parameters, a common YAML idiom.
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: false, prettyErrors: false, merge: true });
  const at = (problems: readonly PathProblem[]): Problem[] => problems.map((p) => place(doc, lc, file, p));

  const syntax: Problem[] = [];
  for (const e of [...doc.errors, ...doc.warnings]) {
    const pos = lc.linePos(e.pos[0]);
    syntax.push({ file, ...pos, path: formatPath(pathAtOffset(doc, e.pos[0])), message: `YAML syntax: ${yamlMessage(e.code, e.message)}` });
  }
  for (const d of duplicateKeys(doc, lc)) {
    syntax.push({ file, ...d.again, path: formatPath(d.path), message: `duplicate key ${JSON.stringify(d.key)} (first at line ${d.first.line}:${d.first.col})` });
  }
  if (syntax.length > 0) throw new ExperimentError(syntax);

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 1000 });
  } catch (e) {
    throw new ExperimentError([{ file, line: 1, col: 1, path: '', message: `YAML: ${(e as Error).message}` }]);
  }
  if (data === null || data === undefined) {
    throw new ExperimentError([{ file, line: 1, col: 1, path: '', message: 'the file is empty; an experiment needs at least `name:` and `workloads:`' }]);
  }

  const applied = applyProfile(data, opts.profile);
  if (applied.problems.length > 0) throw new ExperimentError(at(applied.problems));
  data = applied.data;

  const parsed = Experiment.safeParse(data, { error: friendlyError });
  if (!parsed.success) {
    const problems = convertIssues(parsed.error.issues, { schema: Experiment, data });
    problems.push(...sectionChecks(data, parsed.error.issues, opts));
    throw new ExperimentError(at(problems));
  }

  const { cells, problems } = checkExperiment(parsed.data, opts);
  if (problems.length > 0) throw new ExperimentError(at(problems));
  return { config: parsed.data, cells, ...(applied.profile ? { profile: applied.profile } : {}) };
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The experiment data with profile `requested` (or `ci`, else the first one, when the file has
 * profiles) applied over it. The profiles stay in the data, so the schema checks every one.
 */
export function applyProfile(data: unknown, requested: string | undefined): { data: unknown; profile?: string; problems: PathProblem[] } {
  const d = isRecord(data) ? data : {};
  const profiles = d['profiles'];
  if (!isRecord(profiles) || Object.keys(profiles).length === 0) {
    if (requested === undefined) return { data, problems: [] };
    return { data, problems: [{ path: [], message: `--profile ${requested}: this experiment defines no profiles (remove --profile, or add a \`profiles:\` section)` }] };
  }
  const names = Object.keys(profiles);
  const name = requested ?? (names.includes('ci') ? 'ci' : (names[0] as string));
  const p = profiles[name];
  if (!isRecord(p)) {
    if (p === undefined) return { data, problems: [{ path: ['profiles'], message: `unknown profile ${JSON.stringify(name)}; this experiment has: ${names.join(', ')}` }] };
    return { data, problems: [] }; // not an object: the schema says what is wrong with it
  }
  const problems: PathProblem[] = [];
  const out: Record<string, unknown> = { ...d };
  for (const k of ['repetitions', 'warmup', 'timeout'] as const) if (p[k] !== undefined) out[k] = p[k];
  if (typeof p['description'] === 'string') out['description'] = `${typeof d['description'] === 'string' ? `${d['description']} ` : ''}[profile ${name}: ${p['description']}]`;
  if (isRecord(p['workloads'])) {
    const base = isRecord(d['workloads']) ? d['workloads'] : {};
    const merged: Record<string, unknown> = { ...base };
    for (const [w, over] of Object.entries(p['workloads'])) {
      const b = base[w];
      if (!isRecord(b)) {
        problems.push({ path: ['profiles', name, 'workloads', w], message: `profile ${name} overrides workload ${JSON.stringify(w)}, which is not in workloads: (have: ${Object.keys(base).join(', ')})` });
        continue;
      }
      if (isRecord(over)) merged[w] = { ...b, ...over };
    }
    out['workloads'] = merged;
  }
  if (isRecord(p['matrix'])) {
    const pm = p['matrix'];
    const m = isRecord(d['matrix']) ? { ...d['matrix'] } : {};
    if (isRecord(pm['axes'])) m['axes'] = { ...(isRecord(m['axes']) ? m['axes'] : {}), ...pm['axes'] };
    if (pm['zip'] !== undefined) m['zip'] = pm['zip'];
    if (pm['exclude'] !== undefined) m['exclude'] = pm['exclude'];
    out['matrix'] = m;
  }
  return { data: out, profile: name, problems };
}

/**
 * The cross-checks need only the workloads, matrix and figures sections: when those are valid,
 * run them even though another section is not, so one round of fixes shows every problem.
 */
function sectionChecks(data: unknown, issues: readonly { path: readonly PropertyKey[] }[], opts: PlanOptions): PathProblem[] {
  if (!data || typeof data !== 'object' || Array.isArray(data)) return [];
  const failed = new Set(issues.map((i) => i.path[0]));
  if (failed.has('workloads') || failed.has('matrix')) return [];
  const d = data as Record<string, unknown>;
  const partial = Experiment.safeParse({
    name: 'partial',
    workloads: d['workloads'],
    matrix: d['matrix'],
    figures: failed.has('figures') ? [] : d['figures'],
  });
  return partial.success ? checkExperiment(partial.data, opts).problems : [];
}

function place(doc: Document, lc: LineCounter, file: string, p: PathProblem): Problem {
  const pos = locate(doc, lc, p.path, p.at);
  return { file, line: pos.line, col: pos.col, path: formatPath(p.path), message: p.message };
}

/** yaml's message, without a position suffix, plus what usually fixes it. */
function yamlMessage(code: string, msg: string): string {
  const m = msg.replace(/ at line \d+, column \d+.*$/s, '').trim();
  if (code === 'TAB_AS_INDENT') return `${m}; indent with spaces`;
  if (m.startsWith('Implicit map keys need to be followed by map values')) return `${m}; is the ": " after a key missing?`;
  if (m.startsWith('All mapping items must start at the same column')) return `${m}; align this key with the keys above it`;
  return m;
}
