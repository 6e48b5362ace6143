#!/bin/sh
# test_checkpoint.sh - checkpoints: every case of test_checkpoint.c written
# and checked on 2 ranks, then the checkpoint it left read back bit for bit
# on 1 and 3 ranks; the same written on 3 ranks (other row shares) and read
# on 1 and 2. Each run has a time limit (a hang fails).
set -u
b=${top_builddir:-.}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
lim=${C5_CKPT_TIMEOUT:-120}
to=""
command -v timeout > /dev/null 2>&1 && to="timeout $lim"
dir=$(mktemp -d "${TMPDIR:-/tmp}/c5_ckpt.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
fail=0
run() {   # NP MODE DIR
  if OMP_NUM_THREADS=1 $to mpirun --oversubscribe -np "$1" "$b/tests/unit/test_checkpoint" "$2" "$3" > "$dir/out" 2>&1; then
    cat "$dir/out"; echo "ok: $2 np=$1"
  else
    rc=$?
    cat "$dir/out"
    if [ $rc -eq 124 ]; then echo "FAIL: $2 np=$1 timed out after ${lim}s (a hang?)"; else echo "FAIL: $2 np=$1 (exit $rc)"; fi
    fail=1
  fi
}
mkdir "$dir/p2" "$dir/p3"
run 2 write "$dir/p2"
if [ $fail = 0 ]; then run 1 reload "$dir/p2"; run 3 reload "$dir/p2"; fi
run 3 write "$dir/p3"
if [ $fail = 0 ]; then run 1 reload "$dir/p3"; run 2 reload "$dir/p3"; fi
exit $fail
