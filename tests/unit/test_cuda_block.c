/* test_cuda_block.c - ConditionalRoutedTransformerBlock forward+backward on
   the CUDA backend against the CPU backend at one rank: the same parameters
   (made on the CPU, uploaded), the same input (and mask), every tensor of
   the GPU run in device memory. Compared norm-wise: out, dx, the light
   FeedForward's and LocalMHA's outputs formed again from the caches between
   the forward and the backward (what an activation dump writes; LocalMHA's
   backward spends its head outputs), and every parameter gradient (double build 1e-10, single build 1e-4, and the same
   block with TF32 products 5e-3, bf16 products 2e-2: a block is a
   chain of GEMMs, norms and softmaxes whose rounding the tolerances of the
   single ops compound); the routed index sets of the three routers (q, kv,
   ff) must be identical. Straight-through routing, and random normal inputs
   whose routing logits have no near ties at the top-k threshold (the margin
   is printed: a set that differs with a tiny margin is a tie, not a bug).
   Under mpirun with P > 1 ranks (test_cuda_block_mpi.sh: 2 and 3 ranks on
   one GPU) each rank instead runs the CUDA block twice: alone on the whole
   sequence (a communicator of itself) and sharded over the P ranks, the
   gradients summed over them (c5_params_allreduce_grad); its part of out
   and dx, every gradient and its routed indices must equal the one-rank
   run's (the same tolerances; indices identical).
   At P = 1 the CUDA run is repeated on a backend of one stream (C5_CUDA_LANES=0: the routers in order with
   the rest, not on the lane beside the light branches; or the other way round where the default backend
   has no lane): out, dx, every gradient and the routed indices must be the same bits.
   The light attention has heads of 16 and windows of 32 / 2 but in
   light_flash_bf16 (heads of 64, windows of 64: its bf16 flash kernels).
   One line per case and quantity. Exits 77 without a GPU. */
#include <string.h>
#include "cuda_util.h"
#include "backend.h"
#include "dump_internal.h"

#if C5_USE_DOUBLE
#define TOL 1e-10
#else
#define TOL 1e-4
#endif

typedef struct {
  const char *name;
  long batch, n;
  int dim, masked, routes, light_rotary, rotary;
  long q, kv, ff;
  c5_matmul mm;   /* the GPU run's matmul mode (single build): TF32 and bf16 inputs compared at 5e-3 and 2e-2 */
  int light_dh;   /* the light attention's dim_head (0: 16) and window size (0: 32) */
  long light_window;
} bcase;

static double tol_of(const bcase *k)
{
  return k->mm == C5_MATMUL_TF32 ? 5e-3 : k->mm == C5_MATMUL_BF16 ? 2e-2 : TOL;
}

static c5_block_config config(const bcase *k)
{
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;
  a.dim = k->dim; a.num_heavy_tokens_q = k->q; a.num_heavy_tokens_kv = k->kv;
  const int ldh = k->light_dh ? k->light_dh : 16;
  a.light_dim_head = ldh; a.light_heads = k->dim / ldh > 1 ? k->dim / ldh : 1;
  a.light_window_size = k->light_window ? k->light_window : 32;
  a.heavy_dim_head = 16; a.heavy_heads = 2 * k->routes; a.num_routed_kv = k->routes;
  a.light_rotary_emb = k->light_rotary; a.rotary_emb = k->rotary;
  a.router.straight_through = 1;
  f.dim = k->dim; f.num_heavy_tokens = k->ff;
  f.router.straight_through = 1;
  return (c5_block_config){ .attn = a, .ff = f };
}

/* One run on be: parameters values (host, np of them) uploaded; x, g, mask host. Results to host. */
typedef struct {
  c5_real *out, *dx, *grad;
  c5_real *ffl, *attl;   /* the light FeedForward's and LocalMHA's outputs formed again before the backward */
  long *ridx[3];
  long rcnt[3], rows[3], *rcount[3];
  c5_layout lay;
} result;

