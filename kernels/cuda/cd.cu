/* cd.cu - coordinate descent on the GPU (docs/design.md §2), forward and
   backward, one rank (P = 1). Scores in c5_real (fp32 in a single build),
   every per-row quantity (a_t, the LSE, counts, dL/da_t) in double.

   Forward: one cooperative launch runs all T iterations. A row is cut into
   bpr chunks, one block each ("units"; a block takes several units when
   the rows outnumber the resident blocks). Per iteration each unit reduces
   its chunk to {M, S, nabove} (S = sum exp(t_j - M), the online form of
   cd_sumexp/cd_maxsumexp in one pass, so there is no underflow fallback
   pass), the grid synchronizes, and every unit merges its row's partials
   in a fixed order (deterministic: the same bits every run) and updates
   a_t itself, so no scalar leaves the device between iterations. A row of
   one chunk is the one-block-per-row case; long rows (1 x 8M) spread over
   every multiprocessor and merge their LSE on the device.

   Backward: the saved scalars make it one pass (lib/cd.c): per-chunk dot
   products, a per-row merge with the dL/da_t recurrence, then ds. */
#include <cooperative_groups.h>
#include <math.h>
#include "cuda_internal.cuh"

namespace cg = cooperative_groups;

struct mse { double M, S, nab; };   /* max exponent, sum exp(t - M), count above */

__device__ __forceinline__ mse mse_merge(mse a, mse b)
{
  if (b.M == -INFINITY) return { a.M, a.S, a.nab + b.nab };
  if (a.M == -INFINITY) return { b.M, b.S, a.nab + b.nab };
  double M = fmax(a.M, b.M);
  return { M, a.S * exp(a.M - M) + b.S * exp(b.M - M), a.nab + b.nab };
}

__device__ __forceinline__ mse mse_shfl(mse v, int o)
{
  return { __shfl_down_sync(0xffffffffu, v.M, o), __shfl_down_sync(0xffffffffu, v.S, o),
           __shfl_down_sync(0xffffffffu, v.nab, o) };
}

/* Fixed-order block reduction (thread 0 gets the result); sh holds 32 entries. */
__device__ mse block_mse(mse v, mse *sh)
{
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  for (int o = 16; o; o >>= 1) v = mse_merge(v, mse_shfl(v, o));
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    v = lane < nw ? sh[lane] : mse{ -INFINITY, 0.0, 0.0 };
    for (int o = 16; o; o >>= 1) v = mse_merge(v, mse_shfl(v, o));
  }
  __syncthreads();
  return v;
}

