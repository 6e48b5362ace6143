#!/bin/sh
# setup-and-run.sh - on a fresh Debian 12 machine: install the packages,
# build (double precision), and run the main job. At this stage the main job
# is colt5-bench's coordinate-descent run: one process, 2 threads.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/jobs/deps.sh"
"$top/jobs/build.sh" double
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OMP_NUM_THREADS=2 "$top/build-double/apps/colt5-bench" cd --threads 2
