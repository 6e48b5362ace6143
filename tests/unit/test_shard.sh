#!/bin/sh
# test_shard.sh - sharded = unsharded (outputs and every gradient) for
# coordinate descent, the router, the routed FF, routed attention and the
# block, plus the layout rule: tests/unit/test_shard_prog (built from
# test_shard.c; named apart so its log does not collide with this script's
# test_shard.log) under mpirun on 1, 2, 3 and 4 ranks, 1 thread per rank;
# then on 2 and 3 ranks with C5_ROUTER_WHOLE_ROWS=1: the routers' whole-row
# path (the logits gathered, coordinate descent and top-k on every token,
# each rank keeping its own: what a device backend runs sharded) on the CPU.
# Each run has a time limit, so a hang (a rank left in a collective) fails
# instead of blocking make check.
set -u
b=${top_builddir:-.}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
lim=${C5_SHARD_TIMEOUT:-120}
to=""
command -v timeout > /dev/null 2>&1 && to="timeout $lim"
fail=0
for run in 1 2 3 4 w2 w3; do
  np=${run#w}; whole=0; [ "$run" != "$np" ] && whole=1
  if C5_ROUTER_WHOLE_ROWS=$whole OMP_NUM_THREADS=1 $to mpirun --oversubscribe -x C5_ROUTER_WHOLE_ROWS -np $np \
       "$b/tests/unit/test_shard_prog" > out.$$ 2>&1; then
    cat out.$$; echo "ok: np=$np whole rows=$whole"
  else
    rc=$?
    cat out.$$
    if [ $rc -eq 124 ]; then echo "FAIL: np=$np timed out after ${lim}s (a hang?)"; else echo "FAIL: np=$np whole rows=$whole (exit $rc)"; fi
    fail=1
  fi
done
rm -f out.$$
exit $fail
