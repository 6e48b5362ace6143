/* block.c - ConditionalRoutedTransformerBlock: routed attention then routed
   feedforward, each with its residual. */
#include "c5_internal.h"
#include "arena.h"
#include "backend.h"
#include "ws.h"
#include "dump_internal.h"

struct c5_block {
  const c5_backend *be;
  c5_block_config cfg;
  c5_routed_attn *attn;
  c5_routed_ff *ff;
  const c5_params *p;
  long p0, p1;     /* its parameters: entries [p0, p1) of p's table, made in a row by the create */
};

struct c5_block_cache {
  const c5_backend *be;   /* where mem lives */
  long batch, n, dim;
  c5_routed_attn_cache *ac;
  c5_routed_ff_cache *fc;
  c5_real *x1;     /* [b, n, dim] attention output + x; the backward writes the gradient at x over it once the
                      feed-forward's backward has read it */
  int x1_live;     /* x1 holds a forward's value: set by a forward, spent by the backward */
  void *mem;       /* x1 (the modules' caches have their own) */
  c5_ws *ws;       /* the transient workspace the block's modules share (ws.h) */
  int own_ws;      /* made by this cache (not a model's) */
};

c5_status c5_block_create(const c5_block_config *cfg, c5_params *p, const char *prefix, c5_block **out)
{
  C5_CHECK(cfg && p && out, C5_ERR_ARG, "c5_block_create: NULL argument");
  C5_CHECK(cfg->attn.dim == cfg->ff.dim, C5_ERR_ARG, "ConditionalRoutedTransformerBlock: attention dim %d, ff dim %d",
           cfg->attn.dim, cfg->ff.dim);
  c5_block *b;
  C5_CALLOC(b, 1);
  b->cfg = *cfg;
  b->be = c5_params_backend(p);
  b->p = p;
  b->p0 = c5_params_count(p);
  char pre[256];
  c5_status st = C5_OK;
  c5_name_join(pre, sizeof pre, prefix, "conditional_attn");
  C5_CALL_GOTO(c5_routed_attn_create(&cfg->attn, p, pre, &b->attn), st, fail);
  c5_name_join(pre, sizeof pre, prefix, "conditional_ff");
  C5_CALL_GOTO(c5_routed_ff_create(&cfg->ff, p, pre, &b->ff), st, fail);
  b->p1 = c5_params_count(p);
  *out = b;
  return C5_OK;
fail:
  c5_block_destroy(&b);
  return st;
}

/* Both modules run on the block's one layout: its unit must suit each. */
c5_status c5_block_layout_unit(const c5_block_config *cfg, long *unit)
{
  C5_CHECK(cfg && unit, C5_ERR_ARG, "c5_block_layout_unit: NULL argument");
  long ua, uf;
  C5_CALL(c5_routed_attn_layout_unit(&cfg->attn, &ua));
  C5_CALL(c5_routed_ff_layout_unit(&cfg->ff, &uf));
  C5_CALL(c5_unit_lcm("ConditionalRoutedTransformerBlock", ua, uf, unit));
  return C5_OK;
}

c5_status c5_block_destroy(c5_block **b)
{
  if (!b || !*b) return C5_OK;
  c5_routed_attn_destroy(&(*b)->attn);
  c5_routed_ff_destroy(&(*b)->ff);
  C5_FREE(*b);
  return C5_OK;
}

c5_status c5_block_set_random_seed(c5_block *b, uint64_t attn_seed, uint64_t ff_seed)
{
  C5_CHECK(b, C5_ERR_ARG, "c5_block_set_random_seed: NULL block");
  b->cfg.attn.random_seed = attn_seed;
  b->cfg.ff.random_seed = ff_seed;
  C5_CALL(c5_routed_attn_set_random_seed(b->attn, attn_seed));
  C5_CALL(c5_routed_ff_set_random_seed(b->ff, ff_seed));
  return C5_OK;
}

