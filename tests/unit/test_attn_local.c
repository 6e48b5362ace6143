/* test_attn_local.c - LocalMHA (lib/attn_local.c) against a naive double
   transcription of the reference (local_attention.py LocalAttention.forward
   inside transformer.py LocalMHA: LayerNorm, to_qkv, autopad with zeros,
   look_around with pad value -1, the masks built slot by slot as the
   reference builds them, masked_fill with -DBL_MAX, softmax with its max,
   to_out), finite differences of the backward for dx and every parameter
   gradient, chunkings of the backward against each other, invalid
   arguments.

     test_attn_local              run the checks
     test_attn_local --dump FILE  write out, dx and the gradients of a larger
                                  case (compare OMP_NUM_THREADS=1 and 2) */
#include <float.h>
#include <string.h>
#include "harness.h"
#include "attn_local.h"

#if C5_USE_DOUBLE
#define FWD_TOL 1e-12   /* max |a - b| / max |b| */
#else
#define FWD_TOL 1e-4
#endif
#define FD_TOL 1e-6     /* ||analytic - fd|| / ||fd||, double only */
#define FD_H 1e-6

typedef struct {
  const char *name;
  int dim, heads, dh;
  long w;
  int lb, lf, causal, exact;
  long batch, n;
  int mask_kind;   /* 0 none, 1 random, 2 random + dead stretches (rows whose every slot is masked) */
} acase;

/* ---- the naive reference, in double ---------------------------------------------- */
typedef struct { double *lnw, *lnb, *wqkv, *wout; } dparams;

