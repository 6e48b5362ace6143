/* routed_ff.c - ConditionalRoutedFeedForward: a narrow FeedForward on every
   token plus a wide one on the tokens the router picks, scaled by their
   scores and scattered back. Sharded: each rank runs the heavy FF on the
   routed tokens it holds (the router's indices are global). */
#include "c5_internal.h"
#include "backend.h"
#include "ffnet.h"
#include "arena.h"
#include "ws.h"
#include "dump_internal.h"

struct c5_routed_ff {
  c5_routed_ff_config cfg;
  c5_params *p;
  c5_ffnet light, heavy;
  long routing_token;
  c5_router *router;
};

/* Its memory plan: the router's cache (its own arena), then one arena for
   the rest. The heavy FF runs on the routed tokens this rank holds: of a
   router row's k = num_heavy_tokens at most min(k, n_local) (docs/design.md
   §4), and unrouted (n <= k) every local token, n_local <= n <= k: so
   min(k, n_local) either way, and every heavy buffer is [batch * that] rows
   (heavy_cap), n/16 of the tokens in the usual setting instead of all of
   them. With route blocks k grows with the global n (blocks x ceil(k /
   blocks)), which cache creation does not know: n_local then. */
struct c5_routed_ff_cache {
  const c5_backend *be;  /* where the arena lives */
  long batch, n_local, offset;
  long dim;
  c5_router_cache *rc;
  c5_ffnet_cache light, heavy;
  long ntok;            /* rows through the heavy FF */
  long heavy_cap;       /* rows the heavy buffers hold: batch min(num_heavy_tokens, n_local) */
  long *pos;            /* [heavy_cap] (b, local token) of each heavy row */
  c5_real *hr;          /* [heavy_cap, dim] heavy outputs, before the score */
  const uint8_t *mask;
  void *mem;            /* the arena (NULL when held) */
  c5_ws *ws;            /* the transient workspace (ws.h): the block's, or its own */
  int own_ws;
  /* held: the arena is the region [held_at, held_at + held_bytes) of ws instead (c5_routed_ff_cache_create_held),
     carved into the workspace's memory at placed (redone when that memory moves) */
  size_t held_at, held_bytes;
  const char *placed;
  long chunk;           /* the FeedForwards' chunk rows (fit_chunk) */
  /* the heavy part's frame of the workspace, in the forward and in the backward (the light FF's frame goes
     where this one would, before it; the heavy FF's above it): */
  c5_real *xr;          /* [heavy_cap, dim] gathered routed tokens (the backward gathers them again from x) */
  c5_real *dh;          /* [heavy_cap, dim] the heavy FF's output gradient */
  c5_real *dtmp;        /* [heavy_cap, dim] its input gradient */
  c5_real *dscore;      /* [heavy_cap] the router's gradient (in the arena: the router reads it beside the FFs'
                           backward, whose frames go where the heavy part's would) */
};

c5_status c5_routed_ff_create(const c5_routed_ff_config *cfg, c5_params *p, const char *prefix, c5_routed_ff **out)
{
  C5_CHECK(cfg && p && out, C5_ERR_ARG, "c5_routed_ff_create: NULL argument");
  C5_CHECK(cfg->dim > 0, C5_ERR_ARG, "ConditionalRoutedFeedForward: dim = %d must be > 0", cfg->dim);
  C5_CHECK(cfg->num_heavy_tokens > 0, C5_ERR_ARG, "ConditionalRoutedFeedForward: num_heavy_tokens = %ld must be > 0",
           cfg->num_heavy_tokens);
  C5_CHECK(cfg->router.num_routing_tokens == 1, C5_ERR_ARG,
           "ConditionalRoutedFeedForward: the router has one routing token (got %d)", cfg->router.num_routing_tokens);
  c5_routed_ff *m;
  C5_CALLOC(m, 1);
  m->cfg = *cfg;
  m->p = p;
  char pre[256];
  c5_status st = C5_OK;
  c5_name_join(pre, sizeof pre, prefix, "light_ff");
  C5_CALL_GOTO(c5_ffnet_init(&m->light, p, pre, cfg->dim, cfg->light_ff_mult), st, fail);
  c5_name_join(pre, sizeof pre, prefix, "heavy_ff");
  C5_CALL_GOTO(c5_ffnet_init(&m->heavy, p, pre, cfg->dim, cfg->heavy_ff_mult), st, fail);
  c5_name_join(pre, sizeof pre, prefix, "router");
  long rd[2] = { 1, cfg->dim };
  C5_CALL_GOTO(c5_params_add_init(p, pre, "routing_token", 2, rd, C5_INIT_NORMAL, 0, &m->routing_token), st, fail);
  /* on the lane: it may run beside the light FF (backend.h) */
  C5_CALL_GOTO(c5_router_create(c5_backend_lane(c5_params_backend(p)), &cfg->router, cfg->dim, &m->router), st, fail);
  *out = m;
  return C5_OK;
fail:
  free(m);
  return st;
}

