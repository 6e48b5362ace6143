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
   Built like routed_attn.c from heavy_branch.h and kv_exchange.h.
   Sharded (docs/design.md §3): x and the context each have their own layout over
   the same ranks. Both routers run distributed over their own layout. Each
   rank attends for the queries it holds (its routed ones, padded per batch
   row to the longest row here; unrouted: all its tokens). Keys/values: every
   rank's routed context tokens are all-gathered (rank-major, then permuted
   into (kv row, slot) order; unrouted: the whole context, once per batch row
   and shared by the routes), and their gradients are reduce-scattered back
   to the owners. */
#include "c5_internal.h"
#include "backend.h"
#include "heavy_branch.h"
#include "heavy_scatter.h"
#include "kv_exchange.h"

struct c5_routed_cross_attn {
  c5_routed_cross_attn_config cfg;
  c5_params *p;
  c5_heavy_branch hb;         /* null_q_token, routing tokens, heavy_attn, routers */
};

struct c5_routed_cross_attn_cache {
  long batch, n, m;                    /* n: local query tokens, m: local context tokens */
  int valid;                           /* a forward has run */
  int rank, size;
  c5_attn_heavy_cache *hc;
  long hc_q, hc_k;                     /* its capacity: queries per row, keys per route */
  c5_router_cache *rq, *rkv;
  long nq, nk;                         /* heavy queries per batch row (padded), keys per route */
  int kv_scored;                       /* the context was routed: kscore feeds the heavy branch */
  long *qcnt;                          /* [b] real queries of each row */
  long *qtok;                          /* [b, nq] output row (b n + local token) of each heavy query (-1: padding) */
  c5_heavy_scatter sc;                 /* the heavy output over null_q_token */
  c5_real *xq, *qscore;                /* [b, nq (, dim)] */
  c5_real *ctx, *kscore;               /* [b, R, nk (, dim)] */
  uint8_t *kmask;
  c5_real *hout;                       /* [b, nq, dim] heavy output before the query score */
  c5_real *dh, *dxq, *dsq, *dqr;       /* dqr: q dscore in the router's entry order */
  c5_real *dctx, *dks;
  long cap_q, cap_k;                   /* buffer capacities: b nq, b R nk */
  /* kv exchange: source rows (routed: the kv rows (b, route); else the batch rows, shared by the routes) */
  c5_kv_exchange *kvx;
  long *ksrc;                          /* [b R] source row of each kv row */
};

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
  m->hb.null_q = -1;
  c5_status st = C5_OK;
  /* the q router without route blocks (router.route_block_size is 0, checked above), the kv router with */
  C5_CALL_GOTO(c5_heavy_branch_init(&m->hb, p, prefix, cfg->dim, cfg->heads, cfg->dim_head, cfg->kv_routing_tokens,
                                    cfg->multiply_keys_by_score, cfg->use_null_q_tokens, &cfg->router,
                                    cfg->route_block_size), st, fail);
  *out = m;
  return C5_OK;
fail:
  c5_routed_cross_attn_destroy(&m);
  return st;
}

/* No light branch and no rotary: both routers cut their rows out of any layout (the kv router's
   route_block_size blocks too, router.c) and every rank all-gathers the routed context, so neither
   sequence ties tokens to one rank. */
c5_status c5_routed_cross_attn_layout_unit(const c5_routed_cross_attn_config *cfg, long *unit, long *context_unit)
{
  C5_CHECK(cfg, C5_ERR_ARG, "c5_routed_cross_attn_layout_unit: NULL config");
  if (unit) *unit = 1;
  if (context_unit) *context_unit = 1;
  return C5_OK;
}

c5_status c5_routed_cross_attn_destroy(c5_routed_cross_attn **m)
{
  if (!m || !*m) return C5_OK;
  c5_heavy_branch_fini(&(*m)->hb);
  C5_FREE(*m);
  return C5_OK;
}

static c5_status size_buffers(const c5_routed_cross_attn *m, c5_routed_cross_attn_cache *c, long nq, long nk);

