/* attn_heavy.cu - the heavy-branch Attention's arithmetic on the GPU (layouts
   and semantics in kernels.h, the CPU's in kernels/cpu/attn_heavy.c).

   The attention is flash style: a head's scores and probabilities exist in
   shared memory one [BT x BT] tile at a time, never in device memory. At
   n = 1M tokens (nq = nk = 65536 routed tokens, 8 heads) the stored
   P [b, H, nq, 1 + nk] of the former GEMM + row kernel + GEMM path alone
   took 137 GB; the forward now keeps each row's log-sum-exp (lse, b H nq
   doubles), from which the backward recomputes P.
   Forward (ha_forward): one block per (b, h, query tile); the slots in key
   tiles (slot 0 the null key, masked slots weighed exactly 0, wholly masked
   tiles skipped: they would change nothing) with a running max (online
   softmax): the row sum and o's accumulators in double, rescaled by
   exp(m_old - m_new) when the max grows, o = acc / sum at the end.
   Backward, deterministic without atomics:
     query-centric (ha_backward_q, per query tile): a sweep over the key
       tiles forms Delta = sum_j P_j dP_j (double; kept in the device
       scratch, b H nq doubles, for the key pass), a second forms
       dS = P (dP - Delta) and dq = scale dS K;
     key-centric (ha_backward_kv, per key tile, after it): the query tiles
       in ascending order recompute P and dS and accumulate dv = P^T dout
       and dk = scale dS^T q; every slot of dkv is written (0 for a masked
       slot and for nq = 0).
   Every output element has one writer and one summation order (in a
   thread: each tile's part in the working precision, the parts added in
   double in tile order; across a row's 16 lanes: a fixed butterfly, the
   same bits in every lane), so two runs give the same bits.
   Thread layout (HA_THREADS = 256, SIMT, fp32 in the single build and fp64
   in the double): thread (ty, tx) = (tid / 16, tid % 16) owns tile rows
   ty RPT .. ty RPT + RPT - 1, score columns tx + 16 c and head columns
   tx + 16 c (< dh); tiles in shared memory have stride dh + 1 (no bank
   conflicts down a column). The tile rows BT (ha_tile) shrink with the
   head width and the type so that the tiles fit in shared memory and the
   double accumulators in registers; dim_head up to HA_MAXDH. The products
   are fp32 (fp64) FMAs on the SIMT cores whatever the backend's matmul mode
   (c5_backend_set_matmul rounds cuBLASLt's products only; tensor cores are
   a later step).

   In bf16 matmul mode (single build) the attention instead runs on the
   tensor cores, below: for dim_head 64 and 128 FlashAttention-2's forward
   (hf_forward) and backward (hb_dq, then hb_dkv; Delta = rowsum(dout o)
   from the forward's o), for other multiples of 8 cuBLASLt products over
   chunks of query rows (hg_forward, hg_backward).

   The kv slot kernels (assembly with the kv score, its gradient, null_kv's
   gradient) are elementwise and keep the CPU's orders. */
#include <math.h>
#include <limits.h>
#include "cuda_internal.cuh"
#include "mma.cuh"

#define HA_FULL 0xffffffffu

__device__ __forceinline__ float ha_exp(float x) { return expf(x); }
__device__ __forceinline__ double ha_exp(double x) { return exp(x); }

/* ---- kv slots ---- */

template <typename I>
__global__ void ha_kv_assemble(long total, long nk, int R, int hpr, int dh, int mk, const c5_real *kvraw,
                               const c5_real *kscore, const c5_real *null_kv, c5_real *kv)
{
  const I L = 2 * (I)hpr * dh, n1 = (I)nk + 1;
  const long D = (long)R * hpr * dh;
  C5K_GRID_LOOP_T(I, i, total) {
    const I row = i / L, col = i % L, br = row / n1, j = row % n1;
    const int hh = (int)(col / (2 * dh)), w = (int)(col % (2 * dh)), isv = w >= dh;
    c5_real x;
    if (j == 0) {
      const long h = (br % R) * hpr + hh;
      x = null_kv[(isv ? D : 0) + h * dh + (w - (isv ? dh : 0))];
    } else {
      const long t = (long)br * nk + j - 1;
      x = kvraw[t * L + col];
      if (kscore && (isv || mk)) x = x * kscore[t];
    }
    kv[i] = x;
  }
}

/* One warp a token: the token's terms in the CPU's order (per head: the
   value's dh, then, when mk, the key's), 32 at a time, each lane's product
   added by every lane in lane order. */
__global__ void ha_kv_score_backward(long tokens, long nk, int hpr, int dh, int mk, const c5_real *kvraw,
                                     const c5_real *kscore, c5_real *dkv, c5_real *dkscore)
{
  const int lane = threadIdx.x & 31;
  const long t = (blockIdx.x * (long)blockDim.x + threadIdx.x) >> 5;
  if (t >= tokens) return;   /* warp-uniform */
  const long L = 2L * hpr * dh, n1 = nk + 1, per = (long)dh * (1 + mk), len = hpr * per;
  c5_real *dst = dkv + ((t / nk) * n1 + 1 + t % nk) * L;
  const c5_real *src = kvraw + t * L;
  const c5_real ks = kscore[t];
  double dks = 0;
  for (long base = 0; base < len; base += 32) {
    const long q = base + lane;
    double prod = 0;
    if (q < len) {
      const long hh = q / per, w = q % per;
      const long col = hh * 2 * dh + (w < dh ? dh + w : w - dh);
      const c5_real d = dst[col];
      prod = (double)d * (double)src[col];
      dst[col] = d * ks;
    }
    const int cnt = (int)min(32L, len - base);
    for (int l = 0; l < cnt; l++) dks += __shfl_sync(HA_FULL, prod, l);
  }
  if (lane == 0 && dkscore) dkscore[t] = (c5_real)dks;
}

/* One thread an element of gnull: the batches in ascending order, as the CPU adds them. */
__global__ void ha_null_kv_grad(long batch, long nk, int H, int hpr, int dh, const c5_real *dkv, double *gnull)
{
  const long i = blockIdx.x * (long)blockDim.x + threadIdx.x, HD = (long)H * dh;
  if (i >= 2 * HD) return;
  const int part = (int)(i / HD), h = (int)((i % HD) / dh), e = (int)(i % dh), R = H / hpr;
  const long L = 2L * hpr * dh, n1 = nk + 1, col = (long)(h % hpr) * 2 * dh + (long)part * dh + e;
  double acc = gnull[i];
  for (long b = 0; b < batch; b++) acc += (double)dkv[(b * R + h / hpr) * n1 * L + col];
  gnull[i] = acc;
}

/* ---- flash attention ---- */

#define HA_THREADS 256
#define HA_LANES 16    /* threads across a tile row: a half-warp, whose butterflies stay inside it */
#define HA_MAXDH 256

/* Tile geometry for type T and head widths up to DHMAX (16 | DHMAX). */
template <typename T, int DHMAX> struct ha_tile {
  static constexpr int raw = 64 * 64 * 4 / (DHMAX * (int)sizeof(T));
  static constexpr int BT = raw > 64 ? 64 : raw < HA_LANES ? HA_LANES : raw;   /* rows of a tile */
  static constexpr int RPT = BT / HA_LANES;      /* tile rows a thread owns */
  static constexpr int CPT = BT / HA_LANES;      /* score columns a thread owns */
  static constexpr int DPT = DHMAX / HA_LANES;   /* head columns a thread owns */
};

/* The op's shape on the device, by value. */
struct ha_shape {
  long batch, nq, nk, n1, D, L;
  int H, hpr, R, dh;
  double scale;
};

static ha_shape ha_shape_of(const c5k_heavy_attn *A)
{
  ha_shape a;
  a.batch = A->batch;
  a.nq = A->nq;
  a.nk = A->nk;
  a.n1 = A->nk + 1;
  a.H = A->heads;
  a.R = A->routes;
  a.hpr = A->heads / A->routes;
  a.dh = A->dim_head;
  a.D = (long)a.H * a.dh;
  a.L = 2L * a.hpr * a.dh;
  a.scale = 1.0 / sqrt((double)a.dh);
  return a;
}

/* Rows [0, rows) of x (row stride ld, dh columns) into tile (stride dh + 1); rows rows .. BT - 1 are 0. */
template <typename T, int BT>
static __device__ __forceinline__ void ha_load(T *tile, const T *x, long ld, long rows, int dh)
{
  const int ldt = dh + 1;
  for (int idx = threadIdx.x; idx < BT * dh; idx += HA_THREADS) {
    const int r = idx / dh, d = idx % dh;
    tile[r * ldt + d] = r < rows ? x[r * ld + d] : (T)0;
  }
}

/* Whether slot j (< n1 or past the keys) of a route takes part: the null slot always, a routed key when kept. */
static __device__ __forceinline__ int ha_takes(long j, long n1, const uint8_t *mk)
{
  return j < n1 && (j == 0 || !mk || mk[j - 1]);
}

/* out[r][c] = sum_d A[ty RPT + r][d] B[tx + 16 c][d], d ascending, in T (tiles of stride ldt). */
template <typename T, int RPT, int CPT>
static __device__ __forceinline__ void ha_dots(const T *A, const T *B, int ldt, int dh, T out[RPT][CPT])
{
  const int ty = threadIdx.x / HA_LANES, tx = threadIdx.x % HA_LANES;
#pragma unroll
  for (int r = 0; r < RPT; r++)
#pragma unroll
    for (int c = 0; c < CPT; c++) out[r][c] = 0;
#pragma unroll 4
  for (int d = 0; d < dh; d++) {
    T x[RPT], y[CPT];
#pragma unroll
    for (int r = 0; r < RPT; r++) x[r] = A[(ty * RPT + r) * ldt + d];
#pragma unroll
    for (int c = 0; c < CPT; c++) y[c] = B[(tx + HA_LANES * c) * ldt + d];
#pragma unroll
    for (int r = 0; r < RPT; r++)
#pragma unroll
      for (int c = 0; c < CPT; c++) out[r][c] += x[r] * y[c];
  }
}

/* part[r][c] = sum_k P[ty RPT + r][k] X[k][tx + 16 c] over the tile's BT rows k ascending, in T (P of stride
   ldp, X of stride ldt); head columns >= dh are 0. */
template <typename T, int BT, int RPT, int DPT>
static __device__ __forceinline__ void ha_pmul(const T *P, int ldp, const T *X, int ldt, int dh, T part[RPT][DPT])
{
  const int ty = threadIdx.x / HA_LANES, tx = threadIdx.x % HA_LANES;
#pragma unroll
  for (int r = 0; r < RPT; r++)
#pragma unroll
    for (int c = 0; c < DPT; c++) part[r][c] = 0;
#pragma unroll 4
  for (int k = 0; k < BT; k++) {
    T p[RPT], x[DPT];
#pragma unroll
    for (int r = 0; r < RPT; r++) p[r] = P[(ty * RPT + r) * ldp + k];
#pragma unroll
    for (int c = 0; c < DPT; c++) x[c] = tx + HA_LANES * c < dh ? X[k * ldt + tx + HA_LANES * c] : (T)0;
#pragma unroll
    for (int r = 0; r < RPT; r++)
#pragma unroll
      for (int c = 0; c < DPT; c++) part[r][c] += p[r] * x[c];
  }
}

/* A row's reductions over its 16 lanes: butterflies, the same bits in every lane. */
static __device__ __forceinline__ double ha_sum16(double x)
{
  for (int o = 1; o < HA_LANES; o <<= 1) x += __shfl_xor_sync(HA_FULL, x, o);
  return x;
}
template <typename T> static __device__ __forceinline__ T ha_max16(T x)
{
  for (int o = 1; o < HA_LANES; o <<= 1) {
    const T y = __shfl_xor_sync(HA_FULL, x, o);
    x = y > x ? y : x;
  }
  return x;
}

/* P of a taking-part slot from its scaled score and its row's lse (kernels.h: the difference formed in double,
   rounded to T; exp in T). */
