// What the project needs from Debian to build and test itself, installed on demand (as root) or
// named in an exact apt-get command otherwise. `npm test` runs this first (pretest).
import { readdirSync, existsSync } from 'node:fs';
import { ensureCommands, type CommandRequirement } from '../host/install.ts';
import { run } from '../util/proc.ts';

/** Commands the tests and the quick experiment use. */
export const TEST_COMMANDS: CommandRequirement[] = [
  { command: 'make', debianPackage: 'make' },
  { command: 'gcc', debianPackage: 'gcc' },
  { command: 'clang', debianPackage: 'clang' },
  { command: 'llvm-symbolizer', debianPackage: 'llvm' },
  { command: 'git', debianPackage: 'git' },
  { command: 'fio', debianPackage: 'fio' },
  { command: 'qemu-img', debianPackage: 'qemu-utils' },
  { command: 'qemu-system-x86_64', debianPackage: 'qemu-system-x86' },
  { command: '/bin/busybox', debianPackage: 'busybox-static' },
  { command: 'cpio', debianPackage: 'cpio' },
  // The Debian guest image (src/vm/image.ts): debootstrap fetches with wget, keys with ssh-keygen.
  { command: 'wget', debianPackage: 'wget' },
  { command: 'ssh-keygen', debianPackage: 'openssh-client' },
  { command: 'chromium', debianPackage: 'chromium' },
];

/** Files (not commands) with the package that ships them: sanitizer/fuzzer runtimes, chart fonts. */
const TEST_FILES: { what: string; found: () => boolean; debianPackage: string }[] = [
  {
    what: 'clang sanitizer and libFuzzer runtimes',
    debianPackage: 'libclang-rt-14-dev',
    found: () => {
      const base = '/usr/lib/llvm-14/lib/clang';
      if (!existsSync(base)) return false;
      return readdirSync(base).some((v) => existsSync(`${base}/${v}/lib/linux/libclang_rt.fuzzer-x86_64.a`));
    },
  },
  {
    what: 'DejaVu fonts for PNG charts',
    debianPackage: 'fonts-dejavu-core',
    found: () => existsSync('/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf'),
  },
];

export async function ensureTestDeps(log: (l: string) => void): Promise<void> {
  const steps = await ensureCommands(TEST_COMMANDS);
  for (const s of steps) log(`${s.action}: ${s.detail}`);
  const missing = TEST_FILES.filter((f) => !f.found());
  if (missing.length === 0) return;
  const pkgs = missing.map((f) => f.debianPackage);
  const argv = ['apt-get', 'install', '-y', '--no-install-recommends', ...pkgs];
  if (process.getuid?.() !== 0) {
    throw new Error(`missing: ${missing.map((f) => `${f.what} (package ${f.debianPackage})`).join(', ')}. Install as root with:\n  ${argv.join(' ')}`);
  }
  log(`install: ${argv.join(' ')}`);
  const r = await run(argv[0]!, argv.slice(1), { env: { DEBIAN_FRONTEND: 'noninteractive' } });
  if (r.exitCode !== 0) throw new Error(`${argv.join(' ')} failed:\n${r.stderr.trim().split('\n').slice(-5).join('\n')}`);
}
