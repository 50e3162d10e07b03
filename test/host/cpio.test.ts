import { describe, expect, it } from 'vitest';
import { cpioTree } from '../../src/host/cpio.ts';

describe('cpioTree', () => {
  it('adds every parent directory once, before its children, in the order first needed', () => {
    const t = cpioTree();
    t.addDir('lib/modules/6.1/kernel');
    t.addDir('bin');
    t.addDir('lib/modules/6.1/extra');
    t.addDir('lib/modules');
    t.addDir('');
    expect(t.entries).toEqual(
      ['lib', 'lib/modules', 'lib/modules/6.1', 'lib/modules/6.1/kernel', 'bin', 'lib/modules/6.1/extra'].map((path) => ({ kind: 'dir', path })),
    );
  });
});