template <typename T> static __device__ __forceinline__ T ha_prob(T s, double lse)
{
  return ha_exp((T)((double)s - lse));
}

/* Blocks: (b H) x query tiles, the tile fastest. */
template <typename T, int DHMAX>
__global__ void __launch_bounds__(HA_THREADS)
ha_forward(ha_shape a, long tiles, const T *q, const T *kv, const uint8_t *kmask, T *o, double *lse)
{
  typedef ha_tile<T, DHMAX> G;
  constexpr int BT = G::BT, RPT = G::RPT, CPT = G::CPT, DPT = G::DPT;
  extern __shared__ double ha_smem[];
  const int dh = a.dh, ldt = dh + 1, ldp = BT + 1, ty = threadIdx.x / HA_LANES, tx = threadIdx.x % HA_LANES;
  const long bh = blockIdx.x / tiles, q0 = (blockIdx.x % tiles) * BT, b = bh / a.H;
  const int h = (int)(bh % a.H), r = h / a.hpr;
  const long mq = a.nq - q0 < BT ? a.nq - q0 : BT;
  T *Qs = (T *)ha_smem, *Ks = Qs + BT * ldt, *Vs = Ks + BT * ldt, *Ps = Vs + BT * ldt;
  int *tp = (int *)(Ps + BT * ldp);
  const T *kh = kv + (b * a.R + r) * a.n1 * a.L + (long)(h % a.hpr) * 2 * dh;   /* slot 0's key; its value: + dh */
  const uint8_t *mk = kmask ? kmask + (b * a.R + r) * a.nk : NULL;
  const T scale = (T)a.scale;
  ha_load<T, BT>(Qs, q + (b * a.nq + q0) * a.D + (long)h * dh, a.D, mq, dh);

  T m[RPT];                        /* running max of the row's taking-part scores */
  double l[RPT], acc[RPT][DPT];    /* sum of e_j and o's accumulators, relative to m */
#pragma unroll
  for (int i = 0; i < RPT; i++) {
    m[i] = (T)-INFINITY;
    l[i] = 0;
#pragma unroll
    for (int c = 0; c < DPT; c++) acc[i][c] = 0;
  }
  for (long j0 = 0; j0 < a.n1; j0 += BT) {
    const long nkt = a.n1 - j0 < BT ? a.n1 - j0 : BT;
    const int take = threadIdx.x < BT && ha_takes(j0 + threadIdx.x, a.n1, mk);
    __syncthreads();   /* the previous tile is used up */
    if (threadIdx.x < BT) tp[threadIdx.x] = take;
    if (!__syncthreads_or(take)) continue;   /* every slot masked: e = 0 throughout, nothing would change */
    ha_load<T, BT>(Ks, kh + j0 * a.L, a.L, nkt, dh);
    ha_load<T, BT>(Vs, kh + dh + j0 * a.L, a.L, nkt, dh);
    __syncthreads();
    T s[RPT][CPT];
    ha_dots<T, RPT, CPT>(Qs, Ks, ldt, dh, s);
#pragma unroll
    for (int i = 0; i < RPT; i++) {
      T mt = (T)-INFINITY;
#pragma unroll
      for (int c = 0; c < CPT; c++) {
        s[i][c] = scale * s[i][c];
        if (tp[tx + HA_LANES * c] && s[i][c] > mt) mt = s[i][c];
      }
      mt = ha_max16(mt);
      const T mn = mt > m[i] ? mt : m[i];
      const double alpha = exp((double)m[i] - (double)mn);   /* 1 when the max stays; 0 on the first tile */
      double ts = 0;
#pragma unroll
      for (int c = 0; c < CPT; c++) {
        const T e = tp[tx + HA_LANES * c] ? ha_exp((T)(s[i][c] - mn)) : (T)0;
        Ps[(ty * RPT + i) * ldp + tx + HA_LANES * c] = e;
        ts += (double)e;
      }
      l[i] = l[i] * alpha + ha_sum16(ts);
#pragma unroll
      for (int c = 0; c < DPT; c++) acc[i][c] *= alpha;
      m[i] = mn;
    }
    __syncthreads();
    T part[RPT][DPT];
    ha_pmul<T, BT, RPT, DPT>(Ps, ldp, Vs, ldt, dh, part);
#pragma unroll
    for (int i = 0; i < RPT; i++)
#pragma unroll
      for (int c = 0; c < DPT; c++) acc[i][c] += (double)part[i][c];
  }
#pragma unroll
  for (int i = 0; i < RPT; i++) {
    const long row = q0 + ty * RPT + i;
    if (row >= a.nq) continue;
    T *orow = o + (b * a.nq + row) * a.D + (long)h * dh;
#pragma unroll
    for (int c = 0; c < DPT; c++)
      if (tx + HA_LANES * c < dh) orow[tx + HA_LANES * c] = (T)(acc[i][c] / l[i]);
    if (tx == 0) lse[bh * a.nq + row] = (double)m[i] + log(l[i]);
  }
}

/* Query-centric backward: Delta into delta, dq. Blocks as the forward's. */
template <typename T, int DHMAX>
__global__ void __launch_bounds__(HA_THREADS)
ha_backward_q(ha_shape a, long tiles, const T *q, const T *kv, const uint8_t *kmask, const double *lse,
              const T *dout, T *dq, double *delta)
{
  typedef ha_tile<T, DHMAX> G;
  constexpr int BT = G::BT, RPT = G::RPT, CPT = G::CPT, DPT = G::DPT;
  extern __shared__ double ha_smem[];
  const int dh = a.dh, ldt = dh + 1, ldp = BT + 1, ty = threadIdx.x / HA_LANES, tx = threadIdx.x % HA_LANES;
  const long bh = blockIdx.x / tiles, q0 = (blockIdx.x % tiles) * BT, b = bh / a.H;
  const int h = (int)(bh % a.H), r = h / a.hpr;
  const long mq = a.nq - q0 < BT ? a.nq - q0 : BT;
  T *Qs = (T *)ha_smem, *Os = Qs + BT * ldt, *Ks = Os + BT * ldt, *Vs = Ks + BT * ldt, *Ss = Vs + BT * ldt;
  int *tp = (int *)(Ss + BT * ldp);
  const T *kh = kv + (b * a.R + r) * a.n1 * a.L + (long)(h % a.hpr) * 2 * dh;
  const uint8_t *mk = kmask ? kmask + (b * a.R + r) * a.nk : NULL;
  const T scale = (T)a.scale;
  ha_load<T, BT>(Qs, q + (b * a.nq + q0) * a.D + (long)h * dh, a.D, mq, dh);
  ha_load<T, BT>(Os, dout + (b * a.nq + q0) * a.D + (long)h * dh, a.D, mq, dh);

  bool live[RPT];
  double lr[RPT], dl[RPT], acc[RPT][DPT];   /* lse; this thread's part of Delta, then Delta; dq's accumulators */
#pragma unroll
  for (int i = 0; i < RPT; i++) {
    const long row = q0 + ty * RPT + i;
    live[i] = row < a.nq;
    lr[i] = live[i] ? lse[bh * a.nq + row] : 0.0;
    dl[i] = 0;
#pragma unroll
    for (int c = 0; c < DPT; c++) acc[i][c] = 0;
  }
  for (int pass = 0; pass < 2; pass++) {   /* 0: Delta = sum_j P_j dP_j; 1: dS, dq */
    for (long j0 = 0; j0 < a.n1; j0 += BT) {
      const long nkt = a.n1 - j0 < BT ? a.n1 - j0 : BT;
      const int take = threadIdx.x < BT && ha_takes(j0 + threadIdx.x, a.n1, mk);
      __syncthreads();
      if (threadIdx.x < BT) tp[threadIdx.x] = take;
      if (!__syncthreads_or(take)) continue;   /* P = 0 there: no term of Delta or dq */
      ha_load<T, BT>(Ks, kh + j0 * a.L, a.L, nkt, dh);
      ha_load<T, BT>(Vs, kh + dh + j0 * a.L, a.L, nkt, dh);
      __syncthreads();
      T s[RPT][CPT], dp[RPT][CPT];
      ha_dots<T, RPT, CPT>(Qs, Ks, ldt, dh, s);
      ha_dots<T, RPT, CPT>(Os, Vs, ldt, dh, dp);
#pragma unroll
      for (int i = 0; i < RPT; i++)
#pragma unroll
        for (int c = 0; c < CPT; c++) {
          const T p = live[i] && tp[tx + HA_LANES * c] ? ha_prob(scale * s[i][c], lr[i]) : (T)0;
          if (pass == 0) dl[i] += (double)p * (double)dp[i][c];
          else Ss[(ty * RPT + i) * ldp + tx + HA_LANES * c] = (T)((double)p * ((double)dp[i][c] - dl[i]));
        }
      if (pass == 1) {
        __syncthreads();
        T part[RPT][DPT];
        ha_pmul<T, BT, RPT, DPT>(Ss, ldp, Ks, ldt, dh, part);
#pragma unroll
        for (int i = 0; i < RPT; i++)
#pragma unroll
          for (int c = 0; c < DPT; c++) acc[i][c] += (double)part[i][c];
      }
    }
    if (pass == 0)
#pragma unroll
      for (int i = 0; i < RPT; i++) dl[i] = ha_sum16(dl[i]);
  }
#pragma unroll
  for (int i = 0; i < RPT; i++) {
    if (!live[i]) continue;
    const long row = q0 + ty * RPT + i;
    T *drow = dq + (b * a.nq + row) * a.D + (long)h * dh;
#pragma unroll
    for (int c = 0; c < DPT; c++)
      if (tx + HA_LANES * c < dh) drow[tx + HA_LANES * c] = (T)(acc[i][c] * a.scale);
    if (tx == 0) delta[bh * a.nq + row] = dl[i];
  }
}