c5_status c5_block_cache_create_ws(const c5_block *b, long batch, long n, c5_ws *ws, c5_block_cache **out)
{
  c5_block_cache *c;
  C5_CALLOC(c, 1);
  c->be = b->be;
  c->batch = batch;
  c->n = n;
  c->dim = b->cfg.attn.dim;
  c5_status st = C5_OK;
  const long N = batch * n * b->cfg.attn.dim;
  C5_CALL_GOTO(c5_ws_use(b->be, ws, &c->ws, &c->own_ws), st, fail);
  C5_CALL_GOTO(c5_routed_attn_cache_create_ws(b->attn, batch, n, c->ws, &c->ac), st, fail);
  /* with a workspace of its own, the feed-forward's cache is a region of it that the attention's frames use
     while the cache holds nothing (c5_routed_ff_cache_create_held): at n = 131072 (dim 512, bf16) its 209 MiB
     sit under the attention's backward frames instead of beside them. A model's blocks share one workspace,
     whose frames every block's calls open: there the cache keeps an arena of its own. */
  if (c->own_ws) C5_CALL_GOTO(c5_routed_ff_cache_create_held(b->ff, batch, n, c->ws, &c->fc), st, fail);
  else C5_CALL_GOTO(c5_routed_ff_cache_create_ws(b->ff, batch, n, c->ws, &c->fc), st, fail);
  c5_arena a = { 0 };
  for (int pass = 0; pass < 2; pass++) {   /* measure, then carve (arena.h) */
    C5_TAKE(&a, c->x1, N);
    if (pass == 0) C5_CALL_GOTO(c5_arena_alloc_on(&a, b->be, "block cache"), st, fail);
  }
  c->mem = a.base;
  if (c->own_ws) C5_CALL_GOTO(c5_ws_fit(c->ws, "block cache"), st, fail);
  c5_routed_ff_cache_place(b->ff, c->fc);
  *out = c;
  return C5_OK;
fail:
  c5_block_cache_destroy(&c);
  return st;
}

c5_status c5_block_cache_create(const c5_block *b, long batch, long n, c5_block_cache **out)
{
  C5_CHECK(b && out, C5_ERR_ARG, "c5_block_cache_create: NULL argument");
  C5_CALL(c5_block_cache_create_ws(b, batch, n, NULL, out));
  return C5_OK;
}

c5_status c5_block_cache_destroy(c5_block_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_routed_attn_cache_destroy(&(*cp)->ac);
  c5_routed_ff_cache_destroy(&(*cp)->fc);
  if ((*cp)->mem) c5_backend_free((*cp)->be, (*cp)->mem);
  if ((*cp)->own_ws) c5_ws_destroy(&(*cp)->ws);
  C5_FREE(*cp);
  return C5_OK;
}

const c5_routed_attn_cache *c5_block_attn_cache(const c5_block_cache *c) { return c->ac; }
const c5_routed_ff_cache *c5_block_ff_cache(const c5_block_cache *c) { return c->fc; }
long c5_block_cache_batch(const c5_block_cache *c) { return c->batch; }
int c5_block_cache_live(const c5_block_cache *c) { return c->x1_live; }
const c5_routed_attn *c5_block_attn(const c5_block *b) { return b->attn; }
const c5_routed_ff *c5_block_ff(const c5_block *b) { return b->ff; }
const c5_block_config *c5_block_get_config(const c5_block *b) { return &b->cfg; }
const c5_backend *c5_block_backend(const c5_block *b) { return b->be; }

/* The block's parameters held still for its products (kernels.h weights_bf16: one bf16 copy of them a forward or
   backward in bf16 mode, not one a product), or forgotten (hold 0). */
static c5_status hold_weights(const c5_block *b, int hold)
{
  c5k_ctx kc = c5_backend_ctx(b->be, NULL, 0);
  if (!hold || b->p1 <= b->p0) return b->be->ops->weights_bf16(&kc, NULL, 0);
  const c5_real *w0 = c5_params_value(b->p, b->p0);
  const long n = c5_params_value(b->p, b->p1 - 1) + c5_params_numel(b->p, b->p1 - 1) - w0;
  return b->be->ops->weights_bf16(&kc, w0, n);
}

/* The block's weights held for a forward or backward, agreed across ranks with the call's argument checks (st):
   the copy's device allocation may fail on one rank only, and the call then ends on every rank before its first
   collective, each forgetting what it held. */