/* Both feed-forwards see one token at a time, and the router cuts its rows (and route_block_size
   blocks) out of whatever layout it is given (router.c): no two tokens need to share a rank. */
c5_status c5_routed_ff_layout_unit(const c5_routed_ff_config *cfg, long *unit)
{
  C5_CHECK(cfg && unit, C5_ERR_ARG, "c5_routed_ff_layout_unit: NULL argument");
  *unit = 1;
  return C5_OK;
}

c5_status c5_routed_ff_destroy(c5_routed_ff **m)
{
  if (!m || !*m) return C5_OK;
  c5_router_destroy(&(*m)->router);
  C5_FREE(*m);
  return C5_OK;
}

c5_status c5_routed_ff_set_random_seed(c5_routed_ff *m, uint64_t seed)
{
  C5_CHECK(m, C5_ERR_ARG, "c5_routed_ff_set_random_seed: NULL module");
  m->cfg.random_seed = seed;
  return C5_OK;
}

/* The heavy part's frame (heavy_cap and dim set). */
static void carve_frame(void *obj, c5_arena *a)
{
  c5_routed_ff_cache *c = obj;
  C5_TAKE(a, c->xr, c->heavy_cap * c->dim);
  C5_TAKE(a, c->dh, c->heavy_cap * c->dim);
  C5_TAKE(a, c->dtmp, c->heavy_cap * c->dim);
}

static void cache_layout(const c5_routed_ff *m, c5_routed_ff_cache *c, c5_arena *a)
{
  const long rows = c->batch * c->n_local, d = m->cfg.dim, k = m->cfg.num_heavy_tokens;
  const long per_row = m->cfg.router.route_block_size > 0 || k > c->n_local ? c->n_local : k;
  c->heavy_cap = c->batch * per_row;
  c->dim = d;
  c5_ffnet_cache_layout(&m->light, m->p, rows, a, c->ws, c->chunk, &c->light);   /* its frame at this cache's depth */
  const size_t mark = c5_ws_hold(c->ws, c5_ws_measure(carve_frame, c));
  c5_ffnet_cache_layout(&m->heavy, m->p, c->heavy_cap, a, c->ws, c->chunk, &c->heavy);   /* above the heavy frame */
  c5_ws_release(c->ws, mark);
  C5_TAKE(a, c->pos, c->heavy_cap);
  C5_TAKE(a, c->hr, c->heavy_cap * d);
  C5_TAKE(a, c->dscore, c->heavy_cap);
}

/* The rows of the FeedForwards' chunks (ffnet.h): the fewest chunks whose frames, at their depth (region bytes above
   the workspace's top: a held cache's), keep within what the workspace needs already (the frames of the caches made
   before this one: a block's attention), so that the chunks cost launches only where they save memory (a block at
   n = 131072, dim 512, bf16: 3 chunks of the light FF, not 8 of C5_FF_CHUNK_ROWS); 0 (C5_FF_CHUNK_ROWS) where no
   chunking gets there. Each try lays the cache out over a probe of the workspace, which it leaves unchanged. */
static long fit_chunk(const c5_routed_ff *m, c5_routed_ff_cache *c, size_t region)
{
  c5_ws *ws = c->ws, probe = *ws;
  const long rows = c->batch * c->n_local;
  long found = 0;
  for (long k = 1; k <= 64 && !found; k++) {
    const long ch = ((rows + k - 1) / k + C5K_ROWPART - 1) / C5K_ROWPART * C5K_ROWPART;
    probe.top = ws->top + region;
    probe.need = 0;
    c->ws = &probe;
    c->chunk = ch;
    c5_arena a = { 0 };
    cache_layout(m, c, &a);
    if (probe.need <= ws->need) found = ch;
    if (ch <= C5K_ROWPART) break;
  }
  c->ws = ws;
  return found;
}

