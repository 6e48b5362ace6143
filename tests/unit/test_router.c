/* test_router.c - the coordinate-descent router (c5_router_*).

   Every case is checked against an independent double-precision model
   written here from the reference (CoordinateDescentRouter + coor_descent:
   logits, b = -relu(s + a), scores exp((s + a + b) / eps)), and against an
   oracle of the selection rule (top num_tokens logits among unmasked tokens,
   ties to the lower index, masked last, per block with route_block_size):
     a. gradients: the library's backward against central differences of the
        model's loss (both precisions), and, in double, against central
        differences through the library itself (same selection at +h and -h);
     b. straight-through: scores exactly 1 (masked 0), same gradients bit for
        bit; backward twice accumulates exactly twice;
     c. selection with tied logits (integer inputs, duplicated rows);
     d. unrouted (n <= num_tokens): routed == 0, backward a no-op;
     e. random_route: reproducible per seed, masked tokens never picked;
     f. bad input: C5_ERR_ARG with a message naming the problem;
     g. sharding over MPI_COMM_WORLD equals the P = 1 result on MPI_COMM_SELF;
   and one cache reused across calls (mask on/off, num_tokens) behaves like
   a fresh one.
   Why no finite differences through the float library: a float forward is
   only good to ~1e-7, so a central difference needs h ~ 1e-2 to get 1e-3
   accuracy, and at that h the kinks of coordinate descent ([s + a < 0]) and
   selection changes are hit often. The float backward is instead compared
   with finite differences of the double model at the same (float) inputs,
   which is the meaningful check: same function, exact arithmetic. */
#include <string.h>
#include "harness.h"

#if C5_USE_DOUBLE
#define TOL_SCORE 1e-10   /* scores vs the double model (absolute: scores are in [0, 1]) */
#define TOL_GRAD 1e-6     /* gradient vs finite differences: |g - fd| <= TOL (|fd| + 1e-2 max|fd|) */
#define TOL_SHARD 1e-12   /* sharded vs P = 1, same floor */
#else
#define TOL_SCORE 2e-5
#define TOL_GRAD 2e-4
#define TOL_SHARD 1e-4
#endif
#define FD_H_MODEL 1e-6   /* the model runs in double in both builds */
#define FD_H_LIB 1e-5     /* double builds only */

/* ---- a problem and what the library made of it ------------------------------------ */

typedef struct { c5_dist *d; MPI_Comm comm; } group;

typedef struct {
  long batch, n, num_tokens;
  int dim, R;
  c5_real *x;        /* [batch][n][dim] */
  c5_real *rt;       /* [R][dim] routing tokens */
  uint8_t *mask;     /* [batch][n] or NULL */
  double *w;         /* [rows][n]: loss = sum over selections of w[row][idx] * score */
  int random_route;
  uint64_t seed;
} problem;

typedef struct {
  int routed, local_ok;
  long rows, k;
  long *idx;         /* [rows][k] gathered over ranks, global, ascending */
  c5_real *score;    /* [rows][k] */
  double loss;
  c5_real *dx;       /* [batch][n][dim] gathered (NULL without backward) */
  c5_real *drt;      /* [R][dim] summed over ranks */
} result;

static void result_free(result *r)
{
  free(r->idx); free(r->score); free(r->dx); free(r->drt);
  memset(r, 0, sizeof *r);
}

static void problem_free(problem *p)
{
  free(p->x); free(p->rt); free(p->mask); free(p->w);
  memset(p, 0, sizeof *p);
}

/* x, w ~ N(0,1); routing tokens N(0,1) * rt_scale (keeps logits near the
   threshold of moderate size, so many scores are not saturated). */
static void problem_make(problem *p, long batch, long n, int dim, int R, long num_tokens, double rt_scale,
                         unsigned long long seed)
{
  memset(p, 0, sizeof *p);
  p->batch = batch; p->n = n; p->dim = dim; p->R = R; p->num_tokens = num_tokens;
  p->x = malloc((size_t)(batch * n * dim) * sizeof *p->x);
  p->rt = malloc((size_t)(R * dim) * sizeof *p->rt);
  p->w = malloc((size_t)(batch * R * n) * sizeof *p->w);
  for (long i = 0; i < batch * n * dim; i++) p->x[i] = (c5_real)t_normal(&seed);
  for (long i = 0; i < (long)R * dim; i++) p->rt[i] = (c5_real)(rt_scale * t_normal(&seed));
  for (long i = 0; i < batch * R * n; i++) p->w[i] = t_normal(&seed);
}

/* mask with ~frac of the tokens off; batch row `full` (if >= 0) entirely off */
static void problem_mask(problem *p, double frac, long full, unsigned long long seed)
{
  p->mask = malloc((size_t)(p->batch * p->n));
  for (long i = 0; i < p->batch * p->n; i++) p->mask[i] = t_uniform(&seed) >= frac;
  if (full >= 0) memset(p->mask + full * p->n, 0, (size_t)p->n);
}

static c5_router_config cfg_fd(void)
{
  c5_router_config c = C5_ROUTER_CONFIG_DEFAULT;
  c.straight_through = 0;
  c.eps = 0.3;   /* moderate: scores not saturated, finite differences meaningful */
  c.eps_init = 4;
  c.eps_decay = 0.7;
  c.n_iters = 20;
  return c;
}

/* Counts and displacements (in units of `per` items) of every rank's slice of n tokens. */
static void slices(long n, int size, long per, int *cnt, int *dsp)
{
  for (int q = 0; q < size; q++) {
    c5_layout l;
    c5_layout_of_rank(n, 1, q, size, &l);
    cnt[q] = (int)(l.n_local * per);
    dsp[q] = (int)(l.offset * per);
  }
}

/* This rank's selections are within its slice, ascending, at most k. */
static int local_ok(const c5_routing *ro, long off, long nl)
{
  for (long row = 0; row < ro->rows; row++) {
    if (ro->count[row] < 0 || ro->count[row] > ro->k) return 0;
    const long *ir = ro->idx + ro->start[row];
    for (long e = 0; e < ro->count[row]; e++)
      if (ir[e] < off || ir[e] >= off + nl || (e > 0 && ir[e] <= ir[e - 1])) return 0;
  }
  return 1;
}