static void result_free(result *r)
{
  free(r->out); free(r->dx); free(r->grad); free(r->ffl); free(r->attl);
  for (int i = 0; i < 3; i++) { free(r->ridx[i]); free(r->rcount[i]); }
  memset(r, 0, sizeof *r);
}

/* A routing's indices on the host, rows one after another (whole: one rank, so row r holds k entries from
   r k on; sharded: the rank's counts). */
static int routing_down(const c5_backend *be, const c5_routing *rt, int whole, long **idx, long *cnt)
{
  *cnt = 0;
  for (long r = 0; r < (rt->routed ? rt->rows : 0); r++) {
    if (rt->start[r] != *cnt || (whole && rt->count[r] != rt->k)) {
      fprintf(stderr, "routing row %ld: %ld entries from %ld, expected %ld from %ld\n", r, rt->count[r], rt->start[r],
              whole ? rt->k : rt->count[r], *cnt);
      return 0;
    }
    *cnt += rt->count[r];
  }
  *idx = malloc((size_t)(*cnt + 1) * sizeof **idx);
  if (!*idx) return 0;
  return c5_backend_memcpy(be, *idx, rt->idx, (size_t)*cnt * sizeof **idx) == C5_OK;
}

static int run(const c5_backend *be, const c5_dist *d, const bcase *k, const c5_real *pval, long np, const c5_real *x,
               const c5_real *g, const uint8_t *mask, result *res)
{
  c5_block_config cfg = config(k);
  c5_params *p = NULL;
  c5_block *b = NULL;
  c5_block_cache *c = NULL;
  c5_real *dx_ = NULL, *dg = NULL, *dout = NULL, *ddx = NULL;
  uint8_t *dm = NULL, *ml = NULL;
  c5_real *xl = NULL, *gl = NULL;
  c5_layout lay;
  long unit;
  int ok = 0;
  memset(res, 0, sizeof *res);
  T_OK(c5_params_create(be, &p));
  T_OK(c5_block_create(&cfg, p, "", &b));
  T_OK(c5_params_alloc(p));
  T_CHECK(c5_params_total(p) == np, "%ld parameters, expected %ld", c5_params_total(p), np);
  T_OK(c5_backend_memcpy(be, c5_params_value(p, 0), pval, (size_t)np * sizeof *pval));
  T_OK(c5_block_layout_unit(&cfg, &unit));
  T_OK(c5_layout_compute(d, k->n, unit, &lay));
  res->lay = lay;
  /* this rank's tokens of every batch row (all of them on one rank) */
  const long nl = lay.n_local, N = k->batch * nl * k->dim, bytes = N * (long)sizeof(c5_real);
  xl = malloc((size_t)bytes + 1);
  gl = malloc((size_t)bytes + 1);
  ml = malloc((size_t)(k->batch * nl + 1));
  T_CHECK(xl && gl && ml, "out of memory");
  for (long bb = 0; bb < k->batch; bb++) {
    memcpy(xl + bb * nl * k->dim, x + (bb * k->n + lay.offset) * k->dim, (size_t)(nl * k->dim) * sizeof *xl);
    memcpy(gl + bb * nl * k->dim, g + (bb * k->n + lay.offset) * k->dim, (size_t)(nl * k->dim) * sizeof *gl);
    if (mask) memcpy(ml + bb * nl, mask + bb * k->n + lay.offset, (size_t)nl);
  }
  T_OK(c5_block_cache_create(b, k->batch, nl, &c));
  T_CHECK((dx_ = t_dev_upload((c5_backend *)be, xl, bytes)) && (dg = t_dev_upload((c5_backend *)be, gl, bytes)),
          "upload");
  if (mask) T_CHECK((dm = t_dev_upload((c5_backend *)be, ml, k->batch * nl)), "mask upload");
  T_OK(c5_backend_alloc(be, bytes, (void **)&dout));
  T_OK(c5_backend_alloc(be, bytes, (void **)&ddx));
  T_OK(c5_block_forward(b, d, &lay, k->batch, dx_, dm, c, dout));
  /* the light branches formed again from the caches (dump_internal.h, in ddx before the backward writes it): in
     bf16 mode the FeedForward's from its bf16 GELU output, LocalMHA's from its bf16 head outputs where it keeps
     them (its backward writes dq over them: they are read before it) */
  res->ffl = malloc(bytes);
  T_CHECK(res->ffl != NULL, "out of memory");
  T_OK(c5_routed_ff_light_out(c5_block_ff(b), c5_block_ff_cache(c), ddx));
  T_OK(c5_backend_memcpy(be, res->ffl, ddx, bytes));
  if (c5_routed_attn_has_light(c5_block_attn(b))) {
    res->attl = malloc(bytes);
    T_CHECK(res->attl != NULL, "out of memory");
    T_OK(c5_routed_attn_light_out(c5_block_attn(b), c5_block_attn_cache(c), ddx));
    T_OK(c5_backend_memcpy(be, res->attl, ddx, bytes));
  }
  T_OK(c5_block_backward(b, d, c, dx_, dg, ddx));
  if (c5_dist_size(d) > 1) T_OK(c5_params_allreduce_grad(p, d));
  T_OK(c5_backend_sync(be));
  res->out = malloc(bytes);
  res->dx = malloc(bytes);
  res->grad = malloc((size_t)np * sizeof *res->grad);
  T_CHECK(res->out && res->dx && res->grad, "out of memory");
  T_OK(c5_backend_memcpy(be, res->out, dout, bytes));
  T_OK(c5_backend_memcpy(be, res->dx, ddx, bytes));
  T_OK(c5_backend_memcpy(be, res->grad, c5_params_grad(p, 0), (size_t)np * sizeof *res->grad));
  const c5_routing *rts[3] = { c5_routed_attn_routing_q(c5_block_attn_cache(c)),
                               c5_routed_attn_routing_kv(c5_block_attn_cache(c)),
                               c5_routed_ff_routing(c5_block_ff_cache(c)) };
  for (int i = 0; i < 3; i++) {
    T_CHECK(routing_down(be, rts[i], c5_dist_size(d) == 1, &res->ridx[i], &res->rcnt[i]), "routing %d", i);
    res->rows[i] = rts[i]->routed ? rts[i]->rows : 0;
    T_CHECK((res->rcount[i] = malloc((size_t)(res->rows[i] + 1) * sizeof(long))) != NULL, "out of memory");
    for (long r = 0; r < res->rows[i]; r++) res->rcount[i][r] = rts[i]->count[r];
  }
  ok = 1;
fail:
  free(xl); free(gl); free(ml);
  c5_backend_free(be, dx_); c5_backend_free(be, dg); c5_backend_free(be, dm);
  c5_backend_free(be, dout); c5_backend_free(be, ddx);
  c5_block_cache_destroy(&c);
  c5_block_destroy(&b);
  c5_params_destroy(&p);
  return ok;
}

