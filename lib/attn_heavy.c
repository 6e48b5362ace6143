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
       (P is not kept: each row's log-sum-exp is, and the backward
       recomputes P from it)
     out = o Wout^T
   The cache keeps the inputs, qraw, kvraw, the log-sum-exps and o; xn, cn,
   q and kvf are formed again in the backward from them (norms and
   elementwise ops, no product: the same ops on the same inputs, the same
   bits), in a frame of the workspace (ws.h) with the backward's gradients.
   kvf keeps every route's heads interleaved exactly as to_kv lays them out,
   so each head's K and V are strided views (ld = L) that the per-head GEMMs
   read directly, and the backward's dK/dV land where the to_kv GEMM wants
   them. This file orchestrates; the arithmetic is its backend's (the heavy
   attention ops of kernels.h, which document these layouts). */
#include "c5_internal.h"
#include "backend.h"
#include "attn_heavy.h"
#include "ws.h"

struct c5_attn_heavy_cache {
  const c5_backend *be;   /* every buffer below lives there (the work too: ops on a device ignore it) */
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
  double *rnq;       /* [b, nq] 1 / max(||xq||, eps) */
  double *rnc;       /* [b, R, nk] */
  c5_real *qraw;     /* [b, nq, D] to_q output */
  c5_real *kvraw;    /* [b, R, nk, L] to_kv output */
  double *lse;       /* [b, heads, nq] each row's log-sum-exp (the backward recomputes P from it) */
  c5_real *o;        /* [b, nq, D] heads merged */
  double *qcos, *qsin;   /* [b, nq, dh/2] rotary tables (when positions were given) */
  double *kcos, *ksin;   /* [b, R, nk, dh/2] */
  double *work;      /* the RMSNorm backward's rowpart reductions; the heavy attention ops' score blocks */
  long work_len;
  c5_ws *ws;         /* the transient workspace: its maker's, or its own */
  int own_ws;
  long dim, R, D, L; /* for the frame */
  /* the frame of each forward and backward, at the capacity (the backward forms the first four again): */
  c5_real *xn;       /* [b, nq, dim] normed queries */
  c5_real *cn;       /* [b, R, nk, dim] normed context */
  c5_real *q;        /* [b, nq, D] after qscore and rotary */
  c5_real *kvf;      /* [b, R, 1 + nk, L] null slot, then scored/rotated k and scored v */
  c5_real *dq;       /* [b, nq, D] */
  c5_real *dkvf;     /* [b, R, 1 + nk, L] */
  c5_real *dpo;      /* [b, nq, D] dL/do */
  c5_real *dxn;      /* [b, nq, dim] */
  c5_real *dcn;      /* [b, R, nk, dim] */
};

static void carve_frame(void *obj, c5_arena *a)
{
  c5_attn_heavy_cache *c = obj;
  const long B = c->batch_cap, nqr = B * c->nq_cap, nkr = B * c->R * c->nk_cap;
  const long nslot = B * c->R * (1 + c->nk_cap);
#define TAKE(p, n) C5_TAKE(a, p, (n) > 0 ? (n) : 1)
  TAKE(c->xn, nqr * c->dim);
  TAKE(c->cn, nkr * c->dim);
  TAKE(c->q, nqr * c->D);
  TAKE(c->kvf, nslot * c->L);
  TAKE(c->dq, nqr * c->D);
  TAKE(c->dkvf, nslot * c->L);
  TAKE(c->dpo, nqr * c->D);
  TAKE(c->dxn, nqr * c->dim);
  TAKE(c->dcn, nkr * c->dim);
#undef TAKE
}

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
  a->be = c5_params_backend(p);
  long hid = (long)heads * dim_head;
  long dg[1] = { dim }, dn[3] = { 2, heads, dim_head }, dq[2] = { hid, dim }, dkv[2] = { 2 * hid, dim },
       dout[2] = { dim, hid };
  C5_CALL(c5_params_add_init(p, prefix, "norm.gamma", 1, dg, C5_INIT_ONE, 0, &a->norm_gamma));
  C5_CALL(c5_params_add_init(p, prefix, "null_kv", 3, dn, C5_INIT_NORMAL, 0, &a->null_kv));
  C5_CALL(c5_params_add_init(p, prefix, "to_q.weight", 2, dq, C5_INIT_UNIFORM_FAN_IN, dim, &a->to_q));
  C5_CALL(c5_params_add_init(p, prefix, "to_kv.weight", 2, dkv, C5_INIT_UNIFORM_FAN_IN, dim, &a->to_kv));
  C5_CALL(c5_params_add_init(p, prefix, "to_out.weight", 2, dout, C5_INIT_UNIFORM_FAN_IN, hid, &a->to_out));
  return C5_OK;
}

