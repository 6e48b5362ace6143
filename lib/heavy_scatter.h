/* heavy_scatter.h - the routed attentions' output (routed_attn.c,
   routed_ar_attn.c, routed_cross_attn.c; reference:
   colt5_attention/transformer_block.py): null_q_token (or 0) under every
   token that may take a query, and at each routed query's token its heavy
   output times its q score instead; and the backward of both (the
   null_q_token gradient, the gradient through the q score). A heavy query e
   lands on row dst[e] of the output (-1: padding, or a token sliced off).
   Private to lib/. */
#ifndef C5_HEAVY_SCATTER_H
#define C5_HEAVY_SCATTER_H
#include "c5_internal.h"
#include "kernels.h"

typedef struct {
  long batch, n, dim;          /* out: [batch, n, dim] */
  long t1;                     /* tokens t1 .. n-1 of each batch row may take a query (and null_q_token) */
  int fill;                    /* null_q_token (or 0) under those tokens */
  int prefilled;               /* ... already in out (a bias of the light branch's output, accumulate 1) */
  long null_q;                 /* its parameter index (-1: 0 instead) */
  int accumulate;              /* add to out (1: out holds the light branch) or write it (0) */
  long nq;                     /* heavy queries */
  const long *dst;             /* [nq] their output rows */
} c5_heavy_scatter;

/* out [(+)=] the routed output: the null fill, then hout [nq, dim] times qscore [nq] at the rows dst
   (minus null_q_token where it was added under them: the query replaces it). Rank-local. */
c5_status c5_heavy_scatter_forward(const c5_heavy_scatter *s, const c5_params *p, const c5_real *hout,
                                   const c5_real *qscore, c5_real *out);
/* From dout [batch, n, dim]: null_q_token's gradient (every filled token but the queries' ones; flushed
   into its gradient), dh [nq, dim] = dout[dst] qscore and dqscore [nq] = dout[dst] . hout (0 for
   padding). Rank-local. */
c5_status c5_heavy_scatter_backward(const c5_heavy_scatter *s, const c5_params *p, const c5_real *dout,
                                    const c5_real *hout, const c5_real *qscore, c5_real *dh, c5_real *dqscore);
#endif
