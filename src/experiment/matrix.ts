// The experiment matrix → cells: cross product of the axes in the order they are written (first
// axis outermost), zip groups varying together, exclude rules dropping cells.
//
// An axis applies to the workloads whose tool accepts a parameter of that name. A cell of a
// workload the axis does not apply to leaves it out (of params and id) and such cells collapse
// into one: `workload: [fio, qemu-bench]` × `rw: [read, write]` gives two fio cells and one
// qemu-bench cell when only fio has `rw`. An axis no workload in use accepts is an error.
import { createHash } from 'node:crypto';
import type { z } from 'zod';
import type { Cell } from './cell.ts';
import { CellFilterError, ExperimentError, describeValue, formatPath, type PathProblem, type PathSegment } from './errors.ts';
import type { AxisScalar, ExperimentConfig } from './schema.ts';
import { capList, hintFor, hintWithList } from './suggest.ts';
import { convertIssues, friendlyError, validKeysAt } from './zod-issues.ts';

/**
 * What planning needs of a workload tool: its name, parameter schema and metric names. Declared
 * here (workloads/ implements it) so that experiment/ does not import workloads/, which imports
 * experiment/ for the shared schema pieces.
 */
export interface ToolSchema {
  tool: string;
  params: z.ZodType;
  metrics: readonly { name: string }[];
}

export type WorkloadLookup = (tool: string) => ToolSchema | undefined;

export interface PlanOptions {
  lookup: WorkloadLookup;
  /** Registered tool names, for "did you mean" on an unknown `tool:`. */
  tools?: readonly string[];
}

export interface Plan {
  cells: Cell[];
  problems: PathProblem[];
}

/** Axis values compare as written in YAML, but 4096 and "4096" are the same value. */
export function sameValue(a: unknown, b: unknown): boolean {
  return a === b || String(a) === String(b);
}

const show = (v: unknown): string => (typeof v === 'string' ? v : describeValue(v));

/** Cell ids are file names: anything outside [A-Za-z0-9._=-] becomes `_`. */
export function sanitiseId(s: string): string {
  return s.replace(/[^A-Za-z0-9._=-]/g, '_');
}

/** JSON with object keys sorted at every level, so equal parameters always hash equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const sorted: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) sorted[k] = (v as Record<string, unknown>)[k];
      return sorted;
    }
    if (typeof v === 'bigint') return v.toString();
    return v;
  });
}

export function cellHash(tool: string, params: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson({ tool, params })).digest('hex').slice(0, 16);
}

/** The parameter names a tool's schema accepts; undefined when its schema does not say (accepts anything). */
export function toolParamKeys(w: ToolSchema): string[] | undefined {
  return validKeysAt(w.params, {}, []);
}

function specParams(spec: Record<string, unknown>): Record<string, unknown> {
  const { tool: _tool, ...rest } = spec;
  return rest;
}

/** Far more cells than any experiment can run: a guard against a typo multiplying the matrix. */
const MAX_COMBINATIONS = 100_000;

/** One dimension of the product: a single axis, or a zip group whose axes advance together. */
interface Dimension {
  axes: string[];
  length: number;
}

