/* test_routed_ar_attn.c - ConditionalRoutedAutoregressiveAttention
   (lib/routed_ar_attn.c), one rank:
   - double: dx and every parameter gradient against central differences of
     loss = sum(out * g). The routers run with straight_through off and eps 0.3
     (docs/design.md §2: with it on, the forward does not depend on the router
     parameters). A perturbation that changes any router's selection sits on a
     kink and is left out (the check says how many);
   - both precisions: forward + backward are finite, results are bit-identical
     for 1 and 2 OpenMP threads, a second backward accumulates the parameter
     gradients (+=) and rewrites dx (=), causality (out[t] does not depend on
     x[t'] for t' > t), window 0 gets no heavy output, bad options fail.
   The forward itself is checked against the reference by the golden vectors
   ar_attn_*.h5. */
#include <string.h>
#include <omp.h>
#include "fd.h"

typedef struct {
  c5_params *p;
  c5_routed_ar_attn *m;
  c5_routed_ar_attn_cache *c;
  c5_layout lay;
  long b, n, N;
  c5_real *x, *g, *out, *dx;
} arcase;

static void case_free(arcase *t)
{
  c5_routed_ar_attn_cache_destroy(&t->c);
  c5_routed_ar_attn_destroy(&t->m);
  c5_params_destroy(&t->p);
  free(t->x); free(t->g); free(t->out); free(t->dx);
  memset(t, 0, sizeof *t);
}

/* Parameters ~ N(0, 1/fan-in) (norm weights near 1), x and g ~ N(0, 1). */
static c5_status case_make(arcase *t, const c5_routed_ar_attn_config *cfg, long b, long n, c5_dist *d,
                           unsigned long long seed)
{
  memset(t, 0, sizeof *t);
  c5_status st;
  t->b = b; t->n = n; t->N = b * n * cfg->dim;
  if ((st = c5_params_create(c5_backend_cpu(), &t->p)) != C5_OK) return st;
  if ((st = c5_routed_ar_attn_create(cfg, t->p, "", &t->m)) != C5_OK) return st;
  if ((st = c5_params_alloc(t->p)) != C5_OK) return st;
  mod_fill_params(t->p, &seed);
  t->x = malloc((size_t)t->N * sizeof *t->x);
  t->g = malloc((size_t)t->N * sizeof *t->g);
  t->out = calloc((size_t)t->N, sizeof *t->out);
  t->dx = calloc((size_t)t->N, sizeof *t->dx);
  if (!t->x || !t->g || !t->out || !t->dx) return C5_ERR_MEM;
  for (long i = 0; i < t->N; i++) { t->x[i] = (c5_real)t_normal(&seed); t->g[i] = (c5_real)t_normal(&seed); }
  long unit;
  if ((st = c5_routed_ar_attn_layout_unit(cfg, &unit)) != C5_OK) return st;
  if ((st = c5_layout_compute(d, n, unit, &t->lay)) != C5_OK) return st;
  return c5_routed_ar_attn_cache_create(t->m, b, n, &t->c);
}

static double loss(arcase *t, c5_dist *d, c5_status *st)
{
  *st = c5_routed_ar_attn_forward(t->m, d, &t->lay, t->b, t->x, t->c, t->out);
  double L = 0;
  for (long i = 0; i < t->N; i++) L += (double)t->out[i] * t->g[i];
  return L;
}

/* A small autoregressive module: dim 8, 2 + 2 heads of 4. */
static c5_routed_ar_attn_config small(long light_w, long heavy_w, long kq, long kkv)
{
  c5_routed_ar_attn_config c = C5_ROUTED_AR_ATTN_CONFIG_DEFAULT;
  c.dim = 8; c.light_dim_head = 4; c.light_heads = 2; c.heavy_dim_head = 4; c.heavy_heads = 2;
  c.light_window_size = light_w; c.heavy_window_size = heavy_w;
  c.num_heavy_tokens_q = kq; c.num_heavy_tokens_kv = kkv;
  c.router = mod_soft_router();
  return c;
}

