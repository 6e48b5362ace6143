/* attn_heavy.c - the reference's heavy-branch Attention (attn_heavy.h),
   forward and backward by hand.

   Forward (b batch, R routes, hpr = heads / R heads per route, dh head
   dim, D = heads * dh, L = 2 * hpr * dh the to_kv rows of one route):
     xn = RMSNorm(xq), cn = RMSNorm(ctx)                       (same gamma)
     qraw = xn Wq^T; q = rot(qraw * qscore)                    [b*nq, D]
     kvraw[b,r] = cn[b,r] Wkv_r^T, Wkv_r = rows r*L..(r+1)*L   [b, R, nk, L]
       head hh of route r: k = cols hh*2dh .. +dh, v = the next dh
     kvf[b,r] = [null_kv row; rot(k * kscore^mk) | v * kscore] [b, R, 1+nk, L]
     per head h = r*hpr + hh:  P = softmax(q_h k_h^T dh^-1/2, key mask)
                               o_h = P v_h   (o [b*nq, D], column h*dh + e)
     out = o Wout^T
   kvf keeps every route's heads interleaved exactly as to_kv lays them out,
   so each head's K and V are strided views (ld = L) that the per-head GEMMs
   read directly, and the backward's dK/dV land where the to_kv GEMM wants
   them. Softmax rows run under OpenMP; each row is summed in one fixed
   order, so results do not depend on the thread count. */
#include <math.h>
#include "c5_internal.h"
#include "backend.h"
#include "attn_heavy.h"

struct c5_attn_heavy_cache {
  long batch_cap, nq_cap, nk_cap;
  /* shapes and options of the last forward */
  long batch, nq, nk;
  int valid, has_mask, has_kscore, has_qscore, has_rot;
  /* copies of the inputs (the backward takes none of them) */
  c5_real *xq;       /* [b, nq, dim] */
  c5_real *ctx;      /* [b, R, nk, dim] */
  uint8_t *kmask;    /* [b, R, nk] */
  c5_real *kscore;   /* [b, R, nk] */
  c5_real *qscore;   /* [b, nq] */
  /* activations */
  c5_real *xn;       /* [b, nq, dim] normed queries */
  double *rnq;       /* [b, nq] 1 / max(||xq||, eps) */
  c5_real *cn;       /* [b, R, nk, dim] normed context */
  double *rnc;       /* [b, R, nk] */
  c5_real *qraw;     /* [b, nq, D] to_q output */
  c5_real *q;        /* [b, nq, D] after qscore and rotary */
  c5_real *kvraw;    /* [b, R, nk, L] to_kv output */
  c5_real *kvf;      /* [b, R, 1 + nk, L] null slot, then scored/rotated k and scored v */
  c5_real *p;        /* [b, heads, nq, 1 + nk] attention probabilities */
  c5_real *o;        /* [b, nq, D] heads merged */
  double *qcos, *qsin;   /* [b, nq, dh/2] rotary tables (when positions were given) */
  double *kcos, *ksin;   /* [b, R, nk, dh/2] */
  /* backward scratch */
  c5_real *dq;       /* [b, nq, D] */
  c5_real *dkvf;     /* [b, R, 1 + nk, L] */
  c5_real *dpo;      /* [b, nq, D] dL/do */
  c5_real *ds;       /* [nq, 1 + nk] one head's dP, then dS */
  c5_real *dxn;      /* [b, nq, dim] */
  c5_real *dcn;      /* [b, R, nk, dim] */
  double *work;      /* rowpart reductions of the RMSNorm backward */
  long work_len;
};

