/* kv_exchange.c - the sharded key/value exchange of the routed attentions
   (see kv_exchange.h): this rank's kv entries to every rank, rank-major, and
   their gradients back to the owners. Here: the index maps (which row goes
   where) and the collectives; the rows move by the backend's ops. */
#include "kv_exchange.h"

c5_status c5_kv_exchange_create(const char *who, long dim, const c5k_ops *ops, c5_kv_exchange **out)
{
  C5_CHECK(out && ops && dim > 0, C5_ERR_ARG, "c5_kv_exchange_create: NULL argument or dim = %ld", dim);
  c5_kv_exchange *x;
  C5_CALLOC(x, 1);
  x->who = who ? who : "kv exchange";
  x->ops = ops;
  x->dim = dim;
  *out = x;
  return C5_OK;
}

static void free_buffers(c5_kv_exchange *x)
{
  void *v[] = { x->own_row, x->own_at, x->own_cnt, x->sendx, x->sends, x->sendm, x->sendp, x->downx, x->downs,
                x->cnt_all, x->rcnt, x->rdsp, x->rcntx, x->rdspx, x->inv, x->perm, x->recvx, x->recvs, x->dsendx,
                x->dsends, x->recvm, x->recvp, x->fill };
  for (size_t i = 0; i < sizeof v / sizeof *v; i++) free(v[i]);
  x->own_row = x->own_at = x->own_cnt = x->sendp = x->cnt_all = x->inv = x->perm = x->recvp = x->fill = NULL;
  x->sendx = x->sends = x->downx = x->downs = x->recvx = x->recvs = x->dsendx = x->dsends = NULL;
  x->sendm = x->recvm = NULL;
  x->rcnt = x->rdsp = x->rcntx = x->rdspx = NULL;
  x->cap_o = x->cap_t = x->cap_s = x->cap_k = 0;
  x->cap_p = 0;
}

c5_status c5_kv_exchange_destroy(c5_kv_exchange **x)
{
  if (!x || !*x) return C5_OK;
  free_buffers(*x);
  C5_FREE(*x);
  return C5_OK;
}


c5_status c5_kv_exchange_size(c5_kv_exchange *x, const c5_dist *d, long S, long kslot, long own_cap, long nrows)
{
  C5_CHECK(x && d && S >= 0 && kslot >= 0 && own_cap >= 0 && nrows >= 0, C5_ERR_ARG, "c5_kv_exchange_size: NULL "
           "argument or S = %ld, kslot = %ld, own_cap = %ld, nrows = %ld", S, kslot, own_cap, nrows);
  const long D = x->dim, tot = S * kslot;
  const int P = c5_dist_size(d);
  C5_CHECK(tot * D < 2147483647L, C5_ERR_ARG, "%s: %ld gathered kv entries of %ld reals exceed MPI's int counts",
           x->who, tot, D);
  x->S = S;
  x->kslot = kslot;
  x->tot = tot;
  x->P = P;
  x->rank = c5_dist_rank(d);
  x->nown = 0;
  x->row = 0;
  if (own_cap <= x->cap_o && tot <= x->cap_t && S <= x->cap_s && nrows * kslot <= x->cap_k && P <= x->cap_p &&
      x->rcnt)
    return C5_OK;
  /* beyond the reserve (a module that could not bound it at create): grow */
  return c5_kv_exchange_reserve(x, S, kslot, own_cap, nrows, P);
}