static c5_status cache_create(const c5_routed_ff *m, long batch, long n_local, c5_ws *ws, int held,
                              c5_routed_ff_cache **out)
{
  C5_CHECK(m && out, C5_ERR_ARG, "c5_routed_ff_cache_create: NULL argument");
  c5_routed_ff_cache *c;
  C5_CALLOC(c, 1);
  c->be = c5_params_backend(m->p);
  c->batch = batch;
  c->n_local = n_local;
  c5_status st = C5_OK;
  C5_CALL_GOTO(c5_ws_use(c->be, ws, &c->ws, &c->own_ws), st, fail);
  C5_CALL_GOTO(c5_router_cache_create(m->router, batch, n_local, &c->rc), st, fail);
  c5_arena a = { 0 };
  {   /* measure the buffers (every one a tensor or an index array the ops read: all on the backend) over a probe of
         the workspace: the frames are reserved below, once their chunks are chosen */
    c5_ws probe = *c->ws, *w = c->ws;
    c->ws = &probe;
    cache_layout(m, c, &a);
    c->ws = w;
  }
  c->chunk = fit_chunk(m, c, held ? c5_ws_round(a.used) : 0);
  if (c5_mem_trace())
    fprintf(stderr, "c5 mem: ConditionalRoutedFeedForward: %s%.3f MiB, FeedForward chunks of %ld rows\n",
            held ? "held in the workspace: " : "", a.used / 1048576.0, c->chunk > 0 ? c->chunk : (long)C5_FF_CHUNK_ROWS);
  if (held) {   /* the frames at their depth, above the region */
    c->held_at = c->ws->top;
    c->held_bytes = c5_ws_round(a.used);
    const size_t mark = c5_ws_hold(c->ws, c->held_bytes);
    c5_arena b = { 0 };
    cache_layout(m, c, &b);
    c5_ws_release(c->ws, mark);
  } else {
    C5_CALL_GOTO(c5_arena_alloc_on(&a, c->be, "ConditionalRoutedFeedForward cache"), st, fail);
    cache_layout(m, c, &a);   /* carved, the frames reserved */
    c->mem = a.base;
  }
  if (c->own_ws) C5_CALL_GOTO(c5_ws_fit(c->ws, "ConditionalRoutedFeedForward cache"), st, fail);
  *out = c;
  return C5_OK;
fail:
  c5_routed_ff_cache_destroy(&c);
  return st;
}

c5_status c5_routed_ff_cache_create_ws(const c5_routed_ff *m, long batch, long n_local, c5_ws *ws,
                                       c5_routed_ff_cache **out)
{
  return cache_create(m, batch, n_local, ws, 0, out);
}

c5_status c5_routed_ff_cache_create_held(const c5_routed_ff *m, long batch, long n_local, c5_ws *ws,
                                         c5_routed_ff_cache **out)
{
  C5_CHECK(ws, C5_ERR_ARG, "c5_routed_ff_cache_create_held: the workspace is NULL (its maker's)");
  return cache_create(m, batch, n_local, ws, 1, out);
}

void c5_routed_ff_cache_place(const c5_routed_ff *m, c5_routed_ff_cache *c)
{
  if (!c->held_bytes || c->placed == c->ws->base) return;
  const size_t top = c->ws->top;
  c->ws->top = c->held_at + c->held_bytes;   /* the frames' reservations land where creation made them */
  c5_arena a = { .base = c->ws->base + c->held_at };
  cache_layout(m, c, &a);
  c->ws->top = top;
  c->placed = c->ws->base;
}

void c5_routed_ff_cache_release(c5_routed_ff_cache *c)
{
  if (c && c->held_bytes) c5_ws_close(c->ws, c->held_at);
}

/* A held cache's region, from the forward that fills it to the backward that spends it: the workspace's top
   above it, so that the frames opened meanwhile go above. */
