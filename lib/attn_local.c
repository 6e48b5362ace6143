/* attn_local.c - LocalMHA (attn_local.h), forward and backward: LayerNorm,
   to_qkv, the sliding-window attention core (one backend op each way,
   kernels.h local_attn_*, which holds the reference's masking rules), to_out.
   The cache keeps what the backward needs: the key mask, the LayerNorm
   stats, q/k/v, the merged head outputs and the per-row softmax stats,
   O(n dim), never O(n L w). The LayerNorm output is not kept: the backward
   forms it again from x (which it reads anyway) in the one buffer that holds
   it in the forward and datt in the backward: that buffer (the forward's
   frame) and the backward's dk | dv (the backward's frame: the buffer and
   dkv [rows, 2 HD]) live only inside a call, a frame of the workspace
   (ws.h). dq goes over the head outputs (the core may write it over o,
   kernels.h local_attn_backward; to_out's weight gradient has read them by
   then), and dxn, the last product's output, over q/k/v, which nothing
   reads by then (where it fits: 3 HD act elements a row hold dim
   c5_reals), so a backward spends its forward: a second backward is
   refused, and so is c5_attn_local_output after it.
   Where the backend takes them so (kernels.h local_attn_bf16: CUDA, bf16
   matmul mode), q/k/v, the head outputs, their gradient dout and dq/dk/dv
   are kept in bf16, and the LayerNorm writes its output in bf16 for the two
   products that read it: the products round them to bf16 anyway, so this
   halves the largest activations and their traffic; the cache is made for
   the mode current at its creation. The backward's incoming gradient (f32,
   read by to_out's two products) is then rounded to bf16 once, into dkv's
   buffer, unused until the attention core writes it. */
#include <math.h>
#include "c5_internal.h"
#include "backend.h"
#include "attn_local.h"
#include "ws.h"

#define LN_EPS 1e-5
#define DEFAULT_CHUNK 8

struct c5_attn_local_cache {
  const c5_backend *be;    /* every buffer below lives there (the work too: ops on a device ignore it) */
  long batch_cap, n_cap;   /* capacity */
  long batch, n;           /* of the last forward */
  int has_mask;
  long d, hd;              /* dim, heads dim_head */
  uint8_t *mask;           /* [batch, n] copy of the key mask */
  double *mean, *rstd;     /* [rows] */
  c5_dtype act;            /* q/k/v, att, datt, dq, dkv, xn: bf16 where local_attn_bf16 said so at the cache's
                              creation, else c5_real */
  void *qkv;               /* [rows, 3 HD]: q | k | v, head h at h dh within each */
  void *att;               /* [rows, HD] head outputs merged, before to_out; the backward's dq over them */
  double *rmax, *rinv;     /* [batch, heads, n] softmax row max and 1 / sum */
  uint8_t *uni;            /* [batch, heads, n] 1: every slot masked, uniform softmax */
  double *work;            /* kernel scratch: LayerNorm rowpart reduction, attention score blocks */
  long work_len;
  /* rotary only (c5_attn_local_set_rotary): positions and tables of the last forward, q and k */
  long *qpos, *kpos;       /* [rows] */
  double *qcs, *qsn, *kcs, *ksn;   /* [rows, dim_head / 2] */
  c5_ws *ws;               /* the transient workspace: its maker's, or its own */
  int own_ws;
  /* the frames of the forward (xn) and the backward (xn, dkv), rows of the capacity: */
  int dxn_over_qkv;        /* dxn fits over qkv: xn's buffer holds act elements only */
  int live;                /* a forward filled the cache and no backward has spent it */
  c5_real *xn;             /* [rows, max(dim, HD)]: the LayerNorm output (act: forward; backward, formed again),
                              datt (act), dxn (c5_real) unless it goes over qkv: one at a time */
  void *dkv;               /* [rows, 2 HD] the backward's dk | dv (act); before them, in bf16 mode, dout's bf16
                              copy [rows, dim] (to_out's products read it, the core reads datt): rows max(2 HD, dim)
                              then */
};

/* Element i of an act-typed buffer. */
static void *act_at(const c5_attn_local_cache *c, const void *p, long i)
{
  return (char *)p + i * (long)c5_dtype_size(c->act);
}

