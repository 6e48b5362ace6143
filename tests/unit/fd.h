/* fd.h - the finite-difference check of a module's backward (modules.h
   interface), shared by test_modules_fd.c and test_routed_ar_attn.c: dx and
   every parameter gradient against central differences of
   loss = sum(out * g). Each perturbation must keep every router's selection,
   else the point is at a kink: it is left out and counted (at most 2% of
   the values may be). Meaningful in double precision only. Header-only. */
#ifndef C5_FD_H
#define C5_FD_H
#include "modules.h"

/* Concatenated indices of every router of the last forward (to detect a changed selection). */
static inline long fd_selection(const mod_t *mt, void *c, long *buf, long cap)
{
  long n = 0;
  const c5_routing *rt;
  for (int i = 0; (rt = mt->routing(c, i)); i++)
    for (long r = 0; rt->routed && r < rt->rows; r++)
      for (long e = rt->start[r]; e < rt->start[r] + rt->count[r] && n < cap; e++) buf[n++] = rt->idx[e];
  return n;
}

static inline double fd_loss(const mod_t *mt, void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x,
                             const uint8_t *mask, void *c, c5_real *out, const c5_real *g, long N, c5_status *st)
{
  *st = mt->fwd(m, d, l, b, x, mask, c, out);
  double L = 0;
  for (long i = 0; i < N; i++) L += (double)out[i] * g[i];
  return L;
}

/* One module of config cfg on one rank (d), x [b, n, dim], ~20% of the tokens masked when `masked`;
   parameters from mod_fill_params, then x and g ~ N(0, 1), then the mask, all drawn from seed.
   Requires ||analytic - fd|| / ||fd|| <= 1e-6 (h = 1e-6) over the values whose perturbations keep
   every selection, fewer than total / 50 + 1 kinks, and a nonzero gradient. Prints one line:
   prefix, what left-aligned in `width` columns, ok / FAILED and the numbers. Returns 1 if it passed. */
static inline int fd_check(const char *prefix, int width, const char *what, const mod_t *mt, const void *cfg, long b,
                           long n, int dim, int masked, unsigned long long seed, c5_dist *d)
{
  const double h = 1e-6, tol = 1e-6;
  enum { CAP = 1 << 14 };
  static long sel0[CAP], sel1[CAP];
  c5_params *p = NULL;
  void *m = NULL, *c = NULL;
  long N = b * n * dim, ns0, ns1, total = 0;
  c5_real *x = malloc((size_t)N * sizeof *x), *g = malloc((size_t)N * sizeof *g), *out = calloc((size_t)N, sizeof *out);
  c5_real *dx = calloc((size_t)N, sizeof *dx);
  uint8_t *mask = masked ? malloc((size_t)(b * n)) : NULL;
  double num = 0, den = 0;
  int ok = 0, kinks = 0;
  c5_layout lay;
  c5_status st;
  T_CHECK(x && g && out && dx && (mask || !masked), "%s: out of memory", what);
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  T_OK(mt->create(cfg, p, &m));
  T_OK(c5_params_alloc(p));
  mod_fill_params(p, &seed);
  for (long i = 0; i < N; i++) { x[i] = (c5_real)t_normal(&seed); g[i] = (c5_real)t_normal(&seed); }
  if (mask) for (long i = 0; i < b * n; i++) mask[i] = t_uniform(&seed) > 0.2;
  long unit;
  T_OK(mt->unit(cfg, &unit));
  T_OK(c5_layout_compute(d, n, unit, &lay));
  T_OK(mt->cache(m, b, n, &c));
  (void)fd_loss(mt, m, d, &lay, b, x, mask, c, out, g, N, &st);
  T_OK(st);
  ns0 = fd_selection(mt, c, sel0, CAP);
  c5_params_zero_grad(p);
  T_OK(mt->bwd(m, d, c, x, g, dx));
  /* every x entry, then every parameter entry */
  total = N + c5_params_total(p);
  c5_real *pv = c5_params_value(p, 0), *pg = c5_params_grad(p, 0);
  for (long i = 0; i < total; i++) {
    c5_real *v = i < N ? &x[i] : &pv[i - N];
    double an = i < N ? dx[i] : pg[i - N];
    c5_real v0 = *v;
    *v = v0 + (c5_real)h;
    double lp = fd_loss(mt, m, d, &lay, b, x, mask, c, out, g, N, &st);
    T_OK(st);
    ns1 = fd_selection(mt, c, sel1, CAP);
    int same = ns1 == ns0 && !memcmp(sel0, sel1, (size_t)ns0 * sizeof *sel0);
    *v = v0 - (c5_real)h;
    double lm = fd_loss(mt, m, d, &lay, b, x, mask, c, out, g, N, &st);
    T_OK(st);
    ns1 = fd_selection(mt, c, sel1, CAP);
    same = same && ns1 == ns0 && !memcmp(sel0, sel1, (size_t)ns0 * sizeof *sel0);
    *v = v0;
    if (!same) { kinks++; continue; }
    double fd = (lp - lm) / (2 * h);
    num += (fd - an) * (fd - an);
    den += fd * fd;
  }
  T_CHECK(kinks < total / 50 + 1, "%s: %d of %ld perturbations changed a selection", what, kinks, total);
  T_CHECK(den > 0, "%s: zero gradient: the check would be vacuous", what);
  T_CHECK(sqrt(num / den) <= tol, "%s: ||analytic - fd|| / ||fd|| = %.3e > %.1e", what, sqrt(num / den), tol);
  ok = 1;
fail:
  printf("%s%-*s %s (rel %.2e, %ld values, %d at a kink)\n", prefix, width, what, ok ? "ok" : "FAILED",
         den > 0 ? sqrt(num / den) : 0.0, N + (p ? c5_params_total(p) : 0), kinks);
  mod_free(mt, &m, &c);
  c5_params_destroy(&p);
  free(x); free(g); free(out); free(dx); free(mask);
  return ok;
}
#endif
