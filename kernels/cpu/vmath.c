/* vmath.c - x[i] = exp(x[i]) and x[i] = erf(x[i]) over a block, vectorized
   by SLEEF (1-ulp versions) with runtime dispatch (AVX-512, AVX2+FMA, SSE2),
   so default builds stay portable (no -march=native) yet use the host's
   widest vectors. The only file in kernels/cpu with intrinsics. Results
   depend on the element, never on the block or the thread that runs it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

#if defined(__x86_64__)
/* sleef.h declares each ISA's functions only when that ISA is enabled */
#if !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif
#include <immintrin.h>
#if defined(__clang__)
/* clang (the fuzz build, jobs/fuzz.sh) ignores the GCC pragma and does not define the ISA macros that
   sleef.h tests: they are defined here, after immintrin.h, and sleef.h's declarations get the target
   attribute (their vector arguments need it); the functions still run only where the runtime
   dispatch below finds the ISA */
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#include <sleef.h>
#pragma clang attribute pop
#else
#include <sleef.h>
#endif

#if C5_USE_DOUBLE
#define W512 8
#define W256 4
#define W128 2
#define LD512 _mm512_loadu_pd
#define ST512 _mm512_storeu_pd
#define EXP512 Sleef_expd8_u10avx512f
#define ERF512 Sleef_erfd8_u10avx512f
#define LD256 _mm256_loadu_pd
#define ST256 _mm256_storeu_pd
#define EXP256 Sleef_expd4_u10avx2
#define ERF256 Sleef_erfd4_u10avx2
#define LD128 _mm_loadu_pd
#define ST128 _mm_storeu_pd
#define EXP128 Sleef_expd2_u10sse2
#define ERF128 Sleef_erfd2_u10sse2
#else
#define W512 16
#define W256 8
#define W128 4
#define LD512 _mm512_loadu_ps
#define ST512 _mm512_storeu_ps
#define EXP512 Sleef_expf16_u10avx512f
#define ERF512 Sleef_erff16_u10avx512f
#define LD256 _mm256_loadu_ps
#define ST256 _mm256_storeu_ps
#define EXP256 Sleef_expf8_u10avx2
#define ERF256 Sleef_erff8_u10avx2
#define LD128 _mm_loadu_ps
#define ST128 _mm_storeu_ps
#define EXP128 Sleef_expf4_u10sse2
#define ERF128 Sleef_erff4_u10sse2
#endif

/* The tail goes through the same vector function (padded), so an element's
   result does not depend on where a block ends. */
#define DEFINE_VEXP(name, attr, W, LD, ST, EXP)                              \
  __attribute__((target(attr))) static void name(c5_real *x, long n)         \
  {                                                                          \
    long i = 0;                                                              \
    for (; i + W <= n; i += W) ST(x + i, EXP(LD(x + i)));                    \
    if (i < n) {                                                             \
      c5_real t[W];                                                          \
      memset(t, 0, sizeof t);                                                \
      memcpy(t, x + i, (size_t)(n - i) * sizeof *x);                         \
      ST(t, EXP(LD(t)));                                                     \
      memcpy(x + i, t, (size_t)(n - i) * sizeof *x);                         \
    }                                                                        \
  }
DEFINE_VEXP(vexp_avx512, "avx512f", W512, LD512, ST512, EXP512)
DEFINE_VEXP(vexp_avx2, "avx2,fma", W256, LD256, ST256, EXP256)
DEFINE_VEXP(vexp_sse2, "sse2", W128, LD128, ST128, EXP128)
DEFINE_VEXP(verf_avx512, "avx512f", W512, LD512, ST512, ERF512)
DEFINE_VEXP(verf_avx2, "avx2,fma", W256, LD256, ST256, ERF256)
DEFINE_VEXP(verf_sse2, "sse2", W128, LD128, ST128, ERF128)
#if !defined(__clang__)
#pragma GCC pop_options
#endif

typedef void (*vfn)(c5_real *, long);

/* 0: AVX-512, 1: AVX2 + FMA, 2: SSE2 (C5_VEXP_NO_AVX512 set: never 0) */
static int isa(void)
{
  static int chosen = -1;
  int c = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
  if (c < 0) {
    __builtin_cpu_init();
    c = getenv("C5_VEXP_NO_AVX512") == NULL && __builtin_cpu_supports("avx512f") ? 0
        : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 2;
    __atomic_store_n(&chosen, c, __ATOMIC_RELAXED);
  }
  return c;
}

void c5k_vexp(c5_real *x, long n)
{
  static const vfn f[3] = { vexp_avx512, vexp_avx2, vexp_sse2 };
  f[isa()](x, n);
}

void c5k_verf(c5_real *x, long n)
{
  static const vfn f[3] = { verf_avx512, verf_avx2, verf_sse2 };
  f[isa()](x, n);
}

const char *c5k_vexp_isa(void)
{
  static const char *name[3] = { "avx512f", "avx2", "sse2" };
  return name[isa()];
}
#else
void c5k_vexp(c5_real *x, long n)
{
  for (long i = 0; i < n; i++) x[i] = exp(x[i]);
}
void c5k_verf(c5_real *x, long n)
{
  for (long i = 0; i < n; i++) x[i] = erf(x[i]);
}
const char *c5k_vexp_isa(void) { return "scalar"; }
#endif
