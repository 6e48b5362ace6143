/* routed_cross_attn.c - ConditionalRoutedCrossAttention: the q router picks
   query tokens of x, the kv router (kv_routing_tokens routes splitting the
   heads, route_block_size on its own) picks tokens of a separate context,
   one heavy Attention runs from the first to the second, and its output,
   scaled by the query scores, is scattered back over null_q_token
   (reference: colt5_attention/transformer_block.py). The reference's
   forward uses should_route_queries without defining it; as with
   should_route_kv it is taken as query_length > num_tokens_q, which is
   exactly when the q router routes. Unrouted queries: the heavy output of
   every token is returned as is. Unrouted context: the whole context with
   context_mask and no kv score (normalized_scores_kv = None).
   Built like routed_attn.c from attn_heavy.h and the router. One rank for
   now: the context gets its own layout when sharding comes (DESIGN.md §3). */
#include "c5_internal.h"
#include "attn_heavy.h"

struct c5_routed_cross_attn {
  c5_routed_cross_attn_config cfg;
  c5_params *p;
  c5_attn_heavy heavy;
  long null_q, rt_q, rt_kv;   /* parameter indices (null_q = -1 when unused) */
  c5_router *q_router, *kv_router;
};

struct c5_routed_cross_attn_cache {
  long batch, n, m;                    /* n: local query tokens, m: local context tokens */
  int valid;                           /* a forward has run */
  c5_attn_heavy_cache *hc;
  c5_router_cache *rq, *rkv;
  long nq, nk;                         /* heavy queries per batch row, keys per route */
  int kv_scored;                       /* the context was routed: kscore feeds the heavy branch */
  long *qtok;                          /* [b, nq] local token of each heavy query */
  long *ktok;                          /* [b, R, nk] local context token of each key */
  long *kbat;                          /* [b, R, nk] batch row the key was read from */
  c5_real *xq, *ctx, *qscore, *kscore; /* gathered inputs of the heavy branch */
  uint8_t *kmask;
  c5_real *hout;                       /* [b, nq, dim] heavy output before the query score */
  c5_real *dh, *dxq, *dctx, *dks, *dsq;
};

static void sub(char *buf, size_t len, const char *prefix, const char *name)
{
  snprintf(buf, len, "%s%s%s", prefix && *prefix ? prefix : "", prefix && *prefix ? "." : "", name);
}

c5_status c5_routed_cross_attn_create(const c5_routed_cross_attn_config *cfg, c5_params *p, const char *prefix,
                                      c5_routed_cross_attn **out)
{
  C5_CHECK(cfg && p && out, C5_ERR_ARG, "c5_routed_cross_attn_create: NULL argument");
  const char *who = "ConditionalRoutedCrossAttention";
  C5_CHECK(cfg->dim > 0, C5_ERR_ARG, "%s: dim = %d must be > 0", who, cfg->dim);
  C5_CHECK(cfg->dim_context == 0 || cfg->dim_context == cfg->dim, C5_ERR_SHAPE,
           "%s: dim_context = %d but dim = %d: heavy_attn normalizes and projects the context (norm.gamma, "
           "to_kv.weight) at dim, so the context must have dim features", who, cfg->dim_context, cfg->dim);
  C5_CHECK(cfg->num_tokens_q > 0 && cfg->num_tokens_kv > 0, C5_ERR_ARG,
           "%s: num_tokens_q = %ld and num_tokens_kv = %ld must be > 0", who, cfg->num_tokens_q, cfg->num_tokens_kv);
  C5_CHECK(cfg->heads > 0 && cfg->dim_head > 0, C5_ERR_ARG, "%s: heads = %d and dim_head = %d must be > 0", who,
           cfg->heads, cfg->dim_head);
  C5_CHECK(cfg->kv_routing_tokens > 0 && cfg->heads % cfg->kv_routing_tokens == 0, C5_ERR_ARG,
           "%s: heads = %d must be divisible by kv_routing_tokens = %d (the routes split the heads)", who,
           cfg->heads, cfg->kv_routing_tokens);
  C5_CHECK(cfg->route_block_size >= 0, C5_ERR_ARG, "%s: route_block_size = %ld must be >= 0 (0 = None)", who,
           cfg->route_block_size);
  C5_CHECK(cfg->router.route_block_size == 0, C5_ERR_ARG,
           "%s: router.route_block_size = %ld: the reference gives route_block_size to the kv router by keyword "
           "(router_kwargs cannot hold it); set the module's route_block_size instead", who,
           cfg->router.route_block_size);
  c5_routed_cross_attn *m;
  C5_CALLOC(m, 1);
  m->cfg = *cfg;
  m->p = p;
  m->null_q = -1;
  char pre[256];
  c5_status st = C5_OK;
  long dd[1] = { cfg->dim }, rq[2] = { 1, cfg->dim }, rkv[2] = { cfg->kv_routing_tokens, cfg->dim };
  if (cfg->use_null_q_tokens) C5_CALL_GOTO(c5_params_add(p, prefix, "null_q_token", 1, dd, &m->null_q), st, fail);
  sub(pre, sizeof pre, prefix, "q_router");
  C5_CALL_GOTO(c5_params_add(p, pre, "routing_token", 2, rq, &m->rt_q), st, fail);
  sub(pre, sizeof pre, prefix, "kv_router");
  C5_CALL_GOTO(c5_params_add(p, pre, "routing_token", 2, rkv, &m->rt_kv), st, fail);
  sub(pre, sizeof pre, prefix, "heavy_attn");
  C5_CALL_GOTO(c5_attn_heavy_init(&m->heavy, p, pre, cfg->dim, cfg->heads, cfg->dim_head, cfg->kv_routing_tokens,
                                  cfg->multiply_keys_by_score), st, fail);
  c5_router_config rc = cfg->router;
  rc.num_routing_tokens = 1;
  rc.route_block_size = 0;
  C5_CALL_GOTO(c5_router_create(&rc, cfg->dim, &m->q_router), st, fail);
  rc.num_routing_tokens = cfg->kv_routing_tokens;
  rc.route_block_size = cfg->route_block_size;
  C5_CALL_GOTO(c5_router_create(&rc, cfg->dim, &m->kv_router), st, fail);
  *out = m;
  return C5_OK;
fail:
  c5_routed_cross_attn_destroy(&m);
  return st;
}

