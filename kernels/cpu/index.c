/* index.c - index arithmetic on index arrays on the CPU (kernels.h
   index_rows): each entry written once from its own inputs, so the thread
   count changes nothing. */
#include "cpu.h"

c5_status c5k_index_rows_cpu(c5k_ctx *ctx, long rows, long n, const long *src, long lds, long add, long div, long mod,
                             long step, long *dst, long ldd)
{
  (void)ctx;
  if (rows < 0 || n < 0 || div < 1 || mod < 0)
    return C5K_ERR(C5_ERR_ARG, "index_rows: rows = %ld, n = %ld, div = %ld, mod = %ld (need >= 0, >= 0, >= 1, >= 0)",
                   rows, n, div, mod);
#pragma omp parallel for schedule(static) if (rows * n > 65536)
  for (long r = 0; r < rows; r++) {
    const long q = r / div, base = add + (mod ? q % mod : q) * step;
    for (long j = 0; j < n; j++) dst[r * ldd + j] = (src ? src[r * lds + j] : j) + base;
  }
  return C5_OK;
}
