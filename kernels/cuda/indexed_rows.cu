/* indexed_rows.cu - dot products of rows picked by an index list with dense
   rows on the GPU (kernels/cpu/indexed_rows.c): one warp per output, whose
   lanes load the rows coalesced and lane 0 adds the products over k in
   order in double (c5k_warp_ordered_add0), so the bits are the CPU's. */
#include "cuda_internal.cuh"

__global__ void row_dot_kernel(long n, long dim, const long *idx, const c5_real *a, const c5_real *b, c5_real *out)
{
  __shared__ double sh[C5K_THREADS];
  const int lane = threadIdx.x & 31;
  double *wsh = sh + (threadIdx.x & ~31);
  C5K_WARP_LOOP(i, n) {
    const c5_real *ar = a + (idx ? idx[i] : i) * dim, *br = b + i * dim;
    double acc = 0;
    for (long base = 0; base < dim; base += 32) {
      const long k = base + lane;
      const double p = k < dim ? c5k_mul((double)ar[k], (double)br[k]) : 0.0;
      acc = c5k_warp_ordered_add0(acc, p, (int)min(32L, dim - base), wsh);
    }
    if (lane == 0) out[i] = (c5_real)acc;
  }
}

extern "C" c5_status c5k_row_dot_cuda(c5k_ctx *ctx, long n, long dim, const long *idx, const c5_real *a,
                                      const c5_real *b, c5_real *out)
{
  const char *op = "row_dot";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (n <= 0) return C5_OK;
  row_dot_kernel<<<c5k_cuda_blocks(dev, 32 * n), C5K_THREADS, 0, dev->stream>>>(n, dim, idx, a, b, out);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
