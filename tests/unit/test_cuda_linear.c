/* test_cuda_linear.c - linear (torch's Linear, the bias in cuBLASLt's
   epilogue) on the CUDA backend against the CPU op on the same inputs,
   norm-wise: 1e-12 in the double build, 1e-5 in the single build's fp32
   mode; in the single build's bf16 mode (inputs rounded to bf16) 2e-2
   against the CPU's double path. Rows 1, 7 and 4096 with out x in 512x2048,
   2048x512, 256x512 and 3x5; without a bias, then with one on the same shape
   (the product without the epilogue is then in cuBLASLt's algorithm cache:
   the fused call must not take its algorithm). y starts as NaN (every
   element is written); each case runs twice and must repeat bit for bit,
   and in bf16 mode once more with x given in bf16 (kernels.h bf16_acts;
   x's bits rounded by t_bf16), which must give the same bits too, and
   with W held (kernels.h weights_bf16: its bf16 copy made once), the same
   bits again; forgotten and W negated, the product's bits negated. Each
   shape and bias once more with a residual res (kernels.h linear: cuBLASLt's
   C apart from its D, beta 1; the CPU op with res as reference, in bf16 mode
   res added to the double reference). One line per case. Exits 77 without
   a GPU. */
#include <string.h>
#include "cuda_util.h"
#include "kernels.h"
#include "backend.h"
#include "cuda/cuda.h"

