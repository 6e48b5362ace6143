#!/bin/sh
# run.sh - `make bench`: the benchmarks of BENCHMARKS.md from a build tree
# (the current directory, or BUILD_DIR): coordinate descent on one row at 1
# and 2 threads, then the block on 1 rank and, sharded, on 2 ranks at one
# thread each. With C5_REFERENCE=DIR (the reference's package folders, run
# by Debian's python3-torch) each line also gets the reference's time from
# the same run; without it the reference is not run. Timings belong here,
# never in make check.
#
# Writes the log (bench.log) and one CSV row per measured line (bench.csv,
# or C5_BENCH_CSV) in the build tree; the CSV's reference columns are empty
# when the reference did not run.
set -eu
b=${1:-${BUILD_DIR:-.}}
here=$(cd "$(dirname "$0")" && pwd)
bench="$b/apps/colt5-bench"
[ -x "$bench" ] || { echo "bench/run.sh: no $bench (build first)" >&2; exit 2; }
log="$b/bench.log"; csv=${C5_BENCH_CSV:-$b/bench.csv}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
# The build tree's bench finds the script beside this one (the installed one in $(pkgdatadir)).
export C5_BENCH_SCRIPT="$here/reference_bench.py"
{
  echo "== coordinate descent, one row"
  "$bench" cd --threads 1,2
  echo "== block, one rank"
  OMP_NUM_THREADS=1 mpirun -np 1 "$bench" block --threads 1
  echo "== block, sequence sharded over 2 ranks, 1 thread each"
  OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 "$bench" block --threads 1
} > "$log.tmp"
mv "$log.tmp" "$log"
cat "$log"
# "colt5 op=... key=  value ..." lines into fixed columns (cd reports Mtokens/s).
awk -v OFS=, '
  BEGIN { nc = split("op pass n P threads precision median_ms tokens_per_s gemm_share_pct gemm_gflops blas_gflops ref_ms ref_tokens_per_s speedup", col, " ")
          line = col[1]; for (i = 2; i <= nc; i++) line = line OFS col[i]; print line }
  /^colt5 op=/ {
    gsub(/= +/, "="); delete v; v["P"] = 1
    for (i = 2; i <= NF; i++) { k = substr($i, 1, index($i, "=") - 1); v[k] = substr($i, index($i, "=") + 1) }
    if ("Mtokens_per_s" in v) v["tokens_per_s"] = v["Mtokens_per_s"] * 1e6
    if ("gemm_share" in v) { sub(/%$/, "", v["gemm_share"]); v["gemm_share_pct"] = v["gemm_share"] }
    line = v[col[1]]; for (i = 2; i <= nc; i++) line = line OFS v[col[i]]; print line
  }' "$log" > "$csv.tmp"
mv "$csv.tmp" "$csv"
echo "bench/run.sh: $(($(wc -l < "$csv") - 1)) rows in $csv, log in $log"
