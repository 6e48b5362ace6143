/* routed_attn.c - ConditionalRoutedAttention: LocalMHA over every token plus
   a heavy Attention from the tokens the q router picks to the tokens the kv
   router picks (num_routed_kv routes splitting the heads), scaled by the
   query scores and scattered back over null_q_token (reference:
   colt5_attention/transformer_block.py). One rank for now: the sharded
   version (halo exchange, all-gathered K/V) comes with the sharding work. */
#include "c5_internal.h"
#include "attn_local.h"
#include "attn_heavy.h"

struct c5_routed_attn {
  c5_routed_attn_config cfg;
  c5_params *p;
  c5_attn_local light;
  c5_attn_heavy heavy;
  long null_q, rt_q, rt_kv;   /* parameter indices (null_q = -1 when unused) */
  c5_router *q_router, *kv_router;
};

struct c5_routed_attn_cache {
  long batch, n;                       /* n: local tokens */
  c5_attn_local_cache *lc;
  c5_attn_heavy_cache *hc;
  c5_router_cache *rq, *rkv;
  long nq, nk;                         /* heavy queries per batch row, keys per route */
  long *qtok;                          /* [b, nq] local token of each heavy query */
  long *ktok;                          /* [b, R, nk] local token of each key */
  long *kbat;                          /* [b, R, nk] batch row the key was read from */
  c5_real *xq, *ctx, *qscore, *kscore; /* gathered inputs of the heavy branch */
  uint8_t *kmask;
  long *qpos, *kpos;                   /* rotary positions (global) */
  c5_real *hout;                       /* [b, nq, dim] heavy output before the query score */
  c5_real *dh, *dxq, *dctx, *dks, *dqs, *dsq;
};

static void sub(char *buf, size_t len, const char *prefix, const char *name)
{
  snprintf(buf, len, "%s%s%s", prefix && *prefix ? prefix : "", prefix && *prefix ? "." : "", name);
}

c5_status c5_routed_attn_create(const c5_routed_attn_config *cfg, c5_params *p, const char *prefix,
                                c5_routed_attn **out)
{
  C5_CHECK(cfg && p && out, C5_ERR_ARG, "c5_routed_attn_create: NULL argument");
  const char *who = "ConditionalRoutedAttention";
  C5_CHECK(cfg->dim > 0, C5_ERR_ARG, "%s: dim = %d must be > 0", who, cfg->dim);
  C5_CHECK(cfg->num_heavy_tokens_q > 0 && cfg->num_heavy_tokens_kv > 0, C5_ERR_ARG,
           "%s: num_heavy_tokens_q = %ld and num_heavy_tokens_kv = %ld must be > 0", who, cfg->num_heavy_tokens_q,
           cfg->num_heavy_tokens_kv);
  C5_CHECK(cfg->num_routed_kv > 0 && cfg->heavy_heads % cfg->num_routed_kv == 0, C5_ERR_ARG,
           "%s: heavy_heads = %d must be divisible by num_routed_kv = %d", who, cfg->heavy_heads, cfg->num_routed_kv);
  C5_CHECK(!cfg->has_light_attn || cfg->light_window_size >= 2, C5_ERR_ARG,
           "%s: light_window_size = %ld must be >= 2 (the local window is half of it)", who, cfg->light_window_size);
  C5_CHECK(!cfg->rotary_emb || cfg->heavy_dim_head % 2 == 0, C5_ERR_ARG,
           "%s: rotary_emb needs an even heavy_dim_head (got %d)", who, cfg->heavy_dim_head);
  c5_routed_attn *m;
  C5_CALLOC(m, 1);
  m->cfg = *cfg;
  m->p = p;
  m->null_q = -1;
  char pre[256];
  c5_status st = C5_OK;
  if (cfg->has_light_attn) {
    sub(pre, sizeof pre, prefix, "light_attn");
    C5_CALL_GOTO(c5_attn_local_init(&m->light, p, pre, cfg->dim, cfg->light_heads, cfg->light_dim_head,
                                    cfg->light_window_size / 2, 1, 1, 0, 1), st, fail);
  }
  long dd[1] = { cfg->dim }, rq[2] = { 1, cfg->dim }, rkv[2] = { cfg->num_routed_kv, cfg->dim };
  if (cfg->use_null_q_tokens) C5_CALL_GOTO(c5_params_add(p, prefix, "null_q_token", 1, dd, &m->null_q), st, fail);
  sub(pre, sizeof pre, prefix, "q_router");
  C5_CALL_GOTO(c5_params_add(p, pre, "routing_token", 2, rq, &m->rt_q), st, fail);
  sub(pre, sizeof pre, prefix, "kv_router");
  C5_CALL_GOTO(c5_params_add(p, pre, "routing_token", 2, rkv, &m->rt_kv), st, fail);
  sub(pre, sizeof pre, prefix, "heavy_attn");
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
  c5_routed_attn_destroy(&m);
  return st;
}

c5_status c5_routed_attn_destroy(c5_routed_attn **m)
{
  if (!m || !*m) return C5_OK;
  c5_router_destroy(&(*m)->q_router);
  c5_router_destroy(&(*m)->kv_router);
  C5_FREE(*m);
  return C5_OK;
}

