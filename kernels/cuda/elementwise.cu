/* elementwise.cu - whole-array adds and fills on the GPU (residuals, bias
   rows, gradient accumulators), as kernels/cpu/elementwise.c. The scaled add
   multiplies and adds as two roundings, as the CPU does: a fused
   multiply-add would give other bits. */
#include "rowsum.cuh"

static __device__ __forceinline__ c5_real axpy1(c5_real a, c5_real x, c5_real y)
{
  return a == (c5_real)1 ? y + x : y + c5k_mul(a, x);
}

/* y = axpy1(a, x, y), 16 bytes a thread where aligned (c5k_ew2: the block's residual adds are 5 % of its step) */
__global__ void axpy_k(long n, c5_real a, const c5_real *x, c5_real *y)
{
  c5k_ew2(n, x, y, y, [a](c5_real u, c5_real w) { return axpy1(a, u, w); });
}

/* y[i] += alpha x[i], alpha rounded to c5_real */
extern "C" c5_status c5k_axpy_cuda(c5k_ctx *ctx, long n, double alpha, const c5_real *x, c5_real *y)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "axpy", &dev));
  if (n <= 0) return C5_OK;
  axpy_k<<<c5k_grid_for(c5k_ew_units(n), 256), 256, 0, dev->stream>>>(n, (c5_real)alpha, x, y);
  C5K_CUDA_LAUNCHED("axpy");
  return C5_OK;
}

/* y = x as ytype (kernels.h convert): a copy, or (single build) bf16 by gemm_ex's own rounding kernel, so a module's
   bf16 copy holds the bits gemm_ex's would */
extern "C" c5_status c5k_convert_cuda(c5k_ctx *ctx, long n, const c5_real *x, void *y, c5_dtype ytype)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "convert", &dev));
  C5_CALL_K(c5k_cuda_ytype(ytype, "convert"));
  if (n <= 0) return C5_OK;
#if !C5_USE_DOUBLE
  if (ytype == C5_DTYPE_BF16) return c5k_cuda_to_bf16(dev, n, x, y, "convert");
#endif
  C5K_CUDA_TRY(cudaMemcpyAsync(y, x, (size_t)n * sizeof *x, cudaMemcpyDefault, dev->stream), "convert");
  return C5_OK;
}

__global__ void acc_add_k(long n, const double *src, double *acc)
{
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) acc[i] += src[i];
}

/* acc[i] += src[i] */
extern "C" c5_status c5k_acc_add_cuda(c5k_ctx *ctx, long n, const double *src, double *acc)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "acc_add", &dev));
  if (n <= 0) return C5_OK;
  acc_add_k<<<c5k_grid_for(n, 256), 256, 0, dev->stream>>>(n, src, acc);
  C5K_CUDA_LAUNCHED("acc_add");
  return C5_OK;
}

__global__ void broadcast_row_k(long total, long cols, const c5_real *v, c5_real *y)
{
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x)
    y[i] = v[i % cols];
}

/* y[r, :] = v for r < rows */
extern "C" c5_status c5k_broadcast_row_cuda(c5k_ctx *ctx, long rows, long cols, const c5_real *v, c5_real *y)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "broadcast_row", &dev));
  if (rows <= 0 || cols <= 0) return C5_OK;
  broadcast_row_k<<<c5k_grid_for(rows * cols, 256), 256, 0, dev->stream>>>(rows * cols, cols, v, y);
  C5K_CUDA_LAUNCHED("broadcast_row");
  return C5_OK;
}
