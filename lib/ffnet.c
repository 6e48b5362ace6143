/* ffnet.c - the reference's FeedForward (ffnet.h), forward and backward.
   In bf16 mode (kernels.h bf16_acts at the cache's layout) the normed input
   xn and the activations a are written in bf16 by the RMSNorm and the GELU
   and read so by the four products that take them (the Linears, dW1, dW2):
   the products would round them to the same bf16 bits anyway. The
   backward's f32 gradients dy and dh, read by two products each, are
   rounded to bf16 once each (kernels.h convert) into the frame's g16, not
   twice into gemm_ex's scratch: the same bits, a third of the traffic.
   Both run over the rows in chunks (ffnet.h C5_FF_CHUNK_ROWS), in order, in
   a frame of a chunk's rows; the parameter gradients' parts add up in their
   double accumulators across the chunks and are flushed once. With more
   rows than a chunk, dW1, dW2 (their products' sums over rows, split at the
   chunks), db1, db2 and dgamma (their row parts' sums, split at the chunks)
   differ from one pass's in the last bits; everything else is row-local. */
#include <stdlib.h>
#include "c5_internal.h"
#include "backend.h"
#include "ffnet.h"

_Static_assert(C5_FF_CHUNK_ROWS % C5K_ROWPART == 0, "a chunk keeps the gradients' row parts whole");

c5_status c5_ffnet_init(c5_ffnet *f, c5_params *p, const char *prefix, int dim, double mult)
{
  C5_CHECK(dim > 0, C5_ERR_ARG, "%s: dim = %d must be > 0", prefix, dim);
  int hidden = (int)(dim * mult);   /* Python's int(): truncation */
  C5_CHECK(mult > 0 && hidden > 0, C5_ERR_ARG, "%s: ff mult %g gives hidden size %d (must be > 0)", prefix, mult, hidden);
  f->dim = dim;
  f->hidden = hidden;
  long d1[1] = { dim }, dh[1] = { hidden }, w1[2] = { hidden, dim }, w2[2] = { dim, hidden };
  C5_CALL(c5_params_add_init(p, prefix, "0.gamma", 1, d1, C5_INIT_ONE, 0, &f->gamma));
  C5_CALL(c5_params_add_init(p, prefix, "1.weight", 2, w1, C5_INIT_UNIFORM_FAN_IN, dim, &f->w1));
  C5_CALL(c5_params_add_init(p, prefix, "1.bias", 1, dh, C5_INIT_UNIFORM_FAN_IN, dim, &f->b1));
  C5_CALL(c5_params_add_init(p, prefix, "3.weight", 2, w2, C5_INIT_UNIFORM_FAN_IN, hidden, &f->w2));
  C5_CALL(c5_params_add_init(p, prefix, "3.bias", 1, d1, C5_INIT_UNIFORM_FAN_IN, hidden, &f->b2));
  return C5_OK;
}

/* Rows of the frame: one chunk's, or all rows where they are fewer. */
static long frame_rows(const c5_ffnet_cache *c)
{
  return c->rows_cap < c->chunk ? c->rows_cap : c->chunk;
}

/* The forward's and the backward's frame, for a chunk's cr = min(rows_cap, chunk) rows: xn and dh; in bf16 mode one
   buffer for both (ffnet.h) and g16. The backward's dh (c5_real) and its bf16 copy live at once, and so do that copy
   and dxn: cr (4 + 2) max(dim, hidden) bytes, the 4 cr (dim + hidden) of the c5_real frame when hidden = dim / 2
   (the light FF's 0.5) */
static void carve_frame(void *obj, c5_arena *a)
{
  c5_ffnet_cache *c = obj;
  const long cr = frame_rows(c);
  if (c->act != C5_DTYPE_BF16) {
    C5_TAKE(a, c->xn, cr * c->dim);
    C5_TAKE(a, c->dh, cr * c->hidden);
    c->g16 = NULL;
    return;
  }
  const long w = c->dim > c->hidden ? c->dim : c->hidden;
  C5_TAKE(a, c->xn, cr * w);
  c->dh = c->xn;
  c->g16 = c5_arena_take(a, (size_t)(cr * w), c5_dtype_size(C5_DTYPE_BF16));
}

/* The type the backend takes xn and a in now (its matmul mode). */
static c5_dtype act_wanted(const c5_backend *be)
{
  c5k_ctx ctx = c5_backend_ctx(be, NULL, 0);
  return be->ops->bf16_acts(&ctx) ? C5_DTYPE_BF16 : C5_DTYPE_REAL;
}

void c5_ffnet_cache_layout(const c5_ffnet *f, const c5_params *p, long rows, c5_arena *m, c5_ws *ws, long chunk,
                           c5_ffnet_cache *c)
{
  const c5_backend *be = c5_params_backend(p);
  c->rows_cap = rows;
  const char *e = getenv("C5_FF_CHUNK_ROWS");
  const long ec = e ? strtol(e, NULL, 10) : 0;
  c->chunk = ec > 0 ? ec : chunk > 0 ? chunk : C5_FF_CHUNK_ROWS;
  c->dim = f->dim;
  c->hidden = f->hidden;
  c->act = act_wanted(be);
  C5_TAKE(m, c->rnorm, rows);
  C5_TAKE(m, c->h, rows * f->hidden);
  c->work_len = c5_backend_work(be, c5k_rowpart_work(rows, f->hidden > f->dim ? f->hidden : f->dim));
  C5_TAKE(m, c->work, c->work_len);
  c->ws = ws;
  c5_ws_reserve(ws, c5_ws_measure(carve_frame, c));
}

