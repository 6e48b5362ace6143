/* norm.cu - RMSNorm and LayerNorm on the GPU, forward and backward, as
   kernels/cpu/norm.c: one warp a row for the row's sums (double, a
   fixed tree), its elements 16 bytes at a time where the rows allow.
   The forwards may write y in bf16 (kernels.h ytype: the CPU's c5_real
   value rounded once more), for products that take it so. The backwards
   take one pass over x and dy where the row fits a warp's registers
   (norm_bwd_fused): dx and the parameter gradients' sub-part sums together;
   elsewhere dx, then the parameter gradients through the fixed row
   partition (rowsum.cuh). Every sum has an order fixed by the shape, so
   the bits never depend on scheduling. */
#include <math.h>
#include "rowsum.cuh"

#define L2_EPS 1e-12

/* Four consecutive c5_reals at a 16-byte aligned p (two loads in a double build) */
__device__ __forceinline__ void ld4(const c5_real *p, c5_real *o)
{
#if C5_USE_DOUBLE
  const double2 a = ((const double2 *)p)[0], b = ((const double2 *)p)[1];
  o[0] = a.x; o[1] = a.y; o[2] = b.x; o[3] = b.y;
#else
  const float4 a = *(const float4 *)p;
  o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
#endif
}
__device__ __forceinline__ void st4(c5_real *p, const c5_real *v)
{
#if C5_USE_DOUBLE
  ((double2 *)p)[0] = make_double2(v[0], v[1]);
  ((double2 *)p)[1] = make_double2(v[2], v[3]);
#else
  *(float4 *)p = make_float4(v[0], v[1], v[2], v[3]);
#endif
}

__device__ __forceinline__ void st4(__nv_bfloat16 *p, const __nv_bfloat16 *v)
{
  __nv_bfloat162 a, b;
  a.x = v[0]; a.y = v[1]; b.x = v[2]; b.y = v[3];
  uint2 u;
  u.x = *(const unsigned *)&a;
  u.y = *(const unsigned *)&b;
  *(uint2 *)p = u;
}

/* Whether a row kernel may take its rows 16 bytes at a time (lane_cols): dim a multiple of 4 and every row of the
   c5_real arrays (and of y, 4 elements of T) aligned to it. */
template <typename T> static bool rows_vec(int dim, const c5_real *a, const c5_real *b, const c5_real *c, const T *y)
{
  return dim % 4 == 0 && (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) & 15) == 0 && (uintptr_t)y % (4 * sizeof(T)) == 0;
}

/* fn(c, v, m) over a lane's elements of a row of dim: v holds the m elements from column c, 4 at a time (columns
   4 lane + 128 j: the warp reads 512 consecutive bytes a load) where vec, else 1 (columns lane + 32 j). The forwards
   read their row from L1 in their later passes. (An element a lane: the LayerNorm forward at 2.2 TB/s on an H200,
   32768 x 512 to bf16.) */
template <typename Fn> __device__ __forceinline__ void lane_cols(const c5_real *row, int dim, bool vec, Fn fn)
{
  const int lane = threadIdx.x & 31;
  if (vec) {
    for (int c = 4 * lane; c < dim; c += 128) {
      c5_real v[4];
      ld4(row + c, v);
      fn(c, v, 4);
    }
  } else {
    for (int c = lane; c < dim; c += 32) {
      c5_real v[4] = { row[c], 0, 0, 0 };
      fn(c, v, 1);
    }
  }
}

/* y[0, m) = v[0, m) (4 at a time where m is) */
template <typename T> __device__ __forceinline__ void store_m(T *y, const T *v, int m)
{
  if (m == 4) st4(y, v);
  else y[0] = v[0];
}


/* y = x / max(||x||, 1e-12) * sqrt(dim) * gamma; rnorm[r] = 1 / max(||x_r||, 1e-12). T: c5_real, or bf16 (kernels.h
   ytype: y rounded once more, c5k_as) */
