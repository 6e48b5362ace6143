/* test_shard.c (program tests/unit/test_shard_prog, run by test_shard.sh on
   1-4 ranks) - a sequence sharded over MPI_COMM_WORLD gives what one rank
   gives (docs/design.md §3: "the sharded result must equal the unsharded one,
   outputs and gradients to ~1e-12 in float64, for P = 1, 2, 3, 4, n not
   divisible by P included").

   Every rank first computes the unsharded result on an MPI_COMM_SELF dist,
   then the sharded one on MPI_COMM_WORLD (its own slice of every input),
   gathers the sharded outputs and dx with MPI_Allgatherv (offsets from
   c5_layout_of_rank), sums the parameter gradients over ranks with
   MPI_Allreduce and compares each tensor norm-wise:
     rel = ||sharded - unsharded||_2 / ||unsharded||_2   (absolute when the reference is 0)
   against 1e-12 (double) or 1e-4 (single). Before any number is compared,
   the gathered routed index sets of every router must equal the unsharded
   ones exactly (a different selection is reported as such).

   Cases:
     cd      coordinate descent, rows sharded by columns: eps-scaling, soft
             (eps 0.3), per-row k with a fully masked row, the underflow
             fallback (logits ~ -3000 in double, ~ -300 in single: the
             {max, sumexp} MPI_Op path; the test proves the shifted sum
             underflows at t = 2) with a mask that empties a whole rank's part;
     router  straight_through off, eps 0.3, 2 routes, mask (a batch row all
             masked), cosine routing, route_block_size 7 on n = 61 (blocks that
             straddle rank boundaries, tail tokens);
     modules ConditionalRoutedFeedForward, ConditionalRoutedAttention
             (num_routed_kv 2, rotary, multiply_keys/queries_by_score),
             ConditionalRoutedTransformerBlock, each with a mask; attention
             and blocks with n not a multiple of their unit (the last shard
             ends in a partial window); ConditionalRoutedAutoregressiveAttention
             (no mask). Every layout takes the module's unit from the library
             (c5_<module>_layout_unit, through modules.h), which must equal the
             case's expected one: light_window_size / 2 (rounded down) for
             attention and blocks, 1 without the light branch (whatever the
             window), lcm of the light and heavy windows for the autoregressive
             attention, 1 for the routed FF. Every router of every case routes;
     smallest n  for each of those units the fewest tokens it allows on P
             ranks, (P - 1) units and one token (one rank: unit + 1): routed
             FF; attention with light_window_size 10, 9 (unit 4) and 3 (unit
             1); attention and block without the light branch (window 128:
             unit 1, so n = P, and n = 40 with a mask, which unit 64 refused
             on 2 ranks); block with window 4; autoregressive windows 4/6
             (unit 12), 8, 4/8 and 8/4 (unit 8);
     layout  n = 1000 (1000 = 334 + 333 + 333 at P = 3) through a routed FF;
             the rule checked on every rank; one unit per rank with a 1-token
             last shard; P > number of units is C5_ERR_ARG on every rank,
             with a message naming the ranks and the units, and no hang;
             a layout unit the module's does not divide (attention window 5 on
             unit 4, a block's window 4 on 6, autoregressive 4/6 on 6): the
             forward is C5_ERR_ARG on every rank, naming the unit function;
     adversarial: every routed token of every router on one rank (x made
             large along the routing tokens there only).
   Routers run with straight_through off and eps 0.3 (random inputs keep
   |s + a_T| away from the kinks, docs/design.md §2). One line per case. */
#include <string.h>
#include "modules.h"

#if C5_USE_DOUBLE
#define TOL 1e-12
#else
#define TOL 1e-4
#endif

typedef struct { c5_dist *d; MPI_Comm comm; int rank, size; } group;

static int g_rank, g_size;

/* ---- small helpers ------------------------------------------------------------------ */

/* ||a - b|| / ||b||; ||a - b|| when b is all zero; NaN propagates. */
static double relnorm(const c5_real *a, const c5_real *b, long n)
{
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) {
    double e = (double)a[i] - (double)b[i];
    num += e * e;
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The worst error of a case and the tensor it came from. */
typedef struct { double worst; char what[128]; int fail; } tally;

static void note(tally *t, const char *what, double e)
{
  if (!(e <= TOL)) {
    t->fail = 1;
    if (g_rank == 0) printf("    %s: rel %.3e > %.0e\n", what, e, TOL);
  }
  if (!(e <= t->worst) || !t->what[0]) {
    t->worst = e;
    snprintf(t->what, sizeof t->what, "%s", what);
  }
}

/* Rank q's tokens of a sequence of n tokens cut in units of `unit`, times `per`. */
static void counts(long n, long unit, int size, long per, int *cnt, int *dsp)
{
  for (int q = 0; q < size; q++) {
    c5_layout l;
    c5_layout_of_rank(n, unit, q, size, &l);
    cnt[q] = (int)(l.n_local * per);
    dsp[q] = (int)(l.offset * per);
  }
}

/* glob [batch][n][per] from every rank's loc [batch][n_local][per]. */
static void gather_seq(const group *g, long batch, long n, long unit, long per, const c5_real *loc, c5_real *glob)
{
  int *cnt = malloc((size_t)g->size * sizeof *cnt), *dsp = malloc((size_t)g->size * sizeof *dsp);
  counts(n, unit, g->size, per, cnt, dsp);
  long nl = cnt[g->rank] / per;
  for (long b = 0; b < batch; b++)
    MPI_Allgatherv(loc + b * nl * per, cnt[g->rank], C5_MPI_REAL, glob + b * n * per, cnt, dsp, C5_MPI_REAL,
                   g->comm);
  free(cnt); free(dsp);
}

/* loc [batch][n_local][per] = this rank's slice of glob [batch][n][per] (elements of `sz` bytes). */
static void *slice(const void *glob, size_t sz, long batch, long n, long per, const c5_layout *lay)
{
  if (!glob) return NULL;
  char *loc = malloc((size_t)(batch * lay->n_local * per + 1) * sz);
  for (long b = 0; b < batch; b++)
    memcpy(loc + (size_t)(b * lay->n_local * per) * sz, (const char *)glob + (size_t)((b * n + lay->offset) * per) * sz,
           (size_t)(lay->n_local * per) * sz);
  return loc;
}

/* Every rank agrees (logical and over the world). */
static int all(const group *g, int ok)
{
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_LAND, g->comm);
  return ok;
}

/* Compares the routing a sharded forward made (ro, on g) with the unsharded
   one (r1): same routed flag, rows and k, the gathered index sets equal row by
   row; scores compared norm-wise into t. When owner >= 0, also checks that every
   selected token lies in rank `owner`'s slice [lo, hi) and counts rows that do. */
