/* cd.cu - coordinate descent on the GPU (docs/design.md §2), forward and
   backward, one rank (P = 1). Scores in c5_real (fp32 in a single build),
   every per-row quantity (a_t, the LSE, counts, dL/da_t) in double.

   Forward, every iteration's scalar update on the device (no host round
   trip): a row of at most 8 x 16384 columns is held in registers by a
   cluster of up to 8 blocks (one block a row when the rows fill the GPU),
   its iterations meeting at block and cluster barriers, the blocks' sums
   added in rank order through distributed shared memory. Longer rows are
   cut into chunks over the resident blocks of one cooperative launch; each
   iteration every chunk reduces {sum exp(e_j), count above, max e_j}
   (lib/cd.c's cd_sumexp, shifted by the bound every chunk knows), the row's
   chunks meet at a per-row barrier and each merges the partials in a fixed
   order (the same bits every run) and updates a_t itself: the LSE merge of
   a 1 x 8M row on the device. A sum that underflows takes cd_maxsumexp's
   {max, sum} form in one more pass, as on the CPU.

   Backward: the saved scalars make it one pass (lib/cd.c): per-chunk dot
   products, a per-row merge with the dL/da_t recurrence, then ds (one
   launch for a cluster's row). */
#include <math.h>
#include <cooperative_groups.h>
#include "cuda_internal.cuh"

namespace cg = cooperative_groups;


/* A row's (or chunk's) sums of one iteration: sum_j exp(e_j) with e_j =
   min(s_j + a, 0) / eps_t <= 0 (cd_sumexp: no max pass needed), the count
   above, and max_j e_j for the fallback when the sum underflows
   (cd_maxsumexp). Merged by plain adds and a max, in a fixed order. */
struct sums { double S, nab, M; };

__device__ __forceinline__ sums sums_add(sums a, sums b) { return { a.S + b.S, a.nab + b.nab, fmax(a.M, b.M) }; }

__device__ __forceinline__ sums sums_shfl(sums v, int o)
{
  return { __shfl_down_sync(0xffffffffu, v.S, o), __shfl_down_sync(0xffffffffu, v.nab, o),
           __shfl_down_sync(0xffffffffu, v.M, o) };
}

/* Fixed-order block reduction (thread 0 gets the result); sh holds 32 entries. */
__device__ sums block_sums(sums v, sums *sh)
{
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  for (int o = 16; o; o >>= 1) v = sums_add(v, sums_shfl(v, o));
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    v = lane < nw ? sh[lane] : sums{ 0.0, 0.0, -INFINITY };
    for (int o = 16; o; o >>= 1) v = sums_add(v, sums_shfl(v, o));
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

/* A thread's own sums, in the score type (a thread adds a few dozen terms;
   everything past the thread is double). */
template <typename T> struct tsums {
  T S, M;
  int nab;
  __device__ tsums() : S(0), M(-INFINITY), nab(0) {}
  /* one element, x = s_j + a in the score type as on the CPU */
  __device__ __forceinline__ void add(T x, T ief)
  {
    nab += x > 0;
    T e = (x < 0 ? x : (T)0) * ief;
    S += exp(e);
    M = fmax(M, e);
  }
  __device__ __forceinline__ sums d() const { return { (double)S, (double)nab, (double)M }; }
};

/* Loads in flight a thread: the streaming loops read LD elements (a block's
   stride apart, so each load stays coalesced) before using any. */
#define LD 8

/* A chunk [j0, j1) of a row into a thread's sums. */
template <typename T> __device__ __forceinline__ void chunk_sums(const T *s, const uint8_t *m, long j0, long j1, T a,
                                                                 T ief, tsums<T> &v)
{
  for (long base = j0 + threadIdx.x; base < j1; base += LD * blockDim.x) {
    T x[LD];
    bool keep[LD];
#pragma unroll
    for (int q = 0; q < LD; q++) {
      long j = base + q * (long)blockDim.x;
      keep[q] = j < j1 && (!m || m[j]);
      x[q] = j < j1 ? s[j] : (T)0;
    }
#pragma unroll
    for (int q = 0; q < LD; q++)
      if (keep[q]) v.add(x[q] + a, ief);
  }
}

/* fp32 without a mask, 16-byte aligned: four elements a load, LD loads in flight. */
template <> __device__ __forceinline__ void chunk_sums<float>(const float *s, const uint8_t *m, long j0, long j1, float a,
                                                              float ief, tsums<float> &v)
{
  if (m || ((j0 | j1) & 3) || ((size_t)s & 15)) {
    for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x)
      if (!m || m[j]) v.add(s[j] + a, ief);
    return;
  }
  const float4 *s4 = (const float4 *)s;
  const long q0 = j0 >> 2, q1 = j1 >> 2;
  for (long base = q0 + threadIdx.x; base < q1; base += LD * blockDim.x) {
    float4 x[LD];
#pragma unroll
    for (int q = 0; q < LD; q++) {
      long i = base + q * (long)blockDim.x;
      x[q] = i < q1 ? s4[i] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
    }
#pragma unroll
    for (int q = 0; q < LD; q++)
      if (base + q * (long)blockDim.x < q1) {
        v.add(x[q].x + a, ief); v.add(x[q].y + a, ief); v.add(x[q].z + a, ief); v.add(x[q].w + a, ief);
      }
  }
}

/* The fallback's term (cd_maxsumexp, in double): exp(min(s_j + a, 0) / eps_t - M). */
template <typename T> __device__ __forceinline__ double fallback_elem(T sj, double a, double ie, double M)
{
  double x = (double)sj + a;
  return exp((x < 0 ? x : 0.0) * ie - M);
}

/* lib/cd.c's scalar step for a row from its merged sums: a_t, the LSE (log
   of the shifted sum; l is given when the fallback formed it) and the count
   above; a fully masked row (count 0) keeps zeros. Returns a_t. */
