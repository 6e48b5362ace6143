/* cpu.h - the CPU kernels behind c5k_cpu_ops (private to kernels/cpu). */
#ifndef C5_KERNELS_CPU_H
#define C5_KERNELS_CPU_H
#include "kernels.h"

/* out[i] += sum over the np row parts of acc[p * stride + i], in part order,
   in double (out: a double gradient accumulator): the end of every
   fixed-partition parameter-gradient reduction. */
static inline void c5k_rowpart_add(const double *acc, long np, long stride, int cols, double *out)
{
  for (int i = 0; i < cols; i++) {
    double s = 0;
    for (long p = 0; p < np; p++) s += acc[p * stride + i];
    out[i] += s;
  }
}

long c5k_chunk_row(const c5k_rows *R, long c);
void c5k_chunk_range(const c5k_rows *R, long r, long c, long *j0, long *j1);

c5_status c5k_cd_sumexp_cpu(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *,
                            const double *, double, double *, double *);
c5_status c5k_cd_maxsumexp_cpu(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *,
                               const double *, double, double *);
c5_status c5k_cd_output_cpu(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *,
                            const double *, double, c5_real *);
c5_status c5k_cd_gdot_cpu(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *,
                          const double *, double, const c5_real *, const c5_real *, double *);
c5_status c5k_cd_backward_cpu(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, int,
                              const double *, const double *, const double *, const double *,
                              const c5_real *, const c5_real *, c5_real *);
c5_status c5k_topk_hist_cpu(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *,
                            const uint64_t *, int, long *);
c5_status c5k_topk_count_eq_cpu(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *,
                                const uint64_t *, long *);
c5_status c5k_topk_select_cpu(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *,
                              const uint64_t *, const long *, long, long *, long *);
c5_status c5k_gemm_cpu(c5k_ctx *, int, int, long, long, long, double, const c5_real *, long, const c5_real *,
                       long, double, c5_real *, long);
c5_status c5k_gemm_ex_cpu(c5k_ctx *, int, int, long, long, long, double, const void *, c5_dtype, long, long,
                          const void *, c5_dtype, long, long, double, void *, c5_dtype, long, long, long, c5_dtype);
c5_status c5k_rmsnorm_forward_cpu(c5k_ctx *, const c5_real *, const c5_real *, long, int, void *, c5_dtype, double *);
c5_status c5k_rmsnorm_backward_cpu(c5k_ctx *, const c5_real *, const c5_real *, const double *, const c5_real *,
                                   long, int, const c5_real *, c5_real *, double *);
c5_status c5k_layernorm_forward_cpu(c5k_ctx *, const c5_real *, const c5_real *, const c5_real *, long, int, double,
                                    void *, c5_dtype, double *, double *);
c5_status c5k_layernorm_backward_cpu(c5k_ctx *, const c5_real *, const c5_real *, const double *, const double *,
                                     const c5_real *, long, int, const c5_real *, c5_real *, double *, double *);
c5_status c5k_gelu_forward_cpu(c5k_ctx *, const c5_real *, long, void *, c5_dtype);
c5_status c5k_gelu_backward_cpu(c5k_ctx *, const c5_real *, const c5_real *, long, c5_real *);
c5_status c5k_colsum_cpu(c5k_ctx *, const c5_real *, long, int, double *);
c5_status c5k_gemm_acc_cpu(c5k_ctx *, int, int, long, long, long, double, const c5_real *, long, const c5_real *,
                           long, c5_real *, double *);
c5_status c5k_gemm_acc_ex_cpu(c5k_ctx *, int, int, long, long, long, double, const void *, c5_dtype, long,
                              const void *, c5_dtype, long, c5_real *, double *);
int c5k_bf16_acts_cpu(c5k_ctx *);
c5_status c5k_weights_bf16_cpu(c5k_ctx *, const c5_real *, long);
c5_status c5k_grad_flush_cpu(c5k_ctx *, double *, long, c5_real *);
c5_status c5k_local_attn_forward_cpu(c5k_ctx *, const c5k_local_attn *, const void *, const void *, const void *,
                                     long, const uint8_t *, void *, long, double *, double *, uint8_t *);
c5_status c5k_local_attn_backward_cpu(c5k_ctx *, const c5k_local_attn *, const void *, const void *, const void *,
                                      long, const uint8_t *, const double *, const double *, const uint8_t *,
                                      const void *, const void *, long, void *, void *, void *, long);
int c5k_local_attn_bf16_cpu(c5k_ctx *, const c5k_local_attn *);
/* routed attention: gathers, scatters, halo (copy2d.c, gather.c) */
c5_status c5k_copy2d_cpu(c5k_ctx *, void *, long, const void *, long, long, long);
c5_status c5k_memset2d_cpu(c5k_ctx *, void *, long, int, long, long);
c5_status c5k_add2d_cpu(c5k_ctx *, long, long, const c5_real *, long, c5_real *, long);
c5_status c5k_fill_rows_cpu(c5k_ctx *, long, long, const c5_real *, int, c5_real *, long);
c5_status c5k_gather_rows_cpu(c5k_ctx *, long, long, const long *, const c5_real *, const c5_real *, long, c5_real *);
c5_status c5k_scatter_rows_cpu(c5k_ctx *, long, long, const long *, const c5_real *, const c5_real *,
                               const c5_real *, int, int, c5_real *);
