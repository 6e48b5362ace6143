/* attn_local.c - LocalMHA (attn_local.h), forward and backward.

   The reference (local_attention.py, LocalAttention.forward) in the terms
   used here. Windows of w tokens; the sequence is padded to n' = W w
   (autopad: q = k = v = 0 there, positions real). Query t in window
   i = t / w sees L = lb + 1 + lf windows of key slots, i - lb .. i + lf;
   a slot in a window outside 0..W-1 holds k = v = -1 and is always masked.
   Slot at position p is masked when
     out of range (pad_mask), or key mask false (p >= n: false), or
     causal:               p > t, and with exact_windowsize t - p > w lb,
     non-causal exact:     p - t > w lf or t - p > w lb.
   The masked scores become -finfo.max (not -inf), so softmax gives them
   exactly 0, unless every slot of the row is masked: then the softmax is
   UNIFORM, 1 / (L w), over all L w slots, out-of-range ones (v = -1) and
   masked keys included. Here a row's unmasked slots form one range of
   positions [lo, hi) (minus the key mask); keys p >= n have score 0 and
   v = 0, so the GEMMs cover only the real keys and the zero keys enter
   the softmax sum as a count; a uniform row adds -(#out-of-range)/(L w).

   Forward: per (batch, head, query window) task, S = scale Q K^T over the
   window's real keys (GEMM), masked softmax (row max, vectorized exp, sum
   in double), O = P V (GEMM). Saved per row: the max and 1/sum, so the
   backward recomputes P bit for bit instead of storing O(n L w) of it.
   Backward: dP = dO V^T, dS = P (dP - rowsum(P dP)), dQ = scale dS K,
   dK += scale dS^T Q, dV += P^T dO. dK and dV of a key window collect
   from lb + 1 + lf query windows: the query windows are cut into fixed
   chunks of `chunk` >= lb + lf windows, the even chunks run in parallel,
   then the odd ones, so no two tasks write one row at the same time and
   each sum has the same order whatever the thread count. */
#include <math.h>
#include <float.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "c5_internal.h"
#include "backend.h"
#include "attn_local.h"

#define LN_EPS 1e-5
#define DEFAULT_CHUNK 8

struct c5_attn_local_cache {
  long batch_cap, n_cap;   /* capacity */
  long batch, n;           /* of the last forward */
  int has_mask;
  uint8_t *mask;           /* [batch, n] copy of the key mask */
  c5_real *xn;             /* [rows, dim] LayerNorm output */
  double *mean, *rstd;     /* [rows] */
  c5_real *qkv;            /* [rows, 3 HD]: q | k | v, head h at h dh within each */
  c5_real *att;            /* [rows, HD] head outputs merged, before to_out */
  double *rmax, *rinv;     /* [batch, heads, n] softmax row max and 1 / sum */
  uint8_t *uni;            /* [batch, heads, n] 1: every slot masked, uniform softmax */
  c5_real *datt;           /* [rows, HD] backward scratch */
  c5_real *dqkv;           /* [rows, 3 HD] backward scratch */
  c5_real *dxn;            /* [rows, dim] backward scratch */
  double *work;            /* LayerNorm rowpart reduction */
  long work_len;
  int nthr;                /* threads the scratch was sized for */
  long scratch_per;        /* c5_real per thread: 3 w L w */
  c5_real *scratch;
};