static void carve_forward(void *obj, c5_arena *a)
{
  c5_attn_local_cache *c = obj;
  const long rows = c->batch_cap * c->n_cap;
  c->xn = c5_arena_take(a, (size_t)(rows * (c->d > c->hd ? c->d : c->hd) + 1),
                        c->dxn_over_qkv ? c5_dtype_size(c->act) : sizeof(c5_real));
}

static void carve_backward(void *obj, c5_arena *a)
{
  c5_attn_local_cache *c = obj;
  carve_forward(c, a);
  const long rows = c->batch_cap * c->n_cap;
  const long kv_cols = c->act == C5_DTYPE_BF16 && c->d > 2 * c->hd ? c->d : 2 * c->hd;
  c->dkv = c5_arena_take(a, (size_t)(rows * kv_cols + 1), c5_dtype_size(c->act));
}

c5_status c5_attn_local_init(c5_attn_local *a, c5_params *p, const char *prefix, int dim, int heads, int dim_head,
                             long window, int look_backward, int look_forward, int causal, int exact_windowsize)
{
  C5_CHECK(a && p, C5_ERR_ARG, "c5_attn_local_init: NULL argument");
  C5_CHECK(dim > 0 && heads > 0 && dim_head > 0, C5_ERR_ARG,
           "%s: LocalMHA dim %d, heads %d, dim_head %d must all be > 0", prefix, dim, heads, dim_head);
  C5_CHECK(window > 0, C5_ERR_ARG, "%s: LocalMHA window_size %ld must be > 0", prefix, window);
  C5_CHECK(look_backward >= 0 && look_forward >= 0, C5_ERR_ARG, "%s: LocalMHA look_backward %d, look_forward %d "
           "must be >= 0", prefix, look_backward, look_forward);
  C5_CHECK(!(causal && look_forward > 0), C5_ERR_ARG, "%s: LocalMHA is causal, look_forward %d must be 0 "
           "(the reference: 'you cannot look forward if causal')", prefix, look_forward);
  memset(a, 0, sizeof *a);
  a->dim = dim;
  a->heads = heads;
  a->dim_head = dim_head;
  a->window = window;
  a->look_backward = look_backward;
  a->look_forward = look_forward;
  a->causal = causal != 0;
  a->exact_windowsize = exact_windowsize != 0;
  a->be = c5_params_backend(p);
  a->chunk = DEFAULT_CHUNK > look_backward + look_forward ? DEFAULT_CHUNK : look_backward + look_forward;
  long hd = (long)heads * dim_head;
  long d1[1] = { dim }, wqkv[2] = { 3 * hd, dim }, wout[2] = { dim, hd };
  C5_CALL(c5_params_add_init(p, prefix, "norm.weight", 1, d1, C5_INIT_ONE, 0, &a->norm_w));
  C5_CALL(c5_params_add_init(p, prefix, "norm.bias", 1, d1, C5_INIT_ZERO, 0, &a->norm_b));
  C5_CALL(c5_params_add_init(p, prefix, "to_qkv.weight", 2, wqkv, C5_INIT_UNIFORM_FAN_IN, dim, &a->to_qkv));
  C5_CALL(c5_params_add_init(p, prefix, "to_out.weight", 2, wout, C5_INIT_UNIFORM_FAN_IN, hd, &a->to_out));
  return C5_OK;
}

c5_status c5_attn_local_set_rotary(c5_attn_local *a, int on)
{
  C5_CHECK(a, C5_ERR_ARG, "c5_attn_local_set_rotary: NULL argument");
  C5_CHECK(!on || a->dim_head % 2 == 0, C5_ERR_ARG, "LocalMHA: rotary embeddings need an even dim_head, got %d",
           a->dim_head);
  a->rotary = on != 0;
  return C5_OK;
}

/* The attention core's shapes for a forward of batch x n tokens. */
static c5k_local_attn core_shape(const c5_attn_local *a, long batch, long n)
{
  return (c5k_local_attn){ .batch = batch, .n = n, .heads = a->heads, .dim_head = a->dim_head,
                           .window = a->window, .look_backward = a->look_backward,
                           .look_forward = a->look_forward, .causal = a->causal,
                           .exact_windowsize = a->exact_windowsize, .scale = 1.0 / sqrt((double)a->dim_head),
                           .chunk = a->chunk, .bf16 = 0 };
}