/* Key-centric backward: dk, dv of every slot. Blocks: (b H) x key tiles of the n1 slots. */
template <typename T, int DHMAX>
__global__ void __launch_bounds__(HA_THREADS)
ha_backward_kv(ha_shape a, long tiles, const T *q, const T *kv, const uint8_t *kmask, const double *lse,
               const double *delta, const T *dout, T *dkv)
{
  typedef ha_tile<T, DHMAX> G;
  constexpr int BT = G::BT, RPT = G::RPT, CPT = G::CPT, DPT = G::DPT;
  extern __shared__ double ha_smem[];
  const int dh = a.dh, ldt = dh + 1, ldp = BT + 1, ty = threadIdx.x / HA_LANES, tx = threadIdx.x % HA_LANES;
  const long bh = blockIdx.x / tiles, j0 = (blockIdx.x % tiles) * BT, b = bh / a.H;
  const int h = (int)(bh % a.H), r = h / a.hpr;
  const long nkt = a.n1 - j0 < BT ? a.n1 - j0 : BT;
  double *ls = ha_smem, *dls = ls + BT;   /* the query tile's lse and Delta */
  T *Ks = (T *)(dls + BT), *Vs = Ks + BT * ldt, *Qs = Vs + BT * ldt, *Os = Qs + BT * ldt, *Ps = Os + BT * ldt;
  T *Ss = Ps + BT * ldp;
  int *tp = (int *)(Ss + BT * ldp);
  const long ko = (b * a.R + r) * a.n1 * a.L + (long)(h % a.hpr) * 2 * dh;   /* slot 0's key in kv and dkv */
  const uint8_t *mk = kmask ? kmask + (b * a.R + r) * a.nk : NULL;
  const T scale = (T)a.scale;
  const int take = threadIdx.x < BT && ha_takes(j0 + threadIdx.x, a.n1, mk);
  if (threadIdx.x < BT) tp[threadIdx.x] = take;

  double ak[RPT][DPT], av[RPT][DPT];   /* dk's and dv's accumulators */
#pragma unroll
  for (int i = 0; i < RPT; i++)
#pragma unroll
    for (int c = 0; c < DPT; c++) ak[i][c] = av[i][c] = 0;
  if (__syncthreads_or(take)) {   /* else every slot of the tile is masked: P = 0, its gradients 0 */
    ha_load<T, BT>(Ks, kv + ko + j0 * a.L, a.L, nkt, dh);
    ha_load<T, BT>(Vs, kv + ko + dh + j0 * a.L, a.L, nkt, dh);
    for (long i0 = 0; i0 < a.nq; i0 += BT) {
      const long mq = a.nq - i0 < BT ? a.nq - i0 : BT;
      __syncthreads();   /* the previous query tile is used up */
      ha_load<T, BT>(Qs, q + (b * a.nq + i0) * a.D + (long)h * dh, a.D, mq, dh);
      ha_load<T, BT>(Os, dout + (b * a.nq + i0) * a.D + (long)h * dh, a.D, mq, dh);
      if (threadIdx.x < BT) {
        const bool in = threadIdx.x < mq;
        ls[threadIdx.x] = in ? lse[bh * a.nq + i0 + threadIdx.x] : 0.0;
        dls[threadIdx.x] = in ? delta[bh * a.nq + i0 + threadIdx.x] : 0.0;
      }
      __syncthreads();
      T s[RPT][CPT], dp[RPT][CPT];   /* [key ty RPT + i][query tx + 16 c] */
      ha_dots<T, RPT, CPT>(Ks, Qs, ldt, dh, s);
      ha_dots<T, RPT, CPT>(Vs, Os, ldt, dh, dp);
#pragma unroll
      for (int i = 0; i < RPT; i++)
#pragma unroll
        for (int c = 0; c < CPT; c++) {
          const int kr = ty * RPT + i, qc = tx + HA_LANES * c;
          const T p = tp[kr] && qc < mq ? ha_prob(scale * s[i][c], ls[qc]) : (T)0;
          Ps[kr * ldp + qc] = p;
          Ss[kr * ldp + qc] = (T)((double)p * ((double)dp[i][c] - dls[qc]));
        }
      __syncthreads();
      T part[RPT][DPT];
      ha_pmul<T, BT, RPT, DPT>(Ps, ldp, Os, ldt, dh, part);
#pragma unroll
      for (int i = 0; i < RPT; i++)
#pragma unroll
        for (int c = 0; c < DPT; c++) av[i][c] += (double)part[i][c];
      ha_pmul<T, BT, RPT, DPT>(Ss, ldp, Qs, ldt, dh, part);
#pragma unroll
      for (int i = 0; i < RPT; i++)
#pragma unroll
        for (int c = 0; c < DPT; c++) ak[i][c] += (double)part[i][c];
    }
  }
#pragma unroll
  for (int i = 0; i < RPT; i++) {
    const long j = j0 + ty * RPT + i;
    if (j >= a.n1) continue;
    T *grow = dkv + ko + j * a.L;
#pragma unroll
    for (int c = 0; c < DPT; c++) {
      const int e = tx + HA_LANES * c;
      if (e < dh) {
        grow[e] = (T)(ak[i][c] * a.scale);
        grow[dh + e] = (T)av[i][c];
      }
    }
  }
}

/* The launches for type T and head widths up to DHMAX. */
template <typename T, int DHMAX> struct ha_flash {
  typedef ha_tile<T, DHMAX> G;

  /* (b H) x ceil(rows / BT) blocks in one dimension, or an error naming the op */
  static c5_status grid(const ha_shape &a, long rows, long *tiles, unsigned *blocks, const char *op)
  {
    *tiles = (rows + G::BT - 1) / G::BT;
    const long n = a.batch * a.H * *tiles;
    if (n > INT_MAX)
      return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: %ld blocks (batch %ld, %d heads, %ld rows in tiles of %d) exceed the "
                     "launch limit", op, n, a.batch, a.H, rows, G::BT);
    *blocks = (unsigned)n;
    return C5_OK;
  }

  /* shared memory: `doubles` doubles, then `tiles` [BT, dh + 1] tiles and `ptiles` [BT, BT + 1] tiles of T, then
     BT slot flags */
  static size_t smem(int dh, int doubles, int tiles, int ptiles)
  {
    return (size_t)doubles * G::BT * sizeof(double) +
           ((size_t)tiles * G::BT * (dh + 1) + (size_t)ptiles * G::BT * (G::BT + 1)) * sizeof(T) +
           G::BT * sizeof(int);
  }

  static c5_status forward(c5k_cuda_dev *dev, const ha_shape &a, const T *q, const T *kv, const uint8_t *kmask,
                           double *lse, T *o, const char *op)
  {
    long tiles;
    unsigned blocks;
    C5_CALL_K(grid(a, a.nq, &tiles, &blocks, op));
    const size_t bytes = smem(a.dh, 0, 3, 1);
    C5_CALL_K(c5k_cuda_smem_opt(dev, ha_forward<T, DHMAX>, bytes, op));
    ha_forward<T, DHMAX><<<blocks, HA_THREADS, bytes, dev->stream>>>(a, tiles, q, kv, kmask, o, lse);
    C5K_CUDA_LAUNCHED(op);
    return C5_OK;
  }

  static c5_status backward(c5k_cuda_dev *dev, const ha_shape &a, const T *q, const T *kv, const uint8_t *kmask,
                            const double *lse, const T *dout, T *dq, T *dkv, const char *op)
  {
    long tiles;
    unsigned blocks;
    double *delta = NULL;
    if (a.nq > 0) {
      void *scr;
      C5_CALL_K(c5k_cuda_scratch(dev, (size_t)(a.batch * a.H * a.nq) * sizeof(double), &scr, op));
      delta = (double *)scr;
      C5_CALL_K(grid(a, a.nq, &tiles, &blocks, op));
      const size_t bytes = smem(a.dh, 0, 4, 1);
      C5_CALL_K(c5k_cuda_smem_opt(dev, ha_backward_q<T, DHMAX>, bytes, op));
      ha_backward_q<T, DHMAX><<<blocks, HA_THREADS, bytes, dev->stream>>>(a, tiles, q, kv, kmask, lse, dout, dq,
                                                                           delta);
      C5K_CUDA_LAUNCHED(op);
    }
    C5_CALL_K(grid(a, a.n1, &tiles, &blocks, op));
    const size_t bytes = smem(a.dh, 2, 4, 2);
    C5_CALL_K(c5k_cuda_smem_opt(dev, ha_backward_kv<T, DHMAX>, bytes, op));
    ha_backward_kv<T, DHMAX><<<blocks, HA_THREADS, bytes, dev->stream>>>(a, tiles, q, kv, kmask, lse, delta, dout,
                                                                          dkv);
    C5K_CUDA_LAUNCHED(op);
    return C5_OK;
  }
};

/* ---- bf16 matmul mode: the attention as cuBLASLt products over query chunks ----

   In bf16 mode (c5_backend_set_matmul C5_MATMUL_BF16, ctx->exact 0) of the
   single build, for dim_head a multiple of 8, the attention of each (b,
   route) runs as tensor-core products of bf16 copies of q, kv and dout
   (f32 accumulation) over chunks of cq query rows, the route's heads one
   strided batch: S = scale Q K^T [hpr, cq, n1] in f32, a row kernel (lse,
   P in bf16; in the backward Delta and dS too), then O = P V, or
   dV += P^T dout, dK += scale dS^T Q, dq = scale dS K. The score chunks
   (12 bytes an element in the backward) take at most HG_BUDGET of the
   device scratch whatever n: at n = 1M tokens (nk = 65536) cq = 128 rows
   in the backward. For dim_head 64 and 128 the forward is instead one
   flash kernel on the tensor cores (hf_forward below) and the backward two
   (hb_dq, hb_dkv below), which keep the scores on chip and need only the
   bf16 copies (and the backward 8 bytes a query row).
   The products' order is cuBLASLt's for the shape, the same every run, and
   dk/dv add the chunks in ascending order (beta 1 after the first): results
   repeat bit for bit, with bf16's error (kernels.h). The SIMT flash kernels
   above were 40% of the block at n = 131072 on an H200 (fp32 FMAs); the
   tensor cores were not reachable from them without rewriting their tile
   loops, and the score chunks cost memory traffic (S, dP, P, dS) that the
   products' speed more than repays. */
#if !C5_USE_DOUBLE
#include <cuda_bf16.h>

#define HG_THREADS 256
#define HG_BUDGET ((size_t)1 << 30)

static bool ha_gemm_wanted(const c5k_ctx *ctx, const c5k_cuda_dev *dev, const ha_shape &a)
{
  return dev->matmul == 2 && !ctx->exact && a.dh % 8 == 0;   /* bf16 rows of 16-byte multiples for cuBLASLt */
}

/* A block's sum of one double a thread, in a fixed order (warp trees, then the warps in order), in every thread. */
static __device__ double hg_sum(double x, double *sh)
{
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(HA_FULL, x, o);
  __syncthreads();   /* sh's last use is over */
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x / 32] = x;
  __syncthreads();
  double t = 0;
  for (int w = 0; w < HG_THREADS / 32; w++) t += sh[w];
  return t;
}

static __device__ float hg_max(float x, double *sh)
{
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(HA_FULL, x, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x / 32] = x;
  __syncthreads();
  float t = -INFINITY;
  for (int w = 0; w < HG_THREADS / 32; w++) t = fmaxf(t, (float)sh[w]);
  return t;
}

/* A thread's next HG_U slots of a row, HG_THREADS apart (independent loads in flight: at nk = 65536 a row
   kernel with one load a thread at a time waited on memory latency): x[u] = v[j] for a taking-part slot j < n1,
   else `other`. (A variant holding a row of up to 8704 slots in registers, one pass over S, was 1.7 times slower
   on the H200: 512 threads of 78 registers left one block an SM; the second pass here reads the row from L2. Loading
   each slot before looking at its mask byte measured the same as this.) */
#define HG_U 8
template <typename T>
static __device__ __forceinline__ void hg_take(const T *v, long j0, long n1, const uint8_t *mk, T other, T (&x)[HG_U])
{
#pragma unroll
  for (int u = 0; u < HG_U; u++) {
    const long j = j0 + (long)u * HG_THREADS;
    x[u] = ha_takes(j, n1, mk) ? v[j] : other;
  }
}

/* One block a score row (head hh of the chunk's, row i): lse (each thread's
   running max and sum of e = exp(S - max) in f32 added in double, rescaled
   when its max grows; the threads' parts merged in a fixed order) and
   P_j = exp(S_j - lse) (the difference in double), 0 for masked slots, in bf16. */
__global__ void __launch_bounds__(HG_THREADS)
hg_rows_forward(long rows, long n1, long n1p, long ldp, long hs, const float *S, const uint8_t *mk,
                __nv_bfloat16 *P, double *lse, long lse_h)
{
  __shared__ double sh[HG_THREADS / 32];
  const long hh = blockIdx.x / rows, i = blockIdx.x % rows, off = hh * hs + i * ldp;
  const float *s = S + off;
  float m = -INFINITY;
  double l = 0;
  for (long j0 = threadIdx.x; j0 < n1; j0 += (long)HG_THREADS * HG_U) {
    float x[HG_U], mt = m;
    hg_take(s, j0, n1, mk, -INFINITY, x);
#pragma unroll
    for (int u = 0; u < HG_U; u++) mt = fmaxf(mt, x[u]);
    if (mt == -INFINITY) continue;   /* no taking-part slot yet */
    if (mt > m) {
      l = m == -INFINITY ? 0.0 : l * exp((double)m - (double)mt);
      m = mt;
    }
#pragma unroll
    for (int u = 0; u < HG_U; u++) l += (double)expf(x[u] - m);   /* masked: exp(-inf) = 0 */
  }
  const float mx = hg_max(m, sh);   /* finite: the null slot always takes part */
  const double ls = (double)mx + log(hg_sum(m == -INFINITY ? 0.0 : l * exp((double)m - (double)mx), sh));
  for (long j0 = threadIdx.x; j0 < n1p; j0 += (long)HG_THREADS * HG_U) {   /* P = 0 past n1 */
    float x[HG_U];
    hg_take(s, j0, n1, mk, -INFINITY, x);
#pragma unroll
    for (int u = 0; u < HG_U; u++) {
      const long j = j0 + (long)u * HG_THREADS;
      if (j < n1p) P[off + j] = __float2bfloat16_rn(x[u] == -INFINITY ? 0.f : expf((float)((double)x[u] - ls)));
    }
  }
  if (threadIdx.x == 0) lse[hh * lse_h + i] = ls;
}

