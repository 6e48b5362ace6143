/* test_routed_cross_attn.c - ConditionalRoutedCrossAttention (lib/routed_cross_attn.c):
     1. finite differences (double builds) of dx, dcontext and every parameter
        gradient, routers with straight_through off and eps 0.3 (docs/design.md §2),
        masks on both sides, two kv routes; each perturbation must keep both
        routers' selections, else the point sits at a kink and is counted;
     2. with context = x, context_mask = mask and the same parameters (copied
        by state_dict name) it equals ConditionalRoutedAttention with
        has_light_attn = 0: outputs, dx(routed) = dx + dcontext(cross), and
        every parameter gradient by name (1e-12 double, 1e-4 single);
     3. bad options and inputs give a C5_ERR_* status whose message names the
        option; state_dict names and shapes;
     4. sharded: x and the context each sharded over MPI_COMM_WORLD with their
        own layouts (units 1 to 3 times the library's, which are 1: any
        multiple does; lengths not divisible by P; and the fewest tokens the
        units allow, one query and one context token per rank) equal one
        rank (every rank also runs the whole sequence on MPI_COMM_SELF):
        outputs, dx, dcontext, every parameter gradient (summed over ranks)
        to 1e-12 in double (1e-4 single), the same routed indices and scores,
        over two forward/backward passes on one cache. Under
        `mpirun -np P` (P = 2, 3, 4) only this part runs, rank 0 prints.

   Where the two reference classes define the same computation (checked in 2).
   The cross attention's arguments map onto the routed attention's as
   num_tokens_q/kv -> num_heavy_tokens_q/kv, heads/dim_head ->
   heavy_heads/heavy_dim_head, kv_routing_tokens -> num_routed_kv; the
   parameters have the same names (null_q_token, q_router.routing_token,
   kv_router.routing_token, heavy_attn.{norm.gamma, null_kv, to_q.weight,
   to_kv.weight, to_out.weight}). With has_light_attn = False, rotary_emb =
   False, both call q_router(x, mask) and kv_router(x or context, mask), the
   same Attention and the same route_back, so they agree for:
     - the defaults (straight-through routers, null q tokens, one kv route);
     - use_null_q_tokens False (zeros instead of null_q_token);
     - multiply_keys_by_score True (both pass it to Attention);
     - num_routed_kv = kv_routing_tokens = 2, heads split between routes, with
       kv_gather_batch_bug 0 or 1 in both (the same router and batched_gather);
     - masks, including a batch row with every token masked;
     - any router_kwargs other than route_block_size: straight_through off,
       eps 0.3, cosine_sim_routing;
     - queries not routed (n <= num_tokens_q): the cross attention returns the
       heavy output as is, the routed attention multiplies it by the router's
       constant ones and skips null_q_token;
     - context not routed (n <= num_tokens_kv), one or two kv routes: the cross
       attention passes the whole context and context_mask with no kv score
       as one route over all heads; the routed attention repeats x and the mask
       per route with constant unit scores; to_kv's '(r h d)' rows are the
       same heads either way, and v * 1 = v;
     - both not routed;
     - multiply_queries_by_score True while the queries are not routed (the
       scores are constant ones, without gradient);
     - route_block_size B on the cross attention (kv router only) and
       router_kwargs route_block_size B on the routed attention, while the
       queries are not routed (the q router then ignores it).
   Where they differ (not tested for equality):
     - has_light_attn True: the cross attention has no light branch;
     - rotary_emb True: the cross attention has no rotary embeddings (its
       query and context positions are unrelated);
     - multiply_queries_by_score True with routed queries: the cross attention
       has no such option. With straight-through scores (1, or 0 for masked
       selections whose output is zeroed anyway) the outputs still agree but
       the routed attention sends a gradient to q_router through q * score,
       so q_router.routing_token's gradient differs (checked below as a
       difference); without straight-through the outputs differ too;
     - route_block_size with routed queries: router_kwargs carry it to both of
       the routed attention's routers, while the cross attention takes it for
       the kv router only (its router_kwargs cannot hold it: the reference
       would pass route_block_size twice, a TypeError; ours says so). */
#include <string.h>
#include "harness.h"

#if C5_USE_DOUBLE
#define EQ_TOL 1e-12   /* max |cross - routed| / max |routed|, per array */
#else
#define EQ_TOL 1e-4
#endif
#define FD_H 1e-6
#define FD_TOL 1e-6    /* ||analytic - fd|| / ||fd||, per gradient */

/* ---- helpers ------------------------------------------------------------------------------ */

/* N(0, 1/fan-in) matrices, norm gains near 1, other vectors 0.3 N(0,1) */
static void init_params(c5_params *p, unsigned long long seed)
{
  for (long i = 0; i < c5_params_count(p); i++) {
    c5_real *v = c5_params_value(p, i);
    long dims[C5_PARAM_MAXDIM];
    int nd = c5_params_shape(p, i, dims);
    double sc = nd >= 2 ? 1.0 / sqrt((double)dims[nd - 1]) : 0.3;
    int is_norm = strstr(c5_params_name(p, i), "gamma") != NULL;
    for (long j = 0; j < c5_params_numel(p, i); j++) v[j] = (c5_real)((is_norm ? 1.0 : 0.0) + sc * t_normal(&seed));
  }
}

static c5_real *randn(long n, unsigned long long *st)
{
  c5_real *x = malloc((size_t)(n ? n : 1) * sizeof *x);
  for (long i = 0; i < n; i++) x[i] = (c5_real)t_normal(st);
  return x;
}

/* ~20% of the tokens off; batch row `full` (if >= 0) entirely off */
static uint8_t *randmask(long b, long n, long full, unsigned long long *st)
{
  uint8_t *m = malloc((size_t)(b * n));
  for (long i = 0; i < b * n; i++) m[i] = t_uniform(st) > 0.2;
  if (full >= 0) memset(m + full * n, 0, (size_t)n);
  return m;
}

static c5_router_config soft_router(void)
{
  c5_router_config r = C5_ROUTER_CONFIG_DEFAULT;
  r.straight_through = 0;
  r.eps = 0.3;
  return r;
}

