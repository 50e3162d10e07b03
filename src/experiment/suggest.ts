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
 * The candidates close enough to `word` to be what the user meant, best first (ties all kept, at
 * most `max`). Close enough: equal up to case and separators, a prefix of at least 3 characters
 * ("rwmix" → "rwmixread"), or an edit distance of 1 for short words, 2 up to 6 characters, 3 beyond.
 */
export function closest(word: string, candidates: Iterable<string>, max = 2): string[] {
  const w = normalise(word);
  if (w.length === 0) return [];
  const limit = w.length <= 3 ? 1 : w.length <= 6 ? 2 : 3;
  let best = Infinity;
  let found: string[] = [];
  for (const cand of new Set(candidates)) {
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

/** `"a", "b", "c"`; long lists are cut so a message stays one readable line. */
export function listChoices(choices: readonly string[], limit = 20): string {
  if (choices.length === 0) return '(none)';
  const shown = choices.slice(0, limit).map(q);
  const more = choices.length - shown.length;
  return more > 0 ? `${shown.join(', ')} and ${more} more` : shown.join(', ');
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
