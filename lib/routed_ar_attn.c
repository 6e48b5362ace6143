/* routed_ar_attn.c - ConditionalRoutedAutoregressiveAttention (reference:
   colt5_attention/transformer_block.py, f2a8da0): causal LocalMHA over every
   token plus a heavy branch computed window by window. One rank for now.

   The reference, in the terms used here (W = heavy window, nw = ceil(n/W)
   windows of the zero-padded sequence x' [b, nw W, dim], nb = nw - 1 query
   windows, rows = (batch, window m = 1..nw-1) pairs, b-major):
     light = LocalMHA(x): window light_window_size, causal, look back 1,
             look forward 0, exact_windowsize False, no rotary;
     q rows:  window m of x' [W tokens], mask = not padding;
              q router: num_heavy_tokens_q per row (unrouted when W <= it:
              every token, score 1);
     kv rows: the whole x' [nw W tokens], mask = token in a window < m
              (tril(-1)); kv router: num_routed_kv routes of
              num_heavy_tokens_kv (unrouted when nw W <= it); a row with
              fewer unmasked tokens than k selects masked ones too (score 0,
              and masked in the attention);
     heavy = Attention(routed q, routed kv, key mask = the routed mask,
             v (and k) times the kv score, rotary at padded-sequence positions);
     per row: null_q_token (or 0) everywhere, the routed queries' heavy
             output times their q score at their positions; rows un-windowed,
             sliced to n - W and shifted right by W (window 0: no heavy output).
   The reference repeats x' once per window for the kv router (O(n^2 / W dim)
   memory); here the kv router runs once per window on x' itself with that
   window's mask, so nothing is repeated but the router's own per-row scores
   (O(b R n^2 / W) scalars, inherent in the routing: every window has its own
   coordinate-descent row over the padded sequence). The query windows are
   copied ([b nb, W, dim], O(n dim)) so the q router sees them as one batch. */
#include "c5_internal.h"
#include "attn_local.h"
#include "attn_heavy.h"

struct c5_routed_ar_attn {
  c5_routed_ar_attn_config cfg;
  long W;                        /* heavy window size */
  c5_params *p;
  c5_attn_local light;
  c5_attn_heavy heavy;
  long null_q, rt_q, rt_kv;      /* parameter indices (null_q = -1 when unused) */
  c5_router *q_router, *kv_router;
};

struct c5_routed_ar_attn_cache {
  long batch, n;                 /* tokens */
  long nw, npad, nb, rows;       /* windows, padded length, query windows per batch row, batch * nb */
  long nq_cap, nk_cap;           /* heavy queries per row, keys per route: at most */
  c5_attn_local_cache *lc;
  c5_attn_heavy_cache *hc;       /* NULL when rows == 0 */
  c5_router_cache *rq;           /* one call: batch rows x nb windows of W tokens */
  c5_router_cache **rkv;         /* [nb]: query window m = i + 1, batch rows of the padded sequence */
  c5_routing kv;                 /* every window's kv routing in the public row order */
  c5_routing q0, kv0;            /* empty routings (rows == 0) */
  c5_real *xpad, *dxpad;         /* [b, npad, dim] padded x and its gradient */
  c5_real *xblk, *dxblk;         /* [rows, W, dim] the query windows and their gradient */
  uint8_t *qmask;                /* [rows, W] not padding */
  uint8_t *kvmask;               /* [b, npad] one window's kv mask */
  long nq, nk;                   /* of the last forward */
  long *qtok;                    /* [rows, nq] position within the window */
  long *ktok;                    /* [rows, R, nk] position in the padded sequence */
  long *kbat;                    /* [rows, R, nk] batch row of x' the key was read from */
  long *qpos, *kpos;             /* rotary positions */
  c5_real *xq, *ctx, *qscore, *kscore;
  uint8_t *kmask;
  c5_real *hout;                 /* [rows, nq, dim] heavy output before the q score */
  c5_real *dh, *dxq, *dctx, *dks, *dqs, *dsq;
  c5_real *dsc;                  /* [b R nk] one window's kv dscore in routing order */
};

