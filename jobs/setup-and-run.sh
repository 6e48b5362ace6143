#!/bin/sh
# setup-and-run.sh - on a fresh Debian 12 machine: install the packages,
# build (double precision), and run the main job. At this stage the main job
# is the sharded block benchmark: a 2-rank mpirun, 1 thread per rank
# (ConditionalRoutedTransformerBlock forward+backward at n = 4096 and 16384,
# with its communication report and routed-token balance).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/jobs/deps.sh"
"$top/jobs/build.sh" double
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpirun --oversubscribe -np 2 "$top/build-double/apps/colt5-bench" block --threads 1
