/* cuda_internal.cuh - what the CUDA kernel files share: the device object,
   error checks that name the op, the device scratch, and the dense-rows
   check (the device ops take dense rows only: the router's ragged blocks
   stay on the CPU for now). */
#ifndef C5_CUDA_INTERNAL_CUH
#define C5_CUDA_INTERNAL_CUH
#include <stdio.h>
#include <stdlib.h>
#include <cuda_runtime.h>
#include <cublasLt.h>
#include "cuda.h"

/* cuBLASLt's chosen algorithm for one product shape (gemm.cu): the
   heuristic query costs tens of microseconds of host time, more than many
   of the block's products take on the GPU. */
#define C5K_LT_KEY 22
#define C5K_LT_ALGOS 256
struct c5k_lt_algo {
  int used;
  int none;            /* the heuristic found no algorithm (a bias epilogue without a kernel): linear falls back */
  unsigned long long hash;   /* of key: the lookup compares it first */
  long key[C5K_LT_KEY];
  cublasLtMatmulAlgo_t algo;
  /* the product's descriptors, kept with its algorithm (made once a shape, not at every call: their creation and
     destruction were host time of every product); NULL where none */
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, lc;
};
/* Destroys an entry's descriptors and marks it unused. */
void c5k_lt_algo_drop(struct c5k_lt_algo *e);

struct c5k_cuda_dev {
  int device;
  int sms;                      /* multiprocessors */
  cudaStream_t stream;
  cudaEvent_t ev;               /* recorded where another stream of the device waits for this one's work */
  int lane_of;                  /* a lane (c5k_cuda_lane_create): its lt handle is its device's, not its own */
  int lane_open;                /* the device's open fork regions (c5k_cuda_fork): only the outermost waits */
  cublasLtHandle_t lt;
  void *lt_ws;                  /* cuBLASLt workspace */
  size_t lt_ws_bytes;
  void *scratch;                /* per-op partials, grown on demand (ops may not overlap on one device) */
  size_t scratch_bytes;
  int matmul;                   /* c5_matmul: 0 fp32, 1 tf32, 2 bf16 inputs to f32-compute products */
  void *cvt;                    /* gemm_ex's bf16 copies of f32 inputs (matmul 2), grown on demand; apart from */
  size_t cvt_bytes;             /* scratch, which an op's own products may read */
  void *mir;                    /* kernels.h weights_bf16: the bf16 copy of mir_n c5_real at mir_src (0: none) */
  size_t mir_bytes;
  const void *mir_src;
  long mir_n;
  struct c5k_lt_algo algos[C5K_LT_ALGOS];   /* the shapes seen last, replaced in turn */
  int algos_next;
};

