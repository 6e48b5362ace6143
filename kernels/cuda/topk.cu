/* topk.cu - top-k by the library's rule on the GPU (lib/topk.c, docs/design.md
   §2): largest values among unmasked entries, ties to the lower index,
   masked entries last by index. A radix select with a fixed number of
   rounds, 8 bits each, over the order keys of the score type (4 rounds of
   32-bit keys for fp32; fp64 takes 8 over 64-bit keys): per round one
   launch, whose blocks add their chunk's histogram into the row's (integer
   counts: the same whatever the order of the atomics) and whose last block
   to arrive makes the CPU's pick for the row; then per-chunk counts above
   and at the threshold, a per-row exclusive scan in chunk order, and an
   ordered compaction (block scans), so the positions are ascending and the
   ties at the threshold go to the lowest indices. One rank (P = 1). */
#include <limits.h>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include "cuda_internal.cuh"

/* Elements a block of the device select: small enough that a row of 32768
   spreads over 32 blocks (with 4096 it took 8, and each of the 4 rounds'
   histograms ran on 8 of the 132 multiprocessors). */
#define TK_CHUNK 1024
#define TK_THREADS 256

/* The order key of v as K: the score type's own (the device select), or for
   a 64-bit K the CPU's image of (double)v (the per-step ops, whose counts
   lib/topk.c reads against the CPU's 64-bit rounds). Masked -> 0. */
template <typename K, typename T> struct tk_keyof {
  static __device__ __forceinline__ K of(T v, bool keep) { return c5k_key<T>::of(v, keep); }
};
template <> struct tk_keyof<unsigned long long, float> {
  static __device__ __forceinline__ unsigned long long of(float v, bool keep) { return c5k_key<double>::of((double)v, keep); }
};

struct tk_row {
  unsigned long long prefix, thr;
  long long need, take;
  int done;   /* 0 searching, 1 threshold found, 2 ties at the threshold */
};

/* The rows' state, their histograms and arrival counters cleared. */
__global__ void tk_init(tk_row *st, long rows, long k, unsigned int *hist, unsigned int *arrived)
{
  long r = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (r < rows) {
    st[r] = { 0ull, 0ull, k, 0, 0 };
    arrived[r] = 0;
  }
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < 256 * rows; i += (long)gridDim.x * blockDim.x) hist[i] = 0;
}

/* The block's histogram h [256] (shared, cleared here) of the keys of
   [j0, j1) whose bits above shift + 8 are prefix's: integer counts, the
   same whatever the order of the atomics. */
template <typename K, typename T> __device__ __forceinline__ void tk_hist_range(const T *v, const uint8_t *mask, long j0,
                                                                               long j1, unsigned long long prefix,
                                                                               int shift, unsigned int *h)
{
  const int nbits = 8 * sizeof(K);
  for (int b = threadIdx.x; b < 256; b += blockDim.x) h[b] = 0;
  __syncthreads();
  const unsigned long long want = shift + 8 < nbits ? prefix >> (shift + 8) : 0;
  for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    K key = tk_keyof<K, T>::of(v[j], !mask || mask[j]);
    if (shift + 8 < nbits && ((unsigned long long)key >> (shift + 8)) != want) continue;
    atomicAdd(&h[(key >> shift) & 255], 1u);
  }
  __syncthreads();
}

/* lib/topk.c's step for one row and round over its whole histogram hr [256]
   (read coherent: other blocks' atomics made it), by the block's 256
   threads, thread b holding bin b: going down from bin 255, the bin where
   the count above it first reaches need (the CPU's loop, as one suffix scan);
   the histogram is cleared for the next round. */