/* Whether the backend still takes the cache's activation type: the matmul mode may have changed since. */
static c5_status check_act(const c5_params *p, const c5_ffnet_cache *c)
{
  return c5_act_agree(c->act, act_wanted(c5_params_backend(p)), "feedforward");
}

/* y [rows, dim] = a W2^T + b2 + res: the second Linear, on the activations a [rows, hidden] (the cache's act);
   res: a residual or NULL (kernels.h linear). */
static c5_status second_linear(const c5_ffnet *f, const c5_params *p, const c5_ffnet_cache *c, c5k_ctx *ctx,
                               const void *a, long rows, const c5_real *res, c5_real *y)
{
  const c5k_ops *ops = c5_params_backend(p)->ops;
  const int d = f->dim, h = f->hidden;
  C5_CALL(ops->linear(ctx, rows, d, h, a, c->act, c5_params_value(p, f->w2), c5_params_value(p, f->b2), res, y));
  return C5_OK;
}

/* The rows of the chunk that starts at row r0 of rows. */
static long chunk_rows(const c5_ffnet_cache *c, long r0, long rows)
{
  return rows - r0 < c->chunk ? rows - r0 : c->chunk;
}

static c5_status forward_body(const c5_ffnet *f, const c5_params *p, const c5_real *x, long rows,
                             c5_ffnet_cache *c, const c5_real *res, c5_real *y)
{
  const c5k_ops *ops = c5_params_backend(p)->ops;
  c5k_ctx ctx = c5_backend_ctx(c5_params_backend(p), c->work, c->work_len);
  const int d = f->dim, h = f->hidden;
  for (long r0 = 0; r0 < rows; r0 += c->chunk) {
    const long n = chunk_rows(c, r0, rows);
    c5_real *hc = c->h + r0 * h;
    C5_CALL(ops->rmsnorm_forward(&ctx, x + r0 * d, c5_params_value(p, f->gamma), n, d, c->xn, c->act,
                                 c->rnorm + r0));
    /* h = xn W1^T + b1 */
    C5_CALL(ops->linear(&ctx, n, h, d, c->xn, c->act, c5_params_value(p, f->w1), c5_params_value(p, f->b1), NULL,
                        hc));
    C5_CALL(ops->gelu_forward(&ctx, hc, n * h, c->dh, c->act));   /* a, in the backward's scratch */
    C5_CALL(second_linear(f, p, c, &ctx, c->dh, n, res ? res + r0 * d : NULL, y + r0 * d));
  }
  return C5_OK;
}

c5_status c5_ffnet_forward(const c5_ffnet *f, const c5_params *p, const c5_real *x, long rows,
                           c5_ffnet_cache *c, const c5_real *res, c5_real *y)
{
  C5_CHECK(rows <= c->rows_cap, C5_ERR_SHAPE, "feedforward: %ld rows, cache holds %ld", rows, c->rows_cap);
  if (rows == 0) return C5_OK;
  C5_CALL(check_act(p, c));
  C5_WS_RUN(c->ws, carve_frame, c, forward_body(f, p, x, rows, c, res, y));
  return C5_OK;
}

c5_status c5_ffnet_output(const c5_ffnet *f, const c5_params *p, const c5_ffnet_cache *c, long rows, c5_real *y)
{
  const c5_backend *be = c5_params_backend(p);
  C5_CHECK(rows <= c->rows_cap, C5_ERR_SHAPE, "feedforward: %ld rows, cache holds %ld", rows, c->rows_cap);
  if (rows == 0) return C5_OK;
  C5_CALL(check_act(p, c));
  c5k_ctx ctx = c5_backend_ctx(be, c->work, c->work_len);
  const long h = f->hidden, cr = rows < c->chunk ? rows : c->chunk;
  /* a (act) again from h, in a buffer of its own: the cache's scratch may hold a backward's dh by now. Chunked as
     the forward: the second Linear of the same rows, the same bits */
  void *a = NULL;
  c5_status st = c5_backend_calloc(be, (size_t)(cr * h), c5_dtype_size(c->act), &a);
  C5_CHECK(st == C5_OK, st, "feedforward output: out of memory for the activations [%ld, %ld] (%s)", cr, h,
           c5_dtype_name(c->act));
  for (long r0 = 0; r0 < rows && st == C5_OK; r0 += c->chunk) {
    const long n = chunk_rows(c, r0, rows);
    st = be->ops->gelu_forward(&ctx, c->h + r0 * h, n * h, a, c->act);
    if (st == C5_OK) st = second_linear(f, p, c, &ctx, a, n, NULL, y + r0 * f->dim);
  }
  c5_backend_free(be, a);
  return st == C5_OK ? C5_OK : c5_err_trace(st, __FILE__, __LINE__);
}

