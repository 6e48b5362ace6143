#!/bin/sh
# test_kernel_profile.sh - bench/kernel_profile_fold.awk folds ncu's
# per-kernel summary (tests/data/ncu_per_kernel.csv: five lines of a real
# one from the H200, a kernel of three grid shapes among them) into one line
# a kernel name, largest total first, with the totals below; and refuses an
# input without a summary. (kernel_profile.sh itself needs ncu and a GPU.)
set -u
top=${top_srcdir:-.}
fold=$top/bench/kernel_profile_fold.awk
out=$(awk -f "$fold" "$top/tests/data/ncu_per_kernel.csv") || { echo "FAIL: the fold exited $?"; exit 1; }
echo "$out"
want='kernel_profile: 77 launches, 8.150 ms of kernel time
     4.604 ms      2 x    2301.9 us  acc_rows_kernel(long, long, const long *, const float *, int, double *)
     2.316 ms      2 x    1158.2 us  la_tc_forward(la_shape, const float *, const float *, const float *, const unsigned char *, float *, double *,
     1.230 ms     73 x      16.9 us  to_bf16(long, const float *, __nv_bfloat16 *)'
[ "$out" = "$want" ] || { echo "FAIL: the folded summary differs from:"; echo "$want"; exit 1; }
if printf 'no summary here\n' | awk -f "$fold" 2>/dev/null; then echo "FAIL: an input without a summary passed"; exit 1; fi
echo "PASS"
