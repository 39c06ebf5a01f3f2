#!/usr/bin/env bash
# Loads K keys with V-byte values (redis-cli --pipe) into simdr-server and into
# Debian's redis-server, then reports each server's RSS and RSS per key, and
# the same after a GET of every key (a server that reads its values through a
# map then holds the pages read), and the restart time: from starting the
# process to the first PING answered with all K keys present (simdr: its store files; redis: the RDB written by SAVE,
# and the AOF of appendonly yes). Prints one CSV line per server/persistence.
# Restart times include starting redis-cli for each poll (5 ms apart).
#
# Usage: bench/server_memory.sh [-k KEYS] [-v VALUE_BYTES]
# Environment: SIMDR_SERVER (default build/release/server/simdr-server).
set -euo pipefail
cd "$(dirname "$0")/.."
k=1000000 v=100
while getopts "k:v:" o; do
  case $o in k) k=$OPTARG ;; v) v=$OPTARG ;; *) sed -n 2,10p "$0"; exit 2 ;; esac
done
server=${SIMDR_SERVER:-build/release/server/simdr-server}
if [ ! -x "$server" ]; then
  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DSIMDR_BUILD_TESTS=OFF >/dev/null
  cmake --build build/release -j2 --target simdr-server >/dev/null
fi
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

/usr/bin/python3 - "$k" "$v" > "$work/load.resp" <<'PY'
import sys
k, v = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
val = b"x" * v
for i in range(k):
    key = b"key:%012d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, v, val))
PY
/usr/bin/python3 - "$k" > "$work/read.resp" <<'PY'
import sys
out = sys.stdout.buffer
for i in range(int(sys.argv[1])):
    key = b"key:%012d" % i
    out.write(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
PY

start() { # start <simdr|redis> <dir> [redis args...]
  local kind=$1 dir=$2; shift 2
  if [ "$kind" = simdr ]; then
    "$server" --dir "$dir" --port "$port" --bind 127.0.0.1 --durability no --logfile "$dir/log" "$@" \
      </dev/null >/dev/null 2>&1 &
  else
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --logfile "$dir/log" "$@" \
      </dev/null >/dev/null 2>&1 &
  fi
  pid=$!
}
ready_ms() { # ms until PING answers and DBSIZE = k
  local t0; t0=$(date +%s%N)
  until [ "$(redis-cli -p "$port" dbsize 2>/dev/null)" = "$k" ]; do sleep 0.005; done
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
wait_up() { until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.02; done; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
anon_kb() { awk '/RssAnon/ {print $2}' "/proc/$pid/status"; }

# RSS counts the store's mapped file pages the process has touched (clean page
# cache, reclaimable); RssAnon is the process's own memory (index, buffers).
# load_ms is the server's own figure from its log: simdr "opened in X ms"
# (all store files), redis "DB loaded from ...: X seconds".
echo "server,persistence,keys,value_bytes,rss_kb,rss_anon_kb,rss_bytes_per_key,anon_bytes_per_key,rss_after_gets_kb,rss_bytes_per_key_after_gets,restart_ms,load_ms"
for cfg in "simdr store" "redis rdb" "redis aof"; do
  set -- $cfg
  dir=$(mktemp -d "$work/d.XXXX")
  case $2 in
    store) args=() ;;
    rdb) args=(--save '' --appendonly no) ;;
    aof) args=(--save '' --appendonly yes --appendfsync no) ;;
  esac
  start "$1" "$dir" "${args[@]}"; wait_up
  redis-cli -p "$port" --pipe < "$work/load.resp" >/dev/null
  [ "$2" = rdb ] && redis-cli -p "$port" save >/dev/null
  sleep 1
  rss=$(rss_kb) anon=$(anon_kb)
  redis-cli -p "$port" --pipe < "$work/read.resp" >/dev/null
  read_rss=$(rss_kb)
  stop
  start "$1" "$dir" "${args[@]}"
  ms=$(ready_ms)
  stop
  if [ "$1" = simdr ]; then
    load=$(grep -o 'opened in [0-9.]* ms' "$dir/log" | tail -1 | awk '{print $3}')
  else
    load=$(grep -o 'DB loaded from [a-z ]*: [0-9.]* seconds' "$dir/log" | tail -1 |
           awk '{printf "%.1f", $(NF-1) * 1000}')
  fi
  echo "$1,$2,$k,$v,$rss,$anon,$(( rss * 1024 / k )),$(( anon * 1024 / k )),$read_rss,$(( read_rss * 1024 / k )),$ms,$load"
  rm -rf "$dir"
done