__device__ double block_sum(double v, double *sh)
{
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  for (int o = 16; o; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    v = lane < nw ? sh[lane] : 0.0;
    for (int o = 16; o; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  __syncthreads();
  return v;
}

/* Warp 0 merges cnt partials in lane-strided order, then a fixed tree: lane 0 gets the result. */
__device__ mse warp_merge_parts(const mse *p, long cnt)
{
  const int lane = threadIdx.x & 31;
  mse v = { -INFINITY, 0.0, 0.0 };
  for (long i = lane; i < cnt; i += 32) v = mse_merge(v, p[i]);
  for (int o = 16; o; o >>= 1) v = mse_merge(v, mse_shfl(v, o));
  return v;
}

template <typename T> struct cd_fwd_args {
  const T *s;
  const uint8_t *mask;
  T *y;
  long rows, n, bpr, chunk, units;
  int iters;
  double eps, eps_init, eps_decay;
  double logk0;         /* log k of every row, or per row: */
  const double *logk;   /* [rows] or NULL */
  double *state;        /* [3][rows][iters], then 1 / eps_t [iters + 1] */
  mse *part;            /* [2][units] */
  double *ua;           /* [units]: a_{t-1} of the unit's row */
  double *ucnt;         /* [units]: unmasked entries of the row */
};

template <typename T> __global__ void __launch_bounds__(1024) cd_forward_kernel(cd_fwd_args<T> A)
{
  __shared__ mse sh[32];
  cg::grid_group grid = cg::this_grid();
  const long n = A.n;
  double *ie = A.state + 3 * A.rows * A.iters;
  /* lib/cd.c's schedule, the same double operations in the same order (so the same bits) */
  double eps_t = fmax(A.eps_init, A.eps);
  for (int t = 1; t <= A.iters; t++) {
    const double ie_t = 1.0 / eps_t;
    eps_t = fmax(eps_t * A.eps_decay, A.eps);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      ie[t - 1] = ie_t;
      if (t == A.iters) ie[t] = 1.0 / eps_t;
    }
    const T ief = (T)ie_t;
    mse *part = A.part + (t & 1) * A.units;   /* two buffers: a fast block never overwrites what a slow one reads */
    for (long u = blockIdx.x; u < A.units; u += gridDim.x) {
      const long r = u / A.bpr, c = u % A.bpr;
      const long j0 = c * A.chunk, j1 = min(n, j0 + A.chunk);
      const T a = t == 1 ? (T)INFINITY : (T)A.ua[u];
      const T *s = A.s + r * n;
      const uint8_t *m = A.mask ? A.mask + r * n : NULL;
      mse v = { -INFINITY, 0.0, 0.0 };
      float Mf = -INFINITY;
      double S = 0.0, nab = 0.0;
      for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
        if (m && !m[j]) continue;
        T x = s[j] + a;
        nab += x > 0 ? 1.0 : 0.0;
        T e = (x < 0 ? x : (T)0) * ief;
        if ((float)e > Mf) { S = S * exp((double)Mf - (double)e) + 1.0; Mf = (float)e; }
        else S += (double)exp(e - (T)Mf);
      }
      v = { Mf == -INFINITY ? -INFINITY : (double)Mf, S, nab };
      v = block_mse(v, sh);
      if (threadIdx.x == 0) part[u] = v;
    }
    grid.sync();
    for (long u = blockIdx.x; u < A.units; u += gridDim.x) {
      if (threadIdx.x >= 32) continue;
      const long r = u / A.bpr;
      mse v = warp_merge_parts(part + r * A.bpr, A.bpr);
      if (threadIdx.x == 0) {
        double cnt = t == 1 ? v.nab : A.ucnt[u];
        if (t == 1) A.ucnt[u] = cnt;
        double at = 0.0, l = 0.0, nb = 0.0;
        if (cnt > 0) {
          const double eps = 1.0 / ie_t, logk = A.logk ? A.logk[r] : A.logk0;
          l = v.M + log(v.S);
          at = t == 1 ? eps * (logk - l) : eps * logk + A.ua[u] - eps * l;
          nb = v.nab;
        }
        A.ua[u] = at;
        if (u % A.bpr == 0) {
          double *st = A.state + r * A.iters + (t - 1);
          st[0] = at;
          st[A.rows * A.iters] = l;
          st[2 * A.rows * A.iters] = nb;
        }
      }
    }
    __syncthreads();
  }
  const T ief = (T)(1.0 / eps_t);
  for (long u = blockIdx.x; u < A.units; u += gridDim.x) {
    const long r = u / A.bpr, c = u % A.bpr;
    const long j0 = c * A.chunk, j1 = min(n, j0 + A.chunk);
    const T a = (T)A.ua[u];
    const T *s = A.s + r * n;
    T *y = A.y + r * n;
    const uint8_t *m = A.mask ? A.mask + r * n : NULL;
    for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
      T x = s[j] + a;
      y[j] = (m && !m[j]) ? (T)0 : exp((x < 0 ? x : (T)0) * ief);
    }
  }
}

static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* k of every row (k_stride 0) travels by value; per-row k goes up with one
   small copy (which, from pageable memory, waits for the stream). */
