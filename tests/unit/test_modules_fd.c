/* test_modules_fd.c - finite-difference checks of the module backwards
   (ConditionalRoutedFeedForward, ConditionalRoutedAttention,
   ConditionalRoutedTransformerBlock): dx and every parameter gradient
   against central differences of loss = sum(out * g). Routers run with
   straight_through off and eps 0.3 (DESIGN.md §2): with it on, the forward
   does not depend on the router parameters. Each perturbation must keep
   every router's selection, else the point is at a kink and the check says so.
   Double precision only (exit 77 in single). */
#include <string.h>
#include "harness.h"

typedef struct {
  const char *name;
  c5_status (*create)(const void *cfg, c5_params *p, void **m);
  c5_status (*cache)(void *m, long b, long n, void **c);
  c5_status (*fwd)(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o);
  c5_status (*bwd)(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx);
  const c5_routing *(*routing)(void *c, int i);   /* NULL past the last */
  void (*destroy)(void **m, void **c);
} mod_t;

static c5_status ff_create(const void *cfg, c5_params *p, void **m) { return c5_routed_ff_create(cfg, p, "", (c5_routed_ff **)m); }
static c5_status ff_cache(void *m, long b, long n, void **c) { return c5_routed_ff_cache_create(m, b, n, (c5_routed_ff_cache **)c); }
static c5_status ff_fwd(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o) { return c5_routed_ff_forward(m, d, l, b, x, mk, c, o); }
static c5_status ff_bwd(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx) { return c5_routed_ff_backward(m, d, c, x, g, dx); }
static const c5_routing *ff_routing(void *c, int i) { return i == 0 ? c5_routed_ff_routing(c) : NULL; }
static void ff_destroy(void **m, void **c) { c5_routed_ff_cache_destroy((c5_routed_ff_cache **)c); c5_routed_ff_destroy((c5_routed_ff **)m); }

static c5_status at_create(const void *cfg, c5_params *p, void **m) { return c5_routed_attn_create(cfg, p, "", (c5_routed_attn **)m); }
static c5_status at_cache(void *m, long b, long n, void **c) { return c5_routed_attn_cache_create(m, b, n, (c5_routed_attn_cache **)c); }
static c5_status at_fwd(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o) { return c5_routed_attn_forward(m, d, l, b, x, mk, c, o); }
static c5_status at_bwd(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx) { return c5_routed_attn_backward(m, d, c, x, g, dx); }
static const c5_routing *at_routing(void *c, int i) { return i == 0 ? c5_routed_attn_routing_q(c) : i == 1 ? c5_routed_attn_routing_kv(c) : NULL; }
static void at_destroy(void **m, void **c) { c5_routed_attn_cache_destroy((c5_routed_attn_cache **)c); c5_routed_attn_destroy((c5_routed_attn **)m); }

static c5_status bl_create(const void *cfg, c5_params *p, void **m) { return c5_block_create(cfg, p, "", (c5_block **)m); }
static c5_status bl_cache(void *m, long b, long n, void **c) { return c5_block_cache_create(m, b, n, (c5_block_cache **)c); }
static c5_status bl_fwd(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o) { return c5_block_forward(m, d, l, b, x, mk, c, o); }
static c5_status bl_bwd(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx) { return c5_block_backward(m, d, c, x, g, dx); }
static const c5_routing *bl_routing(void *c, int i)
{
  if (i == 0) return c5_routed_attn_routing_q(c5_block_attn_cache(c));
  if (i == 1) return c5_routed_attn_routing_kv(c5_block_attn_cache(c));
  if (i == 2) return c5_routed_ff_routing(c5_block_ff_cache(c));
  return NULL;
}
static void bl_destroy(void **m, void **c) { c5_block_cache_destroy((c5_block_cache **)c); c5_block_destroy((c5_block **)m); }

static const mod_t FF = { "ConditionalRoutedFeedForward", ff_create, ff_cache, ff_fwd, ff_bwd, ff_routing, ff_destroy };
static const mod_t AT = { "ConditionalRoutedAttention", at_create, at_cache, at_fwd, at_bwd, at_routing, at_destroy };
static const mod_t BL = { "ConditionalRoutedTransformerBlock", bl_create, bl_cache, bl_fwd, bl_bwd, bl_routing, bl_destroy };

/* Concatenated indices of every router (to detect a changed selection). */
static long selection(const mod_t *mt, void *c, long *buf, long cap)
{
  long n = 0;
  const c5_routing *rt;
  for (int i = 0; (rt = mt->routing(c, i)); i++)
    for (long r = 0; rt->routed && r < rt->rows; r++)
      for (long e = rt->start[r]; e < rt->start[r] + rt->count[r] && n < cap; e++) buf[n++] = rt->idx[e];
  return n;
}

static double loss_of(const mod_t *mt, void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x,
                      const uint8_t *mask, void *c, c5_real *out, const c5_real *g, long N, c5_status *st)
{
  *st = mt->fwd(m, d, l, b, x, mask, c, out);
  double L = 0;
  for (long i = 0; i < N; i++) L += (double)out[i] * g[i];
  return L;
}

