// Key paths ↔ positions in a parsed YAML document.
import { isAlias, isMap, isScalar, isSeq, type Document, type LineCounter, type Node as YamlNode } from 'yaml';
import type { PathSegment } from './errors.ts';

export interface Position {
  line: number;
  col: number;
}

type AnyNode = YamlNode | null | undefined;

function resolve(doc: Document, node: unknown): AnyNode {
  // An alias points at its anchor: report what the value is, at the anchor.
  for (let i = 0; i < 20 && isAlias(node); i++) node = node.resolve(doc);
  return node as AnyNode;
}

function keyString(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value);
  return undefined;
}

function start(node: { range?: readonly number[] | null } | null | undefined): number | undefined {
  return node?.range ? node.range[0] : undefined;
}

/** An empty value (`key:` with nothing after it) has no place of its own: point at its key instead. */
function isEmptyValue(node: AnyNode): boolean {
  if (!node) return true;
  return isScalar(node) && node.value === null && node.range !== undefined && node.range !== null && node.range[0] === node.range[1];
}

/** Per mapping: key → its first pair, so that placing n problems in a mapping of n keys is linear. */
const pairIndex = new WeakMap<object, Map<string, { key: unknown; value: unknown }>>();

function pairOf(map: { items: { key: unknown; value: unknown }[] }, key: string): { key: unknown; value: unknown } | undefined {
  let index = pairIndex.get(map);
  if (!index) {
    index = new Map();
    for (const p of map.items) {
      const k = keyString(p.key);
      if (k !== undefined && !index.has(k)) index.set(k, p);
    }
    pairIndex.set(map, index);
  }
  return index.get(key);
}

/**
 * Where the node at `path` is. `at: 'key'` points at the key of the last segment. When the path
 * leaves the document (a missing key) the deepest node that exists is used: the parent mapping.
 */
export function locate(doc: Document, lc: LineCounter, path: readonly PathSegment[], at: 'key' | 'value' = 'value'): Position {
  let node = resolve(doc, doc.contents);
  let keyNode: AnyNode;
  let offset = start(node) ?? 0;
  let reached = 0;
  for (const seg of path) {
    if (isMap(node)) {
      const pair = pairOf(node, String(seg));
      if (!pair) break;
      keyNode = pair.key as AnyNode;
      const value = resolve(doc, pair.value);
      node = value;
      offset = isEmptyValue(value) ? (start(keyNode) ?? offset) : (start(value) ?? offset);
    } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
      keyNode = undefined;
      const item = resolve(doc, node.items[seg]);
      node = item;
      offset = start(item) ?? offset;
    } else {
      break;
    }
    reached++;
  }
  if (at === 'key' && keyNode && reached === path.length) offset = start(keyNode) ?? offset;
  return lc.linePos(offset);
}

/**
 * Items of a mapping or list are in document order: the index of the last one starting at or
 * before `offset` (binary search, so placing many syntax errors in a long mapping stays linear).
 */
function lastStartingAtOrBefore(items: readonly unknown[], startOf: (it: unknown) => number | undefined, offset: number): number {
  let lo = 0;
  let hi = items.length - 1;
  let found = 0;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const st = startOf(items[mid]);
    if (st === undefined || st <= offset) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}

/** The key path of the deepest node that contains `offset` (for YAML syntax errors). */
export function pathAtOffset(doc: Document, offset: number): PathSegment[] {
  const path: PathSegment[] = [];
  let node: AnyNode = doc.contents as AnyNode;
  const within = (n: unknown): boolean => {
    const r = (n as { range?: readonly number[] | null } | null)?.range;
    return !!r && offset >= r[0]! && offset <= r[2]!;
  };
  // Only the item found by the search and its neighbours can contain the offset (earlier first:
  // in a broken file an unclosed value can run into the next item).
  const near = <T>(items: readonly T[], startOf: (it: T) => number | undefined): number[] => {
    const i = lastStartingAtOrBefore(items, startOf as (it: unknown) => number | undefined, offset);
    return [i - 1, i, i + 1].filter((j) => j >= 0 && j < items.length);
  };
  for (let depth = 0; depth < 100 && node; depth++) {
    if (isMap(node)) {
      let next: AnyNode;
      let found = false;
      for (const j of near(node.items, (p) => start(p.key as YamlNode))) {
        const pair = node.items[j]!;
        const k = keyString(pair.key);
        if (k === undefined) continue;
        if (within(pair.key) || within(pair.value)) {
          path.push(k);
          next = within(pair.value) ? (pair.value as AnyNode) : undefined;
          found = true;
          break;
        }
      }
      if (!found) break;
      node = next;
    } else if (isSeq(node)) {
      const items = node.items;
      const i = near(items, (it) => start(it as YamlNode)).find((j) => within(items[j]));
      if (i === undefined) break;
      path.push(i);
      node = items[i] as AnyNode;
    } else {
      break;
    }
  }
  return path;
}

export interface DuplicateKey {
  path: PathSegment[];
  key: string;
  first: Position;
  again: Position;
}

/** Every key that occurs twice in the same mapping (we parse with uniqueKeys off to see both places). */
export function duplicateKeys(doc: Document, lc: LineCounter): DuplicateKey[] {
  const out: DuplicateKey[] = [];
  const walk = (node: unknown, path: PathSegment[]): void => {
    if (isMap(node)) {
      const seen = new Map<string, unknown>();
      for (const pair of node.items) {
        const k = keyString(pair.key);
        if (k !== undefined) {
          const prev = seen.get(k);
          if (prev) {
            out.push({
              path: [...path, k],
              key: k,
              first: lc.linePos(start(prev as YamlNode) ?? 0),
              again: lc.linePos(start(pair.key as YamlNode) ?? 0),
            });
          } else {
            seen.set(k, pair.key);
          }
        }
        walk(pair.value, k === undefined ? path : [...path, k]);
      }
    } else if (isSeq(node)) {
      node.items.forEach((it, i) => walk(it, [...path, i]));
    }
  };
  walk(doc.contents, []);
  return out;
}