/* One block a row: P recomputed from S and lse as the SIMT backward does, Delta = sum_j P_j dP_j in double, then
   P and dS = P (dP - Delta) (formed in double) in bf16. */
__global__ void __launch_bounds__(HG_THREADS)
hg_rows_backward(long rows, long n1, long n1p, long ldp, long hs, const float *S, const float *dP, const uint8_t *mk,
                 const double *lse, long lse_h, __nv_bfloat16 *P, __nv_bfloat16 *dS)
{
  __shared__ double sh[HG_THREADS / 32];
  const long hh = blockIdx.x / rows, i = blockIdx.x % rows, off = hh * hs + i * ldp;
  const float *s = S + off, *dp = dP + off;
  const double ls = lse[hh * lse_h + i];
  double d = 0;
  for (long j0 = threadIdx.x; j0 < n1; j0 += (long)HG_THREADS * HG_U) {
    float x[HG_U], y[HG_U];
    hg_take(s, j0, n1, mk, -INFINITY, x);
    hg_take(dp, j0, n1, mk, 0.f, y);
#pragma unroll
    for (int u = 0; u < HG_U; u++)
      if (x[u] != -INFINITY) d += (double)expf((float)((double)x[u] - ls)) * (double)y[u];
  }
  d = hg_sum(d, sh);
  for (long j0 = threadIdx.x; j0 < n1p; j0 += (long)HG_THREADS * HG_U) {   /* P = dS = 0 past n1 */
    float x[HG_U], y[HG_U];
    hg_take(s, j0, n1, mk, -INFINITY, x);
    hg_take(dp, j0, n1, mk, 0.f, y);
#pragma unroll
    for (int u = 0; u < HG_U; u++) {
      const long j = j0 + (long)u * HG_THREADS;
      if (j >= n1p) continue;
      const float p = x[u] == -INFINITY ? 0.f : expf((float)((double)x[u] - ls));
      P[off + j] = __float2bfloat16_rn(p);
      dS[off + j] = __float2bfloat16_rn((float)((double)p * ((double)y[u] - d)));
    }
  }
}

/* Where the op's parts lie in the device scratch (bytes), and the chunk's rows and score stride. */
struct hg_plan {
  long cq, ldp;   /* query rows a chunk; the score rows' stride */
  long g, kg, n1p;   /* the P V and dS K products' slot groups: g of kg slots, n1p = g kg >= n1 (none: 1, n1p, n1 rounded up to 8) */
  size_t q, kv, dout, s, dp, p, ds, part, rs, bytes;   /* rs: hb_dq's rows' stats (the flash backward's) */
};

/* The score chunks' rows and the slot groups (hg_plan's cq, g, kg, n1p, ldp). */
static hg_plan hg_chunks_of(const c5k_cuda_dev *dev, const ha_shape &a, bool backward)
{
  hg_plan p;
  const size_t row = (size_t)a.hpr * ((a.n1 + 7) & ~7L) * (backward ? 12 : 6);
  long cq = (long)(HG_BUDGET / row) & ~63L;
  const long nq = (a.nq + 63) & ~63L;
  cq = cq < 64 ? 64 : cq;
  p.cq = cq < nq ? cq : nq;
  /* P V and dS K have a [cq, dh] output a head and a sum over all n1 slots: cuBLASLt gave them one CTA a
     128-row tile (24 of 132 SMs busy at n = 1M, cq = 320), so long sums are cut into groups whose products
     fill the device twice over, added after in group order (hg_sum_parts) */
  const long tiles = a.hpr * ((p.cq + 127) / 128);
  long g = (2L * dev->sms + tiles - 1) / tiles;
  g = g < a.n1 / 1024 ? g : a.n1 / 1024;
  p.g = g > 1 ? g : 1;
  p.kg = p.g > 1 ? ((a.n1 + p.g - 1) / p.g + 7) & ~7L : a.n1;
  /* slots a multiple of 8 in every product that sums over them or writes a row of them: with n1 = nk + 1 odd,
     cuBLASLt took its align-1 sm75 kernels for S = Q K^T (a row of n1 f32 scores) and for P V, 3 to 4 times
     slower than its sm90 ones (ncu on the H200, n = 131072: 3.2 ms of a 33 ms step) */
  p.n1p = p.g > 1 ? p.g * p.kg : (a.n1 + 7) & ~7L;
  p.ldp = p.n1p;   /* bf16 rows of P and dS 16-byte aligned */
  return p;
}

static hg_plan hg_plan_of(const c5k_cuda_dev *dev, const ha_shape &a, bool backward, bool flash)
{
  hg_plan p;
  if (flash) {   /* hf_forward, hb_dq + hb_dkv: the bf16 copies only (cq = ldp = 0 leave the score parts empty) */
    p.cq = p.ldp = 0;
    p.g = 1;
    p.kg = a.n1;
    p.n1p = (a.n1 + 7) & ~7L;
  } else {
    p = hg_chunks_of(dev, a, backward);
  }
  const size_t qb = (size_t)a.batch * a.nq * a.D * 2, kvb = (size_t)a.batch * a.R * p.n1p * a.L * 2,
               sb = (size_t)a.hpr * p.cq * p.ldp;
  size_t o = 0;
  p.q = o; o = c5k_up256(o + qb);
  p.kv = o; o = c5k_up256(o + kvb);
  p.dout = o; o = backward ? c5k_up256(o + qb) : o;
  p.s = o; o = c5k_up256(o + sb * 4);
  p.dp = o; o = backward ? c5k_up256(o + sb * 4) : o;
  p.p = o; o = c5k_up256(o + sb * 2);
  p.ds = o; o = backward ? c5k_up256(o + sb * 2) : o;
  p.part = o; o = p.g > 1 ? c5k_up256(o + (size_t)a.hpr * p.g * p.cq * a.dh * 4) : o;
  p.rs = o; o = flash && backward ? c5k_up256(o + (size_t)a.batch * a.H * ((a.nq + 63) & ~63L) * sizeof(float2)) : o;
  p.bytes = o;
  return p;
}

/* kv's bf16 copy with n1p slots a route, the slots past n1 zero (the grouped products read them, times P = 0). */
template <typename I>
__global__ void hg_kv_bf16(long total, long n1, long n1p, long L, const float *kv, __nv_bfloat16 *y)
{
  C5K_GRID_LOOP_T(I, i, total) {
    const I row = i / (I)L, br = row / (I)n1p, j = row % (I)n1p;
    y[i] = __float2bfloat16_rn(j < n1 ? kv[((long)br * n1 + j) * L + i % (I)L] : 0.f);
  }
}

/* out[row, hh dh + e] (row stride ldo) = sum over the groups in order of part[hh][group][row][e], in double. */
__global__ void hg_sum_parts(long total, long mb, int dh, long g, long cq, const float *part, long ldo, float *out)
{
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
    const long hh = i / (mb * dh), row = i / dh % mb, e = i % dh;
    const float *x = part + (hh * g * cq + row) * dh + e;
    double acc = 0;
    for (long k = 0; k < g; k++) acc += (double)x[k * cq * dh];
    out[row * ldo + hh * dh + e] = (float)acc;
  }
}

/* The route's hpr heads at once: C_h = alpha op(A_h) op(B_h) + beta C_h, bf16 inputs, f32 C. */
static c5_status hg_gemm(c5k_ctx *ctx, const ha_shape &a, int ta, int tb, long m, long n, long k, double alpha,
                         const __nv_bfloat16 *A, long lda, long sa, const __nv_bfloat16 *B, long ldb, long sb,
                         double beta, float *C, long ldc, long sc)
{
  return c5k_gemm_bf16(ctx, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, a.hpr);
}

/* The route's hpr heads: out_h (row stride D) = alpha X_h Y_h over the slots, X_h [mb, ldp] (P or dS, zero past
   n1), Y_h the bf16 kv's values or keys (Y + h 2 dh, row stride L, zero past n1): one strided batch, or with
   p.g > 1 each head's groups one batch into part and their sum after. */
