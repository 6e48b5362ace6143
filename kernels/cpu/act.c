/* act.c - exact (erf) GELU, forward and backward, on the CPU. */
#include <math.h>
#include "cpu.h"

#define GB 256   /* elements per vectorized erf/exp block */

/* y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) */
c5_status c5k_gelu_forward_cpu(c5k_ctx *ctx, const c5_real *x, long n, void *y_, c5_dtype ytype)
{
  if (ytype != C5_DTYPE_REAL)
    return C5K_ERR(C5_ERR_NOTIMPL, "gelu_forward: the CPU writes %s elements, not %s", c5_dtype_name(C5_DTYPE_REAL),
                   c5_dtype_name(ytype));
  c5_real *y = y_;
  long nb = (n + GB - 1) / GB;
#pragma omp parallel for schedule(static)
  for (long b = 0; b < nb; b++) {
    long i0 = b * GB, m = n - i0 < GB ? n - i0 : GB;
    c5_real t[GB];
    for (long i = 0; i < m; i++) t[i] = (c5_real)(x[i0 + i] * M_SQRT1_2);
    c5k_verf(t, m);
    for (long i = 0; i < m; i++) y[i0 + i] = (c5_real)(0.5 * x[i0 + i] * (1.0 + t[i]));
  }
  return C5_OK;
}

/* dx = dy (Phi(x) + x phi(x)); dx may alias dy. */
c5_status c5k_gelu_backward_cpu(c5k_ctx *ctx, const c5_real *x, const c5_real *dy, long n, c5_real *dx)
{
  const double inv_sqrt_2pi = 0.3989422804014327;
  long nb = (n + GB - 1) / GB;
#pragma omp parallel for schedule(static)
  for (long b = 0; b < nb; b++) {
    long i0 = b * GB, m = n - i0 < GB ? n - i0 : GB;
    c5_real e[GB], g[GB];
    for (long i = 0; i < m; i++) {
      e[i] = (c5_real)(x[i0 + i] * M_SQRT1_2);
      g[i] = (c5_real)(-0.5 * x[i0 + i] * x[i0 + i]);
    }
    c5k_verf(e, m);
    c5k_vexp(g, m);
    for (long i = 0; i < m; i++)
      dx[i0 + i] = (c5_real)(dy[i0 + i] * (0.5 * (1.0 + e[i]) + x[i0 + i] * inv_sqrt_2pi * g[i]));
  }
  return C5_OK;
}
