/* cuda_bench.c - coordinate descent on the CUDA backend, timed: forward and
   forward+backward of the setting (20 iterations, eps 0.03,
   eps_init 4, decay 0.7, k = n/16 * 9/8, s = 2 randn) for each ROWSxN
   given, through the public entries (c5_cd_forward/_backward: with their
   input checks, one device-to-host read each) and through the internal
   entries the router calls after its own checks (no host synchronization
   at all). Each time is the median over 7 batches of the mean of a batch
   of calls between two synchronizations. Then the read-only streaming
   bandwidth and a device copy (bench/stream.cu), and the bound the issue
   sets for the 1 x 8M row: 2 T n 4 bytes at the streaming bandwidth.

   usage: c5-cuda-bench ROWSxN ...    (one rank; the CUDA device 0) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "colt5_mpi.h"
#include "../lib/c5_internal.h"
#include "../lib/backend.h"
#include "../lib/cd_internal.h"

double c5_bench_bandwidth(size_t bytes, int kind, int reps);

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmpd(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct {
  c5_backend *be;
  const c5_dist *d;
  c5_cd_config cfg;
  long rows, n;
  c5_real *s, *y, *gy, *ds;
  double k;
  c5_cd_cache *c;
  c5k_rows R;
} job;

static c5_status run(job *j, int pub, int bwd)
{
  if (pub) {
    C5_CALL(c5_cd_forward(j->be, j->d, &j->cfg, j->rows, j->n, j->s, NULL, &j->k, 0, j->y, j->c));
    if (bwd) C5_CALL(c5_cd_backward(j->be, j->d, j->c, j->rows, j->n, j->s, NULL, j->y, j->gy, j->ds));
  } else {
    C5_CALL(c5_cd_forward_rows(j->be, j->d, &j->cfg, &j->R, j->s, NULL, &j->k, 0, j->y, j->c));
    if (bwd) C5_CALL(c5_cd_backward_rows(j->be, j->d, j->c, &j->R, j->s, NULL, j->y, j->gy, j->ds));
  }
  return C5_OK;
}

/* median over 7 batches of the per-call mean, in ms */
static c5_status timed(job *j, int pub, int bwd, double *ms)
{
  const double est0 = now();
  for (int w = 0; w < 3; w++) C5_CALL(run(j, pub, bwd));
  C5_CALL(c5_backend_sync(j->be));
  double per = (now() - est0) / 3;
  int batch = per > 0 ? (int)(0.02 / per) : 100;   /* ~20 ms a batch */
  if (batch < 3) batch = 3;
  if (batch > 200) batch = 200;
  double t[7];
  for (int b = 0; b < 7; b++) {
    C5_CALL(c5_backend_sync(j->be));
    double t0 = now();
    for (int i = 0; i < batch; i++) C5_CALL(run(j, pub, bwd));
    C5_CALL(c5_backend_sync(j->be));
    t[b] = (now() - t0) / batch * 1e3;
  }
  qsort(t, 7, sizeof *t, cmpd);
  *ms = t[3];
  return C5_OK;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_dist *d = NULL;
  c5_backend *be = NULL;
  int rc = 1;
  if (c5_dist_create(MPI_COMM_WORLD, &d) != C5_OK || c5_backend_create(C5_BACKEND_CUDA, 0, &be) != C5_OK) {
    fprintf(stderr, "c5-cuda-bench: %s\n", c5_last_error());
    goto out;
  }
  printf("colt5 cuda bench: precision %s (scores), row state double\n", C5_REAL_NAME);
  double bw_read = c5_bench_bandwidth((size_t)4 << 30, 0, 20), bw_copy = c5_bench_bandwidth((size_t)4 << 30, 1, 20);
  double bw_l2 = c5_bench_bandwidth((size_t)32 << 20, 0, 50);
  printf("colt5 op=stream read_GBps=%.0f (4 GiB, read-only) copy_GBps=%.0f (4 GiB, read+write) read32MiB_GBps=%.0f\n",
         bw_read, bw_copy, bw_l2);
  for (int a = 1; a < argc; a++) {
    job j = { .be = be, .d = d, .cfg = { .n_iters = 20, .eps = 0.03, .eps_init = 4, .eps_decay = 0.7 } };
    if (sscanf(argv[a], "%ldx%ld", &j.rows, &j.n) != 2 || j.rows < 1 || j.n < 16) {
      fprintf(stderr, "c5-cuda-bench: %s: expected ROWSxN\n", argv[a]);
      goto out;
    }
    const long N = j.rows * j.n;
    j.k = (double)j.n / 16 * 9 / 8;
    c5_real *h = malloc(N * sizeof *h);
    unsigned long long st = 42;
    for (long i = 0; i < N; i++) {   /* 2 N(0,1), Box-Muller on a 64-bit LCG */
      st = st * 6364136223846793005ULL + 1442695040888963407ULL;
      double u1 = ((st >> 11) + 0.5) / 9007199254740992.0;
      st = st * 6364136223846793005ULL + 1442695040888963407ULL;
      double u2 = ((st >> 11) + 0.5) / 9007199254740992.0;
      h[i] = (c5_real)(2 * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
    }
    c5_cd_cache c = { 0 };
    j.c = &c;
    long *plan = malloc((3 * j.rows + 1) * sizeof *plan);
    c5k_rows_dense(j.rows, j.n, plan, &j.R);
    double f_pub, fb_pub, f, fb;
    if (c5_backend_alloc(be, N * sizeof(c5_real), (void **)&j.s) != C5_OK ||
        c5_backend_alloc(be, N * sizeof(c5_real), (void **)&j.y) != C5_OK ||
        c5_backend_alloc(be, N * sizeof(c5_real), (void **)&j.gy) != C5_OK ||
        c5_backend_alloc(be, N * sizeof(c5_real), (void **)&j.ds) != C5_OK ||
        c5_backend_memcpy(be, j.s, h, N * sizeof *h) != C5_OK || c5_backend_memcpy(be, j.gy, h, N * sizeof *h) != C5_OK ||
        c5_cd_cache_alloc(j.rows, 20, &c) != C5_OK || timed(&j, 1, 0, &f_pub) != C5_OK ||
        timed(&j, 1, 1, &fb_pub) != C5_OK || timed(&j, 0, 0, &f) != C5_OK || timed(&j, 0, 1, &fb) != C5_OK) {
      fprintf(stderr, "c5-cuda-bench: %s: %s\n", argv[a], c5_last_error());
      goto out;
    }
    /* bytes: forward T reads of s, then s read and y written; backward s, y, gy read twice (dot, ds), ds written */
    double bytes_f = (20.0 + 2) * N * sizeof(c5_real), bytes_fb = bytes_f + 7.0 * N * sizeof(c5_real);
    printf("colt5 op=cd rows=%ld n=%ld fwd_ms=%.4f fwdbwd_ms=%.4f public_fwd_ms=%.4f public_fwdbwd_ms=%.4f "
           "fwdbwd_GBps=%.0f\n", j.rows, j.n, f, fb, f_pub, fb_pub, bytes_fb / (fb * 1e-3) / 1e9);
    if (N >= (1L << 23)) {
      double bound = 2.0 * 20 * N * 4 / (bw_read * 1e9) * 1e3;
      printf("colt5 op=cd_bound rows=%ld n=%ld 2Tn4_at_read_bw_ms=%.4f fwdbwd_over_bound=%.2f (target <= 2)\n", j.rows,
             j.n, bound, fb / bound);
    }
    c5_cd_cache_free(&c);
    c5_backend_free(be, j.s); c5_backend_free(be, j.y); c5_backend_free(be, j.gy); c5_backend_free(be, j.ds);
    free(h); free(plan);
  }
  rc = 0;
out:
  c5_backend_destroy(&be);
  c5_dist_destroy(&d);
  MPI_Finalize();
  return rc;
}
