/* cuda_bench.c - the CUDA backend, timed.

   Coordinate descent (c5-cuda-bench ROWSxN ...): forward and
   forward+backward of the issue's setting (20 iterations, eps 0.03,
   eps_init 4, decay 0.7, k = n/16 * 9/8, s = 2 randn) for each ROWSxN
   given, through the public entries (c5_cd_forward/_backward: with their
   input checks, one device-to-host read each) and through the internal
   entries the router calls after its own checks (no host synchronization
   at all). Then the read-only streaming bandwidth and a device copy
   (bench/stream.cu), and the bound the issue sets for the 1 x 8M row:
   2 T n 4 bytes at the streaming bandwidth.

   The block (c5-cuda-bench block [--tf32 | --matmul fp32|tf32|bf16] [--budget S] [BxN ...]):
   ConditionalRoutedTransformerBlock of the issue's setting (dim 512, 8 light
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

   The parts (c5-cuda-bench parts [--tf32 | --matmul fp32|tf32|bf16] [--budget S] [BxN ...]): where
   the block's time goes. For each BxN (default 1x32768 1x131072 1x1048576)
   the block, then each of its modules built alone on the device with the
   block's configuration (block_shape_issue(n)) and parameter values, on random
   inputs, timed as the block is: the routed attention, the routed
   feed-forward, one router (coordinate descent and top-k, k = n/16; the block
   runs three), the heavy attention on nq = nk = n/16 tokens and the light
   local attention on all n. One line each: forward and forward+backward ms,
   the part's share of the block's forward+backward, the pool's high
   watermarks. A part that fails (out of memory) is reported and the next
   one runs.

   Each time is the median over 7 batches of the mean of a batch of calls
   between two synchronizations (c5_backend_sync).

   usage: c5-cuda-bench ROWSxN ...    (one rank; the CUDA device 0)
          c5-cuda-bench block [--tf32 | --matmul fp32|tf32|bf16] [--budget SECONDS] [BxN ...]
          c5-cuda-bench parts [--tf32 | --matmul fp32|tf32|bf16] [--budget SECONDS] [BxN ...]
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
#include "../lib/attn_heavy.h"
#include "../lib/attn_local.h"
#include "block_shape.h"   /* the issue's block and its FLOP count, shared with colt5-bench */

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

/* What one timed run holds, whichever module it builds: the module and its cache, its parameters (the
   block's values, copied by name from the host's hp), device buffers. Zeroed, then filled by a part's
   build; job_free releases whatever is set. */
typedef struct {
  c5_backend *be;
  const c5_dist *d;
  const c5_params *hp;            /* the block's parameters, on the host */
  c5_block_config cfg;            /* block_shape_issue(n) */
  long batch, n, nq, nk;          /* nq, nk: the heavy attention's queries and keys per batch row */
  c5_layout lay;
  c5_params *p;
  c5_block *b;
  c5_block_cache *bc;
  c5_routed_attn *ra;
  c5_routed_attn_cache *rac;
  c5_routed_ff *rf;
  c5_routed_ff_cache *rfc;
  c5_router *r;
  c5_router_cache *rc;
  c5_attn_heavy ah;
  c5_attn_heavy_cache *ahc;
  c5_attn_local al;
  c5_attn_local_cache *alc;
  c5_real *x, *g, *out, *dx;      /* input, output gradient, output, input gradient */
  c5_real *ctx, *ks, *dctx, *dks; /* heavy attention: keys/values and their scores, and their gradients */
  c5_real *ds, *rt, *drt;         /* router: dscore, routing token and its gradient */
} bjob;

