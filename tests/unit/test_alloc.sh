#!/bin/sh
# test_alloc.sh - no allocation in training steps 2..5 (tests/unit/test_alloc):
# a block and an autoregressive attention on 1 and 2 ranks, new inputs each step.
set -u
b=${top_builddir:-.}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
fail=0
for np in 1 2; do
  if OMP_NUM_THREADS=1 timeout 120 mpirun --oversubscribe -np $np "$b/tests/unit/test_alloc" > out.$$ 2>&1; then
    cat out.$$; echo "ok: np=$np"
  else
    cat out.$$; echo "FAIL: np=$np"; fail=1
  fi
done
rm -f out.$$
exit $fail