__device__ __forceinline__ double cd_step(int t, double eps, double logk, double aprev, double cnt, double l_in,
                                          double nab, double *l, double *nb)
{
  *l = *nb = 0.0;
  if (!(cnt > 0)) return 0.0;
  *l = l_in;
  *nb = nab;
  return t == 1 ? eps * (logk - l_in) : eps * logk + aprev - eps * l_in;
}

/* The sum underflowed (lib/cd.c's test): the row takes the {max, sumexp} form. */
__device__ __forceinline__ bool underflowed(int t, double cnt, double S) { return t > 1 && cnt > 0 && !(S > 0 && isfinite(S)); }

/* The schedule of lib/cd.c, the same double operations in the same order (so the same bits). */
struct eps_sched {
  double eps_t, eps, decay;
  __device__ eps_sched(double eps_, double init, double decay_) : eps_t(fmax(init, eps_)), eps(eps_), decay(decay_) {}
  /* eps_t of this iteration (its inverse in *ie), then the decay for the next */
  __device__ double next(double *ie) { double e = eps_t; *ie = 1.0 / e; eps_t = fmax(eps_t * decay, eps); return e; }
};

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
  sums *part;           /* [2][units] */
  double *part2;        /* [units]: the fallback's partial sums */
  double *ua;           /* [units]: a_{t-1} of the unit's row */
  double *ucnt;         /* [units]: unmasked entries of the row */
  unsigned int *uarr;   /* [units]: arrivals its row has had so far */
  unsigned int *arrive; /* [rows]: chunks of the row done, counting over the iterations */
};

template <typename T> __device__ __forceinline__ void store_state(const cd_fwd_args<T> &A, long r, int t, double at,
                                                                  double l, double nb)
{
  double *st = A.state + r * A.iters + (t - 1);
  st[0] = at;
  st[A.rows * A.iters] = l;
  st[2 * A.rows * A.iters] = nb;
}

/* Wait until row r has had `want` arrivals (thread 0), then make the other
   chunks' writes visible to the block. */
__device__ __forceinline__ void row_wait(const unsigned int *arrive, unsigned int want)
{
  if (threadIdx.x == 0) {
    while (*(volatile const unsigned int *)arrive < want) __nanosleep(20);
    __threadfence();
  }
  __syncthreads();
}

__device__ __forceinline__ void row_arrive(unsigned int *arrive)
{
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(arrive, 1u);
  }
}

/* Rows of several chunks: a cooperative launch (every block resident), the
   chunks of a row meeting at a per-row barrier each iteration (an arrival
   counter that only grows), not a grid-wide one: a row waits for its own
   chunks only. A block holds one chunk of a row of several chunks (the grid
   fits the resident blocks), or whole rows, several when the rows outnumber
   the resident blocks: no block ever waits for a chunk queued behind it. */
template <typename T> __global__ void __launch_bounds__(1024) cd_forward_kernel(cd_fwd_args<T> A)
{
  __shared__ sums sh[32];
  __shared__ double bc[4];
  const long n = A.n;
  double *ie = A.state + 3 * A.rows * A.iters;
  eps_sched sched(A.eps, A.eps_init, A.eps_decay);
  for (int t = 1; t <= A.iters; t++) {
    double ie_t;
    const double eps = sched.next(&ie_t);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      ie[t - 1] = ie_t;
      if (t == A.iters) ie[t] = 1.0 / sched.eps_t;
    }
    const T ief = (T)ie_t;
    sums *part = A.part + (t & 1) * A.units;   /* two buffers: a fast chunk never overwrites what a slow one reads */
    for (long u = blockIdx.x; u < A.units; u += gridDim.x) {
      const long r = u / A.bpr, c = u % A.bpr;
      const long j0 = c * A.chunk, j1 = min(n, j0 + A.chunk);
      const double aprev = t == 1 ? INFINITY : A.ua[u];
      const T a = (T)aprev;
      const T *s = A.s + r * n;
      const uint8_t *m = A.mask ? A.mask + r * n : NULL;
      tsums<T> tv;
      chunk_sums(s, m, j0, j1, a, ief, tv);
      sums v = tv.d();
      v = block_sums(v, sh);
      unsigned int want = (t == 1 ? 0u : A.uarr[u]) + (unsigned int)A.bpr;
      if (threadIdx.x == 0) part[u] = v;
      row_arrive(A.arrive + r);
      row_wait(A.arrive + r, want);
      if (threadIdx.x < 32) {   /* other chunks' partials: read past this SM's L1 (it may hold an old buffer) */
        const sums *p = part + r * A.bpr;
        sums w = { 0.0, 0.0, -INFINITY };
        for (long i = threadIdx.x; i < A.bpr; i += 32) w = sums_add(w, { __ldcg(&p[i].S), __ldcg(&p[i].nab), __ldcg(&p[i].M) });
        for (int o = 16; o; o >>= 1) w = sums_add(w, sums_shfl(w, o));
        if (threadIdx.x == 0) { bc[0] = w.S; bc[1] = w.nab; bc[2] = w.M; }
      }
      __syncthreads();
      const double cnt = t == 1 ? bc[1] : A.ucnt[u];
      double l = log(bc[0]);
      if (underflowed(t, cnt, bc[0])) {   /* the whole row agrees: its chunks all merged the same sums */
        double f = 0.0;
        for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x)
          if (!m || m[j]) f += fallback_elem(s[j], aprev, ie_t, bc[2]);
        f = block_sum(f, (double *)sh);
        if (threadIdx.x == 0) A.part2[u] = f;
        want += (unsigned int)A.bpr;
        row_arrive(A.arrive + r);
        row_wait(A.arrive + r, want);
        if (threadIdx.x == 0) {
          double S2 = 0.0;
          for (long i = 0; i < A.bpr; i++) S2 += __ldcg(&A.part2[r * A.bpr + i]);
          bc[3] = bc[2] + log(S2);
        }
        __syncthreads();
        l = bc[3];
      }
      if (threadIdx.x == 0) {
        double lo, nb;
        if (t == 1) A.ucnt[u] = cnt;
        double at = cd_step(t, eps, A.logk ? A.logk[r] : A.logk0, aprev, cnt, l, bc[1], &lo, &nb);
        A.ua[u] = at;
        A.uarr[u] = want;
        if (c == 0) store_state(A, r, t, at, lo, nb);
      }
      __syncthreads();
    }
  }
  const T ief = (T)(1.0 / sched.eps_t);
  for (long u = blockIdx.x; u < A.units; u += gridDim.x) {
    const long r = u / A.bpr, c = u % A.bpr;
    const long j0 = c * A.chunk, j1 = min(n, j0 + A.chunk);
    const T a = (T)A.ua[u];
    const T *s = A.s + r * n;
    T *y = A.y + r * n;
    const uint8_t *m = A.mask ? A.mask + r * n : NULL;
    for (long base = j0 + threadIdx.x; base < j1; base += LD * blockDim.x) {
      T v[LD];
#pragma unroll
      for (int q = 0; q < LD; q++) {
        long j = base + q * (long)blockDim.x;
        v[q] = j < j1 ? s[j] : (T)0;
      }
#pragma unroll
      for (int q = 0; q < LD; q++) {
        long j = base + q * (long)blockDim.x;
        T x = v[q] + a;
        if (j < j1) y[j] = (m && !m[j]) ? (T)0 : exp((x < 0 ? x : (T)0) * ief);
      }
    }
  }
}

