/* model.c - the masked-byte model (colt5.h "the masked-byte model",
   docs/model.md): token and position embeddings, depth
   ConditionalRoutedTransformerBlocks, the reference's RMSNorm, to_logits and
   the softmax cross-entropy over the scored positions; forward and backward,
   the sequence sharded as the blocks shard it. On a device backend every
   tensor of the cache lives there; the host keeps the cache's tables and
   uploads the step's tokens, targets and padding mask (forward_head), and
   reads back the loss and its count (forward_tail: xent_forward's result).
   The blocks' caches share the model cache's transient workspace (ws.h):
   the blocks run one after another, so it holds the deepest block's frames
   once, not one set per layer. */
#include "c5_internal.h"
#include "arena.h"
#include "backend.h"
#include "dump_internal.h"
#include "ws.h"

struct c5_model {
  const c5_backend *be;
  c5_model_config cfg;
  c5_params *p;
  int dim;
  c5_block **layers;   /* [depth] */
  long tok_emb, pos_emb, gamma, w, b;   /* parameter slots */
};

struct c5_model_cache {
  const c5_backend *be;    /* the model's: where the tensors below live */
  long batch, n_cap;       /* sized for [batch, n_cap] tokens */
  long n, pos0;            /* the last forward's local tokens and the global position of the first */
  int fwd;                 /* a forward filled this cache */
  int depth;
  c5_block_cache **bc;     /* [depth] */
  c5_real **x;             /* [depth + 1] layer inputs [batch, n, dim]; x[depth] = the final norm's input */
  double *rnorm;           /* [batch n] */
  c5_real *logits;         /* [batch, n, 256] */
  double *lse;             /* [batch n] */
  c5_real *dx0, *dx1;      /* [batch, n, dim] backward: ping-pong through the layers */
  int32_t *tokens, *targets;   /* [batch n] the step's inputs on the backend (and for the backward) */
  uint8_t *mask;           /* [batch n] the padding mask on the backend (device backends only) */
  double *work;            /* host: rowpart reductions (norm, bias, loss) of the CPU's ops */
  long work_len;
  void *mem;               /* the tensors: one allocation on be */
  void *hmem;              /* the host tables: bc, x, work */
  c5_ws *ws;               /* the transient workspace of the blocks and of the tail */
  /* the frame of forward_tail and backward_tail (at the capacity): */
  c5_real *xn;             /* [batch, n, dim] normed (the backward forms it again from x[depth]), then dxn */
  c5_real *dlogits;        /* [batch, n, 256] */
  long dim;
};

/* The tail's frame. */
static void carve_frame(void *obj, c5_arena *a)
{
  c5_model_cache *c = obj;
  C5_TAKE(a, c->xn, c->batch * c->n_cap * c->dim);
  C5_TAKE(a, c->dlogits, c->batch * c->n_cap * C5_NUM_BYTES);
}

/* The seed of layer i's random routes: each layer draws its own. */
static uint64_t layer_seed(uint64_t seed, int i)
{
  return seed ^ (0xd1b54a32d192ed03ull * (uint64_t)(i + 1));
}
/* Layer i's seeds from the attention's and the feed-forward's (create and set_random_seed alike). */
static uint64_t layer_attn_seed(uint64_t seed, int i) { return layer_seed(seed, i); }
static uint64_t layer_ff_seed(uint64_t seed, int i) { return layer_seed(seed ^ 0x8bb84b93962eacc9ull, i); }

