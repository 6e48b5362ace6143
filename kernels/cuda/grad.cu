/* grad.cu - parameter-gradient accumulation on the GPU, as kernels/cpu/grad.c:
   the bias-gradient column sum over the fixed row partition (rowsum.cuh) and
   the one rounding of a backward's double accumulator into the gradient. */
#include "rowsum.cuh"

struct colsum_term {
  const c5_real *dy;
  int cols;
  __device__ void operator()(long r, int j, double *t) const { t[0] = dy[r * cols + j]; }
};

/* db[j] += sum_r dy[r, j] */
extern "C" c5_status c5k_colsum_cuda(c5k_ctx *ctx, const c5_real *dy, long rows, int cols, double *db)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "colsum", &dev));
  colsum_term term = { dy, cols };
  c5k_rowpart_out<1> out = { { db } };
  return c5k_rowpart_sum<1>(dev, "colsum", term, rows, cols, out);
}

__global__ void grad_flush_k(double *acc, long n, c5_real *g)
{
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
    g[i] += (c5_real)acc[i];
    acc[i] = 0;
  }
}

/* g[i] += (c5_real)acc[i]; acc[i] = 0 */
extern "C" c5_status c5k_grad_flush_cuda(c5k_ctx *ctx, double *acc, long n, c5_real *g)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "grad_flush", &dev));
  if (n <= 0) return C5_OK;
  grad_flush_k<<<c5k_grid_for(n, 256), 256, 0, dev->stream>>>(acc, n, g);
  C5K_CUDA_LAUNCHED("grad_flush");
  return C5_OK;
}