/** Validate the matrix against the workloads and expand it. Problems are reported, not thrown. */
export function planCells(config: ExperimentConfig, opts: PlanOptions): Plan {
  const problems: PathProblem[] = [];
  // Maps, not the parsed records: an axis or workload named "constructor" must not find Object's.
  const axisMap = new Map(Object.entries(config.matrix.axes));
  const specs = new Map(Object.entries(config.workloads));
  const axes = (name: string): AxisScalar[] => axisMap.get(name)!;
  const axisNames = [...axisMap.keys()];
  const workloadNames = [...specs.keys()];
  const tools = opts.tools;

  if (workloadNames.length === 0) {
    problems.push({ path: ['workloads'], message: 'no workloads: define at least one, e.g. `fio-4k: {tool: fio, bs: 4k}`' });
    return { cells: [], problems };
  }

  // Tools.
  const resolved = new Map<string, ToolSchema>();
  for (const [name, spec] of specs) {
    const w = opts.lookup(spec.tool);
    if (w) resolved.set(name, w);
    else {
      // Without a list of tools (a custom lookup) there is nothing to suggest.
      const hint = !tools ? '' : tools.length > 0 ? hintFor(spec.tool, tools, 'registered tools') : '; no workload tools are registered';
      problems.push({ path: ['workloads', name, 'tool'], message: `unknown tool ${JSON.stringify(spec.tool)}${hint}` });
    }
  }

  // An unknown tool only drops that workload's cells; the problems below make the matrix itself
  // meaningless, so expansion stops after them.
  const toolProblems = problems.length;

  // Axis values: a repeated value would give two identical cells. sameValue(a, b) is
  // String(a) === String(b), so one map per axis finds every repeat in linear time.
  const valueIndex = new Map<string, Map<string, number>>();
  for (const [axis, values] of axisMap) {
    const first = new Map<string, number>();
    values.forEach((v, i) => {
      const j = first.get(String(v));
      if (j === undefined) first.set(String(v), i);
      else problems.push({ path: ['matrix', 'axes', axis, i], message: `${describeValue(v)} is already listed on axis ${JSON.stringify(axis)} (at [${j}])` });
    });
    valueIndex.set(axis, first);
  }
  const hasValue = (axis: string, v: unknown): boolean => valueIndex.get(axis)?.has(String(v)) ?? false;

  // The workload axis.
  const workloadAxis = axisMap.get('workload');
  if (workloadAxis) {
    workloadAxis.forEach((v, i) => {
      if (typeof v !== 'string' || !specs.has(v)) {
        problems.push({
          path: ['matrix', 'axes', 'workload', i],
          message: `no workload named ${describeValue(v)}${hintWithList(String(v), workloadNames, 'workloads')}`,
        });
      }
    });
  } else if (workloadNames.length > 1) {
    problems.push({
      path: ['workloads'],
      at: 'key',
      message:
        `there are ${workloadNames.length} workloads (${capList(workloadNames)}) but no "workload" axis to choose between them; ` +
        (workloadNames.length <= 10 ? `add \`workload: [${workloadNames.join(', ')}]\` under matrix.axes` : 'add `workload: [...]` listing them under matrix.axes'),
    });
  }

  // Zip groups.
  const zipOf = new Map<string, number>();
  config.matrix.zip.forEach((group, g) => {
    const inGroup = new Set<string>();
    let known = true;
    group.forEach((a, i) => {
      const at: PathSegment[] = ['matrix', 'zip', g, i];
      if (!axisMap.has(a)) {
        known = false;
        problems.push({ path: at, message: `unknown axis ${JSON.stringify(a)}${hintFor(a, axisNames, 'axes')}` });
      } else if (inGroup.has(a)) {
        problems.push({ path: at, message: `axis ${JSON.stringify(a)} is listed twice in this zip group` });
      } else if (zipOf.has(a)) {
        problems.push({ path: at, message: `axis ${JSON.stringify(a)} is already in zip group matrix.zip[${zipOf.get(a)}]; an axis can be in one group only` });
      } else {
        inGroup.add(a);
        zipOf.set(a, g);
      }
    });
    if (known) {
      const lengths = [...inGroup].map((a) => [a, axes(a).length] as const);
      if (new Set(lengths.map(([, n]) => n)).size > 1) {
        problems.push({
          path: ['matrix', 'zip', g],
          message: `zipped axes must have the same number of values: ${capList(lengths.map(([a, n]) => `${a} has ${n}`))}`,
        });
      }
    }
  });

  // Exclude rules name existing axes and values.
  const rules = config.matrix.exclude;
  rules.forEach((rule, r) => {
    const keys = Object.keys(rule);
    if (keys.length === 0) problems.push({ path: ['matrix', 'exclude', r], message: 'an empty exclude rule would drop every cell' });
    for (const k of keys) {
      const values = axisMap.get(k);
      if (!values) {
        problems.push({ path: ['matrix', 'exclude', r, k], at: 'key', message: `unknown axis ${JSON.stringify(k)}${hintFor(k, axisNames, 'axes')}` });
      } else if (!hasValue(k, rule[k])) {
        problems.push({
          path: ['matrix', 'exclude', r, k],
          message: `${describeValue(rule[k])} is not a value of axis ${JSON.stringify(k)}${hintWithList(String(rule[k]), values.map(String), 'values')}`,
        });
      }
    }
  });

  if (problems.length > toolProblems) return { cells: [], problems };

  // The product.
  const dims: Dimension[] = [];
  const placed = new Set<string>();
  const groupMembers = new Map<number, string[]>();
  for (const a of axisNames) {
    const g = zipOf.get(a);
    if (g === undefined) continue;
    const list = groupMembers.get(g);
    if (list) list.push(a);
    else groupMembers.set(g, [a]);
  }
  for (const a of axisNames) {
    if (placed.has(a)) continue;
    const g = zipOf.get(a);
    const members = g === undefined ? [a] : groupMembers.get(g)!;
    members.forEach((m) => placed.add(m));
    dims.push({ axes: members, length: axes(a).length });
  }
  const total = dims.reduce((n, d) => n * d.length, 1);
  if (total > MAX_COMBINATIONS) {
    problems.push({
      path: ['matrix', 'axes'],
      at: 'key',
      message: `the axes give ${total} combinations (${dims.map((d) => d.length).join(' × ')}), more than ${MAX_COMBINATIONS}; zip axes that vary together or split the experiment`,
    });
    return { cells: [], problems };
  }
  const assignments: Record<string, number>[] = [];
  for (let i = 0; i < total; i++) {
    // Mixed-radix counter, last dimension fastest.
    const pick: Record<string, number> = {};
    let rest = i;
    for (let d = dims.length - 1; d >= 0; d--) {
      const dim = dims[d]!;
      const idx = rest % dim.length;
      rest = Math.floor(rest / dim.length);
      for (const a of dim.axes) pick[a] = idx;
    }
    assignments.push(pick);
  }

  const matched = rules.map(() => false);
  // Rules bucketed by their first key and its value: a cell only checks the rules that can match.
  const buckets = new Map<string, Map<string, number[]>>();
  rules.forEach((rule, r) => {
    const first = Object.entries(rule)[0];
    if (!first) return; // an empty rule was reported above
    const [k, v] = first;
    const byValue = buckets.get(k) ?? new Map<string, number[]>();
    buckets.set(k, byValue);
    const list = byValue.get(String(v));
    if (list) list.push(r);
    else byValue.set(String(v), [r]);
  });
  const kept = assignments.filter((pick) => {
    let drop = false;
    for (const [k, byValue] of buckets) {
      for (const r of byValue.get(String(axes(k)[pick[k]!])) ?? []) {
        if (Object.entries(rules[r]!).every(([key, v]) => sameValue(axes(key)[pick[key]!], v))) {
          matched[r] = true;
          drop = true;
        }
      }
    }
    return !drop;
  });
  rules.forEach((rule, r) => {
    if (matched[r]) return;
    const zipped = Object.keys(rule).filter((k) => zipOf.has(k));
    const why = zipped.length > 1 ? ` (${zipped.join(', ')} are zipped: their values only occur in pairs by position)` : '';
    problems.push({
      path: ['matrix', 'exclude', r],
      message: `this rule never matches: no cell has ${Object.entries(rule).map(([k, v]) => `${k}=${show(v)}`).join(' together with ')}${why}`,
    });
  });
  if (kept.length === 0) {
    problems.push(
      rules.length > 0
        ? { path: ['matrix', 'exclude'], at: 'key', message: `the matrix expands to no cells: the exclude rules drop all ${total} combinations` }
        : { path: ['matrix'], message: 'the matrix expands to no cells' },
    );
  }
  if (problems.length > toolProblems) return { cells: [], problems };

  const workloadOf = (pick: Record<string, number>): string => (workloadAxis ? String(workloadAxis[pick['workload']!]) : workloadNames[0]!);

  // Which axes apply to which workload.
  const paramAxes = axisNames.filter((a) => a !== 'workload');
  const keysOf = new Map<string, Set<string> | undefined>();
  for (const [name, w] of resolved) {
    const k = toolParamKeys(w);
    keysOf.set(name, k ? new Set(k) : undefined);
  }
  const applies = (workload: string, axis: string): boolean => {
    if (!keysOf.has(workload)) return false;
    const k = keysOf.get(workload);
    return k === undefined || k.has(axis);
  };
  const used = [...new Set(kept.map(workloadOf))].filter((n) => resolved.has(n));
  const usedSet = new Set(used);
  let paramNames: { tools: string[]; candidates: string[] } | undefined;
  for (const axis of paramAxes) {
    if (used.length === 0 || used.some((n) => applies(n, axis))) continue;
    paramNames ??= {
      tools: [...new Set(used.map((n) => resolved.get(n)!.tool))],
      candidates: [...new Set(used.flatMap((n) => [...(keysOf.get(n) ?? [])]))].sort(),
    };
    const { tools: usedTools, candidates } = paramNames;
    problems.push({
      path: ['matrix', 'axes', axis],
      at: 'key',
      message: `axis ${JSON.stringify(axis)} is not a parameter of ${usedTools.join(' or ')}${hintFor(axis, candidates, 'parameters')}`,
    });
  }

  // Cells: merge, validate with the tool's schema, name and hash.
  const cells: Cell[] = [];
  const seen = new Set<string>();
  const reported = new Set<string>();
  const report = (p: PathProblem): void => {
    const key = `${p.path.join('\u0000')}\u0001${p.message}`;
    if (!reported.has(key)) {
      reported.add(key);
      problems.push(p);
    }
  };
  // The same bad axis value fails in many cells (and maybe several workloads): say it once.
  const axisIssues = new Map<string, { path: PathSegment[]; message: string; workloads: Set<string> }>();
  for (const pick of kept) {
    const wname = workloadOf(pick);
    const w = resolved.get(wname);
    if (!w) continue;
    const applied = paramAxes.filter((a) => applies(wname, a));
    const dedupe = JSON.stringify([wname, applied.map((a) => pick[a])]);
    if (seen.has(dedupe)) continue;
    seen.add(dedupe);

    const cellAxes: Record<string, AxisScalar> = {};
    if (workloadAxis) cellAxes['workload'] = wname;
    for (const a of applied) cellAxes[a] = axes(a)[pick[a]!]!;
    const id = sanitiseId([wname, ...applied.map((a) => `${a}=${String(cellAxes[a])}`)].join('.'));

    const spec = specParams(specs.get(wname)!);
    const merged: Record<string, unknown> = { ...spec };
    for (const a of applied) merged[a] = cellAxes[a];
    const parsed = w.params.safeParse(merged, { error: friendlyError });
    if (!parsed.success) {
      for (const p of convertIssues(parsed.error.issues, { schema: w.params, data: merged })) {
        const head = p.path[0];
        if (typeof head === 'string' && applied.includes(head)) {
          const path = ['matrix', 'axes', head, pick[head]!];
          const key = `${path.join('\u0000')}\u0001${p.message}`;
          const entry = axisIssues.get(key) ?? { path, message: p.message, workloads: new Set<string>() };
          entry.workloads.add(wname);
          axisIssues.set(key, entry);
        } else if (p.path.length === 0) {
          report({ path: ['workloads', wname], at: 'key', message: `in cell ${id}: ${p.message}` });
        } else {
          report({ ...p, path: ['workloads', wname, ...p.path] });
        }
      }
      continue;
    }
    const params = parsed.data as Record<string, unknown>;
    cells.push({ index: cells.length, id, workload: wname, tool: w.tool, axes: cellAxes, params, hash: cellHash(w.tool, params) });
  }

  for (const { path, message, workloads } of axisIssues.values()) {
    const ws = [...workloads];
    const where = used.length > 1 ? `; in workload${ws.length > 1 ? 's' : ''} ${capList(ws)}` : '';
    problems.push({ path, message: `${message}${where}` });
  }

  // Workloads no cell uses still get their parameters checked, so typos surface now.
  for (const [wname, w] of resolved) {
    if (usedSet.has(wname)) continue;
    const spec = specParams(specs.get(wname)!);
    const parsed = w.params.safeParse(spec, { error: friendlyError });
    if (parsed.success) continue;
    for (const p of convertIssues(parsed.error.issues, { schema: w.params, data: spec })) {
      // A parameter left for an axis is not missing.
      if (p.message.startsWith('missing required key') && typeof p.path[0] === 'string' && axisMap.has(p.path[0])) continue;
      report({ ...p, path: ['workloads', wname, ...p.path] });
    }
  }

  // Unique ids and hashes.
  const byId = new Map<string, Cell>();
  const byHash = new Map<string, Cell>();
  for (const c of cells) {
    const other = byId.get(c.id);
    if (other) {
      problems.push({
        path: ['matrix', 'axes'],
        at: 'key',
        message: `cells ${other.index} and ${c.index} would both get the id "${c.id}": their values differ only in characters outside [A-Za-z0-9._=-]; make them differ in letters or digits`,
      });
    } else byId.set(c.id, c);
    const same = byHash.get(c.hash);
    if (same) problems.push(duplicateCell(same, c, (axis, v) => valueIndex.get(axis)?.get(String(v)) ?? -1));
    else byHash.set(c.hash, c);
  }
  return { cells: problems.length > 0 ? [] : cells, problems };
}

