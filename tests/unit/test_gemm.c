/* test_gemm.c - the typed, strided-batched GEMM of the kernel interface
   (gemm_ex) against a float64 loop: both CPU types, every transpose, batch 3
   with padded leading dimensions and strides, beta 0 and beta != 0; a
   mixed-type call is refused by name; gemm (c5_real) equals gemm_ex. The
   CPU takes no bf16 activations: bf16_acts says 0, linear, gemm_acc_ex, the
   norms, GELU and convert refuse bf16 by name (convert to c5_real copies).
   The residuals (kernels.h res): linear's is res + b rows then the gemm, bit
   for bit, and the unfused linear then axpy to rounding (the same sum in
   another order); the norms' backward with res = dx (in place) give the bits
   of the backward without it then an axpy of res. */
#include <string.h>
#include "harness.h"
#include "kernels.h"

static double get(const void *p, c5_dtype t, long i) { return t == C5_DTYPE_F64 ? ((const double *)p)[i] : ((const float *)p)[i]; }
static void put(void *p, c5_dtype t, long i, double v)
{
  if (t == C5_DTYPE_F64) ((double *)p)[i] = v;
  else ((float *)p)[i] = (float)v;
}

static int check(c5_dtype t, int ta, int tb, double beta)
{
  const c5k_ops *ops = &c5k_cpu_ops;
  c5k_ctx kc = { 0 };
  const long m = 70, n = 9, k = 33, batch = 3;   /* m > one 64-row block */
  const long lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 1, ldc = n + 3;
  const long sa = (ta ? k : m) * lda + 5, sb = (tb ? n : k) * ldb + 7, sc = m * ldc + 1;
  const size_t es = c5_dtype_size(t);
  void *A = calloc((size_t)(batch * sa), es), *B = calloc((size_t)(batch * sb), es), *C = calloc((size_t)(batch * sc), es);
  double *want = calloc((size_t)(batch * sc), sizeof *want);
  unsigned long long seed = 7;
  int ok = 0;
  T_CHECK(A && B && C && want, "out of memory");
  for (long i = 0; i < batch * sa; i++) put(A, t, i, t_normal(&seed));
  for (long i = 0; i < batch * sb; i++) put(B, t, i, t_normal(&seed));
  for (long i = 0; i < batch * sc; i++) { put(C, t, i, t_normal(&seed)); want[i] = get(C, t, i); }
  for (long b = 0; b < batch; b++)
    for (long i = 0; i < m; i++)
      for (long j = 0; j < n; j++) {
        double s = 0;
        for (long l = 0; l < k; l++)
          s += get(A, t, b * sa + (ta ? l * lda + i : i * lda + l)) * get(B, t, b * sb + (tb ? j * ldb + l : l * ldb + j));
        want[b * sc + i * ldc + j] = 0.5 * s + beta * want[b * sc + i * ldc + j];
      }
  T_OK(ops->gemm_ex(&kc, ta, tb, m, n, k, 0.5, A, t, lda, sa, B, t, ldb, sb, beta, C, t, ldc, sc, batch, t));
  const double tol = t == C5_DTYPE_F64 ? 1e-13 : 1e-5;
  for (long b = 0; b < batch; b++)
    for (long i = 0; i < m; i++)
      for (long j = 0; j < n; j++) {
        long e = b * sc + i * ldc + j;
        T_CHECK(fabs(get(C, t, e) - want[e]) <= tol * (fabs(want[e]) + 1), "%s ta %d tb %d beta %g: C[%ld][%ld][%ld] = %.17g, want %.17g",
                c5_dtype_name(t), ta, tb, beta, b, i, j, get(C, t, e), want[e]);
      }
  ok = 1;
fail:
  free(A); free(B); free(C); free(want);
  return ok;
}

/* linear is broadcast_row then gemm with beta 1 (gemm with beta 0 without a bias) on the CPU, bit for bit: the
   layers' bits did not change when they moved to it. With a residual: res + b rows then the gemm with beta 1, bit
   for bit, and linear without it then an axpy of res to rounding. y starts as NaN: every element is written. */
