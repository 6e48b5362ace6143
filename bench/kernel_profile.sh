#!/bin/sh
# kernel_profile.sh - where a GPU program's time goes, kernel by kernel:
# Nsight Compute (ncu) times KERNELS launches after the first SKIP
# (gpu__time_duration, one metric: one replay pass a kernel), and the
# per-kernel summary is folded into one line per kernel name, largest total
# first: total ms, launches, mean us, the name (cut to 110 characters).
#   usage: bench/kernel_profile.sh [-s SKIP] [-n KERNELS] [-o CSV] PROGRAM [ARGS ...]
#   e.g.:  bench/kernel_profile.sh -s 500 -n 500 single/c5-cuda-bench block --matmul bf16 --budget 1 1x32768
# SKIP passes the program's warm-up (c5-cuda-bench's gemm_peak and its first
# iterations); choose KERNELS to cover a whole step or more (c5-cuda-bench
# block at n = 32768: about 320 kernels a forward+backward). ncu stops each
# profiled kernel for about 0.1 s: 500 kernels take about a minute. NCU
# names the ncu binary (default: ncu on PATH, else /usr/local/cuda/bin/ncu).
# Only kernels: host gaps between launches are not in the totals.
set -eu
skip=500 count=500 csv=
while getopts s:n:o: opt; do
  case $opt in
    s) skip=$OPTARG ;;
    n) count=$OPTARG ;;
    o) csv=$OPTARG ;;
    *) echo "usage: $0 [-s SKIP] [-n KERNELS] [-o CSV] PROGRAM [ARGS ...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-s SKIP] [-n KERNELS] [-o CSV] PROGRAM [ARGS ...]" >&2; exit 2; }
ncu=${NCU:-$(command -v ncu || echo /usr/local/cuda/bin/ncu)}
[ -x "$ncu" ] || { echo "$0: no ncu (Nsight Compute) at $ncu: set NCU" >&2; exit 2; }
tmp=${csv:-$(mktemp)}
"$ncu" --metrics gpu__time_duration.sum --launch-skip "$skip" --launch-count "$count" --print-summary per-kernel \
  --csv "$@" > "$tmp"
fold=$(dirname "$0")/kernel_profile_fold.awk
awk -f "$fold" "$tmp"
[ -n "$csv" ] || rm -f "$tmp"
