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
   shuffles among its eight lanes, the same bits in every lane. */
#include <math.h>
#include "cuda_internal.cuh"

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
  long ldqkv, ldo;
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

static __device__ __forceinline__ double la_max8(double x)
{
  for (int o = 1; o < LA_LANES; o <<= 1) x = fmax(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
static __device__ __forceinline__ double la_sum8(double x)
{
  for (int o = 1; o < LA_LANES; o <<= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
static __device__ __forceinline__ long la_lsum8(long x)
{
  for (int o = 1; o < LA_LANES; o <<= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
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
      if (live && c < nk && la_keep(rg, mk, k0 + c)) {
        mx = fmax(mx, (double)(scale * s[j]));
        cnt++;
      }
    }
  }
  mx = la_max8(mx);
  cnt = la_lsum8(cnt);
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
      const long p = k0 + c;
      T e = 0;
      if (live && c < nk) {
        if (u) e = p >= g.kb && p < g.ke ? puni : (T)0;   /* every real key of the row's window */
        else if (la_keep(rg, mk, p)) {
          e = la_exp((T)(scale * s[j] - mx));
          sum += e;
        }
      }
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
  sum = la_sum8(sum);
  if (!live) return;
  if (rg.nzero > 0) sum += (double)rg.nzero * exp(-mx);
  const double inv = u ? 0.0 : 1.0 / sum;
  /* a uniform row's out-of-range slots: v = -1, weight 1 / (L w) */
  const T add = (T)(u && g.npad ? -(double)g.npad / (double)a.lw : 0.0);
  T *orow = o + (row0 + t) * a.ldo + (long)h * dh;
  for (int j = 0; j < LA_HC; j++) {
    const int d = l8 + LA_LANES * j;
    if (d < dh) orow[d] = u ? (T)(acc[j] + add) : (T)(acc[j] * inv);
  }
  if (l8 == 0) {
    const long st = ((long)b * a.H + h) * a.n + t;
    rmax[st] = u ? 0.0 : mx;
    rinv[st] = inv;
    uni[st] = u;
  }
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
        T ds = 0;
        if (act && c < nk && la_keep(rg, mk, k0 + c)) {
          const T p = la_prob(scale * s[j], mx, inv);
          if (pass == 0) D += (double)p * dp[j];
          else ds = (T)(p * ((double)dp[j] - D));
        }
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
      D = la_sum8(D);
      if (live && l8 == 0) dd[st] = D;
    } else if (live) {
      T *row = dq + (row0 + t) * a.ldqkv + (long)h * dh;
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
  double *Smx = la_smem, *Sinv = Smx + LA_TILE, *SD = Sinv + LA_TILE;
  long *Slo = (long *)(SD + LA_TILE), *Srhi = Slo + LA_TILE, *Skb = Srhi + LA_TILE, *Ske = Skb + LA_TILE;
  int *Suni = (int *)(Ske + LA_TILE);
  T *Ks = (T *)(Suni + 2 * LA_TILE), *Vs = Ks + LA_TILE * ldt, *Qs = Vs + LA_TILE * ldt, *Os = Qs + LA_TILE * ldt;
  T *Ps = Os + LA_TILE * ldt, *Ds = Ps + LA_TILE * (LA_TILE + 1);
  const long mk_rows = a.n - p0 < LA_TILE ? a.n - p0 : LA_TILE, p = p0 + r;
  const bool live = r < mk_rows;
  const uint8_t *mk = mask ? mask + row0 : NULL;
  const T scale = (T)a.scale, puni = (T)(1.0 / (double)a.lw);
  la_load(Ks, k + (row0 + p0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, mk_rows, dh);
  la_load(Vs, v + (row0 + p0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, mk_rows, dh);
  T gk[LA_HC], gv[LA_HC];
  for (int j = 0; j < LA_HC; j++) gk[j] = gv[j] = 0;
  const long j0 = p0 / a.w, j1 = (p0 + mk_rows - 1) / a.w;
  const long i0 = j0 - a.lf > 0 ? j0 - a.lf : 0, i1 = j1 + a.lb < a.W - 1 ? j1 + a.lb : a.W - 1;
  const long tq1 = (i1 + 1) * a.w < a.n ? (i1 + 1) * a.w : a.n;
  for (long q0 = i0 * a.w; q0 < tq1; q0 += LA_TILE) {
    const long mq = tq1 - q0 < LA_TILE ? tq1 - q0 : LA_TILE;
    long qlo, qhi;
    la_live_keys(a, q0, q0 + mq, &qlo, &qhi);
    /* (also the barrier before the tiles are overwritten) a query tile that weighs none of these keys */
    const int anyu = __syncthreads_or(tid < mq && uni[((long)b * a.H + h) * a.n + q0 + tid]);
    if (!anyu && (qhi <= p0 || qlo >= p0 + mk_rows)) continue;
    la_load(Qs, q + (row0 + q0) * a.ldqkv + (long)h * dh, a.ldqkv, 0, mq, dh);
    la_load(Os, dout + (row0 + q0) * a.ldo + (long)h * dh, a.ldo, 0, mq, dh);
    if (tid < LA_TILE) {
      const long t = q0 + tid, st = ((long)b * a.H + h) * a.n + t;
      if (tid < mq) {
        const la_win g = la_geom(a, t / a.w);
        const la_row rg = la_range(a, g, t, mask != NULL);
        Smx[tid] = rmax[st];
        Sinv[tid] = rinv[st];
        SD[tid] = dd[st];
        Slo[tid] = rg.lo;
        Srhi[tid] = rg.rhi;
        Skb[tid] = g.kb;
        Ske[tid] = g.ke;
        Suni[tid] = uni[st];
      } else {   /* no query: every slot weight 0 */
        Smx[tid] = Sinv[tid] = SD[tid] = 0;
        Slo[tid] = Srhi[tid] = Skb[tid] = Ske[tid] = 0;
        Suni[tid] = 0;
      }
    }
    __syncthreads();
    T s[LA_SC], dp[LA_SC];
    la_dots(Ks + r * ldt, Qs, ldt, l8, dh, s);
    la_dots(Vs + r * ldt, Os, ldt, l8, dh, dp);
    for (int j = 0; j < LA_SC; j++) {
      const int c = l8 + LA_LANES * j;
      T pr = 0, ds = 0;
      if (live && c < mq) {
        if (Suni[c]) pr = p >= Skb[c] && p < Ske[c] ? puni : (T)0;
        else if (p >= Slo[c] && p < Srhi[c] && (!mk || mk[p])) {
          pr = la_prob(scale * s[j], Smx[c], Sinv[c]);
          ds = (T)(pr * ((double)dp[j] - SD[c]));
        }
      }
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
  T *rk = dk + (row0 + p) * a.ldqkv + (long)h * dh, *rv = dv + (row0 + p) * a.ldqkv + (long)h * dh;
  for (int j = 0; j < LA_HC; j++) {
    const int d = l8 + LA_LANES * j;
    if (d < dh) {
      rk[d] = scale * gk[j];
      rv[d] = gv[j];
    }
  }
}

static size_t tile_bytes(int dh) { return (size_t)LA_TILE * (dh + 1) * sizeof(c5_real); }
static size_t score_bytes(void) { return (size_t)LA_TILE * (LA_TILE + 1) * sizeof(c5_real); }
static size_t stats_bytes(void) { return (size_t)LA_TILE * (3 * sizeof(double) + 4 * sizeof(long) + 2 * sizeof(int)); }

/* The shape on the device and the launch grid (x: tiles of LA_TILE tokens), or an error naming op. */
static c5_status la_setup(const c5k_local_attn *L, long ldqkv, long ldo, const char *op, la_shape *a, dim3 *grid)
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
  const long tiles = (L->n + LA_TILE - 1) / LA_TILE;
  if (tiles > 0x7fffffffL || L->heads > 65535 || L->batch > 65535)
    return C5K_ERR(C5_ERR_NOTIMPL, "cuda local_attn_%s: grid %ld x %d x %ld exceeds the launch limits", op, tiles,
                   L->heads, L->batch);
  *grid = dim3((unsigned)tiles, (unsigned)L->heads, (unsigned)L->batch);
  return C5_OK;
}

extern "C" c5_status c5k_local_attn_forward_cuda(c5k_ctx *ctx, const c5k_local_attn *L, const c5_real *q,
                                                 const c5_real *k, const c5_real *v, long ldqkv, const uint8_t *mask,
                                                 c5_real *o, long ldo, double *rmax, double *rinv, uint8_t *uni)
{
  const char *op = "local_attn_forward";
  c5k_cuda_dev *dev;
  la_shape a;
  dim3 grid;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  C5_CALL_K(la_setup(L, ldqkv, ldo, "forward", &a, &grid));
  if (L->n == 0 || L->batch == 0) return C5_OK;
  const size_t bytes = 3 * tile_bytes(a.dh) + score_bytes();
  C5_CALL_K(c5k_cuda_smem_opt(dev, la_forward<c5_real>, bytes, op));
  la_forward<c5_real><<<grid, LA_THREADS, bytes, dev->stream>>>(a, q, k, v, mask, o, rmax, rinv, uni);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_local_attn_backward_cuda(c5k_ctx *ctx, const c5k_local_attn *L, const c5_real *q,
                                                  const c5_real *k, const c5_real *v, long ldqkv, const uint8_t *mask,
                                                  const double *rmax, const double *rinv, const uint8_t *uni,
                                                  const c5_real *dout, long ldo, c5_real *dq, c5_real *dk, c5_real *dv)
{
  const char *op = "local_attn_backward";
  c5k_cuda_dev *dev;
  la_shape a;
  dim3 grid;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  C5_CALL_K(la_setup(L, ldqkv, ldo, "backward", &a, &grid));
  if (L->n == 0 || L->batch == 0) return C5_OK;
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
