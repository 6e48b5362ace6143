/* gemm.c - matrix products on the CPU through CBLAS: the working GEMM and
   the parameter-gradient GEMM that adds its product to a double accumulator. */
#include <cblas.h>
#include <omp.h>
#include "cpu.h"

c5k_gemm_stats c5k_cpu_gemm_stats;

/* One serial BLAS call on row-major operands of type t (F64 or F32). */
static void blas(c5_dtype t, int ta, int tb, long m, long n, long k, double alpha, const void *A, long lda,
                 const void *B, long ldb, double beta, void *C, long ldc)
{
  if (t == C5_DTYPE_F64)
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
  else
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, (float)alpha, A, (int)lda, B, (int)ldb, (float)beta, C, (int)ldc);
}

/* C[m,n] = alpha op(A) op(B) + beta C for one batch item, row-major, type t.
   The BLAS runs on one thread (set once): C is cut into fixed blocks of
   C5K_GEMM_BLOCK rows (or columns, when m is the smaller side) run over the
   OpenMP threads. Every block's sums then have the same order whatever
   OMP_NUM_THREADS is (OpenBLAS's own threaded driver orders a long k
   differently from its serial one), and there is one thread pool, OpenMP's.
   Called inside a parallel region, it is one serial BLAS call. */
static void gemm_blocked(c5_dtype t, int transa, int transb, long m, long n, long k, double alpha, const char *A,
                         long lda, const char *B, long ldb, double beta, char *C, long ldc)
{
  const size_t es = c5_dtype_size(t);
  if (omp_in_parallel()) {
    blas(t, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const long bs = C5K_GEMM_BLOCK;
  if (m >= n) {
    long nb = (m + bs - 1) / bs;
#pragma omp parallel for schedule(dynamic, 1)
    for (long i = 0; i < nb; i++) {
      long i0 = i * bs, mm = m - i0 < bs ? m - i0 : bs;
      blas(t, transa, transb, mm, n, k, alpha, A + (transa ? i0 : i0 * lda) * es, lda, B, ldb, beta,
           C + i0 * ldc * es, ldc);
    }
  } else {
    long nb = (n + bs - 1) / bs;
#pragma omp parallel for schedule(dynamic, 1)
    for (long j = 0; j < nb; j++) {
      long j0 = j * bs, nn = n - j0 < bs ? n - j0 : bs;
      blas(t, transa, transb, m, nn, k, alpha, A, lda, B + (transb ? j0 * ldb : j0) * es, ldb, beta,
           C + j0 * es, ldc);
    }
  }
}

c5_status c5k_gemm_ex_cpu(c5k_ctx *ctx, int transa, int transb, long m, long n, long k, double alpha,
                          const void *A, c5_dtype atype, long lda, long stride_a, const void *B, c5_dtype btype,
                          long ldb, long stride_b, double beta, void *C, c5_dtype ctype, long ldc, long stride_c,
                          long batch, c5_dtype compute)
{
  static int serial_blas;
  /* the CPU computes in the operands' own type: F64 or F32 throughout */
  if (!(atype == btype && btype == ctype && ctype == compute && (compute == C5_DTYPE_F64 || compute == C5_DTYPE_F32)))
    return C5K_ERR(C5_ERR_NOTIMPL, "cpu gemm_ex: A %s, B %s, C %s, compute %s (the CPU runs f64 or f32 throughout)",
                   c5_dtype_name(atype), c5_dtype_name(btype), c5_dtype_name(ctype), c5_dtype_name(compute));
  if (m == 0 || n == 0 || batch == 0) return C5_OK;
  if (!__atomic_load_n(&serial_blas, __ATOMIC_RELAXED)) {
    /* OpenMP OpenBLAS's set_num_threads also sets OpenMP's thread count: restore it */
    int t = omp_get_max_threads();
    openblas_set_num_threads(1);
    omp_set_num_threads(t);
    __atomic_store_n(&serial_blas, 1, __ATOMIC_RELAXED);
  }
  int timed = c5k_cpu_gemm_stats.enabled && !omp_in_parallel();
  double t0 = timed ? omp_get_wtime() : 0;
  const size_t es = c5_dtype_size(compute);
  for (long b = 0; b < batch; b++)
    gemm_blocked(compute, transa, transb, m, n, k, alpha, (const char *)A + b * stride_a * es, lda,
                 (const char *)B + b * stride_b * es, ldb, beta, (char *)C + b * stride_c * es, ldc);
  if (timed) {
    c5k_cpu_gemm_stats.seconds += omp_get_wtime() - t0;
    c5k_cpu_gemm_stats.flops += 2.0 * m * n * k * batch;
    c5k_cpu_gemm_stats.calls++;
  }
  return C5_OK;
}

c5_status c5k_gemm_cpu(c5k_ctx *ctx, int transa, int transb, long m, long n, long k, double alpha,
                       const c5_real *A, long lda, const c5_real *B, long ldb, double beta, c5_real *C, long ldc)
{
  return c5k_gemm_ex_cpu(ctx, transa, transb, m, n, k, alpha, A, C5_DTYPE_REAL, lda, 0, B, C5_DTYPE_REAL, ldb, 0,
                         beta, C, C5_DTYPE_REAL, ldc, 0, 1, C5_DTYPE_REAL);
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

c5_status c5k_gemm_acc_ex_cpu(c5k_ctx *ctx, int transa, int transb, long m, long n, long k, double alpha,
                              const void *A, c5_dtype atype, long lda, const void *B, c5_dtype btype, long ldb,
                              c5_real *prod, double *acc)
{
  if (atype != C5_DTYPE_REAL || btype != C5_DTYPE_REAL)
    return C5K_ERR(C5_ERR_NOTIMPL, "gemm_acc_ex: the CPU takes %s inputs, not A %s, B %s", c5_dtype_name(C5_DTYPE_REAL),
                   c5_dtype_name(atype), c5_dtype_name(btype));
  return c5k_gemm_acc_cpu(ctx, transa, transb, m, n, k, alpha, A, lda, B, ldb, prod, acc);
}

int c5k_bf16_acts_cpu(c5k_ctx *ctx)
{
  (void)ctx;
  return 0;   /* the CPU's products take c5_real throughout */
}

c5_status c5k_weights_bf16_cpu(c5k_ctx *ctx, const c5_real *w, long n)
{
  (void)ctx; (void)w; (void)n;
  return C5_OK;   /* no bf16 products: nothing to keep */
}

/* The CPU has no epilogue to fuse into: the bias rows, then the product added to them, exactly the two calls the
   layers made before the op existed (their bits, golden files included, stay as they were). With a residual the
   rows are res + b, then the product: the sum of the three in another order than a later axpy of res. */
c5_status c5k_linear_cpu(c5k_ctx *ctx, long rows, long out, long in, const void *x, c5_dtype xtype, const c5_real *W,
                         const c5_real *b, const c5_real *res, c5_real *y)
{
  if (xtype != C5_DTYPE_REAL)
    return C5K_ERR(C5_ERR_NOTIMPL, "linear: the CPU takes %s inputs, not %s", c5_dtype_name(C5_DTYPE_REAL),
                   c5_dtype_name(xtype));
  if (res) {
#pragma omp parallel for schedule(static) if (rows * out > 65536)
    for (long r = 0; r < rows; r++)
      for (long j = 0; j < out; j++) y[r * out + j] = b ? res[r * out + j] + b[j] : res[r * out + j];
  } else if (b) {
    c5_status st = c5k_broadcast_row_cpu(ctx, rows, out, b, y);
    if (st != C5_OK) return st;
  }
  return c5k_gemm_cpu(ctx, 0, 1, rows, out, in, 1.0, x, in, W, in, b || res ? 1.0 : 0.0, y, out);
}