/* "prefix.name", or "name" for an empty prefix */
static void join(char *buf, size_t len, const char *prefix, const char *name)
{
  if (prefix && *prefix) snprintf(buf, len, "%s.%s", prefix, name);
  else snprintf(buf, len, "%s", name);
}

c5_status c5_routed_ar_attn_create(const c5_routed_ar_attn_config *cfg, c5_params *p, const char *prefix,
                                   c5_routed_ar_attn **out)
{
  C5_CHECK(cfg && p && out, C5_ERR_ARG, "c5_routed_ar_attn_create: NULL argument");
  const char *who = "ConditionalRoutedAutoregressiveAttention";
  C5_CHECK(cfg->dim > 0, C5_ERR_ARG, "%s: dim = %d must be > 0", who, cfg->dim);
  C5_CHECK(cfg->num_heavy_tokens_q > 0 && cfg->num_heavy_tokens_kv > 0, C5_ERR_ARG,
           "%s: num_heavy_tokens_q = %ld and num_heavy_tokens_kv = %ld must be > 0", who, cfg->num_heavy_tokens_q,
           cfg->num_heavy_tokens_kv);
  C5_CHECK(cfg->num_routed_kv > 0 && cfg->heavy_heads % cfg->num_routed_kv == 0, C5_ERR_ARG,
           "%s: heavy_heads = %d must be divisible by num_routed_kv = %d", who, cfg->heavy_heads, cfg->num_routed_kv);
  C5_CHECK(cfg->light_window_size > 0, C5_ERR_ARG, "%s: light_window_size = %ld must be > 0", who,
           cfg->light_window_size);
  C5_CHECK(cfg->heavy_window_size >= 0, C5_ERR_ARG, "%s: heavy_window_size = %ld must be > 0 (0 = light_window_size)",
           who, cfg->heavy_window_size);
  C5_CHECK(!cfg->rotary_emb || cfg->heavy_dim_head % 2 == 0, C5_ERR_ARG,
           "%s: rotary_emb needs an even heavy_dim_head (got %d)", who, cfg->heavy_dim_head);
  c5_routed_ar_attn *m;
  C5_CALLOC(m, 1);
  m->cfg = *cfg;
  m->W = cfg->heavy_window_size > 0 ? cfg->heavy_window_size : cfg->light_window_size;
  m->p = p;
  m->null_q = -1;
  char pre[256];
  c5_status st = C5_OK;
  join(pre, sizeof pre, prefix, "light_attn");
  C5_CALL_GOTO(c5_attn_local_init(&m->light, p, pre, cfg->dim, cfg->light_heads, cfg->light_dim_head,
                                  cfg->light_window_size, 1, 0, 1, 0), st, fail);
  long dd[1] = { cfg->dim }, rq[2] = { 1, cfg->dim }, rkv[2] = { cfg->num_routed_kv, cfg->dim };
  if (cfg->use_null_q_tokens) C5_CALL_GOTO(c5_params_add(p, prefix, "null_q_token", 1, dd, &m->null_q), st, fail);
  join(pre, sizeof pre, prefix, "q_router");
  C5_CALL_GOTO(c5_params_add(p, pre, "routing_token", 2, rq, &m->rt_q), st, fail);
  join(pre, sizeof pre, prefix, "kv_router");
  C5_CALL_GOTO(c5_params_add(p, pre, "routing_token", 2, rkv, &m->rt_kv), st, fail);
  join(pre, sizeof pre, prefix, "heavy_attn");
  C5_CALL_GOTO(c5_attn_heavy_init(&m->heavy, p, pre, cfg->dim, cfg->heavy_heads, cfg->heavy_dim_head,
                                  cfg->num_routed_kv, cfg->multiply_keys_by_score), st, fail);
  c5_router_config rc = cfg->router;
  rc.num_routing_tokens = 1;
  C5_CALL_GOTO(c5_router_create(&rc, cfg->dim, &m->q_router), st, fail);
  rc.num_routing_tokens = cfg->num_routed_kv;
  C5_CALL_GOTO(c5_router_create(&rc, cfg->dim, &m->kv_router), st, fail);
  *out = m;
  return C5_OK;
fail:
  c5_routed_ar_attn_destroy(&m);
  return st;
}