#if C5_USE_DOUBLE
/* fd.h's check on the module (no mask), parameters, x and g drawn as case_make draws them. */
static int fd_case(const char *what, const c5_routed_ar_attn_config *cfg, long b, long n, unsigned long long seed,
                   c5_dist *d)
{
  return fd_check("fd ", 66, what, &MOD_AR, cfg, b, n, cfg->dim, 0, seed, d);
}
#endif

/* Finite results; 1 vs 2 threads bit-identical; a second backward adds to the parameter gradients and
   rewrites dx; window 0 (tokens < W) and causality: out[t] for t < t1 does not move when x[t1] does. */
static int props(const char *what, const c5_routed_ar_attn_config *cfg, long b, long n, unsigned long long seed,
                 c5_dist *d)
{
  arcase t;
  int ok = 0;
  c5_status st;
  long P = 0;
  c5_real *out1 = NULL, *dx1 = NULL, *gr1 = NULL;
  int nthr = omp_get_max_threads();
  T_OK(case_make(&t, cfg, b, n, d, seed));
  P = c5_params_total(t.p);
  out1 = malloc((size_t)t.N * sizeof *out1);
  dx1 = malloc((size_t)t.N * sizeof *dx1);
  gr1 = malloc((size_t)(P + 1) * sizeof *gr1);
  T_CHECK(out1 && dx1 && gr1, "out of memory");
  for (int pass = 0; pass < 2; pass++) {
    omp_set_num_threads(pass == 0 ? 1 : 2);
    c5_params_zero_grad(t.p);
    (void)loss(&t, d, &st);
    T_OK(st);
    T_OK(c5_routed_ar_attn_backward(t.m, d, t.c, t.x, t.g, t.dx));
    if (pass == 0) {
      memcpy(out1, t.out, (size_t)t.N * sizeof *out1);
      memcpy(dx1, t.dx, (size_t)t.N * sizeof *dx1);
      memcpy(gr1, c5_params_grad(t.p, 0), (size_t)P * sizeof *gr1);
    }
  }
  omp_set_num_threads(nthr);
  for (long i = 0; i < t.N; i++) T_CHECK(isfinite(t.out[i]) && isfinite(t.dx[i]), "%s: non-finite at %ld", what, i);
  for (long i = 0; i < P; i++) T_CHECK(isfinite(c5_params_grad(t.p, 0)[i]), "%s: non-finite gradient at %ld", what, i);
  T_CHECK(!memcmp(out1, t.out, (size_t)t.N * sizeof *out1), "%s: out differs between 1 and 2 threads", what);
  T_CHECK(!memcmp(dx1, t.dx, (size_t)t.N * sizeof *dx1), "%s: dx differs between 1 and 2 threads", what);
  T_CHECK(!memcmp(gr1, c5_params_grad(t.p, 0), (size_t)P * sizeof *gr1), "%s: gradients differ between 1 and 2 threads",
          what);
  /* accumulation: a second forward and backward (a backward spends its forward) double the parameter gradients,
     dx stays */
  (void)loss(&t, d, &st);
  T_OK(st);
  T_OK(c5_routed_ar_attn_backward(t.m, d, t.c, t.x, t.g, t.dx));
  for (long i = 0; i < P; i++) {
    double a = c5_params_grad(t.p, 0)[i], want = 2.0 * gr1[i];
    T_CHECK(fabs(a - want) <= 1e-5 * (fabs(want) + 1e-6), "%s: gradient %ld after two backwards %g, want %g", what, i,
            a, want);
  }
  T_CHECK(!memcmp(dx1, t.dx, (size_t)t.N * sizeof *dx1), "%s: dx is not rewritten by a second backward", what);
  /* causality at window granularity: changing x[0, t1] leaves out[0, s] for every s before t1's window
     (the q router of t1's own window sees the whole window, as in the reference), and leaves batch row 1
     alone, except with kv_gather_batch_bug and several routes: the reference then reads some rows' keys
     from other (batch, window) rows, and batch row 1 can see row 0 */
  {
    const long D = cfg->dim, W = cfg->heavy_window_size ? cfg->heavy_window_size : cfg->light_window_size;
    const int cross = cfg->kv_gather_batch_bug && cfg->num_routed_kv > 1;
    long moved1 = 0;
    T_CHECK(D <= 64, "%s: the causality check handles dim <= 64 (got %ld)", what, D);
    for (long t1 = W / 2; t1 < n; t1 += W) {
      const long tw = (t1 / W) * W;   /* t1's window starts at tw */
      c5_real keep[64];
      for (long k = 0; k < D && k < 64; k++) { keep[k] = t.x[t1 * D + k]; t.x[t1 * D + k] += (c5_real)1.5; }
      (void)loss(&t, d, &st);
      T_OK(st);
      for (long k = 0; k < D && k < 64; k++) t.x[t1 * D + k] = keep[k];
      for (long s = 0; s < tw; s++)
        for (long k = 0; k < D; k++)
          T_CHECK(t.out[s * D + k] == out1[s * D + k], "%s: out[0, %ld] moved when x[0, %ld] changed", what, s, t1);
      for (long s = 0; s < (b > 1 ? n : 0); s++)
        for (long k = 0; k < D; k++) moved1 += t.out[(n + s) * D + k] != out1[(n + s) * D + k];
    }
    T_CHECK(cross || moved1 == 0, "%s: batch row 1 moved when row 0 changed", what);
    if (cross) printf("      (kv_gather_batch_bug: %ld outputs of batch row 1 moved with row 0)\n", moved1);
  }
  ok = 1;
fail:
  printf("props %-63s %s\n", what, ok ? "ok" : "FAILED");
  free(out1); free(dx1); free(gr1);
  case_free(&t);
  return ok;
}

