#!/bin/sh
# scaling.sh BUILD_DIR [OUT_DIR] - weak and strong scaling of the sharded
# block (colt5-bench block, forward+backward with the gradient allreduce) over
# 1, 2, 4, 8 MPI ranks of one thread each, on one host. Needs as many cores
# as ranks (a 2-core machine runs only P = 1, 2). Writes the raw output to
# OUT_DIR/scaling.txt and prints it, then the table OUT_DIR/scaling.csv and
# the plot OUT_DIR/scaling.png (jobs/scaling-plot.sh).
#   strong: n = 65536 for every P;  weak: n = 8192 * P
# Environment: C5_RANKS ("1 2 4 8"), C5_STRONG_N (65536), C5_WEAK_N (8192, per
# rank), C5_REPS (5); C5_LAUNCH, the launcher, to which the rank count is
# appended ("mpirun --bind-to core --oversubscribe -np"; under SLURM
# jobs/slurm/scaling.sbatch gives "srun --mpi=pmix ... -n").
set -u
b=${1:?usage: scaling.sh BUILD_DIR [OUT_DIR]}
out=${2:-.}
ranks=${C5_RANKS:-"1 2 4 8"}
launch=${C5_LAUNCH:-"mpirun --bind-to core --oversubscribe -np"}
strong=${C5_STRONG_N:-65536}; weak=${C5_WEAK_N:-8192}; reps=${C5_REPS:-5}
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$out"
{
  echo "# host: $(nproc --all) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  for p in $ranks; do
    echo "## strong P=$p"
    $launch "$p" "$b/apps/colt5-bench" block --threads 1 --n "$strong" --reps "$reps" --warmup 1
    echo "## weak P=$p"
    $launch "$p" "$b/apps/colt5-bench" block --threads 1 --n $((weak * p)) --reps "$reps" --warmup 1
  done
} 2>&1 | tee "$out/scaling.txt"
"$(dirname "$0")/scaling-plot.sh" "$out"
