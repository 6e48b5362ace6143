/* attn_local.c - sliding-window attention (kernels.h, local_attn_*) on the
   CPU: one task per (batch, head, query window), whose real keys form one
   contiguous block of rows, so each task is two (forward) or five
   (backward) serial GEMMs on a [w, L w] score block in the thread's scratch.

   Masking in the terms used here: a row's unmasked slots form one range of
   positions [lo, hi) (minus the key mask); keys p >= n (the autopad) have
   score 0 and v = 0, so the GEMMs cover only the real keys and the pad keys
   enter the softmax sum as a count; a uniform row adds -(#out-of-range)/(L w)
   to its output, the out-of-range slots' v = -1.

   Forward: S = scale Q K^T over the window's real keys, masked softmax (row
   max, vectorized exp, sum in double), O = P V. The row stats (max, 1/sum)
   let the backward recompute P bit for bit instead of storing O(n L w) of it.
   Backward: the query windows are cut into fixed chunks of `chunk` >= lb + lf
   windows; the even chunks run in parallel, then the odd ones, so no two
   tasks write one dK/dV row at the same time and each sum has the same order
   whatever the thread count. */
#include <math.h>
#include <string.h>
#include <omp.h>
#include "cpu.h"

/* Per thread: scores (then dS), P and dP blocks of [w, L w] each. */
static long slots(const c5k_local_attn *L) { return (long)(L->look_backward + 1 + L->look_forward) * L->window; }
static long scratch_per(const c5k_local_attn *L) { return 3 * L->window * slots(L); }

long c5k_local_attn_work(const c5k_local_attn *L)
{
  long bytes = scratch_per(L) * omp_get_max_threads() * (long)sizeof(c5_real);
  return (bytes + (long)sizeof(double) - 1) / (long)sizeof(double);
}

/* Threads the caller's work holds a scratch for (0: none). */
static int num_threads(const c5k_ctx *ctx, const c5k_local_attn *L)
{
  long fit = ctx->work_len * (long)sizeof(double) / (scratch_per(L) * (long)sizeof(c5_real));
  int t = omp_get_max_threads();
  return fit < t ? (int)fit : t;
}

static c5_status work_error(const char *op, const c5k_ctx *ctx, const c5k_local_attn *L)
{
  return C5K_ERR(C5_ERR_ARG, "cpu local_attn_%s: work of %ld doubles holds no [3 x %ld x %ld] scratch block",
                 op, ctx->work_len, L->window, slots(L));
}

/* Geometry of query window i: real queries t0 .. t0+m-1, real keys kb .. ke-1
   (the GEMM columns), slot positions inside the padded sequence kb .. pe-1;
   the other npad slots of the L w are out of range. */
typedef struct { long t0, m, kb, ke, pe, npad; } win_geom;

static win_geom geom(const c5k_local_attn *L, long i)
{
  const long n = L->n, w = L->window, W = (n + w - 1) / w, np = W * w;
  win_geom g;
  g.t0 = i * w;
  g.m = n - g.t0 < w ? n - g.t0 : w;
  long s0 = (i - L->look_backward) * w, s1 = (i + L->look_forward + 1) * w;
  g.kb = s0 > 0 ? s0 : 0;
  g.ke = s1 < n ? s1 : n;
  g.pe = s1 < np ? s1 : np;
  g.npad = slots(L) - (g.pe - g.kb);
  return g;
}

/* Unmasked positions of query t before the key mask: [lo, hi). */
static void row_range(const c5k_local_attn *L, const win_geom *g, long t, long *lo, long *hi)
{
  const long w = L->window;
  long l = g->kb, h = g->pe;
  if (L->causal) {
    if (h > t + 1) h = t + 1;
    if (L->exact_windowsize && l < t - w * L->look_backward) l = t - w * L->look_backward;
  } else if (L->exact_windowsize) {
    if (l < t - w * L->look_backward) l = t - w * L->look_backward;
    if (h > t + w * L->look_forward + 1) h = t + w * L->look_forward + 1;
  }
  *lo = l;
  *hi = h;
}

