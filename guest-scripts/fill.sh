# Write $MIB MiB to /dev/pmem0 from offset 0 with direct 1 MiB writes, then report how dd ended
# and what the kernel logged (the image's file system is too small for all of it).
wait_dev /dev/pmem0
rc=0
dd if=/dev/zero of=/dev/pmem0 bs=1M count="$MIB" oflag=direct 2>/tmp/dd.err || rc=$?
result dd-rc "$rc"
result dd-err "$(tail -n 2 /tmp/dd.err | tr '\n' ' ')"
result dmesg-errors "$(dmesg | grep -ciE 'memory error|mce|i/o error|hardware error')"
echo PCOW-FILLED