static int same_routing(const group *g, const char *name, const c5_routing *r1, const c5_routing *ro, tally *t,
                        long lo, long hi, long *rows_on_owner)
{
  int ok = r1->routed == ro->routed && r1->rows == ro->rows && (!r1->routed || r1->k == ro->k);
  ok = all(g, ok);
  if (!ok) {
    if (g_rank == 0) printf("    %s: routed %d/%d rows %ld/%ld k %ld/%ld differ from one rank\n", name, ro->routed,
                            r1->routed, ro->rows, r1->rows, ro->k, r1->k);
    return 0;
  }
  if (!r1->routed) return 1;
  long k = r1->k, rows = r1->rows;
  long *idx = calloc((size_t)(rows * k + 1), sizeof *idx);
  c5_real *sc = calloc((size_t)(rows * k + 1), sizeof *sc), *sc1 = calloc((size_t)(rows * k + 1), sizeof *sc1);
  int *rc = malloc((size_t)g->size * sizeof *rc), *rd = malloc((size_t)g->size * sizeof *rd);
  long bad_row = -1, bad_e = -1;
  for (long row = 0; row < rows && ok; row++) {
    int c = (int)ro->count[row];
    MPI_Allgather(&c, 1, MPI_INT, rc, 1, MPI_INT, g->comm);
    long tot = 0;
    for (int q = 0; q < g->size; q++) { rd[q] = (int)tot; tot += rc[q]; }
    if (tot != k || r1->count[row] != k) {   /* every rank sees it */
      if (g_rank == 0) printf("    %s row %ld: %ld selections over the ranks, %ld on one rank, want k = %ld\n", name,
                              row, tot, r1->count[row], k);
      ok = 0;
      break;
    }
    MPI_Allgatherv(ro->idx + ro->start[row], c, MPI_LONG, idx + row * k, rc, rd, MPI_LONG, g->comm);
    MPI_Allgatherv(ro->score + ro->start[row], c, C5_MPI_REAL, sc + row * k, rc, rd, C5_MPI_REAL, g->comm);
    memcpy(sc1 + row * k, r1->score + r1->start[row], (size_t)k * sizeof *sc1);
    for (long e = 0; e < k && bad_row < 0; e++)
      if (idx[row * k + e] != r1->idx[r1->start[row] + e]) { bad_row = row; bad_e = e; }
    if (bad_row >= 0) {
      if (g_rank == 0)
        printf("    %s row %ld entry %ld: sharded selects token %ld, one rank %ld (selection differs)\n", name,
               bad_row, bad_e, idx[bad_row * k + bad_e], r1->idx[r1->start[bad_row] + bad_e]);
      ok = 0;
    }
    if (rows_on_owner) {
      int in = 1;
      for (long e = 0; e < k; e++) in &= idx[row * k + e] >= lo && idx[row * k + e] < hi;
      *rows_on_owner += in;
    }
  }
  if (ok) {
    char w[128];
    snprintf(w, sizeof w, "%s scores", name);
    note(t, w, relnorm(sc, sc1, rows * k));
  }
  free(idx); free(sc); free(sc1); free(rc); free(rd);
  return ok;
}

/* ---- coordinate descent ----------------------------------------------------------- */

typedef struct {
  const char *name;
  long rows, n;
  double shift, scale;      /* s = shift + scale N(0,1) */
  double mask_frac;         /* 0: no mask */
  long full_row;            /* >= 0: this row fully masked */
  int per_row_k;            /* k = 3, 10.5, 25, ... by row; else k_all */
  double k_all;
  int empty_half;           /* row 0: the first half of its columns masked (a rank's part empty) */
  c5_cd_config cfg;
  int underflow;            /* the case must take the {max, sumexp} path (checked with a model of a_1) */
} cd_case;