#define C5K_CUDA_TRY(call, what) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) \
    return C5K_ERR(C5_ERR_CUDA, "%s: %s: %s", (what), #call, cudaGetErrorString(e_)); } while (0)
#define C5_CALL_K(call) do { c5_status s_ = (call); if (s_ != C5_OK) return s_; } while (0)
/* After a launch: the launch's own error (configuration, missing image). */
#define C5K_CUDA_LAUNCHED(what) C5K_CUDA_TRY(cudaGetLastError(), what)

/* The op's device, or an error naming the op. */
static inline c5_status c5k_cuda_of(c5k_ctx *ctx, const char *op, c5k_cuda_dev **dev)
{
  *dev = ctx ? (c5k_cuda_dev *)ctx->dev : NULL;
  if (!*dev) return C5K_ERR(C5_ERR_ARG, "cuda op %s: the context holds no device (make it with the backend's context)", op);
  return C5_OK;
}

/* *buf of at least `need` bytes, stream-ordered: the old buffer is freed
   after the work queued before, the new one (at least `least` bytes) taken
   from the stream's pool. The device scratch and gemm_ex's bf16 copies grow
   this way. */
static inline c5_status c5k_cuda_grow(c5k_cuda_dev *dev, void **buf, size_t *bytes, size_t need, size_t least,
                                      const char *op)
{
  if (need <= *bytes) return C5_OK;
  if (*buf) C5K_CUDA_TRY(cudaFreeAsync(*buf, dev->stream), op);
  *buf = NULL;
  *bytes = 0;
  const size_t b = need < least ? least : need;
  const char *tr = getenv("C5_MEM_TRACE");   /* lib/backend.c's trace: only at a growth */
  if (tr && tr[0] == '1') fprintf(stderr, "c5 mem: cuda %s grows its scratch to %.3f MiB\n", op, b / 1048576.0);
  C5K_CUDA_TRY(cudaMallocAsync(buf, b, dev->stream), op);
  *bytes = b;
  return C5_OK;
}

/* Scratch of at least bytes on dev (per-op partials; ops may not overlap on one device). */
static inline c5_status c5k_cuda_scratch(c5k_cuda_dev *dev, size_t bytes, void **p, const char *op)
{
  C5_CALL_K(c5k_cuda_grow(dev, &dev->scratch, &dev->scratch_bytes, bytes, (size_t)1 << 20, op));
  *p = dev->scratch;
  return C5_OK;
}

/* gemm_ex (gemm.cu), which other kernels' products go through too */
extern "C" c5_status c5k_gemm_ex_cuda(c5k_ctx *, int, int, long, long, long, double, const void *, c5_dtype, long,
                                      long, const void *, c5_dtype, long, long, double, void *, c5_dtype, long, long,
                                      long, c5_dtype);

/* kernels.h bf16_acts (gemm.cu): bf16 mode, where the ops taking bf16 activations take them (attn_local.cu) */
extern "C" int c5k_bf16_acts_cuda(c5k_ctx *);
extern "C" c5_status c5k_weights_bf16_cuda(c5k_ctx *, const c5_real *, long);

/* A strided batch of products of bf16 operands into f32 C with f32 compute (gemm_ex's shape): the attentions'
   bf16 mode (attn_heavy.cu, attn_local.cu). */
static inline c5_status c5k_gemm_bf16(c5k_ctx *ctx, int ta, int tb, long m, long n, long k, double alpha,
                                      const void *A, long lda, long sa, const void *B, long ldb, long sb, double beta,
                                      float *C, long ldc, long sc, long batch)
{
  return c5k_gemm_ex_cuda(ctx, ta, tb, m, n, k, alpha, A, C5_DTYPE_BF16, lda, sa, B, C5_DTYPE_BF16, ldb, sb, beta, C,
                          C5_DTYPE_F32, ldc, sc, batch, C5_DTYPE_F32);
}

/* x rounded up to a multiple of 256: where an op's next part of the device scratch starts (cuBLASLt's heuristic
   assumes 256-byte aligned operands). */
static inline size_t c5k_up256(size_t x) { return (x + 255) & ~(size_t)255; }

/* y[i] = x[i] rounded to bf16 (nearest even) for i < n, on dev's stream (gemm.cu); y is __nv_bfloat16. */
c5_status c5k_cuda_to_bf16(c5k_cuda_dev *dev, long n, const float *x, void *y, const char *op);

/* Opt kernel into `bytes` of dynamic shared memory (above the default 48 KiB
   for wide heads or large tiles), or an error naming the op when the device
   has less per block. */
template <typename K>
static inline c5_status c5k_cuda_smem_opt(c5k_cuda_dev *dev, K kernel, size_t bytes, const char *op)
{
  int most = 0;
  C5K_CUDA_TRY(cudaDeviceGetAttribute(&most, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev->device), op);
  if (bytes > (size_t)most)
    return C5K_ERR(C5_ERR_NOTIMPL, "%s: %zu bytes of shared memory per block, the device has %d", op, bytes, most);
  C5K_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), op);
  return C5_OK;
}

/* Rows row r = [r n, r n + n): n, or an error naming the op. */
static inline c5_status c5k_cuda_dense(const c5k_rows *R, const char *op, long *n)
{
  *n = R->rows > 0 ? R->len[0] : 0;
  for (long r = 0; r < R->rows; r++)
    if (R->len[r] != *n || R->off[r] != r * *n)
      return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: row %ld is [%ld, +%ld): ragged rows are not on the GPU yet", op, r,
                     R->off[r], R->len[r]);
  return C5_OK;
}

/* Order-preserving keys of the score type (docs/design.md §2): for fp32 the
   32-bit image of the float orders exactly as the CPU's 64-bit image of the
   same value as a double, so selections agree. Masked -> 0. */
template <typename T> struct c5k_key;
template <> struct c5k_key<float> {
  typedef unsigned int type;
  static __device__ __forceinline__ type of(float v, bool keep)
  {
    unsigned int u = __float_as_uint(v + 0.0f);
    unsigned int k = (u >> 31) ? ~u : (u | 0x80000000u);
    return keep ? (k ? k : 1u) : 0u;
  }
};
template <> struct c5k_key<double> {
  typedef unsigned long long type;
  static __device__ __forceinline__ type of(double v, bool keep)
  {
    unsigned long long u = (unsigned long long)__double_as_longlong(v + 0.0);
    unsigned long long k = (u >> 63) ? ~u : (u | 0x8000000000000000ull);
    return keep ? (k ? k : 1ull) : 0ull;
  }
};