extern "C" c5_status c5k_cd_forward_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                                         const double *k, long k_stride, int T, double eps, double eps_init,
                                         double eps_decay, double *state, c5_real *y)
{
  const char *op = "cd_forward_dev";
  c5k_cuda_dev *dev;
  long n;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  C5_CALL_K(c5k_cuda_dense(R, op, &n));
  const long rows = R->rows;
  if (rows == 0) return C5_OK;
  /* Long rows take 1024 threads a block (fewer partials to merge), short ones 256. */
  const int threads = n >= 65536 ? 1024 : 256;
  static int occ[2] = { 0, 0 };
  int *oc = &occ[threads == 1024];
  if (!*oc) C5K_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(oc, cd_forward_kernel<c5_real>, threads, 0), op);
  const long cap = (long)*oc * dev->sms;
  long bpr = (n + 2 * threads - 1) / (2 * threads);    /* at least 2 elements a thread */
  long fit = cap / rows > 0 ? cap / rows : 1;
  if (bpr > fit) bpr = fit;
  if (bpr < 1) bpr = 1;
  long chunk = n > 0 ? (n + bpr - 1) / bpr : 1;
  bpr = n > 0 ? (n + chunk - 1) / chunk : 1;
  const long units = rows * bpr;
  const long grid = units < cap ? units : cap;

  size_t o_logk = 0, o_part = align256(rows * sizeof(double));
  size_t o_ua = align256(o_part + 2 * units * sizeof(mse)), o_cnt = align256(o_ua + units * sizeof(double));
  size_t bytes = align256(o_cnt + units * sizeof(double));
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, bytes, &scr, op));
  char *base = (char *)scr;
  const double *logk = NULL;
  if (k_stride != 0) {
    double *h = (double *)malloc(rows * sizeof(double));
    if (!h) return C5K_ERR(C5_ERR_MEM, "%s: out of host memory", op);
    for (long r = 0; r < rows; r++) h[r] = log(k[r * k_stride]);
    cudaError_t e = cudaMemcpyAsync(base + o_logk, h, rows * sizeof(double), cudaMemcpyHostToDevice, dev->stream);
    free(h);   /* a pageable source is consumed when the call returns */
    if (e != cudaSuccess) return C5K_ERR(C5_ERR_CUDA, "%s: copying k: %s", op, cudaGetErrorString(e));
    logk = (const double *)(base + o_logk);
  }

  cd_fwd_args<c5_real> A;
  A.s = s; A.mask = mask; A.y = y;
  A.rows = rows; A.n = n; A.bpr = bpr; A.chunk = chunk; A.units = units; A.iters = T;
  A.eps = eps; A.eps_init = eps_init; A.eps_decay = eps_decay;
  A.logk0 = log(k[0]); A.logk = logk; A.state = state;
  A.part = (mse *)(base + o_part); A.ua = (double *)(base + o_ua); A.ucnt = (double *)(base + o_cnt);
  void *args[] = { &A };
  C5K_CUDA_TRY(cudaLaunchCooperativeKernel((const void *)cd_forward_kernel<c5_real>, dim3((unsigned)grid),
                                           dim3(threads), args, 0, dev->stream), op);
  return C5_OK;
}

/* ---- backward ---- */
#define BWD_CHUNK 2048
#define BWD_THREADS 256

template <typename T> __global__ void __launch_bounds__(BWD_THREADS)
cd_gdot_kernel(const T *s, const uint8_t *mask, const T *y, const T *gy, long n, long bpr, int iters, long rows,
               const double *state, const double *ie, double *part)
{
  __shared__ double sh[32];
  const long u = blockIdx.x, r = u / bpr, c = u % bpr;
  const long j0 = r * n + c * BWD_CHUNK, j1 = r * n + min(n, (c + 1) * BWD_CHUNK);
  const T aT = (T)state[r * iters + iters - 1];
  double acc = 0.0;
  for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x)
    if ((!mask || mask[j]) && s[j] + aT <= 0) acc += (double)gy[j] * (double)y[j];
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) part[u] = acc * ie[iters];
}