static void job_free(bjob *j)
{
  c5_real **bufs[] = { &j->x, &j->g, &j->out, &j->dx, &j->ctx, &j->ks, &j->dctx, &j->dks, &j->ds, &j->rt, &j->drt };
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
    c5_backend_free(j->be, *bufs[i]);
    *bufs[i] = NULL;
  }
  c5_block_cache_destroy(&j->bc);
  c5_block_destroy(&j->b);
  c5_routed_attn_cache_destroy(&j->rac);
  c5_routed_attn_destroy(&j->ra);
  c5_routed_ff_cache_destroy(&j->rfc);
  c5_routed_ff_destroy(&j->rf);
  c5_router_cache_destroy(&j->rc);
  c5_router_destroy(&j->r);
  c5_attn_heavy_cache_destroy(&j->ahc);
  c5_attn_local_cache_destroy(&j->alc);
  c5_params_destroy(&j->p);
}

/* count values on the device: uniform random from seed, or zeros for seed 0 */
static c5_status dev_buf(const bjob *j, c5_real **p, long count, uint64_t seed)
{
  C5_CALL(c5_backend_calloc(j->be, (size_t)count, sizeof **p, (void **)p));
  if (seed) C5_CALL(fill_random(j->be, *p, count, seed));
  return C5_OK;
}

/* The parameters a module registered in j->p, allocated and given the block's values: the module was
   registered under the block's prefix, so each has the name it has in the block. */
static c5_status params_upload(bjob *j)
{
  C5_CALL(c5_params_alloc(j->p));
  for (long i = 0; i < c5_params_count(j->p); i++) {
    long k;
    C5_CALL(c5_params_find(j->hp, c5_params_name(j->p, i), &k));
    const long m = c5_params_numel(j->p, i);
    C5_CHECK(c5_params_numel(j->hp, k) == m, C5_ERR_INTERNAL, "parameter %s: %ld values, %ld in the block",
             c5_params_name(j->p, i), m, c5_params_numel(j->hp, k));
    C5_CALL(c5_backend_memcpy(j->be, c5_params_value(j->p, i), c5_params_value(j->hp, k), (size_t)m * sizeof(c5_real)));
  }
  return C5_OK;
}

/* x and g random, out and dx zeroed: [batch, rows, dim]; the seeds the block has always had */
static c5_status io_build(bjob *j, long rows)
{
  const long N = j->batch * rows * j->cfg.attn.dim;
  C5_CALL(dev_buf(j, &j->x, N, 1 + (uint64_t)j->n));
  C5_CALL(dev_buf(j, &j->g, N, 2 + (uint64_t)j->n));
  C5_CALL(dev_buf(j, &j->out, N, 0));
  C5_CALL(dev_buf(j, &j->dx, N, 0));
  return C5_OK;
}

/* Each part: build (on j->be, from j->cfg and j->hp) and call (variant 0 the forward, 1 the backward too,
   parameter gradients zeroed first as a training step would). */
static c5_status block_build(bjob *j)
{
  C5_CALL(c5_params_create(j->be, &j->p));
  C5_CALL(c5_block_create(&j->cfg, j->p, "", &j->b));
  C5_CALL(params_upload(j));
  C5_CALL(c5_block_cache_create(j->b, j->batch, j->n, &j->bc));
  return io_build(j, j->n);
}

static c5_status block_call(void *arg, int variant)
{
  bjob *j = arg;
  C5_CALL(c5_block_forward(j->b, j->d, &j->lay, j->batch, j->x, NULL, j->bc, j->out));
  if (variant) {
    c5_params_zero_grad(j->p);
    C5_CALL(c5_block_backward(j->b, j->d, j->bc, j->x, j->g, j->dx));
  }
  return C5_OK;
}

static c5_status attn_build(bjob *j)
{
  C5_CALL(c5_params_create(j->be, &j->p));
  C5_CALL(c5_routed_attn_create(&j->cfg.attn, j->p, "conditional_attn", &j->ra));
  C5_CALL(params_upload(j));
  C5_CALL(c5_routed_attn_cache_create(j->ra, j->batch, j->n, &j->rac));
  return io_build(j, j->n);
}