/* Window 0 gets no heavy output: with every heavy and null parameter changed, out[:W] stays. Also
   n <= W (no query window): the output is the light branch alone. */
static int window0(c5_dist *d)
{
  arcase t;
  int ok = 0;
  c5_status st;
  c5_real *o1 = NULL;
  c5_routed_ar_attn_config cfg = small(4, 6, 2, 5);
  T_OK(case_make(&t, &cfg, 2, 17, d, 77));
  o1 = malloc((size_t)t.N * sizeof *o1);
  T_CHECK(o1 != NULL, "out of memory");
  (void)loss(&t, d, &st);
  T_OK(st);
  memcpy(o1, t.out, (size_t)t.N * sizeof *o1);
  for (long i = 0; i < c5_params_count(t.p); i++)
    if (!strstr(c5_params_name(t.p, i), "light_attn"))
      for (long j = 0; j < c5_params_numel(t.p, i); j++) c5_params_value(t.p, i)[j] += (c5_real)0.25;
  (void)loss(&t, d, &st);
  T_OK(st);
  for (long b = 0; b < 2; b++)
    for (long s = 0; s < 17; s++)
      for (long k = 0; k < 8; k++) {
        int same = t.out[(b * 17 + s) * 8 + k] == o1[(b * 17 + s) * 8 + k];
        T_CHECK(s < 6 ? same : !same, "window 0: out[%ld, %ld, %ld] %s", b, s, k, s < 6 ? "moved" : "did not move");
      }
  case_free(&t);
  /* n = 5 < W = 6: nothing routed, the routings are empty, and backward works */
  T_OK(case_make(&t, &cfg, 1, 5, d, 78));
  (void)loss(&t, d, &st);
  T_OK(st);
  T_CHECK(c5_routed_ar_attn_routing_q(t.c)->rows == 0 && c5_routed_ar_attn_routing_kv(t.c)->rows == 0,
          "n < W: routings have rows");
  T_OK(c5_routed_ar_attn_backward(t.m, d, t.c, t.x, t.g, t.dx));
  ok = 1;
fail:
  printf("props %-63s %s\n", "window 0 has no heavy output; n < heavy window", ok ? "ok" : "FAILED");
  free(o1);
  case_free(&t);
  return ok;
}

