/* norm.cu - RMSNorm and LayerNorm on the GPU, forward and backward, as
   kernels/cpu/norm.c: one warp a row for the row's sums (double, a
   fixed tree), and the parameter gradients through the fixed row partition
   (rowsum.cuh), so dgamma, dw and db are the CPU's sums in the CPU's order.
   The forwards may write y in bf16 (kernels.h ytype: the CPU's c5_real
   value rounded once more), for products that take it so. */
#include <math.h>
#include "rowsum.cuh"

#define L2_EPS 1e-12

/* y = x / max(||x||, 1e-12) * sqrt(dim) * gamma; rnorm[r] = 1 / max(||x_r||, 1e-12). T: c5_real, or bf16 (kernels.h
   ytype: y rounded once more, c5k_as) */
template <typename T>
__global__ void rmsnorm_fwd(long rows, const c5_real *x, const c5_real *gamma, int dim, double sc, T *y,
                            double *rnorm)
{
  const long r = c5k_warp_row();
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const c5_real *xr = x + r * dim;
  double ss = 0;
  for (int i = lane; i < dim; i += 32) ss += (double)xr[i] * xr[i];
  ss = c5k_warp_sum(ss);
  const double rn = 1.0 / fmax(sqrt(ss), L2_EPS);
  if (lane == 0) rnorm[r] = rn;
  for (int i = lane; i < dim; i += 32) y[r * dim + i] = c5k_as<T>((c5_real)(xr[i] * rn * sc * gamma[i]));
}

