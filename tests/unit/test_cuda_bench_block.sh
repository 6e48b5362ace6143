#!/bin/sh
# test_cuda_bench_block.sh - colt5-bench block --device cuda runs and reports
# (a benchmark: nothing here is timed against a bound, only that each line
# is there and its numbers are positive and finite):
#  1. mpirun -np 2, the default shape, --n 2048: two ranks (on one GPU they
#     share it, and the collectives are staged through host memory; one GPU
#     each: NCCL): the header names the device, the forward and
#     forward+backward lines give device=cuda, median_ms, tokens_per_s and
#     tflops, the comm lines include the gradient allreduce, the memory
#     line and the three balance lines are there;
#  2. one rank, --shape issue --matmul bf16 --n 4096: the issue's block
#     (dim 512) with bf16 products (fp64 in the double build, whose products
#     take f64 inputs), the same lines.
# Exits 77 in a build without CUDA kernels or where no GPU is visible.
# Staged (bench/cuda_gpu_run.sh): T_CUDA_DIR holds colt5-bench and the
# libcolt5.so it loads, and cuda_app.sh; else the build tree's apps/colt5-bench.
set -u
. "$(dirname "$0")/cuda_app.sh"
cuda_app colt5-bench
bench=$app

# lines NAME FILE COUNT REGEX: exactly COUNT lines of FILE match REGEX
lines() {
  k=$(grep -cE "$4" "$2")
  if [ "$k" = "$3" ]; then echo "ok: $1: $k line(s) /$4/"
  else echo "FAIL: $1: $k line(s) /$4/, want $3"; fail=1; fi
}
# positive NAME FILE KEY: every value of KEY= on the op=block lines of FILE is a positive finite number
positive() {
  v=$(grep '^colt5 op=block' "$2" | sed 's/= */=/g' | tr ' ' '\n' | grep "^$3=" | cut -d= -f2)
  bad=$(printf '%s\n' "$v" | awk '{ if (!($1 + 0 > 0) || $1 ~ /nan|inf/) print "[" $1 "]" }')
  if [ "$(printf '%s\n' "$v" | grep -c .)" = 2 ] && [ -z "$bad" ]; then echo "ok: $1: $3 positive: $(echo $v)"
  else echo "FAIL: $1: $3 not positive and finite: ${bad:-absent}"; fail=1; fi
}
# check NAME FILE: the lines every run prints (the gradient allreduce: on several ranks; one rank may skip it)
check() {
  lines "$1" "$2" 1 '^# colt5-bench block: .*device cuda \([^,?][^,]*, GPU '   # the GPU's name, not "?"
  lines "$1" "$2" 2 '^colt5 op=block pass=(fwd|fwdbwd) .* device=cuda '
  lines "$1" "$2" 1 '^comm .* total_ms_per_step='
  lines "$1" "$2" 1 '^memory .*backend_high_MiB'
  lines "$1" "$2" 3 '^balance '
  for k in median_ms tokens_per_s tflops gflop; do positive "$1" "$2" $k; done
}
# ran NAME FILE RC: FILE (a run's output) shown; exit status RC 0: its common lines checked (true), else a FAIL
ran() {
  cat "$2"
  if [ "$3" = 0 ]; then check "$1" "$2"; return 0; fi
  echo "FAIL: $1: colt5-bench block --device cuda exited $3"; fail=1; return 1
}

# ---- 1. two ranks, the default shape (P = 2 first: it says whether there is a GPU) ----
timeout 300 mpirun -np 2 $mpx "$bench" block --device cuda --n 2048 --reps 5 --warmup 1 > "$tmp/p2.out" 2>&1; rc=$?
if grep -q -e "no GPU is visible to this process" -e "this build has no CUDA kernels" "$tmp/p2.out"; then
  grep "^colt5-bench: " "$tmp/p2.out"; exit 77
fi
if ran "P=2 small" "$tmp/p2.out" $rc; then
  lines "P=2 small" "$tmp/p2.out" 1 '^comm .* P=2 phase=grad +coll=allreduce'
  lines "P=2 small" "$tmp/p2.out" 2 '^colt5 op=block .* n=2048 +P=2 .* matmul=(fp32|fp64) shape=small dim=256 '
fi

# ---- 2. one rank, the issue's block with bf16 products ----
timeout 300 mpirun -np 1 $mpx "$bench" block --device cuda --shape issue --matmul bf16 --n 4096 --reps 5 \
  --warmup 1 > "$tmp/p1.out" 2>&1; rc=$?
if ran "P=1 issue bf16" "$tmp/p1.out" $rc; then
  lines "P=1 issue bf16" "$tmp/p1.out" 2 '^colt5 op=block .* n=4096 +P=1 .* matmul=(bf16|fp64) shape=issue dim=512 '
  lines "P=1 issue bf16" "$tmp/p1.out" 1 '^# colt5-bench block: .*matmul (bf16|fp64)\).* shape issue: dim 512, 8x64 light'
fi
exit $fail
