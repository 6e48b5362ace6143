/* routed_attn.c - ConditionalRoutedAttention: LocalMHA over every token plus
   a heavy Attention from the tokens the q router picks to the tokens the kv
   router picks (num_routed_kv routes splitting the heads), scaled by the
   query scores and scattered back over null_q_token (reference:
   colt5_attention/transformer_block.py).
   Sharded (docs/design.md §3): the light branch runs on [left halo | shard | right
   halo] with one window from each neighbour (the shard starts on a window
   boundary: the layout unit is the window), and sends the halo gradients
   back; the heavy branch all-gathers the routed key/value tokens (each rank
   attends for the routed queries it holds) and reduce-scatters their
   gradients back to the owners (kv_exchange.h). */
#include "c5_internal.h"
#include "attn_local.h"
#include "backend.h"
#include "halo.h"
#include "heavy_branch.h"
#include "heavy_scatter.h"
#include "kv_exchange.h"
#include "dump_internal.h"
#include "ws.h"

struct c5_routed_attn {
  c5_routed_attn_config cfg;
  c5_params *p;
  c5_attn_local light;
  c5_heavy_branch hb;         /* null_q_token, routing tokens, heavy_attn, routers */
};

struct c5_routed_attn_cache {
  const c5_backend *be;                /* the parameters': every tensor and index array below lives there */
  long batch, n;                       /* n: local tokens */
  long offset;                         /* global index of the first local token */
  int rank, size;
  /* light branch on [left halo | shard | right halo]; on one rank on the shard itself */
  c5_attn_local_cache *lc;             /* for n + 2 window tokens (n without halo buffers) */
  c5_halo halo;
  int halo_bufs;                       /* the halo's buffers exist: only in a job of several ranks */
  void *block;                         /* the arena all of this cache's own buffers are carved from */
  /* routers */
  c5_router_cache *rq, *rkv;
  /* heavy branch */
  c5_attn_heavy_cache *hc;
  long nq, nk, cap_q, cap_k;           /* queries per batch row (padded), keys per route; capacities */
  long nql;                            /* [b] real queries per row are in qcnt */
  long *qcnt;                          /* [b] local queries of each row (host) */
  long *qtok;                          /* [b, nq] output row (b n + local token) of each heavy query (-1: padding) */
  c5_real *qscore;                     /* [b, nq] */
  c5_heavy_scatter sc;                 /* the heavy output over null_q_token */
  c5_kv_exchange *kvx;                 /* the kv rows (b, route) of every rank, and their gradients back */
  c5_real *hout;                       /* [b, nq, dim] the heavy attention's output, before the scatter */
  c5_ws *ws;                           /* the transient workspace: the block's, or its own */
  int own_ws;
  size_t ws_at;                        /* the depth this cache's calls start at (its maker's frames below) */
  long dim, routes;
  /* the heavy branch's frame, after the light branch's (a forward's inputs to the heavy attention, which
     keeps its own copies; a backward's gradients), for cap_q queries per row and cap_k keys per kv row: */
  c5_real *xq;                         /* [b, nq, dim] */
  long *qpos;                          /* [b, nq] */
  c5_real *ctx, *kscore;               /* [b R, nk, dim], [b R, nk] */
  uint8_t *kmask;                      /* [b R, nk] */
  long *kpos;                          /* [b R, nk] */
  c5_real *dh, *dxq, *dqs, *dsq;       /* [b, nq, dim] x2, [b, nq] x2 */
  c5_real *dctx, *dks;                 /* [b R, nk, dim], [b R, nk] */
};

/* The heavy branch's frame (+1: the distinct pointer of an empty buffer, as the cache's own buffers). */
static void carve_frame(void *obj, c5_arena *a)
{
  c5_routed_attn_cache *c = obj;
  const long q = c->batch * c->cap_q, k = c->batch * c->routes * c->cap_k, D = c->dim;
  C5_TAKE(a, c->xq, q * D + 1);
  C5_TAKE(a, c->qpos, q + 1);
  C5_TAKE(a, c->ctx, k * D + 1);
  C5_TAKE(a, c->kscore, k + 1);
  C5_TAKE(a, c->kmask, k + 1);
  C5_TAKE(a, c->kpos, k + 1);
  C5_TAKE(a, c->dh, q * D + 1);
  C5_TAKE(a, c->dxq, q * D + 1);
  C5_TAKE(a, c->dqs, q + 1);
  C5_TAKE(a, c->dsq, q + 1);
  C5_TAKE(a, c->dctx, k * D + 1);
  C5_TAKE(a, c->dks, k + 1);
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
  C5_CHECK(cfg->heavy_heads > 0 && cfg->heavy_dim_head > 0, C5_ERR_ARG, "%s: heavy_heads = %d and heavy_dim_head = %d "
           "must be > 0", who, cfg->heavy_heads, cfg->heavy_dim_head);
  C5_CHECK(!cfg->has_light_attn || (cfg->light_heads > 0 && cfg->light_dim_head > 0), C5_ERR_ARG,
           "%s: light_heads = %d and light_dim_head = %d must be > 0", who, cfg->light_heads, cfg->light_dim_head);
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
  m->hb.null_q = -1;
  char pre[256];
  c5_status st = C5_OK;
  if (cfg->has_light_attn) {
    c5_name_join(pre, sizeof pre, prefix, "light_attn");
    C5_CALL_GOTO(c5_attn_local_init(&m->light, p, pre, cfg->dim, cfg->light_heads, cfg->light_dim_head,
                                    cfg->light_window_size / 2, 1, 1, 0, 1), st, fail);
    C5_CALL_GOTO(c5_attn_local_set_rotary(&m->light, cfg->light_rotary_emb), st, fail);
  }
  C5_CALL_GOTO(c5_heavy_branch_init(&m->hb, p, prefix, cfg->dim, cfg->heavy_heads, cfg->heavy_dim_head,
                                    cfg->num_routed_kv, cfg->multiply_keys_by_score, cfg->use_null_q_tokens,
                                    &cfg->router, cfg->router.route_block_size), st, fail);
  *out = m;
  return C5_OK;
fail:
  c5_routed_attn_destroy(&m);
  return st;
}