c5_status c5_attn_heavy_init(c5_attn_heavy *a, c5_params *p, const char *prefix, int dim, int heads, int dim_head,
                             int routes, int multiply_keys_by_score)
{
  C5_CHECK(a && p, C5_ERR_ARG, "%s: attention or parameter table is NULL", prefix);
  C5_CHECK(dim > 0 && heads > 0 && dim_head > 0, C5_ERR_ARG, "%s: dim %d, heads %d, dim_head %d must be > 0",
           prefix, dim, heads, dim_head);
  C5_CHECK(routes > 0 && heads % routes == 0, C5_ERR_ARG,
           "%s: number of heads (%d) must be divisible by the number of key / value routes (%d)", prefix, heads,
           routes);
  a->dim = dim;
  a->heads = heads;
  a->dim_head = dim_head;
  a->routes = routes;
  a->multiply_keys_by_score = multiply_keys_by_score ? 1 : 0;
  long hid = (long)heads * dim_head;
  long dg[1] = { dim }, dn[3] = { 2, heads, dim_head }, dq[2] = { hid, dim }, dkv[2] = { 2 * hid, dim },
       dout[2] = { dim, hid };
  C5_CALL(c5_params_add(p, prefix, "norm.gamma", 1, dg, &a->norm_gamma));
  C5_CALL(c5_params_add(p, prefix, "null_kv", 3, dn, &a->null_kv));
  C5_CALL(c5_params_add(p, prefix, "to_q.weight", 2, dq, &a->to_q));
  C5_CALL(c5_params_add(p, prefix, "to_kv.weight", 2, dkv, &a->to_kv));
  C5_CALL(c5_params_add(p, prefix, "to_out.weight", 2, dout, &a->to_out));
  return C5_OK;
}

static void cache_free(c5_attn_heavy_cache *c)
{
  free(c->xq); free(c->ctx); free(c->kmask); free(c->kscore); free(c->qscore);
  free(c->xn); free(c->rnq); free(c->cn); free(c->rnc); free(c->qraw); free(c->q);
  free(c->kvraw); free(c->kvf); free(c->p); free(c->o);
  free(c->qcos); free(c->qsin); free(c->kcos); free(c->ksin);
  free(c->dq); free(c->dkvf); free(c->dpo); free(c->ds); free(c->dxn); free(c->dcn); free(c->work);
  free(c);
}

static c5_status cache_alloc(const c5_attn_heavy *a, long B, long nq, long nk, c5_attn_heavy_cache *c)
{
  const long dim = a->dim, R = a->routes, D = (long)a->heads * a->dim_head, L = 2 * D / R, half = a->dim_head / 2;
  const long nqr = B * nq, nkr = B * R * nk, n1 = nk + 1;
  c->batch_cap = B; c->nq_cap = nq; c->nk_cap = nk;
  C5_CALLOC(c->xq, nqr * dim);
  C5_CALLOC(c->ctx, nkr * dim);
  C5_CALLOC(c->kmask, nkr);
  C5_CALLOC(c->kscore, nkr);
  C5_CALLOC(c->qscore, nqr);
  C5_CALLOC(c->xn, nqr * dim);
  C5_CALLOC(c->rnq, nqr);
  C5_CALLOC(c->cn, nkr * dim);
  C5_CALLOC(c->rnc, nkr);
  C5_CALLOC(c->qraw, nqr * D);
  C5_CALLOC(c->q, nqr * D);
  C5_CALLOC(c->kvraw, nkr * L);
  C5_CALLOC(c->kvf, B * R * n1 * L);
  C5_CALLOC(c->p, B * a->heads * nq * n1);
  C5_CALLOC(c->o, nqr * D);
  C5_CALLOC(c->qcos, nqr * half);
  C5_CALLOC(c->qsin, nqr * half);
  C5_CALLOC(c->kcos, nkr * half);
  C5_CALLOC(c->ksin, nkr * half);
  C5_CALLOC(c->dq, nqr * D);
  C5_CALLOC(c->dkvf, B * R * n1 * L);
  C5_CALLOC(c->dpo, nqr * D);
  C5_CALLOC(c->ds, nq * n1);
  C5_CALLOC(c->dxn, nqr * dim);
  C5_CALLOC(c->dcn, nkr * dim);
  c->work_len = c5k_rowpart_work(nqr > nkr ? nqr : nkr, dim);
  C5_CALLOC(c->work, c->work_len);
  return C5_OK;
}

