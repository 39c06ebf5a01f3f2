#!/usr/bin/env bash
# Builds the libFuzzer target with clang in build/fuzz (ASan+UBSan, the
# library coverage-instrumented) and fuzzes it for a bounded time, seeded
# with fuzz/corpus/. Prints the execution count. A crash, leak, timeout or
# sanitizer report leaves an input in fuzz/artifacts/ (gitignored) and makes
# this script fail; copy such an input into fuzz/corpus/ once fixed, so the
# ordinary test runs replay it (fuzz_replay).
# Environment: SIMDR_FUZZ_SECONDS (default 60), SIMDR_FUZZ_JOBS (default 1),
# SIMDR_FUZZ_TARGET (fuzz_open, default; or fuzz_resp, the server's RESP parser,
# seeded with fuzz/corpus-resp/).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SIMDR_FUZZ_SECONDS:-60}
jobs=${SIMDR_FUZZ_JOBS:-1}
target=${SIMDR_FUZZ_TARGET:-fuzz_open}
corpus=fuzz/corpus
[ "$target" = fuzz_resp ] && corpus=fuzz/corpus-resp

cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSIMDR_BUILD_FUZZ=ON -DSIMDR_BUILD_TESTS=OFF -DSIMDR_BUILD_CLI=OFF \
  "-DSIMDR_SANITIZE=address;undefined" -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link >/dev/null
cmake --build build/fuzz -j"$(nproc)" --target "$target" >/dev/null

mkdir -p fuzz/artifacts
scratch=$(mktemp -d)           # new corpus units; fuzz/corpus stays the curated seed set
log=$(mktemp)
trap 'rm -rf "$scratch" "$log"' EXIT
before=$(find fuzz/artifacts -type f | wc -l)

set +e
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  build/fuzz/fuzz/"$target" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 \
  -max_len=131072 -print_final_stats=1 -artifact_prefix=fuzz/artifacts/ \
  -jobs="$jobs" -workers="$jobs" "$scratch" "$corpus" >"$log" 2>&1
status=$?
set -e

execs=$(grep -h 'stat::number_of_executed_units' "$log" fuzz-*.log 2>/dev/null |
        awk '{s += $2} END {print s + 0}')
rm -f fuzz-*.log
after=$(find fuzz/artifacts -type f | wc -l)
echo "fuzz: ${execs} executions in ${secs} s (libFuzzer exit ${status}), corpus grew to $(ls "$scratch" | wc -l) units"
if [ "$status" -ne 0 ] || [ "$after" -gt "$before" ]; then
  tail -n 60 "$log"
  echo "fuzz: FAILED: new artifacts in fuzz/artifacts/:" >&2
  find fuzz/artifacts -type f -newer "$scratch" >&2 || true
  exit 1
fi
echo "fuzz: PASS: no crash, hang, leak or sanitizer report"
