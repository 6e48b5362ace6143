/* indexed_rows.c - rows of a matrix picked by an index list: gather,
   scatter-add and dot products (the routed feed-forward's routed tokens).
   Each output row is one thread's, so the results do not depend on the
   thread count; scatter_add_rows needs distinct indices for that. */
#include <string.h>
#include "cpu.h"

c5_status c5k_scatter_add_rows_cpu(c5k_ctx *ctx, long n, long dim, const long *idx, const c5_real *scale,
                                   const c5_real *src, c5_real *dst)
{
  (void)ctx;
#pragma omp parallel for schedule(static) if (n * dim > 65536)
  for (long i = 0; i < n; i++) {
    const c5_real *s = src + i * dim;
    c5_real *d = dst + idx[i] * dim;
    if (!scale) {
      for (long k = 0; k < dim; k++) d[k] += s[k];
      continue;
    }
    c5_real a = scale[i];
    for (long k = 0; k < dim; k++) d[k] += s[k] * a;
  }
  return C5_OK;
}

c5_status c5k_row_dot_cpu(c5k_ctx *ctx, long n, long dim, const long *idx, const c5_real *a, const c5_real *b,
                          c5_real *out)
{
  (void)ctx;
#pragma omp parallel for schedule(static) if (n * dim > 65536)
  for (long i = 0; i < n; i++) {
    const c5_real *ar = a + (idx ? idx[i] : i) * dim, *br = b + i * dim;
    double acc = 0;
    for (long k = 0; k < dim; k++) acc += (double)ar[k] * br[k];
    out[i] = (c5_real)acc;
  }
  return C5_OK;
}