#if C5_USE_DOUBLE
/* Concatenated indices of both routers (to detect a changed selection; the finite-difference check's, double only). */
static long selection(const c5_routed_cross_attn_cache *c, long *buf, long cap)
{
  long n = 0;
  const c5_routing *rts[2] = { c5_routed_cross_attn_routing_q(c), c5_routed_cross_attn_routing_kv(c) };
  for (int i = 0; i < 2; i++)
    for (long r = 0; rts[i]->routed && r < rts[i]->rows; r++)
      for (long e = rts[i]->start[r]; e < rts[i]->start[r] + rts[i]->count[r] && n < cap; e++) buf[n++] = rts[i]->idx[e];
  return n;
}
#endif

static double max_abs_diff(const c5_real *a, const c5_real *b, long n, double *scale)
{
  double e = 0, s = 0;
  for (long i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    e = d > e || d != d ? d : e;
    s = fmax(s, fabs((double)b[i]));
  }
  *scale = s;
  return e;
}

/* ---- 1. finite differences ------------------------------------------------------------------ */

#if C5_USE_DOUBLE
typedef struct {
  c5_routed_cross_attn *m;
  c5_routed_cross_attn_cache *c;
  const c5_dist *d;
  c5_layout lx, lc;
  long b;
  c5_real *x, *ctx, *g, *out;
  uint8_t *mask, *cmask;
  long N;
} fdrun;

static double loss_of(fdrun *r, c5_status *st)
{
  *st = c5_routed_cross_attn_forward(r->m, r->d, &r->lx, &r->lc, r->b, r->x, r->mask, r->ctx, r->cmask, r->c, r->out);
  double L = 0;
  for (long i = 0; i < r->N; i++) L += (double)r->out[i] * r->g[i];
  return L;
}

static int check_fd(const char *what, const c5_routed_cross_attn_config *cfg, long b, long n, long mc, int masked,
                    unsigned long long seed, c5_dist *d)
{
  const int D = cfg->dim;
  c5_params *p = NULL;
  fdrun r;
  memset(&r, 0, sizeof r);
  long sel0[4096], sel1[4096], ns0, ns1, NC = b * mc * D;
  c5_real *dx = NULL, *dctx = NULL, *pg = NULL;
  int ok = 0, good = 1, kinks = 0;
  long total = 0;
  c5_status st;
  r.d = d;
  r.b = b;
  r.N = b * n * D;
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_OK(c5_routed_cross_attn_create(cfg, p, "", &r.m));
  T_OK(c5_params_alloc(p));
  init_params(p, seed);
  for (long i = 0; i < c5_params_count(p); i++)   /* logits ~ N(0, 0.3^2): scores near the threshold, not saturated */
    if (strstr(c5_params_name(p, i), "routing_token"))
      for (long j = 0; j < c5_params_numel(p, i); j++) c5_params_value(p, i)[j] *= (c5_real)0.3;
  r.x = randn(r.N, &seed);
  r.ctx = randn(NC, &seed);
  r.g = randn(r.N, &seed);
  r.out = calloc((size_t)r.N, sizeof *r.out);
  if (masked) { r.mask = randmask(b, n, -1, &seed); r.cmask = randmask(b, mc, -1, &seed); }
  long ux, uc;
  T_OK(c5_routed_cross_attn_layout_unit(cfg, &ux, &uc));
  T_OK(c5_layout_compute(d, n, ux, &r.lx));
  T_OK(c5_layout_compute(d, mc, uc, &r.lc));
  T_OK(c5_routed_cross_attn_cache_create(r.m, b, n, mc, &r.c));
  (void)loss_of(&r, &st);
  T_OK(st);
  T_CHECK(c5_routed_cross_attn_routing_q(r.c)->routed == (n > cfg->num_tokens_q) &&
          c5_routed_cross_attn_routing_kv(r.c)->routed == (mc > cfg->num_tokens_kv), "%s: routed flags", what);
  ns0 = selection(r.c, sel0, 4096);
  c5_params_zero_grad(p);
  dx = malloc((size_t)r.N * sizeof *dx);
  dctx = malloc((size_t)NC * sizeof *dctx);
  T_OK(c5_routed_cross_attn_backward(r.m, d, r.c, r.x, r.ctx, r.g, dx, dctx));
  pg = malloc((size_t)c5_params_total(p) * sizeof *pg);
  memcpy(pg, c5_params_grad(p, 0), (size_t)c5_params_total(p) * sizeof *pg);
  printf("finite differences: %s\n", what);
  /* groups: x, context, then each parameter */
  long ngroups = 2 + c5_params_count(p);
  for (long gi = 0; gi < ngroups; gi++) {
    c5_real *v;
    const c5_real *an;
    long cnt;
    const char *name;
    if (gi == 0) { v = r.x; an = dx; cnt = r.N; name = "dx"; }
    else if (gi == 1) { v = r.ctx; an = dctx; cnt = NC; name = "dcontext"; }
    else {
      long i = gi - 2;
      v = c5_params_value(p, i);
      an = pg + (c5_params_grad(p, i) - c5_params_grad(p, 0));
      cnt = c5_params_numel(p, i);
      name = c5_params_name(p, i);
    }
    /* unused when its side is not routed: the gradient must be exactly zero */
    int unused = gi >= 2 && ((n <= cfg->num_tokens_q && (!strcmp(name, "null_q_token") ||
                                                         !strcmp(name, "q_router.routing_token"))) ||
                             (mc <= cfg->num_tokens_kv && !strcmp(name, "kv_router.routing_token")));
    double num = 0, den = 0, amax = 0;
    int gk = 0;
    for (long j = 0; j < cnt; j++) {
      c5_real v0 = v[j];
      v[j] = v0 + (c5_real)FD_H;
      double lp = loss_of(&r, &st);
      T_OK(st);
      ns1 = selection(r.c, sel1, 4096);
      int same = ns1 == ns0 && !memcmp(sel0, sel1, (size_t)ns0 * sizeof *sel0);
      v[j] = v0 - (c5_real)FD_H;
      double lm = loss_of(&r, &st);
      T_OK(st);
      ns1 = selection(r.c, sel1, 4096);
      same = same && ns1 == ns0 && !memcmp(sel0, sel1, (size_t)ns0 * sizeof *sel0);
      v[j] = v0;
      if (!same) { gk++; continue; }
      double fd = (lp - lm) / (2 * FD_H);
      num += (fd - an[j]) * (fd - an[j]);
      den += fd * fd;
      amax = fmax(amax, fabs((double)an[j]));
    }
    kinks += gk;
    total += cnt;
    int gok;
    if (unused) {
      gok = amax == 0 && sqrt(den) < 1e-12;
      printf("  %-28s unused (side not routed): analytic max %.1e, fd norm %.1e%s\n", name, amax, sqrt(den),
             gok ? "" : "  should be 0");
    } else {
      double rel = den > 0 ? sqrt(num / den) : INFINITY;
      gok = den > 0 && rel <= FD_TOL;
      printf("  %-28s rel %.2e (%ld values%s)%s\n", name, rel, cnt, gk ? ", some at a kink" : "",
             gok ? "" : den > 0 ? "  > tolerance" : "  zero gradient: vacuous");
    }
    good &= gok;
  }
  T_CHECK(kinks < total / 50 + 1, "%s: %d of %ld perturbations changed a selection", what, kinks, total);
  T_CHECK(good, "%s: finite differences disagree", what);
  ok = 1;
fail:
  printf("finite differences: %-58s %s (%ld values, %d at a kink)\n", what, ok ? "ok" : "FAILED", total, kinks);
  c5_routed_cross_attn_cache_destroy(&r.c);
  c5_routed_cross_attn_destroy(&r.m);
  c5_params_destroy(&p);
  free(r.x); free(r.ctx); free(r.g); free(r.out); free(r.mask); free(r.cmask); free(dx); free(dctx); free(pg);
  return ok;
}
#endif

