# Write "pcow-$TAG-<offset>" at each 4 KiB-aligned offset in $OFFSETS of /dev/pmem0 and report
# what is at each offset in $READ_OFFSETS before (the first 64 bytes, NULs removed).
wait_dev /dev/pmem0
result pmem0-bytes $(( $(cat /sys/block/pmem0/size) * 512 ))
for off in $READ_OFFSETS; do
  result read-$off "$(dd if=/dev/pmem0 bs=4096 skip=$((off / 4096)) count=1 2>/dev/null | head -c 64 | tr -d '\000')"
done
# With WAIT_HOST set, write only once the host says so on the control channel.
[ -z "$WAIT_HOST" ] || wait_host "$WAIT_HOST"
for off in $OFFSETS; do
  printf 'pcow-%s-%s' "$TAG" "$off" | dd of=/dev/pmem0 bs=4096 seek=$((off / 4096)) conv=notrunc,fsync 2>/dev/null
done
result wrote "$OFFSETS"
# With HOLD set, stay up (after the writes) until the host says so (it queries QEMU meanwhile).
[ -z "$HOLD" ] || wait_host "$HOLD"
