#!/bin/sh
# test_cuda_block_mpi.sh - the block forward+backward on the CUDA backend
# sharded over 2 and 3 ranks on one GPU (dist staged through host memory)
# equal to the same block on one rank: test_cuda_block under mpirun (each
# rank compares its part; routed index sets identical, out, dx and every
# gradient norm-wise within the one-rank test's tolerances). Exits 77
# without a GPU. C5_RANKS ("2 3") lists the rank counts: on a node of G
# GPUs each rank takes node-local rank mod G, so C5_RANKS="2 4" on 4 GPUs
# gives every rank its own GPU and the collectives run on NCCL (the
# multi-GPU issue's correctness runs; keep NCCL_NVLS_ENABLE=0 set).
set -u
b=${top_builddir:-.}
t=${T_CUDA_DIR:-$b/tests/unit}/test_cuda_block   # bench/cuda_gpu_run.sh names its staged folder
[ -x "$t" ] || { echo "no $t: this build has no CUDA"; exit 77; }
fail=0
for np in ${C5_RANKS:-2 3}; do
  OMP_NUM_THREADS=1 timeout 300 mpirun --oversubscribe -np $np "$t" > out.$$ 2>&1
  rc=$?
  cat out.$$
  [ $rc = 77 ] && { rm -f out.$$; exit 77; }
  if [ $rc = 0 ]; then echo "ok: np=$np"; else echo "FAIL: np=$np (exit $rc)"; fail=1; fi
done
rm -f out.$$
exit $fail