/* The core's shape for the cache's last forward, with its activations' type. */
static c5k_local_attn cache_shape(const c5_attn_local *a, const c5_attn_local_cache *c)
{
  c5k_local_attn L = core_shape(a, c->batch, c->n);
  L.bf16 = c->act == C5_DTYPE_BF16;
  return L;
}

/* The activations' type the backend takes now for a forward of batch x n tokens (its matmul mode). */
static c5_dtype act_wanted(const c5_attn_local *a, long batch, long n)
{
  c5k_ctx ctx = c5_backend_ctx(a->be, NULL, 0);
  const c5k_local_attn L = core_shape(a, batch, n);
  return a->be->ops->local_attn_bf16(&ctx, &L) ? C5_DTYPE_BF16 : C5_DTYPE_REAL;
}

/* Whether the backend still takes the cache's activation type: the matmul mode may have changed since. */
static c5_status check_act(const c5_attn_local *a, const c5_attn_local_cache *c, long batch, long n)
{
  return c5_act_agree(c->act, act_wanted(a, batch, n), "LocalMHA");
}

c5_status c5_attn_local_cache_create(const c5_attn_local *a, long batch, long n, c5_attn_local_cache **out)
{
  C5_CALL(c5_attn_local_cache_create_ws(a, batch, n, NULL, out));
  return C5_OK;
}

