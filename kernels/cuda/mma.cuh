/* mma.cuh - the tensor-core and asynchronous-copy primitives of the flash
   kernels (attn_heavy.cu, attn_local.cu): PTX mma.sync m16n8k16 with bf16
   inputs and f32 accumulation, ldmatrix, cp.async. sm_80 and later; the
   fragment layouts the callers rely on are described in attn_heavy.cu
   (PTX ISA, "Matrix Fragments for mma.m16n8k16"). */
#ifndef C5_CUDA_MMA_CUH
#define C5_CUDA_MMA_CUH
#include <stdint.h>
#include <cuda_bf16.h>

/* 16 bytes global -> shared, asynchronously; !full reads nothing and zero-fills (src only stands in for an address) */
static __device__ __forceinline__ void c5k_cp16(void *dst, const void *src, bool full)
{
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(full ? 16 : 0) : "memory");
}
/* 8 or 4 bytes global -> shared, asynchronously (cp.async.ca: these sizes go through L1) */
static __device__ __forceinline__ void c5k_cp8(void *dst, const void *src)
{
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(d), "l"(src) : "memory");
}
static __device__ __forceinline__ void c5k_cp4(void *dst, const void *src)
{
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(src) : "memory");
}
static __device__ __forceinline__ void c5k_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> static __device__ __forceinline__ void c5k_cp_wait()
{
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* d += A B (m16n8k16, bf16 in, f32 accumulate) */
static __device__ __forceinline__ void c5k_mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t c5k_ld32(const __nv_bfloat16 *p) { return *(const uint32_t *)p; }

/* ldmatrix.x4 (.trans when TRANS): lane 8 m + i gives p, the address of row i of 8 x 8 matrix m (8 bf16, 16-byte
   aligned); r[m] of lane 4 g + t is then its elements (g, 2t), (g, 2t + 1), or with .trans (2t, g), (2t + 1, g) */
template <bool TRANS>
static __device__ __forceinline__ void c5k_ldsm(uint32_t (&r)[4], const __nv_bfloat16 *p)
{
  const unsigned a = (unsigned)__cvta_generic_to_shared(p);
  if (TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

/* 2^x by MUFU.EX2 alone (ex2.approx.ftz: a result below 2^-126 is 0; exp2f wraps the same instruction in a
   denormal fix-up, two FMULs and a compare) */
static __device__ __forceinline__ float c5k_ex2(float x)
{
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/* lo in the low half: the lower column of an A fragment's pair */
static __device__ __forceinline__ uint32_t c5k_pack_bf16(float lo, float hi)
{
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *(uint32_t *)&v;
}

/* The A fragment (16 x 16, row-major, row stride ld bf16) whose element (0, 0) is at p: 32-bit loads, lane 4 g + t
   reading rows g, g + 8 and columns 2t, 2t + 8 */
static __device__ __forceinline__ void c5k_frag_a(uint32_t (&a)[4], const __nv_bfloat16 *p, int ld)
{
  const int lane = threadIdx.x & 31;
  p += (lane >> 2) * ld + 2 * (lane & 3);
  a[0] = c5k_ld32(p);
  a[1] = c5k_ld32(p + 8 * ld);
  a[2] = c5k_ld32(p + 8);
  a[3] = c5k_ld32(p + 8 * ld + 8);
}

/* C tiles 2k and 2k + 1 (f32, 16 x 8 each) rounded to bf16 as the A fragment of one k16 step: the m16n8k16 C layout
   of two adjacent n8 tiles is the A layout of their 16 columns */
static __device__ __forceinline__ void c5k_c2a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4])
{
  a[0] = c5k_pack_bf16(c0[0], c0[1]);
  a[1] = c5k_pack_bf16(c0[2], c0[3]);
  a[2] = c5k_pack_bf16(c1[0], c1[1]);
  a[3] = c5k_pack_bf16(c1[2], c1[3]);
}

/* s[n] = A B^T for n < NT (16 x 8 tiles, columns 8n ..): A's KS k16 steps in registers (af), B's rows 8n + i at
   Bs + (8n + i) ld (bf16, 16-byte aligned rows). ldmatrix.x4's matrix m at B rows 8n .., columns 16k + 8m gives
   b0, b1 of k-step k, then of k + 1 (KS even). */
template <int NT, int KS>
static __device__ __forceinline__ void c5k_mma_abt(float (&s)[NT][4], const uint32_t (&af)[KS][4],
                                                   const __nv_bfloat16 *Bs, int ld)
{
  static_assert(KS % 2 == 0, "c5k_mma_abt: ldmatrix.x4 covers two k16 steps");
  const int lane = threadIdx.x & 31;
  const __nv_bfloat16 *br = Bs + (lane & 7) * ld + (lane >> 3) * 8;
#pragma unroll
  for (int n = 0; n < NT; n++) {
    s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int k = 0; k < KS; k += 2) {
      uint32_t bf[4];
      c5k_ldsm<false>(bf, br + 8 * n * ld + 16 * k);
      c5k_mma_bf16(s[n], af[k], bf[0], bf[1]);
      c5k_mma_bf16(s[n], af[k + 1], bf[2], bf[3]);
    }
  }
}

/* acc[n] += A X for n < ON (ON even): A one k16 step (rows 16 of the warp, its 16 columns k..k + 15), X's rows k + i
   at Xs + (k + i) ld (bf16, 16-byte aligned), columns 8n ... ldmatrix.x4.trans's matrix m at X rows k + 8 (m & 1) ..,
   columns 16d + 8 (m >> 1) gives b0, b1 of tile 2d, then of 2d + 1. (Xs and k apart: with Xs + k ld passed,
   hf_forward<64> spilled 4 bytes at its 128 registers.) */
template <int ON>
static __device__ __forceinline__ void c5k_mma_ax(float (&acc)[ON][4], const uint32_t (&a)[4],
                                                  const __nv_bfloat16 *Xs, int k, int ld)
{
  static_assert(ON % 2 == 0, "c5k_mma_ax: ldmatrix.x4 covers two n8 tiles");
  const int lane = threadIdx.x & 31;
  const __nv_bfloat16 *xr = Xs + (k + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + (lane >> 4) * 8;
#pragma unroll
  for (int d = 0; d < ON / 2; d++) {
    uint32_t bf[4];
    c5k_ldsm<true>(bf, xr + 16 * d);
    c5k_mma_bf16(acc[2 * d], a, bf[0], bf[1]);
    c5k_mma_bf16(acc[2 * d + 1], a, bf[2], bf[3]);
  }
}

#endif
