/* cd.c - coordinate-descent kernels on the CPU (docs/design.md §2), OpenMP over
   fixed chunks of every row so sums do not depend on the thread count.
   Each element costs one vectorized exp per pass; z_j - m_t = min(s_j + a, 0) / eps
   is the shifted exponent, so no max pass is needed. */
#include <math.h>
#include <string.h>
#include "cpu.h"

#define VB 256   /* elements per exp block (on the stack) */

/* Block helpers: plain loops, compiled for several ISAs and picked at run
   time (target_clones), since default builds target baseline x86-64. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define C5_CLONES __attribute__((target_clones("default", "avx2", "avx512f")))
#else
#define C5_CLONES
#endif

/* t_j = min(s_j + a, 0) * ie (-inf where masked); returns #{unmasked j: s_j + a > 0}. */
C5_CLONES static double blk_exponent(const c5_real *s, const uint8_t *m, long n, c5_real a, c5_real ie, c5_real *t)
{
  double nab = 0;
  if (m) {
#pragma omp simd reduction(+ : nab)
    for (long j = 0; j < n; j++) {
      c5_real x = s[j] + a;
      nab += (m[j] && x > 0) ? 1.0 : 0.0;
      t[j] = m[j] ? (x < 0 ? x : 0) * ie : -INFINITY;
    }
  } else {
#pragma omp simd reduction(+ : nab)
    for (long j = 0; j < n; j++) {
      c5_real x = s[j] + a;
      nab += x > 0 ? 1.0 : 0.0;
      t[j] = (x < 0 ? x : 0) * ie;
    }
  }
  return nab;
}

C5_CLONES static double blk_sum(const c5_real *t, long n)
{
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (long j = 0; j < n; j++) acc += (double)t[j];
  return acc;
}

/* t_j = (s_j + a) * ie - l where s_j + a <= 0 and unmasked, else -inf. */
C5_CLONES static void blk_below(const c5_real *s, const uint8_t *m, long n, c5_real a, c5_real ie, c5_real l, c5_real *t)
{
#pragma omp simd
  for (long j = 0; j < n; j++) {
    c5_real x = s[j] + a;
    t[j] = x <= 0 ? x * ie - l : -INFINITY;
  }
  if (m)
#pragma omp simd
    for (long j = 0; j < n; j++) t[j] = m[j] ? t[j] : -INFINITY;
}

C5_CLONES static void blk_axpy(double *acc, double g, const c5_real *t, long n)
{
#pragma omp simd
  for (long j = 0; j < n; j++) acc[j] -= g * (double)t[j];
}

/* direct term: acc_j = gy_j y_j ie [s_j + a <= 0] (0 where masked) */
C5_CLONES static void blk_direct(double *acc, const c5_real *s, const uint8_t *m, const c5_real *gy, const c5_real *y,
                                 long n, c5_real a, double ie)
{
#pragma omp simd
  for (long j = 0; j < n; j++) acc[j] = s[j] + a <= 0 ? (double)gy[j] * (double)y[j] * ie : 0.0;
  if (m)
#pragma omp simd
    for (long j = 0; j < n; j++) acc[j] = m[j] ? acc[j] : 0.0;
}

c5_status c5k_cd_sumexp_cpu(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                               const double *a, double inv_eps, double *sum, double *nabove)
{
  long nc = R->cstart[R->rows];
  double *part = ctx->work;   /* [nc][2] */
#pragma omp parallel for schedule(static)
  for (long c = 0; c < nc; c++) {
    long r = c5k_chunk_row(R, c), j0, j1;
    c5k_chunk_range(R, r, c, &j0, &j1);
    c5_real ar = (c5_real)a[r], ie = (c5_real)inv_eps;
    double acc = 0.0, nab = 0.0;
    c5_real t[VB];
    for (long b = j0; b < j1; b += VB) {
      long nb = j1 - b < VB ? j1 - b : VB;
      nab += blk_exponent(s + b, mask ? mask + b : NULL, nb, ar, ie, t);
      c5k_vexp(t, nb);
      acc += blk_sum(t, nb);
    }
    part[2 * c] = acc;
    part[2 * c + 1] = nab;
  }
  for (long r = 0; r < R->rows; r++) {
    double sm = 0.0, na = 0.0;
    for (long c = R->cstart[r]; c < R->cstart[r + 1]; c++) { sm += part[2 * c]; na += part[2 * c + 1]; }
    sum[r] = sm;
    nabove[r] = na;
  }
  return C5_OK;
}