static c5_status attn_call(void *arg, int variant)
{
  bjob *j = arg;
  C5_CALL(c5_routed_attn_forward(j->ra, j->d, &j->lay, j->batch, j->x, NULL, j->rac, j->out));
  if (variant) {
    c5_params_zero_grad(j->p);
    C5_CALL(c5_routed_attn_backward(j->ra, j->d, j->rac, j->x, j->g, j->dx));
  }
  return C5_OK;
}

static c5_status ff_build(bjob *j)
{
  C5_CALL(c5_params_create(j->be, &j->p));
  C5_CALL(c5_routed_ff_create(&j->cfg.ff, j->p, "conditional_ff", &j->rf));
  C5_CALL(params_upload(j));
  C5_CALL(c5_routed_ff_cache_create(j->rf, j->batch, j->n, &j->rfc));
  return io_build(j, j->n);
}

static c5_status ff_call(void *arg, int variant)
{
  bjob *j = arg;
  C5_CALL(c5_routed_ff_forward(j->rf, j->d, &j->lay, j->batch, j->x, NULL, j->rfc, j->out));
  if (variant) {
    c5_params_zero_grad(j->p);
    C5_CALL(c5_routed_ff_backward(j->rf, j->d, j->rfc, j->x, j->g, j->dx));
  }
  return C5_OK;
}

/* The feed-forward's router: the block's q and kv routers are the same router (the block's router
   options, one routing token, k = n/16 of n tokens), so the block runs this three times. Its backward
   takes a dscore per routed entry: batch n values bound them. */
static c5_status router_build(bjob *j)
{
  const c5_routed_ff_config *f = &j->cfg.ff;
  long k;
  C5_CALL(c5_router_create(j->be, &f->router, f->dim, &j->r));
  C5_CALL(c5_router_cache_create(j->r, j->batch, j->n, &j->rc));
  C5_CALL(c5_params_find(j->hp, "conditional_ff.router.routing_token", &k));
  const long m = c5_params_numel(j->hp, k);
  C5_CALL(dev_buf(j, &j->rt, m, 0));
  C5_CALL(c5_backend_memcpy(j->be, j->rt, c5_params_value(j->hp, k), (size_t)m * sizeof(c5_real)));
  C5_CALL(dev_buf(j, &j->drt, m, 0));
  C5_CALL(dev_buf(j, &j->x, j->batch * j->n * f->dim, 1 + (uint64_t)j->n));
  C5_CALL(dev_buf(j, &j->dx, j->batch * j->n * f->dim, 0));
  C5_CALL(dev_buf(j, &j->ds, j->batch * j->n, 3 + (uint64_t)j->n));
  return C5_OK;
}

static c5_status router_call(void *arg, int variant)
{
  bjob *j = arg;
  C5_CALL(c5_router_forward(j->r, j->d, &j->lay, j->rt, j->batch, j->x, NULL, j->cfg.ff.num_heavy_tokens, 0, 0, j->rc));
  if (variant) C5_CALL(c5_router_backward(j->r, j->d, j->rc, j->rt, j->x, j->ds, j->dx, j->drt));
  return C5_OK;
}

/* The routed attention's heavy Attention on random routed tokens, as that module calls it: nq queries and
   nk keys per route (its routers' k, or n when nothing is routed), kv scores, no mask (the block runs
   unmasked), no query scores or rotary positions (block_shape_issue has neither). */