__device__ __forceinline__ void tk_pick_row(tk_row *sr, int shift, unsigned int *hr)
{
  typedef cub::BlockScan<long long, TK_THREADS> BS;
  __shared__ typename BS::TempStorage tmp;
  __shared__ int bsel;
  __shared__ long long above;
  const int b = 255 - (int)threadIdx.x;   /* thread 0 the top bin: the scan runs down */
  const long long hb = __ldcg(hr + b);
  tk_row s = *sr;
  long long sum_above;   /* keys in the bins above b */
  BS(tmp).ExclusiveSum(hb, sum_above);
  if (threadIdx.x == 0) { bsel = 0; above = 0; }
  __syncthreads();
  /* at most one bin crosses need; none only if the row had fewer keys than need (then bin 0, as the CPU's loop) */
  if (sum_above < s.need && sum_above + hb >= s.need) { bsel = b; above = sum_above; }
  __syncthreads();
  if (b == 0 && bsel == 0) above = sum_above;
  __syncthreads();
  if (threadIdx.x == 0) {
    const int bb = bsel;
    s.need -= above;
    const long long hsel = __ldcg(hr + bb);
    unsigned long long lo = s.prefix | ((unsigned long long)bb << shift);
    if (hsel == s.need) {   /* every key >= lo is selected */
      if (lo == 0) { s.thr = 0; s.take = LLONG_MAX; }
      else { s.thr = lo - 1; s.take = 0; }
      s.done = 1;
    } else if (shift == 0) {   /* more keys equal lo than places: lowest indices win */
      s.thr = lo; s.take = s.need; s.done = 2;
    } else {
      s.prefix = lo;
    }
    *sr = s;
  }
  __syncthreads();
  hr[b] = 0;
}

/* One round for every row: each block adds its chunk's histogram into the
   row's; the row's last block to arrive (arrived[r], a fence before it)
   makes the pick and resets the counter. */
template <typename T> __global__ void __launch_bounds__(TK_THREADS)
tk_round(const T *v, const uint8_t *mask, long n, long bpr, tk_row *st, int shift, unsigned int *hist,
         unsigned int *arrived)
{
  typedef typename c5k_key<T>::type K;
  __shared__ unsigned int h[256];
  __shared__ bool last;
  const long u = blockIdx.x, r = u / bpr, c = u % bpr;
  if (st[r].done) return;   /* the same for every block of the row */
  const long j0 = r * n + c * TK_CHUNK, j1 = r * n + min(n, (c + 1) * TK_CHUNK);
  tk_hist_range<K, T>(v, mask, j0, j1, st[r].prefix, shift, h);
  unsigned int *hr = hist + 256 * r;
  for (int b = threadIdx.x; b < 256; b += blockDim.x)
    if (h[b]) atomicAdd(&hr[b], h[b]);
  __threadfence();   /* this block's counts reach the row before its arrival does */
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&arrived[r], 1u) == (unsigned int)(bpr - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  tk_pick_row(&st[r], shift, hr);
  if (threadIdx.x == 0) arrived[r] = 0;
}

/* Keys of [j0, j1) above thr and equal to it into cnt[0], cnt[1] (thread 0 writes). */
template <typename K, typename T> __device__ __forceinline__ void tk_count_range(const T *v, const uint8_t *mask, long j0,
                                                                                long j1, K thr, long long *cnt)
{
  typedef cub::BlockReduce<long long, TK_THREADS> BR;
  __shared__ typename BR::TempStorage tmp;
  long long gt = 0, eq = 0;
  for (long j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    K key = tk_keyof<K, T>::of(v[j], !mask || mask[j]);
    gt += key > thr;
    eq += key == thr;
  }
  gt = BR(tmp).Sum(gt);
  __syncthreads();
  eq = BR(tmp).Sum(eq);
  if (threadIdx.x == 0) { cnt[0] = gt; cnt[1] = eq; }
}

template <typename T> __global__ void __launch_bounds__(TK_THREADS)
tk_count(const T *v, const uint8_t *mask, long n, long bpr, const tk_row *st, long long *cnt)
{
  typedef typename c5k_key<T>::type K;
  const long u = blockIdx.x, r = u / bpr, c = u % bpr;
  const long j0 = r * n + c * TK_CHUNK, j1 = r * n + min(n, (c + 1) * TK_CHUNK);
  tk_count_range<K, T>(v, mask, j0, j1, (K)st[r].thr, cnt + 2 * u);
}

