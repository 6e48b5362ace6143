/* attn_heavy.h - the reference's heavy-branch Attention
   (colt5_attention/transformer_block.py, class Attention): RMSNorm on
   queries and context, to_q, to_kv split by routes ('(r h d) i': for route
   r and head hh of that route, rows (r*hpr + hh)*2*dh .. +2*dh of
   to_kv.weight, k first then v), values (and keys when
   multiply_keys_by_score) times the kv score, optional rotary, a learned
   null key/value per head in slot 0, key mask, softmax(q k^T / sqrt(dh)),
   to_out. No biases. state_dict names under the prefix: norm.gamma,
   null_kv [2, heads, dim_head], to_q.weight, to_kv.weight, to_out.weight.
   Private to lib/. */
#ifndef C5_ATTN_HEAVY_H
#define C5_ATTN_HEAVY_H
#include "kernels.h"

typedef struct {
  int dim, heads, dim_head;
  int routes;                   /* num_routed_kv: heads are split evenly between routes */
  int multiply_keys_by_score;
  long norm_gamma, null_kv, to_q, to_kv, to_out;   /* parameter indices */
  const struct c5_backend *be;  /* the parameters' backend: caches live there */
} c5_attn_heavy;

typedef struct c5_attn_heavy_cache c5_attn_heavy_cache;

/* Registers the parameters under prefix (e.g. "heavy_attn"); heads % routes != 0 is an error. */
c5_status c5_attn_heavy_init(c5_attn_heavy *a, c5_params *p, const char *prefix, int dim, int heads, int dim_head,
                             int routes, int multiply_keys_by_score);
/* Capacity: batch, at most nq queries and nk keys per route. */
c5_status c5_attn_heavy_cache_create(const c5_attn_heavy *a, long batch, long nq, long nk, c5_attn_heavy_cache **out);
/* The same inside another module's cache: the normed inputs, q and the kv slots (formed again in the
   backward) and the backward's gradients are a frame of its workspace ws (ws.h), reserved at ws's current
   depth; NULL: the cache's own. */
struct c5_ws;
c5_status c5_attn_heavy_cache_create_ws(const c5_attn_heavy *a, long batch, long nq, long nk, struct c5_ws *ws,
                                        c5_attn_heavy_cache **out);
c5_status c5_attn_heavy_cache_destroy(c5_attn_heavy_cache **c);

/* Inputs (b = batch, R = routes):
     xq [b, nq, dim]         queries (the routed query tokens, un-normed)
     ctx [b, R, nk, dim]     keys/values per route (un-normed)
     kmask [b, R, nk]        1 = keep, or NULL
     kscore [b, R, nk]       kv router scores (multiply v, and k if multiply_keys_by_score), or NULL (= 1)
     qscore [b, nq]          multiply q by it (multiply_queries_by_score), or NULL
     qpos [b, nq], kpos [b, R, nk]: token positions for rotary embeddings (RotaryEmbedding(dim_head),
                             theta 10000, rotate_half convention, computed in double), or NULL = no rotary
   Output: out [b, nq, dim] (written). The cache keeps copies of the inputs the backward needs, so the
   caller may reuse its buffers between forward and backward; backward may run more than once per forward. */
c5_status c5_attn_heavy_forward(const c5_attn_heavy *a, const c5_params *p, long batch, long nq, long nk,
                                const c5_real *xq, const c5_real *ctx, const uint8_t *kmask, const c5_real *kscore,
                                const c5_real *qscore, const long *qpos, const long *kpos,
                                c5_attn_heavy_cache *c, c5_real *out);
/* Gradients, all written (=): dxq [b, nq, dim], dctx [b, R, nk, dim], dkscore [b, R, nk] (when kscore was
   given; else ignored, may be NULL), dqscore [b, nq] (when qscore was given; else may be NULL).
   Parameter gradients accumulate (+=). */
c5_status c5_attn_heavy_backward(const c5_attn_heavy *a, const c5_params *p, c5_attn_heavy_cache *c,
                                 const c5_real *dout, c5_real *dxq, c5_real *dctx, c5_real *dkscore, c5_real *dqscore);
#endif
