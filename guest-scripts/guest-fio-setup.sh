#!/bin/sh
# Guest side of the guest-fio workload (src/workloads/guest-fio.ts), uploaded over SFTP and run
# as: sh guest-fio-setup.sh DEVICE PATH
#   DEVICE  nvdimm          the NVDIMM (raw or pcow backend): its label-less namespace0.0 is
#                           reconfigured as fsdax (ndctl create-namespace -f -e namespace0.0
#                           --mode=fsdax), giving /dev/pmem0;
#           virtio:SERIAL   the virtio-blk disk whose serial is SERIAL (qcow2 backend; disk
#                           order is not stable, the serial is);
#   PATH    dax             mkfs.ext4 -b 4096 and mount -o dax on /mnt/pm (needs a pmem device);
#           blk             the block device as is.
# Prints key=value lines: namespace (ndctl's JSON), blockdev, mount, queue_dax.
set -eu
device=$1
path=$2
wait_for() {
  n=100
  while [ ! -e "$1" ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
  [ -e "$1" ] || { echo "guest-fio-setup: $1 did not appear within 10 s" >&2; exit 1; }
}
case $device in
  nvdimm)
    wait_for /sys/bus/nd/devices/namespace0.0
    if ! ndctl create-namespace -f -e namespace0.0 --mode=fsdax >/tmp/ns.json 2>/tmp/ns.err; then
      echo "guest-fio-setup: ndctl create-namespace failed: $(cat /tmp/ns.err /tmp/ns.json | tail -5)" >&2
      exit 1
    fi
    echo "namespace=$(tr -d ' \n' </tmp/ns.json)"
    wait_for /dev/pmem0
    blk=/dev/pmem0
    ;;
  virtio:*)
    serial=${device#virtio:}
    blk=
    n=100
    while [ -z "$blk" ] && [ "$n" -gt 0 ]; do
      for b in /sys/block/vd*; do
        [ -e "$b/serial" ] && [ "$(cat "$b/serial")" = "$serial" ] && blk=/dev/${b##*/}
      done
      [ -n "$blk" ] || sleep 0.1
      n=$((n - 1))
    done
    [ -n "$blk" ] || { echo "guest-fio-setup: no virtio disk with serial $serial (have: $(cat /sys/block/vd*/serial 2>/dev/null | tr '\n' ' '))" >&2; exit 1; }
    ;;
  *) echo "guest-fio-setup: unknown device $device (nvdimm or virtio:SERIAL)" >&2; exit 2 ;;
esac
echo "blockdev=$blk"
case $path in
  dax)
    [ "$blk" = /dev/pmem0 ] || { echo "guest-fio-setup: the dax path needs a pmem device, not $blk" >&2; exit 2; }
    # 4 KiB blocks: mke2fs picks 1 KiB for a small file system, and DAX needs the page size.
    mkfs.ext4 -q -F -b 4096 "$blk"
    mkdir -p /mnt/pm
    mount -o dax "$blk" /mnt/pm
    echo "mount=$(grep ' /mnt/pm ' /proc/mounts)"
    echo "queue_dax=$(cat "/sys/block/${blk#/dev/}/queue/dax")"
    ;;
  blk) ;;
  *) echo "guest-fio-setup: unknown path $path (dax or blk)" >&2; exit 2 ;;
esac
