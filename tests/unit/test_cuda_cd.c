/* test_cuda_cd.c - coordinate descent forward and backward on the CUDA
   backend (device pointers, one rank) against the CPU path on the same
   inputs, norm-wise: fp32 scores within 1e-4 (fp64 in a double build within
   1e-10). Shapes cover one block a row, several rows sharing the grid, the
   rows over clusters of blocks and rows of several chunks with the
   device-side LSE merge (70000, 200000 and 4M columns),
   more rows than resident blocks, masks with a fully masked row, one k
   and per-row k, and rows whose shifted sums underflow (k = 1e-30: the
   {max, sum} fallback; ds, ill-conditioned there, is held to the bound
   scaled by the sum of its terms' magnitudes). Outputs are poisoned with NaN first (every element must
   be written), and a second run must give the same bits (fixed-order
   merges). Exits 77 without a GPU. */
#include "cuda_util.h"

static const double tol = C5_USE_DOUBLE ? 1e-10 : 1e-4;

static int run(c5_backend *gpu, const c5_dist *d, long rows, long n, int masked, double scale, int T, double ktiny)
{
  const long N = rows * n;
  int ok = 0;
  c5_real *s = malloc(N * sizeof *s), *gy = malloc(N * sizeof *gy), *y = malloc(N * sizeof *y), *ds = malloc(N * sizeof *ds);
  c5_real *yg = malloc(N * sizeof *yg), *dsg = malloc(N * sizeof *dsg), *nan = malloc(N * sizeof *nan);
  double *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b), *k = malloc(rows * sizeof *k);
  uint8_t *m = masked ? malloc(N) : NULL;
  void *s_d = NULL, *gy_d = NULL, *m_d = NULL, *y_d = NULL, *ds_d = NULL;
  c5_cd_cache cc = { 0 }, cg = { 0 };
  c5_cd_config cfg = { .n_iters = T, .eps = 0.03, .eps_init = 4, .eps_decay = 0.7 };
  unsigned long long seed = 1234 + rows * 7 + n;
  T_CHECK(s && gy && y && ds && yg && dsg && nan && a && b && k && (!masked || m), "out of memory");
  for (long i = 0; i < N; i++) {
    s[i] = (c5_real)(scale * t_normal(&seed));
    gy[i] = (c5_real)t_normal(&seed);
    nan[i] = (c5_real)NAN;
    if (m) m[i] = t_uniform(&seed) < 0.8;
  }
  if (m && rows > 1) memset(m + n, 0, n);   /* row 1 fully masked: zero scores, zero gradient */
  for (long r = 0; r < rows; r++) k[r] = ktiny > 0 ? ktiny * (1 + r) : 1 + (double)(n / 16) * (0.5 + (double)r / rows);
  T_OK(c5_cd_cache_alloc(rows, T, &cc));
  T_OK(c5_cd_cache_alloc(rows, T, &cg));
  const long ks = rows == 16 ? 0 : 1;   /* one k for all rows (passed by value to the device), or per row */
  T_OK(c5_cd_forward(c5_backend_cpu(), d, &cfg, rows, n, s, m, k, ks, y, &cc));
  T_OK(c5_cd_backward(c5_backend_cpu(), d, &cc, rows, n, s, m, y, gy, ds));

  T_CHECK((s_d = t_dev_upload(gpu, s, N * sizeof *s)) && (gy_d = t_dev_upload(gpu, gy, N * sizeof *gy)) &&
          (y_d = t_dev_upload(gpu, nan, N * sizeof *nan)) && (ds_d = t_dev_upload(gpu, nan, N * sizeof *nan)) &&
          (!m || (m_d = t_dev_upload(gpu, m, N))), "device buffers");
  for (int rep = 0; rep < 2; rep++) {
    T_OK(c5_cd_forward(gpu, d, &cfg, rows, n, s_d, m_d, k, ks, y_d, &cg));
    T_OK(c5_cd_backward(gpu, d, &cg, rows, n, s_d, m_d, y_d, gy_d, ds_d));
    c5_real *yo = rep ? nan : yg, *dso = rep ? nan + 0 : dsg;
    if (rep) {   /* the second run's bits must be the first's */
      T_OK(c5_backend_memcpy(gpu, yo, y_d, N * sizeof *yo));
      T_CHECK(memcmp(yo, yg, N * sizeof *yo) == 0, "rows %ld n %ld: y differs between two runs", rows, n);
      T_OK(c5_backend_memcpy(gpu, dso, ds_d, N * sizeof *dso));
      T_CHECK(memcmp(dso, dsg, N * sizeof *dso) == 0, "rows %ld n %ld: ds differs between two runs", rows, n);
    } else {
      T_OK(c5_backend_memcpy(gpu, yg, y_d, N * sizeof *yg));
      T_OK(c5_backend_memcpy(gpu, dsg, ds_d, N * sizeof *dsg));
    }
  }
  {   /* the row state itself (a_t, then the LSE), device against host: the fallback shows here when y underflows */
    const long RT = rows * T;
    double *st = malloc(2 * RT * sizeof *st), *want = malloc(2 * RT * sizeof *want);
    T_CHECK(st && want, "out of memory");
    c5_status cs = c5_backend_memcpy(gpu, st, cg.dev_state, 2 * RT * sizeof *st);
    memcpy(want, cc.a, RT * sizeof *want);
    memcpy(want + RT, cc.lse, RT * sizeof *want);
    double ea = t_normwise(st, want, RT), el = t_normwise(st + RT, want + RT, RT);
    free(st); free(want);
    T_OK(cs);
    printf("cd rows %ld n %ld: state a %.3e lse %.3e\n", rows, n, ea, el);
    T_CHECK(ea <= tol && el <= tol, "rows %ld n %ld: a_t error %.3e, lse error %.3e > %.0e", rows, n, ea, el, tol);
  }
  t_to_double(yg, N, a); t_to_double(y, N, b);
  double ey = t_normwise(a, b, N);
  t_to_double(dsg, N, a); t_to_double(ds, N, b);
  double eds = t_normwise(a, b, N);
  /* ds against the sum of its terms' magnitudes (the CPU's a_t, LSE and dL/da_t): with k = 1e-30
     dL/da_t grows by exp(-lse_t) each step and ds is the difference of terms many orders larger
     than itself, so there the bound scales with the terms; elsewhere ds itself is the scale. */
  double num = 0, den = 0;
  for (long r = 0; r < rows; r++) {
    const double *ar = cc.a + r * T, *lr = cc.lse + r * T, *gr = cc.ga + r * T;
    for (long j = r * n; j < r * n + n; j++) {
      if (m && !m[j]) continue;
      double t = (double)s[j] + ar[T - 1] <= 0 ? fabs((double)gy[j] * (double)y[j]) * cc.inv_eps[T] : 0.0;
      for (int it = T; it >= 2; it--)
        if ((double)s[j] + ar[it - 2] <= 0) t += fabs(gr[it - 1]) * exp(((double)s[j] + ar[it - 2]) * cc.inv_eps[it - 1] - lr[it - 1]);
      num += (a[j] - b[j]) * (a[j] - b[j]);
      den += t * t;
    }
  }
  const double eterms = den > 0 ? sqrt(num / den) : sqrt(num);
  printf("cd rows %ld n %ld%s scale %g T %d%s: y %.3e ds %.3e, ds over its terms %.3e (tol %.0e)\n", rows, n,
         m ? " masked" : "", scale, T, ktiny > 0 ? " tiny k" : "", ey, eds, eterms, tol);
  T_CHECK(ey <= tol && (ktiny > 0 ? eterms : eds) <= tol, "rows %ld n %ld: y error %.3e, ds error %.3e (over its "
          "terms %.3e) > %.0e", rows, n, ey, eds, eterms, tol);
  if (m && rows > 1)
    for (long j = 0; j < n; j++) T_CHECK(yg[n + j] == 0 && dsg[n + j] == 0, "fully masked row: y, ds at %ld not 0", j);
  ok = 1;
