/* attn_heavy.cu - the heavy-branch Attention's arithmetic on the GPU (layouts
   and semantics in kernels.h, the CPU's in kernels/cpu/attn_heavy.c).
   The interface stores P, so the attention is GEMM + row kernel + GEMM:
   cuBLASLt strided-batched products (gemm_ex, batched over b, one call per
   head: a head's key and value columns are strided views of kv) and warp
   row kernels for the softmax and dS. The CPU sums a row's terms in double
   in ascending order; to keep that order and still read rows coalesced, a
   warp owns 32 rows and each lane walks its own row through 32 x 32 tiles
   in shared memory. No atomics: every output element has one writer, so the
   results do not change between runs. The products follow the backend's
   TF32 setting, as gemm does (off unless c5_backend_set_tf32). */
#include <math.h>
#include "cuda_internal.cuh"

extern "C" c5_status c5k_gemm_ex_cuda(c5k_ctx *, int, int, long, long, long, double, const void *, c5_dtype, long, long,
                                      const void *, c5_dtype, long, long, double, void *, c5_dtype, long, long, long,
                                      c5_dtype);

#define HA_FULL 0xffffffffu
#define HA_WARPS 4   /* warps per block of the row kernels: a [32][33] double tile each */

__device__ __forceinline__ float ha_exp(float x) { return expf(x); }
__device__ __forceinline__ double ha_exp(double x) { return exp(x); }

/* The warp's sum over its rows r < nr (<= 32) of term(r, j) in double for
   j = 0 .. n - 1 ascending; lane r returns row r's. The terms are formed
   where the loads are coalesced (lane l: column c0 + l of every row) and
   the next tile's are in flight while each row's lane adds the current
   tile's in order from shared memory. Every lane of the warp calls it. */
template <typename F>
__device__ __forceinline__ double ha_sum_in_order(int nr, long n, double (*tile)[33], F term)
{
  const int lane = threadIdx.x & 31;
  double v[32], sum = 0;
#pragma unroll
  for (int r = 0; r < 32; r++) v[r] = r < nr && lane < n ? term(r, (long)lane) : 0.0;
  for (long c0 = 0; c0 < n; c0 += 32) {
    __syncwarp();   /* the previous tile has been read */
#pragma unroll
    for (int r = 0; r < 32; r++) tile[r][lane] = v[r];
    __syncwarp();
    const long c1 = c0 + 32;
#pragma unroll
    for (int r = 0; r < 32; r++) v[r] = r < nr && c1 + lane < n ? term(r, c1 + lane) : 0.0;
    if (lane < nr) {
      const int cw = (int)min(32L, n - c0);
      for (int c = 0; c < cw; c++) sum += tile[lane][c];
    }
  }
  __syncwarp();
  return sum;
}

/* ---- kv slots ---- */

__global__ void ha_kv_assemble(long total, long nk, int R, int hpr, int dh, int mk, const c5_real *kvraw,
                               const c5_real *kscore, const c5_real *null_kv, c5_real *kv)
{
  const long L = 2L * hpr * dh, n1 = nk + 1, D = (long)R * hpr * dh;
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
    const long row = i / L, col = i % L, br = row / n1, j = row % n1;
    const int hh = (int)(col / (2 * dh)), w = (int)(col % (2 * dh)), isv = w >= dh;
    c5_real x;
    if (j == 0) {
      const long h = (br % R) * hpr + hh;
      x = null_kv[(isv ? D : 0) + h * dh + (w - (isv ? dh : 0))];
    } else {
      const long t = br * nk + j - 1;
      x = kvraw[t * L + col];
      if (kscore && (isv || mk)) x = x * kscore[t];
    }
    kv[i] = x;
  }
}

/* One warp a token: the token's terms in the CPU's order (per head: the
   value's dh, then, when mk, the key's), 32 at a time, each lane's product
   added by every lane in lane order. */