c5_status c5k_cd_maxsumexp_cpu(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                                  const double *a, double inv_eps, double *pair)
{
  long nc = R->cstart[R->rows];
  double *part = ctx->work;
  /* exponents in double here: this path exists for sums that underflow */
#pragma omp parallel for schedule(static)
  for (long c = 0; c < nc; c++) {
    long r = c5k_chunk_row(R, c), j0, j1;
    c5k_chunk_range(R, r, c, &j0, &j1);
    double M = -INFINITY, acc = 0.0;
    for (long j = j0; j < j1; j++) {
      if (mask && !mask[j]) continue;
      double x = (double)s[j] + a[r];
      double t = (x < 0 ? x : 0) * inv_eps;
      if (t > M) { acc = acc * exp(M - t) + 1.0; M = t; }
      else acc += exp(t - M);
    }
    part[2 * c] = M;
    part[2 * c + 1] = acc;
  }
  for (long r = 0; r < R->rows; r++) {
    double M = -INFINITY, acc = 0.0;
    for (long c = R->cstart[r]; c < R->cstart[r + 1]; c++) {
      double m2 = part[2 * c], s2 = part[2 * c + 1];
      if (m2 == -INFINITY) continue;
      if (m2 > M) { acc = acc * exp(M - m2) + s2; M = m2; }
      else acc += s2 * exp(m2 - M);
    }
    pair[2 * r] = M;
    pair[2 * r + 1] = acc;
  }
  return C5_OK;
}

c5_status c5k_cd_output_cpu(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                               const double *a, double inv_eps, c5_real *y)
{
  (void)ctx;
  long nc = R->cstart[R->rows];
#pragma omp parallel for schedule(static)
  for (long c = 0; c < nc; c++) {
    long r = c5k_chunk_row(R, c), j0, j1;
    c5k_chunk_range(R, r, c, &j0, &j1);
    for (long b = j0; b < j1; b += VB) {
      long nb = j1 - b < VB ? j1 - b : VB;
      blk_exponent(s + b, mask ? mask + b : NULL, nb, (c5_real)a[r], (c5_real)inv_eps, y + b);
      c5k_vexp(y + b, nb);
    }
  }
  return C5_OK;
}

c5_status c5k_cd_gdot_cpu(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                             const double *a, double inv_eps, const c5_real *y, const c5_real *gy,
                             double *dot)
{
  long nc = R->cstart[R->rows];
  double *part = ctx->work;
#pragma omp parallel for schedule(static)
  for (long c = 0; c < nc; c++) {
    long r = c5k_chunk_row(R, c), j0, j1;
    c5k_chunk_range(R, r, c, &j0, &j1);
    c5_real ar = (c5_real)a[r];
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (long j = j0; j < j1; j++)
      acc += ((!mask || mask[j]) && s[j] + ar <= 0) ? (double)gy[j] * (double)y[j] : 0.0;
    part[c] = acc * inv_eps;
  }
  for (long r = 0; r < R->rows; r++) {
    double sm = 0.0;
    for (long c = R->cstart[r]; c < R->cstart[r + 1]; c++) sm += part[c];
    dot[r] = sm;
  }
  return C5_OK;
}

c5_status c5k_cd_backward_cpu(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                                 int T, const double *a, const double *lse, const double *inv_eps,
                                 const double *ga, const c5_real *y, const c5_real *gy, c5_real *ds)
{
  (void)ctx;
  long nc = R->cstart[R->rows];
#pragma omp parallel for schedule(static)
  for (long c = 0; c < nc; c++) {
    long r = c5k_chunk_row(R, c), j0, j1;
    c5k_chunk_range(R, r, c, &j0, &j1);
    const double *ar = a + r * T, *lr = lse + r * T, *gr = ga + r * T;
    c5_real aT = (c5_real)ar[T - 1];
    double ieT = inv_eps[T];
    for (long b = j0; b < j1; b += VB) {
      long nb = j1 - b < VB ? j1 - b : VB;
      const c5_real *sb = s + b;
      const uint8_t *m = mask ? mask + b : NULL;
      double acc[VB];
      c5_real t[VB];
      blk_direct(acc, sb, m, gy + b, y + b, nb, aT, ieT);
      for (int it = T; it >= 2; it--) {   /* iteration it uses a_{it-1}, eps_it, lse_it, ga_it */
        c5_real ap = (c5_real)ar[it - 2], ie = (c5_real)inv_eps[it - 1], l = (c5_real)lr[it - 1];
        double g = gr[it - 1];
        if (g == 0.0) continue;
        blk_below(sb, m, nb, ap, ie, l, t);
        c5k_vexp(t, nb);
        blk_axpy(acc, g, t, nb);
      }
      for (long j = 0; j < nb; j++) ds[b + j] = (c5_real)acc[j];
    }
  }
  return C5_OK;
}
