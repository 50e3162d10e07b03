// Problems found in an experiment file, each pinned to file:line:col and a key path.
import { ConfigError } from '../util/errors.ts';

export type PathSegment = string | number;

/** One problem in an experiment file. line/col are 1-based; 0 when there is no position (e.g. unreadable file). */
export interface Problem {
  /** The file as the user named it (relative stays relative). */
  file: string;
  line: number;
  col: number;
  /** Key path in the file, e.g. `matrix.axes.bs[2]`; '' for the document itself. */
  path: string;
  message: string;
}

/** A problem before it has a position: the checks speak in key paths, the loader finds the node. */
export interface PathProblem {
  path: readonly PathSegment[];
  message: string;
  /** Point at the key of the last path segment instead of its value (unknown keys, bad names). */
  at?: 'key' | 'value';
}

const identRe = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** ['matrix','axes','bs',2] → `matrix.axes.bs[2]`; keys that are not identifiers are quoted: `sysctls["vm.x"]`. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (identRe.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** `file:line:col: path: message` (parts without a value are left out). */
export function formatProblem(p: Problem): string {
  const where = p.line > 0 ? `${p.file}:${p.line}:${p.col}` : p.file;
  return p.path ? `${where}: ${p.path}: ${p.message}` : `${where}: ${p.message}`;
}

/** How many problems the message of an ExperimentError lists; the rest are counted. */
export const MAX_PROBLEMS_SHOWN = 50;

export class ExperimentError extends ConfigError {
  override readonly name = 'ExperimentError';
  /** Sorted by position; all of them (the message lists the first MAX_PROBLEMS_SHOWN). */
  readonly problems: readonly Problem[];

  constructor(problems: readonly Problem[]) {
    const sorted = [...problems].sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0) || a.line - b.line || a.col - b.col);
    const shown = sorted.slice(0, MAX_PROBLEMS_SHOWN).map(formatProblem);
    const more = sorted.length - shown.length;
    super(more > 0 ? `${shown.join('\n')}\n... and ${more} more problems (${sorted.length} in all); fix these first` : shown.join('\n'));
    this.problems = sorted;
  }
}

/** A wrong `--only key=value` filter: names the filter and lists what would have been valid. */
export class CellFilterError extends ConfigError {
  override readonly name = 'CellFilterError';
}

/** How a YAML value reads in a message: `"lots"`, `3`, `true`, `a list`, `a mapping`, `nothing`. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'an empty value';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  return String(v);
}
