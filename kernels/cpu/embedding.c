/* embedding.c - the model's token and position embeddings on the CPU,
   forward (a gather and an add) and backward (rows added into double
   accumulators, each element's adds in token order). */
#include <string.h>
#include "cpu.h"

c5_status c5k_embedding_forward_cpu(c5k_ctx *ctx, long batch, long n, long pos0, int dim, const int32_t *tokens,
                                    const c5_real *tok_emb, const c5_real *pos_emb, c5_real *x)
{
  (void)ctx;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < batch * n; r++) {
    const c5_real *t = tok_emb + (long)tokens[r] * dim, *p = pos_emb + (pos0 + r % n) * dim;
    c5_real *xr = x + r * dim;
    for (int k = 0; k < dim; k++) xr[k] = t[k] + p[k];
  }
  return C5_OK;
}

/* Several tokens of a batch share a row of tok_emb: splitting the rows between threads would race on
   it or make the order of its adds depend on the split. Every thread owns columns instead. */
c5_status c5k_embedding_backward_cpu(c5k_ctx *ctx, long batch, long n, long pos0, int dim, const int32_t *tokens,
                                     const c5_real *dx, double *dtok, double *dpos)
{
  (void)ctx;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < dim; k++)
    for (long r = 0; r < batch * n; r++) {
      double g = dx[r * dim + k];
      dtok[(long)tokens[r] * dim + k] += g;
      dpos[(pos0 + r % n) * dim + k] += g;
    }
  return C5_OK;
}
