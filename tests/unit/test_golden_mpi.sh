#!/bin/sh
# test_golden_mpi.sh - every golden vector passes with their columns
# sharded over 2, 3 and 4 ranks (global LSE and gradient reductions), with
# the same bounds as one rank (modules not sharded yet report SKIP). 1 thread per rank.
set -u
b=${top_builddir:-.}; s=${top_srcdir:-.}
fail=0
for np in 2 3 4; do
  if OMP_NUM_THREADS=1 mpirun --oversubscribe -np $np "$b/apps/colt5-golden" "$s"/tests/golden/*.h5 > out.$$ 2>&1; then
    echo "ok: np=$np"
  else
    echo "FAIL: np=$np"; cat out.$$; fail=1
  fi
done
rm -f out.$$
exit $fail