static int run_cd(const group *W, const group *S, const cd_case *tc, unsigned long long seed)
{
  long rows = tc->rows, n = tc->n, N = rows * n;
  c5_real *s = malloc((size_t)N * sizeof *s), *gy = malloc((size_t)N * sizeof *gy);
  c5_real *y1 = malloc((size_t)N * sizeof *y1), *ds1 = malloc((size_t)N * sizeof *ds1);
  c5_real *yw = malloc((size_t)N * sizeof *yw), *dsw = malloc((size_t)N * sizeof *dsw);
  uint8_t *mask = NULL, *ml = NULL;
  double *k = malloc((size_t)rows * sizeof *k);
  c5_real *sl = NULL, *gl = NULL, *yl = NULL, *dsl = NULL;
  c5_cd_cache c1 = { 0 }, cw = { 0 };
  tally t = { 0 };
  int ok = 0;
  c5_layout lay;
  char extra[160] = "";

  for (long i = 0; i < N; i++) { s[i] = (c5_real)(tc->shift + tc->scale * t_normal(&seed)); gy[i] = (c5_real)t_normal(&seed); }
  for (long r = 0; r < rows; r++) k[r] = tc->per_row_k ? (double[]){ 3, 10.5, 25, 7 }[r % 4] : tc->k_all;
  if (tc->mask_frac > 0 || tc->full_row >= 0 || tc->empty_half) {
    mask = malloc((size_t)N);
    for (long i = 0; i < N; i++) mask[i] = t_uniform(&seed) >= tc->mask_frac;
    if (tc->full_row >= 0) memset(mask + tc->full_row * n, 0, (size_t)n);
    if (tc->empty_half) memset(mask, 0, (size_t)(n / 2));
  }
  if (tc->underflow) {
    /* a_1 = eps_1 (log k - log count); the shifted sum of t = 2 is sum_j exp((s_j + a_1) / eps_2) (every
       s_j is below -a_1): it underflows when the largest exponent is below the smallest subnormal's log */
    double e1 = fmax(tc->cfg.eps_init, tc->cfg.eps), e2 = fmax(e1 * tc->cfg.eps_decay, tc->cfg.eps), worst = -INFINITY;
    for (long r = 0; r < rows; r++) {
      long cnt = 0;
      for (long j = 0; j < n; j++) cnt += !mask || mask[r * n + j];
      if (!cnt) continue;
      double a1 = e1 * (log(k[r]) - log((double)cnt)), mx = -INFINITY;
      for (long j = 0; j < n; j++) if (!mask || mask[r * n + j]) mx = fmax(mx, ((double)s[r * n + j] + a1) / e2);
      worst = fmax(worst, mx);
    }
    double lim = C5_USE_DOUBLE ? -745.2 : -103.98;   /* log of the smallest subnormal */
    snprintf(extra, sizeof extra, ", largest shifted exponent at t=2: %.0f (underflows below %.0f)", worst, lim);
    T_CHECK(worst < lim, "%s: the shifted sum does not underflow (largest exponent %.1f): the fallback is not "
            "exercised", tc->name, worst);
  }

  /* one rank */
  T_OK(c5_cd_cache_alloc(rows, tc->cfg.n_iters, &c1));
  T_OK(c5_cd_forward(c5_backend_cpu(), S->d, &tc->cfg, rows, n, s, mask, k, 1, y1, &c1));
  T_OK(c5_cd_backward(c5_backend_cpu(), S->d, &c1, rows, n, s, mask, y1, gy, ds1));
  /* sharded by columns, unit 1 */
  T_OK(c5_layout_compute(W->d, n, 1, &lay));
  sl = slice(s, sizeof *s, rows, n, 1, &lay);
  gl = slice(gy, sizeof *gy, rows, n, 1, &lay);
  ml = slice(mask, 1, rows, n, 1, &lay);
  yl = malloc((size_t)(rows * lay.n_local + 1) * sizeof *yl);
  dsl = malloc((size_t)(rows * lay.n_local + 1) * sizeof *dsl);
  T_OK(c5_cd_cache_alloc(rows, tc->cfg.n_iters, &cw));
  T_OK(c5_cd_forward(c5_backend_cpu(), W->d, &tc->cfg, rows, lay.n_local, sl, ml, k, 1, yl, &cw));
  T_OK(c5_cd_backward(c5_backend_cpu(), W->d, &cw, rows, lay.n_local, sl, ml, yl, gl, dsl));
  gather_seq(W, rows, n, 1, 1, yl, yw);
  gather_seq(W, rows, n, 1, 1, dsl, dsw);
  note(&t, "y", relnorm(yw, y1, N));
  note(&t, "ds", relnorm(dsw, ds1, N));
  if (tc->full_row >= 0) {
    int zero = 1;
    for (long j = 0; j < n; j++) zero &= yw[tc->full_row * n + j] == 0 && dsw[tc->full_row * n + j] == 0;
    T_CHECK(zero, "%s: the fully masked row has nonzero y or ds when sharded", tc->name);
  }
  {
    double my = 0, md = 0;
    for (long i = 0; i < N; i++) { my = fmax(my, fabs((double)y1[i])); md = fmax(md, fabs((double)ds1[i])); }
    T_CHECK(my > 0 && md > 0, "%s: y or ds all zero (max %g, %g): the comparison would be vacuous", tc->name, my, md);
  }
  ok = !t.fail;
fail:
  ok = all(W, ok);
  if (g_rank == 0)
    printf("  cd     %-52s P=%d: %s worst rel %.2e (%s)%s\n", tc->name, g_size, ok ? "ok    " : "FAILED", t.worst,
           t.what[0] ? t.what : "-", extra);
  c5_cd_cache_free(&c1); c5_cd_cache_free(&cw);
  free(s); free(gy); free(y1); free(ds1); free(yw); free(dsw); free(mask); free(ml); free(k);
  free(sl); free(gl); free(yl); free(dsl);
  return ok;
}

/* ---- the router ----------------------------------------------------------------------- */

typedef struct {
  const char *name;
  long batch, n, num_tokens;
  int R, cosine;
  long block;
  int masked;               /* ~25% masked, the last batch row fully masked */
} router_case;

/* Forward and backward (dscore = w at each selection) of one layout; dx gathered,
   drouting_token summed over the ranks. */
static c5_status route(const group *g, const c5_router *rtr, const router_case *tc, int dim, const c5_real *x,
                       const c5_real *rt, const uint8_t *mask, const double *w, c5_router_cache **cache,
                       c5_real *dx, c5_real *drt)
{
  c5_layout lay;
  c5_status st = c5_layout_compute(g->d, tc->n, 1, &lay);
  if (st != C5_OK) return st;
  long nl = lay.n_local, nsel = 0;
  c5_real *xl = slice(x, sizeof *x, tc->batch, tc->n, dim, &lay), *dxl = calloc((size_t)(tc->batch * nl * dim + 1), sizeof *dxl);
  uint8_t *ml = slice(mask, 1, tc->batch, tc->n, 1, &lay);
  c5_real *ds = NULL;
  memset(drt, 0, (size_t)(tc->R * dim) * sizeof *drt);
  st = c5_router_cache_create(rtr, tc->batch, nl, cache);
  if (st == C5_OK) st = c5_router_forward(rtr, g->d, &lay, rt, tc->batch, xl, ml, tc->num_tokens, 0, 0, *cache);
  if (st == C5_OK) {
    const c5_routing *ro = c5_router_cache_routing(*cache);
    for (long row = 0; ro->routed && row < ro->rows; row++) nsel += ro->count[row];
    ds = calloc((size_t)nsel + 1, sizeof *ds);
    for (long row = 0; ro->routed && row < ro->rows; row++)
      for (long e = ro->start[row]; e < ro->start[row] + ro->count[row]; e++) ds[e] = (c5_real)w[row * tc->n + ro->idx[e]];
    st = c5_router_backward(rtr, g->d, *cache, rt, xl, ds, dxl, drt);
  }
  if (st == C5_OK) {
    gather_seq(g, tc->batch, tc->n, 1, dim, dxl, dx);
    MPI_Allreduce(MPI_IN_PLACE, drt, tc->R * dim, C5_MPI_REAL, MPI_SUM, g->comm);
  }
  free(xl); free(dxl); free(ml); free(ds);
  return st;
}

