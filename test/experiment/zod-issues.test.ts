// zod issues in researcher's terms, for schemas that workload authors may write.
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Size } from '../../src/experiment/schema.ts';
import { convertIssues, friendlyError, validKeysAt } from '../../src/experiment/zod-issues.ts';

function problems(schema: z.ZodType, data: unknown): [string, string][] {
  const r = schema.safeParse(data, { error: friendlyError });
  if (r.success) return [];
  return convertIssues(r.error.issues, { schema, data }).map((p) => [p.path.join('.'), p.message]);
}

describe('convertIssues', () => {
  it('calls an absent key missing, whatever its type', () => {
    const s = z.strictObject({ size: Size, mode: z.enum(['a', 'b']), n: z.number(), u: z.union([z.string(), z.number()]) });
    expect(problems(s, {})).toEqual([
      ['size', 'missing required key "size"'],
      ['mode', 'missing required key "mode" (one of "a", "b")'],
      ['n', 'missing required key "n"'],
      ['u', 'missing required key "u"'],
    ]);
  });

  it('words wrong types and ranges in YAML terms', () => {
    const s = z.strictObject({ list: z.array(z.string()).min(2), map: z.record(z.string(), z.number()), n: z.number().max(10), flag: z.boolean() });
    expect(problems(s, { list: ['x'], map: [1], n: 11, flag: 'yes' })).toEqual([
      ['list', 'needs at least 2 items'],
      ['map', 'expected a mapping, got a list'],
      ['n', 'must be at most 10, got 11'],
      ['flag', 'expected true or false, got "yes"'],
    ]);
  });

  it('keeps the messages a schema gives', () => {
    const s = z.strictObject({ n: z.number().min(1, 'n counts jobs: at least 1') });
    expect(problems(s, { n: 0 })).toEqual([['n', 'n counts jobs: at least 1']]);
  });

  it('splits unknown keys and suggests among the keys valid at that place, through unions and wrappers', () => {
    const a = z.strictObject({ kind: z.literal('a'), alpha: z.number() });
    const b = z.strictObject({ kind: z.literal('b'), beta: z.number() });
    const s = z.strictObject({ inner: z.discriminatedUnion('kind', [a, b]).optional(), list: z.array(z.strictObject({ name: z.string() })) });
    expect(problems(s, { inner: { kind: 'b', bta: 1, beta: 2 }, list: [{ name: 'x', nmae: 'y', zzz: 1 }] })).toEqual([
      ['inner.bta', 'unknown key "bta" (did you mean "beta"?)'],
      ['list.0.nmae', 'unknown key "nmae" (did you mean "name"?)'],
      ['list.0.zzz', 'unknown key "zzz"; valid keys: "name"'],
    ]);
    expect(problems(s, { inner: { kind: 'c' }, list: [] })).toEqual([['inner.kind', 'unknown kind "c"; expected one of "a", "b"']]);
    expect(validKeysAt(s, { inner: { kind: 'a' } }, ['inner'])).toEqual(['kind', 'alpha']);
    expect(validKeysAt(s.transform((x) => x), {}, [])).toEqual(['inner', 'list']);
  });

  it('reports the branch of a union whose type matched', () => {
    const s = z.strictObject({ v: z.union([z.number().int(), z.string().regex(/^\d+k$/, 'expected a count such as 4k')]) });
    expect(problems(s, { v: '4m' })).toEqual([['v', 'expected a count such as 4k']]);
    expect(problems(s, { v: [] })).toEqual([['v', 'expected a number or a string, got a list']]);
  });

  it('suggests among the keys of a record keyed by an enum', () => {
    const s = z.strictObject({ m: z.record(z.enum(['read', 'write']), z.number()) });
    expect(problems(s, { m: { raed: 1, read: 2, write: 3 } })).toEqual([['m.raed', 'unknown key "raed" (did you mean "read"?)']]);
  });
});