/* Softmax of one row of scores in place over the GEMM columns (positions kb + c).
   Writes P (uniform rows: 1 / (L w) everywhere) and returns the row stats;
   row_probs below redoes the same operations from the stats, same bits. */
static void row_softmax(const c5k_local_attn *L, const win_geom *g, long t, const uint8_t *mk, c5_real *row,
                        double *rmax, double *rinv, uint8_t *uni)
{
  const long n = L->n, nk = g->ke - g->kb;
  const double lw = (double)slots(L);
  long lo, hi;
  row_range(L, g, t, &lo, &hi);
  long rhi = hi < n ? hi : n;                               /* real keys [lo, rhi) */
  long nzero = (!mk && hi > n) ? hi - (lo > n ? lo : n) : 0;   /* unmasked zero keys (autopad) */
  long c0 = lo - g->kb, c1 = rhi - g->kb;
  if (c1 < c0) c1 = c0;
  double mx = nzero > 0 ? 0.0 : -INFINITY;
  long cnt = nzero;
  for (long c = c0; c < c1; c++)
    if (!mk || mk[g->kb + c]) {
      cnt++;
      if (row[c] > mx) mx = row[c];
    }
  if (cnt == 0) {
    for (long c = 0; c < nk; c++) row[c] = (c5_real)(1.0 / lw);
    *rmax = 0;
    *rinv = 0;
    *uni = 1;
    return;
  }
  for (long c = 0; c < c0; c++) row[c] = 0;
  for (long c = c1; c < nk; c++) row[c] = 0;
  for (long c = c0; c < c1; c++) row[c] = (!mk || mk[g->kb + c]) ? (c5_real)(row[c] - mx) : (c5_real)-INFINITY;
  c5k_vexp(row + c0, c1 - c0);
  double sum = nzero > 0 ? nzero * exp(-mx) : 0.0;
  for (long c = c0; c < c1; c++) sum += row[c];
  double inv = 1.0 / sum;
  for (long c = c0; c < c1; c++) row[c] = (c5_real)(row[c] * inv);
  *rmax = mx;
  *rinv = inv;
  *uni = 0;
}

/* The same P from saved stats (backward). */
static void row_probs(const c5k_local_attn *L, const win_geom *g, long t, const uint8_t *mk, c5_real *row,
                      double mx, double inv, int uni)
{
  const long n = L->n, nk = g->ke - g->kb;
  const double lw = (double)slots(L);
  if (uni) {
    for (long c = 0; c < nk; c++) row[c] = (c5_real)(1.0 / lw);
    return;
  }
  long lo, hi;
  row_range(L, g, t, &lo, &hi);
  long rhi = hi < n ? hi : n;
  long c0 = lo - g->kb, c1 = rhi - g->kb;
  if (c1 < c0) c1 = c0;
  for (long c = 0; c < c0; c++) row[c] = 0;
  for (long c = c1; c < nk; c++) row[c] = 0;
  for (long c = c0; c < c1; c++) row[c] = (!mk || mk[g->kb + c]) ? (c5_real)(row[c] - mx) : (c5_real)-INFINITY;
  c5k_vexp(row + c0, c1 - c0);
  for (long c = c0; c < c1; c++) row[c] = (c5_real)(row[c] * inv);
}

