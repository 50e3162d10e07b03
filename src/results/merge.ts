// `pcow-harness merge OUT DIR...`: shard run directories (`run --shard I/N`) joined into one run
// directory that `report` and `compare` read like any other. Every cell comes from exactly one
// shard (a cell is never split over shards), so no value of one host is ever averaged with a
// value of another; each shard's provenance (host, accelerator, PM, builds, tools) is kept in
// manifest.shards and `compare` reads it per cell.
import { existsSync, readdirSync } from 'node:fs';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { canonicalJson } from '../experiment/matrix.ts';
import { ConfigError } from '../util/errors.ts';
import { CELLS, CONFIG, EXPERIMENT_COPY, MANIFEST, SAMPLES_JSONL, newRunId, readJson, readSamples, writeFileAtomic, writeSamplesCsv } from './rundir.ts';
import type { CellRecord, Manifest, MergedShard } from './types.ts';

interface ShardInput {
  dir: string;
  manifest: Manifest;
  cells: CellRecord[];
  config: unknown;
}

async function readShard(dir: string): Promise<ShardInput> {
  const abs = path.resolve(dir);
  if (!existsSync(path.join(abs, MANIFEST))) throw new ConfigError(`merge: ${dir}: not a run directory (no ${MANIFEST})`);
  const manifest = await readJson<Manifest>(path.join(abs, MANIFEST));
  if (manifest.schema !== 1) throw new ConfigError(`merge: ${dir}: ${MANIFEST} is not a pcow run manifest`);
  if (!manifest.shard) throw new ConfigError(`merge: ${dir}: not a shard (it was not run with --shard I/N)`);
  return { dir: abs, manifest, cells: await readJson<CellRecord[]>(path.join(abs, CELLS)), config: await readJson<unknown>(path.join(abs, CONFIG)) };
}

/** Every reason these shards do not make one run, each naming the shards or directories. */
export function mergeProblems(shards: readonly ShardInput[]): string[] {
  const problems: string[] = [];
  const first = shards[0];
  if (!first?.manifest.shard) return ['merge: no shard directories given'];
  const count = first.manifest.shard.count;
  for (const s of shards.slice(1)) {
    const sh = s.manifest.shard;
    if (!sh) continue;
    if (s.manifest.experiment.sha256 !== first.manifest.experiment.sha256) {
      problems.push(`${s.dir}: experiment file sha256 ${s.manifest.experiment.sha256.slice(0, 12)} differs from ${first.dir}'s ${first.manifest.experiment.sha256.slice(0, 12)} (shards of one run read the same file)`);
    }
    if (sh.count !== count) problems.push(`${s.dir}: shard ${sh.index}/${sh.count}, but ${first.dir} is shard ${first.manifest.shard.index}/${count} (different N)`);
    if (JSON.stringify(sh.only) !== JSON.stringify(first.manifest.shard.only)) problems.push(`${s.dir}: --only ${sh.only.join(' ') || '(none)'} differs from ${first.dir}'s --only ${first.manifest.shard.only.join(' ') || '(none)'}`);
    if (canonicalJson(s.config) !== canonicalJson(first.config)) problems.push(`${s.dir}: config.json differs from ${first.dir}'s (another harness version validated the experiment differently)`);
  }
  const byIndex = new Map<number, string[]>();
  for (const s of shards) byIndex.set(s.manifest.shard?.index ?? 0, [...(byIndex.get(s.manifest.shard?.index ?? 0) ?? []), s.dir]);
  for (const [i, dirs] of byIndex) if (dirs.length > 1) problems.push(`duplicate shard ${i}/${count}: ${dirs.join(', ')}`);
  const missing = Array.from({ length: count }, (_, i) => i + 1).filter((i) => !byIndex.has(i));
  if (missing.length) problems.push(`missing shard${missing.length === 1 ? '' : 's'} ${missing.map((i) => `${i}/${count}`).join(', ')} (given: ${[...byIndex.keys()].sort((a, b) => a - b).map((i) => `${i}/${count}`).join(', ')})`);
  // A cell measured by two shards would have two hosts' values: refuse rather than pick one.
  if (!problems.some((p) => p.startsWith('duplicate'))) {
    const owner = new Map<string, string>();
    for (const s of shards) {
      for (const c of s.cells) {
        const prev = owner.get(c.hash);
        if (prev) problems.push(`cell ${c.id} is in two shards: ${prev} and ${s.dir}`);
        else owner.set(c.hash, s.dir);
      }
    }
    const planned = first.manifest.shard.planCells;
    if (!missing.length && owner.size !== planned && problems.length === 0) problems.push(`the shards hold ${owner.size} cells, the plan has ${planned}`);
  }
  return problems;
}