fail:
  c5_backend_free(gpu, s_d); c5_backend_free(gpu, gy_d); c5_backend_free(gpu, m_d);
  c5_backend_free(gpu, y_d); c5_backend_free(gpu, ds_d);
  c5_cd_cache_free(&cc); c5_cd_cache_free(&cg);
  free(s); free(gy); free(y); free(ds); free(yg); free(dsg); free(nan); free(a); free(b); free(k); free(m);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_backend *gpu = t_cuda_backend_or_skip();
  c5_dist *d = NULL;
  int ok = 1;
  if (c5_dist_create(MPI_COMM_WORLD, &d) != C5_OK) { fprintf(stderr, "%s\n", c5_last_error()); return 1; }
  ok &= run(gpu, d, 3, 1000, 1, 1.0, 20, 0);
  ok &= run(gpu, d, 16, 8192, 0, 1.0, 20, 0);
  ok &= run(gpu, d, 4, 16000, 1, 1.0, 20, 0);       /* one block a row at its largest */
  ok &= run(gpu, d, 5, 70000, 1, 2.0, 7, 0);        /* a cluster of 8 blocks a row */
  ok &= run(gpu, d, 3, 200000, 1, 2.0, 20, 0);      /* rows of several chunks (cooperative launch) */
  ok &= run(gpu, d, 600, 20000, 0, 1.0, 5, 0);      /* more rows than resident blocks: blocks take several */
  ok &= run(gpu, d, 2, 3000, 0, 40.0, 20, 0);       /* wide scores */
  ok &= run(gpu, d, 3, 5000, 0, 1.0, 20, 1e-30);    /* k tiny: the shifted sums underflow, the {max, sum} form */
  ok &= run(gpu, d, 2, 70000, 1, 1.0, 20, 1e-30);   /* ... in clusters */
  ok &= run(gpu, d, 1, 300000, 1, 1.0, 20, 1e-30);  /* ... in rows of several chunks */
  ok &= run(gpu, d, 1, 1L << 22, 0, 1.0, 20, 0);    /* one long row over every multiprocessor */
  /* a NaN in the logits is refused naming its place, as on the CPU */
  {
    c5_real h[4] = { 1, 2, NAN, 3 };
    double kk = 1;
    void *p = t_dev_upload(gpu, h, sizeof h), *yy = t_dev_upload(gpu, h, sizeof h);
    c5_cd_cache c = { 0 };
    c5_cd_config cfg = { .n_iters = 3, .eps = 0.1, .eps_init = 0, .eps_decay = 1 };
    T_CHECK(p && yy, "device buffers");
    T_OK(c5_cd_cache_alloc(2, 3, &c));
    T_FAILS(c5_cd_forward(gpu, d, &cfg, 2, 2, p, NULL, &kk, 0, yy, &c), C5_ERR_NUMERIC, "logits row 1, local column 0");
    c5_cd_cache_free(&c);
    c5_backend_free(gpu, p); c5_backend_free(gpu, yy);
  }
  goto done;
fail:
  ok = 0;
done:
  c5_dist_destroy(&d);
  c5_backend_destroy(&gpu);
  MPI_Finalize();
  return ok ? 0 : 1;
}
