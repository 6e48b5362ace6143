/* test_attn_heavy.c - heavy-branch Attention (lib/attn_heavy.c) against a
   naive double transcription of the reference (transformer_block.py class
   Attention, RotaryEmbedding, rotate_half, RMSNorm; attend.py Attend
   without flash: sim = q k^T dh^-1/2, masked_fill(~mask, -finfo.max),
   softmax, @ v), written with loops only; finite differences of every
   gradient (double builds); gradient accumulation; bit-identical results
   for 1 and 2 OpenMP threads; invalid arguments.

     test_attn_heavy              run the checks
     test_attn_heavy --dump FILE  write out and every gradient of a mid-size case
                                  (compare runs with OMP_NUM_THREADS=1 and 2)
     test_attn_heavy --bench      time b 1, nq = nk = 1024, dim 256, 4 heads of 64 */
#include <float.h>
#include <string.h>
#include <omp.h>
#include "harness.h"
#include "attn_heavy.h"

#if C5_USE_DOUBLE
#define FWD_TOL 1e-12   /* ||lib - naive|| / ||naive|| */
#define FD_TOL 1e-7     /* ||analytic - fd|| / ||fd|| */
#define FD_H 1e-5
#else
#define FWD_TOL 1e-4
#endif

typedef struct {
  const char *name;
  int dim, heads, dh, routes, mk;
  long b, nq, nk;
  int use_mask, use_ks, use_qs, use_rot;
} hcfg;

typedef struct {
  hcfg c;
  c5_params *p;
  c5_attn_heavy a;
  c5_attn_heavy_cache *cache;
  c5_real *xq, *ctx, *ks, *qs, *g;      /* inputs; g = dL/dout */
  uint8_t *mask;
  long *qpos, *kpos;
  c5_real *out, *dxq, *dctx, *dks, *dqs;
} hcase;

static void case_free(hcase *t)
{
  c5_attn_heavy_cache_destroy(&t->cache);
  c5_params_destroy(&t->p);
  free(t->xq); free(t->ctx); free(t->ks); free(t->qs); free(t->g); free(t->mask); free(t->qpos); free(t->kpos);
  free(t->out); free(t->dxq); free(t->dctx); free(t->dks); free(t->dqs);
  memset(t, 0, sizeof *t);
}

static c5_real *rnd(long n, double mean, double sd, unsigned long long *st)
{
  c5_real *x = malloc((size_t)(n ? n : 1) * sizeof *x);
  for (long i = 0; i < n; i++) x[i] = (c5_real)(mean + sd * t_normal(st));
  return x;
}

static c5_real *uni(long n, double lo, double hi, unsigned long long *st)
{
  c5_real *x = malloc((size_t)(n ? n : 1) * sizeof *x);
  for (long i = 0; i < n; i++) x[i] = (c5_real)(lo + (hi - lo) * t_uniform(st));
  return x;
}