__global__ void ha_kv_score_backward(long tokens, long nk, int hpr, int dh, int mk, const c5_real *kvraw,
                                     const c5_real *kscore, c5_real *dkv, c5_real *dkscore)
{
  const int lane = threadIdx.x & 31;
  const long t = (blockIdx.x * (long)blockDim.x + threadIdx.x) >> 5;
  if (t >= tokens) return;   /* warp-uniform */
  const long L = 2L * hpr * dh, n1 = nk + 1, per = (long)dh * (1 + mk), len = hpr * per;
  c5_real *dst = dkv + ((t / nk) * n1 + 1 + t % nk) * L;
  const c5_real *src = kvraw + t * L;
  const c5_real ks = kscore[t];
  double dks = 0;
  for (long base = 0; base < len; base += 32) {
    const long q = base + lane;
    double prod = 0;
    if (q < len) {
      const long hh = q / per, w = q % per;
      const long col = hh * 2 * dh + (w < dh ? dh + w : w - dh);
      const c5_real d = dst[col];
      prod = (double)d * (double)src[col];
      dst[col] = d * ks;
    }
    const int cnt = (int)min(32L, len - base);
    for (int l = 0; l < cnt; l++) dks += __shfl_sync(HA_FULL, prod, l);
  }
  if (lane == 0 && dkscore) dkscore[t] = (c5_real)dks;
}

/* One thread an element of gnull: the batches in ascending order, as the CPU adds them. */
__global__ void ha_null_kv_grad(long batch, long nk, int H, int hpr, int dh, const c5_real *dkv, double *gnull)
{
  const long i = blockIdx.x * (long)blockDim.x + threadIdx.x, HD = (long)H * dh;
  if (i >= 2 * HD) return;
  const int part = (int)(i / HD), h = (int)((i % HD) / dh), e = (int)(i % dh), R = H / hpr;
  const long L = 2L * hpr * dh, n1 = nk + 1, col = (long)(h % hpr) * 2 * dh + (long)part * dh + e;
  double acc = gnull[i];
  for (long b = 0; b < batch; b++) acc += (double)dkv[(b * R + h / hpr) * n1 * L + col];
  gnull[i] = acc;
}

/* ---- softmax and dS rows ---- */

/* Row (b, h, i) of p's keep mask for slots 1..nk (m[j - 1]), or NULL (all kept). */
__device__ __forceinline__ const uint8_t *ha_row_mask(const uint8_t *kmask, long row, long nq, long nk, int H,
                                                      int hpr)
{
  if (!kmask) return NULL;
  const long bh = row / nq, b = bh / H;
  const int R = H / hpr, r = (int)(bh % H) / hpr;
  return kmask + (b * R + r) * nk;
}

/* e_j of kernels.h: exp(s_j - m) in the working precision, exactly 0 for a masked slot. */
__device__ __forceinline__ c5_real ha_e(c5_real s, long j, c5_real mx, const uint8_t *m)
{
  return j == 0 || !m || m[j - 1] ? ha_exp((c5_real)(s - mx)) : (c5_real)0;
}

/* p holds S on entry, P on return; rows = b H nq, one warp per 32 rows.
   Each pass loads a column of all 32 rows before using any (32 loads in
   flight a lane): each row's max (order-free: lane maxima, then a warp
   reduction), the sum of the e_j in double over j ascending, then P_j =
   e_j (1 / sum) (e_j recomputed: the same function of the same operands). */
