/* gemm.cu - the typed, strided-batched GEMM (gemm_ex) through cuBLASLt.
   Row-major C = alpha op(A) op(B) + beta C is the column-major
   C^T = op(B)^T op(A)^T, so B and A swap places and nothing is copied.
   Types: f64 throughout (compute f64); f32 or bf16 inputs with f32
   compute and f32 or bf16 output; when the backend asks
   (c5_backend_set_matmul) f32 inputs are rounded to TF32 on the tensor
   cores, or to bf16 copies for the bf16 product. */
#include <cuda_bf16.h>
#include "cuda_internal.cuh"

static cudaDataType_t cu_type(c5_dtype t)
{
  return t == C5_DTYPE_F64 ? CUDA_R_64F : t == C5_DTYPE_F32 ? CUDA_R_32F : CUDA_R_16BF;
}

/* cuBLASLt's heuristic assumes 256-byte aligned operands unless told
   otherwise; a view into a wider matrix (one head's columns) is aligned
   only to its offset, and so are the later matrices of a strided batch. */
static uint32_t lt_align(const void *p, long stride, long batch, c5_dtype t)
{
  uintptr_t a = (uintptr_t)p | 256;
  if (batch > 1) a |= (uintptr_t)stride * c5_dtype_size(t);
  return (uint32_t)(a & (~a + 1));
}