/* ---- 2. cross attention with context = x vs routed attention without a light branch ----------- */

/* The cross attention's options for a routed attention config (see the header comment). */
static c5_routed_cross_attn_config cross_of(const c5_routed_attn_config *a)
{
  c5_routed_cross_attn_config c = C5_ROUTED_CROSS_ATTN_CONFIG_DEFAULT;
  c.dim = a->dim;
  c.num_tokens_q = a->num_heavy_tokens_q;
  c.num_tokens_kv = a->num_heavy_tokens_kv;
  c.dim_head = a->heavy_dim_head;
  c.heads = a->heavy_heads;
  c.router = a->router;
  c.route_block_size = a->router.route_block_size;   /* kv router only */
  c.router.route_block_size = 0;
  c.kv_routing_tokens = a->num_routed_kv;
  c.multiply_keys_by_score = a->multiply_keys_by_score;
  c.use_null_q_tokens = a->use_null_q_tokens;
  c.kv_gather_batch_bug = a->kv_gather_batch_bug;
  return c;
}

typedef struct { double out, grad, qrt_grad; } eqerr;   /* max errors relative to the routed attention's */

static int run_equiv(const c5_routed_attn_config *acfg, long b, long n, int masked, long full_row,
                     unsigned long long seed, c5_dist *d, eqerr *e)
{
  c5_routed_cross_attn_config ccfg = cross_of(acfg);
  const int D = acfg->dim;
  const long N = b * n * D;
  c5_params *pa = NULL, *pc = NULL;
  c5_routed_attn *ma = NULL;
  c5_routed_attn_cache *ca = NULL;
  c5_routed_cross_attn *mc = NULL;
  c5_routed_cross_attn_cache *cc = NULL;
  c5_real *x = randn(N, &seed), *g = randn(N, &seed);
  c5_real *oa = calloc((size_t)N, sizeof *oa), *oc = calloc((size_t)N, sizeof *oc);
  c5_real *dxa = calloc((size_t)N, sizeof *dxa), *dxc = calloc((size_t)N, sizeof *dxc);
  c5_real *dcc = calloc((size_t)N, sizeof *dcc);
  uint8_t *mask = masked ? randmask(b, n, full_row, &seed) : NULL;
  c5_layout lay;
  int ok = 0;
  double sc;
  memset(e, 0, sizeof *e);
  e->qrt_grad = -1;
  T_OK(c5_params_create(c5_backend_cpu(), &pa));
  T_OK(c5_params_create(c5_backend_cpu(), &pc));
  T_OK(c5_routed_attn_create(acfg, pa, "", &ma));
  T_OK(c5_routed_cross_attn_create(&ccfg, pc, "", &mc));
  T_OK(c5_params_alloc(pa));
  T_OK(c5_params_alloc(pc));
  init_params(pa, seed + 1000);
  /* same parameters: every name of one module is a name of the other, same shape; copy by name */
  T_CHECK(c5_params_count(pa) == c5_params_count(pc), "routed attention has %ld parameters, cross attention %ld",
          c5_params_count(pa), c5_params_count(pc));
  for (long i = 0; i < c5_params_count(pc); i++) {
    long j = -1;
    T_OK(c5_params_find(pa, c5_params_name(pc, i), &j));
    T_CHECK(c5_params_numel(pa, j) == c5_params_numel(pc, i), "%s: %ld vs %ld elements", c5_params_name(pc, i),
            c5_params_numel(pa, j), c5_params_numel(pc, i));
    memcpy(c5_params_value(pc, i), c5_params_value(pa, j), (size_t)c5_params_numel(pc, i) * sizeof(c5_real));
  }
  long unit, ux, uc;   /* one layout serves both: the units agree (1: no light branch) */
  T_OK(c5_routed_attn_layout_unit(acfg, &unit));
  T_OK(c5_routed_cross_attn_layout_unit(&ccfg, &ux, &uc));
  T_CHECK(unit == ux && unit == uc, "units: routed attention %ld, cross attention %ld and %ld", unit, ux, uc);
  T_OK(c5_layout_compute(d, n, unit, &lay));
  T_OK(c5_routed_attn_cache_create(ma, b, n, &ca));
  T_OK(c5_routed_cross_attn_cache_create(mc, b, n, n, &cc));
  T_OK(c5_routed_attn_forward(ma, d, &lay, b, x, mask, ca, oa));
  T_OK(c5_routed_cross_attn_forward(mc, d, &lay, &lay, b, x, mask, x, mask, cc, oc));
  /* the same selections */
  {
    const c5_routing *r1[2] = { c5_routed_attn_routing_q(ca), c5_routed_attn_routing_kv(ca) };
    const c5_routing *r2[2] = { c5_routed_cross_attn_routing_q(cc), c5_routed_cross_attn_routing_kv(cc) };
    for (int s = 0; s < 2; s++) {
      T_CHECK(r1[s]->routed == r2[s]->routed && r1[s]->rows == r2[s]->rows && r1[s]->k == r2[s]->k,
              "router %d: routed %d/%d, rows %ld/%ld, k %ld/%ld", s, r1[s]->routed, r2[s]->routed, r1[s]->rows,
              r2[s]->rows, r1[s]->k, r2[s]->k);
      if (r1[s]->routed)
        T_CHECK(!memcmp(r1[s]->idx, r2[s]->idx, (size_t)(r1[s]->rows * r1[s]->k) * sizeof(long)),
                "router %d selected different tokens", s);
    }
  }
  e->out = max_abs_diff(oc, oa, N, &sc) / fmax(sc, 1e-300);
  c5_params_zero_grad(pa);
  c5_params_zero_grad(pc);
  T_OK(c5_routed_attn_backward(ma, d, ca, x, g, dxa));
  T_OK(c5_routed_cross_attn_backward(mc, d, cc, x, x, g, dxc, dcc));
  for (long i = 0; i < N; i++) dxc[i] += dcc[i];   /* x feeds both the queries and the context */
  e->grad = max_abs_diff(dxc, dxa, N, &sc) / fmax(sc, 1e-300);
  for (long i = 0; i < c5_params_count(pc); i++) {
    long j = -1;
    T_OK(c5_params_find(pa, c5_params_name(pc, i), &j));
    double ei = max_abs_diff(c5_params_grad(pc, i), c5_params_grad(pa, j), c5_params_numel(pc, i), &sc) /
                fmax(sc, 1e-300);
    if (!strcmp(c5_params_name(pc, i), "q_router.routing_token")) e->qrt_grad = ei;
    e->grad = fmax(e->grad, ei);
  }
  ok = 1;
fail:
  c5_routed_attn_cache_destroy(&ca);
  c5_routed_attn_destroy(&ma);
  c5_routed_cross_attn_cache_destroy(&cc);
  c5_routed_cross_attn_destroy(&mc);
  c5_params_destroy(&pa);
  c5_params_destroy(&pc);
  free(x); free(g); free(oa); free(oc); free(dxa); free(dxc); free(dcc); free(mask);
  return ok;
}