c5_status c5_routed_cross_attn_cache_create(const c5_routed_cross_attn *m, long batch, long n, long mctx,
                                            c5_routed_cross_attn_cache **out)
{
  C5_CHECK(m && out, C5_ERR_ARG, "c5_routed_cross_attn_cache_create: NULL argument");
  C5_CHECK(batch > 0 && n >= 0 && mctx >= 0, C5_ERR_ARG,
           "ConditionalRoutedCrossAttention cache: batch = %ld, n_local = %ld, m_local = %ld", batch, n, mctx);
  c5_routed_cross_attn_cache *c;
  C5_CALLOC(c, 1);
  c->batch = batch;
  c->n = n;
  c->m = mctx;
  c5_status st = C5_OK;
  C5_CALL_GOTO(c5_attn_heavy_cache_create(&m->hb.attn, batch, n, mctx, &c->hc), st, fail);
  c->hc_q = n;
  c->hc_k = mctx;
  C5_CALL_GOTO(c5_router_cache_create(m->hb.q_router, batch, n, &c->rq), st, fail);
  C5_CALL_GOTO(c5_router_cache_create(m->hb.kv_router, batch, mctx, &c->rkv), st, fail);
  c->qcnt = calloc((size_t)batch, sizeof *c->qcnt);
  c->ksrc = calloc((size_t)(batch * m->cfg.kv_routing_tokens), sizeof *c->ksrc);
  C5_CHECK_GOTO(c->qcnt && c->ksrc, st, fail, C5_ERR_MEM, "ConditionalRoutedCrossAttention cache: out of memory");
  C5_CALL_GOTO(c5_kv_exchange_create("ConditionalRoutedCrossAttention", m->cfg.dim, c5_params_backend(m->p),
                                       &c->kvx), st, fail);
  /* For the worst case of every forward (docs/design.md §4, "Memory"):
     queries per batch row: this rank holds at most min(k, n_local) of a row's k = num_tokens_q (the q
       router has no route blocks); unrouted, n_local <= n <= num_tokens_q: min(num_tokens_q, n_local).
     keys per route (all-gathered): the row's k = num_tokens_kv, or unrouted the whole context
       m <= num_tokens_kv; with route blocks k < num_tokens_kv + blocks: sized for blocks <= num_tokens_kv
       (2 num_tokens_kv - 1), a longer context grows the buffers in the forward.
     this rank's context entries: per source row at most min(keys, m_local); b R rows routed, b unrouted.
     ranks: at most those of MPI_COMM_WORLD. */
  const long kq = m->cfg.num_tokens_q, kkv = m->cfg.num_tokens_kv, S = batch * m->cfg.kv_routing_tokens;
  const long nq = kq < n ? kq : n, nk = m->cfg.route_block_size > 0 ? 2 * kkv - 1 : kkv;
  C5_CALL_GOTO(size_buffers(m, c, nq > 0 ? nq : 1, nk), st, fail);
  C5_CALL_GOTO(c5_kv_exchange_reserve(c->kvx, S, nk, S * (nk < mctx ? nk : mctx), S, c5_dist_world_size()), st,
               fail);
  *out = c;
  return C5_OK;
fail:
  c5_routed_cross_attn_cache_destroy(&c);
  return st;
}

static void free_q(c5_routed_cross_attn_cache *c)
{
  free(c->qtok); free(c->xq); free(c->qscore); free(c->hout); free(c->dh); free(c->dxq); free(c->dsq); free(c->dqr);
  c->qtok = NULL;
  c->xq = c->qscore = c->hout = c->dh = c->dxq = c->dsq = c->dqr = NULL;
  c->cap_q = 0;
}

static void free_k(c5_routed_cross_attn_cache *c)
{
  free(c->ctx); free(c->kscore); free(c->kmask); free(c->dctx); free(c->dks);
  c->ctx = c->kscore = c->dctx = c->dks = NULL;
  c->kmask = NULL;
  c->cap_k = 0;
}

