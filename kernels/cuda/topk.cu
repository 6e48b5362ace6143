/* topk.cu - top-k by the library's rule on the GPU (lib/topk.c, docs/design.md
   §2): largest values among unmasked entries, ties to the lower index,
   masked entries last by index. A radix select with a fixed number of
   rounds, 8 bits each, over the order keys of the score type (4 rounds of
   32-bit keys for fp32; fp64 takes 8 over 64-bit keys): per round one
   histogram launch (integer counts: the same whatever the order of the
   atomics) and one per-row pick of the CPU's; then per-chunk counts above
   and at the threshold, a per-row exclusive scan in chunk order, and an
   ordered compaction (block scans), so the positions are ascending and the
   ties at the threshold go to the lowest indices. One rank (P = 1). */
#include <limits.h>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include "cuda_internal.cuh"

#define TK_CHUNK 4096
#define TK_THREADS 256

struct tk_row {
  unsigned long long prefix, thr;
  long long need, take;
  int done;   /* 0 searching, 1 threshold found, 2 ties at the threshold */
};

__global__ void tk_init(tk_row *st, long rows, long k, unsigned int *hist)
{
  long r = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (r < rows) st[r] = { 0ull, 0ull, k, 0, 0 };
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < 256 * rows; i += (long)gridDim.x * blockDim.x) hist[i] = 0;
}

template <typename T> __global__ void __launch_bounds__(TK_THREADS)
tk_hist(const T *v, const uint8_t *mask, long n, long bpr, const tk_row *st, int shift, unsigned int *hist)
{
  typedef typename c5k_key<T>::type K;
  const int nbits = 8 * sizeof(K);
  __shared__ unsigned int h[256];
  const long u = blockIdx.x, r = u / bpr, c = u % bpr;
  if (st[r].done) return;
  for (int b = threadIdx.x; b < 256; b += blockDim.x) h[b] = 0;
  __syncthreads();
  const unsigned long long want = shift + 8 < nbits ? st[r].prefix >> (shift + 8) : 0;
  const long j0 = r * n + c * TK_CHUNK, j1 = r * n + min(n, (c + 1) * TK_CHUNK);
  for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    K key = c5k_key<T>::of(v[j], !mask || mask[j]);
    if (shift + 8 < nbits && ((unsigned long long)key >> (shift + 8)) != want) continue;
    atomicAdd(&h[(key >> shift) & 255], 1u);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < 256; b += blockDim.x)
    if (h[b]) atomicAdd(&hist[256 * r + b], h[b]);
}

/* lib/topk.c's step for one row and round; the histogram is cleared for the next. */
__global__ void tk_pick(tk_row *st, long rows, int shift, unsigned int *hist)
{
  long r = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (r >= rows) return;
  unsigned int *h = hist + 256 * r;
  tk_row s = st[r];
  if (!s.done) {
    int b = 255;
    while (b > 0 && (long long)h[b] < s.need) s.need -= h[b--];
    unsigned long long lo = s.prefix | ((unsigned long long)b << shift);
    if ((long long)h[b] == s.need) {   /* every key >= lo is selected */
      if (lo == 0) { s.thr = 0; s.take = LLONG_MAX; }
      else { s.thr = lo - 1; s.take = 0; }
      s.done = 1;
    } else if (shift == 0) {           /* more keys equal lo than places: lowest indices win */
      s.thr = lo; s.take = s.need; s.done = 2;
    } else {
      s.prefix = lo;
    }
    st[r] = s;
  }
  for (int b = 0; b < 256; b++) h[b] = 0;
}

template <typename T> __global__ void __launch_bounds__(TK_THREADS)
tk_count(const T *v, const uint8_t *mask, long n, long bpr, const tk_row *st, long long *cnt)
{
  typedef typename c5k_key<T>::type K;
  typedef cub::BlockReduce<long long, TK_THREADS> BR;
  __shared__ typename BR::TempStorage tmp;
  const long u = blockIdx.x, r = u / bpr, c = u % bpr;
  const K thr = (K)st[r].thr;
  const long j0 = r * n + c * TK_CHUNK, j1 = r * n + min(n, (c + 1) * TK_CHUNK);
  long long gt = 0, eq = 0;
  for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    K key = c5k_key<T>::of(v[j], !mask || mask[j]);
    gt += key > thr;
    eq += key == thr;
  }
  gt = BR(tmp).Sum(gt);
  __syncthreads();
  eq = BR(tmp).Sum(eq);
  if (threadIdx.x == 0) { cnt[2 * u] = gt; cnt[2 * u + 1] = eq; }
}

