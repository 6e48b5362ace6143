/* ops.cu - the CUDA backend's kernel table. Only the ops on the GPU are
   filled: every other entry is NULL, and lib/ refuses a call that needs one
   with C5_ERR_NOTIMPL naming it (never a silent CPU fallback). */
#include "cuda_internal.cuh"

extern "C" {
c5_status c5k_find_nonfinite_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, long *, long *, double *);
c5_status c5k_gemm_cuda(c5k_ctx *, int, int, long, long, long, double, const c5_real *, long, const c5_real *, long,
                        double, c5_real *, long);
c5_status c5k_cd_forward_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, const double *, long, int,
                              double, double, double, double *, c5_real *);
c5_status c5k_cd_backward_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, int, const double *,
                               const c5_real *, const c5_real *, c5_real *);
c5_status c5k_topk_select_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, long, long, long, long *,
                               long *);
/* sliding-window attention (kernels/cuda/attn_local.cu) */
c5_status c5k_local_attn_forward_cuda(c5k_ctx *, const c5k_local_attn *, const void *, const void *, const void *,
                                      long, const uint8_t *, void *, long, double *, double *, uint8_t *);
c5_status c5k_local_attn_backward_cuda(c5k_ctx *, const c5k_local_attn *, const void *, const void *, const void *,
                                       long, const uint8_t *, const double *, const double *, const uint8_t *,
                                       const void *, const void *, long, void *, void *, void *, long);
int c5k_local_attn_bf16_cuda(c5k_ctx *, const c5k_local_attn *);
/* device-resident block orchestration (cuda-lib) */
c5_status c5k_index_rows_cuda(c5k_ctx *, long, long, const long *, long, long, long, long, long, long *, long);
/* ---- cuda-gather: moves, gathers, masks, router fills, cosine routing, rotary ---- */
c5_status c5k_copy2d_cuda(c5k_ctx *, void *, long, const void *, long, long, long);
c5_status c5k_memset2d_cuda(c5k_ctx *, void *, long, int, long, long);
c5_status c5k_add2d_cuda(c5k_ctx *, long, long, const c5_real *, long, c5_real *, long);
c5_status c5k_fill_rows_cuda(c5k_ctx *, long, long, const c5_real *, int, c5_real *, long);
c5_status c5k_gather_rows_cuda(c5k_ctx *, long, long, const long *, const c5_real *, const c5_real *, long, c5_real *);
c5_status c5k_scatter_rows_cuda(c5k_ctx *, long, long, const long *, const c5_real *, const c5_real *, const c5_real *,
                                int, int, c5_real *);
c5_status c5k_gather_scale_dot_cuda(c5k_ctx *, long, long, const long *, const c5_real *, const c5_real *,
                                    const c5_real *, c5_real *, c5_real *);
c5_status c5k_acc_rows_cuda(c5k_ctx *, long, long, const long *, const c5_real *, int, double *);
c5_status c5k_gather2d_cuda(c5k_ctx *, long, const long *, const void *, long, long, void *, long);
c5_status c5k_mask_before_cuda(c5k_ctx *, long, long, const long *, const long *, uint8_t *);
c5_status c5k_row_dot_cuda(c5k_ctx *, long, long, const long *, const c5_real *, const c5_real *, c5_real *);
c5_status c5k_route_gather_scores_cuda(c5k_ctx *, long, long, const long *, const long *, const long *,
                                       const c5_real *, const uint8_t *, int, c5_real *, c5_real *);
c5_status c5k_route_scatter_dscores_cuda(c5k_ctx *, long, long, const long *, const long *, const long *,
                                         const uint8_t *, const c5_real *, c5_real *);
c5_status c5k_broadcast_mask_cuda(c5k_ctx *, long, int, long, const uint8_t *, uint8_t *);
c5_status c5k_normal_fill_cuda(c5k_ctx *, long, long, long, uint64_t, c5_real *);
c5_status c5k_cosine_route_forward_cuda(c5k_ctx *, long, int, long, int, const c5_real *, const c5_real *, double,
                                        c5_real *, double *, double *);