c5_status c5_routed_cross_attn_cache_destroy(c5_routed_cross_attn_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_routed_cross_attn_cache *c = *cp;
  c5_attn_heavy_cache_destroy(&c->hc);
  c5_router_cache_destroy(&c->rq);
  c5_router_cache_destroy(&c->rkv);
  free_q(c);
  free_k(c);
  c5_kv_exchange_destroy(&c->kvx);
  free(c->ksrc);
  free(c->qcnt);
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


/* Buffers for nq queries per row and nk keys per route: made at cache create for the worst case; remade
   only where that could not be bounded (route blocks, see cache create). */
static c5_status size_buffers(const c5_routed_cross_attn *m, c5_routed_cross_attn_cache *c, long nq, long nk)
{
  const long b = c->batch, R = m->cfg.kv_routing_tokens, D = m->cfg.dim;
  int ok = 1;
  if (nq > c->hc_q || nk > c->hc_k) {
    long cq = nq > c->hc_q ? nq : c->hc_q, ck = nk > c->hc_k ? nk : c->hc_k;
    c5_attn_heavy_cache_destroy(&c->hc);
    C5_CALL(c5_attn_heavy_cache_create(&m->hb.attn, b, cq, ck, &c->hc));
    c->hc_q = cq;
    c->hc_k = ck;
  }
  if (b * nq > c->cap_q) {
    free_q(c);
    long q = b * nq;
    C5_NEW(c->qtok, q, ok); C5_NEW(c->xq, q * D, ok); C5_NEW(c->qscore, q, ok); C5_NEW(c->hout, q * D, ok); C5_NEW(c->dh, q * D, ok);
    C5_NEW(c->dxq, q * D, ok); C5_NEW(c->dsq, q, ok); C5_NEW(c->dqr, q, ok);
    C5_CHECK(ok, C5_ERR_MEM, "ConditionalRoutedCrossAttention: out of memory for %ld queries", q);
    c->cap_q = q;
  }
  if (b * R * nk > c->cap_k) {
    free_k(c);
    long k = b * R * nk;
    C5_NEW(c->ctx, k * D, ok); C5_NEW(c->kscore, k, ok); C5_NEW(c->kmask, k, ok); C5_NEW(c->dctx, k * D, ok); C5_NEW(c->dks, k, ok);
    C5_CHECK(ok, C5_ERR_MEM, "ConditionalRoutedCrossAttention: out of memory for %ld keys", k);
    c->cap_k = k;
  }
  return C5_OK;
}

/* This rank's context entries of every source row (routed: the kv rows (b, route), read from the batch row
   the reference reads them from; unrouted: the batch rows, the whole local context of each). */
static void kv_pack(const c5_routed_cross_attn *m, c5_routed_cross_attn_cache *c, const c5_layout *ctx_lay)
{
  const c5_routed_cross_attn_config *cfg = &m->cfg;
  const long R = cfg->kv_routing_tokens, mc = c->m, S = c->kvx->S;
  const c5_routing *rk = c5_router_cache_routing(c->rkv);
  c5_kv_exchange_begin(c->kvx, mc, ctx_lay->offset);
  for (long s = 0; s < S; s++) {
    if (rk->routed) {   /* s = kv row (b, route); the reference reads row b // R with routes (kv_gather_batch_bug) */
      long b = s / R, bs = cfg->kv_gather_batch_bug ? b / R : b;
      for (long j = 0; j < rk->count[s]; j++)
        c5_kv_exchange_add(c->kvx, rk->idx[rk->start[s] + j] - ctx_lay->offset, bs, rk->score[rk->start[s] + j]);
    } else {            /* s = batch row: its whole context */
      for (long t = 0; t < mc; t++) c5_kv_exchange_add(c->kvx, t, s, 1);
    }
    c5_kv_exchange_end_row(c->kvx);
  }
}

/* A forward's checks: this rank's work before the routers. */
static c5_status forward_head(c5_routed_cross_attn *m, const c5_dist *d, const c5_layout *lay,
                              const c5_layout *ctx_lay, long batch, const c5_real *x, const c5_real *context,
                              c5_routed_cross_attn_cache *c, c5_real *out)
{
  C5_CHECK(m && lay && ctx_lay && x && context && c && out, C5_ERR_ARG, "c5_routed_cross_attn_forward: NULL argument");
  const long n = lay->n_local, mc = ctx_lay->n_local, D = m->cfg.dim;
  C5_CHECK(batch == c->batch && n == c->n && mc == c->m, C5_ERR_SHAPE,
           "ConditionalRoutedCrossAttention: x [%ld, %ld, %ld] and context [%ld, %ld, %ld], cache made for "
           "[%ld, %ld, %ld] and [%ld, %ld, %ld]", batch, n, D, batch, mc, D, c->batch, c->n, D, c->batch, c->m, D);
  c->valid = 0;
  c->rank = c5_dist_rank(d);
  c->size = c5_dist_size(d);
  return C5_OK;
}

/* After the routers, before the kv exchange: buffers (lazy: docs/errors.md), the heavy queries and this
   rank's context entries. Rank-local. */
static c5_status heavy_prepare(c5_routed_cross_attn *m, const c5_dist *d, const c5_layout *lay,
                               const c5_layout *ctx_lay, long batch, const c5_real *x, c5_routed_cross_attn_cache *c)
{
  const c5_routed_cross_attn_config *cfg = &m->cfg;
  const long n = lay->n_local, mc = ctx_lay->n_local, D = cfg->dim, R = cfg->kv_routing_tokens;
  const c5_routing *rq = c5_router_cache_routing(c->rq), *rk = c5_router_cache_routing(c->rkv);

  /* sizes: queries per row (this rank's, padded to the longest row here); keys per route (every rank's) */
  long nq = 0;
  for (long b = 0; b < batch; b++) {
    c->qcnt[b] = rq->routed ? rq->count[b] : n;
    if (c->qcnt[b] > nq) nq = c->qcnt[b];
  }
  c->nq = nq = nq > 0 ? nq : 1;
  c->kv_scored = rk->routed;
  const long S = rk->routed ? batch * R : batch, nk = c->nk = rk->routed ? rk->k : ctx_lay->n;
  long nown = 0;
  for (long s = 0; s < S; s++) nown += rk->routed ? rk->count[s] : mc;
  C5_CALL(size_buffers(m, c, nq, nk));
  C5_CALL(c5_kv_exchange_size(c->kvx, d, S, nk, nown, batch * R));
  for (long row = 0; row < batch * R; row++) c->ksrc[row] = rk->routed ? row : row / R;

  /* heavy queries: this rank's routed tokens, or all its tokens (score 1); padding rows are zero and
     their output is dropped */
  for (long b = 0; b < batch; b++)
    for (long i = 0; i < nq; i++) {
      long e = b * nq + i;
      long t = i < c->qcnt[b] ? (rq->routed ? rq->idx[rq->start[b] + i] - lay->offset : i) : -1;
      c->qtok[e] = t >= 0 ? b * n + t : -1;
    }
  const c5k_ops *ops = c5_params_backend(m->p)->ops;
  c5k_ctx kc = { 0 };
  C5_CALL(c5_heavy_query_scores(c5_params_backend(m->p), c->kvx->one, batch, nq, c->qcnt, rq, c->qscore));
  C5_CALL(ops->gather_rows(&kc, batch * nq, D, c->qtok, NULL, x, D, c->xq));
  /* routed queries replace null_q_token (or 0); unrouted, every token is a query (nq = n, score 1): the
     heavy output is the output */
  c->sc = (c5_heavy_scatter){ .batch = batch, .n = n, .dim = D, .t1 = 0, .null_q = m->hb.null_q,
                              .fill = rq->routed, .accumulate = 0, .nq = batch * nq, .dst = c->qtok };
  kv_pack(m, c, ctx_lay);
  return C5_OK;
}

/* After the kv exchange: the heavy attention and the scatter. Rank-local. */
static c5_status heavy_local(c5_routed_cross_attn *m, long batch, long n, const uint8_t *context_mask,
                             c5_routed_cross_attn_cache *c, c5_real *out)
{
  const long nq = c->nq;
  const c5_params *p = m->p;
  C5_CALL(c5_attn_heavy_forward(&m->hb.attn, p, batch, nq, c->nk, c->xq, c->ctx, context_mask ? c->kmask : NULL,
                                c->kv_scored ? c->kscore : NULL, NULL, NULL, NULL, c->hc, c->hout));
  C5_CALL(c5_heavy_scatter_forward(&c->sc, p, c->hout, c->qscore, out));
  c->valid = 1;
  return C5_OK;
}

/* Rank-local stretches alternate with collectives; each stretch is agreed before the next collective
   (docs/errors.md), so every rank returns the same status. */
c5_status c5_routed_cross_attn_forward(c5_routed_cross_attn *m, const c5_dist *d, const c5_layout *lay,
                                       const c5_layout *ctx_lay, long batch, const c5_real *x, const uint8_t *mask,
                                       const c5_real *context, const uint8_t *context_mask,
                                       c5_routed_cross_attn_cache *c, c5_real *out)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_routed_cross_attn_forward: dist is NULL");
  c5_status st = forward_head(m, d, lay, ctx_lay, batch, x, context, c, out);
  C5_CALL(c5_dist_agree_args(d, st, 3, (c5_dist_arg[]){
      { "ConditionalRoutedCrossAttention: sequence length n", lay ? lay->n : 0 },
      { "ConditionalRoutedCrossAttention: context length", ctx_lay ? ctx_lay->n : 0 },
      { "ConditionalRoutedCrossAttention: batch", batch } }));
  const c5_routed_cross_attn_config *cfg = &m->cfg;
  const c5_params *p = m->p;
  /* route the queries of x (with mask) and the keys/values of the context (with context_mask), each
     distributed over its own layout */
  C5_CALL(c5_router_forward(m->hb.q_router, d, lay, c5_params_value(p, m->hb.rt_q), batch, x, mask,
                            cfg->num_tokens_q, 0, 0, c->rq));
  C5_CALL(c5_router_forward(m->hb.kv_router, d, ctx_lay, c5_params_value(p, m->hb.rt_kv), batch, context,
                            context_mask, cfg->num_tokens_kv, 0, 0, c->rkv));
  st = heavy_prepare(m, d, lay, ctx_lay, batch, x, c);
  /* keys/values per route: the routed context tokens of every rank with their scores and mask, or the
     whole context (every route sees it: the same as the reference's single route over all heads) */
  const int routed_kv = c5_router_cache_routing(c->rkv)->routed;
  C5_CALL(c5_kv_exchange_gather(c->kvx, d, st, context, context_mask,
                                (routed_kv ? C5_KVX_SCORE : 0) | (context_mask ? C5_KVX_MASK : 0),
                                batch * cfg->kv_routing_tokens, c->ksrc, c->ctx, c->kscore, c->kmask, NULL));
  C5_AGREE(d, heavy_local(m, batch, lay->n_local, context_mask, c, out));
  return C5_OK;
}

