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

/* lo in the low half: the lower column of an A fragment's pair */
static __device__ __forceinline__ uint32_t c5k_pack_bf16(float lo, float hi)
{
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *(uint32_t *)&v;
}

#endif
