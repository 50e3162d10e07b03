// zod issues → PathProblems a researcher can act on: plain wording in YAML terms ("a mapping",
// "a list"), one problem per unknown key pointing at that key, and the nearest valid name.
import type { z } from 'zod';
import { describeValue, type PathProblem, type PathSegment } from './errors.ts';
import { hintFor, didYouMean, listChoices } from './suggest.ts';

type Issue = z.core.$ZodIssue;
type RawIssue = z.core.$ZodRawIssue;

const typeNames: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  object: 'a mapping',
  record: 'a mapping',
  array: 'a list',
  tuple: 'a list',
  null: 'an empty value',
  bigint: 'a whole number',
  date: 'a date',
};
const typeName = (t: string): string => typeNames[t] ?? t;

function orList(items: string[]): string {
  const u = [...new Set(items)];
  return u.length <= 1 ? (u[0] ?? '') : `${u.slice(0, -1).join(', ')} or ${u.at(-1)}`;
}

/**
 * Per-parse error map: the default wording of every issue. Messages given in a schema (a tool's
 * own `.min(1, '...')`) take precedence over it, as zod ranks schema-level errors first.
 */
export const friendlyError: z.core.$ZodErrorMap = (iss: RawIssue) => {
  const got = describeValue(iss.input);
  switch (iss.code) {
    case 'invalid_type':
      return `expected ${typeName(iss.expected)}, got ${got}`;
    case 'too_small': {
      const min = String(iss.minimum);
      if (iss.origin === 'array' || iss.origin === 'set') return `needs at least ${min} item${min === '1' ? '' : 's'}`;
      if (iss.origin === 'string') return `must be at least ${min} character${min === '1' ? '' : 's'} long`;
      return `${iss.inclusive ? 'must be at least' : 'must be greater than'} ${min}, got ${got}`;
    }
    case 'too_big': {
      const max = String(iss.maximum);
      if (iss.origin === 'array' || iss.origin === 'set') return `allows at most ${max} item${max === '1' ? '' : 's'}`;
      if (iss.origin === 'string') return `must be at most ${max} characters long`;
      return `${iss.inclusive ? 'must be at most' : 'must be less than'} ${max}, got ${got}`;
    }
    case 'invalid_value':
      if (iss.values.length === 1) return `expected ${describeValue(iss.values[0])}, got ${got}`;
      return `expected one of ${iss.values.map((v) => describeValue(v)).join(', ')}, got ${got}`;
    case 'invalid_format':
      if (iss.format === 'regex' && iss.pattern) return `${got} does not match ${iss.pattern}`;
      return `expected a valid ${iss.format}, got ${got}`;
    case 'not_multiple_of':
      return `must be a multiple of ${String(iss.divisor)}, got ${got}`;
    case 'invalid_union': {
      const expected = iss.errors.flatMap((branch) =>
        branch.filter((b) => b.code === 'invalid_type' && b.path.length === 0).map((b) => typeName((b as { expected: string }).expected)),
      );
      return expected.length > 0 ? `expected ${orList(expected)}, got ${got}` : `not a valid value: ${got}`;
    }
    default:
      return undefined;
  }
};

// ---- walking zod schemas (zod 4 core defs) to learn which keys are valid at a path ----

interface Def {
  type: string;
  shape?: Record<string, Schema>;
  catchall?: Schema;
  innerType?: Schema;
  in?: Schema;
  out?: Schema;
  element?: Schema;
  valueType?: Schema;
  keyType?: Schema;
  entries?: Record<string, string | number>;
  items?: Schema[];
  options?: Schema[];
  discriminator?: string;
  getter?: () => Schema;
  left?: Schema;
  right?: Schema;
}
/** The structural part of a zod 4 schema this module reads (`_zod.def` is zod's documented core API). */
interface Schema {
  _zod: { def: Def };
  safeParse?: (v: unknown) => { success: boolean };
}

const asSchema = (s: unknown): Schema => s as Schema;

function unwrap(s: Schema): Schema {
  for (let i = 0; i < 50; i++) {
    const d = s._zod.def;
    if (d.innerType && ['optional', 'nullable', 'default', 'prefault', 'catch', 'readonly', 'nonoptional'].includes(d.type)) s = d.innerType;
    else if (d.type === 'pipe' && d.in) s = d.in._zod.def.type === 'transform' && d.out ? d.out : d.in;
    else if (d.type === 'lazy' && d.getter) s = d.getter();
    else break;
  }
  return s;
}

/** The object variants a value may be checked against (a discriminated union picks by its key). */
function objectVariants(s: Schema, data: unknown): Schema[] {
  const u = unwrap(s);
  const d = u._zod.def;
  if (d.type === 'object') return [u];
  if (d.type === 'intersection' && d.left && d.right) return [...objectVariants(d.left, data), ...objectVariants(d.right, data)];
  if (d.type === 'union' && d.options) {
    const all = d.options.flatMap((o) => objectVariants(o, data));
    const disc = d.discriminator;
    if (disc && data && typeof data === 'object' && disc in data) {
      const v = (data as Record<string, unknown>)[disc];
      const picked = all.filter((o) => {
        const f = o._zod.def.shape?.[disc];
        return f?.safeParse?.(v).success;
      });
      if (picked.length > 0) return picked;
    }
    return all;
  }
  return [];
}

