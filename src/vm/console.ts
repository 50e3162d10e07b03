// Reading a guest's serial console: printable lines, and where a boot that never reported got to.

/** Printable serial text: ANSI escapes and carriage returns removed, non-empty lines. */
export function serialLines(raw: string): string[] {
  return raw
    .replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[A-Za-z]/g, '\n')
    .replace(/\r/g, '')
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.trim() !== '');
}

/** Where a boot got to, judged from its serial output. */
export function bootStage(lines: readonly string[]): string {
  if (lines.length === 0) return 'the guest hung before even the firmware printed anything';
  const text = lines.join('\n');
  if (/Kernel panic/.test(text)) return 'the guest kernel panicked';
  if (/^\[\s*\d+\.\d+\]/m.test(text) || /Run \/init|Freeing unused/.test(text)) return 'the kernel printed messages but /init never reported';
  if (/Decompressing Linux|Booting the kernel/.test(text)) return 'the guest hung in or right after kernel decompression';
  if (/Probing EDD|Booting from ROM/.test(text)) return 'the guest hung after the boot loader handed over to the kernel (kernel decompression or early boot), before any kernel message';
  if (/SeaBIOS/.test(text)) return 'the guest hung in the firmware';
  return 'the guest stopped at an unrecognised point';
}