extern "C" c5_status c5k_rmsnorm_forward_cuda(c5k_ctx *ctx, const c5_real *x, const c5_real *gamma, long rows, int dim,
                                              void *y, c5_dtype ytype, double *rnorm)
{
  const char *op = "rmsnorm_forward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  C5_CALL_K(c5k_cuda_ytype(ytype, op));
  if (rows <= 0) return C5_OK;
  const unsigned blocks = c5k_warp_row_blocks(rows);
  const double sc = sqrt((double)dim);
  if (ytype == C5_DTYPE_BF16)
    rmsnorm_fwd<<<blocks, C5K_ROW_THREADS, 0, dev->stream>>>(rows, x, gamma, dim, sc, (__nv_bfloat16 *)y, rnorm);
  else
    rmsnorm_fwd<<<blocks, C5K_ROW_THREADS, 0, dev->stream>>>(rows, x, gamma, dim, sc, (c5_real *)y, rnorm);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* dx = (du - u (u . du)) / ||x|| (+ res), u = x / ||x||, du = dy sqrt(dim) gamma (below the clamp: du / 1e-12).
   res may be dx: each lane reads its elements before writing them. */
__global__ void rmsnorm_bwd_dx(long rows, const c5_real *x, const c5_real *gamma, const double *rnorm,
                               const c5_real *dy, int dim, double sc, const c5_real *res, c5_real *dx)
{
  const long r = c5k_warp_row();
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const c5_real *xr = x + r * dim, *dyr = dy + r * dim;
  const double rn = rnorm[r];
  double ud = 0;
  for (int i = lane; i < dim; i += 32) ud = c5k_add(ud, (double)xr[i] * rn * dyr[i] * sc * gamma[i]);
  ud = c5k_warp_sum(ud);
  const int clamped = rn >= 1.0 / L2_EPS;
  /* each product and difference rounded as the CPU rounds it: du - u (u . du) cancels (to nothing at dim 1), and
     a fused multiply-add there gave another residue (2e-1 norm-wise at dim 1) */
  for (int i = lane; i < dim; i += 32) {
    double du = (double)dyr[i] * sc * gamma[i];
    const c5_real g = (c5_real)(clamped ? du * rn : c5k_mul(c5k_sub(du, c5k_mul(c5k_mul((double)xr[i], rn), ud)), rn));
    dx[r * dim + i] = res ? g + res[r * dim + i] : g;
  }
}

/* dgamma's term: dy u sqrt(dim) */
struct rms_dgamma {
  const c5_real *x, *dy;
  const double *rnorm;
  int dim;
  double sc;
  __device__ void operator()(long r, int i, double *t) const
  {
    t[0] = (double)dy[r * dim + i] * x[r * dim + i] * rnorm[r] * sc;
  }
};

extern "C" c5_status c5k_rmsnorm_backward_cuda(c5k_ctx *ctx, const c5_real *x, const c5_real *gamma,
                                               const double *rnorm, const c5_real *dy, long rows, int dim,
                                               const c5_real *res, c5_real *dx, double *dgamma)
{
  const char *op = "rmsnorm_backward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (rows <= 0) return C5_OK;
  const double sc = sqrt((double)dim);
  rmsnorm_bwd_dx<<<c5k_warp_row_blocks(rows), C5K_ROW_THREADS, 0, dev->stream>>>(rows, x, gamma, rnorm, dy, dim, sc,
                                                                                 res, dx);
  C5K_CUDA_LAUNCHED(op);
  rms_dgamma term = { x, dy, rnorm, dim, sc };
  c5k_rowpart_out<1> out = { { dgamma } };
  return c5k_rowpart_sum<1>(dev, op, term, rows, dim, out);
}

/* PyTorch's LayerNorm (biased variance, eps inside the sqrt): y = (x - mean) rstd w + b. T as rmsnorm_fwd's. */
template <typename T>
__global__ void layernorm_fwd(long rows, const c5_real *x, const c5_real *w, const c5_real *b, int dim, double eps,
                              T *y, double *mean, double *rstd)
{
  const long r = c5k_warp_row();
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const c5_real *xr = x + r * dim;
  double m = 0, v = 0;
  for (int i = lane; i < dim; i += 32) m += xr[i];
  m = c5k_warp_sum(m) / dim;
  for (int i = lane; i < dim; i += 32) v += ((double)xr[i] - m) * ((double)xr[i] - m);
  v = c5k_warp_sum(v);
  const double rs = 1.0 / sqrt(v / dim + eps);
  if (lane == 0) {
    mean[r] = m;
    rstd[r] = rs;
  }
  for (int i = lane; i < dim; i += 32) y[r * dim + i] = c5k_as<T>((c5_real)(((double)xr[i] - m) * rs * w[i] + b[i]));
}

extern "C" c5_status c5k_layernorm_forward_cuda(c5k_ctx *ctx, const c5_real *x, const c5_real *w, const c5_real *b,
                                                long rows, int dim, double eps, void *y, c5_dtype ytype, double *mean,
                                                double *rstd)
{
  const char *op = "layernorm_forward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  C5_CALL_K(c5k_cuda_ytype(ytype, op));
  if (rows <= 0) return C5_OK;
  const unsigned blocks = c5k_warp_row_blocks(rows);
  if (ytype == C5_DTYPE_BF16)
    layernorm_fwd<<<blocks, C5K_ROW_THREADS, 0, dev->stream>>>(rows, x, w, b, dim, eps, (__nv_bfloat16 *)y, mean,
                                                               rstd);
  else
    layernorm_fwd<<<blocks, C5K_ROW_THREADS, 0, dev->stream>>>(rows, x, w, b, dim, eps, (c5_real *)y, mean, rstd);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* dx = rstd (g - mean(g) - xhat mean(g xhat)) (+ res), g = dy w. res as rmsnorm_bwd_dx's. */
__global__ void layernorm_bwd_dx(long rows, const c5_real *x, const c5_real *w, const double *mean, const double *rstd,
                                 const c5_real *dy, int dim, const c5_real *res, c5_real *dx)
{
  const long r = c5k_warp_row();
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const c5_real *xr = x + r * dim, *dyr = dy + r * dim;
  const double m = mean[r], rs = rstd[r];
  double sg = 0, sgx = 0;
  for (int i = lane; i < dim; i += 32) {
    double xh = ((double)xr[i] - m) * rs, g = (double)dyr[i] * w[i];
    sg += g;
    sgx += g * xh;
  }
  sg = c5k_warp_sum(sg) / dim;
  sgx = c5k_warp_sum(sgx) / dim;
  for (int i = lane; i < dim; i += 32) {
    double xh = ((double)xr[i] - m) * rs;
    const c5_real g = (c5_real)(rs * ((double)dyr[i] * w[i] - sg - xh * sgx));
    dx[r * dim + i] = res ? g + res[r * dim + i] : g;
  }
}

/* dw's term dy xhat, db's dy */
struct ln_dwdb {
  const c5_real *x, *dy;
  const double *mean, *rstd;
  int dim;
  __device__ void operator()(long r, int i, double *t) const
  {
    const double d = dy[r * dim + i];
    t[0] = d * (((double)x[r * dim + i] - mean[r]) * rstd[r]);
    t[1] = d;
  }
};

extern "C" c5_status c5k_layernorm_backward_cuda(c5k_ctx *ctx, const c5_real *x, const c5_real *w, const double *mean,
                                                 const double *rstd, const c5_real *dy, long rows, int dim,
                                                 const c5_real *res, c5_real *dx, double *dw, double *db)
{
  const char *op = "layernorm_backward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (rows <= 0) return C5_OK;
  layernorm_bwd_dx<<<c5k_warp_row_blocks(rows), C5K_ROW_THREADS, 0, dev->stream>>>(rows, x, w, mean, rstd, dy, dim,
                                                                                   res, dx);
  C5K_CUDA_LAUNCHED(op);
  ln_dwdb term = { x, dy, mean, rstd, dim };
  c5k_rowpart_out<2> out = { { dw, db } };
  return c5k_rowpart_sum<2>(dev, op, term, rows, dim, out);
}
