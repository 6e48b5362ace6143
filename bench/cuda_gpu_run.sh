#!/bin/sh
# cuda_gpu_run.sh - one call on a lent GPU machine: the CUDA tests of both
# precisions, the coordinate-descent benchmark with the streaming bound,
# and the reference (Triton) on the same GPU in the same run. Run from a
# folder holding: .devkit/ (the runtime kit, /work/shared/device), single/
# and double/ (test_cuda_*, c5-cuda-bench and colt5-train of each build), ref/ (the
# reference packages, never committed) and reference_bench.py. Results go
# to $OUT (gpu.txt, tests.log, train_gpu.txt, bench.txt, bench2.txt, ncu.txt, ref.txt).
set -u
top=$(cd "$(dirname "$0")" && pwd); here=$top
OUT=${OUT:-$here/out}
mkdir -p "$OUT"
shapes=${SHAPES:-"16x8192 4x32768 2x131072 1x262144 1x8388608"}
skip_ref=${SKIP_REF:-0}
only_tests=${ONLY_TESTS:-}   # a list of test names (cd topk gemm): run those, no benchmark
{ date -u; uname -a; nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv; } > "$OUT/gpu.txt" 2>&1
# the reference first, in the machine's own Python environment (the kit's loader path is not for it)
[ "$skip_ref" = 1 ] || ( cd "$here" && PYTHONUNBUFFERED=1 timeout 240 python3 reference_bench.py --ref ref --device cuda --reps 20 --warmup 3 \
    cd --shapes $shapes; echo "reference rc=$?" ) > "$OUT/ref.txt" 2>&1
cd "$here" && . ./.devkit/sysroot.sh   # it finds the kit at ./.devkit (sh's "." passes no arguments)
here=$top   # the kit names its own folder here too
: > "$OUT/tests.log"
for b in single double; do
  # every GPU test staged beside this script (test_cuda_*), unless ONLY_TESTS names some
  for t in ${only_tests:-$(cd "$here/$b" 2>/dev/null && ls test_cuda_* 2>/dev/null | sed 's/^test_cuda_//')}; do
    [ -x "$here/$b/test_cuda_$t" ] || continue
    echo "=== $b test_cuda_$t" >> "$OUT/tests.log"
    timeout 120 mpirun -np 1 "$here/$b/test_cuda_$t" >> "$OUT/tests.log" 2>&1
    echo "=== $b test_cuda_$t rc=$?" >> "$OUT/tests.log"
  done
done
# A short training run on the GPU beside the same run on the CPU (colt5-train of each build, when staged
# beside the tests): the step lines of the two should agree to the build's tolerance (double ~1e-10, single
# ~1e-4 relative in the loss). Text: TRAIN_DATA, else the fortunes, else this folder's scripts repeated.
# colt5-train links the shared library: stage the binary itself (build-*/apps/.libs/colt5-train, not the
# libtool wrapper) with build-*/lib/.libs/libcolt5.so* beside it; the run looks for the library there.
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
    LD_LIBRARY_PATH="$here/$b${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      timeout 300 mpirun -np 1 -x LD_LIBRARY_PATH "$here/$b/colt5-train" --device $dev --steps 20 --log-every 1 --val-every 10 \
        --val-batches 2 --data "$train_data" --log "$OUT/train_${b}_$dev.csv" >> "$OUT/train_gpu.txt" 2>&1
    echo "=== $b colt5-train --device $dev rc=$?" >> "$OUT/train_gpu.txt"
  done
done
grep -E "rc=|^step +20/|final validation|^colt5-train: " "$OUT/train_gpu.txt"
if [ -n "$only_tests" ]; then grep -E "rc=|check failed|tiny k" "$OUT/tests.log"; exit 0; fi
timeout 180 mpirun -np 1 "$here/single/c5-cuda-bench" $shapes > "$OUT/bench.txt" 2>&1
echo "bench rc=$?" >> "$OUT/bench.txt"
# the same version again: the spread between two runs is the noise
timeout 180 mpirun -np 1 "$here/single/c5-cuda-bench" $shapes > "$OUT/bench2.txt" 2>&1
echo "bench (second run) rc=$?" >> "$OUT/bench2.txt"
# did the 1 x 8M row stay in L2? device-memory bytes and L2 hit rate of one forward launch
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$ncu" ] && timeout 180 mpirun -np 1 "$ncu" --clock-control none -k regex:cd_forward_kernel -c 1 \
  --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,lts__t_bytes.sum,gpu__time_duration.sum \
  "$here/single/c5-cuda-bench" 1x8388608 > "$OUT/ncu.txt" 2>&1
echo "ncu rc=$?" >> "$OUT/ncu.txt"
grep "rc=" "$OUT/tests.log"
grep -E "dram__|lts__|gpu__time|ncu rc" "$OUT/ncu.txt"
cat "$OUT/bench.txt" "$OUT/bench2.txt" $([ "$skip_ref" = 1 ] || echo "$OUT/ref.txt") | grep -v "^\s*$" | tail -40
