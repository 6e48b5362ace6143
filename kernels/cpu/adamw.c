/* adamw.c - the optimizer's arithmetic on the CPU: the gradient norm's sum of
   squares over fixed chunks (its bits do not depend on the thread count) and
   the fused AdamW update, one pass over each parameter (torch.optim.AdamW's
   single-tensor path, operation for operation, in double). */
#include <math.h>
#include "cpu.h"

#define PAR_MIN 65536   /* below this, threads cost more than they save */
#define LANES 8

c5_status c5k_sumsq_cpu(c5k_ctx *ctx, long n, const c5_real *x, double *ss, long *first_nonfinite)
{
  long nc = (n + C5K_CHUNK - 1) / C5K_CHUNK;
  if (nc > ctx->work_len)
    return C5K_ERR(C5_ERR_INTERNAL, "sumsq: %ld elements need %ld doubles of work, given %ld", n, nc, ctx->work_len);
  double *part = ctx->work;   /* [nc] each chunk's sum, then summed in chunk order */
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (long c = 0; c < nc; c++) {
    long j0 = c * C5K_CHUNK, j1 = (c + 1) * C5K_CHUNK < n ? (c + 1) * C5K_CHUNK : n, j;
    /* LANES interleaved sums (they vectorize; one running sum would not),
       then the tail, then the lanes in order: a fixed order all the same */
    double lane[LANES] = { 0 }, s = 0;
    for (j = j0; j + LANES <= j1; j += LANES)
      for (int k = 0; k < LANES; k++) lane[k] += (double)x[j + k] * (double)x[j + k];
    for (; j < j1; j++) s += (double)x[j] * (double)x[j];
    for (int k = 0; k < LANES; k++) s += lane[k];
    part[c] = s;
  }
  double s = 0;
  for (long c = 0; c < nc; c++) s += part[c];
  *ss = s;
  if (first_nonfinite) {
    /* only a chunk whose sum is not finite can hold a NaN or Inf; it may
       also only have overflowed, so the search goes on past it */
    *first_nonfinite = -1;
    for (long c = 0; c < nc && !isfinite(s); c++) {
      if (isfinite(part[c])) continue;
      long j1 = (c + 1) * C5K_CHUNK < n ? (c + 1) * C5K_CHUNK : n;
      for (long j = c * C5K_CHUNK; j < j1; j++)
        if (!isfinite(x[j])) { *first_nonfinite = j; return C5_OK; }
    }
  }
  return C5_OK;
}

c5_status c5k_adamw_update_cpu(c5k_ctx *ctx, const c5k_adamw *A, long n, const c5_real *grad, c5_real *p,
                               c5_real *m, c5_real *v)
{
  (void)ctx;
  const double b1 = A->beta1, b2 = A->beta2, gs = A->grad_scale, eps = A->eps;
  const double shrink = 1 - A->lr * A->weight_decay;
  const double step_size = A->lr / (1 - pow(b1, (double)A->step));
  const double bc2_sqrt = sqrt(1 - pow(b2, (double)A->step));
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (long i = 0; i < n; i++) {
    double g = gs * (double)grad[i];
    double mi = (double)m[i] * b1 + (1 - b1) * g;
    double vi = (double)v[i] * b2 + (1 - b2) * g * g;
    double denom = sqrt(vi) / bc2_sqrt + eps;
    p[i] = (c5_real)((double)p[i] * shrink + -step_size * mi / denom);
    m[i] = (c5_real)mi;
    v[i] = (c5_real)vi;
  }
  return C5_OK;
}

/* On the host the backend's memory is the host's: sumsq itself. */
c5_status c5k_sumsq_dev_cpu(c5k_ctx *ctx, long n, const c5_real *x, double *ss)
{
  return c5k_sumsq_cpu(ctx, n, x, ss, NULL);
}