#define LT_TRY(call) do { cublasStatus_t e_ = (call); if (e_ != CUBLAS_STATUS_SUCCESS) { \
    st = C5K_ERR(C5_ERR_CUDA, "cuda op %s: %s: cuBLASLt status %d", what, #call, (int)e_); goto out; } } while (0)
#define LT_TRY_RET(call) do { cublasStatus_t e_ = (call); if (e_ != CUBLAS_STATUS_SUCCESS) \
    return C5K_ERR(C5_ERR_CUDA, "cuda op %s: %s: cuBLASLt status %d", what, #call, (int)e_); } while (0)

/* f32 -> bf16, round to nearest even: the extent an operand's batches and rows span (its padding too). Four
   elements a thread where x is 16-byte and y 8-byte aligned (a float a thread: the largest item of the block's
   kernel time at n = 32768 on the H200, 12 %). */
__global__ static void to_bf16(long n, const float *x, __nv_bfloat16 *y)
{
  const long t0 = blockIdx.x * (long)blockDim.x + threadIdx.x, step = (long)gridDim.x * blockDim.x;
  long done = 0;
  if ((((uintptr_t)x & 15) | ((uintptr_t)y & 7)) == 0) {
    const long nv = n / 4;
    for (long i = t0; i < nv; i += step) {
      const float4 v = ((const float4 *)x)[i];
      union { __nv_bfloat162 h[2]; uint2 u; } o;
      o.h[0] = __floats2bfloat162_rn(v.x, v.y);
      o.h[1] = __floats2bfloat162_rn(v.z, v.w);
      ((uint2 *)y)[i] = o.u;
    }
    done = nv * 4;
  }
  for (long i = done + t0; i < n; i += step) y[i] = __float2bfloat16_rn(x[i]);
}

c5_status c5k_cuda_to_bf16(c5k_cuda_dev *dev, long n, const float *x, void *y, const char *op)
{
  if (n <= 0) return C5_OK;
  to_bf16<<<c5k_cuda_blocks(dev, (n + 3) / 4), C5K_THREADS, 0, dev->stream>>>(n, x, (__nv_bfloat16 *)y);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

void c5k_lt_algo_drop(struct c5k_lt_algo *e)
{
  if (e->lc) cublasLtMatrixLayoutDestroy(e->lc);
  if (e->lb) cublasLtMatrixLayoutDestroy(e->lb);
  if (e->la) cublasLtMatrixLayoutDestroy(e->la);
  if (e->op) cublasLtMatmulDescDestroy(e->op);
  memset(e, 0, sizeof *e);
}

/* FNV-1a over the key's bytes */
static unsigned long long lt_hash(const long *key)
{
  unsigned long long h = 1469598103934665603ULL;
  const unsigned char *b = (const unsigned char *)key;
  for (size_t i = 0; i < C5K_LT_KEY * sizeof *key; i++) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}

/* The entry kept for a product's key, or NULL. */
static struct c5k_lt_algo *lt_cached(c5k_cuda_dev *dev, const long *key, unsigned long long h)
{
  for (int i = 0; i < C5K_LT_ALGOS; i++) {
    struct c5k_lt_algo *e = &dev->algos[i];
    if (e->used && e->hash == h && !memcmp(e->key, key, sizeof e->key)) return e;
  }
  return NULL;
}

/* Elements from an operand's first to its last: rows x cols (ld), batch of them stride apart. */
static long extent(long rows, long cols, long ld, long stride, long batch)
{
  return (batch - 1) * stride + (rows - 1) * ld + cols;
}

/* C = alpha op(A) op(B) + beta C for k = 1 (a rank-1 update: the routers' dx += g^T routing_token), f32: one
   FMA an element, C read and written once. cuBLASLt took a 2-byte-aligned sm75 kernel for it in bf16 mode
   (k = 1 makes the operands' leading dimension one element): 41 us at n = 32768, three a step, twice the time
   of the pass over C; and exact f32 is no slower here than rounding a and b to bf16 first. A 32 x 32 tile a
   block: a's and b's values of the tile in shared memory, C's rows read and written coalesced. */
__global__ static void rank1_update(long m, long n, float alpha, const float *A, long sa, const float *B, long sb,
                                    float beta, float *C, long ldc)
{
  __shared__ float as[32], bs[32];
  const long i0 = (long)blockIdx.x * 32, j0 = (long)blockIdx.y * 32;   /* rows on x: 2^31 - 1 tiles */
  const int t = threadIdx.y * 32 + threadIdx.x;
  if (t < 32 && i0 + t < m) as[t] = alpha * A[(i0 + t) * sa];
  else if (t >= 32 && t < 64 && j0 + t - 32 < n) bs[t - 32] = B[(j0 + t - 32) * sb];
  __syncthreads();
  const long j = j0 + threadIdx.x;
  if (j >= n) return;
  for (int r = threadIdx.y; r < 32 && i0 + r < m; r += blockDim.y) {
    float *c = C + (i0 + r) * ldc + j;
    *c = beta == 0.0f ? as[r] * bs[threadIdx.x] : fmaf(as[r], bs[threadIdx.x], beta * *c);
  }
}

/* The same update, four columns a thread (float4), where op(B)'s row is contiguous and C's rows are 16-byte
   aligned (the routers' dx: n = dim): the same operations on each element, so the same bits. The tile kernel
   above moved 2.3 TB/s at 32768 x 512 (56 us, three a step). */
__global__ static void rank1_update4(long m, long nq, float alpha, const float *A, long sa, const float4 *B, float beta,
                                     float *C, long ldc)
{
  const long e = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (e >= m * nq) return;
  const long i = e / nq, q = e - i * nq;
  const float a = alpha * A[i * sa];
  const float4 b = __ldg(B + q);
  float4 *cp = (float4 *)(C + i * ldc) + q;
  float4 c;
  if (beta == 0.0f) c = make_float4(a * b.x, a * b.y, a * b.z, a * b.w);
  else {
    c = *cp;
    c = make_float4(fmaf(a, b.x, beta * c.x), fmaf(a, b.y, beta * c.y), fmaf(a, b.z, beta * c.z), fmaf(a, b.w, beta * c.w));
  }
  *cp = c;
}

/* The bf16 copy of the n c5_real elements at x where all of them lie inside the held weights (weights_bf16) and the
   copy's address is 16-byte aligned (else cuBLASLt's slower low-alignment kernels would cost more than the
   rounding saves: gemm_ex rounds into its 256-byte aligned scratch instead); NULL otherwise. */
static const void *mirrored(const c5k_cuda_dev *dev, const void *x, long n)
{
  if (dev->mir_n <= 0) return NULL;
  const uintptr_t p = (uintptr_t)x, s = (uintptr_t)dev->mir_src, f = sizeof(float);
  if (p < s || (p - s) % f || (p - s) / f + (uintptr_t)n > (uintptr_t)dev->mir_n) return NULL;
  const uintptr_t m = (uintptr_t)dev->mir + (p - s) / f * sizeof(__nv_bfloat16);
  return m % 16 ? NULL : (const void *)m;
}

extern "C" c5_status c5k_weights_bf16_cuda(c5k_ctx *ctx, const c5_real *w, long n)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "weights_bf16", &dev));
  dev->mir_n = 0;
  dev->mir_src = NULL;
  if (n <= 0 || !w || !c5k_bf16_acts_cuda(ctx)) return C5_OK;   /* f32 and f64 products read the values as they are */
  C5_CALL_K(c5k_cuda_grow(dev, &dev->mir, &dev->mir_bytes, (size_t)n * sizeof(__nv_bfloat16), 0, "weights_bf16"));
  C5_CALL_K(c5k_cuda_to_bf16(dev, n, (const float *)w, dev->mir, "weights_bf16"));
  dev->mir_src = w;
  dev->mir_n = n;
  return C5_OK;
}

