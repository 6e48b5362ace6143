/* test_cd.c - coordinate descent against a naive transcription of the
   reference (coor_descent.py: masked_fill, logsumexp with its max, b =
   -relu(s + a)), finite differences of the backward, edge cases, the
   underflow fallback and invalid arguments.

     test_cd              run the checks
     test_cd --dump FILE  write y and ds of a large case (for test_threads.sh) */
#include <float.h>
#include <string.h>
#include "harness.h"

#if C5_USE_DOUBLE
#define RTOL 1e-10      /* library vs naive, forward: |a - b| <= RTOL (|b| + FLOOR) */
#define FLOOR 1e-3
#define FD_TOL 1e-6     /* ||analytic - fd|| / ||fd|| */
#define FD_H 1e-6
#else
#define RTOL 2e-4
#define FLOOR 1e-2
#define FD_TOL 3e-2
#define FD_H 3e-3
#endif

/* The reference's arithmetic, in double, row by row. */
static void naive_cd(long rows, long n, const c5_real *s, const uint8_t *mask, const double *k, long kst,
                     const c5_cd_config *c, double *y)
{
  double *ss = malloc((size_t)n * sizeof *ss), *b = malloc((size_t)n * sizeof *b), *sb = malloc((size_t)n * sizeof *sb);
  for (long r = 0; r < rows; r++) {
    const double mv = -DBL_MAX;
    for (long j = 0; j < n; j++) { int m = !mask || mask[r * n + j]; ss[j] = m ? s[r * n + j] : mv; b[j] = -ss[j]; }
    double a = 0, cur = fmax(c->eps_init, c->eps), logk = log(fmax(k[r * kst], 1e-20));
    for (int it = 0; it < c->n_iters; it++) {
      double mx = -INFINITY;
      for (long j = 0; j < n; j++) {
        int m = !mask || mask[r * n + j];
        sb[j] = m ? (ss[j] + b[j]) / cur : mv;
        mx = fmax(mx, sb[j]);
      }
      double acc = 0;
      for (long j = 0; j < n; j++) acc += exp(sb[j] - mx);
      a = cur * (logk - (mx + log(acc)));
      for (long j = 0; j < n; j++) b[j] = -fmax(ss[j] + a, 0.0);
      cur = fmax(cur * c->eps_decay, c->eps);
    }
    for (long j = 0; j < n; j++) {
      int m = !mask || mask[r * n + j];
      y[r * n + j] = m ? exp((ss[j] + a + b[j]) / cur) : 0.0;
    }
  }
  free(ss); free(b); free(sb);
}

typedef struct { long rows, n; c5_real *s, *y, *gy, *ds; uint8_t *mask; double *k; long kst; double *ref; } cd_case;

static void case_free(cd_case *t)
{
  free(t->s); free(t->y); free(t->gy); free(t->ds); free(t->mask); free(t->k); free(t->ref);
}

static void case_make(cd_case *t, long rows, long n, double scale, double shift, double mask_frac, double k,
                      unsigned long long seed)
{
  memset(t, 0, sizeof *t);
  t->rows = rows; t->n = n; t->kst = 0;
  long N = rows * n;
  t->s = malloc((size_t)N * sizeof *t->s); t->y = malloc((size_t)N * sizeof *t->y);
  t->gy = malloc((size_t)N * sizeof *t->gy); t->ds = malloc((size_t)N * sizeof *t->ds);
  t->ref = malloc((size_t)N * sizeof *t->ref);
  t->k = malloc((size_t)rows * sizeof *t->k);
  for (long r = 0; r < rows; r++) t->k[r] = k;
  for (long i = 0; i < N; i++) { t->s[i] = (c5_real)(shift + scale * t_normal(&seed)); t->gy[i] = (c5_real)t_normal(&seed); }
  if (mask_frac > 0) {
    t->mask = malloc((size_t)N);
    for (long i = 0; i < N; i++) t->mask[i] = t_uniform(&seed) >= mask_frac;
  }
}

