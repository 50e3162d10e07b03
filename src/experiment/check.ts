// Checks that need more than the schema: tools exist, parameters suit them, the matrix is
// consistent (see matrix.ts), and figures refer to axes, values and metrics that exist.
import type { Cell } from './cell.ts';
import { describeValue, type PathProblem } from './errors.ts';
import { planCells, type PlanOptions } from './matrix.ts';
import type { ExperimentConfig } from './schema.ts';
import { LIST_LIMIT, capList, hintFor, hintWithList } from './suggest.ts';

export interface CheckResult {
  cells: Cell[];
  problems: PathProblem[];
}

export function checkExperiment(config: ExperimentConfig, opts: PlanOptions): CheckResult {
  const { cells, problems } = planCells(config, opts);
  problems.push(...checkFigures(config, cells, opts));
  return { cells, problems };
}

function checkFigures(config: ExperimentConfig, cells: readonly Cell[], opts: PlanOptions): PathProblem[] {
  const problems: PathProblem[] = [];
  const axes = config.matrix.axes;
  const workloadNames = Object.keys(config.workloads);
  // `workload` can be charted even when it is not an axis (it then has one value).
  const dims = [...new Set([...Object.keys(axes), 'workload'])];
  const isDim = new Set(dims);
  const valuesOf = (dim: string): readonly unknown[] => (dim === 'workload' && !axes['workload'] ? workloadNames : (axes[dim] ?? []));
  // sameValue compares as strings: one set per axis, built when a figure first asks.
  const valueSets = new Map<string, Set<string>>();
  const valueSet = (dim: string): Set<string> => {
    let set = valueSets.get(dim);
    if (!set) valueSets.set(dim, (set = new Set(valuesOf(dim).map(String))));
    return set;
  };

  // Metrics of the tools in use (of every workload when the matrix did not expand).
  const used = cells.length > 0 ? [...new Set(cells.map((c) => c.workload))] : workloadNames;
  const byTool = new Map<string, string[]>();
  for (const name of used) {
    const spec = config.workloads[name];
    const w = spec ? opts.lookup(spec.tool) : undefined;
    if (w) byTool.set(w.tool, w.metrics.map((m) => m.name));
  }
  const metrics = [...new Set([...byTool.values()].flat())];
  const metricSet = new Set(metrics);

  const ids = new Map<string, number>();
  config.figures.forEach((fig, i) => {
    const at = (...rest: (string | number)[]): (string | number)[] => ['figures', i, ...rest];
    const first = ids.get(fig.id);
    if (first !== undefined) {
      problems.push({ path: at('id'), message: `figure id ${JSON.stringify(fig.id)} is already used by figures[${first}]; ids name the chart files` });
    } else ids.set(fig.id, i);

    for (const field of ['x', 'color', 'facet'] as const) {
      const dim = fig[field];
      if (dim !== undefined && !isDim.has(dim)) {
        problems.push({ path: at(field), message: `${JSON.stringify(dim)} is not a matrix axis${hintFor(dim, dims, 'axes')}` });
      }
    }

    for (const [k, v] of Object.entries(fig.where)) {
      if (!isDim.has(k)) {
        problems.push({ path: at('where', k), at: 'key', message: `unknown axis ${JSON.stringify(k)}${hintFor(k, dims, 'axes')}` });
        continue;
      }
      const values = valuesOf(k);
      if (!valueSet(k).has(String(v))) {
        problems.push({
          path: at('where', k),
          message: `${describeValue(v)} is not a value of axis ${JSON.stringify(k)}${hintWithList(String(v), values.map(String), 'values')}`,
        });
      }
    }

    if (byTool.size > 0 && !metricSet.has(fig.metric)) {
      const list = capList([...byTool].map(([tool, ms]) => `${tool}: ${capList(ms)}`), LIST_LIMIT, '; ');
      const dym = hintFor(fig.metric, metrics, 'metrics');
      // Always show the metrics per tool: the reader is choosing what to plot.
      problems.push({
        path: at('metric'),
        message: `unknown metric ${JSON.stringify(fig.metric)}${dym.startsWith(' (') ? `${dym}; metrics of ${list}` : `; metrics of ${list}`}`,
      });
    }
  });
  return problems;
}