static int check_linear(long rows, long out, long in, int bias, int resid)
{
  c5k_ctx kc = { 0 };
  const long nx = rows * in, nw = out * in, ny = rows * out;
  c5_real *x = malloc(nx * sizeof *x), *W = malloc(nw * sizeof *W), *b = malloc(out * sizeof *b);
  c5_real *y = malloc(ny * sizeof *y), *want = malloc(ny * sizeof *want), *res = malloc(ny * sizeof *res);
  unsigned long long seed = 11 + rows + 3 * out + 7 * in + bias;
  int ok = 0;
  T_CHECK(x && W && b && y && want && res, "out of memory");
  for (long i = 0; i < nx; i++) x[i] = (c5_real)t_normal(&seed);
  for (long i = 0; i < nw; i++) W[i] = (c5_real)t_normal(&seed);
  for (long i = 0; i < out; i++) b[i] = (c5_real)t_normal(&seed);
  for (long i = 0; i < ny; i++) { y[i] = (c5_real)NAN; want[i] = 0; res[i] = (c5_real)t_normal(&seed); }
  if (bias) T_OK(c5k_cpu_ops.broadcast_row(&kc, rows, out, b, want));
  if (resid) T_OK(c5k_cpu_ops.axpy(&kc, ny, 1.0, res, want));   /* b + res: res + b, the same bits */
  T_OK(c5k_cpu_ops.gemm(&kc, 0, 1, rows, out, in, 1.0, x, in, W, in, bias || resid ? 1.0 : 0.0, want, out));
  T_OK(c5k_cpu_ops.linear(&kc, rows, out, in, x, C5_DTYPE_REAL, W, bias ? b : NULL, resid ? res : NULL, y));
  T_CHECK(!memcmp(y, want, ny * sizeof *y), "linear rows %ld out %ld in %ld bias %d res %d: not the bits of "
          "broadcast_row (+ res) + gemm", rows, out, in, bias, resid);
  if (resid) {   /* unfused: the product with its bias, then the residual's axpy */
    T_OK(c5k_cpu_ops.linear(&kc, rows, out, in, x, C5_DTYPE_REAL, W, bias ? b : NULL, NULL, want));
    T_OK(c5k_cpu_ops.axpy(&kc, ny, 1.0, res, want));
    double num = 0, den = 0;   /* norm-wise */
    for (long i = 0; i < ny; i++) {
      num += ((double)y[i] - want[i]) * ((double)y[i] - want[i]);
      den += (double)want[i] * want[i];
    }
    const double e = sqrt(num / den), tol = C5_USE_DOUBLE ? 1e-14 : 1e-6;
    T_CHECK(e <= tol, "linear rows %ld out %ld in %ld bias %d: with res %.3e from linear then axpy (tol %.0e)", rows,
            out, in, bias, e, tol);
  }
  ok = 1;
fail:
  free(x); free(W); free(b); free(y); free(want); free(res);
  return ok;
}

