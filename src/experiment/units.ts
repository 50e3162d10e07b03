// Sizes and durations as researchers write them in experiment files.
//
// Every size unit is binary: k, K, KB and KiB all mean 1024 (M = 1024², …). Storage benchmarks
// (fio's bs=4k, qemu-img's cluster sizes, page sizes) mean 1024 by these letters, and a "4k" that
// silently became 4000 bytes would break every alignment the experiment relies on.

const SIZE_UNITS: Record<string, number> = {
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
  p: 1024 ** 5,
};

export const SIZE_HINT = 'expected a size such as 4096, 4k, 64KiB, 1GiB';
export const DURATION_HINT = 'expected a duration such as 500ms, 30s, 5m, 1h30m (a bare number is seconds)';

const sizeRe = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i;

/** b, k, kb, kib (any case) → factor; "kbit", "ki" and the like → undefined. */
function unitFactor(unit: string): number | undefined {
  const u = unit.toLowerCase();
  if (u === '' || u === 'b') return 1;
  return /^[kmgtp](i?b)?$/.test(u) ? SIZE_UNITS[u[0]!] : undefined;
}

/** Why `value` is not a size, or undefined when it is one. */
export function sizeProblem(value: unknown): string | undefined {
  try {
    parseSize(value as string | number);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** "64KiB" | "4k" | "1G" | "1.5M" | "512B" | 4096 → bytes (binary units, see the file comment). */
export function parseSize(value: string | number): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new Error(`invalid size ${value}: ${SIZE_HINT} (a bare number is a whole number of bytes)`);
    }
    return value;
  }
  if (typeof value !== 'string') throw new Error(`invalid size ${String(value)}: ${SIZE_HINT}`);
  const m = sizeRe.exec(value.trim());
  const factor = m ? unitFactor(m[2]!) : undefined;
  if (!m || factor === undefined) {
    throw new Error(`invalid size ${JSON.stringify(value)}: ${SIZE_HINT}`);
  }
  const bytes = Number(m[1]) * factor;
  if (!Number.isInteger(bytes)) {
    throw new Error(`invalid size ${JSON.stringify(value)}: ${bytes} is not a whole number of bytes`);
  }
  if (!Number.isSafeInteger(bytes)) throw new Error(`invalid size ${JSON.stringify(value)}: too large`);
  return bytes;
}

/** Bytes → the largest binary unit that represents it exactly: 4096 → "4KiB", 1536 → "1536B". */
export function formatSize(bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new Error(`formatSize: not a byte count: ${bytes}`);
  if (bytes === 0) return '0B';
  const units: [string, number][] = [
    ['PiB', 1024 ** 5],
    ['TiB', 1024 ** 4],
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ];
  for (const [name, factor] of units) if (bytes % factor === 0) return `${bytes / factor}${name}`;
  return `${bytes}B`;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 };
const durationPartRe = /(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)/gy;

/** Why `value` is not a duration, or undefined when it is one. */
export function durationProblem(value: unknown): string | undefined {
  try {
    parseDuration(value as string | number);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** "30s" | "500ms" | "5m" | "1h30m" | 120 (a bare number is seconds) → milliseconds. */
export function parseDuration(value: string | number): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new Error(`invalid duration ${value}: ${DURATION_HINT}`);
    return Math.round(value * 1000);
  }
  if (typeof value !== 'string') throw new Error(`invalid duration ${String(value)}: ${DURATION_HINT}`);
  const s = value.trim().toLowerCase();
  let ms = 0;
  let pos = 0;
  durationPartRe.lastIndex = 0;
  for (let m = durationPartRe.exec(s); m; m = durationPartRe.exec(s)) {
    ms += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    pos = durationPartRe.lastIndex;
    while (s[pos] === ' ') pos++;
    durationPartRe.lastIndex = pos;
  }
  if (s.length === 0 || pos !== s.length) {
    const hint = /^\d+(\.\d+)?$/.test(s) ? ' (write the unit, e.g. "30s"; only a bare YAML number means seconds)' : '';
    throw new Error(`invalid duration ${JSON.stringify(value)}: ${DURATION_HINT}${hint}`);
  }
  return Math.round(ms);
}

/** Milliseconds → "500ms", "30s", "5m", "1h30m" (exact, parseable by parseDuration). */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) throw new Error(`formatDuration: not a duration: ${ms}`);
  if (ms === 0) return '0s';
  if (ms % 1000 !== 0) return `${ms}ms`;
  let s = ms / 1000;
  const parts: string[] = [];
  for (const [unit, secs] of [['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (s >= secs) {
      const n = Math.floor(s / secs);
      parts.push(`${n}${unit}`);
      s -= n * secs;
    }
  }
  return parts.join('');
}