/* The light branch's LocalMHA counts its windows (light_window_size / 2 tokens, look one each way) from
   token 0 and light_forward receives exactly one window from each neighbour: shards must start on window
   boundaries, so the unit is the window. The heavy branch gathers its keys from every rank with global
   positions (rotary included) and both routers take any layout, so without the light branch no tokens
   need to share a rank. */
c5_status c5_routed_attn_layout_unit(const c5_routed_attn_config *cfg, long *unit)
{
  C5_CHECK(cfg && unit, C5_ERR_ARG, "c5_routed_attn_layout_unit: NULL argument");
  if (!cfg->has_light_attn) {
    *unit = 1;
    return C5_OK;
  }
  C5_CHECK(cfg->light_window_size >= 2, C5_ERR_ARG, "ConditionalRoutedAttention: light_window_size = %ld must be >= 2 "
           "(the local window is half of it)", cfg->light_window_size);
  *unit = cfg->light_window_size / 2;
  return C5_OK;
}

c5_status c5_routed_attn_destroy(c5_routed_attn **m)
{
  if (!m || !*m) return C5_OK;
  c5_heavy_branch_fini(&(*m)->hb);
  C5_FREE(*m);
  return C5_OK;
}

c5_status c5_routed_attn_set_random_seed(c5_routed_attn *m, uint64_t seed)
{
  C5_CHECK(m, C5_ERR_ARG, "c5_routed_attn_set_random_seed: NULL module");
  m->cfg.random_seed = seed;
  return C5_OK;
}

static c5_status size_heavy(const c5_routed_attn *m, c5_routed_attn_cache *c, long nq, long nk);

static void carve(void *obj, c5_arena *a)
{
  c5_routed_attn_cache *c = obj;
  if (c->halo_bufs) c5_halo_carve(&c->halo, a);
}

c5_status c5_routed_attn_cache_create(const c5_routed_attn *m, long batch, long n, c5_routed_attn_cache **out)
{
  C5_CALL(c5_routed_attn_cache_create_ws(m, batch, n, NULL, out));
  return C5_OK;
}