c5_status c5_routed_cross_attn_destroy(c5_routed_cross_attn **m)
{
  if (!m || !*m) return C5_OK;
  c5_router_destroy(&(*m)->q_router);
  c5_router_destroy(&(*m)->kv_router);
  C5_FREE(*m);
  return C5_OK;
}

c5_status c5_routed_cross_attn_cache_create(const c5_routed_cross_attn *m, long batch, long n, long mctx,
                                            c5_routed_cross_attn_cache **out)
{
  C5_CHECK(m && out, C5_ERR_ARG, "c5_routed_cross_attn_cache_create: NULL argument");
  C5_CHECK(batch > 0 && n >= 0 && mctx >= 0, C5_ERR_ARG,
           "ConditionalRoutedCrossAttention cache: batch = %ld, n_local = %ld, m_local = %ld", batch, n, mctx);
  const long R = m->cfg.kv_routing_tokens, D = m->cfg.dim;
  /* the heavy branch sees at most n queries and m keys per route (unrouted) */
  c5_routed_cross_attn_cache *c;
  C5_CALLOC(c, 1);
  c->batch = batch;
  c->n = n;
  c->m = mctx;
  c5_status st = C5_OK;
  C5_CALL_GOTO(c5_attn_heavy_cache_create(&m->heavy, batch, n, mctx, &c->hc), st, fail);
  C5_CALL_GOTO(c5_router_cache_create(m->q_router, batch, n, &c->rq), st, fail);
  C5_CALL_GOTO(c5_router_cache_create(m->kv_router, batch, mctx, &c->rkv), st, fail);
  long q = batch * n + 1, k = batch * R * mctx + 1;
  c->qtok = calloc((size_t)q, sizeof *c->qtok);
  c->ktok = calloc((size_t)k, sizeof *c->ktok);
  c->kbat = calloc((size_t)k, sizeof *c->kbat);
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
  c->dsq = calloc((size_t)q, sizeof *c->dsq);
  C5_CHECK_GOTO(c->qtok && c->ktok && c->kbat && c->xq && c->ctx && c->qscore && c->kscore && c->kmask && c->hout &&
                c->dh && c->dxq && c->dctx && c->dks && c->dsq, st, fail, C5_ERR_MEM,
                "ConditionalRoutedCrossAttention cache: out of memory for %ld x (%ld queries, %ld context tokens)",
                batch, n, mctx);
  *out = c;
  return C5_OK;
fail:
  c5_routed_cross_attn_cache_destroy(&c);
  return st;
}

