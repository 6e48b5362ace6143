/* rows.c - the fixed chunking of (possibly ragged, sharded) rows that every
   CPU reduction uses, so results do not depend on the thread count. */
#include "cpu.h"

void c5k_rows_plan(long rows, const long *len, long *cstart)
{
  cstart[0] = 0;
  for (long r = 0; r < rows; r++) cstart[r + 1] = cstart[r] + (len[r] + C5K_CHUNK - 1) / C5K_CHUNK;
}

void c5k_rows_dense(long rows, long n, long *plan, c5k_rows *R)
{
  long *off = plan, *len = off + rows, *cst = len + rows;
  for (long r = 0; r < rows; r++) { off[r] = r * n; len[r] = n; }
  c5k_rows_plan(rows, len, cst);
  *R = (c5k_rows){ .rows = rows, .off = off, .len = len, .cstart = cst };
}

long c5k_work_len_chunks(long chunks) { return 256 * chunks + 2; }
long c5k_work_len(const c5k_rows *R) { return c5k_work_len_chunks(R->cstart[R->rows]); }

/* Row of chunk c: the largest r with cstart[r] <= c (binary search), which is
   the row holding chunk c even when empty rows (equal cstart) precede it. */
long c5k_chunk_row(const c5k_rows *R, long c)
{
  long lo = 0, hi = R->rows - 1;
  while (lo < hi) {
    long mid = (lo + hi + 1) / 2;
    if (R->cstart[mid] <= c) lo = mid; else hi = mid - 1;
  }
  return lo;
}

/* Element range [*j0, *j1) (absolute) of chunk c of row r. */
void c5k_chunk_range(const c5k_rows *R, long r, long c, long *j0, long *j1)
{
  long b = (c - R->cstart[r]) * C5K_CHUNK;
  long e = b + C5K_CHUNK;
  if (e > R->len[r]) e = R->len[r];
  *j0 = R->off[r] + b;
  *j1 = R->off[r] + e;
}

