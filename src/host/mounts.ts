// /proc/mounts, parsed, and which mount holds a path.
import { readFile } from 'node:fs/promises';

export interface MountEntry {
  device: string;
  mountpoint: string;
  fstype: string;
  options: string[];
}

// Fields escape space, tab, newline and backslash as \ooo octal.
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

export function parseMounts(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || !f[0] || !f[1] || !f[2] || !f[3]) continue;
    out.push({ device: unescape(f[0]), mountpoint: unescape(f[1]), fstype: f[2], options: f[3].split(',') });
  }
  return out;
}

export async function readMounts(): Promise<MountEntry[]> {
  return parseMounts(await readFile('/proc/mounts', 'utf8'));
}

/**
 * The mount an absolute, symlink-free path lives on: the longest mountpoint prefix, and of
 * equal ones the last listed (a later mount hides an earlier one at the same place).
 */
export function mountOf(path: string, mounts: readonly MountEntry[]): MountEntry | null {
  let best: MountEntry | null = null;
  for (const m of mounts) {
    const mp = m.mountpoint;
    const inside = path === mp || mp === '/' || path.startsWith(`${mp}/`);
    if (inside && (best === null || mp.length >= best.mountpoint.length)) best = m;
  }
  return best;
}

/** The DAX option of a mount ("dax", "dax=always", "dax=inode"), or null when DAX is off. */
export function daxOption(m: MountEntry): string | null {
  return m.options.find((o) => o === 'dax' || (o.startsWith('dax=') && o !== 'dax=never')) ?? null;
}
