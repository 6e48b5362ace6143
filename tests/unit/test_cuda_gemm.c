/* test_cuda_gemm.c - gemm_ex on the CUDA backend (cuBLASLt) against the CPU
   double path (c5k_cpu_ops.gemm_ex in f64) on the same inputs, norm-wise:
   fp32 within 1e-4, TF32 within 5e-3, f32 inputs rounded to bf16 (matmul
   bf16) and bf16 inputs (f32 and bf16 output) within 2e-2, f64 within 1e-12; every transpose, strided batch 3 with
   padded leading dimensions, beta 0 and beta != 0 (C poisoned with NaN
   where beta is 0: every element must be written). A type mix the GPU does
   not take is refused by name. Exits 77 without a GPU. */
#include <string.h>
#include <stddef.h>
#include <stdint.h>
#include "cuda_util.h"
#include "kernels.h"
#include "backend.h"
#include "cuda/cuda.h"

static uint16_t to_bf16(float f)
{
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);   /* round to nearest even */
  return (uint16_t)(u >> 16);
}
static double from_bf16(uint16_t h)
{
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Host buffer of count elements of type t from doubles x. */
static void *pack(const double *x, long count, c5_dtype t)
{
  void *p = malloc(count * c5_dtype_size(t));
  for (long i = 0; i < count; i++) {
    if (t == C5_DTYPE_F64) ((double *)p)[i] = x[i];
    else if (t == C5_DTYPE_F32) ((float *)p)[i] = (float)x[i];
    else ((uint16_t *)p)[i] = to_bf16((float)x[i]);
  }
  return p;
}
static void unpack(const void *p, long count, c5_dtype t, double *x)
{
  for (long i = 0; i < count; i++)
    x[i] = t == C5_DTYPE_F64 ? ((const double *)p)[i] : t == C5_DTYPE_F32 ? ((const float *)p)[i] : from_bf16(((const uint16_t *)p)[i]);
}

static int check(c5_backend *gpu, c5_dtype in, c5_dtype out, c5_matmul mm, int ta, int tb, double beta, double tol)
{
  const long m = 200, n = 72, k = 333, batch = 3;
  const long lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 5;
  const long sa = (ta ? k : m) * lda + 8, sb = (tb ? n : k) * ldb + 8, sc = m * ldc + 8;
  const long na = batch * sa, nb = batch * sb, nc = batch * sc;
  double *A = malloc(na * 8), *B = malloc(nb * 8), *C = malloc(nc * 8), *G = malloc(nc * 8);
  double *want = malloc(batch * m * n * 8), *got = malloc(batch * m * n * 8);
  void *hA = NULL, *hB = NULL, *hC = NULL, *dA = NULL, *dB = NULL, *dC = NULL;
  unsigned long long seed = 5 + ta + 2 * tb + 4 * in + 16 * out + 64 * (int)mm;
  int ok = 0;
  c5k_ctx cpu = { 0 };
  for (long i = 0; i < na; i++) A[i] = t_normal(&seed);
  for (long i = 0; i < nb; i++) B[i] = t_normal(&seed);
  for (long i = 0; i < nc; i++) C[i] = beta != 0 ? t_normal(&seed) : NAN;
  hA = pack(A, na, in); hB = pack(B, nb, in); hC = pack(C, nc, out);
  if (beta == 0) for (long i = 0; i < nc; i++) C[i] = 0;   /* the oracle's C: beta 0 ignores it */
  memcpy(G, C, nc * 8);
  T_OK(c5k_cpu_ops.gemm_ex(&cpu, ta, tb, m, n, k, 0.75, A, C5_DTYPE_F64, lda, sa, B, C5_DTYPE_F64, ldb, sb, beta, G,
                           C5_DTYPE_F64, ldc, sc, batch, C5_DTYPE_F64));
  T_CHECK((dA = t_dev_upload(gpu, hA, na * c5_dtype_size(in))) && (dB = t_dev_upload(gpu, hB, nb * c5_dtype_size(in))) &&
          (dC = t_dev_upload(gpu, hC, nc * c5_dtype_size(out))), "device buffers");
  T_OK(c5_backend_set_matmul(gpu, mm));
  {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    T_OK(c5k_cuda_ops.gemm_ex(&ctx, ta, tb, m, n, k, 0.75, dA, in, lda, sa, dB, in, ldb, sb, beta, dC, out, ldc, sc,
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
  printf("gemm %s -> %s matmul %s ta %d tb %d beta %g: %.3e (tol %.0e)\n", c5_dtype_name(in), c5_dtype_name(out),
         c5_matmul_name(mm), ta, tb, beta, e, tol);
  T_CHECK(e <= tol, "norm-wise error %.3e > %.0e", e, tol);
  /* f32 inputs rounded to bf16 (8 significant bits) come out near bf16 inputs' 2e-3, not TF32's (11 bits)
     3e-4: the mode took effect */
  T_CHECK(!(in == C5_DTYPE_F32 && mm == C5_MATMUL_BF16) || e > 1e-3, "matmul bf16: error %.3e, as exact as TF32", e);
  ok = 1;
fail:
  c5_backend_set_matmul(gpu, C5_MATMUL_FP32);
  c5_backend_free(gpu, dA); c5_backend_free(gpu, dB); c5_backend_free(gpu, dC);
  free(hA); free(hB); free(hC); free(A); free(B); free(C); free(G); free(want); free(got);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_backend *gpu = t_cuda_backend_or_skip();
  int ok = 1;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int bz = 0; bz < 2; bz++) {
        double beta = bz ? -0.5 : 0.0;
        ok &= check(gpu, C5_DTYPE_F32, C5_DTYPE_F32, C5_MATMUL_FP32, ta, tb, beta, 1e-4);
        ok &= check(gpu, C5_DTYPE_F32, C5_DTYPE_F32, C5_MATMUL_TF32, ta, tb, beta, 5e-3);
        ok &= check(gpu, C5_DTYPE_F32, C5_DTYPE_F32, C5_MATMUL_BF16, ta, tb, beta, 2e-2);
        ok &= check(gpu, C5_DTYPE_BF16, C5_DTYPE_F32, C5_MATMUL_FP32, ta, tb, beta, 2e-2);
        ok &= check(gpu, C5_DTYPE_BF16, C5_DTYPE_BF16, C5_MATMUL_FP32, ta, tb, beta, 2e-2);
        ok &= check(gpu, C5_DTYPE_F64, C5_DTYPE_F64, C5_MATMUL_FP32, ta, tb, beta, 1e-12);
      }
  {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    float x = 0;
    T_FAILS(c5k_cuda_ops.gemm_ex(&ctx, 0, 0, 1, 1, 1, 1, &x, C5_DTYPE_F64, 1, 0, &x, C5_DTYPE_F32, 1, 0, 0, &x,
                                 C5_DTYPE_F32, 1, 0, 1, C5_DTYPE_F32), C5_ERR_NOTIMPL, "gemm_ex: A f64, B f32");
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
