#!/bin/sh
# test_threads.sh - outputs are bit-identical with OMP_NUM_THREADS=1 and 2:
# coordinate descent (y and ds of 3 rows x 50000, masked), LocalMHA and the
# heavy Attention, a whole block (outputs and every gradient), and AdamW
# steps (values and moments: the gradient norm's sum). Sums use fixed partitions,
# never the thread count (and GEMMs fixed k slices: kernels/cpu/act.c).
set -u
b=${top_builddir:-.}
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
fail=0
for t in test_cd test_attn_local test_attn_heavy test_modules_fd test_adamw; do
  OMP_NUM_THREADS=1 "$b/tests/unit/$t" --dump "$tmp/$t.1" > /dev/null || { echo "$t --dump failed"; exit 1; }
  OMP_NUM_THREADS=2 "$b/tests/unit/$t" --dump "$tmp/$t.2" > /dev/null || { echo "$t --dump failed"; exit 1; }
  if cmp -s "$tmp/$t.1" "$tmp/$t.2"; then echo "ok: $t: bit-identical for 1 and 2 threads"
  else echo "FAIL: $t: outputs differ between 1 and 2 threads"; fail=1; fi
done
exit $fail