c5_status c5_routed_ar_attn_destroy(c5_routed_ar_attn **m)
{
  if (!m || !*m) return C5_OK;
  c5_router_destroy(&(*m)->q_router);
  c5_router_destroy(&(*m)->kv_router);
  C5_FREE(*m);
  return C5_OK;
}

c5_status c5_routed_ar_attn_cache_create(const c5_routed_ar_attn *m, long batch, long n, c5_routed_ar_attn_cache **out)
{
  C5_CHECK(m && out, C5_ERR_ARG, "c5_routed_ar_attn_cache_create: NULL argument");
  C5_CHECK(batch > 0 && n > 0, C5_ERR_ARG, "ConditionalRoutedAutoregressiveAttention cache: batch %ld, n %ld must be > 0",
           batch, n);
  const c5_routed_ar_attn_config *cfg = &m->cfg;
  const long R = cfg->num_routed_kv, D = cfg->dim, W = m->W;
  c5_routed_ar_attn_cache *c;
  C5_CALLOC(c, 1);
  c5_status st = C5_OK;
  c->batch = batch;
  c->n = n;
  c->nw = (n + W - 1) / W;
  c->npad = c->nw * W;
  c->nb = c->nw - 1;
  c->rows = batch * c->nb;
  c->nq_cap = W < cfg->num_heavy_tokens_q ? W : cfg->num_heavy_tokens_q;
  c->nk_cap = c->npad < cfg->num_heavy_tokens_kv ? c->npad : cfg->num_heavy_tokens_kv;
  C5_CALL_GOTO(c5_attn_local_cache_create(&m->light, batch, n, &c->lc), st, fail);
  if (c->rows > 0) {
    const long rows = c->rows, nq = c->nq_cap, nk = c->nk_cap, q = rows * nq, k = rows * R * nk;
    C5_CALL_GOTO(c5_attn_heavy_cache_create(&m->heavy, rows, nq, nk, &c->hc), st, fail);
    C5_CALL_GOTO(c5_router_cache_create(m->q_router, rows, W, &c->rq), st, fail);
    c->rkv = calloc((size_t)c->nb, sizeof *c->rkv);
    C5_CHECK_GOTO(c->rkv, st, fail, C5_ERR_MEM, "ConditionalRoutedAutoregressiveAttention cache: out of memory");
    for (long i = 0; i < c->nb; i++)
      C5_CALL_GOTO(c5_router_cache_create(m->kv_router, batch, c->npad, &c->rkv[i]), st, fail);
    c->kv.count = calloc((size_t)(rows * R), sizeof *c->kv.count);
    c->kv.start = calloc((size_t)(rows * R), sizeof *c->kv.start);
    c->kv.idx = calloc((size_t)k, sizeof *c->kv.idx);
    c->kv.score = calloc((size_t)k, sizeof *c->kv.score);
    c->xpad = calloc((size_t)(batch * c->npad * D), sizeof *c->xpad);
    c->dxpad = calloc((size_t)(batch * c->npad * D), sizeof *c->dxpad);
    c->xblk = calloc((size_t)(rows * W * D), sizeof *c->xblk);
    c->dxblk = calloc((size_t)(rows * W * D), sizeof *c->dxblk);
    c->qmask = calloc((size_t)(rows * W), 1);
    c->kvmask = calloc((size_t)(batch * c->npad), 1);
    c->qtok = calloc((size_t)q, sizeof *c->qtok);
    c->qpos = calloc((size_t)q, sizeof *c->qpos);
    c->ktok = calloc((size_t)k, sizeof *c->ktok);
    c->kbat = calloc((size_t)k, sizeof *c->kbat);
    c->kpos = calloc((size_t)k, sizeof *c->kpos);
    c->xq = calloc((size_t)(q * D), sizeof *c->xq);
    c->ctx = calloc((size_t)(k * D), sizeof *c->ctx);
    c->qscore = calloc((size_t)q, sizeof *c->qscore);
    c->kscore = calloc((size_t)k, sizeof *c->kscore);
    c->kmask = calloc((size_t)k, 1);
    c->hout = calloc((size_t)(q * D), sizeof *c->hout);
    c->dh = calloc((size_t)(q * D), sizeof *c->dh);
    c->dxq = calloc((size_t)(q * D), sizeof *c->dxq);
    c->dctx = calloc((size_t)(k * D), sizeof *c->dctx);
    c->dks = calloc((size_t)k, sizeof *c->dks);
    c->dqs = calloc((size_t)q, sizeof *c->dqs);
    c->dsq = calloc((size_t)q, sizeof *c->dsq);
    c->dsc = calloc((size_t)(batch * R * nk), sizeof *c->dsc);
    C5_CHECK_GOTO(c->kv.count && c->kv.start && c->kv.idx && c->kv.score && c->xpad && c->dxpad && c->xblk &&
                  c->dxblk && c->qmask && c->kvmask && c->qtok && c->qpos && c->ktok && c->kbat && c->kpos && c->xq &&
                  c->ctx && c->qscore && c->kscore && c->kmask && c->hout && c->dh && c->dxq && c->dctx && c->dks &&
                  c->dqs && c->dsq && c->dsc, st, fail, C5_ERR_MEM,
                  "ConditionalRoutedAutoregressiveAttention cache: out of memory for %ld x %ld tokens (%ld windows "
                  "of %ld)", batch, n, c->nw, W);
  }
  *out = c;
  return C5_OK;
fail:
  c5_routed_ar_attn_cache_destroy(&c);
  return st;
}