/* A row over a cluster of C blocks (C = 1: one block a row), each block
   holding E elements a thread of its slice [rank w, rank w + w), w =
   blockDim E, in registers for all T iterations. Per iteration the warps
   reduce, every thread adds its block's warp sums in order, and after one
   cluster barrier every thread adds the C blocks' sums (distributed shared
   memory) in rank order: every block of the row computes the same a_t. The
   sums alternate between two buffers, so one barrier of each kind an
   iteration suffices. */
template <typename T, int E> __global__ void __launch_bounds__(512, 1) cd_forward_cluster_kernel(cd_fwd_args<T> A)
{
  __shared__ sums wsh[2][32], bsh[2];
  __shared__ double fsh[33];
  cg::cluster_group cl = cg::this_cluster();
  const int nw = (blockDim.x + 31) >> 5;
  const unsigned int C = cl.num_blocks(), rank = cl.block_rank();
  const long r = blockIdx.x / C, n = A.n, w0 = (long)rank * blockDim.x * E;
  const T *s = A.s + r * n;
  const uint8_t *m = A.mask ? A.mask + r * n : NULL;
  T v[E];
  unsigned int keep = 0;
#pragma unroll
  for (int q = 0; q < E; q++) {
    long j = w0 + threadIdx.x + q * (long)blockDim.x;
    v[q] = j < n ? s[j] : (T)0;
    if (j < n && (!m || m[j])) keep |= 1u << q;
  }
  double *ie = A.state + 3 * A.rows * A.iters;
  eps_sched sched(A.eps, A.eps_init, A.eps_decay);
  double aprev = INFINITY, cnt = 0.0;
  const double logk = A.logk ? A.logk[r] : A.logk0;
  for (int t = 1; t <= A.iters; t++) {
    double ie_t;
    const double eps = sched.next(&ie_t);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      ie[t - 1] = ie_t;
      if (t == A.iters) ie[t] = 1.0 / sched.eps_t;
    }
    const T ief = (T)ie_t, a = (T)aprev;
    tsums<T> tv;
#pragma unroll
    for (int q = 0; q < E; q++)
      if (keep >> q & 1) tv.add(v[q] + a, ief);
    sums w = tv.d();
    for (int o = 16; o; o >>= 1) w = sums_add(w, sums_shfl(w, o));
    sums *ws = wsh[t & 1];
    if ((threadIdx.x & 31) == 0) ws[threadIdx.x >> 5] = w;
    __syncthreads();
    if (threadIdx.x == 0) {
      sums bb = ws[0];
      for (int i = 1; i < nw; i++) bb = sums_add(bb, ws[i]);
      bsh[t & 1] = bb;
    }
    cl.sync();
    /* every block's sums loaded before any is added (C <= 8, cluster_shape): one remote latency an
       iteration, not C in a row; added in rank order as before */
    sums rk[8], b = { 0.0, 0.0, -INFINITY };
#pragma unroll
    for (unsigned int k = 0; k < 8; k++)
      if (k < C) rk[k] = *cl.map_shared_rank(&bsh[t & 1], k);
#pragma unroll
    for (unsigned int k = 0; k < 8; k++)
      if (k < C) b = sums_add(b, rk[k]);
    if (t == 1) cnt = b.nab;
    double l = log(b.S);
    if (underflowed(t, cnt, b.S)) {   /* uniform over the cluster */
      double f = 0.0;
#pragma unroll
      for (int q = 0; q < E; q++)
        if (keep >> q & 1) f += fallback_elem(v[q], aprev, ie_t, b.M);
      f = block_sum(f, fsh);
      if (threadIdx.x == 0) fsh[32] = f;   /* the sum is thread 0's */
      cl.sync();
      double F = 0.0;
      for (unsigned int k = 0; k < C; k++) F += *cl.map_shared_rank(&fsh[32], k);
      l = b.M + log(F);
      cl.sync();
    }
    double lo, nb;
    aprev = cd_step(t, eps, logk, aprev, cnt, l, b.nab, &lo, &nb);   /* every thread: the same bits */
    if (rank == 0 && threadIdx.x == 0) store_state(A, r, t, aprev, lo, nb);
  }
  const T ief = (T)(1.0 / sched.eps_t), a = (T)aprev;
  T *y = A.y + r * n;
#pragma unroll
  for (int q = 0; q < E; q++) {
    long j = w0 + threadIdx.x + q * (long)blockDim.x;
    T x = v[q] + a;
    if (j < n) y[j] = (keep >> q & 1) ? exp((x < 0 ? x : (T)0) * ief) : (T)0;
  }
  cl.sync();   /* no block leaves while another may read its shared memory */
}

