#!/bin/sh
# test_scaling.sh - jobs/scaling.sh and jobs/scaling-plot.sh without SLURM:
#  1. the GPU mode's runs, assembled without a GPU: C5_LAUNCH is a stub
#     (scaling_launch_stub.sh) that logs each command line and prints
#     colt5-bench block's lines with made-up times, TFLOP/s and collectives; the issue's runs are the ones
#     launched (P = 1, 2, 4; strong n = 131072, 1048576; weak n = 32768 and
#     262144 per rank; --device cuda --shape issue --matmul fp32, or
#     C5_MATMUL's); scaling.csv's speed-up, efficiencies, TFLOP/s per rank
#     and comm columns are those the stub's numbers give.
#  2. the CPU mode launches what it always did (the same stub);
#  3. a tiny real CPU sweep (P = 1, 2, small n) under mpirun: scaling.csv has
#     its 4 rows, the comm columns of the collectives that ran summing to
#     the total, no TFLOP/s (a CPU run prints none); scaling.png with gnuplot.
set -u
b=${top_builddir:-.}; s=${top_srcdir:-.}
b=$(cd "$b" && pwd); s=$(cd "$s" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/c5scaling.XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# The launcher's stand-in (its numbers: tests/unit/scaling_launch_stub.sh).
stub=$s/tests/unit/scaling_launch_stub.sh
export STUB_LOG="$T/launches"
# col CSV NAME: the column number of NAME in CSV's header
col() { head -n 1 "$1" | tr , '\n' | grep -nx "$2" | cut -d: -f1; }
# cell CSV MODE P N NAME: the NAME column of row MODE,P,N
cell() { c=$(col "$1" "$5"); [ -n "$c" ] || { echo "no-column-$5"; return; }
         awk -F, -v m="$2" -v p="$3" -v n="$4" -v c="$c" '$1 == m && $2 == p && $3 == n { print $c }' "$1"; }
# want WHAT GOT EXPECTED
want() { [ "$2" = "$3" ] && echo "ok: $1 = $3" || bad "$1 = '$2', want '$3'"; }

# ---- 1. the GPU mode, a stub for the launcher -----------------------------
: > "$STUB_LOG"
unset C5_DIST NCCL_NVLS_ENABLE
C5_DEVICE=cuda C5_LAUNCH="$stub" sh "$s/jobs/scaling.sh" "$b" "$T/gpu" > "$T/gpu.out" 2>&1 ||
  { cat "$T/gpu.out"; bad "scaling.sh in GPU mode (stub launcher) failed"; }
want "launches in GPU mode" "$(grep -c '^LAUNCH ' "$STUB_LOG")" 12
want "NCCL_NVLS_ENABLE given to the launches" "$(grep -c '^NCCL_NVLS_ENABLE=0$' "$STUB_LOG")" 12
for p in 1 2 4; do
  for n in 131072 1048576 $((32768 * p)) $((262144 * p)); do
    line="LAUNCH $p $b/apps/colt5-bench block --threads 1 --device cuda --shape issue --matmul fp32 --n $n --reps 5 --warmup 1"
    grep -qxF "$line" "$STUB_LOG" || bad "no launch '$line'"
  done
done
grep -q "^# launcher: $stub P\$" "$T/gpu/scaling.txt" || bad "scaling.txt does not name the launcher"
grep -q "^# device: cuda, matmul fp32, shape issue, one GPU per rank, NCCL_NVLS_ENABLE=0, C5_DIST=auto\$" "$T/gpu/scaling.txt" ||
  bad "scaling.txt does not name the GPU mode (and NCCL_NVLS_ENABLE=0)"
grep -q '^# gpu: ' "$T/gpu/scaling.txt" || bad "scaling.txt has no '# gpu:' line (nvidia-smi -L or its absence)"
csv=$T/gpu/scaling.csv
want "GPU mode: csv rows" "$(grep -c '^\(strong\|weak\),' "$csv")" 12
want "header" "$(head -n 1 "$csv")" \
  "mode,P,n,fwdbwd_ms,tokens_per_s,comm_share_pct,speedup,efficiency,n_series,tflops_per_rank,tflops_efficiency,comm_ms_per_step,comm_grad_allreduce_ms,comm_router_allreduce_ms,comm_halo_sendrecv_ms"
# weak, 32768 per rank at P = 4: t(1) = 3.2768, t(4) = 3.2768 + 2 ms; TFLOP/s per rank 100 / 1.15
want "weak P=4 n_series" "$(cell "$csv" weak 4 131072 n_series)" 32768
want "weak P=4 efficiency (time)" "$(cell "$csv" weak 4 131072 efficiency)" 0.621
want "weak P=4 tflops_per_rank" "$(cell "$csv" weak 4 131072 tflops_per_rank)" 86.96
want "weak P=4 tflops_efficiency" "$(cell "$csv" weak 4 131072 tflops_efficiency)" 0.870
want "weak P=1 tflops_efficiency" "$(cell "$csv" weak 1 262144 tflops_efficiency)" 1.000
want "weak P=2 n=524288 tflops_efficiency" "$(cell "$csv" weak 2 524288 tflops_efficiency)" 0.952
# strong, n = 1048576 at P = 2: t = 104.8576 / 52.4288 + 1 ms
want "strong P=2 n=1048576 speedup" "$(cell "$csv" strong 2 1048576 speedup)" 1.963
want "strong P=2 n=1048576 n_series" "$(cell "$csv" strong 2 1048576 n_series)" 1048576
want "strong P=4 comm_ms_per_step" "$(cell "$csv" strong 4 131072 comm_ms_per_step)" 1.625
want "strong P=4 comm_halo_sendrecv_ms" "$(cell "$csv" strong 4 131072 comm_halo_sendrecv_ms)" 1.000
want "strong P=1 comm_router_allreduce_ms (none)" "$(cell "$csv" strong 1 131072 comm_router_allreduce_ms)" ""
want "strong P=4 comm_share_pct" "$(cell "$csv" strong 4 131072 comm_share_pct)" 30.8
if command -v gnuplot > /dev/null 2>&1; then
  [ -s "$T/gpu/scaling.png" ] && echo "ok: GPU mode: scaling.png" || { cat "$T/gpu.out"; bad "GPU mode: no scaling.png"; }
fi
: > "$STUB_LOG"
C5_DEVICE=cuda C5_MATMUL=bf16 C5_RANKS=2 C5_STRONG_N=4096 C5_WEAK_N=1024 C5_LAUNCH="$stub" \
  sh "$s/jobs/scaling.sh" "$b" "$T/bf16" > "$T/bf16.out" 2>&1 || bad "scaling.sh C5_MATMUL=bf16 failed"
want "C5_MATMUL=bf16, C5_RANKS=2: launches" "$(grep "^LAUNCH " "$STUB_LOG")" \
"LAUNCH 2 $b/apps/colt5-bench block --threads 1 --device cuda --shape issue --matmul bf16 --n 4096 --reps 5 --warmup 1
LAUNCH 2 $b/apps/colt5-bench block --threads 1 --device cuda --shape issue --matmul bf16 --n 2048 --reps 5 --warmup 1"
C5_DEVICE=cuda C5_MATMUL=fp16 C5_LAUNCH="$stub" sh "$s/jobs/scaling.sh" "$b" "$T/x" > "$T/x.out" 2>&1
want "C5_MATMUL=fp16: exit" $? 2
C5_DEVICE=gpu C5_LAUNCH="$stub" sh "$s/jobs/scaling.sh" "$b" "$T/x" > "$T/x.out" 2>&1
want "C5_DEVICE=gpu: exit" $? 2

# ---- 2. the CPU mode launches what it did ---------------------------------
: > "$STUB_LOG"
C5_RANKS="1 2" C5_LAUNCH="$stub" sh "$s/jobs/scaling.sh" "$b" "$T/cpustub" > "$T/cpustub.out" 2>&1 ||
  bad "scaling.sh in CPU mode (stub launcher) failed"
want "CPU mode: launches" "$(grep "^LAUNCH " "$STUB_LOG")" \
"LAUNCH 1 $b/apps/colt5-bench block --threads 1 --n 65536 --reps 5 --warmup 1
LAUNCH 1 $b/apps/colt5-bench block --threads 1 --n 8192 --reps 5 --warmup 1
LAUNCH 2 $b/apps/colt5-bench block --threads 1 --n 65536 --reps 5 --warmup 1
LAUNCH 2 $b/apps/colt5-bench block --threads 1 --n 16384 --reps 5 --warmup 1"

# ---- 3. a tiny real CPU sweep -------------------------------------------------
if ! command -v mpirun > /dev/null 2>&1 || [ ! -x "$b/apps/colt5-bench" ]; then
  echo "SKIP (part 3 only): no mpirun or no $b/apps/colt5-bench"
  exit $fail
fi
export OMPI_MCA_mpi_yield_when_idle=1
C5_RANKS="1 2" C5_STRONG_N=512 C5_WEAK_N=256 timeout 300 sh "$s/jobs/scaling.sh" "$b" "$T/cpu" > "$T/cpu.out" 2>&1 ||
  { tail -n 30 "$T/cpu.out"; bad "scaling.sh, CPU, P = 1, 2 failed"; }
csv=$T/cpu/scaling.csv
cat "$csv"
want "CPU: csv rows" "$(grep -c '^\(strong\|weak\),[12],' "$csv")" 4
want "CPU: weak P=1 efficiency" "$(cell "$csv" weak 1 256 efficiency)" 1.000
want "CPU: strong P=2 n_series" "$(cell "$csv" strong 2 512 n_series)" 512
want "CPU: weak P=2 tflops_per_rank (none on the CPU)" "$(cell "$csv" weak 2 512 tflops_per_rank)" ""
want "CPU: weak P=2 tflops_efficiency (none on the CPU)" "$(cell "$csv" weak 2 512 tflops_efficiency)" ""
# P = 2 ran collectives: their columns sum to the total (each rounded to 1e-3 ms)
head -n 1 "$csv" | grep -q ',comm_grad_allreduce_ms' || bad "CPU: no comm_grad_allreduce_ms column"
r=$(awk -F, 'NR == 1 { for (c = 13; c <= NF; c++) k++; next }
             $1 == "strong" && $2 == 2 { s = 0; for (c = 13; c <= NF; c++) s += $c
                                          d = s - $12; d = d < 0 ? -d : d
                                          print ($12 > 0 && d <= 0.0005 * k + 1e-9) ? "ok" : "sum " s " total " $12 }' "$csv")
want "CPU: strong P=2 comm columns sum to comm_ms_per_step" "$r" ok
if command -v gnuplot > /dev/null 2>&1; then
  [ -s "$T/cpu/scaling.png" ] && echo "ok: CPU: scaling.png" || bad "CPU: no scaling.png"
fi
exit $fail
