/* gemm.c - matrix products on the CPU through CBLAS: the working GEMM and
   the parameter-gradient GEMM that adds its product to a double accumulator. */
#include <cblas.h>
#include <omp.h>
#include "cpu.h"

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

c5_status c5k_gemm_acc_cpu(c5k_ctx *ctx, int transa, int transb, long m, long n, long k, double alpha,
                           const c5_real *A, long lda, const c5_real *B, long ldb, c5_real *prod, double *acc)
{
#if C5_USE_DOUBLE
  /* the working precision is double: the BLAS adds to the accumulator itself */
  (void)prod;
  return c5k_gemm_cpu(ctx, transa, transb, m, n, k, alpha, A, lda, B, ldb, 1.0, acc, n);
#else
  /* beta = 0: the product does not depend on the accumulator's value, and is
     rounded once (a beta = 1 GEMM in single precision would round the running
     sum at every k block, differently for each BLAS kernel) */
  c5_status st = c5k_gemm_cpu(ctx, transa, transb, m, n, k, alpha, A, lda, B, ldb, 0.0, prod, n);
  if (st != C5_OK) return st;
  const long mn = m * n;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < mn; i++) acc[i] += prod[i];
  return C5_OK;
#endif
}