static c5_status heavy_build(bjob *j)
{
  const c5_routed_attn_config *a = &j->cfg.attn;
  const long D = a->dim, R = a->num_routed_kv;
  C5_CHECK(!a->multiply_queries_by_score && !a->rotary_emb, C5_ERR_NOTIMPL,
           "heavy_attn part: query scores and rotary positions are not built here");
  j->nq = a->num_heavy_tokens_q < j->n ? a->num_heavy_tokens_q : j->n;
  j->nk = a->num_heavy_tokens_kv < j->n ? a->num_heavy_tokens_kv : j->n;
  C5_CALL(c5_params_create(j->be, &j->p));
  C5_CALL(c5_attn_heavy_init(&j->ah, j->p, "conditional_attn.heavy_attn", a->dim, a->heavy_heads, a->heavy_dim_head,
                             a->num_routed_kv, a->multiply_keys_by_score));
  C5_CALL(params_upload(j));
  C5_CALL(c5_attn_heavy_cache_create(&j->ah, j->batch, j->nq, j->nk, &j->ahc));
  C5_CALL(io_build(j, j->nq));
  C5_CALL(dev_buf(j, &j->ctx, j->batch * R * j->nk * D, 3 + (uint64_t)j->n));
  C5_CALL(dev_buf(j, &j->ks, j->batch * R * j->nk, 4 + (uint64_t)j->n));
  C5_CALL(dev_buf(j, &j->dctx, j->batch * R * j->nk * D, 0));
  C5_CALL(dev_buf(j, &j->dks, j->batch * R * j->nk, 0));
  return C5_OK;
}

static c5_status heavy_call(void *arg, int variant)
{
  bjob *j = arg;
  C5_CALL(c5_attn_heavy_forward(&j->ah, j->p, j->batch, j->nq, j->nk, j->x, j->ctx, NULL, j->ks, NULL, NULL, NULL,
                                j->ahc, j->out));
  if (variant) {
    c5_params_zero_grad(j->p);
    C5_CALL(c5_attn_heavy_backward(&j->ah, j->p, j->ahc, j->g, j->dx, j->dctx, j->dks, NULL));
  }
  return C5_OK;
}

/* The routed attention's light LocalMHA, built as that module builds it, over the whole sequence (one rank:
   no halo) */
static c5_status local_build(bjob *j)
{
  const c5_routed_attn_config *a = &j->cfg.attn;
  C5_CALL(c5_params_create(j->be, &j->p));
  C5_CALL(c5_attn_local_init(&j->al, j->p, "conditional_attn.light_attn", a->dim, a->light_heads, a->light_dim_head,
                             a->light_window_size / 2, 1, 1, 0, 1));
  C5_CALL(c5_attn_local_set_rotary(&j->al, a->light_rotary_emb));
  C5_CALL(params_upload(j));
  C5_CALL(c5_attn_local_cache_create(&j->al, j->batch, j->n, &j->alc));
  return io_build(j, j->n);
}

static c5_status local_call(void *arg, int variant)
{
  bjob *j = arg;
  C5_CALL(c5_attn_local_forward(&j->al, j->p, j->batch, j->n, 0, j->x, NULL, j->alc, NULL, NULL, j->out));
  if (variant) {
    c5_params_zero_grad(j->p);
    C5_CALL(c5_attn_local_backward(&j->al, j->p, j->alc, j->x, j->g, NULL, j->dx));
  }
  return C5_OK;
}

typedef struct {
  const char *name;
  c5_status (*build)(bjob *j);
  call_fn call;
  int per_block;   /* how many times one block forward runs it */
} part_def;

static const part_def part_defs[] = {
  { "block", block_build, block_call, 1 },
  { "routed_attn", attn_build, attn_call, 1 },
  { "routed_ff", ff_build, ff_call, 1 },
  { "router", router_build, router_call, 3 },
  { "heavy_attn", heavy_build, heavy_call, 1 },
  { "local_attn", local_build, local_call, 1 },
};

typedef struct {
  double f_ms, fb_ms;
  int f_nb, f_b, fb_nb, fb_b;      /* batches x calls of each */
  c5_backend_mem m0, mf, mfb;      /* before building; after the forwards; after the backwards too */
} tres;

/* One part at one shape: built on the device, its forward and forward+backward timed, everything freed
   whatever happens; on failure err holds the message. */