static c5_status hg_slot_product(c5k_ctx *ctx, c5k_cuda_dev *dev, const ha_shape &a, const hg_plan &p, long mb,
                                 double alpha, const __nv_bfloat16 *X, const __nv_bfloat16 *Y, float *part, float *out,
                                 const char *op)
{
  const long hs = p.cq * p.ldp, dh = a.dh;
  if (p.g == 1) return hg_gemm(ctx, a, 0, 0, mb, dh, p.n1p, alpha, X, p.ldp, hs, Y, a.L, 2 * dh, 0.0, out, a.D, dh);
  for (long hh = 0; hh < a.hpr; hh++)
    C5_CALL_K(c5k_gemm_bf16(ctx, 0, 0, mb, dh, p.kg, alpha, X + hh * hs, p.ldp, p.kg, Y + hh * 2 * dh, a.L,
                            p.kg * a.L, 0.0, part + hh * p.g * p.cq * dh, dh, p.cq * dh, p.g));
  const long total = a.hpr * mb * dh;
  hg_sum_parts<<<(unsigned)((total + 255) / 256 < 4096 ? (total + 255) / 256 : 4096), 256, 0, dev->stream>>>(
      total, mb, (int)dh, p.g, p.cq, part, a.D, out);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* dY (the route's hpr heads, rows of stride L: dk or dv) = alpha X^T Z + beta dY over the chunk's mb rows, X [mb,
   ldp] (P or dS), Z [mb, D] (dout or q). The first n1 rounded down to 8 slots in one product and the rest (up
   to 7) in another: cuBLASLt's sm90 kernels want the slots a multiple of 8 (hg_plan_of), and dY has n1 rows, so
   the padded product could not write past them. */
static c5_status hg_slot_grad(c5k_ctx *ctx, const ha_shape &a, long mb, double alpha, const __nv_bfloat16 *X,
                              long ldp, long hs, const __nv_bfloat16 *Z, double beta, float *dY)
{
  const long n8 = a.n1 & ~7L, dh = a.dh;
  if (n8 > 0) C5_CALL_K(hg_gemm(ctx, a, 1, 0, n8, dh, mb, alpha, X, ldp, hs, Z, a.D, dh, beta, dY, a.L, 2 * dh));
  if (a.n1 > n8)
    C5_CALL_K(hg_gemm(ctx, a, 1, 0, a.n1 - n8, dh, mb, alpha, X + n8, ldp, hs, Z, a.D, dh, beta, dY + n8 * a.L, a.L,
                      2 * dh));
  return C5_OK;
}

/* Scratch laid out, q and kv (and dout) copied to bf16. */
static c5_status hg_setup(c5k_cuda_dev *dev, const ha_shape &a, bool backward, bool flash, const float *q,
                          const float *kv, const float *dout, hg_plan *p, char **scr, const char *op)
{
  *p = hg_plan_of(dev, a, backward, flash);
  void *v;
  C5_CALL_K(c5k_cuda_scratch(dev, p->bytes, &v, op));
  *scr = (char *)v;
  C5_CALL_K(c5k_cuda_to_bf16(dev, a.batch * a.nq * a.D, q, *scr + p->q, op));
  const long nkv = a.batch * a.R * p->n1p * a.L;
  C5K_IDX_LAUNCH(nkv, hg_kv_bf16, c5k_cuda_blocks(dev, nkv), C5K_THREADS, dev->stream, nkv, a.n1, p->n1p, a.L, kv,
                 (__nv_bfloat16 *)(*scr + p->kv));
  C5K_CUDA_LAUNCHED(op);
  if (backward) C5_CALL_K(c5k_cuda_to_bf16(dev, a.batch * a.nq * a.D, dout, *scr + p->dout, op));
  return C5_OK;
}

/* ---- bf16 mode, dim_head 64 or 128: the forward with its scores on chip ----

   FlashAttention-2's forward on the tensor cores, in place of the S product,
   the row kernel and the P V product (which at n = 131072 on the H200 moved
   each chunk's f32 scores and bf16 P through device memory: ~0.75 ms a chunk,
   bandwidth-bound). One CTA (HF_THREADS = 4 warps) a (64 query rows, head,
   route, batch), the query tile fastest so that the CTAs of one head, which
   read the same keys, run together and share them in L2. Warp w owns query
   rows 16 w .. 16 w + 15 of the tile. The slots go by in key blocks of 64 in
   ascending order (cp.async double buffering: block kb + 1 loads while kb is
   used); per block
     S = Q K^T   (mma.m16n8k16 bf16 -> f32; Q's fragments by ldmatrix),
     S = -inf for a slot that does not take part (masked, or at or past n1:
       those rows of the tile are zero-filled besides), looked at only in a
       block that has such a slot (block-uniform; in the others, all but the
       last when no key is masked, the flags' loads and selects went),
     online softmax in the log2 domain per row in f32 with c = scale log2(e):
       m the running max of S c, taken as max(S) c (c > 0 and rounding are
       monotone: the same bits), l each thread's part of the running sum of
       p = 2^(S c - m), one FFMA and MUFU.EX2 (c5k_ex2: flushes below 2^-126)
       as the backward's P, the O accumulator and l rescaled by
       2^(m_old - m_new) when the max grows,
     O += P V    (p rounded to bf16 straight from S's accumulators: the
       m16n8k16 C layout of two adjacent n8 tiles is the A layout of one k16
       step).
   A block with no slot taking part is skipped (it would change nothing:
   the max stays and every p is 0). Slot 0, the null key, takes part and lies
   in block 0, so after block 0 every row's max is finite: no 2^(-inf - -inf)
   (guarded anyway), and l >= 1 at the end (to f32's rounding: the max
   slot's p is 2^(S c - RN(S c)); a row left with the null slot alone gets
   P = 1 so in the backward too, which forms P the same way). Then o = O / l
   and lse = m ln 2 + log l (in double): the row kernel's lse to f32's
   rounding, which is what the backward recomputes P from.
   Every sum has one fixed order (the mma's, the blocks ascending, a thread's
   columns in order, the quad's butterfly): results repeat bit for bit.

   Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16" with
   .bf16; lane = 4 g + t, g = groupID, t = threadID_in_group; "a, a+1" are
   the low and high halves of a 32-bit register):
     A (16 x 16, row): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..),
                       a3 = (g+8, 2t+8..)
     B (16 x 8, col):  b0 = (k 2t..2t+1, n g), b1 = (k 2t+8..2t+9, n g)
     C (16 x 8, f32):  c0, c1 = (g, 2t), (g, 2t+1); c2, c3 = (g+8, 2t), (g+8, 2t+1)
   ldmatrix.x4 reads four 8 x 8 matrices, row i of matrix m at the address
   lane 8 m + i gives; lane 4 g + t gets elements (g, 2t), (g, 2t+1) of each
   (with .trans: (2t, g), (2t+1, g)). For S = Q K^T, B's column n is key row
   n, so b0 (b1) is the plain ldmatrix of the matrix at rows = keys n..n+7,
   columns = dims k..k+7 (k+8..k+15). For O = P V, B = V's [16 slots x 8
   dims]: b0 (b1) is the .trans ldmatrix of the matrix at rows = slots
   k..k+7 (k+8..k+15), columns = dims n..n+7. Q's A fragments are one
   ldmatrix.x4 a k16 step, each block (c5k_frag_a_ldsm).
   Shared rows are DH + 8 bf16 apart (144 or 272 bytes): 16-byte aligned for
   cp.async and ldmatrix, and the 8 rows g of a fragment load (or of an
   ldmatrix phase) start 4 banks apart, so no load has bank conflicts. */
#define HF_THREADS 128
#define HF_BM 64     /* query rows a CTA: 16 a warp */
#define HF_BN 64     /* slots a key block */

template <int DH> struct hf_geom {
  static constexpr int LD = DH + 8;                /* a shared row, in bf16 */
  static constexpr int TILE = HF_BN * LD;          /* a K or V tile, in bf16 */
  /* Q, then per stage K and V, then the stages' take-part flags */
  static constexpr size_t bytes = (size_t)(HF_BM * LD + 4 * TILE) * 2 + 2 * HF_BN;
  /* CTAs an SM (228 KiB of shared memory): 4 for DH 64 (at most 128 registers a thread; 136 unbounded, which
     left 3), 2 for DH 128 */
  static constexpr int ctas = (int)(228 * 1024 / (bytes + 1024)) < 4 ? (int)(228 * 1024 / (bytes + 1024)) : 4;
};

/* tile rows [0, ROWS) <- src's rows (stride ld bf16), those at or past `rows` zero-filled (cp.async with source
   size 0 reads nothing: src itself stands in for their address). HF_THREADS threads: thread x copies 16-byte chunk
   x % CPR of rows x / CPR + i RS, a fixed count of passes (a strided loop over the chunks left the loop's
   index and 64-bit address arithmetic in each key block: a sixth of hf_forward<64>'s instructions a block). */
template <int DH, int ROWS>
static __device__ __forceinline__ void hf_load(__nv_bfloat16 *tile, const __nv_bfloat16 *src, long ld, long rows)
{
  constexpr int CPR = DH / 8, RS = HF_THREADS / CPR;   /* 16-byte chunks a row; rows a pass */
  static_assert(HF_THREADS % CPR == 0 && ROWS % RS == 0, "hf_load: whole passes");
  const int r0 = threadIdx.x / CPR, k = threadIdx.x % CPR, n = rows < ROWS ? (int)rows : ROWS;
  const __nv_bfloat16 *sr = src + r0 * ld + k * 8;
  __nv_bfloat16 *tr = tile + r0 * hf_geom<DH>::LD + k * 8;
#pragma unroll
  for (int i = 0; i < ROWS / RS; i++) {
    const bool in = r0 + i * RS < n;
    c5k_cp16(tr + i * RS * hf_geom<DH>::LD, in ? sr + i * RS * ld : src, in);
  }
}

/* Key block kb (slots kb HF_BN ..) into stage kb & 1: its K and V tiles and which slots take part; one cp.async
   group. kh: the route's slot 0 key of this head (value at + DH), rows L apart. */
template <int DH>
static __device__ __forceinline__ void hf_stage(__nv_bfloat16 *KV, uint8_t *tk, long kb, const __nv_bfloat16 *kh,
                                                long L, long n1, const uint8_t *mk)
{
  const int st = (int)(kb & 1);
  __nv_bfloat16 *Ks = KV + 2 * st * hf_geom<DH>::TILE;
  const long j0 = kb * HF_BN;
  hf_load<DH, HF_BN>(Ks, kh + j0 * L, L, n1 - j0);
  hf_load<DH, HF_BN>(Ks + hf_geom<DH>::TILE, kh + j0 * L + DH, L, n1 - j0);
  if (threadIdx.x < HF_BN) tk[st * HF_BN + threadIdx.x] = (uint8_t)ha_takes(j0 + threadIdx.x, n1, mk);
  c5k_cp_commit();
}

/* s[n][c] = -inf where its column's slot sits out (tks[column] 0): the scores of a warp's 16 rows x 8 NT slots in
   the C layout (column 8 n + 2 t + (c & 1)), unscaled. Only for a block with such a slot (block-uniform): in the
   others the flags' loads and selects were a tenth of hf_forward<64>'s instructions a block. */
template <int NT>
static __device__ __forceinline__ void hf_sit_out(float (&s)[NT][4], const uint8_t *tks)
{
  const int t = threadIdx.x & 3;
#pragma unroll
  for (int n = 0; n < NT; n++)
#pragma unroll
    for (int e = 0; e < 2; e++)
      if (!tks[8 * n + 2 * t + e]) s[n][e] = s[n][2 + e] = -INFINITY;
}

/* acc (16 rows x DH: DH / 8 n8 tiles) += X_k Y_k, one k16 step: X_k the 16 x 16 columns 16 k .. 16 k + 15 of the
   warp's [16 x 8 NT] f32 scores x (C layout), rounded to bf16 (c5k_c2a), Y_k rows 16 k .. 16 k + 15 of a
   [8 NT x DH] shared tile of rows hf_geom<DH>::LD apart (c5k_mma_ax) */
template <int DH, int NT>
static __device__ __forceinline__ void hf_pv(float (&acc)[DH / 8][4], const float (&x)[NT][4], int k,
                                             const __nv_bfloat16 *Y)
{
  uint32_t pa[4];
  c5k_c2a(pa, x[2 * k], x[2 * k + 1]);
  c5k_mma_ax<DH / 8>(acc, pa, Y, 16 * k, hf_geom<DH>::LD);
}

/* Blocks: batch x H x query tiles, the tile fastest. qb [batch][nq][H DH], kvb [batch][R][n1p][L] (hg_setup's
   copies), kmask [batch][R][n1 - 1] or NULL, o [batch][nq][H DH], lse [batch][H][nq]. */
template <int DH>
__global__ void __launch_bounds__(HF_THREADS, hf_geom<DH>::ctas)
hf_forward(long nq, long n1, long n1p, int H, int hpr, long tiles, float sl2, const __nv_bfloat16 *qb,
           const __nv_bfloat16 *kvb, const uint8_t *kmask, float *o, double *lse)
{
  typedef hf_geom<DH> G;
  constexpr int NT = HF_BN / 8, KS = DH / 16, ON = DH / 8;   /* S's n8 tiles; Q's k16 steps; O's n8 tiles */
  static_assert(DH % 32 == 0, "hf_forward: K's ldmatrix.x4 covers two k16 steps");
  extern __shared__ __align__(16) unsigned char hf_smem[];
  __nv_bfloat16 *Qs = (__nv_bfloat16 *)hf_smem, *KV = Qs + HF_BM * G::LD;
  uint8_t *tk = (uint8_t *)(KV + 4 * G::TILE);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const long bh = blockIdx.x / tiles, q0 = (blockIdx.x % tiles) * HF_BM, b = bh / H;
  const int h = (int)(bh % H), r = h / hpr, R = H / hpr;
  const long D = (long)H * DH, L = 2L * hpr * DH, nb = (n1 + HF_BN - 1) / HF_BN;
  const __nv_bfloat16 *kh = kvb + (b * R + r) * n1p * L + (long)(h % hpr) * 2 * DH;
  const uint8_t *mk = kmask ? kmask + (b * R + r) * (n1 - 1) : NULL;

  hf_load<DH, HF_BM>(Qs, qb + (b * nq + q0) * D + (long)h * DH, D, nq - q0);   /* in block 0's group */
  hf_stage<DH>(KV, tk, 0, kh, L, n1, mk);

  float m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.f, 0.f }, acc[ON][4];   /* rows g and g + 8 */
#pragma unroll
  for (int n = 0; n < ON; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  for (long kb = 0; kb < nb; kb++) {
    if (kb + 1 < nb) {
      hf_stage<DH>(KV, tk, kb + 1, kh, L, n1, mk);
      c5k_cp_wait<1>();   /* block kb's group (and Q) landed, kb + 1's may be in flight */
    } else {
      c5k_cp_wait<0>();
    }
    const int st = (int)(kb & 1);
    const int takes = __syncthreads_count(threadIdx.x < HF_BN && tk[st * HF_BN + threadIdx.x]);
    if (takes) {   /* block-uniform */
      const __nv_bfloat16 *Ks = KV + 2 * st * G::TILE, *Vs = Ks + G::TILE;
      uint32_t qf[KS][4];   /* the warp's rows of Q, by ldmatrix each block: held in registers across the blocks
                               they left the rescale's skip below no room in hf_forward<64>'s 128 (it spilled) */
#pragma unroll
      for (int k = 0; k < KS; k++) c5k_frag_a_ldsm(qf[k], Qs + 16 * w * G::LD + 16 * k, G::LD);
      float s[NT][4];
      c5k_mma_abt<NT, KS>(s, qf, Ks, G::LD);   /* B's column g is key row 8 n + g */
      if (takes < HF_BN) hf_sit_out<NT>(s, tk + st * HF_BN);   /* block-uniform */
      float mx[2] = { -INFINITY, -INFINITY };   /* of the unscaled scores: sl2 > 0, so max(s) sl2 = max(s sl2) */
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int c = 0; c < 4; c++) mx[c >> 1] = fmaxf(mx[c >> 1], s[n][c]);
      float mu[2], corr[2];   /* the max that p is taken against: 0 while a row has no taking-part slot (not
                                 reached); O's and l's factor */
#pragma unroll
      for (int i = 0; i < 2; i++) {   /* a row's 64 columns lie in the 4 lanes of a quad */
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(HA_FULL, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(HA_FULL, mx[i], 2));
        const float mn = fmaxf(m[i], mx[i] * sl2);
        mu[i] = mn == -INFINITY ? 0.f : mn;
        corr[i] = c5k_ex2(m[i] - mu[i]);   /* 0 for the first block: m = -inf */
        m[i] = mn;
      }
      /* a factor 1 (the row's max stayed: 2^0) changes no bit, and in most blocks past the first few a warp's 16
         rows all keep theirs: it skips the DH / 2 + 2 products a thread then (warp-uniform) */
      if (__any_sync(HA_FULL, corr[0] != 1.f || corr[1] != 1.f)) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
          l[i] *= corr[i];
#pragma unroll
          for (int n = 0; n < ON; n++) {
            acc[n][2 * i] *= corr[i];
            acc[n][2 * i + 1] *= corr[i];
          }
        }
      }
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
          s[n][c] = c5k_ex2(fmaf(s[n][c], sl2, -mu[c >> 1]));   /* -inf: 0 */
          l[c >> 1] += s[n][c];
        }
#pragma unroll
      for (int k = 0; k < HF_BN / 16; k++) hf_pv<DH, NT>(acc, s, k, Vs);   /* slots 16 k .. 16 k + 15 of the block */
    }
    __syncthreads();   /* stage st is free for block kb + 2 */
  }