c5_status c5_routed_attn_cache_create_ws(const c5_routed_attn *m, long batch, long n, c5_ws *ws,
                                         c5_routed_attn_cache **out)
{
  const c5_routed_attn_config *cfg = &m->cfg;
  const char *who = "ConditionalRoutedAttention cache";
  c5_routed_attn_cache *c;
  C5_CALLOC(c, 1);
  c->be = c5_params_backend(m->p);
  c->batch = batch;
  c->n = n;
  c->dim = cfg->dim;
  c->routes = cfg->num_routed_kv;
  c5_status st = C5_OK;
  C5_CALL_GOTO(c5_ws_use(c->be, ws, &c->ws, &c->own_ws), st, fail);
  c->ws_at = c->ws->top;
  C5_CALL_GOTO(c5_router_cache_create(m->hb.q_router, batch, n, &c->rq), st, fail);
  C5_CALL_GOTO(c5_router_cache_create(m->hb.kv_router, batch, n, &c->rkv), st, fail);
  C5_CALL_GOTO(c5_kv_exchange_create("ConditionalRoutedAttention", cfg->dim, c5_params_backend(m->p),
                                     &c->kvx), st, fail);
  c->qcnt = calloc((size_t)batch, sizeof *c->qcnt);
  C5_CHECK_GOTO(c->qcnt, st, fail, C5_ERR_MEM, "ConditionalRoutedAttention cache: out of memory");
  if (cfg->has_light_attn) {   /* the light branch on [left halo | shard | right halo], a window each side */
    const long w = m->light.window;
    c5_halo_init(&c->halo, batch, n, cfg->dim, w, 1, 1);
    /* A forward on one rank has no halo: LocalMHA then runs on x and out themselves (light_local), and the
       halo's extended input, output and input gradient (3 [batch, n + 2w, dim]) would be copies. A cache
       cannot know the communicator of its forwards, but they are at most MPI_COMM_WORLD: in a job of one
       rank the buffers are left out. */
    c->halo_bufs = c5_dist_world_size() > 1;
    C5_CALL_GOTO(c5_attn_local_cache_create_ws(&m->light, batch, c->halo_bufs ? n + 2 * w : n, c->ws, &c->lc), st,
                 fail);   /* its frames at this cache's depth: the heavy branch's frame opens after them */
  }
  {   /* the halo's buffers, on the backend */
    c5_arena a = { 0 };
    carve(c, &a);
    C5_CALL_GOTO(c5_arena_alloc_on(&a, c->be, who), st, fail);
    c->block = a.base;
    carve(c, &a);
  }
  /* The heavy branch, for the worst case of every forward (docs/design.md §4, "Memory"):
     queries per batch row: a router row selects k tokens globally, of which this rank holds at most
       min(k, n_local); unrouted (n <= num_tokens), every local token: n_local <= n <= num_tokens. Without
       route blocks k = num_tokens_q; with them k depends on the global n, but a rank never holds more than
       n_local: min(num_tokens_q, n_local), or n_local.
     keys per route (the all-gathered kv rows): the row's global top-k count k = num_tokens_kv, or unrouted
       the whole sequence n <= num_tokens_kv. With route blocks k = blocks ceil(num_tokens_kv / blocks)
       < num_tokens_kv + blocks: sized for blocks <= num_tokens_kv (k <= 2 num_tokens_kv - 1); more blocks
       than tokens (a longer sequence than create can know) grows the buffers in the forward.
     this rank's kv entries: per kv row (b, route) at most min(keys, n_local).
     ranks: at most those of MPI_COMM_WORLD (the per-rank counts of the exchange). */
  const int blocks = cfg->router.route_block_size > 0;
  const long kq = cfg->num_heavy_tokens_q, kkv = cfg->num_heavy_tokens_kv;
  const long nq = blocks || kq > n ? n : kq, nk = blocks ? 2 * kkv - 1 : kkv;
  const long rows = batch * cfg->num_routed_kv;
  C5_CALL_GOTO(size_heavy(m, c, nq > 0 ? nq : 1, nk), st, fail);
  C5_CALL_GOTO(c5_kv_exchange_reserve(c->kvx, rows, nk, rows * (nk < n ? nk : n), rows, c5_dist_world_size()), st,
               fail);
  if (c->own_ws) C5_CALL_GOTO(c5_ws_fit(c->ws, who), st, fail);
  *out = c;
  return C5_OK;
fail:
  c5_routed_attn_cache_destroy(&c);
  return st;
}

static void free_heavy(c5_routed_attn_cache *c)
{
  c5_attn_heavy_cache_destroy(&c->hc);
  void *v[] = { c->qtok, c->qscore, c->hout };
  for (size_t i = 0; i < sizeof v / sizeof *v; i++) c5_backend_free(c->be, v[i]);
  c->qtok = NULL;
  c->qscore = c->hout = NULL;
  c->cap_q = c->cap_k = 0;
}

c5_status c5_routed_attn_cache_destroy(c5_routed_attn_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_routed_attn_cache *c = *cp;
  free_heavy(c);
  c5_attn_local_cache_destroy(&c->lc);
  if (c->block) c5_backend_free(c->be, c->block);
  c5_kv_exchange_destroy(&c->kvx);
  c5_router_cache_destroy(&c->rq);
  c5_router_cache_destroy(&c->rkv);
  free(c->qcnt);
  if (c->own_ws) c5_ws_destroy(&c->ws);
  C5_FREE(*cp);
  return C5_OK;
}

const c5_routing *c5_routed_attn_routing_q(const c5_routed_attn_cache *c) { return c5_router_cache_routing(c->rq); }
const c5_routing *c5_routed_attn_routing_kv(const c5_routed_attn_cache *c) { return c5_router_cache_routing(c->rkv); }

/* ---- what an activation dump reads (dump_internal.h) ---- */
const c5_router_cache *c5_routed_attn_router_q(const c5_routed_attn_cache *c) { return c->rq; }
const c5_router_cache *c5_routed_attn_router_kv(const c5_routed_attn_cache *c) { return c->rkv; }
int c5_routed_attn_has_light(const c5_routed_attn *m) { return m->cfg.has_light_attn; }