/* ---- cuda-gather: grid-stride launches and unfused arithmetic (copy2d.cu, gather.cu, route.cu, ...) ---- */
/* Elementwise ops run C5K_THREADS-thread blocks over a grid-stride loop, at
   most 32 blocks per multiprocessor: any total fits one launch. */
#define C5K_THREADS 256
static inline unsigned c5k_cuda_blocks(const c5k_cuda_dev *dev, long total)
{
  long b = (total + C5K_THREADS - 1) / C5K_THREADS, cap = 32L * (dev->sms > 0 ? dev->sms : 1);
  return (unsigned)(b < cap ? b : cap);
}
#define C5K_GRID_LOOP(i, total) \
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (long)(total); i += (long)gridDim.x * blockDim.x)
/* The same with the index type I a template parameter: an elementwise kernel that divides its index by a row
   length runs in 32 bits when the total allows (C5K_IDX_LAUNCH); its 64-bit divisions, tens of instructions each,
   held such kernels to about 2.5 TB/s on the H200. */
#define C5K_GRID_LOOP_T(I, i, total) \
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < (I)(total); i += (I)gridDim.x * blockDim.x)
/* kern<int> when total and a grid's stride past it fit in an int (grids here have at most 2^22 threads), else
   kern<long>. */
#define C5K_IDX_LAUNCH(total, kern, grid, threads, stream, ...) \
  do { \
    if ((long)(total) <= 0x7fffffffL - (1L << 22)) kern<int><<<(grid), (threads), 0, (stream)>>>(__VA_ARGS__); \
    else kern<long><<<(grid), (threads), 0, (stream)>>>(__VA_ARGS__); \
  } while (0)
/* Products and sums rounded one by one, as the CPU (no FMA contraction there:
   no -march) rounds them: nvcc would otherwise fuse a * b + c and change the
   bits of results the CPU op defines exactly. */
__device__ __forceinline__ double c5k_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float c5k_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double c5k_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float c5k_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double c5k_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float c5k_sub(float a, float b) { return __fsub_rn(a, b); }
/* Row dots one warp per row (gather.cu, indexed_rows.cu): lane l holds
   columns k = base + l of chunks base = 0, 32, 64, ..., so the warp's loads
   of a row are coalesced, where a thread per row had its 32 lanes on 32 rows.
   The loop is warp-uniform (blocks of C5K_THREADS, a multiple of 32): every
   lane stays for the full-warp shuffles. Launch c5k_cuda_blocks(dev, 32 rows). */
#define C5K_WARP_LOOP(w, total) \
  for (long w = (blockIdx.x * (long)blockDim.x + threadIdx.x) >> 5; w < (long)(total); \
       w += ((long)gridDim.x * blockDim.x) >> 5)
/* acc plus the chunk's first cnt products p (lane l: column base + l), added one at a time in lane order, in lane 0
   only (the other lanes' return is meaningless). Over the chunks in order this is the CPU's sum over k = 0, 1, 2,
   ...: the same roundings in the same order, so the same bits. The products are staged in sh (the warp's 32
   doubles of shared memory) and lane 0 loads them at once before its adds: 32 shuffle-then-add steps a chunk, every
   lane getting the sum, held the routed rows' dots (row_dot, gather_scale_dot: 2048 rows of 512 at n = 32768) to
   21-26 us on an H200. Call it from all 32 lanes with a warp-uniform cnt. */
__device__ __forceinline__ double c5k_warp_ordered_add0(double acc, double p, int cnt, double *sh)
{
  const int lane = threadIdx.x & 31;
  sh[lane] = p;
  __syncwarp();
  if (lane == 0) {
    if (cnt == 32) {
      double v[32];
#pragma unroll
      for (int l = 0; l < 32; l++) v[l] = sh[l];
#pragma unroll
      for (int l = 0; l < 32; l++) acc = c5k_add(acc, v[l]);
    } else {
      for (int l = 0; l < cnt; l++) acc = c5k_add(acc, sh[l]);
    }
  }
  __syncwarp();   /* sh is read before the next chunk's products overwrite it */
  return acc;
}
/* ---- end cuda-gather ---- */
#endif