static void hold(const c5_routed_ff *m, c5_routed_ff_cache *c)
{
  if (!c->held_bytes) return;
  c5_routed_ff_cache_place(m, c);
  c->ws->top = c->held_at + c->held_bytes;
}

c5_status c5_routed_ff_cache_create(const c5_routed_ff *m, long batch, long n_local, c5_routed_ff_cache **out)
{
  C5_CALL(c5_routed_ff_cache_create_ws(m, batch, n_local, NULL, out));
  return C5_OK;
}

c5_status c5_routed_ff_cache_destroy(c5_routed_ff_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_router_cache_destroy(&(*cp)->rc);
  if ((*cp)->mem) c5_backend_free((*cp)->be, (*cp)->mem);
  if ((*cp)->own_ws) c5_ws_destroy(&(*cp)->ws);
  C5_FREE(*cp);
  return C5_OK;
}

const c5_routing *c5_routed_ff_routing(const c5_routed_ff_cache *c) { return c5_router_cache_routing(c->rc); }

/* ---- what an activation dump reads (dump_internal.h) ---- */
const c5_router_cache *c5_routed_ff_router(const c5_routed_ff_cache *c) { return c->rc; }

c5_status c5_routed_ff_light_out(const c5_routed_ff *m, const c5_routed_ff_cache *c, c5_real *out)
{
  C5_CALL(c5_ffnet_output(&m->light, m->p, &c->light, c->batch * c->n_local, out));
  return C5_OK;
}

/* The forward's scatter of the heavy rows, over zeros instead of the light output. */
c5_status c5_routed_ff_heavy_out(const c5_routed_ff *m, const c5_routed_ff_cache *c, c5_real *out)
{
  const long dim = m->cfg.dim;
  const c5_routing *rt = c5_router_cache_routing(c->rc);
  const c5k_ops *ops = c->be->ops;
  c5k_ctx kc = c5_backend_ctx(c->be, NULL, 0);
  C5_CALL(c5k_zero(ops, &kc, out, c->batch * c->n_local * dim * (long)sizeof *out));
  C5_CALL(ops->scatter_rows(&kc, c->ntok, dim, c->pos, c->hr, rt->routed ? rt->score : NULL, NULL, 1, 1, out));
  return C5_OK;
}

/* The light FF on every token (with the residual, x added in its last product), and the checks: this rank's
   work before the router. */
static c5_status forward_head(c5_routed_ff *m, const c5_layout *lay, long batch, const c5_real *x,
                              const uint8_t *mask, c5_routed_ff_cache *c, int residual, c5_real *out)
{
  C5_CHECK(m && lay && x && out && c, C5_ERR_ARG, "c5_routed_ff_forward: NULL argument");
  C5_CHECK(batch == c->batch && lay->n_local == c->n_local, C5_ERR_SHAPE,
           "ConditionalRoutedFeedForward: input [%ld, %ld, %d], cache made for [%ld, %ld, %d]", batch,
           lay->n_local, m->cfg.dim, c->batch, c->n_local, m->cfg.dim);
  c->offset = lay->offset;
  c->mask = mask;
  C5_CALL(c5_ffnet_forward(&m->light, m->p, x, batch * lay->n_local, &c->light, residual ? x : NULL, out));
  return C5_OK;
}

