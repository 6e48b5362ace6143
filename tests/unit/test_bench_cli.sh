#!/bin/sh
# test_bench_cli.sh - colt5-bench refuses a bad command line with one clear
# message naming the option and the value, and exit 2: values that wrap,
# overflow or are not numbers, empty list items, unknown options, a missing
# value; and keeps what it is given (block --reps 7 is 7, not its default 5).
set -u
b=${top_builddir:-.}
bench="$b/apps/colt5-bench"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
fail=0
# refused ARGS... : exit 2 and exactly one "colt5-bench: <text>" line containing text
refused() {
  want=$1; shift
  out=$(timeout 60 "$bench" "$@" 2>&1); rc=$?
  n=$(printf '%s\n' "$out" | grep -c '^colt5-bench: ')
  if [ $rc -eq 2 ] && [ "$n" -eq 1 ] && printf '%s\n' "$out" | grep -qF -- "colt5-bench: $want"; then
    echo "ok: $* -> $want"
  else
    echo "FAIL: $* (exit $rc, $n messages), want exit 2 and one \"$want\":"; printf '%s\n' "$out" | head -5; fail=1
  fi
}
refused "--reps 4294967301: expected an integer from 5 to 256" cd --reps 4294967301
refused "--reps 4: expected an integer from 5 to 256" cd --reps 4
refused "--warmup abc: expected an integer from 0 to 1000" cd --warmup abc
refused "--n 99999999999999999999: expected a comma list" cd --n 99999999999999999999
refused "--n 99999999999999: expected a comma list" cd --n 99999999999999
refused "--n 5,,6: expected a comma list" cd --n 5,,6
refused "--n 1,2,: expected a comma list" cd --n 1,2,
refused "--threads 0: expected a comma list of thread counts" cd --threads 0
refused "unknown option --bogus" --bogus cd
refused "option --threads needs a value" cd --threads
refused "expected one benchmark, cd or block" nothing
refused "block --n 15: n must be >= 16 (the block routes n/16 heavy tokens" block --n 64,15
# a size too large for memory: a clear message and exit 1, not a segfault
out=$(timeout 60 "$bench" cd --n 1099511627776 --threads 1 --reps 5 --warmup 0 2>&1); rc=$?
if [ $rc -eq 1 ] && printf '%s\n' "$out" | grep -q 'colt5-bench: out of memory for cd --n 1099511627776'; then echo "ok: cd --n 2^40 -> out of memory"
else echo "FAIL: cd --n 2^40 (exit $rc):"; printf '%s\n' "$out" | tail -3; fail=1; fi
# a failed reference run: its exit status decoded, not a raw wait status (exit 1 is not "256")
out=$(timeout 60 "$bench" cd --n 256 --threads 1 --reps 5 --warmup 0 --reference /nonexistent --python /bin/false 2>&1); rc=$?
if [ $rc -eq 1 ] && printf '%s\n' "$out" | grep -q 'the reference run failed (exit status 1)'; then echo "ok: failed reference -> exit status 1"
else echo "FAIL: failed reference (exit $rc):"; printf '%s\n' "$out" | tail -3; fail=1; fi
# a --reps given is kept (the block's default is 5)
out=$(OMP_NUM_THREADS=1 timeout 120 "$bench" block --n 256 --threads 1 --reps 7 --warmup 0 2>&1)
if printf '%s\n' "$out" | grep -q 'median of 7 after 0 warm-up'; then echo "ok: block --reps 7 runs 7"
else echo "FAIL: block --reps 7:"; printf '%s\n' "$out" | head -3; fail=1; fi
exit $fail