/* the kernels' view of one call */
static c5k_heavy_attn shape(const c5_attn_heavy *a, long batch, long nq, long nk)
{
  return (c5k_heavy_attn){ .batch = batch, .nq = nq, .nk = nk, .heads = a->heads, .routes = a->routes,
                           .dim_head = a->dim_head, .multiply_keys_by_score = a->multiply_keys_by_score };
}

static void cache_free(c5_attn_heavy_cache *c)
{
  void *v[] = { c->xq, c->ctx, c->kmask, c->kscore, c->qscore, c->rnq, c->rnc, c->qraw, c->kvraw, c->lse, c->o,
                c->qcos, c->qsin, c->kcos, c->ksin, c->work };
  if (c->be)
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) c5_backend_free(c->be, v[i]);
  if (c->own_ws) c5_ws_destroy(&c->ws);
  free(c);
}

static c5_status cache_alloc(const c5_attn_heavy *a, long B, long nq, long nk, c5_ws *ws, c5_attn_heavy_cache *c)
{
  const long dim = a->dim, R = a->routes, D = (long)a->heads * a->dim_head, L = 2 * D / R, half = a->dim_head / 2;
  const long nqr = B * nq, nkr = B * R * nk;
  c->batch_cap = B; c->nq_cap = nq; c->nk_cap = nk;
  c->dim = dim; c->R = R; c->D = D; c->L = L;
  c->be = a->be;
  /* on the backend, zeroed as calloc's (at least one element: a distinct pointer for an empty buffer) */
#define BE_CALLOC(p, n) C5_CALL(C5_BE_NEW(a->be, p, (n) > 0 ? (n) : 1))
  BE_CALLOC(c->xq, nqr * dim);
  BE_CALLOC(c->ctx, nkr * dim);
  BE_CALLOC(c->kmask, nkr);
  BE_CALLOC(c->kscore, nkr);
  BE_CALLOC(c->qscore, nqr);
  BE_CALLOC(c->rnq, nqr);
  BE_CALLOC(c->rnc, nkr);
  BE_CALLOC(c->qraw, nqr * D);
  BE_CALLOC(c->kvraw, nkr * L);
  BE_CALLOC(c->lse, B * a->heads * nq);
  BE_CALLOC(c->o, nqr * D);
  BE_CALLOC(c->qcos, nqr * half);
  BE_CALLOC(c->qsin, nqr * half);
  BE_CALLOC(c->kcos, nkr * half);
  BE_CALLOC(c->ksin, nkr * half);
  const c5k_heavy_attn A = shape(a, B, nq, nk);
  const long wn = c5k_rowpart_work(nqr > nkr ? nqr : nkr, dim), wa = c5k_heavy_attn_work(&A);
  c->work_len = c5_backend_work(a->be, wn > wa ? wn : wa);
  BE_CALLOC(c->work, c->work_len);
#undef BE_CALLOC
  C5_CALL(c5_ws_use(a->be, ws, &c->ws, &c->own_ws));
  c5_ws_reserve(c->ws, c5_ws_measure(carve_frame, c));
  if (c->own_ws) C5_CALL(c5_ws_fit(c->ws, "heavy attention cache"));
  return C5_OK;
}

c5_status c5_attn_heavy_cache_create(const c5_attn_heavy *a, long batch, long nq, long nk, c5_attn_heavy_cache **out)
{
  C5_CALL(c5_attn_heavy_cache_create_ws(a, batch, nq, nk, NULL, out));
  return C5_OK;
}

