/* cuda_bench.c - the CUDA backend, timed.

   Coordinate descent (c5-cuda-bench ROWSxN ...): forward and
   forward+backward of the setting (20 iterations, eps 0.03,
   eps_init 4, decay 0.7, k = n/16 * 9/8, s = 2 randn) for each ROWSxN
   given, through the public entries (c5_cd_forward/_backward: with their
   input checks, one device-to-host read each) and through the internal
   entries the router calls after its own checks (no host synchronization
   at all). Then the read-only streaming bandwidth and a device copy
   (bench/stream.cu), and the bound the issue sets for the 1 x 8M row:
   2 T n 4 bytes at the streaming bandwidth.

   The block (c5-cuda-bench block [--tf32 | --matmul fp32|tf32|bf16] [--budget S] [BxN ...]):
   ConditionalRoutedTransformerBlock of the setting (dim 512, 8 light
   and 8 heavy heads of 64, light window 128, ff mults 0.5 and 4, n/16 heavy
   tokens for q, kv and ff, one kv route, the router's defaults,
   straight-through), random parameters and random x and output gradient on
   the device; forward (with its cache, as in training) and
   forward+backward for each BxN (default 4x8192 1x32768 1x131072
   1x1048576): tokens/s, ms, model TFLOP/s by the count of docs/flops.md,
   and device memory (the stream-ordered pool's high watermarks, restarted
   for each shape, and the device's memory in use). A shape that fails is
   reported and the next one runs (out of memory is a result, not a
   failure of the run).

   Each time is the median over 7 batches of the mean of a batch of calls
   between two synchronizations (c5_backend_sync).

   usage: c5-cuda-bench ROWSxN ...    (one rank; the CUDA device 0)
          c5-cuda-bench block [--tf32 | --matmul fp32|tf32|bf16] [--budget SECONDS] [BxN ...]
   Exits 77 when no CUDA device is visible. */
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

/* How a measurement is taken: warm untimed calls (the first also makes the lazy buffers; the mean of the
   later ones sizes the batch), batches of about target_s seconds within [min_batch, max_batch] calls, 7 of
   them unless 7 would pass budget_s seconds (then fewer, at least 3, an odd count for a true median). */
typedef struct { int warm, min_batch, max_batch; double target_s, budget_s; } tplan;
typedef c5_status (*call_fn)(void *arg, int variant);

/* median over the batches of the per-call mean, in ms; nb and batch say how it was measured */
static c5_status timed(const c5_backend *be, const tplan *pl, call_fn f, void *arg, int variant, double *ms, int *nb,
                       int *batch)
{
  double est0 = 0;
  for (int w = 0; w < pl->warm; w++) {
    if (w == (pl->warm > 1)) {   /* time from the second warm-up on, when there are several */
      C5_CALL(c5_backend_sync(be));
      est0 = now();
    }
    C5_CALL(f(arg, variant));
  }
  C5_CALL(c5_backend_sync(be));
  double per = (now() - est0) / (pl->warm > 1 ? pl->warm - 1 : 1);
  int b = per > 0 ? (int)fmin(pl->target_s / per, 1e6) : pl->max_batch;
  if (b < pl->min_batch) b = pl->min_batch;
  if (b > pl->max_batch) b = pl->max_batch;
  int n = 7;
  if (per * b * n > pl->budget_s) {
    n = (int)(pl->budget_s / (per * b));
    n = n < 3 ? 3 : n > 7 ? 7 : n;
    n -= !(n & 1);
  }
  double t[7];
  for (int k = 0; k < n; k++) {
    C5_CALL(c5_backend_sync(be));
    double t0 = now();
    for (int i = 0; i < b; i++) C5_CALL(f(arg, variant));
    C5_CALL(c5_backend_sync(be));
    t[k] = (now() - t0) / b * 1e3;
  }
  qsort(t, n, sizeof *t, cmpd);
  *ms = t[n / 2];
  if (nb) *nb = n;
  if (batch) *batch = b;
  return C5_OK;
}

/* variant: bit 0 the backward too, bit 1 the public entries */
static c5_status cd_call(void *arg, int variant) { return run(arg, variant >> 1 & 1, variant & 1); }

