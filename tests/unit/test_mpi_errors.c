/* test_mpi_errors.c (program of tests/unit/test_mpi_errors.sh, 2 ranks) - an
   error on rank 1 alone ends every rank with rank 1's message, never a hang
   (docs/errors.md). Linked with -Wl,--wrap=malloc,--wrap=calloc: the
   library's allocations (a static library, so its calls are wrapped) can
   be made to fail on rank 1 from a given one on.

     test_mpi_errors oom MODULE [TEXT]   MODULE: attn, block, cross, ar
       Counts the allocations of MODULE's first forward + backward on rank 1
       (the lazy ones: routers, kv exchange, halo, heavy buffers), then for
       every one of them runs a fresh cache with rank 1's allocations failing
       from it on: every rank must get C5_ERR_MEM with "rank 1: " and "out of
       memory" in its message. Then acts as an application that met the
       first such error whose message holds TEXT: rank 0 prints it, every
       rank exits 2.
     test_mpi_errors nan
       ConditionalRoutedAutoregressiveAttention sharded over the 2 ranks, a
       NaN in x on rank 1 (batch row 1, token 27 of 32, feature 3): every rank
       must fail with rank 1's message; rank 0 prints it, every rank exits 2.
     test_mpi_errors overflow
       The same with x finite but near the largest real on one token of rank 1,
       so that the q router's logits overflow: the q router runs on rank 1
       alone (a window's row lies on one rank), yet every rank must fail with
       rank 1's message, naming its windows.

   Exit 1: a rank got another status or message, or nothing failed; 77: not
   2 ranks. A hang is the test script's timeout. */
#include <limits.h>
#include <string.h>
#include "modules.h"

/* ---- allocations that fail on demand ------------------------------------------------ */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
static int armed;          /* count (and fail) this rank's allocations */
static long allocs;        /* since arming */
static long fail_from;     /* the first that fails (LONG_MAX: none) */

static int fails(void) { return armed && allocs++ >= fail_from; }
void *__wrap_malloc(size_t n) { return fails() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) { return fails() ? NULL : __real_calloc(n, size); }

static void arm(long from) { allocs = 0; fail_from = from; armed = 1; }
static void disarm(void) { armed = 0; }

/* ---- the cases ----------------------------------------------------------------------- */
typedef struct {
  const char *name;
  c5_params *p;
  void *m;
  const mod_t *mt;                     /* NULL: cross attention */
  c5_layout lay, clay;                 /* x's; the context's (cross) */
  long b, n, mctx, dim;
  c5_real *x, *g, *ctx, *out, *dx, *dctx;   /* this rank's parts */
  uint8_t *mask, *cmask;
} tcase;

static c5_routed_attn_config attn_cfg(void)
{
  c5_routed_attn_config c = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c.dim = 8; c.light_dim_head = 4; c.light_heads = 2; c.light_window_size = 8;
  c.heavy_dim_head = 4; c.heavy_heads = 2; c.num_heavy_tokens_q = 6; c.num_heavy_tokens_kv = 6;
  c.router = mod_soft_router();
  return c;
}

/* The global tensor [b, n, w] drawn from seed (every rank alike), this rank's tokens of it. */
static c5_real *local_part(long b, long n, long w, const c5_layout *l, unsigned long long seed)
{
  c5_real *loc = calloc((size_t)(b * l->n_local * w + 1), sizeof *loc);
  for (long i = 0; i < b; i++)
    for (long t = 0; t < n; t++)
      for (long k = 0; k < w; k++) {
        double v = t_normal(&seed);
        if (t >= l->offset && t < l->offset + l->n_local) loc[(i * l->n_local + t - l->offset) * w + k] = (c5_real)v;
      }
  return loc;
}

static uint8_t *local_mask(long b, const c5_layout *l)
{
  uint8_t *m = calloc((size_t)(b * l->n_local + 1), 1);
  for (long i = 0; i < b; i++)
    for (long t = 0; t < l->n_local; t++) m[i * l->n_local + t] = (l->offset + t + i) % 5 != 0;
  return m;
}