/* The cluster shape for rows of n (both directions): C blocks a row (a power
   of two <= 8, while the rows leave multiprocessors idle), E elements a
   thread, threads <= 512 a block; false when a block's slice would pass
   512 x 32 elements (the cooperative kernel takes those rows). */
static bool cluster_shape(long rows, long n, int sms, int *C, int *E, int *threads)
{
  int c = 1;
  while (c < 8 && rows * c * 2 <= sms && n / (c * 2) >= 1024) c *= 2;
  long per = (n + c - 1) / c;
  if (per > 512L * 32) return false;
  *C = c;
  *E = per <= 512L * 16 ? 16 : 32;
  int th = 32;
  while ((long)th * *E < per) th *= 2;
  *threads = th;
  return true;
}

template <typename K, typename... Args> static cudaError_t launch_cluster(K kernel, long rows, int C, int threads,
                                                                         size_t smem, cudaStream_t st, Args... args)
{
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeClusterDimension;
  at[0].val.clusterDim.x = C;
  at[0].val.clusterDim.y = 1;
  at[0].val.clusterDim.z = 1;
  cfg.gridDim = dim3((unsigned)(rows * C));
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cfg.attrs = at;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}

static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* log k per row into dst (device) when k_stride != 0: the kernels' A.logk. */
static c5_status put_logk(c5k_cuda_dev *dev, const double *k, long k_stride, long rows, double *dst,
                          cd_fwd_args<c5_real> *A, const char *op)
{
  if (k_stride == 0) return C5_OK;
  double *h = (double *)malloc(rows * sizeof(double));
  if (!h) return C5K_ERR(C5_ERR_MEM, "%s: out of host memory", op);
  for (long r = 0; r < rows; r++) h[r] = log(k[r * k_stride]);
  cudaError_t e = cudaMemcpyAsync(dst, h, rows * sizeof(double), cudaMemcpyHostToDevice, dev->stream);
  free(h);   /* a pageable source is consumed when the call returns */
  if (e != cudaSuccess) return C5K_ERR(C5_ERR_CUDA, "%s: copying k: %s", op, cudaGetErrorString(e));
  A->logk = dst;
  return C5_OK;
}

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
  cd_fwd_args<c5_real> A;
  A.s = s; A.mask = mask; A.y = y;
  A.rows = rows; A.n = n; A.iters = T;
  A.eps = eps; A.eps_init = eps_init; A.eps_decay = eps_decay;
  A.logk0 = log(k[0]); A.logk = NULL; A.state = state;
  int C, E, threads;
  if (cluster_shape(rows, n, dev->sms, &C, &E, &threads)) {   /* the row in registers of a cluster's blocks */
    void *scr;
    C5_CALL_K(c5k_cuda_scratch(dev, rows * sizeof(double), &scr, op));
    C5_CALL_K(put_logk(dev, k, k_stride, rows, (double *)scr, &A, op));
    C5K_CUDA_TRY(E == 16 ? launch_cluster(cd_forward_cluster_kernel<c5_real, 16>, rows, C, threads, 0, dev->stream, A)
                         : launch_cluster(cd_forward_cluster_kernel<c5_real, 32>, rows, C, threads, 0, dev->stream, A), op);
    return C5_OK;
  }
  /* Long rows take 1024 threads a block (fewer partials to merge), shorter ones 256. */
  threads = n >= 65536 ? 1024 : 256;
  static int occ[2] = { 0, 0 };
  int *oc = &occ[threads == 1024];
  if (!*oc) C5K_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(oc, cd_forward_kernel<c5_real>, threads, 0), op);
  const long cap = (long)*oc * dev->sms;
  long bpr = (n + 2 * threads - 1) / (2 * threads);    /* at least 2 elements a thread */
  long fit = cap / rows > 0 ? cap / rows : 1;
  if (bpr > fit) bpr = fit;
  if (bpr < 1) bpr = 1;
  long chunk = n > 0 ? ((n + bpr - 1) / bpr + 3) & ~3L : 1;   /* whole float4s */
  bpr = n > 0 ? (n + chunk - 1) / chunk : 1;
  const long units = rows * bpr;
  const long grid = units < cap ? units : cap;

  size_t o_logk = 0, o_part = align256(rows * sizeof(double));
  size_t o_part2 = align256(o_part + 2 * units * sizeof(sums)), o_ua = align256(o_part2 + units * sizeof(double));
  size_t o_cnt = align256(o_ua + units * sizeof(double)), o_uarr = align256(o_cnt + units * sizeof(double));
  size_t o_arr = align256(o_uarr + units * sizeof(unsigned int)), bytes = align256(o_arr + rows * sizeof(unsigned int));
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, bytes, &scr, op));
  char *base = (char *)scr;
  C5_CALL_K(put_logk(dev, k, k_stride, rows, (double *)(base + o_logk), &A, op));
  A.bpr = bpr; A.chunk = chunk; A.units = units;
  A.part = (sums *)(base + o_part); A.part2 = (double *)(base + o_part2); A.ua = (double *)(base + o_ua);
  A.ucnt = (double *)(base + o_cnt); A.uarr = (unsigned int *)(base + o_uarr);
  A.arrive = (unsigned int *)(base + o_arr);
  C5K_CUDA_TRY(cudaMemsetAsync(A.arrive, 0, rows * sizeof(unsigned int), dev->stream), op);
  void *args[] = { &A };
  C5K_CUDA_TRY(cudaLaunchCooperativeKernel((const void *)cd_forward_kernel<c5_real>, dim3((unsigned)grid),
                                           dim3(threads), args, 0, dev->stream), op);
  return C5_OK;
}

/* ---- backward ---- */
#define BWD_THREADS 256