static int check_equiv(const char *what, const c5_routed_attn_config *acfg, long b, long n, int masked,
                       long full_row, unsigned long long seed, c5_dist *d)
{
  eqerr e;
  int ok = run_equiv(acfg, b, n, masked, full_row, seed, d, &e) && e.out <= EQ_TOL && e.grad <= EQ_TOL;
  printf("cross == routed attention: %-62s %s (out %.1e, grads %.1e)\n", what, ok ? "ok" : "FAILED", e.out, e.grad);
  return ok;
}

/* ---- 3. bad options and inputs, names ------------------------------------------------------- */

static int check_bad(c5_dist *d)
{
  c5_params *p = NULL;
  c5_routed_cross_attn *m = NULL;
  c5_routed_cross_attn_cache *c = NULL, *c2 = NULL;
  c5_real *x = NULL, *ctx = NULL, *out = NULL, *dx = NULL, *dctx = NULL;
  unsigned long long seed = 7;
  int ok = 0;
  c5_routed_cross_attn_config cfg = C5_ROUTED_CROSS_ATTN_CONFIG_DEFAULT;
  cfg.dim = 8; cfg.num_tokens_q = 4; cfg.num_tokens_kv = 5; cfg.heads = 4; cfg.dim_head = 4; cfg.kv_routing_tokens = 2;
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  c5_routed_cross_attn_config bad = cfg;
  bad.dim_context = 12;
  T_FAILS(c5_routed_cross_attn_create(&bad, p, "", &m), C5_ERR_SHAPE, "dim_context = 12");
  bad = cfg;
  bad.heads = 6; bad.kv_routing_tokens = 4;
  T_FAILS(c5_routed_cross_attn_create(&bad, p, "", &m), C5_ERR_ARG, "heads = 6 must be divisible by kv_routing_tokens = 4");
  bad = cfg;
  bad.kv_routing_tokens = 0;
  T_FAILS(c5_routed_cross_attn_create(&bad, p, "", &m), C5_ERR_ARG, "kv_routing_tokens = 0");
  bad = cfg;
  bad.router.route_block_size = 4;
  T_FAILS(c5_routed_cross_attn_create(&bad, p, "", &m), C5_ERR_ARG, "router.route_block_size = 4");
  bad = cfg;
  bad.num_tokens_kv = 0;
  T_FAILS(c5_routed_cross_attn_create(&bad, p, "", &m), C5_ERR_ARG, "num_tokens_kv = 0");
  bad = cfg;
  bad.router.eps_decay = 0;
  T_FAILS(c5_routed_cross_attn_create(&bad, p, "", &m), C5_ERR_ARG, "eps_decay");
  c5_params_destroy(&p);

  /* state_dict names and shapes of the reference module */
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  cfg.dim_context = 8;
  T_OK(c5_routed_cross_attn_create(&cfg, p, "cross", &m));
  {
    const struct { const char *name; int nd; long dims[3]; } want[] = {
      { "cross.null_q_token", 1, { 8 } }, { "cross.q_router.routing_token", 2, { 1, 8 } },
      { "cross.kv_router.routing_token", 2, { 2, 8 } }, { "cross.heavy_attn.norm.gamma", 1, { 8 } },
      { "cross.heavy_attn.null_kv", 3, { 2, 4, 4 } }, { "cross.heavy_attn.to_q.weight", 2, { 16, 8 } },
      { "cross.heavy_attn.to_kv.weight", 2, { 32, 8 } }, { "cross.heavy_attn.to_out.weight", 2, { 8, 16 } } };
    const long nw = (long)(sizeof want / sizeof *want);
    T_CHECK(c5_params_count(p) == nw, "%ld parameters, want %ld", c5_params_count(p), nw);
    for (long i = 0; i < nw; i++) {
      long j = -1, dims[C5_PARAM_MAXDIM];
      T_OK(c5_params_find(p, want[i].name, &j));
      int nd = c5_params_shape(p, j, dims);
      T_CHECK(nd == want[i].nd && !memcmp(dims, want[i].dims, (size_t)nd * sizeof(long)), "%s: wrong shape",
              want[i].name);
    }
  }
  T_OK(c5_params_alloc(p));
  init_params(p, 3);
  /* shapes: the cache is made for 6 queries and 7 context tokens */
  c5_layout lx, lc, lbad;
  long ux, uc;
  T_OK(c5_routed_cross_attn_layout_unit(&cfg, &ux, &uc));
  T_OK(c5_layout_compute(d, 6, ux, &lx));
  T_OK(c5_layout_compute(d, 7, uc, &lc));
  T_OK(c5_layout_compute(d, 9, uc, &lbad));
  x = randn(6 * 8, &seed); ctx = randn(9 * 8, &seed);
  out = calloc(6 * 8, sizeof *out); dx = calloc(6 * 8, sizeof *dx); dctx = calloc(9 * 8, sizeof *dctx);
  T_OK(c5_routed_cross_attn_cache_create(m, 1, 6, 7, &c));
  T_FAILS(c5_routed_cross_attn_backward(m, d, c, x, ctx, out, dx, dctx), C5_ERR_ARG, "holds no forward");
  T_FAILS(c5_routed_cross_attn_forward(m, d, &lx, &lbad, 1, x, NULL, ctx, NULL, c, out), C5_ERR_SHAPE, "cache made for");
  T_FAILS(c5_routed_cross_attn_forward(m, d, &lx, &lc, 2, x, NULL, ctx, NULL, c, out), C5_ERR_SHAPE, "cache made for");
  T_FAILS(c5_routed_cross_attn_forward(m, d, &lx, &lc, 1, x, NULL, NULL, NULL, c, out), C5_ERR_ARG, "NULL");
  T_FAILS(c5_routed_cross_attn_cache_create(m, 0, 6, 7, &c2), C5_ERR_ARG, "batch = 0");
  T_OK(c5_routed_cross_attn_forward(m, d, &lx, &lc, 1, x, NULL, ctx, NULL, c, out));
  T_OK(c5_routed_cross_attn_backward(m, d, c, x, ctx, out, dx, dctx));
  /* route_block_size on the kv router: larger than the context is the router's error */
  c5_routed_cross_attn_cache_destroy(&c);
  c5_routed_cross_attn_destroy(&m);
  c5_params_destroy(&p);
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  cfg.route_block_size = 8;
  T_OK(c5_routed_cross_attn_create(&cfg, p, "", &m));
  T_OK(c5_params_alloc(p));
  T_OK(c5_routed_cross_attn_cache_create(m, 1, 6, 7, &c));
  T_FAILS(c5_routed_cross_attn_forward(m, d, &lx, &lc, 1, x, NULL, ctx, NULL, c, out), C5_ERR_ARG, "route_block_size = 8");
  ok = 1;
fail:
  printf("%-89s %s\n", "bad options and inputs name the option; state_dict names and shapes", ok ? "ok" : "FAILED");
  c5_routed_cross_attn_cache_destroy(&c);
  c5_routed_cross_attn_cache_destroy(&c2);
  c5_routed_cross_attn_destroy(&m);
  c5_params_destroy(&p);
  free(x); free(ctx); free(out); free(dx); free(dctx);
  return ok;
}