static int bad_args(void)
{
  int ok = 0;
  c5_params *p = NULL;
  c5_routed_ar_attn *m = NULL;
  c5_routed_ar_attn_config c = small(4, 0, 2, 3);
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  c.num_heavy_tokens_kv = 0;
  T_FAILS(c5_routed_ar_attn_create(&c, p, "", &m), C5_ERR_ARG, "num_heavy_tokens_kv = 0");
  c = small(4, 0, 2, 3);
  c.num_routed_kv = 3;
  T_FAILS(c5_routed_ar_attn_create(&c, p, "", &m), C5_ERR_ARG, "divisible by num_routed_kv = 3");
  c = small(4, -2, 2, 3);
  T_FAILS(c5_routed_ar_attn_create(&c, p, "", &m), C5_ERR_ARG, "heavy_window_size = -2");
  c = small(4, 0, 2, 3);
  c.heavy_dim_head = 3; c.rotary_emb = 1;
  T_FAILS(c5_routed_ar_attn_create(&c, p, "", &m), C5_ERR_ARG, "even heavy_dim_head");
  ok = 1;
fail:
  printf("props %-63s %s\n", "invalid options", ok ? "ok" : "FAILED");
  c5_routed_ar_attn_destroy(&m);
  c5_params_destroy(&p);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int ok = 1;
  c5_dist *d = NULL;
  if (c5_dist_create(MPI_COMM_SELF, &d) != C5_OK) { fprintf(stderr, "%s\n", c5_last_error()); MPI_Finalize(); return 1; }

  /* n = 23: not a multiple of either window; heavy 6 != light 4; rows with fewer unmasked keys than k */
  c5_routed_ar_attn_config a = small(4, 6, 3, 8);
  c5_routed_ar_attn_config r = a;
  r.rotary_emb = 1; r.num_routed_kv = 2; r.multiply_keys_by_score = 1; r.multiply_queries_by_score = 1;
  c5_routed_ar_attn_config rb = r;
  rb.kv_gather_batch_bug = 1;
  c5_routed_ar_attn_config u = small(5, 0, 6, 40);   /* W = 5 <= 6 and 25 <= 40: both routers unrouted */
  u.use_null_q_tokens = 0; u.rotary_emb = 1;
  c5_routed_ar_attn_config st = small(4, 6, 3, 8);   /* straight-through scores (the default router) */
  st.router = (c5_router_config)C5_ROUTER_CONFIG_DEFAULT;
#if C5_USE_DOUBLE
  ok &= fd_case("n 23, light 4, heavy 6, k 3 / 8", &a, 2, 23, 1, d);
  ok &= fd_case("rotary, 2 kv routes, scores on q and k", &r, 2, 23, 2, d);
  ok &= fd_case("rotary, 2 kv routes, kv_gather_batch_bug", &rb, 2, 23, 3, d);
  ok &= fd_case("unrouted q and kv, rotary, no null q", &u, 2, 22, 4, d);
#else
  printf("finite differences need double precision: skipped in this build\n");
#endif
  ok &= props("n 23, light 4, heavy 6", &a, 2, 23, 5, d);
  ok &= props("rotary, 2 kv routes", &r, 2, 23, 9, d);
  ok &= props("rotary, 2 kv routes, kv_gather_batch_bug", &rb, 2, 23, 6, d);
  ok &= props("unrouted q and kv", &u, 2, 22, 7, d);
  ok &= props("straight-through routers", &st, 2, 40, 8, d);
  st.random_route = 1; st.random_seed = 12345;
  ok &= props("random_route (negative control)", &st, 2, 40, 10, d);
  ok &= window0(d);
  ok &= bad_args();

  c5_dist_destroy(&d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
