/* test_modules_fd.c - finite-difference checks of the module backwards
   (ConditionalRoutedFeedForward, ConditionalRoutedAttention,
   ConditionalRoutedTransformerBlock): dx and every parameter gradient
   against central differences of loss = sum(out * g). Routers run with
   straight_through off and eps 0.3 (docs/design.md §2): with it on, the forward
   does not depend on the router parameters. Each perturbation must keep
   every router's selection, else the point is at a kink and the check says so.
   Double precision only (exit 77 in single); before that, in either precision,
   the block (its residuals added by its modules' own ops, c5_internal.h)
   against the unfused sums of its modules' public calls: x1 = attn(x) + x,
   out = ff(x1) + x1, dx1 = dff + dout, dx = dattn + dx1 (the same sums in
   another order: norm-wise 1e-12 in double, 1e-5 in single), with and without
   the light attention branch. */
#include "fd.h"

/* One case: its line is the description in 58 columns, then the numbers. */
static int check(const char *what, const mod_t *mt, const void *cfg, long b, long n, int dim, int masked,
                 unsigned long long seed, c5_dist *d)
{
  return fd_check("", 58, what, mt, cfg, b, n, dim, masked, seed, d);
}

/* --dump FILE: a larger block (n = 900, dim 64, mask) forward+backward, its
   output, dx and all parameter gradients written raw (test_threads.sh,
   jobs/compare.sh), and FILE.names: "out N", "dx N", then "name numel" for
   each parameter in slab order. */
