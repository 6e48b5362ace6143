/* test_alloc.c - the training step allocates nothing: every cache and
   workspace is sized when it is created (docs/design.md §4). Linked with
   -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc, so every allocation made
   by this program and the library (a static archive) passes through the
   counters below; MPI's own allocations (a shared library) do not. A block
   and an autoregressive attention run forward + backward + gradient
   allreduce five times on the ranks of MPI_COMM_WORLD (test_alloc.sh: 1 and
   2 ranks) on new inputs each step; steps 2..5 must make no allocation. */
#include <stdint.h>
#include <string.h>
#include "modules.h"

void *__real_malloc(size_t);
void *__real_calloc(size_t, size_t);
void *__real_realloc(void *, size_t);

static int counting;
static long nalloc;
static void *sites[8];

static void note(void *site)
{
  if (!counting) return;
  if (nalloc < 8) sites[nalloc] = site;
  nalloc++;
}
void *__wrap_malloc(size_t n) { note(__builtin_return_address(0)); return __real_malloc(n); }
void *__wrap_calloc(size_t k, size_t n) { note(__builtin_return_address(0)); return __real_calloc(k, n); }
void *__wrap_realloc(void *p, size_t n) { note(__builtin_return_address(0)); return __real_realloc(p, n); }

static int steps(const char *what, const mod_t *mt, const void *cfg, long b, long n, int dim, c5_dist *d)
{
  const int P = c5_dist_size(d), rank = c5_dist_rank(d);
  c5_params *p = NULL;
  void *m = NULL, *c = NULL;
  c5_layout lay;
  c5_real *x = NULL, *g = NULL, *out = NULL, *dx = NULL;
  int ok = 0;
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_OK(mt->create(cfg, p, &m));
  T_OK(c5_params_alloc(p));
  unsigned long long seed = 9;
  mod_fill_params(p, &seed);
  long unit;
  T_OK(mt->unit(cfg, &unit));
  T_OK(c5_layout_compute(d, n, unit, &lay));
  const long nl = lay.n_local, N = b * nl * dim;
  x = malloc((size_t)N * sizeof *x); g = malloc((size_t)N * sizeof *g);
  out = malloc((size_t)N * sizeof *out); dx = malloc((size_t)N * sizeof *dx);
  T_CHECK(x && g && out && dx, "out of memory");
  T_OK(mt->cache(m, b, nl, &c));
  for (int step = 1; step <= 5; step++) {
    /* new inputs every step, as in training: routed counts per rank change, and no buffer may grow for them */
    seed = 100 * (unsigned long long)step + (unsigned long long)rank;
    for (long i = 0; i < N; i++) { x[i] = (c5_real)(step * t_normal(&seed)); g[i] = (c5_real)t_normal(&seed); }
    if (step == 2) { nalloc = 0; counting = 1; }
    c5_params_zero_grad(p);
    T_OK(mt->fwd(m, d, &lay, b, x, NULL, c, out));
    T_OK(mt->bwd(m, d, c, x, g, dx));
    T_OK(c5_params_allreduce_grad(p, d));
  }
  counting = 0;
  if (nalloc) {
    fprintf(stderr, "%s, P = %d, rank %d: %ld allocations in steps 2..5; first sites:", what, P, rank, nalloc);
    for (long i = 0; i < nalloc && i < 8; i++) fprintf(stderr, " %p", sites[i]);
    fprintf(stderr, " (addr2line -e %s)\n", "tests/unit/test_alloc");
  }
  ok = nalloc == 0;
fail:
  counting = 0;
  if (rank == 0) printf("%-56s P = %d  %s\n", what, P, ok ? "ok" : "FAILED");
  mod_free(mt, &m, &c);
  c5_params_destroy(&p);
  free(x); free(g); free(out); free(dx);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_dist *d = NULL;
  if (c5_dist_create(MPI_COMM_WORLD, &d) != C5_OK) { fprintf(stderr, "%s\n", c5_last_error()); return 1; }
  int ok = 1;

  c5_block_config bl;
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;
  a.dim = 16; a.num_heavy_tokens_q = 24; a.num_heavy_tokens_kv = 30; a.light_dim_head = 8; a.light_heads = 2;
  a.light_window_size = 16; a.heavy_dim_head = 8; a.heavy_heads = 2; a.num_routed_kv = 2;
  f.dim = 16; f.num_heavy_tokens = 40;
  bl.attn = a;
  bl.ff = f;
  ok &= steps("block forward+backward+gradient allreduce", &MOD_BL, &bl, 2, 200, 16, d);

  c5_routed_ar_attn_config ar = C5_ROUTED_AR_ATTN_CONFIG_DEFAULT;
  ar.dim = 16; ar.num_heavy_tokens_q = 6; ar.num_heavy_tokens_kv = 10; ar.light_dim_head = 8; ar.light_heads = 2;
  ar.light_window_size = 8; ar.heavy_window_size = 16; ar.heavy_dim_head = 8; ar.heavy_heads = 2; ar.num_routed_kv = 2;
  ok &= steps("autoregressive attention forward+backward+allreduce", &MOD_AR, &ar, 2, 200, 16, d);

  int all = ok;
  MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  c5_dist_destroy(&d);
  MPI_Finalize();
  return all ? 0 : 1;
}
