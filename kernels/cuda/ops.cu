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
/* sliding-window attention (kernels/cuda/attn_local.cu) */
c5_status c5k_local_attn_forward_cuda(c5k_ctx *, const c5k_local_attn *, const c5_real *, const c5_real *,
                                      const c5_real *, long, const uint8_t *, c5_real *, long, double *, double *,
                                      uint8_t *);
c5_status c5k_local_attn_backward_cuda(c5k_ctx *, const c5k_local_attn *, const c5_real *, const c5_real *,
                                       const c5_real *, long, const uint8_t *, const double *, const double *,
                                       const uint8_t *, const c5_real *, long, c5_real *, c5_real *, c5_real *);
/* device-resident block orchestration (cuda-lib) */
c5_status c5k_index_rows_cuda(c5k_ctx *, long, long, const long *, long, long, long, long, long, long *, long);
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
  /* device-resident block orchestration (cuda-lib) */
  o.index_rows = c5k_index_rows_cuda;
  return o;
}

extern "C" const c5k_ops c5k_cuda_ops = cuda_ops();