/* A thread's part of sum_j gy_j y_j [s_j + aT <= 0] over unmasked j of [j0, j1) (cd_gdot's terms, in double). */
template <typename T> __device__ __forceinline__ double gdot_range(const T *s, const uint8_t *mask, const T *y,
                                                                  const T *gy, long j0, long j1, T aT)
{
  double acc = 0.0;
  for (long base = j0 + threadIdx.x; base < j1; base += LD * blockDim.x) {
    T sv[LD], yv[LD], gv[LD];
    bool keep[LD];
#pragma unroll
    for (int q = 0; q < LD; q++) {
      long j = base + q * (long)blockDim.x;
      keep[q] = j < j1 && (!mask || mask[j]);
      sv[q] = keep[q] ? s[j] : (T)1;
      yv[q] = keep[q] ? y[j] : (T)0;
      gv[q] = keep[q] ? gy[j] : (T)0;
    }
#pragma unroll
    for (int q = 0; q < LD; q++)
      if (keep[q] && sv[q] + aT <= 0) acc += (double)gv[q] * (double)yv[q];
  }
  return acc;
}

template <typename T> __global__ void __launch_bounds__(BWD_THREADS)
cd_gdot_kernel(const T *s, const uint8_t *mask, const T *y, const T *gy, long n, long bpr, long chunk, int iters,
               long rows, const double *state, const double *ie, double *part)
{
  __shared__ double sh[32];
  const long u = blockIdx.x, r = u / bpr, c = u % bpr;
  const long j0 = r * n + c * chunk, j1 = r * n + min(n, (c + 1) * chunk);
  double acc = gdot_range(s, mask, y, gy, j0, j1, (T)state[r * iters + iters - 1]);
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) part[u] = acc * ie[iters];
}

/* One warp a row: dL/da_t for t = T .. 1 from the row's dot (fixed-order merge). */
/* Called by every thread of the block; dot is thread 0's. The factors
   exp(-lse_t) in parallel (fac, shared), then lib/cd.c's products in its
   order: ga_T = dot (0 for a fully masked row), ga_{t-1} = ga_t nab_t exp(-lse_t). */
__device__ __forceinline__ void ga_recurrence(double dot, int iters, long rows, long r, const double *state, double *g,
                                              double *fac)
{
  const double *lse = state + rows * iters + r * iters, *nab = state + 2 * rows * iters + r * iters;
  for (int t = threadIdx.x; t < iters; t += blockDim.x) fac[t] = exp(-lse[t]);
  __syncthreads();
  if (threadIdx.x == 0) {
    g[iters - 1] = nab[0] > 0 ? dot : 0.0;
    for (int t = iters; t >= 2; t--) g[t - 2] = g[t - 1] * nab[t - 1] * fac[t - 1];
  }
  __syncthreads();
}