static c5_status case_make(hcase *t, const hcfg *c, unsigned long long seed)
{
  memset(t, 0, sizeof *t);
  t->c = *c;
  const long B = c->b, R = c->routes, D = (long)c->heads * c->dh, nqr = B * c->nq, nkr = B * R * c->nk;
  c5_status st;
  if ((st = c5_params_create(c5_backend_cpu(), &t->p)) != C5_OK) return st;
  if ((st = c5_attn_heavy_init(&t->a, t->p, "heavy_attn", c->dim, c->heads, c->dh, c->routes, c->mk)) != C5_OK)
    return st;
  if ((st = c5_params_alloc(t->p)) != C5_OK) return st;
  if ((st = c5_attn_heavy_cache_create(&t->a, B, c->nq, c->nk, &t->cache)) != C5_OK) return st;
  /* parameters: weights ~ N(0, 1.5^2 / fan_in) so that the softmax is neither flat nor saturated */
  struct { long idx; double mean, sd; } init[5] = {
    { t->a.norm_gamma, 1.0, 0.2 }, { t->a.null_kv, 0.0, 1.0 }, { t->a.to_q, 0.0, 1.5 / sqrt(c->dim) },
    { t->a.to_kv, 0.0, 1.5 / sqrt(c->dim) }, { t->a.to_out, 0.0, 1.0 / sqrt((double)D) } };
  for (int k = 0; k < 5; k++) {
    c5_real *v = c5_params_value(t->p, init[k].idx);
    for (long i = 0; i < c5_params_numel(t->p, init[k].idx); i++)
      v[i] = (c5_real)(init[k].mean + init[k].sd * t_normal(&seed));
  }
  t->xq = rnd(nqr * c->dim, 0.1, 1.0, &seed);
  t->ctx = rnd(nkr * c->dim, -0.1, 1.0, &seed);
  t->g = rnd(nqr * c->dim, 0.0, 1.0, &seed);
  if (c->use_ks) t->ks = uni(nkr, 0.2, 1.0, &seed);
  if (c->use_qs) t->qs = uni(nqr, 0.2, 1.0, &seed);
  if (c->use_mask) {
    t->mask = malloc((size_t)(nkr ? nkr : 1));
    for (long i = 0; i < nkr; i++) t->mask[i] = t_uniform(&seed) < 0.7;
    if (B > 1 && R > 0)   /* batch 1, route 0: every key masked, only the null slot is left */
      for (long j = 0; j < c->nk; j++) t->mask[(1 * R + 0) * c->nk + j] = 0;
  }
  if (c->use_rot) {
    t->qpos = malloc((size_t)(nqr ? nqr : 1) * sizeof *t->qpos);
    t->kpos = malloc((size_t)(nkr ? nkr : 1) * sizeof *t->kpos);
    for (long i = 0; i < nqr; i++) t->qpos[i] = (long)(2000 * t_uniform(&seed));
    for (long i = 0; i < nkr; i++) t->kpos[i] = (long)(2000 * t_uniform(&seed));
  }
  t->out = calloc((size_t)(nqr * c->dim + 1), sizeof *t->out);
  t->dxq = calloc((size_t)(nqr * c->dim + 1), sizeof *t->dxq);
  t->dctx = calloc((size_t)(nkr * c->dim + 1), sizeof *t->dctx);
  t->dks = calloc((size_t)(nkr + 1), sizeof *t->dks);
  t->dqs = calloc((size_t)(nqr + 1), sizeof *t->dqs);
  return C5_OK;
}

static c5_status run_forward(hcase *t)
{
  const hcfg *c = &t->c;
  return c5_attn_heavy_forward(&t->a, t->p, c->b, c->nq, c->nk, t->xq, t->ctx, t->mask, t->ks, t->qs, t->qpos,
                               t->kpos, t->cache, t->out);
}

static c5_status run_backward(hcase *t)
{
  return c5_attn_heavy_backward(&t->a, t->p, t->cache, t->g, t->dxq, t->dctx, t->ks ? t->dks : NULL,
                                t->qs ? t->dqs : NULL);
}

/* ---- the reference, naively, in double ------------------------------------------------ */

/* RMSNorm: x / max(||x||, 1e-12) * sqrt(dim) * gamma */
static void naive_rmsnorm(const c5_real *x, const c5_real *gamma, long rows, int dim, double *y)
{
  for (long r = 0; r < rows; r++) {
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
    double nrm = fmax(sqrt(ss), 1e-12);
    for (int i = 0; i < dim; i++) y[r * dim + i] = x[r * dim + i] / nrm * sqrt((double)dim) * gamma[i];
  }
}

/* apply_rotary_pos_emb: t * cos(freqs) + rotate_half(t) * sin(freqs), freqs = cat(pos * inv_freq, pos * inv_freq) */
static void naive_rotary(double *t, int dh, long pos)
{
  int half = dh / 2;
  double rh[256], f[256], y[256];
  for (int d = 0; d < dh; d++) {
    f[d] = (double)pos * (1.0 / pow(10000.0, (double)(2 * (d % half)) / dh));
    rh[d] = d < half ? -t[d + half] : t[d - half];
  }
  for (int d = 0; d < dh; d++) y[d] = t[d] * cos(f[d]) + rh[d] * sin(f[d]);
  for (int d = 0; d < dh; d++) t[d] = y[d];
}

