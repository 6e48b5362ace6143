/* mask.c - masks formed from positions on the CPU: the autoregressive
   attention's gathered keys that lie before its query window. Each entry is
   written once, so the thread count changes nothing. */
#include "cpu.h"

c5_status c5k_mask_before_cpu(c5k_ctx *ctx, long rows, long n, const long *pos, const long *lim, uint8_t *mask)
{
  (void)ctx;
#pragma omp parallel for schedule(static) if (rows * n > 65536)
  for (long r = 0; r < rows; r++)
    for (long j = 0; j < n; j++) mask[r * n + j] = pos[r * n + j] < lim[r];
  return C5_OK;
}