/* gemm_ex, and with bias != NULL (c5_real, n elements; C c5_real [m x n] dense, batch 1, beta 0)
   C[i, j] = alpha (op(A) op(B))[i, j] + bias[j] through cuBLASLt's bias epilogue: in the column-major view
   C' [n x m] the bias runs along C''s rows, the one direction the epilogue broadcasts. Where cuBLASLt has no
   algorithm with the epilogue for the product (the answer is cached with the key), the bias is broadcast into C
   and the product added with beta 1, on the operands as they are then (bf16 copies already made are reused).
   cin: the matrix beta scales (cuBLASLt's C, C's layout, apart from C), C being written (its D); NULL: C itself.
   With a bias, beta is then 1 (linear's residual: C = product + bias + cin); the fallback forms bias + cin in C
   first. what names the op in errors. */
extern "C" c5_status c5k_broadcast_row_cuda(c5k_ctx *, long, long, const c5_real *, c5_real *);
extern "C" c5_status c5k_axpy_cuda(c5k_ctx *, long, double, const c5_real *, c5_real *);

static c5_status lt_gemm(c5k_ctx *ctx, int transa, int transb, long m, long n, long k, double alpha, const void *A,
                         c5_dtype atype, long lda, long stride_a, const void *B, c5_dtype btype, long ldb,
                         long stride_b, double beta, const void *cin, void *C, c5_dtype ctype, long ldc, long stride_c,
                         long batch, c5_dtype compute, const c5_real *bias, const char *what)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, what, &dev));
  if (bias && (batch != 1 || beta != (cin ? 1.0 : 0.0) || ctype != C5_DTYPE_REAL || ldc != n))
    return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: a bias epilogue takes one product into dense c5_real rows, beta 0 "
                   "(1 with cin) (batch %ld, beta %g, ldc %ld, n %ld)", what, batch, beta, ldc, n);
  /* the bf16 path below calls again with the caller's cin: NULL means C only from here on */
  const void *const cin_given = cin;
  if (!cin) cin = C;
  if (k == 1 && batch == 1 && !bias && cin == C && atype == C5_DTYPE_F32 && btype == C5_DTYPE_F32 && ctype == C5_DTYPE_F32 &&
      compute == C5_DTYPE_F32) {
    if (m <= 0 || n <= 0) return C5_OK;
    /* op(A)[i, 0] and op(B)[0, j]: element strides of the one column of op(A) and the one row of op(B) */
    const long sa = transa ? 1 : lda, sb = transb ? ldb : 1;
    if ((n + 31) / 32 > 65535)
      return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: a rank-1 update of %ld columns (at most %ld)", what, n, 65535L * 32);
    if (sb == 1 && n % 4 == 0 && ldc % 4 == 0 && (uintptr_t)B % 16 == 0 && (uintptr_t)C % 16 == 0) {
      const long nq = n / 4, blocks = (m * nq + 255) / 256;
      rank1_update4<<<(unsigned)blocks, 256, 0, dev->stream>>>(m, nq, (float)alpha, (const float *)A, sa,
                                                                (const float4 *)B, (float)beta, (float *)C, ldc);
      C5K_CUDA_LAUNCHED(what);
      return C5_OK;
    }
    const dim3 grid((unsigned)((m + 31) / 32), (unsigned)((n + 31) / 32)), block(32, 8);
    rank1_update<<<grid, block, 0, dev->stream>>>(m, n, (float)alpha, (const float *)A, sa, (const float *)B, sb,
                                                  (float)beta, (float *)C, ldc);
    C5K_CUDA_LAUNCHED(what);
    return C5_OK;
  }
  /* bf16 products of f32 inputs: the inputs rounded to bf16 copies, then the bf16 tensor-core product with f32
     accumulation. cuBLASLt's CUBLAS_COMPUTE_32F_FAST_16BF was measured on an H200 (cuBLAS 13) to give TF32's
     accuracy and speed, so the rounding is done here, where it is known to happen. */
  /* An operand already in bf16 (a module's activations kept so, kernels.h local_attn_bf16) is used as it is; in
     bf16 mode the other, f32, is rounded to its copy. */
  const int a32 = atype == C5_DTYPE_F32, b32 = btype == C5_DTYPE_F32;
  if (dev->matmul == 2 && !ctx->exact && compute == C5_DTYPE_F32 && (a32 || b32) &&
      (a32 || atype == C5_DTYPE_BF16) && (b32 || btype == C5_DTYPE_BF16) && m > 0 && n > 0 && k > 0 && batch > 0) {
    const long na = a32 ? extent(transa ? k : m, transa ? m : k, lda, stride_a, batch) : 0;
    const long nb = b32 ? extent(transb ? n : k, transb ? k : n, ldb, stride_b, batch) : 0;
    /* an operand inside the held weights (weights_bf16) is read from their copy */
    const void *am = a32 ? mirrored(dev, A, na) : NULL, *bm = b32 ? mirrored(dev, B, nb) : NULL;
    const long nac = a32 && !am ? na : 0, nbc = b32 && !bm ? nb : 0;   /* elements rounded here */
    /* B's copy 256-byte aligned: at an odd offset after A's, cuBLASLt took its align-1 sm75 kernels (ncu on the
       H200: 0.9 ms of the 13 ms block at n = 32768) */
    const long nap = (nac + 127) & ~127L;
    const size_t bytes = (size_t)(nap + nbc) * sizeof(__nv_bfloat16);
    if (bytes) C5_CALL_K(c5k_cuda_grow(dev, &dev->cvt, &dev->cvt_bytes, bytes, 0, what));
    __nv_bfloat16 *a16 = (__nv_bfloat16 *)dev->cvt, *b16 = a16 + nap;
    if (nac) C5_CALL_K(c5k_cuda_to_bf16(dev, na, (const float *)A, a16, what));
    if (nbc) C5_CALL_K(c5k_cuda_to_bf16(dev, nb, (const float *)B, b16, what));
    /* the bias stays f32 (C's type): only the product's inputs are rounded */
    return lt_gemm(ctx, transa, transb, m, n, k, alpha, !a32 ? A : am ? am : (const void *)a16, C5_DTYPE_BF16, lda,
                   stride_a, !b32 ? B : bm ? bm : (const void *)b16, C5_DTYPE_BF16, ldb, stride_b, beta, cin_given, C,
                   ctype, ldc, stride_c, batch, compute, bias, what);
  }
  const int f64 = compute == C5_DTYPE_F64 && atype == C5_DTYPE_F64 && btype == C5_DTYPE_F64 && ctype == C5_DTYPE_F64;
  const int f32 = compute == C5_DTYPE_F32 && atype == btype && (atype == C5_DTYPE_F32 || atype == C5_DTYPE_BF16) &&
                  (ctype == C5_DTYPE_F32 || ctype == C5_DTYPE_BF16);
  if (!f64 && !f32)
    return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: A %s, B %s, C %s, compute %s: the GPU takes f64 throughout, or "
                   "f32/bf16 inputs (alike) with f32 compute", what, c5_dtype_name(atype), c5_dtype_name(btype),
                   c5_dtype_name(ctype), c5_dtype_name(compute));
  if (m <= 0 || n <= 0 || batch <= 0) return C5_OK;
  /* column-major view: C' [n x m] = op(B') [n x k] op(A') [k x m] */
  const cublasOperation_t oa = transb ? CUBLAS_OP_T : CUBLAS_OP_N, ob = transa ? CUBLAS_OP_T : CUBLAS_OP_N;
  /* f32 inputs rounded to TF32 on the tensor cores when the backend asks (c5_backend_set_matmul) */
  const cublasComputeType_t ct = f64 || atype != C5_DTYPE_F32 || ctx->exact ? (f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F)
                                 : dev->matmul == 1 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t sct = f64 ? CUDA_R_64F : CUDA_R_32F;
  float af = (float)alpha, bf = (float)beta;
  const void *pa = f64 ? (const void *)&alpha : (const void *)&af, *pb = f64 ? (const void *)&beta : (const void *)&bf;
  const uint32_t al[4] = { lt_align(B, stride_b, batch, btype), lt_align(A, stride_a, batch, atype),
                           lt_align(cin, stride_c, batch, ctype), lt_align(C, stride_c, batch, ctype) };
  /* the epilogue is part of the key (an algorithm found without it need not support it), and so is the bias's
     alignment (the heuristic reads the pointer's value for it); 0: no epilogue. So are whether C is read (beta)
     and written in place: no algorithm found for one case is taken for another */
  const long key[C5K_LT_KEY] = { transa, transb, m, n, k, atype, btype, ctype, lda, ldb, ldc, stride_a, stride_b,
                                 stride_c, batch, (long)ct, al[0], al[1], al[2], al[3],
                                 bias ? (long)lt_align(bias, 0, 1, ctype) : 0, (beta != 0.0) + 2L * (cin != C) };
  const unsigned long long h = lt_hash(key);
  struct c5k_lt_algo *e = lt_cached(dev, key, h);
  c5_status st = C5_OK;
  if (!e) {   /* a new shape: its descriptors and the heuristic's algorithm, kept in the next entry in turn */
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    e = &dev->algos[dev->algos_next];
    dev->algos_next = (dev->algos_next + 1) % C5K_LT_ALGOS;
    c5k_lt_algo_drop(e);
    LT_TRY(cublasLtMatmulDescCreate(&e->op, ct, sct));
    LT_TRY(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof oa));
    LT_TRY(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof ob));
    if (bias) {
      /* the bias's type is left at cuBLASLt's default, D's: c5_real, f32 for the f32 and bf16 products */
      const cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
      LT_TRY(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
      LT_TRY(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    }
    LT_TRY(cublasLtMatrixLayoutCreate(&e->la, cu_type(btype), oa == CUBLAS_OP_N ? n : k, oa == CUBLAS_OP_N ? k : n, ldb));
    LT_TRY(cublasLtMatrixLayoutCreate(&e->lb, cu_type(atype), ob == CUBLAS_OP_N ? k : m, ob == CUBLAS_OP_N ? m : k, lda));
    LT_TRY(cublasLtMatrixLayoutCreate(&e->lc, cu_type(ctype), n, m, ldc));
    if (batch > 1) {
      int32_t bc = (int32_t)batch;
      int64_t sa = stride_b, sb = stride_a, sc = stride_c;
      LT_TRY(cublasLtMatrixLayoutSetAttribute(e->la, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
      LT_TRY(cublasLtMatrixLayoutSetAttribute(e->la, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sa, sizeof sa));
      LT_TRY(cublasLtMatrixLayoutSetAttribute(e->lb, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
      LT_TRY(cublasLtMatrixLayoutSetAttribute(e->lb, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sb, sizeof sb));
      LT_TRY(cublasLtMatrixLayoutSetAttribute(e->lc, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
      LT_TRY(cublasLtMatrixLayoutSetAttribute(e->lc, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sc, sizeof sc));
    }
    {
      const cublasLtMatmulPreferenceAttributes_t at[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES };
      LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
      LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &dev->lt_ws_bytes,
                                                  sizeof dev->lt_ws_bytes));
      for (int i = 0; i < 4; i++) LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, at[i], &al[i], sizeof al[i]));
      const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(dev->lt, e->op, e->la, e->lb, e->lc, e->lc, pref, 1,
                                                               &heur, &found);
      /* with the epilogue, "not supported" is an answer (the caller falls back), not an error */
      if (hs == CUBLAS_STATUS_NOT_SUPPORTED && bias) found = 0;
      else LT_TRY(hs);
      if (!found && !bias) {
        st = C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: cuBLASLt has no algorithm for m %ld n %ld k %ld (%s inputs)", what,
                     m, n, k, c5_dtype_name(atype));
        goto out;
      }
    }
    e->used = 1;
    e->none = !found;
    e->hash = h;
    memcpy(e->key, key, sizeof e->key);
    if (found) e->algo = heur.algo;
  out:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (st != C5_OK) {
      c5k_lt_algo_drop(e);
      return st;
    }
  }
  if (e->none) {   /* bias only: no fused algorithm; the bias (and cin) formed in C, then the product added */
    C5_CALL_K(c5k_broadcast_row_cuda(ctx, m, n, bias, (c5_real *)C));
    if (cin != C) C5_CALL_K(c5k_axpy_cuda(ctx, m * n, 1.0, (const c5_real *)cin, (c5_real *)C));
    return lt_gemm(ctx, transa, transb, m, n, k, alpha, A, atype, lda, stride_a, B, btype, ldb, stride_b, 1.0, NULL, C,
                   ctype, ldc, stride_c, batch, compute, NULL, what);
  }
  /* the bias's address is this call's (its alignment is the key's) */
  if (bias) LT_TRY_RET(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  LT_TRY_RET(cublasLtMatmul(dev->lt, e->op, pa, B, e->la, A, e->lb, pb, cin, e->lc, C, e->lc, &e->algo, dev->lt_ws,
                            dev->lt_ws_bytes, dev->stream));
  return C5_OK;
}

extern "C" c5_status c5k_gemm_ex_cuda(c5k_ctx *ctx, int transa, int transb, long m, long n, long k, double alpha,
                                      const void *A, c5_dtype atype, long lda, long stride_a,
                                      const void *B, c5_dtype btype, long ldb, long stride_b, double beta,
                                      void *C, c5_dtype ctype, long ldc, long stride_c, long batch, c5_dtype compute)
{
  return lt_gemm(ctx, transa, transb, m, n, k, alpha, A, atype, lda, stride_a, B, btype, ldb, stride_b, beta, NULL, C,
                 ctype, ldc, stride_c, batch, compute, NULL, "gemm_ex");
}

extern "C" c5_status c5k_gemm_cuda(c5k_ctx *ctx, int transa, int transb, long m, long n, long k, double alpha,
                                   const c5_real *A, long lda, const c5_real *B, long ldb, double beta, c5_real *C,
                                   long ldc)
{
  return c5k_gemm_ex_cuda(ctx, transa, transb, m, n, k, alpha, A, C5_DTYPE_REAL, lda, 0, B, C5_DTYPE_REAL, ldb, 0, beta,
                          C, C5_DTYPE_REAL, ldc, 0, 1, C5_DTYPE_REAL);
}

/* ---- gemm_acc (cuda-rows): a parameter gradient's part into its double accumulator ---- */
#if !C5_USE_DOUBLE
__global__ static void acc_add_prod(long mn, const c5_real *prod, double *acc)
{
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < mn; i += (long)gridDim.x * blockDim.x) acc[i] += prod[i];
}
#endif

/* As kernels/cpu/gemm.c: in double the GEMM adds to the accumulator itself
   (beta = 1); in single the product is formed with beta = 0 into prod,
   rounded once, then added in double. Inputs typed as gemm_ex's. */
extern "C" c5_status c5k_gemm_acc_ex_cuda(c5k_ctx *ctx, int transa, int transb, long m, long n, long k, double alpha,
                                          const void *A, c5_dtype atype, long lda, const void *B, c5_dtype btype,
                                          long ldb, c5_real *prod, double *acc)
{
#if C5_USE_DOUBLE
  (void)prod;
  return lt_gemm(ctx, transa, transb, m, n, k, alpha, A, atype, lda, 0, B, btype, ldb, 0, 1.0, NULL, acc, C5_DTYPE_F64,
                 n, 0, 1, C5_DTYPE_F64, NULL, "gemm_acc");
#else
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "gemm_acc", &dev));
  if (m <= 0 || n <= 0) return C5_OK;
  C5_CALL_K(lt_gemm(ctx, transa, transb, m, n, k, alpha, A, atype, lda, 0, B, btype, ldb, 0, 0.0, NULL, prod,
                    C5_DTYPE_F32, n, 0, 1, C5_DTYPE_F32, NULL, "gemm_acc"));
  const long mn = m * n, blocks = (mn + 255) / 256;
  acc_add_prod<<<(unsigned)(blocks < 65536L * 16 ? blocks : 65536L * 16), 256, 0, dev->stream>>>(mn, prod, acc);
  C5K_CUDA_LAUNCHED("gemm_acc");
  return C5_OK;
