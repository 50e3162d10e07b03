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
      const pair = node.items.find((p) => keyString(p.key) === String(seg));
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

/** The key path of the deepest node that contains `offset` (for YAML syntax errors). */
export function pathAtOffset(doc: Document, offset: number): PathSegment[] {
  const path: PathSegment[] = [];
  let node: AnyNode = doc.contents as AnyNode;
  const within = (n: unknown): boolean => {
    const r = (n as { range?: readonly number[] | null } | null)?.range;
    return !!r && offset >= r[0]! && offset <= r[2]!;
  };
  for (let depth = 0; depth < 100 && node; depth++) {
    if (isMap(node)) {
      let next: AnyNode;
      for (const pair of node.items) {
        const k = keyString(pair.key);
        if (k === undefined) continue;
        if (within(pair.key) || within(pair.value)) {
          path.push(k);
          next = within(pair.value) ? (pair.value as AnyNode) : undefined;
          break;
        }
      }
      node = next;
    } else if (isSeq(node)) {
      const i = node.items.findIndex((it) => within(it));
      if (i < 0) break;
      path.push(i);
      node = node.items[i] as AnyNode;
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
