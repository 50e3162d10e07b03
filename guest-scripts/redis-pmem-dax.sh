# redis+pmem-AOF (pcow's patch to Debian redis 7.0, not Intel pmem-redis) on a real fs-dax
# mount: /dev/pmem0 (a raw NVDIMM) becomes an fsdax namespace, ext4 mounted -o dax on /mnt, and
# redis-server runs with its AOF there (appendonly yes, appendfsync always). With aof-pmem yes
# libpmem's pmem_map_file gets MAP_SYNC, so pmem_is_pmem is true and every write is persisted by
# cache-line flush + fence. Checks: INFO aof_pmem, kill -9 while a client writes (every
# acknowledged key is back after the restart), and redis-benchmark SET with the stock AOF and the
# pmem AOF on the same mount, same command. Binaries come in as /usr/bin/NAME (runGuest's
# binaries). Parameters: BENCH_N (requests per benchmark), BENCH_REPS.
wait_dev /dev/pmem0
ndctl create-namespace -f -e namespace0.0 --mode=fsdax > /tmp/ns.json 2>&1 || { cat /tmp/ns.json; exit 1; }
wait_dev /dev/pmem0
mkfs.ext4 -q -F -b 4096 /dev/pmem0
mount -o dax /dev/pmem0 /mnt
result mounts "$(grep ' /mnt ' /proc/mounts)"
result kernel "$(uname -r)"

S=/tmp/redis.sock
pid=
# start DIR PMEM(yes|no): redis-server with its AOF in DIR, up when PING answers.
start() {
  mkdir -p "$1"
  redis-server --port 0 --unixsocket $S --dir "$1" --save "" --appendonly yes --appendfsync always \
    --aof-pmem "$2" --logfile "$1/redis.log" &
  pid=$!
  n=300
  while [ "$(redis-cli -s $S ping 2> /dev/null)" != PONG ]; do
    n=$((n - 1))
    [ "$n" -gt 0 ] && kill -0 "$pid" 2> /dev/null || { echo "redis-server did not start"; tail -n 20 "$1/redis.log"; exit 1; }
    usleep 100000
  done
}
kill9() { kill -9 "$pid"; wait "$pid" 2> /dev/null || true; }
field() { redis-cli -s $S info persistence | tr -d '\r' | sed -n "s/^$1://p"; }

# 1. kill -9 while a client writes: the last acknowledged key and everything before it survive.
D=/mnt/crash
start $D yes
result aof-pmem-mode "$(field aof_pmem)"
result aof-pmem-log "$(grep -o 'aof-pmem: AOF incr file.*' $D/redis.log | head -n 1)"
redis-benchmark -s $S -t set -n 2000 -r 100000 -q > /dev/null
before=$(redis-cli -s $S dbsize)
( i=0; while r=$(redis-cli -s $S set "w:$i" "v:$i" 2> /dev/null) && [ "$r" = OK ]; do echo "$i" > /tmp/acked; i=$((i + 1)); done ) &
writer=$!
sleep 8
kill9
wait "$writer" 2> /dev/null || true
acked=$(cat /tmp/acked)
start $D yes
result crash-before "$before"
result crash-acked "$((acked + 1))"
result crash-after "$(redis-cli -s $S dbsize)"
missing=0
i=0
while [ "$i" -le "$acked" ]; do
  [ "$(redis-cli -s $S get "w:$i")" = "v:$i" ] || missing=$((missing + 1))
  i=$((i + 1))
done
result crash-missing "$missing"
result crash-last "$(redis-cli -s $S get "w:$acked")"
kill9
result check-aof "$(redis-check-aof $D/appendonlydir/appendonly.aof.manifest 2>&1 | tr '\n' '|')"

# 2. redis-benchmark SET, same command: the stock AOF (write+fdatasync) and the pmem AOF, interleaved.
rep=0
while [ "$rep" -lt "${BENCH_REPS:-2}" ]; do
  for mode in no yes; do
    D=/mnt/bench-$mode-$rep
    start $D $mode
    result "bench-$mode-$rep" "$(field aof_pmem) $(redis-benchmark -s $S -t set -n "${BENCH_N:-5000}" -c 50 -r 1000000 -d 64 --csv | tail -n 1)"
    kill9
    rm -rf $D
  done
  rep=$((rep + 1))
done
