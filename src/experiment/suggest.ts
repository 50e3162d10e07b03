// "Did you mean …?" for misspelt keys, tool names, axis names and enum values.

/** Optimal string alignment distance: Levenshtein plus adjacent transpositions ("bra" → "bar" is 1). */
export function editDistance(a: string, b: string): number {
  const m = a.length;
  const n = b.length;
  if (m === 0) return n;
  if (n === 0) return m;
  // Three rolling rows are enough for the transposition look-back.
  let prev2 = new Array<number>(n + 1).fill(0);
  let prev = Array.from({ length: n + 1 }, (_, j) => j);
  let cur = new Array<number>(n + 1).fill(0);
  for (let i = 1; i <= m; i++) {
    cur[0] = i;
    for (let j = 1; j <= n; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, prev2[j - 2]! + 1);
      cur[j] = v;
    }
    [prev2, prev, cur] = [prev, cur, prev2];
  }
  return prev[n]!;
}

/** Case, `_` and `-` are not worth a mistake: "rw_mix", "RWMix" and "rwmix" compare equal. */
function normalise(s: string): string {
  return s.toLowerCase().replace(/[_\-\s]/g, '');
}

/**
 * Above this many candidates only the cheap rule applies (equal up to case and separators, by a
 * lookup): comparing every name with every candidate would make a large file's validation
 * quadratic (each of n bad names against n candidates).
 */
export const FUZZY_CANDIDATES_MAX = 1000;

/** Per candidate list: normalised name → the candidates with that form (for large lists). */
const normalisedIndex = new WeakMap<readonly string[], Map<string, string[]>>();

function byNormalForm(candidates: readonly string[]): Map<string, string[]> {
  let index = normalisedIndex.get(candidates);
  if (!index) {
    index = new Map();
    for (const c of new Set(candidates)) {
      const k = normalise(c);
      const list = index.get(k);
      if (list) list.push(c);
      else index.set(k, [c]);
    }
    normalisedIndex.set(candidates, index);
  }
  return index;
}

/**
 * The candidates close enough to `word` to be what the user meant, best first (ties all kept, at
 * most `max`). Close enough: equal up to case and separators, a prefix of at least 3 characters
 * ("rwmix" → "rwmixread"), or an edit distance of 1 for short words, 2 up to 6 characters, 3 beyond.
 * For more than FUZZY_CANDIDATES_MAX candidates only the first rule is applied.
 */
export function closest(word: string, candidates: Iterable<string>, max = 2): string[] {
  const w = normalise(word);
  if (w.length === 0) return [];
  const list = Array.isArray(candidates) ? (candidates as readonly string[]) : [...candidates];
  if (list.length > FUZZY_CANDIDATES_MAX) return (byNormalForm(list).get(w) ?? []).filter((c) => c !== word).slice(0, max);
  const limit = w.length <= 3 ? 1 : w.length <= 6 ? 2 : 3;
  let best = Infinity;
  let found: string[] = [];
  for (const cand of new Set(list)) {
    if (cand === word) continue;
    const c = normalise(cand);
    let score: number;
    if (c === w) score = 0;
    else if (Math.min(c.length, w.length) >= 3 && (c.startsWith(w) || w.startsWith(c))) score = 1;
    else score = editDistance(w, c);
    // Replacing the whole word is no suggestion ("c" → "a").
    if (score > limit || score >= w.length) continue;
    if (score < best) {
      best = score;
      found = [cand];
    } else if (score === best) {
      found.push(cand);
    }
  }
  return found.slice(0, max);
}

const q = (s: string): string => JSON.stringify(s);

/** ` (did you mean "x"?)`, ` (did you mean "x" or "y"?)`, or '' when nothing is close. */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  const found = closest(word, candidates);
  if (found.length === 0) return '';
  return ` (did you mean ${found.map(q).join(' or ')}?)`;
}

/** How many items of a list a message names before "and N more". */
export const LIST_LIMIT = 10;

/** `a, b, c`, or the first `limit` items and "and N more": a message never grows with the file. */
export function capList(items: readonly string[], limit = LIST_LIMIT, sep = ', '): string {
  const shown = items.slice(0, limit);
  const more = items.length - shown.length;
  return more > 0 ? `${shown.join(sep)} and ${more} more` : shown.join(sep);
}

/** `"a", "b", "c"`; long lists are cut so a message stays one readable line. */
export function listChoices(choices: readonly string[], limit = LIST_LIMIT): string {
  if (choices.length === 0) return '(none)';
  return capList(choices.map(q), limit);
}

/**
 * The hint for a wrong name: the nearest candidates when one is close, otherwise the full list,
 * so the reader always learns what to type.
 */
export function hintFor(word: string, candidates: readonly string[], what = 'valid'): string {
  const dym = didYouMean(word, candidates);
  if (dym) return dym;
  return candidates.length > 0 ? `; ${what}: ${listChoices(candidates)}` : '';
}

/** The nearest candidates if any, and always the full (short) list: for values, where seeing all helps. */
export function hintWithList(word: string, candidates: readonly string[], what = 'valid'): string {
  return `${didYouMean(word, candidates)}${candidates.length > 0 ? `; ${what}: ${listChoices(candidates)}` : ''}`;
}