static void naive_forward(const hcase *t, double *out)
{
  const hcfg *c = &t->c;
  const int dim = c->dim, H = c->heads, dh = c->dh, R = c->routes, hpr = H / R;
  const long B = c->b, nq = c->nq, nk = c->nk, D = (long)H * dh, n1 = nk + 1;
  const c5_real *gamma = c5_params_value(t->p, t->a.norm_gamma), *nkv = c5_params_value(t->p, t->a.null_kv);
  const c5_real *wq = c5_params_value(t->p, t->a.to_q), *wkv = c5_params_value(t->p, t->a.to_kv);
  const c5_real *wout = c5_params_value(t->p, t->a.to_out);
  double *xn = malloc((size_t)(B * nq * dim + 1) * sizeof *xn);
  double *cn = malloc((size_t)(B * R * nk * dim + 1) * sizeof *cn);
  double *q = malloc((size_t)(B * H * nq * dh + 1) * sizeof *q);      /* [b][h][i][e] */
  double *k = malloc((size_t)(B * H * n1 * dh) * sizeof *k);          /* [b][h][j][e], j = 0 null */
  double *v = malloc((size_t)(B * H * n1 * dh) * sizeof *v);
  double *o = malloc((size_t)(B * nq * D + 1) * sizeof *o);           /* [b][i][h*dh + e] */
  double *sim = malloc((size_t)n1 * sizeof *sim), kv[512];
  naive_rmsnorm(t->xq, gamma, B * nq, dim, xn);
  naive_rmsnorm(t->ctx, gamma, B * R * nk, dim, cn);
  /* q = to_q(x), 'b n (h d) -> b h n d', times the q score, then rotary */
  for (long b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (long i = 0; i < nq; i++) {
        double *qv = q + ((b * H + h) * nq + i) * dh;
        for (int e = 0; e < dh; e++) {
          double s = 0;
          for (int m = 0; m < dim; m++) s += (double)wq[((long)h * dh + e) * dim + m] * xn[(b * nq + i) * dim + m];
          qv[e] = t->qs ? s * t->qs[b * nq + i] : s;
        }
        if (t->qpos) naive_rotary(qv, dh, t->qpos[b * nq + i]);
      }
  /* kv = einsum('r h d i, b r n i -> b r h n d') with to_kv.weight as '(r h d) i', d = 2 dh; k, v = chunk(2) */
  for (long b = 0; b < B; b++)
    for (int r = 0; r < R; r++)
      for (int hh = 0; hh < hpr; hh++)
        for (long j = 0; j < nk; j++) {
          long tok = (b * R + r) * nk + j;
          for (int d = 0; d < 2 * dh; d++) {
            double s = 0;
            for (int m = 0; m < dim; m++)
              s += (double)wkv[(((long)r * hpr + hh) * 2 * dh + d) * dim + m] * cn[tok * dim + m];
            kv[d] = s;
          }
          double *kk = kv, *vv = kv + dh;
          if (t->ks) {
            for (int e = 0; e < dh; e++) vv[e] *= t->ks[tok];
            if (c->mk)
              for (int e = 0; e < dh; e++) kk[e] *= t->ks[tok];
          }
          if (t->kpos) naive_rotary(kk, dh, t->kpos[tok]);
          long h = (long)r * hpr + hh;   /* 'b r h n d -> b (r h) n d' */
          for (int e = 0; e < dh; e++) {
            k[((b * H + h) * n1 + 1 + j) * dh + e] = kk[e];
            v[((b * H + h) * n1 + 1 + j) * dh + e] = vv[e];
          }
        }
  /* null key / value in front of every head's keys */
  for (long b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int e = 0; e < dh; e++) {
        k[((b * H + h) * n1) * dh + e] = nkv[(long)h * dh + e];
        v[((b * H + h) * n1) * dh + e] = nkv[D + (long)h * dh + e];
      }
  /* Attend: masked_fill(~mask, -finfo.max), softmax, @ v; mask 'b r j -> b (r h) 1 j', padded with True */
  for (long b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (long i = 0; i < nq; i++) {
        const double *qv = q + ((b * H + h) * nq + i) * dh;
        double mx = -INFINITY, sum = 0;
        for (long j = 0; j < n1; j++) {
          double s = 0;
          for (int e = 0; e < dh; e++) s += qv[e] * k[((b * H + h) * n1 + j) * dh + e];
          s *= pow((double)dh, -0.5);
          if (j > 0 && t->mask && !t->mask[(b * R + h / hpr) * nk + j - 1]) s = -DBL_MAX;
          sim[j] = s;
          mx = fmax(mx, s);
        }
        for (long j = 0; j < n1; j++) { sim[j] = exp(sim[j] - mx); sum += sim[j]; }
        for (int e = 0; e < dh; e++) {
          double s = 0;
          for (long j = 0; j < n1; j++) s += sim[j] / sum * v[((b * H + h) * n1 + j) * dh + e];
          o[(b * nq + i) * D + (long)h * dh + e] = s;
        }
      }
  /* 'b h n d -> b n (h d)', to_out */
  for (long r = 0; r < B * nq; r++)
    for (int m = 0; m < dim; m++) {
      double s = 0;
      for (long e = 0; e < D; e++) s += (double)wout[m * D + e] * o[r * D + e];
      out[r * dim + m] = s;
    }
  free(xn); free(cn); free(q); free(k); free(v); free(o); free(sim);
}

/* ---- checks --------------------------------------------------------------------------- */

static double relnorm(const c5_real *a, const double *b, long n)
{
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) { num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); den += b[i] * b[i]; }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int all_finite(const c5_real *x, long n)
{
  for (long i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

/* forward against the naive reference; backward runs and is finite */
static int check_forward(const hcfg *c, unsigned long long seed)
{
  hcase t;
  double *ref = NULL, err = -1;
  int ok = 0;
  T_OK(case_make(&t, c, seed));
  const long nout = c->b * c->nq * c->dim;
  ref = malloc((size_t)(nout + 1) * sizeof *ref);
  T_OK(run_forward(&t));
  naive_forward(&t, ref);
  err = relnorm(t.out, ref, nout);
  T_CHECK(err <= FWD_TOL, "%s: ||out - naive|| / ||naive|| = %.3e > %.1e", c->name, err, FWD_TOL);
  T_CHECK(t_close(c->name, t.out, ref, nout, 1e3 * FWD_TOL, 1e-2), "%s: an element is far off", c->name);
  c5_params_zero_grad(t.p);
  T_OK(run_backward(&t));
  T_CHECK(all_finite(t.dxq, nout) && all_finite(t.dctx, c->b * c->routes * c->nk * c->dim) &&
          (!t.ks || all_finite(t.dks, c->b * c->routes * c->nk)) && (!t.qs || all_finite(t.dqs, c->b * c->nq)),
          "%s: non-finite input gradient", c->name);
  for (long i = 0; i < c5_params_count(t.p); i++)
    T_CHECK(all_finite(c5_params_grad(t.p, i), c5_params_numel(t.p, i)), "%s: non-finite gradient of %s", c->name,
            c5_params_name(t.p, i));
  ok = 1;
fail:
  printf("forward vs naive: %-36s %s (rel %.2e)\n", c->name, ok ? "ok" : "FAILED", err);
  free(ref);
  case_free(&t);
  return ok;
}

#if C5_USE_DOUBLE
static double loss(hcase *t, int *ok)
{
  *ok = run_forward(t) == C5_OK;
  double l = 0;
  for (long i = 0; i < t->c.b * t->c.nq * t->c.dim; i++) l += (double)t->out[i] * t->g[i];
  return l;
}

/* central differences of loss = sum(out * g) over every element of x, against the analytic grad */
static int fd_array(hcase *t, const char *what, c5_real *x, const c5_real *grad, long n)
{
  double num = 0, den = 0;
  int ok = 1, fok;
  for (long i = 0; i < n && ok; i++) {
    c5_real x0 = x[i];
    x[i] = x0 + FD_H;
    double lp = loss(t, &fok);
    ok &= fok;
    x[i] = x0 - FD_H;
    double lm = loss(t, &fok);
    ok &= fok;
    x[i] = x0;
    double fd = (lp - lm) / (2 * FD_H);
    num += (fd - grad[i]) * (fd - grad[i]);
    den += fd * fd;
  }
  double rel = den > 0 ? sqrt(num / den) : INFINITY;
  if (!ok) fprintf(stderr, "  %s: a forward failed: %s\n", what, c5_last_error());
  if (!(rel <= FD_TOL)) fprintf(stderr, "  %s: ||analytic - fd|| / ||fd|| = %.3e > %.1e\n", what, rel, FD_TOL);
  printf("  %-28s rel %.2e\n", what, rel);
  return ok && rel <= FD_TOL;
}

static int check_fd(const hcfg *c, unsigned long long seed)
{
  hcase t;
  c5_real *pg = NULL, *dxq = NULL, *dctx = NULL, *dks = NULL, *dqs = NULL;
  int ok = 0, good = 1;
  T_OK(case_make(&t, c, seed));
  const long nqr = c->b * c->nq, nkr = c->b * c->routes * c->nk, np = c5_params_total(t.p);
  c5_params_zero_grad(t.p);
  T_OK(run_forward(&t));
  T_OK(run_backward(&t));
  /* keep the analytic gradients: the finite differences rerun the forward */
  pg = malloc((size_t)np * sizeof *pg);
  memcpy(pg, c5_params_grad(t.p, 0), (size_t)np * sizeof *pg);
  dxq = malloc((size_t)(nqr * c->dim) * sizeof *dxq); memcpy(dxq, t.dxq, (size_t)(nqr * c->dim) * sizeof *dxq);
  dctx = malloc((size_t)(nkr * c->dim) * sizeof *dctx); memcpy(dctx, t.dctx, (size_t)(nkr * c->dim) * sizeof *dctx);
  dks = malloc((size_t)nkr * sizeof *dks); memcpy(dks, t.dks, (size_t)nkr * sizeof *dks);
  dqs = malloc((size_t)nqr * sizeof *dqs); memcpy(dqs, t.dqs, (size_t)nqr * sizeof *dqs);
  printf("finite differences: %s\n", c->name);
  good &= fd_array(&t, "dxq", t.xq, dxq, nqr * c->dim);
  good &= fd_array(&t, "dctx", t.ctx, dctx, nkr * c->dim);
  if (t.ks) good &= fd_array(&t, "dkscore", t.ks, dks, nkr);
  if (t.qs) good &= fd_array(&t, "dqscore", t.qs, dqs, nqr);
  for (long i = 0; i < c5_params_count(t.p); i++)
    good &= fd_array(&t, c5_params_name(t.p, i), c5_params_value(t.p, i), pg + (c5_params_grad(t.p, i) - c5_params_grad(t.p, 0)),
                     c5_params_numel(t.p, i));
  T_CHECK(good, "%s: finite differences disagree", c->name);
  ok = 1;
fail:
  printf("finite differences: %-34s %s\n", c->name, ok ? "ok" : "FAILED");
  free(pg); free(dxq); free(dctx); free(dks); free(dqs);
  case_free(&t);
  return ok;
}
#endif

/* parameter gradients accumulate (+=); input gradients are written (=) */
static int check_accumulate(const hcfg *c, unsigned long long seed)
{
  hcase t;
  c5_real *g1 = NULL, *dxq1 = NULL, *dctx1 = NULL;
  int ok = 0;
  T_OK(case_make(&t, c, seed));
  const long np = c5_params_total(t.p), nx = c->b * c->nq * c->dim, nc = c->b * c->routes * c->nk * c->dim;
  c5_params_zero_grad(t.p);
  T_OK(run_forward(&t));
  T_OK(run_backward(&t));
  g1 = malloc((size_t)np * sizeof *g1); memcpy(g1, c5_params_grad(t.p, 0), (size_t)np * sizeof *g1);
  dxq1 = malloc((size_t)nx * sizeof *dxq1); memcpy(dxq1, t.dxq, (size_t)nx * sizeof *dxq1);
  dctx1 = malloc((size_t)nc * sizeof *dctx1); memcpy(dctx1, t.dctx, (size_t)nc * sizeof *dctx1);
  for (long i = 0; i < nx; i++) t.dxq[i] = (c5_real)NAN;
  for (long i = 0; i < nc; i++) t.dctx[i] = (c5_real)NAN;
  T_OK(run_backward(&t));
  T_CHECK(!memcmp(dxq1, t.dxq, (size_t)nx * sizeof *dxq1) && !memcmp(dctx1, t.dctx, (size_t)nc * sizeof *dctx1),
          "%s: a second backward changed dxq or dctx", c->name);
  const c5_real *g2 = c5_params_grad(t.p, 0);
  for (long i = 0; i < np; i++)
    T_CHECK(fabs((double)g2[i] - 2.0 * g1[i]) <= 1e-5 * (fabs(g1[i]) + 1e-6), "%s: gradient %ld: %.17g after two "
            "backwards, %.17g after one", c->name, i, (double)g2[i], (double)g1[i]);
  ok = 1;
fail:
  printf("%-54s %s\n", "parameter gradients accumulate, input gradients written", ok ? "ok" : "FAILED");
  free(g1); free(dxq1); free(dctx1);
  case_free(&t);
  return ok;
}

/* out and every gradient of t into one array (for the thread checks) */
static long collect(hcase *t, c5_real *dst)
{
  const hcfg *c = &t->c;
  long n = 0, nqr = c->b * c->nq, nkr = c->b * c->routes * c->nk;
  c5_params_zero_grad(t->p);
  if (run_forward(t) != C5_OK || run_backward(t) != C5_OK) return -1;
#define PUT(src, cnt) do { if (dst) memcpy(dst + n, (src), (size_t)(cnt) * sizeof *dst); n += (cnt); } while (0)
  PUT(t->out, nqr * c->dim);
  PUT(t->dxq, nqr * c->dim);
  PUT(t->dctx, nkr * c->dim);
  PUT(t->dks, nkr);
  PUT(t->dqs, nqr);
  PUT(c5_params_grad(t->p, 0), c5_params_total(t->p));
#undef PUT
  return n;
}

static const hcfg mid = { "mid-size, all options", 32, 4, 8, 2, 1, 2, 70, 90, 1, 1, 1, 1 };

/* bit-identical for 1 and 2 OpenMP threads (the BLAS keeps its own thread count; --dump covers it) */
static int check_threads(void)
{
  hcase t;
  c5_real *a = NULL, *b = NULL;
  int ok = 0, nth = omp_get_max_threads();
  T_OK(case_make(&t, &mid, 5));
  long n = collect(&t, NULL);
  T_CHECK(n > 0, "forward/backward failed: %s", c5_last_error());
  a = malloc((size_t)n * sizeof *a);
  b = malloc((size_t)n * sizeof *b);
  omp_set_num_threads(1);
  collect(&t, a);
  omp_set_num_threads(2);
  collect(&t, b);
  omp_set_num_threads(nth);
  T_CHECK(!memcmp(a, b, (size_t)n * sizeof *a), "results differ between 1 and 2 OpenMP threads");
  ok = 1;
fail:
  printf("%-54s %s\n", "bit-identical for 1 and 2 OpenMP threads", ok ? "ok" : "FAILED");
  free(a); free(b);
  case_free(&t);
  return ok;
}

static int check_invalid(void)
{
  c5_params *p = NULL;
  c5_attn_heavy a;
  c5_attn_heavy_cache *cache = NULL;
  hcase t;
  int ok = 0;
  memset(&t, 0, sizeof t);
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_FAILS(c5_attn_heavy_init(&a, p, "heavy_attn", 8, 6, 4, 4, 0), C5_ERR_ARG, "divisible");
  hcfg c = { "odd", 8, 2, 3, 1, 0, 1, 3, 4, 0, 0, 0, 1 };
  T_OK(case_make(&t, &c, 3));
  T_FAILS(run_forward(&t), C5_ERR_ARG, "even dim_head");
  T_FAILS(c5_attn_heavy_forward(&t.a, t.p, 1, 3, 4, t.xq, t.ctx, NULL, NULL, NULL, t.qpos, NULL, t.cache, t.out),
          C5_ERR_ARG, "both qpos and kpos");
  T_FAILS(c5_attn_heavy_forward(&t.a, t.p, 1, 3, 5, t.xq, t.ctx, NULL, NULL, NULL, NULL, NULL, t.cache, t.out),
          C5_ERR_SHAPE, "cache holds");
  T_OK(c5_attn_heavy_cache_create(&t.a, 1, 3, 4, &cache));
  T_FAILS(c5_attn_heavy_backward(&t.a, t.p, cache, t.g, t.dxq, t.dctx, NULL, NULL), C5_ERR_ARG, "no forward");
  ok = 1;
fail:
  printf("%-54s %s\n", "invalid arguments are errors", ok ? "ok" : "FAILED");
  c5_attn_heavy_cache_destroy(&cache);
  c5_params_destroy(&p);
  case_free(&t);
  return ok;
}

static int dump(const char *path)
{
  hcase t;
  c5_real *a = NULL;
  FILE *fp = NULL;
  int ok = 0;
  T_OK(case_make(&t, &mid, 5));
  long n = collect(&t, NULL);
  T_CHECK(n > 0, "forward/backward failed: %s", c5_last_error());
  a = malloc((size_t)n * sizeof *a);
  collect(&t, a);
  fp = fopen(path, "wb");
  T_CHECK(fp != NULL, "cannot write %s", path);
  fwrite(a, sizeof *a, (size_t)n, fp);
  ok = fclose(fp) == 0;
fail:
  free(a);
  case_free(&t);
  return ok;
}

static int bench(void)
{
  const hcfg cfgs[2] = { { "1 route", 256, 4, 64, 1, 0, 1, 1024, 1024, 0, 1, 1, 0 },
                         { "2 routes, mask, rotary", 256, 4, 64, 2, 1, 1, 1024, 1024, 1, 1, 1, 1 } };
  for (int k = 0; k < 2; k++) {
    const hcfg *c = &cfgs[k];
    hcase t;
    int ok = 0;
    T_OK(case_make(&t, c, 11));
    const double D = (double)c->heads * c->dh;   /* to_q, to_kv, to_out; then q k^T and P v */
    double flop_f = c->b * (4.0 * c->nq * c->dim * D + 4.0 * c->nk * c->dim * D + 4.0 * D * c->nq * (c->nk + 1));
    T_OK(run_forward(&t));
    T_OK(run_backward(&t));
    double tf = 1e30, tb = 1e30;
    for (int rep = 0; rep < 5; rep++) {
      double t0 = omp_get_wtime();
      T_OK(run_forward(&t));
      double t1 = omp_get_wtime();
      T_OK(run_backward(&t));
      double t2 = omp_get_wtime();
      tf = fmin(tf, t1 - t0);
      tb = fmin(tb, t2 - t1);
    }
    printf("heavy attn %-24s b %ld nq %ld nk %ld dim %d heads %d x %d, %d threads: forward %8.2f ms (%6.1f GFLOP/s) "
           "backward %8.2f ms (%6.1f GFLOP/s)\n", c->name, c->b, c->nq, c->nk, c->dim, c->heads, c->dh,
           omp_get_max_threads(), 1e3 * tf, flop_f / tf * 1e-9, 1e3 * tb, 2 * flop_f / tb * 1e-9);
    ok = 1;
  fail:
    case_free(&t);
    if (!ok) return 0;
  }
  return 1;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int ok = 1;
  if (argc == 3 && !strcmp(argv[1], "--dump")) {
    ok = dump(argv[2]);
  } else if (argc == 2 && !strcmp(argv[1], "--bench")) {
    ok = bench();
  } else {
    /* name, dim, heads, dh, routes, mk, b, nq, nk, mask, kscore, qscore, rotary */
    const hcfg fwd[] = {
      { "1 route, 2 heads", 16, 2, 8, 1, 0, 2, 7, 9, 0, 0, 0, 0 },
      { "2 routes, 4 heads", 16, 4, 8, 2, 0, 2, 7, 9, 0, 0, 0, 0 },
      { "key mask", 16, 4, 8, 2, 0, 3, 7, 9, 1, 0, 0, 0 },
      { "kscore on values", 16, 4, 8, 2, 0, 2, 7, 9, 0, 1, 0, 0 },
      { "kscore, multiply_keys_by_score", 16, 4, 8, 2, 1, 2, 7, 9, 0, 1, 0, 0 },
      { "qscore", 16, 4, 8, 2, 0, 2, 7, 9, 0, 0, 1, 0 },
      { "rotary", 16, 4, 8, 2, 0, 2, 7, 9, 0, 0, 0, 1 },
      { "rotary, 1 route", 12, 3, 6, 1, 0, 2, 5, 11, 0, 0, 0, 1 },
      { "all options, 4 routes", 16, 4, 8, 4, 1, 2, 6, 5, 1, 1, 1, 1 },
      { "all options, nk 1", 16, 4, 8, 2, 1, 2, 6, 1, 1, 1, 1, 1 },
      { "no keys (null slot only)", 16, 4, 8, 2, 0, 2, 6, 0, 0, 0, 0, 0 },
      { "larger, all options", 64, 8, 16, 2, 1, 2, 40, 57, 1, 1, 1, 1 },
    };
    for (size_t i = 0; i < sizeof fwd / sizeof *fwd; i++) ok &= check_forward(&fwd[i], 100 + i);
#if C5_USE_DOUBLE
    const hcfg fd1 = { "all options, multiply keys", 8, 4, 4, 2, 1, 2, 5, 6, 1, 1, 1, 1 };
    const hcfg fd2 = { "kscore on values, qscore", 8, 4, 4, 2, 0, 2, 5, 6, 0, 1, 1, 0 };
    ok &= check_fd(&fd1, 21);
    ok &= check_fd(&fd2, 22);
#endif
    ok &= check_accumulate(&mid, 9);
    ok &= check_threads();
    ok &= check_invalid();
  }
  MPI_Finalize();
  return ok ? 0 : 1;
}
