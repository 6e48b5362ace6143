/* cosine_route.c - the router's cosine logits and their backward through
   both normalizations (kernels.h: cosine_route_*). Every sum runs in index
   order in double within one token or routing token, so the threads only
   split independent rows. */
#include <math.h>
#include "cpu.h"

#define L2_EPS 1e-12   /* F.normalize's clamp */

/* max(||v||, eps), the sum of squares in double, in order */
static double l2norm(const c5_real *v, int dim)
{
  double ss = 0;
  for (int i = 0; i < dim; i++) ss += (double)v[i] * v[i];
  return fmax(sqrt(ss), L2_EPS);
}

/* v[b, q, j] = scale v[b, q, j] / (|x_bj| |w_q|): the logits from x . w, and the
   same factor on their gradient (the derivative of the scaled cosine with the
   norms held). */
static void by_norms(long batch, int routes, long n, double scale, const double *xnorm, const double *wnorm,
                     c5_real *v)
{
#pragma omp parallel for schedule(static)
  for (long row = 0; row < batch * routes; row++) {
    long b = row / routes;
    int q = (int)(row % routes);
    for (long j = 0; j < n; j++)
      v[row * n + j] = (c5_real)(scale * v[row * n + j] / (xnorm[b * n + j] * wnorm[q]));
  }
}

c5_status c5k_cosine_route_forward_cpu(c5k_ctx *ctx, long batch, int routes, long n, int dim, const c5_real *x,
                                       const c5_real *w, double scale, c5_real *s, double *xnorm, double *wnorm)
{
  (void)ctx;
  for (int q = 0; q < routes; q++) wnorm[q] = l2norm(w + (long)q * dim, dim);
#pragma omp parallel for schedule(static)
  for (long t = 0; t < batch * n; t++) xnorm[t] = l2norm(x + t * dim, dim);
  by_norms(batch, routes, n, scale, xnorm, wnorm, s);
  return C5_OK;
}

c5_status c5k_cosine_route_backward_cpu(c5k_ctx *ctx, long batch, int routes, long n, int dim, const c5_real *x,
                                        const c5_real *w, const double *xnorm, const double *wnorm, double scale,
                                        c5_real *g, c5_real *dx)
{
  (void)ctx;
  /* through the scale and the norms: g = dL/d(x . w) for raw x and w */
  by_norms(batch, routes, n, scale, xnorm, wnorm, g);
  /* dx_j += P_j (sum_q g_qj w_q), P_j = I - x_j x_j^T / |x_j|^2 (none below the clamp) */
  for (long b = 0; b < batch; b++) {
    const c5_real *gb = g + b * routes * n, *xb = x + b * n * dim;
    c5_real *dxb = dx + b * n * dim;
#pragma omp parallel for schedule(static)
    for (long j = 0; j < n; j++) {
      double v[dim], xv = 0, nx = xnorm[b * n + j];
      for (int i = 0; i < dim; i++) {
        double a = 0;
        for (int q = 0; q < routes; q++) a += (double)gb[q * n + j] * w[q * dim + i];
        v[i] = a;
        xv += a * xb[j * dim + i];
      }
      double proj = nx > L2_EPS ? xv / (nx * nx) : 0.0;
      for (int i = 0; i < dim; i++) dxb[j * dim + i] += (c5_real)(v[i] - proj * xb[j * dim + i]);
    }
  }
  return C5_OK;
}

c5_status c5k_cosine_route_backward_w_cpu(c5k_ctx *ctx, int routes, int dim, const c5_real *w, const double *wnorm,
                                          double *dwacc)
{
  (void)ctx;
  for (int q = 0; q < routes; q++) {
    const c5_real *wq = w + (long)q * dim;
    double *dq = dwacc + (long)q * dim;
    double wv = 0, nw = wnorm[q];
    for (int i = 0; i < dim; i++) wv += dq[i] * wq[i];
    double proj = nw > L2_EPS ? wv / (nw * nw) : 0.0;
    for (int i = 0; i < dim; i++) dq[i] -= proj * wq[i];
  }
  return C5_OK;
}
