/* elementwise.c - whole-array fills and adds (residuals, bias rows,
   gradient accumulators); elementwise, so the thread count changes nothing. */
#include <string.h>
#include "cpu.h"

#define PAR_MIN 65536   /* below this, threads cost more than they save */

c5_status c5k_axpy_cpu(c5k_ctx *ctx, long n, double alpha, const c5_real *x, c5_real *y)
{
  (void)ctx;
  const c5_real a = (c5_real)alpha;
  if (a == 1) {   /* the residual adds: y + x, bit for bit */
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (long i = 0; i < n; i++) y[i] += x[i];
  } else {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (long i = 0; i < n; i++) y[i] += a * x[i];
  }
  return C5_OK;
}

c5_status c5k_acc_add_cpu(c5k_ctx *ctx, long n, const double *src, double *acc)
{
  (void)ctx;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
  for (long i = 0; i < n; i++) acc[i] += src[i];
  return C5_OK;
}

c5_status c5k_broadcast_row_cpu(c5k_ctx *ctx, long rows, long cols, const c5_real *v, c5_real *y)
{
  (void)ctx;
  for (long r = 0; r < rows; r++) memcpy(y + r * cols, v, (size_t)cols * sizeof *y);
  return C5_OK;
}

c5_status c5k_convert_cpu(c5k_ctx *ctx, long n, const c5_real *x, void *y, c5_dtype ytype)
{
  (void)ctx;
  if (ytype != C5_DTYPE_REAL)
    return C5K_ERR(C5_ERR_NOTIMPL, "convert: the CPU writes %s elements, not %s", c5_dtype_name(C5_DTYPE_REAL),
                   c5_dtype_name(ytype));
  if (n > 0) memcpy(y, x, (size_t)n * sizeof *x);
  return C5_OK;
}