template <typename T>
__global__ void rmsnorm_fwd(long rows, const c5_real *x, const c5_real *gamma, int dim, double sc, bool vec, T *y,
                            double *rnorm)
{
  const long r = c5k_warp_row();
  if (r >= rows) return;
  const c5_real *xr = x + r * dim;
  double ss = 0;
  lane_cols(xr, dim, vec, [&](int, const c5_real *v, int m) {
    for (int e = 0; e < m; e++) ss += (double)v[e] * v[e];
  });
  ss = c5k_warp_sum(ss);
  const double rn = 1.0 / fmax(sqrt(ss), L2_EPS);
  if ((threadIdx.x & 31) == 0) rnorm[r] = rn;
  lane_cols(xr, dim, vec, [&](int c, const c5_real *v, int m) {
    T o[4];
    for (int e = 0; e < m; e++) o[e] = c5k_as<T>((c5_real)(v[e] * rn * sc * gamma[c + e]));
    store_m(y + r * dim + c, o, m);
  });
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
  if (ytype == C5_DTYPE_BF16) {
    __nv_bfloat16 *yb = (__nv_bfloat16 *)y;
    rmsnorm_fwd<<<blocks, C5K_ROW_THREADS, 0, dev->stream>>>(rows, x, gamma, dim, sc, rows_vec(dim, x, gamma, x, yb),
                                                             yb, rnorm);
  } else {
    c5_real *yr = (c5_real *)y;
    rmsnorm_fwd<<<blocks, C5K_ROW_THREADS, 0, dev->stream>>>(rows, x, gamma, dim, sc, rows_vec(dim, x, gamma, x, yr),
                                                             yr, rnorm);
  }
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* ---- the fused backward ---- */

/* A block a sub-part of FB_ROWS rows, FB_WARPS warps: warp v takes the sub-part's rows v, v + FB_WARPS, ...; lane
   l holds columns 4 l + 128 k (k < K) four at a time (16-byte loads). A row's sums are the warp's (c5k_warp_sum); its
   parameter-gradient terms are added in the lane's registers over the warp's rows in order, then the warps' sums
   in warp order through shared memory into the sub-part's row of `part`, and c5k_rowpart_finish adds the sub-parts
   in order: a fixed order, so the same bits every run (not the CPU's order: sub-parts of FB_ROWS, not C5K_ROWPART).
   The unfused pair read x and dy twice: at n = 32768 the FeedForward's RMSNorm backward was 34 us for dx and 24
   more for dgamma's parts, a chunk of 10944 rows. A warp's rows follow one another (the loads of one, then its
   sums, then the next), so what hides the latency is warps: sub-parts of 32 rows (a part of 64 rows a block left
   two thirds of the H200 waiting) and two blocks a multiprocessor (gamma read from L1, not held). */
#define FB_WARPS 8
#define FB_ROWS 32
#define FB_KMAX 8   /* columns <= 128 FB_KMAX */

/* F: a norm's row (rms_row, ln_row): row(r) loads its statistics; sums() adds an element into the row's NS sums,
   finish() turns their warp sums into what dx() takes; terms() gives its NT parameter-gradient terms. */
template <typename F, int K> __global__ void __launch_bounds__(FB_WARPS * 32, 2)
norm_bwd_fused(F f, long rows, int dim, const c5_real *res, c5_real *dx, double *part)
{
  constexpr int NT = F::NT, NS = F::NS;
  __shared__ double acc[NT][128 * K];
  const int lane = threadIdx.x & 31, v = threadIdx.x >> 5;
  const long p = blockIdx.x, r0 = p * FB_ROWS, r1 = r0 + FB_ROWS < rows ? r0 + FB_ROWS : rows;
  double t[NT][K][4];
#pragma unroll
  for (int k = 0; k < K; k++)
#pragma unroll
    for (int o = 0; o < NT; o++)
      for (int e = 0; e < 4; e++) t[o][k][e] = 0;
  for (long r = r0 + v; r < r1; r += FB_WARPS) {
    c5_real xv[K][4], dv[K][4], rv[K][4];
#pragma unroll
    for (int k = 0; k < K; k++) {   /* res with x and dy: loaded after the row's sums it added a second wait a row */
      const int c = 4 * lane + 128 * k;
      if (c < dim) {
        ld4(f.x + r * dim + c, xv[k]);
        ld4(f.dy + r * dim + c, dv[k]);
        if (res) ld4(res + r * dim + c, rv[k]);   /* res may be dx: read before the write */
      }
    }
    f.row(r);
    double s[NS];
    for (int q = 0; q < NS; q++) s[q] = 0;
#pragma unroll
    for (int k = 0; k < K; k++) {
      const int c = 4 * lane + 128 * k;
      if (c >= dim) continue;
      c5_real wv[4];
      ld4(f.w + c, wv);
      for (int e = 0; e < 4; e++) f.sums(xv[k][e], dv[k][e], wv[e], s);
    }
    for (int q = 0; q < NS; q++) s[q] = c5k_warp_sum(s[q]);
    f.finish(s, dim);
#pragma unroll
    for (int k = 0; k < K; k++) {
      const int c = 4 * lane + 128 * k;
      if (c >= dim) continue;
      c5_real y[4], wv[4];
      ld4(f.w + c, wv);
#pragma unroll
      for (int e = 0; e < 4; e++) {
        y[e] = f.dx(xv[k][e], dv[k][e], wv[e], s);
        if (res) y[e] = y[e] + rv[k][e];
      }
      st4(dx + r * dim + c, y);
      double tt[NT];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        f.terms(xv[k][e], dv[k][e], tt);
        for (int o = 0; o < NT; o++) t[o][k][e] += tt[o];
      }
    }
  }
  for (int u = 0; u < FB_WARPS; u++) {   /* the warps' sums in warp order */
    if (u == v) {
#pragma unroll
      for (int k = 0; k < K; k++) {
        const int c = 4 * lane + 128 * k;
        if (c < dim)
          for (int o = 0; o < NT; o++)
            for (int e = 0; e < 4; e++) acc[o][c + e] = u == 0 ? t[o][k][e] : acc[o][c + e] + t[o][k][e];
      }
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < dim; i += blockDim.x)
    for (int o = 0; o < NT; o++) part[(p * NT + o) * dim + i] = acc[o][i];
}

/* The fused kernel takes rows (and the weight, read 4 at a time too) whose columns are whole 16-byte vectors of 4
   and fit a warp's FB_KMAX of them */
static bool fused_fits(int dim, const c5_real *x, const c5_real *dy, const c5_real *w, const c5_real *res,
                       const c5_real *dx)
{
  return dim <= 128 * FB_KMAX && rows_vec(dim, x, dy, w, dx) && (uintptr_t)res % 16 == 0;
}

/* norm_bwd_fused with the fewest vectors a lane that hold dim, then c5k_rowpart_finish into out */
template <int NT, typename F>
static c5_status norm_bwd_fused_launch(c5k_cuda_dev *dev, const char *op, F f, long rows, int dim, const c5_real *res,
                                       c5_real *dx, c5k_rowpart_out<NT> out)
{
  const long np = (rows + FB_ROWS - 1) / FB_ROWS;
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, (size_t)np * NT * dim * sizeof(double), &scr, op));
  double *part = (double *)scr;
  const unsigned b = (unsigned)np, th = FB_WARPS * 32;
  if (dim <= 128) norm_bwd_fused<F, 1><<<b, th, 0, dev->stream>>>(f, rows, dim, res, dx, part);
  else if (dim <= 256) norm_bwd_fused<F, 2><<<b, th, 0, dev->stream>>>(f, rows, dim, res, dx, part);
  else if (dim <= 512) norm_bwd_fused<F, 4><<<b, th, 0, dev->stream>>>(f, rows, dim, res, dx, part);
  else norm_bwd_fused<F, 8><<<b, th, 0, dev->stream>>>(f, rows, dim, res, dx, part);
  C5K_CUDA_LAUNCHED(op);
  c5k_rowpart_finish<NT><<<dim3(c5k_warp_row_blocks(dim), NT), C5K_ROW_THREADS, 0, dev->stream>>>(part, np, dim, out);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* ---- the unfused pair, for rows the fused kernel does not take ---- */

