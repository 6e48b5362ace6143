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
};
