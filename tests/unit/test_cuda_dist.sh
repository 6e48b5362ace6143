#!/bin/sh
# test_cuda_dist.sh - dist's collectives on device buffers (test_cuda_dist)
# under mpirun on one GPU: 1, 2 and 3 ranks by the default path (ranks
# sharing a GPU stage through host memory; one rank uses NCCL when the build
# has it), one rank forced through each path (C5_DIST=mpi, C5_DIST=nccl),
# and C5_DIST=nccl on 2 ranks sharing the GPU, which every rank must refuse
# with the same error (exit 3 from each, no hang). Exits 77 without a GPU.
set -u
b=${top_builddir:-.}
t=${T_CUDA_DIR:-$b/tests/unit}/test_cuda_dist   # bench/cuda_gpu_run.sh names its staged folder
[ -x "$t" ] || { echo "no $t: this build has no CUDA"; exit 77; }
run() {   # run NP ENV-ASSIGNMENT: the output kept in out.$$
  env "$2" OMP_NUM_THREADS=1 timeout 300 mpirun --oversubscribe -np "$1" "$t" > out.$$ 2>&1
}
run 1 C5_DIST=
rc=$?
[ $rc = 77 ] && { cat out.$$; rm -f out.$$; exit 77; }
fail=0
check() {   # check RC WANT NAME
  cat out.$$
  if [ "$1" = "$2" ]; then echo "ok: $3"; else echo "FAIL: $3 (exit $1, expected $2)"; fail=1; fi
}
check $rc 0 "np=1 default"
for np in 2 3; do run $np C5_DIST=; check $? 0 "np=$np default (host-staged)"; done
run 1 C5_DIST=mpi; check $? 0 "np=1 C5_DIST=mpi"
run 3 C5_DIST=mpi; check $? 0 "np=3 C5_DIST=mpi"
run 1 C5_DIST=nccl; rc=$?
if grep -q 'this build has no NCCL' out.$$; then
  cat out.$$; echo "skipped: the NCCL runs (this build has no NCCL)"
else
  check $rc 0 "np=1 C5_DIST=nccl"
  grep -q 'NCCL [0-9.]* loaded' out.$$ || { echo "FAIL: np=1 C5_DIST=nccl: no NCCL version logged"; fail=1; }
  run 2 C5_DIST=nccl; rc=$?
  n=$(grep -c '^dist refused P=2 rank [01]: .*shares its GPU' out.$$)
  check $rc 3 "np=2 C5_DIST=nccl on one GPU refused"
  [ "$n" = 2 ] || { echo "FAIL: np=2 C5_DIST=nccl: $n ranks named the shared GPU, expected 2"; fail=1; }
fi
rm -f out.$$
exit $fail