/* Gathers every rank's selections of each row into res->idx/score (rank
   order is index order). A row whose total is not k marks res->local_ok = 0. */
static void gather_selection(const group *g, const c5_routing *ro, result *res)
{
  int size;
  MPI_Comm_size(g->comm, &size);
  int *rc = malloc((size_t)size * sizeof *rc), *rd = malloc((size_t)size * sizeof *rd);
  res->idx = calloc((size_t)(ro->rows * ro->k + 1), sizeof *res->idx);
  res->score = calloc((size_t)(ro->rows * ro->k + 1), sizeof *res->score);
  for (long row = 0; row < ro->rows; row++) {
    int c = (int)ro->count[row];
    MPI_Allgather(&c, 1, MPI_INT, rc, 1, MPI_INT, g->comm);
    long tot = 0;
    for (int q = 0; q < size; q++) { rd[q] = (int)tot; tot += rc[q]; }
    if (tot != ro->k) {   /* every rank sees it: all skip the Allgatherv */
      fprintf(stderr, "  row %ld: %ld selections over all ranks, want k = %ld\n", row, tot, ro->k);
      res->local_ok = 0;
      continue;
    }
    MPI_Allgatherv(ro->idx + ro->start[row], c, MPI_LONG, res->idx + row * ro->k, rc, rd, MPI_LONG, g->comm);
    MPI_Allgatherv(ro->score + ro->start[row], c, C5_MPI_REAL, res->score + row * ro->k, rc, rd, C5_MPI_REAL,
                   g->comm);
  }
  free(rc); free(rd);
}

/* Backward with dscore = w at the selections, nback times into the same
   (zeroed) buffers; dx gathered, drouting_token summed over ranks. */
static c5_status backward_gather(const group *g, const c5_router *rtr, c5_router_cache *c, const problem *p,
                                 const c5_layout *lay, const c5_real *xl, int nback, result *res)
{
  const c5_routing *ro = c5_router_cache_routing(c);
  long nl = lay->n_local, nsel = 0, D = p->dim;
  for (long row = 0; row < ro->rows; row++) nsel += ro->routed ? ro->count[row] : 0;
  c5_real *ds = calloc((size_t)nsel + 1, sizeof *ds), *dxl = calloc((size_t)(p->batch * nl * D + 1), sizeof *dxl);
  res->dx = calloc((size_t)(p->batch * p->n * D), sizeof *res->dx);
  res->drt = calloc((size_t)(p->R * D), sizeof *res->drt);
  for (long row = 0; row < ro->rows && ro->routed; row++)
    for (long e = ro->start[row]; e < ro->start[row] + ro->count[row]; e++)
      ds[e] = (c5_real)p->w[row * p->n + ro->idx[e]];
  c5_status st = C5_OK;
  for (int i = 0; i < nback && st == C5_OK; i++)
    st = c5_router_backward(rtr, g->d, c, p->rt, xl, ds, dxl, res->drt);
  if (st == C5_OK) {
    int size;
    MPI_Comm_size(g->comm, &size);
    int *rc = malloc((size_t)size * sizeof *rc), *rd = malloc((size_t)size * sizeof *rd);
    slices(p->n, size, D, rc, rd);
    for (long b = 0; b < p->batch; b++)
      MPI_Allgatherv(dxl + b * nl * D, (int)(nl * D), C5_MPI_REAL, res->dx + b * p->n * D, rc, rd, C5_MPI_REAL,
                     g->comm);
    MPI_Allreduce(MPI_IN_PLACE, res->drt, p->R * p->dim, C5_MPI_REAL, MPI_SUM, g->comm);
    free(rc); free(rd);
  }
  free(ds); free(dxl);
  return st;
}

/* Forward (and nback backwards) of problem p with the sequence sharded over
   g: each rank passes its slice. Uses `reuse` as the cache when given (made
   for this batch and slice), else a fresh one. Collective on g. */
static c5_status route_with(const group *g, const c5_router *rtr, const problem *p, int nback,
                            c5_router_cache *reuse, result *res)
{
  memset(res, 0, sizeof *res);
  c5_layout lay;
  c5_status st = c5_layout_compute(g->d, p->n, 1, &lay);
  if (st != C5_OK) return st;
  long nl = lay.n_local, D = p->dim;
  c5_real *xl = malloc((size_t)(p->batch * nl * D + 1) * sizeof *xl);
  uint8_t *ml = malloc((size_t)(p->batch * nl + 1));
  for (long b = 0; b < p->batch; b++) {
    memcpy(xl + b * nl * D, p->x + (b * p->n + lay.offset) * D, (size_t)(nl * D) * sizeof *xl);
    if (p->mask) memcpy(ml + b * nl, p->mask + b * p->n + lay.offset, (size_t)nl);
  }
  c5_router_cache *c = reuse;
  if (!reuse) st = c5_router_cache_create(rtr, p->batch, nl, &c);
  if (st == C5_OK)
    st = c5_router_forward(rtr, g->d, &lay, p->rt, p->batch, xl, p->mask ? ml : NULL, p->num_tokens,
                           p->random_route, p->seed, c);
  if (st == C5_OK) {
    const c5_routing *ro = c5_router_cache_routing(c);
    res->routed = ro->routed;
    res->rows = ro->rows;
    res->k = ro->routed ? ro->k : 0;
    res->local_ok = !ro->routed || local_ok(ro, lay.offset, nl);
    MPI_Allreduce(MPI_IN_PLACE, &res->local_ok, 1, MPI_INT, MPI_LAND, g->comm);
    if (ro->routed && res->local_ok) {
      gather_selection(g, ro, res);
      for (long row = 0; row < res->rows; row++)
        for (long e = 0; e < res->k; e++)
          res->loss += p->w[row * p->n + res->idx[row * res->k + e]] * res->score[row * res->k + e];
    }
    if (nback > 0) st = backward_gather(g, rtr, c, p, &lay, xl, nback, res);
  }
  if (!reuse) c5_router_cache_destroy(&c);
  free(xl); free(ml);
  return st;
}

static c5_status route(const group *g, const c5_router *rtr, const problem *p, int nback, result *res)
{
  return route_with(g, rtr, p, nback, NULL, res);
}