c5_status c5_attn_heavy_cache_create(const c5_attn_heavy *a, long batch, long nq, long nk, c5_attn_heavy_cache **out)
{
  C5_CHECK(a && out, C5_ERR_ARG, "heavy attention cache: NULL argument");
  C5_CHECK(batch >= 0 && nq >= 0 && nk >= 0, C5_ERR_ARG,
           "heavy attention cache: batch %ld, nq %ld, nk %ld must be >= 0", batch, nq, nk);
  c5_attn_heavy_cache *c = calloc(1, sizeof *c);
  C5_CHECK(c, C5_ERR_MEM, "out of memory allocating the heavy attention cache");
  c5_status st = cache_alloc(a, batch, nq, nk, c);
  if (st != C5_OK) { cache_free(c); return c5_err_trace(st, __FILE__, __LINE__); }
  *out = c;
  return C5_OK;
}

c5_status c5_attn_heavy_cache_destroy(c5_attn_heavy_cache **c)
{
  if (!c || !*c) return C5_OK;
  cache_free(*c);
  *c = NULL;
  return C5_OK;
}

/* RotaryEmbedding(dim_head): freqs = pos * inv_freq[i], inv_freq[i] = 10000^(-2i/dh), i < dh/2, the
   table concatenated twice, so elements i and i + dh/2 share an angle. The reference computes the
   angles in float32; we compute them in double (vectors generated in double upcast them). */
static void rotary_table(long rows, const long *pos, int dh, double *cs, double *sn)
{
  const int half = dh / 2;
  double inv_freq[half];
  for (int i = 0; i < half; i++) inv_freq[i] = 1.0 / pow(10000.0, (double)(2 * i) / dh);
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++)
    for (int i = 0; i < half; i++) {
      double f = (double)pos[r] * inv_freq[i];
      cs[r * half + i] = cos(f);
      sn[r * half + i] = sin(f);
    }
}

/* t <- t cos + rotate_half(t) sin, rotate_half(t) = cat(-t2, t1) */
static inline void rot_apply(c5_real *t, int half, const double *cs, const double *sn)
{
  for (int i = 0; i < half; i++) {
    double t1 = t[i], t2 = t[i + half];
    t[i] = (c5_real)(t1 * cs[i] - t2 * sn[i]);
    t[i + half] = (c5_real)(t2 * cs[i] + t1 * sn[i]);
  }
}

/* the transpose (rotation by the negative angle): the gradient through rot_apply */
static inline void rot_transpose(c5_real *d, int half, const double *cs, const double *sn)
{
  for (int i = 0; i < half; i++) {
    double d1 = d[i], d2 = d[i + half];
    d[i] = (c5_real)(d1 * cs[i] + d2 * sn[i]);
    d[i + half] = (c5_real)(d2 * cs[i] - d1 * sn[i]);
  }
}