static double err(const c5_real *a, const c5_real *b, long n)
{
  double *da = malloc((size_t)n * sizeof *da), *db = malloc((size_t)n * sizeof *db);
  if (!da || !db) { free(da); free(db); return NAN; }
  t_to_double(a, n, da);
  t_to_double(b, n, db);
  double e = t_normwise(da, db, n);
  free(da); free(db);
  return e;
}

/* The smallest gap between the k-th and (k+1)-th largest routing logit over the rows of a CPU router: how
   close the top-k came to a tie (reported beside the index sets). */
static double margin(const c5_router_cache *rc, const c5_routing *rt, long n)
{
  if (!rt->routed) return INFINITY;
  const c5_real *s = c5_router_cache_logits(rc);
  double m = INFINITY;
  double *v = malloc((size_t)n * sizeof *v);
  if (!v) return NAN;
  for (long r = 0; r < rt->rows; r++) {
    for (long j = 0; j < n; j++) v[j] = s[r * n + j];
    for (long i = 0; i <= rt->k && i < n; i++)   /* partial selection sort: the k+1 largest */
      for (long j = i + 1; j < n; j++)
        if (v[j] > v[i]) { double t = v[i]; v[i] = v[j]; v[j] = t; }
    if (rt->k < n && v[rt->k - 1] - v[rt->k] < m) m = v[rt->k - 1] - v[rt->k];
  }
  free(v);
  return m;
}

