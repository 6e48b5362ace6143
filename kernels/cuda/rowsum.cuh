/* rowsum.cuh - what the row kernels share (norm.cu, grad.cu, xent.cu): a
   block's reduction of one value per thread in double, and the parameter
   gradients' fixed row partition (kernels.h C5K_ROWPART). Both have an
   order fixed by the shape alone, so a result's bits never depend on
   scheduling: no floating-point atomics anywhere. Also the grid size of the
   elementwise kernels (act.cu, elementwise.cu, adamw.cu, init.cu, ...). */
#ifndef C5_CUDA_ROWSUM_CUH
#define C5_CUDA_ROWSUM_CUH
#include "cuda_internal.cuh"

/* Threads of a per-row block (a multiple of 32: the shuffles take full warps). */
#define C5K_ROW_THREADS 128

struct c5k_add_op { __device__ double operator()(double a, double b) const { return a + b; } };
struct c5k_max_op { __device__ double operator()(double a, double b) const { return a > b ? a : b; } };

/* The block's reduction of v (every thread gets it): a fixed shuffle tree per
   warp, then the warps' values by warp 0. ident: op's identity (pads warps). */
template <typename Op> __device__ __forceinline__ double c5k_block_reduce(double v, Op op, double ident)
{
  __shared__ double sh[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  for (int o = 16; o; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
  __syncthreads();   /* the previous call's readers are done with sh */
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nw ? sh[lane] : ident;
    __syncwarp();
    for (int o = 16; o; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    if (lane == 0) sh[0] = v;
  }
  __syncthreads();
  return sh[0];
}
__device__ __forceinline__ double c5k_block_sum(double v) { return c5k_block_reduce(v, c5k_add_op(), 0.0); }

/* A warp's sum of v (every lane gets it): a fixed butterfly. */
__device__ __forceinline__ double c5k_warp_sum(double v)
{
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* Row kernels with a warp a row (C5K_ROW_THREADS / 32 rows a block): for rows of a few hundred columns a block a
   row waited on its two barriers and its few loads a thread (LayerNorm's forward at 1.5 TB/s on an H200). */
#define C5K_WARP_ROWS (C5K_ROW_THREADS / 32)
__device__ __forceinline__ long c5k_warp_row() { return blockIdx.x * (long)C5K_WARP_ROWS + threadIdx.x / 32; }
static inline unsigned c5k_warp_row_blocks(long rows) { return (unsigned)((rows + C5K_WARP_ROWS - 1) / C5K_WARP_ROWS); }

/* The row partition (the CPU's c5k_rowpart_add): part p's sum over its rows
   r in order of term(r, i) (NOUT terms at once, e.g. LayerNorm's dw and db),
   each from 0 in double, into part [np][NOUT][cols]; then out[o][i] += the
   parts in order. The partial sums: one thread per (part, column), a warp reading a row's
   consecutive columns. */
template <int NOUT> struct c5k_rowpart_out { double *out[NOUT]; };

template <int NOUT, typename Term> __global__ void c5k_rowpart_partial(Term term, long rows, int cols, double *part)
{
  const long p = blockIdx.x;
  const int i = blockIdx.y * blockDim.x + threadIdx.x;
  if (i >= cols) return;
  double a[NOUT], t[NOUT];
  for (int o = 0; o < NOUT; o++) a[o] = 0;
  const long r1 = (p + 1) * C5K_ROWPART < rows ? (p + 1) * C5K_ROWPART : rows;
  for (long r = p * C5K_ROWPART; r < r1; r++) {
    term(r, i, t);
    for (int o = 0; o < NOUT; o++) a[o] += t[o];
  }
  for (int o = 0; o < NOUT; o++) part[(p * NOUT + o) * cols + i] = a[o];
}

/* A warp a column: its lanes load 32 consecutive parts at once, then every lane adds them in order from shuffles,
   from 0: the CPU's order, the same bits. (A thread a column, its loads 8 or 32 ahead, ran on cols / 128 SMs only:
   58-68 us a call for 2048 parts of 512 columns on the H200 at n = 131072.) Launch C5K_ROW_THREADS threads,
   dim3(c5k_warp_row_blocks(cols), NOUT) blocks. */
template <int NOUT> __global__ void c5k_rowpart_finish(const double *part, long np, int cols, c5k_rowpart_out<NOUT> out)
{
  const long i = c5k_warp_row();   /* the warp's column: the same for all its lanes */
  const int lane = threadIdx.x & 31, o = blockIdx.y;
  if (i >= cols) return;
  const double *x = part + (long)o * cols + i;
  const long st = (long)NOUT * cols;
  double s = 0;
  for (long p0 = 0; p0 < np; p0 += 32) {
    const double v = p0 + lane < np ? x[(p0 + lane) * st] : 0.0;
    const int m = np - p0 < 32 ? (int)(np - p0) : 32;
    for (int u = 0; u < m; u++) s += __shfl_sync(0xffffffffu, v, u);
  }
  if (lane == 0) out.out[o][i] += s;
}

/* out[o][i] += sum over rows of term(r, i)[o], for i < cols, by the partition above. */
template <int NOUT, typename Term>
static c5_status c5k_rowpart_sum(c5k_cuda_dev *dev, const char *op, Term term, long rows, int cols,
                                 c5k_rowpart_out<NOUT> out)
{
  if (rows <= 0 || cols <= 0) return C5_OK;
  const long np = (rows + C5K_ROWPART - 1) / C5K_ROWPART;
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, (size_t)np * NOUT * cols * sizeof(double), &scr, op));
  double *part = (double *)scr;
  const unsigned cb = (unsigned)((cols + C5K_ROW_THREADS - 1) / C5K_ROW_THREADS);
  c5k_rowpart_partial<NOUT, Term><<<dim3((unsigned)np, cb), C5K_ROW_THREADS, 0, dev->stream>>>(term, rows, cols, part);
  C5K_CUDA_LAUNCHED(op);
  c5k_rowpart_finish<NOUT><<<dim3(c5k_warp_row_blocks(cols), NOUT), C5K_ROW_THREADS, 0, dev->stream>>>(part, np, cols,
                                                                                                       out);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* y[i] = f(a[i], b[i]) for i < n, in a grid-stride loop: 16 bytes of a, b and y a thread at a time where all three
   are 16-byte aligned, then the rest one at a time. The same f on the same values either way: the bits do not depend
   on the alignment. (One element a thread reached about 2 TB/s on an H200 for the block's residual adds and GELU,
   16 bytes a thread about 4.) Launch c5k_grid_for(c5k_ew_units(n), threads). y may alias a or b. */
#if C5_USE_DOUBLE
typedef double2 c5k_real_v;
#define C5K_RV 2
#else
typedef float4 c5k_real_v;
#define C5K_RV 4
#endif
static inline long c5k_ew_units(long n) { return (n + C5K_RV - 1) / C5K_RV; }
template <typename F>
__device__ __forceinline__ void c5k_ew2(long n, const c5_real *a, const c5_real *b, c5_real *y, F f)
{
  const long t0 = blockIdx.x * (long)blockDim.x + threadIdx.x, step = (long)gridDim.x * blockDim.x;
  long done = 0;
  if ((((uintptr_t)a | (uintptr_t)b | (uintptr_t)y) & 15) == 0) {
    const long nv = n / C5K_RV;
    for (long i = t0; i < nv; i += step) {
      const c5k_real_v u = ((const c5k_real_v *)a)[i], v = ((const c5k_real_v *)b)[i];
      c5k_real_v w;
      const c5_real *us = (const c5_real *)&u, *vs = (const c5_real *)&v;
      c5_real *ws = (c5_real *)&w;
#pragma unroll
      for (int k = 0; k < C5K_RV; k++) ws[k] = f(us[k], vs[k]);
      ((c5k_real_v *)y)[i] = w;
    }
    done = nv * C5K_RV;
  }
  for (long i = done + t0; i < n; i += step) y[i] = f(a[i], b[i]);
}

/* A grid of blocks of `threads` covering n elements, one thread each (grid-stride loops take any rest). */
static inline unsigned c5k_grid_for(long n, int threads)
{
  long b = (n + threads - 1) / threads;
  return (unsigned)(b < 65536L * 16 ? (b > 0 ? b : 1) : 65536L * 16);
}
#endif