/* LocalMHA's output on the extended rows again (to_out of the cached head outputs), cropped to the shard. */
c5_status c5_routed_attn_light_out(const c5_routed_attn *m, const c5_routed_attn_cache *c, c5_real *out)
{
  C5_CHECK(m->cfg.has_light_attn && c->lc, C5_ERR_ARG, "ConditionalRoutedAttention: no light branch");
  c5_real *ye;
  c5_status st = C5_BE_NEW(c->be, ye, c->batch * c5_halo_ne(&c->halo) * m->cfg.dim + 1);
  C5_CHECK(st == C5_OK, C5_ERR_MEM, "ConditionalRoutedAttention: out of memory for the light output of [%ld, %ld, %d]",
           c->batch, c5_halo_ne(&c->halo), m->cfg.dim);
  st = c5_attn_local_output(&m->light, m->p, c->lc, NULL, NULL, ye);
  if (st == C5_OK) st = c5_halo_crop_from(&c->halo, c->be, ye, out);
  c5_backend_free(c->be, ye);
  return st == C5_OK ? C5_OK : c5_err_trace(st, __FILE__, __LINE__);
}

/* The forward's scatter, written over zeros instead of added to the light output. */
c5_status c5_routed_attn_heavy_out(const c5_routed_attn *m, const c5_routed_attn_cache *c, c5_real *out)
{
  C5_CHECK(c->hc, C5_ERR_ARG, "ConditionalRoutedAttention: no forward in this cache");
  const c5k_ops *ops = c->be->ops;
  c5k_ctx kc = c5_backend_ctx(c->be, NULL, 0);
  C5_CALL(c5k_zero(ops, &kc, out, c->batch * c->n * m->cfg.dim * (long)sizeof *out));
  c5_heavy_scatter s = c->sc;
  s.accumulate = 0;
  s.prefilled = 0;
  C5_CALL(c5_heavy_scatter_forward(&s, m->p, c->hout, c->qscore, out));
  return C5_OK;
}


/* Buffers of the heavy branch for nq queries per row and nk keys per kv row: made at cache create for
   the worst case; remade only where that could not be bounded (route blocks, see cache create). */
static c5_status size_heavy(const c5_routed_attn *m, c5_routed_attn_cache *c, long nq, long nk)
{
  const long b = c->batch, R = m->cfg.num_routed_kv, D = m->cfg.dim;
  if (c->hc && nq <= c->cap_q && nk <= c->cap_k) return C5_OK;
  free_heavy(c);
  long q = b * nq, k = b * R * nk;
  c5_status st = C5_OK;
#define BE(p, cnt) if (st == C5_OK) st = C5_BE_NEW(c->be, p, (cnt) + 1)   /* +1: malloc(0)'s distinct pointer */
  BE(c->qtok, q); BE(c->qscore, q); BE(c->hout, q * D);
#undef BE
  C5_CHECK(st == C5_OK, C5_ERR_MEM, "ConditionalRoutedAttention: out of memory for %ld queries and %ld keys (%s backend)",
           q, k, c->be->ops->name);
  c->cap_q = nq;
  c->cap_k = nk;
  /* the frames, reserved at the depth the calls open them (here too when the forward grows them): the heavy
     branch's above this cache's start, the heavy attention's above it */
  const size_t top = c->ws->top;
  c5_ws_release(c->ws, c->ws_at);
  const size_t mark = c5_ws_hold(c->ws, c5_ws_measure(carve_frame, c));
  st = c5_attn_heavy_cache_create_ws(&m->hb.attn, b, nq, nk, c->ws, &c->hc);
  c5_ws_release(c->ws, mark);
  c->ws->top = top;
  if (st != C5_OK) {
    c->cap_q = c->cap_k = 0;
    return c5_err_trace(st, __FILE__, __LINE__);
  }
  if (c->ws->cap) C5_CALL(c5_ws_fit(c->ws, "ConditionalRoutedAttention"));   /* a forward's growth: no frame open */
  return C5_OK;
}

/* Light branch, forward, after the halo exchange: LocalMHA on [left halo | shard | right halo], the shard's
   outputs kept; with the residual, its input added in LocalMHA's last product (the extended rows' own inputs:
   the shard's are x). Rank-local. */
static c5_status light_local(c5_routed_attn *m, const c5_real *x, const uint8_t *mask, c5_routed_attn_cache *c,
                             const c5_real *bias, int residual, c5_real *out)
{
  c5_halo *h = &c->halo;
  if (c->size == 1)   /* no neighbours: the shard is the extended sequence */
    return c5_attn_local_forward(&m->light, m->p, c->batch, c->n, c->offset, x, mask, c->lc, bias,
                                 residual ? x : NULL, out);
  C5_CALL(c5_halo_extend(h, c->be, x, mask));
  C5_CALL(c5_attn_local_forward(&m->light, m->p, c->batch, c5_halo_ne(h), c->offset - h->hl, h->xe,
                                mask ? h->me : NULL, c->lc, bias, residual ? h->xe : NULL, h->ye));
  C5_CALL(c5_halo_crop(h, c->be, out));
  return C5_OK;
}

/* Light branch, backward, before the halo gradients go back: the halo rows' outputs get no gradient; their
   input gradients are staged for their owners. With the residual, dout is added in LocalMHA's last op (padded:
   the halo rows' zeros). Rank-local. */
