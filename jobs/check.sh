#!/bin/sh
# check.sh - build and run the whole test suite in both precisions (make
# check in build-double/ and build-single/): once with the BLAS kernels
# OpenBLAS picks for this CPU, then again under other kernel cores
# (OPENBLAS_CORETYPE), because results must not depend on which BLAS kernel
# runs. Prints one line "N passed, N failed" over every pass (skips are
# counted apart). Exit 0 only if none failed.
#
# The first pass runs every test, under the caller's OPENBLAS_CORETYPE if set.
# The extra passes run the tests whose numbers pass through the BLAS
# (make check-blas: Makefile.am's BLAS_TESTS). The extra cores:
# C5_BLAS_CORES="Haswell SkylakeX" (empty: none), each in both precisions;
# by default two of Prescott (what OpenBLAS runs on a CPU it does not know),
# Haswell (AVX2) and SkylakeX (AVX-512) that this CPU can execute, other than
# the first pass's: the double suite under the first of the two, the single
# suite under the second (both kernel families run, each once: the two
# passes of both precisions took 6 of CI's 26 minutes).
#
# Then, counted in the totals: the sanitizer pass (jobs/sanitize.sh: a build
# under AddressSanitizer + UndefinedBehaviorSanitizer running the bad-input
# tests, colt5-train's tests and a few unit and golden tests) and the fuzz pass
# (jobs/fuzz.sh: each libFuzzer harness about 30 s, and a replay of every corpus and
# regression input of tests/fuzz). README.md ("Run the whole test suite") has
# the time each takes.
#
# --quick: leave the sanitizer and fuzz passes out (a developer's run; CI runs
# them). --sanitize is accepted for older callers (they are on by default).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
extra=1
for a in "$@"; do
  case $a in
    --quick) extra=0 ;;
    --sanitize) ;;
    *) echo "check.sh: unknown argument $a (--quick)" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
pass=0; fail=0; skip=0; rc=0

# The core the first pass runs: OpenBLAS's own choice, or the caller's
# OPENBLAS_CORETYPE (OpenBLAS names it under OPENBLAS_VERBOSE=2).
first_core() {
  OPENBLAS_VERBOSE=2 "$1" --help 2>&1 | sed -n 's/^Core: *//p' | head -n 1
}

default_cores() {
  [ "$(uname -m)" = x86_64 ] || return 0
  flags=$(grep -m 1 '^flags' /proc/cpuinfo 2>/dev/null)
  has() { for f in "$@"; do case " $flags " in *" $f "*) ;; *) return 1 ;; esac; done; }
  cand="Prescott"
  has avx2 fma && cand="$cand Haswell"
  has avx512f avx512cd avx512bw avx512dq avx512vl && cand="$cand SkylakeX"
  n=0
  for c in $cand; do
    [ "$c" = "$1" ] && continue
    [ $n -lt 2 ] && printf '%s ' "$c" && n=$((n + 1))
  done
}

# run_pass PREC LABEL [CORE]: make check in build-PREC under
# OPENBLAS_CORETYPE=CORE (none given: the caller's environment); adds to the totals.
# The single suite leaves out the tests that do not depend on the precision
# (make check-numeric; Makefile.am's PRECISION_FREE_TESTS): the double suite ran them.
run_pass() {
  dir="$top/build-$1"
  if [ $# -gt 2 ]; then
    (cd "$dir" && OPENBLAS_CORETYPE="$3" make -j"$(nproc)" check-blas > "check-$2.out" 2>&1) || rc=1
  elif [ "$1" = single ]; then
    (cd "$dir" && make -j"$(nproc)" check-numeric > "check-$2.out" 2>&1) || rc=1
  else
    (cd "$dir" && make -j"$(nproc)" check > "check-$2.out" 2>&1) || rc=1
  fi
  log="$dir/test-suite.log"
  if [ ! -f "$log" ]; then echo "make check ($1, $2) did not run: see build-$1/check-$2.out"; fail=$((fail + 1)); rc=1; return; fi
  cp "$log" "$dir/test-suite-$2.log"
  grep -E '^(PASS|FAIL|SKIP|ERROR|XFAIL|XPASS):' "$dir/check-$2.out" | sed "s/^/[$1, $2] /"
  n() { sed -n "s/^# $1: *//p" "$log" | head -n 1; }
  p=$(n PASS); f=$(n FAIL); e=$(n ERROR); x=$(n XPASS); s=$(n SKIP)
  pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0} + ${e:-0} + ${x:-0})); skip=$((skip + ${s:-0}))
  [ "${f:-0}${e:-0}${x:-0}" = "000" ] || { rc=1; echo "failures ($1, $2): see build-$1/test-suite-$2.log"; }
}

for prec in double single; do
  if ! "$top/jobs/build.sh" "$prec"; then
    echo "build ($prec) failed: see build-$prec/configure.out, build-$prec/make.out"; fail=$((fail + 1)); rc=1; continue
  fi
  first=$(first_core "$top/build-$prec/apps/colt5-golden")
  if [ "${C5_BLAS_CORES+set}" = set ]; then cores=$C5_BLAS_CORES
  else
    # shellcheck disable=SC2046
    set -- $(default_cores "$first")
    if [ "$prec" = double ] || [ $# -lt 2 ]; then cores=${1:-}; else cores=$2; fi
  fi
  echo "[$prec] OpenBLAS core: ${first:-unknown}${OPENBLAS_CORETYPE:+ (OPENBLAS_CORETYPE)}; again under: ${cores:-none}"
  run_pass "$prec" "${first:-default}"
  for c in $cores; do [ "$c" = "$first" ] || run_pass "$prec" "$c" "$c"; done
done
# extra_pass NAME SCRIPT: a script that prints "N passed, N failed" last, its lines tagged [NAME]
extra_pass() {
  mkdir -p "$top/build-$1"
  "$top/jobs/$2" > "$top/build-$1/$1.out" 2>&1 || rc=1
  grep -E "^\[$1\]|^$1:" "$top/build-$1/$1.out"
  sp=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$top/build-$1/$1.out" | tail -n 1)
  sf=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$top/build-$1/$1.out" | tail -n 1)
  pass=$((pass + ${sp:-0})); fail=$((fail + ${sf:-1}))
}
if [ $extra = 1 ]; then
  extra_pass sanitize sanitize.sh
  extra_pass fuzz fuzz.sh
fi
echo "($skip skipped)"
echo "$pass passed, $fail failed"
exit $rc