function child(s: Schema, data: unknown, seg: PathSegment): Schema | undefined {
  const u = unwrap(s);
  const d = u._zod.def;
  switch (d.type) {
    case 'record':
      return d.valueType;
    case 'array':
      return d.element;
    case 'tuple':
      return typeof seg === 'number' ? d.items?.[seg] : undefined;
    default: {
      for (const o of objectVariants(u, data)) {
        const od = o._zod.def;
        const f = od.shape?.[String(seg)] ?? od.catchall;
        if (f) return f;
      }
      return undefined;
    }
  }
}

function dataChild(data: unknown, seg: PathSegment): unknown {
  if (data === null || typeof data !== 'object') return undefined;
  return (data as Record<string | number, unknown>)[seg];
}

export function dataAt(data: unknown, path: readonly PathSegment[]): unknown {
  let d = data;
  for (const seg of path) d = dataChild(d, seg);
  return d;
}

/** Keys accepted by the object schema at `path` (undefined when that is not knowable, e.g. a record). */
export function validKeysAt(schema: unknown, data: unknown, path: readonly PathSegment[]): string[] | undefined {
  let s: Schema | undefined = asSchema(schema);
  let d = data;
  for (const seg of path) {
    if (!s) return undefined;
    s = child(s, d, seg);
    d = dataChild(d, seg);
  }
  if (!s) return undefined;
  // A record keyed by an enum (z.record(z.enum([...]), ...)) accepts exactly the enum's values.
  const u = unwrap(s)._zod.def;
  if (u.type === 'record' && u.keyType) {
    const k = unwrap(u.keyType)._zod.def;
    return k.type === 'enum' && k.entries ? Object.values(k.entries).map(String) : undefined;
  }
  const variants = objectVariants(s, d);
  if (variants.length === 0) return undefined;
  return [...new Set(variants.flatMap((v) => Object.keys(v._zod.def.shape ?? {})))];
}

// ---- issues → problems ----

export interface ConvertContext {
  /** The schema that was parsed (used to list valid keys for suggestions). */
  schema: unknown;
  /** The data that was parsed. */
  data: unknown;
}

/** Turn zod issues into PathProblems, with paths relative to the parsed data. */
export function convertIssues(issues: readonly Issue[], ctx: ConvertContext, base: readonly PathSegment[] = []): PathProblem[] {
  const out: PathProblem[] = [];
  for (const iss of issues) {
    const path: PathSegment[] = [...base, ...(iss.path as PathSegment[])];
    const last = path.at(-1);
    const value = dataAt(ctx.data, path);
    const parent = dataAt(ctx.data, path.slice(0, -1));
    // A key that is not there, whatever the schema's own wording for a wrong value would be.
    const missing =
      value === undefined &&
      path.length > 0 &&
      parent !== null &&
      typeof parent === 'object' &&
      !Array.isArray(parent) &&
      (iss.code === 'invalid_type' || iss.code === 'invalid_value' || iss.code === 'invalid_union');
    if (missing) {
      const options = iss.code === 'invalid_value' ? iss.values.map(String) : ((iss as { options?: unknown[] }).options ?? []).map(String);
      const oneOf = options.length > 0 ? ` (one of ${listChoices(options)})` : '';
      out.push({ path, message: `missing required key ${JSON.stringify(String(last))}${oneOf}` });
      continue;
    }
    switch (iss.code) {
      case 'unrecognized_keys': {
        const valid = validKeysAt(ctx.schema, ctx.data, path) ?? [];
        for (const key of iss.keys) {
          out.push({ path: [...path, key], at: 'key', message: `unknown key ${JSON.stringify(key)}${hintFor(key, valid, 'valid keys')}` });
        }
        break;
      }
      case 'invalid_union': {
        if (iss.discriminator !== undefined) {
          const options = ((iss as { options?: unknown[] }).options ?? []).map(String);
          const dym = typeof value === 'string' ? didYouMean(value, options) : '';
          out.push({ path, message: `unknown ${String(last)} ${describeValue(value)}${dym}; expected one of ${listChoices(options)}` });
          break;
        }
        // When the value had the right type for exactly one branch, that branch's complaint is the useful one.
        const informative = iss.errors.filter((branch) => !branch.every((b) => b.code === 'invalid_type' && b.path.length === 0));
        if (informative.length === 1) out.push(...convertIssues(informative[0]!, ctx, path));
        else out.push({ path, message: iss.message });
        break;
      }
      case 'invalid_key': {
        const inner = iss.issues.map((i) => i.message).join('; ');
        const values = iss.issues.flatMap((i) => (i.code === 'invalid_value' ? i.values.map(String) : []));
        const dym = values.length > 0 ? didYouMean(String(last), values) : '';
        out.push({ path, at: 'key', message: `invalid key ${JSON.stringify(String(last))}: ${inner}${dym}` });
        break;
      }
      case 'invalid_value': {
        const dym = typeof value === 'string' ? didYouMean(value, iss.values.map(String)) : '';
        out.push({ path, message: `${iss.message}${dym}` });
        break;
      }
      default:
        out.push({ path, message: iss.message });
    }
  }
  return out;
}