static int check(const char *what, const mod_t *mt, const void *cfg, long b, long n, int dim, int masked,
                 unsigned long long seed, c5_dist *d)
{
  const double h = 1e-6, tol = 1e-6;
  c5_params *p = NULL;
  void *m = NULL, *c = NULL;
  long N = b * n * dim, sel0[4096], sel1[4096], ns0, ns1;
  c5_real *x = malloc((size_t)N * sizeof *x), *g = malloc((size_t)N * sizeof *g), *out = malloc((size_t)N * sizeof *out);
  c5_real *dx = malloc((size_t)N * sizeof *dx);
  uint8_t *mask = masked ? malloc((size_t)(b * n)) : NULL;
  double num = 0, den = 0;
  int ok = 0, kinks = 0;
  c5_layout lay;
  c5_status st;
  T_OK(c5_params_create(&p));
  T_OK(mt->create(cfg, p, &m));
  T_OK(c5_params_alloc(p));
  for (long i = 0; i < c5_params_count(p); i++) {   /* N(0, 1/fan-in)-ish values, norms near 1 */
    c5_real *v = c5_params_value(p, i);
    long dims[C5_PARAM_MAXDIM];
    int nd = c5_params_shape(p, i, dims);
    double sc = nd >= 2 ? 1.0 / sqrt((double)dims[nd - 1]) : 0.3;
    int is_norm = strstr(c5_params_name(p, i), "gamma") || strstr(c5_params_name(p, i), "norm.weight");
    for (long j = 0; j < c5_params_numel(p, i); j++) v[j] = (c5_real)((is_norm ? 1.0 : 0.0) + sc * t_normal(&seed));
  }
  for (long i = 0; i < N; i++) { x[i] = (c5_real)t_normal(&seed); g[i] = (c5_real)t_normal(&seed); }
  if (mask) for (long i = 0; i < b * n; i++) mask[i] = t_uniform(&seed) > 0.2;
  T_OK(c5_layout_compute(d, n, 1, &lay));
  T_OK(mt->cache(m, b, n, &c));
  (void)loss_of(mt, m, d, &lay, b, x, mask, c, out, g, N, &st);
  T_OK(st);
  ns0 = selection(mt, c, sel0, 4096);
  c5_params_zero_grad(p);
  T_OK(mt->bwd(m, d, c, x, g, dx));
  /* every x entry, then every parameter entry */
  long total = N + c5_params_total(p);
  c5_real *pv = c5_params_value(p, 0), *pg = c5_params_grad(p, 0);
  for (long i = 0; i < total; i++) {
    c5_real *v = i < N ? &x[i] : &pv[i - N];
    double an = i < N ? dx[i] : pg[i - N];
    c5_real v0 = *v;
    *v = v0 + (c5_real)h;
    double lp = loss_of(mt, m, d, &lay, b, x, mask, c, out, g, N, &st);
    T_OK(st);
    ns1 = selection(mt, c, sel1, 4096);
    int same = ns1 == ns0 && !memcmp(sel0, sel1, (size_t)ns0 * sizeof *sel0);
    *v = v0 - (c5_real)h;
    double lm = loss_of(mt, m, d, &lay, b, x, mask, c, out, g, N, &st);
    T_OK(st);
    ns1 = selection(mt, c, sel1, 4096);
    same = same && ns1 == ns0 && !memcmp(sel0, sel1, (size_t)ns0 * sizeof *sel0);
    *v = v0;
    if (!same) { kinks++; continue; }
    double fd = (lp - lm) / (2 * h);
    num += (fd - an) * (fd - an);
    den += fd * fd;
  }
  T_CHECK(kinks < total / 50 + 1, "%s: %d of %ld perturbations changed a selection", what, kinks, total);
  T_CHECK(den > 0, "%s: zero gradient: the check would be vacuous", what);
  T_CHECK(sqrt(num / den) <= tol, "%s: ||analytic - fd|| / ||fd|| = %.3e > %.1e", what, sqrt(num / den), tol);
  ok = 1;
fail:
  printf("%-58s %s (rel %.2e, %ld values, %d at a kink)\n", what, ok ? "ok" : "FAILED", den > 0 ? sqrt(num / den) : 0.0,
         N + (p ? c5_params_total(p) : 0), kinks);
  if (m) mt->destroy(&m, &c);
  c5_params_destroy(&p);
  free(x); free(g); free(out); free(dx); free(mask);
  return ok;
}

static c5_router_config soft_router(void)
{
  c5_router_config r = C5_ROUTER_CONFIG_DEFAULT;
  r.straight_through = 0;
  r.eps = 0.3;
  return r;
}

/* --dump FILE: a larger block (n = 900, dim 64, mask) forward+backward, its
   output, dx and all parameter gradients written raw (test_threads.sh). */
