// Every experiment shipped in experiments/ loads with the real workload registry.
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadExperiment } from '../../src/experiment/load.ts';
import { describeCells } from '../../src/experiment/matrix.ts';
import { registryLookup } from '../../src/workloads/registry.ts';

const files = (() => {
  try {
    return readdirSync('experiments').filter((f) => f.endsWith('.yaml')).sort();
  } catch {
    return [];
  }
})();

describe.skipIf(files.length === 0)('experiments/*.yaml', () => {
  for (const f of files) {
    it(`${f} loads, expands and lists its cells`, async () => {
      const loaded = await loadExperiment(`experiments/${f}`, registryLookup());
      expect(loaded.cells.length).toBeGreaterThan(0);
      expect(new Set(loaded.cells.map((c) => c.id)).size).toBe(loaded.cells.length);
      expect(new Set(loaded.cells.map((c) => c.hash)).size).toBe(loaded.cells.length);
      const listing = describeCells(loaded.cells);
      for (const c of loaded.cells) expect(listing).toContain(c.id);
    });
  }
});
