/* layout.c - which tokens of a sequence each rank holds (docs/design.md §3):
   contiguous shards cut on the module's unit, no divisibility rule. The
   unit itself is the module's (c5_<module>_layout_unit, beside each
   module's forward, which alone knows what its windows need). */
#include <limits.h>
#include "c5_internal.h"

c5_status c5_layout_of_rank(long n, long unit, int rank, int size, c5_layout *out)
{
  C5_CHECK(n > 0, C5_ERR_ARG, "layout: sequence length %ld must be > 0", n);
  C5_CHECK(unit > 0, C5_ERR_ARG, "layout: unit %ld must be > 0", unit);
  C5_CHECK(size > 0 && rank >= 0 && rank < size, C5_ERR_ARG, "layout: rank %d of %d", rank, size);
  long W = (n + unit - 1) / unit;
  C5_CHECK(size <= W, C5_ERR_ARG,
           "%d ranks for a sequence of %ld tokens = %ld units of %ld: at most %ld ranks",
           size, n, W, unit, W);
  long q = W / size, rem = W % size;
  long u0 = rank * q + (rank < rem ? rank : rem);
  long nu = q + (rank < rem ? 1 : 0);
  long lo = u0 * unit, hi = (u0 + nu) * unit;
  if (hi > n) hi = n;
  out->n = n;
  out->unit = unit;
  out->offset = lo;
  out->n_local = hi - lo;
  return C5_OK;
}

c5_status c5_layout_compute(const c5_dist *d, long n, long unit, c5_layout *out)
{
  C5_CALL(c5_layout_of_rank(n, unit, c5_dist_rank(d), c5_dist_size(d), out));
  return C5_OK;
}

c5_status c5_unit_lcm(const char *who, long a, long b, long *out)
{
  C5_CHECK(a > 0 && b > 0, C5_ERR_ARG, "%s: layout units %ld and %ld must be > 0", who, a, b);
  long g = a, r = b;
  while (r) { long t = g % r; g = r; r = t; }
  /* a / g * b: a unit past LONG_MAX could shard nothing, so it is the caller's mistake, said as such */
  C5_CHECK(a / g <= LONG_MAX / b, C5_ERR_ARG, "%s: the lcm of %ld and %ld overflows a long", who, a, b);
  *out = a / g * b;
  return C5_OK;
}
