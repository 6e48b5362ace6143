/* copy2d.cu - strided block moves on the GPU (kernels/cpu/copy2d.c): the
   halo's packing and unpacking through the runtime's 2D copies and sets,
   the halo gradients added by their owners, a vector under every row.
   Each element is moved or added once, so the bits are the CPU's. */
#include "cuda_internal.cuh"
#include "rowsum.cuh"

extern "C" c5_status c5k_copy2d_cuda(c5k_ctx *ctx, void *dst, long dpitch, const void *src, long spitch, long width,
                                     long height)
{
  const char *op = "copy2d";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (width <= 0 || height <= 0) return C5_OK;
  /* one row: its pitch is free (c5k_zero's callers pass any) and the 2D copy would check it */
  if (height == 1) C5K_CUDA_TRY(cudaMemcpyAsync(dst, src, (size_t)width, cudaMemcpyDefault, dev->stream), op);
  else C5K_CUDA_TRY(cudaMemcpy2DAsync(dst, (size_t)dpitch, src, (size_t)spitch, (size_t)width, (size_t)height,
                                      cudaMemcpyDefault, dev->stream), op);
  return C5_OK;
}

extern "C" c5_status c5k_memset2d_cuda(c5k_ctx *ctx, void *dst, long dpitch, int value, long width, long height)
{
  const char *op = "memset2d";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (width <= 0 || height <= 0) return C5_OK;
  if (height == 1) C5K_CUDA_TRY(cudaMemsetAsync(dst, value, (size_t)width, dev->stream), op);
  else C5K_CUDA_TRY(cudaMemset2DAsync(dst, (size_t)dpitch, value, (size_t)width, (size_t)height, dev->stream), op);
  return C5_OK;
}

__global__ void add2d_kernel(long rows, long cols, const c5_real *src, long lds, c5_real *dst, long ldd)
{
  C5K_GRID_LOOP(i, rows * cols) {
    long r = i / cols, k = i % cols;
    dst[r * ldd + k] = c5k_add(dst[r * ldd + k], src[r * lds + k]);
  }
}

extern "C" c5_status c5k_add2d_cuda(c5k_ctx *ctx, long rows, long cols, const c5_real *src, long lds, c5_real *dst,
                                    long ldd)
{
  const char *op = "add2d";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (rows <= 0 || cols <= 0) return C5_OK;
  add2d_kernel<<<c5k_cuda_blocks(dev, rows * cols), C5K_THREADS, 0, dev->stream>>>(rows, cols, src, lds, dst, ldd);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

template <typename I>
__global__ void fill_rows_kernel(long rows, long dim, const c5_real *vec, int accumulate, c5_real *dst, long ldd)
{
  C5K_GRID_LOOP_T(I, i, rows * dim) {
    const I r = i / (I)dim, k = i % (I)dim;
    c5_real *d = dst + r * ldd + k;
    if (accumulate) *d = c5k_add(*d, vec[k]);
    else *d = vec ? vec[k] : (c5_real)0;
  }
}
/* The same, 16 bytes a thread where dim, ldd, dst and vec allow: the routed attention's null_q_token
   over a whole [n, dim] output ran at 1.4 TB/s an element a thread on the H200. The same sums either way. */
template <typename I>
__global__ void fill_rows_v(long rows, long dim, const c5_real *vec, int accumulate, c5_real *dst, long ldd)
{
  const I dv = (I)(dim / C5K_RV);
  C5K_GRID_LOOP_T(I, i, rows * dv) {
    const I r = i / dv, k = C5K_RV * (i % dv);
    c5k_real_v *d = (c5k_real_v *)(dst + r * ldd + k), v = {};
    if (vec) v = *(const c5k_real_v *)(vec + k);
    if (accumulate) {
      c5k_real_v w = *d;
      c5_real *ws = (c5_real *)&w;
      const c5_real *vs = (const c5_real *)&v;
#pragma unroll
      for (int j = 0; j < C5K_RV; j++) ws[j] = c5k_add(ws[j], vs[j]);
      v = w;
    }
    *d = v;
  }
}

extern "C" c5_status c5k_fill_rows_cuda(c5k_ctx *ctx, long rows, long dim, const c5_real *vec, int accumulate,
                                        c5_real *dst, long ldd)
{
  const char *op = "fill_rows";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (rows <= 0 || dim <= 0 || (accumulate && !vec)) return C5_OK;   /* adding no vector changes nothing */
  const bool vec16 = dim % C5K_RV == 0 && ldd % C5K_RV == 0 && (((uintptr_t)dst | (uintptr_t)vec) & 15) == 0;
  if (vec16)
    C5K_IDX_LAUNCH(rows * dim, fill_rows_v, c5k_cuda_blocks(dev, rows * dim / C5K_RV), C5K_THREADS, dev->stream, rows,
                   dim, vec, accumulate, dst, ldd);
  else
    C5K_IDX_LAUNCH(rows * dim, fill_rows_kernel, c5k_cuda_blocks(dev, rows * dim), C5K_THREADS, dev->stream, rows,
                   dim, vec, accumulate, dst, ldd);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
