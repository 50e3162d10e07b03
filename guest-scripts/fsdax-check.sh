# Second boot of the fs-dax crash test: the fsdax namespace comes back from its info block;
# mount (replays the journal, as any next boot would), report each file's checksum, unmount,
# then e2fsck -fn must find nothing.
wait_dev /dev/pmem0
result namespace-mode "$(cat /sys/bus/nd/devices/namespace0.0/mode 2>/dev/null)"
mount -o dax /dev/pmem0 /mnt
result mounts "$(grep ' /mnt ' /proc/mounts)"
for f in /mnt/f*; do
  result sum-$(basename "$f") "$(md5sum < "$f" | cut -d' ' -f1)"
done
umount /mnt
rc=0
e2fsck -fn /dev/pmem0 > /tmp/fsck.txt 2>&1 || rc=$?
result fsck-rc $rc
[ "$rc" = 0 ] || cat /tmp/fsck.txt
true