c5_status c5_kv_exchange_reserve(c5_kv_exchange *x, long S, long kslot, long own_cap, long nrows, int P)
{
  const long D = x->dim, tot = S * kslot;
  free_buffers(x);
  const long o = own_cap, t = tot, k = nrows * kslot;
  int ok = 1;
  C5_NEW(x->own_row, o, ok); C5_NEW(x->own_at, S, ok); C5_NEW(x->own_cnt, S, ok); C5_NEW(x->fill, S, ok);
  C5_NEW(x->sendx, o * D, ok); C5_NEW(x->sends, o, ok); C5_NEW(x->sendm, o, ok); C5_NEW(x->sendp, o, ok); C5_NEW(x->downx, o * D, ok); C5_NEW(x->downs, o, ok);
  C5_NEW(x->cnt_all, (long)P * S, ok); C5_NEW(x->rcnt, P, ok); C5_NEW(x->rdsp, P, ok); C5_NEW(x->rcntx, P, ok); C5_NEW(x->rdspx, P, ok);
  C5_NEW(x->inv, t, ok); C5_NEW(x->perm, k, ok); C5_NEW(x->recvx, t * D, ok); C5_NEW(x->recvs, t, ok); C5_NEW(x->recvm, t, ok); C5_NEW(x->recvp, t, ok);
  C5_NEW(x->dsendx, t * D, ok); C5_NEW(x->dsends, t, ok);
  C5_CHECK(ok, C5_ERR_MEM, "%s: out of memory for %ld own and %ld gathered kv entries of %ld reals", x->who, o, t, D);
  x->cap_o = o;
  x->cap_t = t;
  x->cap_s = S;
  x->cap_k = k;
  x->cap_p = P;
  return C5_OK;
}

void c5_kv_exchange_begin(c5_kv_exchange *x, long ld, long offset)
{
  x->ld = ld;
  x->offset = offset;
  x->nown = 0;
  x->row = 0;
  if (x->S > 0) x->own_at[0] = 0;
}

void c5_kv_exchange_end_row(c5_kv_exchange *x)
{
  if (x->row >= x->S) { x->row++; return; }   /* counted: gather reports it */
  x->own_cnt[x->row] = x->nown - x->own_at[x->row];
  if (++x->row < x->S) x->own_at[x->row] = x->nown;
}

/* Every rank's counts and entries (rank-major), and the map (source row, slot) -> gathered entry. */
static c5_status exchange(c5_kv_exchange *x, const c5_dist *d)
{
  const long D = x->dim, S = x->S, kslot = x->kslot, o = x->nown;
  const int P = x->P, flags = x->flags;
  for (int q = 0; q < P; q++) { x->rcnt[q] = (int)S; x->rdsp[q] = (int)(q * S); }
  C5_CALL(c5_dist_allgatherv(d, x->own_cnt, S, x->cnt_all, x->rcnt, x->rdsp, C5_ELEM_LONG));
  long tot = 0;
  for (int q = 0; q < P; q++) {
    long sum = 0;
    for (long s = 0; s < S; s++) sum += x->cnt_all[q * S + s];
    x->rcnt[q] = (int)sum;
    x->rdsp[q] = (int)tot;
    x->rcntx[q] = (int)(sum * D);
    x->rdspx[q] = (int)(tot * D);
    tot += sum;
  }
  for (long s = 0; s < S; s++) {
    long sum = 0;
    for (int q = 0; q < P; q++) sum += x->cnt_all[q * S + s];
    C5_CHECK(sum == kslot, C5_ERR_INTERNAL, "%s: kv source row %ld has %ld entries over the ranks, expected %ld",
             x->who, s, sum, kslot);
  }
  if (flags & C5_KVX_SCORE) C5_CALL(c5_dist_allgatherv(d, x->sends, o, x->recvs, x->rcnt, x->rdsp, C5_ELEM_REAL));
  if (flags & C5_KVX_POS) C5_CALL(c5_dist_allgatherv(d, x->sendp, o, x->recvp, x->rcnt, x->rdsp, C5_ELEM_LONG));
  if (flags & C5_KVX_MASK) C5_CALL(c5_dist_allgatherv(d, x->sendm, o, x->recvm, x->rcnt, x->rdsp, C5_ELEM_U8));
  C5_CALL(c5_dist_allgatherv(d, x->sendx, o * D, x->recvx, x->rcntx, x->rdspx, C5_ELEM_REAL));
  /* ranks in order, each rank's entries of a row ascending: the row's slots ascend */
  memset(x->fill, 0, (size_t)S * sizeof *x->fill);
  long e = 0;
  for (int q = 0; q < P; q++)
    for (long s = 0; s < S; s++)
      for (long j = 0; j < x->cnt_all[q * S + s]; j++, e++) x->inv[s * kslot + x->fill[s]++] = e;
  return C5_OK;
}