static c5_status part_shape(bjob *j, const part_def *pd, double budget_s, tres *r, char *err, size_t errlen)
{
  const tplan pl = { .warm = 2, .min_batch = 1, .max_batch = 10, .target_s = 0.1, .budget_s = budget_s };
  long unit;
  c5_status st = C5_OK;
  C5_CALL_GOTO(c5_backend_sync(j->be), st, done);
  C5_CALL_GOTO(c5_backend_mem_stats(j->be, 1, &r->m0), st, done);   /* the watermarks restart from what is held now */
  C5_CALL_GOTO(c5_block_layout_unit(&j->cfg, &unit), st, done);     /* every part on the block's one layout */
  C5_CALL_GOTO(c5_layout_compute(j->d, j->n, unit, &j->lay), st, done);
  C5_CALL_GOTO(pd->build(j), st, done);
  C5_CALL_GOTO(timed(j->be, &pl, pd->call, j, 0, &r->f_ms, &r->f_nb, &r->f_b), st, done);
  C5_CALL_GOTO(c5_backend_mem_stats(j->be, 0, &r->mf), st, done);
  C5_CALL_GOTO(timed(j->be, &pl, pd->call, j, 1, &r->fb_ms, &r->fb_nb, &r->fb_b), st, done);
  C5_CALL_GOTO(c5_backend_mem_stats(j->be, 0, &r->mfb), st, done);
done:
  if (st != C5_OK) snprintf(err, errlen, "%s", c5_last_error());   /* before a failing cleanup overwrites it */
  job_free(j);
  if (st != C5_OK) {   /* the peak as far as it went: how much the shape had asked for when it failed */
    c5_backend_mem mx;
    if (c5_backend_mem_stats(j->be, 0, &mx) == C5_OK)
      fprintf(stderr, "c5-cuda-bench: %s %ldx%ld: pool_used_high_GiB=%.3f before failing\n", pd->name, j->batch, j->n,
              gib(mx.pool_used_high));
  }
  return st;
}

static void block_report(const c5_block_config *cfg, long batch, long n, c5_matmul mm, const tres *r)
{
  const double fl = block_shape_flops(cfg, batch, n), tok = (double)batch * n;
  printf("colt5 op=block batch=%ld n=%ld dim=%d precision=%s matmul=%s fwd_ms=%.3f fwdbwd_ms=%.3f "
         "fwd_tokens_per_s=%.4g fwdbwd_tokens_per_s=%.4g fwd_tflops=%.2f fwdbwd_tflops=%.2f fwd_gflop=%.2f "
         "pool_used_high_fwd_GiB=%.3f pool_used_high_GiB=%.3f pool_reserved_high_GiB=%.3f "
         "dev_used_before_GiB=%.3f dev_used_after_GiB=%.3f dev_total_GiB=%.1f batches=%dx%d,%dx%d\n",
         batch, n, cfg->attn.dim, C5_REAL_NAME, c5_matmul_name(mm), r->f_ms, r->fb_ms, tok / (r->f_ms * 1e-3),
         tok / (r->fb_ms * 1e-3), fl / (r->f_ms * 1e-3) / 1e12, 3 * fl / (r->fb_ms * 1e-3) / 1e12, fl / 1e9,
         gib(r->mf.pool_used_high), gib(r->mfb.pool_used_high), gib(r->mfb.pool_reserved_high), gib(r->m0.dev_used),
         gib(r->mfb.dev_used), gib(r->mfb.dev_total), r->f_nb, r->f_b, r->fb_nb, r->fb_b);
}

/* block_fb_ms: the whole block's forward+backward at this shape in this run, 0 when unknown */
static void part_report(const part_def *pd, long batch, long n, c5_matmul mm, const tres *r, double block_fb_ms)
{
  char share[64] = "";
  if (block_fb_ms > 0)
    snprintf(share, sizeof share, " fwdbwd_share_of_block=%.3f", pd->per_block * r->fb_ms / block_fb_ms);
  printf("colt5 op=part part=%s batch=%ld n=%ld precision=%s matmul=%s fwd_ms=%.3f fwdbwd_ms=%.3f bwd_ms=%.3f "
         "per_block=%d%s pool_used_high_fwd_GiB=%.3f pool_used_high_GiB=%.3f batches=%dx%d,%dx%d\n", pd->name, batch,
         n, C5_REAL_NAME, c5_matmul_name(mm), r->f_ms, r->fb_ms, r->fb_ms - r->f_ms, pd->per_block, share,
         gib(r->mf.pool_used_high), gib(r->mfb.pool_used_high), r->f_nb, r->f_b, r->fb_nb, r->fb_b);
}