c5_status c5_routed_ar_attn_cache_destroy(c5_routed_ar_attn_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_routed_ar_attn_cache *c = *cp;
  c5_attn_local_cache_destroy(&c->lc);
  c5_attn_heavy_cache_destroy(&c->hc);
  c5_router_cache_destroy(&c->rq);
  if (c->rkv)
    for (long i = 0; i < c->nb; i++) c5_router_cache_destroy(&c->rkv[i]);
  free(c->rkv);
  free(c->kv.count); free(c->kv.start); free(c->kv.idx); free(c->kv.score);
  free(c->xpad); free(c->dxpad); free(c->xblk); free(c->dxblk); free(c->qmask); free(c->kvmask);
  free(c->qtok); free(c->qpos); free(c->ktok); free(c->kbat); free(c->kpos); free(c->xq); free(c->ctx);
  free(c->qscore); free(c->kscore); free(c->kmask); free(c->hout); free(c->dh); free(c->dxq); free(c->dctx);
  free(c->dks); free(c->dqs); free(c->dsq); free(c->dsc);
  C5_FREE(*cp);
  return C5_OK;
}

const c5_routing *c5_routed_ar_attn_routing_q(const c5_routed_ar_attn_cache *c)
{
  return c->rq ? c5_router_cache_routing(c->rq) : &c->q0;
}
const c5_routing *c5_routed_ar_attn_routing_kv(const c5_routed_ar_attn_cache *c) { return c->rq ? &c->kv : &c->kv0; }

