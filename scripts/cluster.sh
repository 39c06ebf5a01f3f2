#!/usr/bin/env bash
# cluster.sh - runs N simdr-server shards behind twemproxy (Debian's
# nutcracker) with consistent hashing (ketama), all on loopback, from one
# config file. docs/CLUSTER.md explains the topology, growing and fail-over.
#
#   scripts/cluster.sh start  [CONFIG]   start whatever is not running (idempotent)
#   scripts/cluster.sh stop   [CONFIG]   stop the proxy, then every shard (SIGTERM: they sync)
#   scripts/cluster.sh status [CONFIG]   one line per process
#   scripts/cluster.sh conf   [CONFIG]   print the nutcracker configuration it would use
#   scripts/cluster.sh reload [CONFIG]   restart the proxy alone with the current configuration
#
# CONFIG is a file of shell assignments (default: $SIMDR_CLUSTER_CONF, else
# none: the defaults below). Every setting can also come from the environment.
#   CLUSTER_DIR=./simdr-cluster   shard data, logs, pid files, nutcracker.yml
#   SHARDS=3                      number of shards
#   SHARD_BASE_PORT=7001          shard i (0-based) listens on SHARD_BASE_PORT + i
#   SHARD_PORTS=""                or an explicit space-separated list of ports; an entry
#                                 HOST:PORT is a server this script does not run (a promoted
#                                 replica taking over that shard's place and name)
#   PROXY_PORT=22121              where clients connect
#   STATS_PORT=22222              nutcracker's statistics port
#   PASSWORD=""                   one password for the proxy and every shard
#   DURABILITY=everysec           simdr-server --durability of each shard
#   SERVER_BIN=simdr-server       path of simdr-server (PATH, then this checkout's
#                                 build/release/server/simdr-server)
#   NUTCRACKER_BIN=nutcracker     path of nutcracker (PATH, then /usr/sbin)
#   SERVER_ARGS=""                extra simdr-server options for every shard
#   HASH=murmur                   twemproxy's key hash (fnv1a_64 puts keys that differ only
#                                 in their last characters on one shard)
set -euo pipefail

cmd=${1:-}
conf=${2:-${SIMDR_CLUSTER_CONF:-}}
if [ -n "$conf" ]; then
  [ -r "$conf" ] || { echo "cluster.sh: cannot read config $conf" >&2; exit 2; }
  # shellcheck disable=SC1090
  . "$conf"
fi
CLUSTER_DIR=${CLUSTER_DIR:-./simdr-cluster}
SHARDS=${SHARDS:-3}
SHARD_BASE_PORT=${SHARD_BASE_PORT:-7001}
PROXY_PORT=${PROXY_PORT:-22121}
STATS_PORT=${STATS_PORT:-22222}
PASSWORD=${PASSWORD:-}
DURABILITY=${DURABILITY:-everysec}
SERVER_ARGS=${SERVER_ARGS:-}
HASH=${HASH:-murmur}
repo=$(cd "$(dirname "$0")/.." && pwd)
SERVER_BIN=${SERVER_BIN:-$(command -v simdr-server || echo "$repo/build/release/server/simdr-server")}
NUTCRACKER_BIN=${NUTCRACKER_BIN:-$(command -v nutcracker || echo /usr/sbin/nutcracker)}
if [ -n "${SHARD_PORTS:-}" ]; then
  read -r -a ports <<<"$SHARD_PORTS"
  SHARDS=${#ports[@]}
else
  ports=()
  for ((i = 0; i < SHARDS; i++)); do ports+=($((SHARD_BASE_PORT + i))); done
fi
# hosts[i]: where the proxy finds shard i; external[i]=1 when it is not this
# script's to start or stop (given as HOST:PORT).
hosts=()
external=()
for ((i = 0; i < SHARDS; i++)); do
  if [[ ${ports[$i]} == *:* ]]; then
    hosts+=("${ports[$i]%:*}")
    ports[$i]=${ports[$i]##*:}
    external+=(1)
  else
    hosts+=(127.0.0.1)
    external+=(0)
  fi
  [[ ${ports[$i]} =~ ^[0-9]+$ ]] && [ -n "${hosts[$i]}" ] || {
    echo "cluster.sh: shard$i: bad port in SHARD_PORTS (PORT or HOST:PORT)" >&2
    exit 2
  }
done

case "$cmd" in
  start|stop|status|conf|reload) ;;
  *) sed -n '2,/^set /{/^set /d;p}' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
