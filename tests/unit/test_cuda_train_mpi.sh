#!/bin/sh
# test_cuda_train_mpi.sh - colt5-train --device cuda on 1, 2 and 3 ranks
# sharing one GPU (the library's collectives then stage device buffers
# through host memory), a tiny model (test_train.sh's):
#  1. 4 steps from the same start at P = 2 and 3 (the sequence sharded) equal
#     P = 1's: step losses, gradient norms and the validation of steps 2 and 4
#     (P = 2 also dumps step 2's activations: it changes nothing);
#  2. 2 data-parallel groups of one rank with --batch 1 equal one rank with
#     --batch 2 (the same samples; the gradients summed over the groups);
#  3. a checkpoint written at P = 2 (step 4) resumed at P = 1 and P = 3: the
#     next 3 steps equal those of P = 2 resumed from it.
# Each comparison prints its max relative difference and fails over the
# tolerance. Exits 77 in a build without CUDA kernels or without a GPU.
# C5_RANKS ("2 3") lists the sharded rank counts of 1. and 3. (the first
# one also dumps and writes the checkpoint): on a node of G GPUs each rank
# takes node-local rank mod G, so C5_RANKS="2 4" on 4 GPUs gives every rank
# its own GPU and the collectives run on NCCL (the multi-GPU issue's runs;
# keep NCCL_NVLS_ENABLE=0 set). C5_RESUME_STEPS (3): the steps compared
# after the resume in 3.
# Staged (bench/cuda_gpu_run.sh): T_CUDA_DIR holds colt5-train and the
# libcolt5.so it loads, and cuda_app.sh; else the build tree's apps/colt5-train.
set -u
src=${top_srcdir:-.}
. "$(dirname "$0")/cuda_app.sh"
cuda_app colt5-train
train=$app
# The text: the project's documents where the sources are, else (a staged folder) this script, repeated.
if [ -f "$src/README.md" ]; then cat "$src"/README.md "$src"/docs/*.md > "$tmp/text.txt"
else for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do cat "$0"; done > "$tmp/text.txt"; fi
tiny="--data $tmp/text.txt --dim 16 --depth 1 --seq-len 64 --window 16 --light-heads 2 --light-dim-head 8
      --heavy-heads 2 --heavy-dim-head 8 --n-iters 5 --batch 2 --val-every 2 --val-batches 1 --warmup 2 --lr 0.01
      --device cuda"
run() { np=$1; shift; timeout 300 mpirun --oversubscribe -np "$np" $mpx "$train" $tiny "$@"; }
# ran NAME OUT RC: a run's exit checked (its output's tail on failure)
ran() {
  if [ "$3" = 0 ]; then return 0; fi
  echo "FAIL: $1 (exit $3):"; tail -8 "$2"; fail=1; return 1
}

# ---- 1. P = 1, 2, 3 from the same start (P = 1 first: it says whether there is a GPU) ----
run 1 --steps 4 --log "$tmp/p1.csv" > "$tmp/p1.out" 2>&1; rc=$?
if grep -q -e "no GPU is visible to this process" -e "this build has no CUDA kernels" "$tmp/p1.out"; then
  grep "^colt5-train: " "$tmp/p1.out"; exit 77
fi
ran "P=1, 4 steps" "$tmp/p1.out" $rc
grep "^colt5-train: " "$tmp/p1.out"
grep -q "device cuda (" "$tmp/p1.out" || { echo "FAIL: P=1 did not run on the CUDA backend"; head -3 "$tmp/p1.out"; fail=1; }
ranks=${C5_RANKS:-"2 3"}
Pd=${ranks%% *}   # the first: the one that dumps (and writes the checkpoint of 3.)
run $Pd --steps 4 --log "$tmp/p$Pd.csv" --dump-activations 2 --dump-file "$tmp/act.h5" > "$tmp/p$Pd.out" 2>&1
ran "P=$Pd, 4 steps" "$tmp/p$Pd.out" $? && [ ! -s "$tmp/act.h5" ] && { echo "FAIL: P=$Pd: no activation dump"; fail=1; }
for P in $ranks; do
  [ $P = $Pd ] && continue
  run $P --steps 4 --log "$tmp/p$P.csv" > "$tmp/p$P.out" 2>&1
  ran "P=$P, 4 steps" "$tmp/p$P.out" $?
done
for P in $ranks; do
  grep -q "^colt5-train: $P ranks = $P per sequence x 1 data-parallel.*device cuda (" "$tmp/p$P.out" ||
    { echo "FAIL: P=$P: not $P sequence ranks on the CUDA backend:"; head -2 "$tmp/p$P.out"; fail=1; }
done

# Tolerance: the runs differ only in the order of sums. Sharded, each rank sums its tokens' part of the
# parameter-gradient products and the ranks' parts are summed after (staged through host memory, MPI_SUM), the
# loss and its count likewise (host doubles); the coordinate descent and top-k run on whole rows, the same on
# every P. Each reordering moves a result by a few ulps; AdamW's update g / (sqrt(v) + eps) does not amplify a
# relative change of g (and clipping is by a norm summed in double), so over a few steps the losses stay a few
# hundred ulps apart, unless a routing choice flips on a near tie (then the difference is large, as it should
# be: the runs would disagree on which tokens are heavy). The bound is the CPU path's own for the same model
# and steps (test_train.sh 4., P=2's checkpoint resumed at P=1 and P=3): 1e-12 relative in double, 1e-4 in
# single (float sums of 64-token rows).
tol=1e-12; grep -q 'precision single' "$tmp/p1.out" && tol=1e-4
# The rows step,loss,grad_norm,val_bpb of a log (comments and header dropped).
rows() { grep -v '^#' "$1" | grep -v '^step' | cut -d, -f1,2,5,7; }
# same NAME A.csv B.csv N: N rows, the same steps, loss, grad norm and validation (where logged) to tol
same() {
  rows "$2" > "$tmp/a.rows"; rows "$3" > "$tmp/b.rows"
  r=$(paste -d, "$tmp/a.rows" "$tmp/b.rows" |
      awk -F, -v tol=$tol -v want=$4 '
        function rel(x, y,  d, s) { d = x - y; d = d < 0 ? -d : d; s = x < 0 ? -x : x; return s > 0 ? d / s : d }
        { n++; if ($1 != $5 || $2 == "" || $6 == "" || ($4 == "") != ($8 == "")) bad = 1
          for (c = 2; c <= 4; c++) if ($c != "") { v = rel($c, $(c + 4)); if (v > m) m = v } }
        END { printf "%d rows, max relative difference %.3g (tolerance %s) %s", n, m, tol,
                     (n == want && !bad && m <= tol) ? "ok" : "bad" }')
  case "$r" in *ok) echo "ok: $1: $r";; *) echo "FAIL: $1: $r"; paste -d' ' "$tmp/a.rows" "$tmp/b.rows"; fail=1;; esac
}
for P in $ranks; do
  [ $P = $Pd ] && what="P=$P (with an activation dump) = P=1" || what="P=$P = P=1"
  same "$what" "$tmp/p1.csv" "$tmp/p$P.csv" 4
done

# ---- 2. data-parallel groups on the device ----
run 2 --seq-ranks 1 --batch 1 --steps 4 --log "$tmp/dp.csv" > "$tmp/dp.out" 2>&1
if ran "2 groups x batch 1" "$tmp/dp.out" $?; then
  grep -q '2 ranks = 1 per sequence x 2 data-parallel' "$tmp/dp.out" || { echo "FAIL: no 1 x 2 layout"; fail=1; }
  same "2 groups x batch 1 = 1 rank x batch 2" "$tmp/p1.csv" "$tmp/dp.csv" 4
fi

# ---- 3. a P = 2 (the first of C5_RANKS) checkpoint resumed at P = 1 and P = 3 (the others) ----
# C5_RESUME_STEPS (3) steps after the checkpoint (the issue asks for 10), in a run of 10 steps or more.
rs=${C5_RESUME_STEPS:-3}; total=$((4 + rs)); [ $total -ge 10 ] || total=10
run $Pd --steps $total --stop-after 4 --ckpt-dir "$tmp/ck" > "$tmp/ck.out" 2>&1
if ran "P=$Pd, checkpoint at step 4" "$tmp/ck.out" $?; then
  for P in $Pd 1 $ranks; do
    [ -e "$tmp/ck$P" ] && continue   # the first of C5_RANKS: resumed already
    cp -r "$tmp/ck" "$tmp/ck$P"
    run $P --steps $total --resume --stop-after $rs --ckpt-dir "$tmp/ck$P" --log "$tmp/r$P.csv" > "$tmp/r$P.out" 2>&1
    ran "resume at P=$P" "$tmp/r$P.out" $? && ! grep -q "resume: .*ckpt-4.h5, step 4" "$tmp/r$P.out" &&
      { echo "FAIL: resume at P=$P did not start at step 4"; head -3 "$tmp/r$P.out"; fail=1; }
  done
  for P in 1 $ranks; do
    [ $P = $Pd ] || same "P=$Pd checkpoint resumed at P=$P = at P=$Pd" "$tmp/r$Pd.csv" "$tmp/r$P.csv" $rs
  done
fi
exit $fail