/* Whether two runs gave the same bits: out, dx, every gradient, the routed indices */
static int same_bits(const result *a, const result *b, long N, long np)
{
  int same = !memcmp(a->out, b->out, (size_t)N * sizeof *a->out) && !memcmp(a->dx, b->dx, (size_t)N * sizeof *a->dx) &&
             !memcmp(a->grad, b->grad, (size_t)np * sizeof *a->grad);
  for (int i = 0; i < 3; i++)
    same &= a->rcnt[i] == b->rcnt[i] && !memcmp(a->ridx[i], b->ridx[i], (size_t)a->rcnt[i] * sizeof(long));
  return same;
}

static int check_case(c5_backend *gpu, c5_backend *one, const c5_dist *d, const bcase *k)
{
  const long N = k->batch * k->n * k->dim;
  c5_block_config cfg = config(k);
  c5_params *p = NULL;
  c5_block *b = NULL;
  c5_block_cache *c = NULL;
  c5_real *x = malloc((size_t)N * sizeof *x), *g = malloc((size_t)N * sizeof *g), *pval = NULL;
  uint8_t *mask = NULL;
  result rc = { 0 }, rg = { 0 }, r1 = { 0 };
  unsigned long long seed = 11 + (unsigned long long)k->n;
  long np = 0;
  int ok = 0, all = 1;
  T_CHECK(x && g, "out of memory");
  /* parameters on the CPU; the CPU router caches of a reference run give the tie margins */
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_OK(c5_block_create(&cfg, p, "", &b));
  T_OK(c5_params_alloc(p));
  T_OK(c5_params_init(p, 1234));
  np = c5_params_total(p);
  pval = malloc((size_t)np * sizeof *pval);
  T_CHECK(pval != NULL, "out of memory");
  memcpy(pval, c5_params_value(p, 0), (size_t)np * sizeof *pval);
  for (long i = 0; i < N; i++) { x[i] = (c5_real)t_normal(&seed); g[i] = (c5_real)t_normal(&seed); }
  if (k->masked) {
    mask = malloc((size_t)(k->batch * k->n));
    T_CHECK(mask != NULL, "out of memory");
    for (long i = 0; i < k->batch * k->n; i++) mask[i] = (i % k->n) < k->n - 7 && i % 13 != 5;
  }
  T_CHECK(run(c5_backend_cpu(), d, k, pval, np, x, g, mask, &rc), "%s: the CPU run", k->name);
  T_OK(c5_backend_set_matmul(gpu, k->mm));
  {
    const int r = run(gpu, d, k, pval, np, x, g, mask, &rg);
    c5_backend_set_matmul(gpu, C5_MATMUL_FP32);
    T_CHECK(r, "%s: the CUDA run", k->name);
  }
  if (one) {
    T_OK(c5_backend_set_matmul(one, k->mm));
    const int r = run(one, d, k, pval, np, x, g, mask, &r1);
    c5_backend_set_matmul(one, C5_MATMUL_FP32);
    T_CHECK(r, "%s: the CUDA run on one stream", k->name);
    const int same = same_bits(&rg, &r1, N, np);
    printf("block %-14s routers on a lane against one stream: out, dx, %ld gradients, indices %s %s\n", k->name, np,
           same ? "the same bits" : "DIFFER", same ? "PASS" : "FAIL");
    all &= same;
  }
  const double tol = tol_of(k);
  {
    /* tie margins from a CPU forward of the same inputs */
    c5_layout lay;
    long unit;
    c5_real *out = malloc((size_t)N * sizeof *out);
    T_CHECK(out != NULL, "out of memory");
    T_OK(c5_block_layout_unit(&cfg, &unit));
    T_OK(c5_layout_compute(d, k->n, unit, &lay));
    T_OK(c5_block_cache_create(b, k->batch, k->n, &c));
    c5_status st = c5_block_forward(b, d, &lay, k->batch, x, mask, c, out);
    free(out);
    T_OK(st);
  }
  const char *rname[3] = { "q routing", "kv routing", "ff routing" };
  const c5_router_cache *rcs[3] = { c5_routed_attn_router_q(c5_block_attn_cache(c)),
                                    c5_routed_attn_router_kv(c5_block_attn_cache(c)),
                                    c5_routed_ff_router(c5_block_ff_cache(c)) };
  const c5_routing *rts[3] = { c5_routed_attn_routing_q(c5_block_attn_cache(c)),
                               c5_routed_attn_routing_kv(c5_block_attn_cache(c)),
                               c5_routed_ff_routing(c5_block_ff_cache(c)) };
  for (int i = 0; i < 3; i++) {
    int same = rc.rcnt[i] == rg.rcnt[i] && !memcmp(rc.ridx[i], rg.ridx[i], (size_t)rc.rcnt[i] * sizeof(long));
    printf("block %-14s %-10s [%ld, %ld, %d]: %ld indices %s (tie margin %.3e) %s\n", k->name, rname[i], k->batch,
           k->n, k->dim, rc.rcnt[i], same ? "identical" : "DIFFER", margin(rcs[i], rts[i], k->n),
           same ? "PASS" : "FAIL");
    all &= same;
  }
  struct { const char *what; const c5_real *a, *b; long n; } q[] = {
    { "out", rg.out, rc.out, N }, { "dx", rg.dx, rc.dx, N }, { "ff light", rg.ffl, rc.ffl, N },
    { "attn light", rg.attl, rc.attl, rc.attl && rg.attl ? N : 0 } };
  for (int i = 0; i < 4; i++) {
    if (!q[i].n) continue;
    double e = err(q[i].a, q[i].b, q[i].n);
    printf("block %-14s %-10s [%ld, %ld, %d]: norm-wise error %.3e (tol %.0e) %s\n", k->name, q[i].what, k->batch,
           k->n, k->dim, e, tol, e <= tol ? "PASS" : "FAIL");
    all &= e <= tol;
  }
  for (long i = 0; i < c5_params_count(p); i++) {
    const long off = c5_params_grad(p, i) - c5_params_grad(p, 0), n = c5_params_numel(p, i);
    double e = err(rg.grad + off, rc.grad + off, n);
    printf("block %-14s grad %s [%ld]: norm-wise error %.3e (tol %.0e) %s\n", k->name, c5_params_name(p, i), n, e,
           tol, e <= tol ? "PASS" : "FAIL");
    all &= e <= tol;
  }
  ok = all;
fail:
  result_free(&rc);
  result_free(&rg);
  result_free(&r1);
  c5_block_cache_destroy(&c);
  c5_block_destroy(&b);
  c5_params_destroy(&p);
  free(x); free(g); free(mask); free(pval);
  return ok;
}

