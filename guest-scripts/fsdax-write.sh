# First boot of the fs-dax crash test: make /dev/pmem0 an fsdax namespace, mkfs.ext4, mount
# -o dax, write $FILES files of $FILE_KIB KiB, sync, then announce PCOW-SYNCED and keep writing
# (an unsynced file) until the host kills QEMU with SIGKILL.
wait_dev /dev/pmem0
ndctl create-namespace -f -e namespace0.0 --mode=fsdax > /tmp/ns.json 2>&1 || { cat /tmp/ns.json; exit 1; }
result namespace "$(tr -d ' \n' < /tmp/ns.json)"
wait_dev /dev/pmem0
# 4 KiB blocks: mke2fs picks 1 KiB for a "small" file system, and DAX needs the page size.
mkfs.ext4 -q -F -b 4096 /dev/pmem0
mount -o dax /dev/pmem0 /mnt
result mounts "$(grep ' /mnt ' /proc/mounts)"
result queue-dax "$(cat /sys/block/pmem0/queue/dax)"
i=1
while [ "$i" -le "$FILES" ]; do
  pattern "file-$i-" $((FILE_KIB * 1024))
  cp /tmp/pattern "/mnt/f$i"
  result sum-f$i "$(md5sum < /mnt/f$i | cut -d' ' -f1)"
  i=$((i + 1))
done
sync
echo PCOW-SYNCED
# Unsynced work that the crash interrupts; it must not damage what was synced.
n=0
while :; do cp /tmp/pattern "/mnt/unsynced$((n % 4))"; n=$((n + 1)); done
