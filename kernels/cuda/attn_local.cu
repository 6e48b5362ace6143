/* attn_local.cu - sliding-window attention (kernels.h, local_attn_*) on the
   GPU, flash style: scores live in shared memory one [32 x 32] tile at a
   time, never as an n x (L w) matrix in device memory.

   Tiles are LA_TILE consecutive tokens of the sequence, across window
   boundaries (windows of 2 or 8 tokens share a block; each row keeps its
   own window's slots, ranges and uniform weights), and a tile's key sweep
   covers the union of its rows' windows.
   Forward: one block per (query tile, h, b); two sweeps over the keys in
   tiles of 32: the first finds each row's masked max (and whether any slot
   is unmasked), the second forms exp(s - max) as the CPU does (working
   precision, row sum in double) and accumulates (exp) V, scaled by 1 / sum
   at the end. The row stats are the CPU's (kernels/cpu/attn_local.c).
   Backward, without atomics:
     query-centric (dq): per query tile, a sweep over the keys forms
       D = sum_p P_p dP_p in double (saved for the key pass), a second
       forms dS = P (dP - D) and dq = scale dS K;
     key-centric (dk, dv): per key tile, the queries of the windows that
       may see it (j_first - lf .. j_last + lb) in ascending tiles,
       recompute P and dS and accumulate dv = P^T dout, dk = scale dS^T q
       in registers: every sum has one fixed order.
   Thread layout (256 threads): row r = tid / 8 of the tile, and the eight
   threads of a row own the columns lane8 + 8 j (score columns j < 4,
   head columns j < 16: dim_head <= 128); a row's reductions are butterfly
   shuffles among its eight lanes, the same bits in every lane.

   bf16 matmul mode (c5_backend_set_matmul; dev->matmul == 2), single
   build, when the context does not ask for exact products (ctx->exact):
   for dim_head 64 or 128 and windows of a multiple of 64 tokens, the
   forward as a flash kernel on the tensor cores (lf_forward, below: 64
   query rows of one window a CTA, mma.sync over the window's key blocks,
   online softmax, the lg path's stats), and for dim_head 64 the backward
   too (lf_backward_q for D = dout o, from the forward's o, and dq;
   lf_backward_kv for dk, dv; without atomics); where they run both ways
   (dim_head 64: local_attn_bf16) they also take q, k, v, o, dout, dq,
   dk, dv as bf16 tensors (L->bf16);
   otherwise the products on cuBLASLt over windows (lg_*), for dim_head a
   multiple of 8 and score rows of L w <= 2048 slots (dim_head 128's
   backward among them, from lf_forward's stats, which mean what
   lg_rows_forward's do); otherwise these SIMT kernels, their results
   unchanged. */
#include <math.h>
#include <cuda_bf16.h>
#include <type_traits>
#include "cuda_internal.cuh"
#include "mma.cuh"

#define LA_TILE 32           /* rows (queries or keys) of a tile */
#define LA_THREADS 256
#define LA_LANES 8           /* threads per tile row */
#define LA_SC (LA_TILE / LA_LANES)   /* score columns per thread */
#define LA_MAXDH 128
#define LA_HC (LA_MAXDH / LA_LANES)  /* head columns per thread */

/* The op's shape on the device (kernels.h c5k_local_attn), by value. */
struct la_shape {
  long n, w, W, np, lw;   /* tokens, window, windows, padded tokens, slots L w */
  int lb, lf, causal, exact, H, dh;
  double scale;
  long ldqkv, ldo, lddkv;   /* q, k, v; o, dout, dq; dk, dv (the backward's) */
};

/* Query window i: real queries t0 .. t0+m-1, real keys kb .. ke-1, slots in
   the padded sequence kb .. pe-1, npad out-of-range slots. */
struct la_win { long t0, m, kb, ke, pe, npad; };

static __device__ __forceinline__ la_win la_geom(const la_shape &a, long i)
{
  la_win g;
  g.t0 = i * a.w;
  g.m = a.n - g.t0 < a.w ? a.n - g.t0 : a.w;
  long s0 = (i - a.lb) * a.w, s1 = (i + a.lf + 1) * a.w;
  g.kb = s0 > 0 ? s0 : 0;
  g.ke = s1 < a.n ? s1 : a.n;
  g.pe = s1 < a.np ? s1 : a.np;
  g.npad = a.lw - (g.pe - g.kb);
  return g;
}

/* Query t's unmasked real keys before the key mask [lo, rhi), and the number
   of unmasked pad keys (score 0, v = 0) its softmax sum counts. */
struct la_row { long lo, rhi, nzero; };

static __device__ __forceinline__ la_row la_range(const la_shape &a, const la_win &g, long t, bool masked)
{
  long lo = g.kb, hi = g.pe;
  if (a.causal) {
    if (hi > t + 1) hi = t + 1;
    if (a.exact && lo < t - a.w * a.lb) lo = t - a.w * a.lb;
  } else if (a.exact) {
    if (lo < t - a.w * a.lb) lo = t - a.w * a.lb;
    if (hi > t + a.w * a.lf + 1) hi = t + a.w * a.lf + 1;
  }
  la_row r;
  r.lo = lo;
  r.rhi = hi < a.n ? hi : a.n;
  r.nzero = (!masked && hi > a.n) ? hi - (lo > a.n ? lo : a.n) : 0;
  return r;
}

static __device__ __forceinline__ bool la_keep(const la_row &r, const uint8_t *mk, long p)
{
  return p >= r.lo && p < r.rhi && (!mk || mk[p]);
}

/* Rows [row0, row0 + rows) of one head of x (stride ld) into a [LA_TILE,
   dh + 1] tile; rows past `rows` are zero. */
template <typename T>
static __device__ __forceinline__ void la_load(T *tile, const T *x, long ld, long row0, long rows, int dh)
{
  const int ldt = dh + 1;
  for (int idx = threadIdx.x; idx < LA_TILE * dh; idx += LA_THREADS) {
    const int r = idx / dh, d = idx % dh;
    tile[r * ldt + d] = r < rows ? x[(row0 + r) * ld + d] : (T)0;
  }
}

/* The LA_SC dots of row x with rows lane8 + LA_LANES j of tile Y (stride
   ldt), each summed over d in order: x[d] is loaded once for all of them. */
template <typename T>
static __device__ __forceinline__ void la_dots(const T *x, const T *Y, int ldt, int l8, int dh, T out[LA_SC])
{
  for (int j = 0; j < LA_SC; j++) out[j] = 0;
  for (int d = 0; d < dh; d++) {
    const T xd = x[d];
    for (int j = 0; j < LA_SC; j++) out[j] += xd * Y[(l8 + LA_LANES * j) * ldt + d];
  }
}

/* The real keys [kb, ke) that queries t0 .. t1-1 see together: the union of
   their windows' ranges (a tile may span several small windows). */
static __device__ __forceinline__ void la_keys_of(const la_shape &a, long t0, long t1, long *kb, long *ke)
{
  *kb = la_geom(a, t0 / a.w).kb;
  *ke = la_geom(a, (t1 - 1) / a.w).ke;
}

/* The keys [lo, hi) any query t0 .. t1-1 may weigh outside a uniform row:
   a row's lo and rhi never decrease with t, so the first row's lo and the
   last row's rhi bound them all. Tiles outside hold only masked slots (the
   causal future, beyond exact_windowsize) and are skipped. */
static __device__ __forceinline__ void la_live_keys(const la_shape &a, long t0, long t1, long *lo, long *hi)
{
  *lo = la_range(a, la_geom(a, t0 / a.w), t0, true).lo;
  *hi = la_range(a, la_geom(a, (t1 - 1) / a.w), t1 - 1, true).rhi;
}