c5_status c5k_cosine_route_backward_cuda(c5k_ctx *, long, int, long, int, const c5_real *, const c5_real *,
                                         const double *, const double *, double, c5_real *, c5_real *);
c5_status c5k_cosine_route_backward_w_cuda(c5k_ctx *, int, int, const c5_real *, const double *, double *);
c5_status c5k_rotary_table_cuda(c5k_ctx *, long, const long *, int, double *, double *);
c5_status c5k_rotary_cuda(c5k_ctx *, long, int, int, void *, c5_dtype, long, long, const double *, const double *);
c5_status c5k_rotary_transpose_cuda(c5k_ctx *, long, int, int, void *, c5_dtype, long, long, const double *,
                                    const double *);
/* ---- end cuda-gather ---- */
/* ---- cuda-rows: norms, GELU, gradient sums, elementwise, optimizer, init, embeddings, loss ---- */
c5_status c5k_rmsnorm_forward_cuda(c5k_ctx *, const c5_real *, const c5_real *, long, int, void *, c5_dtype, double *);
c5_status c5k_rmsnorm_backward_cuda(c5k_ctx *, const c5_real *, const c5_real *, const double *, const c5_real *, long,
                                    int, const c5_real *, c5_real *, double *);
c5_status c5k_layernorm_forward_cuda(c5k_ctx *, const c5_real *, const c5_real *, const c5_real *, long, int, double,
                                     void *, c5_dtype, double *, double *);
c5_status c5k_layernorm_backward_cuda(c5k_ctx *, const c5_real *, const c5_real *, const double *, const double *,
                                      const c5_real *, long, int, const c5_real *, c5_real *, double *, double *);
c5_status c5k_gelu_forward_cuda(c5k_ctx *, const c5_real *, long, void *, c5_dtype);
c5_status c5k_gelu_backward_cuda(c5k_ctx *, const c5_real *, const c5_real *, long, c5_real *);
c5_status c5k_colsum_cuda(c5k_ctx *, const c5_real *, long, int, double *);
c5_status c5k_gemm_acc_cuda(c5k_ctx *, int, int, long, long, long, double, const c5_real *, long, const c5_real *, long,
                            c5_real *, double *);
c5_status c5k_gemm_acc_ex_cuda(c5k_ctx *, int, int, long, long, long, double, const void *, c5_dtype, long,
                               const void *, c5_dtype, long, c5_real *, double *);
c5_status c5k_grad_flush_cuda(c5k_ctx *, double *, long, c5_real *);
c5_status c5k_axpy_cuda(c5k_ctx *, long, double, const c5_real *, c5_real *);
c5_status c5k_convert_cuda(c5k_ctx *, long, const c5_real *, void *, c5_dtype);
c5_status c5k_acc_add_cuda(c5k_ctx *, long, const double *, double *);
c5_status c5k_broadcast_row_cuda(c5k_ctx *, long, long, const c5_real *, c5_real *);
c5_status c5k_sumsq_cuda(c5k_ctx *, long, const c5_real *, double *, long *);
c5_status c5k_sumsq_dev_cuda(c5k_ctx *, long, const c5_real *, double *);
c5_status c5k_adamw_update_cuda(c5k_ctx *, const c5k_adamw *, long, const c5_real *, c5_real *, c5_real *, c5_real *);
c5_status c5k_init_fill_cuda(c5k_ctx *, int, uint64_t, double, long, c5_real *);
c5_status c5k_embedding_forward_cuda(c5k_ctx *, long, long, long, int, const int32_t *, const c5_real *,
                                     const c5_real *, c5_real *);
c5_status c5k_embedding_backward_cuda(c5k_ctx *, long, long, long, int, const int32_t *, const c5_real *, double *,
                                      double *);
c5_status c5k_xent_forward_cuda(c5k_ctx *, long, int, const c5_real *, const int32_t *, double *, double *, long *);
c5_status c5k_xent_backward_cuda(c5k_ctx *, long, int, const c5_real *, const int32_t *, const double *, double,
                                 c5_real *);
