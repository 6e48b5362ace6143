#!/bin/sh
# test_slurm.sh - jobs/slurm/*.sbatch on a real one-node SLURM cluster made
# for the test: munged on a private socket with its own key, slurmctld and
# slurmd on localhost (free ports; config, state, spool and logs in a
# temporary directory).
#  1. train.sbatch: a 2-task CPU job trains colt5-train (a tiny model),
#     gets SIGUSR1 in its batch shell (scancel --batch: the path of sbatch
#     --signal=B:USR1@T), the ranks checkpoint at step S, the script requeues
#     the job, and the requeued run resumes from ckpt-S.h5 and trains steps
#     S+1..N: the chain's step log holds every step once, both runs had 2
#     ranks (srun --mpi=pmix wired them into one job), the job completes.
#     The job asks for a GPU per task (the cluster's GPUs are plain files):
#     srun gives the ranks one each exactly when the build has CUDA.
#  2. scaling.sbatch: the sweep at P = 1, 2 (small n) gives scaling.csv
#     (and scaling.png when gnuplot is there).
#  3. scaling-gpu.sbatch on the cluster's 2 GPUs, 2 tasks, its launcher a
#     stub (tests/unit/scaling_launch_stub.sh: no GPU runs here): P = 1, 2,
#     jobs/scaling.sh's GPU mode (--device cuda --shape issue --matmul fp32),
#     NCCL_NVLS_ENABLE=0 reaching the launches, C5_DIST=nccl, the CSV's
#     TFLOP/s columns.
# Skips (77) without slurmctld, slurmd, munged or sbatch (jobs/deps.sh
# installs slurm-wlm and munge) or when not root (slurmd). A hard time limit
# (C5_SLURM_TEST_LIMIT, 150 s) covers the whole test; the jobs are cancelled,
# the daemons and anything left of the jobs are stopped by pid and the
# directory removed whatever happens (C5_SLURM_TEST_KEEP=1 keeps it).
set -u
b=${top_builddir:-.}; s=${top_srcdir:-.}
for p in slurmctld slurmd munged sbatch scontrol scancel sinfo squeue; do
  command -v $p > /dev/null 2>&1 || { echo "SKIP: no $p (slurm-wlm, munge)"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "SKIP: slurmd must run as root"; exit 77; }
# A hard limit on the whole test, a backstop: the waits below give up 20 s
# before it, leaving the cleanup its time (and 20 s more before SIGKILL).
limit=${C5_SLURM_TEST_LIMIT:-150}
if [ -z "${C5_SLURM_TEST_TIMED:-}" ]; then
  C5_SLURM_TEST_TIMED=1; export C5_SLURM_TEST_TIMED
  exec timeout -k 20 "$limit" /bin/sh "$0" "$@"
fi
deadline=$(($(date +%s) + limit - 20))
s=$(cd "$s" && pwd); b=$(cd "$b" && pwd)
# A tree without colt5-train (the SLURM scripts' branch before its merge) skips.
[ -f "$s/apps/colt5-train.c" ] || { echo "SKIP: no apps/colt5-train.c in this tree"; exit 77; }
[ -x "$b/apps/colt5-train" ] && [ -x "$b/apps/colt5-bench" ] || { echo "FAIL: colt5-train, colt5-bench not built in $b"; exit 1; }

