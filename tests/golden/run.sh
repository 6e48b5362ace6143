#!/bin/sh
# run.sh NAME.test - automake log compiler for the golden vectors: runs
# colt5-golden on tests/golden/NAME.h5 (exit 0 pass, 1 fail, 77 skip).
# C5_GOLDEN_NP=P runs it under mpirun -np P.
name=$(basename "$1" .test)
h5="$top_srcdir/tests/golden/$name.h5"
if [ -n "$C5_GOLDEN_NP" ] && [ "$C5_GOLDEN_NP" != 1 ]; then
  exec mpirun --oversubscribe -np "$C5_GOLDEN_NP" "$top_builddir/apps/colt5-golden" "$h5"
fi
exec "$top_builddir/apps/colt5-golden" "$h5"
