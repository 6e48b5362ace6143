#!/bin/sh
# test_golden_mpi.sh - every golden vector passes with their columns
# sharded over 2, 3 and 4 ranks (global LSE and gradient reductions), with
# the same bounds as one rank (modules not sharded yet report SKIP). 1 thread per rank.
# Then the layout unit comes from the module (c5_routed_attn_layout_unit):
# attn_no_light (no light branch, no window) shards on unit 1, also when its
# ctor names a light window of 128 (tests/data/attn_no_light_window128.h5, a
# copy whose light_window_size the reference ignores without the light
# branch), where a unit of light_window_size / 2 = 64 would refuse 2 ranks
# for its 64 tokens.
set -u
b=${top_builddir:-.}; s=${top_srcdir:-.}
fail=0
# the vectors colt5-golden checks: optim_*.h5 holds optimizer steps, not a module (test_adamw reads it)
files=$(ls "$s"/tests/golden/*.h5 | grep -v '/optim_[^/]*\.h5$')
for np in 2 3 4; do
  if OMP_NUM_THREADS=1 mpirun --oversubscribe -np $np "$b/apps/colt5-golden" $files > out.$$ 2>&1; then
    echo "ok: np=$np"
  else
    echo "FAIL: np=$np"; cat out.$$; fail=1
  fi
done
for f in "$s/tests/golden/attn_no_light.h5" "$s/tests/data/attn_no_light_window128.h5"; do
  for np in 2 3; do
    if OMP_NUM_THREADS=1 mpirun --oversubscribe -np $np "$b/apps/colt5-golden" "$f" > out.$$ 2>&1 &&
       grep -q "layout: n 64, unit 1, $np ranks" out.$$ && ! grep -q FAIL out.$$; then
      echo "ok: np=$np $(basename "$f"): $(grep -c PASS out.$$) tensors pass, $(grep 'layout:' out.$$ | sed 's/.*layout: //')"
    else
      echo "FAIL: np=$np $(basename "$f") (want PASS on unit 1)"; cat out.$$; fail=1
    fi
  done
done
rm -f out.$$
exit $fail