c5_status c5_routed_cross_attn_cache_destroy(c5_routed_cross_attn_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_routed_cross_attn_cache *c = *cp;
  c5_attn_heavy_cache_destroy(&c->hc);
  c5_router_cache_destroy(&c->rq);
  c5_router_cache_destroy(&c->rkv);
  free(c->qtok); free(c->ktok); free(c->kbat); free(c->xq); free(c->ctx); free(c->qscore); free(c->kscore);
  free(c->kmask); free(c->hout); free(c->dh); free(c->dxq); free(c->dctx); free(c->dks); free(c->dsq);
  C5_FREE(*cp);
  return C5_OK;
}

const c5_routing *c5_routed_cross_attn_routing_q(const c5_routed_cross_attn_cache *c)
{
  return c5_router_cache_routing(c->rq);
}
const c5_routing *c5_routed_cross_attn_routing_kv(const c5_routed_cross_attn_cache *c)
{
  return c5_router_cache_routing(c->rkv);
}

c5_status c5_routed_cross_attn_forward(c5_routed_cross_attn *m, const c5_dist *d, const c5_layout *lay,
                                       const c5_layout *ctx_lay, long batch, const c5_real *x, const uint8_t *mask,
                                       const c5_real *context, const uint8_t *context_mask,
                                       c5_routed_cross_attn_cache *c, c5_real *out)
{
  C5_CHECK(m && d && lay && ctx_lay && x && context && c && out, C5_ERR_ARG,
           "c5_routed_cross_attn_forward: NULL argument");
  const c5_routed_cross_attn_config *cfg = &m->cfg;
  const long n = lay->n_local, mc = ctx_lay->n_local, D = cfg->dim, R = cfg->kv_routing_tokens;
  C5_CHECK(batch == c->batch && n == c->n && mc == c->m, C5_ERR_SHAPE,
           "ConditionalRoutedCrossAttention: x [%ld, %ld, %ld] and context [%ld, %ld, %ld], cache made for "
           "[%ld, %ld, %ld] and [%ld, %ld, %ld]", batch, n, D, batch, mc, D, c->batch, c->n, D, c->batch, c->m, D);
  C5_CHECK(c5_dist_size(d) == 1, C5_ERR_NOTIMPL,
           "ConditionalRoutedCrossAttention: sequences sharded over %d ranks are not supported yet (one rank only)",
           c5_dist_size(d));
  const c5_params *p = m->p;
  c->valid = 0;

  /* route the queries of x (with mask) and the keys/values of the context (with context_mask) */
  C5_CALL(c5_router_forward(m->q_router, d, lay, c5_params_value(p, m->rt_q), batch, x, mask, cfg->num_tokens_q, 0,
                            0, c->rq));
  C5_CALL(c5_router_forward(m->kv_router, d, ctx_lay, c5_params_value(p, m->rt_kv), batch, context, context_mask,
                            cfg->num_tokens_kv, 0, 0, c->rkv));
  const c5_routing *rq = c5_router_cache_routing(c->rq), *rk = c5_router_cache_routing(c->rkv);

  /* heavy queries: the routed tokens, or all tokens (score 1) */
  c->nq = rq->routed ? rq->k : n;
  for (long b = 0; b < batch; b++)
    for (long i = 0; i < c->nq; i++) {
      long e = b * c->nq + i;
      long t = rq->routed ? rq->idx[rq->start[b] + i] - lay->offset : i;
      c->qtok[e] = t;
      c->qscore[e] = rq->routed ? rq->score[rq->start[b] + i] : 1;
      memcpy(c->xq + e * D, x + (b * n + t) * D, (size_t)D * sizeof *x);
    }
  /* keys/values per route: the routed context tokens with their scores and mask, or the whole context
     (every route sees it: the same as the reference's single route over all heads) */
  c->nk = rk->routed ? rk->k : mc;
  c->kv_scored = rk->routed;
  for (long b = 0; b < batch; b++)
    for (long r = 0; r < R; r++)
      for (long j = 0; j < c->nk; j++) {
        long row = b * R + r, e = row * c->nk + j;
        long t = rk->routed ? rk->idx[rk->start[row] + j] - ctx_lay->offset : j;
        long bs = cfg->kv_gather_batch_bug && rk->routed ? b / R : b;   /* see the config's comment */
        c->ktok[e] = t;
        c->kbat[e] = bs;
        c->kscore[e] = rk->routed ? rk->score[rk->start[row] + j] : 1;
        c->kmask[e] = context_mask ? context_mask[bs * mc + t] : 1;
        memcpy(c->ctx + e * D, context + (bs * mc + t) * D, (size_t)D * sizeof *context);
      }
  C5_CALL(c5_attn_heavy_forward(&m->heavy, p, batch, c->nq, c->nk, c->xq, c->ctx, context_mask ? c->kmask : NULL,
                                c->kv_scored ? c->kscore : NULL, NULL, NULL, NULL, c->hc, c->hout));

  /* scatter: routed queries replace null_q_token (or 0); unrouted, the heavy output is the output */
  const c5_real *nq = m->null_q >= 0 ? c5_params_value(p, m->null_q) : NULL;
  if (rq->routed) {
    for (long t = 0; t < batch * n; t++)
      for (long k = 0; k < D; k++) out[t * D + k] = nq ? nq[k] : 0;
    for (long e = 0; e < batch * c->nq; e++) {
      long t = (e / c->nq) * n + c->qtok[e];
      for (long k = 0; k < D; k++) out[t * D + k] = c->hout[e * D + k] * c->qscore[e];
    }
  } else {
    memcpy(out, c->hout, (size_t)(batch * n * D) * sizeof *out);
  }
  c->valid = 1;
  return C5_OK;
}

