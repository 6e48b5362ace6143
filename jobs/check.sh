#!/bin/sh
# check.sh - build and run the whole test suite in both precisions
# (make check in build-double/ and build-single/), then print one line
# "N passed, N failed" (skips are counted apart). Exit 0 only if none failed.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
pass=0; fail=0; skip=0; rc=0
for prec in double single; do
  if ! "$top/jobs/build.sh" "$prec"; then
    echo "build ($prec) failed: see build-$prec/configure.out, build-$prec/make.out"; fail=$((fail + 1)); rc=1; continue
  fi
  (cd "$top/build-$prec" && make -j"$(nproc)" check > check.out 2>&1) || rc=1
  log="$top/build-$prec/test-suite.log"
  if [ ! -f "$log" ]; then echo "make check ($prec) did not run: see build-$prec/check.out"; fail=$((fail + 1)); rc=1; continue; fi
  grep -E '^(PASS|FAIL|SKIP|ERROR|XFAIL|XPASS):' "$top/build-$prec/check.out" | sed "s/^/[$prec] /"
  n() { sed -n "s/^# $1: *//p" "$log" | head -n 1; }
  p=$(n PASS); f=$(n FAIL); e=$(n ERROR); x=$(n XPASS); s=$(n SKIP)
  pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0} + ${e:-0} + ${x:-0})); skip=$((skip + ${s:-0}))
  [ "${f:-0}${e:-0}${x:-0}" = "000" ] || { rc=1; echo "failures ($prec): see build-$prec/test-suite.log"; }
done
echo "($skip skipped)"
echo "$pass passed, $fail failed"
exit $rc