c5_status c5_attn_heavy_cache_create_ws(const c5_attn_heavy *a, long batch, long nq, long nk, c5_ws *ws,
                                        c5_attn_heavy_cache **out)
{
  C5_CHECK(a && out, C5_ERR_ARG, "heavy attention cache: NULL argument");
  C5_CHECK(batch >= 0 && nq >= 0 && nk >= 0, C5_ERR_ARG,
           "heavy attention cache: batch %ld, nq %ld, nk %ld must be >= 0", batch, nq, nk);
  c5_attn_heavy_cache *c = calloc(1, sizeof *c);
  C5_CHECK(c, C5_ERR_MEM, "out of memory allocating the heavy attention cache");
  c5_status st = cache_alloc(a, batch, nq, nk, ws, c);
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

/* q = rot(qraw * qscore) and the kv slots kvf (slot 0 the null key/value of each head, then v * kscore and
   rot(k * kscore^mk)) from the cache's qraw, kvraw, score copies and rotary tables: the forward's, and the
   backward's again (the same ops on the same inputs: the same bits). */
static c5_status form_slots(const c5_attn_heavy *a, const c5_params *p, c5k_ctx *kc, c5_attn_heavy_cache *c)
{
  const c5k_ops *ops = c5_params_backend(p)->ops;
  const int H = a->heads, dh = a->dim_head, R = a->routes, hpr = H / R, half = dh / 2;
  const long D = (long)H * dh, L = 2L * hpr * dh, nk = c->nk, n1 = nk + 1, nqr = c->batch * c->nq;
  const c5k_heavy_attn A = shape(a, c->batch, c->nq, nk);
  C5_CALL(ops->gather_rows(kc, nqr, D, NULL, c->has_qscore ? c->qscore : NULL, c->qraw, D, c->q));
  if (c->has_rot) C5_CALL(ops->rotary(kc, nqr, H, dh, c->q, C5_DTYPE_REAL, D, dh, c->qcos, c->qsin));
  C5_CALL(ops->heavy_kv_assemble(kc, &A, c->kvraw, c->has_kscore ? c->kscore : NULL,
                                 c5_params_value(p, a->null_kv), c->kvf));
  if (c->has_rot)
    for (long br = 0; br < c->batch * R; br++)
      C5_CALL(ops->rotary(kc, nk, hpr, dh, c->kvf + (br * n1 + 1) * L, C5_DTYPE_REAL, L, 2L * dh, c->kcos + br * nk * half,
                          c->ksin + br * nk * half));
  return C5_OK;
}

static c5_status forward_body(const c5_attn_heavy *a, const c5_params *p, const c5_real *xq, const c5_real *ctx,
                              const uint8_t *kmask, const long *qpos, const long *kpos, c5_attn_heavy_cache *c,
                              c5_real *out)
{
  const c5k_ops *ops = c5_params_backend(p)->ops;
  const long batch = c->batch, nq = c->nq, nk = c->nk;
  const int dim = a->dim, H = a->heads, dh = a->dim_head, R = a->routes, hpr = H / R;
  const long D = (long)H * dh, L = 2L * hpr * dh;
  const long nqr = batch * nq, nkr = batch * R * nk;
  const c5k_heavy_attn A = shape(a, batch, nq, nk);
  c5k_ctx kc = c5_backend_ctx(c5_params_backend(p), c->work, c->work_len);
  const c5_real *gamma = c5_params_value(p, a->norm_gamma);
  const c5_real *wq = c5_params_value(p, a->to_q), *wkv = c5_params_value(p, a->to_kv);
  const c5_real *wout = c5_params_value(p, a->to_out);

  /* norms and projections */
  C5_CALL(ops->rmsnorm_forward(&kc, xq, gamma, nqr, dim, c->xn, C5_DTYPE_REAL, c->rnq));
  C5_CALL(ops->gemm(&kc, 0, 1, nqr, D, dim, 1.0, c->xn, dim, wq, dim, 0.0, c->qraw, D));
  if (nkr) {
    C5_CALL(ops->rmsnorm_forward(&kc, ctx, gamma, nkr, dim, c->cn, C5_DTYPE_REAL, c->rnc));
    for (long b = 0; b < batch; b++)
      for (int r = 0; r < R; r++) {
        long br = b * R + r;
        C5_CALL(ops->gemm(&kc, 0, 1, nk, L, dim, 1.0, c->cn + br * nk * dim, dim, wkv + r * L * dim, dim, 0.0,
                          c->kvraw + br * nk * L, L));
      }
  }
  if (c->has_rot) {
    C5_CALL(ops->rotary_table(&kc, nqr, qpos, dh, c->qcos, c->qsin));
    C5_CALL(ops->rotary_table(&kc, nkr, kpos, dh, c->kcos, c->ksin));
  }
  C5_CALL(form_slots(a, p, &kc, c));
  /* o = softmax(q k^T dh^-1/2) v per head, heads merged; out = o Wout^T */
  C5_CALL(ops->heavy_attn_forward(&kc, &A, c->q, c->kvf, kmask, c->lse, c->o));
  C5_CALL(ops->gemm(&kc, 0, 1, nqr, dim, D, 1.0, c->o, D, wout, D, 0.0, out, dim));
  return C5_OK;
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

  const int dim = a->dim;
  const long nqr = batch * nq, nkr = batch * a->routes * nk;
  c5k_ctx kc = c5_backend_ctx(c5_params_backend(p), c->work, c->work_len);

  c->valid = 0;
  c->batch = batch; c->nq = nq; c->nk = nk;
  c->has_mask = kmask != NULL;
  c->has_kscore = kscore != NULL;
  c->has_qscore = qscore != NULL;
  c->has_rot = qpos != NULL;
  const long es = (long)sizeof *xq;
  if (nqr) C5_CALL(ops->copy2d(&kc, c->xq, 0, xq, 0, nqr * dim * es, 1));
  if (nkr) C5_CALL(ops->copy2d(&kc, c->ctx, 0, ctx, 0, nkr * dim * es, 1));
  if (kmask && nkr) C5_CALL(ops->copy2d(&kc, c->kmask, 0, kmask, 0, nkr, 1));
  if (kscore && nkr) C5_CALL(ops->copy2d(&kc, c->kscore, 0, kscore, 0, nkr * es, 1));
  if (qscore && nqr) C5_CALL(ops->copy2d(&kc, c->qscore, 0, qscore, 0, nqr * es, 1));
  c->valid = nqr == 0;   /* otherwise valid once the forward below completes */
  if (nqr == 0) return C5_OK;

  C5_WS_RUN(c->ws, carve_frame, c, forward_body(a, p, xq, ctx, kmask, qpos, kpos, c, out));
  c->valid = 1;
  return C5_OK;
}

static c5_status backward_body(const c5_attn_heavy *a, const c5_params *p, c5_attn_heavy_cache *c,
                               const c5_real *dout, c5_real *dxq, c5_real *dctx, c5_real *dkscore, c5_real *dqscore)
{
  const c5k_ops *ops = c5_params_backend(p)->ops;
  const long batch = c->batch, nq = c->nq, nk = c->nk;
  const int dim = a->dim, H = a->heads, dh = a->dim_head, R = a->routes, hpr = H / R, half = dh / 2;
  const long D = (long)H * dh, L = 2L * hpr * dh, n1 = nk + 1;
  const long nqr = batch * nq, nkr = batch * R * nk;
  const c5k_heavy_attn A = shape(a, batch, nq, nk);
  c5k_ctx kc = c5_backend_ctx(c5_params_backend(p), c->work, c->work_len);
  const c5_real *gamma = c5_params_value(p, a->norm_gamma);
  const c5_real *wq = c5_params_value(p, a->to_q), *wkv = c5_params_value(p, a->to_kv);
  const c5_real *wout = c5_params_value(p, a->to_out);
  /* parameter gradients: every part into its double accumulator, flushed once at the end */
  double *ggamma = c5_params_acc(p, a->norm_gamma), *gnull = c5_params_acc(p, a->null_kv);
  double *gwq = c5_params_acc(p, a->to_q), *gwkv = c5_params_acc(p, a->to_kv);
  double *gwout = c5_params_acc(p, a->to_out);
  c5_real *prod = c5_params_scratch(p);

  /* the forward's normed inputs (rnq, rnc again too), q and kv slots, formed again from the cache */
  C5_CALL(ops->rmsnorm_forward(&kc, c->xq, gamma, nqr, dim, c->xn, C5_DTYPE_REAL, c->rnq));
  if (nkr) C5_CALL(ops->rmsnorm_forward(&kc, c->ctx, gamma, nkr, dim, c->cn, C5_DTYPE_REAL, c->rnc));
  C5_CALL(form_slots(a, p, &kc, c));

  /* to_out: dWout += dout^T o; do = dout Wout */
  C5_CALL(ops->gemm_acc(&kc, 1, 0, dim, D, nqr, 1.0, dout, dim, c->o, D, prod, gwout));
  C5_CALL(ops->gemm(&kc, 0, 0, nqr, D, dim, 1.0, dout, dim, wout, D, 0.0, c->dpo, D));

  /* per head: dv_h, dq_h, dk_h (the null slot's included) */
  C5_CALL(ops->heavy_attn_backward(&kc, &A, c->q, c->kvf, c->has_mask ? c->kmask : NULL, c->lse, c->o, c->dpo,
                                   c->dq, c->dkvf));
  /* null slot: null_kv grad += sum over the batch */
  C5_CALL(ops->heavy_null_kv_grad(&kc, &A, c->dkvf, gnull));
  /* keys/values: undo rotary, then the kv score (in place in dkvf slots 1..nk); dkscore */
  if (c->has_rot)
    for (long br = 0; br < batch * R; br++)
      C5_CALL(ops->rotary_transpose(&kc, nk, hpr, dh, c->dkvf + (br * n1 + 1) * L, C5_DTYPE_REAL, L, 2L * dh,
                                    c->kcos + br * nk * half, c->ksin + br * nk * half));
  if (c->has_kscore)
    C5_CALL(ops->heavy_kv_score_backward(&kc, &A, c->kvraw, c->kscore, c->dkvf, dkscore));
  /* queries: undo rotary, then the q score (in place in dq); dqscore */
  if (c->has_rot) C5_CALL(ops->rotary_transpose(&kc, nqr, H, dh, c->dq, C5_DTYPE_REAL, D, dh, c->qcos, c->qsin));
  if (c->has_qscore) C5_CALL(ops->gather_scale_dot(&kc, nqr, D, NULL, c->dq, c->qscore, c->qraw, c->dq, dqscore));
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
  if (nkr) C5_CALL(ops->rmsnorm_backward(&kc, c->ctx, gamma, c->rnc, c->dcn, nkr, dim, NULL, dctx, ggamma));
  C5_CALL(ops->rmsnorm_backward(&kc, c->xq, gamma, c->rnq, c->dxn, nqr, dim, NULL, dxq, ggamma));
  const long idx[] = { a->norm_gamma, a->null_kv, a->to_q, a->to_kv, a->to_out };
  C5_CALL(c5_params_flush(p, idx, 5));
  return C5_OK;
}

c5_status c5_attn_heavy_backward(const c5_attn_heavy *a, const c5_params *p, c5_attn_heavy_cache *c,
                                 const c5_real *dout, c5_real *dxq, c5_real *dctx, c5_real *dkscore, c5_real *dqscore)
{
  const c5k_ops *ops = c5_params_backend(p)->ops;
  C5_CHECK(a && p && c, C5_ERR_ARG, "heavy attention backward: NULL attention, parameters or cache");
  C5_CHECK(c->valid, C5_ERR_ARG, "heavy attention backward: the cache holds no forward");
  const int dim = a->dim;
  const long nqr = c->batch * c->nq, nkr = c->batch * a->routes * c->nk;
  C5_CHECK((nqr == 0 || (dout && dxq)) && (nkr == 0 || dctx), C5_ERR_ARG,
           "heavy attention backward: dout, dxq or dctx is NULL");
  c5k_ctx kc = c5_backend_ctx(c5_params_backend(p), c->work, c->work_len);

  if (nqr == 0) {   /* no queries: nothing depends on the keys */
    if (nkr) C5_CALL(c5k_zero(ops, &kc, dctx, nkr * dim * (long)sizeof *dctx));
    if (c->has_kscore && dkscore && nkr) C5_CALL(c5k_zero(ops, &kc, dkscore, nkr * (long)sizeof *dkscore));
    return C5_OK;
  }
  C5_WS_RUN(c->ws, carve_frame, c, backward_body(a, p, c, dout, dxq, dctx, dkscore, dqscore));
  return C5_OK;
}
