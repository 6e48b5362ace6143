/* rowsum.cuh - what the row kernels share (norm.cu, grad.cu, xent.cu): a
   block's reduction of one value per thread in double, and the parameter
   gradients' fixed row partition (kernels.h C5K_ROWPART). Both have an
   order fixed by the shape alone, so a result's bits never depend on
   scheduling: no floating-point atomics anywhere. Also the grid size and the
   16-byte loop of the elementwise kernels (act.cu, elementwise.cu, adamw.cu,
   init.cu, ...), and the typed outputs of the norms and GELU (c5k_as). */
#ifndef C5_CUDA_ROWSUM_CUH
#define C5_CUDA_ROWSUM_CUH
#include <cuda_bf16.h>
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

/* A warp a column: its lanes load 32 consecutive parts at once, then lane 0 adds them in order
   (c5k_warp_ordered_add0), from 0: the CPU's order, the same bits. (A thread a column, its loads 8 or 32 ahead, ran
   on cols / 128 SMs only: 58-68 us a call for 2048 parts of 512 columns on the H200 at n = 131072; every lane
   adding from shuffles, 12.5 us for 512 parts of 512 at n = 32768.) Launch C5K_ROW_THREADS threads,
   dim3(c5k_warp_row_blocks(cols), NOUT) blocks. */
template <int NOUT> __global__ void c5k_rowpart_finish(const double *part, long np, int cols, c5k_rowpart_out<NOUT> out)
{
  __shared__ double sh[C5K_ROW_THREADS];
  const long i = c5k_warp_row();   /* the warp's column: the same for all its lanes */
  const int lane = threadIdx.x & 31, o = blockIdx.y;
  if (i >= cols) return;
  const double *x = part + (long)o * cols + i;
  const long st = (long)NOUT * cols;
  double s = 0;
  for (long p0 = 0; p0 < np; p0 += 32) {
    const double v = p0 + lane < np ? x[(p0 + lane) * st] : 0.0;
    const int m = np - p0 < 32 ? (int)(np - p0) : 32;
    s = c5k_warp_ordered_add0(s, v, m, sh + (threadIdx.x & ~31));
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

/* An op's output type (kernels.h: the norms' and GELU's ytype): c5_real, or in the single build bf16 (the c5_real
   result rounded once more, c5k_as); else an error naming the op. */
static inline c5_status c5k_cuda_ytype(c5_dtype ytype, const char *op)
{
  if (ytype == C5_DTYPE_REAL || (!C5_USE_DOUBLE && ytype == C5_DTYPE_BF16)) return C5_OK;
  return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: %s output (the GPU writes %s%s)", op, c5_dtype_name(ytype),
                 c5_dtype_name(C5_DTYPE_REAL), C5_USE_DOUBLE ? "" : " or bf16");
}

/* v as an output element of type T: c5_real as it is; bf16 rounded to nearest even from the c5_real value, the bits
   gemm_ex's bf16 copy of the c5_real output would hold (used in the single build only, where c5_real is float). */
template <typename T> __device__ __forceinline__ T c5k_as(c5_real v) { return (T)v; }
template <> __device__ __forceinline__ __nv_bfloat16 c5k_as<__nv_bfloat16>(c5_real v)
{
  return __float2bfloat16_rn((float)v);
}

/* y[i] = f(a[i], b[i]) (as Y, c5k_as) for i < n, in a grid-stride loop: 16 bytes of a and b and C5K_RV elements of y
   a thread at a time where a and b are 16-byte aligned and y to its C5K_RV elements, then the rest one at a time. The
   same f on the same values either way: the bits do not depend on the alignment. (One element a thread reached about
   2 TB/s on an H200 for the block's residual adds and GELU, 16 bytes a thread about 4.) Launch
   c5k_grid_for(c5k_ew_units(n), threads). y may alias a or b (Y c5_real). */
#if C5_USE_DOUBLE
typedef double2 c5k_real_v;
#define C5K_RV 2
#else
typedef float4 c5k_real_v;
#define C5K_RV 4
#endif
static inline long c5k_ew_units(long n) { return (n + C5K_RV - 1) / C5K_RV; }
template <typename Y, typename F>
__device__ __forceinline__ void c5k_ew2(long n, const c5_real *a, const c5_real *b, Y *y, F f)
{
  struct alignas(C5K_RV * sizeof(Y)) yv { Y e[C5K_RV]; };   /* c5_real: 16 bytes; bf16 (single build): 8 */
  const long t0 = blockIdx.x * (long)blockDim.x + threadIdx.x, step = (long)gridDim.x * blockDim.x;
  long done = 0;
  if (((((uintptr_t)a | (uintptr_t)b) & 15) | ((uintptr_t)y & (sizeof(yv) - 1))) == 0) {
    const long nv = n / C5K_RV;
    for (long i = t0; i < nv; i += step) {
      const c5k_real_v u = ((const c5k_real_v *)a)[i], v = ((const c5k_real_v *)b)[i];
      yv w;
      const c5_real *us = (const c5_real *)&u, *vs = (const c5_real *)&v;
#pragma unroll
      for (int k = 0; k < C5K_RV; k++) w.e[k] = c5k_as<Y>(f(us[k], vs[k]));
      ((yv *)y)[i] = w;
    }
    done = nv * C5K_RV;
  }
  for (long i = done + t0; i < n; i += step) y[i] = c5k_as<Y>(f(a[i], b[i]));
}

/* A grid of blocks of `threads` covering n elements, one thread each (grid-stride loops take any rest). */
static inline unsigned c5k_grid_for(long n, int threads)
{
  long b = (n + threads - 1) / threads;
  return (unsigned)(b < 65536L * 16 ? (b > 0 ? b : 1) : 65536L * 16);
}
#endif
