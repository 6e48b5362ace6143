/* heavy_scatter.c - the routed attentions' output over null_q_token and its
   backward (see heavy_scatter.h), as kernel ops. */
#include "heavy_scatter.h"
#include "backend.h"

c5_status c5_heavy_scatter_forward(const c5_heavy_scatter *s, const c5_params *p, const c5_real *hout,
                                   const c5_real *qscore, c5_real *out)
{
  const c5_backend *be = c5_params_backend(p);
  const c5k_ops *ops = be->ops;
  const long D = s->dim, n = s->n;
  const c5_real *nul = s->null_q >= 0 ? c5_params_value(p, s->null_q) : NULL;
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  if (s->fill && !s->prefilled)
    for (long b = 0; b < s->batch; b++)
      C5_CALL(ops->fill_rows(&kc, n - s->t1, D, nul, s->accumulate, out + (b * n + s->t1) * D, D));
  /* adding, a query replaces the null_q_token added under it; writing, it overwrites it */
  const c5_real *sub = s->fill && s->accumulate ? nul : NULL;
  C5_CALL(ops->scatter_rows(&kc, s->nq, D, s->dst, hout, qscore, sub, s->accumulate, 1, out));
  return C5_OK;
}

c5_status c5_heavy_scatter_backward(const c5_heavy_scatter *s, const c5_params *p, const c5_real *dout,
                                    const c5_real *hout, const c5_real *qscore, c5_real *dh, c5_real *dqscore)
{
  const c5_backend *be = c5_params_backend(p);
  const c5k_ops *ops = be->ops;
  const long D = s->dim, n = s->n;
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  if (s->fill && s->null_q >= 0) {   /* every filled token not replaced by a query: in token order, then out */
    double *acc = c5_params_acc(p, s->null_q);
    for (long b = 0; b < s->batch; b++)
      C5_CALL(ops->acc_rows(&kc, n - s->t1, D, NULL, dout + (b * n + s->t1) * D, 0, acc));
    C5_CALL(ops->acc_rows(&kc, s->nq, D, s->dst, dout, 1, acc));
    C5_CALL(c5_params_flush(p, &s->null_q, 1));
  }
  C5_CALL(ops->gather_scale_dot(&kc, s->nq, D, s->dst, dout, qscore, hout, dh, dqscore));
  return C5_OK;
}