c5_status c5_routed_attn_cache_create(const c5_routed_attn *m, long batch, long n, c5_routed_attn_cache **out)
{
  const c5_routed_attn_config *cfg = &m->cfg;
  const long R = cfg->num_routed_kv, D = cfg->dim;
  /* the heavy branch sees at most n queries and n keys per route (unrouted case) */
  long nq = n, nk = n;
  c5_routed_attn_cache *c;
  C5_CALLOC(c, 1);
  c->batch = batch;
  c->n = n;
  c5_status st = C5_OK;
  if (cfg->has_light_attn) C5_CALL_GOTO(c5_attn_local_cache_create(&m->light, batch, n, &c->lc), st, fail);
  C5_CALL_GOTO(c5_attn_heavy_cache_create(&m->heavy, batch, nq, nk, &c->hc), st, fail);
  C5_CALL_GOTO(c5_router_cache_create(m->q_router, batch, n, &c->rq), st, fail);
  C5_CALL_GOTO(c5_router_cache_create(m->kv_router, batch, n, &c->rkv), st, fail);
  long q = batch * nq + 1, k = batch * R * nk + 1;
  c->qtok = calloc((size_t)q, sizeof *c->qtok);
  c->ktok = calloc((size_t)k, sizeof *c->ktok);
  c->kbat = calloc((size_t)k, sizeof *c->kbat);
  c->qpos = calloc((size_t)q, sizeof *c->qpos);
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
  C5_CHECK_GOTO(c->qtok && c->ktok && c->kbat && c->qpos && c->kpos && c->xq && c->ctx && c->qscore && c->kscore && c->kmask &&
                c->hout && c->dh && c->dxq && c->dctx && c->dks && c->dqs && c->dsq, st, fail, C5_ERR_MEM,
                "ConditionalRoutedAttention cache: out of memory for %ld x %ld tokens", batch, n);
  *out = c;
  return C5_OK;
fail:
  c5_routed_attn_cache_destroy(&c);
  return st;
}

c5_status c5_routed_attn_cache_destroy(c5_routed_attn_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_routed_attn_cache *c = *cp;
  c5_attn_local_cache_destroy(&c->lc);
  c5_attn_heavy_cache_destroy(&c->hc);
  c5_router_cache_destroy(&c->rq);
  c5_router_cache_destroy(&c->rkv);
  free(c->qtok); free(c->ktok); free(c->kbat); free(c->qpos); free(c->kpos); free(c->xq); free(c->ctx); free(c->qscore);
  free(c->kscore); free(c->kmask); free(c->hout); free(c->dh); free(c->dxq); free(c->dctx); free(c->dks);
  free(c->dqs); free(c->dsq);
  C5_FREE(*cp);
  return C5_OK;
}

const c5_routing *c5_routed_attn_routing_q(const c5_routed_attn_cache *c) { return c5_router_cache_routing(c->rq); }
const c5_routing *c5_routed_attn_routing_kv(const c5_routed_attn_cache *c) { return c5_router_cache_routing(c->rkv); }

