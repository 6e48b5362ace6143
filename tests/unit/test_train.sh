#!/bin/sh
# test_train.sh - colt5-train on a tiny model over a small text:
#  1. a bad command line, configuration or data file (or --device cuda where it
#     cannot run: no CUDA kernels, no GPU) is refused with one
#     message naming the option and value, exit 2, on one rank and on two
#     (no hang); --help lists every option;
#  2. resume: 8 steps in one run (dumping two steps' activations) equal,
#     bit for bit (losses logged with %.17g), 4 steps, a checkpoint
#     (--stop-after) and --resume (2 ranks);
#  3. SIGTERM to one rank mid-run: every rank checkpoints at the same step and
#     exits 0, and the resumed steps reproduce an uninterrupted run's;
#  4. a checkpoint written at P=2 resumed at P=1 and P=3: the next losses
#     agree with P=2's to 1e-12 relative in double (1e-4 in single);
#  5. 2 data-parallel groups of 2 sequence ranks with --batch 2 train on the
#     same samples as one group with --batch 4: the same losses (to the same
#     tolerance).
set -u
b=${top_builddir:-.}
src=${top_srcdir:-.}
train="$b/apps/colt5-train"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
# The text: the project's own documents (English, about 50 kB).
cat "$src"/README.md "$src"/docs/*.md > "$tmp/text.txt"
printf 'too short\n' > "$tmp/short.txt"
tiny="--data $tmp/text.txt --dim 16 --depth 1 --seq-len 64 --window 16 --light-heads 2 --light-dim-head 8
      --heavy-heads 2 --heavy-dim-head 8 --n-iters 5 --batch 2 --val-every 0 --val-batches 1 --warmup 2 --lr 0.01"
run() { np=$1; shift; timeout 300 mpirun -np "$np" "$train" $tiny "$@"; }

# ---- 1. options ----
refused() {
  np=$1; want=$2; shift 2
  out=$(timeout 60 mpirun -np "$np" "$train" "$@" 2>&1); rc=$?
  n=$(printf '%s\n' "$out" | grep -c '^colt5-train: ')
  if [ $rc -eq 2 ] && [ "$n" -eq 1 ] && printf '%s\n' "$out" | grep -qF -- "$want"; then
    echo "ok: np $np $* -> $want"
  else
    echo "FAIL: np $np $* (exit $rc, $n messages), want exit 2 and one \"$want\":"; printf '%s\n' "$out" | head -5; fail=1
  fi
}
refused 1 "--dim abc: expected an integer from 1 to 65536" --dim abc
refused 1 "--dim 0: expected an integer from 1 to 65536" --dim 0
refused 1 "--steps 1.5: expected an integer" --steps 1.5
refused 1 "--steps 99999999999999999999: expected an integer" --steps 99999999999999999999
refused 1 "--lr -1: expected a number from 0 to 10" --lr -1
refused 1 "--lr nan: expected a number" --lr nan
refused 1 "--random-route 2: expected 0 or 1" --random-route=2
refused 1 "--on-nonfinite maybe: expected stop or skip" --on-nonfinite maybe
refused 1 "--matmul fp16: expected fp32, tf32 or bf16" --matmul fp16
refused 1 "--matmul bf16: only --device cuda has TF32/bf16 products" --matmul bf16
refused 1 "unknown option --bogus" --bogus
refused 1 "option --steps needs a value" --steps
refused 1 "--resume: needs --ckpt-dir" --resume
refused 1 "--data $tmp/none.txt: No such file or directory" --data "$tmp/none.txt"
refused 1 "--data $tmp/short.txt: 10 bytes, too short" --data "$tmp/short.txt"
printf '{"model": {"dim": "wide"}}' > "$tmp/c1.json"
refused 1 "option 'model.dim' is \"wide\", expected an integer from 1 to 65536" --config "$tmp/c1.json"
printf '{"model": {"router_kwargs": {"n_iters": 2.5}}}' > "$tmp/c2.json"
refused 1 "option 'model.router_kwargs.n_iters' is 2.5" --config "$tmp/c2.json"
printf '{"train": {"stepz": 3}}' > "$tmp/c3.json"
refused 1 "unknown key \"train.stepz\"" --config "$tmp/c3.json"
printf '{"train": {"steps": 3' > "$tmp/c4.json"
refused 1 "--config $tmp/c4.json:" --config "$tmp/c4.json"
# on two ranks: one message, both exit 2, no hang (mpirun's exit is the ranks')
refused 2 "--dim abc: expected an integer" --dim abc
refused 2 "--data $tmp/short.txt: 10 bytes, too short" --data "$tmp/short.txt"
# --device: the name checked; cuda refused where this process sees no GPU (or the build has no CUDA kernels)
# with the reason, on one rank and on two (every rank fails alike: one message; test_cuda_train_mpi.sh trains
# on several ranks where a GPU is)
refused 1 "--device gpu: expected cpu or cuda" --device gpu
if "$train" --version | grep -q "CUDA kernels no"; then
  for np in 1 2; do refused $np "this build has no CUDA kernels" $tiny --device cuda; done
elif ! nvidia-smi -L 2>/dev/null | grep -q GPU; then
  for np in 1 2; do refused $np "--device cuda: no GPU is visible to this process" $tiny --device cuda; done
fi
refused 3 "--seq-ranks 2: does not divide the 3 ranks" --seq-ranks 2
# the file's value stands unless the command line overrides it
printf '{"model": {"dim": 0}}' > "$tmp/c5.json"
refused 1 "option 'model.dim' is 0" --config "$tmp/c5.json" --dim 16
help=$(timeout 60 "$train" --help); rc=$?
missing=
for o in config help dim depth seq-len heavy-q heavy-kv heavy-ff routed-kv light-heads light-dim-head heavy-heads \
         heavy-dim-head window light-ff-mult heavy-ff-mult straight-through n-iters fetch-k-ratio router-eps eps-init \
         eps-decay random-route steps batch accum lr lr-min warmup weight-decay clip seed val-every \
         val-batches seq-ranks threads log log-every ckpt-dir ckpt-every keep resume stop-after dump-activations \
         dump-file on-nonfinite device matmul data val-frac mask-frac; do
  printf '%s\n' "$help" | grep -q -- "--$o[ =[]" || missing="$missing $o"
done
if [ $rc -eq 0 ] && [ -z "$missing" ] && printf '%s\n' "$help" | grep -q -- "--lr N .*(default 0.005)"; then echo "ok: --help lists every option with its default"
else echo "FAIL: --help (exit $rc) misses:$missing"; fail=1; fi

# The rows step,loss,lr,grad_norm of a log (comments and header dropped).
rows() { grep -v '^#' "$1" | grep -v '^step' | cut -d, -f1,2,4,5; }
same() {
  if [ -s "$2" ] && cmp -s "$2" "$3"; then echo "ok: $1 ($(wc -l < "$2") steps bit for bit)"
  else echo "FAIL: $1:"; diff "$2" "$3" | head -6; fail=1; fi
}

# ---- 2. resume: 8 steps = 4 + checkpoint + --resume ----
# (with an activation dump at step 2: it changes nothing in the run)
run 2 --steps 8 --log "$tmp/a.csv" --dump-activations 2,7 --dump-file "$tmp/act.h5" > "$tmp/a.out" 2>&1 || { echo "FAIL: 8 steps:"; tail -5 "$tmp/a.out"; fail=1; }
if h5ls -r "$tmp/act.h5" 2>/dev/null | grep -q '^/step_2/layer_0/input ' && h5ls -r "$tmp/act.h5" | grep -q '^/step_7'; then
  echo "ok: --dump-activations 2,7 wrote steps 2 and 7"
else echo "FAIL: --dump-activations:"; h5ls -r "$tmp/act.h5" 2>&1 | head -5; fail=1; fi
run 2 --steps 8 --stop-after 4 --ckpt-dir "$tmp/ck" --log "$tmp/b.csv" > "$tmp/b.out" 2>&1 || { echo "FAIL: 4 steps:"; tail -5 "$tmp/b.out"; fail=1; }
grep -q "stopped after step 4" "$tmp/b.out" || { echo "FAIL: no stop after step 4"; fail=1; }
run 2 --steps 8 --resume --ckpt-dir "$tmp/ck" --log "$tmp/b.csv" > "$tmp/b2.out" 2>&1 || { echo "FAIL: resume:"; tail -5 "$tmp/b2.out"; fail=1; }
grep -q "resume: .*ckpt-4.h5, step 4" "$tmp/b2.out" || { echo "FAIL: resume did not start at step 4"; head -3 "$tmp/b2.out"; fail=1; }
rows "$tmp/a.csv" > "$tmp/a.rows"; rows "$tmp/b.csv" > "$tmp/b.rows"
same "8 steps = 4 + resume + 4 (2 ranks)" "$tmp/a.rows" "$tmp/b.rows"

# ---- 3. SIGTERM to one rank ----
run 2 --steps 100000 --ckpt-dir "$tmp/cs" --log "$tmp/s.csv" > "$tmp/s.out" 2>&1 &
mp=$!
i=0
while [ "$(rows "$tmp/s.csv" 2>/dev/null | wc -l)" -lt 3 ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
# the first colt5-train process under the job (below the shell, timeout and mpirun)
desc() { for c in $(pgrep -P "$1"); do echo "$c"; desc "$c"; done; }
rank=
for p in $(desc $mp); do [ "$(cat /proc/$p/comm 2>/dev/null)" = colt5-train ] && { rank=$p; break; }; done
if [ -n "$rank" ]; then kill -TERM "$rank"; fi
wait $mp; rc=$?
S=$(sed -n 's/^checkpointed at step \([0-9]*\) on signal$/\1/p' "$tmp/s.out")
if [ $rc -eq 0 ] && [ -n "$S" ] && [ -f "$tmp/cs/ckpt-$S.h5" ]; then echo "ok: SIGTERM to one rank: checkpoint at step $S, exit 0"
else echo "FAIL: SIGTERM (exit $rc, step '$S'):"; tail -5 "$tmp/s.out"; fail=1; S=0; fi
if [ "$S" -gt 0 ]; then
  run 2 --steps 100000 --resume --stop-after 3 --ckpt-dir "$tmp/cs" --log "$tmp/s.csv" > "$tmp/s2.out" 2>&1 || { echo "FAIL: resume after SIGTERM:"; tail -5 "$tmp/s2.out"; fail=1; }
  run 2 --steps 100000 --stop-after $((S + 3)) --ckpt-dir "$tmp/cu" --log "$tmp/u.csv" > "$tmp/u.out" 2>&1 || { echo "FAIL: uninterrupted:"; tail -5 "$tmp/u.out"; fail=1; }
  rows "$tmp/s.csv" > "$tmp/s.rows"; rows "$tmp/u.csv" > "$tmp/u.rows"
  same "SIGTERM at step $S + resume = uninterrupted" "$tmp/u.rows" "$tmp/s.rows"
fi

# ---- 4. P=2 checkpoint resumed at P=1 and P=3 ----
run 2 --steps 10 --stop-after 5 --ckpt-dir "$tmp/p2" > "$tmp/p.out" 2>&1 || { echo "FAIL: P=2 5 steps:"; tail -5 "$tmp/p.out"; fail=1; }
tol=1e-12; grep -q 'precision single' "$tmp/p.out" && tol=1e-4
for P in 1 3 2; do
  cp -r "$tmp/p2" "$tmp/p$P.d"
  run $P --steps 10 --resume --stop-after 3 --ckpt-dir "$tmp/p$P.d" --log "$tmp/p$P.csv" > "$tmp/p$P.out" 2>&1 || { echo "FAIL: resume at P=$P:"; tail -5 "$tmp/p$P.out"; fail=1; }
done
for P in 1 3; do
  r=$(paste -d, "$(rows "$tmp/p2.csv" > "$tmp/p2.rows"; echo "$tmp/p2.rows")" "$(rows "$tmp/p$P.csv" > "$tmp/pp.rows"; echo "$tmp/pp.rows")" |
      awk -F, -v tol=$tol '{ d = $2 - $6; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > m) m = r; n++ }
                          END { printf "%d %.3g %s", n, m, (n == 3 && m <= tol) ? "ok" : "bad" }')
  case "$r" in *ok) echo "ok: P=2 checkpoint resumed at P=$P: steps, max relative loss difference: $r";;
               *) echo "FAIL: P=2 checkpoint resumed at P=$P: $r"; fail=1;; esac
done

# ---- 5. data-parallel groups ----
run 4 --seq-ranks 2 --steps 4 --log "$tmp/dp2.csv" > "$tmp/dp2.out" 2>&1 || { echo "FAIL: 2 x 2 ranks:"; tail -5 "$tmp/dp2.out"; fail=1; }
grep -q '4 ranks = 2 per sequence x 2 data-parallel' "$tmp/dp2.out" || { echo "FAIL: no 2 x 2 layout"; fail=1; }
run 2 --batch 4 --steps 4 --log "$tmp/dp1.csv" > "$tmp/dp1.out" 2>&1 || { echo "FAIL: 2 ranks, batch 4:"; tail -5 "$tmp/dp1.out"; fail=1; }
rows "$tmp/dp1.csv" > "$tmp/dp1.rows"; rows "$tmp/dp2.csv" > "$tmp/dp2.rows"
r=$(paste -d, "$tmp/dp1.rows" "$tmp/dp2.rows" |
    awk -F, -v tol=$tol '{ d = $2 - $6; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > m) m = r; n++ }
                        END { printf "%d %.3g %s", n, m, (n == 4 && m <= tol) ? "ok" : "bad" }')
case "$r" in *ok) echo "ok: 2 groups x batch 2 = 1 group x batch 4: steps, max relative loss difference: $r";;
             *) echo "FAIL: 2 groups x batch 2 against 1 group x batch 4: $r"; fail=1;; esac
exit $fail