/* Per row, in chunk order: each chunk's first output slot and the ties before it (lib/topk.c's rule). */
__global__ void tk_scan(long rows, long bpr, const tk_row *st, long long *cnt, long *count)
{
  long r = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (r >= rows) return;
  long long out = 0, ties = 0, take = st[r].take;
  for (long c = 0; c < bpr; c++) {
    long long *p = cnt + 2 * (r * bpr + c);
    long long gt = p[0], eq = p[1], teq = take - ties;
    teq = teq < 0 ? 0 : (teq > eq ? eq : teq);
    p[0] = out;
    p[1] = ties;
    out += gt + teq;
    ties += eq;
  }
  count[r] = (long)out;
}

template <typename T> __global__ void __launch_bounds__(TK_THREADS)
tk_write(const T *v, const uint8_t *mask, long n, long bpr, const tk_row *st, const long long *cnt, long cap,
         long offset, long *pos)
{
  typedef typename c5k_key<T>::type K;
  typedef cub::BlockScan<int, TK_THREADS> BS;
  __shared__ typename BS::TempStorage tmp;
  const long u = blockIdx.x, r = u / bpr, c = u % bpr;
  const K thr = (K)st[r].thr;
  const long long take = st[r].take;
  long long o = cnt[2 * u], ties = cnt[2 * u + 1];
  const long j0 = c * TK_CHUNK, j1 = min(n, (c + 1) * TK_CHUNK);
  long *pr = pos + r * cap;
  for (long base = j0; base < j1; base += TK_THREADS) {
    const long j = base + threadIdx.x;
    K key = 0;
    int in = j < j1, eq = 0, sel = 0;
    if (in) {
      key = c5k_key<T>::of(v[r * n + j], !mask || mask[r * n + j]);
      eq = key == thr;
    }
    int eq_before, eq_all, sel_before, sel_all;
    BS(tmp).ExclusiveSum(eq, eq_before, eq_all);
    __syncthreads();
    if (in) sel = key > thr || (eq && ties + eq_before < take);
    BS(tmp).ExclusiveSum(sel, sel_before, sel_all);
    __syncthreads();
    if (sel) pr[o + sel_before] = j + offset;
    o += sel_all;
    ties += eq_all;
  }
}

extern "C" c5_status c5k_topk_select_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                                          long k, long cap, long offset, long *count, long *pos)
{
  const char *op = "topk_select_dev";
  c5k_cuda_dev *dev;
  long n;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  C5_CALL_K(c5k_cuda_dense(R, op, &n));
  const long rows = R->rows;
  if (rows == 0) return C5_OK;
  if (!(k > 0 && k <= n && k <= cap))
    return C5K_ERR(C5_ERR_ARG, "%s: k = %ld must be in [1, %ld] (the row length) and <= cap = %ld", op, k, n, cap);
  const long bpr = (n + TK_CHUNK - 1) / TK_CHUNK, units = rows * bpr;
  size_t o_hist = 0, o_st = (256 * rows * sizeof(unsigned) + 255) & ~(size_t)255;
  size_t o_cnt = (o_st + rows * sizeof(tk_row) + 255) & ~(size_t)255, bytes = o_cnt + 2 * units * sizeof(long long);
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, bytes, &scr, op));
  char *base = (char *)scr;
  unsigned int *hist = (unsigned int *)(base + o_hist);
  tk_row *st = (tk_row *)(base + o_st);
  long long *cnt = (long long *)(base + o_cnt);
  const unsigned rb = (unsigned)((rows + 127) / 128);
  tk_init<<<rb, 128, 0, dev->stream>>>(st, rows, k, hist);
  C5K_CUDA_LAUNCHED(op);
  const int nbits = 8 * sizeof(c5k_key<c5_real>::type);
  for (int shift = nbits - 8; shift >= 0; shift -= 8) {   /* a fixed number of rounds: no host decision */
    tk_hist<c5_real><<<(unsigned)units, TK_THREADS, 0, dev->stream>>>(v, mask, n, bpr, st, shift, hist);
    C5K_CUDA_LAUNCHED(op);
    tk_pick<<<rb, 128, 0, dev->stream>>>(st, rows, shift, hist);
    C5K_CUDA_LAUNCHED(op);
  }
  tk_count<c5_real><<<(unsigned)units, TK_THREADS, 0, dev->stream>>>(v, mask, n, bpr, st, cnt);
  C5K_CUDA_LAUNCHED(op);
  tk_scan<<<rb, 128, 0, dev->stream>>>(rows, bpr, st, cnt, count);
  C5K_CUDA_LAUNCHED(op);
  tk_write<c5_real><<<(unsigned)units, TK_THREADS, 0, dev->stream>>>(v, mask, n, bpr, st, cnt, cap, offset, pos);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
