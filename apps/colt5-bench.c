/* colt5-bench - benchmarks of libcolt5, side by side with the PyTorch
   reference timed in the same run (never a test: tests do not time).

     colt5-bench cd [--n 8192,131072,1048576] [--threads 1,2] [--reps 7] [--warmup 2]
                    [--reference DIR] [--python /usr/bin/python3] [--script PATH]

   cd: coordinate descent on one row (20 iterations, eps 0.03, eps_init 4,
   decay 0.7, k = n/16 * 9/8), forward and forward+backward; median of reps
   after warmup; throughput in tokens/s. With --reference DIR the reference's
   plain-PyTorch coor_descent runs in float32 with the same thread count
   (bench/reference_bench.py) and each line gets the ratio to its median.

     colt5-bench block [--n 4096,16384] [--threads 1,2] [--reps 5] [--reference DIR]
                       [--shape small|issue] [--device cpu|cuda] [--matmul fp32|tf32|bf16] ...

   block: ConditionalRoutedTransformerBlock of --shape (bench/block_shape.h):
   small (the default) at dim 256, 4 x 64 light and heavy heads, or issue, the
   CUDA issue's (c5-cuda-bench block's) at dim 512, 8 x 64 heads; light window
   128, FF mult 0.5 / 4, n/16 heavy tokens for q, kv and FF, batch 1;
   forward and forward+backward tokens/s, and each rank's peak of backend
   memory (parameters, gradients, caches). On the CPU: the share of time in
   matrix products and their GFLOP/s, against a plain GEMM of the BLAS
   ([n, 256] x [256, 1024]) timed in the same run. With --device cuda each
   rank runs on GPU local rank % GPUs (cli.h; one GPU per rank: NCCL
   collectives, ranks sharing one: staged through host memory), every timed
   repetition ends with the device synchronized, and the line gives the
   model TFLOP/s (docs/flops.md) instead; --threads is one count there
   (default 1: the host only issues the GPU's work).

   Under mpirun (block), every rank's options and buffers are agreed before
   the first collective (docs/errors.md): options that differ between ranks
   (--n, --threads, --reps, --warmup, --shape, --device, --matmul, the
   benchmark) and an error on any rank (a rank without a GPU) end the run on
   every rank, rank 0 printing the error once. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include "colt5_mpi.h"
#include <cblas.h>
#include "kernels.h"
#include "cli.h"
#include "../bench/block_shape.h"   /* the block shapes and their FLOP count, shared with c5-cuda-bench */

/* Where make install puts the reference script; C5_BENCH_SCRIPT in the
   environment (bench/run.sh sets it to the source tree's) or --script wins. */
#ifndef C5_BENCH_SCRIPT
#define C5_BENCH_SCRIPT "bench/reference_bench.py"
#endif

#define MAXL 16

typedef struct {
  long n[MAXL]; int nn;
  int threads[MAXL]; int nt;
  int reps, warmup;
  const char *reference, *python, *script;
  const char *device, *matmul, *shape;   /* block: --device, --matmul (cli.h), --shape (bench/block_shape.h) */
} opts_t;

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The reference's median (ms) for (pass, n, threads), or -1 when absent. */
typedef struct { char pass[8]; long n; int threads; double ms; } ref_t;

static int run_reference(const opts_t *o, const char *op, int threads, ref_t *ref, int maxref)
{
  char cmd[4096];
  int len = snprintf(cmd, sizeof cmd, "%s %s --ref '%s' --threads %d --reps %d --warmup %d --dtype float32 %s",
                     o->python, o->script, o->reference, threads, o->reps, o->warmup, op);
  c5_block_config c;
  if (!strcmp(op, "block") && block_shape_by_name(o->shape, 16, &c) == 0)   /* the reference's block of our shape */
    len += snprintf(cmd + len, sizeof cmd - (size_t)len, " --dim %d --heads %d --dim-head %d --window %ld", c.attn.dim,
                    c.attn.light_heads, c.attn.light_dim_head, c.attn.light_window_size);
  len += snprintf(cmd + len, sizeof cmd - (size_t)len, " --n");
  for (int i = 0; i < o->nn; i++) len += snprintf(cmd + len, sizeof cmd - (size_t)len, " %ld", o->n[i]);
  FILE *p = popen(cmd, "r");
  if (!p) { fprintf(stderr, "colt5-bench: cannot run %s\n", cmd); return -1; }
  char line[512];
  int nr = 0;
  while (fgets(line, sizeof line, p) && nr < maxref) {
    ref_t r = { 0 };
    char *q = strstr(line, "pass="), *nn = strstr(line, " n="), *ms = strstr(line, "median_ms=");
    if (!q || !nn || !ms) continue;
    sscanf(q, "pass=%7s", r.pass);
    r.n = atol(nn + 3);
    r.ms = atof(ms + 10);
    r.threads = threads;
    ref[nr++] = r;
  }
  int rc = pclose(p);
  if (rc != 0) {   /* a wait status: say how it ended, not the raw number (exit 2 reads 512) */
    if (rc == -1) fprintf(stderr, "colt5-bench: the reference run could not be waited for: %s\n", cmd);
    else if (WIFEXITED(rc)) fprintf(stderr, "colt5-bench: the reference run failed (exit status %d%s): %s\n",
                                    WEXITSTATUS(rc), WEXITSTATUS(rc) == 127 ? ", command not found" : "", cmd);
    else if (WIFSIGNALED(rc)) fprintf(stderr, "colt5-bench: the reference run was killed by signal %d (%s): %s\n",
                                      WTERMSIG(rc), strsignal(WTERMSIG(rc)), cmd);
    else fprintf(stderr, "colt5-bench: the reference run failed (wait status %#x): %s\n", rc, cmd);
    return -1;
  }
  return nr;
}