static c5_status light_backward_local(c5_routed_attn *m, c5_routed_attn_cache *c, const c5_real *x,
                                     const c5_real *dout, int residual, c5_real *dx)
{
  c5_halo *h = &c->halo;
  if (c->size == 1) return c5_attn_local_backward(&m->light, m->p, c->lc, x, dout, residual ? dout : NULL, dx);
  C5_CALL(c5_halo_pad(h, c->be, dout));
  C5_CALL(c5_attn_local_backward(&m->light, m->p, c->lc, h->xe, h->ye, residual ? h->ye : NULL, h->dxe));
  C5_CALL(c5_halo_split(h, c->be, dx));
  return C5_OK;
}

/* A forward's checks and the light branch's buffers: this rank's work before the halo exchange. */
static c5_status forward_head(c5_routed_attn *m, const c5_layout *lay, long batch, const c5_real *x,
                              const uint8_t *mask, c5_routed_attn_cache *c, int residual, c5_real *out,
                              const c5_dist *d)
{
  C5_CHECK(m && lay && x && c && out, C5_ERR_ARG, "c5_routed_attn_forward: NULL argument");
  const c5_routed_attn_config *cfg = &m->cfg;
  const long n = lay->n_local, D = cfg->dim;
  C5_CHECK(batch == c->batch && n == c->n, C5_ERR_SHAPE,
           "ConditionalRoutedAttention: input [%ld, %ld, %ld], cache made for [%ld, %ld, %ld]", batch, n, D, c->batch,
           c->n, D);
  c->rank = c5_dist_rank(d);
  c->size = c5_dist_size(d);
  c->offset = lay->offset;
  long unit;
  C5_CALL(c5_routed_attn_layout_unit(cfg, &unit));
  C5_CHECK(c->size == 1 || lay->unit % unit == 0, C5_ERR_ARG, "ConditionalRoutedAttention: the layout unit %ld must be "
           "a multiple of %ld (the local window, light_window_size / 2: c5_routed_attn_layout_unit) when the sequence "
           "is sharded", lay->unit, unit);
  C5_CHECK(!cfg->has_light_attn || c->size == 1 || c->halo_bufs, C5_ERR_INTERNAL, "ConditionalRoutedAttention: a "
           "forward on %d ranks, but the cache was made in a job of one rank (no halo buffers)", c->size);
  if (cfg->has_light_attn && c->size > 1)
    C5_CALL(c5_halo_prepare(&c->halo, c->be, lay, c->rank, c->size, x, mask));
  else if (cfg->has_light_attn)   /* no halo rows: the light output's extents for c5_routed_attn_light_out */
    c->halo.hl = c->halo.hr = 0;
  else {   /* the heavy scatter adds to zeros, or to x (the residual) */
    c5k_ctx kc = c5_backend_ctx(c->be, NULL, 0);
    const long bytes = batch * n * D * (long)sizeof *out;
    if (residual) C5_CALL(c->be->ops->copy2d(&kc, out, bytes, x, bytes, bytes, 1));
    else C5_CALL(c5k_zero(c->be->ops, &kc, out, bytes));
  }
  return C5_OK;
}

/* After the routers, before the kv exchange: the heavy branch's buffers, its queries and this rank's kv
   entries. Rank-local. */