/* dx with F's expressions, a warp a row, an element a lane (columns lane + 32 j): the row's sums, then dx (+ res).
   res may be dx: each lane reads its elements before writing them. */
template <typename F> __global__ void norm_bwd_dx(F f, long rows, int dim, const c5_real *res, c5_real *dx)
{
  const long r = c5k_warp_row();
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const c5_real *xr = f.x + r * dim, *dyr = f.dy + r * dim;
  f.row(r);
  double s[F::NS];
  for (int q = 0; q < F::NS; q++) s[q] = 0;
  for (int i = lane; i < dim; i += 32) f.sums(xr[i], dyr[i], f.w[i], s);
  for (int q = 0; q < F::NS; q++) s[q] = c5k_warp_sum(s[q]);
  f.finish(s, dim);
  for (int i = lane; i < dim; i += 32) {
    const c5_real g = f.dx(xr[i], dyr[i], f.w[i], s);
    dx[r * dim + i] = res ? g + res[r * dim + i] : g;
  }
}

/* F's parameter-gradient terms of element (r, i), for c5k_rowpart_sum */
template <typename F> struct norm_terms {
  F f;
  int dim;
  __device__ void operator()(long r, int i, double *t) const
  {
    F g = f;
    g.row(r);
    g.terms(f.x[r * dim + i], f.dy[r * dim + i], t);
  }
};

