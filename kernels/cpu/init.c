/* init.c - parameter initialization on the CPU (kernels.h init_fill): a
   counter-based draw per element, so a value depends on its key and index
   only, never on the thread count or on which rank fills it. */
#include <math.h>
#include "cpu.h"
#include "init_draw.h"

#define GOLDEN 0x9e3779b97f4a7c15ull

/* the SplitMix64 finalizer: a bijection of 64 bits that mixes every input bit into every output bit */
static uint64_t mix(uint64_t x)
{
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

c5_status c5k_init_fill_cpu(c5k_ctx *ctx, int kind, uint64_t key, double scale, long n, c5_real *y)
{
  (void)ctx;
  if (kind != C5K_FILL_CONST && kind != C5K_FILL_NORMAL && kind != C5K_FILL_UNIFORM)
    return C5K_ERR(C5_ERR_ARG, "init_fill: unknown kind %d", kind);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (long e = 0; e < n; e++) {
    uint64_t z0 = mix(key + GOLDEN * (2 * (uint64_t)e + 1)), z1 = mix(key + GOLDEN * (2 * (uint64_t)e + 2));
    double v;
    if (kind == C5K_FILL_CONST) v = scale;
    else if (kind == C5K_FILL_UNIFORM) v = scale * (2.0 * ((double)(z0 >> 11) * 0x1p-53) - 1.0);
    else {
      /* u1 in (0, 1]: the log is finite */
      double u1 = ((double)(z0 >> 11) + 1.0) * 0x1p-53, u2 = (double)(z1 >> 11) * 0x1p-53;
      v = scale * sqrt(-2.0 * c5k_draw_log(u1)) * c5k_draw_cos(6.283185307179586 * u2);
    }
    y[e] = (c5_real)v;
  }
  return C5_OK;
}
