/* topk.c - distributed top-k by the golden tie-break rule (largest values
   among unmasked entries, ties to the lower global index, masked entries
   last by index): a radix select over order-preserving 64-bit keys, 8 bits
   a round, each round one allreduce of 256 counts per row, then one
   exclusive scan over the ranks of the tie counts at the threshold
   (docs/design.md §2). Rows are sharded by contiguous columns; every rank
   gets its own selected entries. */
#include <limits.h>
#include <string.h>
#include "c5_internal.h"
#include "backend.h"
#include "topk_internal.h"
#include "arena.h"

c5_status c5_topk_select_rows(const c5_backend *be, const c5_dist *d, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                              const long *k, long cap, double *work, long work_len, long *rowbuf,
                              long *count, long *pos)
{
  const c5k_ops *ops = be->ops;
  const long rows = R->rows;
  c5k_ctx ctx = c5_backend_ctx(be, work, work_len);
  C5_NEED_OP(be, topk_hist);
  C5_NEED_OP(be, topk_count_eq);
  C5_NEED_OP(be, topk_select);
  /* rowbuf: [rows][256] hist, then prefix, thr (uint64), need, take, done, ties */
  long *hist = rowbuf, *need = hist + 256 * rows, *take = need + rows, *done = take + rows, *ties = done + rows;
  uint64_t *prefix = (uint64_t *)(ties + rows), *thr = prefix + rows;
  for (long r = 0; r < rows; r++) {
    need[r] = k[r]; prefix[r] = 0; done[r] = 0; thr[r] = 0; take[r] = 0;
  }
  int any_ties = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    C5_CALL(ops->topk_hist(&ctx, R, v, mask, prefix, shift, hist));
    C5_CALL(c5_dist_allreduce_sum_long(d, hist, 256 * rows));
    int left = 0;
    for (long r = 0; r < rows; r++) {
      if (done[r]) continue;
      const long *h = hist + 256 * r;
      int b = 255;
      while (b > 0 && h[b] < need[r]) need[r] -= h[b--];
      uint64_t lo = prefix[r] | ((uint64_t)b << shift);
      if (h[b] == need[r]) {            /* every key >= lo is selected */
        if (lo == 0) { thr[r] = 0; take[r] = LONG_MAX; }
        else { thr[r] = lo - 1; take[r] = 0; }
        done[r] = 1;
      } else if (shift == 0) {          /* more keys equal lo than places: lowest indices win */
        thr[r] = lo; done[r] = 2; any_ties = 1;
      } else {
        prefix[r] = lo; left = 1;
      }
    }
    if (!left) break;
  }
  if (any_ties) {
    C5_CALL(ops->topk_count_eq(&ctx, R, v, mask, thr, ties));
    C5_CALL(c5_dist_exscan_sum_long(d, ties, rows));   /* ties on lower ranks come first */
    for (long r = 0; r < rows; r++)
      if (done[r] == 2) take[r] = need[r] - ties[r] > 0 ? need[r] - ties[r] : 0;
  }
  C5_CALL(ops->topk_select(&ctx, R, v, mask, thr, take, cap, count, pos));
  return C5_OK;
}

long c5_topk_rowbuf_len(long rows) { return 256 * rows + 7 * rows; }

/* The public entry's buffers. This functional API is not on the training
   path (the router selects with c5_topk_select_rows in its own cache), and
   its callers hold no cache: it makes its buffers, in one allocation, at
   every call, before its first collective. */
typedef struct { long *plan, *rowbuf, *kk; double *work; long wl; c5k_rows R; void *mem; } select_bufs;

static void select_layout(c5_arena *m, long rows, long n, select_bufs *b)
{
  C5_TAKE(m, b->plan, 3 * rows + 1);
  C5_TAKE(m, b->rowbuf, c5_topk_rowbuf_len(rows));
  C5_TAKE(m, b->kk, rows);
  b->wl = c5k_work_len_chunks(rows * ((n + C5K_CHUNK - 1) / C5K_CHUNK));   /* dense rows of n */
  C5_TAKE(m, b->work, b->wl);
}

static c5_status select_local(long rows, long n, const c5_real *v, long k, long *count, long *idx, select_bufs *b)
{
  C5_CHECK(v && count && idx, C5_ERR_ARG, "c5_topk_select: NULL argument");
  C5_CHECK(rows >= 0 && n >= 0, C5_ERR_ARG, "c5_topk_select: rows = %ld, n = %ld must be >= 0", rows, n);
  c5_arena m = { 0 };
  select_layout(&m, rows, n, b);
  C5_CALL(c5_arena_alloc(&m, "top-k"));
  select_layout(&m, rows, n, b);
  b->mem = m.base;
  c5k_rows_dense(rows, n, b->plan, &b->R);
  for (long r = 0; r < rows; r++) b->kk[r] = k;
  return C5_OK;
}

c5_status c5_topk_select(const c5_backend *be, const c5_dist *d, long rows, long n, long offset, const c5_real *v,
                         const uint8_t *mask, long k, long *count, long *idx)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_topk_select: dist is NULL");
  select_bufs b = { 0 };
  c5_status st = select_local(rows, n, v, k, count, idx, &b);
  st = c5_dist_agree_args(d, st, 2, (c5_dist_arg[]){ { "top-k: rows", rows }, { "top-k: k", k } });
  long nglob = n;
  if (st == C5_OK) st = c5_dist_allreduce_sum_long(d, &nglob, 1);
  /* nglob is global: every rank decides alike */
  if (st == C5_OK && !(k > 0 && k <= nglob))
    st = C5_ERR(C5_ERR_ARG, "top-k: k = %ld must be in [1, %ld] (the row length)", k, nglob);
  C5_CALL_GOTO(st, st, out);
  if (be->ops->topk_select_dev) {   /* the whole select on the device; positions come out global */
    c5k_ctx ctx = c5_backend_ctx(be, b.work, b.wl);
    C5_CHECK_GOTO(c5_dist_size(d) == 1, st, out, C5_ERR_NOTIMPL, "top-k on the %s backend: %d ranks (the device path "
                  "runs on one rank)", be->ops->name, c5_dist_size(d));
    C5_CALL_GOTO(be->ops->topk_select_dev(&ctx, &b.R, v, mask, k, k, offset, count, idx), st, out);
    goto out;
  }
  C5_CALL_GOTO(c5_topk_select_rows(be, d, &b.R, v, mask, b.kk, k, b.work, b.wl, b.rowbuf, count, idx), st, out);
  for (long r = 0; r < rows; r++)
    for (long i = 0; i < count[r]; i++) idx[r * k + i] += offset;
out:
  free(b.mem);
  return st;
}