/* P > 1: this rank's part of the sharded CUDA run against its own one-rank CUDA run of the whole sequence. */
static int check_case_sharded(c5_backend *gpu, const c5_dist *self, const c5_dist *world, const bcase *k)
{
  const long N = k->batch * k->n * k->dim;
  const int P = c5_dist_size(world), rank = c5_dist_rank(world);
  c5_block_config cfg = config(k);
  c5_params *p = NULL;
  c5_block *b = NULL;
  c5_real *x = malloc((size_t)N * sizeof *x), *g = malloc((size_t)N * sizeof *g), *pval = NULL, *part = NULL;
  uint8_t *mask = NULL;
  result r1 = { 0 }, rp = { 0 };
  unsigned long long seed = 11 + (unsigned long long)k->n;
  long np = 0;
  int ok = 0, all = 1;
  T_CHECK(x && g, "out of memory");
  T_OK(c5_params_create(c5_backend_cpu(), &p));   /* the same parameters on every rank */
  T_OK(c5_block_create(&cfg, p, "", &b));
  T_OK(c5_params_alloc(p));
  T_OK(c5_params_init(p, 1234));
  np = c5_params_total(p);
  pval = malloc((size_t)np * sizeof *pval);
  T_CHECK(pval != NULL, "out of memory");
  memcpy(pval, c5_params_value(p, 0), (size_t)np * sizeof *pval);
  for (long i = 0; i < N; i++) { x[i] = (c5_real)t_normal(&seed); g[i] = (c5_real)t_normal(&seed); }
  if (k->masked) {
    mask = malloc((size_t)(k->batch * k->n));
    T_CHECK(mask != NULL, "out of memory");
    for (long i = 0; i < k->batch * k->n; i++) mask[i] = (i % k->n) < k->n - 7 && i % 13 != 5;
  }
  T_CHECK(run(gpu, self, k, pval, np, x, g, mask, &r1), "%s: the one-rank CUDA run", k->name);
  T_CHECK(run(gpu, world, k, pval, np, x, g, mask, &rp), "%s: the CUDA run on %d ranks", k->name, P);
  const long nl = rp.lay.n_local, off = rp.lay.offset, D = k->dim, M = k->batch * nl * D;
  part = malloc((size_t)(M + 1) * sizeof *part);
  T_CHECK(part != NULL, "out of memory");
  const char *rname[3] = { "q routing", "kv routing", "ff routing" };
  for (int i = 0; i < 3; i++) {   /* the one-rank selections in [off, off + nl), row by row, in order */
    long at = 0, n1 = r1.rows[i] ? r1.rcnt[i] / r1.rows[i] : 0;
    int same = r1.rows[i] == rp.rows[i];
    for (long r = 0; same && r < r1.rows[i]; r++) {
      long c = 0;
      for (long e = r * n1; e < (r + 1) * n1; e++)
        if (r1.ridx[i][e] >= off && r1.ridx[i][e] < off + nl) {
          same &= at + c < rp.rcnt[i] && rp.ridx[i][at + c] == r1.ridx[i][e];
          c++;
        }
      same &= c == rp.rcount[i][r];
      at += rp.rcount[i][r];
    }
    same &= at == rp.rcnt[i];
    printf("block P=%d rank %d %-14s %-10s [%ld, %ld of %ld, %d]: %ld indices %s %s\n", P, rank, k->name, rname[i],
           k->batch, nl, k->n, k->dim, rp.rcnt[i], same ? "identical" : "DIFFER", same ? "PASS" : "FAIL");
    all &= same;
  }
  struct { const char *what; const c5_real *sharded, *whole; } q[] = { { "out", rp.out, r1.out }, { "dx", rp.dx, r1.dx } };
  for (int i = 0; i < 2; i++) {
    for (long bb = 0; bb < k->batch; bb++)
      memcpy(part + bb * nl * D, q[i].whole + (bb * k->n + off) * D, (size_t)(nl * D) * sizeof *part);
    double e = err(q[i].sharded, part, M);
    printf("block P=%d rank %d %-14s %-10s [%ld, %ld of %ld, %ld]: norm-wise error %.3e (tol %.0e) %s\n", P, rank,
           k->name, q[i].what, k->batch, nl, k->n, D, e, TOL, e <= TOL ? "PASS" : "FAIL");
    all &= e <= TOL;
  }
  for (long i = 0; i < c5_params_count(p); i++) {
    const long o = c5_params_grad(p, i) - c5_params_grad(p, 0), n = c5_params_numel(p, i);
    double e = err(rp.grad + o, r1.grad + o, n);
    printf("block P=%d rank %d %-14s grad %s [%ld]: norm-wise error %.3e (tol %.0e) %s\n", P, rank, k->name,
           c5_params_name(p, i), n, e, TOL, e <= TOL ? "PASS" : "FAIL");
    all &= e <= TOL;
  }
  ok = all;
fail:
  result_free(&r1);
  result_free(&rp);
  c5_block_destroy(&b);
  c5_params_destroy(&p);
  free(x); free(g); free(mask); free(pval); free(part);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_backend *gpu = t_cuda_backend_or_skip(), *one = NULL;
  c5_dist *d = NULL, *world = NULL;
  int ok = 1, P = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  if (P == 1) {   /* the same device with the lane (backend.h) where gpu has none, else without */
    const int has_lane = c5_backend_lane(gpu) != gpu;
    setenv("C5_CUDA_LANES", has_lane ? "0" : "1", 1);
    if (c5_backend_create(C5_BACKEND_CUDA, gpu->device, &one) != C5_OK) {
      fprintf(stderr, "c5_backend_create(cuda, %s): %s\n", has_lane ? "one stream" : "a lane", c5_last_error());
      ok = 0;
    } else if ((c5_backend_lane(one) != one) == has_lane) {
      fprintf(stderr, "C5_CUDA_LANES=%d: the backend %s a lane\n", !has_lane, has_lane ? "has" : "has no");
      ok = 0;
    }
    unsetenv("C5_CUDA_LANES");
  }
  const bcase cases[] = {
    { "basic", 2, 100, 16, 0, 1, 0, 0, 20, 24, 30, C5_MATMUL_FP32, 0, 0 },
    { "masked_2kv", 2, 100, 32, 1, 2, 0, 0, 20, 24, 30, C5_MATMUL_FP32, 0, 0 },
    { "rotary", 1, 77, 32, 0, 1, 1, 1, 16, 16, 20, C5_MATMUL_FP32, 0, 0 },
    { "realistic", 2, 512, 64, 1, 1, 0, 0, 32, 32, 32, C5_MATMUL_FP32, 0, 0 },
#if !C5_USE_DOUBLE   /* the matmul modes round f32 inputs; the double build's products are f64 */
    { "realistic_tf32", 2, 512, 64, 1, 1, 0, 0, 32, 32, 32, C5_MATMUL_TF32, 0, 0 },
    { "realistic_bf16", 2, 512, 64, 1, 1, 0, 0, 32, 32, 32, C5_MATMUL_BF16, 0, 0 },
    /* the light attention's flash kernels (attn_local.cu: dim_head 64, local window 128 / 2 = 64) */
    { "light_flash_bf16", 2, 512, 128, 1, 1, 0, 0, 32, 32, 32, C5_MATMUL_BF16, 64, 128 },
#endif
  };
  if (c5_dist_create(MPI_COMM_SELF, &d) != C5_OK) {
    fprintf(stderr, "c5_dist_create: %s\n", c5_last_error());
    ok = 0;
  }
  if (P > 1 && c5_dist_create(MPI_COMM_WORLD, &world) != C5_OK) {
    fprintf(stderr, "c5_dist_create(world): %s\n", c5_last_error());
    ok = 0;
  }
  for (size_t i = 0; ok >= 0 && d && (P == 1 || world) && i < sizeof cases / sizeof *cases; i++)
    if (P > 1 && cases[i].mm != C5_MATMUL_FP32) continue;   /* the sharded comparison is GPU against GPU */
    else if (!(P > 1 ? check_case_sharded(gpu, d, world, &cases[i]) : check_case(gpu, one, d, &cases[i]))) {
      fprintf(stderr, "case %s: FAIL%s%s\n", cases[i].name, c5_last_error()[0] ? ": " : "", c5_last_error());
      ok = 0;
    }
  if (world) {   /* every rank's verdict */
    long bad = !ok;
    if (c5_dist_reduce_long(world, &bad, 1, C5_REDUCE_MAX) != C5_OK || bad) ok = 0;
  }
  c5_dist_destroy(&world);
  c5_dist_destroy(&d);
  c5_backend_destroy(&one);
  c5_backend_destroy(&gpu);
  MPI_Finalize();
  return ok ? 0 : 1;
}