/* The norms' backward with res = dx (in place): the backward without it, then an axpy of res, bit for bit. */
static int check_norm_res(long rows, int dim)
{
  const long N = rows * dim, wl = c5k_rowpart_work(rows, dim);
  c5_real *x = malloc(N * sizeof *x), *dy = malloc(N * sizeof *dy), *w = malloc(dim * sizeof *w);
  c5_real *b = malloc(dim * sizeof *b), *y = malloc(N * sizeof *y), *res = malloc(N * sizeof *res);
  c5_real *want = malloc(N * sizeof *want), *got = malloc(N * sizeof *got);
  double *st1 = malloc(rows * sizeof *st1), *st2 = malloc(rows * sizeof *st2), *acc = calloc(2 * dim, sizeof *acc);
  double *work = malloc(wl * sizeof *work);
  unsigned long long seed = 5 + rows + dim;
  int ok = 0;
  T_CHECK(x && dy && w && b && y && res && want && got && st1 && st2 && acc && work, "out of memory");
  c5k_ctx kc = { .work = work, .work_len = wl };
  for (long i = 0; i < N; i++) {
    x[i] = (c5_real)t_normal(&seed);
    dy[i] = (c5_real)t_normal(&seed);
    res[i] = (c5_real)t_normal(&seed);
  }
  for (int i = 0; i < dim; i++) { w[i] = (c5_real)t_normal(&seed); b[i] = (c5_real)t_normal(&seed); }
  for (int ln = 0; ln < 2; ln++) {
    const char *op = ln ? "layernorm_backward" : "rmsnorm_backward";
    if (ln) T_OK(c5k_cpu_ops.layernorm_forward(&kc, x, w, b, rows, dim, 1e-5, y, C5_DTYPE_REAL, st1, st2));
    else T_OK(c5k_cpu_ops.rmsnorm_forward(&kc, x, w, rows, dim, y, C5_DTYPE_REAL, st1));
    memcpy(got, res, N * sizeof *got);
    if (ln) {
      T_OK(c5k_cpu_ops.layernorm_backward(&kc, x, w, st1, st2, dy, rows, dim, NULL, want, acc, acc + dim));
      T_OK(c5k_cpu_ops.layernorm_backward(&kc, x, w, st1, st2, dy, rows, dim, got, got, acc, acc + dim));
    } else {
      T_OK(c5k_cpu_ops.rmsnorm_backward(&kc, x, w, st1, dy, rows, dim, NULL, want, acc));
      T_OK(c5k_cpu_ops.rmsnorm_backward(&kc, x, w, st1, dy, rows, dim, got, got, acc));
    }
    T_OK(c5k_cpu_ops.axpy(&kc, N, 1.0, res, want));
    T_CHECK(!memcmp(got, want, N * sizeof *got), "%s rows %ld dim %d: res = dx is not the bits of an axpy after", op,
            rows, dim);
  }
  ok = 1;
fail:
  free(x); free(dy); free(w); free(b); free(y); free(res); free(want); free(got); free(st1); free(st2); free(acc);
  free(work);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int ok = 1;
  for (int t = 0; t < 2; t++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (int z = 0; z < 2; z++) ok &= check(t ? C5_DTYPE_F32 : C5_DTYPE_F64, ta, tb, z ? 0.75 : 0.0);
  printf("gemm_ex: f64 and f32, all transposes, batch 3, strided, beta 0 and 0.75: %s\n", ok ? "ok" : "FAILED");
  {
    c5k_ctx kc = { 0 };
    float a[4] = { 0 }, b[4] = { 0 }, c[4] = { 0 };
    T_FAILS(c5k_cpu_ops.gemm_ex(&kc, 0, 0, 2, 2, 2, 1.0, a, C5_DTYPE_BF16, 2, 0, b, C5_DTYPE_BF16, 2, 0, 0.0, c,
                                C5_DTYPE_F32, 2, 0, 1, C5_DTYPE_F32), C5_ERR_NOTIMPL, "A bf16");
    /* gemm is gemm_ex in c5_real: the same bits */
    c5_real x[6] = { 1, 2, 3, 4, 5, 6 }, y[6] = { 0.5, -1, 2, 0.25, 3, -2 }, z1[4] = { 0 }, z2[4] = { 0 };
    T_OK(c5k_cpu_ops.gemm(&kc, 0, 1, 2, 2, 3, 1.5, x, 3, y, 3, 0.0, z1, 2));
    T_OK(c5k_cpu_ops.gemm_ex(&kc, 0, 1, 2, 2, 3, 1.5, x, C5_DTYPE_REAL, 3, 0, y, C5_DTYPE_REAL, 3, 0, 0.0, z2,
                             C5_DTYPE_REAL, 2, 0, 1, C5_DTYPE_REAL));
    T_CHECK(!memcmp(z1, z2, sizeof z1), "gemm and gemm_ex differ");
    printf("gemm_ex: bf16 refused on the CPU; gemm == gemm_ex in c5_real: ok\n");
    /* the CPU takes no bf16 activations (kernels.h bf16_acts): it says so, and its ops refuse them */
    T_CHECK(c5k_cpu_ops.bf16_acts(&kc) == 0, "the CPU's bf16_acts says %d", c5k_cpu_ops.bf16_acts(&kc));
    T_FAILS(c5k_cpu_ops.linear(&kc, 2, 2, 3, x, C5_DTYPE_BF16, y, NULL, NULL, z1), C5_ERR_NOTIMPL,
            "linear: the CPU takes");
    T_FAILS(c5k_cpu_ops.gemm_acc_ex(&kc, 1, 0, 2, 2, 3, 1.0, x, C5_DTYPE_REAL, 2, y, C5_DTYPE_BF16, 2, z1, NULL),
            C5_ERR_NOTIMPL, "B bf16");
    T_FAILS(c5k_cpu_ops.rmsnorm_forward(&kc, x, y, 2, 3, z1, C5_DTYPE_BF16, NULL), C5_ERR_NOTIMPL,
            "rmsnorm_forward: the CPU writes");
    T_FAILS(c5k_cpu_ops.layernorm_forward(&kc, x, y, y, 2, 3, 1e-5, z1, C5_DTYPE_BF16, NULL, NULL), C5_ERR_NOTIMPL,
            "layernorm_forward: the CPU writes");
    T_FAILS(c5k_cpu_ops.gelu_forward(&kc, x, 6, z1, C5_DTYPE_BF16), C5_ERR_NOTIMPL, "gelu_forward: the CPU writes");
    T_FAILS(c5k_cpu_ops.convert(&kc, 4, x, z1, C5_DTYPE_BF16), C5_ERR_NOTIMPL, "convert: the CPU writes");
    T_OK(c5k_cpu_ops.convert(&kc, 4, x, z2, C5_DTYPE_REAL));
    T_CHECK(!memcmp(z2, x, sizeof z2), "convert to c5_real is not a copy");
    printf("bf16_acts 0 on the CPU; linear, gemm_acc_ex, the norms, GELU and convert refuse bf16 (convert copies "
           "c5_real): ok\n");
  }
  {
    /* rows > one 64-row block; out > rows (the blocks cut columns); a single row */
    const long shapes[][3] = { { 70, 9, 33 }, { 3, 130, 17 }, { 1, 5, 3 } };
    int lok = 1;
    for (int s = 0; s < 3; s++)
      for (int bias = 0; bias < 2; bias++)
        for (int resid = 0; resid < 2; resid++)
          lok &= check_linear(shapes[s][0], shapes[s][1], shapes[s][2], bias, resid);
    printf("linear == broadcast_row (+ res) + gemm, bit for bit; with res == linear then axpy to rounding: %s\n",
           lok ? "ok" : "FAILED");
    ok &= lok;
    int nok = check_norm_res(1, 7) & check_norm_res(70, 33) & check_norm_res(300, 64);
    printf("rmsnorm_backward, layernorm_backward with res = dx == without, then axpy, bit for bit: %s\n",
           nok ? "ok" : "FAILED");
    ok &= nok;
  }
  MPI_Finalize();
  return ok ? 0 : 1;
fail:
  MPI_Finalize();
  return 1;
}