/* The heavy FF on the routed tokens this rank holds, or every token when unrouted (score 1). */
static c5_status forward_heavy(c5_routed_ff *m, long batch, long nl, long offset, const c5_real *x,
                               c5_routed_ff_cache *c, c5_real *out)
{
  const long dim = m->cfg.dim;
  const c5_routing *rt = c5_router_cache_routing(c->rc);
  const c5k_ops *ops = c->be->ops;
  c5k_ctx kc = c5_backend_ctx(c->be, NULL, 0);
  /* pos: the heavy rows b nl + (idx - offset), packed in routing order; the counts are host metadata */
  long e = 0, uniform = 1;
  for (long b = 0; b < batch; b++) {
    uniform &= !rt->routed || (rt->count[b] == rt->count[0] && rt->start[b] == b * rt->count[0]);
    e += rt->routed ? rt->count[b] : nl;
  }
  C5_CHECK(e <= c->heavy_cap, C5_ERR_INTERNAL, "ConditionalRoutedFeedForward: %ld heavy rows on this rank, the cache "
           "holds %ld (batch %ld, num_heavy_tokens %ld, %ld local tokens)", e, c->heavy_cap, batch,
           m->cfg.num_heavy_tokens, nl);
  if (!rt->routed)   /* every token: 0 .. batch nl - 1 */
    C5_CALL(ops->index_rows(&kc, 1, batch * nl, NULL, 0, 0, 1, 0, 0, c->pos, batch * nl));
  else if (uniform)  /* every row holds the same count (one rank): formed by an op, no index read here */
    C5_CALL(ops->index_rows(&kc, batch, rt->count[0], rt->idx, rt->count[0], -offset, 1, 0, nl, c->pos,
                            rt->count[0]));
  else {             /* ragged counts (sharded): row by row, each by an op (the indices may live on a device) */
    e = 0;
    for (long b = 0; b < batch; b++) {
      if (rt->count[b])
        C5_CALL(ops->index_rows(&kc, 1, rt->count[b], rt->idx + rt->start[b], rt->count[b], b * nl - offset, 1, 0, 0,
                                c->pos + e, rt->count[b]));
      e += rt->count[b];
    }
  }
  c->ntok = e;
  const c5_real *score = rt->routed ? rt->score : NULL;   /* unrouted: score 1 */
  size_t mark;
  C5_CALL(c5_ws_open(c->ws, carve_frame, c, &mark));
  c5_status st = ops->gather_rows(&kc, e, dim, c->pos, NULL, x, dim, c->xr);
  if (st == C5_OK) st = c5_ffnet_forward(&m->heavy, m->p, c->xr, e, &c->heavy, NULL, c->hr);
  if (st == C5_OK) st = ops->scatter_rows(&kc, e, dim, c->pos, c->hr, score, NULL, 1, 1, out);
  c5_ws_close(c->ws, mark);
  return st == C5_OK ? C5_OK : c5_err_trace(st, __FILE__, __LINE__);
}

static c5_status light_and_router(c5_routed_ff *m, const c5_dist *d, const c5_layout *lay, long batch,
                                  const c5_real *x, const uint8_t *mask, c5_routed_ff_cache *c, int residual,
                                  c5_real *out)
{
  C5_AGREE(d, forward_head(m, lay, batch, x, mask, c, residual, out));
  C5_CALL(c5_router_forward(m->router, d, lay, c5_params_value(m->p, m->routing_token), batch, x, mask,
                            m->cfg.num_heavy_tokens, m->cfg.random_route, m->cfg.random_seed, c->rc));
  return C5_OK;
}

c5_status c5_routed_ff_forward(c5_routed_ff *m, const c5_dist *d, const c5_layout *lay, long batch,
                               const c5_real *x, const uint8_t *mask, c5_routed_ff_cache *c, c5_real *out)
{
  return c5_routed_ff_forward_res(m, d, lay, batch, x, mask, c, 0, out);
}

c5_status c5_routed_ff_forward_res(c5_routed_ff *m, const c5_dist *d, const c5_layout *lay, long batch,
                                   const c5_real *x, const uint8_t *mask, c5_routed_ff_cache *c, int residual,
                                   c5_real *out)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_routed_ff_forward: dist is NULL");
  if (c) hold(m, c);   /* forward_head checks the arguments */
  /* the router reads only x: on the lane it runs beside the light FF, unless the light FF writes over x */
  const c5_backend *be = c5_params_backend(m->p);
  const int overlap = c && lay && x && out && c5_apart(x, out, c->batch * c->n_local * m->cfg.dim * sizeof *x);
  if (overlap) C5_CALL(c5_backend_fork(be));
  c5_status st = light_and_router(m, d, lay, batch, x, mask, c, residual, out);
  if (overlap) C5_KEEP_FIRST(st, c5_backend_join(be));
  C5_CALL(st);
  C5_AGREE(d, forward_heavy(m, batch, lay->n_local, lay->offset, x, c, out));
  return C5_OK;
}

/* Everything before the router's backward, on this rank: the light and the heavy FF (with the residual, dout
   added by the light FF's last op). */
