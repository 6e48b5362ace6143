#!/bin/sh
# run.sh - `make bench`: the benchmarks of BENCHMARKS.md from a build tree
# (the current directory, or BUILD_DIR): coordinate descent on one row at 1
# and 2 threads, then the block on 1 rank and, sharded, on 2 ranks at one
# thread each. With C5_REFERENCE=DIR (the reference's package folders, run
# by Debian's python3-torch) each line also gets the reference's time from
# the same run. Timings belong here, never in make check.
set -eu
b=${1:-${BUILD_DIR:-.}}
bench="$b/apps/colt5-bench"
[ -x "$bench" ] || { echo "bench/run.sh: no $bench (build first)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
echo "== coordinate descent, one row"
"$bench" cd --threads 1,2
echo "== block, one rank"
OMP_NUM_THREADS=1 mpirun -np 1 "$bench" block --threads 1
echo "== block, sequence sharded over 2 ranks, 1 thread each"
OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 "$bench" block --threads 1