c5_status c5_model_create(const c5_model_config *cfg, c5_params *p, c5_model **out)
{
  C5_CHECK(cfg && p && out, C5_ERR_ARG, "c5_model_create: NULL argument");
  C5_CHECK(cfg->depth > 0, C5_ERR_ARG, "model: depth = %d must be > 0", cfg->depth);
  C5_CHECK(cfg->max_seq_len > 0, C5_ERR_ARG, "model: max_seq_len = %ld must be > 0", cfg->max_seq_len);
  const int dim = cfg->block.attn.dim;
  C5_CHECK(dim > 0, C5_ERR_ARG, "model: dim = %d must be > 0", dim);
  c5_model *m;
  C5_CALLOC(m, 1);
  c5_status st = C5_OK;
  m->cfg = *cfg;
  m->p = p;
  m->be = c5_params_backend(p);
  m->dim = dim;
  C5_CALLOC(m->layers, cfg->depth);
  long dt[2] = { C5_MASK_TOKEN + 1, dim }, dp[2] = { cfg->max_seq_len, dim }, dg[1] = { dim },
       dw[2] = { C5_NUM_BYTES, dim }, db[1] = { C5_NUM_BYTES };
  /* registered in the state_dict's order (tools/colt5_torch.py): token_emb, pos_emb, layers, norm, to_logits */
  C5_CALL_GOTO(c5_params_add_init(p, "", "token_emb.weight", 2, dt, C5_INIT_NORMAL, 0, &m->tok_emb), st, fail);
  C5_CALL_GOTO(c5_params_add_init(p, "", "pos_emb.weight", 2, dp, cfg->pos_emb_zero_init ? C5_INIT_ZERO : C5_INIT_NORMAL,
                                  0, &m->pos_emb), st, fail);
  for (int i = 0; i < cfg->depth; i++) {
    char pre[64];
    snprintf(pre, sizeof pre, "layers.%d", i);
    c5_block_config bc = cfg->block;
    bc.attn.random_seed = layer_attn_seed(cfg->block.attn.random_seed, i);
    bc.ff.random_seed = layer_ff_seed(cfg->block.ff.random_seed, i);
    C5_CALL_GOTO(c5_block_create(&bc, p, pre, &m->layers[i]), st, fail);
  }
  C5_CALL_GOTO(c5_params_add_init(p, "", "norm.gamma", 1, dg, C5_INIT_ONE, 0, &m->gamma), st, fail);
  C5_CALL_GOTO(c5_params_add_init(p, "", "to_logits.weight", 2, dw, C5_INIT_UNIFORM_FAN_IN, dim, &m->w), st, fail);
  C5_CALL_GOTO(c5_params_add_init(p, "", "to_logits.bias", 1, db, C5_INIT_UNIFORM_FAN_IN, dim, &m->b), st, fail);
  *out = m;
  return C5_OK;
fail:
  c5_model_destroy(&m);
  return st;
}

c5_status c5_model_destroy(c5_model **mp)
{
  if (!mp || !*mp) return C5_OK;
  c5_model *m = *mp;
  for (int i = 0; m->layers && i < m->cfg.depth; i++) c5_block_destroy(&m->layers[i]);
  free(m->layers);
  C5_FREE(*mp);
  return C5_OK;
}

const c5_model_config *c5_model_get_config(const c5_model *m) { return &m->cfg; }

c5_status c5_model_set_random_seed(c5_model *m, uint64_t seed)
{
  C5_CHECK(m, C5_ERR_ARG, "c5_model_set_random_seed: NULL model");
  m->cfg.block.attn.random_seed = m->cfg.block.ff.random_seed = seed;
  for (int i = 0; i < m->cfg.depth; i++)
    C5_CALL(c5_block_set_random_seed(m->layers[i], layer_attn_seed(seed, i), layer_ff_seed(seed, i)));
  return C5_OK;
}

c5_status c5_model_layout_unit(const c5_model_config *cfg, long *unit)
{
  C5_CHECK(cfg && unit, C5_ERR_ARG, "c5_model_layout_unit: NULL argument");
  C5_CALL(c5_block_layout_unit(&cfg->block, unit));
  return C5_OK;
}

/* The cache's buffers (arena.h: run once to measure, once to carve): tables and ops' host work from h,
   tensors from a (on the backend). */