/* out [B, n, dim]; returns the number of real queries whose every slot was masked. */
static long naive_forward(const acase *k, const dparams *P, const double *x, const uint8_t *mask, double *out)
{
  const long B = k->batch, n = k->n, dim = k->dim, H = k->heads, dh = k->dh, w = k->w, HD = H * dh;
  const long W = (n + w - 1) / w, np = W * w, L = k->lb + 1 + k->lf, LW = L * w;
  const double scale = 1.0 / sqrt((double)dh);
  double *xn = calloc((size_t)(B * n * dim), sizeof *xn);
  double *q = calloc((size_t)(B * H * np * dh), sizeof *q);   /* [B, H, n', dh], zero-padded */
  double *kk = calloc((size_t)(B * H * np * dh), sizeof *kk);
  double *v = calloc((size_t)(B * H * np * dh), sizeof *v);
  double *att = calloc((size_t)(B * np * HD), sizeof *att);   /* [B, n', HD] */
  double *sim = malloc((size_t)LW * sizeof *sim), *kv = malloc((size_t)(2 * LW * dh) * sizeof *kv);
  long nuni = 0;
  for (long r = 0; r < B * n; r++) {   /* nn.LayerNorm(dim), eps 1e-5 */
    double m = 0, var = 0;
    for (long i = 0; i < dim; i++) m += x[r * dim + i];
    m /= dim;
    for (long i = 0; i < dim; i++) var += (x[r * dim + i] - m) * (x[r * dim + i] - m);
    var /= dim;
    for (long i = 0; i < dim; i++) xn[r * dim + i] = (x[r * dim + i] - m) / sqrt(var + 1e-5) * P->lnw[i] + P->lnb[i];
  }
  for (long b = 0; b < B; b++)   /* to_qkv, chunk(3), 'b n (h d) -> b h n d' */
    for (long t = 0; t < n; t++)
      for (long h = 0; h < H; h++)
        for (long e = 0; e < dh; e++) {
          double s[3] = { 0, 0, 0 };
          for (int part = 0; part < 3; part++)
            for (long i = 0; i < dim; i++) s[part] += xn[(b * n + t) * dim + i] * P->wqkv[(part * HD + h * dh + e) * dim + i];
          long o = ((b * H + h) * np + t) * dh + e;
          q[o] = s[0]; kk[o] = s[1]; v[o] = s[2];
        }
  for (long b = 0; b < B; b++)
    for (long h = 0; h < H; h++)
      for (long t = 0; t < np; t++) {
        const long i = t / w;
        int all_masked = 1;
        for (long j = 0; j < LW; j++) {
          long kw = i - k->lb + j / w, pos;   /* look_around: window i-lb+j/w, pad value -1 */
          double *kj = kv + j * dh, *vj = kv + (LW + j) * dh;
          if (kw < 0 || kw >= W) {
            pos = -1;
            for (long e = 0; e < dh; e++) kj[e] = vj[e] = -1;
          } else {
            pos = kw * w + j % w;
            for (long e = 0; e < dh; e++) {
              kj[e] = kk[((b * H + h) * np + pos) * dh + e];
              vj[e] = v[((b * H + h) * np + pos) * dh + e];
            }
          }
          double s = 0;
          for (long e = 0; e < dh; e++) s += q[((b * H + h) * np + t) * dh + e] * scale * kj[e];
          int pad = pos == -1, msk = 0;
          if (k->causal) {
            msk = t < pos;
            if (k->exact) msk = msk || t > pos + w * k->lb;
            msk = msk || pad;
          } else if (k->exact) {
            msk = (pos - w * k->lf) > t || t > pos + w * k->lb || pad;
          } else {
            msk = pad;
          }
          if (mask) {   /* padded with False, then look_around with False */
            int keep = pos >= 0 && pos < n && mask[b * n + pos];
            msk = msk || !keep;
          }
          sim[j] = msk ? -DBL_MAX : s;
          if (!msk) all_masked = 0;
        }
        double mx = -INFINITY, sum = 0;
        for (long j = 0; j < LW; j++) mx = fmax(mx, sim[j]);
        for (long j = 0; j < LW; j++) { sim[j] = exp(sim[j] - mx); sum += sim[j]; }
        for (long e = 0; e < dh; e++) {
          double o = 0;
          for (long j = 0; j < LW; j++) o += sim[j] / sum * kv[(LW + j) * dh + e];
          att[(b * np + t) * HD + h * dh + e] = o;
        }
        if (all_masked && t < n) nuni++;
      }
  for (long b = 0; b < B; b++)   /* [:, :n], to_out */
    for (long t = 0; t < n; t++)
      for (long o = 0; o < dim; o++) {
        double s = 0;
        for (long i = 0; i < HD; i++) s += att[(b * np + t) * HD + i] * P->wout[o * HD + i];
        out[(b * n + t) * dim + o] = s;
      }
  free(xn); free(q); free(kk); free(v); free(att); free(sim); free(kv);
  return nuni;
}

/* ---- one case: parameters, inputs, the library module ----------------------------- */
typedef struct {
  acase k;
  c5_params *p;
  c5_attn_local a;
  c5_attn_local_cache *c;
  dparams dp;
  c5_real *x, *out, *g, *dx;
  double *xd, *ref;
  uint8_t *mask;
} setup;

static void setup_free(setup *s)
{
  c5_attn_local_cache_destroy(&s->c);
  c5_params_destroy(&s->p);
  free(s->dp.lnw); free(s->dp.lnb); free(s->dp.wqkv); free(s->dp.wout);
  free(s->x); free(s->out); free(s->g); free(s->dx); free(s->xd); free(s->ref); free(s->mask);
  memset(s, 0, sizeof *s);
}

static void fill(c5_real *dst, double *dd, long cnt, double mean, double sd, unsigned long long *st)
{
  for (long i = 0; i < cnt; i++) {
    dst[i] = (c5_real)(mean + sd * t_normal(st));
    dd[i] = dst[i];
  }
}

