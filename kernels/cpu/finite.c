/* finite.c - the first non-finite entry of rows (coordinate descent's check
   of its logits): OpenMP over the fixed chunks, each finding its first bad
   entry, then the first chunk in row order that has one. */
#include <math.h>
#include "cpu.h"

c5_status c5k_find_nonfinite_cpu(c5k_ctx *ctx, const c5k_rows *R, const c5_real *s, long *row, long *col,
                                 double *value)
{
  long nc = R->cstart[R->rows];
  long *part = (long *)ctx->work;   /* [nc]: first bad absolute index of the chunk, or -1 */
#pragma omp parallel for schedule(static)
  for (long c = 0; c < nc; c++) {
    long r = c5k_chunk_row(R, c), j0, j1;
    c5k_chunk_range(R, r, c, &j0, &j1);
    long j = j0;
    while (j < j1 && isfinite(s[j])) j++;
    part[c] = j < j1 ? j : -1;
  }
  *row = *col = -1;
  *value = 0;
  for (long r = 0; r < R->rows; r++)
    for (long c = R->cstart[r]; c < R->cstart[r + 1]; c++)
      if (part[c] >= 0) {
        *row = r;
        *col = part[c] - R->off[r];
        *value = (double)s[part[c]];
        return C5_OK;
      }
  return C5_OK;
}
