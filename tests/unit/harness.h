/* harness.h - a small test harness in the manner of HDF5's h5test.h: each
   check prints file:line and both values, then jumps to fail. Programs
   exit 0 (pass), 1 (fail) or 77 (skip) for automake. */
#ifndef C5_HARNESS_H
#define C5_HARNESS_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <mpi.h>
#include "colt5_mpi.h"

/* A library call that must succeed. */
#define T_OK(call) do { c5_status s_ = (call); if (s_ != C5_OK) { \
    fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call, c5_status_string(s_), \
            c5_last_error()); goto fail; } } while (0)
/* A library call that must fail with status want and a message containing needle. */
#define T_FAILS(call, want, needle) do { c5_status s_ = (call); \
    if (s_ != (want) || !strstr(c5_last_error(), (needle))) { \
      fprintf(stderr, "%s:%d: %s returned %s (%s), expected %s with \"%s\"\n", __FILE__, __LINE__, #call, \
              c5_status_string(s_), c5_last_error(), c5_status_string(want), (needle)); goto fail; } \
    c5_error_clear(); } while (0)
#define T_CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, \
    __LINE__, #cond); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); goto fail; } } while (0)

/* max |a - b| / (|b| + floor) over n elements; prints the worst on failure. */
static inline int t_close(const char *what, const c5_real *a, const double *b, long n, double rtol, double floor_)
{
  long worst = -1;
  double we = 0;
  for (long i = 0; i < n; i++) {
    double e = fabs((double)a[i] - b[i]) / (fabs(b[i]) + floor_);
    if (!(e <= we) ) { we = e; worst = i; }
  }
  if (worst >= 0 && !(we <= rtol)) {
    fprintf(stderr, "  %s: worst at %ld: got %.17g want %.17g (rel %.3e > %.3e)\n", what, worst,
            (double)a[worst], b[worst], we, rtol);
    return 0;
  }
  return 1;
}

/* Deterministic normal draws (tests must not depend on libc's rand). */
static inline double t_uniform(unsigned long long *st)
{
  *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
  return ((*st >> 11) + 0.5) / 9007199254740992.0;
}
static inline double t_normal(unsigned long long *st)
{
  double u1 = t_uniform(st), u2 = t_uniform(st);
  return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}
#endif