static double normwise(const c5_real *a, const c5_real *b, long n)
{
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The block against its modules with the residuals added after (one params each, the same values: the block
   makes its modules in this order under these prefixes, so the slabs line up). */
static int fused(c5_dist *d, const c5_block_config *bl, const char *what)
{
  const long b = 2, n = 16, D = bl->attn.dim, N = b * n * D;
  const double tol = C5_USE_DOUBLE ? 1e-12 : 1e-5;
  c5_params *p = NULL, *q = NULL;
  c5_block *blk = NULL;
  c5_block_cache *bc = NULL;
  c5_routed_attn *at = NULL;
  c5_routed_ff *ff = NULL;
  c5_routed_attn_cache *ac = NULL;
  c5_routed_ff_cache *fc = NULL;
  c5_real *x = malloc(N * sizeof *x), *g = malloc(N * sizeof *g), *out = malloc(N * sizeof *out);
  c5_real *dx = malloc(N * sizeof *dx), *x1 = malloc(N * sizeof *x1), *out2 = malloc(N * sizeof *out2);
  c5_real *dx1 = malloc(N * sizeof *dx1), *dx2 = malloc(N * sizeof *dx2);
  uint8_t *mask = malloc(b * n);
  unsigned long long seed = 23;
  double e[3] = { NAN, NAN, NAN };
  int ok = 0;
  c5_layout lay;
  long unit;
  T_CHECK(x && g && out && dx && x1 && out2 && dx1 && dx2 && mask, "out of memory");
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_OK(c5_params_create(c5_backend_cpu(), &q));
  T_OK(c5_block_create(bl, p, "", &blk));
  T_OK(c5_routed_attn_create(&bl->attn, q, "conditional_attn", &at));
  T_OK(c5_routed_ff_create(&bl->ff, q, "conditional_ff", &ff));
  T_OK(c5_params_alloc(p));
  T_OK(c5_params_alloc(q));
  const long np = c5_params_total(p);
  T_CHECK(np == c5_params_total(q), "%ld parameters in the block, %ld in its modules", np, c5_params_total(q));
  for (long i = 0; i < np; i++) c5_params_value(q, 0)[i] = c5_params_value(p, 0)[i] = (c5_real)(0.3 * t_normal(&seed));
  for (long i = 0; i < N; i++) { x[i] = (c5_real)t_normal(&seed); g[i] = (c5_real)t_normal(&seed); }
  for (long i = 0; i < b * n; i++) mask[i] = t_uniform(&seed) > 0.1;
  T_OK(c5_block_layout_unit(bl, &unit));
  T_OK(c5_layout_compute(d, n, unit, &lay));
  T_OK(c5_block_cache_create(blk, b, n, &bc));
  T_OK(c5_routed_attn_cache_create(at, b, n, &ac));
  T_OK(c5_routed_ff_cache_create(ff, b, n, &fc));
  T_OK(c5_block_forward(blk, d, &lay, b, x, mask, bc, out));
  T_OK(c5_block_backward(blk, d, bc, x, g, dx));
  T_OK(c5_routed_attn_forward(at, d, &lay, b, x, mask, ac, x1));
  for (long i = 0; i < N; i++) x1[i] += x[i];
  T_OK(c5_routed_ff_forward(ff, d, &lay, b, x1, mask, fc, out2));
  for (long i = 0; i < N; i++) out2[i] += x1[i];
  T_OK(c5_routed_ff_backward(ff, d, fc, x1, g, dx1));
  for (long i = 0; i < N; i++) dx1[i] += g[i];
  T_OK(c5_routed_attn_backward(at, d, ac, x, dx1, dx2));
  for (long i = 0; i < N; i++) dx2[i] += dx1[i];
  e[0] = normwise(out, out2, N);
  e[1] = normwise(dx, dx2, N);
  e[2] = normwise(c5_params_grad(p, 0), c5_params_grad(q, 0), np);
  ok = e[0] <= tol && e[1] <= tol && e[2] <= tol;
fail:
  printf("%-58s out %.1e dx %.1e grads %.1e (tol %.0e): %s\n", what, e[0], e[1], e[2], tol, ok ? "ok" : "FAIL");
  c5_block_cache_destroy(&bc);
  c5_routed_attn_cache_destroy(&ac);
  c5_routed_ff_cache_destroy(&fc);
  c5_block_destroy(&blk);
  c5_routed_attn_destroy(&at);
  c5_routed_ff_destroy(&ff);
  c5_params_destroy(&p);
  c5_params_destroy(&q);
  free(x); free(g); free(out); free(dx); free(x1); free(out2); free(dx1); free(dx2); free(mask);
  return ok;
}

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
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_OK(MOD_BL.create(&bl, p, &m));
  T_OK(c5_params_alloc(p));
  for (long i = 0; i < c5_params_total(p); i++) c5_params_value(p, 0)[i] = (c5_real)(0.2 * t_normal(&seed));
  for (long i = 0; i < N; i++) { x[i] = (c5_real)t_normal(&seed); g[i] = (c5_real)t_normal(&seed); }
  for (long i = 0; i < b * n; i++) mask[i] = t_uniform(&seed) > 0.1;
  long unit;
  T_OK(c5_block_layout_unit(&bl, &unit));
  T_OK(c5_layout_compute(d, n, unit, &lay));
  T_OK(MOD_BL.cache(m, b, n, &c));
  T_OK(MOD_BL.fwd(m, d, &lay, b, x, mask, c, out));
  T_OK(MOD_BL.bwd(m, d, c, x, g, dx));
  fp = fopen(path, "wb");
  T_CHECK(fp != NULL, "cannot write %s", path);
  fwrite(out, sizeof *out, (size_t)N, fp);
  fwrite(dx, sizeof *dx, (size_t)N, fp);
  fwrite(c5_params_grad(p, 0), sizeof *out, (size_t)c5_params_total(p), fp);
  ok = fclose(fp) == 0;
  fp = NULL;
  char nm[4096];
  snprintf(nm, sizeof nm, "%s.names", path);
  fp = fopen(nm, "w");
  T_CHECK(fp != NULL, "cannot write %s", nm);
  fprintf(fp, "out %ld\ndx %ld\n", N, N);
  for (long i = 0; i < c5_params_count(p); i++) fprintf(fp, "%s %ld\n", c5_params_name(p, i), c5_params_numel(p, i));
  ok &= fclose(fp) == 0;
  fp = NULL;
fail:
  if (fp) fclose(fp);
  mod_free(&MOD_BL, &m, &c);
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
  if (c5_dist_create(MPI_COMM_SELF, &d) != C5_OK) { fprintf(stderr, "%s\n", c5_last_error()); return 1; }
  {
    c5_block_config fb;
    fb.attn = (c5_routed_attn_config)C5_ROUTED_ATTN_CONFIG_DEFAULT;
    fb.ff = (c5_routed_ff_config)C5_ROUTED_FF_CONFIG_DEFAULT;
    fb.attn.dim = fb.ff.dim = 8; fb.attn.num_heavy_tokens_q = 5; fb.attn.num_heavy_tokens_kv = 6;
    fb.attn.light_dim_head = 4; fb.attn.light_heads = 2; fb.attn.light_window_size = 8; fb.attn.heavy_dim_head = 4;
    fb.attn.heavy_heads = 2; fb.ff.num_heavy_tokens = 6;
    ok &= fused(d, &fb, "block == its modules, residuals added after");
    fb.attn.has_light_attn = 0;
    ok &= fused(d, &fb, "block == its modules, residuals added after; no light attn");
  }
  if (!C5_USE_DOUBLE) {
    printf("finite differences need double precision: skipped\n");
    c5_dist_destroy(&d);
    MPI_Finalize();
    return ok ? 77 : 1;
  }

  c5_routed_ff_config ff = C5_ROUTED_FF_CONFIG_DEFAULT;
  ff.dim = 6; ff.num_heavy_tokens = 5; ff.heavy_ff_mult = 2; ff.router = mod_soft_router();
  ok &= check("routed ff, mask", &MOD_FF, &ff, 2, 14, 6, 1, 1, d);
  ff.router.cosine_sim_routing = 1; ff.router.cosine_sim_scale = 4;
  ok &= check("routed ff, cosine routing", &MOD_FF, &ff, 2, 14, 6, 0, 2, d);
  /* the FeedForwards in chunks of 5 rows (lib/ffnet.h; read at the cache's layout): the light one's 23 rows 5, 5,
     5, 5, 3, the heavy one's 12 routed rows 5, 5, 2 */
  setenv("C5_FF_CHUNK_ROWS", "5", 1);
  ff.num_heavy_tokens = 12;
  ok &= check("routed ff, cosine routing, chunks of 5 rows", &MOD_FF, &ff, 1, 23, 6, 1, 8, d);
  unsetenv("C5_FF_CHUNK_ROWS");

  c5_routed_attn_config at = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  at.dim = 8; at.num_heavy_tokens_q = 5; at.num_heavy_tokens_kv = 6; at.light_dim_head = 4; at.light_heads = 2;
  at.light_window_size = 8; at.heavy_dim_head = 4; at.heavy_heads = 2; at.router = mod_soft_router();
  ok &= check("routed attn, mask, n % window != 0", &MOD_AT, &at, 2, 14, 8, 1, 3, d);
  at.num_routed_kv = 2; at.multiply_keys_by_score = 1; at.multiply_queries_by_score = 1; at.rotary_emb = 1;
  at.use_null_q_tokens = 0; at.light_rotary_emb = 1;
  ok &= check("routed attn, 2 kv routes, scores on q and k, rotary (both branches), no null q", &MOD_AT, &at, 2, 12,
              8, 0, 4, d);
  at.has_light_attn = 0; at.num_routed_kv = 1; at.rotary_emb = 0; at.use_null_q_tokens = 1; at.light_rotary_emb = 0;
  ok &= check("routed attn, no light branch, mask", &MOD_AT, &at, 1, 12, 8, 1, 5, d);

  c5_block_config bl;
  c5_routed_attn_config a2 = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  bl.attn = a2;
  bl.attn.dim = 8; bl.attn.num_heavy_tokens_q = 4; bl.attn.num_heavy_tokens_kv = 5; bl.attn.light_dim_head = 4;
  bl.attn.light_heads = 2; bl.attn.light_window_size = 8; bl.attn.heavy_dim_head = 4; bl.attn.heavy_heads = 2;
  bl.attn.router = mod_soft_router();
  bl.ff = ff;
  bl.ff.dim = 8; bl.ff.num_heavy_tokens = 6; bl.ff.router = mod_soft_router();
  ok &= check("block, mask", &MOD_BL, &bl, 2, 12, 8, 1, 6, d);
  bl.attn.light_rotary_emb = 1;
  ok &= check("block, light rotary, mask, n % window != 0", &MOD_BL, &bl, 2, 14, 8, 1, 7, d);
  bl.attn.has_light_attn = 0; bl.attn.light_rotary_emb = 0;
  ok &= check("block, no light attention branch, mask", &MOD_BL, &bl, 2, 12, 8, 1, 8, d);

  c5_dist_destroy(&d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
