#!/bin/sh
# test_mpi_units.sh - the distributed top-k (against its gather-and-sort
# oracle), the router and cross attention (sharded against one rank) under mpirun with 2, 3
# and 4 ranks; the 2-D layout split with 4 ranks; the masked-byte model
# (sharded loss and gradients against one rank).
set -u
b=${top_builddir:-.}
fail=0
for t in test_topk test_router test_routed_cross_attn test_dist2d test_model; do
  for np in 2 3 4; do
    [ $t = test_dist2d ] && [ $np != 4 ] && continue
    if OMP_NUM_THREADS=1 timeout 120 mpirun --oversubscribe -np $np "$b/tests/unit/$t" > out.$$ 2>&1; then
      echo "ok: $t np=$np"
    else
      echo "FAIL: $t np=$np"; cat out.$$; fail=1
    fi
  done
done
rm -f out.$$
exit $fail
