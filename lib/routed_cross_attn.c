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
   Built like routed_attn.c from attn_heavy.h and the router.
   Sharded (DESIGN.md §3): x and the context each have their own layout over
   the same ranks. Both routers run distributed over their own layout. Each
   rank attends for the queries it holds (its routed ones, padded per batch
   row to the longest row here; unrouted: all its tokens). Keys/values: every
   rank's routed context tokens are all-gathered (rank-major, then permuted
   into (kv row, slot) order; unrouted: the whole context, once per batch row
   and shared by the routes), and their gradients are reduce-scattered back
   to the owners. */
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
  int rank, size;
  c5_attn_heavy_cache *hc;
  long hc_q, hc_k;                     /* its capacity: queries per row, keys per route */
  c5_router_cache *rq, *rkv;
  long nq, nk;                         /* heavy queries per batch row (padded), keys per route */
  int kv_scored;                       /* the context was routed: kscore feeds the heavy branch */
  long *qcnt;                          /* [b] real queries of each row */
  long *qtok;                          /* [b, nq] local token of each heavy query (-1: padding) */
  c5_real *xq, *qscore;                /* [b, nq (, dim)] */
  c5_real *ctx, *kscore;               /* [b, R, nk (, dim)] */
  uint8_t *kmask;
  c5_real *hout;                       /* [b, nq, dim] heavy output before the query score */
  c5_real *dh, *dxq, *dsq, *dqr;       /* dqr: q dscore in the router's entry order */
  c5_real *dctx, *dks;
  long cap_q, cap_k, cap_o, cap_t, cap_s;   /* buffer capacities: b nq, b R nk, own entries, gathered, S */
  /* kv exchange: source rows (routed: the kv rows (b, route); else the batch rows), S of them, kslot
     entries each over all ranks; this rank's entries in source-row order, every rank's rank-major */
  long S, kslot, nown, tot;
  long *own_tok, *own_bat;             /* [nown] local context token and batch row read for each */
  long *cnt_all;                       /* [P, S] */
  int *rcnt, *rdsp, *rcntx, *rdspx;    /* [P] entries and displacements, in entries and in reals */
  long *inv;                           /* [tot] (source row, slot) -> gathered entry */
  c5_real *sendx, *sends, *downx, *downs;   /* [nown (, dim)] */
  uint8_t *sendm;
  c5_real *recvx, *recvs, *dsendx, *dsends; /* [tot (, dim)] */
  uint8_t *recvm;
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
  /* the heavy branch of one rank sees at most n queries and m keys per route (unrouted); a sharded
     forward may need more keys (the routed or whole context of every rank): it grows the buffers */
  c5_routed_cross_attn_cache *c;
  C5_CALLOC(c, 1);
  c->batch = batch;
  c->n = n;
  c->m = mctx;
  c5_status st = C5_OK;
  C5_CALL_GOTO(c5_attn_heavy_cache_create(&m->heavy, batch, n, mctx, &c->hc), st, fail);
  c->hc_q = n;
  c->hc_k = mctx;
  C5_CALL_GOTO(c5_router_cache_create(m->q_router, batch, n, &c->rq), st, fail);
  C5_CALL_GOTO(c5_router_cache_create(m->kv_router, batch, mctx, &c->rkv), st, fail);
  c->qcnt = calloc((size_t)batch, sizeof *c->qcnt);
  C5_CHECK_GOTO(c->qcnt, st, fail, C5_ERR_MEM, "ConditionalRoutedCrossAttention cache: out of memory");
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

