#!/bin/sh
# sanitize.sh - build in build-sanitize/ with AddressSanitizer and
# UndefinedBehaviorSanitizer (configure --enable-sanitizers: double
# precision, gcc) and run a selected part of the tests under them: the
# readers and apps on bad input (CLI tests, damaged-file fuzzing, the
# allocation-failure and MPI error tests), parameter I/O, colt5-train's
# options, resume, signals and sharding (test_train.sh) and a few unit and
# golden tests of the modules. Any sanitizer report fails its test. Prints
# "N passed, N failed"; exit 0 only if none failed. Also run by
# jobs/check.sh (unless --quick).
#
# gcc 12's LeakSanitizer needs use_tls=0 beside OpenMP's threads; OpenMPI's
# own leaks are suppressed by jobs/lsan.supp, the project's are not.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# allocator_may_return_null: a size too large for memory is the app's "out of memory" message (a
# bad-input case), not ASan's abort. fast_unwind_on_malloc=0: the MPI libraries have no frame
# pointers, and the fast unwinder's bogus frames would escape the suppressions. OpenMPI keeps
# its components loaded (no dlclose), so their leaks are named and suppressed.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=1:fast_unwind_on_malloc=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export OMPI_MCA_mca_base_component_disable_dlclose=1
export LSAN_OPTIONS="use_tls=0:suppressions=$top/jobs/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
# The longest first (make -j starts them in this order): test_train.sh last left a core idle for its 2+ minutes.
# colt5-golden's and colt5-bench's command lines (test_golden_cli.sh, test_bench_cli.sh: 190 s here, an MPI start
# under the slow unwinder costing 4 s) are left to the fuzz pass, which runs their readers and the shared option
# parsing (apps/cli.c) under the same sanitizers: fuzz_golden (colt5-golden's run_file), fuzz_train_options.
tests=${C5_SANITIZE_TESTS:-"tests/unit/test_train.sh tests/unit/test_mpi_errors.sh tests/unit/test_fuzz_h5.sh
  tests/unit/test_params_io tests/unit/test_cd tests/unit/test_topk tests/unit/test_router tests/unit/test_layout_unit
  tests/unit/test_attn_local tests/unit/test_attn_heavy tests/unit/test_alloc.sh
  tests/golden/cd_const_eps.test tests/golden/ff_basic.test tests/golden/attn_masked.test tests/golden/block_basic.test
  tests/golden/ar_attn_basic.test"}
t0=$(date +%s)
if ! "$top/jobs/build.sh" sanitize; then
  echo "sanitizer build failed: see build-sanitize/configure.out, build-sanitize/make.out"; echo "0 passed, 1 failed"; exit 1
fi
cd "$top/build-sanitize" || exit 1
make -j"$(nproc)" check TESTS="$(echo $tests)" > check-sanitize.out 2>&1
grep -E '^(PASS|FAIL|SKIP|ERROR|XFAIL|XPASS):' check-sanitize.out | sed 's/^/[sanitize] /'
n() { sed -n "s/^# $1: *//p" test-suite.log | head -n 1; }
p=$(n PASS); f=$(n FAIL); e=$(n ERROR); x=$(n XPASS)
fail=$(( ${f:-0} + ${e:-0} + ${x:-0} ))
[ -f test-suite.log ] || { echo "make check did not run: see build-sanitize/check-sanitize.out"; fail=1; }
echo "sanitize: $(( $(date +%s) - t0 )) s (build and tests); logs in build-sanitize/tests/"
echo "${p:-0} passed, $fail failed"
[ "$fail" -eq 0 ]
