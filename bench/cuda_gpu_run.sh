#!/bin/sh
# cuda_gpu_run.sh - one call on a lent GPU machine: the CUDA tests of both
# precisions, then the benchmarks beside the reference on the same GPU in
# the same run. Run from a folder holding: .devkit/ (the runtime kit,
# /work/shared/device), single/ and double/ (test_cuda_*, tests/unit/cuda_app.sh,
# c5-cuda-bench, colt5-train and colt5-bench of each build), ref/ (the reference packages, never committed) and
# reference_bench.py. Results go to $OUT: gpu.txt, tests.log, and
#   BLOCK=1 (default): the block (docs/flops.md): block_ref.txt, the reference
#     (--use-triton --use-flash-attn; TF32, then bf16 autocast with its routers
#     fed fp32 scores, REF_BF16_ROUTER_FP32=0 to feed them bf16; REF_FLAGS
#     replaces "--use-triton --use-flash-attn"), and block.txt,
#     single/c5-cuda-bench block with --matmul fp32, tf32, bf16; shapes BLOCK_SHAPES.
#   CD=1 (default when BLOCK=0): coordinate descent: ref.txt, bench.txt,
#     bench2.txt (the same again: the spread is the noise), ncu.txt; shapes SHAPES.
# ONLY_TESTS="cd topk ...": those tests, nothing else. SKIP_REF=1: no reference.
# SKIP_TESTS=1: no test (the whole budget to the benchmarks).
# TRAIN=1 (default): after the tests, train_gpu.txt: colt5-train --device cuda, then --device cpu, 20 steps
#   each, of every build whose colt5-train is staged in single/ or double/ (the binary from
#   build-*/apps/.libs/ with build-*/lib/.libs/libcolt5.so* beside it); the two runs' step lines should
#   agree to the build's tolerance. Text: TRAIN_DATA, else the fortunes, else this folder's scripts.
# Every step runs under a timeout cut to what the call has left of TOTAL_S
# seconds (465: under 8 minutes) less what the later steps are owed; a step
# cut by its timeout keeps the lines it printed (rc=124 says so).
set -u
top=$(cd "$(dirname "$0")" && pwd); here=$top
OUT=${OUT:-$here/out}
mkdir -p "$OUT"
start=$(date +%s)
total=${TOTAL_S:-465}
shapes=${SHAPES:-"16x8192 4x32768 2x131072 1x262144 1x8388608"}
block_shapes=${BLOCK_SHAPES:-"4x8192 1x32768 1x131072 1x1048576"}
block=${BLOCK:-1}
cd_bench=${CD:-$([ "$block" = 1 ] && echo 0 || echo 1)}
skip_ref=${SKIP_REF:-0}
only_tests=${ONLY_TESTS:-}   # a list of test names (cd topk gemm): run those, no benchmark
[ -n "$only_tests" ] && { block=0; cd_bench=0; skip_ref=1; }
# what the later steps are owed (seconds): ours for the block (2 runs), for cd (2 runs and ncu)
owe_ours=$(( (block == 1 ? 270 : 0) + (cd_bench == 1 ? 300 : 0) ))
# step_s WANT OWED: a step's timeout, WANT seconds or less, so that OWED seconds remain for the later steps
step_s() { _l=$(( total - ($(date +%s) - start) - $2 )); [ "$_l" -lt "$1" ] && echo "$_l" || echo "$1"; }
# step FILE WANT OWED COMMAND...: COMMAND under its timeout, its output and rc appended to FILE
step() {
  _f=$1; _t=$(step_s "$2" "$3"); shift 3
  if [ "$_t" -lt 10 ]; then echo "skipped (${_t}s left in the call's ${total}s): $*" >> "$_f"; return; fi
  timeout "$_t" "$@" >> "$_f" 2>&1
  echo "rc=$? (timeout ${_t}s): $*" >> "$_f"
}
{ date -u; uname -a; nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv; } > "$OUT/gpu.txt" 2>&1
# the references first, in the machine's own Python environment (the kit's loader path is not for it)
export PYTHONUNBUFFERED=1
cd "$here" || exit 1
if [ "$skip_ref" != 1 ] && [ "$cd_bench" = 1 ]; then
  : > "$OUT/ref.txt"
  step "$OUT/ref.txt" 240 $((owe_ours + (block == 1 ? 150 : 0))) python3 reference_bench.py --ref ref --device cuda \
    --reps 20 --warmup 3 cd --shapes $shapes
fi
if [ "$skip_ref" != 1 ] && [ "$block" = 1 ]; then
  refblock="python3 reference_bench.py --ref ref --device cuda --reps 5 --warmup 2 block --dim 512 --heads 8
    --dim-head 64 --window 128 ${REF_FLAGS:---use-triton --use-flash-attn} --tf32 --shapes $block_shapes"
  bf16_router=$([ "${REF_BF16_ROUTER_FP32:-1}" = 1 ] && echo --router-fp32)
  echo "### reference, TF32" > "$OUT/block_ref.txt"
  step "$OUT/block_ref.txt" 90 $((owe_ours + 70)) $refblock
  echo "### reference, bf16 autocast (TF32 for what autocast leaves in fp32) ${bf16_router}" >> "$OUT/block_ref.txt"
  step "$OUT/block_ref.txt" 70 "$owe_ours" $refblock --autocast bf16 $bf16_router