/* The backward of one chunk of rows, its x, dy, h, rnorm and dx given: its parameter gradients' parts added to the
   accumulators. */
static c5_status backward_chunk(const c5_ffnet *f, const c5_params *p, c5_ffnet_cache *c, c5k_ctx *ctx,
                                const c5_real *x, const c5_real *dy, const c5_real *hc, double *rnorm, long rows,
                                const c5_real *res, c5_real *dx)
{
  const c5k_ops *ops = c5_params_backend(p)->ops;
  const int d = f->dim, h = f->hidden;
  /* second Linear: dW2 += dy^T a, a (act) formed again from h in dh (the same op on the same input: the same
     bits); db2 += sum dy; da = dy W2 (c5_real) over it (the cache stays intact, so a second backward over it
     gives the same gradients). The products read dy as g (act): in bf16 mode its bf16 copy in g16, the bits
     gemm_ex's own copy would hold */
  c5_real *prod = c5_params_scratch(p);
  const void *g = dy;
  C5_CALL(ops->gelu_forward(ctx, hc, rows * h, c->dh, c->act));
  if (c->g16) {
    C5_CALL(ops->convert(ctx, rows * d, dy, c->g16, c->act));
    g = c->g16;
  }
  C5_CALL(ops->gemm_acc_ex(ctx, 1, 0, d, h, rows, 1.0, g, c->act, d, c->dh, c->act, h, prod,
                           c5_params_acc(p, f->w2)));
  C5_CALL(ops->colsum(ctx, dy, rows, d, c5_params_acc(p, f->b2)));
  C5_CALL(ops->gemm_ex(ctx, 0, 0, rows, h, d, 1.0, g, c->act, d, 0, c5_params_value(p, f->w2), C5_DTYPE_REAL, h, 0,
                       0.0, c->dh, C5_DTYPE_REAL, h, 0, 1, C5_DTYPE_REAL));
  C5_CALL(ops->gelu_backward(ctx, hc, c->dh, rows * h, c->dh));   /* dh, in place */
  /* first Linear: db1 += sum dh (c5_real); the products read dh as g (act: in bf16 mode its copy over dy's, and dh
     is spent); dW1 += dh^T xn, xn (act) formed again from the x the forward saw (the same op on the same input: the
     same bits, rnorm too); then dxn = dh W1 (c5_real) over it */
  c5_real *dxn = c->xn;
  C5_CALL(ops->colsum(ctx, c->dh, rows, h, c5_params_acc(p, f->b1)));
  g = c->dh;
  if (c->g16) {
    C5_CALL(ops->convert(ctx, rows * h, c->dh, c->g16, c->act));
    g = c->g16;
  }
  C5_CALL(ops->rmsnorm_forward(ctx, x, c5_params_value(p, f->gamma), rows, d, c->xn, c->act, rnorm));
  C5_CALL(ops->gemm_acc_ex(ctx, 1, 0, h, d, rows, 1.0, g, c->act, h, c->xn, c->act, d, prod,
                           c5_params_acc(p, f->w1)));
  C5_CALL(ops->gemm_ex(ctx, 0, 0, rows, d, h, 1.0, g, c->act, h, 0, c5_params_value(p, f->w1), C5_DTYPE_REAL, d, 0,
                       0.0, dxn, C5_DTYPE_REAL, d, 0, 1, C5_DTYPE_REAL));
  C5_CALL(ops->rmsnorm_backward(ctx, x, c5_params_value(p, f->gamma), rnorm, dxn, rows, d, res, dx,
                                c5_params_acc(p, f->gamma)));
  return C5_OK;
}

static c5_status backward_body(const c5_ffnet *f, const c5_params *p, c5_ffnet_cache *c, const c5_real *x,
                              const c5_real *dy, long rows, const c5_real *res, c5_real *dx)
{
  c5k_ctx ctx = c5_backend_ctx(c5_params_backend(p), c->work, c->work_len);
  const int d = f->dim;
  for (long r0 = 0; r0 < rows; r0 += c->chunk)
    C5_CALL(backward_chunk(f, p, c, &ctx, x + r0 * d, dy + r0 * d, c->h + r0 * f->hidden, c->rnorm + r0,
                           chunk_rows(c, r0, rows), res ? res + r0 * d : NULL, dx + r0 * d));
  const long idx[] = { f->gamma, f->w1, f->b1, f->w2, f->b2 };
  C5_CALL(c5_params_flush(p, idx, 5));
  return C5_OK;
}

c5_status c5_ffnet_backward(const c5_ffnet *f, const c5_params *p, c5_ffnet_cache *c, const c5_real *x,
                            const c5_real *dy, long rows, const c5_real *res, c5_real *dx)
{
  if (rows == 0) return C5_OK;
  C5_CALL(check_act(p, c));
  C5_WS_RUN(c->ws, carve_frame, c, backward_body(f, p, c, x, dy, rows, res, dx));
  return C5_OK;
}
