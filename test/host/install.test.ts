import { describe, expect, it } from 'vitest';
import { ensureCommands, MissingCommandsError } from '../../src/host/install.ts';

describe('ensureCommands', () => {
  it('does nothing when every command is there', async () => {
    expect(await ensureCommands([{ command: 'sh', debianPackage: 'dash' }, { command: '/bin/busybox', debianPackage: 'busybox-static' }])).toEqual([]);
  });

  it('without root, stops with the exact apt-get command', async () => {
    const reqs = [
      { command: 'pcow-no-such-command-b', debianPackage: 'pcow-pkg-b' },
      { command: 'sh', debianPackage: 'dash' },
      { command: 'pcow-no-such-command-a', debianPackage: 'pcow-pkg-a' },
      { command: 'pcow-no-such-command-a2', debianPackage: 'pcow-pkg-a' },
    ];
    const err = await ensureCommands(reqs, { root: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MissingCommandsError);
    const e = err as MissingCommandsError;
    expect(e.message).toContain('pcow-no-such-command-b (package pcow-pkg-b)');
    expect(e.message).not.toContain('dash');
    expect(e.message).toContain('apt-get install -y --no-install-recommends pcow-pkg-a pcow-pkg-b');
    expect(e.installCommand).toEqual(['apt-get', 'install', '-y', '--no-install-recommends', 'pcow-pkg-a', 'pcow-pkg-b']);
    expect(e.missing.map((m) => m.command)).toEqual(['pcow-no-such-command-b', 'pcow-no-such-command-a', 'pcow-no-such-command-a2']);
  });
});