static int run_router(const group *W, const group *S, const router_case *tc, unsigned long long seed)
{
  const int dim = 8;
  long rows = tc->batch * tc->R, nx = tc->batch * tc->n * dim;
  c5_router_config c = C5_ROUTER_CONFIG_DEFAULT;
  c.straight_through = 0;
  c.eps = 0.3;
  c.num_routing_tokens = tc->R;
  c.cosine_sim_routing = tc->cosine;
  c.cosine_sim_scale = 6;
  c.route_block_size = tc->block;
  c5_router *rtr = NULL;
  c5_router_cache *c1 = NULL, *cw = NULL;
  c5_real *x = malloc((size_t)nx * sizeof *x), *rt = malloc((size_t)(tc->R * dim) * sizeof *rt);
  c5_real *dx1 = calloc((size_t)nx, sizeof *dx1), *dxw = calloc((size_t)nx, sizeof *dxw);
  c5_real *drt1 = calloc((size_t)(tc->R * dim), sizeof *drt1), *drtw = calloc((size_t)(tc->R * dim), sizeof *drtw);
  double *w = malloc((size_t)(rows * tc->n) * sizeof *w);
  uint8_t *mask = NULL;
  tally t = { 0 };
  int ok = 0, straddle = 0;
  for (long i = 0; i < nx; i++) x[i] = (c5_real)t_normal(&seed);
  for (long i = 0; i < tc->R * dim; i++) rt[i] = (c5_real)((tc->cosine ? 1.0 : 0.4) * t_normal(&seed));
  for (long i = 0; i < rows * tc->n; i++) w[i] = t_normal(&seed);
  if (tc->masked) {
    mask = malloc((size_t)(tc->batch * tc->n));
    for (long i = 0; i < tc->batch * tc->n; i++) mask[i] = t_uniform(&seed) >= 0.25;
    memset(mask + (tc->batch - 1) * tc->n, 0, (size_t)tc->n);
  }
  if (tc->block > 0)   /* blocks cut by a rank boundary */
    for (int q = 1; q < g_size; q++) {
      c5_layout l;
      c5_layout_of_rank(tc->n, 1, q, g_size, &l);
      straddle += l.offset % tc->block != 0 && l.offset < (tc->n / tc->block) * tc->block;
    }
  T_OK(c5_router_create(c5_backend_cpu(), &c, dim, &rtr));
  T_OK(route(S, rtr, tc, dim, x, rt, mask, w, &c1, dx1, drt1));
  T_OK(route(W, rtr, tc, dim, x, rt, mask, w, &cw, dxw, drtw));
  T_CHECK(c5_router_cache_routing(c1)->routed, "%s: not routed", tc->name);
  if (same_routing(W, "router", c5_router_cache_routing(c1), c5_router_cache_routing(cw), &t, 0, 0, NULL)) {
    note(&t, "dx", relnorm(dxw, dx1, nx));
    note(&t, "routing_token grad", relnorm(drtw, drt1, tc->R * dim));
  } else {
    t.fail = 1;
  }
  ok = !t.fail;
fail:
  ok = all(W, ok);
  if (g_rank == 0) {
    char ex[64] = "";
    if (tc->block > 0) snprintf(ex, sizeof ex, ", %d rank boundaries inside a block", straddle);
    printf("  router %-52s P=%d: %s worst rel %.2e (%s)%s\n", tc->name, g_size, ok ? "ok    " : "FAILED", t.worst,
           t.what[0] ? t.what : "-", ex);
  }
  c5_router_cache_destroy(&c1); c5_router_cache_destroy(&cw);
  c5_router_destroy(&rtr);
  free(x); free(rt); free(dx1); free(dxw); free(drt1); free(drtw); free(w); free(mask);
  return ok;
}

/* ---- the layout rule -------------------------------------------------------------------- */

/* Every rank's shard by the rule of docs/design.md §3 (W = ceil(n / unit) units, rank r holds
   floor(W/P) units and the first W mod P ranks one more, contiguous from 0, only the last may end
   in a partial unit) and this rank's c5_layout_compute equal to c5_layout_of_rank. With
   want_partial the last shard must end in a partial unit. sizes gets "a/b/c" (tokens per rank). */
static int layout_rule_ok(const group *g, long n, long unit, int want_partial, char *sizes, size_t len)
{
  long Wu = (n + unit - 1) / unit, q = Wu / g->size, rem = Wu % g->size, next = 0;
  int ok = 1;
  size_t used = 0;
  sizes[0] = 0;
  for (int r = 0; r < g->size; r++) {
    c5_layout l;
    if (c5_layout_of_rank(n, unit, r, g->size, &l) != C5_OK) { ok = 0; break; }
    long want = (q + (r < rem)) * unit;
    if (r == g->size - 1) {   /* the rest, within its last unit */
      ok &= n - next <= want && n - next > want - unit;
      want = n - next;
    }
    ok &= l.n == n && l.unit == unit && l.offset == next && l.n_local == want && l.n_local > 0;
    ok &= r == g->size - 1 || l.n_local % unit == 0;
    if (r == g->size - 1 && want_partial) ok &= l.n_local % unit != 0;
    next += l.n_local;
    if (used < len) used += (size_t)snprintf(sizes + used, len - used, "%s%ld", r ? "/" : "", l.n_local);
  }
  ok &= next == n;
  c5_layout me, of;
  ok &= c5_layout_compute(g->d, n, unit, &me) == C5_OK && c5_layout_of_rank(n, unit, g->rank, g->size, &of) == C5_OK &&
        !memcmp(&me, &of, sizeof me);
  return all(g, ok);
}

/* ---- modules through one interface (modules.h) ------------------------------------------ */

#define ADV_OFF (-1)
#define ADV_LAST (-2)

typedef struct {
  const char *name;
  const mod_t *mt;
  const void *cfg;
  long batch;
  long n;                   /* SMALLEST_N: the fewest tokens the unit allows on this many ranks */
  long unit;                /* what the library's c5_<module>_layout_unit must give (the layout uses its value) */
  int dim;
  int masked;               /* ~20% of the tokens masked (never on the adversarial rank) */
  int adversarial;          /* ADV_OFF, ADV_LAST (the last rank) or a rank: every routed token there */
  int partial;              /* the last shard must end in a partial unit (checked) */
} mod_case;

#define SMALLEST_N 0

/* P ranks need W = ceil(n / unit) >= P units: n = (P - 1) unit + 1 is the fewest, the last rank holding one
   token (one rank runs the 2-rank length, unit + 1). */
static long smallest_n(long unit) { return (g_size > 1 ? g_size - 1 : 1) * unit + 1; }

