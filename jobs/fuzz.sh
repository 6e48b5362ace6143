#!/bin/sh
# fuzz.sh [--time S] [--only NAME] [--no-build] - the libFuzzer harnesses of tests/fuzz: build them in
# build-fuzz/ (clang-14 through the MPI wrapper, configure --enable-fuzzers: the library and apps
# instrumented for coverage under AddressSanitizer + UndefinedBehaviorSanitizer, double precision,
# static), then for each harness
#   - replay: every input of tests/fuzz/corpus/NAME and tests/fuzz/regress/NAME, run once;
#   - fuzz: a fixed count of executions from a fixed seed (about 30 s each here; below), or S seconds with
#     --time S (a campaign), from the seed corpus (a copy in build-fuzz/corpus/NAME: the
#     repository's corpus is not changed), findings written to build-fuzz/findings/NAME/.
# Each replay and each fuzz run is one test; any sanitizer report, leak, crash, timeout (10 s an
# input) or out-of-memory fails it. The harnesses run C5_FUZZ_PARALLEL at a time (default: the
# number of cores), so that 30 s each costs 1 minute on 2 cores. Prints "N passed, N failed"; exit 0 only if none failed. Run
# by jobs/check.sh (unless --quick). A longer campaign: jobs/fuzz.sh --time 1200 (docs/bad-input.md,
# "Fuzzing"). --only NAME: one harness (train_config, train_options, checkpoint, golden).
# --keep-going: fuzz on past a finding (libFuzzer -fork=1 with -ignore_crashes/ooms/timeouts; every
# finding kept in build-fuzz/findings/NAME/), for campaigns. C5_FUZZ_BIN=DIR: the harnesses from DIR
# (a copy, so that a campaign's forked jobs keep running one build while build-fuzz/ is rebuilt).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
secs=60; only=; build=1; keep=; campaign=0
while [ $# -gt 0 ]; do
  case $1 in
    --time) secs=$2; campaign=1; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep-going) keep="-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1"; shift ;;
    *) echo "fuzz.sh: unknown argument $1 (--time S, --only NAME, --no-build)" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mca_base_component_disable_dlclose=1
export OMP_NUM_THREADS=1
# As jobs/sanitize.sh: a size too large for memory is the readers' "out of memory" message, not an
# abort; OpenMPI's and libhdf5's own leaks suppressed (jobs/lsan-fuzz.supp), the project's not.
export ASAN_OPTIONS="allocator_may_return_null=1:fast_unwind_on_malloc=0:detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="use_tls=0:suppressions=$top/jobs/lsan-fuzz.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
b=$top/build-fuzz
t0=$(date +%s)
if [ $build = 1 ]; then
  [ -x "$top/configure" ] || (cd "$top" && autoreconf -fi > /dev/null)
  mkdir -p "$b"
  if [ ! -f "$b/Makefile" ]; then
    (cd "$b" && OMPI_CC=clang-14 MPICC=mpicc "$top/configure" --with-precision=double --enable-fuzzers \
      --disable-shared --without-cuda > configure.out 2>&1) || { echo "fuzz: configure failed: see build-fuzz/configure.out, config.log"; echo "0 passed, 1 failed"; exit 1; }
  fi
  (cd "$b" && OMPI_CC=clang-14 make -j"$(nproc)" tests/fuzz/fuzz_train_config tests/fuzz/fuzz_train_options \
    tests/fuzz/fuzz_checkpoint tests/fuzz/fuzz_golden > make.out 2>&1) || { echo "fuzz: build failed: see build-fuzz/make.out"; echo "0 passed, 1 failed"; exit 1; }
  echo "fuzz: built in $(( $(date +%s) - t0 )) s"
