# The runtime on a real fs-dax mount: /dev/pmem0 (a raw NVDIMM) becomes an fsdax namespace,
# ext4 -b 4096 mounted -o dax on /mnt, and the runtime's C tests (rt-test, rt-model) and
# pcow-bench cases run with their image directory there, so MAP_SYNC, DAX faults and the
# runtime's fs-dax persistence path run for real. Binaries come in as /usr/bin/NAME
# (runGuest's binaries). Parameters: CRASH_TRIALS, PCOW_MODEL_SECONDS, EXP_CLUSTERS,
# COW_CLUSTERS, STEADY_SIZE, STEADY_SECONDS, STEADY_ROUNDS; BENCH_ONLY=1 skips rt-test and
# rt-model (a quicker loop for the benchmarks).
wait_dev /dev/pmem0
ndctl create-namespace -f -e namespace0.0 --mode=fsdax > /tmp/ns.json 2>&1 || { cat /tmp/ns.json; exit 1; }
wait_dev /dev/pmem0
mkfs.ext4 -q -F -b 4096 /dev/pmem0
mount -o dax /dev/pmem0 /mnt
result mounts "$(grep ' /mnt ' /proc/mounts)"
result kernel "$(uname -r)"
result userfaultfd-dev "$([ -e /dev/userfaultfd ] && echo yes || echo no)"
mkdir -p /mnt/rt /mnt/dma /mnt/bench
export PCOW_IMG=/usr/bin/pcow-img PCOW_TEST_DIR=/mnt/rt PCOW_DMA_DIR=/mnt/dma CRASH_TRIALS PCOW_MODEL_SECONDS PCOW_TEST_TIMEOUT_SCALE

if [ -z "$BENCH_ONLY" ]; then
rc=0
{ rt-test 2>&1 || echo "rt-test-rc $?"; } | tee /tmp/rt-test.log | sed 's/^/rt-test: /'
rc=$(sed -n 's/^rt-test-rc //p' /tmp/rt-test.log); rc=${rc:-0}
result rt-test-rc "$rc"
result rt-test-summary "$(grep 'runtime tests passed' /tmp/rt-test.log)"
result rt-test-skipped "$(grep -c 'skipped:' /tmp/rt-test.log)"

rc=0
rt-model > /tmp/rt-model.log 2>&1 || rc=$?
tail -n 20 /tmp/rt-model.log | sed 's/^/rt-model: /'
result rt-model-rc "$rc"
fi

B=/mnt/bench
# Each case with and without pre-allocation, and the journal commits (jbd2) it caused: the
# fs-dax path should pay none per fault once clusters come from the pool.
J=$(ls -d /proc/fs/jbd2/pmem0* | head -1)
commits() { sed -n '1s/ .*//p' "$J/info"; }
bench() {
  local key=$1 c0 out
  shift
  c0=$(commits)
  out=$(pcow-bench case "$@" --dir $B)
  result "$key" "$out"
  result "$key-commits" "$(($(commits) - c0))"
}
bench bench-expansion expansion --clusters "$EXP_CLUSTERS"
bench bench-expansion-prealloc expansion --clusters "$EXP_CLUSTERS" --prealloc 64
bench bench-cow cow --cow-unit 4K --clusters "$COW_CLUSTERS"
bench bench-cow-prealloc cow --cow-unit 4K --clusters "$COW_CLUSTERS" --prealloc 64

# steady, pcow vs raw on the same mount; while it runs, how the two ranges are mapped
# (/proc/PID/smaps: FilePmdMapped, kB) per file, sampled once a second (the last sample counts).
# 6.1's smaps counts no DAX (devmap) mapping, so the fs_dax trace events say it too: PMD and PTE
# faults per file and result (NOPAGE: mapped at that size; FALLBACK: a PMD fault fell back to PTEs).
T=/sys/kernel/tracing
mount -t tracefs nodev $T 2> /dev/null || true
tracing=
if [ -e $T/events/fs_dax/dax_pmd_fault_done/enable ]; then
  echo 0 > $T/tracing_on && echo > $T/trace && echo 8192 > $T/buffer_size_kb &&
    echo 1 > $T/events/fs_dax/dax_pmd_fault_done/enable && echo 1 > $T/events/fs_dax/dax_pte_fault_done/enable &&
    echo 1 > $T/tracing_on && tracing=1
fi
pcow-bench case steady --backend both --size "$STEADY_SIZE" --seconds "$STEADY_SECONDS" --rounds "$STEADY_ROUNDS" --dir $B > /tmp/steady.json &
pid=$!
while kill -0 "$pid" 2> /dev/null; do
  awk '/^[0-9a-f]+-[0-9a-f]+ / { f = ($6 ~ /^\/mnt\//) ? $6 : "" }
       f != "" && /^Rss:/ { rss[f] += $2 }
       f != "" && /^FilePmdMapped:/ { pmd[f] += $2 }
       END { for (f in rss) printf "%s rss=%d pmd=%d;", f, rss[f], pmd[f] }' "/proc/$pid/smaps" > /tmp/smaps.now 2> /dev/null &&
    [ -s /tmp/smaps.now ] && cp /tmp/smaps.now /tmp/smaps.last
  ls -i $B > /tmp/ino.now 2> /dev/null && [ -s /tmp/ino.now ] && cp /tmp/ino.now /tmp/ino.last
  sleep 1
done
wait "$pid"
result bench-steady "$(cat /tmp/steady.json)"
result steady-smaps "$(cat /tmp/smaps.last 2> /dev/null)"
if [ -n "$tracing" ]; then
  echo 0 > $T/tracing_on
  # inode numbers in the trace are hex
  while read -r i n; do printf 'ino %#x %s\n' "$i" "$n"; done < /tmp/ino.last > /tmp/ino.hex
  awk 'NR == FNR { name[$2] = $3; next }
       /dax_p[mt][de]_fault_done/ {
         kind = ($0 ~ /dax_pmd/) ? "pmd" : "pte"; ino = ""
         for (i = 1; i < NF; i++) if ($i == "ino") ino = $(i + 1)
         if (!(ino in name)) next
         n[name[ino] " " kind " " $NF]++
       }
       END { for (k in n) printf "%s=%d;", k, n[k] }' /tmp/ino.hex $T/trace > /tmp/dax-faults
  result steady-dax-faults "$(cat /tmp/dax-faults)"
else
  result steady-dax-faults "no fs_dax trace events"
fi
