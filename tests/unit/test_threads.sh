#!/bin/sh
# test_threads.sh - coordinate descent output (y and ds of 3 rows x 50000,
# masked) is bit-identical with OMP_NUM_THREADS=1 and 2: sums use a fixed
# partition, never the thread count.
set -u
b=${top_builddir:-.}
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
OMP_NUM_THREADS=1 "$b/tests/unit/test_cd" --dump "$tmp/t1" || exit 1
OMP_NUM_THREADS=2 "$b/tests/unit/test_cd" --dump "$tmp/t2" || exit 1
if cmp "$tmp/t1" "$tmp/t2"; then echo "cd: bit-identical for 1 and 2 threads"; exit 0; fi
echo "cd: outputs differ between 1 and 2 threads"; exit 1
