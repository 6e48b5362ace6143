/* test_grad_acc.c - parameter gradients do not depend on which BLAS kernel
   forms them, and accumulate exactly.

   Every module's backward sums a parameter's parts (GEMM per batch row and
   route, two norms sharing gamma, the null key/value slot, the router per
   batch row) in double and adds the result to the gradient once. So a second
   forward and backward on the same input (the same cache, bit for bit: a
   backward spends its forward, as the block's does) adds the same rounded
   value: the gradient is
   exactly twice the first (g + g is exact in binary floating point). A part
   added straight into the working-precision gradient (a beta = 1 GEMM) would
   round the running sum at a value that depends on the BLAS kernel, and the
   second backward would not double it bit for bit. jobs/check.sh runs this
   under several OPENBLAS_CORETYPE values.

   Also: the FeedForwards' chunked rows (C5_FF_CHUNK_ROWS in the
   environment at the cache's layout, lib/ffnet.h) against one chunk;
   gemm_acc against a double reference, and the BLAS core report and its
   warning rule. */
#include <string.h>
#include "modules.h"
#include "kernels.h"

/* The module under test on the CPU with filled parameters, and random x, g (N each) and a mask of rows entries
   (85 % kept), all from *seed. */
static int make_module(const mod_t *mt, const void *cfg, c5_params **p, void **m, long N, c5_real *x, c5_real *g,
                       long rows, uint8_t *mask, unsigned long long *seed)
{
  T_OK(c5_params_create(c5_backend_cpu(), p));
  T_OK(mt->create(cfg, *p, m));
  T_OK(c5_params_alloc(*p));
  mod_fill_params(*p, seed);
  for (long i = 0; i < N; i++) { x[i] = (c5_real)t_normal(seed); g[i] = (c5_real)t_normal(seed); }
  for (long i = 0; i < rows; i++) mask[i] = t_uniform(seed) > 0.15;
  return 1;
fail:
  return 0;
}

/* Forward and backward twice from zeroed gradients: the second must double every gradient bit for bit. */
static int doubling(const char *what, const mod_t *mt, const void *cfg, long b, long n, int dim, int masked,
                    unsigned long long seed, const c5_dist *d)
{
  c5_params *p = NULL;
  void *m = NULL, *c = NULL;
  const long N = b * n * dim;
  c5_real *x = malloc((size_t)N * sizeof *x), *g = malloc((size_t)N * sizeof *g), *out = malloc((size_t)N * sizeof *out);
  c5_real *dx = malloc((size_t)N * sizeof *dx), *g1 = NULL;
  uint8_t *mask = malloc((size_t)(b * n));
  c5_layout lay;
  long P = 0, bad = 0, first = -1;
  int ok = 0;
  T_CHECK(x && g && out && dx && mask, "out of memory");
  T_CHECK(make_module(mt, cfg, &p, &m, N, x, g, b * n, mask, &seed), "module setup");
  P = c5_params_total(p);
  g1 = malloc((size_t)P * sizeof *g1);
  T_CHECK(g1 != NULL, "out of memory");
  long unit;
  T_OK(mt->unit(cfg, &unit));
  T_OK(c5_layout_compute(d, n, unit, &lay));
  T_OK(mt->cache(m, b, n, &c));
  T_OK(mt->fwd(m, d, &lay, b, x, masked ? mask : NULL, c, out));
  c5_params_zero_grad(p);
  T_OK(mt->bwd(m, d, c, x, g, dx));
  memcpy(g1, c5_params_grad(p, 0), (size_t)P * sizeof *g1);
  T_OK(mt->fwd(m, d, &lay, b, x, masked ? mask : NULL, c, out));
  T_OK(mt->bwd(m, d, c, x, g, dx));
  if (mt == &MOD_BL) {   /* the block's backward spent its forward (it wrote over x1), and dx is a buffer of its own */
    T_CHECK(mt->bwd(m, d, c, x, g, dx) == C5_ERR_ARG && strstr(c5_last_error(), "holds no forward"),
            "a second backward on one forward: %s", c5_last_error());
    T_OK(mt->fwd(m, d, &lay, b, x, masked ? mask : NULL, c, out));
    T_CHECK(mt->bwd(m, d, c, x, g, g) == C5_ERR_ARG && strstr(c5_last_error(), "(it is dout"),
            "dx == dout: %s", c5_last_error());
  }
  const c5_real *g2 = c5_params_grad(p, 0);
  for (long i = 0; i < P; i++)
    if (g2[i] != 2 * g1[i]) { bad++; if (first < 0) first = i; }
  if (bad) {
    long k = 0;
    while (k + 1 < c5_params_count(p) && c5_params_grad(p, k + 1) - c5_params_grad(p, 0) <= first) k++;
    fprintf(stderr, "  %s: %ld of %ld gradients not doubled; first %s[%ld]: %.9g after two, %.9g after one\n", what,
            bad, P, c5_params_name(p, k), (long)(first - (c5_params_grad(p, k) - c5_params_grad(p, 0))),
            (double)g2[first], (double)g1[first]);
  }
  ok = bad == 0;
fail:
  printf("%-60s %s\n", what, ok ? "ok" : "FAILED");
  mod_free(mt, &m, &c);
  c5_params_destroy(&p);
  free(x); free(g); free(out); free(dx); free(mask); free(g1);
  return ok;
}

