/* gather.c - rows gathered by index and scattered back on the CPU: the
   routed tokens into the heavy branch, its output over null_q_token, the
   backward through the query score and the null_q_token gradient; without
   an index, the heavy attention's queries times their score; and the kv
   exchange's masks and positions (gather2d, any element type). Sums
   over a row run in k order; sums over rows run in e order (acc_rows) or
   touch distinct rows, so results do not depend on the thread count. */
#include <string.h>
#include "cpu.h"

#define C5K_GATHER_PAR (1L << 14)

c5_status c5k_gather_rows_cpu(c5k_ctx *ctx, long n, long dim, const long *idx, const c5_real *scale,
                              const c5_real *src, long lds, c5_real *dst)
{
  (void)ctx;
#pragma omp parallel for schedule(static) if (n * dim > C5K_GATHER_PAR)
  for (long e = 0; e < n; e++) {
    c5_real *d = dst + e * dim;
    const long r = idx ? idx[e] : e;
    if (r < 0) { memset(d, 0, (size_t)dim * sizeof *d); continue; }
    const c5_real *s = src + r * lds;
    if (!scale) { memcpy(d, s, (size_t)dim * sizeof *d); continue; }
    c5_real a = scale[e];
    for (long k = 0; k < dim; k++) d[k] = s[k] * a;
  }
  return C5_OK;
}

static inline void scatter_one(long e, long dim, const long *idx, const c5_real *src, const c5_real *scale,
                               const c5_real *sub, int accumulate, c5_real *dst)
{
  if (idx[e] < 0) return;
  c5_real *d = dst + idx[e] * dim;
  const c5_real *s = src + e * dim;
  const c5_real sc = scale ? scale[e] : 1;
  for (long k = 0; k < dim; k++) {
    c5_real v = s[k] * sc - (sub ? sub[k] : 0);
    if (accumulate) d[k] += v; else d[k] = v;
  }
}

c5_status c5k_scatter_rows_cpu(c5k_ctx *ctx, long n, long dim, const long *idx, const c5_real *src,
                               const c5_real *scale, const c5_real *sub, int accumulate, int distinct, c5_real *dst)
{
  (void)ctx;
  if (!distinct) {   /* equal indices: added in e order */
    for (long e = 0; e < n; e++) scatter_one(e, dim, idx, src, scale, sub, accumulate, dst);
    return C5_OK;
  }
#pragma omp parallel for schedule(static) if (n * dim > C5K_GATHER_PAR)
  for (long e = 0; e < n; e++) scatter_one(e, dim, idx, src, scale, sub, accumulate, dst);
  return C5_OK;
}

c5_status c5k_gather_scale_dot_cpu(c5k_ctx *ctx, long n, long dim, const long *idx, const c5_real *src,
                                   const c5_real *scale, const c5_real *y, c5_real *dsrc, c5_real *dscale)
{
  (void)ctx;
#pragma omp parallel for schedule(static) if (n * dim > C5K_GATHER_PAR)
  for (long e = 0; e < n; e++) {
    const long r = idx ? idx[e] : e;
    const c5_real *g = r >= 0 ? src + r * dim : NULL;
    double ds = 0;
    for (long k = 0; k < dim; k++) {   /* g[k] is read before dsrc[e, k] is written: in place is safe */
      c5_real gk = g ? g[k] : 0;
      dsrc[e * dim + k] = gk * scale[e];
      ds += (double)gk * y[e * dim + k];
    }
    if (dscale) dscale[e] = (c5_real)ds;
  }
  return C5_OK;
}

/* The row partition of c5k_rowpart_add without its work array: a task per block of AR_COLS columns carries
   the columns' running part and total. */
#define AR_COLS 8
c5_status c5k_acc_rows_cpu(c5k_ctx *ctx, long n, long dim, const long *idx, const c5_real *src, int subtract,
                           double *acc)
{
  (void)ctx;
#pragma omp parallel for schedule(static) if (n * dim > C5K_GATHER_PAR)
  for (long k0 = 0; k0 < dim; k0 += AR_COLS) {
    const int kn = dim - k0 < AR_COLS ? (int)(dim - k0) : AR_COLS;
    double s[AR_COLS] = { 0 };
    for (long p0 = 0; p0 < n; p0 += C5K_ROWPART) {
      double a[AR_COLS] = { 0 };
      const long p1 = n - p0 < C5K_ROWPART ? n : p0 + C5K_ROWPART;
      for (long e = p0; e < p1; e++) {
        const long r = idx ? idx[e] : e;
        for (int j = 0; j < kn; j++) {
          const double t = r < 0 ? 0.0 : (double)src[r * dim + k0 + j];
          a[j] += subtract ? -t : t;
        }
      }
      for (int j = 0; j < kn; j++) s[j] += a[j];
    }
    for (int j = 0; j < kn; j++) acc[k0 + j] += s[j];
  }
  return C5_OK;
}

c5_status c5k_gather2d_cpu(c5k_ctx *ctx, long n, const long *idx, const void *src, long spitch, long width, void *dst,
                           long dpitch)
{
  (void)ctx;
  if (width <= 0) return C5_OK;
#pragma omp parallel for schedule(static) if (n * width > C5K_GATHER_PAR)
  for (long e = 0; e < n; e++) {
    char *d = (char *)dst + e * dpitch;
    if (idx[e] < 0) memset(d, 0, (size_t)width);
    else memcpy(d, (const char *)src + idx[e] * spitch, (size_t)width);
  }
  return C5_OK;
}
