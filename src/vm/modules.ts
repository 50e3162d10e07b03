// Kernel modules for a guest initramfs without depmod (the host has no kmod, and the Debian
// kernel package ships no modules.dep): each .ko names its dependencies in its .modinfo section
// ("depends=a,b"), so the closure and a load order come from the modules themselves.
import { readFile, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';

export interface ModuleInfo {
  name: string;
  /** Path relative to lib/modules/<release>. */
  path: string;
  depends: string[];
}

/** The NUL-separated key=value strings of an ELF .ko's .modinfo section. */
export function modinfo(elf: Buffer): Map<string, string[]> {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file (compressed module?)');
  if (elf[4] !== 2 || elf[5] !== 1) throw new Error('not a 64-bit little-endian ELF file');
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  if (shoff + shnum * shentsize > elf.length || shstrndx >= shnum) throw new Error('ELF section headers out of range');
  const sec = (i: number): { name: number; off: number; size: number } => {
    const b = shoff + i * shentsize;
    return { name: elf.readUInt32LE(b), off: Number(elf.readBigUInt64LE(b + 0x18)), size: Number(elf.readBigUInt64LE(b + 0x20)) };
  };
  const strtab = sec(shstrndx);
  const out = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = sec(i);
    const nameStart = strtab.off + s.name;
    const name = elf.toString('latin1', nameStart, elf.indexOf(0, nameStart));
    if (name !== '.modinfo') continue;
    if (s.off + s.size > elf.length) throw new Error('.modinfo out of range');
    for (const kv of elf.toString('utf8', s.off, s.off + s.size).split('\0')) {
      const eq = kv.indexOf('=');
      if (eq <= 0) continue;
      const k = kv.slice(0, eq);
      out.set(k, [...(out.get(k) ?? []), kv.slice(eq + 1)]);
    }
    return out;
  }
  throw new Error('no .modinfo section');
}

/** Module name as the kernel spells it (dashes are underscores). */
export function modName(file: string): string {
  return file.replace(/\.ko$/, '').replace(/-/g, '_');
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (e.name.endsWith('.ko')) out.push(p);
  }
  return out;
}

/** Index of every module file under <modulesDir>/kernel by module name. */
export async function moduleIndex(modulesDir: string): Promise<Map<string, string>> {
  const idx = new Map<string, string>();
  for (const f of await walk(join(modulesDir, 'kernel'))) {
    idx.set(modName(f.slice(f.lastIndexOf('/') + 1)), relative(modulesDir, f));
  }
  return idx;
}

/**
 * The modules `wanted` and everything they depend on, dependencies first (insmod order).
 * Names in the kernel's modules.builtin are skipped; an unknown name is an error naming it.
 */
export async function resolveModules(modulesDir: string, wanted: readonly string[]): Promise<ModuleInfo[]> {
  const idx = await moduleIndex(modulesDir);
  const builtin = new Set(
    (await readFile(join(modulesDir, 'modules.builtin'), 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean)
      .map((l) => modName(l.slice(l.lastIndexOf('/') + 1))),
  );
  const order: ModuleInfo[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = async (raw: string, from: string | null): Promise<void> => {
    const name = modName(raw);
    if (builtin.has(name) || state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') throw new Error(`module dependency cycle through ${name}`);
    const path = idx.get(name);
    if (!path) throw new Error(`kernel module ${name}${from ? ` (needed by ${from})` : ''} is neither in ${modulesDir}/kernel nor built in`);
    state.set(name, 'visiting');
    const info = modinfo(await readFile(join(modulesDir, path)));
    const depends = (info.get('depends') ?? []).flatMap((d) => d.split(',')).filter(Boolean);
    for (const d of depends) await visit(d, name);
    state.set(name, 'done');
    order.push({ name, path, depends });
  };
  for (const w of wanted) await visit(w, null);
  return order;
}