/* A row's nc chunk counts {above, equal} (rc, in place) into their
   exclusive prefixes {first slot, ties before} in chunk order (lib/topk.c's
   rule), by the whole block: the ties before a chunk are a prefix sum of the
   equal counts, the chunk's share of the ties follows from it alone, and the
   slots are a prefix sum of above + that share. Returns the row's selected
   count (every thread). */
__device__ __forceinline__ long long tk_scan_block(long long *rc, long nc, long long take)
{
  typedef cub::BlockScan<long long, TK_THREADS> BS;
  __shared__ typename BS::TempStorage tmp;
  long long out = 0, ties = 0;
  for (long c0 = 0; c0 < nc; c0 += TK_THREADS) {
    const long c = c0 + threadIdx.x;
    const long long gt = c < nc ? rc[2 * c] : 0, eq = c < nc ? rc[2 * c + 1] : 0;
    long long eq_before, eq_all, mine_before, mine_all;
    BS(tmp).ExclusiveSum(eq, eq_before, eq_all);
    __syncthreads();
    long long teq = take - (ties + eq_before);
    teq = teq < 0 ? 0 : (teq > eq ? eq : teq);
    BS(tmp).ExclusiveSum(gt + teq, mine_before, mine_all);
    __syncthreads();
    if (c < nc) { rc[2 * c] = out + mine_before; rc[2 * c + 1] = ties + eq_before; }
    out += mine_all;
    ties += eq_all;
  }
  return out;
}

/* Per row (a block each): each chunk's first output slot and the ties before it. */
__global__ void __launch_bounds__(TK_THREADS) tk_scan(long bpr, const tk_row *st, long long *cnt, long *count)
{
  const long r = blockIdx.x;
  const long long n = tk_scan_block(cnt + 2 * r * bpr, bpr, st[r].take);
  if (threadIdx.x == 0) count[r] = (long)n;
}

/* The ordered compaction of a chunk [j0, j1) of the row starting at element
   rb (j relative to it): keys above thr and the ties while fewer than take
   came before, at pr[o ..] as j + offset; o and ties are the chunk's
   prefixes (tk_scan_block). */
