# Live snapshot while writing: write "pcow-gen1-<off>" at $OFFSETS, then keep a writer busy at
# $BUSY_OFFSET while the host takes a snapshot over QMP (it sends "snapshot-taken" on the
# control channel when done), then overwrite $OFFSETS with "pcow-gen2-<off>".
wait_dev /dev/pmem0
for off in $OFFSETS; do
  printf 'pcow-gen1-%s' "$off" | dd of=/dev/pmem0 bs=4096 seek=$((off / 4096)) conv=notrunc,fsync 2>/dev/null
done
( n=0; while :; do
    printf 'busy-%08d' "$n" | dd of=/dev/pmem0 bs=4096 seek=$((BUSY_OFFSET / 4096)) conv=notrunc,fsync 2>/dev/null
    n=$((n + 1))
  done ) &
writer=$!
wait_host snapshot-taken
kill "$writer"
wait "$writer" 2>/dev/null || true
result busy-last "$(dd if=/dev/pmem0 bs=4096 skip=$((BUSY_OFFSET / 4096)) count=1 2>/dev/null | head -c 13)"
for off in $OFFSETS; do
  printf 'pcow-gen2-%s' "$off" | dd of=/dev/pmem0 bs=4096 seek=$((off / 4096)) conv=notrunc,fsync 2>/dev/null
done
result wrote-gen2 "$OFFSETS"