function duplicateCell(a: Cell, b: Cell, indexOf: (axis: string, v: AxisScalar | undefined) => number): PathProblem {
  const msg = `cells "${a.id}" and "${b.id}" have the same parameters (hash ${a.hash}) and would measure the same thing`;
  const differing = Object.keys(b.axes).filter((k) => k !== 'workload' && !sameValue(a.axes[k], b.axes[k]));
  if (a.workload !== b.workload) {
    return { path: ['workloads', b.workload], at: 'key', message: `${msg}: workload ${JSON.stringify(b.workload)} repeats ${JSON.stringify(a.workload)}` };
  }
  const axis = differing[0];
  if (axis !== undefined) {
    const i = indexOf(axis, b.axes[axis]);
    return {
      path: ['matrix', 'axes', axis, i],
      message: `${axis}=${show(b.axes[axis])} means the same as ${axis}=${show(a.axes[axis])} to ${b.tool}: ${msg}`,
    };
  }
  return { path: ['matrix', 'axes'], at: 'key', message: msg };
}

/** The cells of a validated config; throws ExperimentError (without file positions) on any problem. */
export function expandMatrix(config: ExperimentConfig, lookup: WorkloadLookup, tools?: readonly string[]): Cell[] {
  const { cells, problems } = planCells(config, { lookup, tools });
  if (problems.length > 0) {
    throw new ExperimentError(
      problems.map((p) => ({ file: `<experiment ${config.name}>`, line: 0, col: 0, path: formatPath(p.path), message: p.message })),
    );
  }
  return cells;
}

