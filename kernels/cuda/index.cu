/* index.cu - index arithmetic on index arrays on the GPU (kernels.h
   index_rows), the CPU's kernels/cpu/index.c: one thread an entry, each
   entry written once from its own inputs (integers: exact, any order). */
#include "cuda_internal.cuh"

__global__ void index_rows_kernel(long rows, long n, const long *src, long lds, long add, long div, long mod,
                                  long step, long *dst, long ldd)
{
  const long total = rows * n;
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
    const long r = i / n, j = i % n, q = r / div;
    dst[r * ldd + j] = (src ? src[r * lds + j] : j) + add + (mod ? q % mod : q) * step;
  }
}

extern "C" c5_status c5k_index_rows_cuda(c5k_ctx *ctx, long rows, long n, const long *src, long lds, long add,
                                         long div, long mod, long step, long *dst, long ldd)
{
  const char *op = "index_rows";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (rows < 0 || n < 0 || div < 1 || mod < 0)
    return C5K_ERR(C5_ERR_ARG, "%s: rows = %ld, n = %ld, div = %ld, mod = %ld (need >= 0, >= 0, >= 1, >= 0)", op, rows,
                   n, div, mod);
  const long total = rows * n;
  if (total == 0) return C5_OK;
  const long blocks = (total + 255) / 256;
  /* dst may be src (in place): each thread reads then writes its own entry */
  index_rows_kernel<<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, dev->stream>>>(rows, n, src, lds, add, div,
                                                                                          mod, step, dst, ldd);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
