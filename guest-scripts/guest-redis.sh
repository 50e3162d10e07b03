#!/bin/sh
# Guest side of the guest-redis workload (src/workloads/guest-redis.ts), uploaded over SFTP and
# run after guest-fio-setup.sh as: sh guest-redis.sh COMMAND ARG...
#   mount-ext4 BLK              ext4 (no dax) on the virtio disk BLK at /mnt/pm (qcow2 backend)
#   start SERVER DIR CONN LOG [REDIS-ARG...]
#                               redis-server SERVER daemonized, working directory DIR (its AOF
#                               goes to DIR/appendonlydir), its log in LOG, listening on CONN
#                               (unix: /run/pcow-redis.sock; tcp: 127.0.0.1:6379); waits for
#                               PING (60 s). Prints version, pid, aof_pmem (INFO; "absent" for a
#                               server without the patch) and the aof-pmem log line.
#   finish DIR CONN             INFO persistence (info_* lines), dbsize, the AOF directory's
#                               bytes and listing; SHUTDOWN NOSAVE (kill -9 after 30 s); DIR removed.
# Output: key=value lines. Errors name the step and print the server log's tail.
set -eu
SOCK=/run/pcow-redis.sock
PIDFILE=/run/pcow-redis.pid
cli_args() {
  case $1 in
    unix) echo "-s $SOCK" ;;
    tcp) echo "-h 127.0.0.1 -p 6379" ;;
    *) echo "guest-redis: unknown connection $1 (unix or tcp)" >&2; exit 2 ;;
  esac
}
info_field() { redis-cli $cli info persistence | tr -d '\r' | sed -n "s/^$1://p"; }
cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  mount-ext4)
    mkfs.ext4 -q -F -b 4096 "$1"
    mkdir -p /mnt/pm
    mount "$1" /mnt/pm
    echo "mount=$(grep ' /mnt/pm ' /proc/mounts)"
    ;;
  start)
    server=$1 dir=$2 conn=$3 log=$4
    shift 4
    cli=$(cli_args "$conn")
    case $conn in
      unix) listen="--port 0 --unixsocket $SOCK --unixsocketperm 700" ;;
      tcp) listen="--port 6379 --bind 127.0.0.1" ;;
    esac
    mkdir -p "$dir"
    rm -f "$SOCK" "$PIDFILE"
    echo "version=$("$server" --version)"
    # $listen is split on purpose (fixed words, no user values).
    # shellcheck disable=SC2086
    if ! "$server" --daemonize yes --pidfile "$PIDFILE" --logfile "$log" --dir "$dir" $listen "$@"; then
      echo "guest-redis: $server did not start: $(tail -n 15 "$log" 2>/dev/null | tr '\n' '|')" >&2
      exit 1
    fi
    n=600
    # shellcheck disable=SC2086
    while [ "$(redis-cli $cli ping 2>/dev/null)" != PONG ]; do
      n=$((n - 1))
      if [ "$n" -le 0 ]; then
        echo "guest-redis: $server does not answer PING after 60 s: $(tail -n 15 "$log" 2>/dev/null | tr '\n' '|')" >&2
        exit 1
      fi
      sleep 0.1
    done
    echo "pid=$(cat "$PIDFILE")"
    m=$(info_field aof_pmem)
    echo "aof_pmem=${m:-absent}"
    echo "aof_enabled=$(info_field aof_enabled)"
    echo "pmem_log=$(grep -o 'aof-pmem: AOF incr file.*' "$log" | head -n 1)"
    ;;
  finish)
    dir=$1 conn=$2
    cli=$(cli_args "$conn")
    # shellcheck disable=SC2086
    redis-cli $cli info persistence | tr -d '\r' | grep -E '^[a-z_]+:' | sed 's/^\([a-z_]*\):/info_\1=/'
    # shellcheck disable=SC2086
    echo "dbsize=$(redis-cli $cli dbsize)"
    echo "aof_dir_bytes=$(du -sb "$dir/appendonlydir" | cut -f1)"
    echo "aof_files=$(ls -l "$dir/appendonlydir" | tail -n +2 | awk '{print $9 ":" $5}' | tr '\n' ' ')"
    pid=$(cat "$PIDFILE")
    # shellcheck disable=SC2086
    redis-cli $cli shutdown nosave >/dev/null 2>&1 || true
    n=300
    while kill -0 "$pid" 2>/dev/null && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid"
      echo "shutdown=killed"
    else
      echo "shutdown=clean"
    fi
    rm -rf "$dir"
    ;;
  *) echo "guest-redis: unknown command '$cmd' (mount-ext4, start, finish)" >&2; exit 2 ;;
esac