/* ---- 4. sharded over MPI_COMM_WORLD == one rank ---------------------------------------------- */

/* This rank's [b, l->n_local, w] slice of full [b, n, w], and back (every rank gets the whole). */
static void slice_seq(const c5_real *full, long b, long n, long w, const c5_layout *l, c5_real *loc)
{
  for (long i = 0; i < b; i++)
    memcpy(loc + i * l->n_local * w, full + (i * n + l->offset) * w, (size_t)(l->n_local * w) * sizeof *loc);
}

static void slice_mask(const uint8_t *full, long b, long n, const c5_layout *l, uint8_t *loc)
{
  for (long i = 0; i < b; i++) memcpy(loc + i * l->n_local, full + i * n + l->offset, (size_t)l->n_local);
}

static int gather_seq(const c5_real *loc, long b, long w, long n, long unit, c5_real *full)
{
  int P, r, ok = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  int *cnt = calloc((size_t)P, sizeof *cnt), *dsp = calloc((size_t)P, sizeof *dsp);
  c5_real *tmp = malloc((size_t)(b * n * w + 1) * sizeof *tmp);
  c5_layout me, l;
  if (!cnt || !dsp || !tmp || c5_layout_of_rank(n, unit, r, P, &me) != C5_OK) goto out;
  for (int q = 0; q < P; q++) {
    if (c5_layout_of_rank(n, unit, q, P, &l) != C5_OK) goto out;
    cnt[q] = (int)(b * l.n_local * w);
    dsp[q] = (int)(b * l.offset * w);
  }
  MPI_Allgatherv(loc, (int)(b * me.n_local * w), C5_MPI_REAL, tmp, cnt, dsp, C5_MPI_REAL, MPI_COMM_WORLD);
  for (int q = 0; q < P; q++) {
    c5_layout_of_rank(n, unit, q, P, &l);
    for (long i = 0; i < b; i++)
      memcpy(full + (i * n + l.offset) * w, tmp + dsp[q] + i * l.n_local * w, (size_t)(l.n_local * w) * sizeof *full);
  }
  ok = 1;
out:
  free(cnt); free(dsp); free(tmp);
  return ok;
}

