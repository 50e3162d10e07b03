// The harness's folders form layers: no folder imports (even for types) a folder that imports it
// back. experiment/ once imported the workload registry, which imports experiment/ for its schema.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/** folder → folders it imports from, with one example import per edge. */
function folderGraph(root: string): Map<string, Map<string, string>> {
  const graph = new Map<string, Map<string, string>>();
  const files = readdirSync(root, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  for (const f of files) {
    const from = f.split(path.sep)[0]!;
    const text = readFileSync(path.join(root, f), 'utf8');
    const specs = [
      ...text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+'(\.[^']+)'/gms),
      ...text.matchAll(/\bimport\(\s*'(\.[^']+)'\s*\)/g),
    ].map((m) => m[1]!);
    for (const spec of specs) {
      const target = path.relative(root, path.resolve(root, path.dirname(f), spec));
      const to = target.split(path.sep)[0]!;
      if (to === from || to.startsWith('..')) continue;
      if (!graph.has(from)) graph.set(from, new Map());
      graph.get(from)!.set(to, `${f} imports ${spec}`);
    }
  }
  return graph;
}

/** Folders that reach themselves through imports, each with the imports that lead out of it. */
function cycles(graph: Map<string, Map<string, string>>): string[] {
  const out: string[] = [];
  for (const [start, edges] of graph) {
    const seen = new Set<string>();
    const todo = [...edges.keys()];
    while (todo.length) {
      const n = todo.pop()!;
      if (n === start) {
        out.push(`${start} imports itself back: ${[...edges.values()].join('; ')}`);
        break;
      }
      if (seen.has(n)) continue;
      seen.add(n);
      todo.push(...(graph.get(n)?.keys() ?? []));
    }
  }
  return out;
}

describe('src/ import graph', () => {
  it('has no cycle between folders (experiment does not import workloads)', () => {
    const g = folderGraph('src');
    expect(g.get('workloads')?.has('experiment')).toBe(true); // the layer order this test protects
    expect(g.get('experiment')?.has('workloads') ?? false).toBe(false);
    expect(cycles(g)).toEqual([]);
  });
});