static int run_module(const group *W, const group *S, const mod_case *tc, unsigned long long seed)
{
  const mod_t *mt = tc->mt;
  long unit = 0;
  c5_status ust = mt->unit(tc->cfg, &unit);   /* checked once the buffers below exist (fail: frees them) */
  long b = tc->batch, n = tc->n == SMALLEST_N ? smallest_n(unit) : tc->n, D = tc->dim, N = b * n * D;
  c5_params *p = NULL;
  void *m = NULL, *c1 = NULL, *cw = NULL;
  c5_real *x = malloc((size_t)N * sizeof *x), *g = malloc((size_t)N * sizeof *g);
  c5_real *out1 = malloc((size_t)N * sizeof *out1), *dx1 = malloc((size_t)N * sizeof *dx1);
  c5_real *outw = malloc((size_t)N * sizeof *outw), *dxw = malloc((size_t)N * sizeof *dxw);
  c5_real *xl = NULL, *gl = NULL, *outl = NULL, *dxl = NULL, *grad1 = NULL;
  uint8_t *mask = tc->masked ? malloc((size_t)(b * n)) : NULL, *ml = NULL;
  c5_layout lay1, lay, own = { 0 };
  tally t = { 0 };
  int ok = 0, owner = tc->adversarial == ADV_LAST ? g_size - 1 : tc->adversarial;
  long on_owner = 0, owner_rows = 0;
  char extra[200] = "";

  T_OK(ust);
  T_CHECK(unit == tc->unit, "%s: the %s layout unit is %ld, want %ld", tc->name, mt->cls, unit, tc->unit);
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_OK(mt->create(tc->cfg, p, &m));
  T_OK(c5_params_alloc(p));
  mod_fill_params(p, &seed);   /* N(0, 1/fan-in)-ish values, norm gains near 1 */
  for (long i = 0; i < N; i++) { x[i] = (c5_real)t_normal(&seed); g[i] = (c5_real)t_normal(&seed); }
  if (mask) for (long i = 0; i < b * n; i++) mask[i] = t_uniform(&seed) > 0.2;
  if (owner >= 0) {
    /* every routing token gets a common unit direction u; x += 8u on the owner's tokens only, so their
       logits are ~8 above everyone else's (~4 standard deviations): all k selections land there */
    double u[64], nu = 0;
    for (int i = 0; i < D; i++) { u[i] = t_normal(&seed); nu += u[i] * u[i]; }
    for (int i = 0; i < D; i++) u[i] /= sqrt(nu);
    for (long i = 0; i < c5_params_count(p); i++) {
      if (!strstr(c5_params_name(p, i), "routing_token")) continue;
      c5_real *v = c5_params_value(p, i);
      for (long j = 0; j < c5_params_numel(p, i); j++) v[j] = (c5_real)(0.5 * v[j] + u[j % D]);
    }
    T_OK(c5_layout_of_rank(n, unit, owner, g_size, &own));
    for (long bb = 0; bb < b; bb++)
      for (long j = own.offset; j < own.offset + own.n_local; j++) {
        for (int i = 0; i < D; i++) x[(bb * n + j) * D + i] += (c5_real)(8 * u[i]);
        if (mask) mask[bb * n + j] = 1;
      }
  }

  /* one rank */
  T_OK(c5_layout_compute(S->d, n, unit, &lay1));
  T_OK(mt->cache(m, b, n, &c1));
  T_OK(mt->fwd(m, S->d, &lay1, b, x, mask, c1, out1));
  c5_params_zero_grad(p);
  T_OK(mt->bwd(m, S->d, c1, x, g, dx1));
  long PT = c5_params_total(p);
  grad1 = malloc((size_t)PT * sizeof *grad1);
  memcpy(grad1, c5_params_grad(p, 0), (size_t)PT * sizeof *grad1);

  /* sharded */
  T_OK(c5_layout_compute(W->d, n, unit, &lay));
  {
    char sizes[120];
    int rule = layout_rule_ok(W, n, unit, tc->partial, sizes, sizeof sizes);
    T_CHECK(rule, "%s: layout n = %ld, unit %ld breaks the rule (%s)", tc->name, n, unit, sizes);
    snprintf(extra, sizeof extra, ", unit %ld, n %ld, shards %s", unit, n, sizes);
  }
  xl = slice(x, sizeof *x, b, n, D, &lay);
  gl = slice(g, sizeof *g, b, n, D, &lay);
  ml = slice(mask, 1, b, n, 1, &lay);
  outl = malloc((size_t)(b * lay.n_local * D + 1) * sizeof *outl);
  dxl = malloc((size_t)(b * lay.n_local * D + 1) * sizeof *dxl);
  T_OK(mt->cache(m, b, lay.n_local, &cw));
  T_OK(mt->fwd(m, W->d, &lay, b, xl, ml, cw, outl));
  int same = 1, routers = 0, routed = 0;
  const c5_routing *ro;
  for (int i = 0; (ro = mt->routing(c1, i)); i++) {
    routers++;
    routed += ro->routed;
    same &= same_routing(W, mt->router_name(i), ro, mt->routing(cw, i), &t, own.offset, own.offset + own.n_local,
                         owner >= 0 ? &on_owner : NULL);
    owner_rows += ro->routed ? ro->rows : 0;
  }
  /* a router that does not route compares nothing of its own: every case is sized to route */
  T_CHECK(routed == routers, "%s: %d of %d routers route at n = %ld", tc->name, routed, routers, n);
  if (!same) {
    t.fail = 1;
    if (g_rank == 0) printf("    %s: the sharded selection differs from one rank's: numbers not compared\n", tc->name);
    goto fail;
  }
  gather_seq(W, b, n, unit, D, outl, outw);
  note(&t, "out", relnorm(outw, out1, N));
  c5_params_zero_grad(p);
  T_OK(mt->bwd(m, W->d, cw, xl, gl, dxl));
  gather_seq(W, b, n, unit, D, dxl, dxw);
  MPI_Allreduce(MPI_IN_PLACE, c5_params_grad(p, 0), (int)PT, C5_MPI_REAL, MPI_SUM, W->comm);
  note(&t, "dx", relnorm(dxw, dx1, N));
  {
    const c5_real *gw = c5_params_grad(p, 0);
    long off = 0;
    for (long i = 0; i < c5_params_count(p); i++) {
      long ne = c5_params_numel(p, i);
      char w[128];
      snprintf(w, sizeof w, "d %s", c5_params_name(p, i));
      note(&t, w, relnorm(gw + off, grad1 + off, ne));
      off += ne;
    }
    T_CHECK(off == PT, "%s: parameters are not one slab (%ld of %ld)", tc->name, off, PT);
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ", %ld params, %d of %d routers route",
             c5_params_count(p), routed, routers);
  }
  if (owner >= 0) {
    T_CHECK(on_owner == owner_rows, "%s: only %ld of %ld routed rows lie wholly on rank %d: the adversarial premise "
            "fails", tc->name, on_owner, owner_rows, owner);
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ", all %ld routed rows on rank %d [%ld, %ld)",
             owner_rows, owner, own.offset, own.offset + own.n_local);
  }
  ok = !t.fail;
fail:
  ok = all(W, ok);
  if (g_rank == 0)
    printf("  %-6s %-52s P=%d: %s worst rel %.2e (%s)%s\n", mt->name, tc->name, g_size, ok ? "ok    " : "FAILED",
           t.worst, t.what[0] ? t.what : "-", extra);
  if (cw) mt->destroy_cache(&cw);
  mod_free(mt, &m, &c1);
  c5_params_destroy(&p);
  free(x); free(g); free(out1); free(dx1); free(outw); free(dxw); free(xl); free(gl); free(outl); free(dxl);
  free(grad1); free(mask); free(ml);
  return ok;
}

/* ---- P > number of units ---------------------------------------------------------------- */