__global__ void __launch_bounds__(32 * HA_WARPS)
ha_softmax(long rows, long nq, long nk, int H, int hpr, const uint8_t *kmask, c5_real *p)
{
  __shared__ double tile[HA_WARPS][32][33];
  __shared__ c5_real *rp[HA_WARPS][32];
  __shared__ const uint8_t *rm[HA_WARPS][32];
  __shared__ c5_real rmx[HA_WARPS][32];
  __shared__ double rinv[HA_WARPS][32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const long row0 = (blockIdx.x * (long)HA_WARPS + w) * 32, n1 = nk + 1;
  if (row0 >= rows) return;   /* warp-uniform */
  const int nr = (int)min(32L, rows - row0);
  if (lane < nr) {
    rp[w][lane] = p + (row0 + lane) * n1;
    rm[w][lane] = ha_row_mask(kmask, row0 + lane, nq, nk, H, hpr);
  }
  __syncwarp();
  c5_real mx[32], v[32];
#pragma unroll
  for (int r = 0; r < 32; r++) mx[r] = r < nr ? rp[w][r][0] : (c5_real)0;
  for (long j = 1 + lane; j < n1 + lane; j += 32) {   /* the warp's columns 1 + c0 .. 32 + c0 */
#pragma unroll
    for (int r = 0; r < 32; r++) v[r] = r < nr && j < n1 ? rp[w][r][j] : (c5_real)0;
#pragma unroll
    for (int r = 0; r < 32; r++)
      if (r < nr && j < n1 && (!rm[w][r] || rm[w][r][j - 1]) && v[r] > mx[r]) mx[r] = v[r];
  }
#pragma unroll
  for (int r = 0; r < 32; r++) {
    c5_real y = mx[r];
    for (int o = 16; o; o >>= 1) {
      const c5_real z = __shfl_xor_sync(HA_FULL, y, o);
      if (z > y) y = z;
    }
    if (lane == r && r < nr) rmx[w][r] = y;
  }
  __syncwarp();
  const double sum = ha_sum_in_order(nr, n1, tile[w], [=](int r, long j) {
    return (double)ha_e(rp[w][r][j], j, rmx[w][r], rm[w][r]);
  });
  if (lane < nr) rinv[w][lane] = 1.0 / sum;
  __syncwarp();
  for (long j = lane; j < n1 + lane; j += 32) {
#pragma unroll
    for (int r = 0; r < 32; r++) v[r] = r < nr && j < n1 ? rp[w][r][j] : (c5_real)0;
#pragma unroll
    for (int r = 0; r < 32; r++)
      if (r < nr && j < n1) rp[w][r][j] = (c5_real)((double)ha_e(v[r], j, rmx[w][r], rm[w][r]) * rinv[w][r]);
  }
}

/* Heads h0 .. h0 + G - 1, rows (g, b, i) of G b nq: ds [G, b, nq, n1] holds
   dP on entry and dS on return; P's row is p[b, h0 + g, i]. dot = sum_j
   P_j dP_j in double, j ascending; dS_j = P_j (dP_j - dot) formed in
   double, rounded once. */
__global__ void __launch_bounds__(32 * HA_WARPS)
ha_dscores(long rows, long nq, long bnq, long n1, int H, int h0, const c5_real *p, c5_real *ds)
{
  __shared__ double tile[HA_WARPS][32][33];
  __shared__ const c5_real *rp[HA_WARPS][32];
  __shared__ c5_real *rd[HA_WARPS][32];
  __shared__ double rdot[HA_WARPS][32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const long row0 = (blockIdx.x * (long)HA_WARPS + w) * 32;
  if (row0 >= rows) return;   /* warp-uniform */
  const int nr = (int)min(32L, rows - row0);
  if (lane < nr) {
    const long row = row0 + lane, g = row / bnq, b = (row % bnq) / nq, i = row % nq;
    rp[w][lane] = p + ((b * H + h0 + g) * nq + i) * n1;
    rd[w][lane] = ds + row * n1;
  }
  __syncwarp();
  const double dot = ha_sum_in_order(nr, n1, tile[w], [=](int r, long j) {
    return (double)rp[w][r][j] * (double)rd[w][r][j];
  });
  if (lane < nr) rdot[w][lane] = dot;
  __syncwarp();
  c5_real pv[32], dv[32];
  for (long j = lane; j < n1 + lane; j += 32) {
#pragma unroll
    for (int r = 0; r < 32; r++) {
      pv[r] = r < nr && j < n1 ? rp[w][r][j] : (c5_real)0;
      dv[r] = r < nr && j < n1 ? rd[w][r][j] : (c5_real)0;
    }
#pragma unroll
    for (int r = 0; r < 32; r++)
      if (r < nr && j < n1) rd[w][r][j] = (c5_real)((double)pv[r] * ((double)dv[r] - rdot[w][r]));
  }
}

/* ---- the ops ---- */

/* C_b = alpha op(A_b) op(B_b) over the batch, all in c5_real (beta 0). */
static c5_status ha_gemm(c5k_ctx *ctx, int ta, int tb, long m, long n, long k, double alpha, const c5_real *A,
                         long lda, long sa, const c5_real *B, long ldb, long sb, c5_real *C, long ldc, long sc,
                         long batch)
{
  return c5k_gemm_ex_cuda(ctx, ta, tb, m, n, k, alpha, A, C5_DTYPE_REAL, lda, sa, B, C5_DTYPE_REAL, ldb, sb, 0.0, C,
                          C5_DTYPE_REAL, ldc, sc, batch, C5_DTYPE_REAL);
}

static unsigned ha_blocks(long n, int threads)
{
  long b = (n + threads - 1) / threads;
  return (unsigned)(b < 65535L * 64 ? (b > 0 ? b : 1) : 65535L * 64);
}

extern "C" c5_status c5k_heavy_kv_assemble_cuda(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *kvraw,
                                                const c5_real *kscore, const c5_real *null_kv, c5_real *kv)
{
  const char *op = "heavy_kv_assemble";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const int R = A->routes, hpr = A->heads / R, dh = A->dim_head;
  const long total = A->batch * R * (A->nk + 1) * 2L * hpr * dh;
  if (total <= 0) return C5_OK;
  ha_kv_assemble<<<ha_blocks(total, 256), 256, 0, dev->stream>>>(total, A->nk, R, hpr, dh, A->multiply_keys_by_score,
                                                                 kvraw, kscore, null_kv, kv);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_heavy_kv_score_backward_cuda(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *kvraw,
                                                      const c5_real *kscore, c5_real *dkv, c5_real *dkscore)
{
  const char *op = "heavy_kv_score_backward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const long tokens = A->batch * A->routes * A->nk;
  if (tokens <= 0) return C5_OK;
  if (!kscore) return C5K_ERR(C5_ERR_ARG, "cuda op %s: kscore is NULL (there is no score gradient without scores)", op);
  const int threads = 256;
  const long blocks = (tokens * 32 + threads - 1) / threads;
  ha_kv_score_backward<<<(unsigned)blocks, threads, 0, dev->stream>>>(tokens, A->nk, A->heads / A->routes, A->dim_head,
                                                                      A->multiply_keys_by_score, kvraw, kscore, dkv,
                                                                      dkscore);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_heavy_null_kv_grad_cuda(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *dkv,
                                                 double *gnull)
{
  const char *op = "heavy_null_kv_grad";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const long n = 2L * A->heads * A->dim_head;
  if (n <= 0 || A->batch <= 0) return C5_OK;
  ha_null_kv_grad<<<(unsigned)((n + 255) / 256), 256, 0, dev->stream>>>(A->batch, A->nk, A->heads,
                                                                         A->heads / A->routes, A->dim_head, dkv, gnull);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

/* Head h's key columns of kv[0, r] (its value: + dh); batch b adds R n1 L. */
static long ha_koff(const c5k_heavy_attn *A, int h)
{
  const int hpr = A->heads / A->routes, dh = A->dim_head;
  return (long)(h / hpr) * (A->nk + 1) * 2L * hpr * dh + (long)(h % hpr) * 2 * dh;
}

extern "C" c5_status c5k_heavy_attn_forward_cuda(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *q,
                                                 const c5_real *kv, const uint8_t *kmask, c5_real *p, c5_real *o)
{
  const char *op = "heavy_attn_forward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const long batch = A->batch, nq = A->nq, n1 = A->nk + 1;
  const int H = A->heads, R = A->routes, hpr = H / R, dh = A->dim_head;
  const long D = (long)H * dh, L = 2L * hpr * dh, sp = (long)H * nq * n1, skv = R * n1 * L;
  const double scale = 1.0 / sqrt((double)dh);
  if (batch <= 0 || nq <= 0) return C5_OK;
  for (int h = 0; h < H; h++)
    C5_CALL_K(ha_gemm(ctx, 0, 1, nq, n1, dh, scale, q + (long)h * dh, D, nq * D, kv + ha_koff(A, h), L, skv,
                      p + h * nq * n1, n1, sp, batch));
  const long rows = batch * H * nq, warps = (rows + 31) / 32;
  ha_softmax<<<(unsigned)((warps + HA_WARPS - 1) / HA_WARPS), 32 * HA_WARPS, 0, dev->stream>>>(rows, nq, A->nk, H,
                                                                                                hpr, kmask, p);
  C5K_CUDA_LAUNCHED(op);
  for (int h = 0; h < H; h++)
    C5_CALL_K(ha_gemm(ctx, 0, 0, nq, dh, n1, 1.0, p + h * nq * n1, n1, sp, kv + ha_koff(A, h) + dh, L, skv,
                      o + (long)h * dh, D, nq * D, batch));
  return C5_OK;
}

/* Per head, batched over b: dP into the scratch, dV; dS in place of dP for
   a group of heads at once (rows enough to fill the GPU); dQ, dK. */
extern "C" c5_status c5k_heavy_attn_backward_cuda(c5k_ctx *ctx, const c5k_heavy_attn *A, const c5_real *q,
                                                  const c5_real *kv, const c5_real *p, const c5_real *dout,
                                                  c5_real *dq, c5_real *dkv)
{
  const char *op = "heavy_attn_backward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const long batch = A->batch, nq = A->nq, n1 = A->nk + 1;
  const int H = A->heads, R = A->routes, hpr = H / R, dh = A->dim_head;
  const long D = (long)H * dh, L = 2L * hpr * dh, sp = (long)H * nq * n1, skv = R * n1 * L, sd = nq * n1;
  const double scale = 1.0 / sqrt((double)dh);
  if (batch <= 0) return C5_OK;
  if (nq <= 0) {   /* no query: every slot's gradient is 0 (the products below would have k = 0) */
    C5K_CUDA_TRY(cudaMemsetAsync(dkv, 0, (size_t)(batch * skv) * sizeof *dkv, dev->stream), op);
    return C5_OK;
  }
  /* heads in groups whose dP fits the larger of one head's and 1 GiB: the dS rows of a group in one launch */
  const size_t head_bytes = (size_t)(batch * sd) * sizeof(c5_real), cap = (size_t)1 << 30;
  const int G = head_bytes >= cap ? 1 : (int)(cap / head_bytes < (size_t)H ? cap / head_bytes : (size_t)H);
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, G * head_bytes, &scr, op));
  c5_real *ds = (c5_real *)scr;
  for (int h0 = 0; h0 < H; h0 += G) {
    const int gn = H - h0 < G ? H - h0 : G;
    for (int h = h0; h < h0 + gn; h++) {
      const long ko = ha_koff(A, h);
      const c5_real *doh = dout + (long)h * dh, *ph = p + h * nq * n1;
      c5_real *dsh = ds + (h - h0) * batch * sd;
      C5_CALL_K(ha_gemm(ctx, 0, 1, nq, n1, dh, 1.0, doh, D, nq * D, kv + ko + dh, L, skv, dsh, n1, sd, batch));
      C5_CALL_K(ha_gemm(ctx, 1, 0, n1, dh, nq, 1.0, ph, n1, sp, doh, D, nq * D, dkv + ko + dh, L, skv, batch));
    }
    const long rows = gn * batch * nq, warps = (rows + 31) / 32;
    ha_dscores<<<(unsigned)((warps + HA_WARPS - 1) / HA_WARPS), 32 * HA_WARPS, 0, dev->stream>>>(rows, nq, batch * nq,
                                                                                                  n1, H, h0, p, ds);
    C5K_CUDA_LAUNCHED(op);
    for (int h = h0; h < h0 + gn; h++) {
      const long ko = ha_koff(A, h);
      const c5_real *dsh = ds + (h - h0) * batch * sd;
      C5_CALL_K(ha_gemm(ctx, 0, 0, nq, dh, n1, scale, dsh, n1, sd, kv + ko, L, skv, dq + (long)h * dh, D, nq * D,
                        batch));
      C5_CALL_K(ha_gemm(ctx, 1, 0, n1, dh, nq, scale, dsh, n1, sd, q + (long)h * dh, D, nq * D, dkv + ko, L, skv,
                        batch));
    }
  }
  return C5_OK;
}
