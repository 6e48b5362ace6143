#!/bin/sh
# valgrind.sh [NP] - a short training run under Valgrind's memcheck: colt5-train on NP ranks
# (default 2; 1 for tests/unit/test_valgrind.sh), a tiny model (dim 16, depth 1, seq-len 64,
# batch 2), 3 steps and the final validation, on the project's documents as text. Every rank
# runs under memcheck with --leak-check=full; any error, or a definite or indirect leak, fails
# the run. OpenMPI's and its libraries' own leaks and padding are suppressed by Debian's
# openmpi-valgrind.supp and jobs/valgrind.supp (by the object they pass through, never
# libcolt5's). Builds build-double/ when it is missing (jobs/build.sh). Exit 0 clean, 1 not,
# 77 without valgrind. Logs: build-double/valgrind/rank-PID.log.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
b=${C5_VALGRIND_BUILD:-$top/build-double}
np=${1:-2}
command -v valgrind > /dev/null || { echo "valgrind.sh: valgrind not installed (Debian package valgrind): skipped"; exit 77; }
[ -x "$b/apps/colt5-train" ] || "$top/jobs/build.sh" double > /dev/null || exit 1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
logs=$b/valgrind
rm -rf "$logs"; mkdir -p "$logs"
cat "$top"/README.md "$top"/docs/*.md > "$logs/text.txt"
supp=
for s in /usr/share/openmpi/openmpi-valgrind.supp "$top/jobs/valgrind.supp"; do [ -f "$s" ] && supp="$supp --suppressions=$s"; done
t0=$(date +%s)
# libtool --mode=execute: the uninstalled app's real binary with its uninstalled library
# shellcheck disable=SC2086
timeout 900 mpirun -np "$np" "$b/libtool" --mode=execute valgrind --leak-check=full \
  --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
  --num-callers=40 --gen-suppressions=all $supp --log-file="$logs/rank-%p.log" \
  "$b/apps/colt5-train" --steps 3 --dim 16 --depth 1 --seq-len 64 --window 16 --light-heads 2 \
  --light-dim-head 8 --heavy-heads 2 --heavy-dim-head 8 --n-iters 5 --batch 2 --val-batches 1 \
  --data "$logs/text.txt" > "$logs/run.out" 2>&1
rc=$?
errs=$(cat "$logs"/rank-*.log | sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' | awk '{s += $1} END {print s + 0}')
ranks=$(grep -l "ERROR SUMMARY" "$logs"/rank-*.log | wc -l)
echo "valgrind.sh: $np ranks, $(( $(date +%s) - t0 )) s, exit $rc, $errs errors (memcheck summaries from $ranks processes)"
if [ $rc -ne 0 ] || [ "$errs" -ne 0 ] || [ "$ranks" -lt "$np" ]; then
  grep -h -A12 "Invalid\|uninitialised\|Conditional jump\|definitely lost in\|indirectly lost in\|Syscall param" "$logs"/rank-*.log | head -60
  tail -5 "$logs/run.out"
  exit 1
fi
grep -q "final validation" "$logs/run.out" || { echo "valgrind.sh: the run did not finish:"; tail -5 "$logs/run.out"; exit 1; }
exit 0