static void case_free(tcase *t)
{
  if (t->mt) { void *c = NULL; mod_free(t->mt, &t->m, &c); }
  else c5_routed_cross_attn_destroy((c5_routed_cross_attn **)&t->m);
  c5_params_destroy(&t->p);
  free(t->x); free(t->g); free(t->ctx); free(t->out); free(t->dx); free(t->dctx); free(t->mask); free(t->cmask);
}

static c5_status case_make(const char *name, const c5_dist *d, tcase *t)
{
  memset(t, 0, sizeof *t);
  t->name = name;
  t->b = 2; t->dim = 8;
  long unit = 0, cunit = 0;   /* the layout units of x and of the context: the module's (c5_<module>_layout_unit) */
  c5_status st = c5_params_create(c5_backend_cpu(), &t->p);
  if (st != C5_OK) return st;
  if (!strcmp(name, "attn") || !strcmp(name, "block")) {
    c5_routed_attn_config a = attn_cfg();
    t->n = 32;
    if (!strcmp(name, "attn")) {
      t->mt = &MOD_AT;
      st = t->mt->create(&a, t->p, &t->m);
      if (st == C5_OK) st = t->mt->unit(&a, &unit);
    } else {
      c5_block_config bc = { .attn = a, .ff = C5_ROUTED_FF_CONFIG_DEFAULT };
      bc.ff.dim = 8; bc.ff.num_heavy_tokens = 6; bc.ff.router = mod_soft_router();
      t->mt = &MOD_BL;
      st = t->mt->create(&bc, t->p, &t->m);
      if (st == C5_OK) st = t->mt->unit(&bc, &unit);
    }
  } else if (!strcmp(name, "ar")) {
    c5_routed_ar_attn_config a = C5_ROUTED_AR_ATTN_CONFIG_DEFAULT;
    a.dim = 8; a.light_dim_head = 4; a.light_heads = 2; a.light_window_size = 4; a.heavy_window_size = 4;
    a.heavy_dim_head = 4; a.heavy_heads = 2; a.num_routed_kv = 2; a.num_heavy_tokens_q = 2; a.num_heavy_tokens_kv = 3;
    a.router = mod_soft_router();
    t->n = 32;
    t->mt = &MOD_AR;
    st = t->mt->create(&a, t->p, &t->m);
    if (st == C5_OK) st = t->mt->unit(&a, &unit);
  } else if (!strcmp(name, "cross")) {
    c5_routed_cross_attn_config a = C5_ROUTED_CROSS_ATTN_CONFIG_DEFAULT;
    a.dim = 8; a.dim_head = 4; a.heads = 2; a.num_tokens_q = 6; a.num_tokens_kv = 5; a.router = mod_soft_router();
    t->n = 24; t->mctx = 20;
    st = c5_routed_cross_attn_create(&a, t->p, "", (c5_routed_cross_attn **)&t->m);
    if (st == C5_OK) st = c5_routed_cross_attn_layout_unit(&a, &unit, &cunit);
  } else {
    return c5_error_raise(C5_ERR_ARG, "test_mpi_errors: unknown module %s (attn, block, cross, ar)", name);
  }
  if (st != C5_OK) return st;
  if ((st = c5_params_alloc(t->p)) != C5_OK) return st;
  unsigned long long seed = 7;
  mod_fill_params(t->p, &seed);
  if ((st = c5_layout_compute(d, t->n, unit, &t->lay)) != C5_OK) return st;
  t->x = local_part(t->b, t->n, t->dim, &t->lay, 11);
  t->g = local_part(t->b, t->n, t->dim, &t->lay, 12);
  t->out = calloc((size_t)(t->b * t->lay.n_local * t->dim + 1), sizeof *t->out);
  t->dx = calloc((size_t)(t->b * t->lay.n_local * t->dim + 1), sizeof *t->dx);
  if (t->mt != &MOD_AR) t->mask = local_mask(t->b, &t->lay);
  if (!t->mt) {
    if ((st = c5_layout_compute(d, t->mctx, cunit, &t->clay)) != C5_OK) return st;
    t->ctx = local_part(t->b, t->mctx, t->dim, &t->clay, 13);
    t->dctx = calloc((size_t)(t->b * t->clay.n_local * t->dim + 1), sizeof *t->dctx);
    t->cmask = local_mask(t->b, &t->clay);
  }
  return C5_OK;
}

