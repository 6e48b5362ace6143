/* adamw.cu - the optimizer's arithmetic on the GPU, as kernels/cpu/adamw.c:
   the gradient norm's sum of squares in the CPU's exact order (so its bits
   are the CPU's) and the fused AdamW update, each element in double. */
#include <math.h>
#include <string.h>
#include "rowsum.cuh"

#define LANES 8

/* x^2 rounded before the add, as on the CPU (no fused multiply-add there): the CPU's bits */
static __device__ __forceinline__ double sq(c5_real v) { return __dmul_rn((double)v, (double)v); }

/* One thread per (chunk, lane): lane k sums element k of the chunk's whole
   groups of LANES in order; lane 0 then adds the tail to 0 and the lanes in
   order, the CPU's sequence of additions exactly. Groups of LANES threads
   are aligned within a warp, so the shuffles stay inside one chunk. */
__global__ void sumsq_chunks(long n, long nc, const c5_real *x, double *part)
{
  const long t = blockIdx.x * (long)blockDim.x + threadIdx.x, c = t / LANES;
  const int k = (int)(t % LANES);
  double lane = 0, s = 0;
  long j0 = c * C5K_CHUNK, j1 = (c + 1) * C5K_CHUNK < n ? (c + 1) * C5K_CHUNK : n, j = j0;
  if (c < nc) {
    for (; j + LANES <= j1; j += LANES) lane += sq(x[j + k]);
    if (k == 0)
      for (; j < j1; j++) s += sq(x[j]);
  }
  for (int q = 0; q < LANES; q++) {
    double l = __shfl_sync(0xffffffffu, lane, (threadIdx.x & ~(LANES - 1)) + q);
    s += l;
  }
  if (c < nc && k == 0) part[c] = s;
}

/* *sum = the chunk sums in chunk order; *first (when not NULL) = the first
   non-finite index (as the CPU searches: only in chunks whose sum is not
   finite), -1 for none. One thread: the order is the CPU's. */
__global__ void sumsq_total(long n, long nc, const c5_real *x, const double *part, double *sum, long long *first)
{
  double s = 0;
  for (long c = 0; c < nc; c++) s += part[c];
  *sum = s;
  if (!first) return;
  long f = -1;
  for (long c = 0; c < nc && !isfinite(s) && f < 0; c++) {
    if (isfinite(part[c])) continue;
    long j1 = (c + 1) * C5K_CHUNK < n ? (c + 1) * C5K_CHUNK : n;
    for (long j = c * C5K_CHUNK; j < j1; j++)
      if (!isfinite(x[j])) { f = j; break; }
  }
  *first = f;
}

/* The chunk sums into part [ceil(n / C5K_CHUNK)] and their total into *sum (device), first as
   sumsq_total's; on the stream. */
static c5_status sumsq_launch(c5k_cuda_dev *dev, long n, const c5_real *x, double *part, double *sum,
                              long long *first, const char *op)
{
  const long nc = n > 0 ? (n + C5K_CHUNK - 1) / C5K_CHUNK : 0;
  if (nc > 0) {
    sumsq_chunks<<<(unsigned)((nc * LANES + 255) / 256), 256, 0, dev->stream>>>(n, nc, x, part);
    C5K_CUDA_LAUNCHED(op);
  }
  sumsq_total<<<1, 1, 0, dev->stream>>>(n, nc, x, part, sum, first);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* *ss and *first_nonfinite are host values (the optimizer's scalars): the op waits for them. */
extern "C" c5_status c5k_sumsq_cuda(c5k_ctx *ctx, long n, const c5_real *x, double *ss, long *first_nonfinite)
{
  const char *op = "sumsq";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const long nc = n > 0 ? (n + C5K_CHUNK - 1) / C5K_CHUNK : 0;
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, (size_t)(nc + 2) * sizeof(double), &scr, op));
  double *res = (double *)scr, h[2];
  C5_CALL_K(sumsq_launch(dev, n, x, res + 2, res, first_nonfinite ? (long long *)(res + 1) : NULL, op));
  C5K_CUDA_TRY(cudaMemcpyAsync(h, res, sizeof h, cudaMemcpyDeviceToHost, dev->stream), op);
  C5K_CUDA_TRY(cudaStreamSynchronize(dev->stream), op);
  *ss = h[0];
  if (first_nonfinite) {
    long long f;
    memcpy(&f, &h[1], sizeof f);
    *first_nonfinite = (long)f;
  }
  return C5_OK;
}

/* *ss a device double: no copy and no wait (the optimizer reads all parameters' sums in one copy). */
extern "C" c5_status c5k_sumsq_dev_cuda(c5k_ctx *ctx, long n, const c5_real *x, double *ss)
{
  const char *op = "sumsq_dev";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const long nc = n > 0 ? (n + C5K_CHUNK - 1) / C5K_CHUNK : 0;
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, (size_t)(nc + 1) * sizeof(double), &scr, op));
  C5_CALL_K(sumsq_launch(dev, n, x, (double *)scr, ss, NULL, op));
  return C5_OK;
}

/* torch.optim.AdamW's single-tensor step, operation for operation in double */
__global__ void adamw_k(long n, double gs, double b1, double b2, double eps, double shrink, double step_size,
                        double bc2_sqrt, const c5_real *grad, c5_real *p, c5_real *m, c5_real *v)
{
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
    double g = gs * (double)grad[i];
    double mi = (double)m[i] * b1 + (1 - b1) * g;
    double vi = (double)v[i] * b2 + (1 - b2) * g * g;
    double denom = sqrt(vi) / bc2_sqrt + eps;
    p[i] = (c5_real)((double)p[i] * shrink + -step_size * mi / denom);
    m[i] = (c5_real)mi;
    v[i] = (c5_real)vi;
  }
}

extern "C" c5_status c5k_adamw_update_cuda(c5k_ctx *ctx, const c5k_adamw *A, long n, const c5_real *grad, c5_real *p,
                                           c5_real *m, c5_real *v)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "adamw_update", &dev));
  if (n <= 0) return C5_OK;
  /* the step's scalars on the host, as the CPU forms them */
  const double shrink = 1 - A->lr * A->weight_decay;
  const double step_size = A->lr / (1 - pow(A->beta1, (double)A->step));
  const double bc2_sqrt = sqrt(1 - pow(A->beta2, (double)A->step));
  adamw_k<<<c5k_grid_for(n, 256), 256, 0, dev->stream>>>(n, A->grad_scale, A->beta1, A->beta2, A->eps, shrink,
                                                         step_size, bc2_sqrt, grad, p, m, v);
  C5K_CUDA_LAUNCHED("adamw_update");
  return C5_OK;
}