/* A row's reductions over its N lanes (butterflies: the same bits in every lane). */
template <int N> static __device__ __forceinline__ double la_maxn(double x)
{
  for (int o = 1; o < N; o <<= 1) x = fmax(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
template <int N, typename U> static __device__ __forceinline__ U la_sumn(U x)
{
  for (int o = 1; o < N; o <<= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

/* Exponentials in the working precision, as the CPU's c5k_vexp. */
template <typename T> static __device__ __forceinline__ T la_exp(T x)
{
  if constexpr (sizeof(T) == sizeof(float)) return expf(x);
  else return exp(x);
}

/* P of one unmasked slot from the row stats, as the CPU's row_probs rounds it. */
template <typename T> static __device__ __forceinline__ T la_prob(T s, double mx, double inv)
{
  T e = la_exp((T)(s - mx));
  return (T)(e * inv);
}

/* Forward sweep 1: an unmasked slot p (score s) counts toward its row's max. */
template <typename T>
static __device__ __forceinline__ void la_fwd_max(const la_row &rg, const uint8_t *mk, long p, T s, T scale, double *mx,
                                                  long *cnt)
{
  if (la_keep(rg, mk, p)) {
    *mx = fmax(*mx, (double)(scale * s));
    (*cnt)++;
  }
}

/* Forward sweep 2: slot p's weight exp(scale s - max) in the working
   precision (added to the row's sum), or in a uniform row wuni on every real
   key of its window (the SIMT kernel's 1 / (L w); the bf16 path's 1,
   exact in bf16, with 1 / (L w) applied to o after the product). */
template <typename T>
static __device__ __forceinline__ T la_fwd_weight(const la_win &g, const la_row &rg, const uint8_t *mk, long p, bool u,
                                                  T s, T scale, double mx, T wuni, double *sum)
{
  if (u) return p >= g.kb && p < g.ke ? wuni : (T)0;
  if (!la_keep(rg, mk, p)) return 0;
  const T e = la_exp((T)(scale * s - mx));
  *sum += e;
  return e;
}

/* A row's 1 / sum (its unmasked pad keys added: score 0) and, in a uniform
   row, its out-of-range slots' part of o (v = -1, weight 1 / (L w)) in add. */
static __device__ __forceinline__ double la_fwd_inv(const la_shape &a, const la_win &g, const la_row &rg, bool u,
                                                    double mx, double sum, double *add)
{
  if (rg.nzero > 0) sum += (double)rg.nzero * exp(-mx);
  *add = u && g.npad ? -(double)g.npad / (double)a.lw : 0.0;
  return u ? 0.0 : 1.0 / sum;
}

static __device__ __forceinline__ void la_put_stats(const la_shape &a, long b, int h, long t, bool u, double mx,
                                                    double inv, double *rmax, double *rinv, uint8_t *uni)
{
  const long st = ((long)b * a.H + h) * a.n + t;
  rmax[st] = u ? 0.0 : mx;
  rinv[st] = inv;
  uni[st] = u;
}

/* Query-centric backward, slot of score s, dP dp in a row where `on` (active
   row, unmasked slot): pass 0 adds P dP to the row's D, pass 1 returns dS. */
template <typename T>
static __device__ __forceinline__ T la_dq_elem(int pass, bool on, T s, T dp, T scale, double mx, double inv, double *D)
{
  if (!on) return 0;
  const T p = la_prob(scale * s, mx, inv);
  if (pass == 0) {
    *D += (double)p * dp;
    return 0;
  }
  return (T)(p * ((double)dp - *D));
}

/* The key-centric backward's per-query stats and ranges of one query tile,
   in shared memory (rows entries each, 64 bytes a row in all). */
struct la_qst {
  double *mx, *inv, *D;
  long *lo, *rhi, *kb, *ke;
  int *uni;
};

/* The arrays at base (8-byte aligned); *end: the first byte after them. */
static __device__ __forceinline__ la_qst la_qst_at(void *base, int rows, void **end)
{
  la_qst S;
  S.mx = (double *)base;
  S.inv = S.mx + rows;
  S.D = S.inv + rows;
  S.lo = (long *)(S.D + rows);
  S.rhi = S.lo + rows;
  S.kb = S.rhi + rows;
  S.ke = S.kb + rows;
  S.uni = (int *)(S.ke + rows);
  *end = S.uni + 2 * rows;
  return S;
}

/* Entry c: query t (real), or no query (every slot weight 0). */
static __device__ __forceinline__ void la_qst_fill(const la_shape &a, const la_qst &S, int c, long t, bool real,
                                                   long st, bool masked, const double *rmax, const double *rinv,
                                                   const double *dd, const uint8_t *uni)
{
  if (real) {
    const la_win g = la_geom(a, t / a.w);
    const la_row rg = la_range(a, g, t, masked);
    S.mx[c] = rmax[st];
    S.inv[c] = rinv[st];
    S.D[c] = dd[st];
    S.lo[c] = rg.lo;
    S.rhi[c] = rg.rhi;
    S.kb[c] = g.kb;
    S.ke[c] = g.ke;
    S.uni[c] = uni[st];
  } else {
    S.mx[c] = S.inv[c] = S.D[c] = 0;
    S.lo[c] = S.rhi[c] = S.kb[c] = S.ke[c] = 0;
    S.uni[c] = 0;
  }
}

/* Key p against query entry c (score s, dP dp): P (puni on a uniform row's
   real window keys) and dS. */
template <typename T>
static __device__ __forceinline__ void la_kv_elem(const la_qst &S, int c, long p, const uint8_t *mk, T s, T dp, T scale,
                                                  T puni, T *pr, T *ds)
{
  *pr = 0;
  *ds = 0;
  if (S.uni[c]) *pr = p >= S.kb[c] && p < S.ke[c] ? puni : (T)0;
  else if (p >= S.lo[c] && p < S.rhi[c] && (!mk || mk[p])) {
    *pr = la_prob(scale * s, S.mx[c], S.inv[c]);
    *ds = (T)(*pr * ((double)dp - S.D[c]));
  }
}

/* The query tiles' range [*qa, *qb) of a key tile p0 .. p0+rows-1: the
   queries of windows j_first - lf .. j_last + lb, the ones that may see it. */
static __device__ __forceinline__ void la_kv_queries(const la_shape &a, long p0, long rows, long *qa, long *qb)
{
  const long j0 = p0 / a.w, j1 = (p0 + rows - 1) / a.w;
  const long i0 = j0 - a.lf > 0 ? j0 - a.lf : 0, i1 = j1 + a.lb < a.W - 1 ? j1 + a.lb : a.W - 1;
  *qa = i0 * a.w;
  *qb = (i1 + 1) * a.w < a.n ? (i1 + 1) * a.w : a.n;
}

/* Blocks: x = query tile (rows x LA_TILE .. of the sequence, across window
   boundaries: each row keeps its own window's slots), y = head, z = batch. */
template <typename T>
__global__ void __launch_bounds__(LA_THREADS) la_forward(la_shape a, const T *q, const T *k, const T *v,
                                                         const uint8_t *mask, T *o, double *rmax, double *rinv,
                                                         uint8_t *uni)
{
  extern __shared__ double la_smem[];
  const int dh = a.dh, ldt = dh + 1, tid = threadIdx.x, r = tid / LA_LANES, l8 = tid % LA_LANES;
  const int h = blockIdx.y;
  const long b = blockIdx.z, row0 = b * a.n, q0 = (long)blockIdx.x * LA_TILE;
  const long mq = a.n - q0 < LA_TILE ? a.n - q0 : LA_TILE, t = q0 + r;
  T *Qs = (T *)la_smem, *Ks = Qs + LA_TILE * ldt, *Vs = Ks + LA_TILE * ldt, *Ss = Vs + LA_TILE * ldt;
  const bool live = r < mq;
  const uint8_t *mk = mask ? mask + row0 : NULL;
  const la_win g = la_geom(a, (live ? t : q0) / a.w);
  const la_row rg = la_range(a, g, t, mask != NULL);
  const T scale = (T)a.scale;
  long kb, ke, klo, khi;
  la_keys_of(a, q0, q0 + mq, &kb, &ke);
  la_live_keys(a, q0, q0 + mq, &klo, &khi);
  la_load(Qs, q + (row0 + q0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, mq, dh);

  /* sweep 1: the row's max over its unmasked slots (pad keys: 0) */
  double mx = live && rg.nzero > 0 ? 0.0 : -INFINITY;
  long cnt = l8 == 0 && live ? rg.nzero : 0;
  for (long k0 = klo; k0 < khi; k0 += LA_TILE) {
    const long nk = khi - k0 < LA_TILE ? khi - k0 : LA_TILE;
    __syncthreads();
    la_load(Ks, k + (row0 + k0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, nk, dh);
    __syncthreads();
    T s[LA_SC];
    la_dots(Qs + r * ldt, Ks, ldt, l8, dh, s);
    for (int j = 0; j < LA_SC; j++) {
      const int c = l8 + LA_LANES * j;
      if (live && c < nk) la_fwd_max(rg, mk, k0 + c, s[j], scale, &mx, &cnt);
    }
  }
  mx = la_maxn<LA_LANES>(mx);
  cnt = la_sumn<LA_LANES>(cnt);
  const bool u = live && cnt == 0;
  const T puni = (T)(1.0 / (double)a.lw);
  if (__syncthreads_or(u)) {   /* a uniform row weighs every real key of its window */
    klo = kb;
    khi = ke;
  }

  /* sweep 2: e = exp(s - max) in the working precision, the row sum in double, acc = e V */
  T acc[LA_HC];
  for (int j = 0; j < LA_HC; j++) acc[j] = 0;
  double sum = 0;
  for (long k0 = klo; k0 < khi; k0 += LA_TILE) {
    const long nk = khi - k0 < LA_TILE ? khi - k0 : LA_TILE;
    __syncthreads();
    la_load(Ks, k + (row0 + k0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, nk, dh);
    la_load(Vs, v + (row0 + k0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, nk, dh);
    __syncthreads();
    T s[LA_SC];
    la_dots(Qs + r * ldt, Ks, ldt, l8, dh, s);
    for (int j = 0; j < LA_SC; j++) {
      const int c = l8 + LA_LANES * j;
      const T e = live && c < nk ? la_fwd_weight(g, rg, mk, k0 + c, u, s[j], scale, mx, puni, &sum) : (T)0;
      Ss[r * (LA_TILE + 1) + c] = e;
    }
    __syncthreads();
    for (int c = 0; c < nk; c++) {
      const T e = Ss[r * (LA_TILE + 1) + c];
      for (int j = 0; j < LA_HC; j++) {
        const int d = l8 + LA_LANES * j;
        if (d < dh) acc[j] += e * Vs[c * ldt + d];
      }
    }
  }
  sum = la_sumn<LA_LANES>(sum);
  if (!live) return;
  double addd;
  const double inv = la_fwd_inv(a, g, rg, u, mx, sum, &addd);
  const T add = (T)addd;
  T *orow = o + (row0 + t) * a.ldo + (long)h * dh;
  for (int j = 0; j < LA_HC; j++) {
    const int d = l8 + LA_LANES * j;
    if (d < dh) orow[d] = u ? (T)(acc[j] + add) : (T)(acc[j] * inv);
  }
  if (l8 == 0) la_put_stats(a, b, h, t, u, mx, inv, rmax, rinv, uni);
}

/* Query-centric backward: dq, and D per row into dd (the key pass's input).
   Blocks as the forward's. */
template <typename T>
__global__ void __launch_bounds__(LA_THREADS) la_backward_q(la_shape a, const T *q, const T *k, const T *v,
                                                            const uint8_t *mask, const double *rmax,
                                                            const double *rinv, const uint8_t *uni,
                                                            const T *dout, T *dq, double *dd)
{
  extern __shared__ double la_smem[];
  const int dh = a.dh, ldt = dh + 1, tid = threadIdx.x, r = tid / LA_LANES, l8 = tid % LA_LANES;
  const int h = blockIdx.y;
  const long b = blockIdx.z, row0 = b * a.n, q0 = (long)blockIdx.x * LA_TILE;
  const long mq = a.n - q0 < LA_TILE ? a.n - q0 : LA_TILE, t = q0 + r;
  T *Qs = (T *)la_smem, *Os = Qs + LA_TILE * ldt, *Ks = Os + LA_TILE * ldt, *Vs = Ks + LA_TILE * ldt;
  T *Ss = Vs + LA_TILE * ldt;
  const bool live = r < mq;
  const uint8_t *mk = mask ? mask + row0 : NULL;
  const la_win g = la_geom(a, (live ? t : q0) / a.w);
  const la_row rg = la_range(a, g, t, mask != NULL);
  const long st = ((long)b * a.H + h) * a.n + t;
  const double mx = live ? rmax[st] : 0.0, inv = live ? rinv[st] : 0.0;
  const bool act = live ? !uni[st] : false;   /* uniform rows: constant scores, no gradient */
  const T scale = (T)a.scale;
  long klo, khi;   /* uniform rows have no gradient: only the unmasked range matters */
  la_live_keys(a, q0, q0 + mq, &klo, &khi);
  la_load(Qs, q + (row0 + q0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, mq, dh);
  la_load(Os, dout + (row0 + q0) * a.ldo + (long)h * dh, a.ldo, 0, mq, dh);

  double D = 0;
  for (int pass = 0; pass < 2; pass++) {   /* 0: D = sum P dP; 1: dS, dq */
    T acc[LA_HC];
    for (int j = 0; j < LA_HC; j++) acc[j] = 0;
    for (long k0 = klo; k0 < khi; k0 += LA_TILE) {
      const long nk = khi - k0 < LA_TILE ? khi - k0 : LA_TILE;
      __syncthreads();
      la_load(Ks, k + (row0 + k0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, nk, dh);
      la_load(Vs, v + (row0 + k0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, nk, dh);
      __syncthreads();
      T s[LA_SC], dp[LA_SC];
      la_dots(Qs + r * ldt, Ks, ldt, l8, dh, s);
      la_dots(Os + r * ldt, Vs, ldt, l8, dh, dp);
      for (int j = 0; j < LA_SC; j++) {
        const int c = l8 + LA_LANES * j;
        const T ds = la_dq_elem(pass, act && c < nk && la_keep(rg, mk, k0 + c), s[j], dp[j], scale, mx, inv, &D);
        Ss[r * (LA_TILE + 1) + c] = ds;
      }
      if (pass == 0) continue;
      __syncthreads();
      for (int c = 0; c < nk; c++) {
        const T ds = Ss[r * (LA_TILE + 1) + c];
        for (int j = 0; j < LA_HC; j++) {
          const int d = l8 + LA_LANES * j;
          if (d < dh) acc[j] += ds * Ks[c * ldt + d];
        }
      }
    }
    if (pass == 0) {
      D = la_sumn<LA_LANES>(D);
      if (live && l8 == 0) dd[st] = D;
    } else if (live) {
      T *row = dq + (row0 + t) * a.ldo + (long)h * dh;
      for (int j = 0; j < LA_HC; j++) {
        const int d = l8 + LA_LANES * j;
        if (d < dh) row[d] = scale * acc[j];
      }
    }
  }
}

/* Key-centric backward: dk, dv of one key tile (rows y LA_TILE .. of the
   sequence) from every query that may see it, the queries of windows
   j_first - lf .. j_last + lb, in ascending order. Blocks as the forward's. */
template <typename T>
__global__ void __launch_bounds__(LA_THREADS) la_backward_kv(la_shape a, const T *q, const T *k, const T *v,
                                                             const uint8_t *mask, const double *rmax,
                                                             const double *rinv, const uint8_t *uni,
                                                             const double *dd, const T *dout, T *dk, T *dv)
{
  extern __shared__ double la_smem[];
  const int dh = a.dh, ldt = dh + 1, tid = threadIdx.x, r = tid / LA_LANES, l8 = tid % LA_LANES;
  const int h = blockIdx.y;
  const long b = blockIdx.z, row0 = b * a.n, p0 = (long)blockIdx.x * LA_TILE;
  /* per-query stats and ranges of the current query tile */
  void *end;
  const la_qst S = la_qst_at(la_smem, LA_TILE, &end);
  T *Ks = (T *)end, *Vs = Ks + LA_TILE * ldt, *Qs = Vs + LA_TILE * ldt, *Os = Qs + LA_TILE * ldt;
  T *Ps = Os + LA_TILE * ldt, *Ds = Ps + LA_TILE * (LA_TILE + 1);
  const long mk_rows = a.n - p0 < LA_TILE ? a.n - p0 : LA_TILE, p = p0 + r;
  const bool live = r < mk_rows;
  const uint8_t *mk = mask ? mask + row0 : NULL;
  const T scale = (T)a.scale, puni = (T)(1.0 / (double)a.lw);
  la_load(Ks, k + (row0 + p0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, mk_rows, dh);
  la_load(Vs, v + (row0 + p0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, mk_rows, dh);
  T gk[LA_HC], gv[LA_HC];
  for (int j = 0; j < LA_HC; j++) gk[j] = gv[j] = 0;
  long tq0, tq1;
  la_kv_queries(a, p0, mk_rows, &tq0, &tq1);
  for (long q0 = tq0; q0 < tq1; q0 += LA_TILE) {
    const long mq = tq1 - q0 < LA_TILE ? tq1 - q0 : LA_TILE;
    long qlo, qhi;
    la_live_keys(a, q0, q0 + mq, &qlo, &qhi);
    /* (also the barrier before the tiles are overwritten) a query tile that weighs none of these keys */
    const int anyu = __syncthreads_or(tid < mq && uni[((long)b * a.H + h) * a.n + q0 + tid]);
    if (!anyu && (qhi <= p0 || qlo >= p0 + mk_rows)) continue;
    la_load(Qs, q + (row0 + q0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, mq, dh);
    la_load(Os, dout + (row0 + q0) * a.ldo + (long)h * dh, a.ldo, 0, mq, dh);
    if (tid < LA_TILE)
      la_qst_fill(a, S, tid, q0 + tid, tid < mq, ((long)b * a.H + h) * a.n + q0 + tid, mask != NULL, rmax, rinv, dd,
                  uni);
    __syncthreads();
    T s[LA_SC], dp[LA_SC];
    la_dots(Ks + r * ldt, Qs, ldt, l8, dh, s);
    la_dots(Vs + r * ldt, Os, ldt, l8, dh, dp);
    for (int j = 0; j < LA_SC; j++) {
      const int c = l8 + LA_LANES * j;
      T pr = 0, ds = 0;
      if (live && c < mq) la_kv_elem(S, c, p, mk, s[j], dp[j], scale, puni, &pr, &ds);
      Ps[r * (LA_TILE + 1) + c] = pr;
      Ds[r * (LA_TILE + 1) + c] = ds;
    }
    __syncthreads();
    for (int c = 0; c < mq; c++) {
      const T pr = Ps[r * (LA_TILE + 1) + c], ds = Ds[r * (LA_TILE + 1) + c];
      for (int j = 0; j < LA_HC; j++) {
        const int d = l8 + LA_LANES * j;
        if (d < dh) {
          gv[j] += pr * Os[c * ldt + d];
          gk[j] += ds * Qs[c * ldt + d];
        }
      }
    }
  }
  if (!live) return;
  T *rk = dk + (row0 + p) * a.lddkv + (long)h * dh, *rv = dv + (row0 + p) * a.lddkv + (long)h * dh;
  for (int j = 0; j < LA_HC; j++) {
    const int d = l8 + LA_LANES * j;
    if (d < dh) {
      rk[d] = scale * gk[j];
      rv[d] = gv[j];
    }
  }
}


#if !C5_USE_DOUBLE
/* ---- bf16 matmul mode: the products on cuBLASLt over windows ----
   Every query window's scores are one small product, [w, dh] x [dh, L w],
   and the windows of all (b, h) one strided batch. The windows are slots of
   a padded layout [b H][Nw][w][dh], Nw = W + lb + lf slots a head, queries
   of window i in slot i, keys and values of window i in slot i + lb, zeros
   elsewhere (the out-of-range windows before the first and after the
   last, the rows past n): window i's L w keys are the L consecutive slots
   from i, so one stride (w dh) serves A, B and C, the B views
   overlapping. The slots are taken a chunk at a time: q's (and dout's)
   rows of the chunk's cb slots and k's, v's of cb + L - 1 are copied to
   bf16 for it, so the scratch is the chunk's (LG_BUDGET), not the
   sequence's. Slots i >= W of a head (lb + lf of Nw) are computed and
   dropped. Rows past n have q = 0 and k = 0, so their scores are exactly
   0, the pad keys' score the reference gives them.
   Forward, per chunk of windows: S = Q K^T (f32), a row kernel (one warp a
   row: the SIMT kernels' masks, max, weights, sums and stats; P = exp(s -
   max) in bf16, 1 on a uniform row's window keys), O = P V; o = O / sum (a
   uniform row: O / (L w) plus its out-of-range part) into o's layout.
   Backward, per chunk: S and dP = dout V^T again, a row kernel (P from the
   stats, D = sum P dP in double, dS = P (dP - D); P and dS in bf16), dq =
   scale dS K, and dk, dv by key block: window i's block jb is key slot i +
   jb, so for each jb = 0 .. L-1 in order one strided batch adds dv[i + jb]
   += P_i[:, jb]^T dout_i and dk[i + jb] += scale dS_i[:, jb]^T q_i (the
   windows of one call write distinct slots; a key slot is whole after
   the chunk of its own window, lg_backward). A uniform row's dout enters
   the bf16 copy divided by L w (its P is 1 there), its dS is 0.
   The sums' orders are cuBLASLt's for the shape and the chunks' (fixed by
   the shape): two runs give the same bits. WMMA flash kernels (scores in
   shared memory) ran here before, at 22 TFLOP/s: forward+backward at
   n = 32768, w 128, 8 heads of 64, look 1/1 on an H200 5.7 ms; these take
   3.0 ms, the scores' memory traffic (about 12 bytes a score in the
   backward) included. */
#define LG_BUDGET ((size_t)256 << 20)   /* a chunk's scratch: scores (S, dP f32; P, dS bf16) and rows */
#define LG_THREADS 256
#define LG_MAXNR 64   /* score slots a lane holds at most: rows of L w <= 2048 slots */

/* Whether the mode takes the tensor-core paths (lg_*, lf_*): bf16 products, the context not asking for exact ones. */
static bool la_tc(const c5k_ctx *ctx, const c5k_cuda_dev *dev)
{
  return dev->matmul == 2 && !ctx->exact;
}

static bool la_gemm(const c5k_ctx *ctx, const c5k_cuda_dev *dev, const la_shape &a, long batch)
{
  /* bf16 rows of 16-byte multiples for cuBLASLt; a score row in a warp's registers (lg_load) */
  return la_tc(ctx, dev) && a.dh % 8 == 0 && a.lw <= 32 * LG_MAXNR &&
         (batch * a.H * (a.W + a.lb + a.lf) + a.lb + 1 + a.lf) * a.w < (1L << 31);   /* 32-bit slot arithmetic */
}

struct lg_plan {
  long nw, nb;   /* window slots a head, slots in all (b H nw) */
  long L, lwp;   /* key blocks a window; a score row's stride */
  long cb;       /* windows a chunk (>= L: a chunk's carried key slots never overlap its first ones) */
  size_t q, k, v, dout, o, dk, dv, s, dp, p, ds, bytes;
};

/* The device scratch of one chunk of cb windows: its queries' rows (q, dout, O or dq: cb windows) and keys'
   (k, v, dk, dv: cb + L - 1 windows, the last window's B view reaching L - 1 slots past it), and its scores. At
   one padded copy of the whole sequence a tensor (the first version) the scratch was 11 GB at n = 1M. */
static lg_plan lg_plan_of(const la_shape &a, long batch, bool backward)
{
  lg_plan p;
  p.nw = a.W + a.lb + a.lf;
  p.nb = batch * a.H * p.nw;
  p.L = a.lb + 1 + a.lf;
  p.lwp = (a.lw + 7) & ~7L;
  /* bytes a window: scores (S, P; dP, dS) and rows (q, k, v, O; dout, dk, dv) */
  const size_t rows = backward ? 2 * 4 + 4 * 3 : 2 * 3 + 4, per = (size_t)a.w * (p.lwp * (backward ? 12 : 6) +
                                                                                   (size_t)a.dh * rows);
  long cb = (long)(LG_BUDGET / per);
  cb = cb < p.L ? p.L : cb;
  p.cb = cb < p.nb ? cb : p.nb;
  const size_t wq = (size_t)p.cb * a.w * a.dh, wk = (size_t)(p.cb + p.L - 1) * a.w * a.dh,
               sc = (size_t)p.cb * a.w * p.lwp;
  size_t o = 0;
  p.q = o; o = c5k_up256(o + wq * 2);
  p.k = o; o = c5k_up256(o + wk * 2);
  p.v = o; o = c5k_up256(o + wk * 2);
  p.dout = o; o = backward ? c5k_up256(o + wq * 2) : o;
  p.o = o; o = c5k_up256(o + wq * 4);   /* the forward's O, the backward's dq */
  p.dk = o; o = backward ? c5k_up256(o + wk * 4) : o;
  p.dv = o; o = backward ? c5k_up256(o + wk * 4) : o;
  p.s = o; o = c5k_up256(o + sc * 4);
  p.dp = o; o = backward ? c5k_up256(o + sc * 4) : o;
  p.p = o; o = c5k_up256(o + sc * 2);
  p.ds = o; o = backward ? c5k_up256(o + sc * 2) : o;
  p.bytes = o;
  return p;
}

/* Padded slot j (of nb) row r: its (b, h) and token t, and whether t is a real token of a real window: window
   i = slot j's index within its head minus shift (keys and values sit lb slots after their queries). 32-bit
   divisions (la_gemm: nb w < 2^31): the row kernels' 64-bit ones cost as much as a row's 384 slots. */
struct lg_slot { long b, t, i; int h; bool real; };

static __device__ __forceinline__ lg_slot lg_slot_of(const la_shape &a, long nw, long nb, long j, long r, long shift)
{
  lg_slot s;
  const unsigned ju = (unsigned)j, bh = ju / (unsigned)nw, b = bh / (unsigned)a.H;
  s.b = b;
  s.h = (int)(bh - b * (unsigned)a.H);
  s.i = (long)(ju - bh * (unsigned)nw) - shift;
  s.t = s.i * a.w + r;
  s.real = j < nb && s.i >= 0 && s.i < a.W && s.t < a.n;
  return s;
}

/* A row kernel's warp: row of the chunk (false past rows), its slot and token. */
static __device__ __forceinline__ bool lg_score_row(const la_shape &a, long nw, long nb, long j0, long rows,
                                                    long *row, lg_slot *s)
{
  *row = (blockIdx.x * (long)blockDim.x + threadIdx.x) >> 5;
  if (*row >= rows) return false;
  const unsigned jw = (unsigned)*row / (unsigned)a.w;
  *s = lg_slot_of(a, nw, nb, j0 + jw, *row - (long)jw * a.w, 0);
  return true;
}

/* The copies between the dense layout and a chunk's padded rows: a thread moves 4 consecutive columns of a row
   (16-byte f32 loads or stores where the dense side allows them, 8 bytes of bf16), a block LG_THREADS / (dh / 4)
   rows, a row's slot and token from 32-bit divisions. A warp a row with one element a lane (4-byte loads) moved
   1.1 TB/s on an H200; one thread an element with 64-bit divisions, 0.7 TB/s. */
struct lg_quad { long row; int d; bool on; };

static __device__ __forceinline__ lg_quad lg_quad_of(int dh, long rows)
{
  const unsigned tpr = (unsigned)dh / 4, rpb = LG_THREADS / tpr, r = threadIdx.x / tpr;
  lg_quad q;
  q.d = 4 * (int)(threadIdx.x - r * tpr);
  q.row = (long)blockIdx.x * rpb + r;
  q.on = r < rpb && q.row < rows;
  return q;
}

static unsigned lg_qblocks(int dh, long rows)
{
  const long rpb = LG_THREADS / (dh / 4);
  return (unsigned)((rows + rpb - 1) / rpb);
}

/* Row lr of a chunk's padded rows from slot j0 (keys, values: shift lb): its slot and token. */
static __device__ __forceinline__ lg_slot lg_chunk_row(const la_shape &a, long nw, long nb, long j0, long lr,
                                                       long shift)
{
  const unsigned jj = (unsigned)lr / (unsigned)a.w;
  return lg_slot_of(a, nw, nb, j0 + jj, lr - (long)jj * a.w, shift);
}

/* Whether the dense side (x, row stride ld) takes float4 at every row's column 4 j: 16-byte aligned rows. */
static bool lg_vec(const void *x, long ld)
{
  return (uintptr_t)x % 16 == 0 && ld % 4 == 0;
}

static __device__ __forceinline__ float4 lg_ld4(const float *p, bool vec)
{
  return vec ? *(const float4 *)p : make_float4(p[0], p[1], p[2], p[3]);
}

static __device__ __forceinline__ void lg_st4(float *p, float4 v, bool vec)
{
  if (vec) *(float4 *)p = v;
  else {
    p[0] = v.x;
    p[1] = v.y;
    p[2] = v.z;
    p[3] = v.w;
  }
}

/* Rounded to bf16 (nearest even, as __float2bfloat16_rn), at an 8-byte aligned p (dh % 4 == 0). */
static __device__ __forceinline__ void lg_st4(__nv_bfloat16 *p, float4 v)
{
  __nv_bfloat162 *q = (__nv_bfloat162 *)p;
  q[0] = __floats2bfloat162_rn(v.x, v.y);
  q[1] = __floats2bfloat162_rn(v.z, v.w);
}

static __device__ __forceinline__ long lg_dense(const la_shape &a, const lg_slot &s, long ld)
{
  return (s.b * a.n + s.t) * ld + (long)s.h * a.dh;
}

/* rows padded rows from slot j0 (window i at slot i + shift) in bf16 from x (f32, row stride ld), zeros where no
   real token is; with uni, a uniform row's values times wuni (the backward's dout). */
__global__ void __launch_bounds__(LG_THREADS) lg_pack(la_shape a, long nw, long nb, long j0, long rows, long shift,
                                                      const float *x, long ld, bool vec, const uint8_t *uni,
                                                      float wuni, __nv_bfloat16 *y)
{
  const lg_quad q = lg_quad_of(a.dh, rows);
  if (!q.on) return;
  const lg_slot s = lg_chunk_row(a, nw, nb, j0, q.row, shift);
  float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
  if (s.real) {
    v = lg_ld4(x + lg_dense(a, s, ld) + q.d, vec);
    if (uni && uni[(s.b * a.H + s.h) * a.n + s.t]) {
      v.x *= wuni;
      v.y *= wuni;
      v.z *= wuni;
      v.w *= wuni;
    }
  }
  lg_st4(y + q.row * a.dh + q.d, v);
}

/* rows padded f32 rows X from slot j0 (window i at slot i + shift) into y's layout (row stride ld): the real
   tokens'. */
__global__ void __launch_bounds__(LG_THREADS) lg_unpack(la_shape a, long nw, long nb, long j0, long rows, long shift,
                                                        const float *X, float *y, long ld, bool vec)
{
  const lg_quad q = lg_quad_of(a.dh, rows);
  if (!q.on) return;
  const lg_slot s = lg_chunk_row(a, nw, nb, j0, q.row, shift);
  if (s.real) lg_st4(y + lg_dense(a, s, ld) + q.d, *(const float4 *)(X + q.row * a.dh + q.d), vec);
}

/* o = O / sum, or on a uniform row O / (L w) plus its out-of-range slots' part (la_fwd_inv), for rows padded
   query rows from slot j0. */
__global__ void __launch_bounds__(LG_THREADS) lg_out(la_shape a, long nw, long nb, long j0, long rows,
                                                     const float *O, const double *rinv, const uint8_t *uni, float *o,
                                                     bool vec)
{
  const lg_quad q = lg_quad_of(a.dh, rows);
  if (!q.on) return;
  const lg_slot s = lg_chunk_row(a, nw, nb, j0, q.row, 0);
  if (!s.real) return;
  const long st = (s.b * a.H + s.h) * a.n + s.t;
  const bool u = uni[st];
  const double inv = u ? 1.0 / (double)a.lw : rinv[st];
  double add = 0.0;
  if (u) {
    const la_win g = la_geom(a, s.i);
    add = g.npad ? -(double)g.npad / (double)a.lw : 0.0;
  }
  float4 x = *(const float4 *)(O + q.row * a.dh + q.d);
  if (u) {
    x.x = (float)(x.x * inv + add);
    x.y = (float)(x.y * inv + add);
    x.z = (float)(x.z * inv + add);
    x.w = (float)(x.w * inv + add);
  } else {
    x.x = (float)(x.x * inv);
    x.y = (float)(x.y * inv);
    x.z = (float)(x.z * inv);
    x.w = (float)(x.w * inv);
  }
  lg_st4(o + lg_dense(a, s, a.ldo) + q.d, x, vec);
}

/* A score row's slots in registers, lane l holding slots l + 32 u for u < NR (NR 32 >= L w; past L w: 0),
   loaded before any is used: at one dependent load a slot the row kernels waited on memory. */
template <int NR>
static __device__ __forceinline__ void lg_load(const float *r, long lw, int lane, float (&x)[NR])
{
#pragma unroll
  for (int u = 0; u < NR; u++) {
    const long c = lane + 32L * u;
    x[u] = c < lw ? r[c] : 0.f;
  }
}

/* One warp a score row of a chunk (the chunk's first window slot j0, rows = its windows times w; S and P rows of
   stride lwp): the row's masks, max (pad keys 0), weights exp(scale s - max) in f32 summed in double (lane order
   fixed, butterflies) and stats, as the SIMT forward; P in bf16 (a uniform row: 1 on its window's real keys).
   Rows of no real token: P = 0. */
template <int NR>
__global__ void __launch_bounds__(LG_THREADS) lg_rows_forward(la_shape a, long nw, long nb, long lwp, long j0,
                                                              long rows, const float *S, const uint8_t *mask,
                                                              __nv_bfloat16 *P, double *rmax, double *rinv,
                                                              uint8_t *uni)
{
  const int lane = threadIdx.x & 31;
  long row;
  lg_slot s;
  if (!lg_score_row(a, nw, nb, j0, rows, &row, &s)) return;   /* warp-uniform: the shuffles below have every lane */
  __nv_bfloat16 *pr = P + row * lwp;
  if (!s.real) {
    for (long c = lane; c < a.lw; c += 32) pr[c] = __float2bfloat16_rn(0.f);
    return;
  }
  float x[NR];
  lg_load(S + row * lwp, a.lw, lane, x);
  const long i = s.i, p0 = (i - a.lb) * a.w + lane;   /* lane's slot u is key p0 + 32 u */
  const uint8_t *mk = mask ? mask + s.b * a.n : NULL;
  const la_win g = la_geom(a, i);
  const la_row rg = la_range(a, g, s.t, mask != NULL);
  const float scale = (float)a.scale;
  /* A slot's arithmetic in f32, the sum in double: the max of f32 scores is one of them, and scale s - max,
     which the SIMT helpers form in double and round, is the f32 difference, so P and the stats keep their
     bits; the helpers' f32 <-> f64 conversions (four a slot) made this kernel instruction-bound. */
  float mf = rg.nzero > 0 ? 0.f : -INFINITY;   /* unmasked pad keys score 0 */
  bool any = lane == 0 && rg.nzero > 0;
#pragma unroll
  for (int u = 0; u < NR; u++)
    if (lane + 32L * u < a.lw && la_keep(rg, mk, p0 + 32L * u)) {
      mf = fmaxf(mf, scale * x[u]);
      any = true;
    }
  for (int o = 1; o < 32; o <<= 1) mf = fmaxf(mf, __shfl_xor_sync(0xffffffffu, mf, o));
  const bool uf = !__any_sync(0xffffffffu, any);
  double sum = 0;
#pragma unroll
  for (int u = 0; u < NR; u++) {
    const long c = lane + 32L * u, p = p0 + 32L * u;
    if (c >= a.lw) continue;
    float e = 0.f;
    if (uf) e = p >= g.kb && p < g.ke ? 1.f : 0.f;
    else if (la_keep(rg, mk, p)) {
      e = expf(scale * x[u] - mf);
      sum += e;
    }
    pr[c] = __float2bfloat16_rn(e);
  }
  sum = la_sumn<32>(sum);
  const double mx = mf;
  double add;
  const double inv = la_fwd_inv(a, g, rg, uf, mx, sum, &add);
  if (lane == 0) la_put_stats(a, s.b, s.h, s.t, uf, mx, inv, rmax, rinv, uni);
}

/* One warp a row, as lg_rows_forward: P from the stats (a uniform row: 1 on its window's real keys, dS 0),
   D = sum P dP in double, dS = P (dP - D); P and dS in bf16. */
template <int NR>
__global__ void __launch_bounds__(LG_THREADS) lg_rows_backward(la_shape a, long nw, long nb, long lwp, long j0,
                                                               long rows, const float *S, const float *dP,
                                                               const uint8_t *mask, const double *rmax,
                                                               const double *rinv, const uint8_t *uni,
                                                               __nv_bfloat16 *P, __nv_bfloat16 *dS)
{
  const int lane = threadIdx.x & 31;
  long row;
  lg_slot s;
  if (!lg_score_row(a, nw, nb, j0, rows, &row, &s)) return;   /* warp-uniform: the shuffles below have every lane */
  __nv_bfloat16 *pr = P + row * lwp, *qr = dS + row * lwp;
  const long st = (s.b * a.H + s.h) * a.n + s.t, i = s.i, p0 = (i - a.lb) * a.w;
  if (!s.real || uni[st]) {
    const la_win g = la_geom(a, s.real ? i : 0);
    for (long c = lane; c < a.lw; c += 32) {
      pr[c] = __float2bfloat16_rn(s.real && p0 + c >= g.kb && p0 + c < g.ke ? 1.f : 0.f);
      qr[c] = __float2bfloat16_rn(0.f);
    }
    return;
  }
  float x[NR], y[NR];
  lg_load(S + row * lwp, a.lw, lane, x);
  lg_load(dP + row * lwp, a.lw, lane, y);
  const uint8_t *mk = mask ? mask + s.b * a.n : NULL;
  const la_row rg = la_range(a, la_geom(a, i), s.t, mask != NULL);
  const float scale = (float)a.scale;
  /* as the forward: f32 a slot where that keeps P's bits (s - max), double for P's scaling and D */
  const float mf = (float)rmax[st];   /* the forward's f32 max, exact */
  const double inv = rinv[st];
  double D = 0;
#pragma unroll
  for (int u = 0; u < NR; u++) {
    const long c = lane + 32L * u;
    x[u] = c < a.lw && la_keep(rg, mk, p0 + c) ? (float)((double)expf(scale * x[u] - mf) * inv) : 0.f;   /* P */
    D += (double)x[u] * y[u];
  }
  D = la_sumn<32>(D);
  const float Df = (float)D;   /* dS = P (dP - D) in f32: bf16 keeps 8 of its bits */
#pragma unroll
  for (int u = 0; u < NR; u++) {
    const long c = lane + 32L * u;
    if (c < a.lw) {
      pr[c] = __float2bfloat16_rn(x[u]);
      qr[c] = __float2bfloat16_rn(x[u] != 0.f ? x[u] * (y[u] - Df) : 0.f);   /* masked: 0 whatever dP holds */
    }
  }
}

static unsigned lg_row_blocks(long rows) { return (unsigned)((rows * 32 + LG_THREADS - 1) / LG_THREADS); }

/* launch(std::integral_constant<int, NR>()) with the least NR of 2, 4, .. LG_MAXNR whose 32 NR slots hold a
   score row of lw (la_gemm: lw <= 32 LG_MAXNR). */
template <typename F> static void lg_rows(long lw, F launch)
{
  if (lw <= 64) launch(std::integral_constant<int, 2>());
  else if (lw <= 128) launch(std::integral_constant<int, 4>());
  else if (lw <= 256) launch(std::integral_constant<int, 8>());
  else if (lw <= 512) launch(std::integral_constant<int, 16>());
  else if (lw <= 1024) launch(std::integral_constant<int, 32>());
  else launch(std::integral_constant<int, LG_MAXNR>());
}

/* A chunk's padded rows: x's rows of slots j0 .. j0 + wins - 1 (window i at slot i + shift) into y. */
static void lg_pack_rows(c5k_cuda_dev *dev, const la_shape &a, const lg_plan &p, long j0, long wins, long shift,
                         const float *x, long ld, const uint8_t *uni, float wuni, __nv_bfloat16 *y)
{
  const long rows = wins * a.w;
  lg_pack<<<lg_qblocks(a.dh, rows), LG_THREADS, 0, dev->stream>>>(a, p.nw, p.nb, j0, rows, shift, x, ld,
                                                                   lg_vec(x, ld), uni, wuni, y);
}

static void lg_unpack_rows(c5k_cuda_dev *dev, const la_shape &a, const lg_plan &p, long j0, long wins, long shift,
                           const float *X, float *y, long ld)
{
  const long rows = wins * a.w;
  lg_unpack<<<lg_qblocks(a.dh, rows), LG_THREADS, 0, dev->stream>>>(a, p.nw, p.nb, j0, rows, shift, X, y, ld,
                                                                     lg_vec(y, ld));
}

/* The chunk of cb windows from slot j0: q's rows and k's, v's (cb + L - 1 windows) in bf16. */
static void lg_pack_chunk(c5k_cuda_dev *dev, const la_shape &a, const lg_plan &p, long j0, long cb, const float *q,
                          const float *k, const float *v, __nv_bfloat16 *Q, __nv_bfloat16 *K, __nv_bfloat16 *V)
{
  lg_pack_rows(dev, a, p, j0, cb, 0, q, a.ldqkv, NULL, 0.f, Q);
  lg_pack_rows(dev, a, p, j0, cb + p.L - 1, a.lb, k, a.ldqkv, NULL, 0.f, K);
  lg_pack_rows(dev, a, p, j0, cb + p.L - 1, a.lb, v, a.ldqkv, NULL, 0.f, V);
}

static c5_status lg_forward(c5k_ctx *ctx, c5k_cuda_dev *dev, const c5k_local_attn *L, const la_shape &a,
                            const float *q, const float *k, const float *v, const uint8_t *mask, float *o,
                            double *rmax, double *rinv, uint8_t *uni)
{
  const char *op = "local_attn_forward";
  const lg_plan p = lg_plan_of(a, L->batch, false);
  void *vs;
  C5_CALL_K(c5k_cuda_scratch(dev, p.bytes, &vs, op));
  char *scr = (char *)vs;
  __nv_bfloat16 *Q = (__nv_bfloat16 *)(scr + p.q), *K = (__nv_bfloat16 *)(scr + p.k),
                *V = (__nv_bfloat16 *)(scr + p.v), *P = (__nv_bfloat16 *)(scr + p.p);
  float *S = (float *)(scr + p.s), *O = (float *)(scr + p.o);
  const long ws = a.w * a.dh, ss = a.w * p.lwp;
  for (long j0 = 0; j0 < p.nb; j0 += p.cb) {
    const long cb = p.nb - j0 < p.cb ? p.nb - j0 : p.cb, rows = cb * a.w;
    lg_pack_chunk(dev, a, p, j0, cb, q, k, v, Q, K, V);
    C5K_CUDA_LAUNCHED(op);
    C5_CALL_K(c5k_gemm_bf16(ctx, 0, 1, a.w, a.lw, a.dh, 1.0, Q, a.dh, ws, K, a.dh, ws, 0.0, S, p.lwp, ss, cb));
    lg_rows(a.lw, [&](auto nr) {
      lg_rows_forward<decltype(nr)::value><<<lg_row_blocks(rows), LG_THREADS, 0, dev->stream>>>(
          a, p.nw, p.nb, p.lwp, j0, rows, S, mask, P, rmax, rinv, uni);
    });
    C5K_CUDA_LAUNCHED(op);
    C5_CALL_K(c5k_gemm_bf16(ctx, 0, 0, a.w, a.dh, a.lw, 1.0, P, p.lwp, ss, V, a.dh, ws, 0.0, O, a.dh, ws, cb));
    lg_out<<<lg_qblocks(a.dh, rows), LG_THREADS, 0, dev->stream>>>(a, p.nw, p.nb, j0, rows, O, rinv, uni, o,
                                                                     lg_vec(o, a.ldo));
    C5K_CUDA_LAUNCHED(op);
  }
  return C5_OK;
}

/* dk, dv by key slot: slot s takes the key blocks of windows s - L + 1 .. s, so after a chunk [j0, j0 + cb) its
   first cb slots are whole (unpacked), and its last L - 1 (partial: the next chunk adds to them) move to the
   front of the buffers for the next chunk, the rest zeroed. */
static c5_status lg_backward(c5k_ctx *ctx, c5k_cuda_dev *dev, const c5k_local_attn *L, const la_shape &a,
                             const float *q, const float *k, const float *v, const uint8_t *mask, const double *rmax,
                             const double *rinv, const uint8_t *uni, const float *dout, float *dq, float *dk,
                             float *dv)
{
  const char *op = "local_attn_backward";
  const lg_plan p = lg_plan_of(a, L->batch, true);
  void *vs;
  C5_CALL_K(c5k_cuda_scratch(dev, p.bytes, &vs, op));
  char *scr = (char *)vs;
  __nv_bfloat16 *Q = (__nv_bfloat16 *)(scr + p.q), *K = (__nv_bfloat16 *)(scr + p.k),
                *V = (__nv_bfloat16 *)(scr + p.v), *dO = (__nv_bfloat16 *)(scr + p.dout);
  __nv_bfloat16 *P = (__nv_bfloat16 *)(scr + p.p), *dS = (__nv_bfloat16 *)(scr + p.ds);
  float *S = (float *)(scr + p.s), *dP = (float *)(scr + p.dp), *DQ = (float *)(scr + p.o);
  float *DK = (float *)(scr + p.dk), *DV = (float *)(scr + p.dv);
  const long ws = a.w * a.dh, ss = a.w * p.lwp, carry = (p.L - 1) * ws;
  const size_t kbytes = (size_t)(p.cb + p.L - 1) * ws * sizeof(float);
  C5K_CUDA_TRY(cudaMemsetAsync(DK, 0, kbytes, dev->stream), op);
  C5K_CUDA_TRY(cudaMemsetAsync(DV, 0, kbytes, dev->stream), op);
  for (long j0 = 0; j0 < p.nb; j0 += p.cb) {
    const long cb = p.nb - j0 < p.cb ? p.nb - j0 : p.cb, rows = cb * a.w;
    lg_pack_chunk(dev, a, p, j0, cb, q, k, v, Q, K, V);
    lg_pack_rows(dev, a, p, j0, cb, 0, dout, a.ldo, uni, (float)(1.0 / (double)a.lw), dO);
    C5K_CUDA_LAUNCHED(op);
    C5_CALL_K(c5k_gemm_bf16(ctx, 0, 1, a.w, a.lw, a.dh, 1.0, Q, a.dh, ws, K, a.dh, ws, 0.0, S, p.lwp, ss, cb));
    C5_CALL_K(c5k_gemm_bf16(ctx, 0, 1, a.w, a.lw, a.dh, 1.0, dO, a.dh, ws, V, a.dh, ws, 0.0, dP, p.lwp, ss, cb));
    lg_rows(a.lw, [&](auto nr) {
      lg_rows_backward<decltype(nr)::value><<<lg_row_blocks(rows), LG_THREADS, 0, dev->stream>>>(
          a, p.nw, p.nb, p.lwp, j0, rows, S, dP, mask, rmax, rinv, uni, P, dS);
    });
    C5K_CUDA_LAUNCHED(op);
    C5_CALL_K(c5k_gemm_bf16(ctx, 0, 0, a.w, a.dh, a.lw, a.scale, dS, p.lwp, ss, K, a.dh, ws, 0.0, DQ, a.dh, ws, cb));
    lg_unpack_rows(dev, a, p, j0, cb, 0, DQ, dq, a.ldo);
    for (long jb = 0; jb < p.L; jb++) {   /* key block jb of the chunk's window jj is its key slot jj + jb */
      C5_CALL_K(c5k_gemm_bf16(ctx, 1, 0, a.w, a.dh, a.w, 1.0, P + jb * a.w, p.lwp, ss, dO, a.dh, ws, 1.0, DV + jb * ws,
                        a.dh, ws, cb));
      C5_CALL_K(c5k_gemm_bf16(ctx, 1, 0, a.w, a.dh, a.w, a.scale, dS + jb * a.w, p.lwp, ss, Q, a.dh, ws, 1.0,
                        DK + jb * ws, a.dh, ws, cb));
    }
    lg_unpack_rows(dev, a, p, j0, cb, a.lb, DK, dk, a.lddkv);
    lg_unpack_rows(dev, a, p, j0, cb, a.lb, DV, dv, a.lddkv);
    C5K_CUDA_LAUNCHED(op);
    if (j0 + cb < p.nb && p.L > 1) {   /* a next chunk: cb = p.cb >= L, so the moved slots do not overlap */
      const size_t cbytes = (size_t)carry * sizeof(float), zbytes = (size_t)cb * ws * sizeof(float);
      C5K_CUDA_TRY(cudaMemcpyAsync(DK, DK + cb * ws, cbytes, cudaMemcpyDeviceToDevice, dev->stream), op);
      C5K_CUDA_TRY(cudaMemcpyAsync(DV, DV + cb * ws, cbytes, cudaMemcpyDeviceToDevice, dev->stream), op);
      C5K_CUDA_TRY(cudaMemsetAsync(DK + carry, 0, zbytes, dev->stream), op);
      C5K_CUDA_TRY(cudaMemsetAsync(DV + carry, 0, zbytes, dev->stream), op);
    } else if (j0 + cb < p.nb) {
      C5K_CUDA_TRY(cudaMemsetAsync(DK, 0, (size_t)cb * ws * sizeof(float), dev->stream), op);
      C5K_CUDA_TRY(cudaMemsetAsync(DV, 0, (size_t)cb * ws * sizeof(float), dev->stream), op);
    }
  }
  return C5_OK;
}

/* ---- bf16 mode, dim_head 64 or 128, windows of 64 k tokens: flash kernels ----
   FlashAttention-2 on the tensor cores in place of lg_forward's packing,
   score chunks and row kernels (which at n = 131072, w 128, 8 heads of 64
   moved each chunk's f32 scores and bf16 P through device memory). One CTA
   (LF_THREADS = 4 warps) a (64 query rows, head, batch), the query tile
   fastest (the CTAs of one window's keys run together and share them in
   L2). A tile lies in one window i (w % 64 == 0): its key slots are the
   window's L w, in key blocks of 64 ascending over the ones in [0, W w)
   (g.kb .. g.pe); every block is wholly real keys, pad keys (n <= p < W
   w: rows zero-filled, so k = v = 0 and their score is exactly 0, the
   lg path's and the reference's pad) or a mix at n. The tensors in
   device memory are T (one kernel body for each, lf_io): f32, or bf16
   where local_attn_bf16 says so (L->bf16: dim_head 64, the module keeps
   q, k, v, o, dout, dq, dk, dv in bf16, halving their traffic). f32 rows
   are rounded to bf16 (nearest even) as they are staged in shared memory
   (no bf16 copy in device memory; the lg path's scratch is not used);
   bf16 rows arrive unchanged, so bf16 inputs holding the values of f32
   ones give the same bits, and the outputs are the f32 path's rounded to
   bf16 (nearest even). The key blocks are double buffered (lf_db): while
   one is worked on, the next one's rows travel by cp.async (lf_stage;
   plain loads where rows are not whole 16 bytes apart and aligned),
   f32 into a staging area converted to the bf16 tile at the top of the
   next iteration (lf_cvt), bf16 straight into the second of two bf16
   tiles (less shared memory: 36 KiB, not 50, for lf_forward<64>), so the
   loads' latency hides behind the products (before, each block's loads
   waited in full: ~43 TFLOP/s at n = 131072 on an H200); the first block
   is staged while Q loads. Warp w owns query rows 16 w .. 16 w + 15; per
   block
     S = Q K^T (mma.m16n8k16 bf16 -> f32, c5k_mma_abt), x = scale S in f32
       as lg_rows_forward forms it, or -inf for a slot the row does not keep
       (la_range, la_keep; pad slots kept while unmasked: [max(lo, n),
       + nzero); no per-slot test where the warp's rows keep the whole
       block, lf_full),
     online softmax per row: m the running max of x (lg_rows_forward's f32
       max, so rmax keeps its meaning), l each thread's part of the running
       sum of p = 2^(x log2 e - m log2 e) (lf_exp), O and l rescaled when m
       grows,
     O += P V (p rounded to bf16 from S's accumulators, c5k_c2a, c5k_mma_ax).
   A row with no kept slot so far (m = -inf) weighs its window's real keys
   1 (a uniform row's P, lg_rows_forward's): if a later block brings a kept
   slot its rescale factor 2^(-inf) = 0 drops them; a row still at -inf at
   the end is uniform: o = O / (L w) + its out-of-range part, as lg_out. A
   block that no row keeps a slot of is skipped, unless a row is still
   uniform and the block holds real keys. Stats: rmax = m, rinv = 1 / l
   (double), uni, as lg_rows_forward writes them (the backward recomputes P
   from them). Every sum has one fixed order: results repeat bit for bit. */
#define LF_THREADS 128
#define LF_BM 64   /* query rows a CTA, 16 a warp; also slots a key block */

template <int DH> struct lf_geom {
  static constexpr int LD = DH + 8;         /* a shared row in bf16: 16-byte aligned, conflict-free fragment loads */
  static constexpr int TILE = LF_BM * LD;   /* a Q, K or V tile */
  static constexpr int ST = LF_BM * DH;     /* an f32 staging tile (lf_stg) */
  static constexpr int ctas = DH == 64 ? 3 : 2;   /* CTAs an SM: at 4 (128 registers) DH 64 spilled 48 bytes */
};

/* Whether the flash kernels take the op's forward (in la_tc's mode): dim_head 64 or 128, w a multiple of the tile; and
   its backward: dim_head 64 only (128: the lg path; the flash kernels spilled 36 and 158 bytes at 255 registers). */
static bool lf_ok(const la_shape &a)
{
  return (a.dh == 64 || a.dh == 128) && a.w % LF_BM == 0;
}
static bool lf_bwd_ok(const la_shape &a)
{
  return lf_ok(a) && a.dh == 64;
}

/* The flash kernels' tensors in device memory, T: f32 (float) or bf16 (__nv_bfloat16: kernels.h c5k_local_attn.bf16,
   dim_head 64 only). A thread moves 16 bytes at a time, E elements (V): plain loads (ld: one 16-byte load where vec,
   else element by element), into a bf16 tile (put: f32 rounded to bf16, nearest even; bf16 unchanged); f reads one
   element as f32, out rounds an f32 result to T (bf16: nearest even, as __float2bfloat16_rn). */
template <typename T> struct lf_io;
template <> struct lf_io<float> {
  static constexpr int E = 4;
  typedef float4 V;
  static __device__ __forceinline__ V ld(const float *p, bool vec) { return lg_ld4(p, vec); }
  static __device__ __forceinline__ V zero() { return make_float4(0.f, 0.f, 0.f, 0.f); }
  static __device__ __forceinline__ void put(__nv_bfloat16 *t, V x) { lg_st4(t, x); }
  static __device__ __forceinline__ float f(float x) { return x; }
  static __device__ __forceinline__ float out(float x) { return x; }
};
template <> struct lf_io<__nv_bfloat16> {
  static constexpr int E = 8;
  typedef uint4 V;
  static __device__ __forceinline__ unsigned pair(const __nv_bfloat16 *p)
  {
    return (unsigned)__bfloat16_as_ushort(p[0]) | (unsigned)__bfloat16_as_ushort(p[1]) << 16;
  }
  static __device__ __forceinline__ V ld(const __nv_bfloat16 *p, bool vec)
  {
    return vec ? *(const uint4 *)p : make_uint4(pair(p), pair(p + 2), pair(p + 4), pair(p + 6));
  }
  static __device__ __forceinline__ V zero() { return make_uint4(0u, 0u, 0u, 0u); }
  static __device__ __forceinline__ void put(__nv_bfloat16 *t, V x) { *(uint4 *)t = x; }
  static __device__ __forceinline__ float f(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 out(float x) { return __float2bfloat16_rn(x); }
};

/* Whether x's rows (stride ld elements) take 16-byte loads and cp.async at every row's column E j: 16-byte aligned
   rows (f32: lg_vec; bf16: ld % 8 == 0). Otherwise the kernels load element by element, synchronously. */
template <typename T> static bool lf_vec(const T *x, long ld)
{
  return (uintptr_t)x % 16 == 0 && ld % lf_io<T>::E == 0;
}

/* Tile rows [0, LF_BM) <- x's rows (stride ld) in bf16 (f32 rounded), those at or past `rows` zero: 16-byte loads
   where vec, four a thread in flight before their stores (all at once held 32 or 64 registers). */
template <int DH, typename T>
static __device__ __forceinline__ void lf_load(__nv_bfloat16 *tile, const T *x, long ld, long rows, bool vec)
{
  typedef lf_io<T> I;
  constexpr int QPR = DH / I::E, N = LF_BM * QPR / LF_THREADS, U = 4;   /* E-column groups a row; a thread's */
  static_assert(N % U == 0, "lf_load: groups of U");
#pragma unroll 1
  for (int j0 = 0; j0 < N; j0 += U) {
    typename I::V x4[U];
#pragma unroll
    for (int j = 0; j < U; j++) {
      const int c = threadIdx.x + (j0 + j) * LF_THREADS, r = c / QPR, d = I::E * (c % QPR);
      x4[j] = r < rows ? I::ld(x + r * ld + d, vec) : I::zero();
    }
#pragma unroll
    for (int j = 0; j < U; j++) {
      const int c = threadIdx.x + (j0 + j) * LF_THREADS, r = c / QPR, d = I::E * (c % QPR);
      I::put(tile + r * lf_geom<DH>::LD + d, x4[j]);
    }
  }
}

/* The loops' tiles are double buffered (lf_db), staged by cp.async where vec (else plain loads, synchronous) while
   the loop works on the previous tile. f32 input (no bf16 copy of q, k, v, dout in device memory; cp.async needs
   the bytes it copies unchanged): through an f32 staging area (dense [LF_BM][DH]), which lf_cvt rounds to bf16 into
   the tile lf_load would have made (the same bits) at the top of the iteration that works on it; thread c stages
   and converts the same elements: its own cp.async.wait_group orders them, no barrier needed between. (Register
   prefetch of the next f32 tile would hold 64 registers a tile a thread in kernels at 161-239; the staging costs
   shared memory instead: 16 KiB a tile at dim_head 64.) bf16 input: straight into the second of two bf16 tiles,
   which alternate (the same bits as lf_load's; 9 KiB a tile at dim_head 64). */
template <int DH, typename T> struct lf_stg {
  static constexpr bool F32 = std::is_same<T, float>::value;
  static constexpr int PITCH = F32 ? DH : lf_geom<DH>::LD;   /* a staged row's elements */
  static constexpr size_t BYTES = F32 ? (size_t)lf_geom<DH>::ST * 4 : (size_t)lf_geom<DH>::TILE * 2;
  /* lf_forward: K, V, their staging and two blocks' key-mask flags: f32 at dim_head 128, 98 KiB, 2 CTAs an SM (with
     a tile of its own for Q, 115 KiB: one) */
  static constexpr size_t fwd_bytes = (size_t)2 * lf_geom<DH>::TILE * 2 + 2 * BYTES + 2 * LF_BM;
};

/* lf_stage starts copying x's rows [0, LF_BM) into st (rows PITCH apart; rows at or past `rows` zero). */
template <int DH, typename T>
static __device__ __forceinline__ void lf_stage(T *st, const T *x, long ld, long rows, bool vec)
{
  /* thread c's elements: rows r0 + RS j, columns d .. d + E - 1 (lf_load's, with c + LF_THREADS j); a loop, not
     unrolled, stepping one pointer: unrolled, the 8 row offsets were hoisted out of the callers' loops (16
     registers a tile: lf_backward_kv spilled) */
  typedef lf_io<T> I;
  constexpr int QPR = DH / I::E, N = LF_BM * QPR / LF_THREADS, RS = LF_THREADS / QPR, P = lf_stg<DH, T>::PITCH;
  const int r0 = threadIdx.x / QPR, d = I::E * (threadIdx.x % QPR);
  const T *src = x + r0 * ld + d;
  T *dst = st + r0 * P + d;
  if (vec) {
#pragma unroll 1
    for (int j = 0; j < N; j++, src += RS * ld, dst += RS * P) c5k_cp16(dst, src, r0 + RS * j < rows);
  } else {
#pragma unroll 1
    for (int j = 0; j < N; j++, src += RS * ld, dst += RS * P)
      *(typename I::V *)dst = r0 + RS * j < rows ? I::ld(src, false) : I::zero();
  }
}
template <int DH>
static __device__ __forceinline__ void lf_cvt(__nv_bfloat16 *tile, const float *st)
{
  constexpr int QPR = DH / 4, N = LF_BM * QPR / LF_THREADS;
#pragma unroll
  for (int j = 0; j < N; j++) {
    const int c = threadIdx.x + j * LF_THREADS, r = c / QPR, d = 4 * (c % QPR);
    lg_st4(tile + r * lf_geom<DH>::LD + d, *(const float4 *)(st + r * DH + d));
  }
}

/* A double-buffered tile, one of a kernel's pair (K and V; Q and dO) laid out from base as: the pair's bf16 tiles (w:
   base + i TILE, i = 0, 1), then their staging areas (s, lf_stg<DH, T>::BYTES each); end: the first byte after.
   The iteration of parity bf works on tile(bf), after cvt(), and stages the next tile into stage(bf ^ 1). f32: the
   tile is always w, staged in s and rounded into w by cvt; bf16: w at parity 0 and s = w + 2 TILE at 1 (offset, not
   a select between two pointers: lf_backward_q spilled 16 bytes, lf_backward_kv 26), staged where it is worked on,
   cvt nothing. */
template <int DH, typename T> struct lf_db {
  typedef lf_stg<DH, T> S;
  static constexpr int TILE = lf_geom<DH>::TILE;
  __nv_bfloat16 *w;
  unsigned char *s;
  static __device__ __forceinline__ lf_db at(__nv_bfloat16 *base, int i)
  {
    return lf_db{ base + i * TILE, (unsigned char *)(base + 2 * TILE) + i * S::BYTES };
  }
  static __device__ __forceinline__ unsigned char *end(__nv_bfloat16 *base)
  {
    return (unsigned char *)(base + 2 * TILE) + 2 * S::BYTES;
  }
  __device__ __forceinline__ __nv_bfloat16 *tile(int bf) const { return S::F32 ? w : w + bf * 2 * TILE; }
  __device__ __forceinline__ T *stage(int bf) const
  {
    if constexpr (S::F32) return (float *)s;
    else return tile(bf);
  }
  __device__ __forceinline__ void cvt() const
  {
    if constexpr (S::F32) lf_cvt<DH>(w, (const float *)s);
  }
};

/* exp(x - m) as 2^(x log2 e - ml), ml = lf_ml(m) = m log2 e in f32 (hoisted: once a row, not a slot): one FFMA and
   MUFU.EX2 (c5k_ex2) a slot. The forward's weights and the backward's P alike, formed the same way from the same m
   (the backward's rmax, the forward's f32 max): the same bits. x = -inf: 0. (A weight below 2^-126 flushes to 0:
   next to the row max's 1 it adds nothing to the sum.) */
#define LF_LOG2E 1.44269504088896340736f
static __device__ __forceinline__ float lf_ml(float m)
{
  return m * LF_LOG2E;
}
static __device__ __forceinline__ float lf_exp(float x, float ml)
{
  return c5k_ex2(fmaf(x, LF_LOG2E, -ml));
}

/* A query row's kept slots, relative to its window's first slot s0 = (i - lb) w: real keys [lo, rhi) where the key
   mask keeps them, pad keys [plo, phi) (la_range: nzero of them from max(lo, n)). Rows past n keep none. */
struct lf_row { int lo, rhi, plo, phi; };

static __device__ __forceinline__ lf_row lf_row_of(const la_shape &a, const la_win &g, long s0, long t, bool masked)
{
  lf_row r = { 0, 0, 0, 0 };
  if (t >= a.n) return r;
  const la_row rg = la_range(a, g, t, masked);
  const long plo = rg.lo > a.n ? rg.lo : a.n;
  r.lo = (int)(rg.lo - s0);
  r.rhi = (int)(rg.rhi - s0);
  r.plo = (int)(plo - s0);
  r.phi = (int)(plo + rg.nzero - s0);
  return r;
}

/* Slot c (relative to s0) of a row: kept? mkc: the slot is a real key the key mask keeps. (Bitwise: with && and ||
   each slot's test was a branch.) */
static __device__ __forceinline__ bool lf_keeps(const lf_row &r, int c, bool mkc)
{
  return ((c >= r.lo) & (c < r.rhi) & mkc) | ((c >= r.plo) & (c < r.phi));
}

/* Whether the warp's rows (the thread's rw) keep every slot of block c0 (64 slots from c0, relative to s0; mkb its
   flags, lf_flags): real keys inside both rows' ranges, all kept by the key mask. Warp-uniform. */
static __device__ __forceinline__ bool lf_full(const lf_row (&rw)[2], int c0, const uint8_t *mkb)
{
  const int lane = threadIdx.x & 31;
  const bool in = (rw[0].lo <= c0) & (c0 + LF_BM <= rw[0].rhi) & (rw[1].lo <= c0) & (c0 + LF_BM <= rw[1].rhi);
  return __all_sync(0xffffffffu, in & (((const uint16_t *)mkb)[lane] == 0x0101));
}

/* f(std::true_type()) where all (warp-uniform: lf_full), else f(std::false_type()): one body, its per-slot tests
   compiled out of the first */
template <typename F> static __device__ __forceinline__ void lf_all(bool all, F &&f)
{
  if (all) f(std::true_type());
  else f(std::false_type());
}

/* The slots of key block k0 (64 from k0, in [g.kb, g.pe)) that some row of the tile keeps: thread c < 64 sets
   mkf[c] (slot k0 + c is a real key the key mask keeps) and returns whether any row of the tile may keep it: ulo,
   urhi, uphi, the first row's lo and the last's rhi and phi, bound every row's (la_live_keys). */
static __device__ __forceinline__ bool lf_flags(const la_shape &a, long k0, long s0, const uint8_t *mk, int ulo,
                                                int urhi, int uphi, uint8_t *mkf)
{
  const int c = threadIdx.x;
  if (c >= LF_BM) return false;
  const long p = k0 + c;
  const int rc = (int)(p - s0);
  const bool real = p < a.n, keep = real && (!mk || mk[p]);
  mkf[c] = keep;
  return (keep && rc >= ulo && rc < urhi) || (!real && rc < uphi);
}

/* The first key block from slot c (relative to s0, ascending by LF_BM, below pe) the loop stages: one that some row
   of the tile keeps a slot of (lf_flags; *f = true, mkf its flags) or, when mayu (a row may end uniform), any block
   with real keys (below ke). pe when none. Block-uniform: each candidate's __syncthreads_or is also the barrier for
   mkf. (Slots relative to s0 in int: with absolute longs lf_forward<64> spilled at its 168 registers.) */
static __device__ __forceinline__ int lf_seek(const la_shape &a, int c, int pe, int ke, long s0, const uint8_t *mk,
                                              int ulo, int urhi, int uphi, bool mayu, uint8_t *mkf, bool *f)
{
  for (; c < pe; c += LF_BM) {
    *f = __syncthreads_or(lf_flags(a, s0 + c, s0, mk, ulo, urhi, uphi, mkf));
    if (*f || (mayu && c < ke)) break;
  }
  return c;
}

/* Blocks: x = query tile (64 rows of the sequence, within one window), y = head, z = batch. */
template <int DH, typename T>
__global__ void __launch_bounds__(LF_THREADS, lf_geom<DH>::ctas)
lf_forward(la_shape a, const T *q, const T *k, const T *v, bool vec, const uint8_t *mask, T *o, double *rmax,
           double *rinv, uint8_t *uni)
{
  typedef lf_geom<DH> G;
  constexpr int NT = LF_BM / 8, KS = DH / 16, ON = DH / 8;   /* S's n8 tiles; Q's k16 steps; O's n8 tiles */
  extern __shared__ __align__(16) unsigned char lf_smem[];
  typedef lf_db<DH, T> B;
  __nv_bfloat16 *base = (__nv_bfloat16 *)lf_smem;
  const B K = B::at(base, 0), V = B::at(base, 1);
  __nv_bfloat16 *Qs = K.tile(1);   /* Q: read into qf before the loop; not where the first block stages */
  uint8_t *mkf = B::end(base);     /* [2][LF_BM]: the block in work's flags and the next one's */
  const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
  const int h = blockIdx.y;
  const long b = blockIdx.z, row0 = b * a.n, q0 = (long)blockIdx.x * LF_BM;
  const long mq = a.n - q0 < LF_BM ? a.n - q0 : LF_BM, i = q0 / a.w, s0 = (i - a.lb) * a.w;
  const uint8_t *mk = mask ? mask + row0 : NULL;
  const la_win g = la_geom(a, i);
  const long t0 = q0 + 16 * wp + gq;   /* the thread's rows: tokens t0 (fragment row g) and t0 + 8 */
  const lf_row rw[2] = { lf_row_of(a, g, s0, t0, mask != NULL), lf_row_of(a, g, s0, t0 + 8, mask != NULL) };
  int ulo, urhi, uphi;   /* the tile's kept slots lie in [ulo, urhi) (real keys) and [.., uphi) (pad keys) */
  {
    const lf_row first = lf_row_of(a, g, s0, q0, mask != NULL), last = lf_row_of(a, g, s0, q0 + mq - 1, mask != NULL);
    ulo = first.lo;
    urhi = last.rhi;
    uphi = last.phi;
  }
  const float scale = (float)a.scale;
  /* a row keeps its own token's slot unless the key mask drops it: only such rows may end uniform */
  const bool mayu0 = t0 < a.n && mk && !mk[t0], mayu1 = t0 + 8 < a.n && mk && !mk[t0 + 8];

  /* the key blocks some row keeps a slot of, or (while a row that may end uniform has no kept slot yet) any with
     real keys: the next one staged (lf_seek with mayu: a superset) while this one is worked on; the first one
     while Q loads */
  const bool mayu = __syncthreads_or(mayu0 || mayu1);
  bool f;
  const int pe = (int)(g.pe - s0), ke = (int)(g.ke - s0);   /* slots relative to s0 */
  const T *kh = k + (row0 + s0) * a.ldqkv + (long)h * DH, *vh = v + (row0 + s0) * a.ldqkv + (long)h * DH;
  int cn = lf_seek(a, (int)(g.kb - s0), pe, ke, s0, mk, ulo, urhi, uphi, mayu, mkf, &f);
  if (cn < pe) {
    lf_stage<DH>(K.stage(0), kh + cn * a.ldqkv, a.ldqkv, a.n - s0 - cn, vec);
    lf_stage<DH>(V.stage(0), vh + cn * a.ldqkv, a.ldqkv, a.n - s0 - cn, vec);
    c5k_cp_commit();
  }
  lf_load<DH>(Qs, q + (row0 + q0) * a.ldqkv + (long)h * DH, a.ldqkv, mq, vec);
  __syncthreads();
  uint32_t qf[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; kk++) c5k_frag_a(qf[kk], Qs + 16 * wp * G::LD + 16 * kk, G::LD);

  float m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.f, 0.f }, acc[ON][4];
#pragma unroll
  for (int n = 0; n < ON; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  for (int bf = 0; cn < pe; bf ^= 1) {
    const int c0 = cn;   /* the block's first slot relative to s0 */
    const bool fk = f;
    const uint8_t *mkb = mkf + LF_BM * bf;
    c5k_cp_wait<0>();
    __syncthreads();   /* the previous block's work on its tiles (or qf's reads of Q) is done */
    K.cvt();
    V.cvt();
    __syncthreads();
    const __nv_bfloat16 *Ks = K.tile(bf), *Vs = V.tile(bf);
    cn = lf_seek(a, c0 + LF_BM, pe, ke, s0, mk, ulo, urhi, uphi, mayu, mkf + LF_BM * (bf ^ 1), &f);
    if (cn < pe) {
      lf_stage<DH>(K.stage(bf ^ 1), kh + cn * a.ldqkv, a.ldqkv, a.n - s0 - cn, vec);
      lf_stage<DH>(V.stage(bf ^ 1), vh + cn * a.ldqkv, a.ldqkv, a.n - s0 - cn, vec);
      c5k_cp_commit();
    }
    /* a row that may end uniform and has no kept slot yet needs every block with real keys (block-uniform) */
    const bool pend = (mayu0 && m[0] == -INFINITY) || (mayu1 && m[1] == -INFINITY);
    if (!fk && !(c0 < ke && __syncthreads_or(pend))) continue;
    float s[NT][4];
    c5k_mma_abt<NT, KS>(s, qf, Ks, G::LD);
    float mx[2] = { -INFINITY, -INFINITY };
    lf_all(lf_full(rw, c0, mkb), [&](auto all) {   /* a block inside the warp's rows' windows: no per-slot test */
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int c = 8 * n + 2 * tq + (e & 1), ri = e >> 1;
          s[n][e] = decltype(all)::value || lf_keeps(rw[ri], c0 + c, mkb[c]) ? scale * s[n][e] : -INFINITY;
          mx[ri] = fmaxf(mx[ri], s[n][e]);
        }
    });
    float mu[2];
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {   /* a row's 64 columns lie in the 4 lanes of a quad */
      mx[ri] = fmaxf(mx[ri], __shfl_xor_sync(0xffffffffu, mx[ri], 1));
      mx[ri] = fmaxf(mx[ri], __shfl_xor_sync(0xffffffffu, mx[ri], 2));
      mu[ri] = fmaxf(m[ri], mx[ri]);
      const float ml = lf_ml(mu[ri]);
      /* still uniform: 1 (keep the window keys' weights); the first kept slot: 0 (drop them) */
      const float corr = mu[ri] == -INFINITY ? 1.f : m[ri] == -INFINITY ? 0.f : lf_exp(m[ri], ml);
      m[ri] = mu[ri];
      l[ri] *= corr;
#pragma unroll
      for (int n = 0; n < ON; n++) {
        acc[n][2 * ri] *= corr;
        acc[n][2 * ri + 1] *= corr;
      }
      if (mu[ri] == -INFINITY) {   /* uniform so far: 1 on the window's real keys */
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
          for (int cc = 0; cc < 2; cc++) s[n][2 * ri + cc] = c0 + 8 * n + 2 * tq + cc < ke ? 1.f : 0.f;
      } else {
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
          for (int cc = 0; cc < 2; cc++) {
            s[n][2 * ri + cc] = lf_exp(s[n][2 * ri + cc], ml);   /* not kept: 0 */
            l[ri] += s[n][2 * ri + cc];
          }
      }
    }
#pragma unroll
    for (int kk = 0; kk < LF_BM / 16; kk++) {   /* slots 16 kk .. 16 kk + 15 of the block */
      uint32_t pa[4];
      c5k_c2a(pa, s[2 * kk], s[2 * kk + 1]);
      c5k_mma_ax<ON>(acc, pa, Vs, 16 * kk, G::LD);
    }
  }

#pragma unroll
  for (int ri = 0; ri < 2; ri++) {
    l[ri] += __shfl_xor_sync(0xffffffffu, l[ri], 1);
    l[ri] += __shfl_xor_sync(0xffffffffu, l[ri], 2);
    const long t = t0 + 8 * ri;
    if (t >= a.n) continue;
    const bool u = m[ri] == -INFINITY;
    /* a uniform row: O / (L w) and its out-of-range slots' part (lg_out); else O / l */
    const double inv = u ? 1.0 / (double)a.lw : 1.0 / (double)l[ri];
    const double add = u && g.npad ? -(double)g.npad / (double)a.lw : 0.0;
    T *dst = o + (row0 + t) * a.ldo + (long)h * DH + 2 * tq;
#pragma unroll
    for (int n = 0; n < ON; n++) {   /* bf16: the f32 o rounded once more (the f32 path's o, rounded) */
      dst[8 * n] = lf_io<T>::out((float)(acc[n][2 * ri] * inv + add));
      dst[8 * n + 1] = lf_io<T>::out((float)(acc[n][2 * ri + 1] * inv + add));
    }
    if (tq == 0) la_put_stats(a, b, h, t, u, u ? 0.0 : (double)m[ri], u ? 0.0 : inv, rmax, rinv, uni);
  }
}

/* q, k, v, o: T (kernels.h c5k_local_attn.bf16) */
template <int DH, typename T>
static c5_status lf_forward_launch(c5k_cuda_dev *dev, const c5k_local_attn *L, const la_shape &a, const void *q_,
                                   const void *k_, const void *v_, const uint8_t *mask, void *o, double *rmax,
                                   double *rinv, uint8_t *uni)
{
  const char *op = "local_attn_forward";
  const T *q = (const T *)q_, *k = (const T *)k_, *v = (const T *)v_;
  const size_t bytes = lf_stg<DH, T>::fwd_bytes;
  C5_CALL_K(c5k_cuda_smem_opt(dev, lf_forward<DH, T>, bytes, op));
  const dim3 grid((unsigned)((a.n + LF_BM - 1) / LF_BM), (unsigned)a.H, (unsigned)L->batch);
  const bool vec = lf_vec(q, a.ldqkv) && lf_vec(k, a.ldqkv) && lf_vec(v, a.ldqkv);
  lf_forward<DH, T><<<grid, LF_THREADS, bytes, dev->stream>>>(a, q, k, v, vec, mask, (T *)o, rmax, rinv, uni);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* ---- the flash backward (bf16 mode, lf_ok), without atomics ----
   lf_backward_q, one CTA a query tile as the forward's: first each row's
   D = sum_e dout_e o_e (FlashAttention-2's identity: dout rounded to bf16
   as dP uses it, o the forward's f32 output, each lane's columns in f32,
   then the quad's butterfly), saved per row for the key pass. It equals
   sum_p P_p dP_p in exact arithmetic on every row that uses D: o = sum_p
   P_p v_p over the row's kept slots (masked and out-of-range slots have P
   = 0, pad keys v = 0); a uniform row's o also holds its out-of-range
   slots' -1 / (L w), but uniform rows have dS = 0 and use no D. Then one
   sweep over the key blocks its non-uniform rows keep slots of,
   ascending: S = Q K^T and dP = dO V^T (c5k_mma_abt), P = 2^(scale S
   log2 e - rmax log2 e) rinv (lf_exp) from the forward's stats (0 where the row keeps no
   slot: masked, out of range, or a pad key, whose k = 0 adds nothing to
   dq), dS = P (dP - D) and dq += dS K (dS rounded to bf16 from the
   accumulators, c5k_mma_ax); dq = scale dq. Uniform rows have no gradient
   (dq = 0). (Before D came from o, a first sweep over the keys summed
   sum P dP: twice the products.)
   lf_backward_kv, one CTA a key tile (64 keys of window j): the query
   tiles of windows j - lf .. j + lb (the ones that may see it) in
   ascending order, each skipped when none of its rows can keep these keys
   and none is uniform; warp w owns key rows 16 w .. 16 w + 15 and, per
   query tile, in steps of LF_KQ query columns ascending (hb_dkv's chunks:
   a step's S^T and dP^T beside the dk, dv accumulators, and the warp's K
   and V rows held as A fragments for the whole sweep, in 168 registers: 3
   CTAs an SM; before, the whole tile's S^T and dP^T took 246 registers, 2
   CTAs, and K's and V's fragments were reloaded per tile), S^T = K Q^T,
   dP^T = V dO^T, P^T from the query rows' stats (held in shared memory
   with their kept ranges, one float4 and one int2 a row), on a uniform row
   1 / (L w) on every real key (its window's), dS^T = P^T (dP^T - D) (0 on
   uniform rows), dv += P^T dO, dk += dS^T Q; dk = scale dk. The steps
   split only the loop over query columns: each S^T tile is the same mma
   sequence over dim_head, and dv, dk add the 16-column k steps in the same
   ascending order as one pass over the tile would. Every sum has one
   fixed order: results repeat bit for bit.
   Both loops are double buffered as lf_forward's: lf_backward_q stages the
   next key block's K, V (the first while Q, dO load and D forms),
   lf_backward_kv the next query tile's Q, dO and its rows' rmax, rinv, D
   (cp.async too; the kept ranges and uniform flags written at once) while
   it works on one (the first while its own K, V load). Which tiles are
   staged is what was computed before, in the same order (lf_seek,
   lf_kv_seek): the results' bits do not change. Without a key mask no row
   is uniform (each keeps its own token), so lf_kv_seek reads uni only
   with one. */

/* P of a slot kept by a row of stats ml = lf_ml(the forward's f32 max), inv (1 / sum), x = scale s */
static __device__ __forceinline__ float lf_prob(float x, float ml, float inv)
{
  return lf_exp(x, ml) * inv;
}

/* The backward's two score products of a warp's 16 rows: s = A B^T and dp = C E^T (A, C: the warp's rows of [64 x DH]
   shared tiles, row w 16 of them; B, E: [64 x DH] tiles; rows LD apart): S and dP in lf_backward_q (A = Q, B = K,
   C = dO, E = V). (lf_backward_kv's transposes take A = K, C = V from fragments it holds for its whole sweep.) */
template <int DH, int NT>
static __device__ __forceinline__ void lf_sdp(float (&s)[NT][4], float (&dp)[NT][4], const __nv_bfloat16 *A,
                                              const __nv_bfloat16 *B, const __nv_bfloat16 *C,
                                              const __nv_bfloat16 *E, int w)
{
  constexpr int KS = DH / 16, LD = lf_geom<DH>::LD;
  uint32_t af[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; kk++) c5k_frag_a(af[kk], A + 16 * w * LD + 16 * kk, LD);
  c5k_mma_abt<NT, KS>(s, af, B, LD);
#pragma unroll
  for (int kk = 0; kk < KS; kk++) c5k_frag_a(af[kk], C + 16 * w * LD + 16 * kk, LD);
  c5k_mma_abt<NT, KS>(dp, af, E, LD);
}

/* lf_backward_kv's query columns a step (hb_dkv's HB_QC): S^T and dP^T of 16 key rows x LF_KQ queries live in a
   thread's registers beside dk's and dv's accumulators and the warp's K and V fragments. At 32, 168 registers
   spilled 40-60 bytes (with K's fragments held, or neither); at 16, with both held, 168 and 12 bytes: 3 loop-invariant
   addresses reloaded once a query tile, outside the products */
#define LF_KQ 16

template <int DH, typename T> struct lf_bgeom {
  static constexpr int LD = lf_geom<DH>::LD, TILE = lf_geom<DH>::TILE;
  static constexpr size_t SB = lf_stg<DH, T>::BYTES;
  /* lf_backward_q: Q, dO, K, V, K's and V's staging and two blocks' key-mask flags */
  static constexpr size_t q_bytes = (size_t)4 * TILE * 2 + 2 * SB + 2 * LF_BM;
  /* lf_backward_q's CTAs an SM: 3 (68 KiB each; bf16 input 54) fit its 166 registers without spills since D comes
     from o (200 at 2) */
  static constexpr int q_ctas = 3;
  /* lf_backward_kv: K, V, Q, dO, Q's and dO's staging, the query rows' rmax, rinv (double), D (float), lo, rhi
     (int2) of two tiles and the record (float4) of one */
  static constexpr size_t kv_bytes = (size_t)4 * TILE * 2 + 2 * SB + (size_t)LF_BM * (2 * (8 + 8 + 4 + 8) + 16);
  /* lf_backward_kv's CTAs an SM: 3 (72 KiB each; bf16 input 58) since its steps of LF_KQ query columns (246
     registers at 2) */
  static constexpr int kv_ctas = 3;
};

/* Blocks as lf_forward's. dd: D per (b, h, t) at (b H + h) n + t. */
template <int DH, typename T>
__global__ void __launch_bounds__(LF_THREADS, (lf_bgeom<DH, T>::q_ctas))
lf_backward_q(la_shape a, const T *q, const T *k, const T *v, bool vec, const uint8_t *mask, const double *rmax,
              const double *rinv, const uint8_t *uni, const T *o, const T *dout, bool vec_o, T *dq, float *dd)
{
  typedef lf_bgeom<DH, T> G;
  constexpr int NT = LF_BM / 8, ON = DH / 8;
  extern __shared__ __align__(16) unsigned char lf_smem[];
  typedef lf_db<DH, T> B;
  __nv_bfloat16 *Qs = (__nv_bfloat16 *)lf_smem, *Os = Qs + G::TILE, *base = Os + G::TILE;
  const B K = B::at(base, 0), V = B::at(base, 1);
  uint8_t *mkf = B::end(base);   /* [2][LF_BM], as lf_forward's */
  const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
  const int h = blockIdx.y;
  const long b = blockIdx.z, row0 = b * a.n, q0 = (long)blockIdx.x * LF_BM;
  const long mq = a.n - q0 < LF_BM ? a.n - q0 : LF_BM, i = q0 / a.w, s0 = (i - a.lb) * a.w;
  const uint8_t *mk = mask ? mask + row0 : NULL;
  const la_win g = la_geom(a, i);
  const long t0 = q0 + 16 * wp + gq, sb = ((long)b * a.H + h) * a.n;   /* rows t0, t0 + 8; the stats' base */
  lf_row rw[2];
  float mf[2], inv[2];   /* lf_ml(rmax), rinv */
#pragma unroll
  for (int ri = 0; ri < 2; ri++) {
    const long t = t0 + 8 * ri;
    const bool act = t < a.n && !uni[sb + t];   /* uniform rows: no gradient, no kept slot */
    rw[ri] = act ? lf_row_of(a, g, s0, t, mask != NULL) : lf_row{ 0, 0, 0, 0 };
    rw[ri].plo = rw[ri].phi = 0;   /* pad keys: k = v = 0, nothing to D or dq */
    mf[ri] = act ? lf_ml((float)rmax[sb + t]) : 0.f;
    inv[ri] = act ? (float)rinv[sb + t] : 0.f;
  }
  const int ulo = lf_row_of(a, g, s0, q0, mask != NULL).lo;
  const int urhi = lf_row_of(a, g, s0, q0 + mq - 1, mask != NULL).rhi;
  const float scale = (float)a.scale;

  /* the key blocks some row keeps a real slot of (pad-only blocks add nothing), the next staged while one is worked
     on; the first while Q, dO load and D forms */
  bool f;
  const int ke = (int)(g.ke - s0);   /* slots relative to s0 */
  const T *kh = k + (row0 + s0) * a.ldqkv + (long)h * DH, *vh = v + (row0 + s0) * a.ldqkv + (long)h * DH;
  int cn = lf_seek(a, (int)(g.kb - s0), ke, ke, s0, mk, ulo, urhi, 0, false, mkf, &f);
  if (cn < ke) {
    lf_stage<DH>(K.stage(0), kh + cn * a.ldqkv, a.ldqkv, a.n - s0 - cn, vec);
    lf_stage<DH>(V.stage(0), vh + cn * a.ldqkv, a.ldqkv, a.n - s0 - cn, vec);
    c5k_cp_commit();
  }
  lf_load<DH>(Qs, q + (row0 + q0) * a.ldqkv + (long)h * DH, a.ldqkv, mq, vec);
  lf_load<DH>(Os, dout + (row0 + q0) * a.ldo + (long)h * DH, a.ldo, mq, vec_o);
  __syncthreads();
  float D[2], acc[ON][4];
#pragma unroll
  for (int ri = 0; ri < 2; ri++) {   /* D = dout o: each lane its columns of the row, then the quad's butterfly; the
                                        elements of o a thread reads are the ones of dq it writes at the end (dq may
                                        be o, kernels.h), and no other thread's: the kv kernel reads D, never o */
    const long t = t0 + 8 * ri;
    D[ri] = 0.f;
    if (t < a.n) {
      const __nv_bfloat16 *dr = Os + (16 * wp + gq + 8 * ri) * G::LD + 2 * tq;
      const T *orow = o + (row0 + t) * a.ldo + (long)h * DH + 2 * tq;
#pragma unroll
      for (int n = 0; n < ON; n++) {
        const float2 df = __bfloat1622float2(*(const __nv_bfloat162 *)(dr + 8 * n));
        D[ri] += df.x * lf_io<T>::f(orow[8 * n]) + df.y * lf_io<T>::f(orow[8 * n + 1]);
      }
    }
    D[ri] += __shfl_xor_sync(0xffffffffu, D[ri], 1);
    D[ri] += __shfl_xor_sync(0xffffffffu, D[ri], 2);
    if (tq == 0 && t < a.n) dd[sb + t] = D[ri];
  }
#pragma unroll
  for (int n = 0; n < ON; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  for (int bf = 0; cn < ke; bf ^= 1) {
    const int c0 = cn;   /* the block's first slot relative to s0 */
    const uint8_t *mkb = mkf + LF_BM * bf;
    c5k_cp_wait<0>();
    __syncthreads();   /* the previous block's work on its tiles is done */
    K.cvt();
    V.cvt();
    __syncthreads();
    const __nv_bfloat16 *Ks = K.tile(bf), *Vs = V.tile(bf);
    cn = lf_seek(a, c0 + LF_BM, ke, ke, s0, mk, ulo, urhi, 0, false, mkf + LF_BM * (bf ^ 1), &f);
    if (cn < ke) {
      lf_stage<DH>(K.stage(bf ^ 1), kh + cn * a.ldqkv, a.ldqkv, a.n - s0 - cn, vec);
      lf_stage<DH>(V.stage(bf ^ 1), vh + cn * a.ldqkv, a.ldqkv, a.n - s0 - cn, vec);
      c5k_cp_commit();
    }
    float s[NT][4], dp[NT][4];
    lf_sdp<DH, NT>(s, dp, Qs, Ks, Os, Vs, wp);
    lf_all(lf_full(rw, c0, mkb), [&](auto all) {   /* as lf_forward's */
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int c = 8 * n + 2 * tq + (e & 1), ri = e >> 1;
          const float p = decltype(all)::value || lf_keeps(rw[ri], c0 + c, mkb[c])
                              ? lf_prob(scale * s[n][e], mf[ri], inv[ri]) : 0.f;
          s[n][e] = p * (dp[n][e] - D[ri]);   /* dS (0 where not kept) */
        }
    });
#pragma unroll
    for (int kk = 0; kk < LF_BM / 16; kk++) {
      uint32_t da[4];
      c5k_c2a(da, s[2 * kk], s[2 * kk + 1]);
      c5k_mma_ax<ON>(acc, da, Ks, 16 * kk, G::LD);
    }
  }
#pragma unroll
  for (int ri = 0; ri < 2; ri++) {
    const long t = t0 + 8 * ri;
    if (t >= a.n) continue;
    T *dst = dq + (row0 + t) * a.ldo + (long)h * DH + 2 * tq;
#pragma unroll
    for (int n = 0; n < ON; n++) {
      dst[8 * n] = lf_io<T>::out(scale * acc[n][2 * ri]);
      dst[8 * n + 1] = lf_io<T>::out(scale * acc[n][2 * ri + 1]);
    }
  }
}

/* The first query tile from tt (tiles of LF_BM tokens, below te) that may see key tile p0: some row of it keeps a
   slot there (la_live_keys' bound) or is uniform (1 / (L w) on every real key of its window; only with a key mask:
   a row keeps its own token's slot unless the mask drops it). te when none. Block-uniform; *tu: the thread's row
   (threadIdx.x) of that tile is uniform. */
static __device__ __forceinline__ int lf_kv_seek(const la_shape &a, int tt, int te, long p0, const uint8_t *mk,
                                                 const uint8_t *un, bool *tu)
{
  for (; tt < te; tt++) {
    const long q0 = (long)tt * LF_BM, i = q0 / a.w, s0 = (i - a.lb) * a.w;
    const la_win g = la_geom(a, i);
    const long mq = g.t0 + g.m - q0 < LF_BM ? g.t0 + g.m - q0 : LF_BM;
    const int c0 = (int)(p0 - s0), ulo = lf_row_of(a, g, s0, q0, mk != NULL).lo;
    const int urhi = lf_row_of(a, g, s0, q0 + mq - 1, mk != NULL).rhi;
    *tu = mk && threadIdx.x < mq && un[q0 + threadIdx.x];
    if (__syncthreads_or(*tu) || (urhi > c0 && ulo < c0 + LF_BM)) break;
  }
  return tt;
}

/* Blocks: x = key tile (64 keys of the sequence, within one window), y = head, z = batch. */
template <int DH, typename T>
__global__ void __launch_bounds__(LF_THREADS, (lf_bgeom<DH, T>::kv_ctas))
lf_backward_kv(la_shape a, const T *q, const T *k, const T *v, bool vec, const uint8_t *mask, const double *rmax,
               const double *rinv, const uint8_t *uni, const float *dd, const T *dout, bool vec_o, T *dk, T *dv)
{
  typedef lf_bgeom<DH, T> G;
  constexpr int NT = LF_KQ / 8, ON = DH / 8, KS = DH / 16;   /* a step's S^T n8 tiles; dk's, dv's; K's k16 steps */
  extern __shared__ __align__(16) unsigned char lf_smem[];
  typedef lf_db<DH, T> B;
  __nv_bfloat16 *Ks = (__nv_bfloat16 *)lf_smem, *Vs = Ks + G::TILE, *base = Vs + G::TILE;
  const B Q = B::at(base, 0), O = B::at(base, 1);   /* Q's and dO's tiles */
  /* the query tile's rows: rmax, rinv, D as staged ([2][LF_BM]: the tile in work's and the next one's; qrm, qri,
     qD), kept keys ([2][LF_BM] lo, rhi: qlr); the tile in work's (lf_ml(rmax), rinv in f32, D, uniform: 1) in one qrec,
     so that a column's bookkeeping is two shared loads, not six */
  double *qrm = (double *)B::end(base), *qri = qrm + 2 * LF_BM;
  float4 *qrec = (float4 *)(qri + 2 * LF_BM);
  int2 *qlr = (int2 *)(qrec + LF_BM);
  float *qD = (float *)(qlr + 2 * LF_BM);
  const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
  const int h = blockIdx.y;
  const long b = blockIdx.z, row0 = b * a.n, p0 = (long)blockIdx.x * LF_BM, j = p0 / a.w;
  const long mp = a.n - p0 < LF_BM ? a.n - p0 : LF_BM, sb = ((long)b * a.H + h) * a.n;
  const uint8_t *mk = mask ? mask + row0 : NULL;
  const long pr = p0 + 16 * wp + gq;   /* the thread's key rows pr, pr + 8 */
  const bool mkr[2] = { pr < a.n && (!mk || mk[pr]), pr + 8 < a.n && (!mk || mk[pr + 8]) };
  const float scale = (float)a.scale, puni = (float)(1.0 / (double)a.lw);

  float gk[ON][4], gv[ON][4];
#pragma unroll
  for (int n = 0; n < ON; n++)
#pragma unroll
    for (int e = 0; e < 4; e++) gk[n][e] = gv[n][e] = 0.f;
  /* the query tiles of windows j - lf .. j + lb (tiles of LF_BM tokens, each inside one window), ascending; each
     iteration converts the tile staged by the previous one, stages the next that may see the key tile
     (lf_kv_seek) and works on the converted one */
  const long i0 = j - a.lf > 0 ? j - a.lf : 0, i1 = j + a.lb < a.W - 1 ? j + a.lb : a.W - 1;
  const long te0 = (i1 + 1) * a.w < a.n ? (i1 + 1) * a.w : a.n;
  const int te = (int)((te0 + LF_BM - 1) / LF_BM);   /* tiles: the grid's x, below 2^31 */
  int cur = -1, from = (int)(i0 * a.w / LF_BM);
  /* thread c < LF_BM: row c of the staged tile is real and not uniform (its stats staged: cin), uniform (cun) */
  bool cin = false, cun = false, kvf = false;   /* kvf: kf, vf loaded */
  uint32_t kf[KS][4], vf[KS][4];   /* the warp's K and V rows as A fragments: the same for every query tile */
  for (int bf = 0;; bf ^= 1) {
    if (cur >= 0) {
      c5k_cp_wait<0>();
      __syncthreads();   /* the previous tile's work on its tiles, qrec is done; the first time, Ks, Vs are loaded */
      Q.cvt();
      O.cvt();
      if (threadIdx.x < LF_BM) {
        const int c = threadIdx.x, x = LF_BM * bf + c;
        qrec[c] = cin ? make_float4(lf_ml((float)qrm[x]), (float)qri[x], qD[x], 0.f)
                      : make_float4(0.f, 0.f, 0.f, cun ? 1.f : 0.f);
      }
      __syncthreads();
    }
    bool tu;
    const int nx = lf_kv_seek(a, from, te, p0, mk, uni + sb, &tu);
    if (nx < te) {   /* stage it into buffer bf ^ 1 */
      const long q0 = (long)nx * LF_BM, i = q0 / a.w, s0 = (i - a.lb) * a.w;
      const la_win g = la_geom(a, i);
      const long mq = g.t0 + g.m - q0 < LF_BM ? g.t0 + g.m - q0 : LF_BM;
      lf_stage<DH>(Q.stage(bf ^ 1), q + (row0 + q0) * a.ldqkv + (long)h * DH, a.ldqkv, mq, vec);
      lf_stage<DH>(O.stage(bf ^ 1), dout + (row0 + q0) * a.ldo + (long)h * DH, a.ldo, mq, vec_o);
      if (threadIdx.x < LF_BM) {
        const int c = threadIdx.x, x = LF_BM * (bf ^ 1) + c;
        const long t = q0 + c;
        cin = c < mq && !tu;
        cun = tu;
        const lf_row r = cin ? lf_row_of(a, g, s0, t, mask != NULL) : lf_row{ 0, 0, 0, 0 };
        qlr[x] = make_int2(r.lo, r.rhi);
        if (cin) {
          c5k_cp8(qrm + x, rmax + sb + t);
          c5k_cp8(qri + x, rinv + sb + t);
          c5k_cp4(qD + x, dd + sb + t);
        }
      }
      c5k_cp_commit();
    }
    if (cur < 0) {   /* the key tile, while the first query tile stages (visible after the next barrier) */
      lf_load<DH>(Ks, k + (row0 + p0) * a.ldqkv + (long)h * DH, a.ldqkv, mp, vec);
      lf_load<DH>(Vs, v + (row0 + p0) * a.ldqkv + (long)h * DH, a.ldqkv, mp, vec);
    } else {
      const long q0 = (long)cur * LF_BM, s0 = (q0 / a.w - a.lb) * a.w;
      const int2 *lr = qlr + LF_BM * bf;
      const __nv_bfloat16 *Qs = Q.tile(bf), *Os = O.tile(bf);
      const int kw = (int)(p0 - s0) + 16 * wp, kc = kw + gq;   /* the warp's first key row, the thread's pr, in the
                                                                    window's slots */
      if (!kvf) {   /* the first tile worked on: Ks, Vs are loaded (the barrier above) */
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
          c5k_frag_a(kf[kk], Ks + 16 * wp * G::LD + 16 * kk, G::LD);
          c5k_frag_a(vf[kk], Vs + 16 * wp * G::LD + 16 * kk, G::LD);
        }
        kvf = true;
      }
      /* every row of the tile (real, not uniform) keeps the warp's 16 key rows (real keys the key mask keeps): no
         per-slot test (warp-uniform, once a tile) */
      bool all = mkr[0] & mkr[1];
#pragma unroll
      for (int c = lane; c < LF_BM; c += 32) all &= (qrec[c].w == 0.f) & (lr[c].x <= kw) & (kw + 16 <= lr[c].y);
      all = __all_sync(0xffffffffu, all);
#pragma unroll 1
      for (int qc = 0; qc < LF_BM; qc += LF_KQ) {   /* query columns qc .. qc + LF_KQ - 1 of the tile */
        float s[NT][4], dp[NT][4];
        c5k_mma_abt<NT, KS>(s, kf, Qs + qc * G::LD, G::LD);
        c5k_mma_abt<NT, KS>(dp, vf, Os + qc * G::LD, G::LD);
        lf_all(all, [&](auto alls) {
#pragma unroll
          for (int n = 0; n < NT; n++)
#pragma unroll
            for (int cc = 0; cc < 2; cc++) {
              const int c = qc + 8 * n + 2 * tq + cc;   /* query column c */
              const float4 r = qrec[c];
#pragma unroll
              for (int ri = 0; ri < 2; ri++) {
                const int e = 2 * ri + cc, kr = kc + 8 * ri;   /* key slot kr */
                /* kept: P from the row's stats, dS = P (dP - D); a uniform row: 1 / (L w) on every real key of its
                   window, dS 0; else 0. Selects, not branches: P is formed for every slot, as lf_backward_q's */
                const bool kp = decltype(alls)::value ||
                                ((r.w == 0.f) & mkr[ri] & (kr >= lr[c].x) & (kr < lr[c].y));
                const float pk = lf_prob(scale * s[n][e], r.x, r.y);
                s[n][e] = kp ? pk : r.w != 0.f ? puni : 0.f;
                dp[n][e] = kp ? pk * (dp[n][e] - r.z) : 0.f;
              }
            }
        });
#pragma unroll
        for (int kk = 0; kk < LF_KQ / 16; kk++) {   /* query columns qc + 16 kk .. */
          uint32_t pa[4];
          c5k_c2a(pa, s[2 * kk], s[2 * kk + 1]);
          c5k_mma_ax<ON>(gv, pa, Os, qc + 16 * kk, G::LD);
          c5k_c2a(pa, dp[2 * kk], dp[2 * kk + 1]);
          c5k_mma_ax<ON>(gk, pa, Qs, qc + 16 * kk, G::LD);
        }
      }
    }
    if (nx >= te) break;
    cur = nx;
    from = nx + 1;
  }
#pragma unroll
  for (int ri = 0; ri < 2; ri++) {
    const long p = pr + 8 * ri;
    if (p >= a.n) continue;
    const long off = (row0 + p) * a.lddkv + (long)h * DH + 2 * tq;
    T *rk = dk + off, *rv = dv + off;
#pragma unroll
    for (int n = 0; n < ON; n++) {
      rk[8 * n] = lf_io<T>::out(scale * gk[n][2 * ri]);
      rk[8 * n + 1] = lf_io<T>::out(scale * gk[n][2 * ri + 1]);
      rv[8 * n] = lf_io<T>::out(gv[n][2 * ri]);
      rv[8 * n + 1] = lf_io<T>::out(gv[n][2 * ri + 1]);
    }
  }
}

/* q, k, v, o, dout, dq, dk, dv: T (kernels.h c5k_local_attn.bf16) */
template <int DH, typename T>
static c5_status lf_backward_launch(c5k_cuda_dev *dev, const c5k_local_attn *L, const la_shape &a, const void *q_,
                                    const void *k_, const void *v_, const uint8_t *mask, const double *rmax,
                                    const double *rinv, const uint8_t *uni, const void *o_, const void *dout_,
                                    void *dq, void *dk, void *dv)
{
  const char *op = "local_attn_backward";
  const T *q = (const T *)q_, *k = (const T *)k_, *v = (const T *)v_, *o = (const T *)o_, *dout = (const T *)dout_;
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, (size_t)L->batch * a.H * a.n * sizeof(float), &scr, op));
  float *dd = (float *)scr;   /* D per (b, h, t) */
  const size_t bq = lf_bgeom<DH, T>::q_bytes, bkv = lf_bgeom<DH, T>::kv_bytes;
  C5_CALL_K(c5k_cuda_smem_opt(dev, lf_backward_q<DH, T>, bq, op));
  C5_CALL_K(c5k_cuda_smem_opt(dev, lf_backward_kv<DH, T>, bkv, op));
  const dim3 grid((unsigned)((a.n + LF_BM - 1) / LF_BM), (unsigned)a.H, (unsigned)L->batch);
  const bool vec = lf_vec(q, a.ldqkv) && lf_vec(k, a.ldqkv) && lf_vec(v, a.ldqkv), vec_o = lf_vec(dout, a.ldo);
  lf_backward_q<DH, T><<<grid, LF_THREADS, bq, dev->stream>>>(a, q, k, v, vec, mask, rmax, rinv, uni, o, dout, vec_o,
                                                               (T *)dq, dd);
  C5K_CUDA_LAUNCHED(op);
  lf_backward_kv<DH, T><<<grid, LF_THREADS, bkv, dev->stream>>>(a, q, k, v, vec, mask, rmax, rinv, uni, dd, dout,
                                                                vec_o, (T *)dk, (T *)dv);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
#endif

static size_t tile_bytes(int dh) { return (size_t)LA_TILE * (dh + 1) * sizeof(c5_real); }
static size_t score_bytes(void) { return (size_t)LA_TILE * (LA_TILE + 1) * sizeof(c5_real); }
static size_t stats_bytes(void) { return (size_t)LA_TILE * (3 * sizeof(double) + 4 * sizeof(long) + 2 * sizeof(int)); }

/* The shape on the device and the launch grid (x: tiles of LA_TILE tokens), or an error naming op. */
static c5_status la_setup(const c5k_local_attn *L, long ldqkv, long ldo, long lddkv, const char *op, la_shape *a,
                          dim3 *grid)
{
  if (L->window < 1 || L->n < 0 || L->batch < 0 || L->heads < 1 || L->look_backward < 0 || L->look_forward < 0)
    return C5K_ERR(C5_ERR_ARG, "cuda local_attn_%s: window %ld, n %ld, batch %ld, heads %d, look %d/%d", op,
                   L->window, L->n, L->batch, L->heads, L->look_backward, L->look_forward);
  if (L->dim_head < 1 || L->dim_head > LA_MAXDH)
    return C5K_ERR(C5_ERR_NOTIMPL, "cuda local_attn_%s: dim_head %d: the GPU kernels take 1 .. %d", op, L->dim_head,
                   LA_MAXDH);
  a->n = L->n;
  a->w = L->window;
  a->W = (L->n + L->window - 1) / L->window;
  a->np = a->W * a->w;
  a->lb = L->look_backward;
  a->lf = L->look_forward;
  a->lw = (long)(a->lb + 1 + a->lf) * a->w;
  a->causal = L->causal;
  a->exact = L->exact_windowsize;
  a->H = L->heads;
  a->dh = L->dim_head;
  a->scale = L->scale;
  a->ldqkv = ldqkv;
  a->ldo = ldo;
  a->lddkv = lddkv;
  const long tiles = (L->n + LA_TILE - 1) / LA_TILE;
  if (tiles > 0x7fffffffL || L->heads > 65535 || L->batch > 65535)
    return C5K_ERR(C5_ERR_NOTIMPL, "cuda local_attn_%s: grid %ld x %d x %ld exceeds the launch limits", op, tiles,
                   L->heads, L->batch);
  *grid = dim3((unsigned)tiles, (unsigned)L->heads, (unsigned)L->batch);
  return C5_OK;
}

/* kernels.h local_attn_bf16: where the flash kernels run both ways (bf16_acts: bf16 mode, single build; lf_bwd_ok:
   dim_head 64), which read their inputs and write their outputs as T = __nv_bfloat16 when L->bf16. Not L->bf16
   itself. */
extern "C" int c5k_local_attn_bf16_cuda(c5k_ctx *ctx, const c5k_local_attn *L)
{
#if C5_USE_DOUBLE
  (void)ctx;
  (void)L;
  return 0;
#else
  la_shape a;
  dim3 grid;
  return c5k_bf16_acts_cuda(ctx) && la_setup(L, 0, 0, 0, "bf16", &a, &grid) == C5_OK && lf_bwd_ok(a);
#endif
}

extern "C" c5_status c5k_local_attn_forward_cuda(c5k_ctx *ctx, const c5k_local_attn *L, const void *q_,
                                                 const void *k_, const void *v_, long ldqkv, const uint8_t *mask,
                                                 void *o_, long ldo, double *rmax, double *rinv, uint8_t *uni)
{
  const char *op = "local_attn_forward";
  c5k_cuda_dev *dev;
  la_shape a;
  dim3 grid;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  C5_CALL_K(la_setup(L, ldqkv, ldo, 0, "forward", &a, &grid));
  if (L->bf16 && !c5k_local_attn_bf16_cuda(ctx, L))
    return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: bf16 tensors (dim_head %d, window %ld) only where local_attn_bf16 "
                   "says so", op, L->dim_head, L->window);
  if (L->n == 0 || L->batch == 0) return C5_OK;
  const c5_real *q = (const c5_real *)q_, *k = (const c5_real *)k_, *v = (const c5_real *)v_;
  c5_real *o = (c5_real *)o_;
#if !C5_USE_DOUBLE
  if (la_tc(ctx, dev) && lf_ok(a)) {
    if (L->bf16) return lf_forward_launch<64, __nv_bfloat16>(dev, L, a, q_, k_, v_, mask, o_, rmax, rinv, uni);
    if (a.dh == 64) return lf_forward_launch<64, float>(dev, L, a, q_, k_, v_, mask, o_, rmax, rinv, uni);
    return lf_forward_launch<128, float>(dev, L, a, q_, k_, v_, mask, o_, rmax, rinv, uni);
  }
  if (la_gemm(ctx, dev, a, L->batch)) return lg_forward(ctx, dev, L, a, q, k, v, mask, o, rmax, rinv, uni);
#endif
  const size_t bytes = 3 * tile_bytes(a.dh) + score_bytes();
  C5_CALL_K(c5k_cuda_smem_opt(dev, la_forward<c5_real>, bytes, op));
  la_forward<c5_real><<<grid, LA_THREADS, bytes, dev->stream>>>(a, q, k, v, mask, o, rmax, rinv, uni);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_local_attn_backward_cuda(c5k_ctx *ctx, const c5k_local_attn *L, const void *q_,
                                                  const void *k_, const void *v_, long ldqkv, const uint8_t *mask,
                                                  const double *rmax, const double *rinv, const uint8_t *uni,
                                                  const void *o_, const void *dout_, long ldo, void *dq_, void *dk_,
                                                  void *dv_, long lddkv)
{
  const char *op = "local_attn_backward";
  c5k_cuda_dev *dev;
  la_shape a;
  dim3 grid;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  C5_CALL_K(la_setup(L, ldqkv, ldo, lddkv, "backward", &a, &grid));
  if (L->bf16 && !c5k_local_attn_bf16_cuda(ctx, L))
    return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: bf16 tensors (dim_head %d, window %ld) only where local_attn_bf16 "
                   "says so", op, L->dim_head, L->window);
  if (L->n == 0 || L->batch == 0) return C5_OK;
  const c5_real *q = (const c5_real *)q_, *k = (const c5_real *)k_, *v = (const c5_real *)v_;
  const c5_real *dout = (const c5_real *)dout_;   /* o: read by the flash kernels only */
  c5_real *dq = (c5_real *)dq_, *dk = (c5_real *)dk_, *dv = (c5_real *)dv_;
#if !C5_USE_DOUBLE
  /* dim_head 128: lg_backward (lf_bwd_ok), from lf_forward's stats, which mean what lg_rows_forward's do */
  if (la_tc(ctx, dev) && lf_bwd_ok(a)) {
    if (L->bf16)
      return lf_backward_launch<64, __nv_bfloat16>(dev, L, a, q_, k_, v_, mask, rmax, rinv, uni, o_, dout_, dq_, dk_,
                                                   dv_);
    return lf_backward_launch<64, float>(dev, L, a, q_, k_, v_, mask, rmax, rinv, uni, o_, dout_, dq_, dk_, dv_);
  }
  if (la_gemm(ctx, dev, a, L->batch)) return lg_backward(ctx, dev, L, a, q, k, v, mask, rmax, rinv, uni, dout, dq, dk, dv);
#endif
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, (size_t)L->batch * L->heads * L->n * sizeof(double), &scr, op));
  double *dd = (double *)scr;   /* D per (b, h, t) */
  const size_t bq = 4 * tile_bytes(a.dh) + score_bytes(), bkv = stats_bytes() + 4 * tile_bytes(a.dh) + 2 * score_bytes();
  C5_CALL_K(c5k_cuda_smem_opt(dev, la_backward_q<c5_real>, bq, op));
  C5_CALL_K(c5k_cuda_smem_opt(dev, la_backward_kv<c5_real>, bkv, op));
  la_backward_q<c5_real><<<grid, LA_THREADS, bq, dev->stream>>>(a, q, k, v, mask, rmax, rinv, uni, dout, dq, dd);
  C5K_CUDA_LAUNCHED(op);
  la_backward_kv<c5_real><<<grid, LA_THREADS, bkv, dev->stream>>>(a, q, k, v, mask, rmax, rinv, uni, dd, dout, dk, dv);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