/* A backward's work before the context gradients go back: null_q_token and the heavy attention.
   Rank-local. */
static c5_status backward_local(c5_routed_cross_attn *m, const c5_dist *d, c5_routed_cross_attn_cache *c,
                                const c5_real *x, const c5_real *context, const c5_real *dout, c5_real *dx,
                                c5_real *dcontext)
{
  C5_CHECK(m && c && x && context && dout && dx && dcontext, C5_ERR_ARG,
           "c5_routed_cross_attn_backward: NULL argument");
  C5_CHECK(c->valid, C5_ERR_ARG, "ConditionalRoutedCrossAttention backward: the cache holds no forward");
  C5_CHECK(c5_dist_size(d) == c->size, C5_ERR_ARG, "ConditionalRoutedCrossAttention backward: the forward ran on "
           "%d ranks, this communicator has %d", c->size, c5_dist_size(d));
  const long n = c->n, mc = c->m, D = m->cfg.dim, batch = c->batch, nq = c->nq;
  const c5_params *p = m->p;

  const c5k_ops *ops = c5_params_backend(p)->ops;
  c5k_ctx kc = { 0 };
  C5_CALL(c5k_zero(ops, &kc, dx, batch * n * D * (long)sizeof *dx));
  C5_CALL(c5k_zero(ops, &kc, dcontext, batch * mc * D * (long)sizeof *dcontext));

  /* null_q_token: every token (this rank's) not overwritten by a routed query; through the query score:
     out = hout * s (unrouted: s is the constant 1; padding rows: no gradient) */
  C5_CALL(c5_heavy_scatter_backward(&c->sc, p, dout, c->hout, c->qscore, c->dh, c->dsq));
  C5_CALL(c5_attn_heavy_backward(&m->hb.attn, p, c->hc, c->dh, c->dxq, c->dctx, c->kv_scored ? c->dks : NULL, NULL));
  C5_CALL(ops->scatter_rows(&kc, batch * nq, D, c->qtok, c->dxq, NULL, NULL, 1, 1, dx));
  return C5_OK;
}

