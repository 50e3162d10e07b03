// The patched QEMU the pcow guest tests run: ensureQemu() (built once, then cached), or the
// binary named by PCOW_QEMU (a development build; firmware from the Debian directories).
import { QEMU_FIRMWARE_DIRS, ensureQemu } from '../../src/build/qemu.ts';

export interface PatchedQemu {
  binary: string;
  firmwareArgs: string[];
}

export async function patchedQemu(): Promise<PatchedQemu> {
  const own = process.env.PCOW_QEMU;
  if (own) return { binary: own, firmwareArgs: QEMU_FIRMWARE_DIRS.flatMap((d) => ['-L', d]) };
  const b = await ensureQemu({ log: (l) => console.log(l) });
  return { binary: b.binary, firmwareArgs: b.firmwareArgs };
}
