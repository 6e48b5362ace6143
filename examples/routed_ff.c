/* routed_ff.c - a ConditionalRoutedFeedForward on one rank: build it, run
   forward and backward, and check the input gradient against the loss.

     cc routed_ff.c $(pkg-config --cflags --libs libcolt5) -lm -o routed_ff
     ./routed_ff

   The loss is L = 1/2 sum(out^2), so dL/dout = out. The check: moving x a
   step h along dx changes L by about h |dx|^2 (a central difference). */
#include <string.h>
#include "example.h"

static double loss_of(c5_routed_ff *ff, const c5_dist *d, const c5_layout *lay, long batch, const c5_real *x,
                      c5_routed_ff_cache *cache, c5_real *out, long len)
{
  CHECK(c5_routed_ff_forward(ff, d, lay, batch, x, NULL, cache, out));
  double l = 0;
  for (long i = 0; i < len; i++) l += 0.5 * (double)out[i] * out[i];
  return l;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  printf("libcolt5 %s (headers %s), %s precision\n", colt5_version(), C5_VERSION_STRING, C5_REAL_NAME);

  /* A communicator of one rank: the whole sequence is here. */
  c5_dist *d = NULL;
  CHECK(c5_dist_create(MPI_COMM_SELF, &d));

  /* The module's options (the reference's keyword arguments). The router's
     default, straight-through, makes the routed tokens' scores read 1 while
     their gradient flows through the soft scores: the backward is then not
     the forward's derivative, and the check below would fail by design. */
  c5_routed_ff_config cfg = C5_ROUTED_FF_CONFIG_DEFAULT;
  cfg.dim = 32;
  cfg.num_heavy_tokens = 16;   /* tokens per sequence that take the heavy feed-forward */
  cfg.router.straight_through = 0;
  const long batch = 2, n = 64, len = batch * n * cfg.dim;

  /* Parameters: the module registers its own in the table; the table then
     allocates every value and gradient at once. */
  c5_params *params = NULL;
  c5_routed_ff *ff = NULL;
  CHECK(c5_params_create(c5_backend_cpu(), &params));
  CHECK(c5_routed_ff_create(&cfg, params, "", &ff));
  CHECK(c5_params_alloc(params));
  ex_fill_params(params, 1);
  printf("%ld parameters in %ld tensors\n", c5_params_total(params), c5_params_count(params));

  /* The layout says which tokens this rank holds: all of them on one rank. */
  long unit;
  c5_layout lay;
  CHECK(c5_routed_ff_layout_unit(&cfg, &unit));
  CHECK(c5_layout_compute(d, n, unit, &lay));

  /* The cache holds what the backward needs; sized once for [batch, n_local]. */
  c5_routed_ff_cache *cache = NULL;
  CHECK(c5_routed_ff_cache_create(ff, batch, lay.n_local, &cache));

  c5_real *x = malloc(len * sizeof *x), *out = malloc(len * sizeof *out), *dx = malloc(len * sizeof *dx),
          *xs = malloc(len * sizeof *xs);
  if (!x || !out || !dx || !xs) { fprintf(stderr, "out of memory\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
  ex_fill(x, len, 2);

  double loss = loss_of(ff, d, &lay, batch, x, cache, out, len);
  const c5_routing *rt = c5_routed_ff_routing(cache);
  printf("forward: loss %.6f, %ld tokens routed per sequence\n", loss, rt->routed ? rt->k : n);

  /* Backward: dL/dout = out. dx is written; parameter gradients accumulate (zero them per step). */
  c5_params_zero_grad(params);
  memcpy(xs, out, len * sizeof *out);
  CHECK(c5_routed_ff_backward(ff, d, cache, x, xs, dx));
  double g2 = 0;
  for (long i = 0; i < len; i++) g2 += (double)dx[i] * dx[i];
  long w = 0;
  CHECK(c5_params_find(params, "heavy_ff.1.weight", &w));
  double gw = 0;
  for (long e = 0; e < c5_params_numel(params, w); e++) gw += fabs((double)c5_params_grad(params, w)[e]);
  printf("backward: |dx| %.6f, sum |d heavy_ff.1.weight| %.6f\n", sqrt(g2), gw);

  /* The check: (L(x + h dx) - L(x - h dx)) / 2h against |dx|^2. */
  /* The step moves x by h |dx|: small enough that no token changes route
     (the top-k is a step function: a step of 1e-3 already moves one here),
     large against the rounding of the loss (single precision: 1e-7 of L). */
  double h = (C5_USE_DOUBLE ? 1e-6 : 1e-4) / sqrt(g2), lp, lm;
  for (long i = 0; i < len; i++) xs[i] = x[i] + (c5_real)(h * dx[i]);
  lp = loss_of(ff, d, &lay, batch, xs, cache, out, len);
  for (long i = 0; i < len; i++) xs[i] = x[i] - (c5_real)(h * dx[i]);
  lm = loss_of(ff, d, &lay, batch, xs, cache, out, len);
  double fd = (lp - lm) / (2 * h), rel = fabs(fd - g2) / g2;
  int ok = rel < (C5_USE_DOUBLE ? 1e-6 : 1e-2);
  printf("check: central difference %.8g, |dx|^2 %.8g, relative difference %.2e: %s\n", fd, g2, rel,
         ok ? "ok" : "FAILED");

  free(x); free(out); free(dx); free(xs);
  c5_routed_ff_cache_destroy(&cache);
  c5_routed_ff_destroy(&ff);
  c5_params_destroy(&params);
  c5_dist_destroy(&d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