/* The gathered entry each (kv row, slot) reads: kv row r reads source row ksrc[r] (NULL: r). Index
   bookkeeping, the same map for the forward's permutation and the backward's. */
static void permutation(c5_kv_exchange *x, long nrows, const long *ksrc)
{
  const long kslot = x->kslot;
  for (long r = 0; r < nrows; r++) {
    long s = ksrc ? ksrc[r] : r;
    for (long j = 0; j < kslot; j++) x->perm[r * kslot + j] = x->inv[s * kslot + j];
  }
}

/* The gather's own checks and its send buffers: rank-local. */
static c5_status gather_local(c5_kv_exchange *x, const c5_dist *d, const c5_real *src, const uint8_t *mask,
                              int flags, long nrows, const long *ksrc, const c5_real *ctx, const long *kpos)
{
  C5_CHECK(x && (src || x->nown == 0) && ctx, C5_ERR_ARG, "c5_kv_exchange_gather: NULL argument");
  const long D = x->dim, S = x->S, o = x->nown;
  C5_CHECK(c5_dist_size(d) == x->P, C5_ERR_ARG, "%s: kv exchange sized for %d ranks, called on %d", x->who, x->P,
           c5_dist_size(d));
  C5_CHECK(x->row == S && o <= x->cap_o, C5_ERR_INTERNAL, "%s: packed %ld kv source rows of %ld and %ld own entries "
           "(room for %ld)", x->who, x->row, S, o, x->cap_o);
  C5_CHECK(ksrc || nrows == S, C5_ERR_ARG, "%s: %ld kv rows without a source map, %ld source rows", x->who, nrows, S);
  C5_CHECK(nrows * x->kslot <= x->cap_k, C5_ERR_INTERNAL, "%s: %ld kv rows of %ld slots, room for %ld", x->who,
           nrows, x->kslot, x->cap_k);
  C5_CHECK(!kpos || (flags & C5_KVX_POS), C5_ERR_ARG, "%s: kv positions asked for but not gathered", x->who);
  x->flags = flags;
  const c5k_ops *ops = x->ops;
  c5k_ctx kc = { 0 };
  C5_CALL(ops->gather_rows(&kc, o, D, x->own_row, NULL, src, D, x->sendx));
  if (flags & C5_KVX_MASK) {
    if (mask) C5_CALL(ops->gather2d(&kc, o, x->own_row, mask, 1, 1, x->sendm, 1));
    else C5_CALL(ops->memset2d(&kc, x->sendm, o, 1, o, 1));
  }
  return C5_OK;
}

c5_status c5_kv_exchange_gather(c5_kv_exchange *x, const c5_dist *d, c5_status pending, const c5_real *src,
                                const uint8_t *mask, int flags, long nrows, const long *ksrc,
                                c5_real *ctx, c5_real *kscore, uint8_t *kmask, long *kpos)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_kv_exchange_gather: dist is NULL");
  if (pending == C5_OK) pending = gather_local(x, d, src, mask, flags, nrows, ksrc, ctx, kpos);
  C5_AGREE(d, pending);
  const long D = x->dim, nk = nrows * x->kslot;

  c5_phase old = c5_dist_phase(d, C5_PHASE_HEAVY);
  c5_status st = exchange(x, d);
  c5_dist_phase(d, old);
  C5_CALL(st);

  /* rank-major -> (kv row, slot) */
  permutation(x, nrows, ksrc);
  const c5k_ops *ops = x->ops;
  c5k_ctx kc = { 0 };
  static const c5_real one = 1;
  C5_CALL(ops->gather_rows(&kc, nk, D, x->perm, NULL, x->recvx, D, ctx));
  if (kscore && (flags & C5_KVX_SCORE)) C5_CALL(ops->gather_rows(&kc, nk, 1, x->perm, NULL, x->recvs, 1, kscore));
  else if (kscore) C5_CALL(ops->fill_rows(&kc, nk, 1, &one, 0, kscore, 1));
  if (kmask && (flags & C5_KVX_MASK)) C5_CALL(ops->gather2d(&kc, nk, x->perm, x->recvm, 1, 1, kmask, 1));
  else if (kmask) C5_CALL(ops->memset2d(&kc, kmask, nk, 1, nk, 1));
  if (kpos) C5_CALL(ops->gather2d(&kc, nk, x->perm, x->recvp, sizeof *kpos, sizeof *kpos, kpos, sizeof *kpos));
  return C5_OK;
}