static c5_status setup_make(setup *s, const acase *k, unsigned long long seed)
{
  memset(s, 0, sizeof *s);
  s->k = *k;
  const long dim = k->dim, HD = (long)k->heads * k->dh, N = k->batch * k->n * dim;
  c5_status st;
  if ((st = c5_params_create(c5_backend_cpu(), &s->p)) != C5_OK) return st;
  if ((st = c5_attn_local_init(&s->a, s->p, "light_attn", k->dim, k->heads, k->dh, k->w, k->lb, k->lf, k->causal,
                               k->exact)) != C5_OK) return st;
  if ((st = c5_params_alloc(s->p)) != C5_OK) return st;
  if ((st = c5_attn_local_cache_create(&s->a, k->batch, k->n, &s->c)) != C5_OK) return st;
  s->dp.lnw = malloc((size_t)dim * sizeof(double));
  s->dp.lnb = malloc((size_t)dim * sizeof(double));
  s->dp.wqkv = malloc((size_t)(3 * HD * dim) * sizeof(double));
  s->dp.wout = malloc((size_t)(dim * HD) * sizeof(double));
  fill(c5_params_value(s->p, s->a.norm_w), s->dp.lnw, dim, 1.0, 0.2, &seed);
  fill(c5_params_value(s->p, s->a.norm_b), s->dp.lnb, dim, 0.0, 0.2, &seed);
  fill(c5_params_value(s->p, s->a.to_qkv), s->dp.wqkv, 3 * HD * dim, 0.0, 1.2 / sqrt((double)dim), &seed);
  fill(c5_params_value(s->p, s->a.to_out), s->dp.wout, dim * HD, 0.0, 1.0 / sqrt((double)HD), &seed);
  s->x = malloc((size_t)N * sizeof *s->x);
  s->xd = malloc((size_t)N * sizeof *s->xd);
  s->out = malloc((size_t)N * sizeof *s->out);
  s->g = malloc((size_t)N * sizeof *s->g);
  s->dx = malloc((size_t)N * sizeof *s->dx);
  s->ref = malloc((size_t)N * sizeof *s->ref);
  fill(s->x, s->xd, N, 0.3, 1.0, &seed);
  for (long i = 0; i < N; i++) s->g[i] = (c5_real)t_normal(&seed);
  if (k->mask_kind) {
    const long n = k->n, w = k->w;
    s->mask = malloc((size_t)(k->batch * n));
    for (long i = 0; i < k->batch * n; i++) s->mask[i] = t_uniform(&seed) >= 0.3;
    if (k->mask_kind == 2) {
      /* row 1: every key masked; row 0: the first and the last w + 1 keys masked, so that
         with an exact window the first and last queries (whose slots include out-of-range
         and zero-padded ones) see no key; the middle keeps its random mask */
      for (long t = 0; t < n && k->batch > 1; t++) s->mask[n + t] = 0;
      for (long t = 0; t < n; t++)
        if (t <= w || t >= n - 1 - w) s->mask[t] = 0;
    }
  }
  return C5_OK;
}

