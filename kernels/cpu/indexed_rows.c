/* indexed_rows.c - dot products of rows picked by an index list with dense
   rows (the routed feed-forward's score gradient; gathers and scatters of
   indexed rows are gather.c's). Each output is one thread's, so the results
   do not depend on the thread count. */
#include "cpu.h"

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