c5_status c5_attn_heavy_forward(const c5_attn_heavy *a, const c5_params *p, long batch, long nq, long nk,
                                const c5_real *xq, const c5_real *ctx, const uint8_t *kmask, const c5_real *kscore,
                                const c5_real *qscore, const long *qpos, const long *kpos,
                                c5_attn_heavy_cache *c, c5_real *out)
{
  const c5k_ops *ops = c5_params_backend(p)->ops;
  C5_CHECK(a && p && c, C5_ERR_ARG, "heavy attention forward: NULL attention, parameters or cache");
  C5_CHECK(batch >= 0 && nq >= 0 && nk >= 0, C5_ERR_ARG,
           "heavy attention forward: batch %ld, nq %ld, nk %ld must be >= 0", batch, nq, nk);
  C5_CHECK(batch <= c->batch_cap && nq <= c->nq_cap && nk <= c->nk_cap, C5_ERR_SHAPE,
           "heavy attention forward: batch %ld, nq %ld, nk %ld; the cache holds batch %ld, nq %ld, nk %ld",
           batch, nq, nk, c->batch_cap, c->nq_cap, c->nk_cap);
  C5_CHECK(!qpos == !kpos, C5_ERR_ARG, "heavy attention forward: rotary needs both qpos and kpos (got %s only)",
           qpos ? "qpos" : "kpos");
  C5_CHECK(!qpos || a->dim_head % 2 == 0, C5_ERR_ARG,
           "heavy attention forward: rotary embeddings need an even dim_head, got %d", a->dim_head);
  C5_CHECK((batch * nq == 0 || (xq && out)) && (batch * nk == 0 || ctx), C5_ERR_ARG,
           "heavy attention forward: xq, ctx or out is NULL");

  const int dim = a->dim, H = a->heads, dh = a->dim_head, R = a->routes, hpr = H / R, half = dh / 2;
  const long D = (long)H * dh, L = 2L * hpr * dh, n1 = nk + 1;
  const long nqr = batch * nq, nkr = batch * R * nk;
  const int mk = a->multiply_keys_by_score;
  c5k_ctx kc = { .work = c->work, .work_len = c->work_len };

  c->valid = 0;
  c->batch = batch; c->nq = nq; c->nk = nk;
  c->has_mask = kmask != NULL;
  c->has_kscore = kscore != NULL;
  c->has_qscore = qscore != NULL;
  c->has_rot = qpos != NULL;
  if (nqr) memcpy(c->xq, xq, (size_t)(nqr * dim) * sizeof *xq);
  if (nkr) memcpy(c->ctx, ctx, (size_t)(nkr * dim) * sizeof *ctx);
  if (kmask && nkr) memcpy(c->kmask, kmask, (size_t)nkr);
  if (kscore && nkr) memcpy(c->kscore, kscore, (size_t)nkr * sizeof *kscore);
  if (qscore && nqr) memcpy(c->qscore, qscore, (size_t)nqr * sizeof *qscore);
  c->valid = nqr == 0;   /* otherwise valid once the forward below completes */
  if (nqr == 0) return C5_OK;

  const c5_real *gamma = c5_params_value(p, a->norm_gamma), *nullkv = c5_params_value(p, a->null_kv);
  const c5_real *wq = c5_params_value(p, a->to_q), *wkv = c5_params_value(p, a->to_kv);
  const c5_real *wout = c5_params_value(p, a->to_out);

  /* norms and projections */
  C5_CALL(ops->rmsnorm_forward(&kc, xq, gamma, nqr, dim, c->xn, c->rnq));
  C5_CALL(ops->gemm(&kc, 0, 1, nqr, D, dim, 1.0, c->xn, dim, wq, dim, 0.0, c->qraw, D));
  if (nkr) {
    C5_CALL(ops->rmsnorm_forward(&kc, ctx, gamma, nkr, dim, c->cn, c->rnc));
    for (long b = 0; b < batch; b++)
      for (int r = 0; r < R; r++) {
        long br = b * R + r;
        C5_CALL(ops->gemm(&kc, 0, 1, nk, L, dim, 1.0, c->cn + br * nk * dim, dim, wkv + r * L * dim, dim, 0.0,
                          c->kvraw + br * nk * L, L));
      }
  }
  if (c->has_rot) {
    rotary_table(nqr, qpos, dh, c->qcos, c->qsin);
    rotary_table(nkr, kpos, dh, c->kcos, c->ksin);
  }

  /* q = rot(qraw * qscore) */
#pragma omp parallel for schedule(static)
  for (long i = 0; i < nqr; i++) {
    const c5_real *qr = c->qraw + i * D;
    c5_real *qo = c->q + i * D;
    c5_real qs = qscore ? qscore[i] : (c5_real)1;
    for (long e = 0; e < D; e++) qo[e] = qscore ? qr[e] * qs : qr[e];
    if (qpos)
      for (int h = 0; h < H; h++) rot_apply(qo + (long)h * dh, half, c->qcos + i * half, c->qsin + i * half);
  }

  /* kvf: slot 0 the null key/value of each head, then v * kscore and rot(k * kscore^mk) */
#pragma omp parallel for schedule(static)
  for (long row = 0; row < batch * R * n1; row++) {
    long br = row / n1, j = row % n1;
    int r = (int)(br % R);
    c5_real *dst = c->kvf + row * L;
    if (j == 0) {
      for (int hh = 0; hh < hpr; hh++) {
        long h = (long)r * hpr + hh;
        memcpy(dst + (long)hh * 2 * dh, nullkv + h * dh, (size_t)dh * sizeof *dst);
        memcpy(dst + (long)hh * 2 * dh + dh, nullkv + D + h * dh, (size_t)dh * sizeof *dst);
      }
      continue;
    }
    long t = br * nk + (j - 1);   /* token index into [b, R, nk] */
    const c5_real *src = c->kvraw + t * L;
    c5_real ks = kscore ? kscore[t] : (c5_real)1;
    for (int hh = 0; hh < hpr; hh++) {
      const c5_real *kr = src + (long)hh * 2 * dh, *vr = kr + dh;
      c5_real *kd = dst + (long)hh * 2 * dh, *vd = kd + dh;
      for (int e = 0; e < dh; e++) {
        vd[e] = kscore ? vr[e] * ks : vr[e];
        kd[e] = kscore && mk ? kr[e] * ks : kr[e];
      }
      if (kpos) rot_apply(kd, half, c->kcos + t * half, c->ksin + t * half);
    }
  }

  /* scores: P_h = q_h k_h^T dh^-1/2 */
  const double scale = 1.0 / sqrt((double)dh);
  for (long b = 0; b < batch; b++)
    for (int h = 0; h < H; h++) {
      const c5_real *qh = c->q + b * nq * D + (long)h * dh;
      const c5_real *kh = c->kvf + (b * R + h / hpr) * n1 * L + (long)(h % hpr) * 2 * dh;
      C5_CALL(ops->gemm(&kc, 0, 1, nq, n1, dh, scale, qh, D, kh, L, 0.0, c->p + (b * H + h) * nq * n1, n1));
    }

  /* softmax over each row (the row max first); masked keys get 0 (the reference's -finfo.max
     underflows to exactly 0 because the null slot always takes part) */
#pragma omp parallel for schedule(static)
  for (long row = 0; row < batch * H * nq; row++) {
    long bh = row / nq, b = bh / H;
    int r = (int)(bh % H) / hpr;
    const uint8_t *m = kmask ? kmask + (b * R + r) * nk : NULL;   /* key j >= 1 is m[j - 1] */
    c5_real *s = c->p + row * n1;
    c5_real mx = s[0];
    for (long j = 1; j < n1; j++)
      if ((!m || m[j - 1]) && s[j] > mx) mx = s[j];
    for (long j = 0; j < n1; j++) s[j] = (j == 0 || !m || m[j - 1]) ? s[j] - mx : 0;
    c5k_vexp(s, n1);
    if (m)
      for (long j = 1; j < n1; j++)
        if (!m[j - 1]) s[j] = 0;
    double sum = 0;
    for (long j = 0; j < n1; j++) sum += s[j];
    double inv = 1.0 / sum;
    for (long j = 0; j < n1; j++) s[j] = (c5_real)(s[j] * inv);
  }

  /* o_h = P_h v_h, heads merged; out = o Wout^T */
  for (long b = 0; b < batch; b++)
    for (int h = 0; h < H; h++) {
      const c5_real *vh = c->kvf + (b * R + h / hpr) * n1 * L + (long)(h % hpr) * 2 * dh + dh;
      C5_CALL(ops->gemm(&kc, 0, 0, nq, dh, n1, 1.0, c->p + (b * H + h) * nq * n1, n1, vh, L, 0.0,
                        c->o + b * nq * D + (long)h * dh, D));
    }
  C5_CALL(ops->gemm(&kc, 0, 1, nqr, dim, D, 1.0, c->o, D, wout, D, 0.0, out, dim));
  c->valid = 1;
  return C5_OK;
}

