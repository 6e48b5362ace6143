/* copy2d.c - strided block moves on the CPU (cudaMemcpy2D's shape): the
   halo's packing and unpacking, the halo gradients added by their owners,
   and a vector under every row (null_q_token). Each element is moved or
   added once, so results do not depend on the thread count. */
#include <string.h>
#include "cpu.h"

/* Worth threads only when a block is large; the halo moves are small. */
#define C5K_MOVE_PAR (1L << 16)

c5_status c5k_copy2d_cpu(c5k_ctx *ctx, void *dst, long dpitch, const void *src, long spitch, long width, long height)
{
  (void)ctx;
  if (width <= 0) return C5_OK;
#pragma omp parallel for schedule(static) if (width * height > C5K_MOVE_PAR)
  for (long i = 0; i < height; i++) memcpy((char *)dst + i * dpitch, (const char *)src + i * spitch, (size_t)width);
  return C5_OK;
}

c5_status c5k_memset2d_cpu(c5k_ctx *ctx, void *dst, long dpitch, int value, long width, long height)
{
  (void)ctx;
  if (width <= 0) return C5_OK;
#pragma omp parallel for schedule(static) if (width * height > C5K_MOVE_PAR)
  for (long i = 0; i < height; i++) memset((char *)dst + i * dpitch, value, (size_t)width);
  return C5_OK;
}

c5_status c5k_add2d_cpu(c5k_ctx *ctx, long rows, long cols, const c5_real *src, long lds, c5_real *dst, long ldd)
{
  (void)ctx;
#pragma omp parallel for schedule(static) if (rows * cols > C5K_MOVE_PAR)
  for (long i = 0; i < rows; i++)
    for (long k = 0; k < cols; k++) dst[i * ldd + k] += src[i * lds + k];
  return C5_OK;
}

c5_status c5k_fill_rows_cpu(c5k_ctx *ctx, long rows, long dim, const c5_real *vec, int accumulate, c5_real *dst,
                            long ldd)
{
  (void)ctx;
#pragma omp parallel for schedule(static) if (rows * dim > C5K_MOVE_PAR)
  for (long i = 0; i < rows; i++) {
    c5_real *d = dst + i * ldd;
    if (accumulate) { if (vec) for (long k = 0; k < dim; k++) d[k] += vec[k]; }
    else for (long k = 0; k < dim; k++) d[k] = vec ? vec[k] : 0;
  }
  return C5_OK;
}