static c5_status heavy_prepare(c5_routed_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                               const c5_real *x, c5_routed_attn_cache *c)
{
  const c5_routed_attn_config *cfg = &m->cfg;
  const long n = lay->n_local, D = cfg->dim, R = cfg->num_routed_kv;
  const c5_routing *rq = c5_router_cache_routing(c->rq), *rk = c5_router_cache_routing(c->rkv);

  /* kv entries this rank owns, per kv row (b, route): its routed tokens, or all its tokens */
  const long rows = batch * R;
  long nown = 0, nk = rk->routed ? rk->k : lay->n;
  for (long row = 0; row < rows; row++) nown += rk->routed ? rk->count[row] : n;
  long nq = 0;
  for (long bb = 0; bb < batch; bb++) {
    c->qcnt[bb] = rq->routed ? rq->count[bb] : n;
    if (c->qcnt[bb] > nq) nq = c->qcnt[bb];
  }
  /* within the create-time bounds: no allocation (beyond them, route blocks only: agreed before the kv
     exchange, docs/errors.md) */
  C5_CALL(size_heavy(m, c, nq > 0 ? nq : 1, nk));
  size_t mark;   /* the heavy branch's frame: closed by c5_routed_attn_forward */
  C5_CALL(c5_ws_open(c->ws, carve_frame, c, &mark));
  C5_CALL(c5_kv_exchange_size(c->kvx, d, rows, nk, nown, rows));
  c->nq = nq > 0 ? nq : 1;
  c->nk = nk;

  const c5k_ops *ops = c->be->ops;
  c5k_ctx kc = c5_backend_ctx(c->be, NULL, 0);
  /* queries: this rank's routed tokens, padded per row with zero rows (output dropped) */
  if (c->size == 1) {
    /* one rank: every row holds nq queries (the routing's k, or every token), no padding; qtok = b n + t,
       qpos = offset + t, t = idx - offset (unrouted: i), by ops */
    const long *qi = rq->routed ? rq->idx : NULL, ldi = rq->routed ? rq->k : 0;
    C5_CALL(ops->index_rows(&kc, batch, c->nq, qi, ldi, qi ? -lay->offset : 0, 1, 0, n, c->qtok, c->nq));
    C5_CALL(ops->index_rows(&kc, batch, c->nq, qi, ldi, qi ? 0 : lay->offset, 1, 0, 0, c->qpos, c->nq));
  } else {   /* sharded: rows of qcnt queries, padded to nq with qtok -1, qpos 0; row by row, by ops */
    for (long bb = 0; bb < batch; bb++) {
      const long q = c->qcnt[bb], *qi = rq->routed ? rq->idx + rq->start[bb] : NULL;
      long *tok = c->qtok + bb * c->nq, *pos = c->qpos + bb * c->nq;
      if (q) {
        C5_CALL(ops->index_rows(&kc, 1, q, qi, q, bb * n - (qi ? lay->offset : 0), 1, 0, 0, tok, q));
        C5_CALL(ops->index_rows(&kc, 1, q, qi, q, qi ? 0 : lay->offset, 1, 0, 0, pos, q));
      }
      if (c->nq > q) {   /* constants: nq - q rows of one element, src NULL, step 0 */
        C5_CALL(ops->index_rows(&kc, c->nq - q, 1, NULL, 0, -1, 1, 0, 0, tok + q, 1));
        C5_CALL(ops->index_rows(&kc, c->nq - q, 1, NULL, 0, 0, 1, 0, 0, pos + q, 1));
      }
    }
  }
  C5_CALL(c5_heavy_query_scores(c->be, c->kvx->one, batch, c->nq, c->qcnt, rq, c->qscore));
  C5_CALL(ops->gather_rows(&kc, batch * c->nq, D, c->qtok, NULL, x, D, c->xq));
  /* the routed queries replace null_q_token (or 0); unrouted, every token is a query */
  c->sc = (c5_heavy_scatter){ .batch = batch, .n = n, .dim = D, .t1 = 0, .null_q = m->hb.null_q,
                              .fill = rq->routed && m->hb.null_q >= 0, .accumulate = 1, .nq = batch * c->nq,
                              .dst = c->qtok };

  /* pack this rank's kv entries, rows in order; the reference reads row b // R with routes (kv_gather_batch_bug) */
  c5_kv_exchange_begin(c->kvx, n, lay->offset);
  if (c->size == 1) {   /* every kv row holds nk entries: packed by ops */
    const long div = cfg->kv_gather_batch_bug && rk->routed ? R * R : R;
    C5_CALL(c5_kv_exchange_pack_rows(c->kvx, rows, nk, rk->routed ? rk->idx : NULL, rk->routed ? rk->k : 0, div,
                                     rk->routed ? rk->score : NULL));
    return C5_OK;
  }
  for (long row = 0; row < rows; row++) {   /* rows of different lengths: one by one, by ops */
    long bb = row / R, cnt = rk->routed ? rk->count[row] : n;
    long bs = cfg->kv_gather_batch_bug && rk->routed ? bb / R : bb;
    C5_CALL(c5_kv_exchange_pack_row(c->kvx, cnt, rk->routed ? rk->idx + rk->start[row] : NULL, bs,
                                    rk->routed ? rk->score + rk->start[row] : NULL));
  }
  return C5_OK;
}

/* After the kv exchange: heavy attention for this rank's queries, scattered into out. Rank-local. */
static c5_status heavy_local(c5_routed_attn *m, long batch, long n, const uint8_t *mask, c5_routed_attn_cache *c,
                             c5_real *out)
{
  const c5_routed_attn_config *cfg = &m->cfg;
  const c5_params *p = m->p;
  C5_CALL(c5_attn_heavy_forward(&m->hb.attn, p, batch, c->nq, c->nk, c->xq, c->ctx, mask ? c->kmask : NULL, c->kscore,
                                cfg->multiply_queries_by_score ? c->qscore : NULL, cfg->rotary_emb ? c->qpos : NULL,
                                cfg->rotary_emb ? c->kpos : NULL, c->hc, c->hout));
  C5_CALL(c5_heavy_scatter_forward(&c->sc, p, c->hout, c->qscore, out));
  return C5_OK;
}

