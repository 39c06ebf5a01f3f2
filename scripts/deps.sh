#!/usr/bin/env bash
# Installs the Debian 12 packages simdr needs to build and test (no-op when present).
# libevent-dev builds simdr-server; redis-server, redis-tools (redis-cli,
# redis-benchmark), python3-redis and python3-pytest run its tests; nutcracker
# (twemproxy) runs the sharding tests (scripts/cluster.sh); with SIMDR_BENCH_DEPS=1
# also the benchmark's peers and gnuplot-nox (bench/chart.sh).
set -euo pipefail
pkgs=(build-essential cmake pkg-config libxxhash-dev libisal-dev zlib1g-dev libcmocka-dev
      clang libclang-rt-14-dev python3
      python3-dev python3-setuptools python3-wheel python3-numpy python3-pytest python3-hypothesis
      libevent-dev redis-server redis-tools python3-redis nutcracker)
[ "${SIMDR_BENCH_DEPS:-0}" = 1 ] && pkgs+=(liblmdb-dev librocksdb-dev libleveldb-dev
      libsqlite3-dev libtkrzw-dev libkyotocabinet-dev python3-lmdb python3-gdbm
      gnuplot-nox)
missing=()
pkgs+=(groff-base man-db) # groff and man check the man page (ctest -L install)
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
