/* xent.c - softmax cross-entropy over the byte logits on the CPU (the
   masked-byte loss), forward and backward; row sums in double, the loss
   summed over a fixed partition of rows. */
#include <math.h>
#include "cpu.h"

/* log sum_c exp(l_c), shifted by the row's max, in double */
static double row_lse(const c5_real *l, int classes)
{
  double m = l[0], s = 0;
  for (int c = 1; c < classes; c++) m = l[c] > m ? l[c] : m;
  for (int c = 0; c < classes; c++) s += exp((double)l[c] - m);
  return m + log(s);
}

c5_status c5k_xent_forward_cpu(c5k_ctx *ctx, long rows, int classes, const c5_real *logits, const int32_t *targets,
                               double *lse, double *loss, long *count)
{
  const long part = C5K_ROWPART, np = (rows + part - 1) / part;
  if (ctx->work_len < 2 * np + 1)
    return C5K_ERR(C5_ERR_INTERNAL, "xent_forward: work %ld < %ld doubles", ctx->work_len, 2 * np + 1);
  for (long r = 0; r < rows; r++)
    if (targets[r] < -1 || targets[r] >= classes)
      return C5K_ERR(C5_ERR_ARG, "xent_forward: target %d of row %ld outside -1..%d", (int)targets[r], r, classes - 1);
  double *acc = ctx->work, *nacc = ctx->work + np;   /* per part: loss, count */
#pragma omp parallel for schedule(static)
  for (long p = 0; p < np; p++) {
    double a = 0;
    long cnt = 0;
    for (long r = p * part; r < rows && r < (p + 1) * part; r++) {
      if (targets[r] < 0) { lse[r] = 0; continue; }
      const c5_real *l = logits + r * classes;
      lse[r] = row_lse(l, classes);
      a += lse[r] - (double)l[targets[r]];
      cnt++;
    }
    acc[p] = a;
    nacc[p] = (double)cnt;
  }
  double s = 0, cnt = 0;
  for (long p = 0; p < np; p++) { s += acc[p]; cnt += nacc[p]; }
  *loss = s;
  *count = (long)cnt;
  return C5_OK;
}

c5_status c5k_xent_backward_cpu(c5k_ctx *ctx, long rows, int classes, const c5_real *logits, const int32_t *targets,
                                const double *lse, double scale, c5_real *dlogits)
{
  (void)ctx;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++) {
    const c5_real *l = logits + r * classes;
    c5_real *g = dlogits + r * classes;
    int t = targets[r];
    for (int c = 0; c < classes; c++)
      g[c] = t < 0 ? 0 : (c5_real)(scale * (exp((double)l[c] - lse[r]) - (c == t ? 1.0 : 0.0)));
  }
  return C5_OK;
}