#pragma unroll
  for (int i = 0; i < 2; i++) {
    l[i] += __shfl_xor_sync(HA_FULL, l[i], 1);
    l[i] += __shfl_xor_sync(HA_FULL, l[i], 2);
    const long row = q0 + 16 * w + g + 8 * i;
    if (row >= nq) continue;
    const float inv = 1.f / l[i];   /* l >= 1 to f32's rounding: the row's max slot adds 2^0 */
    float *dst = o + (b * nq + row) * D + (long)h * DH + 2 * t;
#pragma unroll
    for (int n = 0; n < ON; n++) {
      dst[8 * n] = acc[n][2 * i] * inv;
      dst[8 * n + 1] = acc[n][2 * i + 1] * inv;
    }
    if (t == 0) lse[(b * H + h) * nq + row] = (double)m[i] * 0.69314718055994530942 + log((double)l[i]);
  }
}

/* batch H ceil(rows / 64) CTAs in one grid dimension, or an error naming the op */
static c5_status hf_grid(const ha_shape &a, long rows, const char *what, long *tiles, unsigned *blocks, const char *op)
{
  *tiles = (rows + 63) / 64;
  const long n = a.batch * a.H * *tiles;
  if (n > 0x7fffffffL)
    return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: %ld blocks of 64 %s (batch %ld, %d heads, %ld %s)", op, n, what,
                   a.batch, a.H, rows, what);
  *blocks = (unsigned)n;
  return C5_OK;
}

/* The whole forward in one launch (a.dh == DH), from hg_setup's copies. */
template <int DH>
static c5_status hf_launch(c5k_cuda_dev *dev, const ha_shape &a, const hg_plan &p, const __nv_bfloat16 *qb,
                           const __nv_bfloat16 *kvb, const uint8_t *kmask, double *lse, float *o, const char *op)
{
  long tiles;
  unsigned blocks;
  C5_CALL_K(hf_grid(a, a.nq, "query rows", &tiles, &blocks, op));
  const size_t bytes = hf_geom<DH>::bytes;
  C5_CALL_K(c5k_cuda_smem_opt(dev, hf_forward<DH>, bytes, op));
  const float sl2 = (float)(a.scale * 1.44269504088896340736);   /* scale log2(e) */
  hf_forward<DH><<<blocks, HF_THREADS, bytes, dev->stream>>>(a.nq, a.n1, p.n1p, a.H, a.hpr, tiles, sl2, qb, kvb,
                                                             kmask, o, lse);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* ---- bf16 mode, dim_head 64 or 128: the backward with its scores on chip ----

   FlashAttention-2's backward on the tensor cores, in place of hg_backward's
   chunks (S and dP [hpr, cq, n1p] in f32, P and dS in bf16, through device
   memory; five cuBLASLt products a chunk), which that keeps for the other
   head widths. Two kernels, each output element
   with one writer (no atomics), 4 warps of 16 rows each over 64 x 64 tiles as
   hf_forward, the same shared layout (rows DH + 8 bf16 apart) and key blocks:
     hb_dq, one CTA a (64 query rows, head, batch): first the rows' stats:
       Delta_i = sum_e dout_ie o_ie (FlashAttention-2's identity for
       sum_j P_ij dP_ij; dout as its bf16 copy, which dP's product takes,
       o the forward's; in double, the two halves of a row added in one
       order) and lse in log2 units, both rounded to f32, kept for hb_dkv
       (rows past nq: lse +inf, Delta 0, so that their P is 0 there); then
       the key blocks ascending (double buffered as hf_forward's, wholly
       masked blocks skipped): S = Q K^T, P = 2^(S scale log2 e - lse2) (0 for
       a slot that does not take part), dP = dout V^T, dS = P (dP - Delta),
       dq += dS K; dq = scale dq.
     hb_dkv, one CTA a (64 slots, head, batch): K and V of its slots in
       shared memory, the query blocks ascending (q, dout and the rows'
       stats double buffered by cp.async): S^T = K Q^T, P^T as above (rows
       past nq: 0 from their lse), dP^T = V dout^T, dS^T = P^T (dP^T -
       Delta), dv += P^T dout, dk += dS^T q; dk = scale dk. A block whose
       slots all sit out writes 0 without a pass (as do its masked slots:
       P = 0); slots at or past n1 are not written.
   S is formed with the same mma sequence as hf_forward's (each n8 tile over
   the k16 steps ascending from 0), so a row left with the null slot alone
   gets P = 1 to f32's rounding and dS of the order of 1e-7. P and dS are
   rounded to bf16 for their products, as the forward's P. Scratch: the bf16
   copies of q, kv and dout, and 8 bytes a query row (hg_plan's rs).
   Shared-memory traffic: a warp's A fragments of S and dP (its 16 rows of Q
   and dout in hb_dq, of K and V in hb_dkv) are loaded into registers once
   a CTA (c5k_frag_a) and S, dP go by HB_SC columns a
   step (c5k_mma_abt), so that they fit beside the accumulators: per 64 x 64
   tile and warp hb_dq issues 48 ldmatrix.x4 for 96 mma (56 when A came by
   ldmatrix each block), hb_dkv 64 for 128 (80); hf_forward 36 for 64.
   The steps change no sum's order: each S element still adds the k16 steps
   ascending from 0, dq, dk and dv still add the k16 steps of the block in
   ascending order. A slot that sits out gets S = -inf, so P = 2^-inf = 0
   (hb_prob), rather than a branch, which the DH 64 kernels' steps spent a
   quarter of their instructions on; only a block (hb_dq) or CTA (hb_dkv)
   with such a slot looks at the flags (block-uniform), as in hf_forward.
   P's 2^x is c5k_ex2, as the forward's p. */
/* S's (S^T's) columns a step, slots in hb_dq, query rows in hb_dkv: S and dP of 16 rows x HB_SC live in a thread's
   registers beside the accumulators and the A fragments (32 in hb_dq spilled at its 128 registers, in hb_dkv at
   its 168) */
#define HB_SC 16

template <int DH> struct hb_geom {
  typedef hf_geom<DH> G;
  /* hb_dq: Q, dout, then per stage K and V, then the stages' flags; hb_dkv: K, V, then per stage Q and dout, then
     per stage the rows' stats, then the block's flags */
  static constexpr size_t bytes = (size_t)6 * G::TILE * 2 + 2 * HF_BM * sizeof(float2) + 2 * HF_BN;
  /* hb_dkv's CTAs an SM: dk's and dv's accumulators (DH f32 a thread), K's and V's A fragments and a step's S^T
     and dP^T spill at 128 registers for DH 64, so 3 (168 registers); 2 for DH 128 (254, shared memory allows 2) */
  static constexpr int ctas = DH == 64 ? 3 : 2;
};

/* P's element 2^(s sl2 - lse2): one FFMA and MUFU.EX2 (c5k_ex2, as hf_forward's p); a slot that sits out has
   s = -inf (hf_sit_out, or hb_dkv's rows, in a block that has such a slot), which gives +0 whatever lse2 (+inf
   past nq). (In place of the flags' select or an added 0 or -inf in every element: a quarter of hb_dq<64>'s and
   hb_dkv<64>'s instructions a step went to the branch that the latter replaced.) */
static __device__ __forceinline__ float hb_prob(float s, float sl2, float lse2)
{
  return c5k_ex2(fmaf(s, sl2, -lse2));
}

/* Blocks: batch x H x query tiles, the tile fastest. qb, dob [batch][nq][H DH] (hg_setup's copies), kvb as
   hf_forward's, lse [batch][H][nq], o, dq [batch][nq][H DH], rs [batch][H][tiles 64] (lse2, Delta) written. */