/* Each row's entries of every rank (rank order) against the one-rank routing: indices identical, scores close. */
static long routing_diffs(const c5_routing *one, const c5_routing *sh)
{
  int P;
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  if (one->routed != sh->routed || one->rows != sh->rows || (one->routed && one->k != sh->k)) return 1;
  if (!one->routed) return 0;
  long diff = 0;
  int *cnt = calloc((size_t)P, sizeof *cnt), *dsp = calloc((size_t)P, sizeof *dsp);
  long *idx = calloc((size_t)one->k + 1, sizeof *idx);
  c5_real *sc = calloc((size_t)one->k + 1, sizeof *sc);
  if (!cnt || !dsp || !idx || !sc) diff = 1;
  for (long row = 0; !diff && row < sh->rows; row++) {
    int c = (int)sh->count[row];
    MPI_Allgather(&c, 1, MPI_INT, cnt, 1, MPI_INT, MPI_COMM_WORLD);
    long tot = cnt[0];
    for (int q = 1; q < P; q++) { dsp[q] = dsp[q - 1] + cnt[q - 1]; tot += cnt[q]; }
    if (tot != one->count[row]) { diff++; break; }   /* the same on every rank: all leave the loop together */
    MPI_Allgatherv(sh->idx + sh->start[row], c, MPI_LONG, idx, cnt, dsp, MPI_LONG, MPI_COMM_WORLD);
    MPI_Allgatherv(sh->score + sh->start[row], c, C5_MPI_REAL, sc, cnt, dsp, C5_MPI_REAL, MPI_COMM_WORLD);
    for (long j = 0; j < tot; j++)
      diff += idx[j] != one->idx[one->start[row] + j] ||
              fabs((double)sc[j] - one->score[one->start[row] + j]) > EQ_TOL;
  }
  free(cnt); free(dsp); free(idx); free(sc);
  return diff;
}

/* x and the context sharded on kx and kc times the library's units (c5_routed_cross_attn_layout_unit): any
   multiple must do. */
static int check_sharded(const char *what, const c5_routed_cross_attn_config *cfg, long b, long n, long mc, long kx,
                         long kc, int masked, long full_row, unsigned long long seed, c5_dist *self, c5_dist *world)
{
  const long D = cfg->dim, N = b * n * D, NC = b * mc * D;
  int rank, P, ok = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  c5_params *p = NULL;
  c5_routed_cross_attn *m = NULL;
  c5_routed_cross_attn_cache *c1 = NULL, *cs = NULL;
  c5_layout l1x, l1c, lx, lc;
  double err = 0, sc;
  long rdiff = 0, tot = 0;
  c5_real *x = randn(N, &seed), *ctx = randn(NC, &seed), *g = randn(N, &seed);
  uint8_t *mask = masked ? randmask(b, n, full_row, &seed) : NULL, *cmask = masked ? randmask(b, mc, -1, &seed) : NULL;
  c5_real *o1 = calloc((size_t)N, sizeof *o1), *dx1 = calloc((size_t)N, sizeof *dx1), *dc1 = calloc((size_t)NC, sizeof *dc1);
  c5_real *of = calloc((size_t)N, sizeof *of), *dxf = calloc((size_t)N, sizeof *dxf), *dcf = calloc((size_t)NC, sizeof *dcf);
  c5_real *pg1 = NULL, *xl = NULL, *cl = NULL, *gl = NULL, *ol = NULL, *dxl = NULL, *dcl = NULL;
  uint8_t *ml = NULL, *cml = NULL;
  long ux = 0, uc = 0;
  T_OK(c5_routed_cross_attn_layout_unit(cfg, &ux, &uc));
  ux *= kx;
  uc *= kc;
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_OK(c5_routed_cross_attn_create(cfg, p, "", &m));
  T_OK(c5_params_alloc(p));
  init_params(p, seed + 77);
  tot = c5_params_total(p);
  pg1 = malloc((size_t)tot * sizeof *pg1);
  /* one rank: the whole sequences */
  T_OK(c5_layout_compute(self, n, ux, &l1x));
  T_OK(c5_layout_compute(self, mc, uc, &l1c));
  T_OK(c5_routed_cross_attn_cache_create(m, b, n, mc, &c1));
  c5_params_zero_grad(p);
  T_OK(c5_routed_cross_attn_forward(m, self, &l1x, &l1c, b, x, mask, ctx, cmask, c1, o1));
  T_OK(c5_routed_cross_attn_backward(m, self, c1, x, ctx, g, dx1, dc1));
  memcpy(pg1, c5_params_grad(p, 0), (size_t)tot * sizeof *pg1);
  /* sharded: each sequence on its own layout */
  T_OK(c5_layout_compute(world, n, ux, &lx));
  T_OK(c5_layout_compute(world, mc, uc, &lc));
  xl = malloc((size_t)(b * lx.n_local * D + 1) * sizeof *xl);
  gl = malloc((size_t)(b * lx.n_local * D + 1) * sizeof *gl);
  ol = calloc((size_t)(b * lx.n_local * D + 1), sizeof *ol);
  dxl = calloc((size_t)(b * lx.n_local * D + 1), sizeof *dxl);
  cl = malloc((size_t)(b * lc.n_local * D + 1) * sizeof *cl);
  dcl = calloc((size_t)(b * lc.n_local * D + 1), sizeof *dcl);
  ml = malloc((size_t)(b * lx.n_local + 1));
  cml = malloc((size_t)(b * lc.n_local + 1));
  T_CHECK(xl && gl && ol && dxl && cl && dcl && ml && cml, "out of memory");
  slice_seq(x, b, n, D, &lx, xl);
  slice_seq(g, b, n, D, &lx, gl);
  slice_seq(ctx, b, mc, D, &lc, cl);
  if (masked) { slice_mask(mask, b, n, &lx, ml); slice_mask(cmask, b, mc, &lc, cml); }
  T_OK(c5_routed_cross_attn_cache_create(m, b, lx.n_local, lc.n_local, &cs));
  for (int rep = 0; rep < 2; rep++) {   /* the second pass reuses the cache's buffers */
    c5_params_zero_grad(p);
    T_OK(c5_routed_cross_attn_forward(m, world, &lx, &lc, b, xl, masked ? ml : NULL, cl, masked ? cml : NULL, cs, ol));
    T_OK(c5_routed_cross_attn_backward(m, world, cs, xl, cl, gl, dxl, dcl));
  }
  MPI_Allreduce(MPI_IN_PLACE, c5_params_grad(p, 0), (int)tot, C5_MPI_REAL, MPI_SUM, MPI_COMM_WORLD);
  T_CHECK(gather_seq(ol, b, D, n, ux, of) && gather_seq(dxl, b, D, n, ux, dxf) && gather_seq(dcl, b, D, mc, uc, dcf),
          "gather failed");
  err = fmax(err, max_abs_diff(of, o1, N, &sc) / fmax(sc, 1e-300));
  err = fmax(err, max_abs_diff(dxf, dx1, N, &sc) / fmax(sc, 1e-300));
  err = fmax(err, max_abs_diff(dcf, dc1, NC, &sc) / fmax(sc, 1e-300));
  for (long i = 0; i < c5_params_count(p); i++) {
    long off = c5_params_grad(p, i) - c5_params_grad(p, 0);
    double e = max_abs_diff(c5_params_grad(p, i), pg1 + off, c5_params_numel(p, i), &sc);
    err = fmax(err, sc > 0 ? e / sc : e);
  }
  rdiff = routing_diffs(c5_routed_cross_attn_routing_q(c1), c5_routed_cross_attn_routing_q(cs)) +
          routing_diffs(c5_routed_cross_attn_routing_kv(c1), c5_routed_cross_attn_routing_kv(cs));
  ok = err <= EQ_TOL && rdiff == 0;
fail:
  {
    int all = ok;
    MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    if (rank == 0)
      printf("sharded (P = %d) == one rank: %-58s %s (max rel %.1e, %ld routing diffs)\n", P, what,
             all ? "ok" : "FAILED", err, rdiff);
    ok = all;
  }
  c5_routed_cross_attn_cache_destroy(&c1);
  c5_routed_cross_attn_cache_destroy(&cs);
  c5_routed_cross_attn_destroy(&m);
  c5_params_destroy(&p);
  free(x); free(ctx); free(g); free(mask); free(cmask); free(o1); free(dx1); free(dc1); free(of); free(dxf); free(dcf);
  free(pg1); free(xl); free(cl); free(gl); free(ol); free(dxl); free(dcl); free(ml); free(cml);
  return ok;
}

