/* ops.c - the CPU device's kernel table. */
#include "cpu.h"

const c5k_ops c5k_cpu_ops = {
  .name = "cpu",
  .cd_sumexp = c5k_cd_sumexp_cpu,
  .cd_maxsumexp = c5k_cd_maxsumexp_cpu,
  .cd_output = c5k_cd_output_cpu,
  .cd_gdot = c5k_cd_gdot_cpu,
  .cd_backward = c5k_cd_backward_cpu,
  .topk_hist = c5k_topk_hist_cpu,
  .topk_count_eq = c5k_topk_count_eq_cpu,
  .topk_select = c5k_topk_select_cpu,
  .gemm = c5k_gemm_cpu,
  .gemm_ex = c5k_gemm_ex_cpu,
  .rmsnorm_forward = c5k_rmsnorm_forward_cpu,
  .rmsnorm_backward = c5k_rmsnorm_backward_cpu,
  .layernorm_forward = c5k_layernorm_forward_cpu,
  .layernorm_backward = c5k_layernorm_backward_cpu,
  .gelu_forward = c5k_gelu_forward_cpu,
  .gelu_backward = c5k_gelu_backward_cpu,
  .colsum = c5k_colsum_cpu,
  .gemm_acc = c5k_gemm_acc_cpu,
  .grad_flush = c5k_grad_flush_cpu,
  .local_attn_forward = c5k_local_attn_forward_cpu,
  .local_attn_backward = c5k_local_attn_backward_cpu,
};
