// `pcow-harness boot`: the patched QEMU (built or cached), a pcow image (created when missing),
// one guest that writes at three offsets of its NVDIMM and reads them back, the boot times and
// the runtime's query-pcow figures. What a new user runs to see pcow under a real guest.
import { existsSync } from 'node:fs';
import { nativeBins } from '../build/native.ts';
import { ensureQemu } from '../build/qemu.ts';
import { runChecked } from '../util/proc.ts';
import { pcowImgCheck, pcowImgInfo } from '../workloads/pcow-img.ts';
import { guestScript } from '../vm/guest.ts';
import type { Accel } from '../vm/machine.ts';
import { runGuest } from '../vm/session.ts';

export interface BootSmokeOptions {
  image: string;
  /** Size of a newly created image (default 4 GiB). */
  size?: string;
  accel: Accel;
  log: (line: string) => void;
}

export async function bootSmoke(o: BootSmokeOptions): Promise<string> {
  const qemu = await ensureQemu({ log: o.log });
  o.log(`qemu: ${qemu.binary} (${qemu.cached ? 'cached' : 'built'} in ${qemu.seconds.toFixed(1)} s)`);
  const pcowImg = nativeBins().pcowImg;
  if (!existsSync(o.image)) {
    await runChecked(pcowImg, ['create', '-c', '64K', o.image, o.size ?? '4G']);
    o.log(`created ${o.image} (${o.size ?? '4G'})`);
  }
  const before = (await pcowImgInfo(pcowImg, o.image)).result;
  const size = before.virtualSize;
  const offsets = [0, Math.floor(size / 2 / 4096) * 4096, size - 4096];
  let stats: unknown;
  const r = await runGuest({
    accel: o.accel,
    qemu: qemu.binary,
    extraArgs: qemu.firmwareArgs,
    disks: [{ kind: 'nvdimm', backend: { type: 'pcow', path: o.image, size } }],
    script: await guestScript('write-offsets.sh'),
    env: { OFFSETS: offsets.join(' '), READ_OFFSETS: offsets.join(' '), TAG: 'boot', WAIT_HOST: 'write', HOLD: 'off' },
    control: true,
    log: o.log,
    whileRunning: async (vm) => {
      await vm.waitFor(/PCOW-WAIT-HOST write/, 60_000);
      await vm.send('write');
      await vm.waitFor(/PCOW-WAIT-HOST off/, 60_000);
      stats = await vm.qmp!.execute('query-pcow');
      await vm.send('off');
    },
  });
  const after = (await pcowImgInfo(pcowImg, o.image)).result;
  const check = (await pcowImgCheck(pcowImg, o.image)).result;
  const lines = [
    `guest (${o.accel}) on ${o.image}: init ${(r.bootMs / 1000).toFixed(1)} s after QEMU started, powered off after ${(r.totalMs / 1000).toFixed(1)} s, test exit ${r.rc}`,
    `  /dev/pmem0: ${r.results.get('pmem0-bytes')} bytes; before writing it read: ${offsets.map((off) => `${off}="${r.results.get(`read-${off}`) ?? ''}"`).join(' ')}`,
    `  wrote "pcow-boot-<offset>" at ${offsets.join(' ')}`,
    `  image: ${before.allocatedClusters} -> ${after.allocatedClusters} clusters of ${after.clusterSize} bytes; pcow-img check: ${check.status}`,
    `  query-pcow: ${JSON.stringify(stats)}`,
  ];
  return lines.join('\n');
}