/* One warp a row: its dot (fixed-order merge of the chunks'), then dL/da_t into ga. */
__global__ void cd_ga_kernel(const double *part, long bpr, int iters, long rows, const double *state, double *ga)
{
  extern __shared__ double fac[];
  const long r = blockIdx.x;
  const int lane = threadIdx.x;
  double v = 0.0;
  for (long i = lane; i < bpr; i += 32) v += part[r * bpr + i];
  for (int o = 16; o; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  ga_recurrence(v, iters, rows, r, state, ga + r * iters, fac);
}

/* ds of Q elements from their row's saved scalars (lib/cd.c, cd_backward),
   the iterations outermost so each scalar is read once for the Q; per
   element the same operations in the same order as the CPU's. Masked: 0. */
template <typename T, int Q> __device__ __forceinline__ void ds_group(const T *sv, const T *yv, const T *gv,
                                                                      unsigned int keep, T aT, double ieT, int iters,
                                                                      const double *g, const T *ap, const T *iev,
                                                                      const T *lv, T *out)
{
  double acc[Q];
#pragma unroll
  for (int q = 0; q < Q; q++) acc[q] = sv[q] + aT <= 0 ? (double)gv[q] * (double)yv[q] * ieT : 0.0;
  for (int t = iters; t >= 2; t--) {   /* iteration t used a_{t-1}, eps_t, lse_t, ga_t */
    const double gt = g[t - 1];
    if (gt == 0.0) continue;
    const T a = ap[t - 2], ie = iev[t - 1], l = lv[t - 1];
#pragma unroll
    for (int q = 0; q < Q; q++) {
      T x = sv[q] + a;
      if (x <= 0) acc[q] -= gt * (double)exp(x * ie - l);
    }
  }
#pragma unroll
  for (int q = 0; q < Q; q++) out[q] = (keep >> q & 1) ? (T)acc[q] : (T)0;
}

/* A row's scalars into shared memory: g [iters] doubles (from gr, unless NULL), then a_t, 1 / eps_t,
   lse_t [iters] each in T. ar, lr, gr: the row's [iters] of a, lse, ga. */
template <typename T> __device__ __forceinline__ void load_row_scalars(int iters, const double *ar, const double *lr,
                                                                       const double *ie, const double *gr, double *g,
                                                                       T *ap, T *iev, T *lv)
{
  for (int t = threadIdx.x; t < iters; t += blockDim.x) {
    if (gr) g[t] = gr[t];
    ap[t] = (T)ar[t];
    iev[t] = (T)ie[t];
    lv[t] = (T)lr[t];
  }
}

/* ds over [j0, j1) from the row's scalars (load_row_scalars), LD elements a thread at a time. */
template <typename T> __device__ __forceinline__ void ds_range(const T *s, const uint8_t *mask, const T *y, const T *gy,
                                                               long j0, long j1, T aT, double ieT, int iters,
                                                               const double *g, const T *ap, const T *iev,
                                                               const T *lv, T *ds)
{
  for (long base = j0 + threadIdx.x; base < j1; base += LD * blockDim.x) {
    T sv[LD], yv[LD], gv[LD];
    bool keep[LD];
#pragma unroll
    for (int q = 0; q < LD; q++) {
      long j = base + q * (long)blockDim.x;
      keep[q] = j < j1 && (!mask || mask[j]);
      sv[q] = keep[q] ? s[j] : (T)0;
      yv[q] = keep[q] ? y[j] : (T)0;
      gv[q] = keep[q] ? gy[j] : (T)0;
    }
    unsigned int km = 0;
#pragma unroll
    for (int q = 0; q < LD; q++) km |= (unsigned int)keep[q] << q;
    T o[LD];
    ds_group<T, LD>(sv, yv, gv, km, aT, ieT, iters, g, ap, iev, lv, o);
#pragma unroll
    for (int q = 0; q < LD; q++) {
      long j = base + q * (long)blockDim.x;
      if (j < j1) ds[j] = o[q];
    }
  }
}

template <typename T> __global__ void __launch_bounds__(BWD_THREADS)
cd_ds_kernel(const T *s, const uint8_t *mask, const T *y, const T *gy, long n, long bpr, long chunk, int iters,
             long rows, const double *state, const double *ie, const double *ga, T *ds)
{
  extern __shared__ double dyn[];
  double *g = dyn;
  T *ap = (T *)(g + iters), *iev = ap + iters, *lv = iev + iters;
  const long u = blockIdx.x, r = u / bpr, c = u % bpr;
  load_row_scalars(iters, state + r * iters, state + rows * iters + r * iters, ie, ga + r * iters, g, ap, iev, lv);
  __syncthreads();
  const long j0 = r * n + c * chunk, j1 = r * n + min(n, (c + 1) * chunk);
  ds_range(s, mask, y, gy, j0, j1, ap[iters - 1], ie[iters], iters, g, ap, iev, lv, ds);
}

/* A row over a cluster of C blocks (cluster_shape, as the forward): the dot
   (the blocks' sums added in rank order through distributed shared memory),
   the recurrence (every block alike) and ds in one launch. */
template <typename T, int E> __global__ void __launch_bounds__(512, 1)
cd_backward_cluster_kernel(const T *s, const uint8_t *mask, const T *y, const T *gy, long n, int iters, long rows,
                           const double *state, T *ds)
{
  extern __shared__ double dyn[];
  __shared__ double sh[33];
  cg::cluster_group cl = cg::this_cluster();
  double *g = dyn, *fac = g + iters;
  T *ap = (T *)(fac + iters), *iev = ap + iters, *lv = iev + iters;
  const unsigned int C = cl.num_blocks(), rank = cl.block_rank();
  const long r = blockIdx.x / C, w0 = (long)rank * blockDim.x * E;
  const double *ie = state + 3 * rows * iters;
  const T aT = (T)state[r * iters + iters - 1];
  T sv[E], yv[E], gv[E];
  unsigned int keep = 0;
  double acc = 0.0;
#pragma unroll
  for (int q = 0; q < E; q++) {
    long jj = w0 + threadIdx.x + q * (long)blockDim.x, j = r * n + jj;
    bool k = jj < n && (!mask || mask[j]);
    sv[q] = k ? s[j] : (T)0;
    yv[q] = k ? y[j] : (T)0;
    gv[q] = k ? gy[j] : (T)0;
    if (k) keep |= 1u << q;
  }
#pragma unroll
  for (int q = 0; q < E; q++)
    if ((keep >> q & 1) && sv[q] + aT <= 0) acc += (double)gv[q] * (double)yv[q];
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) sh[32] = acc;
  load_row_scalars<T>(iters, state + r * iters, state + rows * iters + r * iters, ie, NULL, g, ap, iev, lv);
  cl.sync();
  double dot = 0.0;
  for (unsigned int k = 0; k < C; k++) dot += *cl.map_shared_rank(&sh[32], k);
  ga_recurrence(dot * ie[iters], iters, rows, r, state, g, fac);
  const double ieT = ie[iters];
#pragma unroll
  for (int g0 = 0; g0 < E; g0 += 8) {   /* eight at a time: the accumulators stay in registers */
    T o[8];
    ds_group<T, 8>(sv + g0, yv + g0, gv + g0, keep >> g0, aT, ieT, iters, g, ap, iev, lv, o);
#pragma unroll
    for (int q = 0; q < 8; q++) {
      long jj = w0 + threadIdx.x + (g0 + q) * (long)blockDim.x;
      if (jj < n) ds[r * n + jj] = o[q];
    }
  }
  cl.sync();   /* no block leaves while another may read its shared memory */
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
  const size_t sm = T * (2 * sizeof(double) + 3 * sizeof(c5_real));
  int C, E, threads;
  if (cluster_shape(rows, n, dev->sms, &C, &E, &threads)) {   /* the forward's clusters */
    C5K_CUDA_TRY(E == 16 ? launch_cluster(cd_backward_cluster_kernel<c5_real, 16>, rows, C, threads, sm, dev->stream, s,
                                          mask, y, gy, n, T, rows, (const double *)state, ds)
                         : launch_cluster(cd_backward_cluster_kernel<c5_real, 32>, rows, C, threads, sm, dev->stream, s,
                                          mask, y, gy, n, T, rows, (const double *)state, ds), op);
    return C5_OK;
  }
  /* chunks of 4096, halved down to 1024 while the rows would leave multiprocessors idle */
  long chunk = 4096;
  while (chunk > 1024 && rows * ((n + chunk - 1) / chunk) < 2L * dev->sms) chunk /= 2;
  const long bpr = (n + chunk - 1) / chunk, units = rows * bpr;
  size_t o_part = 0, o_ga = align256(units * sizeof(double));
  size_t bytes = align256(o_ga + rows * T * sizeof(double));
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, bytes, &scr, op));
  char *base = (char *)scr;
  double *part = (double *)(base + o_part), *ga = (double *)(base + o_ga);
  const double *ie = state + 3 * rows * T;   /* the forward's 1 / eps_t */
  cd_gdot_kernel<c5_real><<<(unsigned)units, BWD_THREADS, 0, dev->stream>>>(s, mask, y, gy, n, bpr, chunk, T, rows, state, ie, part);
  C5K_CUDA_LAUNCHED(op);
  cd_ga_kernel<<<(unsigned)rows, 32, T * sizeof(double), dev->stream>>>(part, bpr, T, rows, state, ga);
  C5K_CUDA_LAUNCHED(op);
  cd_ds_kernel<c5_real><<<(unsigned)units, BWD_THREADS, sm, dev->stream>>>(s, mask, y, gy, n, bpr, chunk, T, rows, state, ie, ga, ds);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* ---- the per-step ops (kernels.h cd_sumexp .. cd_backward): lib/cd.c's loop
   op by op, for rows sharded over ranks or ragged (route blocks), where a
   collective comes between the steps. One block a chunk of the CPU's
   partition (chunks.cuh); a chunk's partial is its threads' double sums in a
   fixed tree, a row's the chunks' in order, as on the CPU. ---- */