/* ---- end cuda-rows ---- */
/* ---- heavy attention (kernels/cuda/attn_heavy.cu) ---- */
c5_status c5k_heavy_kv_assemble_cuda(c5k_ctx *, const c5k_heavy_attn *, const c5_real *, const c5_real *,
                                     const c5_real *, c5_real *);
c5_status c5k_heavy_kv_score_backward_cuda(c5k_ctx *, const c5k_heavy_attn *, const c5_real *, const c5_real *,
                                           c5_real *, c5_real *);
c5_status c5k_heavy_null_kv_grad_cuda(c5k_ctx *, const c5k_heavy_attn *, const c5_real *, double *);
c5_status c5k_heavy_attn_forward_cuda(c5k_ctx *, const c5k_heavy_attn *, const c5_real *, const c5_real *,
                                      const uint8_t *, double *, c5_real *);
c5_status c5k_heavy_attn_backward_cuda(c5k_ctx *, const c5k_heavy_attn *, const c5_real *, const c5_real *,
                                       const uint8_t *, const double *, const c5_real *, const c5_real *, c5_real *,
                                       c5_real *);
/* ---- cuda-cdops: the per-step coordinate-descent and top-k ops (cd.cu, topk.cu; ragged rows, P > 1) ---- */
c5_status c5k_cd_sumexp_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, const double *, double,
                             double *, double *);
c5_status c5k_cd_maxsumexp_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, const double *, double,
                                double *);
c5_status c5k_cd_output_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, const double *, double,
                             c5_real *);
c5_status c5k_cd_gdot_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, const double *, double,
                           const c5_real *, const c5_real *, double *);
c5_status c5k_cd_backward_step_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, int, const double *,
                                    const double *, const double *, const double *, const c5_real *, const c5_real *,
                                    c5_real *);
c5_status c5k_topk_hist_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, const uint64_t *, int,
                             long *);
c5_status c5k_topk_count_eq_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, const uint64_t *,
                                 long *);
c5_status c5k_topk_select_step_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, const uint64_t *,
                                    const long *, long, long *, long *);
/* ---- end cuda-cdops ---- */
/* ---- fused Linear (linbias) ---- */
c5_status c5k_linear_cuda(c5k_ctx *, long, long, long, const void *, c5_dtype, const c5_real *, const c5_real *,
                          const c5_real *, c5_real *);
}

