/* act.cu - exact (erf) GELU on the GPU, forward and backward, as
   kernels/cpu/act.c: the erf and exp arguments rounded to the working
   precision and evaluated there (the CPU's SLEEF block functions), the rest
   in double and rounded once (the forward's output may be rounded once more, to bf16: kernels.h ytype). */
#include <math.h>
#include "rowsum.cuh"

/* y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)); 16 bytes of x a thread where aligned (c5k_ew2). Y: c5_real, or bf16
   (kernels.h ytype: the c5_real value rounded once more, half the bytes written) */
template <typename Y>
__global__ void gelu_fwd(const c5_real *x, long n, Y *y)
{
  c5k_ew2(n, x, x, y, [](c5_real u, c5_real) {
    const c5_real t = erf((c5_real)(u * M_SQRT1_2));
    return (c5_real)(0.5 * u * (1.0 + t));
  });
}

/* dx = dy (Phi(x) + x phi(x)); dx may alias dy. */
__global__ void gelu_bwd(const c5_real *x, const c5_real *dy, long n, c5_real *dx)
{
  c5k_ew2(n, x, dy, dx, [](c5_real u, c5_real d) {
    const double inv_sqrt_2pi = 0.3989422804014327;
    const c5_real e = erf((c5_real)(u * M_SQRT1_2)), g = exp((c5_real)(-0.5 * u * u));
    return (c5_real)(d * (0.5 * (1.0 + e) + u * inv_sqrt_2pi * g));
  });
}

extern "C" c5_status c5k_gelu_forward_cuda(c5k_ctx *ctx, const c5_real *x, long n, void *y, c5_dtype ytype)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "gelu_forward", &dev));
  C5_CALL_K(c5k_cuda_ytype(ytype, "gelu_forward"));
  if (n <= 0) return C5_OK;
  const unsigned blocks = c5k_grid_for(c5k_ew_units(n), 256);
  if (ytype == C5_DTYPE_BF16) gelu_fwd<<<blocks, 256, 0, dev->stream>>>(x, n, (__nv_bfloat16 *)y);
  else gelu_fwd<<<blocks, 256, 0, dev->stream>>>(x, n, (c5_real *)y);
  C5K_CUDA_LAUNCHED("gelu_forward");
  return C5_OK;
}

extern "C" c5_status c5k_gelu_backward_cuda(c5k_ctx *ctx, const c5_real *x, const c5_real *dy, long n, c5_real *dx)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "gelu_backward", &dev));
  if (n <= 0) return C5_OK;
  gelu_bwd<<<c5k_grid_for(c5k_ew_units(n), 256), 256, 0, dev->stream>>>(x, dy, n, dx);
  C5K_CUDA_LAUNCHED("gelu_backward");
  return C5_OK;
}