/* Forward and backward through the library; forward compared with the naive one. */
static int run_case(const char *name, c5_dist *d, cd_case *t, const c5_cd_config *c)
{
  c5_cd_cache cache = { 0 };
  int ok = 0;
  T_OK(c5_cd_cache_alloc(t->rows, c->n_iters, &cache));
  T_OK(c5_cd_forward(c5_backend_cpu(), d, c, t->rows, t->n, t->s, t->mask, t->k, t->kst, t->y, &cache));
  T_OK(c5_cd_backward(c5_backend_cpu(), d, &cache, t->rows, t->n, t->s, t->mask, t->y, t->gy, t->ds));
  naive_cd(t->rows, t->n, t->s, t->mask, t->k, t->kst, c, t->ref);
  for (long i = 0; i < t->rows * t->n; i++)
    T_CHECK(isfinite(t->y[i]) && isfinite(t->ds[i]), "%s: non-finite at %ld: y %g ds %g", name, i,
            (double)t->y[i], (double)t->ds[i]);
  T_CHECK(t_close(name, t->y, t->ref, t->rows * t->n, RTOL, FLOOR), "%s: forward differs from the naive reference", name);
  ok = 1;
fail:
  c5_cd_cache_free(&cache);
  printf("%-44s %s\n", name, ok ? "ok" : "FAILED");
  return ok;
}

/* loss = sum(gy * y); central differences on every s_j against ds. */
static int fd_check(const char *name, c5_dist *d, cd_case *t, const c5_cd_config *c)
{
  long N = t->rows * t->n;
  c5_cd_cache cache = { 0 };
  c5_real *yp = malloc((size_t)N * sizeof *yp);
  double num = 0, den = 0;
  int ok = 0;
  T_OK(c5_cd_cache_alloc(t->rows, c->n_iters, &cache));
  T_OK(c5_cd_forward(c5_backend_cpu(), d, c, t->rows, t->n, t->s, t->mask, t->k, t->kst, t->y, &cache));
  T_OK(c5_cd_backward(c5_backend_cpu(), d, &cache, t->rows, t->n, t->s, t->mask, t->y, t->gy, t->ds));
  for (long i = 0; i < N; i++) {
    c5_real s0 = t->s[i];
    double lp = 0, lm = 0;
    t->s[i] = s0 + (c5_real)FD_H;
    T_OK(c5_cd_forward(c5_backend_cpu(), d, c, t->rows, t->n, t->s, t->mask, t->k, t->kst, yp, &cache));
    for (long j = 0; j < N; j++) lp += (double)t->gy[j] * yp[j];
    t->s[i] = s0 - (c5_real)FD_H;
    T_OK(c5_cd_forward(c5_backend_cpu(), d, c, t->rows, t->n, t->s, t->mask, t->k, t->kst, yp, &cache));
    for (long j = 0; j < N; j++) lm += (double)t->gy[j] * yp[j];
    t->s[i] = s0;
    double fd = (lp - lm) / (2 * FD_H);
    num += (fd - t->ds[i]) * (fd - t->ds[i]);
    den += fd * fd;
  }
  T_CHECK(den > 0, "%s: the finite-difference gradient is zero (the check would be vacuous)", name);
  T_CHECK(sqrt(num / den) <= FD_TOL, "%s: ||ds - fd|| / ||fd|| = %.3e > %.1e", name, sqrt(num / den), FD_TOL);
  ok = 1;
fail:
  c5_cd_cache_free(&cache);
  free(yp);
  printf("%-44s %s (rel %.2e)\n", name, ok ? "ok" : "FAILED", den > 0 ? sqrt(num / den) : 0.0);
  return ok;
}

