#!/bin/sh
# test_dump.sh - activation dumps: a block's (and a variant: no light branch,
# an unrouted FF, a mask) and the masked-byte model's dumps written on 1, 2
# and 3 ranks (each run checks its own file), then the files compared: the
# same datasets, identical routed indices, values to 1e-12 in double.
set -u
b=${top_builddir:-.}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
lim=${C5_DUMP_TIMEOUT:-120}
to=""
command -v timeout > /dev/null 2>&1 && to="timeout $lim"
dir=$(mktemp -d "${TMPDIR:-/tmp}/c5_dump.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
fail=0
run() {   # NP ARGS...
  np=$1; shift
  if OMP_NUM_THREADS=1 $to mpirun --oversubscribe -np "$np" "$b/tests/unit/test_dump" "$@" > "$dir/out" 2>&1; then
    cat "$dir/out"; echo "ok: np=$np $1"
  else
    rc=$?
    cat "$dir/out"
    if [ $rc -eq 124 ]; then echo "FAIL: np=$np $1 timed out after ${lim}s (a hang?)"; else echo "FAIL: np=$np $* (exit $rc)"; fi
    fail=1
  fi
}
for np in 1 2 3; do
  run $np write "$dir/dump$np.h5"; run $np variant "$dir/variant$np.h5"; run $np model "$dir/model$np.h5"
done
if [ $fail = 0 ]; then
  for f in dump variant model; do
    run 1 compare "$dir/${f}1.h5" "$dir/${f}2.h5"
    run 1 compare "$dir/${f}1.h5" "$dir/${f}3.h5"
  done
fi
exit $fail
