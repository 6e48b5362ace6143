/* example.h - what the examples share: stop on an error with the library's
   message, and fill parameters with reproducible values.

   Every libcolt5 call returns c5_status; on failure c5_last_error() holds
   the message and a file:line trace. Collective calls return the same
   status on every rank, so every rank takes the same exit. */
#ifndef C5_EXAMPLE_H
#define C5_EXAMPLE_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <mpi.h>
#include "colt5_mpi.h"

#define CHECK(call)                                                                  \
  do {                                                                               \
    c5_status st_ = (call);                                                          \
    if (st_ != C5_OK) {                                                              \
      fprintf(stderr, "%s:%d: %s: %s\n%s\n", __FILE__, __LINE__, #call,              \
              c5_status_string(st_), c5_last_error());                               \
      MPI_Abort(MPI_COMM_WORLD, 1);                                                  \
    }                                                                                \
  } while (0)

/* A reproducible draw in [-1, 1) (the same on every rank). */
static inline double ex_uniform(unsigned long long *state)
{
  *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
  return 2.0 * (((*state >> 11) + 0.5) / 9007199254740992.0) - 1.0;
}

/* Small values for every parameter of the table, the same on every rank
   (parameters are replicated). A real run initializes them with the rules
   PyTorch would use, or reads them from a file (params_h5.c). */
static inline void ex_fill_params(c5_params *p, unsigned long long seed)
{
  for (long i = 0; i < c5_params_count(p); i++) {
    c5_real *v = c5_params_value(p, i);
    double scale = 1.0 / sqrt((double)c5_params_numel(p, i));
    for (long e = 0; e < c5_params_numel(p, i); e++) v[e] = (c5_real)(4.0 * scale * ex_uniform(&seed));
  }
}

static inline void ex_fill(c5_real *x, long n, unsigned long long seed)
{
  for (long i = 0; i < n; i++) x[i] = (c5_real)ex_uniform(&seed);
}
#endif