c5_status c5_routed_ar_attn_forward(c5_routed_ar_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                                    const c5_real *x, c5_routed_ar_attn_cache *c, c5_real *out)
{
  C5_CHECK(m && d && lay && x && c && out, C5_ERR_ARG, "c5_routed_ar_attn_forward: NULL argument");
  const char *who = "ConditionalRoutedAutoregressiveAttention";
  const c5_routed_ar_attn_config *cfg = &m->cfg;
  const long n = lay->n_local, D = cfg->dim, R = cfg->num_routed_kv, W = m->W;
  C5_CHECK(c5_dist_size(d) == 1, C5_ERR_NOTIMPL,
           "%s: a sequence sharded over %d ranks is not supported yet (one rank only)", who, c5_dist_size(d));
  C5_CHECK(batch == c->batch && n == c->n && lay->n == n && lay->offset == 0, C5_ERR_SHAPE,
           "%s: input [%ld, %ld, %ld] (global n %ld), cache made for [%ld, %ld, %ld]", who, batch, n, D, lay->n,
           c->batch, c->n, D);
  const c5_params *p = m->p;

  C5_CALL(c5_attn_local_forward(&m->light, p, batch, n, x, NULL, c->lc, out));
  /* n <= W: no query window (the reference fails for n < W; at n = W it adds nothing) */
  c->q0.rows = c->kv0.rows = 0;
  if (c->rows == 0) return C5_OK;

  const long nb = c->nb, npad = c->npad, rows = c->rows;
  const long kq = cfg->num_heavy_tokens_q, kkv = cfg->num_heavy_tokens_kv;
  /* padded x (the pad stays zero from the allocation) and the query windows 1 .. nw-1 */
  for (long b = 0; b < batch; b++) {
    memcpy(c->xpad + b * npad * D, x + b * n * D, (size_t)(n * D) * sizeof *x);
    memcpy(c->xblk + b * nb * W * D, c->xpad + (b * npad + W) * D, (size_t)(nb * W * D) * sizeof *x);
  }
  for (long r = 0; r < rows; r++)
    for (long j = 0; j < W; j++) c->qmask[r * W + j] = ((r % nb) + 1) * W + j < n;

  /* q router: each window's queries within the window */
  c5_layout lq = { .n = W, .unit = W, .offset = 0, .n_local = W };
  C5_CALL(c5_router_forward(m->q_router, d, &lq, c5_params_value(p, m->rt_q), rows, c->xblk, c->qmask, kq,
                            cfg->random_route, cfg->random_seed, c->rq));
  const c5_routing *rq = c5_router_cache_routing(c->rq);

  /* kv router: for window m = i + 1, the padded sequence with windows < m unmasked */
  c5_layout lk = { .n = npad, .unit = W, .offset = 0, .n_local = npad };
  c5_routing *kv = &c->kv;
  kv->rows = rows * R;
  kv->routed = npad > kkv;
  kv->k = kv->routed ? kkv : 0;
  for (long i = 0; i < nb; i++) {
    for (long b = 0; b < batch; b++)
      for (long t = 0; t < npad; t++) c->kvmask[b * npad + t] = t < (i + 1) * W;
    uint64_t seed = cfg->random_seed ^ (0x632be59bd9b4e019ull * (uint64_t)(i + 1));
    C5_CALL(c5_router_forward(m->kv_router, d, &lk, c5_params_value(p, m->rt_kv), batch, c->xpad, c->kvmask, kkv,
                              cfg->random_route, seed, c->rkv[i]));
    const c5_routing *ri = c5_router_cache_routing(c->rkv[i]);
    C5_CHECK(ri->routed == kv->routed && (!ri->routed || ri->k == kkv), C5_ERR_INTERNAL,
             "%s: kv router of window %ld: routed %d, k %ld (expected %d, %ld)", who, i + 1, ri->routed, ri->k,
             kv->routed, kkv);
    for (long b = 0; b < batch; b++)
      for (long q = 0; q < R; q++) {
        long row = ((b * nb + i) * R + q), src = b * R + q;
        kv->start[row] = row * kv->k;
        kv->count[row] = kv->routed ? ri->count[src] : 0;
        if (!kv->routed) continue;
        C5_CHECK(ri->count[src] == kkv, C5_ERR_INTERNAL, "%s: kv router row %ld selected %ld of %ld", who, src,
                 ri->count[src], kkv);
        memcpy(kv->idx + row * kkv, ri->idx + ri->start[src], (size_t)kkv * sizeof *kv->idx);
        memcpy(kv->score + row * kkv, ri->score + ri->start[src], (size_t)kkv * sizeof *kv->score);
      }
  }

  /* heavy queries: the routed positions of each window, or all W (score 1) */
  const long nq = c->nq = rq->routed ? kq : W;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++)
    for (long j = 0; j < nq; j++) {
      long e = r * nq + j;
      long t = rq->routed ? rq->idx[rq->start[r] + j] : j;
      c->qtok[e] = t;
      c->qpos[e] = ((r % nb) + 1) * W + t;
      c->qscore[e] = rq->routed ? rq->score[rq->start[r] + j] : 1;
      memcpy(c->xq + e * D, c->xblk + (r * W + t) * D, (size_t)D * sizeof *x);
    }
  /* heavy keys per route: the routed tokens of the padded sequence, or all of it (score 1) */
  const long nk = c->nk = kv->routed ? kkv : npad;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++)
    for (long q = 0; q < R; q++)
      for (long j = 0; j < nk; j++) {
        long row = r * R + q, e = row * nk + j;
        long t = kv->routed ? kv->idx[kv->start[row] + j] : j;
        long src = cfg->kv_gather_batch_bug && kv->routed ? r / R : r;   /* see the config's comment */
        long bs = src / nb, ms = src % nb + 1;
        c->ktok[e] = t;
        c->kbat[e] = bs;
        c->kpos[e] = t;
        c->kscore[e] = kv->routed ? kv->score[kv->start[row] + j] : 1;
        c->kmask[e] = t < ms * W;
        memcpy(c->ctx + e * D, c->xpad + (bs * npad + t) * D, (size_t)D * sizeof *x);
      }
  C5_CALL(c5_attn_heavy_forward(&m->heavy, p, rows, nq, nk, c->xq, c->ctx, c->kmask, c->kscore,
                                cfg->multiply_queries_by_score ? c->qscore : NULL, cfg->rotary_emb ? c->qpos : NULL,
                                cfg->rotary_emb ? c->kpos : NULL, c->hc, c->hout));

  /* scatter: window m of row r lands on tokens m W .. m W + W - 1 (those < n). Routed: null_q_token (or 0)
     everywhere, the routed queries' output times their score at their positions. */
  const c5_real *nul = rq->routed && m->null_q >= 0 ? c5_params_value(p, m->null_q) : NULL;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++) {
    long b = r / nb, t0 = ((r % nb) + 1) * W;
    if (nul)
      for (long t = t0; t < t0 + W && t < n; t++)
        for (long k = 0; k < D; k++) out[(b * n + t) * D + k] += nul[k];
    for (long j = 0; j < nq; j++) {
      long e = r * nq + j, t = t0 + c->qtok[e];
      if (t >= n) continue;   /* padding: sliced off */
      for (long k = 0; k < D; k++)
        out[(b * n + t) * D + k] += c->hout[e * D + k] * c->qscore[e] - (nul ? nul[k] : 0);
    }
  }
  return C5_OK;
}