c5_status c5_attn_heavy_backward(const c5_attn_heavy *a, const c5_params *p, c5_attn_heavy_cache *c,
                                 const c5_real *dout, c5_real *dxq, c5_real *dctx, c5_real *dkscore, c5_real *dqscore)
{
  const c5k_ops *ops = c5_params_backend(p)->ops;
  C5_CHECK(a && p && c, C5_ERR_ARG, "heavy attention backward: NULL attention, parameters or cache");
  C5_CHECK(c->valid, C5_ERR_ARG, "heavy attention backward: the cache holds no forward");
  const long batch = c->batch, nq = c->nq, nk = c->nk;
  const int dim = a->dim, H = a->heads, dh = a->dim_head, R = a->routes, hpr = H / R, half = dh / 2;
  const long D = (long)H * dh, L = 2L * hpr * dh, n1 = nk + 1;
  const long nqr = batch * nq, nkr = batch * R * nk;
  const int mk = a->multiply_keys_by_score;
  C5_CHECK((nqr == 0 || (dout && dxq)) && (nkr == 0 || dctx), C5_ERR_ARG,
           "heavy attention backward: dout, dxq or dctx is NULL");
  c5k_ctx kc = { .work = c->work, .work_len = c->work_len };

  if (nqr == 0) {   /* no queries: nothing depends on the keys */
    if (nkr) memset(dctx, 0, (size_t)(nkr * dim) * sizeof *dctx);
    if (c->has_kscore && dkscore && nkr) memset(dkscore, 0, (size_t)nkr * sizeof *dkscore);
    return C5_OK;
  }

  const c5_real *gamma = c5_params_value(p, a->norm_gamma);
  const c5_real *wq = c5_params_value(p, a->to_q), *wkv = c5_params_value(p, a->to_kv);
  const c5_real *wout = c5_params_value(p, a->to_out);
  /* parameter gradients: every part into its double accumulator, flushed once at the end */
  double *ggamma = c5_params_acc(p, a->norm_gamma), *gnull = c5_params_acc(p, a->null_kv);
  double *gwq = c5_params_acc(p, a->to_q), *gwkv = c5_params_acc(p, a->to_kv);
  double *gwout = c5_params_acc(p, a->to_out);
  c5_real *prod = c5_params_scratch(p);

  /* to_out: dWout += dout^T o; do = dout Wout */
  C5_CALL(ops->gemm_acc(&kc, 1, 0, dim, D, nqr, 1.0, dout, dim, c->o, D, prod, gwout));
  C5_CALL(ops->gemm(&kc, 0, 0, nqr, D, dim, 1.0, dout, dim, wout, D, 0.0, c->dpo, D));

  /* per head: dP = do_h v_h^T; dv_h = P^T do_h; dS = P (dP - rowsum(P dP)); dq_h = dS k_h s; dk_h = dS^T q_h s */
  const double scale = 1.0 / sqrt((double)dh);
  for (long b = 0; b < batch; b++)
    for (int h = 0; h < H; h++) {
      long off = (b * R + h / hpr) * n1 * L + (long)(h % hpr) * 2 * dh;
      const c5_real *ph = c->p + (b * H + h) * nq * n1;
      const c5_real *doh = c->dpo + b * nq * D + (long)h * dh, *qh = c->q + b * nq * D + (long)h * dh;
      C5_CALL(ops->gemm(&kc, 0, 1, nq, n1, dh, 1.0, doh, D, c->kvf + off + dh, L, 0.0, c->ds, n1));
      C5_CALL(ops->gemm(&kc, 1, 0, n1, dh, nq, 1.0, ph, n1, doh, D, 0.0, c->dkvf + off + dh, L));
#pragma omp parallel for schedule(static)
      for (long i = 0; i < nq; i++) {
        const c5_real *pr = ph + i * n1;
        c5_real *d = c->ds + i * n1;
        double dot = 0;
        for (long j = 0; j < n1; j++) dot += (double)pr[j] * d[j];
        for (long j = 0; j < n1; j++) d[j] = (c5_real)(pr[j] * (d[j] - dot));
      }
      C5_CALL(ops->gemm(&kc, 0, 0, nq, dh, n1, scale, c->ds, n1, c->kvf + off, L, 0.0, c->dq + b * nq * D + (long)h * dh, D));
      C5_CALL(ops->gemm(&kc, 1, 0, n1, dh, nq, scale, c->ds, n1, qh, D, 0.0, c->dkvf + off, L));
    }

  /* null slot: null_kv grad += sum over the batch */
  for (long b = 0; b < batch; b++)
    for (int r = 0; r < R; r++) {
      const c5_real *g0 = c->dkvf + (b * R + r) * n1 * L;
      for (int hh = 0; hh < hpr; hh++) {
        long h = (long)r * hpr + hh;
        for (int e = 0; e < dh; e++) {
          gnull[h * dh + e] += g0[(long)hh * 2 * dh + e];
          gnull[D + h * dh + e] += g0[(long)hh * 2 * dh + dh + e];
        }
      }
    }

  /* keys/values: undo rotary and the kv score (in place in dkvf rows 1..nk); dkscore */
  if (nkr) {
#pragma omp parallel for schedule(static)
    for (long t = 0; t < nkr; t++) {
      long br = t / nk, j = t % nk;
      c5_real *dst = c->dkvf + (br * n1 + 1 + j) * L;
      const c5_real *src = c->kvraw + t * L;
      c5_real ks = c->has_kscore ? c->kscore[t] : (c5_real)1;
      double dks = 0;
      for (int hh = 0; hh < hpr; hh++) {
        c5_real *kd = dst + (long)hh * 2 * dh, *vd = kd + dh;
        const c5_real *kr = src + (long)hh * 2 * dh, *vr = kr + dh;
        if (c->has_rot) rot_transpose(kd, half, c->kcos + t * half, c->ksin + t * half);
        if (c->has_kscore) {
          for (int e = 0; e < dh; e++) { dks += (double)vd[e] * vr[e]; vd[e] *= ks; }
          if (mk)
            for (int e = 0; e < dh; e++) { dks += (double)kd[e] * kr[e]; kd[e] *= ks; }
        }
      }
      if (c->has_kscore && dkscore) dkscore[t] = (c5_real)dks;
    }
  }

  /* queries: undo rotary and the q score (in place in dq); dqscore */
#pragma omp parallel for schedule(static)
  for (long i = 0; i < nqr; i++) {
    c5_real *d = c->dq + i * D;
    const c5_real *qr = c->qraw + i * D;
    if (c->has_rot)
      for (int h = 0; h < H; h++) rot_transpose(d + (long)h * dh, half, c->qcos + i * half, c->qsin + i * half);
    if (c->has_qscore) {
      c5_real qs = c->qscore[i];
      double dqs = 0;
      for (long e = 0; e < D; e++) { dqs += (double)d[e] * qr[e]; d[e] *= qs; }
      if (dqscore) dqscore[i] = (c5_real)dqs;
    }
  }
  /* the projections' GEMMs, then both norms: the element-wise OpenMP loops above and below are kept
     together, away from the BLAS calls (OpenBLAS's pthreads and OpenMP's threads share the cores) */
  /* to_kv: dWkv_r += dkv[b,r]^T cn[b,r]; dcn[b,r] = dkv[b,r] Wkv_r */
  for (long b = 0; b < batch && nk > 0; b++)
    for (int r = 0; r < R; r++) {
      long br = b * R + r;
      const c5_real *dkv = c->dkvf + (br * n1 + 1) * L;
      C5_CALL(ops->gemm_acc(&kc, 1, 0, L, dim, nk, 1.0, dkv, L, c->cn + br * nk * dim, dim, prod, gwkv + r * L * dim));
      C5_CALL(ops->gemm(&kc, 0, 0, nk, dim, L, 1.0, dkv, L, wkv + r * L * dim, dim, 0.0, c->dcn + br * nk * dim, dim));
    }
  /* to_q: dWq += dq^T xn; dxn = dq Wq */
  C5_CALL(ops->gemm_acc(&kc, 1, 0, D, dim, nqr, 1.0, c->dq, D, c->xn, dim, prod, gwq));
  C5_CALL(ops->gemm(&kc, 0, 0, nqr, dim, D, 1.0, c->dq, D, wq, dim, 0.0, c->dxn, dim));
  /* through the norms; gamma's gradient gets the context's part, then the queries' */
  if (nkr) C5_CALL(ops->rmsnorm_backward(&kc, c->ctx, gamma, c->rnc, c->dcn, nkr, dim, dctx, ggamma));
  C5_CALL(ops->rmsnorm_backward(&kc, c->xq, gamma, c->rnq, c->dxn, nqr, dim, dxq, ggamma));
  const long idx[] = { a->norm_gamma, a->null_kv, a->to_q, a->to_kv, a->to_out };
  C5_CALL(c5_params_flush(p, idx, 5));
  return C5_OK;
}