static void cache_carve(c5_model_cache *c, int depth, int dim, c5_arena *h, c5_arena *a)
{
  const long rows = c->batch * c->n_cap, N = rows * dim, L = rows * C5_NUM_BYTES;
  C5_TAKE(h, c->bc, depth);
  C5_TAKE(h, c->x, depth + 1);
  c->work_len = c5k_rowpart_work(rows, dim > C5_NUM_BYTES ? dim : C5_NUM_BYTES);
  C5_TAKE(h, c->work, c->work_len);
  for (int i = 0; i <= depth; i++) {
    c5_real *xi;
    C5_TAKE(a, xi, N);
    if (a->base) c->x[i] = xi;
  }
  C5_TAKE(a, c->rnorm, rows);
  C5_TAKE(a, c->logits, L);
  C5_TAKE(a, c->lse, rows);
  C5_TAKE(a, c->dx0, N);
  C5_TAKE(a, c->dx1, N);
  C5_TAKE(a, c->tokens, rows);
  C5_TAKE(a, c->targets, rows);
  if (!c5_backend_is_host(c->be)) C5_TAKE(a, c->mask, rows);   /* the CPU reads the caller's mask */
}

c5_status c5_model_cache_create(const c5_model *m, long batch, long n_local, c5_model_cache **out)
{
  C5_CHECK(m && out, C5_ERR_ARG, "c5_model_cache_create: NULL argument");
  C5_CHECK(batch > 0 && n_local >= 0, C5_ERR_ARG, "model cache: batch %ld, n_local %ld", batch, n_local);
  c5_model_cache *c;
  C5_CALLOC(c, 1);
  c5_status st = C5_OK;
  c->be = m->be;
  c->batch = batch;
  c->n_cap = n_local;
  c->depth = m->cfg.depth;
  c5_arena h = { 0 }, a = { 0 };
  cache_carve(c, m->cfg.depth, m->dim, &h, &a);
  C5_CALL_GOTO(c5_arena_alloc(&h, "model cache (tables)"), st, fail);
  c->hmem = h.base;
  C5_CALL_GOTO(c5_arena_alloc_on(&a, m->be, "model cache"), st, fail);
  c->mem = a.base;
  cache_carve(c, m->cfg.depth, m->dim, &h, &a);
  c->dim = m->dim;
  C5_CALL_GOTO(c5_ws_create(m->be, &c->ws), st, fail);
  c5_ws_reserve(c->ws, c5_ws_measure(carve_frame, c));
  for (int i = 0; i < m->cfg.depth; i++)
    C5_CALL_GOTO(c5_block_cache_create_ws(m->layers[i], batch, n_local, c->ws, &c->bc[i]), st, fail);
  C5_CALL_GOTO(c5_ws_fit(c->ws, "model cache"), st, fail);
  *out = c;
  return C5_OK;
fail:
  c5_model_cache_destroy(&c);
  return st;
}

c5_status c5_model_cache_destroy(c5_model_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_model_cache *c = *cp;
  /* bc lives in hmem: the block caches go first */
  for (int i = 0; c->mem && i < c->depth; i++) c5_block_cache_destroy(&c->bc[i]);
  if (c->mem) c5_backend_free(c->be, c->mem);
  c5_ws_destroy(&c->ws);
  free(c->hmem);
  C5_FREE(*cp);
  return C5_OK;
}

const c5_block_cache *c5_model_block_cache(const c5_model_cache *c, int layer) { return c->bc[layer]; }
const c5_real *c5_model_layer_input(const c5_model_cache *c, int layer) { return c->x[layer]; }
const c5_real *c5_model_logits(const c5_model_cache *c) { return c->logits; }
/* for activation dumps (dump_internal.h) */
const c5_block *c5_model_block(const c5_model *m, int layer) { return m->layers[layer]; }
int c5_model_cache_filled(const c5_model_cache *c) { return c->fwd; }

/* This rank's checks and the embedding, before the first collective: a token, target or position out of
   range names its value and place (batch row, global position). */