c5_status c5_routed_cross_attn_backward(c5_routed_cross_attn *m, const c5_dist *d, c5_routed_cross_attn_cache *c,
                                        const c5_real *x, const c5_real *context, const c5_real *dout, c5_real *dx,
                                        c5_real *dcontext)
{
  C5_CHECK(m && d && c && x && context && dout && dx && dcontext, C5_ERR_ARG,
           "c5_routed_cross_attn_backward: NULL argument");
  C5_CHECK(c->valid, C5_ERR_ARG, "ConditionalRoutedCrossAttention backward: the cache holds no forward");
  const c5_routed_cross_attn_config *cfg = &m->cfg;
  const long n = c->n, mc = c->m, D = cfg->dim, R = cfg->kv_routing_tokens, batch = c->batch;
  const c5_params *p = m->p;
  const c5_routing *rq = c5_router_cache_routing(c->rq);

  memset(dx, 0, (size_t)(batch * n * D) * sizeof *dx);
  memset(dcontext, 0, (size_t)(batch * mc * D) * sizeof *dcontext);

  /* null_q_token: every token not overwritten by a routed query */
  if (rq->routed && m->null_q >= 0) {
    c5_real *g = c5_params_grad(p, m->null_q);
    double *acc = calloc((size_t)D, sizeof *acc);
    C5_CHECK(acc, C5_ERR_MEM, "out of memory");
    for (long t = 0; t < batch * n; t++)
      for (long k = 0; k < D; k++) acc[k] += dout[t * D + k];
    for (long e = 0; e < batch * c->nq; e++) {
      long t = (e / c->nq) * n + c->qtok[e];
      for (long k = 0; k < D; k++) acc[k] -= dout[t * D + k];
    }
    for (long k = 0; k < D; k++) g[k] += (c5_real)acc[k];
    free(acc);
  }
  /* through the query score: out = hout * s (unrouted: s is the constant 1) */
  for (long e = 0; e < batch * c->nq; e++) {
    long t = (e / c->nq) * n + c->qtok[e];
    double ds = 0;
    for (long k = 0; k < D; k++) {
      c->dh[e * D + k] = dout[t * D + k] * c->qscore[e];
      ds += (double)dout[t * D + k] * c->hout[e * D + k];
    }
    c->dsq[e] = (c5_real)ds;
  }
  C5_CALL(c5_attn_heavy_backward(&m->heavy, p, c->hc, c->dh, c->dxq, c->dctx, c->kv_scored ? c->dks : NULL, NULL));
  for (long e = 0; e < batch * c->nq; e++) {
    long t = (e / c->nq) * n + c->qtok[e];
    for (long k = 0; k < D; k++) dx[t * D + k] += c->dxq[e * D + k];
  }
  for (long e = 0; e < batch * R * c->nk; e++) {
    long t = c->kbat[e] * mc + c->ktok[e];
    for (long k = 0; k < D; k++) dcontext[t * D + k] += c->dctx[e * D + k];
  }
  /* routers (unrouted scores are constants: no gradient) */
  C5_CALL(c5_router_backward(m->q_router, d, c->rq, c5_params_value(p, m->rt_q), x, c->dsq, dx,
                             c5_params_grad(p, m->rt_q)));
  C5_CALL(c5_router_backward(m->kv_router, d, c->rkv, c5_params_value(p, m->rt_kv), context, c->dks, dcontext,
                             c5_params_grad(p, m->rt_kv)));
  return C5_OK;
}