c5_status c5_routed_attn_forward(c5_routed_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                                 const c5_real *x, const uint8_t *mask, c5_routed_attn_cache *c, c5_real *out)
{
  C5_CHECK(m && d && lay && x && c && out, C5_ERR_ARG, "c5_routed_attn_forward: NULL argument");
  const c5_routed_attn_config *cfg = &m->cfg;
  const long n = lay->n_local, D = cfg->dim, R = cfg->num_routed_kv;
  C5_CHECK(batch == c->batch && n == c->n, C5_ERR_SHAPE,
           "ConditionalRoutedAttention: input [%ld, %ld, %ld], cache made for [%ld, %ld, %ld]", batch, n, D, c->batch,
           c->n, D);
  C5_CHECK(c5_dist_size(d) == 1, C5_ERR_NOTIMPL,
           "ConditionalRoutedAttention: a sequence sharded over %d ranks is not supported yet (one rank only)",
           c5_dist_size(d));
  const c5_params *p = m->p;

  if (cfg->has_light_attn) C5_CALL(c5_attn_local_forward(&m->light, p, batch, n, x, mask, c->lc, out));
  else memset(out, 0, (size_t)(batch * n * D) * sizeof *out);

  C5_CALL(c5_router_forward(m->q_router, d, lay, c5_params_value(p, m->rt_q), batch, x, mask,
                            cfg->num_heavy_tokens_q, 0, 0, c->rq));
  C5_CALL(c5_router_forward(m->kv_router, d, lay, c5_params_value(p, m->rt_kv), batch, x, mask,
                            cfg->num_heavy_tokens_kv, 0, 0, c->rkv));
  const c5_routing *rq = c5_router_cache_routing(c->rq), *rk = c5_router_cache_routing(c->rkv);

  /* heavy queries: the routed tokens, or all tokens (score 1) */
  c->nq = rq->routed ? rq->k : n;
  for (long b = 0; b < batch; b++)
    for (long i = 0; i < c->nq; i++) {
      long e = b * c->nq + i;
      long t = rq->routed ? rq->idx[rq->start[b] + i] - lay->offset : i;
      c->qtok[e] = t;
      c->qpos[e] = lay->offset + t;
      c->qscore[e] = rq->routed ? rq->score[rq->start[b] + i] : 1;
      memcpy(c->xq + e * D, x + (b * n + t) * D, (size_t)D * sizeof *x);
    }
  /* heavy keys per route: the routed tokens with their scores and mask, or all tokens */
  c->nk = rk->routed ? rk->k : n;
  for (long b = 0; b < batch; b++)
    for (long r = 0; r < R; r++)
      for (long j = 0; j < c->nk; j++) {
        long row = b * R + r, e = row * c->nk + j;
        long t = rk->routed ? rk->idx[rk->start[row] + j] - lay->offset : j;
        c->ktok[e] = t;
        c->kpos[e] = lay->offset + t;
        c->kscore[e] = rk->routed ? rk->score[rk->start[row] + j] : 1;
        long bs = cfg->kv_gather_batch_bug && rk->routed ? b / R : b;   /* see the config's comment */
        c->kbat[e] = bs;
        c->kmask[e] = mask ? mask[bs * n + t] : 1;
        memcpy(c->ctx + e * D, x + (bs * n + t) * D, (size_t)D * sizeof *x);
      }
  C5_CALL(c5_attn_heavy_forward(&m->heavy, p, batch, c->nq, c->nk, c->xq, c->ctx, mask ? c->kmask : NULL, c->kscore,
                                cfg->multiply_queries_by_score ? c->qscore : NULL, cfg->rotary_emb ? c->qpos : NULL,
                                cfg->rotary_emb ? c->kpos : NULL, c->hc, c->hout));
  /* scatter: the routed queries replace null_q_token (or 0); unrouted, every token is a query */
  const c5_real *nq = m->null_q >= 0 ? c5_params_value(p, m->null_q) : NULL;
  if (rq->routed && nq)
    for (long t = 0; t < batch * n; t++)
      for (long k = 0; k < D; k++) out[t * D + k] += nq[k];
  for (long b = 0; b < batch; b++)
    for (long i = 0; i < c->nq; i++) {
      long e = b * c->nq + i, t = b * n + c->qtok[e];
      for (long k = 0; k < D; k++)
        out[t * D + k] += c->hout[e * D + k] * c->qscore[e] - (rq->routed && nq ? nq[k] : 0);
    }
  return C5_OK;
}

c5_status c5_routed_attn_backward(c5_routed_attn *m, const c5_dist *d, c5_routed_attn_cache *c, const c5_real *x,
                                  const c5_real *dout, c5_real *dx)
{
  C5_CHECK(m && d && c && x && dout && dx, C5_ERR_ARG, "c5_routed_attn_backward: NULL argument");
  const c5_routed_attn_config *cfg = &m->cfg;
  const long n = c->n, D = cfg->dim, R = cfg->num_routed_kv, batch = c->batch;
  const c5_params *p = m->p;
  const c5_routing *rq = c5_router_cache_routing(c->rq), *rk = c5_router_cache_routing(c->rkv);

  if (cfg->has_light_attn) C5_CALL(c5_attn_local_backward(&m->light, p, c->lc, x, dout, dx));
  else memset(dx, 0, (size_t)(batch * n * D) * sizeof *dx);

  /* null_q_token: every token not replaced by a routed query */
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
  /* through the query score: out = hout * s */
  for (long e = 0; e < batch * c->nq; e++) {
    long t = (e / c->nq) * n + c->qtok[e];
    double ds = 0;
    for (long k = 0; k < D; k++) {
      c->dh[e * D + k] = dout[t * D + k] * c->qscore[e];
      ds += (double)dout[t * D + k] * c->hout[e * D + k];
    }
    c->dsq[e] = (c5_real)ds;
  }
  C5_CALL(c5_attn_heavy_backward(&m->heavy, p, c->hc, c->dh, c->dxq, c->dctx, c->dks,
                                 cfg->multiply_queries_by_score ? c->dqs : NULL));
  if (cfg->multiply_queries_by_score)
    for (long e = 0; e < batch * c->nq; e++) c->dsq[e] += c->dqs[e];
  for (long e = 0; e < batch * c->nq; e++) {
    long t = (e / c->nq) * n + c->qtok[e];
    for (long k = 0; k < D; k++) dx[t * D + k] += c->dxq[e * D + k];
  }
  for (long e = 0; e < batch * R * c->nk; e++) {
    long t = c->kbat[e] * n + c->ktok[e];
    for (long k = 0; k < D; k++) dx[t * D + k] += c->dctx[e * D + k];
  }
  /* routers (unrouted scores are constants: no gradient) */
  C5_CALL(c5_router_backward(m->q_router, d, c->rq, c5_params_value(p, m->rt_q), x, c->dsq, dx,
                             c5_params_grad(p, m->rt_q)));
  C5_CALL(c5_router_backward(m->kv_router, d, c->rkv, c5_params_value(p, m->rt_kv), x, c->dks, dx,
                             c5_params_grad(p, m->rt_kv)));
  (void)rk;
  return C5_OK;
}