if [ "$cmd" = start ] || [ "$cmd" = reload ]; then
  # Said before anything starts, not found later in a shard's log.
  [ -x "$SERVER_BIN" ] || command -v "$SERVER_BIN" >/dev/null 2>&1 || {
    echo "cluster.sh: simdr-server not found at $SERVER_BIN: build it" \
         "(cmake --build build/release --target simdr-server) or set SERVER_BIN" >&2
    exit 1
  }
  [ -x "$NUTCRACKER_BIN" ] || command -v "$NUTCRACKER_BIN" >/dev/null 2>&1 || {
    echo "cluster.sh: nutcracker not found at $NUTCRACKER_BIN: install Debian's nutcracker" \
         "(sudo apt-get install nutcracker) or set NUTCRACKER_BIN" >&2
    exit 1
  }
fi
# The shards read the first line of the password file: a line break or
# another control character would give them another password than the proxy.
case "$PASSWORD" in *[[:cntrl:]]*)
  echo "cluster.sh: PASSWORD must not hold control characters (line breaks, tabs)" >&2
  exit 2 ;;
esac
mkdir -p "$CLUSTER_DIR"
CLUSTER_DIR=$(cd "$CLUSTER_DIR" && pwd)
yml="$CLUSTER_DIR/nutcracker.yml"
passfile="$CLUSTER_DIR/password"

# pid file -> 0 when its process runs (a zombie left unreaped does not) and
# is ours: its command line names this shard's directory (or this proxy's
# configuration). A pid file left by a crash or a reboot may name a process
# that reused the number: start would skip the shard and stop would kill it.
alive() {
  [ -s "$1" ] || return 1
  local stat pid name mine
  pid=$(cat "$1")
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) } # the state follows the command name in parentheses
  case "$stat" in Z*|X*|"") return 1 ;; esac
  name=$(basename "$1" .pid)
  if [ "$name" = nutcracker ]; then mine=$yml; else mine=$CLUSTER_DIR/$name; fi
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$mine"
}

# Something else already answering on the port would pass wait_listening
# while our process fails to bind and exits: the proxy would then send a
# shard's keys to that other program.
refuse_port_in_use() { # port what
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "cluster.sh: port $1 for $2 is in use by another process" >&2
    exit 1
  fi
}

wait_listening() { # port pidfile what
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    alive "$2" || { echo "cluster.sh: $3 exited; see its log in $CLUSTER_DIR" >&2; return 1; }
    sleep 0.1
  done
  echo "cluster.sh: $3 does not listen on port $1" >&2
  return 1
}