static void free_x(c5_routed_cross_attn_cache *c)
{
  void *v[] = { c->own_tok, c->own_bat, c->cnt_all, c->rcnt, c->rdsp, c->rcntx, c->rdspx, c->inv, c->sendx, c->sends,
                c->downx, c->downs, c->sendm, c->recvx, c->recvs, c->dsendx, c->dsends, c->recvm };
  for (size_t i = 0; i < sizeof v / sizeof *v; i++) free(v[i]);
  c->own_tok = c->own_bat = c->cnt_all = c->inv = NULL;
  c->rcnt = c->rdsp = c->rcntx = c->rdspx = NULL;
  c->sendx = c->sends = c->downx = c->downs = c->recvx = c->recvs = c->dsendx = c->dsends = NULL;
  c->sendm = c->recvm = NULL;
  c->cap_o = c->cap_t = c->cap_s = 0;
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
  free_x(c);
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

#define NEW(p, cnt) do { (p) = calloc((size_t)(cnt) + 1, sizeof *(p)); ok = ok && (p); } while (0)

/* Buffers for nq queries per row, nk keys per route, S source rows, nown own and tot gathered entries;
   (re)made when a forward needs more than they hold. */
static c5_status size_buffers(const c5_routed_cross_attn *m, c5_routed_cross_attn_cache *c, long nq, long nk, long S,
                              long nown, long tot)
{
  const long b = c->batch, R = m->cfg.kv_routing_tokens, D = m->cfg.dim, P = c->size;
  int ok = 1;
  if (nq > c->hc_q || nk > c->hc_k) {
    long cq = nq > c->hc_q ? nq : c->hc_q, ck = nk > c->hc_k ? nk : c->hc_k;
    c5_attn_heavy_cache_destroy(&c->hc);
    C5_CALL(c5_attn_heavy_cache_create(&m->heavy, b, cq, ck, &c->hc));
    c->hc_q = cq;
    c->hc_k = ck;
  }
  if (b * nq > c->cap_q) {
    free_q(c);
    long q = b * nq;
    NEW(c->qtok, q); NEW(c->xq, q * D); NEW(c->qscore, q); NEW(c->hout, q * D); NEW(c->dh, q * D);
    NEW(c->dxq, q * D); NEW(c->dsq, q); NEW(c->dqr, q);
    C5_CHECK(ok, C5_ERR_MEM, "ConditionalRoutedCrossAttention: out of memory for %ld queries", q);
    c->cap_q = q;
  }
  if (b * R * nk > c->cap_k) {
    free_k(c);
    long k = b * R * nk;
    NEW(c->ctx, k * D); NEW(c->kscore, k); NEW(c->kmask, k); NEW(c->dctx, k * D); NEW(c->dks, k);
    C5_CHECK(ok, C5_ERR_MEM, "ConditionalRoutedCrossAttention: out of memory for %ld keys", k);
    c->cap_k = k;
  }
  if (nown > c->cap_o || tot > c->cap_t || S > c->cap_s || !c->rcnt) {
    free_x(c);
    long o = nown, t = tot;
    NEW(c->own_tok, o); NEW(c->own_bat, o); NEW(c->sendx, o * D); NEW(c->sends, o); NEW(c->sendm, o);
    NEW(c->downx, o * D); NEW(c->downs, o);
    NEW(c->cnt_all, P * S); NEW(c->rcnt, P); NEW(c->rdsp, P); NEW(c->rcntx, P); NEW(c->rdspx, P);
    NEW(c->inv, t); NEW(c->recvx, t * D); NEW(c->recvs, t); NEW(c->recvm, t); NEW(c->dsendx, t * D);
    NEW(c->dsends, t);
    C5_CHECK(ok, C5_ERR_MEM, "ConditionalRoutedCrossAttention: out of memory for %ld gathered context tokens", t);
    c->cap_o = o;
    c->cap_t = t;
    c->cap_s = S;
  }
  C5_CHECK(tot * D < 2147483647L, C5_ERR_ARG, "ConditionalRoutedCrossAttention: %ld gathered context tokens of %ld "
           "reals exceed MPI's int counts", tot, D);
  return C5_OK;
}

/* This rank's context entries of every source row, everyone's counts, everyone's entries (rank-major) and
   the map (source row, slot) -> gathered entry. */
static c5_status kv_gather(const c5_routed_cross_attn *m, const c5_dist *d, c5_routed_cross_attn_cache *c,
                           const c5_layout *ctx_lay, const c5_real *context, const uint8_t *context_mask)
{
  const c5_routed_cross_attn_config *cfg = &m->cfg;
  const long R = cfg->kv_routing_tokens, D = cfg->dim, mc = c->m, S = c->S, kslot = c->kslot;
  const int P = c->size, rank = c->rank;
  const c5_routing *rk = c5_router_cache_routing(c->rkv);
  long o = 0;
  for (long s = 0; s < S; s++) {
    long o0 = o;
    if (rk->routed) {   /* s = kv row (b, route); the reference reads row b // R with routes (kv_gather_batch_bug) */
      long b = s / R, bs = cfg->kv_gather_batch_bug ? b / R : b;
      for (long j = 0; j < rk->count[s]; j++, o++) {
        c->own_tok[o] = rk->idx[rk->start[s] + j] - ctx_lay->offset;
        c->own_bat[o] = bs;
        c->sends[o] = rk->score[rk->start[s] + j];
      }
    } else {            /* s = batch row: its whole context */
      for (long t = 0; t < mc; t++, o++) {
        c->own_tok[o] = t;
        c->own_bat[o] = s;
        c->sends[o] = 1;
      }
    }
    c->cnt_all[rank * S + s] = o - o0;
  }
  C5_CHECK(o == c->nown, C5_ERR_INTERNAL, "ConditionalRoutedCrossAttention: %ld own context entries, expected %ld", o,
           c->nown);
#pragma omp parallel for schedule(static)
  for (long e = 0; e < o; e++) {
    long t = c->own_bat[e] * mc + c->own_tok[e];
    memcpy(c->sendx + e * D, context + t * D, (size_t)D * sizeof *context);
    c->sendm[e] = context_mask ? context_mask[t] : 1;
  }

  c5_phase old = c5_dist_phase(d, C5_PHASE_HEAVY);
  c5_status st = C5_OK;
  long *mine = malloc((size_t)(S + 1) * sizeof *mine), *fill = calloc((size_t)(S + 1), sizeof *fill);
  C5_CHECK_GOTO(mine && fill, st, out, C5_ERR_MEM, "out of memory");
  for (int q = 0; q < P; q++) { c->rcnt[q] = (int)S; c->rdsp[q] = (int)(q * S); }
  memcpy(mine, c->cnt_all + rank * S, (size_t)S * sizeof *mine);
  C5_CALL_GOTO(c5_dist_allgatherv(d, mine, S, c->cnt_all, c->rcnt, c->rdsp, MPI_LONG), st, out);
  long tot = 0;
  for (int q = 0; q < P; q++) {
    long sum = 0;
    for (long s = 0; s < S; s++) sum += c->cnt_all[q * S + s];
    c->rcnt[q] = (int)sum;
    c->rdsp[q] = (int)tot;
    c->rcntx[q] = (int)(sum * D);
    c->rdspx[q] = (int)(tot * D);
    tot += sum;
  }
  for (long s = 0; s < S; s++) {
    long sum = 0;
    for (int q = 0; q < P; q++) sum += c->cnt_all[q * S + s];
    C5_CHECK_GOTO(sum == kslot, st, out, C5_ERR_INTERNAL, "ConditionalRoutedCrossAttention: context source row %ld "
                  "has %ld entries over the ranks, expected %ld", s, sum, kslot);
  }
  if (rk->routed) C5_CALL_GOTO(c5_dist_allgatherv(d, c->sends, o, c->recvs, c->rcnt, c->rdsp, C5_MPI_REAL), st, out);
  if (context_mask) C5_CALL_GOTO(c5_dist_allgatherv(d, c->sendm, o, c->recvm, c->rcnt, c->rdsp, MPI_UINT8_T), st, out);
  C5_CALL_GOTO(c5_dist_allgatherv(d, c->sendx, o * D, c->recvx, c->rcntx, c->rdspx, C5_MPI_REAL), st, out);
  /* ranks in order, each rank's entries of a row ascending: the row's slots ascend */
  {
    long e = 0;
    for (int q = 0; q < P; q++)
      for (long s = 0; s < S; s++)
        for (long j = 0; j < c->cnt_all[q * S + s]; j++, e++) c->inv[s * kslot + fill[s]++] = e;
  }
out:
  free(mine);
  free(fill);
  c5_dist_phase(d, old);
  return st;
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
  const c5_params *p = m->p;
  c->valid = 0;
  c->rank = c5_dist_rank(d);
  c->size = c5_dist_size(d);

  /* route the queries of x (with mask) and the keys/values of the context (with context_mask), each
     distributed over its own layout */
  C5_CALL(c5_router_forward(m->q_router, d, lay, c5_params_value(p, m->rt_q), batch, x, mask, cfg->num_tokens_q, 0,
                            0, c->rq));
  C5_CALL(c5_router_forward(m->kv_router, d, ctx_lay, c5_params_value(p, m->rt_kv), batch, context, context_mask,
                            cfg->num_tokens_kv, 0, 0, c->rkv));
  const c5_routing *rq = c5_router_cache_routing(c->rq), *rk = c5_router_cache_routing(c->rkv);

  /* sizes: queries per row (this rank's, padded to the longest row here); keys per route (every rank's) */
  long nq = 0;
  for (long b = 0; b < batch; b++) {
    c->qcnt[b] = rq->routed ? rq->count[b] : n;
    if (c->qcnt[b] > nq) nq = c->qcnt[b];
  }
  c->nq = nq = nq > 0 ? nq : 1;
  c->kv_scored = rk->routed;
  c->S = rk->routed ? batch * R : batch;
  c->nk = c->kslot = rk->routed ? rk->k : ctx_lay->n;
  c->tot = c->S * c->kslot;
  c->nown = 0;
  for (long s = 0; s < c->S; s++) c->nown += rk->routed ? rk->count[s] : mc;
  C5_CALL(size_buffers(m, c, nq, c->nk, c->S, c->nown, c->tot));
  const long nk = c->nk;

  /* heavy queries: this rank's routed tokens, or all its tokens (score 1); padding rows are zero and
     their output is dropped */
  for (long b = 0; b < batch; b++)
    for (long i = 0; i < nq; i++) {
      long e = b * nq + i;
      long t = i < c->qcnt[b] ? (rq->routed ? rq->idx[rq->start[b] + i] - lay->offset : i) : -1;
      c->qtok[e] = t;
      c->qscore[e] = t < 0 ? 0 : rq->routed ? rq->score[rq->start[b] + i] : 1;
      if (t >= 0) memcpy(c->xq + e * D, x + (b * n + t) * D, (size_t)D * sizeof *x);
      else memset(c->xq + e * D, 0, (size_t)D * sizeof *x);
    }
  /* keys/values per route: the routed context tokens of every rank with their scores and mask, or the
     whole context (every route sees it: the same as the reference's single route over all heads) */
  C5_CALL(kv_gather(m, d, c, ctx_lay, context, context_mask));
#pragma omp parallel for schedule(static)
  for (long row = 0; row < batch * R; row++) {
    long s = rk->routed ? row : row / R;
    for (long j = 0; j < nk; j++) {
      long e = row * nk + j, g = c->inv[s * c->kslot + j];
      c->kscore[e] = rk->routed ? c->recvs[g] : 1;
      c->kmask[e] = context_mask ? c->recvm[g] : 1;
      memcpy(c->ctx + e * D, c->recvx + g * D, (size_t)D * sizeof *c->ctx);
    }
  }
  C5_CALL(c5_attn_heavy_forward(&m->heavy, p, batch, nq, nk, c->xq, c->ctx, context_mask ? c->kmask : NULL,
                                c->kv_scored ? c->kscore : NULL, NULL, NULL, NULL, c->hc, c->hout));

  /* scatter: routed queries replace null_q_token (or 0); unrouted, the heavy output is the output */
  const c5_real *nul = m->null_q >= 0 ? c5_params_value(p, m->null_q) : NULL;
  if (rq->routed) {
    for (long t = 0; t < batch * n; t++)
      for (long k = 0; k < D; k++) out[t * D + k] = nul ? nul[k] : 0;
    for (long b = 0; b < batch; b++)
      for (long i = 0; i < c->qcnt[b]; i++) {
        long e = b * nq + i, t = b * n + c->qtok[e];
        for (long k = 0; k < D; k++) out[t * D + k] = c->hout[e * D + k] * c->qscore[e];
      }
  } else {
    memcpy(out, c->hout, (size_t)(batch * n * D) * sizeof *out);   /* nq = n: no padding */
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
  C5_CHECK(c5_dist_size(d) == c->size, C5_ERR_ARG, "ConditionalRoutedCrossAttention backward: the forward ran on "
           "%d ranks, this communicator has %d", c->size, c5_dist_size(d));
  const c5_routed_cross_attn_config *cfg = &m->cfg;
  const long n = c->n, mc = c->m, D = cfg->dim, R = cfg->kv_routing_tokens, batch = c->batch, nq = c->nq, nk = c->nk;
  const c5_params *p = m->p;
  const c5_routing *rq = c5_router_cache_routing(c->rq);

  memset(dx, 0, (size_t)(batch * n * D) * sizeof *dx);
  memset(dcontext, 0, (size_t)(batch * mc * D) * sizeof *dcontext);

  /* null_q_token: every token (this rank's) not overwritten by a routed query */
  if (rq->routed && m->null_q >= 0) {
    c5_real *g = c5_params_grad(p, m->null_q);
    double *acc = calloc((size_t)D, sizeof *acc);
    C5_CHECK(acc, C5_ERR_MEM, "out of memory");
    for (long t = 0; t < batch * n; t++)
      for (long k = 0; k < D; k++) acc[k] += dout[t * D + k];
    for (long b = 0; b < batch; b++)
      for (long i = 0; i < c->qcnt[b]; i++) {
        long t = b * n + c->qtok[b * nq + i];
        for (long k = 0; k < D; k++) acc[k] -= dout[t * D + k];
      }
    for (long k = 0; k < D; k++) g[k] += (c5_real)acc[k];
    free(acc);
  }
  /* through the query score: out = hout * s (unrouted: s is the constant 1; padding rows: no gradient) */
  for (long e = 0; e < batch * nq; e++) {
    long t = c->qtok[e] < 0 ? -1 : (e / nq) * n + c->qtok[e];
    double ds = 0;
    for (long k = 0; k < D; k++) {
      c5_real g = t < 0 ? 0 : dout[t * D + k];
      c->dh[e * D + k] = g * c->qscore[e];
      ds += (double)g * c->hout[e * D + k];
    }
    c->dsq[e] = (c5_real)ds;
  }
  C5_CALL(c5_attn_heavy_backward(&m->heavy, p, c->hc, c->dh, c->dxq, c->dctx, c->kv_scored ? c->dks : NULL, NULL));
  for (long b = 0; b < batch; b++)
    for (long i = 0; i < c->qcnt[b]; i++) {
      long e = b * nq + i, t = b * n + c->qtok[e];
      for (long k = 0; k < D; k++) dx[t * D + k] += c->dxq[e * D + k];
    }
  /* context gradients: back to gathered (rank-major) order, summed over the routes that share an entry
     and over the ranks; each owner gets its entries (in its source-row order) */
  memset(c->dsendx, 0, (size_t)(c->tot * D) * sizeof *c->dsendx);
  if (c->kv_scored) memset(c->dsends, 0, (size_t)c->tot * sizeof *c->dsends);
  for (long row = 0; row < batch * R; row++) {
    long s = c->kv_scored ? row : row / R;
    for (long j = 0; j < nk; j++) {
      long e = row * nk + j, g = c->inv[s * c->kslot + j];
      c5_real *dst = c->dsendx + g * D;
      for (long k = 0; k < D; k++) dst[k] += c->dctx[e * D + k];
      if (c->kv_scored) c->dsends[g] += c->dks[e];
    }
  }
  {
    c5_phase old = c5_dist_phase(d, C5_PHASE_HEAVY);
    c5_status st = c5_dist_reduce_scatter_real(d, c->dsendx, c->downx, c->rcntx);
    if (st == C5_OK && c->kv_scored) st = c5_dist_reduce_scatter_real(d, c->dsends, c->downs, c->rcnt);
    c5_dist_phase(d, old);
    C5_CALL(st);
  }
  for (long o = 0; o < c->nown; o++) {
    c5_real *dst = dcontext + (c->own_bat[o] * mc + c->own_tok[o]) * D;
    for (long k = 0; k < D; k++) dst[k] += c->downx[o * D + k];
  }
  /* routers (unrouted scores are constants: no gradient); dscore in each router's entry order (the kv
     router's: this rank's entries, rows in order = downs) */
  if (rq->routed)
    for (long b = 0; b < batch; b++)
      for (long i = 0; i < c->qcnt[b]; i++) c->dqr[rq->start[b] + i] = c->dsq[b * nq + i];
  C5_CALL(c5_router_backward(m->q_router, d, c->rq, c5_params_value(p, m->rt_q), x, c->dqr, dx,
                             c5_params_grad(p, m->rt_q)));
  C5_CALL(c5_router_backward(m->kv_router, d, c->rkv, c5_params_value(p, m->rt_kv), context, c->downs, dcontext,
                             c5_params_grad(p, m->rt_kv)));
  return C5_OK;
}
