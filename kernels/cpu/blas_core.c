/* blas_core.c - which OpenBLAS kernel core runs the CPU's matrix products,
   and a warning when it is a generic one on a CPU that could do better
   (unless OPENBLAS_CORETYPE chose it). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "colt5.h"
#include "cpu.h"

const char *c5_blas_core(void)
{
  const char *c = openblas_get_corename();
  return c && *c ? c : "unknown";
}

/* Cores whose kernels use neither AVX2 nor AVX-512: what an OpenBLAS too old
   to know the CPU falls back to (Debian 12's 0.3.21 on recent Xeons runs
   Prescott), with double GEMMs about 4x slower there. */
static int generic_core(const char *c)
{
  static const char *const old[] = { "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai",
                                     "coppermine", "northwood", "banias", "athlon", "opteron", "barcelona",
                                     "bobcat", "nano", "sandybridge", "bulldozer", "piledriver", "unknown", NULL };
  for (int i = 0; old[i]; i++)
    if (!strcasecmp(c, old[i]) || !strncasecmp(c, old[i], strlen(old[i]))) return 1;
  return 0;
}

const char *c5k_blas_warning_for(const char *core, int avx2, int avx512, const char *forced, char *buf, size_t len)
{
  const char *isa = avx512 ? "AVX-512" : avx2 ? "AVX2" : NULL;
  if (!isa || !generic_core(core) || (forced && *forced)) return NULL;   /* a core chosen by hand is no surprise */
  snprintf(buf, len,
           "warning: OpenBLAS runs its generic %s kernels on a CPU with %s (it does not know this CPU): "
           "matrix products are several times slower; set OPENBLAS_CORETYPE=%s",
           core, isa, avx512 ? "SkylakeX" : "Haswell");
  return buf;
}

const char *c5_blas_warning(void)
{
  static char msg[256];
  int avx2 = 0, avx512 = 0;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  avx2 = __builtin_cpu_supports("avx2");
  avx512 = __builtin_cpu_supports("avx512f");
#endif
  return c5k_blas_warning_for(c5_blas_core(), avx2, avx512, getenv("OPENBLAS_CORETYPE"), msg, sizeof msg);
}
