# A pcow NVDIMM whose image's file system fills up, seen from user space: /dev/pmem0 (a raw
# namespace, no label area) becomes a devdax namespace (memmap in RAM, so the kernel writes only
# the info block to the device), and dax-store (guest-scripts/src/dax-store.c) stores one byte
# per $STEP bytes, $COUNT times (each byte loaded first when READ_FIRST=read-first), through a
# MAP_SHARED mapping of /dev/dax0.0. Stores the host cannot back come back as machine checks;
# the kernel sends dax-store SIGBUS (BUS_MCEERR_AR) and it goes on with the next store. Then the script reports, waits for the host (QMP checks while
# the guest is still up) and the init powers off normally.
wait_dev /dev/pmem0
ndctl create-namespace -f -e namespace0.0 --mode=devdax --map=mem > /tmp/ns.json 2>&1 || { cat /tmp/ns.json; exit 1; }
result namespace "$(tr -d ' \n' < /tmp/ns.json)"
wait_dev /dev/dax0.0
# Where the dax device's data starts in the NVDIMM (its first byte's offset in the image).
region_start=$(cat /sys/bus/nd/devices/region0/resource)
dax_start=$(cat /sys/bus/dax/devices/dax0.0/resource 2> /dev/null || echo)
[ -n "$dax_start" ] && result data-offset $((dax_start - region_start))
dax-store /dev/dax0.0 "$STEP" "$COUNT" $READ_FIRST > /tmp/store.out
while read -r k v; do result "store-$k" "$v"; done < /tmp/store.out
dmesg | grep -iE 'mce|machine check|memory failure|hardware error|hwpoison|killing' | tail -n 12 | sed 's/^/PCOW-DMESG /'
result dmesg-memory-failure "$(dmesg | grep -ci 'memory failure')"
echo PCOW-STORES-DONE
wait_host checked
