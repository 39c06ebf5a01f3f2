#!/usr/bin/env bash
# Runs redis-benchmark against simdr-server and Debian's redis-server side by
# side, each on a fresh data directory and a free loopback port, in three
# durability pairings: off (simdr --durability no / redis without RDB or AOF),
# everysec (appendfsync everysec) and always (appendfsync always). Prints one
# CSV line per mode, test, pipeline depth and server: its requests per second
# and their ratio to redis-server's, then the CPU time the server process used
# per request (user + system, all its threads, from /proc/PID/stat) and the
# ratio redis/server of those (above 1: the server needs less CPU per request
# than redis-server). CPU time per request moves far less with the machine's
# load than requests per second. Measurements go to docs/BENCHMARKS.md.
#
# The servers: "redis" (one thread), "simdr-tN" for each N of -T (simdr-server
# --threads N; default -T 1), with -Z also "simdr-tN-nopre" for each
# (--preallocate no: durability always without zeros written ahead) and,
# with -I N, "redis-ioN" (redis-server --io-threads N --io-threads-do-reads yes).
#
# With -R N each pairing runs N times, the servers taking turns, and the
# median of each server's N figures is printed (a shared machine's load
# moves single runs a lot).
#
# Usage: bench/server_bench.sh [-n REQUESTS] [-d VALUE_BYTES] [-c CLIENTS]
#                              [-m "no everysec always"] [-P "1 16"] [-R REPEATS]
#                              [-t "set get mset incr"] [-T "1 2"] [-I IO_THREADS] [-Z]
#                              [-r KEYSPACE (default: REQUESTS)]
# Environment: SIMDR_SERVER (default build/release/server/simdr-server,
# built with CMake Release when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
n=200000 d=8 c=50 modes="no everysec always" pipes="1 16" repeats=1 tests="set get mset incr"
threads="1" redis_io="" keyspace="" nopre=""
while getopts "n:d:c:m:P:R:t:T:I:r:Z" o; do
  case $o in n) n=$OPTARG ;; d) d=$OPTARG ;; c) c=$OPTARG ;; m) modes=$OPTARG ;; P) pipes=$OPTARG ;;
    R) repeats=$OPTARG ;; t) tests=$OPTARG ;; T) threads=$OPTARG ;; I) redis_io=$OPTARG ;;
    r) keyspace=$OPTARG ;; Z) nopre=1 ;; *) sed -n 2,27p "$0"; exit 2 ;; esac
done
servers="redis"
for t in $threads; do servers+=" simdr-t$t"; [ -n "$nopre" ] && servers+=" simdr-t$t-nopre"; done
[ -n "$redis_io" ] && servers+=" redis-io$redis_io"
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
server=${SIMDR_SERVER:-build/release/server/simdr-server}
if [ ! -x "$server" ]; then
  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DSIMDR_BUILD_TESTS=OFF >/dev/null
  cmake --build build/release -j2 --target simdr-server >/dev/null
fi
command -v redis-benchmark >/dev/null || { echo "redis-benchmark missing (redis-tools)" >&2; exit 1; }

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 600); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

work=$(mktemp -d)
pid="" port=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start() { # start <redis|simdr-tN|redis-ioN> <mode>: sets port and pid
  local dir
  port=$(free_port); dir=$(mktemp -d "$work/d.XXXX")
  if [ "${1#simdr-t}" != "$1" ]; then
    local t=${1#simdr-t} pre=yes
    [ "${t%-nopre}" != "$t" ] && t=${t%-nopre} pre=no
    "$server" --dir "$dir" --port "$port" --bind 127.0.0.1 --durability "$2" --logfile "$dir/log" \
      --threads "$t" --preallocate "$pre" </dev/null >/dev/null 2>&1 &
  else
    local aof=(--appendonly no) io=()
    [ "$2" != no ] && aof=(--appendonly yes --appendfsync "$2")
    [ "${1#redis-io}" != "$1" ] && io=(--io-threads "${1#redis-io}" --io-threads-do-reads yes)
    redis-server --port "$port" --bind 127.0.0.1 --save '' "${aof[@]}" "${io[@]}" --dir "$dir" \
      --logfile "$dir/log" </dev/null >/dev/null 2>&1 &
  fi
  pid=$!
  wait_port "$port"
}

stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

rps() { # rps <port> <test> <pipeline> <requests>: prints requests per second
  redis-benchmark -p "$1" -t "$2" -n "$4" -r "${keyspace:-$4}" -c "$c" -P "$3" -d "$d" --csv -q 2>/dev/null |
    awk -F'","' 'NR>1 || !/"test"/ {gsub(/"/,"",$2); print $2; exit}'
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

echo "mode,test,pipeline,value_bytes,clients,requests,server,rps,rps/redis,cpu_us_per_req,cpu_redis/server"
for mode in $modes; do
  for P in $pipes; do
    reqs=$n
    # fsync-bound: fewer requests keep the run short
    [ "$mode" = always ] && [ "$P" = 1 ] && reqs=$((n / 10))
    declare -A res=() cpu=()
    for _ in $(seq 1 "$repeats"); do
      for kind in $servers; do
        # one server for all tests: GET then reads the keys SET wrote
        start "$kind" "$mode"
        for t in $tests; do
          t0=$(cpu_ticks "$pid")
          res[$kind,$t]+=" $(rps "$port" "$t" "$P" "$reqs")"
          t1=$(cpu_ticks "$pid")
          cpu[$kind,$t]+=" $(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.3f", (b - a) * 1e6 / hz / n }')"
        done
        stop
      done
    done
    for t in $tests; do
      r=$(echo "${res[redis,$t]}" | median) rc=$(echo "${cpu[redis,$t]}" | median)
      for kind in $servers; do
        s=$(echo "${res[$kind,$t]}" | median) sc=$(echo "${cpu[$kind,$t]}" | median)
        ratio=$(awk -v a="$s" -v b="$r" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
        cratio=$(awk -v a="$rc" -v b="$sc" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
        echo "$mode,$t,$P,$d,$c,$reqs,$kind,$s,$ratio,$sc,$cratio"
      done
    done
  done
done