fi
# -malloc_limit_mb: a buffer sized from a file's shape larger than this is refused by the readers
# (allocator_may_return_null) rather than reported by libFuzzer; RSS stays bounded by -rss_limit_mb.
opts="-timeout=10 -rss_limit_mb=3072 -malloc_limit_mb=1048576 -close_fd_mask=3 -print_final_stats=1"
# harness NAME: its replay and its fuzzing, one result line each into build-fuzz/logs/NAME.result
harness() {
  h=$1
  exe=${C5_FUZZ_BIN:-$b/tests/fuzz}/fuzz_$h
  mkdir -p "$b/findings/$h" "$b/corpus/$h"
  : > "$b/logs/$h.result"
  dirs=
  for d in "$top/tests/fuzz/corpus/$h" "$top/tests/fuzz/regress/$h"; do [ -d "$d" ] && dirs="$dirs $d"; done
  # shellcheck disable=SC2086
  n=$(find $dirs -type f | wc -l)
  # shellcheck disable=SC2086
  (cd "$b/findings/$h" && "$exe" $opts -runs=0 $dirs) > "$b/logs/$h-replay.log" 2>&1
  echo "$? $h replay of $n inputs (build-fuzz/logs/$h-replay.log)" >> "$b/logs/$h.result"
  # a fresh copy for CI's run: what an earlier run added would change the inputs (a campaign keeps them)
  [ "$campaign" = 1 ] || rm -rf "${b:?}/corpus/$h" && mkdir -p "$b/corpus/$h"
  cp "$top/tests/fuzz/corpus/$h/"* "$b/corpus/$h/" 2>/dev/null
  # shellcheck disable=SC2086
  # CI's run (no --time) is a fixed count of executions from a fixed seed (C5_FUZZ_SEED, default 1), with
  # the corpus reload off: the same inputs on every machine, so a red CI is a finding that reproduces, and
  # a green one here is green anywhere (a slower machine cut by the time cap, 3 x 60 s, runs a prefix of
  # them). A time bound alone let faster and slower runs reach different inputs: CI went red on 1 run in 3
  # of the same code. The counts are about 30 s of each harness on the 2-core build machine. A campaign
  # (--time S) is bounded by time only and sets its own seed.
  case $h in
    train_config) n_runs=2500 ;; train_options) n_runs=10000 ;; checkpoint) n_runs=150 ;; *) n_runs=2000 ;;
  esac
  bound="-runs=${C5_FUZZ_RUNS:-$n_runs} -reload=0 -max_total_time=$((3 * secs))"
  [ "$campaign" = 1 ] && bound="-max_total_time=$secs"
  # shellcheck disable=SC2086
  (cd "$b/findings/$h" && "$exe" $opts $keep -seed="${C5_FUZZ_SEED:-1}" $bound -artifact_prefix="$b/findings/$h/" \
    "$b/corpus/$h" $dirs) > "$b/logs/$h-fuzz.log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$b/logs/$h-fuzz.log" | tail -n 1)
  # -fork mode reports its executions on its last "#N" line instead
  [ -n "$runs" ] || runs=$(sed -n 's/^#\([0-9]*\):.*/\1/p' "$b/logs/$h-fuzz.log" | tail -n 1)
  if [ "$campaign" = 1 ]; then what="${secs} s"; else what="${C5_FUZZ_RUNS:-$n_runs} runs from seed ${C5_FUZZ_SEED:-1}"; fi
  echo "$rc $h fuzzing $what, ${runs:-?} executions (build-fuzz/logs/$h-fuzz.log)" >> "$b/logs/$h.result"
}
# C5_FUZZ_PARALLEL harnesses at a time (default: one a core; each fuzzes on one core)
par=${C5_FUZZ_PARALLEL:-$(nproc)}
mkdir -p "$b/logs"
names=; running=0
for h in train_config train_options checkpoint golden; do
  [ -n "$only" ] && [ "$only" != "$h" ] && continue
  names="$names $h"
  harness "$h" &
  running=$((running + 1))
  [ "$running" -ge "$par" ] && { wait; running=0; }
done
wait
pass=0; fail=0
for h in $names; do
  while read -r rc what; do
    if [ "$rc" -eq 0 ]; then echo "[fuzz] PASS: $what"; pass=$((pass + 1))
    else echo "[fuzz] FAIL: $what: exit $rc"; fail=$((fail + 1)); fi
  done < "$b/logs/$h.result"
  [ -s "$b/logs/$h.result" ] || { echo "[fuzz] FAIL: $h did not run"; fail=$((fail + 1)); }
done
echo "fuzz: $(( $(date +%s) - t0 )) s (build and runs); logs in build-fuzz/logs/"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