static double ref_ms(const ref_t *ref, int nr, const char *pass, long n, int threads)
{
  for (int i = 0; i < nr; i++)
    if (!strcmp(ref[i].pass, pass) && ref[i].n == n && ref[i].threads == threads) return ref[i].ms;
  return -1;
}

/* A call whose status is the same on every rank (a collective of the library, or an agreement): rank 0
   prints its error; every rank returns 1. */
#define CHECK(d, call) do { c5_status s_ = (call); if (s_ != C5_OK) { \
    if (c5_dist_rank(d) == 0) fprintf(stderr, "colt5-bench: %s\n", c5_last_error()); \
    return 1; } } while (0)

static int bench_cd(const opts_t *o, c5_dist *d)
{
  if (c5_dist_size(d) > 1) {   /* every rank sees it */
    if (c5_dist_rank(d) == 0) fprintf(stderr, "colt5-bench cd: one process (the cd benchmark times one row on one rank)\n");
    return 2;
  }
  printf("# colt5-bench cd: precision %s, exp ISA %s, BLAS core %s, 1 row, 20 iterations, eps 0.03, eps_init 4, "
         "decay 0.7, k = n/16*9/8; median of %d after %d warm-up\n", C5_REAL_NAME, c5k_vexp_isa(), c5_blas_core(),
         o->reps, o->warmup);
  for (int ti = 0; ti < o->nt; ti++) {
    int T = o->threads[ti];
    ref_t ref[64];
    int nr = o->reference ? run_reference(o, "cd", T, ref, 64) : 0;
    if (nr < 0) return 1;
    omp_set_num_threads(T);
    for (int ni = 0; ni < o->nn; ni++) {
      long n = o->n[ni];
      c5_real *s = malloc((size_t)n * sizeof *s), *y = malloc((size_t)n * sizeof *y);
      c5_real *g = malloc((size_t)n * sizeof *g), *ds = malloc((size_t)n * sizeof *ds);
      if (!s || !y || !g || !ds) {
        fprintf(stderr, "colt5-bench: out of memory for cd --n %ld (4 vectors of %zu bytes)\n", n, (size_t)n * sizeof *s);
        free(s); free(y); free(g); free(ds);
        return 1;
      }
      unsigned long long st = 12345;
      for (long j = 0; j < n; j++) {   /* s ~ 2 N(0,1), g ~ N(0,1), as in the reference script */
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        double u1 = ((st >> 11) + 0.5) / 9007199254740992.0;
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        double u2 = ((st >> 11) + 0.5) / 9007199254740992.0;
        s[j] = (c5_real)(2 * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
        g[j] = (c5_real)(sqrt(-2 * log(u1)) * sin(6.283185307179586 * u2));
      }
      c5_cd_config cfg = { .n_iters = 20, .eps = 0.03, .eps_init = 4.0, .eps_decay = 0.7 };
      double k = n / 16.0 * 9.0 / 8.0;
      c5_cd_cache cache = { 0 };
      CHECK(d, c5_cd_cache_alloc(1, cfg.n_iters, &cache));
      const char *passes[2] = { "fwd", "fwdbwd" };
      for (int pi = 0; pi < 2; pi++) {
        double t[256];
        int reps = o->reps < 256 ? o->reps : 256;
        for (int r = -o->warmup; r < reps; r++) {
          double t0 = now();
          CHECK(d, c5_cd_forward(c5_backend_cpu(), d, &cfg, 1, n, s, NULL, &k, 0, y, &cache));
          if (pi == 1) CHECK(d, c5_cd_backward(c5_backend_cpu(), d, &cache, 1, n, s, NULL, y, g, ds));
          if (r >= 0) t[r] = now() - t0;
        }
        double ms = 1e3 * median(t, reps);
        double rm = ref_ms(ref, nr, passes[pi], n, T);
        printf("colt5 op=cd pass=%-6s n=%-8ld threads=%d precision=%s median_ms=%9.3f Mtokens_per_s=%8.2f",
               passes[pi], n, T, C5_REAL_NAME, ms, n / ms / 1e3);
        if (rm > 0) printf(" ref_ms=%9.3f speedup=%6.2f", rm, rm / ms);
        printf("\n");
        fflush(stdout);
      }
      c5_cd_cache_free(&cache);
      free(s); free(y); free(g); free(ds);
    }
  }
  return 0;
}

/* N(0, s^2) fill, deterministic. */
static void fill(c5_real *v, long n, double s, unsigned long long *st)
{
  for (long j = 0; j < n; j++) {
    *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
    double u1 = ((*st >> 11) + 0.5) / 9007199254740992.0;
    *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
    double u2 = ((*st >> 11) + 0.5) / 9007199254740992.0;
    v[j] = (c5_real)(s * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
  }
}

/* The state fill's generator reaches k steps after st (jumping ahead: the steps' affine maps composed by
   squaring), so that a rank draws its shard of the global input alone, the values of drawing the whole. */
static unsigned long long lcg_skip(unsigned long long st, unsigned long long k)
{
  unsigned long long a = 6364136223846793005ULL, c = 1442695040888963407ULL, A = 1, C = 0;
  for (; k; k >>= 1) {
    if (k & 1) { A *= a; C = C * a + c; }
    c *= a + 1;
    a *= a;
  }
  return A * st + C;
}

/* GFLOP/s of one plain BLAS GEMM [m, 256] x [256, 1024] on T threads of the
   BLAS's own driver (the library runs the BLAS serially inside its own
   blocks: kernels/cpu/act.c), median of reps. */
static double blas_rate(long m, int reps, int T)
{
  const long k = 256, n = 1024;
  c5_real *A = malloc((size_t)(m * k) * sizeof *A), *B = malloc((size_t)(k * n) * sizeof *B);
  c5_real *C = malloc((size_t)(m * n) * sizeof *C);
  if (!A || !B || !C) {   /* the caller says how much it needed */
    free(A); free(B); free(C);
    return -1;
  }
  unsigned long long st = 7;
  fill(A, m * k, 1, &st);
  fill(B, k * n, 1, &st);
  double t[64];
  c5k_ctx ctx = { 0 };
  c5k_cpu_ops.gemm(&ctx, 0, 0, 1, 1, 1, 1.0, A, k, B, n, 0.0, C, n);   /* the library's first call sets 1 thread */
  openblas_set_num_threads(T);
  for (int r = -1; r < reps; r++) {
    double t0 = now();
#if C5_USE_DOUBLE
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0, A, (int)k, B, (int)n, 0.0, C, (int)n);
#else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, A, (int)k, B, (int)n, 0.0f, C, (int)n);
#endif
    if (r >= 0) t[r] = now() - t0;
  }
  openblas_set_num_threads(1);   /* back to the library's serial BLAS (OpenMP OpenBLAS also sets OpenMP's count) */
  omp_set_num_threads(T);
  free(A); free(B); free(C);
  return 2.0 * m * n * k / median(t, reps) / 1e9;
}

/* Per-step communication (max over ranks) of the timed steps, whose collectives st counted (read right after
   them: the agreements and reductions after the loop are no part of a step). */
static void comm_report(c5_dist *d, const c5_dist_stats *st, int reps, double step_s, long n)
{
  c5_dist_stats mx = *st;
  if (c5_dist_reduce_long(d, &mx.bytes[0][0], C5_NUM_PHASE * C5_NUM_COLL, C5_REDUCE_MAX) != C5_OK ||
      c5_dist_reduce_double(d, &mx.seconds[0][0], C5_NUM_PHASE * C5_NUM_COLL, C5_REDUCE_MAX) != C5_OK ||
      c5_dist_reduce_long(d, &mx.calls[0][0], C5_NUM_PHASE * C5_NUM_COLL, C5_REDUCE_MAX) != C5_OK) return;
  if (c5_dist_rank(d) != 0) return;
  double tot = 0;
  for (int ph = 0; ph < C5_NUM_PHASE; ph++)
    for (int c = 0; c < C5_NUM_COLL; c++) {
      if (!mx.calls[ph][c]) continue;
      tot += mx.seconds[ph][c] / reps;
      printf("comm n=%-6ld P=%d phase=%-8s coll=%-14s calls_per_step=%6.1f bytes_per_step=%11.0f ms_per_step=%8.3f\n",
             n, c5_dist_size(d), c5_phase_name((c5_phase)ph), c5_coll_name((c5_coll)c), (double)mx.calls[ph][c] / reps,
             (double)mx.bytes[ph][c] / reps, 1e3 * mx.seconds[ph][c] / reps);
    }
  printf("comm n=%-6ld P=%d total_ms_per_step=%.3f share=%.1f%% (sum over collectives of the slowest rank)\n", n,
         c5_dist_size(d), 1e3 * tot, 100 * tot / step_s);
}

/* The backend memory (parameters, gradients, caches; on a GPU the kernels' scratch too: what the backend held
   at its peak since the reset before the block was built, less the base it held then) of each rank: max / min
   / mean over ranks. */
static void mem_report(c5_dist *d, const c5_backend *be, size_t base, long n)
{
  c5_backend_mem m;
  const double hi = c5_backend_mem_stats(be, 0, &m) == C5_OK ? (m.pool_used_high - base) / 1048576.0 : -1;
  double mx[2] = { hi, -hi }, sum = hi;
  if (c5_dist_reduce_double(d, mx, 2, C5_REDUCE_MAX) != C5_OK || c5_dist_reduce_double(d, &sum, 1, C5_REDUCE_SUM) != C5_OK)
    return;
  if (c5_dist_rank(d) == 0)
    printf("memory n=%-6ld P=%d backend_high_MiB per rank: max %.1f min %.1f mean %.1f (parameters, gradients, "
           "caches%s)\n", n, c5_dist_size(d), mx[0], -mx[1], sum / c5_dist_size(d),
           c5_backend_get_kind(be) == C5_BACKEND_CPU ? "" : ", kernel scratch");
}

/* Routed tokens on this rank for one routing (batch row 0): max / mean over ranks. */
static void balance(c5_dist *d, const char *what, const c5_routing *rt, long n)
{
  long mine = 0, sum = 0, mx = 0;
  for (long r = 0; rt->routed && r < rt->rows; r++) mine += rt->count[r];
  sum = mx = mine;
  if (c5_dist_reduce_long(d, &sum, 1, C5_REDUCE_SUM) != C5_OK || c5_dist_reduce_long(d, &mx, 1, C5_REDUCE_MAX) != C5_OK)
    return;
  if (c5_dist_rank(d) == 0 && rt->routed)
    printf("balance n=%-6ld P=%d %-8s routed tokens per rank: max %ld mean %.1f (imbalance %.2f)\n", n, c5_dist_size(d),
           what, mx, (double)sum / c5_dist_size(d), mx * c5_dist_size(d) / (double)(sum ? sum : 1));
}

/* The block's input and output buffers of one n: this rank's shard of the global input x and output gradient g
   drawn on the host, and on the run's backend the same shard (on the CPU the host's), the output and the input
   gradient. */
typedef struct {
  c5_real *x, *g;            /* host [n_local, D] */
  c5_real *xl, *gl, *y, *dx; /* the backend's [n_local, D] (one more value: a rank may hold no token) */
} io_t;

static c5_status io_create(const c5_backend *be, long n, long D, const c5_layout *lay, io_t *io)
{
  const size_t nb = (size_t)(lay->n_local * D + 1) * sizeof(c5_real);
  const int host = c5_backend_get_kind(be) == C5_BACKEND_CPU;
  io->x = malloc(nb);
  io->g = malloc(nb);
  if (!io->x || !io->g)
    return c5_error_raise(C5_ERR_MEM, "colt5-bench: out of memory for block --n %ld (input [%ld, %ld])", n,
                          lay->n_local, D);
  if (host) {   /* malloc, as always on the CPU: the backend's memory report counts the block's own */
    io->xl = io->x;
    io->gl = io->g;
    io->y = malloc(nb);
    io->dx = malloc(nb);
    if (!io->y || !io->dx)
      return c5_error_raise(C5_ERR_MEM, "colt5-bench: out of memory for block --n %ld (output [%ld, %ld])", n,
                            lay->n_local, D);
    return C5_OK;
  }
  c5_real **dev[4] = { &io->xl, &io->gl, &io->y, &io->dx };
  for (int i = 0; i < 4; i++) {
    c5_status st = c5_backend_alloc(be, nb, (void **)dev[i]);
    if (st != C5_OK) return st;
  }
  return C5_OK;
}

/* This rank's shard of x ~ N(0, 1) [n, D] then g ~ N(0, 1) [n, D], drawn from rng as fill draws the whole
   (two steps a value: the same global values on every rank count), onto the backend (nothing to copy on the
   CPU). */
static c5_status io_fill(const c5_backend *be, long n, long D, const c5_layout *lay, unsigned long long rng, io_t *io)
{
  unsigned long long st = lcg_skip(rng, 2ULL * (unsigned long long)(lay->offset * D));
  fill(io->x, lay->n_local * D, 1, &st);
  st = lcg_skip(rng, 2ULL * (unsigned long long)((n + lay->offset) * D));
  fill(io->g, lay->n_local * D, 1, &st);
  if (c5_backend_get_kind(be) == C5_BACKEND_CPU) return C5_OK;
  const size_t nb = (size_t)(lay->n_local * D) * sizeof(c5_real);
  c5_status s = c5_backend_memcpy(be, io->xl, io->x, nb);
  return s == C5_OK ? c5_backend_memcpy(be, io->gl, io->g, nb) : s;
}

static void io_free(const c5_backend *be, io_t *io)
{
  if (c5_backend_get_kind(be) == C5_BACKEND_CPU) {
    free(io->y); free(io->dx);
  } else {
    c5_backend_free(be, io->xl); c5_backend_free(be, io->gl); c5_backend_free(be, io->y); c5_backend_free(be, io->dx);
  }
  free(io->x); free(io->g);
  *io = (io_t){ 0 };
}

/* The parameters drawn on the host (N(0, 1/fan_in) for matrices, N(0, 1) else; the same values on every
   backend and rank) and copied to the backend's memory. */
static c5_status params_fill(c5_params *p, unsigned long long *rng)
{
  long most = 1;
  for (long i = 0; i < c5_params_count(p); i++)
    if (c5_params_numel(p, i) > most) most = c5_params_numel(p, i);
  c5_real *h = malloc((size_t)most * sizeof *h);
  if (!h) return c5_error_raise(C5_ERR_MEM, "colt5-bench: out of memory for a parameter of %ld values", most);
  c5_status st = C5_OK;
  for (long i = 0; st == C5_OK && i < c5_params_count(p); i++) {
    long dims[C5_PARAM_MAXDIM];
    int nd = c5_params_shape(p, i, dims);
    fill(h, c5_params_numel(p, i), nd >= 2 ? 1.0 / sqrt((double)dims[nd - 1]) : 1.0, rng);
    st = c5_backend_memcpy(c5_params_backend(p), c5_params_value(p, i), h, (size_t)c5_params_numel(p, i) * sizeof *h);
  }
  free(h);
  return st;
}

static int bench_block(const opts_t *o, c5_dist *d, const cli_device *dv)
{
  const int P = c5_dist_size(d), rank = c5_dist_rank(d);
  const c5_backend *be = dv->be;
  const int gpu = c5_backend_get_kind(be) != C5_BACKEND_CPU;
  c5_block_config sh;
  block_shape_by_name(o->shape, 16, &sh);   /* its widths: n sets only the heavy token counts */
  if (rank == 0) {
    char dev[256], shape[256], blas[64] = "";
    cli_device_describe(dv, P, dev, sizeof dev);
    snprintf(shape, sizeof shape, "shape %s: dim %d, %dx%d light and %dx%d heavy heads, window %ld, ff mult %g/%g, n/16 "
             "heavy tokens (q, kv, ff)", o->shape, sh.attn.dim, sh.attn.light_heads, sh.attn.light_dim_head,
             sh.attn.heavy_heads, sh.attn.heavy_dim_head, sh.attn.light_window_size, sh.ff.light_ff_mult,
             sh.ff.heavy_ff_mult);
    if (!gpu) snprintf(blas, sizeof blas, ", BLAS core %s", c5_blas_core());
    char thr[64] = "";
    if (gpu) snprintf(thr, sizeof thr, ", %d host thread%s each (the GPU computes)", o->threads[0],
                      o->threads[0] > 1 ? "s" : "");
    printf("# colt5-bench block: precision %s%s, device %s, P = %d ranks%s, %s, batch 1; forward+backward includes the "
           "gradient allreduce;%s median of %d after %d warm-up\n", C5_REAL_NAME, blas, dev, P, thr, shape,
           gpu ? " each repetition ends with the device synchronized; model TFLOP/s by docs/flops.md (all ranks);" : "",
           o->reps, o->warmup);
  }
  for (int ti = 0; ti < o->nt; ti++) {
    int T = o->threads[ti];
    ref_t ref[64];
    int nr = o->reference && P == 1 ? run_reference(o, "block", T, ref, 64) : 0;
    if (nr < 0) return 1;
    omp_set_num_threads(T);
    for (int ni = 0; ni < o->nn; ni++) {
      const long n = o->n[ni];
      c5_block_config cfg;
      block_shape_by_name(o->shape, n, &cfg);
      const long D = cfg.attn.dim;
      c5_params *p = NULL;
      c5_block *blk = NULL;
      c5_block_cache *cache = NULL;
      c5_layout lay = { 0 };
      io_t io = { 0 };
      long unit = 0;
      /* this rank alone until the agreement below */
      c5_status st = c5_block_layout_unit(&cfg, &unit);   /* the light window, 128 / 2 */
      if (st == C5_OK) st = c5_layout_compute(d, n, unit, &lay);
      if (st == C5_OK) st = io_create(be, n, D, &lay, &io);
      /* the memory watermark restarts: this n's block alone (a device's input and output buffers, held already,
         are the base left out) */
      c5_backend_mem m0 = { 0 };
      if (st == C5_OK) st = c5_backend_mem_stats(be, 1, &m0);
      if (st == C5_OK) st = c5_params_create(be, &p);
      if (st == C5_OK) st = c5_block_create(&cfg, p, "", &blk);
      if (st == C5_OK) st = c5_params_alloc(p);
      if (st == C5_OK) st = c5_block_cache_create(blk, 1, lay.n_local, &cache);
      unsigned long long st_rng = 99;
      if (st == C5_OK) st = params_fill(p, &st_rng);
      if (st == C5_OK) st = io_fill(be, n, D, &lay, st_rng, &io);
      CHECK(d, c5_dist_agree(d, st));
      const long nl = lay.n_local;
      const char *passes[2] = { "fwd", "fwdbwd" };
      double rate = 0;
      if (!gpu && (rate = blas_rate(nl, 5, T)) < 0)
        st = c5_error_raise(C5_ERR_MEM, "colt5-bench: out of memory for the BLAS reference GEMM [%ld, 256] x "
                            "[256, 1024]", nl);
      CHECK(d, c5_dist_agree(d, st));
      for (int pi = 0; pi < 2; pi++) {
        double t[256], gs = 0, gf = 0;
        int reps = o->reps < 256 ? o->reps : 256;
        /* this rank's first failed synchronization: agreed after the loop (an agreement inside it would count as
           one of the step's collectives); a broken device fails the next collective anyway */
        c5_status sst = C5_OK;
        for (int r = -o->warmup; r < reps; r++) {
          if (r == 0) c5_dist_stats_reset(d);
          c5k_cpu_gemm_stats = (c5k_gemm_stats){ .enabled = !gpu && r >= 0 };
          if (pi == 1) c5_params_zero_grad(p);   /* as a training step does; the allreduce sums fresh gradients */
          if (sst == C5_OK) sst = c5_backend_sync(be);   /* the device idle: the step starts at t0 */
          CHECK(d, c5_dist_barrier(d));
          double t0 = now();
          CHECK(d, c5_block_forward(blk, d, &lay, 1, io.xl, NULL, cache, io.y));
          if (pi == 1) {
            CHECK(d, c5_block_backward(blk, d, cache, io.xl, io.gl, io.dx));
            CHECK(d, c5_params_allreduce_grad(p, d));
          }
          if (sst == C5_OK) sst = c5_backend_sync(be);   /* the step's work done, not only queued */
          double dt = now() - t0;
          if (r >= 0) { t[r] = dt; gs += c5k_cpu_gemm_stats.seconds; gf += c5k_cpu_gemm_stats.flops; }
        }
        c5_dist_stats steps;
        c5_dist_stats_get(d, &steps);
        CHECK(d, c5_dist_agree(d, sst));
        /* a step takes as long as its slowest rank: one reduction after the timed loop, outside it */
        CHECK(d, c5_dist_reduce_double(d, t, reps, C5_REDUCE_MAX));
        c5k_cpu_gemm_stats.enabled = 0;
        double tsum = 0;
        for (int r = 0; r < reps; r++) tsum += t[r];
        double ms = 1e3 * median(t, reps);
        double rm = ref_ms(ref, nr, passes[pi], n, T);
        if (rank == 0 && !gpu) {
          printf("colt5 op=block pass=%-6s n=%-6ld P=%d threads=%d precision=%s median_ms=%9.2f tokens_per_s=%9.0f "
                 "gemm_share=%4.1f%% gemm_gflops=%6.1f blas_gflops=%6.1f", passes[pi], n, P, T, C5_REAL_NAME, ms,
                 n / ms * 1e3, 100 * gs / tsum, gf / gs / 1e9, rate);
          if (rm > 0) printf(" ref_ms=%9.2f ref_tokens_per_s=%8.0f speedup=%5.2f", rm, n / rm * 1e3, rm / ms);
          if (strcmp(o->shape, "small")) printf(" shape=%s", o->shape);
          printf("\n");
          fflush(stdout);
        } else if (rank == 0) {
          /* forward+backward counts 3 forwards (docs/flops.md); the whole sequence's work over the step's time */
          const double fl = block_shape_flops(&cfg, 1, n) * (pi == 1 ? 3 : 1), tf = fl / (ms * 1e-3) / 1e12;
          printf("colt5 op=block pass=%-6s n=%-6ld P=%d threads=%d precision=%s device=cuda matmul=%s shape=%s dim=%ld "
                 "median_ms=%9.3f tokens_per_s=%9.0f tflops=%7.2f tflops_per_rank=%7.2f gflop=%.2f\n", passes[pi], n,
                 P, T, C5_REAL_NAME, cli_device_products(dv), o->shape, D, ms, n / ms * 1e3, tf, tf / P, fl / 1e9);
          fflush(stdout);
        }
        if (pi == 1) comm_report(d, &steps, reps, tsum / reps, n);
      }
      mem_report(d, be, m0.pool_used, n);
      balance(d, "attn.q", c5_routed_attn_routing_q(c5_block_attn_cache(cache)), n);
      balance(d, "attn.kv", c5_routed_attn_routing_kv(c5_block_attn_cache(cache)), n);
      balance(d, "ff", c5_routed_ff_routing(c5_block_ff_cache(cache)), n);
      c5_block_cache_destroy(&cache);
      c5_block_destroy(&blk);
      c5_params_destroy(&p);
      io_free(be, &io);
    }
  }
  return 0;
}

static void usage(FILE *f)
{
  fprintf(f, "usage: colt5-bench cd|block [--n LIST] [--threads LIST] [--reps R] [--warmup W]\n"
             "                      [--reference DIR] [--python PY] [--script PATH]\n"
             "       colt5-bench block [--shape small|issue] [--device cpu|cuda] [--matmul fp32|tf32|bf16] ...\n"
             "       colt5-bench --help | --version\n"
             "  --n LIST          sequence lengths (default cd: 8192,131072,1048576; block: 4096,16384)\n"
             "  --threads LIST    OpenMP thread counts (default 1,2; --device cuda: one count, default 1)\n"
             "  --reps R          timed repetitions, median reported (default 7, at least 5)\n"
             "  --shape S         block: small (dim 256, 4+4 heads of 64; the default) or issue (dim 512, 8+8\n"
             "                    heads of 64: the CUDA issue's block, as c5-cuda-bench block times it)\n"
             "  --device D        block: cpu (default), or cuda: each rank on GPU local rank %% GPUs\n"
             "  --matmul M        --device cuda: fp32 (default), tf32 or bf16 inputs to the f32 products\n"
             "  --reference DIR   also time the PyTorch reference found in DIR (its package folders)\n"
             "  --script PATH     the reference's timing script (default " C5_BENCH_SCRIPT ")\n");
}

/* The options that decide what every rank does, the same on every rank (each rank parses its own command
   line: mpirun may give them different ones). */
static c5_status agree_options(c5_dist *d, const opts_t *o, int is_block)
{
  c5_status st = c5_dist_agree_long(d, "colt5-bench: the benchmark (0 cd, 1 block)", is_block);
  if (st == C5_OK) st = c5_dist_agree_long(d, "--n: the number of lengths", o->nn);
  for (int i = 0; st == C5_OK && i < o->nn; i++) st = c5_dist_agree_long(d, "--n", o->n[i]);
  if (st == C5_OK) st = c5_dist_agree_long(d, "--threads: the number of counts", o->nt);
  for (int i = 0; st == C5_OK && i < o->nt; i++) st = c5_dist_agree_long(d, "--threads", o->threads[i]);
  if (st == C5_OK) st = c5_dist_agree_long(d, "--reps", o->reps);
  if (st == C5_OK) st = c5_dist_agree_long(d, "--warmup", o->warmup);
  /* the strings by their index in the lists main checked them against */
  if (st == C5_OK) st = c5_dist_agree_long(d, "--device (0 cpu, 1 cuda)", !strcmp(o->device, "cuda"));
  if (st == C5_OK) st = c5_dist_agree_long(d, "--matmul (0 fp32, 1 tf32, 2 bf16)", !strcmp(o->matmul, "tf32") +
                                           2 * !strcmp(o->matmul, "bf16"));
  if (st == C5_OK) st = c5_dist_agree_long(d, "--shape (0 small, 1 issue)", !strcmp(o->shape, "issue"));
  return st;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  opts_t o = { .n = { 8192, 131072, 1048576 }, .nn = 3, .threads = { 1, 2 }, .nt = 2, .reps = 7, .warmup = 2,
               .python = "/usr/bin/python3", .script = C5_BENCH_SCRIPT, .device = "cpu", .matmul = "fp32",
               .shape = "small" };
  o.reference = getenv("C5_REFERENCE");
  if (getenv("C5_BENCH_SCRIPT") && *getenv("C5_BENCH_SCRIPT")) o.script = getenv("C5_BENCH_SCRIPT");
  if (o.reference && !*o.reference) o.reference = NULL;
  static const struct option lo[] = {
    { "n", required_argument, 0, 'n' }, { "threads", required_argument, 0, 't' },
    { "reps", required_argument, 0, 'r' }, { "warmup", required_argument, 0, 'w' },
    { "reference", required_argument, 0, 'R' }, { "python", required_argument, 0, 'p' },
    { "script", required_argument, 0, 's' }, { "help", no_argument, 0, 'h' },
    { "version", no_argument, 0, 'V' }, { "device", required_argument, 0, 'D' },
    { "matmul", required_argument, 0, 'M' }, { "shape", required_argument, 0, 'S' }, { 0 } };
  int c, nset = 0, help = 0, reps_set = 0, threads_set = 0, shape_set = 0;
  long tl[MAXL], v;
  c5_status st = C5_OK;
  opterr = 0;   /* getopt's own message would come before ours: one message, ours */
  while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
    switch (c) {
    case 'n':
      /* a token count whose buffers a size_t still counts in bytes */
      o.nn = cli_parse_list(optarg, 1, 1L << 40, o.n, MAXL);
      if (o.nn < 0) st = cli_bad_option(st, "--n", optarg, "a comma list of token counts from 1 to 2^40");
      nset = 1;
      break;
    case 't':
      o.nt = cli_parse_list(optarg, 1, 4096, tl, MAXL);
      if (o.nt < 0) st = cli_bad_option(st, "--threads", optarg, "a comma list of thread counts from 1 to 4096");
      for (int i = 0; i < o.nt; i++) o.threads[i] = (int)tl[i];
      threads_set = 1;
      break;
    case 'r':
      if (!cli_parse_int(optarg, 5, 256, &v) || strchr(optarg, ',')) st = cli_bad_option(st, "--reps", optarg, "an integer from 5 to 256");
      else o.reps = (int)v;
      reps_set = 1;
      break;
    case 'w':
      if (!cli_parse_int(optarg, 0, 1000, &v) || strchr(optarg, ',')) st = cli_bad_option(st, "--warmup", optarg, "an integer from 0 to 1000");
      else o.warmup = (int)v;
      break;
    case ':':
      if (st == C5_OK) st = c5_error_raise(C5_ERR_ARG, "option %s needs a value", argv[optind - 1]);
      break;
    case '?':
      if (st == C5_OK) st = c5_error_raise(C5_ERR_ARG, "unknown option %s", argv[optind - 1]);
      break;
    case 'R': o.reference = optarg; break;
    case 'p': o.python = optarg; break;
    case 's': o.script = optarg; break;
    case 'D': o.device = optarg; break;
    case 'M': o.matmul = optarg; break;
    case 'S': o.shape = optarg; shape_set = 1; break;
    case 'h': help = 1; break;
    case 'V': help = 2; break;   /* like --help: print, exit 0 */
    default: if (st == C5_OK) st = c5_error_raise(C5_ERR_ARG, "unknown option %s", argv[optind - 1]);
    }
  }
  int is_block = optind == argc - 1 && !strcmp(argv[optind], "block");
  if (st == C5_OK && !help && (optind != argc - 1 || (strcmp(argv[optind], "cd") && !is_block)))
    st = c5_error_raise(C5_ERR_ARG, "expected one benchmark, cd or block");
  c5_block_config shape_cfg;
  if (st == C5_OK) st = cli_check_device(o.device, o.matmul);
  if (st == C5_OK && block_shape_by_name(o.shape, 16, &shape_cfg))
    st = c5_error_raise(C5_ERR_ARG, "--shape %s: expected " BLOCK_SHAPE_NAMES, o.shape);
  const int cuda = !strcmp(o.device, "cuda");
  if (st == C5_OK && !help && !is_block && (cuda || shape_set))
    st = c5_error_raise(C5_ERR_ARG, "%s: only the block benchmark takes it (c5-cuda-bench times cd on a GPU)",
                        cuda ? "--device cuda" : "--shape");
  /* On a GPU the host's threads only issue the work: one count (a list would time the same thing again) */
  if (st == C5_OK && cuda && threads_set && o.nt > 1)
    st = c5_error_raise(C5_ERR_ARG, "--threads: --device cuda takes one thread count, not a list of %d (the GPU "
                        "computes; the host's threads only issue its work)", o.nt);
  if (cuda && !threads_set) { o.threads[0] = 1; o.nt = 1; }
  if (st == C5_OK && cuda && o.reference)
    st = c5_error_raise(C5_ERR_ARG, "--reference: not with --device cuda (the reference times its block on the CPU "
                        "here; bench/cuda_gpu_run.sh times it on the GPU)");
  c5_dist *d = NULL;
  if (c5_dist_create(MPI_COMM_WORLD, &d) != C5_OK) {   /* agreed inside: every rank says it */
    fprintf(stderr, "colt5-bench: %s\n", c5_last_error());
    MPI_Finalize();
    return 1;
  }
  if (is_block && !nset) { o.n[0] = 4096; o.n[1] = 16384; o.nn = 2; }
  for (int i = 0; is_block && st == C5_OK && i < o.nn; i++)   /* else the module says "num_heavy_tokens_q = 0" */
    if (o.n[i] < 16)
      st = c5_error_raise(C5_ERR_ARG, "block --n %ld: n must be >= 16 (the block routes n/16 heavy tokens for q, kv "
                          "and the feed-forward)", o.n[i]);
  if (is_block && !reps_set) o.reps = 5;   /* the block's default; a --reps given is kept */
  st = c5_dist_agree(d, st);
  int syntax = st != C5_OK;   /* a bad command line somewhere: the usage helps */
  if (st == C5_OK) st = c5_dist_agree_long(d, "colt5-bench: --help", help);
  if (st == C5_OK && !help) st = agree_options(d, &o, is_block);
  if (st != C5_OK || help) {
    if (c5_dist_rank(d) == 0) {
      if (st != C5_OK) fprintf(stderr, "colt5-bench: %s\n", c5_last_error());
      if (st == C5_OK && help == 2) printf("colt5-bench %s\n", colt5_build_info());
      else if (syntax || help) usage(st == C5_OK ? stdout : stderr);
    }
    c5_dist_destroy(&d);
    MPI_Finalize();
    return st == C5_OK ? 0 : 2;
  }
  /* --device: this rank's backend (cli.h: which GPU, and how ranks share one), agreed: a rank without its GPU
     ends the run on every rank */
  cli_device dv;
  st = c5_dist_agree(d, cli_device_open(o.device, o.matmul, &dv));
  if (st != C5_OK) {
    if (c5_dist_rank(d) == 0) fprintf(stderr, "colt5-bench: %s\n", c5_last_error());
    cli_device_close(&dv);
    c5_dist_destroy(&d);
    MPI_Finalize();
    return 1;
  }
  if (c5_dist_rank(d) == 0 && !cuda && c5_blas_warning()) fprintf(stderr, "colt5-bench: %s\n", c5_blas_warning());
  int rc = is_block ? bench_block(&o, d, &dv) : bench_cd(&o, d);
  c5_dist_destroy(&d);
  cli_device_close(&dv);   /* after the communicator: its NCCL ran on the device's stream */
  MPI_Finalize();
  return rc;
}
