/* mask.cu - masks formed from positions on the GPU (kernels/cpu/mask.c): the
   autoregressive attention's gathered keys that lie before its query
   window, one thread per entry. */
#include "cuda_internal.cuh"

__global__ void mask_before_kernel(long rows, long n, const long *pos, const long *lim, uint8_t *mask)
{
  C5K_GRID_LOOP(i, rows * n) mask[i] = pos[i] < lim[i / n];
}

extern "C" c5_status c5k_mask_before_cuda(c5k_ctx *ctx, long rows, long n, const long *pos, const long *lim,
                                          uint8_t *mask)
{
  const char *op = "mask_before";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (rows <= 0 || n <= 0) return C5_OK;
  mask_before_kernel<<<c5k_cuda_blocks(dev, rows * n), C5K_THREADS, 0, dev->stream>>>(rows, n, pos, lim, mask);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
