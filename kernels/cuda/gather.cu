/* gather.cu - rows gathered by index and scattered back on the GPU
   (kernels/cpu/gather.c): the routed tokens into the heavy branch, its
   output over null_q_token, the backward through the query score, the
   null_q_token gradient and the kv exchange's masks and positions. Element
   moves run one thread per element, row dots one warp per row; every sum keeps
   the CPU's order (k order within a row; over rows e order, or for
   acc_rows the parameter gradients' row partition), so the bits are the
   CPU's and do not depend on the launch. */
#include <stdint.h>
#include <limits.h>
#include "rowsum.cuh"

template <typename I>
__global__ void gather_rows_kernel(long n, long dim, const long *idx, const c5_real *scale, const c5_real *src,
                                   long lds, c5_real *dst)
{
  C5K_GRID_LOOP_T(I, i, n * dim) {
    const I e = i / (I)dim, k = i % (I)dim;
    const long r = idx ? idx[e] : e;
    c5_real v = r < 0 ? (c5_real)0 : src[r * lds + k];
    dst[i] = scale && r >= 0 ? c5k_mul(v, scale[e]) : v;
  }
}

extern "C" c5_status c5k_gather_rows_cuda(c5k_ctx *ctx, long n, long dim, const long *idx, const c5_real *scale,
                                          const c5_real *src, long lds, c5_real *dst)
{
  const char *op = "gather_rows";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (n <= 0 || dim <= 0) return C5_OK;
  C5K_IDX_LAUNCH(n * dim, gather_rows_kernel, c5k_cuda_blocks(dev, n * dim), C5K_THREADS, dev->stream, n, dim, idx,
                 scale, src, lds, dst);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* v = s scale - sub, each term rounded as the CPU rounds it (x * 1 and x - 0 are exact) */
__device__ __forceinline__ void scatter_one(long e, long k, long dim, const long *idx, const c5_real *src,
                                            const c5_real *scale, const c5_real *sub, int accumulate, c5_real *dst)
{
  const long r = idx[e];
  if (r < 0) return;
  c5_real v = src[e * dim + k];
  if (scale) v = c5k_mul(v, scale[e]);
  if (sub) v = c5k_sub(v, sub[k]);
  c5_real *d = dst + r * dim + k;
  *d = accumulate ? c5k_add(*d, v) : v;
}

/* distinct indices: one thread per element, no two touch the same one */
__global__ void scatter_rows_distinct(long n, long dim, const long *idx, const c5_real *src, const c5_real *scale,
                                      const c5_real *sub, int accumulate, c5_real *dst)
{
  C5K_GRID_LOOP(i, n * dim) scatter_one(i / dim, i % dim, dim, idx, src, scale, sub, accumulate, dst);
}

/* equal indices possible: the destination rows are dealt to `parts`
   classes (row & (parts - 1), parts a power of two) and the columns to
   chunks of 32; one warp per (class, chunk) reads the indices 32 at a time
   (coalesced), marks those of its class in a ballot and applies them lowest
   bit first, each lane its own column. Element (row, k) is thus written by
   one lane only, which applies the row's entries in e order (the CPU's last
   write, its sum order), while different rows and chunks proceed in
   parallel. The ballot and the loop over its bits are warp-uniform. */
__global__ void scatter_rows_ordered(long n, long dim, long parts, const long *idx, const c5_real *src,
                                     const c5_real *scale, const c5_real *sub, int accumulate, c5_real *dst)
{
  const int lane = threadIdx.x & 31;
  const long chunks = (dim + 31) / 32, mask = parts - 1;
  C5K_WARP_LOOP(w, parts * chunks) {
    const long part = w / chunks, k = (w % chunks) * 32 + lane;
    for (long e0 = 0; e0 < n; e0 += 32) {
      const long r = e0 + lane < n ? idx[e0 + lane] : -1;
      unsigned hit = __ballot_sync(0xffffffffu, r >= 0 && (r & mask) == part);
      while (hit) {
        const int l = __ffs(hit) - 1;   /* the lowest entry left: e order */
        hit &= hit - 1;
        if (k < dim) scatter_one(e0 + l, k, dim, idx, src, scale, sub, accumulate, dst);
      }
    }
  }
}

extern "C" c5_status c5k_scatter_rows_cuda(c5k_ctx *ctx, long n, long dim, const long *idx, const c5_real *src,
                                           const c5_real *scale, const c5_real *sub, int accumulate, int distinct,
                                           c5_real *dst)
{
  const char *op = "scatter_rows";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (n <= 0 || dim <= 0) return C5_OK;
  if (distinct)
    scatter_rows_distinct<<<c5k_cuda_blocks(dev, n * dim), C5K_THREADS, 0, dev->stream>>>(n, dim, idx, src, scale, sub,
                                                                                          accumulate, dst);
  else {
    /* enough (class, chunk) warps to fill the device (64 a multiprocessor); each still reads all n indices */
    const long chunks = (dim + 31) / 32;
    long want = 64L * (dev->sms > 0 ? dev->sms : 1) / chunks, parts = 1;
    want = want > n ? n : want;
    while (2 * parts <= want) parts *= 2;   /* the largest power of two <= want, at least 1 */
    scatter_rows_ordered<<<c5k_cuda_blocks(dev, 32 * parts * chunks), C5K_THREADS, 0, dev->stream>>>(
        n, dim, parts, idx, src, scale, sub, accumulate, dst);
  }
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* One warp per row (C5K_WARP_LOOP): lane l moves columns k = base + l and
   dscale's sum runs over k in order (c5k_warp_ordered_add0). In place
   (dsrc == src, allowed with idx NULL only, so g is row e of dsrc): element
   (e, k) belongs to one lane of one warp, which reads g[k] before it writes
   dsrc[e, k]; no other lane or warp reads that element, so no read sees a
   written value, as in the CPU's loop. idx -1: g is 0 and the products are
   formed from it all the same (0 * inf is NaN on both sides). */
__global__ void gather_scale_dot_kernel(long n, long dim, const long *idx, const c5_real *src, const c5_real *scale,
                                        const c5_real *y, c5_real *dsrc, c5_real *dscale)
{
  __shared__ double sh[C5K_THREADS];
  const int lane = threadIdx.x & 31;
  double *wsh = sh + (threadIdx.x & ~31);
  C5K_WARP_LOOP(e, n) {
    const long r = idx ? idx[e] : e;
    const c5_real *g = r >= 0 ? src + r * dim : NULL;
    const c5_real a = scale[e];
    double ds = 0;
    for (long base = 0; base < dim; base += 32) {
      const long k = base + lane;
      double p = 0;
      if (k < dim) {
        const c5_real gk = g ? g[k] : (c5_real)0;
        dsrc[e * dim + k] = c5k_mul(gk, a);
        p = c5k_mul((double)gk, (double)y[e * dim + k]);
      }
      ds = c5k_warp_ordered_add0(ds, p, (int)min(32L, dim - base), wsh);
    }
    if (lane == 0 && dscale) dscale[e] = (c5_real)ds;
  }
}

extern "C" c5_status c5k_gather_scale_dot_cuda(c5k_ctx *ctx, long n, long dim, const long *idx, const c5_real *src,
                                               const c5_real *scale, const c5_real *y, c5_real *dsrc, c5_real *dscale)
{
  const char *op = "gather_scale_dot";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (n <= 0) return C5_OK;
  gather_scale_dot_kernel<<<c5k_cuda_blocks(dev, 32 * n), C5K_THREADS, 0, dev->stream>>>(n, dim, idx, src, scale, y,
                                                                                          dsrc, dscale);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* acc_rows' term: row e's column k, negated when subtracting, 0 for idx -1 (kernels.h) */
struct acc_rows_term {
  const long *idx;
  const c5_real *src;
  long dim;
  int subtract;
  __device__ void operator()(long e, int k, double *t) const
  {
    const long r = idx ? idx[e] : e;
    const double x = r < 0 ? 0.0 : (double)src[r * dim + k];
    t[0] = subtract ? -x : x;
  }
};

extern "C" c5_status c5k_acc_rows_cuda(c5k_ctx *ctx, long n, long dim, const long *idx, const c5_real *src,
                                       int subtract, double *acc)
{
  const char *op = "acc_rows";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (n <= 0 || dim <= 0) return C5_OK;
  if (dim > INT_MAX) return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: dim %ld (the row partition takes int columns)", op, dim);
  const acc_rows_term term = { idx, src, dim, subtract };
  c5k_rowpart_out<1> out = { { acc } };
  return c5k_rowpart_sum<1>(dev, op, term, n, (int)dim, out);
}

/* Rows of width bytes moved in words of W bytes (the widest that divides
   the width, both pitches and both addresses). */
template <typename W>
__global__ void gather2d_kernel(long n, const long *idx, const char *src, long spitch, long words, char *dst,
                                long dpitch)
{
  C5K_GRID_LOOP(i, n * words) {
    long e = i / words, w = i % words, r = idx[e];
    ((W *)(dst + e * dpitch))[w] = r < 0 ? (W)0 : ((const W *)(src + r * spitch))[w];
  }
}

template <typename W>
static void gather2d_launch(c5k_cuda_dev *dev, long n, const long *idx, const void *src, long spitch, long width,
                            void *dst, long dpitch)
{
  long words = width / (long)sizeof(W);
  gather2d_kernel<W><<<c5k_cuda_blocks(dev, n * words), C5K_THREADS, 0, dev->stream>>>(
      n, idx, (const char *)src, spitch, words, (char *)dst, dpitch);
}

extern "C" c5_status c5k_gather2d_cuda(c5k_ctx *ctx, long n, const long *idx, const void *src, long spitch, long width,
                                       void *dst, long dpitch)
{
  const char *op = "gather2d";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (n <= 0 || width <= 0) return C5_OK;
  const uintptr_t all = (uintptr_t)width | (uintptr_t)spitch | (uintptr_t)dpitch | (uintptr_t)src | (uintptr_t)dst;
  if (all % 8 == 0) gather2d_launch<uint64_t>(dev, n, idx, src, spitch, width, dst, dpitch);
  else if (all % 4 == 0) gather2d_launch<uint32_t>(dev, n, idx, src, spitch, width, dst, dpitch);
  else if (all % 2 == 0) gather2d_launch<uint16_t>(dev, n, idx, src, spitch, width, dst, dpitch);
  else gather2d_launch<uint8_t>(dev, n, idx, src, spitch, width, dst, dpitch);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