static int invalid_args(c5_dist *d)
{
  cd_case t;
  case_make(&t, 2, 16, 1.0, 0.0, 0.0, 4.0, 7);
  c5_cd_cache cache = { 0 };
  c5_cd_config c = { .n_iters = 5, .eps = 0.1, .eps_init = 1.0, .eps_decay = 0.9 };
  int ok = 0;
  T_OK(c5_cd_cache_alloc(2, 5, &cache));
  double kbad = 0.0;
  T_FAILS(c5_cd_forward(c5_backend_cpu(), d, &c, 2, 16, t.s, NULL, &kbad, 0, t.y, &cache), C5_ERR_ARG, "k = 0");
  kbad = -3;
  T_FAILS(c5_cd_forward(c5_backend_cpu(), d, &c, 2, 16, t.s, NULL, &kbad, 0, t.y, &cache), C5_ERR_ARG, "k must be > 0");
  c.n_iters = 0;
  T_FAILS(c5_cd_forward(c5_backend_cpu(), d, &c, 2, 16, t.s, NULL, t.k, 0, t.y, &cache), C5_ERR_ARG, "n_iters = 0");
  c.n_iters = 5; c.eps = 0;
  T_FAILS(c5_cd_forward(c5_backend_cpu(), d, &c, 2, 16, t.s, NULL, t.k, 0, t.y, &cache), C5_ERR_ARG, "eps = 0");
  c.eps = 0.1; c.eps_decay = 0;
  T_FAILS(c5_cd_forward(c5_backend_cpu(), d, &c, 2, 16, t.s, NULL, t.k, 0, t.y, &cache), C5_ERR_ARG, "eps_decay = 0");
  c.eps_decay = 1.5;
  T_FAILS(c5_cd_forward(c5_backend_cpu(), d, &c, 2, 16, t.s, NULL, t.k, 0, t.y, &cache), C5_ERR_ARG, "eps_decay = 1.5");
  c.eps_decay = 0.9;
  t.s[19] = (c5_real)NAN;
  T_FAILS(c5_cd_forward(c5_backend_cpu(), d, &c, 2, 16, t.s, NULL, t.k, 0, t.y, &cache), C5_ERR_NUMERIC, "row 1, local column 3");
  t.s[19] = (c5_real)INFINITY;
  T_FAILS(c5_cd_forward(c5_backend_cpu(), d, &c, 2, 16, t.s, NULL, t.k, 0, t.y, &cache), C5_ERR_NUMERIC, "NaN or Inf");
  t.s[19] = 0;
  c5_cd_config c6 = c;
  c6.n_iters = 6;   /* cache made for 5 iterations */
  T_FAILS(c5_cd_forward(c5_backend_cpu(), d, &c6, 2, 16, t.s, NULL, t.k, 0, t.y, &cache), C5_ERR_SHAPE, "cache holds");
  ok = 1;
fail:
  c5_cd_cache_free(&cache);
  case_free(&t);
  printf("%-44s %s\n", "invalid arguments are errors", ok ? "ok" : "FAILED");
  return ok;
}

