/* block_sharded.c - a ConditionalRoutedTransformerBlock with the sequence
   sharded over the ranks of an MPI job: each rank holds a slice of the
   tokens, runs forward and backward on it, and the library exchanges what
   crosses the slices (windows, routing, keys). Parameters are replicated;
   their gradients are summed over the ranks.

     mpicc block_sharded.c $(pkg-config --cflags --libs libcolt5) -lm -o block_sharded
     mpirun -np 2 ./block_sharded

   To show that sharding changes nothing, every rank also runs the whole
   sequence alone (a communicator of one) and compares: the gathered output
   and the summed gradients must match the unsharded ones. */
#include <string.h>
#include "example.h"

/* Forward and backward of the block on lay's slice of x (the whole [batch, n, dim] input); out, dx are the slice's. */
static void step(c5_block *blk, c5_params *p, const c5_dist *d, const c5_layout *lay, long batch, long n, int dim,
                 const c5_real *x, c5_real *out, c5_real *dx)
{
  long part = lay->n_local * dim;
  c5_real *xl = malloc(batch * part * sizeof *xl);
  if (!xl) { fprintf(stderr, "out of memory\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
  for (long b = 0; b < batch; b++) memcpy(xl + b * part, x + (b * n + lay->offset) * dim, part * sizeof *xl);
  c5_block_cache *cache = NULL;
  CHECK(c5_block_cache_create(blk, batch, lay->n_local, &cache));
  CHECK(c5_block_forward(blk, d, lay, batch, xl, NULL, cache, out));
  c5_params_zero_grad(p);
  CHECK(c5_block_backward(blk, d, cache, xl, out, dx));   /* loss 1/2 sum(out^2): dL/dout = out */
  CHECK(c5_params_allreduce_grad(p, d));                  /* each rank held its slice's share */
  c5_block_cache_destroy(&cache);
  free(xl);
}

/* ||a - b|| / ||b|| (0 when both are 0): rounding spreads over a tensor, so
   the norm is the measure (the golden vectors' rule), not each element. */
static double rel_err(const c5_real *a, const c5_real *b, long len)
{
  double d2 = 0, b2 = 0;
  for (long i = 0; i < len; i++) {
    double e = (double)a[i] - b[i];
    d2 += e * e;
    b2 += (double)b[i] * b[i];
  }
  return b2 > 0 ? sqrt(d2 / b2) : sqrt(d2);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_dist *d = NULL, *self = NULL;
  CHECK(c5_dist_create(MPI_COMM_WORLD, &d));   /* collective: every rank of the job */
  CHECK(c5_dist_create(MPI_COMM_SELF, &self));
  int rank = c5_dist_rank(d), size = c5_dist_size(d);

  c5_block_config cfg = { .attn = C5_ROUTED_ATTN_CONFIG_DEFAULT, .ff = C5_ROUTED_FF_CONFIG_DEFAULT };
  cfg.attn.dim = cfg.ff.dim = 32;
  cfg.attn.light_dim_head = cfg.attn.heavy_dim_head = 8;
  cfg.attn.light_heads = cfg.attn.heavy_heads = 4;
  cfg.attn.light_window_size = 16;
  cfg.attn.num_heavy_tokens_q = cfg.attn.num_heavy_tokens_kv = 16;
  cfg.ff.num_heavy_tokens = 16;
  const long batch = 2, n = 128;
  const int dim = cfg.attn.dim;

  /* Two tables with the same values: the sharded block's and the one-rank block's. */
  c5_params *p = NULL, *p1 = NULL;
  c5_block *blk = NULL, *blk1 = NULL;
  CHECK(c5_params_create(c5_backend_cpu(), &p));
  CHECK(c5_block_create(&cfg, p, "", &blk));
  CHECK(c5_params_alloc(p));
  ex_fill_params(p, 7);
  CHECK(c5_params_create(c5_backend_cpu(), &p1));
  CHECK(c5_block_create(&cfg, p1, "", &blk1));
  CHECK(c5_params_alloc(p1));
  ex_fill_params(p1, 7);

  /* The slice of each rank: whole units of the block's layout unit (its local attention's window). */
  long unit;
  c5_layout lay, whole;
  CHECK(c5_block_layout_unit(&cfg, &unit));
  CHECK(c5_layout_compute(d, n, unit, &lay));
  CHECK(c5_layout_compute(self, n, unit, &whole));
  printf("rank %d of %d: tokens %ld..%ld of %ld (unit %ld)\n", rank, size, lay.offset, lay.offset + lay.n_local - 1,
         n, unit);

  long len = batch * n * dim, llen = batch * lay.n_local * dim;
  c5_real *x = malloc(len * sizeof *x), *out = malloc(llen * sizeof *out), *dx = malloc(llen * sizeof *dx),
          *full = malloc(len * sizeof *full), *out1 = malloc(len * sizeof *out1), *dx1 = malloc(len * sizeof *dx1);
  if (!x || !out || !dx || !full || !out1 || !dx1) { fprintf(stderr, "out of memory\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
  ex_fill(x, len, 11);   /* every rank draws the whole input and keeps its slice */

  step(blk, p, d, &lay, batch, n, dim, x, out, dx);
  step(blk1, p1, self, &whole, batch, n, dim, x, out1, dx1);

  /* The slices of every rank, gathered (collective), against the one-rank run. */
  CHECK(c5_dist_allgather_seq(d, batch, n, unit, dim, out, full));
  double e_out = rel_err(full, out1, len);
  CHECK(c5_dist_allgather_seq(d, batch, n, unit, dim, dx, full));
  double e_dx = rel_err(full, dx1, len);
  double e_grad = 0;   /* the worst parameter */
  for (long i = 0; i < c5_params_count(p); i++) {
    double e = rel_err(c5_params_grad(p, i), c5_params_grad(p1, i), c5_params_numel(p, i));
    if (e > e_grad) e_grad = e;
  }
  /* The worst of every rank, the same on all of them. */
  double worst[3] = { e_out, e_dx, e_grad };
  CHECK(c5_dist_reduce_double(d, worst, 3, C5_REDUCE_MAX));
  double tol = C5_USE_DOUBLE ? 1e-9 : 1e-4;
  int ok = worst[0] < tol && worst[1] < tol && worst[2] < tol;
  if (rank == 0)
    printf("sharded over %d ranks against one rank: out %.2e, dx %.2e, parameter gradients %.2e: %s\n", size,
           worst[0], worst[1], worst[2], ok ? "ok" : "FAILED");

  free(x); free(out); free(dx); free(full); free(out1); free(dx1);
  c5_block_destroy(&blk);
  c5_block_destroy(&blk1);
  c5_params_destroy(&p);
  c5_params_destroy(&p1);
  c5_dist_destroy(&self);
  c5_dist_destroy(&d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
