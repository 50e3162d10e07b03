#!/usr/bin/env bash
# Cost of pcow-img on images whose declared sizes are huge and whose stored data is tiny (the
# figures in native/README.md "Cost"). Usage:
#   bash tests/cost_figures.sh PCOW_IMG MKWIDE [TIMEOUT_SECONDS]
# PCOW_IMG: the pcow-img binary to measure (e.g. build/pcow-img, or one built from an older
# commit for a same-run comparison); MKWIDE: build/mkwide. Each command runs under `timeout`
# (default 120 s). Files are sparse: a few MB of disk.
set -u
IMG=${1:?PCOW_IMG}
MKWIDE=${2:?MKWIDE}
TMO=${3:-120}
T=$(mktemp -d "${TMPDIR:-/tmp}/pcow-cost-XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T"
measure() { # label command...
  local t0 t1 rc label=$1
  shift
  t0=$(date +%s.%N)
  timeout "$TMO" "$@" >/dev/null 2>&1
  rc=$?
  t1=$(date +%s.%N)
  if [ "$rc" = 124 ]; then
    printf '%-60s > %s s (timeout)\n' "$label" "$TMO"
  else
    printf '%-60s %8.2f s (exit %d)\n' "$label" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$rc"
  fi
}
"$MKWIDE" w4096.img $((1 << 51)) 65536 4096 >/dev/null
"$MKWIDE" w256.img $((1 << 51)) 65536 256 >/dev/null
"$MKWIDE" w4k.img $((1 << 43)) 65536 4096 >/dev/null
"$IMG" create -c 2M e4p.img 4096T >/dev/null
"$IMG" create e1t.img 1T >/dev/null
"$IMG" create -c 4K lk.img 1G >/dev/null
truncate -s 64G lk.img
printf 'leak' | dd of=lk.img bs=1 seek=$(( (64 << 30) - 4096 )) conv=notrunc status=none
measure "info: 4096 layers x 64 MiB L1 (256 GiB declared, no data)" "$IMG" info w4096.img
measure "info: 256 layers x 64 MiB L1" "$IMG" info w256.img
measure "info: 4096 layers x 256 KiB L1" "$IMG" info w4k.img
measure "map: empty 4096 TiB image, 2 MiB clusters" "$IMG" map e4p.img
measure "convert -O raw: empty 1 TiB image" "$IMG" convert -O raw e1t.img e1t.raw
measure "check: 64 GiB sparse file, 4 KiB clusters, leak at the end" "$IMG" check lk.img