c5_status c5_attn_local_init(c5_attn_local *a, c5_params *p, const char *prefix, int dim, int heads, int dim_head,
                             long window, int look_backward, int look_forward, int causal, int exact_windowsize)
{
  C5_CHECK(a && p, C5_ERR_ARG, "c5_attn_local_init: NULL argument");
  C5_CHECK(dim > 0 && heads > 0 && dim_head > 0, C5_ERR_ARG,
           "%s: LocalMHA dim %d, heads %d, dim_head %d must all be > 0", prefix, dim, heads, dim_head);
  C5_CHECK(window > 0, C5_ERR_ARG, "%s: LocalMHA window_size %ld must be > 0", prefix, window);
  C5_CHECK(look_backward >= 0 && look_forward >= 0, C5_ERR_ARG, "%s: LocalMHA look_backward %d, look_forward %d "
           "must be >= 0", prefix, look_backward, look_forward);
  C5_CHECK(!(causal && look_forward > 0), C5_ERR_ARG, "%s: LocalMHA is causal, look_forward %d must be 0 "
           "(the reference: 'you cannot look forward if causal')", prefix, look_forward);
  memset(a, 0, sizeof *a);
  a->dim = dim;
  a->heads = heads;
  a->dim_head = dim_head;
  a->window = window;
  a->look_backward = look_backward;
  a->look_forward = look_forward;
  a->causal = causal != 0;
  a->exact_windowsize = exact_windowsize != 0;
  a->chunk = DEFAULT_CHUNK > look_backward + look_forward ? DEFAULT_CHUNK : look_backward + look_forward;
  long hd = (long)heads * dim_head;
  long d1[1] = { dim }, wqkv[2] = { 3 * hd, dim }, wout[2] = { dim, hd };
  C5_CALL(c5_params_add(p, prefix, "norm.weight", 1, d1, &a->norm_w));
  C5_CALL(c5_params_add(p, prefix, "norm.bias", 1, d1, &a->norm_b));
  C5_CALL(c5_params_add(p, prefix, "to_qkv.weight", 2, wqkv, &a->to_qkv));
  C5_CALL(c5_params_add(p, prefix, "to_out.weight", 2, wout, &a->to_out));
  return C5_OK;
}