/* One first forward + backward on a fresh cache (its lazy allocations happen here). Making the cache is
   this rank's own step: agreed, as an application does, before the forward. */
static c5_status run_once(const c5_dist *d, tcase *t)
{
  void *c = NULL;
  c5_status st;
  if (t->mt) {
    st = c5_dist_agree(d, t->mt->cache(t->m, t->b, t->lay.n_local, &c));
    if (st == C5_OK) st = t->mt->fwd(t->m, d, &t->lay, t->b, t->x, t->mask, c, t->out);
    if (st == C5_OK) st = t->mt->bwd(t->m, d, c, t->x, t->g, t->dx);
    if (c) t->mt->destroy_cache(&c);
  } else {
    c5_routed_cross_attn_cache *cc = NULL;
    st = c5_dist_agree(d, c5_routed_cross_attn_cache_create(t->m, t->b, t->lay.n_local, t->clay.n_local, &cc));
    if (st == C5_OK)
      st = c5_routed_cross_attn_forward(t->m, d, &t->lay, &t->clay, t->b, t->x, t->mask, t->ctx, t->cmask, cc, t->out);
    if (st == C5_OK) st = c5_routed_cross_attn_backward(t->m, d, cc, t->x, t->ctx, t->g, t->dx, t->dctx);
    c5_routed_cross_attn_cache_destroy(&cc);
  }
  return st;
}

/* Did every rank get status want with rank 1's message (holding needle)? Prints why not. */
static int all_agree(int rank, c5_status st, c5_status want, const char *needle, const char *what)
{
  int ok = st == want && strstr(c5_last_error(), "rank 1: ") && strstr(c5_last_error(), needle);
  if (!ok)
    fprintf(stderr, "FAIL: %s: rank %d got %s (want %s with \"rank 1: \" and \"%s\"): %s\n", what, rank,
            c5_status_string(st), c5_status_string(want), needle, c5_last_error());
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  return ok;
}

