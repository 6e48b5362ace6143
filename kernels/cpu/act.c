/* act.c - exact (erf) GELU, forward and backward, and a bias-gradient
   column sum, on the CPU. */
#include <math.h>
#include <cblas.h>
#include <omp.h>
#include "cpu.h"

#define GB 256   /* elements per vectorized erf/exp block */

/* y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) */
c5_status c5k_gelu_forward_cpu(c5k_ctx *ctx, const c5_real *x, long n, c5_real *y)
{
  long nb = (n + GB - 1) / GB;
#pragma omp parallel for schedule(static)
  for (long b = 0; b < nb; b++) {
    long i0 = b * GB, m = n - i0 < GB ? n - i0 : GB;
    c5_real t[GB];
    for (long i = 0; i < m; i++) t[i] = (c5_real)(x[i0 + i] * M_SQRT1_2);
    c5k_verf(t, m);
    for (long i = 0; i < m; i++) y[i0 + i] = (c5_real)(0.5 * x[i0 + i] * (1.0 + t[i]));
  }
  return C5_OK;
}

/* dx = dy (Phi(x) + x phi(x)); dx may alias dy. */
c5_status c5k_gelu_backward_cpu(c5k_ctx *ctx, const c5_real *x, const c5_real *dy, long n, c5_real *dx)
{
  const double inv_sqrt_2pi = 0.3989422804014327;
  long nb = (n + GB - 1) / GB;
#pragma omp parallel for schedule(static)
  for (long b = 0; b < nb; b++) {
    long i0 = b * GB, m = n - i0 < GB ? n - i0 : GB;
    c5_real e[GB], g[GB];
    for (long i = 0; i < m; i++) {
      e[i] = (c5_real)(x[i0 + i] * M_SQRT1_2);
      g[i] = (c5_real)(-0.5 * x[i0 + i] * x[i0 + i]);
    }
    c5k_verf(e, m);
    c5k_vexp(g, m);
    for (long i = 0; i < m; i++)
      dx[i0 + i] = (c5_real)(dy[i0 + i] * (0.5 * (1.0 + e[i]) + x[i0 + i] * inv_sqrt_2pi * g[i]));
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
  c5k_rowpart_add(acc, np, cols, cols, db);
  return C5_OK;
}

c5k_gemm_stats c5k_cpu_gemm_stats;

static void blas(int ta, int tb, long m, long n, long k, double alpha, const c5_real *A, long lda, const c5_real *B,
                 long ldb, double beta, c5_real *C, long ldc)
{
#if C5_USE_DOUBLE
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              (int)m, (int)n, (int)k, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
#else
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              (int)m, (int)n, (int)k, (float)alpha, A, (int)lda, B, (int)ldb, (float)beta, C, (int)ldc);
#endif
}

/* C[m,n] = alpha op(A) op(B) + beta C, row-major. The BLAS runs on one thread
   (set once): this kernel cuts C into fixed blocks of C5K_GEMM_BLOCK rows (or
   columns, when m is the smaller side) and runs them over the OpenMP threads.
   Every block's sums then have the same order whatever OMP_NUM_THREADS is
   (OpenBLAS's own threaded driver orders a long k differently from its serial
   one), and there is one thread pool, OpenMP's. Called inside a parallel
   region, it is one serial BLAS call. */
c5_status c5k_gemm_cpu(c5k_ctx *ctx, int transa, int transb, long m, long n, long k, double alpha,
                       const c5_real *A, long lda, const c5_real *B, long ldb, double beta, c5_real *C, long ldc)
{
  static int serial_blas;
  if (m == 0 || n == 0) return C5_OK;
  if (!__atomic_load_n(&serial_blas, __ATOMIC_RELAXED)) {
    /* OpenMP OpenBLAS's set_num_threads also sets OpenMP's thread count: restore it */
    int t = omp_get_max_threads();
    openblas_set_num_threads(1);
    omp_set_num_threads(t);
    __atomic_store_n(&serial_blas, 1, __ATOMIC_RELAXED);
  }
  if (omp_in_parallel()) {
    blas(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return C5_OK;
  }
  double t0 = c5k_cpu_gemm_stats.enabled ? omp_get_wtime() : 0;
  const long bs = C5K_GEMM_BLOCK;
  if (m >= n) {
    long nb = (m + bs - 1) / bs;
#pragma omp parallel for schedule(dynamic, 1)
    for (long i = 0; i < nb; i++) {
      long i0 = i * bs, mm = m - i0 < bs ? m - i0 : bs;
      blas(transa, transb, mm, n, k, alpha, transa ? A + i0 : A + i0 * lda, lda, B, ldb, beta, C + i0 * ldc, ldc);
    }
  } else {
    long nb = (n + bs - 1) / bs;
#pragma omp parallel for schedule(dynamic, 1)
    for (long j = 0; j < nb; j++) {
      long j0 = j * bs, nn = n - j0 < bs ? n - j0 : bs;
      blas(transa, transb, m, nn, k, alpha, A, lda, transb ? B + j0 * ldb : B + j0, ldb, beta, C + j0, ldc);
    }
  }
  if (c5k_cpu_gemm_stats.enabled) {
    c5k_cpu_gemm_stats.seconds += omp_get_wtime() - t0;
    c5k_cpu_gemm_stats.flops += 2.0 * m * n * k;
    c5k_cpu_gemm_stats.calls++;
  }
  return C5_OK;
}