umask 077
T=$(mktemp -d "${TMPDIR:-/tmp}/c5slurm.XXXXXX") || exit 99
pids=; job=; fail=0
# Processes of this cluster outside the test's process group: the job steps'
# slurmstepd (which outlive slurmd) and the jobs' processes. Found by the
# SLURM_CONF naming this directory in their environment.
strays() {
  me=$(ps -o pgid= -p $$ | tr -d ' ')
  for d in /proc/[0-9]*; do
    grep -qzxF "SLURM_CONF=$T/slurm.conf" "$d/environ" 2> /dev/null || continue
    g=$(ps -o pgid= -p "${d#/proc/}" 2> /dev/null | tr -d ' ')
    [ -n "$g" ] && [ "$g" != "$me" ] && echo "${d#/proc/}"
  done
}
cleanup() {
  trap '' HUP INT TERM
  if [ -n "$pids" ]; then
    # The jobs first, while slurmd can still end their steps.
    for j in $(squeue -h -o %A 2> /dev/null); do scancel "$j" 2> /dev/null; done
    i=0; while [ -n "$(squeue -h -o %A 2> /dev/null)" ] && [ $i -lt 20 ]; do sleep 0.25; i=$((i + 1)); done
    for p in $pids; do kill "$p" 2> /dev/null; done
    for p in $pids; do
      i=0; while kill -0 "$p" 2> /dev/null && [ $i -lt 20 ]; do sleep 0.25; i=$((i + 1)); done
      kill -KILL "$p" 2> /dev/null
    done
    left=$(strays)
    if [ -n "$left" ]; then
      kill $left 2> /dev/null; sleep 1; kill -KILL $left 2> /dev/null
    fi
  fi
  if [ $fail -ne 0 ]; then
    for f in "$T"/train.out "$T"/scaling.out "$T"/scaling-gpu.out "$T"/slurmctld.log "$T"/slurmd.log "$T"/munged.log; do
      [ -f "$f" ] && { echo "---- $f (tail)"; tail -n 40 "$f"; }
    done
  fi
  if [ -n "${C5_SLURM_TEST_KEEP:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'fail=1; echo "FAIL: interrupted (time limit?)"; exit 1' HUP INT TERM
# A reader that went away (test | head) must not end the test before its
# cleanup: writes fail instead.
trap '' PIPE

# die also from inside wait_for's silenced checks: fd 3 is the test's output.
exec 3>&1
die() { echo "FAIL: $*" >&3; fail=1; exit 1; }
# wait_for SECONDS WHAT CMD...: poll CMD every 0.25 s for SECONDS at most,
# and not past the test's deadline.
wait_for() {
  what=$2; t0=$(date +%s); end=$((t0 + $1)); shift 2
  [ $end -le $deadline ] || end=$deadline
  while ! "$@" > /dev/null 2>&1; do
    [ "$(date +%s)" -lt $end ] || die "no $what after $(($(date +%s) - t0)) s (the test's limit: $limit s)"
    sleep 0.25
  done
}
# A port nobody listens on, from a range apart from SLURM's 6817/6818.
free_port() {
  while :; do
    p=$(( $(od -An -N2 -tu2 /dev/urandom) % 20000 + 30000 ))
    [ -z "$(ss -Htan "sport = :$p" 2> /dev/null)" ] && [ "$p" != "${1:-}" ] && { echo $p; return; }
  done
}

# munged on a private socket with a fresh key (no system munge needed).
dd if=/dev/urandom of="$T/munge.key" bs=1024 count=1 2> /dev/null
munged -F --force --socket="$T/munge.sock" --key-file="$T/munge.key" --pid-file="$T/munged.pid" \
  --log-file="$T/munged.log" --seed-file="$T/munged.seed" > "$T/munged.out" 2>&1 &
pids="$!"
wait_for 10 "munged socket" test -S "$T/munge.sock"

cport=$(free_port); dport=$(free_port "$cport")
# Job ids of their own: OpenMPI names its shared-memory segments after the
# job and step, so two clusters on one machine (two make checks) must not
# both run job 1.
first_job=$(( $(od -An -N4 -tu4 /dev/urandom) % 50000000 + 1000 ))
mkdir -p "$T/state" "$T/spool" "$T/tmp"
# Two CPUs for the 2-task jobs even on one core (SlurmdParameters=config_overrides).
cpus=$(nproc); [ "$cpus" -ge 2 ] || cpus=2
# TmpFS: mpi/pmix makes its per-step directories there (/tmp/spmix_appdir_<uid>_<job>.<step>
# by default: one left by an earlier cluster would fail job 1's launch).
# cred_expire is also how long a requeued job waits before it may start
# again (120 s by default); sched_interval makes the scheduler notice that
# within a second or two instead of the next 60 s pass.
cat > "$T/slurm.conf" << EOF
ClusterName=c5test
SlurmctldHost=localhost
SlurmctldPort=$cport
SlurmdPort=$dport
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge.sock,cred_expire=5
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
TmpFS=$T/tmp
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
MailProg=/bin/true
FirstJobId=$first_job
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
JobRequeue=1
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=256 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
# Two GPUs that are only files (slurmd wants a file per GPU): enough for
# SLURM to allocate them, so that train.sbatch's GPU choice can be checked
# on any machine.
: > "$T/nvidia0"; : > "$T/nvidia1"
echo "NodeName=localhost Name=gpu File=$T/nvidia[0-1]" > "$T/gres.conf"
export SLURM_CONF="$T/slurm.conf"
slurmctld -D -f "$SLURM_CONF" > "$T/slurmctld.out" 2>&1 &
pids="$pids $!"
slurmd -D -N localhost -f "$SLURM_CONF" > "$T/slurmd.out" 2>&1 &
pids="$pids $!"
job_ended() { scontrol -o show job "$job" | grep -Eq 'JobState=(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY)'; }
node_idle() { [ "$(sinfo -h -n localhost -o %t 2> /dev/null)" = idle ]; }
wait_for 30 "idle node (slurmctld, slurmd)" node_idle
echo "ok: slurmctld and slurmd up on ports $cport, $dport"

# ---- the training job -----------------------------------------------------
# A tiny model on the project's own documents: a few ms a step, so the job
# is still training when the signal comes, and the rest takes seconds.
cat "$s"/README.md "$s"/docs/*.md > "$T/text.txt"
# Two data-parallel ranks (--seq-ranks 1): a few collectives a step, so a
# busy machine slows the steps less than the many of a sharded sequence.
# Ranks that yield while they wait: CI's two cores may be shared.
steps=1000
tiny="--data $T/text.txt --dim 16 --depth 1 --seq-len 64 --window 16 --light-heads 2 --light-dim-head 8
      --heavy-heads 2 --heavy-dim-head 8 --n-iters 5 --batch 2 --val-every 0 --val-batches 1 --warmup 2
      --lr 0.01 --log-every 1000 --seq-ranks 1"
export OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1 TMPDIR="$T/tmp"
job=$(C5_BUILD=$b C5_STEPS=$steps C5_CKPT_DIR="$T/ckpt" C5_LOG="$T/train.csv" C5_ARGS="$tiny" \
      sbatch --parsable -n 2 --gpus-per-task=1 --chdir="$T" --output="$T/train.out" "$s/jobs/slurm/train.sbatch") ||
  die "sbatch refused the job"
job=${job%%;*}
echo "ok: submitted job $job"
# The step log (rank 0 flushes every step): step,loss,...; steps only.
csv_steps() { grep '^[0-9]' "$T/train.csv" | cut -d, -f1; }
# A job that ended early fails the test at once instead of at the time limit.
running() { scontrol -o show job "$job" | grep -Eq 'JobState=(PENDING|RUNNING|CONFIGURING)' || die "job $job ended early: $(scontrol -o show job "$job")"; }
started() { running; [ "$(csv_steps 2> /dev/null | wc -l)" -ge 3 ]; }
wait_for 60 "3 steps in the step log" started
scancel --batch --signal=USR1 "$job" || die "scancel --batch --signal=USR1 $job"
checkpointed() { grep -q 'checkpointed at step [0-9]* on signal' "$T/train.out"; }
wait_for 30 "checkpoint on signal" checkpointed
S=$(sed -n 's/.*checkpointed at step \([0-9]*\) on signal.*/\1/p' "$T/train.out" | head -n 1)
[ "$S" -ge 3 ] && [ "$S" -lt $steps ] || die "checkpointed at step $S, want 3..$((steps - 1))"
echo "ok: checkpointed at step $S on signal"
wait_for 90 "end of the requeued job" job_ended
info=$(scontrol -o show job "$job")
case $info in *JobState=COMPLETED*ExitCode=0:0*) ;; *) die "job $job: $info";; esac
case $info in *Restarts=1\ *) ;; *) die "job $job: want one requeue: $info";; esac
grep -q "run 1: requeueing" "$T/train.out" || die "the first run did not requeue itself"
grep -q "run 2: .* --resume" "$T/train.out" || die "the second run did not pass --resume"
# srun started the ranks through PMIx, with a GPU each on a CUDA build only.
cuda=0; grep -q 'C5_HAVE_CUDA_BUILD 1' "$b/lib/colt5_config.h" && cuda=1
line=$(grep -m 1 'run 1: .* tasks, ' "$T/train.out")
case $line in
  *": srun --mpi=pmix --gpus-per-task=1 "*) gpus=1;;
  *": srun --mpi=pmix "*) gpus=0;;
  *) die "the first run did not launch with srun --mpi=pmix: $line";;