c5_status c5_attn_local_cache_create(const c5_attn_local *a, long batch, long n, c5_attn_local_cache **out)
{
  C5_CHECK(a && out, C5_ERR_ARG, "c5_attn_local_cache_create: NULL argument");
  C5_CHECK(batch > 0 && n > 0, C5_ERR_ARG, "LocalMHA cache: batch %ld, n %ld must be > 0", batch, n);
  c5_attn_local_cache *c;
  C5_CALLOC(c, 1);
  c5_status st = C5_OK;
  const long rows = batch * n, hd = (long)a->heads * a->dim_head, d = a->dim;
  const long lw = (long)(a->look_backward + 1 + a->look_forward) * a->window;
  c->batch_cap = batch;
  c->n_cap = n;
#ifdef _OPENMP
  c->nthr = omp_get_max_threads();
#else
  c->nthr = 1;
#endif
  c->scratch_per = 3 * a->window * lw;
  c->work_len = c5k_rowpart_work(rows, d);
#define ALLOC(p, cnt) do { (p) = calloc((size_t)(cnt) + 1, sizeof *(p)); \
    C5_CHECK_GOTO((p) != NULL, st, fail, C5_ERR_MEM, "LocalMHA cache for [%ld, %ld, %ld]: out of memory " \
                  "allocating %s (%ld elements)", batch, n, d, #p, (long)(cnt)); } while (0)
  ALLOC(c->mask, rows);
  ALLOC(c->xn, rows * d);
  ALLOC(c->mean, rows);
  ALLOC(c->rstd, rows);
  ALLOC(c->qkv, rows * 3 * hd);
  ALLOC(c->att, rows * hd);
  ALLOC(c->rmax, rows * a->heads);
  ALLOC(c->rinv, rows * a->heads);
  ALLOC(c->uni, rows * a->heads);
  ALLOC(c->datt, rows * hd);
  ALLOC(c->dqkv, rows * 3 * hd);
  ALLOC(c->dxn, rows * d);
  ALLOC(c->work, c->work_len);
  ALLOC(c->scratch, c->scratch_per * c->nthr);
#undef ALLOC
  *out = c;
  return C5_OK;
fail:
  c5_attn_local_cache_destroy(&c);
  return st;
}

c5_status c5_attn_local_cache_destroy(c5_attn_local_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_attn_local_cache *c = *cp;
  free(c->mask); free(c->xn); free(c->mean); free(c->rstd); free(c->qkv); free(c->att);
  free(c->rmax); free(c->rinv); free(c->uni); free(c->datt); free(c->dqkv); free(c->dxn);
  free(c->work); free(c->scratch);
  C5_FREE(*cp);
  return C5_OK;
}

/* Geometry of query window i: real queries t0 .. t0+m-1, real keys kb .. ke-1
   (the GEMM columns), slot positions inside the padded sequence pb .. pe-1
   (pb = kb); every other slot of the L w is out of range. */
typedef struct { long t0, m, kb, ke, pe, npad; } win_geom;

static win_geom geom(const c5_attn_local *a, long n, long i)
{
  const long w = a->window, W = (n + w - 1) / w, np = W * w;
  const long lw = (long)(a->look_backward + 1 + a->look_forward) * w;
  win_geom g;
  g.t0 = i * w;
  g.m = n - g.t0 < w ? n - g.t0 : w;
  long s0 = (i - a->look_backward) * w, s1 = (i + a->look_forward + 1) * w;
  g.kb = s0 > 0 ? s0 : 0;
  g.ke = s1 < n ? s1 : n;
  g.pe = s1 < np ? s1 : np;
  g.npad = lw - (g.pe - g.kb);
  return g;
}

/* Unmasked positions of query t before the key mask: [lo, hi). */
static void row_range(const c5_attn_local *a, const win_geom *g, long t, long *lo, long *hi)
{
  const long w = a->window;
  long l = g->kb, h = g->pe;
  if (a->causal) {
    if (h > t + 1) h = t + 1;
    if (a->exact_windowsize && l < t - w * a->look_backward) l = t - w * a->look_backward;
  } else if (a->exact_windowsize) {
    if (l < t - w * a->look_backward) l = t - w * a->look_backward;
    if (h > t + w * a->look_forward + 1) h = t + w * a->look_forward + 1;
  }
  *lo = l;
  *hi = h;
}

/* Softmax of one row of scores in place over the GEMM columns (positions kb + c).
   Writes P (uniform rows: 1 / (L w) everywhere) and returns the row stats;
   row_probs below redoes the same operations from the stats, same bits. */
static void row_softmax(const c5_attn_local *a, const win_geom *g, long n, long t, const uint8_t *mk,
                        c5_real *row, double *rmax, double *rinv, uint8_t *uni)
{
  const long nk = g->ke - g->kb;
  const double lw = (double)(a->look_backward + 1 + a->look_forward) * a->window;
  long lo, hi;
  row_range(a, g, t, &lo, &hi);
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
static void row_probs(const c5_attn_local *a, const win_geom *g, long n, long t, const uint8_t *mk,
                      c5_real *row, double mx, double inv, int uni)
{
  const long nk = g->ke - g->kb;
  const double lw = (double)(a->look_backward + 1 + a->look_forward) * a->window;
  if (uni) {
    for (long c = 0; c < nk; c++) row[c] = (c5_real)(1.0 / lw);
    return;
  }
  long lo, hi;
  row_range(a, g, t, &lo, &hi);
  long rhi = hi < n ? hi : n;
  long c0 = lo - g->kb, c1 = rhi - g->kb;
  if (c1 < c0) c1 = c0;
  for (long c = 0; c < c0; c++) row[c] = 0;
  for (long c = c1; c < nk; c++) row[c] = 0;
  for (long c = c0; c < c1; c++) row[c] = (!mk || mk[g->kb + c]) ? (c5_real)(row[c] - mx) : (c5_real)-INFINITY;
  c5k_vexp(row + c0, c1 - c0);
  for (long c = c0; c < c1; c++) row[c] = (c5_real)(row[c] * inv);
}

static int num_threads(const c5_attn_local_cache *c)
{
#ifdef _OPENMP
  int t = omp_get_max_threads();
  return t < c->nthr ? t : c->nthr;
#else
  return 1;
#endif
}

static int thread_id(void)
{
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/* Attention core, forward: att from qkv. */
static c5_status attend_forward(const c5k_ops *ops, const c5_attn_local *a, c5_attn_local_cache *c)
{
  const long n = c->n, w = a->window, W = (n + w - 1) / w, H = a->heads, dh = a->dim_head;
  const long hd = H * dh, ld3 = 3 * hd, lw = (long)(a->look_backward + 1 + a->look_forward) * w;
  const double scale = 1.0 / sqrt((double)dh);
  const long ntask = c->batch * H * W;
  c5_status fail = C5_OK;
#pragma omp parallel num_threads(num_threads(c))
  {
    c5_real *S = c->scratch + (long)thread_id() * c->scratch_per;   /* [w, L w] */
    c5k_ctx ctx = { 0 };
#pragma omp for schedule(static)
    for (long task = 0; task < ntask; task++) {
      const long b = task / (H * W), h = (task / W) % H, i = task % W;
      const win_geom g = geom(a, n, i);
      const long nk = g.ke - g.kb, row0 = b * n;
      const c5_real *Q = c->qkv + (row0 + g.t0) * ld3 + h * dh;
      const c5_real *K = c->qkv + (row0 + g.kb) * ld3 + hd + h * dh;
      const c5_real *V = c->qkv + (row0 + g.kb) * ld3 + 2 * hd + h * dh;
      const uint8_t *mk = c->has_mask ? c->mask + row0 : NULL;
      const long st0 = (b * H + h) * n + g.t0;   /* row stats index */
      c5_real *O = c->att + (row0 + g.t0) * hd + h * dh;
      c5_status s1 = ops->gemm(&ctx, 0, 1, g.m, nk, dh, scale, Q, ld3, K, ld3, 0.0, S, lw);
      long nuni = 0;
      for (long r = 0; r < g.m; r++) {
        row_softmax(a, &g, n, g.t0 + r, mk, S + r * lw, &c->rmax[st0 + r], &c->rinv[st0 + r], &c->uni[st0 + r]);
        nuni += c->uni[st0 + r];
      }
      c5_status s2 = ops->gemm(&ctx, 0, 0, g.m, dh, nk, 1.0, S, lw, V, ld3, 0.0, O, hd);
      if (nuni && g.npad) {   /* out-of-range slots: v = -1, weight 1 / (L w) */
        const c5_real add = (c5_real)(-(double)g.npad / (double)lw);
        for (long r = 0; r < g.m; r++)
          if (c->uni[st0 + r])
            for (long e = 0; e < dh; e++) O[r * hd + e] += add;
      }
      if (s1 != C5_OK || s2 != C5_OK) {
#pragma omp critical(c5_attn_local_fail)
        fail = s1 != C5_OK ? s1 : s2;
      }
    }
  }
  if (fail != C5_OK) return c5_err_trace(fail, __FILE__, __LINE__);
  return C5_OK;
}

/* Attention core, backward: dqkv from datt (dq written, dk and dv accumulated
   into a zeroed dqkv). */
static c5_status attend_backward(const c5k_ops *ops, const c5_attn_local *a, c5_attn_local_cache *c)
{
  const long n = c->n, w = a->window, W = (n + w - 1) / w, H = a->heads, dh = a->dim_head;
  const long hd = H * dh, ld3 = 3 * hd, lw = (long)(a->look_backward + 1 + a->look_forward) * w;
  const double scale = 1.0 / sqrt((double)dh);
  const long CH = a->chunk, nch = (W + CH - 1) / CH, BH = c->batch * H;
  c5_status fail = C5_OK;
  memset(c->dqkv, 0, (size_t)(c->batch * n * ld3) * sizeof *c->dqkv);
  for (int phase = 0; phase < 2; phase++) {
    const long nph = (nch + 1 - phase) / 2;   /* chunks 2k + phase */
    const long ntask = BH * nph;
#pragma omp parallel num_threads(num_threads(c))
    {
      c5_real *S = c->scratch + (long)thread_id() * c->scratch_per;   /* scores, then dS [w, L w] */
      c5_real *P = S + w * lw, *dP = P + w * lw;
      c5k_ctx ctx = { 0 };
#pragma omp for schedule(static)
      for (long task = 0; task < ntask; task++) {
        const long bh = task / nph, ch = 2 * (task % nph) + phase, b = bh / H, h = bh % H;
        const long row0 = b * n;
        const uint8_t *mk = c->has_mask ? c->mask + row0 : NULL;
        c5_status s = C5_OK;
        for (long i = ch * CH; i < (ch + 1) * CH && i < W && s == C5_OK; i++) {
          const win_geom g = geom(a, n, i);
          const long nk = g.ke - g.kb, st0 = bh * n + g.t0;
          const c5_real *Q = c->qkv + (row0 + g.t0) * ld3 + h * dh;
          const c5_real *K = c->qkv + (row0 + g.kb) * ld3 + hd + h * dh;
          const c5_real *V = c->qkv + (row0 + g.kb) * ld3 + 2 * hd + h * dh;
          const c5_real *dO = c->datt + (row0 + g.t0) * hd + h * dh;
          c5_real *dQ = c->dqkv + (row0 + g.t0) * ld3 + h * dh;
          c5_real *dK = c->dqkv + (row0 + g.kb) * ld3 + hd + h * dh;
          c5_real *dV = c->dqkv + (row0 + g.kb) * ld3 + 2 * hd + h * dh;
          s = ops->gemm(&ctx, 0, 1, g.m, nk, dh, scale, Q, ld3, K, ld3, 0.0, P, lw);
          if (s == C5_OK) s = ops->gemm(&ctx, 0, 1, g.m, nk, dh, 1.0, dO, hd, V, ld3, 0.0, dP, lw);
          if (s != C5_OK) break;
          for (long r = 0; r < g.m; r++) {
            c5_real *pr = P + r * lw, *dpr = dP + r * lw, *dsr = S + r * lw;
            row_probs(a, &g, n, g.t0 + r, mk, pr, c->rmax[st0 + r], c->rinv[st0 + r], c->uni[st0 + r]);
            if (c->uni[st0 + r]) {   /* the scores were constants: no gradient */
              for (long col = 0; col < nk; col++) dsr[col] = 0;
              continue;
            }
            double D = 0;
            for (long col = 0; col < nk; col++) D += (double)pr[col] * dpr[col];
            for (long col = 0; col < nk; col++) dsr[col] = (c5_real)(pr[col] * ((double)dpr[col] - D));
          }
          s = ops->gemm(&ctx, 0, 0, g.m, dh, nk, scale, S, lw, K, ld3, 0.0, dQ, ld3);
          if (s == C5_OK) s = ops->gemm(&ctx, 1, 0, nk, dh, g.m, scale, S, lw, Q, ld3, 1.0, dK, ld3);
          if (s == C5_OK) s = ops->gemm(&ctx, 1, 0, nk, dh, g.m, 1.0, P, lw, dO, hd, 1.0, dV, ld3);
        }
        if (s != C5_OK) {
#pragma omp critical(c5_attn_local_fail)
          fail = s;
        }
      }
    }
    if (fail != C5_OK) return c5_err_trace(fail, __FILE__, __LINE__);
  }
  return C5_OK;
}

c5_status c5_attn_local_forward(const c5_attn_local *a, const c5_params *p, long batch, long n, const c5_real *x,
                                const uint8_t *mask, c5_attn_local_cache *c, c5_real *out)
{
  C5_CHECK(a && p && x && c && out, C5_ERR_ARG, "c5_attn_local_forward: NULL argument");
  C5_CHECK(batch > 0 && n > 0 && batch <= c->batch_cap && n <= c->n_cap, C5_ERR_SHAPE,
           "LocalMHA: input [%ld, %ld, %d], cache made for at most [%ld, %ld, %d]", batch, n, a->dim,
           c->batch_cap, c->n_cap, a->dim);
  const c5k_ops *ops = c5_params_backend(p)->ops;
  const long rows = batch * n, d = a->dim, hd = (long)a->heads * a->dim_head;
  c5k_ctx ctx = { .work = c->work, .work_len = c->work_len };
  c->batch = batch;
  c->n = n;
  c->has_mask = mask != NULL;
  if (mask) memcpy(c->mask, mask, (size_t)rows);
  C5_CALL(ops->layernorm_forward(&ctx, x, c5_params_value(p, a->norm_w), c5_params_value(p, a->norm_b), rows,
                                 (int)d, LN_EPS, c->xn, c->mean, c->rstd));
  C5_CALL(ops->gemm(&ctx, 0, 1, rows, 3 * hd, d, 1.0, c->xn, d, c5_params_value(p, a->to_qkv), d, 0.0,
                     c->qkv, 3 * hd));
  c5_status st = attend_forward(ops, a, c);
  C5_CALL(st);
  C5_CALL(ops->gemm(&ctx, 0, 1, rows, d, hd, 1.0, c->att, hd, c5_params_value(p, a->to_out), hd, 0.0, out, d));
  return C5_OK;
}

c5_status c5_attn_local_backward(const c5_attn_local *a, const c5_params *p, c5_attn_local_cache *c, const c5_real *x,
                                 const c5_real *dout, c5_real *dx)
{
  C5_CHECK(a && p && c && x && dout && dx, C5_ERR_ARG, "c5_attn_local_backward: NULL argument");
  C5_CHECK(c->n > 0, C5_ERR_ARG, "LocalMHA backward: no forward has filled the cache");
  C5_CHECK(a->chunk >= a->look_backward + a->look_forward && a->chunk > 0, C5_ERR_ARG,
           "LocalMHA backward: chunk %ld must be >= look_backward + look_forward = %d", a->chunk,
           a->look_backward + a->look_forward);
  const c5k_ops *ops = c5_params_backend(p)->ops;
  const long rows = c->batch * c->n, d = a->dim, hd = (long)a->heads * a->dim_head;
  c5k_ctx ctx = { .work = c->work, .work_len = c->work_len };
  /* to_out: dW += dout^T att; datt = dout W */
  c5_real *prod = c5_params_scratch(p);
  C5_CALL(ops->gemm_acc(&ctx, 1, 0, d, hd, rows, 1.0, dout, d, c->att, hd, prod, c5_params_acc(p, a->to_out)));
  C5_CALL(ops->gemm(&ctx, 0, 0, rows, hd, d, 1.0, dout, d, c5_params_value(p, a->to_out), hd, 0.0, c->datt, hd));
  c5_status st = attend_backward(ops, a, c);
  C5_CALL(st);
  /* to_qkv: dW += dqkv^T xn; dxn = dqkv W */
  C5_CALL(ops->gemm_acc(&ctx, 1, 0, 3 * hd, d, rows, 1.0, c->dqkv, 3 * hd, c->xn, d, prod,
                        c5_params_acc(p, a->to_qkv)));
  C5_CALL(ops->gemm(&ctx, 0, 0, rows, d, 3 * hd, 1.0, c->dqkv, 3 * hd, c5_params_value(p, a->to_qkv), d, 0.0,
                     c->dxn, d));
  C5_CALL(ops->layernorm_backward(&ctx, x, c5_params_value(p, a->norm_w), c->mean, c->rstd, c->dxn, rows, (int)d,
                                  dx, c5_params_acc(p, a->norm_w), c5_params_acc(p, a->norm_b)));
  const long idx[] = { a->norm_w, a->norm_b, a->to_qkv, a->to_out };
  C5_CALL(c5_params_flush(p, idx, 4));
  return C5_OK;
}