static c5_status forward_head(c5_model *m, const c5_layout *lay, long batch, const int32_t *tokens,
                              const int32_t *targets, const uint8_t *mask, c5_model_cache *c)
{
  C5_CHECK(m && lay && tokens && targets && c, C5_ERR_ARG, "c5_model_forward: NULL argument");
  C5_CHECK(batch == c->batch && lay->n_local == c->n_cap, C5_ERR_SHAPE,
           "model: input [%ld, %ld] tokens, cache sized for [%ld, %ld]", batch, lay->n_local, c->batch, c->n_cap);
  C5_CHECK(lay->n <= m->cfg.max_seq_len, C5_ERR_ARG, "model: sequence of %ld tokens, max_seq_len %ld (pos_emb rows)",
           lay->n, m->cfg.max_seq_len);
  const long n = lay->n_local;
  for (long r = 0; r < batch * n; r++) {
    C5_CHECK(tokens[r] >= 0 && tokens[r] <= C5_MASK_TOKEN, C5_ERR_ARG,
             "model: token %d at batch %ld, position %ld: tokens are bytes 0..255 or %d (mask)", (int)tokens[r],
             r / n, lay->offset + r % n, C5_MASK_TOKEN);
    C5_CHECK(targets[r] >= -1 && targets[r] < C5_NUM_BYTES, C5_ERR_ARG,
             "model: target %d at batch %ld, position %ld: targets are bytes 0..255 or -1 (not scored)",
             (int)targets[r], r / n, lay->offset + r % n);
  }
  const c5k_ops *ops = m->be->ops;
  c5k_ctx kc = c5_backend_ctx(m->be, NULL, 0);
  c->n = n;
  c->pos0 = lay->offset;
  c->fwd = 0;
  /* the step's uploads (a device backend's host-to-device copies; plain copies on the CPU): the caller's
     host tokens and targets, and on a device its padding mask */
  C5_CALL(c5_backend_memcpy(m->be, c->tokens, tokens, (size_t)(batch * n) * sizeof *tokens));
  C5_CALL(c5_backend_memcpy(m->be, c->targets, targets, (size_t)(batch * n) * sizeof *targets));
  if (mask && c->mask) C5_CALL(c5_backend_memcpy(m->be, c->mask, mask, (size_t)(batch * n) * sizeof *mask));
  C5_CALL(ops->embedding_forward(&kc, batch, n, lay->offset, m->dim, c->tokens, c5_params_value(m->p, m->tok_emb),
                                 c5_params_value(m->p, m->pos_emb), c->x[0]));
  return C5_OK;
}

/* The final norm, to_logits and this rank's part of the loss (in the tail's frame). */
static c5_status forward_tail_body(c5_model *m, c5_model_cache *c, double *part)
{
  const c5k_ops *ops = m->be->ops;
  c5k_ctx kc = c5_backend_ctx(m->be, c->work, c->work_len);
  const long rows = c->batch * c->n;
  const int dim = m->dim;
  C5_CALL(ops->rmsnorm_forward(&kc, c->x[m->cfg.depth], c5_params_value(m->p, m->gamma), rows, dim, c->xn,
                               C5_DTYPE_REAL, c->rnorm));
  C5_CALL(ops->linear(&kc, rows, C5_NUM_BYTES, dim, c->xn, C5_DTYPE_REAL, c5_params_value(m->p, m->w),
                      c5_params_value(m->p, m->b), NULL, c->logits));
  long cnt = 0;
  /* the forward's one read-back on a device: the loss sum and its count are host scalars of the op */
  C5_CALL(ops->xent_forward(&kc, rows, C5_NUM_BYTES, c->logits, c->targets, c->lse, &part[0], &cnt));
  part[1] = (double)cnt;
  return C5_OK;
}

static c5_status forward_tail(c5_model *m, c5_model_cache *c, double *part)
{
  C5_WS_RUN(c->ws, carve_frame, c, forward_tail_body(m, c, part));
  return C5_OK;
}

c5_status c5_model_forward(c5_model *m, const c5_dist *d, const c5_layout *lay, long batch, const int32_t *tokens,
                           const int32_t *targets, const uint8_t *mask, c5_model_cache *c, double *loss_sum,
                           long *count)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_model_forward: dist is NULL");
  C5_AGREE(d, forward_head(m, lay, batch, tokens, targets, mask, c));
  const uint8_t *bmask = mask && c->mask ? c->mask : mask;   /* the blocks read the backend's copy */
  for (int i = 0; i < m->cfg.depth; i++)
    C5_CALL(c5_block_forward(m->layers[i], d, lay, batch, c->x[i], bmask, c->bc[i], c->x[i + 1]));
  double part[2] = { 0, 0 };   /* loss, count: one allreduce for both (counts are exact in double) */
  C5_AGREE(d, forward_tail(m, c, part));
  C5_CALL(c5_dist_allreduce_sum_double(d, part, 2));
  c->fwd = 1;
  if (loss_sum) *loss_sum = part[0];
  if (count) *count = (long)part[1];
  return C5_OK;
}

