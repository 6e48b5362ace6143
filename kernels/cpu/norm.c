/* norm.c - RMSNorm (the reference's: x / max(||x||, 1e-12) * sqrt(dim) * gamma)
   and LayerNorm (eps 1e-5, with bias) on the CPU, forward and backward, rows
   in parallel, sums in double. */
#include <math.h>
#include "cpu.h"

#define L2_EPS 1e-12

/* y = x / max(||x||, 1e-12) * sqrt(dim) * gamma; rnorm[r] = 1 / max(||x_r||, 1e-12). */
c5_status c5k_rmsnorm_forward_cpu(c5k_ctx *ctx, const c5_real *x, const c5_real *gamma, long rows, int dim,
                                  void *y_, c5_dtype ytype, double *rnorm)
{
  if (ytype != C5_DTYPE_REAL)
    return C5K_ERR(C5_ERR_NOTIMPL, "rmsnorm_forward: the CPU writes %s rows, not %s", c5_dtype_name(C5_DTYPE_REAL),
                   c5_dtype_name(ytype));
  c5_real *y = y_;
  const double sc = sqrt((double)dim);
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++) {
    const c5_real *xr = x + r * dim;
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
    double rn = 1.0 / fmax(sqrt(ss), L2_EPS);
    rnorm[r] = rn;
    for (int i = 0; i < dim; i++) y[r * dim + i] = (c5_real)(xr[i] * rn * sc * gamma[i]);
  }
  return C5_OK;
}

/* dx = (du - u (u . du)) / ||x|| with u = x / ||x||, du = dy sqrt(dim) gamma
   (below the clamp: dx = du / 1e-12); dgamma += sum_r dy u sqrt(dim).
   Work: c5k_rowpart_work(rows, dim) doubles. */
c5_status c5k_rmsnorm_backward_cpu(c5k_ctx *ctx, const c5_real *x, const c5_real *gamma, const double *rnorm,
                                   const c5_real *dy, long rows, int dim, const c5_real *res, c5_real *dx,
                                   double *dgamma)
{
  const double sc = sqrt((double)dim);
  /* dgamma: a fixed row partition, summed in order (independent of threads) */
  const long part = C5K_ROWPART;
  long np = (rows + part - 1) / part;
  double *acc = ctx->work;   /* [np][dim] */
#pragma omp parallel for schedule(static)
  for (long p = 0; p < np; p++) {
    double *a = acc + p * dim;
    for (int i = 0; i < dim; i++) a[i] = 0;
    for (long r = p * part; r < rows && r < (p + 1) * part; r++) {
      const c5_real *xr = x + r * dim, *dyr = dy + r * dim;
      double rn = rnorm[r], ud = 0;
      for (int i = 0; i < dim; i++) {
        a[i] += (double)dyr[i] * xr[i] * rn * sc;
        ud += (double)xr[i] * rn * dyr[i] * sc * gamma[i];
      }
      int clamped = rn >= 1.0 / L2_EPS;
      for (int i = 0; i < dim; i++) {
        double du = (double)dyr[i] * sc * gamma[i];
        const c5_real g = (c5_real)(clamped ? du * rn : (du - xr[i] * rn * ud) * rn);
        dx[r * dim + i] = res ? g + res[r * dim + i] : g;
      }
    }
  }
  c5k_rowpart_add(acc, np, dim, dim, dgamma);
  return C5_OK;
}

/* LayerNorm (PyTorch's, biased variance, eps inside the sqrt):
   y = (x - mean) * rstd * w + b; saves mean and rstd per row. */
c5_status c5k_layernorm_forward_cpu(c5k_ctx *ctx, const c5_real *x, const c5_real *w, const c5_real *b, long rows,
                                    int dim, double eps, void *y_, c5_dtype ytype, double *mean, double *rstd)
{
  if (ytype != C5_DTYPE_REAL)
    return C5K_ERR(C5_ERR_NOTIMPL, "layernorm_forward: the CPU writes %s rows, not %s", c5_dtype_name(C5_DTYPE_REAL),
                   c5_dtype_name(ytype));
  c5_real *y = y_;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++) {
    const c5_real *xr = x + r * dim;
    double m = 0, v = 0;
    for (int i = 0; i < dim; i++) m += xr[i];
    m /= dim;
    for (int i = 0; i < dim; i++) v += ((double)xr[i] - m) * ((double)xr[i] - m);
    double rs = 1.0 / sqrt(v / dim + eps);
    mean[r] = m;
    rstd[r] = rs;
    for (int i = 0; i < dim; i++) y[r * dim + i] = (c5_real)(((double)xr[i] - m) * rs * w[i] + b[i]);
  }
  return C5_OK;
}

/* dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy w; dw += dy xhat; db += dy. */
c5_status c5k_layernorm_backward_cpu(c5k_ctx *ctx, const c5_real *x, const c5_real *w, const double *mean,
                                     const double *rstd, const c5_real *dy, long rows, int dim, const c5_real *res,
                                     c5_real *dx, double *dw, double *db)
{
  const long part = C5K_ROWPART;
  long np = (rows + part - 1) / part;
  double *acc = ctx->work;   /* [np][2 dim] */
#pragma omp parallel for schedule(static)
  for (long p = 0; p < np; p++) {
    double *aw = acc + p * 2 * dim, *ab = aw + dim;
    for (int i = 0; i < 2 * dim; i++) aw[i] = 0;
    for (long r = p * part; r < rows && r < (p + 1) * part; r++) {
      const c5_real *xr = x + r * dim, *dyr = dy + r * dim;
      double m = mean[r], rs = rstd[r], sg = 0, sgx = 0;
      for (int i = 0; i < dim; i++) {
        double xh = ((double)xr[i] - m) * rs, g = (double)dyr[i] * w[i];
        aw[i] += (double)dyr[i] * xh;
        ab[i] += dyr[i];
        sg += g;
        sgx += g * xh;
      }
      sg /= dim;
      sgx /= dim;
      for (int i = 0; i < dim; i++) {
        double xh = ((double)xr[i] - m) * rs;
        const c5_real g = (c5_real)(rs * ((double)dyr[i] * w[i] - sg - xh * sgx));
        dx[r * dim + i] = res ? g + res[r * dim + i] : g;
      }
    }
  }
  c5k_rowpart_add(acc, np, 2 * dim, dim, dw);
  c5k_rowpart_add(acc + dim, np, 2 * dim, dim, db);
  return C5_OK;
}
