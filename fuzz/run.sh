#!/usr/bin/env bash
# Builds the libFuzzer target with clang in build/fuzz (ASan+UBSan, the
# library coverage-instrumented) and runs it in one of two modes.
#
#   bash fuzz/run.sh            CI mode: replays every input in fuzz/corpus/,
#                               then fuzzes a fixed number of runs from a fixed
#                               seed, address randomization off and comparison
#                               tracing off (pointer values would otherwise
#                               steer the mutations), so a given commit does
#                               the same work on every machine: it fails only
#                               when that commit breaks a promise.
#   bash fuzz/run.sh --explore  exploratory mode: random seed, full
#                               instrumentation, for SIMDR_FUZZ_SECONDS on
#                               SIMDR_FUZZ_JOBS processes. Each input that
#                               breaks a promise is copied into fuzz/corpus/
#                               as found-<sha1> (and left in fuzz/artifacts/):
#                               fix the defect and commit the input, so CI and
#                               the ordinary test runs (fuzz_replay) replay it.
#
# Environment: SIMDR_FUZZ_RUNS (CI mode, default 5000; 2000 for
# fuzz_log_append and fuzz_damage, whose every run opens a store several times),
# SIMDR_FUZZ_SEED (CI mode, default 1), SIMDR_FUZZ_SECONDS (explore mode,
# default 600), SIMDR_FUZZ_JOBS (explore mode, default 1), SIMDR_FUZZ_TARGET:
# fuzz_open (the store opener) seeded with fuzz/corpus/; fuzz_log_append
# (replicated bytes from a hostile primary) seeded with
# fuzz/corpus-log-append/; fuzz_damage (damage to a store under open handles)
# seeded with fuzz/corpus-damage/; fuzz_resp (the server's RESP parser)
# seeded with fuzz/corpus-resp/; "all": each of them in turn. Unset: CI mode
# runs fuzz_open, fuzz_log_append and fuzz_damage, explore mode fuzz_open.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$0")/.."
mode=ci
case "${1:-}" in
  "") ;;
  --explore) mode=explore ;;
  *) echo "usage: bash fuzz/run.sh [--explore]" >&2; exit 2 ;;
esac

target=${SIMDR_FUZZ_TARGET:-}
[ -z "$target" ] && { [ "$mode" = ci ] && target=ci-default || target=fuzz_open; }
if [ "$target" = all ] || [ "$target" = ci-default ]; then
  targets="fuzz_open fuzz_log_append fuzz_damage"
  [ "$target" = all ] && targets="$targets fuzz_resp"
  for t in $targets; do
    SIMDR_FUZZ_TARGET=$t bash "$self" "$@" || exit 1
  done
  exit 0
fi
corpus=fuzz/corpus
[ "$target" = fuzz_resp ] && corpus=fuzz/corpus-resp
[ "$target" = fuzz_log_append ] && corpus=fuzz/corpus-log-append
[ "$target" = fuzz_damage ] && corpus=fuzz/corpus-damage

echo "fuzz: building build/fuzz/fuzz/$target (clang, ASan+UBSan, libFuzzer)"
cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSIMDR_BUILD_FUZZ=ON -DSIMDR_BUILD_TESTS=OFF -DSIMDR_BUILD_CLI=OFF \
  "-DSIMDR_SANITIZE=address;undefined" -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link >/dev/null
cmake --build build/fuzz -j"$(nproc)" --target "$target" >/dev/null

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fuzzer=build/fuzz/fuzz/$target
common=(-rss_limit_mb=2048 -timeout=20 -max_len=131072 -print_final_stats=1)
mkdir -p fuzz/artifacts
scratch=$(mktemp -d)           # new corpus units; $corpus stays the curated seed set
findings=$(mktemp -d)          # explore mode: inputs that broke a promise
log=$(mktemp)
joblogs=$(mktemp -d)           # explore mode: libFuzzer's fuzz-N.log per job, kept out of the tree
trap 'rm -rf "$scratch" "$findings" "$log" "$joblogs"' EXIT

executions() {
  grep -h 'stat::number_of_executed_units' "$log" "$joblogs"/fuzz-*.log 2>/dev/null |
    awk '{s += $2} END {print s + 0}'
}

if [ "$mode" = ci ]; then
  runs=${SIMDR_FUZZ_RUNS:-5000}
  [ "$target" = fuzz_log_append ] && runs=${SIMDR_FUZZ_RUNS:-2000}
  [ "$target" = fuzz_damage ] && runs=${SIMDR_FUZZ_RUNS:-2000}
  seed=${SIMDR_FUZZ_SEED:-1}
  # Address randomization changes the pointer values libFuzzer sees; without
  # it (and without comparison tracing) a seed gives the same run every time.
  norandom=()
  if setarch "$(uname -m)" -R true 2>/dev/null; then
    norandom=(setarch "$(uname -m)" -R)
  else
    echo "fuzz: note: cannot turn address randomization off here; the run may differ between machines"
  fi
  inputs=$(find "$corpus" -type f | wc -l)
  echo "fuzz: replaying the ${inputs} inputs of $corpus/"
  if ! "$fuzzer" "${common[@]}" -artifact_prefix=fuzz/artifacts/ "$corpus"/* >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: FAILED: an input of $corpus/ breaks a promise (see above)" >&2
    exit 1
  fi
  echo "fuzz: ${runs} runs from seed ${seed}"
  set +e
  "${norandom[@]}" "$fuzzer" "${common[@]}" -seed="$seed" -runs="$runs" -use_cmp=0 \
    -artifact_prefix=fuzz/artifacts/ "$scratch" "$corpus" >"$log" 2>&1
  status=$?
  set -e
  echo "fuzz: $(executions) executions (libFuzzer exit ${status}), $(ls "$scratch" | wc -l) new corpus units"
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log"
    echo "fuzz: FAILED: the input above breaks a promise; it is in fuzz/artifacts/." >&2
    echo "fuzz: the run is reproducible: bash fuzz/run.sh with SIMDR_FUZZ_SEED=${seed} SIMDR_FUZZ_RUNS=${runs}" >&2
    exit 1
  fi
  echo "fuzz: PASS: corpus replayed, no crash, hang, leak or sanitizer report"
  exit 0
fi

secs=${SIMDR_FUZZ_SECONDS:-600}
jobs=${SIMDR_FUZZ_JOBS:-1}
echo "fuzz: exploring for ${secs} s on ${jobs} job(s), random seed"
set +e
# -jobs writes each job's output to fuzz-N.log in the working directory.
(cd "$joblogs" && "$OLDPWD/$fuzzer" "${common[@]}" -max_total_time="$secs" \
  -artifact_prefix="$findings/" -jobs="$jobs" -workers="$jobs" "$scratch" "$OLDPWD/$corpus") \
  >"$log" 2>&1
status=$?
set -e
found=0
for artifact in "$findings"/*; do
  [ -f "$artifact" ] || continue
  name=found-$(sha1sum "$artifact" | cut -c1-16)
  cp "$artifact" "$corpus/$name"
  mv "$artifact" "fuzz/artifacts/$name"
  echo "fuzz: finding kept as $corpus/$name" >&2
  found=$((found + 1))
done
echo "fuzz: $(executions) executions in ${secs} s (libFuzzer exit ${status}), $(ls "$scratch" | wc -l) new corpus units"
if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
  tail -n 60 "$log"
  echo "fuzz: FAILED: ${found} finding(s) copied into $corpus/; fix them, then commit the inputs" >&2
  exit 1
fi
echo "fuzz: PASS: no crash, hang, leak or sanitizer report in ${secs} s"
