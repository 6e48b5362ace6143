/* rotary.c - rotary position embeddings on the CPU: the cos/sin tables of
   token positions and the rotation of head vectors by them (and its
   transpose, the gradient), rows in parallel. */
#include <math.h>
#include "cpu.h"

/* RotaryEmbedding(dim_head): freqs = pos * inv_freq[i], inv_freq[i] = 10000^(-2i/dh), i < dh/2, the
   table concatenated twice, so elements i and i + dh/2 share an angle. The reference computes the
   angles in float32; we compute them in double (vectors generated in double upcast them). */
c5_status c5k_rotary_table_cpu(c5k_ctx *ctx, long rows, const long *pos, int dh, double *cs, double *sn)
{
  const int half = dh / 2;
  double inv_freq[half > 0 ? half : 1];
  for (int i = 0; i < half; i++) inv_freq[i] = 1.0 / pow(10000.0, (double)(2 * i) / dh);
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++)
    for (int i = 0; i < half; i++) {
      double f = (double)pos[r] * inv_freq[i];
      cs[r * half + i] = cos(f);
      sn[r * half + i] = sin(f);
    }
  return C5_OK;
}

/* t <- t cos + rotate_half(t) sin, rotate_half(t) = cat(-t2, t1), with sn
   taken times sgn: sgn = -1 is the rotation by the negative angle, the
   transpose (the gradient through it). Negating a product is exact, so both
   directions round as if written out. */
static inline void rot(c5_real *t, int half, const double *cs, const double *sn, double sgn)
{
  for (int i = 0; i < half; i++) {
    double t1 = t[i], t2 = t[i + half], s = sgn * sn[i];
    t[i] = (c5_real)(t1 * cs[i] - t2 * s);
    t[i + half] = (c5_real)(t2 * cs[i] + t1 * s);
  }
}

static void rotate(long rows, int heads, int dh, c5_real *x, long ld, long hstride, const double *cs,
                   const double *sn, double sgn)
{
  const int half = dh / 2;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < rows; i++)
    for (int h = 0; h < heads; h++) rot(x + i * ld + h * hstride, half, cs + i * half, sn + i * half, sgn);
}

c5_status c5k_rotary_cpu(c5k_ctx *ctx, long rows, int heads, int dh, void *x, c5_dtype xtype, long ld, long hstride,
                         const double *cs, const double *sn)
{
  if (xtype != C5_DTYPE_REAL)
    return C5K_ERR(C5_ERR_NOTIMPL, "rotary: the CPU takes %s rows, not %s", c5_dtype_name(C5_DTYPE_REAL),
                   c5_dtype_name(xtype));
  rotate(rows, heads, dh, x, ld, hstride, cs, sn, 1.0);
  return C5_OK;
}

c5_status c5k_rotary_transpose_cpu(c5k_ctx *ctx, long rows, int heads, int dh, void *x, c5_dtype xtype, long ld,
                                   long hstride, const double *cs, const double *sn)
{
  if (xtype != C5_DTYPE_REAL)
    return C5K_ERR(C5_ERR_NOTIMPL, "rotary_transpose: the CPU takes %s rows, not %s", c5_dtype_name(C5_DTYPE_REAL),
                   c5_dtype_name(xtype));
  rotate(rows, heads, dh, x, ld, hstride, cs, sn, -1.0);
  return C5_OK;
}
