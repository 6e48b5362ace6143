/* grad.c - parameter-gradient accumulation on the CPU: the bias-gradient
   column sum and the one add of a backward's double accumulator into the
   working-precision gradient slab. */
#include "cpu.h"

/* db[j] += sum_r dy[r, j], over a fixed row partition (thread-count independent). */
c5_status c5k_colsum_cpu(c5k_ctx *ctx, const c5_real *dy, long rows, int cols, double *db)
{
  const long part = C5K_ROWPART;
  long np = (rows + part - 1) / part;
  double *acc = ctx->work;   /* [np][cols] */
#pragma omp parallel for schedule(static)
  for (long p = 0; p < np; p++) {
    double *a = acc + p * cols;
    for (int j = 0; j < cols; j++) a[j] = 0;
    for (long r = p * part; r < rows && r < (p + 1) * part; r++)
      for (int j = 0; j < cols; j++) a[j] += dy[r * cols + j];
  }
  c5k_rowpart_add(acc, np, cols, cols, db);
  return C5_OK;
}

c5_status c5k_grad_flush_cpu(c5k_ctx *ctx, double *acc, long n, c5_real *g)
{
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; i++) {
    g[i] += (c5_real)acc[i];
    acc[i] = 0;
  }
  return C5_OK;
}