fi
. ./.devkit/sysroot.sh   # it finds the kit at ./.devkit (sh's "." passes no arguments)
here=$top   # the kit names its own folder here too
: > "$OUT/tests.log"
for b in $([ "${SKIP_TESTS:-0}" = 1 ] || echo single double); do
  # every GPU test staged beside this script (test_cuda_*), unless ONLY_TESTS names some
  for t in ${only_tests:-$(cd "$here/$b" 2>/dev/null && ls test_cuda_* 2>/dev/null | grep -v '\.sh$' | sed 's/^test_cuda_//')}; do
    [ -x "$here/$b/test_cuda_$t" ] || continue
    echo "=== $b test_cuda_$t" >> "$OUT/tests.log"
    step "$OUT/tests.log" 120 "$owe_ours" mpirun -np 1 "$here/$b/test_cuda_$t"
  done
  # the sharded runs on this one GPU (1-3 ranks): the scripts staged beside the programs (test_cuda_dist.sh,
  # test_cuda_block_mpi.sh, test_cuda_train_mpi.sh, test_cuda_bench_block.sh: colt5-train, colt5-bench and
  # their libcolt5.so staged there too), each named by ONLY_TESTS as dist, block_mpi, train_mpi, bench_block
  for t in dist block_mpi train_mpi bench_block; do
    [ -f "$here/$b/test_cuda_$t.sh" ] || continue
    case " ${only_tests:-$t} " in *" $t "*) ;; *) continue ;; esac
    echo "=== $b test_cuda_$t.sh" >> "$OUT/tests.log"
    T_CUDA_DIR="$here/$b" sh "$here/$b/test_cuda_$t.sh" >> "$OUT/tests.log" 2>&1
    echo "=== $b test_cuda_$t.sh rc=$?" >> "$OUT/tests.log"
  done
done
if [ "${TRAIN:-1}" = 1 ]; then
  train_data=${TRAIN_DATA:-/usr/share/games/fortunes}
  if [ ! -e "$train_data" ]; then
    train_data="$OUT/train_text.txt"; : > "$train_data"
    for i in $(seq 40); do cat "$here"/*.sh "$here"/*.py >> "$train_data" 2>/dev/null; done
  fi
  : > "$OUT/train_gpu.txt"
  for b in double single; do
    [ -x "$here/$b/colt5-train" ] || continue
    for dev in cuda cpu; do
      echo "=== $b colt5-train --device $dev" >> "$OUT/train_gpu.txt"
      ( export LD_LIBRARY_PATH="$here/$b${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        step "$OUT/train_gpu.txt" 90 "$owe_ours" mpirun -np 1 -x LD_LIBRARY_PATH "$here/$b/colt5-train" \
          --device $dev --steps 20 --log-every 1 --val-every 10 --val-batches 2 --data "$train_data" \
          --log "$OUT/train_${b}_$dev.csv" )
    done
  done
  grep -E "^===|rc=|^step +20/|final validation|^colt5-train: |skipped" "$OUT/train_gpu.txt"
fi
if [ -n "$only_tests" ]; then grep -E "rc=|check failed|tiny k|skipped" "$OUT/tests.log"; exit 0; fi
if [ "$block" = 1 ]; then
  echo "### ours, single build, fp32" > "$OUT/block.txt"
  step "$OUT/block.txt" 90 $(( 90 + (cd_bench == 1 ? 300 : 0) )) mpirun -np 1 "$here/single/c5-cuda-bench" block \
    --budget 10 $block_shapes
  echo "### ours, single build, TF32" >> "$OUT/block.txt"
  step "$OUT/block.txt" 90 $(( 90 + (cd_bench == 1 ? 300 : 0) )) mpirun -np 1 "$here/single/c5-cuda-bench" block \
    --matmul tf32 --budget 10 $block_shapes
  echo "### ours, single build, bf16 products" >> "$OUT/block.txt"
  step "$OUT/block.txt" 90 $(( cd_bench == 1 ? 300 : 0 )) mpirun -np 1 "$here/single/c5-cuda-bench" block \
    --matmul bf16 --budget 10 $block_shapes
fi
if [ "$cd_bench" = 1 ]; then
  : > "$OUT/bench.txt"; : > "$OUT/bench2.txt"; : > "$OUT/ncu.txt"
  step "$OUT/bench.txt" 180 120 mpirun -np 1 "$here/single/c5-cuda-bench" $shapes
  # the same version again: the spread between two runs is the noise
  step "$OUT/bench2.txt" 180 60 mpirun -np 1 "$here/single/c5-cuda-bench" $shapes
  # did the 1 x 8M row stay in L2? device-memory bytes and L2 hit rate of one forward launch
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  [ -n "$ncu" ] && step "$OUT/ncu.txt" 180 0 mpirun -np 1 "$ncu" --clock-control none -k regex:cd_forward_kernel -c 1 \
    --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,lts__t_bytes.sum,gpu__time_duration.sum \
    "$here/single/c5-cuda-bench" 1x8388608
fi
grep -E "rc=|skipped" "$OUT/tests.log"
if [ "$cd_bench" = 1 ]; then
  grep -E "dram__|lts__|gpu__time|rc=" "$OUT/ncu.txt"
  cat "$OUT/bench.txt" "$OUT/bench2.txt" $([ "$skip_ref" = 1 ] || echo "$OUT/ref.txt") | grep -v "^\s*$" | tail -40
fi
if [ "$block" = 1 ]; then
  cat "$OUT/block.txt" $([ "$skip_ref" = 1 ] || echo "$OUT/block_ref.txt") | grep -E "^###|op=block|rc=|skipped|rror" | tail -60
fi
echo "cuda_gpu_run.sh: $(( $(date +%s) - start ))s"
