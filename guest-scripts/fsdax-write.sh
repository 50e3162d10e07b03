# First boot of the fs-dax crash test: make /dev/pmem0 an fsdax namespace, mkfs.ext4, mount
# -o dax, write $FILES files of $FILE_KIB KiB, sync, then announce PCOW-SYNCED and keep writing
# (an unsynced file) until the host kills QEMU with SIGKILL.
# Without a label area the NVDIMM comes up as a raw namespace0.0 (/dev/pmem0) that is
# reconfigured; with one (LABELS=1) the region starts empty and a namespace is created in it.
if [ -n "$LABELS" ]; then
  n=50; while [ ! -e /sys/bus/nd/devices/region0 ] && [ "$n" -gt 0 ]; do usleep 100000; n=$((n - 1)); done
  # A fresh (zeroed) label area holds no index blocks: initialize it, with the region offline.
  ndctl disable-region region0 > /tmp/ndctl.log 2>&1 && ndctl init-labels -f nmem0 >> /tmp/ndctl.log 2>&1 &&
    ndctl enable-region region0 >> /tmp/ndctl.log 2>&1 || { cat /tmp/ndctl.log; exit 1; }
  ndctl create-namespace -r region0 --mode=fsdax > /tmp/ns.json 2>&1 || { cat /tmp/ns.json; exit 1; }
else
  wait_dev /dev/pmem0
  ndctl create-namespace -f -e namespace0.0 --mode=fsdax > /tmp/ns.json 2>&1 || { cat /tmp/ns.json; exit 1; }
fi
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
