#!/usr/bin/env bash
# Installs dependencies, then builds and runs every test suite three ways:
# a normal build, AddressSanitizer+UndefinedBehaviorSanitizer, and
# ThreadSanitizer (concurrency-labelled tests), plus a bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
jobs=$(nproc)
werror=ON

echo "== release build + all tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIMDR_WERROR=$werror >/dev/null
cmake --build build/release -j"$jobs"
ctest --test-dir build/release --output-on-failure -j"$jobs"

echo "== AddressSanitizer + UndefinedBehaviorSanitizer: all tests"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DSIMDR_WERROR=$werror \
  "-DSIMDR_SANITIZE=address;undefined" >/dev/null
cmake --build build/asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  SIMDR_TEST_SCALE=${SIMDR_TEST_SCALE_SANITIZED:-1} \
  ctest --test-dir build/asan --output-on-failure -j"$jobs" -LE nosan

echo "== ThreadSanitizer: concurrency tests"
cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DSIMDR_WERROR=$werror \
  -DSIMDR_SANITIZE=thread >/dev/null
cmake --build build/tsan -j"$jobs"
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --test-dir build/tsan --output-on-failure -j"$jobs" -L concurrency

if [ -x fuzz/run.sh ]; then
  echo "== libFuzzer (bounded)"
  bash fuzz/run.sh
fi
echo "all suites passed"
