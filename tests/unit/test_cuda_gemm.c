/* test_cuda_gemm.c - gemm_ex on the CUDA backend (cuBLASLt) against the CPU
   double path (c5k_cpu_ops.gemm_ex in f64) on the same inputs, norm-wise:
   fp32 within 1e-4, TF32 within 5e-3, f32 inputs rounded to bf16 (matmul
   bf16) and bf16 inputs (f32 and bf16 output) within 2e-2, f64 within 1e-12, an f32 rank-1 update (k = 1) within
   1e-6 in every mode (it is exact f32); every transpose, strided batch 3 with
   padded leading dimensions, beta 0 and beta != 0 (C poisoned with NaN
   where beta is 0: every element must be written). In bf16 mode one
   operand may be bf16 already and the other f32 (a module's activations
   kept in bf16), for gemm_ex and gemm_acc_ex. A type mix the GPU does not
   take is refused by name. Exits 77 without a GPU. */
#include <string.h>
#include <stddef.h>
#include <stdint.h>
#include "cuda_util.h"
#include "kernels.h"
#include "backend.h"
#include "cuda/cuda.h"

/* Host buffer of count elements of type t from doubles x. */
static void *pack(const double *x, long count, c5_dtype t)
{
  void *p = malloc(count * c5_dtype_size(t));
  for (long i = 0; i < count; i++) {
    if (t == C5_DTYPE_F64) ((double *)p)[i] = x[i];
    else if (t == C5_DTYPE_F32) ((float *)p)[i] = (float)x[i];
    else ((uint16_t *)p)[i] = t_bf16((float)x[i]);
  }
  return p;
}
static void unpack(const void *p, long count, c5_dtype t, double *x)
{
  for (long i = 0; i < count; i++)
    x[i] = t == C5_DTYPE_F64 ? ((const double *)p)[i] : t == C5_DTYPE_F32 ? ((const float *)p)[i] : t_unbf16(((const uint16_t *)p)[i]);
}

static int check(c5_backend *gpu, c5_dtype in, c5_dtype bin, c5_dtype out, c5_matmul mm, int ta, int tb, double beta,
                 double tol, long k, long batch)
{
  const long m = 200, n = 72;
  /* a rank-1 update (k = 1) takes gemm.cu's float4 kernel where op(B)'s row is contiguous (tb 0) and C's rows
     are whole float4s (ldc 80), its tile kernel otherwise (ldc 77): the tb loop runs both */
  const long lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + (k == 1 && !tb ? 8 : 5);
  const long sa = (ta ? k : m) * lda + 8, sb = (tb ? n : k) * ldb + 8, sc = m * ldc + 8;
  const long na = batch * sa, nb = batch * sb, nc = batch * sc;
  double *A = malloc(na * 8), *B = malloc(nb * 8), *C = malloc(nc * 8), *G = malloc(nc * 8);
  double *want = malloc(batch * m * n * 8), *got = malloc(batch * m * n * 8);
  void *hA = NULL, *hB = NULL, *hC = NULL, *dA = NULL, *dB = NULL, *dC = NULL;
  unsigned long long seed = 5 + ta + 2 * tb + 4 * in + 16 * out + 64 * (int)mm + 256 * bin + 4096 * k;
  int ok = 0;
  c5k_ctx cpu = { 0 };
  for (long i = 0; i < na; i++) A[i] = t_normal(&seed);
  for (long i = 0; i < nb; i++) B[i] = t_normal(&seed);
  for (long i = 0; i < nc; i++) C[i] = beta != 0 ? t_normal(&seed) : NAN;
  hA = pack(A, na, in); hB = pack(B, nb, bin); hC = pack(C, nc, out);
  if (beta == 0) for (long i = 0; i < nc; i++) C[i] = 0;   /* the oracle's C: beta 0 ignores it */
  memcpy(G, C, nc * 8);
  T_OK(c5k_cpu_ops.gemm_ex(&cpu, ta, tb, m, n, k, 0.75, A, C5_DTYPE_F64, lda, sa, B, C5_DTYPE_F64, ldb, sb, beta, G,
                           C5_DTYPE_F64, ldc, sc, batch, C5_DTYPE_F64));
  T_CHECK((dA = t_dev_upload(gpu, hA, na * c5_dtype_size(in))) && (dB = t_dev_upload(gpu, hB, nb * c5_dtype_size(bin))) &&
          (dC = t_dev_upload(gpu, hC, nc * c5_dtype_size(out))), "device buffers");
  T_OK(c5_backend_set_matmul(gpu, mm));
  {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    T_OK(c5k_cuda_ops.gemm_ex(&ctx, ta, tb, m, n, k, 0.75, dA, in, lda, sa, dB, bin, ldb, sb, beta, dC, out, ldc, sc,
                              batch, in == C5_DTYPE_F64 ? C5_DTYPE_F64 : C5_DTYPE_F32));
  }
  T_OK(c5_backend_memcpy(gpu, hC, dC, nc * c5_dtype_size(out)));
  unpack(hC, nc, out, C);
  for (long b = 0; b < batch; b++)
    for (long i = 0; i < m; i++)
      for (long j = 0; j < n; j++) {
        want[(b * m + i) * n + j] = G[b * sc + i * ldc + j];
        got[(b * m + i) * n + j] = C[b * sc + i * ldc + j];
      }
  double e = t_normwise(got, want, batch * m * n);
  printf("gemm %s x %s -> %s matmul %s ta %d tb %d beta %g k %ld batch %ld: %.3e (tol %.0e)\n", c5_dtype_name(in),
         c5_dtype_name(bin), c5_dtype_name(out), c5_matmul_name(mm), ta, tb, beta, k, batch, e, tol);
  T_CHECK(e <= tol, "norm-wise error %.3e > %.0e", e, tol);
  /* f32 inputs rounded to bf16 (8 significant bits) come out near bf16 inputs' 2e-3, not TF32's (11 bits)
     3e-4: the mode took effect */
  T_CHECK(!((in == C5_DTYPE_F32 || bin == C5_DTYPE_F32) && mm == C5_MATMUL_BF16) || k == 1 || e > 1e-3,
          "matmul bf16: error %.3e, as exact as TF32", e);
  ok = 1;
fail:
  c5_backend_set_matmul(gpu, C5_MATMUL_FP32);
  c5_backend_free(gpu, dA); c5_backend_free(gpu, dB); c5_backend_free(gpu, dC);
  free(hA); free(hB); free(hC); free(A); free(B); free(C); free(G); free(want); free(got);
  return ok;
}