c5_status c5k_local_attn_forward_cpu(c5k_ctx *ctx, const c5k_local_attn *L, const void *q_, const void *k_,
                                     const void *v_, long ldqkv, const uint8_t *mask, void *o_, long ldo,
                                     double *rmax, double *rinv, uint8_t *uni)
{
  if (L->bf16) return C5K_ERR(C5_ERR_NOTIMPL, "local_attn_forward: the CPU takes c5_real tensors, not bf16");
  const c5_real *q = q_, *k = k_, *v = v_;
  c5_real *o = o_;
  const long n = L->n, w = L->window, W = (n + w - 1) / w, H = L->heads, dh = L->dim_head, lw = slots(L);
  const long ntask = L->batch * H * W;
  const int nthr = num_threads(ctx, L);
  if (nthr < 1) return work_error("forward", ctx, L);
  c5_status fail = C5_OK;
#pragma omp parallel num_threads(nthr)
  {
    c5_real *S = (c5_real *)ctx->work + (long)omp_get_thread_num() * scratch_per(L);   /* [w, L w] */
    c5k_ctx tctx = { 0 };
#pragma omp for schedule(static)
    for (long task = 0; task < ntask; task++) {
      const long b = task / (H * W), h = (task / W) % H, i = task % W;
      const win_geom g = geom(L, i);
      const long nk = g.ke - g.kb, row0 = b * n;
      const c5_real *Q = q + (row0 + g.t0) * ldqkv + h * dh;
      const c5_real *K = k + (row0 + g.kb) * ldqkv + h * dh;
      const c5_real *V = v + (row0 + g.kb) * ldqkv + h * dh;
      const uint8_t *mk = mask ? mask + row0 : NULL;
      const long st0 = (b * H + h) * n + g.t0;   /* row stats index */
      c5_real *O = o + (row0 + g.t0) * ldo + h * dh;
      c5_status s1 = c5k_gemm_cpu(&tctx, 0, 1, g.m, nk, dh, L->scale, Q, ldqkv, K, ldqkv, 0.0, S, lw);
      long nuni = 0;
      for (long r = 0; r < g.m; r++) {
        row_softmax(L, &g, g.t0 + r, mk, S + r * lw, &rmax[st0 + r], &rinv[st0 + r], &uni[st0 + r]);
        nuni += uni[st0 + r];
      }
      c5_status s2 = c5k_gemm_cpu(&tctx, 0, 0, g.m, dh, nk, 1.0, S, lw, V, ldqkv, 0.0, O, ldo);
      if (nuni && g.npad) {   /* out-of-range slots: v = -1, weight 1 / (L w) */
        const c5_real add = (c5_real)(-(double)g.npad / (double)lw);
        for (long r = 0; r < g.m; r++)
          if (uni[st0 + r])
            for (long e = 0; e < dh; e++) O[r * ldo + e] += add;
      }
      if (s1 != C5_OK || s2 != C5_OK) {
#pragma omp critical(c5k_local_attn_fail)
        fail = s1 != C5_OK ? s1 : s2;
      }
    }
  }
  return fail;
}