c5_status c5_routed_ar_attn_backward(c5_routed_ar_attn *m, const c5_dist *d, c5_routed_ar_attn_cache *c,
                                     const c5_real *x, const c5_real *dout, c5_real *dx)
{
  C5_CHECK(m && d && c && x && dout && dx, C5_ERR_ARG, "c5_routed_ar_attn_backward: NULL argument");
  const c5_routed_ar_attn_config *cfg = &m->cfg;
  const long n = c->n, D = cfg->dim, R = cfg->num_routed_kv, W = m->W, batch = c->batch;
  const c5_params *p = m->p;

  C5_CALL(c5_attn_local_backward(&m->light, p, c->lc, x, dout, dx));
  if (c->rows == 0) return C5_OK;

  const long nb = c->nb, npad = c->npad, rows = c->rows, nq = c->nq, nk = c->nk;
  const c5_routing *rq = c5_router_cache_routing(c->rq);
  const c5_routing *kv = &c->kv;

  /* null_q_token: every token of windows 1.. (below n) not replaced by a routed query */
  if (rq->routed && m->null_q >= 0) {
    c5_real *g = c5_params_grad(p, m->null_q);
    double *acc = calloc((size_t)D, sizeof *acc);
    C5_CHECK(acc, C5_ERR_MEM, "out of memory");
    for (long b = 0; b < batch; b++)
      for (long t = W; t < n; t++)
        for (long k = 0; k < D; k++) acc[k] += dout[(b * n + t) * D + k];
    for (long e = 0; e < rows * nq; e++) {
      long r = e / nq, b = r / nb, t = ((r % nb) + 1) * W + c->qtok[e];
      if (t < n)
        for (long k = 0; k < D; k++) acc[k] -= dout[(b * n + t) * D + k];
    }
    for (long k = 0; k < D; k++) g[k] += (c5_real)acc[k];
    free(acc);
  }
  /* through the query score: out = hout * s (padding queries: sliced off, no gradient) */
#pragma omp parallel for schedule(static)
  for (long e = 0; e < rows * nq; e++) {
    long r = e / nq, b = r / nb, t = ((r % nb) + 1) * W + c->qtok[e];
    double ds = 0;
    for (long k = 0; k < D; k++) {
      c5_real g = t < n ? dout[(b * n + t) * D + k] : 0;
      c->dh[e * D + k] = g * c->qscore[e];
      ds += (double)g * c->hout[e * D + k];
    }
    c->dsq[e] = (c5_real)ds;
  }
  C5_CALL(c5_attn_heavy_backward(&m->heavy, p, c->hc, c->dh, c->dxq, c->dctx, c->dks,
                                 cfg->multiply_queries_by_score ? c->dqs : NULL));
  if (cfg->multiply_queries_by_score)
    for (long e = 0; e < rows * nq; e++) c->dsq[e] += c->dqs[e];

  /* queries back into their windows (distinct positions per row) */
  memset(c->dxblk, 0, (size_t)(rows * W * D) * sizeof *c->dxblk);
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++)
    for (long j = 0; j < nq; j++) {
      long e = r * nq + j;
      c5_real *dst = c->dxblk + (r * W + c->qtok[e]) * D;
      for (long k = 0; k < D; k++) dst[k] += c->dxq[e * D + k];
    }
  C5_CALL(c5_router_backward(m->q_router, d, c->rq, c5_params_value(p, m->rt_q), c->xblk, c->dsq, c->dxblk,
                             c5_params_grad(p, m->rt_q)));
  /* keys (a token feeds many rows: one fixed order) */
  memset(c->dxpad, 0, (size_t)(batch * npad * D) * sizeof *c->dxpad);
  for (long e = 0; e < rows * R * nk; e++) {
    c5_real *dst = c->dxpad + (c->kbat[e] * npad + c->ktok[e]) * D;
    for (long k = 0; k < D; k++) dst[k] += c->dctx[e * D + k];
  }
  for (long b = 0; b < batch; b++)
    for (long i = 0; i < nb * W * D; i++) c->dxpad[(b * npad + W) * D + i] += c->dxblk[b * nb * W * D + i];
  /* kv routers, window by window, dscore in each router's own entry order */
  if (kv->routed)
    for (long i = 0; i < nb; i++) {
      const c5_routing *ri = c5_router_cache_routing(c->rkv[i]);
      for (long b = 0; b < batch; b++)
        for (long q = 0; q < R; q++) {
          long row = (b * nb + i) * R + q, src = b * R + q;
          for (long j = 0; j < nk; j++) c->dsc[ri->start[src] + j] = c->dks[row * nk + j];
        }
      C5_CALL(c5_router_backward(m->kv_router, d, c->rkv[i], c5_params_value(p, m->rt_kv), c->xpad, c->dsc,
                                 c->dxpad, c5_params_grad(p, m->rt_kv)));
    }
  for (long b = 0; b < batch; b++)
    for (long i = 0; i < n * D; i++) dx[b * n * D + i] += c->dxpad[b * npad * D + i];
  return C5_OK;
}