#include "chunks.cuh"

/* The CPU's shifted exponent min(x, 0) ie of x = s_j + a (score type). */
template <typename T> __device__ __forceinline__ T cd_exponent(T x, T ie) { return (x < 0 ? x : (T)0) * ie; }

template <typename T> __global__ void __launch_bounds__(C5K_CHUNK_THREADS)
cdo_sumexp_kernel(c5k_drows G, const T *s, const uint8_t *mask, const double *a, T ie, double *part)
{
  __shared__ double sh[32];
  const long c = blockIdx.x, r = c5k_drows_row(G, c);
  long j0, j1;
  c5k_drows_range(G, r, c, &j0, &j1);
  const T ar = (T)a[r];
  double acc = 0.0, nab = 0.0;
  for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    if (mask && !mask[j]) continue;   /* the CPU's exp(-inf) = 0 */
    T x = s[j] + ar;
    nab += x > 0 ? 1.0 : 0.0;
    acc += (double)exp(cd_exponent(x, ie));
  }
  acc = block_sum(acc, sh);
  nab = block_sum(nab, sh);
  if (threadIdx.x == 0) { part[2 * c] = acc; part[2 * c + 1] = nab; }
}

/* out_i[r] = sum of part[w c + i] over row r's chunks in order, i < w (one thread a row). */
__global__ void cdo_rowsum_kernel(c5k_drows G, const double *part, int w, double *out0, double *out1)
{
  const long r = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (r >= G.rows) return;
  double s0 = 0.0, s1 = 0.0;
  for (long c = G.cstart[r]; c < G.cstart[r + 1]; c++) {
    s0 += part[w * c];
    if (w > 1) s1 += part[w * c + 1];
  }
  out0[r] = s0;
  if (w > 1) out1[r] = s1;
}

/* {M, S} += {m2, s2}: the CPU's merge of two {max, sum exp(t - max)} pairs (an empty one has m2 = -inf). */
__device__ __forceinline__ void ms_merge(double &M, double &S, double m2, double s2)
{
  if (m2 == -INFINITY) return;
  if (m2 > M) { S = S * exp(M - m2) + s2; M = m2; }
  else S += s2 * exp(m2 - M);
}

/* A chunk's {max, sumexp}: each thread the CPU's online loop over its
   elements (in double: this path exists for sums that underflow), then the
   pairs merged in a fixed tree. */
template <typename T> __global__ void __launch_bounds__(C5K_CHUNK_THREADS)
cdo_maxsumexp_kernel(c5k_drows G, const T *s, const uint8_t *mask, const double *a, double ie, double *part)
{
  __shared__ double shm[32], shs[32];
  const long c = blockIdx.x, r = c5k_drows_row(G, c);
  long j0, j1;
  c5k_drows_range(G, r, c, &j0, &j1);
  const double ar = a[r];
  double M = -INFINITY, S = 0.0;
  for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    if (mask && !mask[j]) continue;
    double x = (double)s[j] + ar, t = (x < 0 ? x : 0.0) * ie;
    if (t > M) { S = S * exp(M - t) + 1.0; M = t; }
    else S += exp(t - M);
  }
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  for (int o = 16; o; o >>= 1) {
    double m2 = __shfl_down_sync(0xffffffffu, M, o), s2 = __shfl_down_sync(0xffffffffu, S, o);
    if (lane + o < 32) ms_merge(M, S, m2, s2);
  }
  if (lane == 0) { shm[w] = M; shs[w] = S; }
  __syncthreads();
  if (w == 0) {
    M = lane < nw ? shm[lane] : -INFINITY;
    S = lane < nw ? shs[lane] : 0.0;
    for (int o = 16; o; o >>= 1) {
      double m2 = __shfl_down_sync(0xffffffffu, M, o), s2 = __shfl_down_sync(0xffffffffu, S, o);
      if (lane + o < 32) ms_merge(M, S, m2, s2);
    }
    if (lane == 0) { part[2 * c] = M; part[2 * c + 1] = S; }
  }
}

/* pair[r] = the row's chunk pairs merged in order (the CPU's loop; {-inf, 0} for none). */
__global__ void cdo_rowmerge_kernel(c5k_drows G, const double *part, double *pair)
{
  const long r = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (r >= G.rows) return;
  double M = -INFINITY, S = 0.0;
  for (long c = G.cstart[r]; c < G.cstart[r + 1]; c++) ms_merge(M, S, part[2 * c], part[2 * c + 1]);
  pair[2 * r] = M;
  pair[2 * r + 1] = S;
}

template <typename T> __global__ void __launch_bounds__(C5K_CHUNK_THREADS)
cdo_output_kernel(c5k_drows G, const T *s, const uint8_t *mask, const double *a, T ie, T *y)
{
  const long c = blockIdx.x, r = c5k_drows_row(G, c);
  long j0, j1;
  c5k_drows_range(G, r, c, &j0, &j1);
  const T ar = (T)a[r];
  for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x)
    y[j] = (mask && !mask[j]) ? (T)0 : exp(cd_exponent(s[j] + ar, ie));
}