/* the coordinate-descent rows argv[0..argc) */
static int cd_main(c5_backend *be, const c5_dist *d, int argc, char **argv)
{
  const tplan pl = { .warm = 3, .min_batch = 3, .max_batch = 200, .target_s = 0.02, .budget_s = INFINITY };
  printf("colt5 cuda bench: precision %s (scores), row state double\n", C5_REAL_NAME);
  double bw_read = c5_bench_bandwidth((size_t)4 << 30, 0, 20), bw_copy = c5_bench_bandwidth((size_t)4 << 30, 1, 20);
  double bw_l2 = c5_bench_bandwidth((size_t)32 << 20, 0, 50);
  printf("colt5 op=stream read_GBps=%.0f (4 GiB, read-only) copy_GBps=%.0f (4 GiB, read+write) read32MiB_GBps=%.0f\n",
         bw_read, bw_copy, bw_l2);
  for (int a = 0; a < argc; a++) {
    job j = { .be = be, .d = d, .cfg = { .n_iters = 20, .eps = 0.03, .eps_init = 4, .eps_decay = 0.7 } };
    if (sscanf(argv[a], "%ldx%ld", &j.rows, &j.n) != 2 || j.rows < 1 || j.n < 16) {
      fprintf(stderr, "c5-cuda-bench: %s: expected ROWSxN\n", argv[a]);
      return 1;
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
        c5_cd_cache_alloc(j.rows, 20, &c) != C5_OK || timed(be, &pl, cd_call, &j, 2, &f_pub, NULL, NULL) != C5_OK ||
        timed(be, &pl, cd_call, &j, 3, &fb_pub, NULL, NULL) != C5_OK || timed(be, &pl, cd_call, &j, 0, &f, NULL, NULL) != C5_OK || timed(be, &pl, cd_call, &j, 1, &fb, NULL, NULL) != C5_OK) {
      fprintf(stderr, "c5-cuda-bench: %s: %s\n", argv[a], c5_last_error());
      return 1;
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
  return 0;
}

/* ---- the block ---- */

/* The ConditionalRoutedTransformerBlock for sequences of n tokens: n/16 heavy tokens each. */
static c5_block_config block_config(long n)
{
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;   /* 8 + 8 heads of 64, window 128, one kv route */
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;       /* mults 0.5 and 4 */
  a.dim = f.dim = 512;
  a.num_heavy_tokens_q = a.num_heavy_tokens_kv = f.num_heavy_tokens = n / 16;
  a.router.straight_through = f.router.straight_through = 1;
  return (c5_block_config){ .attn = a, .ff = f };
}

/* Model FLOPs of one forward (docs/flops.md): 2 per multiply-add of the block's matrix products, only the
   work a token really has (the local attention's query-key pairs inside the sequence, the routed tokens). */
static double block_flops(const c5_block_config *cfg, long batch, long n)
{
  const c5_routed_attn_config *a = &cfg->attn;
  const c5_routed_ff_config *f = &cfg->ff;
  const double d = a->dim, Dl = (double)a->light_heads * a->light_dim_head;
  const double Dh = (double)a->heavy_heads * a->heavy_dim_head, r = a->num_routed_kv;
  const double hl = (int)(a->dim * f->light_ff_mult), hh = (int)(a->dim * f->heavy_ff_mult);
  const long w = a->light_window_size / 2;   /* LocalMHA's window; each query sees its own and one either side */
  double pairs = 0;
  for (long s = 0; s < n; s += w) {
    double len = fmin(w, n - s), prev = s > 0 ? w : 0, next = fmin(w, fmax(0, n - s - w));
    pairs += len * (prev + len + next);
  }
  const long nq = a->num_heavy_tokens_q < n ? a->num_heavy_tokens_q : n;
  const long nk = a->num_heavy_tokens_kv < n ? a->num_heavy_tokens_kv : n;
  const long nf = f->num_heavy_tokens < n ? f->num_heavy_tokens : n;
  /* a router scores every token against its routing tokens only when it has something to choose */
  const double routes = (a->num_heavy_tokens_q < n) + (a->num_heavy_tokens_kv < n) * r + (f->num_heavy_tokens < n);
  double fl = 2.0 * n * d * 3 * Dl + 2.0 * n * Dl * d     /* light to_qkv, to_out */
            + 4.0 * pairs * Dl                             /* light q k^T and p v */
            + 4.0 * n * d * hl                             /* light ff */
            + 2.0 * n * d * routes                         /* router logits */
            + 2.0 * nq * d * Dh + 2.0 * r * nk * d * 2 * Dh + 2.0 * nq * Dh * d   /* heavy to_q, to_kv, to_out */
            + 4.0 * nq * (nk + 1.0) * Dh                   /* heavy q k^T and p v, the null key included */
            + 4.0 * nf * d * hh;                           /* heavy ff */
  return fl * batch;
}

typedef struct {
  c5_backend *be;
  const c5_dist *d;
  c5_params *p;
  c5_block *b;
  c5_block_cache *c;
  c5_layout lay;
  long batch, n;
  c5_real *x, *g, *out, *dx;
} bjob;

/* variant 1: the backward too, gradients zeroed first as a training step would */
static c5_status block_call(void *arg, int variant)
{
  bjob *j = arg;
  C5_CALL(c5_block_forward(j->b, j->d, &j->lay, j->batch, j->x, NULL, j->c, j->out));
  if (variant) {
    c5_params_zero_grad(j->p);
    C5_CALL(c5_block_backward(j->b, j->d, j->c, j->x, j->g, j->dx));
  }
  return C5_OK;
}

/* count values uniform on [-sqrt 3, sqrt 3] (mean 0, variance 1: the scale of randn, at a fraction of its cost
   on the host for a billion values) into device memory dst, through a host buffer of chunk values */
static c5_status fill_random(const c5_backend *be, c5_real *dst, long count, uint64_t seed)
{
  const long chunk = 1L << 22;
  c5_real *h = malloc((size_t)(count < chunk ? count : chunk) * sizeof *h);
  C5_CHECK(h != NULL, C5_ERR_MEM, "c5-cuda-bench: a host buffer of %ld values", chunk);
  uint64_t st = seed * 0x9E3779B97F4A7C15ULL + 1;
  c5_status s = C5_OK;
  for (long at = 0; at < count && s == C5_OK; at += chunk) {
    const long m = count - at < chunk ? count - at : chunk;
    for (long i = 0; i < m; i++) {   /* a 64-bit LCG's top 53 bits */
      st = st * 6364136223846793005ULL + 1442695040888963407ULL;
      h[i] = (c5_real)(1.7320508075688772 * (2 * ((st >> 11) + 0.5) / 9007199254740992.0 - 1));
    }
    s = c5_backend_memcpy(be, dst + at, h, (size_t)m * sizeof *h);
  }
  free(h);
  return s;
}

static double gib(size_t b) { return b / 1073741824.0; }

/* One shape: build on the device, time, report; everything freed whatever happens. */
static c5_status block_shape(c5_backend *be, const c5_dist *d, const c5_real *pval, long np, long batch, long n,
                             c5_matmul mm, double budget_s, char *err, size_t errlen)
{
  const c5_block_config cfg = block_config(n);
  const long N = batch * n * cfg.attn.dim;
  const tplan pl = { .warm = 2, .min_batch = 1, .max_batch = 10, .target_s = 0.1, .budget_s = budget_s };
  bjob j = { .be = be, .d = d, .batch = batch, .n = n };
  c5_backend_mem m0, mf, mfb;
  double f_ms = 0, fb_ms = 0;
  int f_nb = 0, f_b = 0, fb_nb = 0, fb_b = 0;
  long unit;
  c5_status st = C5_OK;
  C5_CALL(c5_backend_sync(be));
  C5_CALL(c5_backend_mem_stats(be, 1, &m0));   /* the watermarks restart from what is held now */
  C5_CALL_GOTO(c5_params_create(be, &j.p), st, done);
  C5_CALL_GOTO(c5_block_create(&cfg, j.p, "", &j.b), st, done);
  C5_CALL_GOTO(c5_params_alloc(j.p), st, done);
  C5_CHECK_GOTO(c5_params_total(j.p) == np, st, done, C5_ERR_INTERNAL, "block of %ld parameters, expected %ld",
                c5_params_total(j.p), np);
  C5_CALL_GOTO(c5_backend_memcpy(be, c5_params_value(j.p, 0), pval, (size_t)np * sizeof *pval), st, done);
  C5_CALL_GOTO(c5_block_layout_unit(&cfg, &unit), st, done);
  C5_CALL_GOTO(c5_layout_compute(d, n, unit, &j.lay), st, done);
  C5_CALL_GOTO(c5_block_cache_create(j.b, batch, n, &j.c), st, done);
  C5_CALL_GOTO(c5_backend_alloc(be, (size_t)N * sizeof(c5_real), (void **)&j.x), st, done);
  C5_CALL_GOTO(c5_backend_alloc(be, (size_t)N * sizeof(c5_real), (void **)&j.g), st, done);
  C5_CALL_GOTO(c5_backend_alloc(be, (size_t)N * sizeof(c5_real), (void **)&j.out), st, done);
  C5_CALL_GOTO(c5_backend_alloc(be, (size_t)N * sizeof(c5_real), (void **)&j.dx), st, done);
  C5_CALL_GOTO(fill_random(be, j.x, N, 1 + (uint64_t)n), st, done);
  C5_CALL_GOTO(fill_random(be, j.g, N, 2 + (uint64_t)n), st, done);
  C5_CALL_GOTO(timed(be, &pl, block_call, &j, 0, &f_ms, &f_nb, &f_b), st, done);
  C5_CALL_GOTO(c5_backend_mem_stats(be, 0, &mf), st, done);
  C5_CALL_GOTO(timed(be, &pl, block_call, &j, 1, &fb_ms, &fb_nb, &fb_b), st, done);
  C5_CALL_GOTO(c5_backend_mem_stats(be, 0, &mfb), st, done);
  {
    const double fl = block_flops(&cfg, batch, n), tok = (double)batch * n;
    printf("colt5 op=block batch=%ld n=%ld dim=%d precision=%s matmul=%s fwd_ms=%.3f fwdbwd_ms=%.3f "
           "fwd_tokens_per_s=%.4g fwdbwd_tokens_per_s=%.4g fwd_tflops=%.2f fwdbwd_tflops=%.2f fwd_gflop=%.2f "
           "pool_used_high_fwd_GiB=%.3f pool_used_high_GiB=%.3f pool_reserved_high_GiB=%.3f "
           "dev_used_before_GiB=%.3f dev_used_after_GiB=%.3f dev_total_GiB=%.1f batches=%dx%d,%dx%d\n",
           batch, n, cfg.attn.dim, C5_REAL_NAME, c5_matmul_name(mm), f_ms, fb_ms, tok / (f_ms * 1e-3), tok / (fb_ms * 1e-3),
           fl / (f_ms * 1e-3) / 1e12, 3 * fl / (fb_ms * 1e-3) / 1e12, fl / 1e9, gib(mf.pool_used_high),
           gib(mfb.pool_used_high), gib(mfb.pool_reserved_high), gib(m0.dev_used), gib(mfb.dev_used),
           gib(mfb.dev_total), f_nb, f_b, fb_nb, fb_b);
  }
done:
  if (st != C5_OK) snprintf(err, errlen, "%s", c5_last_error());   /* before a failing cleanup overwrites it */
  c5_backend_free(be, j.x); c5_backend_free(be, j.g); c5_backend_free(be, j.out); c5_backend_free(be, j.dx);
  c5_block_cache_destroy(&j.c);
  c5_block_destroy(&j.b);
  c5_params_destroy(&j.p);
  if (st != C5_OK) {   /* the peak as far as it went: how much the shape had asked for when it failed */
    c5_backend_mem mx;
    if (c5_backend_mem_stats(be, 0, &mx) == C5_OK)
      fprintf(stderr, "c5-cuda-bench: block %ldx%ld: pool_used_high_GiB=%.3f before failing\n", batch, n,
              gib(mx.pool_used_high));
  }
  return st;
}

/* argv[0..argc): [--tf32 | --matmul fp32|tf32|bf16] [--budget SECONDS] [BxN ...] */
static int block_main(c5_backend *be, const c5_dist *d, int argc, char **argv)
{
  static char *defaults[] = { "4x8192", "1x32768", "1x131072", "1x1048576" };
  c5_matmul mm = C5_MATMUL_FP32;
  int a = 0, rc = 0;
  double budget_s = 15;
  for (; a < argc && !strncmp(argv[a], "--", 2); a++) {
    if (!strcmp(argv[a], "--tf32")) mm = C5_MATMUL_TF32;
    else if (!strcmp(argv[a], "--matmul") && a + 1 < argc &&
             (!strcmp(argv[a + 1], "fp32") || !strcmp(argv[a + 1], "tf32") || !strcmp(argv[a + 1], "bf16"))) {
      a++;
      mm = argv[a][0] == 'f' ? C5_MATMUL_FP32 : argv[a][0] == 't' ? C5_MATMUL_TF32 : C5_MATMUL_BF16;
    }
    else if (!strcmp(argv[a], "--budget") && a + 1 < argc && atof(argv[a + 1]) > 0) budget_s = atof(argv[++a]);
    else {
      fprintf(stderr, "c5-cuda-bench block: option %s: expected --tf32, --matmul fp32|tf32|bf16 or --budget SECONDS (> 0)\n", argv[a]);
      return 2;
    }
  }
  char **shapes = a < argc ? argv + a : defaults;
  const int nshapes = a < argc ? argc - a : (int)(sizeof defaults / sizeof *defaults);
  for (int i = 0; i < nshapes; i++) {
    long b, n;
    if (sscanf(shapes[i], "%ldx%ld", &b, &n) != 2 || b < 1 || n < 16) {
      fprintf(stderr, "c5-cuda-bench block: %s: expected BxN (batch >= 1, n >= 16)\n", shapes[i]);
      return 2;
    }
  }
  if (c5_backend_set_matmul(be, mm) != C5_OK) {
    fprintf(stderr, "c5-cuda-bench block: %s\n", c5_last_error());
    return 1;
  }
  /* parameters drawn once on the CPU (c5_params_init: the same values whatever the device has) and uploaded
     for each shape; they do not depend on n */
  c5_params *hp = NULL;
  c5_block *hb = NULL;
  const c5_block_config cfg0 = block_config(1024);
  if (c5_params_create(c5_backend_cpu(), &hp) != C5_OK || c5_block_create(&cfg0, hp, "", &hb) != C5_OK ||
      c5_params_alloc(hp) != C5_OK || c5_params_init(hp, 1234) != C5_OK) {
    fprintf(stderr, "c5-cuda-bench block: parameters: %s\n", c5_last_error());
    c5_block_destroy(&hb);
    c5_params_destroy(&hp);
    return 1;
  }
  printf("colt5 cuda bench: block dim 512, 8+8 heads of 64, window 128, ff 0.5/4, n/16 heavy tokens; precision %s, "
         "matmul %s; %ld parameters\n", C5_REAL_NAME, sizeof(c5_real) == 8 ? "fp64" : c5_matmul_name(mm),
         c5_params_total(hp));
  for (int i = 0; i < nshapes; i++) {
    long b, n;
    sscanf(shapes[i], "%ldx%ld", &b, &n);
    char err[2048] = "";
    c5_status st = block_shape(be, d, c5_params_value(hp, 0), c5_params_total(hp), b, n, mm, budget_s, err,
                               sizeof err);
    if (st != C5_OK) {
      const int oom = st == C5_ERR_MEM || strstr(err, "out of memory") != NULL;
      for (char *c = err; *c; c++)   /* one line per result */
        if (*c == '\n') *c = ' ';
      printf("colt5 op=block batch=%ld n=%ld precision=%s matmul=%s error=%s: %s\n", b, n, C5_REAL_NAME,
             c5_matmul_name(mm),
             oom ? "out_of_memory" : "failed", err);
      if (!oom) rc = 1;
    }
  }
  c5_block_destroy(&hb);
  c5_params_destroy(&hp);
  return rc;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  setvbuf(stdout, NULL, _IOLBF, 0);   /* each result line out at once: a run cut by a timeout keeps its lines */
  c5_dist *d = NULL;
  c5_backend *be = NULL;
  int rc = 1;
  if (c5_backend_device_count(C5_BACKEND_CUDA) == 0) {
    fprintf(stderr, "c5-cuda-bench: no CUDA device visible (the runtime found none): nothing to time, skipped\n");
    rc = 77;
    goto out;
  }
  if (c5_dist_create(MPI_COMM_WORLD, &d) != C5_OK || c5_backend_create(C5_BACKEND_CUDA, 0, &be) != C5_OK) {
    fprintf(stderr, "c5-cuda-bench: %s\n", c5_last_error());
    goto out;
  }
  rc = argc > 1 && !strcmp(argv[1], "block") ? block_main(be, d, argc - 2, argv + 2) : cd_main(be, d, argc - 1, argv + 1);
out:
  c5_backend_destroy(&be);
  c5_dist_destroy(&d);
  MPI_Finalize();
  return rc;
}