/* The return's checks and its send buffers (gradients back in gathered order): rank-local. */
static c5_status return_local(c5_kv_exchange *x, const c5_dist *d, long nrows, const long *ksrc, const c5_real *dctx,
                              const c5_real *dkscore, c5_real *dx)
{
  C5_CHECK(x && dctx && dx, C5_ERR_ARG, "c5_kv_exchange_return: NULL argument");
  C5_CHECK(c5_dist_size(d) == x->P, C5_ERR_ARG, "%s: kv exchange made on %d ranks, backward on %d", x->who, x->P,
           c5_dist_size(d));
  C5_CHECK(ksrc || nrows == x->S, C5_ERR_ARG, "%s: %ld kv rows without a source map, %ld source rows", x->who, nrows,
           x->S);
  C5_CHECK(nrows * x->kslot <= x->cap_k, C5_ERR_INTERNAL, "%s: %ld kv rows of %ld slots, room for %ld", x->who,
           nrows, x->kslot, x->cap_k);
  const long D = x->dim, nk = nrows * x->kslot, tot = x->tot;
  const c5k_ops *ops = x->ops;
  c5k_ctx kc = { 0 };
  permutation(x, nrows, ksrc);
  if (!ksrc) {   /* one kv row per source row: every gathered entry has exactly one slot */
    C5_CALL(ops->scatter_rows(&kc, nk, D, x->perm, dctx, NULL, NULL, 0, 1, x->dsendx));
    if (dkscore) C5_CALL(ops->scatter_rows(&kc, nk, 1, x->perm, dkscore, NULL, NULL, 0, 1, x->dsends));
  } else {       /* kv rows may share a source row: sum them, in kv-row order */
    C5_CALL(c5k_zero(ops, &kc, x->dsendx, tot * D * (long)sizeof *x->dsendx));
    C5_CALL(ops->scatter_rows(&kc, nk, D, x->perm, dctx, NULL, NULL, 1, 0, x->dsendx));
    if (dkscore) {
      C5_CALL(c5k_zero(ops, &kc, x->dsends, tot * (long)sizeof *x->dsends));
      C5_CALL(ops->scatter_rows(&kc, nk, 1, x->perm, dkscore, NULL, NULL, 1, 0, x->dsends));
    }
  }
  return C5_OK;
}

c5_status c5_kv_exchange_return(c5_kv_exchange *x, const c5_dist *d, c5_status pending, long nrows, const long *ksrc,
                                const c5_real *dctx, const c5_real *dkscore, c5_real *dx)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_kv_exchange_return: dist is NULL");
  if (pending == C5_OK) pending = return_local(x, d, nrows, ksrc, dctx, dkscore, dx);
  C5_AGREE(d, pending);
  c5_phase old = c5_dist_phase(d, C5_PHASE_HEAVY);
  c5_status st = c5_dist_reduce_scatter(d, x->dsendx, x->downx, x->rcntx, C5_ELEM_REAL);
  if (st == C5_OK && dkscore) st = c5_dist_reduce_scatter(d, x->dsends, x->downs, x->rcnt, C5_ELEM_REAL);
  c5_dist_phase(d, old);
  C5_CALL(st);
  /* an owner's token may stand in several source rows: added in packing order, one fixed order */
  c5k_ctx kc = { 0 };
  C5_CALL(x->ops->scatter_rows(&kc, x->nown, x->dim, x->own_row, x->downx, NULL, NULL, 1, 0, dx));
  return C5_OK;
}