/* The light branch, then both routers (on the lane) */
static c5_status light_and_routers(c5_routed_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                                   const c5_real *x, const uint8_t *mask, c5_routed_attn_cache *c, int prefill,
                                   int residual, c5_real *out)
{
  const c5_routed_attn_config *cfg = &m->cfg;
  const c5_params *p = m->p;
  if (cfg->has_light_attn) {
    if (c->size > 1) C5_CALL(c5_halo_exchange(&c->halo, d, mask != NULL));
    C5_AGREE(d, light_local(m, x, mask, c, prefill ? c5_params_value(p, m->hb.null_q) : NULL, residual, out));
  }
  C5_CALL(c5_router_forward(m->hb.q_router, d, lay, c5_params_value(p, m->hb.rt_q), batch, x, mask,
                            cfg->num_heavy_tokens_q, cfg->random_route, cfg->random_seed, c->rq));
  C5_CALL(c5_router_forward(m->hb.kv_router, d, lay, c5_params_value(p, m->hb.rt_kv), batch, x, mask,
                            cfg->num_heavy_tokens_kv, cfg->random_route, cfg->random_seed ^ 0x632be59bd9b4e019ull,
                            c->rkv));
  return C5_OK;
}

/* Rank-local stretches alternate with collectives; each stretch is agreed before the next collective
   (docs/errors.md), so every rank returns the same status. */
static c5_status forward_body(c5_routed_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                             const c5_real *x, const uint8_t *mask, c5_routed_attn_cache *c, int residual,
                             c5_real *out)
{
  c5_status st = forward_head(m, lay, batch, x, mask, c, residual, out, d);
  C5_CALL(c5_dist_agree_args(d, st, 3, (c5_dist_arg[]){ { "ConditionalRoutedAttention: sequence length n",
                                                          lay ? lay->n : 0 }, { "ConditionalRoutedAttention: batch", batch },
                                                        { "ConditionalRoutedAttention: layout unit", lay ? lay->unit : 0 } }));
  const c5_routed_attn_config *cfg = &m->cfg;
  /* null_q_token goes under every token the queries do not take (the q router routes when n > its tokens): with
     the light branch, its output projection adds it as a bias, where a pass of its own over the whole output cost
     35 us of a 3.8 ms step at n = 32768 on an H200 (heavy_scatter.h prefilled) */
  const int prefill = cfg->has_light_attn && m->hb.null_q >= 0 && lay->n > cfg->num_heavy_tokens_q;
  /* the routers read only x: on the lane they run beside the light branch (at n = 32768 on an H200 they kept
     120 of 132 multiprocessors idle for 0.2 ms), unless the light branch writes over x */
  const int overlap = cfg->has_light_attn && c5_apart(x, out, batch * lay->n_local * cfg->dim * sizeof *x);
  if (overlap) C5_CALL(c5_backend_fork(c->be));
  st = light_and_routers(m, d, lay, batch, x, mask, c, prefill, residual, out);
  if (overlap) C5_KEEP_FIRST(st, c5_backend_join(c->be));
  C5_CALL(st);
  st = heavy_prepare(m, d, lay, batch, x, c);
  if (st == C5_OK && cfg->has_light_attn && c->sc.fill != prefill)
    st = C5_ERR(C5_ERR_INTERNAL, "ConditionalRoutedAttention: null_q_token under the unrouted tokens %d, added by "
                "the light branch %d", c->sc.fill, prefill);
  c->sc.prefilled = prefill;
  /* every rank's entries of each kv row, in (kv row, slot) order */
  C5_CALL(c5_kv_exchange_gather(c->kvx, d, st, x, mask, C5_KVX_SCORE | C5_KVX_POS | C5_KVX_MASK,
                                batch * cfg->num_routed_kv, NULL, c->ctx, c->kscore, c->kmask, c->kpos));
  C5_AGREE(d, heavy_local(m, batch, lay->n_local, mask, c, out));
  return C5_OK;
}

c5_status c5_routed_attn_forward(c5_routed_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                                 const c5_real *x, const uint8_t *mask, c5_routed_attn_cache *c, c5_real *out)
{
  return c5_routed_attn_forward_res(m, d, lay, batch, x, mask, c, 0, out);
}

c5_status c5_routed_attn_forward_res(c5_routed_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                                     const c5_real *x, const uint8_t *mask, c5_routed_attn_cache *c, int residual,
                                     c5_real *out)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_routed_attn_forward: dist is NULL");
  /* the light branch's frames at this cache's depth, then the heavy branch's (heavy_prepare) with the heavy
     attention's above it */
  const size_t mark0 = c ? c->ws->top : 0;   /* forward_head checks the arguments */
  c5_status st = forward_body(m, d, lay, batch, x, mask, c, residual, out);
  if (c) c5_ws_close(c->ws, mark0);
  return st == C5_OK ? C5_OK : c5_err_trace(st, __FILE__, __LINE__);
}

/* A backward's work before the kv gradients go back: the light branch's own part, null_q_token and the
   heavy attention. Rank-local. */