/* ---- the double model of the reference --------------------------------------------- */

/* coor_descent on one segment: s + b starts at 0, then b = -relu(s + a). */
static void model_cd(const double *s, const uint8_t *m, long len, double k, const c5_router_config *c, double *y)
{
  long cnt = 0;
  for (long j = 0; j < len; j++) cnt += !m || m[j];
  if (cnt == 0) { for (long j = 0; j < len; j++) y[j] = 0; return; }
  double eps = fmax(c->eps_init, c->eps), a = 0;
  for (int t = 0; t < c->n_iters; t++) {
    double mx = -INFINITY, sum = 0;
    for (long j = 0; j < len; j++)
      if (!m || m[j]) mx = fmax(mx, (t ? fmin(s[j], -a) : 0) / eps);
    for (long j = 0; j < len; j++)
      if (!m || m[j]) sum += exp((t ? fmin(s[j], -a) : 0) / eps - mx);
    a = eps * (log(k) - (mx + log(sum)));
    eps = fmax(eps * c->eps_decay, c->eps);
  }
  for (long j = 0; j < len; j++) y[j] = (!m || m[j]) ? exp(fmin(s[j] + a, 0) / eps) : 0;
}

/* Blocks of the routing: nblk segments of seg tokens, ktok selected in each. */
static void blocks(const c5_router_config *c, long n, long num_tokens, long *nblk, long *seg, long *ktok)
{
  *nblk = 1; *seg = n; *ktok = num_tokens;
  if (c->route_block_size > 0) {
    *seg = c->route_block_size;
    *nblk = n / *seg;
    *ktok = (num_tokens + *nblk - 1) / *nblk;
  }
}

/* Logits s [rows][n] of x, rt given in double. */
static void model_logits(const c5_router_config *c, const problem *p, const double *x, const double *rt, double *s)
{
  for (long b = 0; b < p->batch; b++)
    for (int q = 0; q < p->R; q++)
      for (long j = 0; j < p->n; j++) {
        const double *xj = x + (b * p->n + j) * p->dim, *w = rt + q * p->dim;
        double dot = 0, nx = 0, nw = 0;
        for (int i = 0; i < p->dim; i++) { dot += xj[i] * w[i]; nx += xj[i] * xj[i]; nw += w[i] * w[i]; }
        if (c->cosine_sim_routing) dot = c->cosine_sim_scale * dot / (fmax(sqrt(nx), 1e-12) * fmax(sqrt(nw), 1e-12));
        s[(b * p->R + q) * p->n + j] = dot;
      }
}

/* Scores y [rows][n] (tail tokens outside every block: 0). */
static void model_scores(const c5_router_config *c, const problem *p, const double *x, const double *rt, double *s,
                         double *y)
{
  long nblk, seg, ktok;
  blocks(c, p->n, p->num_tokens, &nblk, &seg, &ktok);
  model_logits(c, p, x, rt, s);
  double k = fmin((double)ktok * c->fetch_k_ratio, (double)seg);
  for (long row = 0; row < p->batch * p->R; row++) {
    const uint8_t *m = p->mask ? p->mask + (row / p->R) * p->n : NULL;
    memset(y + row * p->n, 0, (size_t)p->n * sizeof *y);
    for (long q = 0; q < nblk; q++)
      model_cd(s + row * p->n + q * seg, m ? m + q * seg : NULL, seg, k, c, y + row * p->n + q * seg);
  }
}

/* The loss of a fixed selection sel [rows][k] under the model. */
static double model_loss(const c5_router_config *c, const problem *p, const double *x, const double *rt,
                         const long *sel, long k)
{
  long rows = p->batch * p->R;
  double *s = malloc((size_t)(rows * p->n) * sizeof *s), *y = malloc((size_t)(rows * p->n) * sizeof *y), L = 0;
  model_scores(c, p, x, rt, s, y);
  for (long row = 0; row < rows; row++)
    for (long e = 0; e < k; e++) L += p->w[row * p->n + sel[row * k + e]] * y[row * p->n + sel[row * k + e]];
  free(s); free(y);
  return L;
}

/* ---- the selection oracle ------------------------------------------------------------ */

static const double *os;
static const uint8_t *om;
static int cmp_rule(const void *pa, const void *pb)
{
  long a = *(const long *)pa, b = *(const long *)pb;
  int ka = !om || om[a], kb = !om || om[b];
  if (ka != kb) return ka ? -1 : 1;
  if (ka && os[a] != os[b]) return os[a] > os[b] ? -1 : 1;
  return a < b ? -1 : (a > b);
}
static int cmp_long(const void *pa, const void *pb)
{
  long a = *(const long *)pa, b = *(const long *)pb;
  return a < b ? -1 : (a > b);
}

/* sel [rows][nblk * ktok] by the rule, from the logits s; returns how many
   (row, block) pairs have a tie at the threshold (k-th == (k+1)-th unmasked). */
static int oracle_select(const c5_router_config *c, const problem *p, const double *s, long *sel)
{
  long nblk, seg, ktok, k;
  blocks(c, p->n, p->num_tokens, &nblk, &seg, &ktok);
  k = nblk * ktok;
  long *ord = malloc((size_t)seg * sizeof *ord);
  int ties = 0;
  for (long row = 0; row < p->batch * p->R; row++)
    for (long q = 0; q < nblk; q++) {
      os = s + row * p->n;
      om = p->mask ? p->mask + (row / p->R) * p->n : NULL;
      for (long j = 0; j < seg; j++) ord[j] = q * seg + j;
      qsort(ord, (size_t)seg, sizeof *ord, cmp_rule);
      if (ktok < seg && (!om || (om[ord[ktok - 1]] && om[ord[ktok]])) && os[ord[ktok - 1]] == os[ord[ktok]]) ties++;
      qsort(ord, (size_t)ktok, sizeof *ord, cmp_long);
      memcpy(sel + row * k + q * ktok, ord, (size_t)ktok * sizeof *ord);
    }
  free(ord);
  return ties;
}

static double *to_double(const c5_real *a, long n)
{
  double *d = malloc((size_t)n * sizeof *d);
  for (long i = 0; i < n; i++) d[i] = a[i];
  return d;
}

