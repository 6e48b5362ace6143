/* topk.c - local pieces of the radix select behind c5_topk_select
   (lib/topk.c): per-chunk histograms of order keys and the final selection.
   Chunks are fixed (kernels.h), so results do not depend on the thread count. */
#include <string.h>
#include "cpu.h"

c5_status c5k_topk_hist_cpu(c5k_ctx *ctx, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                               const uint64_t *prefix, int shift, long *hist)
{
  long nc = R->cstart[R->rows];
  long *part = (long *)ctx->work;   /* [nc][256] */
#pragma omp parallel for schedule(static)
  for (long c = 0; c < nc; c++) {
    long r = c5k_chunk_row(R, c), j0, j1;
    c5k_chunk_range(R, r, c, &j0, &j1);
    long *h = part + 256 * c;
    memset(h, 0, 256 * sizeof *h);
    uint64_t want = shift + 8 < 64 ? prefix[r] >> (shift + 8) : 0;
    for (long j = j0; j < j1; j++) {
      uint64_t k = c5k_order_key(v[j], !mask || mask[j]);
      if (shift + 8 < 64 && (k >> (shift + 8)) != want) continue;
      h[(k >> shift) & 255]++;
    }
  }
  for (long r = 0; r < R->rows; r++) {
    long *hr = hist + 256 * r;
    memset(hr, 0, 256 * sizeof *hr);
    for (long c = R->cstart[r]; c < R->cstart[r + 1]; c++)
      for (int b = 0; b < 256; b++) hr[b] += part[256 * c + b];
  }
  return C5_OK;
}

c5_status c5k_topk_count_eq_cpu(c5k_ctx *ctx, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                                   const uint64_t *key, long *count)
{
  long nc = R->cstart[R->rows];
  long *part = (long *)ctx->work;
#pragma omp parallel for schedule(static)
  for (long c = 0; c < nc; c++) {
    long r = c5k_chunk_row(R, c), j0, j1, n = 0;
    c5k_chunk_range(R, r, c, &j0, &j1);
    for (long j = j0; j < j1; j++) n += c5k_order_key(v[j], !mask || mask[j]) == key[r];
    part[c] = n;
  }
  for (long r = 0; r < R->rows; r++) {
    long n = 0;
    for (long c = R->cstart[r]; c < R->cstart[r + 1]; c++) n += part[c];
    count[r] = n;
  }
  return C5_OK;
}

c5_status c5k_topk_select_cpu(c5k_ctx *ctx, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                                 const uint64_t *thr, const long *take, long cap, long *count, long *pos)
{
  long nc = R->cstart[R->rows];
  long *part = (long *)ctx->work;   /* [nc][2]: selected above thr, ties; then their prefixes */
#pragma omp parallel for schedule(static)
  for (long c = 0; c < nc; c++) {
    long r = c5k_chunk_row(R, c), j0, j1, gt = 0, eq = 0;
    c5k_chunk_range(R, r, c, &j0, &j1);
    for (long j = j0; j < j1; j++) {
      uint64_t k = c5k_order_key(v[j], !mask || mask[j]);
      gt += k > thr[r];
      eq += k == thr[r];
    }
    part[2 * c] = gt;
    part[2 * c + 1] = eq;
  }
  /* exclusive prefixes within each row: output slot and tie rank of each chunk */
  for (long r = 0; r < R->rows; r++) {
    long out = 0, ties = 0;
    for (long c = R->cstart[r]; c < R->cstart[r + 1]; c++) {
      long gt = part[2 * c], eq = part[2 * c + 1];
      long teq = take[r] - ties;
      teq = teq < 0 ? 0 : (teq > eq ? eq : teq);
      part[2 * c] = out;
      part[2 * c + 1] = ties;
      out += gt + teq;
      ties += eq;
    }
    count[r] = out;
  }
#pragma omp parallel for schedule(static)
  for (long c = 0; c < nc; c++) {
    long r = c5k_chunk_row(R, c), j0, j1;
    c5k_chunk_range(R, r, c, &j0, &j1);
    long o = part[2 * c], ties = part[2 * c + 1];
    long *pr = pos + r * cap;
    for (long j = j0; j < j1; j++) {
      uint64_t k = c5k_order_key(v[j], !mask || mask[j]);
      if (k > thr[r] || (k == thr[r] && ties++ < take[r])) pr[o++] = j - R->off[r];
    }
  }
  return C5_OK;
}

