/* ffnet.h - the reference's FeedForward: RMSNorm -> Linear(+bias) -> exact
   GELU -> Linear(+bias); state_dict names 0.gamma, 1.weight, 1.bias,
   3.weight, 3.bias. Where the backend takes them so (kernels.h bf16_acts:
   CUDA, bf16 matmul mode) the RMSNorm and the GELU write their outputs,
   read only by the Linears, in bf16. Every step but the parameter
   gradients' sums is row-local, so the forward and the backward run over
   the rows in chunks of at most C5_FF_CHUNK_ROWS, in order: the workspace
   frame holds one chunk's rows, not all of them. Private to lib/. */
#ifndef C5_FFNET_H
#define C5_FFNET_H
#include "kernels.h"
#include "arena.h"
#include "ws.h"

/* Rows of one chunk where the cache's maker does not choose (c5_ffnet_cache_layout's chunk <= 0): the frame of a
   light FF of 131072 rows at dim 512 (bf16 mode) 384 -> 48 MiB, at the cost of each step's launches once per chunk
   (8 times at 131072 rows: 0.7 ms of a 13 ms block step on an H200, whose FF kernels at 16384 rows are as short as
   their launches). A chunk is a multiple of C5K_ROWPART, so the row partition of colsum's and rmsnorm_backward's
   sums keeps its parts whole (only their sum over the parts is split). */
#define C5_FF_CHUNK_ROWS 16384

typedef struct {
  int dim, hidden;
  long gamma, w1, b1, w2, b2;   /* parameter indices */
} c5_ffnet;

typedef struct {
  long rows_cap;
  long chunk;       /* rows of a chunk: the layout's chunk (C5_FF_CHUNK_ROWS where <= 0), or C5_FF_CHUNK_ROWS=N
                       (N > 0) in the environment at the layout, which wins (tests: chunked rows at a test's sizes) */
  int dim, hidden;
  c5_dtype act;     /* xn's and a's type: bf16 where kernels.h bf16_acts said so at the layout (the products
                       round them so anyway), else c5_real */
  double *rnorm;    /* [rows] (all rows: kept for the backward) */
  c5_real *h;       /* [rows, hidden] before GELU (all rows: kept for the backward) */
  double *work;     /* rowpart reductions */
  long work_len;
  /* a frame of the workspace (ws.h), inside each forward and backward, for one chunk's rows (cr = min(rows_cap,
     chunk)), each chunk's over the last's: */
  c5_ws *ws;
  c5_real *xn;      /* [cr, dim] c5_reals: the normed input (act; the forward); the backward forms it again
                       from x, then dxn (c5_real) over it: x is read there anyway */
  c5_real *dh;      /* [cr, hidden] c5_reals: a = GELU(h) (act) in the forward (formed again where needed: the
                       backward, c5_ffnet_output), da then dh (c5_real) in the backward */
  void *g16;        /* bf16 mode only (else NULL): [cr, max(dim, hidden)] bf16, the backward's bf16 copies of dy,
                       then of dh, each read by two products. xn and dh are then one buffer of [cr, max(dim,
                       hidden)] c5_reals: xn, a, da/dh, xn again and dxn in turn, each dead when the next is written */
} c5_ffnet_cache;

c5_status c5_ffnet_init(c5_ffnet *f, c5_params *p, const char *prefix, int dim, double mult);
/* Lay out a cache of rows in its owner's arena (arena.h): it goes with it. Its transient buffers are a
   frame of ws, reserved at ws's current depth (the owner's calls must open it at that depth); the layout
   runs twice (measure, carve): reserving twice is the same. chunk: the rows of a chunk (a multiple of
   C5K_ROWPART; <= 0: C5_FF_CHUNK_ROWS). The cache is made for p's backend's matmul mode at the layout
   (bf16_acts): the calls refuse it in another. */
void c5_ffnet_cache_layout(const c5_ffnet *f, const c5_params *p, long rows, c5_arena *m, c5_ws *ws, long chunk,
                           c5_ffnet_cache *c);
/* y [rows, dim] = ffnet(x [rows, dim]) + res: res [rows, dim] or NULL (none), a residual added in the second
   Linear's product (kernels.h linear), a buffer apart from y */
c5_status c5_ffnet_forward(const c5_ffnet *f, const c5_params *p, const c5_real *x, long rows,
                           c5_ffnet_cache *c, const c5_real *res, c5_real *y);
/* y [rows, dim] = the second Linear of the activations of the last forward of rows (formed again from the
   cached h, a chunk at a time as the forward, in a buffer of its own of a chunk's rows): the forward's output
   again later (activation dumps), bit for bit where it had no residual, after a backward too. */
c5_status c5_ffnet_output(const c5_ffnet *f, const c5_params *p, const c5_ffnet_cache *c, long rows, c5_real *y);
/* dx = dL/dx + res (written; may not alias dy; res [rows, dim] or NULL, may be dx itself, added by the last
   op, kernels.h rmsnorm_backward); parameter gradients accumulate, each chunk's into the double accumulators in
   turn, flushed once at the end. */
c5_status c5_ffnet_backward(const c5_ffnet *f, const c5_params *p, c5_ffnet_cache *c, const c5_real *x,
                            const c5_real *dy, long rows, const c5_real *res, c5_real *dx);
#endif
