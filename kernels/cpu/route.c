/* route.c - the router's per-token fills around coordinate descent and
   top-k (kernels.h: route_*, broadcast_mask, normal_fill): between its rows
   of tokens and the selections a forward made. */
#include <math.h>
#include <string.h>
#include "cpu.h"

c5_status c5k_broadcast_mask_cpu(c5k_ctx *ctx, long batch, int routes, long n, const uint8_t *mask, uint8_t *out)
{
  (void)ctx;
  for (long row = 0; row < batch * routes; row++) memcpy(out + row * n, mask + (row / routes) * n, (size_t)n);
  return C5_OK;
}

/* SplitMix64 of (seed, row, column), then Box-Muller: a draw that depends on
   nothing but its global coordinates. */
static double normal_draw(uint64_t seed, long row, long j)
{
  uint64_t z = seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(row + 1)) ^ (0xbf58476d1ce4e5b9ull * (uint64_t)(j + 1));
  uint64_t u[2];
  for (int i = 0; i < 2; i++) {
    z += 0x9e3779b97f4a7c15ull;
    uint64_t x = z;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    u[i] = x ^ (x >> 31);
  }
  double u1 = ((u[0] >> 11) + 1.0) / 9007199254740993.0, u2 = (u[1] >> 11) / 9007199254740992.0;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

c5_status c5k_normal_fill_cpu(c5k_ctx *ctx, long rows, long n, long col0, uint64_t seed, c5_real *y)
{
  (void)ctx;
#pragma omp parallel for schedule(static)
  for (long row = 0; row < rows; row++)
    for (long j = 0; j < n; j++) y[row * n + j] = (c5_real)normal_draw(seed, row, col0 + j);
  return C5_OK;
}

c5_status c5k_route_gather_scores_cpu(c5k_ctx *ctx, long rows, long n, const long *start, const long *count,
                                      const long *lpos, const c5_real *y, const uint8_t *mask, int straight_through,
                                      c5_real *yval, c5_real *score)
{
  (void)ctx;
  for (long row = 0; row < rows; row++)
    for (long e = start[row]; e < start[row] + count[row]; e++) {
      long t = row * n + lpos[e];
      int keep = !mask || mask[t];
      yval[e] = y[t];
      score[e] = !keep ? 0 : straight_through ? 1 : y[t];
    }
  return C5_OK;
}

c5_status c5k_route_scatter_dscores_cpu(c5k_ctx *ctx, long rows, long n, const long *start, const long *count,
                                        const long *lpos, const uint8_t *mask, const c5_real *dscore, c5_real *g)
{
  (void)ctx;
  memset(g, 0, (size_t)(rows * n) * sizeof *g);
  for (long row = 0; row < rows; row++)
    for (long e = start[row]; e < start[row] + count[row]; e++) {
      long t = row * n + lpos[e];
      if (!mask || mask[t]) g[t] += dscore[e];
    }
  return C5_OK;
}