template <int DH>
__global__ void __launch_bounds__(HF_THREADS, hf_geom<DH>::ctas)
hb_dq(long nq, long n1, long n1p, int H, int hpr, long tiles, float sl2, float scale, const __nv_bfloat16 *qb,
      const __nv_bfloat16 *kvb, const uint8_t *kmask, const double *lse, const __nv_bfloat16 *dob, const float *o,
      float2 *rs, float *dq)
{
  typedef hf_geom<DH> G;
  constexpr int NT = HB_SC / 8, KS = DH / 16, ON = DH / 8;   /* S's n8 tiles a step; Q's k16 steps; dq's n8 tiles */
  extern __shared__ __align__(16) unsigned char hf_smem[];
  __nv_bfloat16 *Qs = (__nv_bfloat16 *)hf_smem, *Os = Qs + G::TILE, *KV = Os + G::TILE;
  uint8_t *tk = (uint8_t *)(KV + 4 * G::TILE);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const long bh = blockIdx.x / tiles, q0 = (blockIdx.x % tiles) * HF_BM, b = bh / H;
  const int h = (int)(bh % H), r = h / hpr, R = H / hpr;
  const long D = (long)H * DH, L = 2L * hpr * DH, nb = (n1 + HF_BN - 1) / HF_BN, qo = (b * nq + q0) * D + (long)h * DH;
  const __nv_bfloat16 *kh = kvb + (b * R + r) * n1p * L + (long)(h % hpr) * 2 * DH;
  const uint8_t *mk = kmask ? kmask + (b * R + r) * (n1 - 1) : NULL;

  hf_load<DH, HF_BM>(Qs, qb + qo, D, nq - q0);   /* Q and dout in block 0's group */
  hf_load<DH, HF_BM>(Os, dob + qo, D, nq - q0);
  hf_stage<DH>(KV, tk, 0, kh, L, n1, mk);

  /* the rows' stats while the tiles load: lanes 2 i, 2 i + 1 of warp w take row 16 w + i, half a row each */
  float2 st;
  {
    const int i = threadIdx.x >> 1, half = lane & 1;
    const long row = q0 + i;
    double d = 0;
    if (row < nq) {
      const __nv_bfloat16 *x = dob + qo + i * D + half * (DH / 2);
      const float *y = o + qo + i * D + half * (DH / 2);
#pragma unroll 8
      for (int e = 0; e < DH / 2; e++) d += (double)__bfloat162float(x[e]) * (double)y[e];
    }
    d += __shfl_xor_sync(HA_FULL, d, 1);   /* lo + hi in both lanes */
    st = row < nq ? make_float2((float)(lse[bh * nq + row] * 1.44269504088896340736), (float)d)
                  : make_float2(INFINITY, 0.f);
    if (!half) rs[bh * tiles * HF_BM + q0 + i] = st;
  }
  float lq[2], dl[2];   /* rows g and g + 8 of the warp's: lse2, Delta */
#pragma unroll
  for (int i = 0; i < 2; i++) {
    lq[i] = __shfl_sync(HA_FULL, st.x, 2 * g + 16 * i);
    dl[i] = __shfl_sync(HA_FULL, st.y, 2 * g + 16 * i);
  }

  uint32_t qf[KS][4], of[KS][4];   /* the warp's rows of Q and dout: A fragments, in registers from block 0 on */
  float acc[ON][4];
#pragma unroll
  for (int n = 0; n < ON; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  for (long kb = 0; kb < nb; kb++) {
    if (kb + 1 < nb) {
      hf_stage<DH>(KV, tk, kb + 1, kh, L, n1, mk);
      c5k_cp_wait<1>();
    } else {
      c5k_cp_wait<0>();
    }
    const int sg = (int)(kb & 1);
    const int takes = __syncthreads_count(threadIdx.x < HF_BN && tk[sg * HF_BN + threadIdx.x]);
    if (kb == 0) {   /* Q and dout landed with block 0 */
#pragma unroll
      for (int k = 0; k < KS; k++) {
        c5k_frag_a(qf[k], Qs + 16 * w * G::LD + 16 * k, G::LD);
        c5k_frag_a(of[k], Os + 16 * w * G::LD + 16 * k, G::LD);
      }
    }
    if (takes) {   /* block-uniform */
      const __nv_bfloat16 *Ks = KV + 2 * sg * G::TILE, *Vs = Ks + G::TILE;
#pragma unroll 1
      for (int c0 = 0; c0 < HF_BN; c0 += HB_SC) {   /* slots c0 .. c0 + HB_SC - 1 of the block */
        float s[NT][4], dp[NT][4];
        c5k_mma_abt<NT, KS>(s, qf, Ks + c0 * G::LD, G::LD);   /* B's column g is slot c0 + 8 n + g */
        c5k_mma_abt<NT, KS>(dp, of, Vs + c0 * G::LD, G::LD);
        if (takes < HF_BN) hf_sit_out<NT>(s, tk + sg * HF_BN + c0);   /* block-uniform */
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
          for (int c = 0; c < 4; c++) {   /* row g + 8 (c >> 1), slot c0 + 8 n + 2 t + (c & 1) */
            const float p = hb_prob(s[n][c], sl2, lq[c >> 1]);
            s[n][c] = p * (dp[n][c] - dl[c >> 1]);   /* dS */
          }
#pragma unroll
        for (int k = 0; k < HB_SC / 16; k++) hf_pv<DH, NT>(acc, s, k, Ks + c0 * G::LD);
      }
    }
    __syncthreads();   /* stage sg is free for block kb + 2 */
  }

#pragma unroll
  for (int i = 0; i < 2; i++) {
    const long row = q0 + 16 * w + g + 8 * i;
    if (row >= nq) continue;
    float *dst = dq + (b * nq + row) * D + (long)h * DH + 2 * t;
#pragma unroll
    for (int n = 0; n < ON; n++) {   /* scalar stores: the op promises no 8-byte alignment of dq */
      dst[8 * n] = acc[n][2 * i] * scale;
      dst[8 * n + 1] = acc[n][2 * i + 1] * scale;
    }
  }
}

/* Query block ib's Q and dout tiles and rows' stats into stage ib & 1; one cp.async group. */
template <int DH>
static __device__ __forceinline__ void hb_qstage(__nv_bfloat16 *QO, float2 *rss, long ib, const __nv_bfloat16 *qh,
                                                 const __nv_bfloat16 *oh, long D, long nq, const float2 *rsh)
{
  const int sg = (int)(ib & 1);
  __nv_bfloat16 *Qs = QO + 2 * sg * hf_geom<DH>::TILE;
  const long i0 = ib * HF_BM;
  hf_load<DH, HF_BM>(Qs, qh + i0 * D, D, nq - i0);
  hf_load<DH, HF_BM>(Qs + hf_geom<DH>::TILE, oh + i0 * D, D, nq - i0);
  if (threadIdx.x < HF_BM * sizeof(float2) / 16) c5k_cp16(rss + sg * HF_BM + 2 * threadIdx.x, rsh + i0 + 2 * threadIdx.x, true);
  c5k_cp_commit();
}

/* Blocks: batch x H x key tiles (64 slots), the tile fastest. dkv [batch][R][n1][L]: rows < n1 of the head's key
   and value columns written. rs: hb_dq's (qtiles 64 rows a head). */
template <int DH>
__global__ void __launch_bounds__(HF_THREADS, hb_geom<DH>::ctas)
hb_dkv(long nq, long n1, long n1p, int H, int hpr, long tiles, long qtiles, float sl2, float scale,
       const __nv_bfloat16 *qb, const __nv_bfloat16 *kvb, const uint8_t *kmask, const float2 *rs,
       const __nv_bfloat16 *dob, float *dkv)
{
  typedef hf_geom<DH> G;
  constexpr int ON = DH / 8, NT = HB_SC / 8, KS = DH / 16;   /* dk's and dv's n8 tiles; S^T's a step; K's k16 steps */
  extern __shared__ __align__(16) unsigned char hf_smem[];
  __nv_bfloat16 *Ks = (__nv_bfloat16 *)hf_smem, *Vs = Ks + G::TILE, *QO = Vs + G::TILE;
  float2 *rss = (float2 *)(QO + 4 * G::TILE);
  uint8_t *tk = (uint8_t *)(rss + 2 * HF_BM);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const long bh = blockIdx.x / tiles, j0 = (blockIdx.x % tiles) * HF_BN, b = bh / H;
  const int h = (int)(bh % H), r = h / hpr, R = H / hpr;
  const long D = (long)H * DH, L = 2L * hpr * DH;
  const __nv_bfloat16 *kh = kvb + (b * R + r) * n1p * L + (long)(h % hpr) * 2 * DH + j0 * L;
  const __nv_bfloat16 *qh = qb + b * nq * D + (long)h * DH, *oh = dob + b * nq * D + (long)h * DH;
  const float2 *rsh = rs + bh * qtiles * HF_BM;
  const uint8_t *mk = kmask ? kmask + (b * R + r) * (n1 - 1) : NULL;
  const int take = threadIdx.x < HF_BN && ha_takes(j0 + threadIdx.x, n1, mk);
  if (threadIdx.x < HF_BN) tk[threadIdx.x] = (uint8_t)take;
  const int takes = __syncthreads_count(take);   /* tk written besides */

  uint32_t kf[KS][4], vf[KS][4];   /* the warp's slots of K and V: A fragments, in registers from query block 0 on */
  float ak[ON][4], av[ON][4];   /* dk's and dv's accumulators: slots 16 w + g, + 8 of the block */
#pragma unroll
  for (int n = 0; n < ON; n++)
#pragma unroll
    for (int c = 0; c < 4; c++) ak[n][c] = av[n][c] = 0.f;
  if (takes) {   /* block-uniform; else every slot sits out: P = 0, gradients 0 */
    hf_load<DH, HF_BN>(Ks, kh, L, n1 - j0);   /* their own group, ahead of query block 0's */
    hf_load<DH, HF_BN>(Vs, kh + DH, L, n1 - j0);
    c5k_cp_commit();
    hb_qstage<DH>(QO, rss, 0, qh, oh, D, nq, rsh);
    c5k_cp_wait<1>();
    __syncthreads();
#pragma unroll
    for (int k = 0; k < KS; k++) {
      c5k_frag_a(kf[k], Ks + 16 * w * G::LD + 16 * k, G::LD);
      c5k_frag_a(vf[k], Vs + 16 * w * G::LD + 16 * k, G::LD);
    }
    for (long ib = 0; ib < qtiles; ib++) {
      if (ib + 1 < qtiles) {
        hb_qstage<DH>(QO, rss, ib + 1, qh, oh, D, nq, rsh);
        c5k_cp_wait<1>();
      } else {
        c5k_cp_wait<0>();
      }
      __syncthreads();
      const int sg = (int)(ib & 1);
      const __nv_bfloat16 *Qs = QO + 2 * sg * G::TILE, *Os = Qs + G::TILE;
#pragma unroll 1
      for (int c0 = 0; c0 < HF_BM; c0 += HB_SC) {   /* query rows c0 .. c0 + HB_SC - 1 of the block */
        const __nv_bfloat16 *Qc = Qs + c0 * G::LD, *Oc = Os + c0 * G::LD;
        const float2 *rst = rss + sg * HF_BM + c0;
        float s[NT][4], dp[NT][4];   /* [slot 16 w + g (+ 8)][query c0 + 8 n + 2 t (+ 1)] */
        c5k_mma_abt<NT, KS>(s, kf, Qc, G::LD);   /* B's column g is query row c0 + 8 n + g */
        c5k_mma_abt<NT, KS>(dp, vf, Oc, G::LD);
        if (takes < HF_BN) {   /* block-uniform; the slots' flags from shared each step: held in registers across
                                  the blocks they spilled 4 bytes */
#pragma unroll
          for (int i = 0; i < 2; i++)
            if (!tk[16 * w + g + 8 * i])
#pragma unroll
              for (int n = 0; n < NT; n++) s[n][2 * i] = s[n][2 * i + 1] = -INFINITY;
        }
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
          for (int c = 0; c < 4; c++) {
            const float2 q = rst[8 * n + 2 * t + (c & 1)];
            const float p = hb_prob(s[n][c], sl2, q.x);
            s[n][c] = p;
            dp[n][c] = p * (dp[n][c] - q.y);   /* dS^T */
          }
#pragma unroll
        for (int k = 0; k < HB_SC / 16; k++) {
          hf_pv<DH, NT>(av, s, k, Oc);
          hf_pv<DH, NT>(ak, dp, k, Qc);
        }
      }
      __syncthreads();   /* stage sg is free for block ib + 2 */
    }
  }

#pragma unroll
  for (int i = 0; i < 2; i++) {
    const long j = j0 + 16 * w + g + 8 * i;
    if (j >= n1) continue;
    float *dst = dkv + ((b * R + r) * n1 + j) * L + (long)(h % hpr) * 2 * DH + 2 * t;
#pragma unroll
    for (int n = 0; n < ON; n++) {
      dst[8 * n] = ak[n][2 * i] * scale;
      dst[8 * n + 1] = ak[n][2 * i + 1] * scale;
      dst[DH + 8 * n] = av[n][2 * i];
      dst[DH + 8 * n + 1] = av[n][2 * i + 1];
    }
  }
}

/* The backward in two launches (a.dh == DH, a.nq > 0), from hg_setup's copies and scratch. */
template <int DH>
static c5_status hb_launch(c5k_cuda_dev *dev, const ha_shape &a, const hg_plan &p, const char *scr,
                           const uint8_t *kmask, const double *lse, const float *o, float *dq, float *dkv,
                           const char *op)
{
  const __nv_bfloat16 *qb = (const __nv_bfloat16 *)(scr + p.q), *kvb = (const __nv_bfloat16 *)(scr + p.kv);
  const __nv_bfloat16 *ob = (const __nv_bfloat16 *)(scr + p.dout);
  float2 *rs = (float2 *)(scr + p.rs);
  long qtiles, ktiles;
  unsigned qblocks, kblocks;
  C5_CALL_K(hf_grid(a, a.nq, "query rows", &qtiles, &qblocks, op));
  C5_CALL_K(hf_grid(a, a.n1, "slots", &ktiles, &kblocks, op));
  const size_t bytes = hb_geom<DH>::bytes;
  C5_CALL_K(c5k_cuda_smem_opt(dev, hb_dq<DH>, bytes, op));
  C5_CALL_K(c5k_cuda_smem_opt(dev, hb_dkv<DH>, bytes, op));
  const float sl2 = (float)(a.scale * 1.44269504088896340736), scale = (float)a.scale;
  hb_dq<DH><<<qblocks, HF_THREADS, bytes, dev->stream>>>(a.nq, a.n1, p.n1p, a.H, a.hpr, qtiles, sl2, scale, qb, kvb,
                                                         kmask, lse, ob, o, rs, dq);
  C5K_CUDA_LAUNCHED(op);
  hb_dkv<DH><<<kblocks, HF_THREADS, bytes, dev->stream>>>(a.nq, a.n1, p.n1p, a.H, a.hpr, ktiles, qtiles, sl2, scale,
                                                          qb, kvb, kmask, rs, ob, dkv);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

static c5_status hg_forward(c5k_ctx *ctx, c5k_cuda_dev *dev, const ha_shape &a, const float *q, const float *kv,
                            const uint8_t *kmask, double *lse, float *o, const char *op)
{
  hg_plan p;
  char *scr;
  const bool flash = a.dh == 64 || a.dh == 128;   /* hf_forward's widths */
  C5_CALL_K(hg_setup(dev, a, false, flash, q, kv, NULL, &p, &scr, op));
  const __nv_bfloat16 *qb = (const __nv_bfloat16 *)(scr + p.q), *kvb = (const __nv_bfloat16 *)(scr + p.kv);
  if (a.dh == 64) return hf_launch<64>(dev, a, p, qb, kvb, kmask, lse, o, op);
  if (a.dh == 128) return hf_launch<128>(dev, a, p, qb, kvb, kmask, lse, o, op);
  float *S = (float *)(scr + p.s), *part = (float *)(scr + p.part);
  __nv_bfloat16 *P = (__nv_bfloat16 *)(scr + p.p);
  const long hs = p.cq * p.ldp, dh = a.dh;
  for (long b = 0; b < a.batch; b++)
    for (int r = 0; r < a.R; r++)
      for (long i0 = 0; i0 < a.nq; i0 += p.cq) {
        const long mb = a.nq - i0 < p.cq ? a.nq - i0 : p.cq, qo = (b * a.nq + i0) * a.D + (long)r * a.hpr * dh;
        const __nv_bfloat16 *kh = kvb + (b * a.R + r) * p.n1p * a.L;
        C5_CALL_K(hg_gemm(ctx, a, 0, 1, mb, p.n1p, dh, a.scale, qb + qo, a.D, dh, kh, a.L, 2 * dh, 0.0, S, p.ldp, hs));
        hg_rows_forward<<<(unsigned)(a.hpr * mb), HG_THREADS, 0, dev->stream>>>(
            mb, a.n1, p.n1p, p.ldp, hs, S, kmask ? kmask + (b * a.R + r) * a.nk : NULL, P,
            lse + (b * a.H + (long)r * a.hpr) * a.nq + i0, a.nq);
        C5K_CUDA_LAUNCHED(op);
        C5_CALL_K(hg_slot_product(ctx, dev, a, p, mb, 1.0, P, kh + dh, part, o + qo, op));
      }
  return C5_OK;
}

static c5_status hg_backward(c5k_ctx *ctx, c5k_cuda_dev *dev, const ha_shape &a, const float *q, const float *kv,
                             const uint8_t *kmask, const double *lse, const float *o, const float *dout, float *dq,
                             float *dkv, const char *op)
{
  if (a.nq == 0) {   /* no query weighs any slot */
    C5K_CUDA_TRY(cudaMemsetAsync(dkv, 0, (size_t)(a.batch * a.R * a.n1 * a.L) * sizeof *dkv, dev->stream), op);
    return C5_OK;
  }
  hg_plan p;
  char *scr;
  const bool flash = a.dh == 64 || a.dh == 128;   /* hb_dq's and hb_dkv's widths */
  C5_CALL_K(hg_setup(dev, a, true, flash, q, kv, dout, &p, &scr, op));
  if (a.dh == 64) return hb_launch<64>(dev, a, p, scr, kmask, lse, o, dq, dkv, op);
  if (a.dh == 128) return hb_launch<128>(dev, a, p, scr, kmask, lse, o, dq, dkv, op);
  const __nv_bfloat16 *qb = (const __nv_bfloat16 *)(scr + p.q), *kvb = (const __nv_bfloat16 *)(scr + p.kv);
  const __nv_bfloat16 *ob = (const __nv_bfloat16 *)(scr + p.dout);
  float *S = (float *)(scr + p.s), *dP = (float *)(scr + p.dp), *part = (float *)(scr + p.part);
  __nv_bfloat16 *P = (__nv_bfloat16 *)(scr + p.p), *dS = (__nv_bfloat16 *)(scr + p.ds);
  const long hs = p.cq * p.ldp, dh = a.dh;
  for (long b = 0; b < a.batch; b++)
    for (int r = 0; r < a.R; r++)
      for (long i0 = 0; i0 < a.nq; i0 += p.cq) {
        const long mb = a.nq - i0 < p.cq ? a.nq - i0 : p.cq, qo = (b * a.nq + i0) * a.D + (long)r * a.hpr * dh;
        const long ko = (b * a.R + r) * a.n1 * a.L, kbo = (b * a.R + r) * p.n1p * a.L;   /* in dkv; in the copy */
        const double beta = i0 ? 1.0 : 0.0;   /* the first chunk sets dk, dv; the later ones add */
        C5_CALL_K(hg_gemm(ctx, a, 0, 1, mb, p.n1p, dh, a.scale, qb + qo, a.D, dh, kvb + kbo, a.L, 2 * dh, 0.0, S,
                          p.ldp, hs));
        C5_CALL_K(hg_gemm(ctx, a, 0, 1, mb, p.n1p, dh, 1.0, ob + qo, a.D, dh, kvb + kbo + dh, a.L, 2 * dh, 0.0, dP,
                          p.ldp, hs));
        hg_rows_backward<<<(unsigned)(a.hpr * mb), HG_THREADS, 0, dev->stream>>>(
            mb, a.n1, p.n1p, p.ldp, hs, S, dP, kmask ? kmask + (b * a.R + r) * a.nk : NULL,
            lse + (b * a.H + (long)r * a.hpr) * a.nq + i0, a.nq, P, dS);
        C5K_CUDA_LAUNCHED(op);
        /* dv += P^T dout, dk += scale dS^T q, dq = scale dS k */
        C5_CALL_K(hg_slot_grad(ctx, a, mb, 1.0, P, p.ldp, hs, ob + qo, beta, dkv + ko + dh));
        C5_CALL_K(hg_slot_grad(ctx, a, mb, a.scale, dS, p.ldp, hs, qb + qo, beta, dkv + ko));
        C5_CALL_K(hg_slot_product(ctx, dev, a, p, mb, a.scale, dS, kvb + kbo, part, dq + qo, op));
      }
  return C5_OK;
}
#endif

/* ---- the ops ---- */

extern "C" c5_status c5k_heavy_kv_assemble_cuda(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *kvraw,
                                                const c5_real *kscore, const c5_real *null_kv, c5_real *kv)
{
  const char *op = "heavy_kv_assemble";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const int R = A->routes, hpr = A->heads / R, dh = A->dim_head;
  const long total = A->batch * R * (A->nk + 1) * 2L * hpr * dh;
  if (total <= 0) return C5_OK;
  C5K_IDX_LAUNCH(total, ha_kv_assemble, c5k_cuda_blocks(dev, total), C5K_THREADS, dev->stream, total, A->nk, R, hpr,
                 dh, A->multiply_keys_by_score, kvraw, kscore, null_kv, kv);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_heavy_kv_score_backward_cuda(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *kvraw,
                                                      const c5_real *kscore, c5_real *dkv, c5_real *dkscore)
{
  const char *op = "heavy_kv_score_backward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const long tokens = A->batch * A->routes * A->nk;
  if (tokens <= 0) return C5_OK;
  if (!kscore) return C5K_ERR(C5_ERR_ARG, "cuda op %s: kscore is NULL (there is no score gradient without scores)", op);
  const int threads = 256;
  const long blocks = (tokens * 32 + threads - 1) / threads;
  ha_kv_score_backward<<<(unsigned)blocks, threads, 0, dev->stream>>>(tokens, A->nk, A->heads / A->routes, A->dim_head,
                                                                      A->multiply_keys_by_score, kvraw, kscore, dkv,
                                                                      dkscore);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_heavy_null_kv_grad_cuda(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *dkv,
                                                 double *gnull)
{
  const char *op = "heavy_null_kv_grad";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const long n = 2L * A->heads * A->dim_head;
  if (n <= 0 || A->batch <= 0) return C5_OK;
  ha_null_kv_grad<<<(unsigned)((n + 255) / 256), 256, 0, dev->stream>>>(A->batch, A->nk, A->heads,
                                                                         A->heads / A->routes, A->dim_head, dkv, gnull);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_heavy_attn_forward_cuda(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *q,
                                                 const c5_real *kv, const uint8_t *kmask, double *lse, c5_real *o)
{
  const char *op = "heavy_attn_forward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (A->batch <= 0 || A->nq <= 0) return C5_OK;
  const ha_shape a = ha_shape_of(A);
#if !C5_USE_DOUBLE
  if (ha_gemm_wanted(ctx, dev, a)) return hg_forward(ctx, dev, a, q, kv, kmask, lse, o, op);
#endif
  if (a.dh <= 64) return ha_flash<c5_real, 64>::forward(dev, a, q, kv, kmask, lse, o, op);
  if (a.dh <= 128) return ha_flash<c5_real, 128>::forward(dev, a, q, kv, kmask, lse, o, op);
  if (a.dh <= HA_MAXDH) return ha_flash<c5_real, HA_MAXDH>::forward(dev, a, q, kv, kmask, lse, o, op);
  return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: dim_head %d (the kernels take up to %d)", op, a.dh, HA_MAXDH);
}

extern "C" c5_status c5k_heavy_attn_backward_cuda(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *q,
                                                  const c5_real *kv, const uint8_t *kmask, const double *lse,
                                                  const c5_real *o, const c5_real *dout, c5_real *dq, c5_real *dkv)
{
  const char *op = "heavy_attn_backward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (A->batch <= 0) return C5_OK;
  const ha_shape a = ha_shape_of(A);
#if !C5_USE_DOUBLE
  if (ha_gemm_wanted(ctx, dev, a)) return hg_backward(ctx, dev, a, q, kv, kmask, lse, o, dout, dq, dkv, op);
#else
  (void)o;   /* the SIMT kernels form Delta from P and dP */
#endif
  if (a.dh <= 64) return ha_flash<c5_real, 64>::backward(dev, a, q, kv, kmask, lse, dout, dq, dkv, op);
  if (a.dh <= 128) return ha_flash<c5_real, 128>::backward(dev, a, q, kv, kmask, lse, dout, dq, dkv, op);
  if (a.dh <= HA_MAXDH) return ha_flash<c5_real, HA_MAXDH>::backward(dev, a, q, kv, kmask, lse, dout, dq, dkv, op);
  return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: dim_head %d (the kernels take up to %d)", op, a.dh, HA_MAXDH);
}