static c5_status backward_local(c5_routed_attn *m, c5_routed_attn_cache *c, const c5_real *x, const c5_real *dout,
                                int residual, c5_real *dx)
{
  C5_CHECK(m && c && x && dout && dx, C5_ERR_ARG, "c5_routed_attn_backward: NULL argument");
  C5_CHECK(c->hc, C5_ERR_ARG, "c5_routed_attn_backward: no forward in this cache");
  const c5_routed_attn_config *cfg = &m->cfg;
  const long n = c->n, D = cfg->dim, batch = c->batch;
  const c5_params *p = m->p;

  c5k_ctx kc = c5_backend_ctx(c->be, NULL, 0);
  const long bytes = batch * n * D * (long)sizeof *dx;
  if (cfg->has_light_attn) C5_CALL(light_backward_local(m, c, x, dout, residual, dx));
  else if (residual) C5_CALL(c->be->ops->copy2d(&kc, dx, bytes, dout, bytes, bytes, 1));
  else C5_CALL(c5k_zero(c->be->ops, &kc, dx, bytes));

  size_t mark;   /* the heavy branch's frame: closed by c5_routed_attn_backward */
  C5_CALL(c5_ws_open(c->ws, carve_frame, c, &mark));
  /* null_q_token (this rank's share) and through the query score: out = hout * s */
  C5_CALL(c5_heavy_scatter_backward(&c->sc, p, dout, c->hout, c->qscore, c->dh, c->dsq));
  C5_CALL(c5_attn_heavy_backward(&m->hb.attn, p, c->hc, c->dh, c->dxq, c->dctx, c->dks,
                                 cfg->multiply_queries_by_score ? c->dqs : NULL));
  return C5_OK;
}

static c5_status backward_body(c5_routed_attn *m, const c5_dist *d, c5_routed_attn_cache *c, const c5_real *x,
                               const c5_real *dout, int residual, c5_real *dx)
{
  C5_AGREE(d, backward_local(m, c, x, dout, residual, dx));
  const c5_routed_attn_config *cfg = &m->cfg;
  const long D = cfg->dim, R = cfg->num_routed_kv, batch = c->batch, rows = batch * R;
  const c5_params *p = m->p;
  const c5_routing *rq = c5_router_cache_routing(c->rq);
  if (cfg->has_light_attn && c->size > 1) C5_CALL(c5_halo_return(&c->halo, d, c->be, dx));
  const c5k_ops *ops = c->be->ops;
  c5k_ctx kc = c5_backend_ctx(c->be, NULL, 0);
  if (cfg->multiply_queries_by_score) C5_CALL(ops->add2d(&kc, 1, batch * c->nq, c->dqs, 0, c->dsq, 0));
  /* the routers (unrouted scores are constants: no gradient) begin on the lane as soon as their dscores are
     formed, the q router's beside the scatters below; their parts of dx follow those, as in order (the same
     bits: docs/design.md "Streams"). */
  C5_CALL(c5_heavy_query_dscores(c->be, batch, c->nq, c->qcnt, rq, c->dsq, c->dqs));   /* routing-entry order */
  const c5_real *rtq = c5_params_value(p, m->hb.rt_q), *rtk = c5_params_value(p, m->hb.rt_kv);
  c5_real *drq = c5_params_grad(p, m->hb.rt_q), *drk = c5_params_grad(p, m->hb.rt_kv);
  c5_status st = c5_router_backward_begin(m->hb.q_router, d, c->rq, rtq, x, c->dqs, dx, drq);
  const int q_begun = st == C5_OK;
  if (st == C5_OK) st = ops->scatter_rows(&kc, batch * c->nq, D, c->qtok, c->dxq, NULL, NULL, 1, 1, dx);
  /* key/value gradients: back to rank-major order, summed over ranks, each owner gets its entries; the status
     so far agreed first */
  st = c5_kv_exchange_return(c->kvx, d, st, rows, NULL, c->dctx, c->dks, dx);
  int kv_begun = 0;
  if (st == C5_OK) {   /* the kv dscore entries are in routing order */
    st = c5_router_backward_begin(m->hb.kv_router, d, c->rkv, rtk, x, c->kvx->downs, dx, drk);
    kv_begun = st == C5_OK;
  }
  if (q_begun) C5_KEEP_FIRST(st, c5_router_backward_end(m->hb.q_router, c->rq, rtq, x, dx, drq));
  if (kv_begun) C5_KEEP_FIRST(st, c5_router_backward_end(m->hb.kv_router, c->rkv, rtk, x, dx, drk));
  return st;
}

c5_status c5_routed_attn_backward(c5_routed_attn *m, const c5_dist *d, c5_routed_attn_cache *c, const c5_real *x,
                                  const c5_real *dout, c5_real *dx)
{
  return c5_routed_attn_backward_res(m, d, c, x, dout, 0, dx);
}

c5_status c5_routed_attn_backward_res(c5_routed_attn *m, const c5_dist *d, c5_routed_attn_cache *c, const c5_real *x,
                                      const c5_real *dout, int residual, c5_real *dx)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_routed_attn_backward: dist is NULL");
  const size_t mark0 = c ? c->ws->top : 0;   /* backward_local checks the arguments; frames as the forward's */
  c5_status st = backward_body(m, d, c, x, dout, residual, dx);
  if (c) c5_ws_close(c->ws, mark0);
  return st == C5_OK ? C5_OK : c5_err_trace(st, __FILE__, __LINE__);
}