static int run_oom(const c5_dist *d, int rank, const char *module, const char *text)
{
  tcase t;
  static char first[8192];
  long at = -1;
  int ok = 1;
  c5_status st = case_make(module, d, &t);
  if (st != C5_OK) { fprintf(stderr, "FAIL: %s: setup: %s\n", module, c5_last_error()); case_free(&t); return 1; }
  /* the allocations of a first forward + backward on rank 1 */
  if (rank == 1) arm(LONG_MAX);
  st = run_once(d, &t);
  disarm();
  long count = allocs;
  MPI_Bcast(&count, 1, MPI_LONG, 1, MPI_COMM_WORLD);
  if (st != C5_OK) { fprintf(stderr, "FAIL: %s: rank %d: %s\n", module, rank, c5_last_error()); ok = 0; }
  if (count == 0) { if (rank == 0) fprintf(stderr, "FAIL: %s: no allocation to fail\n", module); ok = 0; }
  for (long p = 0; ok && p < count; p++) {
    if (rank == 1) arm(p);
    st = run_once(d, &t);
    disarm();
    char what[128];
    snprintf(what, sizeof what, "%s, rank 1's allocations failing from %ld of %ld on", module, p, count);
    ok = all_agree(rank, st, C5_ERR_MEM, "out of memory", what);
    if (ok && rank == 0 && !first[0] && strstr(c5_last_error(), text)) {
      snprintf(first, sizeof first, "%s", c5_last_error());
      at = p;
    }
    c5_error_clear();
  }
  case_free(&t);
  if (!ok) return 1;
  int found = first[0] != 0;
  MPI_Bcast(&found, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (!found) {
    if (rank == 0) fprintf(stderr, "FAIL: %s: no failing allocation gave a message with \"%s\"\n", module, text);
    return 1;
  }
  if (rank == 0) {
    printf("test_mpi_errors: %s: each of the %ld allocations of a first forward + backward failing on rank 1 "
           "failed every rank with rank 1's message; allocation %ld's:\n", module, count, at);
    fprintf(stderr, "test_mpi_errors: %s\n", first);
  }
  return 2;
}

static int run_nan(const c5_dist *d, int rank)
{
  tcase t;
  c5_status st = case_make("ar", d, &t);
  if (st != C5_OK) { fprintf(stderr, "FAIL: ar: setup: %s\n", c5_last_error()); case_free(&t); return 1; }
  const long tok = 27, b = 1, k = 3;   /* rank 1 holds tokens 16..31 */
  if (tok >= t.lay.offset && tok < t.lay.offset + t.lay.n_local)
    t.x[(b * t.lay.n_local + tok - t.lay.offset) * t.dim + k] = (c5_real)NAN;
  st = run_once(d, &t);
  case_free(&t);
  if (!all_agree(rank, st, C5_ERR_ARG, "input x[1, 27, 3] is nan", "ar, NaN in x on rank 1")) return 1;
  if (rank == 0) fprintf(stderr, "test_mpi_errors: %s\n", c5_last_error());
  return 2;
}

/* x finite but so large on one token of rank 1 (its features signed as the q routing token's) that the
   q router's logits overflow: the router's own check, on this rank alone, must fail every rank. */
static int run_overflow(const c5_dist *d, int rank)
{
  tcase t;
  c5_status st = case_make("ar", d, &t);
  if (st != C5_OK) { fprintf(stderr, "FAIL: ar: setup: %s\n", c5_last_error()); case_free(&t); return 1; }
  long iq;
  if (c5_params_find(t.p, "q_router.routing_token", &iq) != C5_OK) { fprintf(stderr, "FAIL: %s\n", c5_last_error()); return 1; }
  const c5_real *w = c5_params_value(t.p, iq), big = (c5_real)(0.9 * (C5_USE_DOUBLE ? 1.7976931348623157e308 : 3.4028234e38));
  double sum = 0;
  for (long k = 0; k < t.dim; k++) sum += fabs((double)w[k]);
  const long tok = 21, b = 0;   /* window 5, held by rank 1 */
  if (tok >= t.lay.offset && tok < t.lay.offset + t.lay.n_local)
    for (long k = 0; k < t.dim; k++) t.x[(b * t.lay.n_local + tok - t.lay.offset) * t.dim + k] = w[k] >= 0 ? big : -big;
  st = run_once(d, &t);
  case_free(&t);
  if (sum <= 1.2) { if (rank == 0) fprintf(stderr, "FAIL: |w|_1 = %g: no overflow to provoke\n", sum); return 1; }
  if (!all_agree(rank, st, C5_ERR_NUMERIC, "q router over windows", "ar, logits overflowing on rank 1")) return 1;
  if (rank == 0) fprintf(stderr, "test_mpi_errors: %s\n", c5_last_error());
  return 2;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int rank, size, rc = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  c5_dist *d = NULL;
  if (size != 2) {
    if (rank == 0) printf("test_mpi_errors: needs 2 ranks: skipped\n");
    MPI_Finalize();
    return 77;
  }
  if (c5_dist_create(MPI_COMM_WORLD, &d) != C5_OK) {
    fprintf(stderr, "FAIL: %s\n", c5_last_error());
    MPI_Finalize();
    return 1;
  }
  if (argc >= 3 && !strcmp(argv[1], "oom")) rc = run_oom(d, rank, argv[2], argc >= 4 ? argv[3] : "");
  else if (argc == 2 && !strcmp(argv[1], "nan")) rc = run_nan(d, rank);
  else if (argc == 2 && !strcmp(argv[1], "overflow")) rc = run_overflow(d, rank);
  else if (rank == 0) fprintf(stderr, "usage: test_mpi_errors oom attn|block|cross|ar [TEXT] | nan | overflow\n");
  c5_dist_destroy(&d);
  MPI_Finalize();
  return rc;
}