/* n = unit (P - 1) - 1 tokens make P - 1 units (the last partial): c5_layout_compute must fail on
   every rank with C5_ERR_ARG, naming the ranks and the units, and nobody may wait in a collective
   (the script runs under a timeout; the Allreduce below is reached only if every rank returned). */
static int run_too_many(const group *W)
{
  int ok = 0;
  if (g_size == 1) {   /* P > W cannot happen on one rank: the rule alone, through c5_layout_of_rank */
    c5_layout l;
    c5_status st = c5_layout_of_rank(7, 4, 0, 3, &l);
    ok = st == C5_ERR_ARG && strstr(c5_last_error(), "3 ranks") && strstr(c5_last_error(), "2 units");
    if (!ok) fprintf(stderr, "c5_layout_of_rank(n 7, unit 4, rank 0 of 3): %s: %s\n", c5_status_string(st), c5_last_error());
    c5_error_clear();
    printf("  layout %-52s P=1: %s (c5_layout_of_rank: %d ranks, %d units)\n", "P > units: C5_ERR_ARG naming both",
           ok ? "ok" : "FAILED", 3, 2);
    return ok;
  }
  const long unit = 4, n = unit * (g_size - 1) - 1, Wu = g_size - 1;
  char r_needle[32], u_needle[32], msg[512] = "";
  c5_layout l;
  snprintf(r_needle, sizeof r_needle, "%d ranks", g_size);
  snprintf(u_needle, sizeof u_needle, "%ld units", Wu);
  c5_status st = c5_layout_compute(W->d, n, unit, &l);
  snprintf(msg, sizeof msg, "%s", c5_last_error());
  msg[strcspn(msg, "\n")] = 0;   /* the message, without its file:line trace */
  ok = st == C5_ERR_ARG && strstr(msg, r_needle) && strstr(msg, u_needle);
  if (!ok)
    fprintf(stderr, "rank %d: c5_layout_compute(n %ld, unit %ld) on %d ranks returned %s (%s), expected %s naming "
            "\"%s\" and \"%s\"\n", g_rank, n, unit, g_size, c5_status_string(st), msg,
            c5_status_string(C5_ERR_ARG), r_needle, u_needle);
  c5_error_clear();
  ok = all(W, ok);   /* reached by every rank: no hang */
  if (g_rank == 0)
    printf("  layout %-52s P=%d: %s (n %ld, unit %ld), every rank: \"%s\"\n", "P > units: C5_ERR_ARG naming both",
           g_size, ok ? "ok" : "FAILED", n, unit, msg);
  return ok;
}

/* ---- a unit that is not a multiple of the module's -------------------------------------- */

/* Sharded on a layout unit `bad` that the module's unit does not divide, the forward must fail with
   C5_ERR_ARG on every rank, naming the unit function, before any collective (no hang: the script's
   timeout). One rank has no windows to cut: nothing to check there. */