// ---- --only key=value ----

const filterKeys = ['workload', 'tool', 'id', 'hash'] as const;

function cellValue(cell: Cell, key: string): string | undefined {
  if (Object.hasOwn(cell.axes, key)) return String(cell.axes[key]);
  switch (key) {
    case 'workload':
      return cell.workload;
    case 'tool':
      return cell.tool;
    case 'id':
      return cell.id;
    case 'hash':
      return cell.hash;
    default:
      return undefined;
  }
}

/**
 * `--only key=value` (repeatable): the same key twice means either value, different keys must all
 * match. Keys are the matrix axes plus workload, tool, id and hash. Unknown keys, values that
 * match no cell, and filters that together match nothing are errors listing what is valid.
 */
export function filterCells(cells: readonly Cell[], only: readonly string[]): Cell[] {
  if (only.length === 0) return [...cells];
  const wanted = new Map<string, string[]>();
  for (const f of only) {
    const eq = f.indexOf('=');
    if (eq <= 0) throw new CellFilterError(`--only ${JSON.stringify(f)}: expected key=value, e.g. --only workload=fio`);
    const key = f.slice(0, eq).trim();
    const value = f.slice(eq + 1).trim();
    wanted.set(key, [...(wanted.get(key) ?? []), value]);
  }
  const axisKeys = [...new Set(cells.flatMap((c) => Object.keys(c.axes)))];
  const validKeys = [...new Set([...axisKeys, ...filterKeys])];
  for (const [key, values] of wanted) {
    if (!validKeys.includes(key)) {
      throw new CellFilterError(`--only ${key}=${values[0]}: unknown key ${JSON.stringify(key)}${hintFor(key, validKeys, 'valid keys')}`);
    }
    const present = [...new Set(cells.map((c) => cellValue(c, key)).filter((v): v is string => v !== undefined))];
    for (const v of values) {
      if (!present.includes(v)) {
        throw new CellFilterError(`--only ${key}=${v}: no cell has ${key}=${v}${hintWithList(v, present, `values of ${key}`)}`);
      }
    }
  }
  const out = cells.filter((c) => [...wanted].every(([key, values]) => values.includes(cellValue(c, key) ?? '\u0000')));
  if (out.length === 0) {
    throw new CellFilterError(`--only ${only.join(' --only ')}: no cell matches all of these filters together (each matches some cells on its own)`);
  }
  return out;
}

