/* init_draw.h - the log and cos of init_fill's normal draws (kernels.h),
   shared by kernels/cpu/init.c and kernels/cuda/init.cu so that both give
   the same bits: each is a fixed sequence of correctly rounded IEEE
   operations (+ - * / and exact frexp, rint), never a math library's log or
   cos, whose last bits differ between glibc, SLEEF and CUDA's libdevice
   (in a double build 15% of a million normals differed by up to 4 ulp).
   No fused multiply-add: the GPU side spells every operation with its _rn
   intrinsic, the CPU side is compiled without contraction. Accuracy: within
   1 ulp over init's arguments (x in (0, 1], t in [0, 2 pi)). */
#ifndef C5_INIT_DRAW_H
#define C5_INIT_DRAW_H
#include <math.h>

#if defined(__CUDACC__)
#define C5K_DRAW static __host__ __device__ __forceinline__
#else
#define C5K_DRAW static inline
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
#endif

#if defined(__CUDA_ARCH__)
#define C5K_DADD(a, b) __dadd_rn((a), (b))
#define C5K_DSUB(a, b) __dsub_rn((a), (b))
#define C5K_DMUL(a, b) __dmul_rn((a), (b))
#define C5K_DDIV(a, b) __ddiv_rn((a), (b))
#else
#define C5K_DADD(a, b) ((a) + (b))
#define C5K_DSUB(a, b) ((a) - (b))
#define C5K_DMUL(a, b) ((a) * (b))
#define C5K_DDIV(a, b) ((a) / (b))
#endif

/* log x = e ln2 + log(1 + f), x = m 2^e with m = 1 + f in [1/sqrt 2, sqrt 2),
   as fdlibm's e_log.c arranges it: with s = f / (2 + f), z = s^2,
   log(1 + f) = 2 atanh(s) = f - (f^2/2 - s (f^2/2 + R)), R = z sum_k>=1
   2 z^(k-1) / (2k + 1) (k <= 11: |s| <= 0.172, the next term is below
   1e-19), so that f, exact, carries the result and only the small
   correction rounds. ln2 in two parts, the first of 32 bits: e ln2_hi is exact. */
C5K_DRAW double c5k_draw_log(double x)
{
  int e;
  double m = frexp(x, &e);
  if (m < 0.70710678118654752) {
    m = C5K_DMUL(m, 2.0);
    e--;
  }
  const double f = C5K_DSUB(m, 1.0), s = C5K_DDIV(f, C5K_DADD(2.0, f)), z = C5K_DMUL(s, s);
  double p = C5K_DDIV(2.0, 23.0);
  for (int k = 10; k >= 1; k--) p = C5K_DADD(C5K_DDIV(2.0, (double)(2 * k + 1)), C5K_DMUL(z, p));
  const double R = C5K_DMUL(z, p), hfsq = C5K_DMUL(C5K_DMUL(0.5, f), f), de = (double)e;
  const double corr = C5K_DSUB(hfsq, C5K_DADD(C5K_DMUL(s, C5K_DADD(hfsq, R)), C5K_DMUL(de, -4.2009150726810846e-11)));
  return C5K_DSUB(C5K_DMUL(de, 0.6931471806019545), C5K_DSUB(corr, f));
}

/* cos t: k = rint(t 2/pi), r = t - k pi/2 (pi/2 in three parts, the first
   two of 33 bits, so the products by k <= 4 are exact), then cos r or
   +-sin r by the quadrant (|r| <= pi/4), as fdlibm's kernels arrange them:
   cos r = w + (((1 - w) - z/2) + z^2 C(z)), w = 1 - z/2 (the rounding of w
   recovered), sin r = r - r z S(z), with C and S nested Taylor series to
   r^20 (the next term is below 1e-20). */
C5K_DRAW double c5k_draw_cos(double t)
{
  const double k = rint(C5K_DMUL(t, 0.6366197723675814));
  const double r = C5K_DSUB(C5K_DSUB(C5K_DSUB(t, C5K_DMUL(k, 1.5707963267341256)), C5K_DMUL(k, 6.077100506303966e-11)),
                            C5K_DMUL(k, 2.0222662487959506e-21));
  const double z = C5K_DMUL(r, r);
  double c = 1.0, s = 1.0;
  for (int j = 10; j >= 3; j--) c = C5K_DSUB(1.0, C5K_DMUL(C5K_DDIV(z, (double)((2 * j - 1) * (2 * j))), c));
  for (int j = 10; j >= 2; j--) s = C5K_DSUB(1.0, C5K_DMUL(C5K_DDIV(z, (double)((2 * j) * (2 * j + 1))), s));
  const double hz = C5K_DMUL(0.5, z), w = C5K_DSUB(1.0, hz);
  const double cr = C5K_DADD(w, C5K_DADD(C5K_DSUB(C5K_DSUB(1.0, w), hz), C5K_DMUL(C5K_DMUL(z, z), C5K_DDIV(c, 24.0))));
  const double sr = C5K_DSUB(r, C5K_DMUL(C5K_DMUL(r, z), C5K_DDIV(s, 6.0)));
  switch ((int)k & 3) {
  case 0: return cr;
  case 1: return -sr;
  case 2: return -cr;
  default: return sr;
  }
}

#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
#endif
