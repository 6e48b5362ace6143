/* attn_local.h - lucidrains local-attention's LocalMHA (af58e53) as CoLT5
   configures it: prenorm LayerNorm (eps 1e-5, with bias), to_qkv (no bias),
   windowed softmax attention (LocalAttention, autopad, pad value -1 for
   out-of-range look-around slots), to_out (no bias). state_dict names under
   the prefix: norm.weight, norm.bias, to_qkv.weight, to_out.weight.
   Routed attention: window = light_window_size / 2, look 1 each way,
   exact window, not causal. Autoregressive: window = light_window_size,
   causal, look_backward 1, look_forward 0, exact_windowsize false.
   Private to lib/. */
#ifndef C5_ATTN_LOCAL_H
#define C5_ATTN_LOCAL_H
#include "kernels.h"

typedef struct {
  int dim, heads, dim_head;
  long window;                 /* LocalAttention window_size */
  int look_backward, look_forward;
  int causal, exact_windowsize;
  int rotary;                  /* rotary embeddings on q and k (c5_attn_local_set_rotary) */
  long chunk;                  /* backward: query windows per task, >= look_backward + look_forward (set by
                                  init to max(8, lb + lf)); fixed, so sums never depend on the thread count */
  long norm_w, norm_b, to_qkv, to_out;   /* parameter indices */
  const struct c5_backend *be; /* the parameters' backend: caches live there */
} c5_attn_local;

typedef struct c5_attn_local_cache c5_attn_local_cache;

/* Registers the four parameters under prefix (e.g. "light_attn"). */
c5_status c5_attn_local_init(c5_attn_local *a, c5_params *p, const char *prefix, int dim, int heads, int dim_head,
                             long window, int look_backward, int look_forward, int causal, int exact_windowsize);
/* on = 1: LocalMHA(use_rotary_pos_emb=True)'s rotary embeddings (SinusoidalEmbeddings(dim_head), theta
   10000, rotate_half; angles in double as the heavy branch's, kernels.h rotary_table). The reference rotates
   each look-around span by its slot positions 0 .. (lb + lf + 1) w - 1 and the queries by the span's LAST
   w positions, so a query sits look_forward windows further than the keys of its own window. Rotations
   only enter as q - k differences, so a token at global position g gets keys rotated by g and queries by
   g + look_forward w: the same scores sharded or not. dim_head must be even. Before cache_create. */
c5_status c5_attn_local_set_rotary(c5_attn_local *a, int on);
/* Capacity: forwards of at most batch x n tokens. The kernels' scratch is sized at
   this call (c5k_local_attn_work: on the CPU, for the threads available now;
   later calls use at most that many).
   The cache keeps a copy of the forward's mask, the LayerNorm output, q/k/v, the
   head outputs and per-row softmax stats (max, 1/sum): O(n dim), never O(n window). */
c5_status c5_attn_local_cache_create(const c5_attn_local *a, long batch, long n, c5_attn_local_cache **out);
/* The same inside another module's cache: the LayerNorm output and the backward's dk, dv are a frame of its
   workspace ws (ws.h), reserved at ws's current depth; NULL: the cache's own. */
struct c5_ws;
c5_status c5_attn_local_cache_create_ws(const c5_attn_local *a, long batch, long n, struct c5_ws *ws,
                                        c5_attn_local_cache **out);
c5_status c5_attn_local_cache_destroy(c5_attn_local_cache **c);

/* out [b, n, dim] = LocalMHA(x [b, n, dim], mask [b, n] (1 = keep) or NULL) + bias + res. out is written; res
   [b, n, dim] or NULL (none): a residual added in to_out's product (kernels.h linear), a buffer apart from out;
   bias [dim] or NULL: a vector added to every row in the same product (to_out has no bias of its own: the routed
   attention's null_q_token, which it would otherwise add over every row in a pass of its own). pos0: the global
   position of row 0 (rotary only; windows are still counted from row 0). */
c5_status c5_attn_local_forward(const c5_attn_local *a, const c5_params *p, long batch, long n, long pos0,
                                const c5_real *x, const uint8_t *mask, c5_attn_local_cache *c, const c5_real *bias,
                                const c5_real *res, c5_real *out);
/* out [b, n, dim] = to_out of the head outputs the last forward cached (+ bias + res, as the forward's): the
   forward's last step, and its output again later (activation dumps), bit for bit, until a backward spends them
   (refused then). */
c5_status c5_attn_local_output(const c5_attn_local *a, const c5_params *p, const c5_attn_local_cache *c,
                               const c5_real *bias, const c5_real *res, c5_real *out);
/* dx [b, n, dim] is written (=) with the input gradient + res (NULL: none; res may be dx itself, or dout: dout
   is read before dx is written, and not after); parameter gradients accumulate (+=). A backward spends its
   forward (dq goes over the head outputs, its last product over q/k/v): a second one, and c5_attn_local_output,
   are refused until a forward runs again. */
c5_status c5_attn_local_backward(const c5_attn_local *a, const c5_params *p, c5_attn_local_cache *c, const c5_real *x,
                                 const c5_real *dout, const c5_real *res, c5_real *dx);
#endif
