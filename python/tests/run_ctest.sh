#!/usr/bin/env bash
# Builds the simdr extension against a libsimdr build and runs the pytest suite
# (the ctest test python_binding). Arguments: python, path of libsimdr.a,
# output directory, sanitizers ("" or "address;undefined"), libasan.so to
# preload ("" if none), 1 to compile with -Werror.
set -euo pipefail
py=$1 lib=$2 out=$3 sanitize=${4:-} preload=${5:-} werror=${6:-0}
here=$(cd "$(dirname "$0")/.." && pwd)

rm -rf "$out/lib"
(cd "$here" && SIMDR_LIBRARY="$lib" SIMDR_SANITIZE="$sanitize" SIMDR_WERROR="$werror" \
  "$py" setup.py -q build --force --build-base "$out/build" --build-lib "$out/lib")

export PYTHONPATH="$out/lib" PYTHONDONTWRITEBYTECODE=1
if [ -n "$preload" ]; then
  # The interpreter is not instrumented: the sanitizer runtime must be loaded
  # first, and CPython's own allocations at exit are not leaks of ours.
  export LD_PRELOAD="$preload"
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
fi
cd "$out"
set +e
"$py" -m pytest -q -p no:cacheprovider "$here/tests"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "run_ctest.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