/* argv[0..argc): [--tf32 | --matmul fp32|tf32|bf16] [--budget SECONDS] [BxN ...]; parts = 0: the block,
   1: the block and each of its modules alone (part_defs) */
/* The machine's bf16 tensor-core ceiling, for the model TFLOP/s beside it: gemm_ex of 8192^3, bf16 inputs,
   f32 accumulation and output, the median of 7 batches (the issue's yardstick: 779 TFLOP/s on an H200). */
static c5_status gemm_call(void *arg, int variant)
{
  (void)variant;
  void **b = arg;
  const long m = 8192;
  c5k_ctx kc = c5_backend_ctx(b[3], NULL, 0);
  return ((const c5_backend *)b[3])->ops->gemm_ex(&kc, 0, 0, m, m, m, 1.0, b[0], C5_DTYPE_BF16, m, 0, b[1],
                                                  C5_DTYPE_BF16, m, 0, 0.0, b[2], C5_DTYPE_F32, m, 0, 1, C5_DTYPE_F32);
}

static void gemm_peak(c5_backend *be)
{
  const long m = 8192;
  void *b[4] = { NULL, NULL, NULL, be };
  const tplan pl = { .warm = 2, .min_batch = 1, .max_batch = 20, .target_s = 0.05, .budget_s = 3 };
  double ms = 0;
  int nb = 0, bs = 0;
  c5_status st = c5_backend_alloc(be, (size_t)m * m * 2, &b[0]);
  if (st == C5_OK) st = c5_backend_alloc(be, (size_t)m * m * 2, &b[1]);
  if (st == C5_OK) st = c5_backend_alloc(be, (size_t)m * m * 4, &b[2]);
  /* the inputs as allocated: the tensor cores' time does not depend on their values */
  if (st == C5_OK) st = timed(be, &pl, gemm_call, b, 0, &ms, &nb, &bs);
  if (st == C5_OK)
    printf("colt5 op=gemm_peak m=n=k=%ld inputs=bf16 accumulate=f32 ms=%.3f tflops=%.1f\n", m, ms,
           2.0 * m * m * m / (ms * 1e-3) / 1e12);
  else
    printf("colt5 op=gemm_peak error: %s\n", c5_last_error());
  for (int i = 0; i < 3; i++) c5_backend_free(be, b[i]);
}

