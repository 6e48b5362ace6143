/* block_mem.c - the memory a ConditionalRoutedTransformerBlock holds, counted on the CPU backend.

     c5-block-mem [N ...]   (default 32768)

   The block of the CUDA issue's setting (bench/block_shape.c block_shape_issue: dim 512, 8 light and 8 heavy
   heads of 64, light window 128, ff mults 0.5 and 4, n/16 heavy tokens for q, kv and ff, straight-through), batch 1,
   one forward then one backward. The modules allocate their caches and buffers through c5_backend_alloc, the
   same code on the CPU and on a GPU, so what the CPU backend counts (c5_backend_mem_stats) is what the block
   asks of the device pool, less the CUDA kernels' own scratch (cuBLASLt workspace, the heavy attention's score
   chunks, bf16 copies). x, the output gradient, the output and dx are host buffers here, outside the count
   (cuda_bench.c allocates them on the device: 4 n dim floats). One line per n, bytes in MiB:
   params (values, gradients, accumulators, scratch), cache (after c5_block_cache_create), the high watermark
   after the forward and after forward+backward. */
#include <stdio.h>
#include <stdlib.h>
#include <mpi.h>
#include "colt5.h"
#include "colt5_mpi.h"
#include "c5_internal.h"
#include "backend.h"
#include "block_shape.h"   /* the issue's block, as c5-cuda-bench and colt5-bench build it */

static double mib(size_t b) { return (double)b / (1024.0 * 1024.0); }

static c5_status one(c5_dist *d, long n)
{
  const c5_backend *be = c5_backend_cpu();
  const c5_block_config cfg = block_shape_issue(n);
  const long D = cfg.attn.dim;
  c5_params *p = NULL;
  c5_block *blk = NULL;
  c5_block_cache *cache = NULL;
  c5_layout lay;
  c5_backend_mem m0, mp, mc, mf, mfb;
  long unit = 0;
  c5_real *x = malloc((size_t)(n * D) * sizeof *x), *g = malloc((size_t)(n * D) * sizeof *g);
  c5_real *y = malloc((size_t)(n * D) * sizeof *y), *dx = malloc((size_t)(n * D) * sizeof *dx);
  c5_status st = C5_OK;
  C5_CHECK(x && g && y && dx, C5_ERR_MEM, "c5-block-mem: out of memory for 4 x [%ld, %ld]", n, D);
  unsigned long long s = 1;
  for (long i = 0; i < n * D; i++) {   /* a cheap LCG in [-1, 1): the routing needs distinct scores, not normals */
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    x[i] = (c5_real)((double)(s >> 11) / 9007199254740992.0 * 2 - 1);
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    g[i] = (c5_real)((double)(s >> 11) / 9007199254740992.0 * 2 - 1);
  }
  C5_CALL_GOTO(c5_backend_mem_stats(be, 1, &m0), st, done);
  C5_CALL_GOTO(c5_params_create(be, &p), st, done);
  C5_CALL_GOTO(c5_block_create(&cfg, p, "", &blk), st, done);
  C5_CALL_GOTO(c5_params_alloc(p), st, done);
  for (long i = 0; i < c5_params_count(p); i++) {   /* small values: a sane forward, nothing more is asked */
    c5_real *v = c5_params_value(p, i);
    for (long k = 0; k < c5_params_numel(p, i); k++) {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      v[k] = (c5_real)(((double)(s >> 11) / 9007199254740992.0 * 2 - 1) * 0.05);
    }
  }
  C5_CALL_GOTO(c5_backend_mem_stats(be, 0, &mp), st, done);
  C5_CALL_GOTO(c5_block_layout_unit(&cfg, &unit), st, done);
  C5_CALL_GOTO(c5_layout_compute(d, n, unit, &lay), st, done);
  C5_CALL_GOTO(c5_block_cache_create(blk, 1, n, &cache), st, done);
  C5_CALL_GOTO(c5_backend_mem_stats(be, 0, &mc), st, done);
  C5_CALL_GOTO(c5_block_forward(blk, d, &lay, 1, x, NULL, cache, y), st, done);
  C5_CALL_GOTO(c5_backend_mem_stats(be, 0, &mf), st, done);
  C5_CALL_GOTO(c5_block_backward(blk, d, cache, x, g, dx), st, done);
  C5_CALL_GOTO(c5_backend_mem_stats(be, 0, &mfb), st, done);
  printf("colt5 op=block_mem n=%ld dim=%ld precision=%s params_MiB=%.1f cache_MiB=%.1f mem_high_fwd_MiB=%.1f "
         "mem_high_MiB=%.1f io_MiB=%.1f\n", n, D, C5_REAL_NAME, mib(mp.pool_used - m0.pool_used),
         mib(mc.pool_used - mp.pool_used), mib(mf.pool_used_high - m0.pool_used),
         mib(mfb.pool_used_high - m0.pool_used), mib((size_t)(4 * n * D) * sizeof *x));
  fflush(stdout);
done:
  c5_block_cache_destroy(&cache);
  c5_block_destroy(&blk);
  c5_params_destroy(&p);
  free(x); free(g); free(y); free(dx);
  return st;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_dist *d = NULL;
  int rc = 0;
  if (c5_dist_create(MPI_COMM_SELF, &d) != C5_OK) rc = 1;
  for (int i = 1; rc == 0 && i <= (argc > 1 ? argc - 1 : 1); i++) {
    long n = argc > 1 ? strtol(argv[i], NULL, 10) : 32768;
    if (n < 16) {
      fprintf(stderr, "c5-block-mem: n %s: at least 16 (n/16 heavy tokens)\n", argv[i]);
      rc = 1;
    } else if (one(d, n) != C5_OK) {
      fprintf(stderr, "c5-block-mem: n %ld: %s\n", n, c5_last_error());
      rc = 1;
    }
  }
  c5_dist_destroy(&d);
  MPI_Finalize();
  return rc;
}
