#!/bin/sh
# scaling-plot.sh DIR - DIR/scaling.txt (jobs/scaling.sh's output) as a
# table, DIR/scaling.csv, and a plot, DIR/scaling.png (strong scaling's
# speed-up and weak scaling's efficiency against the rank count, beside the
# ideal; needs gnuplot, Debian's gnuplot-nox: without it only the CSV).
# Columns: mode (strong|weak), P, n, fwdbwd_ms (median forward+backward),
# tokens_per_s, comm_share_pct (collectives' share of the step, slowest rank),
# speedup and efficiency against the run's smallest P (P0):
#   strong: speedup = t(P0) / t(P), efficiency = speedup * P0 / P
#   weak:   speedup = tokens/s(P) / tokens/s(P0), efficiency = t(P0) / t(P)
set -eu
d=${1:?usage: scaling-plot.sh DIR}
in=$d/scaling.txt; csv=$d/scaling.csv; png=$d/scaling.png
[ -r "$in" ] || { echo "scaling-plot.sh: no $in (run jobs/scaling.sh first)" >&2; exit 2; }

# colt5-bench pads its numbers ("median_ms=   241.60"): join each key to its
# value, then read key=value words. A comm total line follows its run's
# fwdbwd line; a row is printed when the next run starts or at the end.
awk '
  function kv(line,   i, n, w, e) {
    delete f; gsub(/= +/, "=", line); n = split(line, w, / +/)
    for (i = 1; i <= n; i++) if ((e = index(w[i], "=")) > 0) f[substr(w[i], 1, e - 1)] = substr(w[i], e + 1)
  }
  function flush() {
    if (ms == "") return
    if (!(mode in t0)) { t0[mode] = ms; r0[mode] = tps; p0[mode] = p }
    if (mode == "strong") { su = t0[mode] / ms; eff = su * p0[mode] / p }
    else                  { su = tps / r0[mode]; eff = t0[mode] / ms }
    printf "%s,%d,%d,%.2f,%.0f,%s,%.3f,%.3f\n", mode, p, n, ms, tps, share, su, eff
    ms = ""
  }
  BEGIN { print "mode,P,n,fwdbwd_ms,tokens_per_s,comm_share_pct,speedup,efficiency"; ms = "" }
  /^## (strong|weak) P=/ { flush(); mode = $2; share = "" }
  /^colt5 op=block pass=fwdbwd / { kv($0); ms = f["median_ms"]; tps = f["tokens_per_s"]; p = f["P"]; n = f["n"] }
  /^comm .*total_ms_per_step=/ { kv($0); share = f["share"]; sub(/%$/, "", share) }
  END { flush() }
' "$in" > "$csv.tmp"
mv "$csv.tmp" "$csv"
cat "$csv"
[ "$(wc -l < "$csv")" -gt 1 ] || { echo "scaling-plot.sh: no colt5-bench block results in $in" >&2; exit 1; }

if ! command -v gnuplot > /dev/null 2>&1; then
  echo "scaling-plot.sh: no gnuplot (apt-get install gnuplot-nox): $csv only" >&2
  exit 0
fi
p0s=$(awk -F, '$1 == "strong" { print $2; exit }' "$csv"); p0s=${p0s:-1}
gnuplot << EOF
set terminal pngcairo size 1100,450 font ",10"
set output "$png.tmp"
set datafile separator ","
set multiplot layout 1,2 title "colt5-bench block, forward+backward, 1 thread per rank ($(sed -n 's/^# host: //p' "$in"))"
set xlabel "ranks P"; set logscale x 2; set grid; set key top left
set title "strong scaling"; set ylabel "speed-up"; set logscale y 2
plot "< grep '^strong,' '$csv'" using 2:7 with linespoints pt 7 title "measured", \
     "< grep '^strong,' '$csv'" using 2:(\$2 / $p0s) with lines dt 2 title "ideal"
set title "weak scaling"; set ylabel "efficiency"; unset logscale y; set yrange [0:1.1]; set key bottom left
plot "< grep '^weak,' '$csv'" using 2:8 with linespoints pt 7 title "measured", \
     1 with lines dt 2 title "ideal"
unset multiplot
EOF
mv "$png.tmp" "$png"
echo "scaling-plot.sh: wrote $csv and $png"