#if !C5_USE_DOUBLE
/* gemm_acc_ex, bf16 mode: acc += A^T B with A bf16 [k, m] (an activation kept in bf16) and B f32 [k, n], against
   the CPU's double product of the same (bf16-rounded) A, added to the accumulator's start values. */
static int check_acc(c5_backend *gpu)
{
  const long m = 96, n = 40, k = 5000;
  double *A = malloc(k * m * 8), *B = malloc(k * n * 8), *acc0 = malloc(m * n * 8), *G = malloc(m * n * 8),
         *got = malloc(m * n * 8);
  void *hA = NULL, *hB = NULL, *dA = NULL, *dB = NULL, *dacc = NULL, *dprod = NULL;
  unsigned long long seed = 99;
  int ok = 0;
  c5k_ctx cpu = { 0 };
  for (long i = 0; i < k * m; i++) A[i] = t_normal(&seed);
  for (long i = 0; i < k * n; i++) B[i] = t_normal(&seed);
  for (long i = 0; i < m * n; i++) acc0[i] = G[i] = t_normal(&seed);
  hA = pack(A, k * m, C5_DTYPE_BF16);
  hB = pack(B, k * n, C5_DTYPE_F32);
  unpack(hA, k * m, C5_DTYPE_BF16, A);   /* the oracle sees the rounded A */
  T_OK(c5k_cpu_ops.gemm_ex(&cpu, 1, 0, m, n, k, 1.0, A, C5_DTYPE_F64, m, 0, B, C5_DTYPE_F64, n, 0, 1.0, G,
                           C5_DTYPE_F64, n, 0, 1, C5_DTYPE_F64));
  T_CHECK((dA = t_dev_upload(gpu, hA, k * m * 2)) && (dB = t_dev_upload(gpu, hB, k * n * 4)) &&
          (dacc = t_dev_upload(gpu, acc0, m * n * 8)) && (dprod = t_dev_upload(gpu, acc0, m * n * sizeof(c5_real))),
          "device buffers");
  T_OK(c5_backend_set_matmul(gpu, C5_MATMUL_BF16));
  {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    T_OK(c5k_cuda_ops.gemm_acc_ex(&ctx, 1, 0, m, n, k, 1.0, dA, C5_DTYPE_BF16, m, dB, C5_DTYPE_F32, n, dprod, dacc));
  }
  T_OK(c5_backend_memcpy(gpu, got, dacc, m * n * 8));
  for (long i = 0; i < m * n; i++) { got[i] -= acc0[i]; G[i] -= acc0[i]; }
  double e = t_normwise(got, G, m * n);
  printf("gemm_acc_ex bf16 x f32 matmul bf16 m %ld n %ld k %ld: %.3e (tol 2e-02)\n", m, n, k, e);
  T_CHECK(e <= 2e-2 && e > 0, "gemm_acc_ex: norm-wise error %.3e", e);
  ok = 1;
fail:
  c5_backend_set_matmul(gpu, C5_MATMUL_FP32);
  c5_backend_free(gpu, dA); c5_backend_free(gpu, dB); c5_backend_free(gpu, dacc); c5_backend_free(gpu, dprod);
  free(hA); free(hB); free(A); free(B); free(acc0); free(G); free(got);
  return ok;
}
#endif

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_backend *gpu = t_cuda_backend_or_skip();
  int ok = 1;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int bz = 0; bz < 2; bz++) {
        double beta = bz ? -0.5 : 0.0;
        const c5_dtype f32 = C5_DTYPE_F32, b16 = C5_DTYPE_BF16, f64 = C5_DTYPE_F64;
        ok &= check(gpu, f32, f32, f32, C5_MATMUL_FP32, ta, tb, beta, 1e-4, 333, 3);
        ok &= check(gpu, f32, f32, f32, C5_MATMUL_TF32, ta, tb, beta, 5e-3, 333, 3);
        ok &= check(gpu, f32, f32, f32, C5_MATMUL_BF16, ta, tb, beta, 2e-2, 333, 3);
        ok &= check(gpu, b16, f32, f32, C5_MATMUL_BF16, ta, tb, beta, 2e-2, 333, 3);
        ok &= check(gpu, f32, b16, b16, C5_MATMUL_BF16, ta, tb, beta, 2e-2, 333, 3);
        ok &= check(gpu, b16, b16, f32, C5_MATMUL_FP32, ta, tb, beta, 2e-2, 333, 3);
        ok &= check(gpu, b16, b16, b16, C5_MATMUL_FP32, ta, tb, beta, 2e-2, 333, 3);
        ok &= check(gpu, f64, f64, f64, C5_MATMUL_FP32, ta, tb, beta, 1e-12, 333, 3);
        /* a rank-1 update of f32 (the routers' dx += g^T routing_token): exact f32 in every mode */
        ok &= check(gpu, f32, f32, f32, C5_MATMUL_FP32, ta, tb, beta, 1e-6, 1, 1);
        ok &= check(gpu, f32, f32, f32, C5_MATMUL_BF16, ta, tb, beta, 1e-6, 1, 1);
      }
