/* finite.cu - the first non-finite score of dense rows (coordinate
   descent's input check): the lowest flat index by an atomic minimum, so
   the entry reported is the CPU's, then one small copy to the host. */
#include <math.h>
#include "cuda_internal.cuh"

template <typename T> __global__ void first_nonfinite(const T *s, long total, unsigned long long *first)
{
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x)
    if (!isfinite(s[i])) { atomicMin(first, (unsigned long long)i); return; }
}

extern "C" c5_status c5k_find_nonfinite_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, long *row, long *col,
                                             double *value)
{
  const char *op = "find_nonfinite";
  c5k_cuda_dev *dev;
  long n;
  *row = *col = -1;
  *value = 0;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  C5_CALL_K(c5k_cuda_dense(R, op, &n));
  const long total = R->rows * n;
  if (total == 0) return C5_OK;
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, 256, &scr, op));
  unsigned long long *first = (unsigned long long *)scr, h = 0;
  C5K_CUDA_TRY(cudaMemsetAsync(first, 0xff, sizeof *first, dev->stream), op);
  long blocks = (total + 255) / 256;
  first_nonfinite<c5_real><<<(unsigned)(blocks < 4 * 1024 ? blocks : 4 * 1024), 256, 0, dev->stream>>>(s, total, first);
  C5K_CUDA_LAUNCHED(op);
  C5K_CUDA_TRY(cudaMemcpyAsync(&h, first, sizeof h, cudaMemcpyDeviceToHost, dev->stream), op);
  C5K_CUDA_TRY(cudaStreamSynchronize(dev->stream), op);
  if (h == ~0ull) return C5_OK;
  c5_real v;
  C5K_CUDA_TRY(cudaMemcpyAsync(&v, s + h, sizeof v, cudaMemcpyDeviceToHost, dev->stream), op);
  C5K_CUDA_TRY(cudaStreamSynchronize(dev->stream), op);
  *row = (long)(h / n);
  *col = (long)(h % n);
  *value = (double)v;
  return C5_OK;
}