/* One forward and backward from zeroed gradients with C5_FF_CHUNK_ROWS=chunk (0: unset) at the cache's layout: out
   and dx into the caller's buffers, the gradients into *grad (allocated, *P of them). */
static int run_chunked(const mod_t *mt, const void *cfg, long b, long n, int dim, long chunk, const c5_dist *d,
                       c5_real *out, c5_real *dx, c5_real **grad, long *P)
{
  c5_params *p = NULL;
  void *m = NULL, *c = NULL;
  const long N = b * n * dim;
  c5_real *x = malloc((size_t)N * sizeof *x), *g = malloc((size_t)N * sizeof *g);
  uint8_t *mask = malloc((size_t)(b * n));
  unsigned long long seed = 7;
  c5_layout lay;
  long unit;
  int ok = 0;
  char env[32];
  T_CHECK(x && g && mask, "out of memory");
  T_CHECK(make_module(mt, cfg, &p, &m, N, x, g, b * n, mask, &seed), "module setup");
  T_OK(mt->unit(cfg, &unit));
  T_OK(c5_layout_compute(d, n, unit, &lay));
  snprintf(env, sizeof env, "%ld", chunk);
  T_CHECK(!(chunk ? setenv("C5_FF_CHUNK_ROWS", env, 1) : unsetenv("C5_FF_CHUNK_ROWS")), "setenv failed");
  T_OK(mt->cache(m, b, n, &c));
  unsetenv("C5_FF_CHUNK_ROWS");
  T_OK(mt->fwd(m, d, &lay, b, x, mask, c, out));
  c5_params_zero_grad(p);
  T_OK(mt->bwd(m, d, c, x, g, dx));
  *P = c5_params_total(p);
  *grad = malloc((size_t)*P * sizeof **grad);
  T_CHECK(*grad != NULL, "out of memory");
  memcpy(*grad, c5_params_grad(p, 0), (size_t)*P * sizeof **grad);
  ok = 1;
fail:
  mod_free(mt, &m, &c);
  c5_params_destroy(&p);
  free(x); free(g); free(mask);
  return ok;
}

/* ||a - b|| / ||b|| over n values (0 where they are equal). */
static double rel_diff(const c5_real *a, const c5_real *b, long n)
{
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return num == 0 ? 0 : den > 0 ? sqrt(num / den) : INFINITY;
}

/* The FeedForwards in chunks of `chunk` rows against one chunk: the same math, only the gradients' sums over rows
   split differently (and the BLAS's row blocks cut elsewhere), so out, dx and each parameter's gradient agree to
   the working precision's rounding. */
static int chunked(const char *what, const mod_t *mt, const void *cfg, long b, long n, int dim, long chunk,
                   const c5_dist *d)
{
  const long N = b * n * dim;
  const double tol = C5_USE_DOUBLE ? 1e-13 : 1e-5;
  c5_real *o1 = malloc((size_t)N * sizeof *o1), *o2 = malloc((size_t)N * sizeof *o2);
  c5_real *dx1 = malloc((size_t)N * sizeof *dx1), *dx2 = malloc((size_t)N * sizeof *dx2), *g1 = NULL, *g2 = NULL;
  c5_params *p = NULL;
  void *m = NULL;
  long P1 = 0, P2 = 0;
  double worst = 0;
  int ok = 0;
  T_CHECK(o1 && o2 && dx1 && dx2, "out of memory");
  T_CHECK(run_chunked(mt, cfg, b, n, dim, 0, d, o1, dx1, &g1, &P1), "%s: one chunk", what);
  T_CHECK(run_chunked(mt, cfg, b, n, dim, chunk, d, o2, dx2, &g2, &P2), "%s: chunks of %ld rows", what, chunk);
  T_CHECK(P1 == P2, "%s: %ld and %ld parameters", what, P1, P2);
  worst = fmax(rel_diff(o2, o1, N), rel_diff(dx2, dx1, N));
  T_CHECK(worst <= tol, "%s: out or dx differ by %.3e", what, worst);
  /* each parameter's gradient on its own: a small one is not hidden by a large one */
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_OK(mt->create(cfg, p, &m));
  T_OK(c5_params_alloc(p));
  for (long i = 0; i < c5_params_count(p); i++) {
    const long off = c5_params_grad(p, i) - c5_params_grad(p, 0);
    const double r = rel_diff(g2 + off, g1 + off, c5_params_numel(p, i));
    worst = fmax(worst, r);
    T_CHECK(r <= tol, "%s: gradient of %s differs by %.3e", what, c5_params_name(p, i), r);
  }
  ok = 1;
fail:
  printf("%-60s %s (rel %.2e)\n", what, ok ? "ok" : "FAILED", worst);
  if (m) mt->destroy(&m);
  c5_params_destroy(&p);
  free(o1); free(o2); free(dx1); free(dx2); free(g1); free(g2);
  return ok;
}