#if !C5_USE_DOUBLE
  ok &= check_acc(gpu);   /* the double build's accumulators take f64 products only */
#endif
  {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    float x = 0;
    T_FAILS(c5k_cuda_ops.gemm_ex(&ctx, 0, 0, 1, 1, 1, 1, &x, C5_DTYPE_F64, 1, 0, &x, C5_DTYPE_F32, 1, 0, 0, &x,
                                 C5_DTYPE_F32, 1, 0, 1, C5_DTYPE_F32), C5_ERR_NOTIMPL, "gemm_ex: A f64, B f32");
    /* outside bf16 mode a bf16 operand meets only another bf16 one */
    T_FAILS(c5k_cuda_ops.gemm_ex(&ctx, 0, 0, 1, 1, 1, 1, &x, C5_DTYPE_BF16, 1, 0, &x, C5_DTYPE_F32, 1, 0, 0, &x,
                                 C5_DTYPE_F32, 1, 0, 1, C5_DTYPE_F32), C5_ERR_NOTIMPL, "gemm_ex: A bf16, B f32");
    /* the table is complete: every op after the name is on the GPU (lib/ would refuse a NULL one by name) */
    typedef void (*op_fn)(void);
    int missing = 0;
    for (size_t at = offsetof(c5k_ops, name) + sizeof(const char *); at + sizeof(op_fn) <= sizeof(c5k_ops);
         at += sizeof(op_fn)) {
      op_fn f;
      memcpy(&f, (const char *)&c5k_cuda_ops + at, sizeof f);
      if (!f) { printf("c5k_cuda_ops: the op at byte %zu of the table is NULL\n", at); missing++; }
    }
    T_CHECK(missing == 0, "every op of the table has a CUDA version");
  }
  goto done;
fail:
  ok = 0;
done:
  c5_backend_destroy(&gpu);
  MPI_Finalize();
  return ok ? 0 : 1;
}