export async function mergeShards(out: string, dirs: readonly string[]): Promise<{ dir: string; manifest: Manifest; cells: number }> {
  if (dirs.length === 0) throw new ConfigError('merge: give the output directory and at least one shard directory');
  const shards = await Promise.all(dirs.map(readShard));
  const problems = mergeProblems(shards);
  if (problems.length) throw new ConfigError(`merge: these shards do not make one run:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  const abs = path.resolve(out);
  if (existsSync(abs) && readdirSync(abs).length > 0) throw new ConfigError(`merge: ${out} exists and is not empty (merge writes a new run directory)`);
  shards.sort((a, b) => (a.manifest.shard?.index ?? 0) - (b.manifest.shard?.index ?? 0));
  const first = shards[0] as ShardInput;
  await mkdir(abs, { recursive: true });
  await writeFile(path.join(abs, EXPERIMENT_COPY), await readFile(path.join(first.dir, EXPERIMENT_COPY)));
  await writeFile(path.join(abs, CONFIG), `${JSON.stringify(first.config, null, 2)}\n`);
  const cells = shards.flatMap((s) => s.cells).sort((a, b) => a.index - b.index);
  await writeFileAtomic(path.join(abs, CELLS), `${JSON.stringify(cells, null, 2)}\n`);
  const samples = (await Promise.all(shards.map((s) => readSamples(s.dir)))).flat();
  await writeFileAtomic(path.join(abs, SAMPLES_JSONL), samples.map((s) => `${JSON.stringify(s)}\n`).join(''));
  // Raw outputs keep their paths (cells/<id>/...), so rawFiles in cells.json stay valid.
  for (const s of shards) if (existsSync(path.join(s.dir, 'cells'))) await cp(path.join(s.dir, 'cells'), path.join(abs, 'cells'), { recursive: true });

  const merged: MergedShard[] = shards.map((s) => ({
    index: s.manifest.shard?.index ?? 0,
    runId: s.manifest.runId,
    source: s.dir,
    status: s.manifest.status,
    accelerator: s.manifest.accelerator,
    pm: s.manifest.pm,
    host: s.manifest.host,
    tools: s.manifest.tools,
    build: s.manifest.build,
    harness: s.manifest.harness,
    startedAt: s.manifest.startedAt,
    endedAt: s.manifest.endedAt,
    ...(s.manifest.testKnobs ? { testKnobs: s.manifest.testKnobs } : {}),
    cells: s.cells.map((c) => c.hash),
  }));
  const statuses = shards.map((s) => s.manifest.status);
  const counts = { total: cells.length, ok: 0, failed: 0, timeout: 0, interrupted: 0, pending: 0 };
  for (const c of cells) counts[c.status]++;
  const knobs = Object.assign({}, ...shards.map((s) => s.manifest.testKnobs ?? {})) as Record<string, string>;
  const errors = shards.filter((s) => s.manifest.error).map((s) => `shard ${s.manifest.shard?.index}: ${s.manifest.error}`);
  const manifest: Manifest = {
    schema: 1,
    runId: newRunId(),
    // The worst of the shards: one interrupted or failed shard makes the merged run so.
    status: statuses.includes('interrupted') ? 'interrupted' : statuses.includes('failed') ? 'failed' : statuses.includes('running') ? 'running' : 'completed',
    command: ['merge', out, ...dirs],
    experiment: first.manifest.experiment,
    harness: first.manifest.harness,
    startedAt: shards.map((s) => s.manifest.startedAt).sort()[0] as string,
    endedAt: shards.some((s) => s.manifest.endedAt === null) ? null : (shards.map((s) => s.manifest.endedAt as string).sort().at(-1) as string),
    // The top-level host fields are the first shard's; each shard's own are in `shards`.
    accelerator: first.manifest.accelerator,
    pm: first.manifest.pm,
    host: first.manifest.host,
    tools: first.manifest.tools,
    setup: shards.flatMap((s) => s.manifest.setup.map((st) => ({ ...st, action: `shard ${s.manifest.shard?.index}: ${st.action}` }))),
    build: first.manifest.build,
    cells: counts,
    shards: merged,
    ...(Object.keys(knobs).length ? { testKnobs: knobs } : {}),
    ...(errors.length ? { error: errors.join('; ') } : {}),
  };
  await writeFileAtomic(path.join(abs, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
  await writeSamplesCsv(abs);
  return { dir: abs, manifest, cells: cells.length };
}
