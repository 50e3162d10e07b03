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
}

export interface LoadOptions {
  /** Where `tool:` names are resolved: the workload registry's `registryLookup`, or a fake in tests. */
  lookup: WorkloadLookup;
  /** Tool names offered as suggestions for an unknown `tool:`. */
  tools?: readonly string[];
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
  const { config, cells } = parseExperiment(text, file, { lookup: opts.lookup, tools: opts.tools });
  return { file: abs, text, sha256: createHash('sha256').update(text).digest('hex'), config, cells };
}

/** The synchronous core of loadExperiment: `file` is only used in messages. */
export function parseExperiment(
  text: string,
  file: string,
  opts: PlanOptions,
): { config: ExperimentConfig; cells: Cell[] } {
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

  const parsed = Experiment.safeParse(data, { error: friendlyError });
  if (!parsed.success) {
    const problems = convertIssues(parsed.error.issues, { schema: Experiment, data });
    problems.push(...sectionChecks(data, parsed.error.issues, opts));
    throw new ExperimentError(at(problems));
  }

  const { cells, problems } = checkExperiment(parsed.data, opts);
  if (problems.length > 0) throw new ExperimentError(at(problems));
  return { config: parsed.data, cells };
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
