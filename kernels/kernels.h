/* kernels.h - the one compute interface: each device fills a c5k_ops table
   (kernels/cpu/ops.c; kernels/cuda later). Kernels take pointers, sizes and
   a context, allocate nothing and never communicate: lib/ does the
   collectives between kernel calls. */
#ifndef C5_KERNELS_H
#define C5_KERNELS_H

#include <stdint.h>
#include "colt5_types.h"

/* Compiled as C (kernels/cpu) and as CUDA C++ (kernels/cuda): C linkage, and
   nothing from MPI or the rest of the public API. */
#ifdef __cplusplus
extern "C" {
#endif

/* Kernels report errors through the library's error record (lib/error.c):
   the message names the op and what it was given. */
c5_status c5_err_raise(c5_status st, const char *file, int line, const char *fmt, ...);
#define C5K_ERR(st, ...) c5_err_raise((st), __FILE__, __LINE__, __VA_ARGS__)

/* Rows of a sharded, possibly ragged matrix: row r is elements
   [off[r], off[r] + len[r]) of every array passed with it (s, mask, y, ...).
   Rows are cut into fixed chunks of C5K_CHUNK elements; cstart[r] is the
   index of row r's first chunk (cstart[rows] = total), so that every sum
   has the same partition whatever the thread count. */
#define C5K_CHUNK 4096
typedef struct {
  long rows;
  const long *off;
  const long *len;
  const long *cstart;   /* [rows + 1] */
} c5k_rows;

/* Fill cstart [rows + 1] for rows of the given lengths. */
void c5k_rows_plan(long rows, const long *len, long *cstart);
/* Dense rows (row r is elements [r n, r n + n)) planned in plan [3 rows + 1]. */
void c5k_rows_dense(long rows, long n, long *plan, c5k_rows *R);

typedef struct {
  double *work;      /* scratch owned by the caller */
  long work_len;     /* in doubles */
  void *dev;         /* a device backend's state (CUDA: stream, cuBLASLt handle, scratch); NULL on the CPU */
  int exact;         /* 1: f32 products exact whatever the backend's matmul mode (c5_backend_set_matmul):
                        the router's logits, which top-k compares, never see TF32/bf16 rounding */
} c5k_ctx;

/* x[i] = exp(x[i]), x[i] = erf(x[i]), vectorized (kernels/cpu/vmath.c). */
void c5k_vexp(c5_real *x, long n);
void c5k_verf(c5_real *x, long n);
const char *c5k_vexp_isa(void);

/* c5_blas_warning's rule, for a given core name, CPU (has AVX2, AVX-512) and
   OPENBLAS_CORETYPE value: the warning in buf, or NULL (kernels/cpu/blas_core.c). */
const char *c5k_blas_warning_for(const char *core, int avx2, int avx512, const char *forced, char *buf, size_t len);

/* Scratch (in doubles) any kernel of this table needs for R: 256 per chunk. */
long c5k_work_len(const c5k_rows *R);
/* The same for any rows of at most `chunks` chunks in all: for sizing a
   cache before its rows are planned. */
long c5k_work_len_chunks(long chunks);

/* Parameter gradients: every kernel that produces one adds it to a double
   accumulator (a parameter's parts meet only in double, whatever BLAS kernel
   formed them); the module adds the accumulator to the working-precision
   gradient once per backward (grad_flush). Reductions over rows use a fixed
   partition of C5K_ROWPART rows, each summed in double, then the parts in
   order. */
#define C5K_ROWPART 64
/* GEMM output block (kernels/cpu/act.c): rows (or columns) of C per task. */
#define C5K_GEMM_BLOCK 64
/* Doubles of work a rowpart reduction of `cols` columns needs (x2 for LayerNorm). */
static inline long c5k_rowpart_work(long rows, long cols)
{
  return 2 * cols * ((rows + C5K_ROWPART - 1) / C5K_ROWPART) + 1;
}

/* Sliding-window attention (local_attn_* below): lucidrains local-attention's
   LocalAttention with autopad, per head, for `batch` sequences of n tokens.
   Windows of w = window tokens, W = ceil(n / w); the sequence is padded to
   W w tokens (pad tokens: q = k = v = 0). Query t, in window i = t / w, sees
   the L w key slots of windows i - lb .. i + lf (L = lb + 1 + lf, lb =
   look_backward, lf = look_forward); a slot in a window outside 0 .. W-1 is
   out of range (k = v = -1). The slot at position p is masked when
     it is out of range, or mask != NULL and (p >= n or mask[b, p] == 0),
     causal:                       p > t, or exact_windowsize and t - p > w lb,
     not causal, exact_windowsize: p - t > w lf or t - p > w lb.
   Scores s_p = scale q_t . k_p; P = softmax over the L w slots in which the
   masked ones get exactly 0 (the reference's -finfo.max scores); unmasked
   pad keys p >= n have s_p = 0 and v_p = 0, so they only add to the sum.
   A row whose every slot is masked is UNIFORM instead: P = 1 / (L w) on all
   L w slots, masked keys and out-of-range slots (v = -1) included.
   o_t = sum_p P_p v_p. Exponentials in the working precision, a row's sums
   in double. In bf16 matmul mode (c5_backend_set_matmul, ctx exact = 0) the
   CUDA ops of the single build round q, k, v, P, dout and dS to bf16 for
   cuBLASLt's products (f32 accumulation) when dim_head is a multiple of 8
   and L w <= 2048, or for their flash kernels' mma.sync (f32 accumulation)
   when dim_head is 64 or 128 and w a multiple of 64: they match the CPU to
   bf16's precision only. */
typedef struct {
  long batch, n;            /* sequences, tokens each */
  int heads, dim_head;      /* H, dh */
  long window;              /* w */
  int look_backward, look_forward;
  int causal, exact_windowsize;
  double scale;             /* of the scores (1 / sqrt(dh)) */
  long chunk;               /* backward: query windows per task, >= lb + lf (see local_attn_backward) */
  int bf16;                 /* 1: q, k, v, o, dout, dq, dk, dv are bf16 in memory (ld in elements), where
                               local_attn_bf16 says the backend takes them so; 0: c5_real */
} c5k_local_attn;

/* Doubles of ctx work local_attn_forward and local_attn_backward need for L
   (on the CPU: three [w, L w] blocks per OpenMP thread available at this
   call; the kernels then use at most as many threads as the work holds). */
long c5k_local_attn_work(const c5k_local_attn *L);

/* Heavy attention (heavy_* ops below): the reference's Attention over routed
   queries and, per key/value route, routed keys/values with a learned null
   slot. Shapes: b batch, R routes, hpr heads per route, H = R hpr heads, dh
   head dim, D = H dh, L = 2 hpr dh, n1 = 1 + nk. Layouts, row-major:
     q [b, nq, D]: head h is columns h dh .. h dh + dh - 1.
     kv [b, R, n1, L]: per (batch, route), slot 0 the null key/value, then the
       nk routed tokens. Head hh of route r (head h = r hpr + hh) is columns
       2 hh dh .. + dh (its key), then the next dh (its value): the to_kv
       output's order, so to_kv's GEMMs read and write it in place.
     kvraw [b, R, nk, L]: the to_kv output (kv's slots 1..nk before scores).
     kscore [b, R, nk]: the kv router's scores; null_kv [2, H, dh]: the null
       key (0, h) and value (1, h) of each head.
     kmask [b, R, nk]: 1 = keep, for slots 1..nk; the null slot always takes part.
     lse [b, H, nq] (double): each query row's log-sum-exp of its scores over
       the slots that take part (forward writes, backward reads). The
       probabilities P [nq, n1] of a head are never stored: the backward
       recomputes them from S and lse (at n = 1M tokens P alone would be
       137 GB). */
typedef struct {
  long batch, nq, nk;            /* b; queries; routed keys/values per route */
  int heads, routes, dim_head;   /* H, R (H % R == 0), dh */
  int multiply_keys_by_score;    /* mk: the kv score multiplies keys as well as values */
} c5k_heavy_attn;

/* Query rows of the CPU's score blocks: their memory grows with nk only
   (a whole head's [nq, 1 + nk] would not fit at nq = nk = 65536). */
#define C5K_HEAVY_ROWS 128

/* Doubles of ctx work heavy_attn_forward and heavy_attn_backward need for A
   on the CPU: two [min(nq, C5K_HEAVY_ROWS), 1 + nk] score blocks of one head
   in the working precision (P and dP). The CUDA ops take none. */
static inline long c5k_heavy_attn_work(const c5k_heavy_attn *A)
{
  const long rows = A->nq < C5K_HEAVY_ROWS ? A->nq : C5K_HEAVY_ROWS;
  return (2 * rows * (A->nk + 1) * (long)sizeof(c5_real) + (long)sizeof(double) - 1) / (long)sizeof(double);
}

/* One AdamW step's scalars (adamw_update below): the gradient's scale (the
   clipping coefficient, 1 without), this step's learning rate, the decay
   (0 for a parameter that is not decayed) and the step t >= 1 of the bias
   corrections. */
typedef struct {
  double grad_scale, lr, beta1, beta2, eps, weight_decay;
  long step;
} c5k_adamw;

typedef struct c5k_ops {
  const char *name;
  /* Coordinate descent, docs/design.md §2. For row r with a = a[r]:
     e_j = exp(min(s_j + a, 0) * inv_eps), 0 where masked.
     sum[r] = sum_j e_j; nabove[r] = #{unmasked j : s_j + a > 0}.
     a = +inf gives the count of unmasked entries in both. */
  c5_status (*cd_sumexp)(c5k_ctx *, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                         const double *a, double inv_eps, double *sum, double *nabove);
  /* Underflow fallback: pair[r] = {M, sum_j exp(t_j - M)}, t_j = min(s_j + a, 0) * inv_eps,
     M = max_j t_j over unmasked j ({-inf, 0} when none). */
  c5_status (*cd_maxsumexp)(c5k_ctx *, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                            const double *a, double inv_eps, double *pair);
  /* y_j = e_j as above (the scores). */
  c5_status (*cd_output)(c5k_ctx *, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                         const double *a, double inv_eps, c5_real *y);
  /* dot[r] = sum_j gy_j y_j inv_eps [s_j + a <= 0] (dL/da_T). */
  c5_status (*cd_gdot)(c5k_ctx *, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                       const double *a, double inv_eps, const c5_real *y, const c5_real *gy,
                       double *dot);
  /* ds_j = gy_j y_j inv_eps[T] [s_j + a_T <= 0]
            - sum_{t=2..T} ga_t exp((s_j + a_{t-1}) inv_eps[t-1] - lse_t) [s_j + a_{t-1} <= 0]
     (masked: 0). a, lse, ga: [rows][T] (index t-1); inv_eps: [T + 1]. */
  c5_status (*cd_backward)(c5k_ctx *, const c5k_rows *R, const c5_real *s, const uint8_t *mask,
                           int T, const double *a, const double *lse, const double *inv_eps,
                           const double *ga, const c5_real *y, const c5_real *gy, c5_real *ds);
  /* Radix-select histogram: for each row, hist[r][b] (+)= number of entries
     whose order key k satisfies (k >> (shift + 8)) == prefix[r] >> (shift + 8)
     and ((k >> shift) & 255) == b. Key: unmasked -> order-preserving image of
     (double)v, masked -> 0. hist is overwritten. */
  c5_status (*topk_hist)(c5k_ctx *, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                         const uint64_t *prefix, int shift, long *hist);
  /* Count entries equal to key[r] (ties at the threshold). */
  c5_status (*topk_count_eq)(c5k_ctx *, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                             const uint64_t *key, long *count);
  /* Select: entries with key > thr[r], and the first take[r] entries with key == thr[r]
     in index order; writes local positions (relative to off[r]) to pos + r*cap,
     ascending, and their number to count[r]. */
  c5_status (*topk_select)(c5k_ctx *, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                           const uint64_t *thr, const long *take, long cap, long *count, long *pos);
  /* ---- building blocks (shapes [rows, dim], row-major) ---- */
  /* C[m,n] = alpha op(A) op(B) + beta C, row-major, in c5_real (gemm_ex with every type C5_DTYPE_REAL, batch 1). */
  c5_status (*gemm)(c5k_ctx *, int transa, int transb, long m, long n, long k, double alpha,
                    const c5_real *A, long lda, const c5_real *B, long ldb, double beta, c5_real *C, long ldc);
  /* Typed, strided-batched GEMM (cublasGemmStridedBatchedEx's shape, row-major):
     for b < batch, C_b = alpha op(A_b) op(B_b) + beta C_b with X_b = X + b stride_x
     elements; each operand has its element type, products accumulate in
     compute. The CPU runs F64 or F32 throughout (else C5_ERR_NOTIMPL); a GPU
     backend adds bf16 inputs with F32 compute (and TF32). */
  c5_status (*gemm_ex)(c5k_ctx *, int transa, int transb, long m, long n, long k, double alpha,
                       const void *A, c5_dtype atype, long lda, long stride_a,
                       const void *B, c5_dtype btype, long ldb, long stride_b, double beta,
                       void *C, c5_dtype ctype, long ldc, long stride_c, long batch, c5_dtype compute);
  /* The norms' and GELU's forward write y of type ytype: C5_DTYPE_REAL always; C5_DTYPE_BF16 on the CUDA backend
     of the single build, y then being the c5_real result rounded once to bf16 (nearest even: the bits gemm_ex's
     bf16 copy would make of the c5_real y), the statistics (rnorm, mean, rstd) unchanged. An output whose only
     consumers are products in bf16 mode (bf16_acts) is so written in half the bytes and never copied again. The
     CPU takes C5_DTYPE_REAL only (else C5_ERR_NOTIMPL). */
  c5_status (*rmsnorm_forward)(c5k_ctx *, const c5_real *x, const c5_real *gamma, long rows, int dim,
                               void *y, c5_dtype ytype, double *rnorm);
  /* dgamma: double accumulator (+=). The norms' backward write dx = (the input gradient, rounded to c5_real) + res
     [rows, dim] (a residual's gradient, added in c5_real: the bits of an axpy of res after; NULL: none). res may
     be dx itself (each element is read before it is written), no other overlap. */
  c5_status (*rmsnorm_backward)(c5k_ctx *, const c5_real *x, const c5_real *gamma, const double *rnorm,
                                const c5_real *dy, long rows, int dim, const c5_real *res, c5_real *dx,
                                double *dgamma);
  c5_status (*layernorm_forward)(c5k_ctx *, const c5_real *x, const c5_real *w, const c5_real *b, long rows,
                                 int dim, double eps, void *y, c5_dtype ytype, double *mean, double *rstd);
  /* dw, db: double accumulators (+=) */
  c5_status (*layernorm_backward)(c5k_ctx *, const c5_real *x, const c5_real *w, const double *mean,
                                  const double *rstd, const c5_real *dy, long rows, int dim, const c5_real *res,
                                  c5_real *dx, double *dw, double *db);
  c5_status (*gelu_forward)(c5k_ctx *, const c5_real *x, long n, void *y, c5_dtype ytype);
  c5_status (*gelu_backward)(c5k_ctx *, const c5_real *x, const c5_real *dy, long n, c5_real *dx);
  /* db[j] += sum_r dy[r, j] (db: double accumulator) */
  c5_status (*colsum)(c5k_ctx *, const c5_real *dy, long rows, int cols, double *db);
  /* acc[m, n] (dense, double) += alpha op(A) op(B): a parameter gradient's
     part. The product is formed in the working precision with beta = 0
     (in prod [m, n], scratch; unused in double builds) and added to acc in
     double, so parts summed over several calls never round in between. */
  c5_status (*gemm_acc)(c5k_ctx *, int transa, int transb, long m, long n, long k, double alpha,
                        const c5_real *A, long lda, const c5_real *B, long ldb, c5_real *prod, double *acc);
  /* The same with typed inputs (gemm_ex's rules; the CPU takes C5_DTYPE_REAL only): a module's activations
     kept in bf16 (local_attn_bf16, bf16_acts). */
  c5_status (*gemm_acc_ex)(c5k_ctx *, int transa, int transb, long m, long n, long k, double alpha,
                           const void *A, c5_dtype atype, long lda, const void *B, c5_dtype btype, long ldb,
                           c5_real *prod, double *acc);
  /* 1 when this backend takes bf16 activations as the inputs of its products (gemm_ex, gemm_acc_ex, linear: one
     bf16 operand with one c5_real) in the current matmul mode: the CUDA ops of the single build in bf16 mode
     (c5_backend_set_matmul C5_MATMUL_BF16), ctx exact = 0, where every c5_real input is rounded to a bf16 copy
     first anyway. A module may then keep an activation whose only consumers are products in bf16 (the norms' and
     GELU's ytype), with the same products' bits and half the bytes. 0 elsewhere (the CPU, the double build). */
  int (*bf16_acts)(c5k_ctx *);
  /* y [n] = x as ytype: C5_DTYPE_REAL a copy; C5_DTYPE_BF16 (the CUDA ops of the single build) each element rounded
     to bf16 (nearest even: the bits gemm_ex's bf16 copy of x holds). A gradient that feeds two products in bf16 mode
     is so rounded once, into memory its module knows to be dead, and given to both as a bf16 operand, instead of
     being rounded twice into gemm_ex's scratch. The CPU takes C5_DTYPE_REAL only (else C5_ERR_NOTIMPL). */
  c5_status (*convert)(c5k_ctx *, long n, const c5_real *x, void *y, c5_dtype ytype);
  /* The n parameters at w hold still until the next call (n = 0: forget them). Where bf16_acts says 1, a product
     whose c5_real operand lies inside them reads its bf16 rounding from one copy made here instead of rounding it
     into gemm_ex's scratch on every call (the same bf16 values; a block's weights were 65 small conversions a
     step at n = 32768). The caller forgets them (n = 0) before anything writes there: c5_block_forward and
     c5_block_backward hold their block's parameters from their start to their end, errors included. Elsewhere
     (the CPU, the double build, other matmul modes) nothing is copied. */
  c5_status (*weights_bf16)(c5k_ctx *, const c5_real *w, long n);
  /* g[i] += (c5_real)acc[i]; acc[i] = 0: the one rounding of a backward's
     parameter gradient into the working-precision slab. */
  c5_status (*grad_flush)(c5k_ctx *, double *acc, long n, c5_real *g);
  /* ---- fused blocks ---- */
  /* Sliding-window attention forward (c5k_local_attn above). Row r = b n + t
     of q, k, v (stride ldqkv) and o (stride ldo) holds the heads side by
     side, head h at columns h dh .. h dh + dh - 1. mask: [batch, n] (1 =
     keep) or NULL. Writes o (=) and, per (b, h, t) at index (b H + h) n + t,
     the softmax stats the backward recomputes P from: P_p = exp(s_p - rmax)
     rinv on the unmasked slots, rmax = max of s_p over them (pad keys: 0),
     rinv = 1 / sum_p exp(s_p - rmax); uni = 1 marks a uniform row (rmax =
     rinv = 0). No score block larger than
     [w, L w] per (b, h, query window) is ever needed. ctx work:
     c5k_local_attn_work(L) doubles. */
  c5_status (*local_attn_forward)(c5k_ctx *, const c5k_local_attn *L, const void *q, const void *k,
                                  const void *v, long ldqkv, const uint8_t *mask, void *o, long ldo,
                                  double *rmax, double *rinv, uint8_t *uni);
  /* Its backward, from the forward's q, k, v, mask, stats and output o and
     dout (layout of o): with P recomputed from the stats, dP = dout V^T, and
     per row D = sum_p P_p dP_p (double), dS = P (dP - D) (0 in uniform rows),
     dq = scale dS K, dk = scale dS^T Q, dv = P^T dout over the real keys
     p < n (uniform rows included: 1 / (L w) each). dq (layout of o,
     stride ldo), dk and dv (layout of k, v, stride lddkv) are written (=).
     dq may be o itself (the same pointer; no other output may overlap an
     input): every path reads a row of o before it writes that row of dq,
     and no other row's (a module whose o is dead by then writes dq over
     it). dk and dv of a key window sum
     over the query windows that see it: the query windows are cut into
     fixed chunks of L->chunk >= lb + lf windows, the even chunks run in
     parallel, then the odd ones, each chunk in window order, so every sum's
     order (and its bits) depends on chunk, never on the thread count.
     o is read only by the CUDA op's bf16 flash kernels (dim_head 64): D =
     sum_e dout_e o_e (f32), equal to sum_p P_p dP_p in exact arithmetic on
     every row that uses D (o = sum_p P_p v_p over its slots; uniform rows
     use none); the other paths ignore it. ctx work: c5k_local_attn_work(L)
     doubles. */
  c5_status (*local_attn_backward)(c5k_ctx *, const c5k_local_attn *L, const void *q, const void *k,
                                   const void *v, long ldqkv, const uint8_t *mask, const double *rmax,
                                   const double *rinv, const uint8_t *uni, const void *o, const void *dout,
                                   long ldo, void *dq, void *dk, void *dv, long lddkv);
  /* 1 when this backend takes L's q, k, v, o, dout, dq, dk, dv in bf16 (L->bf16 = 1) in the current matmul mode:
     where bf16_acts says 1 and the CUDA flash kernels run both ways
     (dim_head 64, w a multiple of 64). They round those tensors to bf16 for their products anyway, so a module
     that keeps them in bf16 halves their memory and traffic and loses only the roundings of o (D of the
     backward), of the rotary's outputs and of dq, dk, dv before their GEMMs. 0 elsewhere. */
  int (*local_attn_bf16)(c5k_ctx *, const c5k_local_attn *L);
  /* ---- routed attention: gathers, scatters, halo (kernels/cpu/copy2d.c, kernels/cpu/gather.c) ----
     Rows are dim-wide c5_real rows, dense unless a leading dimension says otherwise. An index of -1
     names no row (padding): a gather writes a zero row for it, a scatter skips it. */
  /* cudaMemcpy2D's shape: height rows of width bytes, row i from src + i spitch to dst + i dpitch
     (bytes; the regions do not overlap). Any element type (rows of reals, masks). */
  c5_status (*copy2d)(c5k_ctx *, void *dst, long dpitch, const void *src, long spitch, long width, long height);
  /* Every byte of height rows of width bytes at pitch dpitch set to value (cudaMemset2D): zeroed halo
     rows, masks of ones. */
  c5_status (*memset2d)(c5k_ctx *, void *dst, long dpitch, int value, long width, long height);
  /* dst[i, k] += src[i, k] for i < rows, k < cols (leading dimensions ldd, lds, in elements): the halo
     gradients added by their owner. */
  c5_status (*add2d)(c5k_ctx *, long rows, long cols, const c5_real *src, long lds, c5_real *dst, long ldd);
  /* Every row of dst [rows, dim] (leading dimension ldd) set to vec (accumulate = 0; vec NULL: 0) or
     increased by vec (accumulate = 1): null_q_token under every token. */
  c5_status (*fill_rows)(c5k_ctx *, long rows, long dim, const c5_real *vec, int accumulate, c5_real *dst, long ldd);
  /* dst[e, :] = src[idx[e], :] for e < n, times scale[e] when scale != NULL (the product in c5_real);
     idx -1: a zero row; idx NULL: row e. Rows of src have leading dimension lds; dst is dense [n, dim]. */
  c5_status (*gather_rows)(c5k_ctx *, long n, long dim, const long *idx, const c5_real *scale, const c5_real *src,
                           long lds, c5_real *dst);
  /* For e < n with idx[e] >= 0: v = src[e, k] scale[e] - sub[k] (scale NULL: 1, sub NULL: 0, each
     term formed exactly so), then dst[idx[e], k] = v (accumulate 0) or dst[idx[e], k] += v. Entries
     with equal indices are applied in e order (distinct = 0) or the indices are distinct (distinct = 1:
     any order, in parallel). */
  c5_status (*scatter_rows)(c5k_ctx *, long n, long dim, const long *idx, const c5_real *src, const c5_real *scale,
                            const c5_real *sub, int accumulate, int distinct, c5_real *dst);
  /* Through a per-row scale, backward: g = src[idx[e], :] (idx -1: 0; idx NULL: row e, and dsrc may
     then be src, updated in place); dsrc[e, k] = g[k] scale[e]; dscale[e] = sum_k g[k] y[e, k], summed
     in double in k order then rounded once (dscale NULL: not formed). */
  c5_status (*gather_scale_dot)(c5k_ctx *, long n, long dim, const long *idx, const c5_real *src,
                                const c5_real *scale, const c5_real *y, c5_real *dsrc, c5_real *dscale);
  /* acc[k] (double) += the sum over e < n of src[idx[e], k] (subtract = 0) or of -src[idx[e], k]
     (subtract = 1) (idx NULL: rows 0 .. n-1; idx -1: a 0 term), by the row partition of the parameter
     gradients (C5K_ROWPART rows each summed from 0 in e order, the parts added in order, then the
     total to acc): a vector parameter's gradient part (null_q_token), the same bits on every backend
     and thread count. (A sequential sum over all n rows per k left the GPU a dim-long chain of
     dependent loads: 2.3 ms of the 13 ms block at n = 32768 on an H200.) */
  c5_status (*acc_rows)(c5k_ctx *, long n, long dim, const long *idx, const c5_real *src, int subtract, double *acc);
  /* ---- router, cd, feed-forward ---- */
  /* The first non-finite entry of R's rows (coordinate descent's check of
     its logits): *row = the first row holding one, *col = the first such
     entry's column relative to off[row], *value = the entry; *row = *col =
     -1 when all are finite. ctx work: c5k_work_len(R) doubles. */
  c5_status (*find_nonfinite)(c5k_ctx *, const c5k_rows *R, const c5_real *s, long *row, long *col, double *value);
  /* Cosine routing's logits. x [batch, n, dim] tokens, w [routes, dim]
     routing tokens; s [batch, routes, n] holds x_bj . w_q on entry. Writes
     xnorm[b n + j] = max(||x_bj||, 1e-12), wnorm[q] = max(||w_q||, 1e-12)
     (each sum of squares in double, in index order), and
     s = (c5_real)((scale * s) / (xnorm[b n + j] * wnorm[q])) in double. */
  c5_status (*cosine_route_forward)(c5k_ctx *, long batch, int routes, long n, int dim, const c5_real *x,
                                    const c5_real *w, double scale, c5_real *s, double *xnorm, double *wnorm);
  /* Its backward into x. g [batch, routes, n] holds dL/ds on entry and
     leaves holding dL/d(x . w) for the raw x and w:
     g = (c5_real)((scale * g) / (xnorm wnorm)), in double. Then for each
     token, in double: v_i = sum_q g_qj w_qi (q in order), p = (v . x_bj) /
     xnorm^2 (i in order; p = 0 when xnorm is the clamp 1e-12), and
     dx_bj,i += (c5_real)(v_i - p x_bj,i). */
  c5_status (*cosine_route_backward)(c5k_ctx *, long batch, int routes, long n, int dim, const c5_real *x,
                                     const c5_real *w, const double *xnorm, const double *wnorm, double scale,
                                     c5_real *g, c5_real *dx);
  /* ... and into the routing tokens: dwacc [routes, dim] (double) holds
     dL/dw for the raw w (the gemm_acc of g and x); per q, in double,
     p = (dwacc_q . w_q) / wnorm_q^2 (i in order; 0 at the clamp) and
     dwacc_q,i -= p w_q,i. */
  c5_status (*cosine_route_backward_w)(c5k_ctx *, int routes, int dim, const c5_real *w, const double *wnorm,
                                       double *dwacc);
  /* out [batch, routes, n] = mask [batch, n] repeated over the routes (bytes). */
  c5_status (*broadcast_mask)(c5k_ctx *, long batch, int routes, long n, const uint8_t *mask, uint8_t *out);
  /* random_route's scores: y[r n + j] = (c5_real)N(seed, r, col0 + j) for r < rows, j < n, where N(seed, r, c),
     in uint64 arithmetic (wrapping) and double: z = seed ^ (G (r + 1)) ^ (H (c + 1)); twice: z += G, x = z,
     x = (x ^ (x >> 30)) H, x = (x ^ (x >> 27)) 0x94d049bb133111eb, u_i = x ^ (x >> 31); u1 = ((u_0 >> 11) + 1) /
     9007199254740993, u2 = (u_1 >> 11) / 9007199254740992; N = sqrt(-2 log u1) cos(6.283185307179586 u2), with
     G = 0x9e3779b97f4a7c15, H = 0xbf58476d1ce4e5b9. It depends on the global coordinates only, not on the sharding. */
  c5_status (*normal_fill)(c5k_ctx *, long rows, long n, long col0, uint64_t seed, c5_real *y);
  /* A forward's selections: row r < rows of a [rows, n] array selected the
     entries e in [start[r], start[r] + count[r]), each at local token lpos[e]
     (element t = r n + lpos[e] of y, mask, g). route_gather_scores writes
     yval[e] = y[t] and score[e] = 0 if mask && !mask[t], else 1 if
     straight_through, else y[t]. route_scatter_dscores writes g = 0, then
     g[t] += dscore[e] for every unmasked selection. */
  c5_status (*route_gather_scores)(c5k_ctx *, long rows, long n, const long *start, const long *count,
                                   const long *lpos, const c5_real *y, const uint8_t *mask, int straight_through,
                                   c5_real *yval, c5_real *score);
  c5_status (*route_scatter_dscores)(c5k_ctx *, long rows, long n, const long *start, const long *count,
                                     const long *lpos, const uint8_t *mask, const c5_real *dscore, c5_real *g);
  /* Rows picked by an index list, rows of dim elements, i < n (gather_rows, scatter_rows: above):
     row_dot: out[i] = (c5_real) sum_k (double)a[idx[i], k] * b[i, k], in double, k in order
              (idx NULL: row i of a). */
  c5_status (*row_dot)(c5k_ctx *, long n, long dim, const long *idx, const c5_real *a, const c5_real *b,
                       c5_real *out);
  /* y[i] += alpha x[i], alpha rounded to c5_real (alpha = 1: y + x exactly; residual adds). */
  c5_status (*axpy)(c5k_ctx *, long n, double alpha, const c5_real *x, c5_real *y);
  /* acc[i] += src[i], double accumulators. */
  c5_status (*acc_add)(c5k_ctx *, long n, const double *src, double *acc);
  /* y[r, :] = v for r < rows (a bias broadcast before a GEMM with beta = 1). */
  c5_status (*broadcast_row)(c5k_ctx *, long rows, long cols, const c5_real *v, c5_real *y);
  /* ---- heavy attention (c5k_heavy_attn above; lib/attn_heavy.c) ---- */
  /* Rotary tables (RotaryEmbedding(dh), theta 10000), in double, [rows, dh/2]
     each: cs[i, j] = cos(pos[i] f_j), sn[i, j] = sin(pos[i] f_j),
     f_j = 1 / 10000^(2j / dh), j < dh/2; dh even. */
  c5_status (*rotary_table)(c5k_ctx *, long rows, const long *pos, int dh, double *cs, double *sn);
  /* In place, for each row i < rows and head h < heads: the dh elements
     t = x + i ld + h hstride, halves t1 = t[0, dh/2), t2 = t[dh/2, dh), are
     rotated by row i's angles: t1 <- t1 cs_i - t2 sn_i, t2 <- t2 cs_i + t1 sn_i
     (cs_i = cs + i dh/2, sn_i alike; t cos + rotate_half(t) sin), formed in
     double and rounded once. */
  c5_status (*rotary)(c5k_ctx *, long rows, int heads, int dh, void *x, c5_dtype xtype, long ld, long hstride,
                      const double *cs, const double *sn);
  /* The transpose (rotation by minus the angle), the gradient through rotary:
     t1 <- t1 cs_i + t2 sn_i, t2 <- t2 cs_i - t1 sn_i. Same arguments. */
  c5_status (*rotary_transpose)(c5k_ctx *, long rows, int heads, int dh, void *x, c5_dtype xtype, long ld,
                                long hstride, const double *cs, const double *sn);
  /* kv (every slot written) from kvraw: slot 0 of (b, r) holds, in head hh's
     columns, head h = r hpr + hh's null key and value (null_kv); slot 1 + j
     holds token t = (b R + r) nk + j's kvraw row with each value times
     kscore[t] and, when mk, each key too (products in the working precision);
     kscore NULL: the row as is. Rotary comes afterwards (rotary on the keys). */
  c5_status (*heavy_kv_assemble)(c5k_ctx *, const c5k_heavy_attn *A, const c5_real *kvraw, const c5_real *kscore,
                                 const c5_real *null_kv, c5_real *kv);
  /* The kv score's gradient, in place in dkv's slots 1..nk (dL/dkv there,
     rotary already undone; kscore not NULL): for token t, its slot row d and
     kvraw row x, dkscore[t] = sum over heads hh ascending of (sum_e d_v x_v,
     then, when mk, sum_e d_k x_k), one double sum rounded once (dkscore NULL:
     not formed); then d_v *= kscore[t] and, when mk, d_k *= kscore[t]. Slot 0
     is untouched. */
  c5_status (*heavy_kv_score_backward)(c5k_ctx *, const c5k_heavy_attn *A, const c5_real *kvraw,
                                       const c5_real *kscore, c5_real *dkv, c5_real *dkscore);
  /* null_kv's gradient: gnull [2, H, dh] (double accumulator) += dkv's slot
     0, one add per batch b ascending for each element:
     gnull[0, h, e] += dkv[b, r, 0, 2 hh dh + e],
     gnull[1, h, e] += dkv[b, r, 0, 2 hh dh + dh + e]. */
  c5_status (*heavy_null_kv_grad)(c5k_ctx *, const c5k_heavy_attn *A, const c5_real *dkv, double *gnull);
  /* Per batch b and head h (route r = h / hpr; k_h, v_h its key and value
     columns of kv[b, r], all n1 slots): S = q_h k_h^T / sqrt(dh) [nq, n1]
     (each dot in the working precision, times the scale rounded to it); each
     row's softmax over the slots that take part (slot 0 and the unmasked
     ones): m their max, e_j = exp(S_j - m) in the working precision (exactly
     0 for masked slots), sum = sum_j e_j in double, lse = m + log(sum) in
     double, P_j = e_j / sum; o_h = P v_h into o's head h columns. lse and o
     written; P is not kept.
     The CPU goes C5K_HEAVY_ROWS query rows at a time: sum over j ascending,
     P_j = e_j (1 / sum) rounded once, o by GEMM. The CUDA op streams the
     slots in tiles with a running max (online softmax): e_j relative to the
     running max, sum and o's accumulators in double rescaled by
     exp(m_old - m_new) when the max grows, each tile's part of o summed in
     the working precision; o = acc / sum at the end. Both fix their orders
     (results repeat bit for bit) and agree to rounding.
     ctx work (CPU): c5k_heavy_attn_work(A) doubles. */
  c5_status (*heavy_attn_forward)(c5k_ctx *, const c5k_heavy_attn *A, const c5_real *q, const c5_real *kv,
                                  const uint8_t *kmask, double *lse, c5_real *o);
  /* Its gradient, from dout = dL/do [b, nq, D], the forward's kmask, lse and
     output o [b, nq, D] (which a backend may use for Delta = rowsum(dout o),
     FlashAttention-2's identity; the CPU and the SIMT kernels ignore it):
     per (b, h), P_ij = exp(S_ij - lse_i) recomputed (the difference formed
     in double and rounded to the working precision, exp in the working
     precision; exactly 0 for masked slots), dP = dout_h v_h^T,
     Delta_i = sum_j P_ij dP_ij (products and sum in double),
     dS_ij = P_ij (dP_ij - Delta_i) (formed in double, rounded once),
     dv_h = P^T dout_h, dq_h = dS k_h / sqrt(dh), dk_h = dS^T q_h / sqrt(dh).
     A row whose only slot is the null one has P = 1 there and dS = 0
     exactly. dq [b, nq, D] and dkv [b, R, n1, L] written (every slot, the
     null slot's and masked slots' included; all 0 when nq = 0).
     The CPU: C5K_HEAVY_ROWS query rows at a time through GEMMs, Delta over
     j ascending, dk and dv accumulated over the row blocks in ascending
     order. The CUDA op: Delta and dq per query tile over the key tiles in
     ascending order, dk and dv per key tile over the query tiles in
     ascending order; every output element has one writer, each tile's part
     summed in the working precision and the tiles' parts in double.
     In bf16 matmul mode (c5_backend_set_matmul C5_MATMUL_BF16, ctx->exact
     0, single precision, dim_head a multiple of 8) the CUDA forward and
     backward run as cuBLASLt products of bf16 copies of q, k, v, dout and
     of P and dS (f32 accumulation) over chunks of query rows (for dim_head
     64 and 128 both are instead flash kernels on the tensor cores, the
     scores kept on chip; the backward's Delta is then sum_e dout_e o_e with
     dout rounded to bf16, in double), so they match the CPU to bf16's
     precision only (fixed orders still: results repeat bit for bit).
     ctx work (CPU): c5k_heavy_attn_work(A) doubles. */
  c5_status (*heavy_attn_backward)(c5k_ctx *, const c5k_heavy_attn *A, const c5_real *q, const c5_real *kv,
                                   const uint8_t *kmask, const double *lse, const c5_real *o, const c5_real *dout,
                                   c5_real *dq, c5_real *dkv);
  /* ---- kv exchange, autoregressive attention (kernels/cpu/gather.c, kernels/cpu/mask.c) ---- */
  /* copy2d's shape with the source rows listed: for e < n, the width bytes at dst + e dpitch = those at
     src + idx[e] spitch (idx -1: zero bytes). Any element type: the masks and positions of gathered
     keys, which gather_rows (c5_real rows) does not move. */
  c5_status (*gather2d)(c5k_ctx *, long n, const long *idx, const void *src, long spitch, long width, void *dst,
                        long dpitch);
  /* mask[r n + j] = pos[r n + j] < lim[r] for r < rows, j < n: which gathered keys lie before a row's
     limit (the autoregressive attention's keys in the windows before a query window). */
  c5_status (*mask_before)(c5k_ctx *, long rows, long n, const long *pos, const long *lim, uint8_t *mask);
  /* ---- optimizer (c5k_adamw above; lib/optim.c) ---- */
  /* *ss = sum of x[i]^2 over i < n, the squares in double, in a fixed order: per C5K_CHUNK-element
     chunk, 8 interleaved sums (element j of the chunk's whole groups of 8 into sum j % 8), the tail
     added to 0, then the 8 sums in order; then the chunk sums in chunk order: the same bits at any
     thread count. When
     first_nonfinite is not NULL and *ss is not finite, *first_nonfinite = the first i with x[i]
     NaN or Inf (-1: none, the sum overflowed). ctx work: ceil(n / C5K_CHUNK) doubles. */
  c5_status (*sumsq)(c5k_ctx *, long n, const c5_real *x, double *ss, long *first_nonfinite);
  /* One AdamW step on n elements (torch.optim.AdamW, single-tensor path), each element in double
     and stored once in c5_real: g = grad_scale grad; m = beta1 m + (1 - beta1) g;
     v = beta2 v + (1 - beta2) g g; p = p (1 - lr weight_decay) + (-lr / bc1) m / (sqrt(v) / sqrt(bc2)
     + eps), bc1 = 1 - beta1^step, bc2 = 1 - beta2^step, the update from the unrounded m and v.
     grad is read only. */
  c5_status (*adamw_update)(c5k_ctx *, const c5k_adamw *A, long n, const c5_real *grad, c5_real *p, c5_real *m,
                            c5_real *v);
  /* ---- model: parameter initialization, embeddings, the masked-byte loss (kernels/cpu/init.c,
     kernels/cpu/embedding.c, kernels/cpu/xent.c; lib/params.c, lib/model.c) ---- */
  /* y[e] for e < n, element e's value a function of (key, e) only (no thread, rank or call order in it):
     C5K_FILL_CONST: scale; C5K_FILL_NORMAL: scale N(0, 1); C5K_FILL_UNIFORM: U(-scale, scale). In double,
     rounded once: with z_i = mix(key + G (2 e + i + 1)), i = 0, 1 (uint64, wrapping; G = 0x9e3779b97f4a7c15,
     mix the SplitMix64 finalizer: x ^= x >> 30, x *= 0xbf58476d1ce4e5b9, x ^= x >> 27,
     x *= 0x94d049bb133111eb, x ^= x >> 31), u = (z_0 >> 11) 2^-53: uniform = scale (2 u - 1);
     normal = scale sqrt(-2 log u1) cos(2 pi u2), u1 = ((z_0 >> 11) + 1) 2^-53, u2 = (z_1 >> 11) 2^-53, log and cos
     those of kernels/init_draw.h (no libm: every device gives the same bits). */
  c5_status (*init_fill)(c5k_ctx *, int kind, uint64_t key, double scale, long n, c5_real *y);
  /* x[b, j, :] = tok_emb[tokens[b n + j], :] + pos_emb[pos0 + j, :] for b < batch, j < n (the sum in
     c5_real). Tokens and positions were checked by the caller. */
  c5_status (*embedding_forward)(c5k_ctx *, long batch, long n, long pos0, int dim, const int32_t *tokens,
                                 const c5_real *tok_emb, const c5_real *pos_emb, c5_real *x);
  /* Its backward into double accumulators: dtok[tokens[b n + j], :] += dx[b, j, :] and
     dpos[pos0 + j, :] += dx[b, j, :], each element's adds in (b, j) order (the columns are split
     between threads, never the rows: no races and no order that depends on the thread count). */
  c5_status (*embedding_backward)(c5k_ctx *, long batch, long n, long pos0, int dim, const int32_t *tokens,
                                  const c5_real *dx, double *dtok, double *dpos);
  /* Softmax cross-entropy over rows of `classes` logits; targets[r] in 0 .. classes-1, or -1: row not
     scored. lse[r] = log sum_c exp(logits[r, c]) (double; 0 for unscored rows); *loss = sum over scored
     rows of lse[r] - logits[r, targets[r]], *count = their number: rows summed in fixed parts of
     C5K_ROWPART rows in double, then the parts in order. ctx work: c5k_rowpart_work(rows, 1) doubles. */
  c5_status (*xent_forward)(c5k_ctx *, long rows, int classes, const c5_real *logits, const int32_t *targets,
                            double *lse, double *loss, long *count);
  /* dlogits[r, c] = scale (exp(logits[r, c] - lse[r]) - [c == targets[r]]) for scored rows, 0 for the
     others (written), formed in double and rounded once. */
  c5_status (*xent_backward)(c5k_ctx *, long rows, int classes, const c5_real *logits, const int32_t *targets,
                             const double *lse, double scale, c5_real *dlogits);
  /* ---- device-resident router steps (kernels/cuda; NULL on the CPU, whose lib/ loops run the same
     maths op by op) ----
     One rank (P = 1), dense rows; every array a device pointer except k (host). */
  /* The whole coordinate descent of lib/cd.c on the device, its per-iteration scalar updates
     included (no host round trip between iterations): T iterations of lib/cd.c's eps schedule
     (eps_1 = max(eps_init, eps), eps_{t+1} = max(eps_t eps_decay, eps)); state [3 rows T + T + 1]
     (device doubles) receives a_t, the shifted LSE and the count above ([rows][T] each, as
     c5_cd_cache's a, lse, nabove), then 1 / eps_t for t = 1..T and the output's. k: host, k[r k_stride]. */
  c5_status (*cd_forward_dev)(c5k_ctx *, const c5k_rows *R, const c5_real *s, const uint8_t *mask, const double *k,
                              long k_stride, int T, double eps, double eps_init, double eps_decay, double *state,
                              c5_real *y);
  /* Its backward from that state: cd_gdot, the dL/da_t recurrence of lib/cd.c, cd_backward. */
  c5_status (*cd_backward_dev)(c5k_ctx *, const c5k_rows *R, const c5_real *s, const uint8_t *mask, int T,
                               const double *state, const c5_real *y, const c5_real *gy, c5_real *ds);
  /* lib/topk.c's selection, on the device: k entries a row by the library's rule; positions
     (relative to off[r], plus offset) ascending at pos + r cap, their number in count[r]. */
  c5_status (*topk_select_dev)(c5k_ctx *, const c5k_rows *R, const c5_real *v, const uint8_t *mask, long k,
                               long cap, long offset, long *count, long *pos);
  /* ---- device-resident block orchestration (cuda-lib: lib/router.c, lib/routed_ff.c, lib/routed_attn.c,
     lib/kv_exchange.c, lib/attn_local.c) ---- */
  /* Index arithmetic on index arrays, so that lib/ never reads routed indices on the host to plan the
     heavy rows: for r < rows, j < n,
       dst[r ldd + j] = (src ? src[r lds + j] : j) + add + ((r / div) % mod) step   (mod 0: no modulus; div >= 1).
     The router's local positions from its per-block selections, the heavy rows of routed tokens
     (b n_local + token), their global positions, and iotas (src NULL). dst may be src (lds = ldd). */
  c5_status (*index_rows)(c5k_ctx *, long rows, long n, const long *src, long lds, long add, long div, long mod,
                          long step, long *dst, long ldd);
  /* ---- the training step on a device backend (cuda-train: lib/optim.c) ---- */
  /* sumsq without the wait: *ss (backend memory: a device double on a GPU) = sumsq's sum of x[0..n), the
     same bits in the same order, so that the optimizer reads every parameter's sum in one copy per step
     instead of one per parameter. ctx work as sumsq's. */
  c5_status (*sumsq_dev)(c5k_ctx *, long n, const c5_real *x, double *ss);
  /* ---- fused Linear (linbias: lib/ffnet.c, lib/model.c) ---- */
  /* torch's Linear on rows: y [rows, out] = x [rows, in] W^T + b, W [out, in] row-major (the layer's weight), b [out]
     or NULL (no bias); x, y dense (leading dimensions in and out). y is written entirely. The CPU computes exactly
     broadcast_row(b) then gemm with beta 1 (beta 0 without b): the same bits as those two calls. The CUDA op adds b
     in cuBLASLt's bias epilogue (no pass writing the bias across y first, 4-5 % of the block's step on an H200),
     falling back to those two calls where cuBLASLt has no such kernel: it agrees with the CPU to rounding. x has
     type xtype: C5_DTYPE_REAL, or C5_DTYPE_BF16 where bf16_acts says the backend takes it (the CPU: REAL only).
     res [rows, out] or NULL: a residual added to y (y = x W^T + b + res), so that a block's residual needs no pass
     of its own; a buffer apart from y (no overlap). The CPU then forms res + b rows, then the gemm with beta 1; the
     CUDA op reads res as cuBLASLt's C (beta 1) and writes y as its D, the bias in the same epilogue (its fallback:
     the bias rows, res added, then the product with beta 1). */
  c5_status (*linear)(c5k_ctx *, long rows, long out, long in, const void *x, c5_dtype xtype, const c5_real *W,
                      const c5_real *b, const c5_real *res, c5_real *y);
} c5k_ops;

/* init_fill's kinds */
enum { C5K_FILL_CONST, C5K_FILL_NORMAL, C5K_FILL_UNIFORM };

/* bytes at p set to 0 (any element type): one row of the backend's memset2d. */
static inline c5_status c5k_zero(const c5k_ops *ops, c5k_ctx *ctx, void *p, long bytes)
{
  return ops->memset2d(ctx, p, bytes, 0, bytes, 1);
}

extern const c5k_ops c5k_cpu_ops;

/* Time and flops spent in the CPU gemm kernel since the last reset, counted
   only while enabled (benchmarks: the share of time in matrix products). */
typedef struct { int enabled; double seconds, flops; long calls; } c5k_gemm_stats;
extern c5k_gemm_stats c5k_cpu_gemm_stats;

/* Order-preserving map of a double to uint64 (-0 == +0); masked -> 0. */
static inline uint64_t c5k_order_key(c5_real v, int keep)
{
  union { double d; uint64_t u; } c = { .d = (double)v + 0.0 };
  uint64_t k = (c.u >> 63) ? ~c.u : (c.u | 0x8000000000000000ull);
  return keep ? (k ? k : 1) : 0;
}

#ifdef __cplusplus
}
#endif
#endif
