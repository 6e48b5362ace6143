#!/bin/sh
# scaling-plot.sh DIR - DIR/scaling.txt (jobs/scaling.sh's output) as a
# table, DIR/scaling.csv, and a plot, DIR/scaling.png (strong scaling's
# speed-up and weak scaling's efficiency against the rank count, beside the
# ideal; needs gnuplot, Debian's gnuplot-nox: without it only the CSV).
# A series is the runs of one mode and one size: strong, one n at every P;
# weak, one n per rank (n / P). Columns:
#   mode (strong|weak), P, n, fwdbwd_ms (median forward+backward),
#   tokens_per_s, comm_share_pct (collectives' share of the step, slowest
#   rank), speedup and efficiency against the series' smallest P (P0):
#     strong: speedup = t(P0) / t(P), efficiency = speedup * P0 / P
#     weak:   speedup = tokens/s(P) / tokens/s(P0), efficiency = t(P0) / t(P)
#   n_series (strong n, weak n / P), tflops_per_rank (the model TFLOP/s of
#   docs/flops.md per rank; GPU runs only, empty on the CPU),
#   tflops_efficiency = tflops_per_rank(P) / tflops_per_rank(P0) (weak: the
#   CUDA issue's >= 90% target at P0 = 1; the time-based efficiency beside
#   it also pays for the heavy attention's cost growing with the whole
#   sequence), comm_ms_per_step (sum over collectives, slowest rank), then
#   one column per collective and phase present in DIR/scaling.txt,
#   comm_PHASE_COLL_ms (ms per step; empty where a run had none).
set -eu
d=${1:?usage: scaling-plot.sh DIR}
in=$d/scaling.txt; csv=$d/scaling.csv; png=$d/scaling.png
[ -r "$in" ] || { echo "scaling-plot.sh: no $in (run jobs/scaling.sh first)" >&2; exit 2; }

# colt5-bench pads its numbers ("median_ms=   241.60"): join each key to its
# value, then read key=value words. A run's comm lines follow its fwdbwd
# line; a row is kept when the next run starts or at the end, and the rows
# are printed at the end, when every collective's column is known.
awk '
  function kv(line,   i, n, w, e) {
    delete f; gsub(/= +/, "=", line); n = split(line, w, / +/)
    for (i = 1; i <= n; i++) if ((e = index(w[i], "=")) > 0) f[substr(w[i], 1, e - 1)] = substr(w[i], e + 1)
  }
  function flush(   k, su, eff, te, c) {
    if (ms == "") return
    ns = mode == "weak" ? int(n / p) : n; k = mode SUBSEP ns
    if (!(k in t0)) { t0[k] = ms; r0[k] = tps; p0[k] = p; f0[k] = tf }
    if (mode == "strong") { su = t0[k] / ms; eff = su * p0[k] / p }
    else                  { su = tps / r0[k]; eff = t0[k] / ms }
    te = (tf != "" && f0[k] > 0) ? sprintf("%.3f", tf / f0[k]) : ""
    row[++nrow] = sprintf("%s,%d,%d,%.2f,%.0f,%s,%.3f,%.3f,%d,%s,%s,%s", mode, p, n, ms, tps, share, su, eff, ns,
                          tf, te, tot)
    for (c = 1; c <= ncol; c++) cell[nrow, c] = (col[c] in cms) ? cms[col[c]] : ""
    ms = ""
  }
  BEGIN { ms = "" }
  /^## (strong|weak) P=/ { flush(); mode = $2; share = ""; tot = ""; delete cms }
  /^colt5 op=block pass=fwdbwd / {
    kv($0); ms = f["median_ms"]; tps = f["tokens_per_s"]; p = f["P"]; n = f["n"]; tf = f["tflops_per_rank"]
  }
  /^comm .* coll=.*ms_per_step=/ {
    kv($0); c = f["phase"] "_" f["coll"]
    if (!(c in seen)) { seen[c] = ++ncol; col[ncol] = c }
    cms[c] = f["ms_per_step"]
  }
  /^comm .*total_ms_per_step=/ { kv($0); share = f["share"]; sub(/%$/, "", share); tot = f["total_ms_per_step"] }
  END {
    flush()
    h = "mode,P,n,fwdbwd_ms,tokens_per_s,comm_share_pct,speedup,efficiency,n_series,tflops_per_rank," \
        "tflops_efficiency,comm_ms_per_step"
    for (c = 1; c <= ncol; c++) h = h ",comm_" col[c] "_ms"
    print h
    for (r = 1; r <= nrow; r++) {
      line = row[r]
      for (c = 1; c <= ncol; c++) line = line "," cell[r, c]
      print line
    }
  }