static c5k_ops cuda_ops(void)
{
  c5k_ops o = {};
  o.name = "cuda";
  o.find_nonfinite = c5k_find_nonfinite_cuda;
  o.gemm = c5k_gemm_cuda;
  o.gemm_ex = c5k_gemm_ex_cuda;
  o.cd_forward_dev = c5k_cd_forward_cuda;
  o.cd_backward_dev = c5k_cd_backward_cuda;
  o.topk_select_dev = c5k_topk_select_cuda;
  /* sliding-window attention (kernels/cuda/attn_local.cu) */
  o.local_attn_forward = c5k_local_attn_forward_cuda;
  o.local_attn_backward = c5k_local_attn_backward_cuda;
  o.local_attn_bf16 = c5k_local_attn_bf16_cuda;
  /* device-resident block orchestration (cuda-lib) */
  o.index_rows = c5k_index_rows_cuda;
  /* ---- cuda-gather ---- */
  o.copy2d = c5k_copy2d_cuda;
  o.memset2d = c5k_memset2d_cuda;
  o.add2d = c5k_add2d_cuda;
  o.fill_rows = c5k_fill_rows_cuda;
  o.gather_rows = c5k_gather_rows_cuda;
  o.scatter_rows = c5k_scatter_rows_cuda;
  o.gather_scale_dot = c5k_gather_scale_dot_cuda;
  o.acc_rows = c5k_acc_rows_cuda;
  o.gather2d = c5k_gather2d_cuda;
  o.mask_before = c5k_mask_before_cuda;
  o.row_dot = c5k_row_dot_cuda;
  o.route_gather_scores = c5k_route_gather_scores_cuda;
  o.route_scatter_dscores = c5k_route_scatter_dscores_cuda;
  o.broadcast_mask = c5k_broadcast_mask_cuda;
  o.normal_fill = c5k_normal_fill_cuda;
  o.cosine_route_forward = c5k_cosine_route_forward_cuda;
  o.cosine_route_backward = c5k_cosine_route_backward_cuda;
  o.cosine_route_backward_w = c5k_cosine_route_backward_w_cuda;
  o.rotary_table = c5k_rotary_table_cuda;
  o.rotary = c5k_rotary_cuda;
  o.rotary_transpose = c5k_rotary_transpose_cuda;
  /* ---- end cuda-gather ---- */
  /* ---- cuda-rows ---- */
  o.rmsnorm_forward = c5k_rmsnorm_forward_cuda;
  o.rmsnorm_backward = c5k_rmsnorm_backward_cuda;
  o.layernorm_forward = c5k_layernorm_forward_cuda;
  o.layernorm_backward = c5k_layernorm_backward_cuda;
  o.gelu_forward = c5k_gelu_forward_cuda;
  o.gelu_backward = c5k_gelu_backward_cuda;
  o.colsum = c5k_colsum_cuda;
  o.gemm_acc = c5k_gemm_acc_cuda;
  o.gemm_acc_ex = c5k_gemm_acc_ex_cuda;
  o.bf16_acts = c5k_bf16_acts_cuda;   /* gemm.cu; declared in cuda_internal.cuh */
  o.weights_bf16 = c5k_weights_bf16_cuda;
  o.grad_flush = c5k_grad_flush_cuda;
  o.axpy = c5k_axpy_cuda;
  o.convert = c5k_convert_cuda;
  o.acc_add = c5k_acc_add_cuda;
  o.broadcast_row = c5k_broadcast_row_cuda;
  o.sumsq = c5k_sumsq_cuda;
  o.adamw_update = c5k_adamw_update_cuda;
  o.init_fill = c5k_init_fill_cuda;
  o.embedding_forward = c5k_embedding_forward_cuda;
  o.embedding_backward = c5k_embedding_backward_cuda;
  o.xent_forward = c5k_xent_forward_cuda;
  o.xent_backward = c5k_xent_backward_cuda;
  /* ---- end cuda-rows ---- */
  /* ---- heavy attention (kernels/cuda/attn_heavy.cu) ---- */
  o.heavy_kv_assemble = c5k_heavy_kv_assemble_cuda;
  o.heavy_kv_score_backward = c5k_heavy_kv_score_backward_cuda;
  o.heavy_null_kv_grad = c5k_heavy_null_kv_grad_cuda;
  o.heavy_attn_forward = c5k_heavy_attn_forward_cuda;
  o.heavy_attn_backward = c5k_heavy_attn_backward_cuda;
  /* ---- cuda-cdops (the _step names: cd_backward_dev and topk_select_dev hold the plain ones) ---- */
  o.cd_sumexp = c5k_cd_sumexp_cuda;
  o.cd_maxsumexp = c5k_cd_maxsumexp_cuda;
  o.cd_output = c5k_cd_output_cuda;
  o.cd_gdot = c5k_cd_gdot_cuda;
  o.cd_backward = c5k_cd_backward_step_cuda;
  o.topk_hist = c5k_topk_hist_cuda;
  o.topk_count_eq = c5k_topk_count_eq_cuda;
  o.topk_select = c5k_topk_select_step_cuda;
  /* ---- end cuda-cdops ---- */
  /* ---- cuda-train ---- */
  o.sumsq_dev = c5k_sumsq_dev_cuda;
  /* ---- fused Linear (linbias) ---- */
  o.linear = c5k_linear_cuda;
  return o;
}

extern "C" const c5k_ops c5k_cuda_ops = cuda_ops();
