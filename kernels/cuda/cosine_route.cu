/* cosine_route.cu - the router's cosine logits and their backward through
   both normalizations on the GPU (kernels/cpu/cosine_route.c). Every sum
   runs in index order in double within one thread (one token or one
   routing token), each operation rounded on its own, so the bits are the
   CPU's; threads split only independent rows. */
#include "cuda_internal.cuh"

#define L2_EPS 1e-12   /* F.normalize's clamp */

/* max(||v||, eps), the sum of squares in double, in order */
__device__ double l2norm(const c5_real *v, int dim)
{
  double ss = 0;
  for (int i = 0; i < dim; i++) ss = c5k_add(ss, c5k_mul((double)v[i], (double)v[i]));
  return fmax(sqrt(ss), L2_EPS);
}

__global__ void norms_kernel(long tokens, int routes, int dim, const c5_real *x, const c5_real *w, double *xnorm,
                             double *wnorm)
{
  C5K_GRID_LOOP(t, tokens + routes) {
    if (t < tokens) xnorm[t] = l2norm(x + t * dim, dim);
    else wnorm[t - tokens] = l2norm(w + (t - tokens) * dim, dim);
  }
}

/* v[b, q, j] = scale v[b, q, j] / (|x_bj| |w_q|), in double */
__global__ void by_norms_kernel(long batch, int routes, long n, double scale, const double *xnorm,
                                const double *wnorm, c5_real *v)
{
  C5K_GRID_LOOP(i, batch * routes * n) {
    long row = i / n, j = i % n, b = row / routes;
    int q = (int)(row % routes);
    v[i] = (c5_real)__ddiv_rn(c5k_mul(scale, (double)v[i]), c5k_mul(xnorm[b * n + j], wnorm[q]));
  }
}

static c5_status by_norms(c5k_cuda_dev *dev, long batch, int routes, long n, double scale, const double *xnorm,
                          const double *wnorm, c5_real *v, const char *op)
{
  by_norms_kernel<<<c5k_cuda_blocks(dev, batch * routes * n), C5K_THREADS, 0, dev->stream>>>(batch, routes, n, scale,
                                                                                              xnorm, wnorm, v);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_cosine_route_forward_cuda(c5k_ctx *ctx, long batch, int routes, long n, int dim,
                                                   const c5_real *x, const c5_real *w, double scale, c5_real *s,
                                                   double *xnorm, double *wnorm)
{
  const char *op = "cosine_route_forward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (batch < 0 || n < 0 || routes < 0 || batch * n + routes == 0) return C5_OK;
  norms_kernel<<<c5k_cuda_blocks(dev, batch * n + routes), C5K_THREADS, 0, dev->stream>>>(batch * n, routes, dim, x, w,
                                                                                          xnorm, wnorm);
  C5K_CUDA_LAUNCHED(op);
  if (batch * routes * n == 0) return C5_OK;
  return by_norms(dev, batch, routes, n, scale, xnorm, wnorm, s, op);
}

/* v_i = sum_q g_qj w_qi (q in order): formed twice per token (for v . x,
   then for the update) rather than stored, by the same operations, so both
   passes see the same bits. */
__device__ __forceinline__ double route_sum(const c5_real *gj, long n, int routes, const c5_real *w, int dim, int i)
{
  double a = 0;
  for (int q = 0; q < routes; q++) a = c5k_add(a, c5k_mul((double)gj[q * n], (double)w[(long)q * dim + i]));
  return a;
}

__global__ void cosine_dx_kernel(long batch, int routes, long n, int dim, const c5_real *x, const c5_real *w,
                                 const double *xnorm, const c5_real *g, c5_real *dx)
{
  C5K_GRID_LOOP(t, batch * n) {
    const long b = t / n, j = t % n;
    const c5_real *gj = g + b * routes * n + j, *xt = x + t * dim;
    c5_real *dxt = dx + t * dim;
    double xv = 0, nx = xnorm[t];
    for (int i = 0; i < dim; i++) xv = c5k_add(xv, c5k_mul(route_sum(gj, n, routes, w, dim, i), (double)xt[i]));
    double proj = nx > L2_EPS ? __ddiv_rn(xv, c5k_mul(nx, nx)) : 0.0;
    for (int i = 0; i < dim; i++)
      dxt[i] = c5k_add(dxt[i], (c5_real)c5k_sub(route_sum(gj, n, routes, w, dim, i), c5k_mul(proj, (double)xt[i])));
  }
}

extern "C" c5_status c5k_cosine_route_backward_cuda(c5k_ctx *ctx, long batch, int routes, long n, int dim,
                                                    const c5_real *x, const c5_real *w, const double *xnorm,
                                                    const double *wnorm, double scale, c5_real *g, c5_real *dx)
{
  const char *op = "cosine_route_backward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (batch <= 0 || n <= 0 || dim <= 0) return C5_OK;
  if (routes > 0) C5_CALL_K(by_norms(dev, batch, routes, n, scale, xnorm, wnorm, g, op));
  cosine_dx_kernel<<<c5k_cuda_blocks(dev, batch * n), C5K_THREADS, 0, dev->stream>>>(batch, routes, n, dim, x, w,
                                                                                      xnorm, g, dx);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

__global__ void cosine_dw_kernel(int routes, int dim, const c5_real *w, const double *wnorm, double *dwacc)
{
  C5K_GRID_LOOP(q, routes) {
    const c5_real *wq = w + q * dim;
    double *dq = dwacc + q * dim;
    double wv = 0, nw = wnorm[q];
    for (int i = 0; i < dim; i++) wv = c5k_add(wv, c5k_mul(dq[i], (double)wq[i]));
    double proj = nw > L2_EPS ? __ddiv_rn(wv, c5k_mul(nw, nw)) : 0.0;
    for (int i = 0; i < dim; i++) dq[i] = c5k_sub(dq[i], c5k_mul(proj, (double)wq[i]));
  }
}

extern "C" c5_status c5k_cosine_route_backward_w_cuda(c5k_ctx *ctx, int routes, int dim, const c5_real *w,
                                                      const double *wnorm, double *dwacc)
{
  const char *op = "cosine_route_backward_w";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (routes <= 0 || dim <= 0) return C5_OK;
  cosine_dw_kernel<<<c5k_cuda_blocks(dev, routes), C5K_THREADS, 0, dev->stream>>>(routes, dim, w, wnorm, dwacc);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
