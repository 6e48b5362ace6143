#!/bin/sh
# test_examples.sh - the examples users copy run and pass their own checks:
# routed_ff (forward and backward on one rank, the input gradient against a
# central difference of the loss), block_sharded under mpirun on 2 and 3 ranks
# (the gathered output and summed gradients against a one-rank run) and
# params_h5 (parameters written, read back equal, refused for another shape).
set -u
b=${top_builddir:-.}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
# run NAME WANT CMD...: exit 0 and a line containing WANT
run() {
  name=$1; want=$2; shift 2
  out=$(timeout 300 "$@" 2>&1); rc=$?
  if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -qF -- "$want" && ! printf '%s\n' "$out" | grep -q FAILED; then
    echo "ok: $name"
  else
    echo "FAIL: $name (exit $rc), want \"$want\":"; printf '%s\n' "$out" | tail -8; fail=1
  fi
}
run "routed_ff" "relative difference" "$b/examples/routed_ff"
run "block_sharded, 2 ranks" "sharded over 2 ranks against one rank" mpirun --oversubscribe -np 2 "$b/examples/block_sharded"
run "block_sharded, 3 ranks" ": ok" mpirun --oversubscribe -np 3 "$b/examples/block_sharded"
run "params_h5" "equal the table written: ok" "$b/examples/params_h5" "$tmp/p.h5"
run "params_h5 refuses another shape" "has shape" "$b/examples/params_h5" "$tmp/p.h5"
[ -f "$tmp/p.h5" ] && ! ls "$tmp" | grep -q tmp || { echo "FAIL: params_h5 left $(ls "$tmp")"; fail=1; }
exit $fail
