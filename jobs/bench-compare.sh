#!/bin/sh
# bench-compare.sh [REV] [RUNS] - CPU speed of the working tree against REV
# (default HEAD), measured in one run on this machine: both are built in
# double precision (REV in .compare/, git-ignored), then RUNS (default 7)
# interleaved rounds of, for 1 and 2 threads,
#   colt5-bench block --n 4096 --reps 5     (one rank)
#   colt5-bench cd --n 131072,1048576 --reps 7
# run old, new, old, new, ... so that load from elsewhere falls on both.
# Prints, per benchmark line, the median over rounds of each side's median_ms
# and the speed ratio old/new (>= 1: the working tree is as fast or faster).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:-HEAD}; runs=${2:-7}
sha=$(git -C "$top" rev-parse --short "$rev")
work="$top/.compare"; src="$work/src-$sha"; old="$work/build-$sha-double"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$work"
[ -d "$src" ] || git -C "$top" worktree add --detach "$src" "$sha" > /dev/null
[ -x "$src/configure" ] || (cd "$src" && autoreconf -fi > /dev/null 2>&1)
mkdir -p "$old"
(cd "$old" && { [ -f Makefile ] || "$src/configure" --with-precision=double > configure.out; } && make -j"$(nproc)" > make.out)
"$top/jobs/build.sh" double > /dev/null
out="$work/bench-$sha.txt"; : > "$out"
for r in $(seq "$runs"); do
  for side in old new; do
    b=$old; [ $side = new ] && b="$top/build-double"
    for t in 1 2; do
      OMP_NUM_THREADS=$t mpirun -np 1 "$b/apps/colt5-bench" block --n 4096 --threads "$t" --reps 5 2>/dev/null |
        grep '^colt5 ' | sed "s/^/$side /" >> "$out"
      OMP_NUM_THREADS=$t "$b/apps/colt5-bench" cd --n 131072,1048576 --threads "$t" --reps 7 2>/dev/null |
        grep '^colt5 ' | sed "s/^/$side /" >> "$out"
    done
  done
done
echo "# bench-compare: working tree against $rev ($sha), $runs interleaved rounds, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
awk '
  { side = $1; key = ""; ms = 0
    for (i = 3; i <= NF; i++) {
      if ($i ~ /^(op|pass|n|threads)=/) key = key " " $i
      if ($i == "median_ms=") ms = $(i + 1)
      else if ($i ~ /^median_ms=/) { split($i, a, "="); ms = a[2] }
    }
    v[side, key, ++c[side, key]] = ms; keys[key] = 1 }
  function med(s, k,   n, i, j, t, x) {
    n = c[s, k]; for (i = 1; i <= n; i++) x[i] = v[s, k, i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
    return n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2 }
  END { for (k in keys) printf "%-44s old %10.3f ms  new %10.3f ms  speed new/old %.3f\n", k, med("old", k), med("new", k), med("old", k) / med("new", k) }
' "$out" | sort