static int dump(c5_dist *d, const char *path)
{
  c5_block_config bl;
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;
  a.dim = 64; a.num_heavy_tokens_q = 100; a.num_heavy_tokens_kv = 120; a.light_dim_head = 16; a.light_heads = 2;
  a.light_window_size = 32; a.heavy_dim_head = 16; a.heavy_heads = 4; a.num_routed_kv = 2;
  f.dim = 64; f.num_heavy_tokens = 150;
  bl.attn = a;
  bl.ff = f;
  const long b = 2, n = 900, N = b * n * 64;
  c5_params *p = NULL;
  void *m = NULL, *c = NULL;
  c5_real *x = malloc((size_t)N * sizeof *x), *g = malloc((size_t)N * sizeof *g), *out = malloc((size_t)N * sizeof *out);
  c5_real *dx = malloc((size_t)N * sizeof *dx);
  uint8_t *mask = malloc((size_t)(b * n));
  unsigned long long seed = 11;
  c5_layout lay;
  FILE *fp = NULL;
  int ok = 0;
  T_OK(c5_params_create(&p));
  T_OK(BL.create(&bl, p, &m));
  T_OK(c5_params_alloc(p));
  for (long i = 0; i < c5_params_total(p); i++) c5_params_value(p, 0)[i] = (c5_real)(0.2 * t_normal(&seed));
  for (long i = 0; i < N; i++) { x[i] = (c5_real)t_normal(&seed); g[i] = (c5_real)t_normal(&seed); }
  for (long i = 0; i < b * n; i++) mask[i] = t_uniform(&seed) > 0.1;
  T_OK(c5_layout_compute(d, n, 1, &lay));
  T_OK(BL.cache(m, b, n, &c));
  T_OK(BL.fwd(m, d, &lay, b, x, mask, c, out));
  T_OK(BL.bwd(m, d, c, x, g, dx));
  fp = fopen(path, "wb");
  T_CHECK(fp != NULL, "cannot write %s", path);
  fwrite(out, sizeof *out, (size_t)N, fp);
  fwrite(dx, sizeof *dx, (size_t)N, fp);
  fwrite(c5_params_grad(p, 0), sizeof *out, (size_t)c5_params_total(p), fp);
  ok = fclose(fp) == 0;
fail:
  if (m) BL.destroy(&m, &c);
  c5_params_destroy(&p);
  free(x); free(g); free(out); free(dx); free(mask);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int ok = 1;
  c5_dist *d = NULL;
  if (argc == 3 && !strcmp(argv[1], "--dump")) {
    if (c5_dist_create(MPI_COMM_SELF, &d) != C5_OK) return 1;
    ok = dump(d, argv[2]);
    c5_dist_destroy(&d);
    MPI_Finalize();
    return ok ? 0 : 1;
  }
  if (!C5_USE_DOUBLE) { printf("finite differences need double precision: skipped\n"); MPI_Finalize(); return 77; }
  if (c5_dist_create(MPI_COMM_SELF, &d) != C5_OK) { fprintf(stderr, "%s\n", c5_last_error()); return 1; }

  c5_routed_ff_config ff = C5_ROUTED_FF_CONFIG_DEFAULT;
  ff.dim = 6; ff.num_heavy_tokens = 5; ff.heavy_ff_mult = 2; ff.router = soft_router();
  ok &= check("routed ff, mask", &FF, &ff, 2, 14, 6, 1, 1, d);
  ff.router.cosine_sim_routing = 1; ff.router.cosine_sim_scale = 4;
  ok &= check("routed ff, cosine routing", &FF, &ff, 2, 14, 6, 0, 2, d);

  c5_routed_attn_config at = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  at.dim = 8; at.num_heavy_tokens_q = 5; at.num_heavy_tokens_kv = 6; at.light_dim_head = 4; at.light_heads = 2;
  at.light_window_size = 8; at.heavy_dim_head = 4; at.heavy_heads = 2; at.router = soft_router();
  ok &= check("routed attn, mask, n % window != 0", &AT, &at, 2, 14, 8, 1, 3, d);
  at.num_routed_kv = 2; at.multiply_keys_by_score = 1; at.multiply_queries_by_score = 1; at.rotary_emb = 1;
  at.use_null_q_tokens = 0;
  ok &= check("routed attn, 2 kv routes, scores on q and k, rotary, no null q", &AT, &at, 2, 12, 8, 0, 4, d);
  at.has_light_attn = 0; at.num_routed_kv = 1; at.rotary_emb = 0; at.use_null_q_tokens = 1;
  ok &= check("routed attn, no light branch, mask", &AT, &at, 1, 12, 8, 1, 5, d);

  c5_block_config bl;
  c5_routed_attn_config a2 = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  bl.attn = a2;
  bl.attn.dim = 8; bl.attn.num_heavy_tokens_q = 4; bl.attn.num_heavy_tokens_kv = 5; bl.attn.light_dim_head = 4;
  bl.attn.light_heads = 2; bl.attn.light_window_size = 8; bl.attn.heavy_dim_head = 4; bl.attn.heavy_heads = 2;
  bl.attn.router = soft_router();
  bl.ff = ff;
  bl.ff.dim = 8; bl.ff.num_heavy_tokens = 6; bl.ff.router = soft_router();
  ok &= check("block, mask", &BL, &bl, 2, 12, 8, 1, 6, d);

  c5_dist_destroy(&d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