' "$in" > "$csv.tmp"
mv "$csv.tmp" "$csv"
cat "$csv"
[ "$(wc -l < "$csv")" -gt 1 ] || { echo "scaling-plot.sh: no colt5-bench block results in $in" >&2; exit 1; }

if ! command -v gnuplot > /dev/null 2>&1; then
  echo "scaling-plot.sh: no gnuplot (apt-get install gnuplot-nox): $csv only" >&2
  exit 0
fi
# One data file per series (gnuplot draws a line through each file's rows).
tmp=$(mktemp -d "${TMPDIR:-/tmp}/c5plot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
awk -F, -v t="$tmp" 'NR > 1 { print > (t "/" $1 "-" $9 ".csv") }' "$csv"
gpu=$(awk -F, 'NR > 1 && $10 != "" { print 1; exit }' "$csv")
# plot_cmd MODE COLUMN LABEL STYLE: gnuplot's plot items for every series of MODE
plot_cmd() {
  for s in $(awk -F, -v m="$1" 'NR > 1 && $1 == m && !seen[$9]++ { print $9 }' "$csv"); do
    [ "$1" = strong ] && what="n = $s" || what="n = $s per rank"
    printf '"%s" using 2:%s with linespoints %s title "%s%s", ' "$tmp/$1-$s.csv" "$2" "$4" "$3" "$what"
  done
}
p0s=$(awk -F, '$1 == "strong" { print $2; exit }' "$csv"); p0s=${p0s:-1}
weak_items=$(plot_cmd weak 8 "time, " "pt 7")
[ -n "$gpu" ] && weak_items="$weak_items$(plot_cmd weak 11 "TFLOP/s per rank, " "pt 5 dt 4")0.9 with lines dt 3 title \"target 0.9\", "
# The title: the device mode, and the GPUs' model and count if listed, else the host's cores.
desc=$(sed -n 's/^# device: //p' "$in" | head -n 1); desc=${desc:-1 thread per rank}
host=$(sed -n 's/^# gpu: GPU [0-9]*: \(.*\) (UUID.*/\1/p' "$in" | sort | uniq -c | awk '{ c = $1; $1 = ""; printf "%s%d x%s", (NR > 1 ? ", " : ""), c, $0 }')
host=${host:-$(sed -n 's/^# host: //p' "$in")}
gnuplot << EOF
set terminal pngcairo size 1100,450 font ",10"
set output "$png.tmp"
set datafile separator ","
set multiplot layout 1,2 title "colt5-bench block, forward+backward, $desc ($host)" noenhanced
set xlabel "ranks P"; set logscale x 2; set grid; set key top left noenhanced
set title "strong scaling"; set ylabel "speed-up"; set logscale y 2
plot $(plot_cmd strong 7 "" "pt 7")x / $p0s with lines dt 2 title "ideal"
set title "weak scaling"; set ylabel "efficiency"; unset logscale y; set yrange [0:1.1]; set key bottom left
plot ${weak_items}1 with lines dt 2 title "ideal"
unset multiplot
EOF
mv "$png.tmp" "$png"
echo "scaling-plot.sh: wrote $csv and $png"