/* gemm_acc: parts whose running sum is ~1000x the result (the shape of the
   heavy to_kv gradient that once depended on the BLAS kernel) sum as the
   double sum of each part rounded once. */
static int gemm_acc(void)
{
  const c5k_ops *ops = &c5k_cpu_ops;
  const long m = 7, n = 5, k = 300, parts = 6;
  c5_real *A = malloc((size_t)(parts * k * m) * sizeof *A), *B = malloc((size_t)(parts * k * n) * sizeof *B);
  c5_real *prod = malloc((size_t)(m * n) * sizeof *prod);
  double *acc = calloc((size_t)(m * n), sizeof *acc), *want = calloc((size_t)(m * n), sizeof *want);
  unsigned long long seed = 5;
  int ok = 0;
  c5k_ctx kc = { 0 };
  T_CHECK(A && B && prod && acc && want, "out of memory");
  /* part q: A_q^T B_q with A_q [k, m] scaled so the parts alternate in sign and grow, then cancel */
  for (long q = 0; q < parts; q++) {
    double s = (q % 2 ? -1.0 : 1.0) * (q < parts - 1 ? 1000.0 : 1.0);
    for (long i = 0; i < k * m; i++) A[q * k * m + i] = (c5_real)(s * t_normal(&seed));
    for (long i = 0; i < k * n; i++) B[q * k * n + i] = (c5_real)t_normal(&seed);
  }
  for (long q = 0; q < parts; q++) {
    T_OK(ops->gemm_acc(&kc, 1, 0, m, n, k, 0.5, A + q * k * m, m, B + q * k * n, n, prod, acc));
    /* reference: this part in double, rounded once to the working precision */
    for (long i = 0; i < m; i++)
      for (long j = 0; j < n; j++) {
        double s = 0;
        for (long t = 0; t < k; t++) s += (double)A[q * k * m + t * m + i] * B[q * k * n + t * n + j];
        want[i * n + j] += (double)(c5_real)(0.5 * s);
      }
  }
  /* each part's product differs from the double reference by the working precision's GEMM rounding only */
  const double tol = C5_USE_DOUBLE ? 1e-11 : 2e-3;
  double wmax = 0;
  for (long i = 0; i < m * n; i++) wmax = fmax(wmax, fabs(want[i]));
  for (long i = 0; i < m * n; i++)
    T_CHECK(fabs(acc[i] - want[i]) <= tol * wmax, "gemm_acc[%ld] = %.17g, want %.17g", i, acc[i], want[i]);
  /* flush: the gradient gets the accumulator rounded once, the accumulator is zeroed */
  c5_real gr[35];
  for (int i = 0; i < 35; i++) gr[i] = (c5_real)i;
  double keep[35];
  memcpy(keep, acc, sizeof keep);
  T_OK(ops->grad_flush(&kc, acc, m * n, gr));
  for (int i = 0; i < 35; i++) {
    T_CHECK(gr[i] == (c5_real)((c5_real)i + (c5_real)keep[i]), "flush[%d] = %.9g", i, (double)gr[i]);
    T_CHECK(acc[i] == 0, "accumulator %d not zeroed", i);
  }
  ok = 1;
fail:
  printf("%-60s %s\n", "gemm_acc: cancelling parts summed in double", ok ? "ok" : "FAILED");
  free(A); free(B); free(prod); free(acc); free(want);
  return ok;
}

