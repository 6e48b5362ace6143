/* rotary.cu - rotary position embeddings on the GPU (kernels/cpu/rotary.c):
   the cos/sin tables of token positions and the rotation of head vectors by
   them (and its transpose, the gradient), one thread per pair of elements. */
#include <math.h>
#include <cuda_bf16.h>
#include "cuda_internal.cuh"

/* The frequencies come from the host's pow, the CPU table's own values (the
   device pow may differ in the last bit, and an angle pos f_j of a far
   position magnifies that); they travel by value, a block of them per
   launch. */
#define ROT_FREQS 128
struct rot_freqs { double f[ROT_FREQS]; };

__global__ void rotary_table_kernel(long rows, const long *pos, int half, int i0, int count, rot_freqs F, double *cs,
                                    double *sn)
{
  C5K_GRID_LOOP(u, rows * count) {
    long r = u / count;
    int i = (int)(u % count);
    double f = c5k_mul((double)pos[r], F.f[i]);
    cs[r * half + i0 + i] = cos(f);
    sn[r * half + i0 + i] = sin(f);
  }
}

extern "C" c5_status c5k_rotary_table_cuda(c5k_ctx *ctx, long rows, const long *pos, int dh, double *cs, double *sn)
{
  const char *op = "rotary_table";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const int half = dh / 2;
  if (rows <= 0 || half <= 0) return C5_OK;
  for (int i0 = 0; i0 < half; i0 += ROT_FREQS) {
    int count = half - i0 < ROT_FREQS ? half - i0 : ROT_FREQS;
    rot_freqs F;
    for (int i = 0; i < count; i++) F.f[i] = 1.0 / pow(10000.0, (double)(2 * (i0 + i)) / dh);
    rotary_table_kernel<<<c5k_cuda_blocks(dev, rows * count), C5K_THREADS, 0, dev->stream>>>(rows, pos, half, i0, count,
                                                                                            F, cs, sn);
    C5K_CUDA_LAUNCHED(op);
  }
  return C5_OK;
}

/* t <- t cos + rotate_half(t) sin, sin taken times sgn (-1: the transpose);
   negating a product is exact, so both directions round as written out. T:
   c5_real, or bf16 (a module's activations kept in bf16: formed in double,
   rounded once to bf16). */
/* An element as a double and back: c5_real exactly; bf16 through its float value, rounded once on the way back. */
template <typename T> static __device__ __forceinline__ double rot_in(T x) { return (double)x; }
template <> __device__ __forceinline__ double rot_in<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> static __device__ __forceinline__ T rot_out(double x) { return (T)x; }
template <> __device__ __forceinline__ __nv_bfloat16 rot_out<__nv_bfloat16>(double x) { return __double2bfloat16(x); }

template <typename T>
__global__ void rotary_kernel(long rows, int heads, int half, T *x, long ld, long hstride, const double *cs,
                              const double *sn, double sgn)
{
  C5K_GRID_LOOP(u, rows * heads * half) {
    long i = u / ((long)heads * half);
    int h = (int)(u / half % heads), j = (int)(u % half);
    T *t = x + i * ld + h * hstride;
    double t1 = rot_in(t[j]), t2 = rot_in(t[j + half]), c = cs[i * half + j], s = sgn * sn[i * half + j];
    t[j] = rot_out<T>(c5k_sub(c5k_mul(t1, c), c5k_mul(t2, s)));
    t[j + half] = rot_out<T>(c5k_add(c5k_mul(t2, c), c5k_mul(t1, s)));
  }
}

static c5_status rotate(c5k_ctx *ctx, long rows, int heads, int dh, void *x, c5_dtype xtype, long ld, long hstride,
                        const double *cs, const double *sn, double sgn, const char *op)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  if (xtype != C5_DTYPE_REAL && xtype != C5_DTYPE_BF16)
    return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: rows of %s (the GPU takes %s or bf16)", op, c5_dtype_name(xtype),
                   c5_dtype_name(C5_DTYPE_REAL));
  const int half = dh / 2;
  if (rows <= 0 || heads <= 0 || half <= 0) return C5_OK;
  const long blocks = c5k_cuda_blocks(dev, rows * heads * half);
  if (xtype == C5_DTYPE_BF16)
    rotary_kernel<__nv_bfloat16><<<blocks, C5K_THREADS, 0, dev->stream>>>(rows, heads, half, (__nv_bfloat16 *)x, ld,
                                                                          hstride, cs, sn, sgn);
  else
    rotary_kernel<c5_real><<<blocks, C5K_THREADS, 0, dev->stream>>>(rows, heads, half, (c5_real *)x, ld, hstride, cs,
                                                                    sn, sgn);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}

extern "C" c5_status c5k_rotary_cuda(c5k_ctx *ctx, long rows, int heads, int dh, void *x, c5_dtype xtype, long ld,
                                     long hstride, const double *cs, const double *sn)
{
  return rotate(ctx, rows, heads, dh, x, xtype, ld, hstride, cs, sn, 1.0, "rotary");
}

extern "C" c5_status c5k_rotary_transpose_cuda(c5k_ctx *ctx, long rows, int heads, int dh, void *x, c5_dtype xtype,
                                               long ld, long hstride, const double *cs, const double *sn)
{
  return rotate(ctx, rows, heads, dh, x, xtype, ld, hstride, cs, sn, -1.0, "rotary_transpose");
}
