#!/bin/sh
# plot-loss.sh LOG.csv [OUT.png] - the loss curve of a colt5-train log
# (training and validation bits per masked byte against the step, with the
# text's unigram entropy from the log's header) as a PNG, by gnuplot.
set -eu
log=${1:?usage: plot-loss.sh LOG.csv [OUT.png]}
out=${2:-${log%.csv}.png}
[ -r "$log" ] || { echo "plot-loss.sh: cannot read $log" >&2; exit 2; }
command -v gnuplot > /dev/null || { echo "plot-loss.sh: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 2; }
uni=$(sed -n 's/^# unigram_bits_per_byte=//p' "$log" | tail -1)
# the last run's rows for each step (a resumed run appends after its checkpoint's step)
data=$(mktemp); val=$(mktemp); trap 'rm -f "$data" "$val"' EXIT
grep -v '^#' "$log" | grep -v '^step' | awk -F, '{ row[$1] = $0; if ($1 > max) max = $1 } END { for (s = 1; s <= max; s++) if (s in row) print row[s] }' > "$data"
[ -s "$data" ] || { echo "plot-loss.sh: no steps in $log" >&2; exit 2; }
awk -F, '$7 != "" { print $1 "," $7 }' "$data" > "$val"
gnuplot <<GP
set terminal pngcairo size 1000,600 noenhanced
set output "$out"
set datafile separator ","
set xlabel "step"
set ylabel "bits per masked byte"
set grid
set key top right
set title "colt5-train: $(basename "$log")"
plot "$data" using 1:3 with lines lw 1 lc rgb "#9bb7d4" title "train (step)", \
     $([ -s "$val" ] && echo "\"$val\" using 1:2 with linespoints pt 7 ps 0.8 lw 2 lc rgb \"#c0392b\" title \"validation\",") \
     ${uni:-NaN} with lines dt 2 lc rgb "#555555" title "unigram entropy (${uni:-?})", \
     0.6 * ${uni:-NaN} with lines dt 3 lc rgb "#27ae60" title "0.6 x unigram"
GP
echo "plot-loss.sh: $out"