static int blas_core(void)
{
  char buf[256];
  int ok = 0;
  const char *core = c5_blas_core(), *forced = getenv("OPENBLAS_CORETYPE");
  T_CHECK(core && *core, "no BLAS core name");
  /* a core forced by OPENBLAS_CORETYPE is the one that runs (so check.sh's passes test what they say) */
  if (forced && *forced) T_CHECK(!strcasecmp(core, forced), "OPENBLAS_CORETYPE=%s, but OpenBLAS runs %s", forced, core);
  const char *w = c5k_blas_warning_for("Prescott", 1, 1, NULL, buf, sizeof buf);
  T_CHECK(w && strstr(w, "OPENBLAS_CORETYPE=SkylakeX") && strstr(w, "Prescott") && strstr(w, "AVX-512"),
          "generic core on an AVX-512 CPU: %s", w ? w : "(no warning)");
  w = c5k_blas_warning_for("Nehalem", 1, 0, NULL, buf, sizeof buf);
  T_CHECK(w && strstr(w, "OPENBLAS_CORETYPE=Haswell") && strstr(w, "AVX2"), "generic core on an AVX2 CPU: %s",
          w ? w : "(no warning)");
  T_CHECK(!c5k_blas_warning_for("Prescott", 0, 0, NULL, buf, sizeof buf), "warning on a CPU without AVX2");
  T_CHECK(!c5k_blas_warning_for("Haswell", 1, 1, NULL, buf, sizeof buf), "warning for Haswell");
  T_CHECK(!c5k_blas_warning_for("SkylakeX", 1, 1, NULL, buf, sizeof buf), "warning for SkylakeX");
  T_CHECK(!c5k_blas_warning_for("Prescott", 1, 1, "Prescott", buf, sizeof buf), "warning for a core chosen by hand");
  ok = 1;
fail:
  printf("%-60s %s\n", "BLAS core report and its warning rule", ok ? "ok" : "FAILED");
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_dist *d = NULL;
  if (c5_dist_create(MPI_COMM_SELF, &d) != C5_OK) { fprintf(stderr, "%s\n", c5_last_error()); return 1; }
  printf("BLAS core %s, precision %s\n", c5_blas_core(), C5_REAL_NAME);
  int ok = blas_core();
  ok &= gemm_acc();

  /* sizes past a BLAS k block (n * batch rows > 256), batch 2 and several routes: many parts per gradient */
  c5_routed_ff_config ff = C5_ROUTED_FF_CONFIG_DEFAULT;
  ff.dim = 24; ff.num_heavy_tokens = 90; ff.router = mod_soft_router();
  ok &= doubling("routed ff, mask, soft router", &MOD_FF, &ff, 2, 300, 24, 1, 1, d);
  ff.router.cosine_sim_routing = 1;
  ok &= doubling("routed ff, cosine routing", &MOD_FF, &ff, 2, 300, 24, 0, 2, d);
  setenv("C5_FF_CHUNK_ROWS", "37", 1);   /* chunks of rows: the accumulators still add each chunk's parts exactly */
  ok &= doubling("routed ff, cosine routing, chunks of 37 rows", &MOD_FF, &ff, 2, 300, 24, 0, 2, d);
  unsetenv("C5_FF_CHUNK_ROWS");
  /* 23 rows: the light FF in chunks 5, 5, 5, 5, 3; the heavy on its 12 routed rows, 5, 5, 2 */
  c5_routed_ff_config fc = C5_ROUTED_FF_CONFIG_DEFAULT;
  fc.dim = 24; fc.num_heavy_tokens = 12; fc.router = mod_soft_router();
  ok &= chunked("routed ff, 23 rows in chunks of 5 against one", &MOD_FF, &fc, 1, 23, 24, 5, d);

  c5_routed_attn_config at = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  at.dim = 24; at.num_heavy_tokens_q = 80; at.num_heavy_tokens_kv = 100; at.light_dim_head = 8; at.light_heads = 2;
  at.light_window_size = 32; at.heavy_dim_head = 8; at.heavy_heads = 4; at.num_routed_kv = 2;
  at.multiply_keys_by_score = 1; at.rotary_emb = 1; at.router = mod_soft_router();
  ok &= doubling("routed attn, 2 kv routes, rotary, key scores, mask", &MOD_AT, &at, 2, 300, 24, 1, 3, d);

  c5_block_config bl;
  bl.attn = at;
  bl.attn.num_routed_kv = 1; bl.attn.multiply_keys_by_score = 0; bl.attn.rotary_emb = 0;
  bl.ff = ff;
  bl.ff.router.cosine_sim_routing = 0;
  ok &= doubling("block, mask", &MOD_BL, &bl, 2, 300, 24, 1, 4, d);

  c5_routed_ar_attn_config ar = C5_ROUTED_AR_ATTN_CONFIG_DEFAULT;
  ar.dim = 24; ar.num_heavy_tokens_q = 16; ar.num_heavy_tokens_kv = 24; ar.light_dim_head = 8; ar.light_heads = 2;
  ar.light_window_size = 16; ar.heavy_window_size = 64; ar.heavy_dim_head = 8; ar.heavy_heads = 4; ar.num_routed_kv = 2;
  ar.rotary_emb = 1; ar.router = mod_soft_router();
  ok &= doubling("autoregressive attn, 2 kv routes, rotary", &MOD_AR, &ar, 2, 300, 24, 0, 5, d);

  c5_dist_destroy(&d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