static int block_main(c5_backend *be, const c5_dist *d, int argc, char **argv, int parts)
{
  static char *block_defaults[] = { "4x8192", "1x32768", "1x131072", "1x1048576" };
  static char *parts_defaults[] = { "1x32768", "1x131072", "1x1048576" };
  const char *mode = parts ? "parts" : "block";
  char **defaults = parts ? parts_defaults : block_defaults;
  const int ndefaults = parts ? (int)(sizeof parts_defaults / sizeof *parts_defaults)
                              : (int)(sizeof block_defaults / sizeof *block_defaults);
  const int nparts = parts ? (int)(sizeof part_defs / sizeof *part_defs) : 1;
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
      fprintf(stderr, "c5-cuda-bench %s: option %s: expected --tf32, --matmul fp32|tf32|bf16 or --budget SECONDS (> 0)\n",
              mode, argv[a]);
      return 2;
    }
  }
  char **shapes = a < argc ? argv + a : defaults;
  const int nshapes = a < argc ? argc - a : ndefaults;
  for (int i = 0; i < nshapes; i++) {
    long b, n;
    if (sscanf(shapes[i], "%ldx%ld", &b, &n) != 2 || b < 1 || n < 16) {
      fprintf(stderr, "c5-cuda-bench %s: %s: expected BxN (batch >= 1, n >= 16)\n", mode, shapes[i]);
      return 2;
    }
  }
  if (c5_backend_set_matmul(be, mm) != C5_OK) {
    fprintf(stderr, "c5-cuda-bench %s: %s\n", mode, c5_last_error());
    return 1;
  }
  /* parameters drawn once on the CPU (c5_params_init: the same values whatever the device has) and uploaded
     for each shape and part; they do not depend on n */
  c5_params *hp = NULL;
  c5_block *hb = NULL;
  const c5_block_config cfg0 = block_shape_issue(1024);
  if (c5_params_create(c5_backend_cpu(), &hp) != C5_OK || c5_block_create(&cfg0, hp, "", &hb) != C5_OK ||
      c5_params_alloc(hp) != C5_OK || c5_params_init(hp, 1234) != C5_OK) {
    fprintf(stderr, "c5-cuda-bench %s: parameters: %s\n", mode, c5_last_error());
    c5_block_destroy(&hb);
    c5_params_destroy(&hp);
    return 1;
  }
  printf("colt5 cuda bench: block dim 512, 8+8 heads of 64, window 128, ff 0.5/4, n/16 heavy tokens; precision %s, "
         "matmul %s; %ld parameters\n", C5_REAL_NAME, sizeof(c5_real) == 8 ? "fp64" : c5_matmul_name(mm),
         c5_params_total(hp));
  gemm_peak(be);
  if (parts)
    printf("# parts, each with the block's configuration and parameter values, on random inputs: block = the whole "
           "block; routed_attn = ConditionalRoutedAttention (light local attention, q and kv routers, heavy "
           "attention); routed_ff = ConditionalRoutedFeedForward (light ff, router, heavy ff); router = one "
           "coordinate-descent router with top-k (k = n/16; the block runs 3 alike: q, kv, ff; per_block=3); "
           "heavy_attn = the heavy Attention alone on nq = nk = n/16 tokens (no routing, gather or scatter); "
           "local_attn = the light LocalMHA alone on all n tokens. fwdbwd_share_of_block = per_block x fwdbwd_ms "
           "/ the block's; bwd_ms = fwdbwd_ms - fwd_ms. The light and heavy feed-forwards are not built alone: "
           "routed_ff minus router is their time with the heavy tokens' gather and scatter.\n");
  for (int i = 0; i < nshapes; i++) {
    long b, n;
    sscanf(shapes[i], "%ldx%ld", &b, &n);
    double block_fb_ms = 0;
    for (int k = 0; k < nparts; k++) {
      const part_def *pd = &part_defs[k];
      bjob j = { .be = be, .d = d, .hp = hp, .cfg = block_shape_issue(n), .batch = b, .n = n };
      tres r = { 0 };
      char err[2048] = "";
      c5_status st = part_shape(&j, pd, budget_s, &r, err, sizeof err);
      if (st == C5_OK) {
        if (pd->build == block_build) block_fb_ms = r.fb_ms;
        if (parts) part_report(pd, b, n, mm, &r, block_fb_ms);
        else block_report(&j.cfg, b, n, mm, &r);
        continue;
      }
      const int oom = st == C5_ERR_MEM || strstr(err, "out of memory") != NULL;
      for (char *c = err; *c; c++)   /* one line per result */
        if (*c == '\n') *c = ' ';
      printf("colt5 op=%s%s batch=%ld n=%ld precision=%s matmul=%s error=%s: %s\n", parts ? "part part=" : "block",
             parts ? pd->name : "", b, n, C5_REAL_NAME, c5_matmul_name(mm), oom ? "out_of_memory" : "failed", err);
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
  if (argc > 1 && (!strcmp(argv[1], "block") || !strcmp(argv[1], "parts")))
    rc = block_main(be, d, argc - 2, argv + 2, argv[1][0] == 'p');
  else
    rc = cd_main(be, d, argc - 1, argv + 1);
out:
  c5_backend_destroy(&be);
  c5_dist_destroy(&d);
  MPI_Finalize();
  return rc;
}
