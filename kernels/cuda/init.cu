/* init.cu - parameter initialization on the GPU (kernels.h init_fill), as
   kernels/cpu/init.c: the same counter-based draw per element, so a value
   depends on (key, index) only, and the same operations (kernels/init_draw.h
   for the log and cos), so the GPU fills the CPU's bits. */
#include <math.h>
#include "rowsum.cuh"
#include "init_draw.h"

#define GOLDEN 0x9e3779b97f4a7c15ull

/* the SplitMix64 finalizer (init.c's mix) */
static __device__ __forceinline__ unsigned long long mix(unsigned long long x)
{
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Every product and sum rounded alone (no fused multiply-add): the CPU's operations, one by one. */
__global__ void init_fill_k(int kind, unsigned long long key, double scale, long n, c5_real *y)
{
  for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < n; e += (long)gridDim.x * blockDim.x) {
    const unsigned long long z0 = mix(key + GOLDEN * (2 * (unsigned long long)e + 1)),
                             z1 = mix(key + GOLDEN * (2 * (unsigned long long)e + 2));
    double v;
    if (kind == C5K_FILL_CONST) v = scale;
    else if (kind == C5K_FILL_UNIFORM)
      v = __dmul_rn(scale, __dsub_rn(__dmul_rn(2.0, __dmul_rn((double)(z0 >> 11), 0x1p-53)), 1.0));
    else {
      const double u1 = __dmul_rn(__dadd_rn((double)(z0 >> 11), 1.0), 0x1p-53),
                   u2 = __dmul_rn((double)(z1 >> 11), 0x1p-53);
      v = __dmul_rn(__dmul_rn(scale, __dsqrt_rn(__dmul_rn(-2.0, c5k_draw_log(u1)))),
                   c5k_draw_cos(__dmul_rn(6.283185307179586, u2)));
    }
    y[e] = (c5_real)v;
  }
}

extern "C" c5_status c5k_init_fill_cuda(c5k_ctx *ctx, int kind, uint64_t key, double scale, long n, c5_real *y)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "init_fill", &dev));
  if (kind != C5K_FILL_CONST && kind != C5K_FILL_NORMAL && kind != C5K_FILL_UNIFORM)
    return C5K_ERR(C5_ERR_ARG, "init_fill: unknown kind %d", kind);
  if (n <= 0) return C5_OK;
  init_fill_k<<<c5k_grid_for(n, 256), 256, 0, dev->stream>>>(kind, (unsigned long long)key, scale, n, y);
  C5K_CUDA_LAUNCHED("init_fill");
  return C5_OK;
}