template <typename T> __global__ void __launch_bounds__(C5K_CHUNK_THREADS)
cdo_gdot_kernel(c5k_drows G, const T *s, const uint8_t *mask, const double *a, double ie, const T *y, const T *gy,
                double *part)
{
  __shared__ double sh[32];
  const long c = blockIdx.x, r = c5k_drows_row(G, c);
  long j0, j1;
  c5k_drows_range(G, r, c, &j0, &j1);
  double acc = block_sum(gdot_range(s, mask, y, gy, j0, j1, (T)a[r]), sh);
  if (threadIdx.x == 0) part[c] = acc * ie;   /* the CPU scales each chunk's sum */
}

template <typename T> __global__ void __launch_bounds__(C5K_CHUNK_THREADS)
cdo_backward_kernel(c5k_drows G, const T *s, const uint8_t *mask, int iters, const double *a, const double *lse,
                    const double *ie, const double *ga, const T *y, const T *gy, T *ds)
{
  extern __shared__ double dyn[];
  double *g = dyn;
  T *ap = (T *)(g + iters), *iev = ap + iters, *lv = iev + iters;
  const long c = blockIdx.x, r = c5k_drows_row(G, c);
  long j0, j1;
  c5k_drows_range(G, r, c, &j0, &j1);
  load_row_scalars(iters, a + r * iters, lse + r * iters, ie, ga + r * iters, g, ap, iev, lv);
  __syncthreads();
  ds_range(s, mask, y, gy, j0, j1, ap[iters - 1], ie[iters], iters, g, ap, iev, lv, ds);
}

extern "C" c5_status c5k_cd_sumexp_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                                        const double *a, double inv_eps, double *sum, double *nabove)
{
  const char *op = "cd_sumexp";
  if (R->rows == 0) return C5_OK;
  c5k_cuda_dev *dev;
  c5k_drows G;
  void *part;
  C5_CALL_K(c5k_drows_setup(ctx, R, 2 * R->cstart[R->rows] * sizeof(double), op, &dev, &G, &part));
  if (G.nc > 0) {
    cdo_sumexp_kernel<c5_real><<<(unsigned)G.nc, C5K_CHUNK_THREADS, 0, dev->stream>>>(G, s, mask, a, (c5_real)inv_eps,
                                                                                       (double *)part);
    C5K_CUDA_LAUNCHED(op);
  }
  cdo_rowsum_kernel<<<c5k_drows_blocks(G.rows), 128, 0, dev->stream>>>(G, (const double *)part, 2, sum, nabove);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_cd_maxsumexp_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                                           const double *a, double inv_eps, double *pair)
{
  const char *op = "cd_maxsumexp";
  if (R->rows == 0) return C5_OK;
  c5k_cuda_dev *dev;
  c5k_drows G;
  void *part;
  C5_CALL_K(c5k_drows_setup(ctx, R, 2 * R->cstart[R->rows] * sizeof(double), op, &dev, &G, &part));
  if (G.nc > 0) {
    cdo_maxsumexp_kernel<c5_real><<<(unsigned)G.nc, C5K_CHUNK_THREADS, 0, dev->stream>>>(G, s, mask, a, inv_eps,
                                                                                          (double *)part);
    C5K_CUDA_LAUNCHED(op);
  }
  cdo_rowmerge_kernel<<<c5k_drows_blocks(G.rows), 128, 0, dev->stream>>>(G, (const double *)part, pair);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_cd_output_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                                        const double *a, double inv_eps, c5_real *y)
{
  const char *op = "cd_output";
  if (R->cstart[R->rows] == 0) return C5_OK;
  c5k_cuda_dev *dev;
  c5k_drows G;
  void *part;
  C5_CALL_K(c5k_drows_setup(ctx, R, 0, op, &dev, &G, &part));
  cdo_output_kernel<c5_real><<<(unsigned)G.nc, C5K_CHUNK_THREADS, 0, dev->stream>>>(G, s, mask, a, (c5_real)inv_eps, y);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_cd_gdot_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                                      const double *a, double inv_eps, const c5_real *y, const c5_real *gy,
                                      double *dot)
{
  const char *op = "cd_gdot";
  if (R->rows == 0) return C5_OK;
  c5k_cuda_dev *dev;
  c5k_drows G;
  void *part;
  C5_CALL_K(c5k_drows_setup(ctx, R, R->cstart[R->rows] * sizeof(double), op, &dev, &G, &part));
  if (G.nc > 0) {
    cdo_gdot_kernel<c5_real><<<(unsigned)G.nc, C5K_CHUNK_THREADS, 0, dev->stream>>>(G, s, mask, a, inv_eps, y, gy,
                                                                                     (double *)part);
    C5K_CUDA_LAUNCHED(op);
  }
  cdo_rowsum_kernel<<<c5k_drows_blocks(G.rows), 128, 0, dev->stream>>>(G, (const double *)part, 1, dot, NULL);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_cd_backward_step_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                                               int T, const double *a, const double *lse, const double *inv_eps,
                                               const double *ga, const c5_real *y, const c5_real *gy, c5_real *ds)
{
  const char *op = "cd_backward";
  if (R->cstart[R->rows] == 0) return C5_OK;
  if (T < 1) return C5K_ERR(C5_ERR_ARG, "%s: T = %d iterations must be >= 1", op, T);
  c5k_cuda_dev *dev;
  c5k_drows G;
  void *part;
  C5_CALL_K(c5k_drows_setup(ctx, R, 0, op, &dev, &G, &part));
  const size_t sm = T * (sizeof(double) + 3 * sizeof(c5_real));
  cdo_backward_kernel<c5_real><<<(unsigned)G.nc, C5K_CHUNK_THREADS, sm, dev->stream>>>(G, s, mask, T, a, lse, inv_eps,
                                                                                        ga, y, gy, ds);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
