/* route.cu - the router's per-token fills around coordinate descent and
   top-k on the GPU (kernels/cpu/route.c): the mask over the routes, the
   random routes' normal draws and the moves between rows of tokens and a
   forward's selections. */
#include "cuda_internal.cuh"

__global__ void broadcast_mask_kernel(long batch, int routes, long n, const uint8_t *mask, uint8_t *out)
{
  C5K_GRID_LOOP(i, batch * routes * n) out[i] = mask[i / ((long)routes * n) * n + i % n];
}

extern "C" c5_status c5k_broadcast_mask_cuda(c5k_ctx *ctx, long batch, int routes, long n, const uint8_t *mask,
                                             uint8_t *out)
{
  const char *op = "broadcast_mask";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const long total = batch * routes * n;
  if (batch <= 0 || routes <= 0 || n <= 0) return C5_OK;
  broadcast_mask_kernel<<<c5k_cuda_blocks(dev, total), C5K_THREADS, 0, dev->stream>>>(batch, routes, n, mask, out);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* The CPU's draw (route.c normal_draw): the same integer hash, and the same
   double operations, each rounded on its own (division and sqrt are
   correctly rounded on both; log and cos are the CUDA library's, within an
   ulp or two of the host's). */
__device__ double normal_draw(unsigned long long seed, long row, long j)
{
  unsigned long long z = seed ^ (0x9e3779b97f4a7c15ull * (unsigned long long)(row + 1)) ^
                         (0xbf58476d1ce4e5b9ull * (unsigned long long)(j + 1));
  unsigned long long u[2];
  for (int i = 0; i < 2; i++) {
    z += 0x9e3779b97f4a7c15ull;
    unsigned long long x = z;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    u[i] = x ^ (x >> 31);
  }
  double u1 = __ddiv_rn(__dadd_rn((double)(u[0] >> 11), 1.0), 9007199254740993.0);
  double u2 = __ddiv_rn((double)(u[1] >> 11), 9007199254740992.0);
  return __dmul_rn(sqrt(__dmul_rn(-2.0, log(u1))), cos(__dmul_rn(6.283185307179586, u2)));
}

__global__ void normal_fill_kernel(long rows, long n, long col0, unsigned long long seed, c5_real *y)
{
  C5K_GRID_LOOP(i, rows * n) y[i] = (c5_real)normal_draw(seed, i / n, col0 + i % n);
}

extern "C" c5_status c5k_normal_fill_cuda(c5k_ctx *ctx, long rows, long n, long col0, uint64_t seed, c5_real *y)
{
  const char *op = "normal_fill";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (rows <= 0 || n <= 0) return C5_OK;
  normal_fill_kernel<<<c5k_cuda_blocks(dev, rows * n), C5K_THREADS, 0, dev->stream>>>(rows, n, col0,
                                                                                       (unsigned long long)seed, y);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* A block per row of selections (rows are few, selections many). */
static inline unsigned row_blocks(const c5k_cuda_dev *dev, long rows)
{
  long cap = 32L * (dev->sms > 0 ? dev->sms : 1);
  return (unsigned)(rows < cap ? rows : cap);
}

__global__ void route_gather_scores_kernel(long rows, long n, const long *start, const long *count, const long *lpos,
                                           const c5_real *y, const uint8_t *mask, int straight_through,
                                           c5_real *yval, c5_real *score)
{
  for (long row = blockIdx.x; row < rows; row += gridDim.x)
    for (long e = start[row] + threadIdx.x; e < start[row] + count[row]; e += blockDim.x) {
      long t = row * n + lpos[e];
      bool keep = !mask || mask[t];
      yval[e] = y[t];
      score[e] = !keep ? (c5_real)0 : straight_through ? (c5_real)1 : y[t];
    }
}

extern "C" c5_status c5k_route_gather_scores_cuda(c5k_ctx *ctx, long rows, long n, const long *start,
                                                  const long *count, const long *lpos, const c5_real *y,
                                                  const uint8_t *mask, int straight_through, c5_real *yval,
                                                  c5_real *score)
{
  const char *op = "route_gather_scores";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (rows <= 0) return C5_OK;
  route_gather_scores_kernel<<<row_blocks(dev, rows), C5K_THREADS, 0, dev->stream>>>(
      rows, n, start, count, lpos, y, mask, straight_through, yval, score);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* g was zeroed before. A row whose positions ascend strictly (top-k's
   selections) touches each token once: its adds run in parallel. Any other
   row is added by one thread in e order, the CPU's order for repeated
   positions. Both add to the zero (0 + -0 is +0, as on the CPU). */
__global__ void route_scatter_dscores_kernel(long rows, long n, const long *start, const long *count,
                                             const long *lpos, const uint8_t *mask, const c5_real *dscore, c5_real *g)
{
  for (long row = blockIdx.x; row < rows; row += gridDim.x) {
    const long e0 = start[row], e1 = start[row] + count[row];
    int ascending = 1;
    for (long e = e0 + 1 + threadIdx.x; e < e1; e += blockDim.x) ascending &= lpos[e - 1] < lpos[e];
    ascending = __syncthreads_and(ascending);
    if (ascending) {
      for (long e = e0 + threadIdx.x; e < e1; e += blockDim.x) {
        long t = row * n + lpos[e];
        if (!mask || mask[t]) g[t] = c5k_add(g[t], dscore[e]);
      }
    } else if (threadIdx.x == 0) {
      for (long e = e0; e < e1; e++) {
        long t = row * n + lpos[e];
        if (!mask || mask[t]) g[t] = c5k_add(g[t], dscore[e]);
      }
    }
  }
}

extern "C" c5_status c5k_route_scatter_dscores_cuda(c5k_ctx *ctx, long rows, long n, const long *start,
                                                    const long *count, const long *lpos, const uint8_t *mask,
                                                    const c5_real *dscore, c5_real *g)
{
  const char *op = "route_scatter_dscores";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (rows <= 0 || n <= 0) return C5_OK;
  C5K_CUDA_TRY(cudaMemsetAsync(g, 0, (size_t)(rows * n) * sizeof *g, dev->stream), op);
  route_scatter_dscores_kernel<<<row_blocks(dev, rows), C5K_THREADS, 0, dev->stream>>>(rows, n, start, count, lpos,
                                                                                       mask, dscore, g);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
