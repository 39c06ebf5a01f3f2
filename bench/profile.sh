#!/usr/bin/env bash
# Profiles simdr under the benchmark's workloads with perf: builds build/bench-prof
# (RelWithDebInfo, frame pointers), records one perf run per workload and prints,
# for the samples under each adapter call (put, put_batch, get, get_batch, scan,
# compact, open), the functions where the time is spent (self time, kernel included).
#   bench/profile.sh [N] [workloads...]     default: 1000000 W1 W2 R1 R1b R2 O1 I1 C1 W4
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
n="${1:-1000000}"; shift || true
wls=("$@"); [ ${#wls[@]} -eq 0 ] && wls=(W1 W2 R1 R1b R2 O1 I1 C1 W4)
cmake -S . -B build/bench-prof -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_FLAGS="-fno-omit-frame-pointer" -DSIMDR_BUILD_BENCH=ON \
      -DSIMDR_BUILD_TESTS=OFF -DSIMDR_BUILD_CLI=OFF >/dev/null
cmake --build build/bench-prof --target simdr_bench -j "$(nproc)" >/dev/null
out="build/bench-prof/perf"; mkdir -p "$out"
for w in "${wls[@]}"; do
  echo "=== $w (N = $n) ==="
  perf record -q -g -o "$out/$w.data" build/bench-prof/bench/bench -n "$n" -e simdr -w "$w" \
       >"$out/$w.txt" 2>/dev/null
  grep -E "^(W|R|O|I|C|close|index|size)" "$out/$w.txt" | grep -v "n/a *$" || true
  perf script -i "$out/$w.data" 2>/dev/null | python3 -c '
import sys, collections
groups = {"sd_put": "put", "sd_put_batch": "put_batch", "sd_get": "get",
          "sd_get_batch": "get_batch", "sd_scan": "scan", "sd_compact": "compact",
          "sd_open": "open", "sd_close": "close"}
self_t = collections.defaultdict(collections.Counter)
incl = collections.defaultdict(collections.Counter)
tot = collections.Counter()
stack = []
def flush():
    if not stack: return
    g = next((groups[f] for f in stack if f in groups), None)
    if g is None: return
    tot[g] += 1
    self_t[g][stack[0]] += 1
    for f in set(stack):
        if f.startswith("simdr") or f.startswith("sd_"): incl[g][f] += 1
for line in sys.stdin:
    s = line.strip()
    if not s:
        flush(); stack = []; continue
    if line[0] not in " \t":
        flush(); stack = []; continue
    parts = s.split(None, 2)
    sym = parts[1] if len(parts) > 1 else "?"
    stack.append(sym.rsplit("+0x", 1)[0])
flush()
for g, t in tot.most_common():
    print("  [%s] %d samples; self time:" % (g, t))
    for f, c in self_t[g].most_common(12):
        print("    %5.1f%%  %s" % (100.0 * c / t, f))
    print("  [%s] inclusive (simdr functions):" % g)
    for f, c in incl[g].most_common(10):
        print("    %5.1f%%  %s" % (100.0 * c / t, f))
'
done