/* A norm's backward: the fused kernel where the rows fit it, else norm_bwd_dx and the parameter gradients through
   the fixed row partition */
template <typename F>
static c5_status norm_bwd(c5k_cuda_dev *dev, const char *op, F f, long rows, int dim, const c5_real *res,
                          c5_real *dx, c5k_rowpart_out<F::NT> out)
{
  if (fused_fits(dim, f.x, f.dy, f.w, res, dx))
    return norm_bwd_fused_launch<F::NT>(dev, op, f, rows, dim, res, dx, out);
  norm_bwd_dx<<<c5k_warp_row_blocks(rows), C5K_ROW_THREADS, 0, dev->stream>>>(f, rows, dim, res, dx);
  C5K_CUDA_LAUNCHED(op);
  norm_terms<F> term = { f, dim };
  return c5k_rowpart_sum<F::NT>(dev, op, term, rows, dim, out);
}

/* The RMSNorm backward of one row: dx = (du - u (u . du)) / ||x||, u = x / ||x||, du = dy sqrt(dim) gamma (below
   the clamp: du / 1e-12); dgamma's term dy u sqrt(dim). w: gamma. */
struct rms_row {
  static constexpr int NT = 1, NS = 1;   /* parameter-gradient terms, row sums */
  const c5_real *x, *w, *dy;
  const double *rnorm;
  double sc, rn;
  __device__ void row(long r) { rn = rnorm[r]; }
  __device__ void sums(c5_real xi, c5_real dyi, c5_real wi, double *s) const
  {
    s[0] = c5k_add(s[0], (double)xi * rn * dyi * sc * wi);
  }
  __device__ void finish(double *, int) const {}
  /* each product and difference rounded as the CPU rounds it: du - u (u . du) cancels (to nothing at dim 1), and
     a fused multiply-add there gave another residue (2e-1 norm-wise at dim 1) */
  __device__ c5_real dx(c5_real xi, c5_real dyi, c5_real wi, const double *s) const
  {
    const double du = (double)dyi * sc * wi;
    return (c5_real)(rn >= 1.0 / L2_EPS ? du * rn : c5k_mul(c5k_sub(du, c5k_mul(c5k_mul((double)xi, rn), s[0])), rn));
  }
  __device__ void terms(c5_real xi, c5_real dyi, double *t) const { t[0] = (double)dyi * xi * rn * sc; }
};