c5_status c5k_gather_scale_dot_cpu(c5k_ctx *, long, long, const long *, const c5_real *, const c5_real *,
                                   const c5_real *, c5_real *, c5_real *);
c5_status c5k_acc_rows_cpu(c5k_ctx *, long, long, const long *, const c5_real *, int, double *);
/* router, cd, feed-forward */
c5_status c5k_find_nonfinite_cpu(c5k_ctx *, const c5k_rows *, const c5_real *, long *, long *, double *);
c5_status c5k_cosine_route_forward_cpu(c5k_ctx *, long, int, long, int, const c5_real *, const c5_real *, double,
                                       c5_real *, double *, double *);
c5_status c5k_cosine_route_backward_cpu(c5k_ctx *, long, int, long, int, const c5_real *, const c5_real *,
                                        const double *, const double *, double, c5_real *, c5_real *);
c5_status c5k_cosine_route_backward_w_cpu(c5k_ctx *, int, int, const c5_real *, const double *, double *);
c5_status c5k_broadcast_mask_cpu(c5k_ctx *, long, int, long, const uint8_t *, uint8_t *);
c5_status c5k_normal_fill_cpu(c5k_ctx *, long, long, long, uint64_t, c5_real *);
c5_status c5k_route_gather_scores_cpu(c5k_ctx *, long, long, const long *, const long *, const long *,
                                      const c5_real *, const uint8_t *, int, c5_real *, c5_real *);
c5_status c5k_route_scatter_dscores_cpu(c5k_ctx *, long, long, const long *, const long *, const long *,
                                        const uint8_t *, const c5_real *, c5_real *);
c5_status c5k_row_dot_cpu(c5k_ctx *, long, long, const long *, const c5_real *, const c5_real *, c5_real *);
c5_status c5k_axpy_cpu(c5k_ctx *, long, double, const c5_real *, c5_real *);
c5_status c5k_convert_cpu(c5k_ctx *, long, const c5_real *, void *, c5_dtype);
c5_status c5k_acc_add_cpu(c5k_ctx *, long, const double *, double *);
c5_status c5k_broadcast_row_cpu(c5k_ctx *, long, long, const c5_real *, c5_real *);
/* heavy attention */
c5_status c5k_rotary_table_cpu(c5k_ctx *, long, const long *, int, double *, double *);
c5_status c5k_rotary_cpu(c5k_ctx *, long, int, int, void *, c5_dtype, long, long, const double *, const double *);
c5_status c5k_rotary_transpose_cpu(c5k_ctx *, long, int, int, void *, c5_dtype, long, long, const double *,
                                   const double *);
c5_status c5k_heavy_kv_assemble_cpu(c5k_ctx *, const c5k_heavy_attn *, const c5_real *, const c5_real *,
                                    const c5_real *, c5_real *);
c5_status c5k_heavy_kv_score_backward_cpu(c5k_ctx *, const c5k_heavy_attn *, const c5_real *, const c5_real *,
                                          c5_real *, c5_real *);
c5_status c5k_heavy_null_kv_grad_cpu(c5k_ctx *, const c5k_heavy_attn *, const c5_real *, double *);
c5_status c5k_heavy_attn_forward_cpu(c5k_ctx *, const c5k_heavy_attn *, const c5_real *, const c5_real *,
                                     const uint8_t *, double *, c5_real *);
c5_status c5k_heavy_attn_backward_cpu(c5k_ctx *, const c5k_heavy_attn *, const c5_real *, const c5_real *,
                                      const uint8_t *, const double *, const c5_real *, const c5_real *, c5_real *,
                                      c5_real *);
/* kv exchange, autoregressive attention */
c5_status c5k_gather2d_cpu(c5k_ctx *, long, const long *, const void *, long, long, void *, long);
c5_status c5k_mask_before_cpu(c5k_ctx *, long, long, const long *, const long *, uint8_t *);
/* optimizer */
c5_status c5k_sumsq_cpu(c5k_ctx *, long, const c5_real *, double *, long *);
c5_status c5k_sumsq_dev_cpu(c5k_ctx *, long, const c5_real *, double *);
c5_status c5k_adamw_update_cpu(c5k_ctx *, const c5k_adamw *, long, const c5_real *, c5_real *, c5_real *, c5_real *);
/* model: initialization, embeddings, the masked-byte loss */
c5_status c5k_init_fill_cpu(c5k_ctx *, int, uint64_t, double, long, c5_real *);
c5_status c5k_embedding_forward_cpu(c5k_ctx *, long, long, long, int, const int32_t *, const c5_real *,
                                    const c5_real *, c5_real *);
c5_status c5k_embedding_backward_cpu(c5k_ctx *, long, long, long, int, const int32_t *, const c5_real *, double *,
                                     double *);
c5_status c5k_xent_forward_cpu(c5k_ctx *, long, int, const c5_real *, const int32_t *, double *, double *, long *);
c5_status c5k_xent_backward_cpu(c5k_ctx *, long, int, const c5_real *, const int32_t *, const double *, double,
                                c5_real *);
/* device-resident block orchestration (cuda-lib) */
c5_status c5k_index_rows_cpu(c5k_ctx *, long, long, const long *, long, long, long, long, long, long *, long);
/* fused Linear (linbias) */
c5_status c5k_linear_cpu(c5k_ctx *, long, long, long, const void *, c5_dtype, const c5_real *, const c5_real *,
                         const c5_real *, c5_real *);
#endif
