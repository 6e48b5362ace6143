/* ops.cu - the CUDA backend's kernel table. Only the ops on the GPU are
   filled: every other entry is NULL, and lib/ refuses a call that needs one
   with C5_ERR_NOTIMPL naming it (never a silent CPU fallback). */
#include "cuda_internal.cuh"

extern "C" {
c5_status c5k_find_nonfinite_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, long *, long *, double *);
c5_status c5k_gemm_cuda(c5k_ctx *, int, int, long, long, long, double, const c5_real *, long, const c5_real *, long,
                        double, c5_real *, long);
c5_status c5k_gemm_ex_cuda(c5k_ctx *, int, int, long, long, long, double, const void *, c5_dtype, long, long,
                           const void *, c5_dtype, long, long, double, void *, c5_dtype, long, long, long, c5_dtype);
c5_status c5k_cd_forward_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, const double *, long, int,
                              double, double, double, double *, c5_real *);
c5_status c5k_cd_backward_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, int, const double *,
                               const c5_real *, const c5_real *, c5_real *);
c5_status c5k_topk_select_cuda(c5k_ctx *, const c5k_rows *, const c5_real *, const uint8_t *, long, long, long, long *,
                               long *);
/* ---- cuda-rows: norms, GELU, gradient sums, elementwise, optimizer, init, embeddings, loss ---- */
c5_status c5k_rmsnorm_forward_cuda(c5k_ctx *, const c5_real *, const c5_real *, long, int, c5_real *, double *);
c5_status c5k_rmsnorm_backward_cuda(c5k_ctx *, const c5_real *, const c5_real *, const double *, const c5_real *, long,
                                    int, c5_real *, double *);
c5_status c5k_layernorm_forward_cuda(c5k_ctx *, const c5_real *, const c5_real *, const c5_real *, long, int, double,
                                     c5_real *, double *, double *);
c5_status c5k_layernorm_backward_cuda(c5k_ctx *, const c5_real *, const c5_real *, const double *, const double *,
                                      const c5_real *, long, int, c5_real *, double *, double *);
c5_status c5k_gelu_forward_cuda(c5k_ctx *, const c5_real *, long, c5_real *);
c5_status c5k_gelu_backward_cuda(c5k_ctx *, const c5_real *, const c5_real *, long, c5_real *);
c5_status c5k_colsum_cuda(c5k_ctx *, const c5_real *, long, int, double *);
c5_status c5k_gemm_acc_cuda(c5k_ctx *, int, int, long, long, long, double, const c5_real *, long, const c5_real *, long,
                            c5_real *, double *);
c5_status c5k_grad_flush_cuda(c5k_ctx *, double *, long, c5_real *);
c5_status c5k_axpy_cuda(c5k_ctx *, long, double, const c5_real *, c5_real *);
c5_status c5k_acc_add_cuda(c5k_ctx *, long, const double *, double *);
c5_status c5k_broadcast_row_cuda(c5k_ctx *, long, long, const c5_real *, c5_real *);
c5_status c5k_sumsq_cuda(c5k_ctx *, long, const c5_real *, double *, long *);
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
  /* ---- cuda-rows ---- */
  o.rmsnorm_forward = c5k_rmsnorm_forward_cuda;
  o.rmsnorm_backward = c5k_rmsnorm_backward_cuda;
  o.layernorm_forward = c5k_layernorm_forward_cuda;
  o.layernorm_backward = c5k_layernorm_backward_cuda;
  o.gelu_forward = c5k_gelu_forward_cuda;
  o.gelu_backward = c5k_gelu_backward_cuda;
  o.colsum = c5k_colsum_cuda;
  o.gemm_acc = c5k_gemm_acc_cuda;
  o.grad_flush = c5k_grad_flush_cuda;
  o.axpy = c5k_axpy_cuda;
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
  return o;
}

extern "C" const c5k_ops c5k_cuda_ops = cuda_ops();
