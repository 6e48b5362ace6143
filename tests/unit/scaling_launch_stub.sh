#!/bin/sh
# scaling_launch_stub.sh P COMMAND... - a stand-in for jobs/scaling.sh's
# launcher (C5_LAUNCH) in tests without GPUs: appends "LAUNCH P COMMAND..."
# and the NCCL_NVLS_ENABLE it was given to $STUB_LOG, then prints colt5-bench
# block's lines for COMMAND's --n with made-up numbers that the tests can
# predict: a step takes n / P / 1e4 ms plus 1 ms per doubling of P; TFLOP/s
# per rank is 100 at P = 1 and 100 / (1 + (P - 1) / 20) at P; at P > 1 the
# router's allreduce takes 0.25 ms and the halo's sendrecv 0.5 ms per
# doubling, the gradients' allreduce 0.125 ms at every P.
echo "LAUNCH $*" >> "${STUB_LOG:?}"
echo "NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE-unset}" >> "$STUB_LOG"
p=$1; shift
n=; prev=
for a in "$@"; do [ "$prev" = --n ] && n=$a; prev=$a; done
awk -v p="$p" -v n="$n" 'BEGIN {
  l = 0; for (q = p; q > 1; q /= 2) l++
  ms = n / p / 1e4 + l; tf = 100 / (1 + (p - 1) / 20); c = 0.75 * l + 0.125
  printf "# colt5-bench block: stub, P = %d ranks\n", p
  printf "colt5 op=block pass=fwd    n=%-6d P=%d median_ms=%9.3f tokens_per_s=%9.0f tflops=%7.2f tflops_per_rank=%7.2f\n", n, p, ms / 3, n / ms * 3e3, tf * p, tf
  printf "colt5 op=block pass=fwdbwd n=%-6d P=%d median_ms=%9.3f tokens_per_s=%9.0f tflops=%7.2f tflops_per_rank=%7.2f\n", n, p, ms, n / ms * 1e3, tf * p, tf
  if (p > 1) {
    printf "comm n=%-6d P=%d phase=router   coll=allreduce      calls_per_step=   3.0 bytes_per_step=       100 ms_per_step=%8.3f\n", n, p, 0.25 * l
    printf "comm n=%-6d P=%d phase=halo     coll=sendrecv       calls_per_step=   2.0 bytes_per_step=       100 ms_per_step=%8.3f\n", n, p, 0.5 * l
  }
  printf "comm n=%-6d P=%d phase=grad     coll=allreduce      calls_per_step=   1.0 bytes_per_step=       100 ms_per_step=%8.3f\n", n, p, 0.125
  printf "comm n=%-6d P=%d total_ms_per_step=%.3f share=%.1f%% (sum over collectives of the slowest rank)\n", n, p, c, 100 * c / ms
}'
