// A cpio "newc" archive writer, enough for a Linux initramfs. Built in node so the archive is
// byte-for-byte reproducible (fixed mtimes, owners and inode numbers) and needs no root for
// device nodes: the kernel creates them from the header when it unpacks the archive.

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Uint8Array; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'char' | 'block'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio: field value ${n} out of range`);
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function header(ino: number, mode: number, size: number, name: string, rdevMajor = 0, rdevMinor = 0): Buffer {
  const nameBytes = Buffer.from(`${name}\0`, 'utf8');
  const fields = [
    '070701',
    hex8(ino),
    hex8(mode),
    hex8(0), // uid
    hex8(0), // gid
    hex8(1), // nlink
    hex8(0), // mtime: fixed for reproducibility
    hex8(size),
    hex8(0), // dev major
    hex8(0), // dev minor
    hex8(rdevMajor),
    hex8(rdevMinor),
    hex8(nameBytes.length),
    hex8(0), // check
  ].join('');
  const head = Buffer.from(fields, 'ascii');
  return Buffer.concat([head, nameBytes, Buffer.alloc(pad4(head.length + nameBytes.length))]);
}

/** The archive of `entries` in order (parents must come before children), with its trailer. */
export function cpioNewc(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (name === '' || name.split('/').includes('..')) throw new Error(`cpio: bad path ${JSON.stringify(e.path)}`);
    switch (e.kind) {
      case 'dir':
        parts.push(header(ino++, S_IFDIR | (e.mode ?? 0o755), 0, name));
        break;
      case 'file': {
        parts.push(header(ino++, S_IFREG | (e.mode ?? 0o644), e.data.length, name));
        parts.push(Buffer.from(e.data), Buffer.alloc(pad4(e.data.length)));
        break;
      }
      case 'symlink': {
        const t = Buffer.from(e.target, 'utf8');
        parts.push(header(ino++, S_IFLNK | 0o777, t.length, name), t, Buffer.alloc(pad4(t.length)));
        break;
      }
      case 'char':
      case 'block':
        parts.push(header(ino++, (e.kind === 'char' ? S_IFCHR : S_IFBLK) | (e.mode ?? 0o600), 0, name, e.major, e.minor));
        break;
    }
  }
  parts.push(header(0, 0, 0, 'TRAILER!!!'));
  const body = Buffer.concat(parts);
  // Pad to 512 bytes like cpio(1) does; the kernel does not need it but tools expect it.
  return Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

/**
 * Entries of an archive being built, with every parent directory added once, before what is in
 * it (the kernel's initramfs unpacker does not create missing parents).
 */
export function cpioTree(): { entries: CpioEntry[]; addDir: (path: string) => void } {
  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const addDir = (p: string): void => {
    const parts = p.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (d && !dirs.has(d)) {
        dirs.add(d);
        entries.push({ kind: 'dir', path: d });
      }
    }
  };
  return { entries, addDir };
}
