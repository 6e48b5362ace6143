/* test_backend.c - backends chosen at run time: the CPU backend always
   exists; a second CPU backend object runs the same block forward+backward
   bit for bit (the pattern a CUDA-vs-CPU test follows: one binary, two
   backends, the same inputs); a kind this build has no kernels for is
   refused by name; parameters remember their backend; a backend names its
   device (c5_backend_device_name). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "modules.h"
#include "backend.h"

/* Block forward+backward on parameters of backend be; out, dx and grads returned (caller frees). */
static int run(const c5_backend *be, const c5_dist *d, c5_real **out, c5_real **dx, c5_real **grad, long *np)
{
  c5_block_config bl;
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;
  a.dim = 16; a.num_heavy_tokens_q = 20; a.num_heavy_tokens_kv = 24; a.light_dim_head = 8; a.light_heads = 2;
  a.light_window_size = 16; a.heavy_dim_head = 8; a.heavy_heads = 2;
  f.dim = 16; f.num_heavy_tokens = 30;
  bl.attn = a;
  bl.ff = f;
  const long b = 2, n = 100, N = b * n * 16;
  c5_params *p = NULL;
  void *m = NULL, *c = NULL;
  c5_real *x = malloc((size_t)N * sizeof *x), *g = malloc((size_t)N * sizeof *g);
  unsigned long long seed = 3;
  c5_layout lay;
  int ok = 0;
  *out = malloc((size_t)N * sizeof **out);
  *dx = malloc((size_t)N * sizeof **dx);
  *grad = NULL;
  T_CHECK(x && g && *out && *dx, "out of memory");
  T_OK(c5_params_create(be, &p));
  T_CHECK(c5_params_backend(p) == be, "parameters forgot their backend");
  T_OK(MOD_BL.create(&bl, p, &m));
  T_OK(c5_params_alloc(p));
  mod_fill_params(p, &seed);
  for (long i = 0; i < N; i++) { x[i] = (c5_real)t_normal(&seed); g[i] = (c5_real)t_normal(&seed); }
  long unit;
  T_OK(MOD_BL.unit(&bl, &unit));
  T_OK(c5_layout_compute(d, n, unit, &lay));
  T_OK(MOD_BL.cache(m, b, n, &c));
  T_OK(MOD_BL.fwd(m, d, &lay, b, x, NULL, c, *out));
  T_OK(MOD_BL.bwd(m, d, c, x, g, *dx));
  *np = c5_params_total(p);
  *grad = malloc((size_t)*np * sizeof **grad);
  T_CHECK(*grad != NULL, "out of memory");
  memcpy(*grad, c5_params_grad(p, 0), (size_t)*np * sizeof **grad);
  ok = 1;
fail:
  mod_free(&MOD_BL, &m, &c);
  c5_params_destroy(&p);
  free(x); free(g);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_dist *d = NULL;
  c5_backend *be = NULL, *none = NULL;
  c5_real *o1 = NULL, *o2 = NULL, *dx1 = NULL, *dx2 = NULL, *g1 = NULL, *g2 = NULL;
  long n1 = 0, n2 = 0;
  int ok = 0;
  T_OK(c5_dist_create(MPI_COMM_SELF, &d));
  const c5_backend *cpu = c5_backend_cpu();
  T_CHECK(c5_backend_get_kind(cpu) == C5_BACKEND_CPU && !strcmp(c5_backend_name(cpu), "cpu"), "cpu backend: %s",
          c5_backend_name(cpu));
  {   /* the device's name for a report: the CPU's is "cpu", cut to the room given */
    char name[64] = "?", two[2] = "?";
    T_OK(c5_backend_device_name(cpu, name, sizeof name));
    T_CHECK(!strcmp(name, "cpu"), "cpu backend's device name: %s", name);
    T_OK(c5_backend_device_name(cpu, two, sizeof two));
    T_CHECK(!strcmp(two, "c"), "cpu backend's device name in 2 bytes: %s", two);
    T_FAILS(c5_backend_device_name(cpu, name, 0), C5_ERR_ARG, "c5_backend_device_name");
  }
#if C5_HAVE_CUDA_BUILD
  if (c5_backend_device_count(C5_BACKEND_CUDA) == 0) {
    T_FAILS(c5_backend_create(C5_BACKEND_CUDA, 0, &none), C5_ERR_CUDA, "device 0 does not exist");
  } else {
    T_OK(c5_backend_create(C5_BACKEND_CUDA, 0, &none));
    T_CHECK(c5_backend_get_kind(none) == C5_BACKEND_CUDA && !strcmp(c5_backend_name(none), "cuda"), "cuda backend: %s",
            c5_backend_name(none));
    char name[256] = "";
    T_OK(c5_backend_device_name(none, name, sizeof name));
    T_CHECK(name[0] && strcmp(name, "cuda"), "cuda backend's device name: '%s', want the GPU's", name);
    printf("cuda device 0: %s\n", name);
    T_OK(c5_backend_destroy(&none));
  }
  T_FAILS(c5_backend_create(C5_BACKEND_CUDA, 100000, &none), C5_ERR_CUDA, "device 100000 does not exist");
#else
  T_FAILS(c5_backend_create(C5_BACKEND_CUDA, 0, &none), C5_ERR_NOTIMPL, "cuda backend");
#endif
  T_CHECK(none == NULL, "a refused backend was returned");
  {   /* an op a backend lacks is refused by name, not run elsewhere: the CPU's table less cd_sumexp */
    c5k_ops ops = c5k_cpu_ops;
    ops.cd_sumexp = NULL;
    c5_backend half = *cpu;
    half.ops = &ops;
    c5_cd_cache c = { 0 };
    c5_cd_config cfg = { .n_iters = 2, .eps = 0.1, .eps_init = 0, .eps_decay = 1 };
    c5_real s[4] = { 1, 2, 3, 4 }, y[4];
    double k = 1;
    T_OK(c5_cd_cache_alloc(1, 2, &c));
    c5_status st = c5_cd_forward(&half, d, &cfg, 1, 4, s, NULL, &k, 0, y, &c);
    c5_cd_cache_free(&c);
    T_CHECK(st == C5_ERR_NOTIMPL && strstr(c5_last_error(), "kernel op cd_sumexp"), "a missing op: %s",
            c5_last_error());
    c5_error_clear();
  }
  {   /* the CPU's memory statistics count what alloc/calloc hold, and their high watermark until a reset */
    c5_backend_mem m0, m;
    void *p1 = NULL, *p2 = NULL;
    T_OK(c5_backend_mem_stats(cpu, 1, &m0));
    T_CHECK(m0.pool_used_high == m0.pool_used, "a reset left the watermark at %zu above the use %zu",
            m0.pool_used_high, m0.pool_used);
    T_OK(c5_backend_alloc(cpu, 1000, &p1));
    T_OK(c5_backend_calloc(cpu, 10, 300, &p2));
    T_CHECK(((uintptr_t)p1 | (uintptr_t)p2) % _Alignof(max_align_t) == 0, "a host block lost malloc's alignment");
    for (int i = 0; i < 3000; i++) T_CHECK(((unsigned char *)p2)[i] == 0, "calloc's byte %d is not zero", i);
    T_OK(c5_backend_mem_stats(cpu, 0, &m));
    T_CHECK(m.pool_used == m0.pool_used + 4000 && m.dev_used == m.pool_used && m.pool_used_high == m.pool_used,
            "after 1000 + 3000 bytes: used %zu high %zu (from %zu)", m.pool_used, m.pool_used_high, m0.pool_used);
    T_OK(c5_backend_free(cpu, p1));
    T_OK(c5_backend_mem_stats(cpu, 0, &m));
    T_CHECK(m.pool_used == m0.pool_used + 3000 && m.pool_used_high == m0.pool_used + 4000,
            "after freeing 1000: used %zu high %zu (from %zu)", m.pool_used, m.pool_used_high, m0.pool_used);
    T_OK(c5_backend_mem_stats(cpu, 1, &m));   /* reads the old watermark, then restarts it */
    T_CHECK(m.pool_used_high == m0.pool_used + 4000, "the reset's read: high %zu", m.pool_used_high);
    T_OK(c5_backend_mem_stats(cpu, 0, &m));
    T_CHECK(m.pool_used_high == m0.pool_used + 3000, "after the reset: high %zu, not the use %zu",
            m.pool_used_high, m0.pool_used + 3000);
    T_OK(c5_backend_free(cpu, p2));
    T_OK(c5_backend_free(cpu, NULL));
    T_OK(c5_backend_mem_stats(cpu, 0, &m));
    T_CHECK(m.pool_used == m0.pool_used && m.pool_used_high == m0.pool_used + 3000,
            "after freeing all: used %zu high %zu", m.pool_used, m.pool_used_high);
  }
  T_FAILS(c5_backend_create(C5_BACKEND_CPU, 1, &none), C5_ERR_ARG, "device 1");
  T_OK(c5_backend_create(C5_BACKEND_CPU, 0, &be));
  T_CHECK(run(cpu, d, &o1, &dx1, &g1, &n1), "block on the process-wide CPU backend");
  T_CHECK(run(be, d, &o2, &dx2, &g2, &n2), "block on a second CPU backend");
  const long N = 2 * 100 * 16;
  T_CHECK(n1 == n2 && !memcmp(o1, o2, (size_t)N * sizeof *o1) && !memcmp(dx1, dx2, (size_t)N * sizeof *dx1) &&
          !memcmp(g1, g2, (size_t)n1 * sizeof *g1), "two CPU backends differ");
  T_OK(c5_backend_destroy(&be));
  T_CHECK(be == NULL, "destroy did not clear the handle");
  T_OK(c5_backend_destroy(&be));   /* NULL-safe */
  printf("backends: cpu, a second cpu (bit-identical block), cuda (made, or refused by the build or for want of a "
         "device), a missing op refused by name, cpu memory statistics: ok\n");
  ok = 1;
fail:
  free(o1); free(o2); free(dx1); free(dx2); free(g1); free(g2);
  c5_backend_destroy(&be);
  c5_dist_destroy(&d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