template <typename K, typename T> __device__ __forceinline__ void tk_write_range(const T *v, const uint8_t *mask,
                                                                                long rb, long j0, long j1, K thr,
                                                                                long long take, long long o,
                                                                                long long ties, long offset, long *pr)
{
  typedef cub::BlockScan<int, TK_THREADS> BS;
  __shared__ typename BS::TempStorage tmp;
  for (long base = j0; base < j1; base += TK_THREADS) {
    const long j = base + threadIdx.x;
    K key = 0;
    int in = j < j1, eq = 0, sel = 0;
    if (in) {
      key = tk_keyof<K, T>::of(v[rb + j], !mask || mask[rb + j]);
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

template <typename T> __global__ void __launch_bounds__(TK_THREADS)
tk_write(const T *v, const uint8_t *mask, long n, long bpr, const tk_row *st, const long long *cnt, long cap,
         long offset, long *pos)
{
  typedef typename c5k_key<T>::type K;
  const long u = blockIdx.x, r = u / bpr, c = u % bpr;
  tk_write_range<K, T>(v, mask, r * n, c * TK_CHUNK, min(n, (c + 1) * TK_CHUNK), (K)st[r].thr, st[r].take, cnt[2 * u],
                       cnt[2 * u + 1], offset, pos + r * cap);
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
  size_t o_arr = (o_st + rows * sizeof(tk_row) + 255) & ~(size_t)255;
  size_t o_cnt = (o_arr + rows * sizeof(unsigned) + 255) & ~(size_t)255, bytes = o_cnt + 2 * units * sizeof(long long);
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, bytes, &scr, op));
  char *base = (char *)scr;
  unsigned int *hist = (unsigned int *)(base + o_hist), *arrived = (unsigned int *)(base + o_arr);
  tk_row *st = (tk_row *)(base + o_st);
  long long *cnt = (long long *)(base + o_cnt);
  const unsigned rb = (unsigned)((rows + 127) / 128);
  tk_init<<<rb, 128, 0, dev->stream>>>(st, rows, k, hist, arrived);
  C5K_CUDA_LAUNCHED(op);
  const int nbits = 8 * sizeof(c5k_key<c5_real>::type);
  for (int shift = nbits - 8; shift >= 0; shift -= 8) {   /* a fixed number of rounds: no host decision */
    tk_round<c5_real><<<(unsigned)units, TK_THREADS, 0, dev->stream>>>(v, mask, n, bpr, st, shift, hist, arrived);
    C5K_CUDA_LAUNCHED(op);
  }
  tk_count<c5_real><<<(unsigned)units, TK_THREADS, 0, dev->stream>>>(v, mask, n, bpr, st, cnt);
  C5K_CUDA_LAUNCHED(op);
  tk_scan<<<(unsigned)rows, TK_THREADS, 0, dev->stream>>>(bpr, st, cnt, count);
  C5K_CUDA_LAUNCHED(op);
  tk_write<c5_real><<<(unsigned)units, TK_THREADS, 0, dev->stream>>>(v, mask, n, bpr, st, cnt, cap, offset, pos);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* ---- the per-step ops (kernels.h topk_hist, topk_count_eq, topk_select):
   lib/topk.c's rounds op by op, for rows sharded over ranks or ragged (route
   blocks), with a collective between the steps. Keys are the CPU's 64-bit
   images of (double)v in both builds, so that histograms, counts and
   thresholds are the CPU's bit for bit; one block a chunk of the CPU's
   partition (chunks.cuh), integer counts only. ---- */
#include "chunks.cuh"

typedef unsigned long long tk_key64;

template <typename T> __global__ void __launch_bounds__(TK_THREADS)
tko_hist_kernel(c5k_drows G, const T *v, const uint8_t *mask, const uint64_t *prefix, int shift, long *hist)
{
  __shared__ unsigned int h[256];
  const long c = blockIdx.x, r = c5k_drows_row(G, c);
  long j0, j1;
  c5k_drows_range(G, r, c, &j0, &j1);
  tk_hist_range<tk_key64, T>(v, mask, j0, j1, prefix[r], shift, h);
  for (int b = threadIdx.x; b < 256; b += blockDim.x)
    if (h[b]) atomicAdd((unsigned long long *)&hist[256 * r + b], (unsigned long long)h[b]);
}

/* cnt[c] = {above, equal} of chunk c against thr[r] */
template <typename T> __global__ void __launch_bounds__(TK_THREADS)
tko_count_kernel(c5k_drows G, const T *v, const uint8_t *mask, const uint64_t *thr, long long *cnt)
{
  const long c = blockIdx.x, r = c5k_drows_row(G, c);
  long j0, j1;
  c5k_drows_range(G, r, c, &j0, &j1);
  tk_count_range<tk_key64, T>(v, mask, j0, j1, (tk_key64)thr[r], cnt + 2 * c);
}

/* count[r] = the equal counts of row r's chunks (one thread a row) */
__global__ void tko_sum_eq_kernel(c5k_drows G, const long long *cnt, long *count)
{
  const long r = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (r >= G.rows) return;
  long long n = 0;
  for (long c = G.cstart[r]; c < G.cstart[r + 1]; c++) n += cnt[2 * c + 1];
  count[r] = (long)n;
}

__global__ void __launch_bounds__(TK_THREADS) tko_scan_kernel(c5k_drows G, const long *take, long long *cnt, long *count)
{
  const long r = blockIdx.x;
  const long long n = tk_scan_block(cnt + 2 * G.cstart[r], G.cstart[r + 1] - G.cstart[r], take[r]);
  if (threadIdx.x == 0) count[r] = (long)n;
}

template <typename T> __global__ void __launch_bounds__(TK_THREADS)
tko_write_kernel(c5k_drows G, const T *v, const uint8_t *mask, const uint64_t *thr, const long *take,
                 const long long *cnt, long cap, long *pos)
{
  const long c = blockIdx.x, r = c5k_drows_row(G, c);
  long j0, j1;
  c5k_drows_range(G, r, c, &j0, &j1);
  const long rb = G.off[r];
  tk_write_range<tk_key64, T>(v, mask, rb, j0 - rb, j1 - rb, (tk_key64)thr[r], take[r], cnt[2 * c], cnt[2 * c + 1], 0,
                              pos + r * cap);
}

extern "C" c5_status c5k_topk_hist_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                                        const uint64_t *prefix, int shift, long *hist)
{
  const char *op = "topk_hist";
  if (shift < 0 || shift > 56)
    return C5K_ERR(C5_ERR_ARG, "%s: shift = %d must be in [0, 56] (8-bit digits of 64-bit keys)", op, shift);
  if (R->rows == 0) return C5_OK;
  c5k_cuda_dev *dev;
  c5k_drows G;
  void *part;
  C5_CALL_K(c5k_drows_setup(ctx, R, 0, op, &dev, &G, &part));
  C5K_CUDA_TRY(cudaMemsetAsync(hist, 0, 256 * G.rows * sizeof(long), dev->stream), op);   /* chunks add to it */
  if (G.nc > 0) {
    tko_hist_kernel<c5_real><<<(unsigned)G.nc, TK_THREADS, 0, dev->stream>>>(G, v, mask, prefix, shift, hist);
    C5K_CUDA_LAUNCHED(op);
  }
  return C5_OK;
}