// ---- --dry-run listing ----

function showParam(v: unknown): string {
  if (v === undefined) return '-';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return JSON.stringify(v);
}

/**
 * The `--dry-run` listing: an aligned table of index, id, hash and the parameters that differ
 * between cells, then for each workload the parameters all its cells share.
 */
export function describeCells(cells: readonly Cell[]): string {
  if (cells.length === 0) return '(no cells)';
  const byWorkload = new Map<string, Cell[]>();
  for (const c of cells) {
    const list = byWorkload.get(c.workload);
    if (list) list.push(c);
    else byWorkload.set(c.workload, [c]);
  }
  // A parameter is a column when it differs between cells of the same workload.
  const keys = [...new Set(cells.flatMap((c) => Object.keys(c.params)))];
  const varying = keys.filter((k) =>
    [...byWorkload.values()].some((cs) => cs.some((c) => showParam(c.params[k]) !== showParam(cs[0]!.params[k]))),
  );
  // Axis parameters first, in axis order, then the other varying ones alphabetically.
  const axisOrder = [...new Set(cells.flatMap((c) => Object.keys(c.axes)))];
  varying.sort((a, b) => {
    const ia = axisOrder.indexOf(a);
    const ib = axisOrder.indexOf(b);
    if (ia >= 0 || ib >= 0) return (ia < 0 ? Infinity : ia) - (ib < 0 ? Infinity : ib);
    return a.localeCompare(b);
  });
  const multiTool = new Set(cells.map((c) => c.tool)).size > 1;
  const header = ['#', 'id', 'hash', ...(multiTool ? ['tool'] : []), ...varying];
  const rows = cells.map((c) => [String(c.index), c.id, c.hash, ...(multiTool ? [c.tool] : []), ...varying.map((k) => showParam(c.params[k]))]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string =>
    r
      .map((s, i) => (i === 0 ? s.padStart(widths[i]!) : s.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const out = [line(header), ...rows.map(line)];

  const common: string[] = [];
  for (const [w, cs] of byWorkload) {
    const first = cs[0]!;
    const shared = Object.keys(first.params)
      .filter((k) => !varying.includes(k) && cs.every((c) => showParam(c.params[k]) === showParam(first.params[k])))
      .sort()
      .map((k) => `${k}=${showParam(first.params[k])}`);
    if (shared.length > 0) common.push(`  ${w} (${first.tool}): ${shared.join(' ')}`);
  }
  if (common.length > 0) out.push('', 'same in every cell:', ...common);
  return out.join('\n');
}
