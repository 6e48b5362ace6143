#!/bin/sh
# test_bench_cli.sh - colt5-bench refuses a bad command line with one clear
# message naming the option and the value, and exit 2: values that wrap,
# overflow or are not numbers, empty list items, unknown options, a missing
# value; and keeps what it is given (block --reps 7 is 7, not its default 5).
# --device/--matmul/--shape: bad values and combinations refused (--matmul
# other than fp32 without --device cuda, a --threads list on cuda, cd on
# cuda); --device cuda where no GPU is visible (CUDA_VISIBLE_DEVICES empty)
# ends both ranks of mpirun -np 2 with exit 1 and one clear message, no hang;
# --shape issue times the issue's block (dim 512).
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
refused "--matmul bf16: only --device cuda has TF32/bf16 products" block --matmul bf16
refused "--matmul tf32: only --device cuda has TF32/bf16 products" block --device cpu --matmul tf32
refused "--matmul fp16: expected fp32, tf32 or bf16" block --device cuda --matmul fp16
refused "--device gpu: expected cpu or cuda" block --device gpu
refused "--shape big: expected small or issue" block --shape big
refused "--device cuda: only the block benchmark takes it" cd --device cuda
refused "--shape: only the block benchmark takes it" cd --shape issue
refused "--threads: --device cuda takes one thread count, not a list of 2" block --device cuda --threads 1,2
refused "--reference: not with --device cuda" block --device cuda --reference /nonexistent
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
# --device cuda with no GPU visible (or a build without CUDA kernels): each rank records its own exit (the
# wrapper exits 0 so that mpirun does not end the other rank for it: a hang would show as the timeout)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
CUDA_VISIBLE_DEVICES= timeout 120 mpirun --oversubscribe -np 2 sh -c '"$0" block --device cuda --n 256 --reps 5 \
  --warmup 0; echo "rank ${OMPI_COMM_WORLD_RANK:-?} exit $?" >> "$1"' "$bench" "$tmp/exits" > "$tmp/out" 2>&1; rc=$?
n=$(grep -c '^colt5-bench: ' "$tmp/out")
if [ $rc -eq 0 ] && [ "$(grep -c ' exit 1$' "$tmp/exits" 2>/dev/null)" = 2 ] && [ "$n" -eq 1 ] &&
   grep -qE '^colt5-bench: .*(--device cuda: no GPU is visible to this process|this build has no CUDA kernels)' "$tmp/out"
then echo "ok: mpirun -np 2 block --device cuda without a GPU -> both ranks exit 1: $(grep '^colt5-bench: ' "$tmp/out")"
else echo "FAIL: mpirun -np 2 block --device cuda without a GPU (mpirun exit $rc, $n messages; want both ranks exit 1):"
     cat "$tmp/exits" 2>/dev/null; head -5 "$tmp/out"; fail=1; fi
# --shape issue: the issue's block (dim 512, 8 + 8 heads), named on its lines
out=$(OMP_NUM_THREADS=1 timeout 120 "$bench" block --shape issue --n 128 --threads 1 --reps 5 --warmup 0 2>&1)
if printf '%s\n' "$out" | grep -q 'shape issue: dim 512, 8x64 light and 8x64 heavy heads, window 128' &&
   [ "$(printf '%s\n' "$out" | grep -c '^colt5 op=block .*shape=issue')" = 2 ]; then echo "ok: block --shape issue"
else echo "FAIL: block --shape issue:"; printf '%s\n' "$out" | head -3; fail=1; fi
exit $fail