static double maxabs(const double *a, long n)
{
  double m = 0;
  for (long i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
  return m;
}

/* Forward: library vs naive. */
static int check_forward(const acase *k, unsigned long long seed)
{
  setup s;
  int ok = 0;
  double err = 0;
  long nuni = 0;
  T_OK(setup_make(&s, k, seed));
  const long N = k->batch * k->n * k->dim;
  T_OK(c5_attn_local_forward(&s.a, s.p, k->batch, k->n, 0, s.x, s.mask, s.c, NULL, NULL, s.out));
  nuni = naive_forward(k, &s.dp, s.xd, s.mask, s.ref);
  double mr = maxabs(s.ref, N);
  for (long i = 0; i < N; i++) err = fmax(err, fabs((double)s.out[i] - s.ref[i]));
  err /= mr;
  T_CHECK(mr > 0 && err <= FWD_TOL, "%s: max |out - naive| / max |naive| = %.3e > %.1e", k->name, err, FWD_TOL);
  T_CHECK(k->mask_kind != 2 || nuni > 0, "%s: no query had all its slots masked (the case is vacuous)", k->name);
  T_CHECK(t_close(k->name, s.out, s.ref, N, FWD_TOL * 10, 1e-3 * mr), "%s: elementwise", k->name);
  ok = 1;
fail:
  printf("fwd  %-52s %s (rel %.2e, %ld all-masked rows)\n", k->name, ok ? "ok" : "FAILED", err, nuni);
  setup_free(&s);
  return ok;
}

#if C5_USE_DOUBLE
static double loss(setup *s)
{
  const long N = s->k.batch * s->k.n * s->k.dim;
  double l = 0;
  for (long i = 0; i < N; i++) l += (double)s->out[i] * s->g[i];
  return l;
}
#endif

/* Backward: every gradient against central differences (double), chunkings against each other. */
static int check_backward(const acase *k, unsigned long long seed)
{
  setup s;
  int ok = 0;
  double worst = 0;
  c5_real *snap = NULL, *dx2 = NULL;
  T_OK(setup_make(&s, k, seed));
  const long N = k->batch * k->n * k->dim, tot = c5_params_total(s.p);
  snap = malloc((size_t)(tot + N) * sizeof *snap);
  dx2 = snap + tot;
  /* chunk = lb + lf: many chunk boundaries (both phases); compared below with one chunk */
  s.a.chunk = k->lb + k->lf > 0 ? k->lb + k->lf : 1;
  c5_params_zero_grad(s.p);
  T_OK(c5_attn_local_forward(&s.a, s.p, k->batch, k->n, 0, s.x, s.mask, s.c, NULL, NULL, s.out));
  T_OK(c5_attn_local_backward(&s.a, s.p, s.c, s.x, s.g, NULL, s.dx));
  for (long i = 0; i < N; i++) T_CHECK(isfinite((double)s.dx[i]), "%s: dx[%ld] = %g", k->name, i, (double)s.dx[i]);
  memcpy(snap, c5_params_grad(s.p, 0), (size_t)tot * sizeof *snap);
  s.a.chunk = 1000;
  c5_params_zero_grad(s.p);
  T_OK(c5_attn_local_forward(&s.a, s.p, k->batch, k->n, 0, s.x, s.mask, s.c, NULL, NULL, s.out));
  T_OK(c5_attn_local_backward(&s.a, s.p, s.c, s.x, s.g, NULL, dx2));
  {
    double e = 0, m = 0;
    const c5_real *g2 = c5_params_grad(s.p, 0);
    for (long i = 0; i < tot; i++) { e = fmax(e, fabs((double)snap[i] - g2[i])); m = fmax(m, fabs((double)g2[i])); }
    for (long i = 0; i < N; i++) { e = fmax(e, fabs((double)s.dx[i] - dx2[i])); m = fmax(m, fabs((double)dx2[i])); }
    T_CHECK(m > 0 && e <= (C5_USE_DOUBLE ? 1e-13 : 1e-5) * m, "%s: chunkings disagree: %.3e of %.3e", k->name, e, m);
    for (long i = 0; i < tot; i++) T_CHECK(isfinite((double)g2[i]), "%s: gradient %ld not finite", k->name, i);
  }
#if C5_USE_DOUBLE
  /* a backward spends its forward (dq goes over the head outputs, its last product over q/k/v): a second is
     refused, and so is the output formed again from the head outputs */
  T_CHECK(c5_attn_local_backward(&s.a, s.p, s.c, s.x, s.g, NULL, dx2) == C5_ERR_ARG &&
          strstr(c5_last_error(), "holds no forward"), "%s: a second backward: %s", k->name, c5_last_error());
  c5_error_clear();
  T_CHECK(c5_attn_local_output(&s.a, s.p, s.c, NULL, NULL, dx2) == C5_ERR_ARG && strstr(c5_last_error(), "no head outputs"),
          "%s: the output after a backward: %s", k->name, c5_last_error());
  c5_error_clear();
  /* gradients accumulate: a second forward and backward double them */
  T_OK(c5_attn_local_forward(&s.a, s.p, k->batch, k->n, 0, s.x, s.mask, s.c, NULL, NULL, s.out));
  T_OK(c5_attn_local_backward(&s.a, s.p, s.c, s.x, s.g, NULL, dx2));
  for (long i = 0; i < tot; i++)
    T_CHECK(fabs(c5_params_grad(s.p, 0)[i] - 2 * snap[i]) <= 1e-12 * (fabs(snap[i]) + 1),
            "%s: parameter gradients do not accumulate (+=)", k->name);
  /* finite differences, tensor by tensor */
  {
    const char *names[5] = { "x", "norm.weight", "norm.bias", "to_qkv.weight", "to_out.weight" };
    long idx[5] = { -1, s.a.norm_w, s.a.norm_b, s.a.to_qkv, s.a.to_out };
    for (int tn = 0; tn < 5; tn++) {
      c5_real *val = idx[tn] < 0 ? s.x : c5_params_value(s.p, idx[tn]);
      const c5_real *an = idx[tn] < 0 ? s.dx : snap + (c5_params_grad(s.p, idx[tn]) - c5_params_grad(s.p, 0));
      long cnt = idx[tn] < 0 ? N : c5_params_numel(s.p, idx[tn]);
      double num = 0, den = 0;
      for (long i = 0; i < cnt; i++) {
        c5_real v0 = val[i];
        val[i] = v0 + FD_H;
        T_OK(c5_attn_local_forward(&s.a, s.p, k->batch, k->n, 0, s.x, s.mask, s.c, NULL, NULL, s.out));
        double lp = loss(&s);
        val[i] = v0 - FD_H;
        T_OK(c5_attn_local_forward(&s.a, s.p, k->batch, k->n, 0, s.x, s.mask, s.c, NULL, NULL, s.out));
        double lm = loss(&s);
        val[i] = v0;
        double fd = (lp - lm) / (2 * FD_H);
        num += (fd - an[i]) * (fd - an[i]);
        den += fd * fd;
      }
      T_CHECK(den > 0, "%s: d%s: the finite-difference gradient is zero", k->name, names[tn]);
      double rel = sqrt(num / den);
      worst = fmax(worst, rel);
      T_CHECK(rel <= FD_TOL, "%s: d%s: ||analytic - fd|| / ||fd|| = %.3e > %.1e", k->name, names[tn], rel, FD_TOL);
    }
  }
#endif
  ok = 1;
fail:
  if (C5_USE_DOUBLE) printf("bwd  %-52s %s (fd rel %.2e)\n", k->name, ok ? "ok" : "FAILED", worst);
  else printf("bwd  %-52s %s (finite; fd in double only)\n", k->name, ok ? "ok" : "FAILED");
  free(snap);
  setup_free(&s);
  return ok;
}

static int invalid_args(void)
{
  c5_params *p = NULL;
  c5_attn_local a, a2;
  c5_attn_local_cache *c = NULL;
  c5_real x[64] = { 0 }, out[64];
  int ok = 0;
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_FAILS(c5_attn_local_init(&a, p, "ar_attn", 8, 2, 4, 4, 1, 1, 1, 0), C5_ERR_ARG, "look_forward 1 must be 0");
  T_FAILS(c5_attn_local_init(&a, p, "light_attn", 8, 2, 4, 0, 1, 1, 0, 1), C5_ERR_ARG, "window_size 0");
  T_OK(c5_attn_local_init(&a, p, "light_attn", 8, 2, 4, 4, 1, 1, 0, 1));
  T_FAILS(c5_attn_local_init(&a2, p, "light_attn", 8, 2, 4, 4, 1, 1, 0, 1), C5_ERR_ARG, "registered twice");
  T_OK(c5_params_alloc(p));
  T_OK(c5_attn_local_cache_create(&a, 1, 4, &c));
  T_FAILS(c5_attn_local_forward(&a, p, 1, 8, 0, x, NULL, c, NULL, NULL, out), C5_ERR_SHAPE, "cache made for at most [1, 4, 8]");
  ok = 1;
fail:
  c5_attn_local_cache_destroy(&c);
  c5_params_destroy(&p);
  printf("%-57s %s\n", "invalid arguments are errors", ok ? "ok" : "FAILED");
  return ok;
}

/* A larger masked case, for the thread-count comparison. */
static int dump(const char *path)
{
  acase k = { "dump", 32, 2, 16, 16, 1, 1, 0, 1, 2, 1000, 2 };
  setup s;
  int ok = 0;
  FILE *f = NULL;
  T_OK(setup_make(&s, &k, 4242));
  const long N = k.batch * k.n * k.dim;
  c5_params_zero_grad(s.p);
  T_OK(c5_attn_local_forward(&s.a, s.p, k.batch, k.n, 0, s.x, s.mask, s.c, NULL, NULL, s.out));
  T_OK(c5_attn_local_backward(&s.a, s.p, s.c, s.x, s.g, NULL, s.dx));
  f = fopen(path, "wb");
  T_CHECK(f != NULL, "cannot write %s", path);
  T_CHECK(fwrite(s.out, sizeof *s.out, (size_t)N, f) == (size_t)N && fwrite(s.dx, sizeof *s.dx, (size_t)N, f) == (size_t)N &&
          fwrite(c5_params_grad(s.p, 0), sizeof(c5_real), (size_t)c5_params_total(s.p), f) == (size_t)c5_params_total(s.p),
          "short write to %s", path);
  ok = 1;
fail:
  if (f) fclose(f);
  setup_free(&s);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int ok = 1;
  if (argc == 3 && !strcmp(argv[1], "--dump")) {
    ok = dump(argv[2]);
    MPI_Finalize();
    return ok ? 0 : 1;
  }
  /* name, dim, heads, dim_head, window, lb, lf, causal, exact, batch, n, mask */
  const acase fwd[] = {
    { "routed: exact window, n % w = 0", 16, 2, 8, 4, 1, 1, 0, 1, 2, 24, 0 },
    { "routed: exact window, n % w = 0, mask", 16, 2, 8, 4, 1, 1, 0, 1, 2, 24, 1 },
    { "routed: exact window, n % w != 0", 16, 2, 8, 4, 1, 1, 0, 1, 2, 27, 0 },
    { "routed: exact window, n % w != 0, mask", 16, 2, 8, 4, 1, 1, 0, 1, 2, 27, 1 },
    { "routed: fully masked rows and windows", 16, 2, 8, 4, 1, 1, 0, 1, 3, 27, 2 },
    { "routed: one window, n < w, mask", 16, 2, 8, 8, 1, 1, 0, 1, 2, 5, 1 },
    { "autoregressive: causal, not exact", 16, 2, 8, 5, 1, 0, 1, 0, 2, 23, 0 },
    { "autoregressive: causal, not exact, masked", 16, 2, 8, 5, 1, 0, 1, 0, 3, 23, 2 },
    { "causal, exact window, mask", 16, 2, 8, 5, 1, 0, 1, 1, 2, 23, 1 },
    { "not causal, not exact, masked", 16, 2, 8, 4, 1, 1, 0, 0, 3, 27, 2 },
    { "look_backward 2, look_forward 1, exact, masked", 16, 2, 8, 3, 2, 1, 0, 1, 3, 26, 2 },
    { "look 0 each way, not exact", 16, 2, 8, 4, 0, 0, 0, 0, 2, 18, 1 },
  };
  for (size_t i = 0; i < sizeof fwd / sizeof fwd[0]; i++) ok &= check_forward(&fwd[i], 1000 + i);
  const acase bwd[] = {
    { "routed: n 13, w 4, no mask", 8, 2, 4, 4, 1, 1, 0, 1, 2, 13, 0 },
    { "routed: n 13, w 4, fully masked rows", 8, 2, 4, 4, 1, 1, 0, 1, 2, 13, 2 },
    { "autoregressive: n 13, w 4, mask", 8, 2, 4, 4, 1, 0, 1, 0, 2, 13, 1 },
    { "not causal, not exact, lb 2, fully masked rows", 8, 2, 4, 3, 2, 1, 0, 0, 2, 13, 2 },
  };
  for (size_t i = 0; i < sizeof bwd / sizeof bwd[0]; i++) ok &= check_backward(&bwd[i], 2000 + i);
  ok &= invalid_args();
  printf("%s\n", ok ? "PASS" : "FAIL");
  MPI_Finalize();
  return ok ? 0 : 1;
}