c5_status c5k_local_attn_backward_cpu(c5k_ctx *ctx, const c5k_local_attn *L, const void *q_, const void *k_,
                                      const void *v_, long ldqkv, const uint8_t *mask, const double *rmax,
                                      const double *rinv, const uint8_t *uni, const void *o, const void *dout_,
                                      long ldo, void *dq_, void *dk_, void *dv_, long lddkv)
{
  (void)o;   /* D from P and dP, as each window's score block has them: dq may be o */
  if (L->bf16) return C5K_ERR(C5_ERR_NOTIMPL, "local_attn_backward: the CPU takes c5_real tensors, not bf16");
  const c5_real *q = q_, *k = k_, *v = v_, *dout = dout_;
  c5_real *dq = dq_, *dk = dk_, *dv = dv_;
  const long n = L->n, w = L->window, W = (n + w - 1) / w, H = L->heads, dh = L->dim_head, lw = slots(L);
  const long CH = L->chunk, nch = (W + CH - 1) / CH, BH = L->batch * H, rows = L->batch * n;
  const int nthr = num_threads(ctx, L);
  if (nthr < 1) return work_error("backward", ctx, L);
  if (CH < 1 || CH < L->look_backward + L->look_forward)   /* smaller chunks would race on dk, dv */
    return C5K_ERR(C5_ERR_ARG, "cpu local_attn_backward: chunk %ld must be >= 1 and >= look_backward + "
                   "look_forward = %d", CH, L->look_backward + L->look_forward);
  c5_status fail = C5_OK;
  /* dk and dv collect from several query windows: start from zero */
  for (long r = 0; r < rows; r++) {
    memset(dk + r * lddkv, 0, (size_t)(H * dh) * sizeof *dk);
    memset(dv + r * lddkv, 0, (size_t)(H * dh) * sizeof *dv);
  }
  for (int phase = 0; phase < 2; phase++) {
    const long nph = (nch + 1 - phase) / 2;   /* chunks 2k + phase */
    const long ntask = BH * nph;
#pragma omp parallel num_threads(nthr)
    {
      c5_real *S = (c5_real *)ctx->work + (long)omp_get_thread_num() * scratch_per(L);   /* scores, then dS */
      c5_real *P = S + w * lw, *dP = P + w * lw;
      c5k_ctx tctx = { 0 };
#pragma omp for schedule(static)
      for (long task = 0; task < ntask; task++) {
        const long bh = task / nph, ch = 2 * (task % nph) + phase, b = bh / H, h = bh % H;
        const long row0 = b * n;
        const uint8_t *mk = mask ? mask + row0 : NULL;
        c5_status s = C5_OK;
        for (long i = ch * CH; i < (ch + 1) * CH && i < W && s == C5_OK; i++) {
          const win_geom g = geom(L, i);
          const long nk = g.ke - g.kb, st0 = bh * n + g.t0;
          const c5_real *Q = q + (row0 + g.t0) * ldqkv + h * dh;
          const c5_real *K = k + (row0 + g.kb) * ldqkv + h * dh;
          const c5_real *V = v + (row0 + g.kb) * ldqkv + h * dh;
          const c5_real *dO = dout + (row0 + g.t0) * ldo + h * dh;
          c5_real *dQ = dq + (row0 + g.t0) * ldo + h * dh;
          c5_real *dK = dk + (row0 + g.kb) * lddkv + h * dh;
          c5_real *dV = dv + (row0 + g.kb) * lddkv + h * dh;
          s = c5k_gemm_cpu(&tctx, 0, 1, g.m, nk, dh, L->scale, Q, ldqkv, K, ldqkv, 0.0, P, lw);
          if (s == C5_OK) s = c5k_gemm_cpu(&tctx, 0, 1, g.m, nk, dh, 1.0, dO, ldo, V, ldqkv, 0.0, dP, lw);
          if (s != C5_OK) break;
          for (long r = 0; r < g.m; r++) {
            c5_real *pr = P + r * lw, *dpr = dP + r * lw, *dsr = S + r * lw;
            row_probs(L, &g, g.t0 + r, mk, pr, rmax[st0 + r], rinv[st0 + r], uni[st0 + r]);
            if (uni[st0 + r]) {   /* the scores were constants: no gradient */
              for (long col = 0; col < nk; col++) dsr[col] = 0;
              continue;
            }
            double D = 0;
            for (long col = 0; col < nk; col++) D += (double)pr[col] * dpr[col];
            for (long col = 0; col < nk; col++) dsr[col] = (c5_real)(pr[col] * ((double)dpr[col] - D));
          }
          s = c5k_gemm_cpu(&tctx, 0, 0, g.m, dh, nk, L->scale, S, lw, K, ldqkv, 0.0, dQ, ldo);
          if (s == C5_OK) s = c5k_gemm_cpu(&tctx, 1, 0, nk, dh, g.m, L->scale, S, lw, Q, ldqkv, 1.0, dK, lddkv);
          if (s == C5_OK) s = c5k_gemm_cpu(&tctx, 1, 0, nk, dh, g.m, 1.0, P, lw, dO, ldo, 1.0, dV, lddkv);
        }
        if (s != C5_OK) {
#pragma omp critical(c5k_local_attn_fail)
          fail = s;
        }
      }
    }
    if (fail != C5_OK) return fail;
  }
  return C5_OK;
}

int c5k_local_attn_bf16_cpu(c5k_ctx *ctx, const c5k_local_attn *L)
{
  (void)ctx;
  (void)L;
  return 0;   /* the CPU computes in c5_real throughout */
}
