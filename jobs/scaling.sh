#!/bin/sh
# scaling.sh BUILD_DIR [OUT_DIR] - weak and strong scaling of the sharded
# block (colt5-bench block, forward+backward with the gradient allreduce)
# over P MPI ranks on one host, on its cores (one thread per rank) or on its
# GPUs (one GPU per rank). Writes the raw output to OUT_DIR/scaling.txt and
# prints it, then the table OUT_DIR/scaling.csv and the plot
# OUT_DIR/scaling.png (jobs/scaling-plot.sh).
#
# C5_DEVICE=cpu (the default): P = 1, 2, 4, 8 ranks of one thread each,
#   strong n = 65536 for every P, weak n = 8192 * P. Needs as many cores as
#   ranks (a 2-core machine runs only P = 1, 2).
# C5_DEVICE=cuda: the CUDA issue's runs (issue 13): each rank computes on its
#   own GPU (colt5-bench picks node-local rank mod the GPUs it sees; with one
#   GPU per rank the collectives run on NCCL), the issue's block shape,
#   colt5-bench block --device cuda --shape issue --matmul $C5_MATMUL;
#   P = 1, 2, 4, strong n = 131072 and 1048576, weak n = 32768 * P and
#   262144 * P. NCCL_NVLS_ENABLE=0 unless set (the issue's runs keep NVLink
#   SHARP off). Needs a GPU per rank: with fewer, ranks share GPUs and their
#   collectives are staged through host memory (a warning in scaling.txt;
#   C5_DIST=nccl makes that an error instead: docs/design.md).
# Environment: C5_DEVICE (cpu), C5_MATMUL (fp32; cuda only: fp32|tf32|bf16),
# C5_RANKS (cpu "1 2 4 8", cuda "1 2 4"), C5_STRONG_N (cpu 65536, cuda
# "131072 1048576": one or more n, each run at every P), C5_WEAK_N (cpu 8192,
# cuda "32768 262144": per rank, one or more), C5_REPS (5); C5_LAUNCH, the
# launcher, to which the rank count is appended ("mpirun --bind-to core
# --oversubscribe -np"; under SLURM jobs/slurm/scaling.sbatch and
# scaling-gpu.sbatch give "srun --mpi=pmix ... -n").
# scaling.txt starts with the host, the device mode, the launcher and, when
# nvidia-smi is there, its GPU list (nvidia-smi -L).
set -u
b=${1:?usage: scaling.sh BUILD_DIR [OUT_DIR]}
out=${2:-.}
dev=${C5_DEVICE:-cpu}
case $dev in
  cpu)  ranks=${C5_RANKS:-"1 2 4 8"}; strong=${C5_STRONG_N:-65536}; weak=${C5_WEAK_N:-8192}
        devargs=;;
  cuda) ranks=${C5_RANKS:-"1 2 4"}; strong=${C5_STRONG_N:-"131072 1048576"}; weak=${C5_WEAK_N:-"32768 262144"}
        matmul=${C5_MATMUL:-fp32}
        case $matmul in fp32|tf32|bf16) ;; *) echo "scaling.sh: C5_MATMUL=$matmul: want fp32, tf32 or bf16" >&2; exit 2;; esac
        devargs="--device cuda --shape issue --matmul $matmul"
        NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}; export NCCL_NVLS_ENABLE;;
  *)    echo "scaling.sh: C5_DEVICE=$dev: want cpu or cuda" >&2; exit 2;;
esac
launch=${C5_LAUNCH:-"mpirun --bind-to core --oversubscribe -np"}
reps=${C5_REPS:-5}
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$out"
# run MODE P N: one colt5-bench block run of N tokens over P ranks
run() {
  echo "## $1 P=$2 n=$3"
  $launch "$2" "$b/apps/colt5-bench" block --threads 1 $devargs --n "$3" --reps "$reps" --warmup 1
}
{
  echo "# host: $(nproc --all) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  if [ "$dev" = cuda ]; then
    echo "# device: cuda, matmul $matmul, shape issue, one GPU per rank, NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE, C5_DIST=${C5_DIST:-auto}"
  else
    echo "# device: cpu, 1 thread per rank"
  fi
  echo "# launcher: $launch P"
  if command -v nvidia-smi > /dev/null 2>&1; then
    gpus=$(nvidia-smi -L 2>&1)
    echo "$gpus" | sed 's/^/# gpu: /'
    if [ "$dev" = cuda ]; then
      ng=$(echo "$gpus" | grep -c '^GPU [0-9]')
      for p in $ranks; do
        [ "$p" -le "$ng" ] || echo "# warning: P=$p ranks on $ng GPUs: ranks share GPUs (collectives staged through host memory)"
      done
    fi
  elif [ "$dev" = cuda ]; then
    echo "# gpu: no nvidia-smi on this host"
  fi
  for p in $ranks; do
    for n in $strong; do run strong "$p" "$n"; done
    for n in $weak; do run weak "$p" $((n * p)); done
  done
} 2>&1 | tee "$out/scaling.txt"
"$(dirname "$0")/scaling-plot.sh" "$out"