c5_status c5_attn_local_cache_create_ws(const c5_attn_local *a, long batch, long n, c5_ws *ws,
                                        c5_attn_local_cache **out)
{
  C5_CHECK(a && out, C5_ERR_ARG, "c5_attn_local_cache_create: NULL argument");
  C5_CHECK(batch > 0 && n > 0, C5_ERR_ARG, "LocalMHA cache: batch %ld, n %ld must be > 0", batch, n);
  c5_attn_local_cache *c;
  C5_CALLOC(c, 1);
  c5_status st = C5_OK;
  const long rows = batch * n, hd = (long)a->heads * a->dim_head, d = a->dim;
  const c5k_local_attn L = core_shape(a, batch, n);
  const long ln_work = c5k_rowpart_work(rows, d), attn_work = c5k_local_attn_work(&L);
  c->batch_cap = batch;
  c->n_cap = n;
  c->work_len = c5_backend_work(a->be, ln_work > attn_work ? ln_work : attn_work);   /* one kernel at a time */
  c->be = a->be;
  c->d = d;
  c->hd = hd;
  c->act = act_wanted(a, batch, n);
  c->dxn_over_qkv = 3 * hd * (long)c5_dtype_size(c->act) >= d * (long)sizeof(c5_real);
#define ALLOC(p, cnt) do { c5_status s_ = C5_BE_NEW(a->be, p, (cnt) + 1); \
    C5_CHECK_GOTO(s_ == C5_OK, st, fail, C5_ERR_MEM, "LocalMHA cache for [%ld, %ld, %ld]: out of memory " \
                  "allocating %s (%ld elements)", batch, n, d, #p, (long)(cnt)); } while (0)
  ALLOC(c->mask, rows);
  ALLOC(c->mean, rows);
  ALLOC(c->rstd, rows);
#define ALLOC_ACT(p, cnt) do { c5_status s_ = c5_backend_calloc(a->be, (size_t)(cnt) + 1, c5_dtype_size(c->act), &(p)); \
    C5_CHECK_GOTO(s_ == C5_OK, st, fail, C5_ERR_MEM, "LocalMHA cache for [%ld, %ld, %ld]: out of memory " \
                  "allocating %s (%ld %s elements)", batch, n, d, #p, (long)(cnt), c5_dtype_name(c->act)); } while (0)
  ALLOC_ACT(c->qkv, rows * 3 * hd);
  ALLOC_ACT(c->att, rows * hd);
#undef ALLOC_ACT
  ALLOC(c->rmax, rows * a->heads);
  ALLOC(c->rinv, rows * a->heads);
  ALLOC(c->uni, rows * a->heads);
  ALLOC(c->work, c->work_len);
  if (a->rotary) {
    const long half = a->dim_head / 2;
    ALLOC(c->qpos, rows);
    ALLOC(c->kpos, rows);
    ALLOC(c->qcs, rows * half);
    ALLOC(c->qsn, rows * half);
    ALLOC(c->kcs, rows * half);
    ALLOC(c->ksn, rows * half);
  }
#undef ALLOC
  C5_CALL_GOTO(c5_ws_use(a->be, ws, &c->ws, &c->own_ws), st, fail);
  c5_ws_reserve(c->ws, c5_ws_measure(carve_forward, c));
  c5_ws_reserve(c->ws, c5_ws_measure(carve_backward, c));
  if (c->own_ws) C5_CALL_GOTO(c5_ws_fit(c->ws, "LocalMHA cache"), st, fail);
  *out = c;
  return C5_OK;
fail:
  c5_attn_local_cache_destroy(&c);
  return st;
}

c5_status c5_attn_local_cache_destroy(c5_attn_local_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_attn_local_cache *c = *cp;
  void *v[] = { c->mask, c->mean, c->rstd, c->qkv, c->att, c->rmax, c->rinv, c->uni, c->work, c->qpos, c->kpos,
                c->qcs, c->qsn, c->kcs, c->ksn };
  if (c->be)
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) c5_backend_free(c->be, v[i]);
  if (c->own_ws) c5_ws_destroy(&c->ws);
  C5_FREE(*cp);
  return C5_OK;
}

/* Rotary on q and k in place (the forward; transpose: dq and dk, the backward), rows ldq and ldk act elements
   apart, with the tables the forward made. */
static c5_status rotate_qk(const c5_attn_local *a, const c5k_ops *ops, c5k_ctx *ctx, c5_attn_local_cache *c,
                           void *q, long ldq, void *k, long ldk, int transpose)
{
  const long rows = c->batch * c->n;
  if (transpose) {
    C5_CALL(ops->rotary_transpose(ctx, rows, a->heads, a->dim_head, q, c->act, ldq, a->dim_head, c->qcs, c->qsn));
    C5_CALL(ops->rotary_transpose(ctx, rows, a->heads, a->dim_head, k, c->act, ldk, a->dim_head, c->kcs, c->ksn));
  } else {
    C5_CALL(ops->rotary(ctx, rows, a->heads, a->dim_head, q, c->act, ldq, a->dim_head, c->qcs, c->qsn));
    C5_CALL(ops->rotary(ctx, rows, a->heads, a->dim_head, k, c->act, ldk, a->dim_head, c->kcs, c->ksn));
  }
  return C5_OK;
}

/* The forward's rotary tables: keys at their global positions, queries look_forward windows further
   (attn_local.h, c5_attn_local_set_rotary). */
static c5_status rotary_tables(const c5_attn_local *a, const c5k_ops *ops, c5k_ctx *ctx, c5_attn_local_cache *c,
                               long pos0)
{
  const long shift = (long)a->look_forward * a->window;
  /* kpos[b, j] = pos0 + j, qpos[b, j] = pos0 + j + shift */
  C5_CALL(ops->index_rows(ctx, c->batch, c->n, NULL, 0, pos0, 1, 0, 0, c->kpos, c->n));
  C5_CALL(ops->index_rows(ctx, c->batch, c->n, NULL, 0, pos0 + shift, 1, 0, 0, c->qpos, c->n));
  const long rows = c->batch * c->n;
  C5_CALL(ops->rotary_table(ctx, rows, c->qpos, a->dim_head, c->qcs, c->qsn));
  C5_CALL(ops->rotary_table(ctx, rows, c->kpos, a->dim_head, c->kcs, c->ksn));
  return C5_OK;
}

static c5_status forward_body(const c5_attn_local *a, const c5_params *p, long batch, long n, long pos0,
                             const c5_real *x, const uint8_t *mask, c5_attn_local_cache *c, const c5_real *bias,
                             const c5_real *res, c5_real *out)
{
  const c5k_ops *ops = c5_params_backend(p)->ops;
  const long rows = batch * n, d = a->dim, hd = (long)a->heads * a->dim_head;
  c5k_ctx ctx = c5_backend_ctx(c5_params_backend(p), c->work, c->work_len);
  c->live = 0;
  c->batch = batch;
  c->n = n;
  c->has_mask = mask != NULL;
  if (mask) C5_CALL(ops->copy2d(&ctx, c->mask, rows, mask, rows, rows, 1));
  C5_CALL(ops->layernorm_forward(&ctx, x, c5_params_value(p, a->norm_w), c5_params_value(p, a->norm_b), rows,
                                 (int)d, LN_EPS, c->xn, c->act, c->mean, c->rstd));
  C5_CALL(ops->gemm_ex(&ctx, 0, 1, rows, 3 * hd, d, 1.0, c->xn, c->act, d, 0, c5_params_value(p, a->to_qkv),
                        C5_DTYPE_REAL, d, 0, 0.0, c->qkv, c->act, 3 * hd, 0, 1, C5_DTYPE_REAL));
  if (a->rotary) {
    C5_CALL(rotary_tables(a, ops, &ctx, c, pos0));
    C5_CALL(rotate_qk(a, ops, &ctx, c, c->qkv, 3 * hd, act_at(c, c->qkv, hd), 3 * hd, 0));
  }
  const c5k_local_attn L = cache_shape(a, c);
  C5_CALL(ops->local_attn_forward(&ctx, &L, c->qkv, act_at(c, c->qkv, hd), act_at(c, c->qkv, 2 * hd), 3 * hd,
                                  c->has_mask ? c->mask : NULL, c->att, hd, c->rmax, c->rinv, c->uni));
  c->live = 1;
  C5_CALL(c5_attn_local_output(a, p, c, bias, res, out));
  return C5_OK;
}

c5_status c5_attn_local_forward(const c5_attn_local *a, const c5_params *p, long batch, long n, long pos0,
                                const c5_real *x, const uint8_t *mask, c5_attn_local_cache *c, const c5_real *bias,
                                const c5_real *res, c5_real *out)
{
  C5_CHECK(a && p && x && c && out, C5_ERR_ARG, "c5_attn_local_forward: NULL argument");
  C5_CHECK(batch > 0 && n > 0 && batch <= c->batch_cap && n <= c->n_cap, C5_ERR_SHAPE,
           "LocalMHA: input [%ld, %ld, %d], cache made for at most [%ld, %ld, %d]", batch, n, a->dim,
           c->batch_cap, c->n_cap, a->dim);
  C5_CALL(check_act(a, c, batch, n));
  C5_WS_RUN(c->ws, carve_forward, c, forward_body(a, p, batch, n, pos0, x, mask, c, bias, res, out));
  return C5_OK;
}

c5_status c5_attn_local_output(const c5_attn_local *a, const c5_params *p, const c5_attn_local_cache *c,
                               const c5_real *bias, const c5_real *res, c5_real *out)
{
  C5_CHECK(c->live, C5_ERR_ARG, "LocalMHA output: the cache holds no head outputs (no forward ran, or a backward "
           "wrote over them: read the output between the forward and its backward)");
  const c5k_ops *ops = c5_params_backend(p)->ops;
  const long rows = c->batch * c->n, d = a->dim, hd = (long)a->heads * a->dim_head;
  c5k_ctx ctx = c5_backend_ctx(c5_params_backend(p), c->work, c->work_len);
  C5_CALL(ops->linear(&ctx, rows, d, hd, c->att, c->act, c5_params_value(p, a->to_out), bias, res, out));
  return C5_OK;
}

static c5_status backward_body(const c5_attn_local *a, const c5_params *p, c5_attn_local_cache *c,
                              const c5_real *x, const c5_real *dout, const c5_real *res, c5_real *dx)
{
  const c5k_ops *ops = c5_params_backend(p)->ops;
  const long rows = c->batch * c->n, d = a->dim, hd = (long)a->heads * a->dim_head;
  c5k_ctx ctx = c5_backend_ctx(c5_params_backend(p), c->work, c->work_len);
  c->live = 0;   /* q/k/v and the head outputs are spent below, whatever happens */
  /* to_out: dW += dout^T att; datt = dout W (in xn's buffer: the LayerNorm output is formed again below). In bf16
     mode both read dout's bf16 copy, made once in dkv's buffer (written only by the core, which reads datt): the
     bits gemm_ex's own copy would hold, rounded once instead of twice */
  c5_real *prod = c5_params_scratch(p), *dxn = c->dxn_over_qkv ? (c5_real *)c->qkv : c->xn;
  const c5_real *wqkv = c5_params_value(p, a->to_qkv);
  double *gqkv = c5_params_acc(p, a->to_qkv);
  void *datt = c->xn, *dq = c->att, *dk = c->dkv;   /* act; dq over the head outputs, read by then */
  const void *g = dout;
  if (c->act == C5_DTYPE_BF16) {
    C5_CALL(ops->convert(&ctx, rows * d, dout, c->dkv, c->act));
    g = c->dkv;
  }
  C5_CALL(ops->gemm_acc_ex(&ctx, 1, 0, d, hd, rows, 1.0, g, c->act, d, c->att, c->act, hd, prod,
                           c5_params_acc(p, a->to_out)));
  C5_CALL(ops->gemm_ex(&ctx, 0, 0, rows, hd, d, 1.0, g, c->act, d, 0, c5_params_value(p, a->to_out),
                        C5_DTYPE_REAL, hd, 0, 0.0, datt, c->act, hd, 0, 1, C5_DTYPE_REAL));
  const c5k_local_attn L = cache_shape(a, c);
  C5_CALL(ops->local_attn_backward(&ctx, &L, c->qkv, act_at(c, c->qkv, hd), act_at(c, c->qkv, 2 * hd), 3 * hd,
                                   c->has_mask ? c->mask : NULL, c->rmax, c->rinv, c->uni, c->att, datt, hd,
                                   dq, dk, act_at(c, dk, hd), 2 * hd));
  if (a->rotary) C5_CALL(rotate_qk(a, ops, &ctx, c, dq, hd, dk, 2 * hd, 1));   /* dq, dk of the unrotated q, k */
  /* to_qkv (W [3 HD, dim]: rows q | k | v): dW += [dq | dkv]^T xn, xn (act) formed again from the x the forward
     saw (the same op on the same input: the same bits, mean and rstd too) over datt, read by now; then
     dxn = dq Wq + dkv Wkv (over q/k/v, spent, or over xn) */
  C5_CALL(ops->layernorm_forward(&ctx, x, c5_params_value(p, a->norm_w), c5_params_value(p, a->norm_b), rows,
                                 (int)d, LN_EPS, c->xn, c->act, c->mean, c->rstd));
  C5_CALL(ops->gemm_acc_ex(&ctx, 1, 0, hd, d, rows, 1.0, dq, c->act, hd, c->xn, c->act, d, prod, gqkv));
  C5_CALL(ops->gemm_acc_ex(&ctx, 1, 0, 2 * hd, d, rows, 1.0, dk, c->act, 2 * hd, c->xn, c->act, d, prod,
                           gqkv + hd * d));
  C5_CALL(ops->gemm_ex(&ctx, 0, 0, rows, d, hd, 1.0, dq, c->act, hd, 0, wqkv, C5_DTYPE_REAL, d, 0, 0.0, dxn,
                        C5_DTYPE_REAL, d, 0, 1, C5_DTYPE_REAL));
  C5_CALL(ops->gemm_ex(&ctx, 0, 0, rows, d, 2 * hd, 1.0, dk, c->act, 2 * hd, 0, wqkv + hd * d, C5_DTYPE_REAL, d, 0,
                        1.0, dxn, C5_DTYPE_REAL, d, 0, 1, C5_DTYPE_REAL));
  C5_CALL(ops->layernorm_backward(&ctx, x, c5_params_value(p, a->norm_w), c->mean, c->rstd, dxn, rows, (int)d,
                                  res, dx, c5_params_acc(p, a->norm_w), c5_params_acc(p, a->norm_b)));
  const long idx[] = { a->norm_w, a->norm_b, a->to_qkv, a->to_out };
  C5_CALL(c5_params_flush(p, idx, 4));
  return C5_OK;
}

c5_status c5_attn_local_backward(const c5_attn_local *a, const c5_params *p, c5_attn_local_cache *c, const c5_real *x,
                                 const c5_real *dout, const c5_real *res, c5_real *dx)
{
  C5_CHECK(a && p && c && x && dout && dx, C5_ERR_ARG, "c5_attn_local_backward: NULL argument");
  C5_CHECK(c->live, C5_ERR_ARG, "LocalMHA backward: the cache holds no forward to go back through (none ran, or a "
           "backward spent it: run the forward again)");
  /* the kernel checks this too; here it fails before any gradient is accumulated */
  C5_CHECK(a->chunk >= a->look_backward + a->look_forward && a->chunk > 0, C5_ERR_ARG,
           "LocalMHA backward: chunk %ld must be >= look_backward + look_forward = %d", a->chunk,
           a->look_backward + a->look_forward);
  C5_CALL(check_act(a, c, c->batch, c->n));
  C5_WS_RUN(c->ws, carve_backward, c, backward_body(a, p, c, x, dout, res, dx));
  return C5_OK;
}