static int run_bad_unit(const group *W, const char *name, const mod_t *mt, const void *cfg, long bad, long n,
                        const char *needle)
{
  if (g_size == 1) return 1;
  c5_params *p = NULL;
  void *m = NULL, *c = NULL;
  c5_real *x = NULL, *out = NULL;
  c5_layout lay;
  long unit = 0;
  int ok = 0;
  char msg[512] = "";
  T_OK(mt->unit(cfg, &unit));
  T_CHECK(bad % unit != 0, "%s: unit %ld divides %ld: the case would not be refused", name, unit, bad);
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_OK(mt->create(cfg, p, &m));
  T_OK(c5_params_alloc(p));
  T_OK(c5_layout_compute(W->d, n, bad, &lay));
  x = calloc((size_t)(lay.n_local * 8 + 1), sizeof *x);
  out = calloc((size_t)(lay.n_local * 8 + 1), sizeof *out);
  T_OK(mt->cache(m, 1, lay.n_local, &c));
  c5_status st = mt->fwd(m, W->d, &lay, 1, x, NULL, c, out);
  snprintf(msg, sizeof msg, "%s", c5_last_error());
  msg[strcspn(msg, "\n")] = 0;
  ok = st == C5_ERR_ARG && strstr(msg, needle);
  if (!ok) fprintf(stderr, "rank %d: %s on layout unit %ld returned %s (%s), expected %s naming \"%s\"\n", g_rank,
                   name, bad, c5_status_string(st), msg, c5_status_string(C5_ERR_ARG), needle);
  c5_error_clear();
fail:
  ok = all(W, ok);
  if (g_rank == 0)
    printf("  layout %-52s P=%d: %s (unit %ld, layout unit %ld), every rank: \"%s\"\n", name, g_size,
           ok ? "ok" : "FAILED", unit, bad, msg);
  mod_free(mt, &m, &c);
  c5_params_destroy(&p);
  free(x); free(out);
  return ok;
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  group W = { NULL, MPI_COMM_WORLD, 0, 1 }, S = { NULL, MPI_COMM_SELF, 0, 1 };
  int ok = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  W.rank = g_rank; W.size = g_size;
  if (c5_dist_create(MPI_COMM_WORLD, &W.d) != C5_OK || c5_dist_create(MPI_COMM_SELF, &S.d) != C5_OK) {
    fprintf(stderr, "%s\n", c5_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (g_rank == 0) printf("test_shard (%s, %d ranks, tolerance %.0e norm-wise)\n", C5_REAL_NAME, g_size, TOL);

  /* coordinate descent, rows sharded by columns */
  const c5_cd_config router_cd = { .n_iters = 20, .eps = 0.03, .eps_init = 4.0, .eps_decay = 0.7 };
  const c5_cd_config soft_cd = { .n_iters = 20, .eps = 0.3, .eps_init = 4.0, .eps_decay = 0.7 };
  const cd_case cds[] = {
    { "eps-scaling (eps 0.03), n 157", 3, 157, 0, 2, 0, -1, 0, 16, 0, router_cd, 0 },
    { "soft (eps 0.3), mask, k per row", 4, 101, 0, 1, 0.25, -1, 1, 0, 0, soft_cd, 0 },
    { "mask, a row fully masked", 3, 64, 0, 1, 0.3, 1, 0, 8, 0, soft_cd, 0 },
#if C5_USE_DOUBLE
    { "underflow fallback (s ~ -3000)", 2, 200, -3000, 1, 0, -1, 0, 10, 0, router_cd, 1 },
    { "underflow, first half of row 0 masked", 2, 200, -3000, 1, 0, -1, 0, 10, 1, router_cd, 1 },
#else   /* float exp underflows sooner; float s near -3000 carries 2e-4 absolute error (as test_cd) */
    { "underflow fallback (s ~ -300)", 2, 200, -300, 1, 0, -1, 0, 10, 0, soft_cd, 1 },
    { "underflow, first half of row 0 masked", 2, 200, -300, 1, 0, -1, 0, 10, 1, soft_cd, 1 },
#endif
  };
  for (size_t i = 0; i < sizeof cds / sizeof *cds; i++) ok &= run_cd(&W, &S, &cds[i], 100 + i);

  /* the router: straight_through off, eps 0.3 */
  const router_case rcs[] = {
    { "2 routes, mask (a batch row all masked)", 2, 60, 10, 2, 0, 0, 1 },
    { "cosine (scale 6), 2 routes, mask", 2, 60, 10, 2, 1, 0, 1 },
    { "route_block_size 7, n 61, 2 routes, mask", 2, 61, 12, 2, 0, 7, 1 },
    { "blocks of 7, cosine, 2 routes, mask", 3, 61, 12, 2, 1, 7, 1 },
  };
  for (size_t i = 0; i < sizeof rcs / sizeof *rcs; i++) ok &= run_router(&W, &S, &rcs[i], 200 + i);

  /* modules */
  c5_routed_ff_config ff = C5_ROUTED_FF_CONFIG_DEFAULT;
  ff.dim = 8; ff.num_heavy_tokens = 20; ff.heavy_ff_mult = 2; ff.router = mod_soft_router();
  c5_routed_ff_config ffc = ff;
  ffc.router.cosine_sim_routing = 1; ffc.router.cosine_sim_scale = 4; ffc.router.route_block_size = 9;
  c5_routed_ff_config ffa = ff;
  ffa.num_heavy_tokens = 12;
  c5_routed_ff_config ff1k = ff;
  ff1k.num_heavy_tokens = 100;

  c5_routed_attn_config at = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  at.dim = 8; at.num_heavy_tokens_q = 12; at.num_heavy_tokens_kv = 14; at.num_routed_kv = 2;
  at.light_dim_head = 4; at.light_heads = 2; at.light_window_size = 10; at.heavy_dim_head = 4; at.heavy_heads = 2;
  at.multiply_keys_by_score = 1; at.multiply_queries_by_score = 1; at.rotary_emb = 1; at.router = mod_soft_router();
  c5_routed_attn_config ats = at;   /* one unit per rank, a 1-token last shard */
  ats.light_window_size = 8; ats.num_heavy_tokens_q = 3; ats.num_heavy_tokens_kv = 4;

  c5_block_config bl;
  bl.attn = at;
  bl.attn.light_window_size = 8; bl.attn.num_heavy_tokens_q = 8; bl.attn.num_heavy_tokens_kv = 10;
  bl.ff = ff;
  bl.ff.num_heavy_tokens = 12;

  c5_routed_ar_attn_config ar = C5_ROUTED_AR_ATTN_CONFIG_DEFAULT;   /* autoregressive: windows 4 and 6, unit 12 */
  ar.dim = 8; ar.num_heavy_tokens_q = 3; ar.num_heavy_tokens_kv = 8; ar.num_routed_kv = 2; ar.light_dim_head = 4;
  ar.light_heads = 2; ar.light_window_size = 4; ar.heavy_window_size = 6; ar.heavy_dim_head = 4; ar.heavy_heads = 2;
  ar.rotary_emb = 1; ar.multiply_queries_by_score = 1; ar.router = mod_soft_router();
  c5_routed_ar_attn_config ar8 = ar;   /* one window size, one route */
  ar8.light_window_size = 8; ar8.heavy_window_size = 0; ar8.num_routed_kv = 1; ar8.num_heavy_tokens_q = 4;
  ar8.num_heavy_tokens_kv = 10; ar8.rotary_emb = 0;
  c5_routed_attn_config atn = at;   /* no light branch: no window, unit 1 */
  atn.has_light_attn = 0; atn.use_null_q_tokens = 0;
  c5_block_config bl16;             /* dim 16, 4 heads, window 6 */
  bl16.attn = at;
  bl16.attn.dim = 16; bl16.attn.light_heads = 4; bl16.attn.heavy_heads = 4; bl16.attn.light_window_size = 12;
  bl16.attn.num_heavy_tokens_q = 20; bl16.attn.num_heavy_tokens_kv = 24; bl16.attn.use_null_q_tokens = 0;
  bl16.ff = ff;
  bl16.ff.dim = 16; bl16.ff.num_heavy_tokens = 30;
  c5_block_config blst = bl;        /* straight-through on (the default in training), eps 0.3 */
  blst.attn.router.straight_through = 1; blst.ff.router.straight_through = 1;

  /* at the smallest n each unit allows: few heavy tokens, so that even n = 2 routes */
  c5_routed_ff_config ff1 = ff;
  ff1.num_heavy_tokens = 1;
  c5_routed_attn_config at5 = at;   /* window 10 / 2 */
  at5.num_heavy_tokens_q = 3; at5.num_heavy_tokens_kv = 4;
  c5_routed_attn_config at9 = ats;  /* light_window_size 9: window 9 // 2 = 4 */
  at9.light_window_size = 9;
  c5_routed_attn_config at3 = at;   /* light_window_size 3: window 1 */
  at3.light_window_size = 3; at3.num_heavy_tokens_q = 1; at3.num_heavy_tokens_kv = 1;
  c5_routed_attn_config atn128 = atn;   /* no light branch: its window (the default 128) is ignored */
  atn128.light_window_size = 128;
  c5_routed_attn_config atn1 = atn128;
  atn1.num_heavy_tokens_q = 1; atn1.num_heavy_tokens_kv = 1; atn1.use_null_q_tokens = 1;
  c5_block_config blsm = bl;        /* window 4, few heavy tokens */
  blsm.attn.num_heavy_tokens_q = 3; blsm.attn.num_heavy_tokens_kv = 4; blsm.ff.num_heavy_tokens = 3;
  c5_block_config bln = blsm;       /* no light branch: unit 1 whatever the window */
  bln.attn.has_light_attn = 0; bln.attn.light_window_size = 128;
  bln.attn.num_heavy_tokens_q = 1; bln.attn.num_heavy_tokens_kv = 1; bln.ff.num_heavy_tokens = 1;
  c5_block_config bln40 = bl;       /* the same at n 40, window 128 */
  bln40.attn.has_light_attn = 0; bln40.attn.light_window_size = 128;
  c5_routed_ar_attn_config ar48 = ar;   /* heavy window a multiple of the light one: unit 8 */
  ar48.light_window_size = 4; ar48.heavy_window_size = 8; ar48.num_heavy_tokens_q = 3; ar48.num_heavy_tokens_kv = 5;
  c5_routed_ar_attn_config ar84 = ar48; /* light window a multiple of the heavy one: unit 8 */
  ar84.light_window_size = 8; ar84.heavy_window_size = 4; ar84.num_heavy_tokens_q = 2;

  const mod_case mcs[] = {
    /* name, module, cfg, batch, n, unit, dim, masked, adversarial, partial */
    { "mask, n 101", &MOD_FF, &ff, 2, 101, 1, 8, 1, ADV_OFF, 0 },
    { "cosine, route_block_size 9, mask", &MOD_FF, &ffc, 2, 101, 1, 8, 1, ADV_OFF, 0 },
    { "2 kv routes, rotary, q/k by score, mask, n 93", &MOD_AT, &at, 2, 93, 5, 8, 1, ADV_OFF, 1 },
    { "same, no mask", &MOD_AT, &at, 1, 93, 5, 8, 0, ADV_OFF, 1 },
    { "one unit per rank, last shard 1 token, mask", &MOD_AT, &ats, 2, SMALLEST_N, 4, 8, 1, ADV_OFF, 1 },
    { "no light branch, no null q, unit 1, mask", &MOD_AT, &atn, 2, 93, 1, 8, 1, ADV_OFF, 0 },
    { "mask, n 75 (window 4)", &MOD_BL, &bl, 2, 75, 4, 8, 1, ADV_OFF, 1 },
    { "dim 16, 4 heads, n 197 (window 6), no null q, mask", &MOD_BL, &bl16, 2, 197, 6, 16, 1, ADV_OFF, 1 },
    { "straight-through on, mask, n 75", &MOD_BL, &blst, 2, 75, 4, 8, 1, ADV_OFF, 1 },
    { "adversarial: all routed on the last rank", &MOD_FF, &ffa, 2, 101, 1, 8, 1, ADV_LAST, 0 },
    { "adversarial: all routed on rank 0", &MOD_BL, &bl, 2, 75, 4, 8, 1, 0, 1 },
    { "adversarial: all routed on the middle rank", &MOD_AT, &at, 2, 93, 5, 8, 1, (g_size - 1) / 2, 1 },
    { "layout: n 1000 (no divisibility), mask", &MOD_FF, &ff1k, 1, 1000, 1, 8, 1, ADV_OFF, 0 },
    { "autoregressive: windows 4/6, 2 kv routes, rotary, n 70", &MOD_AR, &ar, 2, 70, 12, 8, 0, ADV_OFF, 1 },
    { "autoregressive: window 8, n 50", &MOD_AR, &ar8, 1, 50, 8, 8, 0, ADV_OFF, 1 },
    /* the smallest n of each unit: (P - 1) units and one token */
    { "smallest n: one token per rank", &MOD_FF, &ff1, 2, SMALLEST_N, 1, 8, 0, ADV_OFF, 0 },
    { "smallest n: light_window_size 10 (unit 5), mask", &MOD_AT, &at5, 2, SMALLEST_N, 5, 8, 1, ADV_OFF, 1 },
    { "smallest n: light_window_size 9 (unit 9 // 2 = 4)", &MOD_AT, &at9, 2, SMALLEST_N, 4, 8, 0, ADV_OFF, 1 },
    { "smallest n: light_window_size 3 (unit 1)", &MOD_AT, &at3, 2, SMALLEST_N, 1, 8, 0, ADV_OFF, 0 },
    { "no light branch, window 128 ignored: n 40, mask", &MOD_AT, &atn128, 2, 40, 1, 8, 1, ADV_OFF, 0 },
    { "smallest n: no light branch, window 128 (unit 1)", &MOD_AT, &atn1, 2, SMALLEST_N, 1, 8, 0, ADV_OFF, 0 },
    { "smallest n: window 4 (unit 4), mask", &MOD_BL, &blsm, 2, SMALLEST_N, 4, 8, 1, ADV_OFF, 1 },
    { "smallest n: no light branch, window 128 (unit 1)", &MOD_BL, &bln, 2, SMALLEST_N, 1, 8, 0, ADV_OFF, 0 },
    { "no light branch, window 128 ignored: n 40, mask", &MOD_BL, &bln40, 2, 40, 1, 8, 1, ADV_OFF, 0 },
    { "smallest n: autoregressive windows 4/6 (unit 12)", &MOD_AR, &ar, 1, SMALLEST_N, 12, 8, 0, ADV_OFF, 1 },
    { "smallest n: autoregressive window 8 (unit 8)", &MOD_AR, &ar8, 1, SMALLEST_N, 8, 8, 0, ADV_OFF, 1 },
    { "smallest n: autoregressive windows 4/8 (unit 8)", &MOD_AR, &ar48, 1, SMALLEST_N, 8, 8, 0, ADV_OFF, 1 },
    { "smallest n: autoregressive windows 8/4 (unit 8)", &MOD_AR, &ar84, 1, SMALLEST_N, 8, 8, 0, ADV_OFF, 1 },
  };
  for (size_t i = 0; i < sizeof mcs / sizeof *mcs; i++) ok &= run_module(&W, &S, &mcs[i], 300 + i);

  /* the layout rule */
  {
    char sz[120];
    int r1 = layout_rule_ok(&W, 1000, 1, 0, sz, sizeof sz);
    int r3 = 1;
    if (g_size == 3) r3 = !strcmp(sz, "334/333/333");
    if (g_rank == 0)
      printf("  layout %-52s P=%d: %s shards %s%s\n", "n 1000, unit 1", g_size, r1 && r3 ? "ok" : "FAILED", sz,
             g_size == 3 ? " (want 334/333/333)" : "");
    ok &= r1 && r3;
    int r2 = layout_rule_ok(&W, 93, 5, 1, sz, sizeof sz);
    if (g_rank == 0)
      printf("  layout %-52s P=%d: %s shards %s\n", "n 93, unit 5: the last shard ends in a partial unit", g_size,
             r2 ? "ok" : "FAILED", sz);
    ok &= r2;
  }
  ok &= run_too_many(&W);
  ok &= run_bad_unit(&W, "attn: window 5 on layout unit 4: C5_ERR_ARG", &MOD_AT, &at5, 4, 40,
                     "c5_routed_attn_layout_unit");
  ok &= run_bad_unit(&W, "block: window 4 on layout unit 6: C5_ERR_ARG", &MOD_BL, &blsm, 6, 40,
                     "c5_routed_attn_layout_unit");
  ok &= run_bad_unit(&W, "ar_attn: windows 4/6 on layout unit 6: C5_ERR_ARG", &MOD_AR, &ar, 6, 40,
                     "c5_routed_ar_attn_layout_unit");

  ok = all(&W, ok);
  if (g_rank == 0) printf("test_shard %s (%d ranks)\n", ok ? "passed" : "FAILED", g_size);
  c5_dist_destroy(&S.d);
  c5_dist_destroy(&W.d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
