#!/usr/bin/env bash
# Draws the benchmark's ratios to the best peer as an SVG bar chart with gnuplot:
# one bar per workload and column of ours (simdr, simdr-u, simdr-m, simdr-z, and the floor
# yardsticks), scaled so that above 1 means better than the best peer on that
# workload whatever the metric's direction (peer / ours for "lower is better").
#   bench/run.sh --runs 3 --csv build/bench/results.csv
#   bench/chart.sh build/bench/results.csv docs/bench-ratios.svg
set -euo pipefail
csv="${1:?usage: bench/chart.sh RESULTS.csv OUT.svg}"
out="${2:?usage: bench/chart.sh RESULTS.csv OUT.svg}"
command -v gnuplot >/dev/null || { echo "chart.sh: gnuplot is missing (SIMDR_BENCH_DEPS=1 bash scripts/deps.sh)" >&2; exit 1; }
data="$(mktemp)"
trap 'rm -f "$data"' EXIT
# Rows: workload, then one ratio per column of ours ("NaN" where not measured).
/usr/bin/python3 - "$csv" >"$data" <<'EOF'
import csv, math, sys
ours = ["simdr", "simdr-u", "simdr-m", "simdr-z", "floor", "floor-u"]
wanted = ["W1 single puts", "W2 batched puts", "W3 4 KiB puts", "R1 random get",
          "R2 2-thread get", "O1 reopen+get", "I1 full scan", "C1 compact",
          "W4 durable 2 thr", "peak RSS"]
ratio = {}
for r in csv.DictReader(open(sys.argv[1])):
    v, best = float(r["value"]), float(r["best_peer"])
    if r["engine"] not in ours or math.isnan(best) or v <= 0 or best <= 0:
        continue
    ratio[(r["metric"], r["engine"])] = v / best if r["better"] == "higher" else best / v
present = [e for e in ours if any((m, e) in ratio for m in wanted)]
print("workload " + " ".join(present))
for m in wanted:
    if not any((m, e) in ratio for e in present):
        continue
    print('"%s" ' % m.split(" ")[0] + " ".join("%.4g" % ratio.get((m, e), float("nan")) for e in present))
EOF
cols=$(head -1 "$data" | wc -w)
gnuplot <<EOF
set terminal svg size 900,420 dynamic font "sans,11"
set output "$out"
set title "simdr against the best peer per workload (above 1: simdr better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y 2
set yrange [0.0625:16]
set ytics ("1/16" 0.0625, "1/8" 0.125, "1/4" 0.25, "1/2" 0.5, "1" 1, "2" 2, "4" 4, "8" 8, "16" 16)
set grid ytics
set key top right autotitle columnhead
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 lc rgb "black"
plot for [i=2:${cols}] "$data" using i:xtic(1)
EOF
echo "wrote $out"