/* One warp a row: dL/da_t for t = T .. 1 from the row's dot (fixed-order merge). */
__global__ void cd_ga_kernel(const double *part, long bpr, int iters, long rows, const double *state, double *ga)
{
  const long r = blockIdx.x;
  const int lane = threadIdx.x;
  double v = 0.0;
  for (long i = lane; i < bpr; i += 32) v += part[r * bpr + i];
  for (int o = 16; o; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (lane) return;
  const double *lse = state + rows * iters + r * iters, *nab = state + 2 * rows * iters + r * iters;
  double *g = ga + r * iters;
  g[iters - 1] = nab[0] > 0 ? v : 0.0;
  for (int t = iters; t >= 2; t--) g[t - 2] = g[t - 1] * nab[t - 1] * exp(-lse[t - 1]);
}

template <typename T> __global__ void __launch_bounds__(BWD_THREADS)
cd_ds_kernel(const T *s, const uint8_t *mask, const T *y, const T *gy, long n, long bpr, int iters, long rows,
             const double *state, const double *ie, const double *ga, T *ds)
{
  extern __shared__ double dyn[];
  double *g = dyn;                         /* [iters] dL/da_t */
  T *ap = (T *)(g + iters), *iev = ap + iters, *lv = iev + iters;
  const long u = blockIdx.x, r = u / bpr, c = u % bpr;
  for (int t = threadIdx.x; t < iters; t += blockDim.x) {
    g[t] = ga[r * iters + t];
    ap[t] = (T)state[r * iters + t];
    iev[t] = (T)ie[t];
    lv[t] = (T)state[rows * iters + r * iters + t];
  }
  __syncthreads();
  const long j0 = r * n + c * BWD_CHUNK, j1 = r * n + min(n, (c + 1) * BWD_CHUNK);
  const T aT = ap[iters - 1];
  const double ieT = ie[iters];
  for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    if (mask && !mask[j]) { ds[j] = 0; continue; }
    const T sj = s[j];
    double acc = sj + aT <= 0 ? (double)gy[j] * (double)y[j] * ieT : 0.0;
    for (int t = iters; t >= 2; t--) {   /* iteration t used a_{t-1}, eps_t, lse_t, ga_t */
      double gt = g[t - 1];
      T x = sj + ap[t - 2];
      if (gt != 0.0 && x <= 0) acc -= gt * (double)exp(x * iev[t - 1] - lv[t - 1]);
    }
    ds[j] = (T)acc;
  }
}

extern "C" c5_status c5k_cd_backward_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                                          int T, const double *state, const c5_real *y,
                                          const c5_real *gy, c5_real *ds)
{
  const char *op = "cd_backward_dev";
  c5k_cuda_dev *dev;
  long n;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  C5_CALL_K(c5k_cuda_dense(R, op, &n));
  const long rows = R->rows;
  if (rows == 0 || n == 0) return C5_OK;
  const long bpr = (n + BWD_CHUNK - 1) / BWD_CHUNK, units = rows * bpr;
  size_t o_part = 0, o_ga = align256(units * sizeof(double));
  size_t bytes = align256(o_ga + rows * T * sizeof(double));
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, bytes, &scr, op));
  char *base = (char *)scr;
  double *part = (double *)(base + o_part), *ga = (double *)(base + o_ga);
  const double *ie = state + 3 * rows * T;   /* the forward's 1 / eps_t */
  cd_gdot_kernel<c5_real><<<(unsigned)units, BWD_THREADS, 0, dev->stream>>>(s, mask, y, gy, n, bpr, T, rows, state, ie, part);
  C5K_CUDA_LAUNCHED(op);
  cd_ga_kernel<<<(unsigned)rows, 32, 0, dev->stream>>>(part, bpr, T, rows, state, ga);
  C5K_CUDA_LAUNCHED(op);
  size_t sm = T * (sizeof(double) + 3 * sizeof(c5_real));
  cd_ds_kernel<c5_real><<<(unsigned)units, BWD_THREADS, sm, dev->stream>>>(s, mask, y, gy, n, bpr, T, rows, state, ie, ga, ds);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
