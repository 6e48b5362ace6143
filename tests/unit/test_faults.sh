#!/bin/sh
# test_faults.sh - faults lose nothing (issue 11), on colt5-train with a tiny model, 2 ranks:
#  1. SIGKILL to one rank of a run checkpointing every step (mpirun then ends the job): --resume starts
#     from the newest complete checkpoint and the next steps' losses equal an uninterrupted run's bit for
#     bit (%.17g in the log);
#  2. SIGKILL while a checkpoint is being written (C5_TEST_CKPT_PAUSE_MS, test-only: rank 0 holds the
#     complete tmp file before the rename): the folder holds the stale ckpt-*.h5.tmp and the previous
#     checkpoint; --resume removes the tmp, starts from the previous one, and the losses again equal;
#  3. a write error at checkpoint time: a file-size limit (ulimit -f, SIGXFSZ ignored: EFBIG), a full
#     disk (a 400 KiB tmpfs) and a read-only folder (a read-only bind mount; both need mount, as root,
#     skipped with a message without it; unmounted at once), and a --ckpt-dir under a regular file: the error names
#     the file, every rank exits 1 (no hang), no tmp is left, the previous checkpoint is unchanged and a
#     resume from it reproduces the uninterrupted losses;
#  4. NaN in training (C5_TEST_NAN_STEP with C5_TEST_NAN_GRAD or C5_TEST_NAN_VALUE, test-only: one element
#     of a gradient or a parameter poisoned at that step): --on-nonfinite stop names the step and the
#     gradient, or the first non-finite activation (layer input, final norm input) and parameter, exit 1;
#     skip drops the step's update, counts it in the log's skipped column and goes on.
set -u
b=${top_builddir:-.}
src=${top_srcdir:-.}
train="$b/apps/colt5-train"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
unset C5_TEST_CKPT_PAUSE_MS C5_TEST_NAN_STEP C5_TEST_NAN_GRAD C5_TEST_NAN_VALUE
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
cat "$src"/README.md "$src"/docs/*.md > "$tmp/text.txt"
# --steps fixes the schedule: every run below has the same one, and stops by a kill, an error or --stop-after
tiny="--data $tmp/text.txt --dim 16 --depth 1 --seq-len 64 --window 16 --light-heads 2 --light-dim-head 8
      --heavy-heads 2 --heavy-dim-head 8 --n-iters 5 --batch 2 --val-every 0 --val-batches 1 --warmup 2 --lr 0.01
      --steps 100000"
run() { timeout 120 mpirun -np 2 "$train" $tiny "$@"; }
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# The rows step,loss,lr,grad_norm of a log for steps $2..$3.
rows() { grep -v '^#' "$1" | grep -v '^step' | cut -d, -f1,2,4,5 | awk -F, -v a="$2" -v z="$3" '$1 >= a && $1 <= z'; }
# The newest complete checkpoint's step in a folder (0: none).
newest() { ls "$1" 2>/dev/null | sed -n 's/^ckpt-\([0-9]*\)\.h5$/\1/p' | sort -n | tail -1 | grep . || echo 0; }
# The first colt5-train process below the job $1 (below timeout and mpirun).
desc() { for c in $(pgrep -P "$1"); do echo "$c"; desc "$c"; done; }
a_rank() { for p in $(desc "$1"); do [ "$(cat /proc/$p/comm 2>/dev/null)" = colt5-train ] && { echo "$p"; return; }; done; }
# Wait (up to 60 s) until the shell test $@ holds.
wait_for() { i=0; while ! eval "$@" && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done; }

# --resume from folder $2 for 3 steps (log $3): it must start at step $4 and its losses equal the
# uninterrupted run's (u.csv, written at the end).
resumed() {
  what=$1 dir=$2 log=$3 k=$4
  run --resume --stop-after 3 --ckpt-dir "$dir" --log "$log" > "$log.out" 2>&1 || { bad "$what: resume (exit $?):"; tail -5 "$log.out"; return; }
  grep -q "resume: $dir/ckpt-$k.h5, step $k\$" "$log.out" || { bad "$what: resume did not start at step $k:"; grep resume "$log.out"; return; }
  echo "$what|$log|$k" >> "$tmp/compare"
}

# ---- 1. SIGKILL mid-step ----
run --ckpt-every 1 --ckpt-dir "$tmp/k1" --log "$tmp/k1.csv" > "$tmp/k1.out" 2>&1 &
job=$!
# (a checkpoint just published: the next step is being computed, or its checkpoint written)
wait_for '[ -f "$tmp/k1/ckpt-4.h5" ]'
rank=$(a_rank $job)
[ -n "$rank" ] && kill -KILL "$rank"
wait $job; rc=$?
K=$(newest "$tmp/k1")
if [ -n "$rank" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$K" -ge 3 ]; then
  ok "SIGKILL to one rank mid-run: the job ended (exit $rc), newest complete checkpoint step $K, $(ls "$tmp/k1" | grep -q '\.tmp$' && echo 'a stale tmp beside it (the kill landed in a write)' || echo 'no tmp (the kill landed in a step)')"
  resumed "SIGKILL mid-step" "$tmp/k1" "$tmp/k1r.csv" "$K"
else bad "SIGKILL mid-run (rank '$rank', exit $rc, newest checkpoint $K):"; tail -5 "$tmp/k1.out"; fi

# ---- 2. SIGKILL mid-checkpoint-write ----
C5_TEST_CKPT_PAUSE_MS=3000 run --ckpt-every 3 --ckpt-dir "$tmp/k2" --log "$tmp/k2.csv" > "$tmp/k2.out" 2>&1 &
job=$!
wait_for '[ -f "$tmp/k2/ckpt-3.h5" ] && ls "$tmp/k2" | grep -q "^ckpt-6\.h5\.tmp$"'
rank=$(a_rank $job)
[ -n "$rank" ] && kill -KILL "$rank"
wait $job; rc=$?
if [ -n "$rank" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ -f "$tmp/k2/ckpt-6.h5.tmp" ] && [ "$(newest "$tmp/k2")" = 3 ]; then
  ok "SIGKILL while ckpt-6 is written (exit $rc): ckpt-3.h5 and a stale ckpt-6.h5.tmp left"
  resumed "SIGKILL mid-checkpoint-write" "$tmp/k2" "$tmp/k2r.csv" 3
  grep -q "resume: removed $tmp/k2/ckpt-6.h5.tmp (an interrupted checkpoint write)" "$tmp/k2r.csv.out" &&
    [ ! -e "$tmp/k2/ckpt-6.h5.tmp" ] && ok "--resume removed the stale tmp" || bad "the stale tmp: $(ls "$tmp/k2")"
else bad "SIGKILL mid-checkpoint-write (rank '$rank', exit $rc): $(ls "$tmp/k2" | tr '\n' ' ')"; tail -5 "$tmp/k2.out"; fi

# ---- 3. write errors at checkpoint time ----
# a folder holding ckpt-3.h5 (376 kB with the moments)
run --stop-after 3 --ckpt-dir "$tmp/e0" > "$tmp/e0.out" 2>&1 || { bad "3 steps:"; tail -5 "$tmp/e0.out"; }
# refused WHAT DIR LOG WANT CMD...: CMD (a resume from DIR, checkpointing at step 4) fails with WANT, exit 1,
# one message, no tmp left, ckpt-3.h5 unchanged.
refused() {
  what=$1 dir=$2 log=$3 want=$4; shift 4
  "$@" > "$log.out" 2>&1; rc=$?
  n=$(grep -c '^colt5-train: I/O error' "$log.out")
  if [ $rc -eq 1 ] && [ "$n" -eq 1 ] && grep -q -- "$want" "$log.out" && cmp -s "$tmp/e0/ckpt-3.h5" "$dir/ckpt-3.h5" &&
     ! ls "$dir" | grep -q 'tmp$'; then
    ok "$what: exit 1, \"$(grep '^colt5-train: I/O error' "$log.out" | cut -c1-150)\", ckpt-3.h5 intact, no tmp"
  else bad "$what: exit $rc, $n messages, want \"$want\":"; grep -v '^\[' "$log.out" | tail -8; ls -la "$dir"; return 1; fi
}
mounts=
trap 'for m in $mounts; do umount "$m"; done; rm -rf "$tmp"' EXIT
cp -r "$tmp/e0" "$tmp/e1"
# dash counts ulimit -f in 512-byte blocks, bash in 1024: 256 is below the checkpoint either way
refused "file-size limit" "$tmp/e1" "$tmp/e1.csv" "checkpoint $tmp/e1/ckpt-4.h5.tmp: cannot reserve its [0-9]* bytes (File too large)" \
  timeout 120 mpirun -np 2 sh -c 'trap "" XFSZ; ulimit -f 256; exec "$0" "$@"' "$train" $tiny --resume --ckpt-every 1 --ckpt-dir "$tmp/e1" &&
  resumed "file-size limit" "$tmp/e1" "$tmp/e1r.csv" 3
mkdir "$tmp/e2" "$tmp/e2s"
if mount -t tmpfs -o size=400k tmpfs "$tmp/e2" 2>/dev/null; then
  mounts="$tmp/e2"
  cp "$tmp/e0/ckpt-3.h5" "$tmp/e2/"
  refused "full disk (a 400 KiB tmpfs)" "$tmp/e2" "$tmp/e2.csv" "checkpoint $tmp/e2/ckpt-4.h5.tmp: cannot reserve its [0-9]* bytes (No space left on device)" \
    run --resume --ckpt-every 1 --ckpt-dir "$tmp/e2" && cp "$tmp/e2/ckpt-3.h5" "$tmp/e2s/" &&
    resumed "full disk (its ckpt-3.h5 copied out)" "$tmp/e2s" "$tmp/e2r.csv" 3
  umount "$tmp/e2"; mounts=
else echo "skip: full disk (mount -t tmpfs not permitted here)"; fi
cp -r "$tmp/e0" "$tmp/e3"
if mount -o bind,ro "$tmp/e3" "$tmp/e3" 2>/dev/null; then
  mounts="$tmp/e3"
  refused "read-only folder (a read-only bind mount)" "$tmp/e3" "$tmp/e3.csv" "checkpoint $tmp/e3/ckpt-4.h5.tmp: cannot create (Read-only file system)" \
    run --resume --ckpt-every 1 --ckpt-dir "$tmp/e3"
  ok=$?
  umount "$tmp/e3"; mounts=
  [ $ok -eq 0 ] && resumed "read-only folder (after the mount)" "$tmp/e3" "$tmp/e3r.csv" 3
else echo "skip: read-only folder (mount -o bind,ro not permitted here)"; fi
printf 'a file\n' > "$tmp/afile"
out=$(run --ckpt-every 2 --stop-after 4 --ckpt-dir "$tmp/afile/ck" 2>&1); rc=$?
if [ $rc -eq 1 ] && printf '%s\n' "$out" | grep -q "^colt5-train: I/O error: .*--ckpt-dir $tmp/afile/ck: Not a directory"; then
  ok "--ckpt-dir under a regular file (unwritable, even for root): exit 1, names it"
else bad "--ckpt-dir under a file: exit $rc:"; printf '%s\n' "$out" | grep -v '^\[' | tail -5; fi

# ---- 4. NaN / Inf in training ----
nan() {  # what want-exit want-grep env... -- options...
  what=$1 rcw=$2 want=$3; shift 3
  out=$(env "$@" 2>&1); rc=$?
  if [ $rc -eq "$rcw" ] && printf '%s\n' "$out" | grep -q -- "$want"; then
    ok "$what: exit $rc, $(printf '%s\n' "$out" | grep -m1 'non-finite:' | cut -c1-400)"
  else bad "$what: exit $rc, want $rcw and \"$want\":"; printf '%s\n' "$out" | grep -v '^\[' | tail -6; fi
}
g=layers.0.conditional_ff.light_ff.1.weight
nan "NaN gradient, stop" 1 "step 3: non-finite: gradient norm not finite (rank 0: AdamW step 3: the gradient of $g is not finite (element 0 is nan).*first non-finite gradient: $g\[0\] = nan" \
  C5_TEST_NAN_STEP=3 C5_TEST_NAN_GRAD=$g timeout 120 mpirun -np 2 "$train" $tiny --stop-after 5 --ckpt-dir "$tmp/ns"
out=$(run --stop-after 5 --on-nonfinite stop --ckpt-dir "$tmp/ni" 2>&1 | grep -c 'non-finite')
[ "$out" -eq 0 ] && ok "without the injection: no non-finite step" || bad "a non-finite step without the injection"
nan "NaN in layer 0's input (pos_emb), stop" 1 "step 3: non-finite: rank 0: coordinate descent: .* is nan (NaN or Inf); first non-finite activation: input of layer 0 \[batch row 0, position 0, 0\] = nan on rank 0; first non-finite parameter: pos_emb.weight\[0\] = nan" \
  C5_TEST_NAN_STEP=3 C5_TEST_NAN_VALUE=pos_emb.weight timeout 120 mpirun -np 2 "$train" $tiny --stop-after 5 --ckpt-dir "$tmp/ns"
nan "NaN in layer 0's output (light_ff.3.weight), stop" 1 "step 3: non-finite: loss nan; first non-finite activation: input of the final norm .*first non-finite parameter: layers.0.conditional_ff.light_ff.3.weight\[0\] = nan" \
  C5_TEST_NAN_STEP=3 C5_TEST_NAN_VALUE=layers.0.conditional_ff.light_ff.3.weight timeout 120 mpirun -np 2 "$train" $tiny --stop-after 5 --ckpt-dir "$tmp/ns"
nan "NaN gradient, skip" 0 "step 3: non-finite: gradient norm not finite" \
  C5_TEST_NAN_STEP=3 C5_TEST_NAN_GRAD=$g timeout 120 mpirun -np 2 "$train" $tiny --stop-after 5 --on-nonfinite skip --ckpt-dir "$tmp/sk" --log "$tmp/sk.csv"
# the skipped column 0 0 1 1 1, step 3 without an update (lr and norm 0), steps 1-3's losses the uninterrupted run's
sk=$(grep -v '^#' "$tmp/sk.csv" | grep -v '^step' | cut -d, -f11 | tr '\n' ' ')
s3=$(rows "$tmp/sk.csv" 3 3 | cut -d, -f3,4)
[ "$sk" = "0 0 1 1 1 " ] && [ "$s3" = "0,0" ] && ok "skip: skipped column $sk, step 3's update dropped" || bad "skip: skipped column '$sk', step 3 lr,norm '$s3'"
echo "NaN skip|$tmp/sk.csv|0" >> "$tmp/compare"

# ---- the uninterrupted run, and the comparisons ----
last=$(cut -d'|' -f3 "$tmp/compare" | sort -n | tail -1)
run --stop-after $((last + 3)) --ckpt-dir "$tmp/u" --log "$tmp/u.csv" > "$tmp/u.out" 2>&1 || { bad "uninterrupted:"; tail -5 "$tmp/u.out"; }
while IFS='|' read -r what log k; do
  # (a skipped step's loss is the uninterrupted run's, its lr and norm 0; after it the runs differ)
  hi=$((k + 3)) f=1-4; [ "$what" = "NaN skip" ] && hi=3 f=1,2
  rows "$log" $((k + 1)) $hi | cut -d, -f$f > "$tmp/x.rows"; rows "$tmp/u.csv" $((k + 1)) $hi | cut -d, -f$f > "$tmp/u.rows"
  if [ "$(wc -l < "$tmp/x.rows")" -eq $((hi - k)) ] && cmp -s "$tmp/x.rows" "$tmp/u.rows"; then
    ok "$what: steps $((k + 1))..$hi equal the uninterrupted run's bit for bit"
  else bad "$what: steps $((k + 1))..$hi differ:"; diff "$tmp/u.rows" "$tmp/x.rows" | head -6; fi
done < "$tmp/compare"
exit $fail