extern "C" c5_status c5k_rmsnorm_backward_cuda(c5k_ctx *ctx, const c5_real *x, const c5_real *gamma,
                                               const double *rnorm, const c5_real *dy, long rows, int dim,
                                               const c5_real *res, c5_real *dx, double *dgamma)
{
  const char *op = "rmsnorm_backward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (rows <= 0) return C5_OK;
  rms_row f = { x, gamma, dy, rnorm, sqrt((double)dim), 0.0 };
  return norm_bwd(dev, op, f, rows, dim, res, dx, c5k_rowpart_out<1>{ { dgamma } });
}

/* PyTorch's LayerNorm (biased variance, eps inside the sqrt): y = (x - mean) rstd w + b. T as rmsnorm_fwd's. */
template <typename T>
__global__ void layernorm_fwd(long rows, const c5_real *x, const c5_real *w, const c5_real *b, int dim, double eps,
                              bool vec, T *y, double *mean, double *rstd)
{
  const long r = c5k_warp_row();
  if (r >= rows) return;
  const c5_real *xr = x + r * dim;
  double m = 0, v = 0;
  lane_cols(xr, dim, vec, [&](int, const c5_real *u, int k) {
    for (int e = 0; e < k; e++) m += u[e];
  });
  m = c5k_warp_sum(m) / dim;
  lane_cols(xr, dim, vec, [&](int, const c5_real *u, int k) {
    for (int e = 0; e < k; e++) v += ((double)u[e] - m) * ((double)u[e] - m);
  });
  v = c5k_warp_sum(v);
  const double rs = 1.0 / sqrt(v / dim + eps);
  if ((threadIdx.x & 31) == 0) {
    mean[r] = m;
    rstd[r] = rs;
  }
  lane_cols(xr, dim, vec, [&](int c, const c5_real *u, int k) {
    T o[4];
    for (int e = 0; e < k; e++) o[e] = c5k_as<T>((c5_real)(((double)u[e] - m) * rs * w[c + e] + b[c + e]));
    store_m(y + r * dim + c, o, k);
  });
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
  if (ytype == C5_DTYPE_BF16) {
    __nv_bfloat16 *yb = (__nv_bfloat16 *)y;
    layernorm_fwd<<<blocks, C5K_ROW_THREADS, 0, dev->stream>>>(rows, x, w, b, dim, eps, rows_vec(dim, x, w, b, yb), yb,
                                                               mean, rstd);
  } else {
    c5_real *yr = (c5_real *)y;
    layernorm_fwd<<<blocks, C5K_ROW_THREADS, 0, dev->stream>>>(rows, x, w, b, dim, eps, rows_vec(dim, x, w, b, yr), yr,
                                                               mean, rstd);
  }
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* The LayerNorm backward of one row: dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy w; dw's term dy xhat,
   db's dy. w: the norm's weight. */
struct ln_row {
  static constexpr int NT = 2, NS = 2;
  const c5_real *x, *w, *dy;
  const double *mean, *rstd;
  double m, rs;
  __device__ void row(long r) { m = mean[r]; rs = rstd[r]; }
  __device__ void sums(c5_real xi, c5_real dyi, c5_real wi, double *s) const
  {
    double xh = ((double)xi - m) * rs, g = (double)dyi * wi;
    s[0] += g;
    s[1] += g * xh;
  }
  __device__ void finish(double *s, int dim) const { s[0] /= dim; s[1] /= dim; }
  __device__ c5_real dx(c5_real xi, c5_real dyi, c5_real wi, const double *s) const
  {
    double xh = ((double)xi - m) * rs;
    return (c5_real)(rs * ((double)dyi * wi - s[0] - xh * s[1]));
  }
  __device__ void terms(c5_real xi, c5_real dyi, double *t) const
  {
    const double d = dyi;
    t[0] = d * (((double)xi - m) * rs);
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
  ln_row f = { x, w, dy, mean, rstd, 0.0, 0.0 };
  return norm_bwd(dev, op, f, rows, dim, res, dx, c5k_rowpart_out<2>{ { dw, db } });
}