/* Backward of the loss, to_logits and the final norm: the layers' output gradient into c->dx0. */
static c5_status backward_tail_body(c5_model *m, c5_model_cache *c, double scale)
{
  const c5k_ops *ops = m->be->ops;
  c5k_ctx kc = c5_backend_ctx(m->be, c->work, c->work_len);
  const long rows = c->batch * c->n;
  const int dim = m->dim;
  const c5_params *p = m->p;
  /* xn formed again from the layers' output (the same op on the same input: the same bits, rnorm too);
     dxn over it once dW has read it */
  c5_real *dxn = c->xn;
  C5_CALL(ops->rmsnorm_forward(&kc, c->x[m->cfg.depth], c5_params_value(p, m->gamma), rows, dim, c->xn,
                               C5_DTYPE_REAL, c->rnorm));
  C5_CALL(ops->xent_backward(&kc, rows, C5_NUM_BYTES, c->logits, c->targets, c->lse, scale, c->dlogits));
  C5_CALL(ops->gemm_acc(&kc, 1, 0, C5_NUM_BYTES, dim, rows, 1.0, c->dlogits, C5_NUM_BYTES, c->xn, dim,
                        c5_params_scratch(p), c5_params_acc(p, m->w)));
  C5_CALL(ops->colsum(&kc, c->dlogits, rows, C5_NUM_BYTES, c5_params_acc(p, m->b)));
  C5_CALL(ops->gemm(&kc, 0, 0, rows, dim, C5_NUM_BYTES, 1.0, c->dlogits, C5_NUM_BYTES, c5_params_value(p, m->w), dim,
                    0.0, dxn, dim));
  C5_CALL(ops->rmsnorm_backward(&kc, c->x[m->cfg.depth], c5_params_value(p, m->gamma), c->rnorm, dxn, rows, dim,
                                NULL, c->dx0, c5_params_acc(p, m->gamma)));
  const long idx[] = { m->gamma, m->w, m->b };
  C5_CALL(c5_params_flush(p, idx, 3));
  return C5_OK;
}

static c5_status backward_tail(c5_model *m, c5_model_cache *c, double scale)
{
  C5_CHECK(c->fwd, C5_ERR_ARG, "c5_model_backward: no forward in this cache");
  C5_CHECK(scale == scale && scale - scale == 0, C5_ERR_ARG, "c5_model_backward: scale %g is not finite", scale);
  C5_WS_RUN(c->ws, carve_frame, c, backward_tail_body(m, c, scale));
  return C5_OK;
}

static c5_status backward_embedding(c5_model *m, c5_model_cache *c, const c5_real *dx)
{
  const c5k_ops *ops = m->be->ops;
  c5k_ctx kc = c5_backend_ctx(m->be, NULL, 0);
  const c5_params *p = m->p;
  C5_CALL(ops->embedding_backward(&kc, c->batch, c->n, c->pos0, m->dim, c->tokens, dx, c5_params_acc(p, m->tok_emb),
                                  c5_params_acc(p, m->pos_emb)));
  const long idx[] = { m->tok_emb, m->pos_emb };
  C5_CALL(c5_params_flush(p, idx, 2));
  return C5_OK;
}

c5_status c5_model_backward(c5_model *m, const c5_dist *d, c5_model_cache *c, double scale)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_model_backward: dist is NULL");
  C5_AGREE(d, m && c ? backward_tail(m, c, scale) : C5_ERR(C5_ERR_ARG, "c5_model_backward: NULL argument"));
  c5_real *dout = c->dx0, *dx = c->dx1;
  for (int i = m->cfg.depth - 1; i >= 0; i--) {
    C5_CALL(c5_block_backward(m->layers[i], d, c->bc[i], c->x[i], dout, dx));
    c5_real *t = dout;
    dout = dx;
    dx = t;
  }
  C5_AGREE(d, backward_embedding(m, c, dout));
  return C5_OK;
}