static int check_sharded_all(c5_dist *self)
{
  c5_dist *world = NULL;
  int ok = 1;
  if (c5_dist_create(MPI_COMM_WORLD, &world) != C5_OK) { fprintf(stderr, "%s\n", c5_last_error()); return 0; }
  /* x: 13 tokens, context 17 (units 1..3 times the library's 1: nothing divisible by P = 2, 3, 4) */
  c5_routed_cross_attn_config f = C5_ROUTED_CROSS_ATTN_CONFIG_DEFAULT, h;
  f.dim = 8; f.dim_head = 4; f.heads = 4; f.num_tokens_q = 5; f.num_tokens_kv = 6; f.kv_routing_tokens = 2;
  h = f;
  ok &= check_sharded("2 kv routes, masks, null q tokens, x unit 1, context unit 3x", &h, 2, 13, 17, 1, 3, 1, -1, 41,
                      self, world);
  h = f; h.kv_routing_tokens = 1; h.heads = 2;
  ok &= check_sharded("1 kv route, no masks, x unit 2x, context unit 1", &h, 2, 13, 17, 2, 1, 0, -1, 42, self, world);
  h = f; h.kv_gather_batch_bug = 1; h.multiply_keys_by_score = 1;
  ok &= check_sharded("kv_gather_batch_bug, keys by score, row 1 fully masked, b 3", &h, 3, 13, 17, 1, 2, 1, 1, 43,
                      self, world);
  h = f; h.num_tokens_q = 13;
  ok &= check_sharded("queries not routed, masks", &h, 2, 13, 17, 1, 3, 1, -1, 44, self, world);
  h = f; h.num_tokens_kv = 17;
  ok &= check_sharded("context not routed, 2 kv routes, masks", &h, 2, 13, 17, 2, 3, 1, -1, 45, self, world);
  h = f; h.num_tokens_q = 20; h.num_tokens_kv = 20; h.use_null_q_tokens = 0;
  ok &= check_sharded("neither routed, no null q tokens", &h, 2, 13, 17, 1, 1, 1, -1, 46, self, world);
  h = f; h.router = soft_router(); h.route_block_size = 5;
  ok &= check_sharded("straight_through off, eps 0.3, kv blocks of 5", &h, 2, 13, 17, 1, 3, 1, -1, 47, self, world);
  h = f; h.router.cosine_sim_routing = 1; h.router.cosine_sim_scale = 4; h.num_tokens_kv = 9;
  ok &= check_sharded("cosine routing, 9 of 17 context tokens", &h, 2, 13, 17, 1, 2, 1, -1, 48, self, world);
  /* the fewest tokens the units allow on P ranks: (P - 1) units and one token on each side (one rank: the
     2-rank sizes); one routed token of each, so both routers still route */
  {
    long ux = 0, uc = 0;
    int P;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    h = f; h.num_tokens_q = 1; h.num_tokens_kv = 1;
    if (c5_routed_cross_attn_layout_unit(&h, &ux, &uc) != C5_OK) { fprintf(stderr, "%s\n", c5_last_error()); ok = 0; }
    else {
      long k = P > 1 ? P - 1 : 1, n = k * ux + 1, mc = k * uc + 1;
      char what[96];
      snprintf(what, sizeof what, "smallest n: %ld queries, %ld context tokens (units %ld, %ld)", n, mc, ux, uc);
      ok &= check_sharded(what, &h, 2, n, mc, 1, 1, 0, -1, 49, self, world);
    }
  }
  c5_dist_destroy(&world);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int ok = 1;
  c5_dist *d = NULL;
  if (c5_dist_create(MPI_COMM_SELF, &d) != C5_OK) { fprintf(stderr, "%s\n", c5_last_error()); return 1; }
  int nranks;
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  if (nranks > 1) {   /* under mpirun: the sharded checks only (1-3 are one-rank tests) */
    ok = check_sharded_all(d);
    c5_dist_destroy(&d);
    MPI_Finalize();
    return ok ? 0 : 1;
  }

  /* 1. finite differences: dim 8, dim_head 4, n 12, m 15, both routers route, masks, 2 kv routes */
#if C5_USE_DOUBLE
  c5_routed_cross_attn_config f = C5_ROUTED_CROSS_ATTN_CONFIG_DEFAULT;
  f.dim = 8; f.dim_head = 4; f.heads = 4; f.num_tokens_q = 5; f.num_tokens_kv = 6; f.kv_routing_tokens = 2;
  f.router = soft_router();
  ok &= check_fd("4 heads, 2 kv routes, masks, null q tokens", &f, 2, 12, 15, 1, 11, d);
  f.heads = 2; f.multiply_keys_by_score = 1; f.use_null_q_tokens = 0; f.route_block_size = 5;
  ok &= check_fd("2 heads, 2 kv routes, masks, keys by score, kv blocks of 5, no null q", &f, 2, 12, 15, 1, 12, d);
  f.heads = 4; f.multiply_keys_by_score = 0; f.use_null_q_tokens = 1; f.route_block_size = 0;
  f.kv_gather_batch_bug = 1; f.router.cosine_sim_routing = 1; f.router.cosine_sim_scale = 4;
  ok &= check_fd("4 heads, 2 kv routes, masks, kv_gather_batch_bug, cosine routing", &f, 3, 12, 15, 1, 13, d);
  f.kv_gather_batch_bug = 0; f.router = soft_router(); f.heads = 3; f.kv_routing_tokens = 1;
  f.num_tokens_q = 12;
  ok &= check_fd("3 heads, queries not routed, masks", &f, 2, 12, 15, 1, 14, d);
  f.heads = 4; f.kv_routing_tokens = 2; f.num_tokens_q = 5; f.num_tokens_kv = 15;
  ok &= check_fd("4 heads, 2 kv routes, context not routed, masks", &f, 2, 12, 15, 1, 15, d);
#else
  printf("finite differences need double precision: skipped in this build\n");
#endif

  /* 2. context = x: cross attention == routed attention without its light branch */
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  a.has_light_attn = 0;
  a.dim = 8; a.heavy_dim_head = 4; a.heavy_heads = 4; a.num_heavy_tokens_q = 5; a.num_heavy_tokens_kv = 6;
  const long B = 2, n = 12;
  c5_routed_attn_config e = a;
  ok &= check_equiv("defaults (straight-through, null q tokens, 1 kv route)", &e, B, n, 0, -1, 21, d);
  e = a; e.use_null_q_tokens = 0;
  ok &= check_equiv("use_null_q_tokens off", &e, B, n, 0, -1, 22, d);
  e = a; e.multiply_keys_by_score = 1;
  ok &= check_equiv("multiply_keys_by_score", &e, B, n, 0, -1, 23, d);
  e = a; e.num_routed_kv = 2;
  ok &= check_equiv("num_routed_kv = kv_routing_tokens = 2", &e, B, n, 0, -1, 24, d);
  e = a; e.num_routed_kv = 2; e.kv_gather_batch_bug = 1;
  ok &= check_equiv("2 kv routes, kv_gather_batch_bug in both", &e, 3, n, 1, -1, 25, d);
  e = a;
  ok &= check_equiv("masks, batch row 1 fully masked", &e, 3, n, 1, 1, 26, d);
  e = a; e.router = soft_router(); e.num_routed_kv = 2; e.multiply_keys_by_score = 1;
  ok &= check_equiv("straight_through off, eps 0.3, 2 kv routes, keys by score, masks", &e, B, n, 1, -1, 27, d);
  e = a; e.router.cosine_sim_routing = 1; e.router.cosine_sim_scale = 4; e.router.fetch_k_ratio = 1.5;
  e.router.n_iters = 7;
  ok &= check_equiv("cosine_sim_routing, fetch_k_ratio 1.5, n_iters 7", &e, B, n, 1, -1, 28, d);
  e = a; e.num_heavy_tokens_q = 12; e.router = soft_router();
  ok &= check_equiv("queries not routed (n <= num_tokens_q), masks", &e, B, n, 1, -1, 29, d);
  e = a; e.num_heavy_tokens_kv = 12; e.num_routed_kv = 2; e.router = soft_router();
  ok &= check_equiv("context not routed, 2 kv routes, masks", &e, B, n, 1, -1, 30, d);
  e = a; e.num_heavy_tokens_kv = 20;
  ok &= check_equiv("context not routed, 1 kv route", &e, B, n, 1, -1, 31, d);
  e = a; e.num_heavy_tokens_q = 12; e.num_heavy_tokens_kv = 13; e.use_null_q_tokens = 0;
  ok &= check_equiv("neither routed, masks", &e, B, n, 1, -1, 32, d);
  e = a; e.num_heavy_tokens_q = 12; e.multiply_queries_by_score = 1; e.router = soft_router();
  ok &= check_equiv("multiply_queries_by_score, queries not routed", &e, B, n, 1, -1, 33, d);
  e = a; e.num_heavy_tokens_q = 12; e.router = soft_router(); e.router.route_block_size = 4;
  ok &= check_equiv("route_block_size 4, queries not routed", &e, B, n, 1, -1, 34, d);
  {
    /* a difference, checked as one: multiply_queries_by_score with routed, straight-through queries */
    eqerr er;
    e = a; e.multiply_queries_by_score = 1;
    int r = run_equiv(&e, B, n, 1, -1, 35, d, &er);
    int dok = r && er.out <= EQ_TOL && er.qrt_grad > 1e3 * EQ_TOL;
    printf("cross != routed attention: %-62s %s (out %.1e, q_router grad %.1e)\n",
           "multiply_queries_by_score, routed queries: same out, q_router grad differs", dok ? "ok" : "FAILED",
           er.out, er.qrt_grad);
    ok &= dok;
  }

  /* 3. */
  ok &= check_bad(d);

  /* 4. (one rank here; mpirun -np P runs it sharded) */
  ok &= check_sharded_all(d);

  c5_dist_destroy(&d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
