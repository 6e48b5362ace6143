/* act.c - exact (erf) GELU, forward and backward, and a bias-gradient
   column sum, on the CPU. */
#include <math.h>
#include <cblas.h>
#include <omp.h>
#include "cpu.h"

c5_status c5k_gelu_forward_cpu(c5k_ctx *ctx, const c5_real *x, long n, c5_real *y)
{
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; i++) y[i] = (c5_real)(0.5 * x[i] * (1.0 + erf(x[i] * M_SQRT1_2)));
  return C5_OK;
}

/* dx = dy (Phi(x) + x phi(x)); dx may alias dy. */
c5_status c5k_gelu_backward_cpu(c5k_ctx *ctx, const c5_real *x, const c5_real *dy, long n, c5_real *dx)
{
  const double inv_sqrt_2pi = 0.3989422804014327;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; i++) {
    double xi = x[i];
    dx[i] = (c5_real)(dy[i] * (0.5 * (1.0 + erf(xi * M_SQRT1_2)) + xi * inv_sqrt_2pi * exp(-0.5 * xi * xi)));
  }
  return C5_OK;
}

/* db[j] += sum_r dy[r, j], over a fixed row partition (thread-count independent). */
c5_status c5k_colsum_cpu(c5k_ctx *ctx, const c5_real *dy, long rows, int cols, c5_real *db)
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
  for (long p = 0; p < np; p++)
    for (int j = 0; j < cols; j++) db[j] += (c5_real)acc[p * cols + j];
  return C5_OK;
}

c5k_gemm_stats c5k_cpu_gemm_stats;

/* C[m,n] = alpha op(A) op(B) + beta C, row-major (CBLAS). */
c5_status c5k_gemm_cpu(c5k_ctx *ctx, int transa, int transb, long m, long n, long k, double alpha,
                       const c5_real *A, long lda, const c5_real *B, long ldb, double beta, c5_real *C, long ldc)
{
  if (m == 0 || n == 0) return C5_OK;
  double t0 = 0;
  int timed = c5k_cpu_gemm_stats.enabled && !omp_in_parallel();
  if (timed) t0 = omp_get_wtime();
  /* OpenBLAS sums a long inner dimension in a thread-count dependent order:
     feed it fixed slices of C5K_GEMM_KC, accumulated in order, so results
     do not depend on OMP_NUM_THREADS. */
  for (long k0 = 0; k0 < k || k0 == 0; k0 += C5K_GEMM_KC) {
    long kk = k - k0 < C5K_GEMM_KC ? k - k0 : C5K_GEMM_KC;
    const c5_real *a = transa ? A + k0 * lda : A + k0, *b = transb ? B + k0 : B + k0 * ldb;
    double be = k0 == 0 ? beta : 1.0;
#if C5_USE_DOUBLE
    cblas_dgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)kk, alpha, a, (int)lda, b, (int)ldb, be, C, (int)ldc);
#else
    cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)kk, (float)alpha, a, (int)lda, b, (int)ldb, (float)be, C, (int)ldc);
#endif
    if (k == 0) break;
  }
  if (timed) {
    c5k_cpu_gemm_stats.seconds += omp_get_wtime() - t0;
    c5k_cpu_gemm_stats.flops += 2.0 * m * n * k;
    c5k_cpu_gemm_stats.calls++;
  }
  return C5_OK;
}