static int dump(c5_dist *d, const char *path)
{
  cd_case t;
  case_make(&t, 3, 50000, 2.0, 0.0, 0.1, 50000 / 16.0 * 9 / 8, 99);
  c5_cd_config c = { .n_iters = 20, .eps = 0.03, .eps_init = 4.0, .eps_decay = 0.7 };
  c5_cd_cache cache = { 0 };
  FILE *fp = NULL;
  int ok = 0;
  T_OK(c5_cd_cache_alloc(t.rows, c.n_iters, &cache));
  T_OK(c5_cd_forward(c5_backend_cpu(), d, &c, t.rows, t.n, t.s, t.mask, t.k, 0, t.y, &cache));
  T_OK(c5_cd_backward(c5_backend_cpu(), d, &cache, t.rows, t.n, t.s, t.mask, t.y, t.gy, t.ds));
  fp = fopen(path, "wb");
  T_CHECK(fp != NULL, "cannot write %s", path);
  fwrite(t.y, sizeof *t.y, (size_t)(t.rows * t.n), fp);
  fwrite(t.ds, sizeof *t.ds, (size_t)(t.rows * t.n), fp);
  ok = fclose(fp) == 0;
fail:
  c5_cd_cache_free(&cache);
  case_free(&t);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_dist *d = NULL;
  int ok = 1;
  cd_case t;
  if (c5_dist_create(MPI_COMM_WORLD, &d) != C5_OK) { fprintf(stderr, "%s\n", c5_last_error()); return 1; }
  if (argc == 3 && !strcmp(argv[1], "--dump")) {
    ok = dump(d, argv[2]);
    goto done;
  }
  c5_cd_config router = { .n_iters = 20, .eps = 0.03, .eps_init = 4.0, .eps_decay = 0.7 };
  c5_cd_config soft = { .n_iters = 20, .eps = 0.3, .eps_init = 4.0, .eps_decay = 0.7 };
  c5_cd_config few = { .n_iters = 3, .eps = 0.5, .eps_init = 0.0, .eps_decay = 1.0 };   /* not yet saturated */
  c5_cd_config flat = { .n_iters = 50, .eps = 0.1, .eps_init = 0.0, .eps_decay = 1.0 };

  case_make(&t, 4, 300, 2.0, 0.0, 0.0, 20.0, 1);      ok &= run_case("forward = naive: eps-scaling", d, &t, &router); case_free(&t);
  case_make(&t, 3, 257, 2.0, 0.0, 0.2, 18.0, 2);      ok &= run_case("forward = naive: masked", d, &t, &router); case_free(&t);
  case_make(&t, 2, 9000, 1.5, 0.0, 0.1, 900.0, 3);    ok &= run_case("forward = naive: rows over 2 chunks", d, &t, &flat); case_free(&t);
  /* per-row k */
  case_make(&t, 3, 100, 1.0, 0.0, 0.0, 1.0, 4);
  t.k[0] = 3; t.k[1] = 10.5; t.k[2] = 60; t.kst = 1;
  ok &= run_case("forward = naive: k per row", d, &t, &router); case_free(&t);
  /* a fully masked row among others: all 0, no NaN, no gradient */
  case_make(&t, 3, 64, 1.0, 0.0, 0.3, 8.0, 5);
  memset(t.mask + 64, 0, 64);
  ok &= run_case("fully masked row", d, &t, &router);
  for (long j = 64; j < 128; j++)
    if (t.y[j] != 0 || t.ds[j] != 0) { ok = 0; printf("fully masked row: y or ds nonzero at %ld\n", j); break; }
  case_free(&t);
  /* fewer unmasked tokens than k; k >= n; n = 1 */
  case_make(&t, 2, 40, 1.0, 0.0, 0.8, 12.0, 6);       ok &= run_case("fewer unmasked tokens than k", d, &t, &router); case_free(&t);
  case_make(&t, 2, 30, 1.0, 0.0, 0.0, 45.0, 7);       ok &= run_case("k >= n", d, &t, &router); case_free(&t);
  case_make(&t, 3, 1, 1.0, 0.0, 0.0, 1.0, 8);         ok &= run_case("n = 1", d, &t, &router); case_free(&t);
  /* ties in the logits */
  case_make(&t, 2, 50, 1.0, 0.0, 0.0, 5.0, 9);
  for (long i = 0; i < 100; i++) t.s[i] = (c5_real)((i % 5) * 0.5);
  ok &= run_case("tied logits", d, &t, &router); case_free(&t);
  /* shifted sums underflow: logits far below -a_1 take the {max, sumexp} path */
#if C5_USE_DOUBLE
  case_make(&t, 2, 200, 1.0, -3000, 0.0, 10.0, 10);   ok &= run_case("underflow fallback (s ~ -3000)", d, &t, &router); case_free(&t);
#else   /* float exp underflows sooner; float s near -3000 carries 2e-4 absolute error */
  case_make(&t, 2, 200, 1.0, -300, 0.0, 10.0, 10);    ok &= run_case("underflow fallback (s ~ -300)", d, &t, &soft); case_free(&t);
#endif
  case_make(&t, 2, 200, 1.0, 1e4, 0.0, 10.0, 11);     ok &= run_case("large logits (s ~ +1e4)", d, &t, &router); case_free(&t);

  /* finite differences (eps 0.3: scores not saturated) */
  case_make(&t, 2, 24, 1.0, 0.0, 0.0, 5.0, 12);       ok &= fd_check("backward = finite differences", d, &t, &soft); case_free(&t);
  case_make(&t, 2, 30, 1.0, 0.0, 0.25, 6.0, 13);      ok &= fd_check("backward = finite differences, masked", d, &t, &soft); case_free(&t);
  case_make(&t, 1, 20, 1.0, 0.0, 0.0, 4.0, 14);       ok &= fd_check("backward = finite differences, const eps", d, &t, &flat); case_free(&t);
  case_make(&t, 2, 12, 1.0, 0.0, 0.5, 9.0, 15);       ok &= fd_check("backward = finite differences, k > unmasked", d, &t, &few); case_free(&t);
  ok &= invalid_args(d);
done:
  c5_dist_destroy(&d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
