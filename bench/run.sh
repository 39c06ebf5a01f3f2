#!/usr/bin/env bash
# Installs the benchmark's dependencies, builds the side-by-side benchmark in
# build/bench (Release) and runs it; arguments go to the benchmark, e.g.
#   bench/run.sh --runs 3            # N = 1,000,000, median of 3 runs
#   bench/run.sh -n 100000 -e simdr,lmdb -w W1,R1
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
SIMDR_BENCH_DEPS=1 bash scripts/deps.sh
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DSIMDR_BUILD_BENCH=ON \
      -DSIMDR_BUILD_TESTS=OFF -DSIMDR_BUILD_CLI=OFF >/dev/null
cmake --build build/bench --target simdr_bench -j "$(nproc)" >/dev/null
exec build/bench/bench/bench "$@"