/* ---- comparisons ------------------------------------------------------------------------ */

static double max_abs(const double *a, long n)
{
  double m = 0;
  for (long i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
  return m;
}

/* max_i |a_i - b_i| / (|b_i| + 1e-2 max|b|): relative, with small entries judged against the largest */
static double rel_err(const c5_real *a, const double *b, long n)
{
  double fl = 1e-2 * max_abs(b, n) + 1e-300, e = 0;
  for (long i = 0; i < n; i++) {
    double r = fabs((double)a[i] - b[i]) / (fabs(b[i]) + fl);
    e = r > e || r != r ? r : e;
  }
  return e;
}

/* Also false when either result failed its local checks (then idx may be NULL). */
static int same_selection(const result *a, const result *b)
{
  if (!a->local_ok || !b->local_ok || a->routed != b->routed || a->rows != b->rows || a->k != b->k) return 0;
  return !memcmp(a->idx, b->idx, (size_t)(a->rows * a->k) * sizeof *a->idx);
}

static int bitwise_equal(const c5_real *a, const c5_real *b, long n)
{
  return !memcmp(a, b, (size_t)n * sizeof *a);
}

/* ---- a: gradients ---------------------------------------------------------------------- */

/* Central differences of the model's loss at the library's selection, over
   x then the routing tokens; returns the gradient [x | rt]. */
static double *fd_model(const c5_router_config *c, const problem *p, const result *r)
{
  long nx = p->batch * p->n * p->dim, nr = (long)p->R * p->dim;
  double *x = to_double(p->x, nx), *rt = to_double(p->rt, nr), *g = malloc((size_t)(nx + nr) * sizeof *g);
  for (long i = 0; i < nx + nr; i++) {
    double *v = i < nx ? x + i : rt + (i - nx), v0 = *v;
    *v = v0 + FD_H_MODEL;
    double lp = model_loss(c, p, x, rt, r->idx, r->k);
    *v = v0 - FD_H_MODEL;
    double lm = model_loss(c, p, x, rt, r->idx, r->k);
    *v = v0;
    g[i] = (lp - lm) / (2 * FD_H_MODEL);
  }
  free(x); free(rt);
  return g;
}

#if C5_USE_DOUBLE
/* Which parameters the library's finite differences visit: every routing-token
   entry, the x entries with the largest model gradient (the tokens near the
   threshold) and every 13th one. Each visit is two collective forwards,
   so all ~500 would cost seconds on a loaded machine; the model's finite
   differences cover every entry. */
static char *fd_subset(const double *gm, long nx, long ng)
{
  char *pick = calloc((size_t)ng, 1);
  for (long i = nx; i < ng; i++) pick[i] = 1;
  for (long i = 0; i < nx; i += 13) pick[i] = 1;
  for (int t = 0; t < 24; t++) {   /* the 24 largest |gm| among x */
    long best = -1;
    for (long i = 0; i < nx; i++)
      if (pick[i] != 2 && (best < 0 || fabs(gm[i]) > fabs(gm[best]))) best = i;
    pick[best] = 2;
  }
  return pick;
}

/* Central differences through the library (P = 1) at the picked parameters
   (others: NAN, skipped by rel_err_picked); every perturbed forward must keep
   the base selection, else the inputs sit on a selection boundary. */
static double *fd_library(const group *self, const c5_router *rtr, problem *p, const result *base,
                          const char *pick, int *ok)
{
  long nx = p->batch * p->n * p->dim, nr = (long)p->R * p->dim;
  double *g = malloc((size_t)(nx + nr) * sizeof *g);
  *ok = 1;
  for (long i = 0; i < nx + nr && *ok; i++) {
    g[i] = NAN;
    if (!pick[i]) continue;
    c5_real *v = i < nx ? p->x + i : p->rt + (i - nx), v0 = *v;
    double l[2];
    for (int sgn = 0; sgn < 2; sgn++) {
      result r;
      *v = v0 + (sgn ? -FD_H_LIB : FD_H_LIB);
      c5_status st = route(self, rtr, p, 0, &r);
      if (st != C5_OK || !r.local_ok || !same_selection(&r, base)) {
        fprintf(stderr, "  fd: parameter %ld: %s at %+g (pick other inputs)\n", i,
                st != C5_OK ? c5_last_error() : "the selection changed", sgn ? -FD_H_LIB : FD_H_LIB);
        *ok = 0;
      }
      l[sgn] = r.loss;
      result_free(&r);
    }
    *v = v0;
    g[i] = (l[0] - l[1]) / (2 * FD_H_LIB);
  }
  return g;
}

/* rel_err over the picked entries, the floor from the full model gradient */
static double rel_err_picked(const c5_real *a, const double *b, const double *gm, const char *pick, long n)
{
  double fl = 1e-2 * max_abs(gm, n), e = 0;
  for (long i = 0; i < n; i++) {
    if (!pick[i]) continue;
    double r = fabs((double)a[i] - b[i]) / (fabs(b[i]) + fl);
    e = r > e || r != r ? r : e;
  }
  return e;
}
#endif

/* [dx | drt] of a result as one array, for comparing with fd. */
static c5_real *grad_of(const problem *p, const result *r)
{
  long nx = p->batch * p->n * p->dim, nr = (long)p->R * p->dim;
  c5_real *g = malloc((size_t)(nx + nr) * sizeof *g);
  memcpy(g, r->dx, (size_t)nx * sizeof *g);
  memcpy(g + nx, r->drt, (size_t)nr * sizeof *g);
  return g;
}

/* Zero gradient where the model says no token can have one: masked tokens,
   fully masked rows, block tails. */
static int grad_zero_where_expected(const c5_router_config *c, const problem *p, const result *r)
{
  long nblk, seg, ktok;
  blocks(c, p->n, p->num_tokens, &nblk, &seg, &ktok);
  for (long b = 0; b < p->batch; b++)
    for (long j = 0; j < p->n; j++) {
      if (!(j >= nblk * seg || (p->mask && !p->mask[b * p->n + j]))) continue;
      for (int i = 0; i < p->dim; i++)
        if (r->dx[(b * p->n + j) * p->dim + i] != 0) {
          fprintf(stderr, "  dx[%ld][%ld][%d] = %g, want 0 (masked or tail token)\n", b, j, i,
                  (double)r->dx[(b * p->n + j) * p->dim + i]);
          return 0;
        }
    }
  return 1;
}

/* Forward values: selection by the oracle, scores by the model. */
static int check_forward(const c5_router_config *c, const problem *p, const result *r, double *score_err)
{
  long rows = p->batch * p->R, N = rows * p->n, nx = p->batch * p->n * p->dim;
  double *x = to_double(p->x, nx), *rt = to_double(p->rt, (long)p->R * p->dim);
  double *s = malloc((size_t)N * sizeof *s), *y = malloc((size_t)N * sizeof *y);
  long *sel = malloc((size_t)(rows * r->k + 1) * sizeof *sel);
  model_scores(c, p, x, rt, s, y);
  oracle_select(c, p, s, sel);
  int ok = 1;
  *score_err = 0;
  for (long i = 0; i < rows * r->k && ok; i++) {
    long row = i / r->k;
    if (r->idx[i] != sel[i]) {
      fprintf(stderr, "  row %ld entry %ld: index %ld, oracle %ld\n", row, i % r->k, r->idx[i], sel[i]);
      ok = 0;
    }
    int keep = !p->mask || p->mask[(row / p->R) * p->n + r->idx[i]];
    double want = c->straight_through ? keep : y[row * p->n + r->idx[i]];
    *score_err = fmax(*score_err, fabs((double)r->score[i] - want));
  }
  free(x); free(rt); free(s); free(y); free(sel);
  return ok;
}

/* ---- one configuration: a, b, g ------------------------------------------------------------ */

typedef struct {
  const char *name;
  long batch, n, num_tokens;
  int R, cosine, masked;
  long block;
  double ratio;
  int n_iters;       /* 0: 20 */
  unsigned long long seed;
} rcase;

static int run_rcase(const group *world, const group *self, const rcase *tc)
{
  int ok = 0, rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  c5_router_config c = cfg_fd();
  c.num_routing_tokens = tc->R;
  c.cosine_sim_routing = tc->cosine;
  c.cosine_sim_scale = 6;
  c.route_block_size = tc->block;
  c.fetch_k_ratio = tc->ratio;
  if (tc->n_iters) c.n_iters = tc->n_iters;
  problem p;
  problem_make(&p, tc->batch, tc->n, 6, tc->R, tc->num_tokens, tc->cosine ? 1.0 : 0.4, tc->seed);
  if (tc->masked) problem_mask(&p, 0.25, tc->batch - 1, tc->seed + 1);
  c5_router *rtr = NULL, *rst = NULL;
  result r1 = { 0 }, rs = { 0 }, r2 = { 0 }, rw = { 0 }, rws = { 0 };
  double *gm = NULL, *gl = NULL;
  c5_real *g1 = NULL;
  char *pick = NULL;
  long nx = p.batch * p.n * p.dim, ng = nx + (long)p.R * p.dim;
  double e_score, e_model, e_lib = 0, e_shard[3];

  T_OK(c5_router_create(c5_backend_cpu(), &c, p.dim, &rtr));
  T_OK(route(self, rtr, &p, 1, &r1));
  T_CHECK(r1.routed && r1.local_ok, "routed %d, local checks %d", r1.routed, r1.local_ok);
  T_CHECK(check_forward(&c, &p, &r1, &e_score), "selection differs from the oracle");
  T_CHECK(e_score <= TOL_SCORE, "scores differ from the model by %.3e", e_score);
  double e_fwd = e_score;
  T_CHECK(grad_zero_where_expected(&c, &p, &r1), "nonzero gradient at a masked or tail token");

  /* a. gradients against the model's finite differences (and the library's in double) */
  g1 = grad_of(&p, &r1);
  gm = fd_model(&c, &p, &r1);
  T_CHECK(max_abs(gm, ng) > 1e-2, "the gradient is ~0 (max %.3e): the check would be vacuous", max_abs(gm, ng));
  e_model = rel_err(g1, gm, ng);
  T_CHECK(e_model <= TOL_GRAD, "gradient vs model finite differences: %.3e", e_model);
#if C5_USE_DOUBLE
  int fok;
  pick = fd_subset(gm, nx, ng);
  gl = fd_library(self, rtr, &p, &r1, pick, &fok);
  T_CHECK(fok, "finite differences through the library");
  e_lib = rel_err_picked(g1, gl, gm, pick, ng);
  T_CHECK(e_lib <= TOL_GRAD, "gradient vs library finite differences: %.3e", e_lib);
#endif

  /* b. straight-through: scores 1 (masked 0), same gradients bit for bit */
  c.straight_through = 1;
  T_OK(c5_router_create(c5_backend_cpu(), &c, p.dim, &rst));
  T_OK(route(self, rst, &p, 1, &rs));
  T_CHECK(same_selection(&rs, &r1), "straight-through changed the selection");
  T_CHECK(check_forward(&c, &p, &rs, &e_score) && e_score == 0, "straight-through scores off by %g", e_score);
  T_CHECK(bitwise_equal(rs.dx, r1.dx, nx) && bitwise_equal(rs.drt, r1.drt, (long)p.R * p.dim),
          "straight-through gradients differ from straight_through = 0");
  /* backward accumulates: twice into the same buffers is exactly 2x */
  T_OK(route(self, rtr, &p, 2, &r2));
  for (long i = 0; i < nx; i++) T_CHECK(r2.dx[i] == 2 * r1.dx[i], "dx[%ld] after two backwards", i);
  for (long i = 0; i < (long)p.R * p.dim; i++) T_CHECK(r2.drt[i] == 2 * r1.drt[i], "drt[%ld] after two backwards", i);

  /* g. sharded over the world equals P = 1 */
  T_OK(route(world, rtr, &p, 1, &rw));
  T_CHECK(rw.routed && rw.local_ok && same_selection(&rw, &r1), "sharded selection differs from P = 1");
  {
    double *s1 = to_double(r1.score, r1.rows * r1.k), *d1 = to_double(g1, ng);
    c5_real *gw = grad_of(&p, &rw);
    e_shard[0] = rel_err(rw.score, s1, r1.rows * r1.k);
    e_shard[1] = rel_err(gw, d1, ng);
    free(s1); free(d1); free(gw);
  }
  T_CHECK(e_shard[0] <= TOL_SHARD && e_shard[1] <= TOL_SHARD, "sharded vs P = 1: scores %.3e, gradients %.3e",
          e_shard[0], e_shard[1]);
  T_OK(route(world, rst, &p, 1, &rws));
  T_CHECK(same_selection(&rws, &r1) && check_forward(&c, &p, &rws, &e_shard[2]) && e_shard[2] == 0,
          "sharded straight-through");
  T_CHECK(bitwise_equal(rws.dx, rw.dx, nx) && bitwise_equal(rws.drt, rw.drt, (long)p.R * p.dim),
          "sharded straight-through gradients differ from straight_through = 0");
  if (rank == 0)
    printf("  router %-24s k=%ld: scores %.0e, grad vs model fd %.0e, vs library fd %s%.0e, ST ok, "
           "sharded %.0e/%.0e\n", tc->name, r1.k, e_fwd, e_model, C5_USE_DOUBLE ? "" : "(double only) ", e_lib,
           e_shard[0], e_shard[1]);
  ok = 1;
fail:
  if (!ok && rank == 0) printf("  router %s: FAILED\n", tc->name);
  result_free(&r1); result_free(&rs); result_free(&r2); result_free(&rw); result_free(&rws);
  free(gm); free(gl); free(g1); free(pick);
  c5_router_destroy(&rtr); c5_router_destroy(&rst);
  problem_free(&p);
  return ok;
}

/* ---- c: tied logits -------------------------------------------------------------------- */

/* Integer inputs make every logit exact (no summation-order doubt), and the
   second half of each sequence repeats the first, so equal logits abound. */
static int run_ties(const group *world, const group *self, long n, long block, unsigned long long seed)
{
  int ok = 0, rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  c5_router_config c = C5_ROUTER_CONFIG_DEFAULT;
  c.num_routing_tokens = 2;
  c.route_block_size = block;
  problem p;
  problem_make(&p, 3, n, 6, 2, 12, 1.0, seed);
  for (long i = 0; i < p.batch * n * p.dim; i++) p.x[i] = (c5_real)(long)(5 * t_uniform(&seed) - 2.5);
  for (long i = 0; i < 2L * p.dim; i++) p.rt[i] = (c5_real)(long)(5 * t_uniform(&seed) - 2.5);
  for (long b = 0; b < p.batch; b++)
    for (long j = n / 2; j < n; j++)
      memcpy(p.x + (b * n + j) * p.dim, p.x + (b * n + j - n / 2) * p.dim, (size_t)p.dim * sizeof *p.x);
  /* batch row 1: only 4 unmasked tokens, so masked ones are selected (last, by index) */
  problem_mask(&p, 0.1, -1, seed + 1);
  for (long j = 0; j < n; j++) p.mask[n + j] = j % 11 == 3;
  c5_router *rtr = NULL;
  result r1 = { 0 }, rw = { 0 };
  long rows = p.batch * p.R;
  double *s = malloc((size_t)(rows * n) * sizeof *s), *x = to_double(p.x, p.batch * n * p.dim);
  double *rt = to_double(p.rt, 2L * p.dim), es;
  T_OK(c5_router_create(c5_backend_cpu(), &c, p.dim, &rtr));
  model_logits(&c, &p, x, rt, s);
  T_OK(route(self, rtr, &p, 0, &r1));
  long *sel = malloc((size_t)(rows * r1.k + 1) * sizeof *sel);
  int ties = oracle_select(&c, &p, s, sel);
  free(sel);
  T_CHECK(ties >= 2, "only %d rows tie at the threshold: the case does not test the tie rule", ties);
  T_CHECK(r1.routed && r1.local_ok && check_forward(&c, &p, &r1, &es), "selection with ties (P = 1)");
  T_CHECK(es == 0, "straight-through scores off by %g", es);
  T_OK(route(world, rtr, &p, 0, &rw));
  T_CHECK(rw.local_ok && same_selection(&rw, &r1) && check_forward(&c, &p, &rw, &es) && es == 0,
          "selection with ties, sharded");
  if (rank == 0) printf("  router ties n=%ld block=%ld: %d tied thresholds, selection ok\n", n, block, ties);
  ok = 1;
fail:
  if (!ok && rank == 0) printf("  router ties: FAILED\n");
  result_free(&r1); result_free(&rw);
  free(s); free(x); free(rt);
  c5_router_destroy(&rtr);
  problem_free(&p);
  return ok;
}

/* ---- d: unrouted ---------------------------------------------------------------------- */

static int run_unrouted(const group *world)
{
  int ok = 0, rank = c5_dist_rank(world->d);
  c5_router_config c = cfg_fd();
  c5_router *rtr = NULL;
  c5_router_cache *cache = NULL;
  problem p;
  problem_make(&p, 2, 8, 4, 1, 8, 1.0, 31);
  c5_layout lay;
  c5_real dx[2 * 8 * 4], drt[4], ds[2 * 8];
  T_OK(c5_layout_compute(world->d, p.n, 1, &lay));
  T_OK(c5_router_create(c5_backend_cpu(), &c, p.dim, &rtr));
  T_OK(c5_router_cache_create(rtr, p.batch, lay.n_local, &cache));
  for (long nt = 8; nt <= 20; nt += 12) {   /* n == num_tokens and n < num_tokens */
    c5_real *xl = p.x + lay.offset * p.dim;  /* batch 0's slice; batch 1 follows at n * dim */
    c5_real xs[2 * 8 * 4];
    memcpy(xs, xl, (size_t)(lay.n_local * p.dim) * sizeof *xs);
    memcpy(xs + lay.n_local * p.dim, xl + p.n * p.dim, (size_t)(lay.n_local * p.dim) * sizeof *xs);
    T_OK(c5_router_forward(rtr, world->d, &lay, p.rt, p.batch, xs, NULL, nt, 0, 0, cache));
    T_CHECK(c5_router_cache_routing(cache)->routed == 0, "n = %ld, num_tokens = %ld routed", p.n, nt);
    for (int i = 0; i < 2 * 8 * 4; i++) dx[i] = 7;
    for (int i = 0; i < 4; i++) drt[i] = 7;
    for (int i = 0; i < 2 * 8; i++) ds[i] = 1;
    T_OK(c5_router_backward(rtr, world->d, cache, p.rt, xs, ds, dx, drt));
    for (int i = 0; i < 2 * 8 * 4; i++) T_CHECK(dx[i] == 7, "unrouted backward wrote dx[%d]", i);
    for (int i = 0; i < 4; i++) T_CHECK(drt[i] == 7, "unrouted backward wrote drt[%d]", i);
  }
  if (rank == 0) printf("  router unrouted (n <= num_tokens): routed 0, backward no-op: ok\n");
  ok = 1;
fail:
  c5_router_cache_destroy(&cache);
  c5_router_destroy(&rtr);
  problem_free(&p);
  return ok;
}

/* ---- e: random route -------------------------------------------------------------------- */

static int run_random(const group *world, const group *self)
{
  int ok = 0, rank = c5_dist_rank(world->d);
  c5_router_config c = C5_ROUTER_CONFIG_DEFAULT;
  c5_router *rtr = NULL;
  problem p;
  problem_make(&p, 2, 200, 6, 1, 20, 1.0, 41);
  problem_mask(&p, 0.5, -1, 42);
  p.random_route = 1;
  result a = { 0 }, b = { 0 }, e = { 0 }, w = { 0 };
  T_OK(c5_router_create(c5_backend_cpu(), &c, p.dim, &rtr));
  p.seed = 1234;
  T_OK(route(self, rtr, &p, 1, &a));
  T_OK(route(self, rtr, &p, 0, &b));
  T_OK(route(world, rtr, &p, 0, &w));
  p.seed = 1235;
  T_OK(route(self, rtr, &p, 0, &e));
  T_CHECK(a.routed && a.local_ok && w.local_ok, "random route: local checks");
  T_CHECK(same_selection(&a, &b), "same seed, different selection");
  T_CHECK(same_selection(&a, &w), "random selection depends on the sharding");
  for (long row = 0; row < a.rows; row++)   /* 20 of ~100 unmasked: equal sets are ~1e-20 likely */
    T_CHECK(memcmp(a.idx + row * a.k, e.idx + row * a.k, (size_t)a.k * sizeof *a.idx),
            "seeds 1234 and 1235 select the same tokens in row %ld", row);
  for (long i = 0; i < a.rows * a.k; i++) {
    long row = i / a.k;
    T_CHECK(p.mask[row * p.n + a.idx[i]] && p.mask[row * p.n + e.idx[i]], "masked token %ld picked", a.idx[i]);
  }
  for (long i = 0; i < p.batch * p.n * p.dim; i++) T_CHECK(a.dx[i] == 0, "random-route backward wrote dx");
  if (rank == 0) printf("  router random_route: reproducible, seed-dependent, never masked: ok\n");
  ok = 1;
fail:
  result_free(&a); result_free(&b); result_free(&e); result_free(&w);
  c5_router_destroy(&rtr);
  problem_free(&p);
  return ok;
}

/* ---- a cache used for several forwards ------------------------------------------------ */

/* One cache through calls that differ in mask and num_tokens must give what
   a fresh cache gives each time (forward and backward), sharded over the world. */
static int run_reuse(const group *world)
{
  int ok = 0, rank = c5_dist_rank(world->d);
  c5_router_config c = cfg_fd();
  c5_router *rtr = NULL;
  c5_router_cache *cache = NULL;
  result a = { 0 }, b = { 0 };
  problem p;
  problem_make(&p, 2, 40, 6, 1, 8, 0.4, 61);
  uint8_t *mask = NULL;
  problem_mask(&p, 0.3, -1, 62);
  mask = p.mask;
  const struct { int masked; long nt; } seq[] = { { 1, 8 }, { 0, 8 }, { 1, 4 }, { 0, 12 }, { 1, 12 }, { 0, 3 } };
  c5_layout lay;
  T_OK(c5_layout_compute(world->d, p.n, 1, &lay));
  T_OK(c5_router_create(c5_backend_cpu(), &c, p.dim, &rtr));
  T_OK(c5_router_cache_create(rtr, p.batch, lay.n_local, &cache));
  for (size_t i = 0; i < sizeof seq / sizeof *seq; i++) {
    p.mask = seq[i].masked ? mask : NULL;
    p.num_tokens = seq[i].nt;
    T_OK(route_with(world, rtr, &p, 1, cache, &a));
    T_OK(route_with(world, rtr, &p, 1, NULL, &b));
    T_CHECK(a.local_ok && same_selection(&a, &b), "call %zu (mask %d, num_tokens %ld): selection differs from a "
            "fresh cache", i, seq[i].masked, seq[i].nt);
    T_CHECK(bitwise_equal(a.score, b.score, a.rows * a.k), "call %zu (mask %d, num_tokens %ld): scores differ from "
            "a fresh cache", i, seq[i].masked, seq[i].nt);
    T_CHECK(bitwise_equal(a.dx, b.dx, p.batch * p.n * p.dim) && bitwise_equal(a.drt, b.drt, p.dim),
            "call %zu (mask %d, num_tokens %ld): gradients differ from a fresh cache", i, seq[i].masked, seq[i].nt);
    result_free(&a); result_free(&b);
  }
  if (rank == 0) printf("  router cache reused across masks and num_tokens: ok\n");
  ok = 1;
fail:
  if (!ok && rank == 0) printf("  router cache reuse: FAILED\n");
  p.mask = mask;
  result_free(&a); result_free(&b);
  c5_router_cache_destroy(&cache);
  c5_router_destroy(&rtr);
  problem_free(&p);
  return ok;
}

/* ---- f: bad input ------------------------------------------------------------------------ */

static int bad_create(void (*edit)(c5_router_config *), int dim, const char *needle)
{
  c5_router_config c = cfg_fd();
  c5_router *r = NULL;
  edit(&c);
  T_FAILS(c5_router_create(c5_backend_cpu(), &c, dim, &r), C5_ERR_ARG, needle);
  T_CHECK(r == NULL, "a router was returned with the error (%s)", needle);
  return 1;
fail:
  c5_router_destroy(&r);
  return 0;
}
static void e_none(c5_router_config *c) { (void)c; }
static void e_routes(c5_router_config *c) { c->num_routing_tokens = 0; }
static void e_ratio(c5_router_config *c) { c->fetch_k_ratio = 0.99; }
static void e_eps0(c5_router_config *c) { c->eps = 0; }
static void e_epsneg(c5_router_config *c) { c->eps = -0.1; }
static void e_decay0(c5_router_config *c) { c->eps_decay = 0; }
static void e_decay2(c5_router_config *c) { c->eps_decay = 1.5; }
static void e_iters(c5_router_config *c) { c->n_iters = 0; }

/* A forward on the world that must fail on every rank (C5_ERR_NUMERIC for a non-finite value, else
   C5_ERR_ARG). */
static int bad_forward(const group *world, const problem *p, long block, const char *needle)
{
  c5_router_config c = cfg_fd();
  c.route_block_size = block;
  c5_router *r = NULL;
  result res = { 0 };
  T_OK(c5_router_create(c5_backend_cpu(), &c, p->dim, &r));
  T_FAILS(route(world, r, p, 0, &res), strcmp(needle, "NaN") ? C5_ERR_ARG : C5_ERR_NUMERIC, needle);
  result_free(&res);
  c5_router_destroy(&r);
  return 1;
fail:
  result_free(&res);
  c5_router_destroy(&r);
  return 0;
}

static int run_bad(const group *world)
{
  int rank = c5_dist_rank(world->d), ok = 0;
  problem p;
  problem_make(&p, 2, 45, 6, 1, 8, 1.0, 51);
  T_CHECK(bad_create(e_none, 0, "dim = 0"), "dim 0");
  T_CHECK(bad_create(e_none, -3, "dim = -3"), "dim -3");
  T_CHECK(bad_create(e_routes, 6, "num_routing_tokens = 0"), "no routes");
  T_CHECK(bad_create(e_ratio, 6, "fetch_k_ratio = 0.99"), "fetch_k_ratio");
  T_CHECK(bad_create(e_eps0, 6, "eps = 0"), "eps 0");
  T_CHECK(bad_create(e_epsneg, 6, "eps = -0.1"), "eps < 0");
  T_CHECK(bad_create(e_decay0, 6, "eps_decay = 0"), "eps_decay 0");
  T_CHECK(bad_create(e_decay2, 6, "eps_decay = 1.5"), "eps_decay > 1");
  T_CHECK(bad_create(e_iters, 6, "n_iters = 0"), "n_iters");
  p.num_tokens = 0;
  T_CHECK(bad_forward(world, &p, 0, "num_tokens = 0"), "num_tokens 0");
  p.num_tokens = -2;
  T_CHECK(bad_forward(world, &p, 0, "num_tokens = -2"), "num_tokens < 0");
  p.num_tokens = 8;
  T_CHECK(bad_forward(world, &p, 46, "route_block_size = 46 is larger than the sequence"), "block > n");
  p.num_tokens = 44;   /* 4 blocks of 10: ceil(44 / 4) = 11 > 10 */
  T_CHECK(bad_forward(world, &p, 10, "11 tokens per block of 10"), "tokens per block");
  p.num_tokens = 8;
  p.x[(1 * p.n + 37) * p.dim + 2] = (c5_real)NAN;   /* rank-local: the others must fail too */
  T_CHECK(bad_forward(world, &p, 0, "NaN"), "NaN logits");
  if (rank == 0) printf("  router bad input (dim, routes, ratio, eps, decay, n_iters, num_tokens, blocks, NaN): ok\n");
  ok = 1;
fail:
  problem_free(&p);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  group world = { NULL, MPI_COMM_WORLD }, self = { NULL, MPI_COMM_SELF };
  int rank, ret = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  T_OK(c5_dist_create(MPI_COMM_WORLD, &world.d));
  T_OK(c5_dist_create(MPI_COMM_SELF, &self.d));
  if (rank == 0) printf("test_router (%s, %d ranks)\n", C5_REAL_NAME, c5_dist_size(world.d));
  /* name, batch, n, num_tokens, R, cosine, masked, block, ratio, n_iters, seed */
  const rcase cases[] = {
    { "dot product", 2, 40, 8, 1, 0, 0, 0, 9.0 / 8.0, 0, 101 },
    { "cosine (scale 6)", 2, 40, 8, 1, 1, 0, 0, 9.0 / 8.0, 0, 102 },
    { "masked, a row all masked", 2, 40, 8, 1, 0, 1, 0, 9.0 / 8.0, 0, 103 },
    /* 6 iterations end above eps (0.96): the scores use eps after one more decay */
    { "2 routing tokens, 6 iters", 2, 40, 8, 2, 0, 0, 0, 9.0 / 8.0, 6, 104 },
    { "blocks of 10, n 45", 2, 45, 9, 1, 0, 0, 10, 9.0 / 8.0, 0, 105 },   /* ceil(9 / 4) = 3 per block */
    { "fetch_k_ratio 1.5", 2, 40, 8, 1, 0, 0, 0, 1.5, 0, 106 },
    { "all of them", 3, 45, 7, 2, 1, 1, 10, 1.5, 0, 107 },
    /* one block, 5 tail tokens: at 2-4 ranks some ranks hold only tail tokens */
    { "one block of 6, n 11", 2, 11, 3, 2, 0, 0, 6, 9.0 / 8.0, 0, 108 },
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    T_CHECK(run_rcase(&world, &self, &cases[i]), "%s", cases[i].name);
  T_CHECK(run_ties(&world, &self, 40, 0, 201), "ties");
  T_CHECK(run_ties(&world, &self, 45, 10, 202), "ties in blocks");
  T_CHECK(run_unrouted(&world), "unrouted");
  T_CHECK(run_random(&world, &self), "random route");
  T_CHECK(run_reuse(&world), "cache reuse");
  T_CHECK(run_bad(&world), "bad input");
  ret = 0;
fail:
  if (ret && rank == 0) printf("test_router: FAILED\n");
  c5_dist_destroy(&self.d);
  c5_dist_destroy(&world.d);
  MPI_Finalize();
  return ret;
}