extern "C" c5_status c5k_topk_count_eq_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                                            const uint64_t *key, long *count)
{
  const char *op = "topk_count_eq";
  if (R->rows == 0) return C5_OK;
  c5k_cuda_dev *dev;
  c5k_drows G;
  void *part;
  C5_CALL_K(c5k_drows_setup(ctx, R, 2 * R->cstart[R->rows] * sizeof(long long), op, &dev, &G, &part));
  long long *cnt = (long long *)part;
  if (G.nc > 0) {
    tko_count_kernel<c5_real><<<(unsigned)G.nc, TK_THREADS, 0, dev->stream>>>(G, v, mask, key, cnt);
    C5K_CUDA_LAUNCHED(op);
  }
  tko_sum_eq_kernel<<<c5k_drows_blocks(G.rows), 128, 0, dev->stream>>>(G, cnt, count);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_topk_select_step_cuda(c5k_ctx *ctx, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                                               const uint64_t *thr, const long *take, long cap, long *count, long *pos)
{
  const char *op = "topk_select";
  if (R->rows == 0) return C5_OK;
  c5k_cuda_dev *dev;
  c5k_drows G;
  void *part;
  C5_CALL_K(c5k_drows_setup(ctx, R, 2 * R->cstart[R->rows] * sizeof(long long), op, &dev, &G, &part));
  long long *cnt = (long long *)part;
  if (G.nc > 0) {
    tko_count_kernel<c5_real><<<(unsigned)G.nc, TK_THREADS, 0, dev->stream>>>(G, v, mask, thr, cnt);
    C5K_CUDA_LAUNCHED(op);
  }
  tko_scan_kernel<<<(unsigned)G.rows, TK_THREADS, 0, dev->stream>>>(G, take, cnt, count);
  C5K_CUDA_LAUNCHED(op);
  if (G.nc > 0) {
    tko_write_kernel<c5_real><<<(unsigned)G.nc, TK_THREADS, 0, dev->stream>>>(G, v, mask, thr, take, cnt, cap, pos);
    C5K_CUDA_LAUNCHED(op);
  }
  return C5_OK;
}