esac
[ $gpus = $cuda ] || die "CUDA build: $cuda, but --gpus-per-task=1 given to srun: $gpus ($line)"
# Both runs were one 2-rank job (srun wired the ranks), not two single ranks.
[ "$(grep -c '^colt5-train: 2 ranks' "$T/train.out")" -eq 2 ] || die "want a 2-rank colt5-train in each run"
# The second run loaded the checkpoint of step S and trained the rest.
sed -n '/run 2: /,$p' "$T/train.out" > "$T/run2"
grep -q "^resume: $T/ckpt/ckpt-$S.h5, step $S\$" "$T/run2" || die "the second run did not resume from ckpt-$S.h5"
grep -q "^trained $((steps - S)) steps " "$T/run2" || die "the second run did not train steps $((S + 1))..$steps"
# One step log for the chain: every step 1..steps exactly once, in order.
csv_steps > "$T/got"; seq 1 $steps > "$T/want"
cmp -s "$T/got" "$T/want" || die "the step log is not steps 1..$steps once each: $(diff "$T/want" "$T/got" | head -n 4 | tr '\n' ' ')"
echo "ok: the requeued run resumed from ckpt-$S.h5 and trained steps $((S + 1))..$steps (2 ranks, $([ $cuda = 1 ] && echo 'a GPU each: a CUDA build' || echo 'no GPUs: not a CUDA build'))"