static c5_status backward_local(c5_routed_ff *m, c5_routed_ff_cache *c, const c5_real *x, const c5_real *dout,
                                int residual, c5_real *dx)
{
  C5_CHECK(m && c && x && dout && dx, C5_ERR_ARG, "c5_routed_ff_backward: NULL argument");
  const long nl = c->n_local, dim = m->cfg.dim, e = c->ntok;
  const c5_routing *rt = c5_router_cache_routing(c->rc);
  const c5k_ops *ops = c->be->ops;
  c5k_ctx kc = c5_backend_ctx(c->be, NULL, 0);
  C5_CALL(c5_ffnet_backward(&m->light, m->p, &c->light, x, dout, c->batch * nl, residual ? dout : NULL, dx));
  size_t mark;   /* closed by c5_routed_ff_backward, after the router's backward */
  C5_CALL(c5_ws_open(c->ws, carve_frame, c, &mark));
  /* heavy: its input gathered again from x (the same rows: the same bits); d(heavy out) = dout * score
     (dscore: backward_dscore, before) */
  C5_CALL(ops->gather_rows(&kc, e, dim, c->pos, NULL, x, dim, c->xr));
  C5_CALL(ops->gather_rows(&kc, e, dim, c->pos, rt->routed ? rt->score : NULL, dout, dim, c->dh));
  C5_CALL(c5_ffnet_backward(&m->heavy, m->p, &c->heavy, c->xr, c->dh, e, NULL, c->dtmp));
  C5_CALL(ops->scatter_rows(&kc, e, dim, c->pos, c->dtmp, NULL, NULL, 1, 1, dx));
  return C5_OK;
}

/* The router's gradient dscore = dout . heavy out, from the forward's rows alone */
static c5_status backward_dscore(c5_routed_ff *m, c5_routed_ff_cache *c, const c5_real *x, const c5_real *dout,
                                 const c5_real *dx)
{
  C5_CHECK(m && c && x && dout && dx, C5_ERR_ARG, "c5_routed_ff_backward: NULL argument");
  c5k_ctx kc = c5_backend_ctx(c->be, NULL, 0);
  return c->be->ops->row_dot(&kc, c->ntok, m->cfg.dim, c->pos, dout, c->hr, c->dscore);
}

/* The router's backward begins on the lane beside the FFs' (it reads dscore and x), and its part of dx is
   added after theirs, as in order (the same bits: docs/design.md "Streams"). */
static c5_status backward_body(c5_routed_ff *m, const c5_dist *d, c5_routed_ff_cache *c, const c5_real *x,
                               const c5_real *dout, int residual, c5_real *dx)
{
  C5_AGREE(d, backward_dscore(m, c, x, dout, dx));
  const c5_real *rt = c5_params_value(m->p, m->routing_token);
  c5_real *drt = c5_params_grad(m->p, m->routing_token);
  c5_status st = c5_router_backward_begin(m->router, d, c->rc, rt, x, c->dscore, dx, drt);
  const int begun = st == C5_OK;
  if (st == C5_OK) st = backward_local(m, c, x, dout, residual, dx);
  st = c5_dist_agree(d, st);   /* the router's local failures too */
  if (begun) C5_KEEP_FIRST(st, c5_router_backward_end(m->router, c->rc, rt, x, dx, drt));
  return st;
}

c5_status c5_routed_ff_backward(c5_routed_ff *m, const c5_dist *d, c5_routed_ff_cache *c, const c5_real *x,
                                const c5_real *dout, c5_real *dx)
{
  return c5_routed_ff_backward_res(m, d, c, x, dout, 0, dx);
}

c5_status c5_routed_ff_backward_res(c5_routed_ff *m, const c5_dist *d, c5_routed_ff_cache *c, const c5_real *x,
                                    const c5_real *dout, int residual, c5_real *dx)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_routed_ff_backward: dist is NULL");
  /* the light FF's frame at this cache's depth, then the heavy part's with the heavy FF's above it */
  if (c) hold(m, c);   /* backward_local checks the arguments */
  const size_t mark0 = c ? c->ws->top : 0;
  c5_status st = backward_body(m, d, c, x, dout, residual, dx);
  if (c) c5_ws_close(c->ws, mark0);
  c5_routed_ff_cache_release(c);   /* the backward spends the cache: its region is free for the frames after */
  return st == C5_OK ? C5_OK : c5_err_trace(st, __FILE__, __LINE__);
}