c5_status c5_routed_cross_attn_backward(c5_routed_cross_attn *m, const c5_dist *d, c5_routed_cross_attn_cache *c,
                                        const c5_real *x, const c5_real *context, const c5_real *dout, c5_real *dx,
                                        c5_real *dcontext)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_routed_cross_attn_backward: dist is NULL");
  c5_status st = backward_local(m, d, c, x, context, dout, dx, dcontext);
  /* context gradients: back to gathered (rank-major) order, summed over the routes that share an entry
     and over the ranks; each owner gets its entries (in its source-row order) */
  const long R = m && c ? m->cfg.kv_routing_tokens : 0, batch = c ? c->batch : 0;
  C5_CALL(c5_kv_exchange_return(c ? c->kvx : NULL, d, st, batch * R, c ? c->ksrc : NULL, c ? c->dctx : NULL,
                                c && c->kv_scored ? c->dks : NULL, dcontext));
  const c5_params *p = m->p;
  const long nq = c->nq;
  const c5_routing *rq = c5_router_cache_routing(c->rq);
  /* routers (unrouted scores are constants: no gradient); dscore in each router's entry order (the kv
     router's: this rank's entries, rows in order = downs) */
  C5_CALL(c5_heavy_query_dscores(c5_params_backend(p), batch, nq, c->qcnt, rq, c->dsq, c->dqr));
  C5_CALL(c5_router_backward(m->hb.q_router, d, c->rq, c5_params_value(p, m->hb.rt_q), x, c->dqr, dx,
                             c5_params_grad(p, m->hb.rt_q)));
  C5_CALL(c5_router_backward(m->hb.kv_router, d, c->rkv, c5_params_value(p, m->hb.rt_kv), context, c->kvx->downs,
                             dcontext, c5_params_grad(p, m->hb.rt_kv)));
  return C5_OK;
}