# Shard names, not addresses, place keys on the ketama ring: a shard moved to
# another port or host keeps its keys as long as it keeps its name.
write_yml() {
  {
    echo "simdr:"
    echo "  listen: 127.0.0.1:$PROXY_PORT"
    echo "  hash: $HASH"
    echo "  distribution: ketama"
    echo "  redis: true"
    echo "  hash_tag: \"{}\""
    echo "  preconnect: true"
    # A dead shard answers errors for its own keys; ejecting it would send
    # its keys to the others, which do not hold them (docs/CLUSTER.md).
    echo "  auto_eject_hosts: false"
    echo "  server_retry_timeout: 1000"
    echo "  timeout: 5000"
    # Double-quoted: a plain YAML scalar would lose what follows " #", and
    # one starting with ! * & or holding ": " is not valid YAML at all.
    if [ -n "$PASSWORD" ]; then
      local quoted=${PASSWORD//\\/\\\\}
      quoted=${quoted//\"/\\\"}
      echo "  redis_auth: \"$quoted\""
    fi
    echo "  servers:"
    for ((i = 0; i < SHARDS; i++)); do echo "    - ${hosts[$i]}:${ports[$i]}:1 shard$i"; done
  } >"$yml.new"
  chmod 600 "$yml.new"
  mv "$yml.new" "$yml"
}

answers() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

start_shard() { # index
  local i=$1 dir="$CLUSTER_DIR/shard$1" pidf="$CLUSTER_DIR/shard$1.pid"
  if [ "${external[$i]}" = 1 ]; then # run by someone else: only named to the proxy
    answers "${hosts[$i]}" "${ports[$i]}" ||
      echo "cluster.sh: shard$i at ${hosts[$i]}:${ports[$i]} does not answer" >&2
    return 0
  fi
  alive "$pidf" && return 0
  refuse_port_in_use "${ports[$i]}" "shard$i"
  mkdir -p "$dir"
  local extra=()
  if [ -n "$PASSWORD" ]; then
    (umask 077 && printf '%s\n' "$PASSWORD" >"$passfile")
    extra+=(--requirepass-file "$passfile")
  fi
  # shellcheck disable=SC2086
  "$SERVER_BIN" --dir "$dir" --port "${ports[$i]}" --bind 127.0.0.1 \
    --durability "$DURABILITY" --logfile "$CLUSTER_DIR/shard$i.log" "${extra[@]}" $SERVER_ARGS \
    </dev/null >>"$CLUSTER_DIR/shard$i.out" 2>&1 &
  echo $! >"$pidf"
  wait_listening "${ports[$i]}" "$pidf" "shard$i"
}

start_proxy() {
  local pidf="$CLUSTER_DIR/nutcracker.pid"
  alive "$pidf" && return 0
  refuse_port_in_use "$PROXY_PORT" nutcracker
  write_yml
  "$NUTCRACKER_BIN" -t -c "$yml" >/dev/null 2>&1 ||
    { "$NUTCRACKER_BIN" -t -c "$yml"; exit 1; }
  "$NUTCRACKER_BIN" -c "$yml" -o "$CLUSTER_DIR/nutcracker.log" -s "$STATS_PORT" \
    -a 127.0.0.1 </dev/null >>"$CLUSTER_DIR/nutcracker.out" 2>&1 &
  echo $! >"$pidf"
  wait_listening "$PROXY_PORT" "$pidf" nutcracker
}

stop_pid() { # pidfile
  local pidf=$1
  if alive "$pidf"; then
    local pid
    pid=$(cat "$pidf")
    kill -TERM "$pid"
    for _ in $(seq 1 600); do alive "$pidf" || break; sleep 0.1; done
    if alive "$pidf"; then
      echo "cluster.sh: $pidf: process $pid ignored SIGTERM for 60 s, killing it" >&2
      kill -KILL "$pid"
    fi
  fi
  rm -f "$pidf"
}

case "$cmd" in
  start)
    for ((i = 0; i < SHARDS; i++)); do start_shard "$i"; done
    start_proxy
    echo "cluster: $SHARDS shards (ports ${ports[*]}), proxy 127.0.0.1:$PROXY_PORT, dir $CLUSTER_DIR"
    ;;
  stop)
    stop_pid "$CLUSTER_DIR/nutcracker.pid"
    for ((i = 0; i < SHARDS; i++)); do
      [ "${external[$i]}" = 1 ] || stop_pid "$CLUSTER_DIR/shard$i.pid"
    done
    rm -f "$passfile"
    ;;
  status)
    rc=0
    for ((i = 0; i < SHARDS; i++)); do
      [ "${external[$i]}" = 1 ] || continue
      if answers "${hosts[$i]}" "${ports[$i]}"; then
        echo "shard$i: external at ${hosts[$i]}:${ports[$i]}, answering"
      else echo "shard$i: external at ${hosts[$i]}:${ports[$i]}, not answering"; rc=1; fi
    done
    for f in nutcracker $(for ((i = 0; i < SHARDS; i++)); do
                            [ "${external[$i]}" = 1 ] || echo "shard$i"; done); do
      if alive "$CLUSTER_DIR/$f.pid"; then echo "$f: running (pid $(cat "$CLUSTER_DIR/$f.pid"))"
      else echo "$f: stopped"; rc=1; fi
    done
    exit $rc
    ;;
  reload)
    # A shard's address changed (fail-over to a replica): the proxy reads its
    # configuration only at startup. The shards keep running.
    stop_pid "$CLUSTER_DIR/nutcracker.pid"
    start_proxy
    echo "cluster: proxy 127.0.0.1:$PROXY_PORT restarted"
    ;;
  conf)
    write_yml
    cat "$yml"
    ;;
  *)
    sed -n '2,/^set /{/^set /d;p}' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
