/* test_cd_rss.c - coordinate descent on one 1M-column row keeps O(T)
   state: the peak-RSS growth of forward + backward, the caller's arrays
   included (s, mask, y, dL/dy, ds), stays within 3 x the input bytes + 16 MiB. */
#include <string.h>
#include <sys/resource.h>
#include "harness.h"

static long peak_kib(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_dist *d = NULL;
  c5_cd_cache cache = { 0 };
  int ok = 0;
  const long n = 1L << 20;
  c5_real *s = NULL, *y = NULL, *gy = NULL, *ds = NULL;
  uint8_t *mask = NULL;
  T_OK(c5_dist_create(MPI_COMM_WORLD, &d));
  long before = peak_kib();
  s = malloc((size_t)n * sizeof *s); y = malloc((size_t)n * sizeof *y);
  gy = malloc((size_t)n * sizeof *gy); ds = malloc((size_t)n * sizeof *ds);
  mask = malloc((size_t)n);
  T_CHECK(s && y && gy && ds && mask, "out of memory");
  unsigned long long seed = 42;
  for (long j = 0; j < n; j++) {
    s[j] = (c5_real)(2 * t_normal(&seed));
    gy[j] = (c5_real)t_normal(&seed);
    mask[j] = t_uniform(&seed) > 0.05;
  }
  c5_cd_config c = { .n_iters = 20, .eps = 0.03, .eps_init = 4.0, .eps_decay = 0.7 };
  double k = n / 16.0 * 9 / 8;
  T_OK(c5_cd_cache_alloc(1, c.n_iters, &cache));
  T_OK(c5_cd_forward(c5_backend_cpu(), d, &c, 1, n, s, mask, &k, 0, y, &cache));
  T_OK(c5_cd_backward(c5_backend_cpu(), d, &cache, 1, n, s, mask, y, gy, ds));
  for (long j = 0; j < n; j++)
    T_CHECK(isfinite(y[j]) && isfinite(ds[j]) && y[j] >= 0 && y[j] <= 1, "y[%ld] = %g, ds = %g", j, (double)y[j], (double)ds[j]);
  long growth = (peak_kib() - before) * 1024;
  long input = n * (long)sizeof *s + n;
  long bound = 3 * input + (16L << 20);
  printf("1M-column row: peak RSS growth %.1f MiB, bound %.1f MiB (input %.1f MiB)\n", growth / 1048576.0,
         bound / 1048576.0, input / 1048576.0);
  T_CHECK(growth <= bound, "peak RSS grew %ld bytes > %ld", growth, bound);
  ok = 1;
fail:
  c5_cd_cache_free(&cache);
  free(s); free(y); free(gy); free(ds); free(mask);
  c5_dist_destroy(&d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