static int check(c5_backend *gpu, long rows, long out, long in, int bias, int resid, c5_matmul mm, double tol)
{
  const long nx = rows * in, nw = out * in, ny = rows * out;
  c5_real *x = malloc(nx * sizeof *x), *W = malloc(nw * sizeof *W), *b = malloc(out * sizeof *b);
  c5_real *res = malloc(ny * sizeof *res);
  c5_real *want = malloc(ny * sizeof *want), *got[2] = { malloc(ny * sizeof *want), malloc(ny * sizeof *want) };
  double *x64 = malloc(nx * 8), *w64 = malloc(nw * 8), *ref = malloc(ny * 8), *g64 = malloc(ny * 8);
  void *dx = NULL, *dw = NULL, *db = NULL, *dy = NULL, *dres = NULL;
  unsigned long long seed = 3 + rows + 5 * out + 11 * in + 17 * bias + 64 * (int)mm;
  c5k_ctx cpu = { 0 };
  int ok = 0, same = 0, bf16x = 0, held = 0;
  double e = NAN;
  T_CHECK(x && W && b && res && want && got[0] && got[1] && x64 && w64 && ref && g64, "out of memory");
  for (long i = 0; i < nx; i++) x64[i] = x[i] = (c5_real)t_normal(&seed);
  for (long i = 0; i < nw; i++) w64[i] = W[i] = (c5_real)t_normal(&seed);
  for (long i = 0; i < out; i++) b[i] = (c5_real)t_normal(&seed);
  for (long i = 0; i < ny; i++) res[i] = (c5_real)t_normal(&seed);
  if (mm == C5_MATMUL_BF16) {
    /* the CPU's double path: bf16 rounding is the only error to measure */
    for (long r = 0; r < rows; r++)
      for (long j = 0; j < out; j++)
        ref[r * out + j] = (bias ? (double)b[j] : 0.0) + (resid ? (double)res[r * out + j] : 0.0);
    T_OK(c5k_cpu_ops.gemm_ex(&cpu, 0, 1, rows, out, in, 1.0, x64, C5_DTYPE_F64, in, 0, w64, C5_DTYPE_F64, in, 0, 1.0,
                             ref, C5_DTYPE_F64, out, 0, 1, C5_DTYPE_F64));
  } else {
    for (long i = 0; i < ny; i++) want[i] = (c5_real)NAN;
    T_OK(c5k_cpu_ops.linear(&cpu, rows, out, in, x, C5_DTYPE_REAL, W, bias ? b : NULL, resid ? res : NULL, want));
    t_to_double(want, ny, ref);
  }
  for (long i = 0; i < ny; i++) got[0][i] = (c5_real)NAN;
  T_CHECK((dx = t_dev_upload(gpu, x, nx * sizeof *x)) && (dw = t_dev_upload(gpu, W, nw * sizeof *W)) &&
          (db = t_dev_upload(gpu, b, out * sizeof *b)) && (dy = t_dev_upload(gpu, got[0], ny * sizeof *x)) &&
          (dres = t_dev_upload(gpu, res, ny * sizeof *res)), "device buffers");
  T_OK(c5_backend_set_matmul(gpu, mm));
  for (int rep = 0; rep < 2; rep++) {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    for (long i = 0; i < ny; i++) got[rep][i] = (c5_real)NAN;
    T_OK(c5_backend_memcpy(gpu, dy, got[rep], ny * sizeof *x));
    T_OK(c5k_cuda_ops.linear(&ctx, rows, out, in, dx, C5_DTYPE_REAL, dw, bias ? db : NULL, resid ? dres : NULL, dy));
    T_OK(c5_backend_memcpy(gpu, got[rep], dy, ny * sizeof *x));
  }
  same = !memcmp(got[0], got[1], ny * sizeof *x);
  if (mm == C5_MATMUL_BF16) {
    /* x given in bf16 (kernels.h bf16_acts: a norm's or GELU's bf16 output): the bits of x's own bf16 copy, so the
       same product, bit for bit */
    uint16_t *xb = malloc(nx * sizeof *xb);
    T_CHECK(xb != NULL, "out of memory");
    for (long i = 0; i < nx; i++) xb[i] = t_bf16((float)x[i]);
    void *dxb = t_dev_upload(gpu, xb, nx * sizeof *xb);
    free(xb);
    T_CHECK(dxb != NULL, "device buffers");
    for (long i = 0; i < ny; i++) got[1][i] = (c5_real)NAN;
    c5_status st = c5_backend_memcpy(gpu, dy, got[1], ny * sizeof *x);
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    if (st == C5_OK)
      st = c5k_cuda_ops.linear(&ctx, rows, out, in, dxb, C5_DTYPE_BF16, dw, bias ? db : NULL, resid ? dres : NULL, dy);
    if (st == C5_OK) st = c5_backend_memcpy(gpu, got[1], dy, ny * sizeof *x);
    c5_backend_free(gpu, dxb);
    T_OK(st);
    ctx = c5_backend_ctx(gpu, NULL, 0);
    bf16x = !memcmp(got[0], got[1], ny * sizeof *x);
    same &= bf16x;
    /* W held (kernels.h weights_bf16): read from the one copy, the same bits; forgotten, W's new values are read
       (-W: the product's bits negated, checked where no bias or residual is added) */
    for (int neg = 0; neg < 2; neg++) {
      for (long i = 0; i < ny; i++) got[1][i] = (c5_real)NAN;
      T_OK(c5_backend_memcpy(gpu, dy, got[1], ny * sizeof *x));
      T_OK(c5k_cuda_ops.weights_bf16(&ctx, neg ? NULL : (const c5_real *)dw, neg ? 0 : nw));
      if (neg) {
        for (long i = 0; i < nw; i++) W[i] = -W[i];
        T_OK(c5_backend_memcpy(gpu, dw, W, nw * sizeof *W));
      }
      T_OK(c5k_cuda_ops.linear(&ctx, rows, out, in, dx, C5_DTYPE_REAL, dw, bias ? db : NULL, resid ? dres : NULL, dy));
      T_OK(c5k_cuda_ops.weights_bf16(&ctx, NULL, 0));
      T_OK(c5_backend_memcpy(gpu, got[1], dy, ny * sizeof *x));
      if (!neg) held = !memcmp(got[0], got[1], ny * sizeof *x);
      else if (!bias && !resid)
        for (long i = 0; i < ny; i++) held &= got[1][i] == -got[0][i];
    }
    same &= held;
  }
  t_to_double(got[0], ny, g64);
  e = t_normwise(g64, ref, ny);
  ok = e <= tol && same;
  /* f32 inputs rounded to bf16 (8 significant bits) err near 1e-3 over hundreds of terms: the mode took effect */
  if (mm == C5_MATMUL_BF16 && in >= 512 && !(e > 1e-4)) ok = 0;
fail:
  printf("linear rows %ld out %ld in %ld bias %s res %s matmul %s: %.3e (tol %.0e), repeat%s %s: %s\n", rows, out,
         in, bias ? "yes" : "NULL", resid ? "yes" : "NULL", c5_matmul_name(mm), e, tol, mm == C5_MATMUL_BF16 ? " and bf16 x" : "",
         same ? "same bits" : mm != C5_MATMUL_BF16 ? "DIFFERENT" : !bf16x ? "DIFFERENT (bf16 x)" :
         !held ? "DIFFERENT (held W, or -W after)" : "DIFFERENT", ok ? "PASS" : "FAIL");
  c5_backend_set_matmul(gpu, C5_MATMUL_FP32);
  c5_backend_free(gpu, dx); c5_backend_free(gpu, dw); c5_backend_free(gpu, db); c5_backend_free(gpu, dy);
  c5_backend_free(gpu, dres);
  free(x); free(W); free(b); free(res); free(want); free(got[0]); free(got[1]); free(x64); free(w64); free(ref); free(g64);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_backend *gpu = t_cuda_backend_or_skip();
  const long rows[] = { 1, 7, 4096 };
  const long shape[][2] = { { 512, 2048 }, { 2048, 512 }, { 256, 512 }, { 3, 5 } };
  int ok = 1;
  for (int r = 0; r < 3; r++)
    for (int s = 0; s < 4; s++)
      for (int bias = 0; bias < 2; bias++)
        for (int resid = 0; resid < 2; resid++) {
#if C5_USE_DOUBLE
          ok &= check(gpu, rows[r], shape[s][0], shape[s][1], bias, resid, C5_MATMUL_FP32, 1e-12);
#else
          ok &= check(gpu, rows[r], shape[s][0], shape[s][1], bias, resid, C5_MATMUL_FP32, 1e-5);
          ok &= check(gpu, rows[r], shape[s][0], shape[s][1], bias, resid, C5_MATMUL_BF16, 2e-2);
#endif
        }
  printf("linear: %s\n", ok ? "PASS" : "FAIL");
  c5_backend_destroy(&gpu);
  MPI_Finalize();
  return ok ? 0 : 1;
}