#endif
}

/* kernels.h bf16_acts: where lt_gemm takes a bf16 operand with an f32 one (the f32 one rounded to its copy) */
extern "C" int c5k_bf16_acts_cuda(c5k_ctx *ctx)
{
#if C5_USE_DOUBLE
  (void)ctx;
  return 0;   /* the products are f64 throughout */
#else
  c5k_cuda_dev *dev;
  return c5k_cuda_of(ctx, "bf16_acts", &dev) == C5_OK && dev->matmul == 2 && !ctx->exact;
#endif
}

extern "C" c5_status c5k_gemm_acc_cuda(c5k_ctx *ctx, int transa, int transb, long m, long n, long k, double alpha,
                                       const c5_real *A, long lda, const c5_real *B, long ldb, c5_real *prod,
                                       double *acc)
{
  return c5k_gemm_acc_ex_cuda(ctx, transa, transb, m, n, k, alpha, A, C5_DTYPE_REAL, lda, B, C5_DTYPE_REAL, ldb, prod,
                              acc);
}

/* ---- linear (linbias): torch's Linear with its bias in the product's epilogue ---- */

/* y = x W^T + b as one cuBLASLt call: the bias added in the epilogue, where a broadcast_row pass writing it across
   the whole of y first (then a beta = 1 product reading it back) took 4-5 % of the block's step on an H200 at
   n = 32768 and 131072. lt_gemm falls back to exactly those two calls where cuBLASLt's heuristic finds no
   algorithm with CUBLASLT_EPILOGUE_BIAS for the product (or answers "not supported"): its documentation does not
   promise the epilogue for every type, f64 products (the double build) being the likeliest to lack it. res
   (linear's residual) is cuBLASLt's C with beta 1, y its D: y = x W^T + b + res in the same call. */
extern "C" c5_status c5k_linear_cuda(c5k_ctx *ctx, long rows, long out, long in, const void *x, c5_dtype xtype,
                                     const c5_real *W, const c5_real *b, const c5_real *res, c5_real *y)
{
  return lt_gemm(ctx, 0, 1, rows, out, in, 1.0, x, xtype, in, 0, W, C5_DTYPE_REAL, in, 0, res ? 1.0 : 0.0, res, y,
                 C5_DTYPE_REAL, out, 0, 1, C5_DTYPE_REAL, b, "linear");
}