# ---- the scaling sweep, small: P = 1, 2 as srun steps ---------------------
job=$(C5_BUILD=$b C5_SRC=$s C5_OUT="$T/scaling" C5_STRONG_N=512 C5_WEAK_N=256 \
      sbatch --parsable -n 2 --chdir="$T" --output="$T/scaling.out" "$s/jobs/slurm/scaling.sbatch") ||
  die "sbatch refused the scaling job"
job=${job%%;*}
wait_for 60 "end of the scaling job" job_ended
scontrol -o show job "$job" | grep -q 'JobState=COMPLETED .*ExitCode=0:0' ||
  { cat "$T/scaling.out"; die "scaling job $job: $(scontrol -o show job "$job")"; }
# Two ranks of one communicator, not two single-rank runs: srun wired them up.
grep -q 'P = 2 ranks' "$T/scaling/scaling.txt" || die "no 2-rank run in scaling.txt"
rows=$(grep -c '^\(strong\|weak\),[12],' "$T/scaling/scaling.csv")
[ "$rows" -eq 4 ] || die "scaling.csv has $rows rows of P = 1, 2, want 4"
if command -v gnuplot > /dev/null 2>&1; then [ -s "$T/scaling/scaling.png" ] || die "no scaling.png"; fi
echo "ok: scaling sweep P = 1, 2: scaling.csv$(command -v gnuplot > /dev/null 2>&1 && echo ', scaling.png')"

# ---- the GPU sweep's batch script, a stub launcher ------------------------
job=$(C5_BUILD=$b C5_SRC=$s C5_OUT="$T/scaling-gpu" C5_STRONG_N=4096 C5_WEAK_N=1024 \
      C5_LAUNCH="$s/tests/unit/scaling_launch_stub.sh" STUB_LOG="$T/gpu-launches" \
      sbatch --parsable --gpus-per-node=2 --ntasks-per-node=2 --chdir="$T" --output="$T/scaling-gpu.out" \
      "$s/jobs/slurm/scaling-gpu.sbatch") || die "sbatch refused the GPU scaling job"
job=${job%%;*}
wait_for 30 "end of the GPU scaling job" job_ended
scontrol -o show job "$job" | grep -q 'JobState=COMPLETED .*ExitCode=0:0' ||
  { cat "$T/scaling-gpu.out"; die "GPU scaling job $job: $(scontrol -o show job "$job")"; }
for l in "1 $b/apps/colt5-bench block --threads 1 --device cuda --shape issue --matmul fp32 --n 4096 " \
         "2 $b/apps/colt5-bench block --threads 1 --device cuda --shape issue --matmul fp32 --n 2048 "; do
  grep -qF "LAUNCH $l" "$T/gpu-launches" || { cat "$T/gpu-launches"; die "scaling-gpu.sbatch: no launch 'LAUNCH $l...'"; }
done
[ "$(grep -c '^NCCL_NVLS_ENABLE=0$' "$T/gpu-launches")" -eq 4 ] ||
  { cat "$T/gpu-launches"; die "scaling-gpu.sbatch: want 4 launches with NCCL_NVLS_ENABLE=0"; }
grep -q '^# device: cuda, .*NCCL_NVLS_ENABLE=0, C5_DIST=nccl$' "$T/scaling-gpu/scaling.txt" ||
  { head -n 5 "$T/scaling-gpu/scaling.txt"; die "scaling-gpu: scaling.txt does not say GPU mode, NCCL_NVLS_ENABLE=0, C5_DIST=nccl"; }
rows=$(grep -c '^\(strong\|weak\),[12],.*,100.00,1.000,' "$T/scaling-gpu/scaling.csv")
[ "$rows" -eq 2 ] || { cat "$T/scaling-gpu/scaling.csv"; die "scaling-gpu: want the P = 1 rows' TFLOP/s per rank (100.00, 1.000)"; }
echo "ok: scaling-gpu.sbatch: GPU mode at P = 1, 2 with NCCL_NVLS_ENABLE=0 (a stub launcher)"
exit 0