static c5_status hold_agreed(const c5_block *b, const c5_dist *d, c5_status st)
{
  if (st == C5_OK) st = hold_weights(b, 1);
  st = c5_dist_agree(d, st);
  if (st != C5_OK && b) (void)hold_weights(b, 0);
  return st;
}

static c5_status forward_body(c5_block *b, const c5_dist *d, const c5_layout *lay, long batch, const c5_real *x,
                              const uint8_t *mask, c5_block_cache *c, c5_real *out)
{
  /* each residual added by its module's light branch, in its last product (c5_internal.h): no pass of its own */
  C5_CALL(c5_routed_attn_forward_res(b->attn, d, lay, batch, x, mask, c->ac, 1, c->x1));
  C5_CALL(c5_routed_ff_forward_res(b->ff, d, lay, batch, c->x1, mask, c->fc, 1, out));
  c->x1_live = 1;
  return C5_OK;
}

c5_status c5_block_forward(c5_block *b, const c5_dist *d, const c5_layout *lay, long batch, const c5_real *x,
                           const uint8_t *mask, c5_block_cache *c, c5_real *out)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_block_forward: dist is NULL");
  C5_CALL(hold_agreed(b, d, b && lay && x && c && out ? C5_OK : C5_ERR(C5_ERR_ARG, "c5_block_forward: NULL argument")));
  c->x1_live = 0;
  c5_routed_ff_cache_release(c->fc);   /* a forward not gone back through is abandoned: its region is free */
  const c5_status st = forward_body(b, d, lay, batch, x, mask, c, out);
  const c5_status sr = hold_weights(b, 0);
  return st != C5_OK ? st : sr;
}

/* The gradient at x1 (the feed-forward's input gradient plus dout, the residual's added by the feed-forward's last
   op) lives in dx while the attention's backward writes the gradient at x (its input gradient plus dx1, added by
   LocalMHA's last op) over x1, which nothing reads after the feed-forward's backward: the block needs no
   [b, n, dim] buffer of its own for either (a workspace frame held across both backwards, before). One copy
   brings it to dx: written straight into dx, LocalMHA's LayerNorm backward would overwrite dx1 before the heavy
   scatter's backward reads it (c5_routed_attn_backward: light branch first, then the heavy one). */
static c5_status backward_body(c5_block *b, const c5_dist *d, c5_block_cache *c, const c5_real *x,
                               const c5_real *dout, c5_real *dx)
{
  const long N = c->batch * c->n * b->cfg.attn.dim;
  const c5k_ops *ops = b->be->ops;
  c5k_ctx kc = c5_backend_ctx(b->be, NULL, 0);
  C5_CALL(c5_routed_ff_backward_res(b->ff, d, c->fc, c->x1, dout, 1, dx));
  c->x1_live = 0;
  C5_CALL(c5_routed_attn_backward_res(b->attn, d, c->ac, x, dx, 1, c->x1));
  const long bytes = N * (long)sizeof *dx;
  C5_CALL(ops->copy2d(&kc, dx, bytes, c->x1, bytes, bytes, 1));
  return C5_OK;
}

c5_status c5_block_backward(c5_block *b, const c5_dist *d, c5_block_cache *c, const c5_real *x, const c5_real *dout,
                            c5_real *dx)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_block_backward: dist is NULL");
  C5_AGREE(d, b && c && x && dout && dx ? C5_OK : C5_ERR(C5_ERR_ARG, "c5_block_backward: NULL argument"));
  C5_AGREE(d, dx != dout && dx != x ? C5_OK : C5_ERR(C5_ERR_ARG, "c5_block_backward: dx must be a buffer of its own "
                                                        "(it is %s, which the backward reads after writing dx)",
                                                        dx == dout ? "dout" : "x"));
  C5_CALL(hold_agreed(b, d, c->x1_live ? C5_OK : C5_ERR(C5_ERR_ARG, "c5_block_backward: the cache holds no forward to "
                                                                      "go back through (a backward spends it: run "
                                                                      "c5_block_forward again)")));
  const c5_status st = backward_body(b, d, c, x, dout, dx);
  const c5_status sr = hold_weights(b, 0);
  return st != C5_OK ? st : sr;
}
