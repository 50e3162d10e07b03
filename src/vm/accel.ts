// Which accelerator a guest runs under, and the QEMU arguments for it.
export type Accel = 'kvm' | 'tcg';

export function accelArgs(accel: Accel): string[] {
  // -cpu host under KVM failed on MSR 0x10a on our hosts; dropping arch-capabilities passes it.
  return accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host,-arch-capabilities'] : ['-accel', 'tcg', '-cpu', 'max'];
}
