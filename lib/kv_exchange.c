/* kv_exchange.c - the sharded key/value exchange of the routed attentions
   (see kv_exchange.h): this rank's kv entries to every rank, rank-major, and
   their gradients back to the owners. Here: the index maps (which row goes
   where) and the collectives; the rows move by the backend's ops. */
#include "kv_exchange.h"

c5_status c5_kv_exchange_create(const char *who, long dim, const c5_backend *be, c5_kv_exchange **out)
{
  C5_CHECK(out && be && dim > 0, C5_ERR_ARG, "c5_kv_exchange_create: NULL argument or dim = %ld", dim);
  c5_kv_exchange *x;
  C5_CALLOC(x, 1);
  x->who = who ? who : "kv exchange";
  x->be = be;
  x->ops = be->ops;
  x->dim = dim;
  /* the constant 1 crosses to the backend once, here, not in a step */
  static const c5_real one = 1;
  c5_status st = C5_BE_NEW(be, x->one, 1);
  if (st == C5_OK) st = c5_backend_memcpy(be, x->one, &one, sizeof one);
  if (st != C5_OK) {
    const char *name = x->who;   /* a caller's static string: it outlives x */
    c5_kv_exchange_destroy(&x);
    return C5_ERR(st, "%s: %s the kv exchange's constant 1 on the %s backend", name,
                  st == C5_ERR_MEM ? "out of memory for" : "cannot upload", be->ops->name);
  }
  *out = x;
  return C5_OK;
}

static void free_buffers(c5_kv_exchange *x)
{
  void *h[] = { x->own_at, x->own_cnt, x->cnt_all, x->rcnt, x->rdsp, x->rcntx, x->rdspx, x->inv, x->perm_h, x->fill };
  void *v[] = { x->own_row, x->sendx, x->sends, x->sendm, x->sendp, x->downx, x->downs, x->perm, x->recvx, x->recvs,
                x->dsendx, x->dsends, x->recvm, x->recvp };
  for (size_t i = 0; i < sizeof h / sizeof *h; i++) free(h[i]);
  for (size_t i = 0; i < sizeof v / sizeof *v; i++) c5_backend_free(x->be, v[i]);
  x->own_row = x->own_at = x->own_cnt = x->sendp = x->cnt_all = x->inv = x->perm = x->recvp = x->fill = NULL;
  x->perm_h = NULL;
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
  c5_backend_free((*x)->be, (*x)->one);
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
  /* counts and maps on the host; the entries (and the maps the ops read) on the backend */
  C5_NEW(x->own_at, S, ok); C5_NEW(x->own_cnt, S, ok); C5_NEW(x->fill, S, ok);
  C5_NEW(x->cnt_all, (long)P * S, ok); C5_NEW(x->rcnt, P, ok); C5_NEW(x->rdsp, P, ok); C5_NEW(x->rcntx, P, ok); C5_NEW(x->rdspx, P, ok);
  C5_NEW(x->inv, t, ok); C5_NEW(x->perm_h, k, ok);
  C5_CHECK(ok, C5_ERR_MEM, "%s: out of memory for %ld own and %ld gathered kv entries of %ld reals", x->who, o, t, D);
  const c5_backend *be = x->be;
  c5_status st = C5_OK;
#define BE(p, n) if (st == C5_OK) st = C5_BE_NEW(be, p, n)
  BE(x->own_row, o); BE(x->sendx, o * D); BE(x->sends, o); BE(x->sendm, o); BE(x->sendp, o); BE(x->downx, o * D);
  BE(x->downs, o); BE(x->perm, k); BE(x->recvx, t * D); BE(x->recvs, t); BE(x->recvm, t); BE(x->recvp, t);
  BE(x->dsendx, t * D); BE(x->dsends, t);
#undef BE
  C5_CHECK(st == C5_OK, st, "%s: out of memory for %ld own and %ld gathered kv entries of %ld reals (%s backend)", x->who,
           o, t, D, be->ops->name);
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

c5_status c5_kv_exchange_pack_rows(c5_kv_exchange *x, long rows, long cnt, const long *idx, long ldi, long div,
                                   const c5_real *score)
{
  C5_CHECK(rows == x->S && rows * cnt <= x->cap_o && div >= 1, C5_ERR_INTERNAL, "%s: packing %ld kv source rows of "
           "%ld entries (sized for %ld rows, room for %ld entries)", x->who, rows, cnt, x->S, x->cap_o);
  const c5k_ops *ops = x->ops;
  c5k_ctx kc = c5_backend_ctx(x->be, NULL, 0);
  const long es = (long)sizeof *x->sends;
  for (long r = 0; r < rows; r++) {   /* host metadata: every row holds cnt */
    x->own_at[r] = r * cnt;
    x->own_cnt[r] = cnt;
  }
  x->nown = rows * cnt;
  x->row = rows;
  /* own_row = (r / div) ld + tok, sendp = offset + tok, tok = idx - offset (or j) */
  C5_CALL(ops->index_rows(&kc, rows, cnt, idx, ldi, idx ? -x->offset : 0, div, 0, x->ld, x->own_row, cnt));
  C5_CALL(ops->index_rows(&kc, rows, cnt, idx, ldi, idx ? 0 : x->offset, 1, 0, 0, x->sendp, cnt));
  if (score) C5_CALL(ops->copy2d(&kc, x->sends, cnt * es, score, ldi * es, cnt * es, rows));
  else C5_CALL(ops->fill_rows(&kc, rows * cnt, 1, x->one, 0, x->sends, 1));
  return C5_OK;
}

c5_status c5_kv_exchange_pack_row(c5_kv_exchange *x, long cnt, const long *idx, long bat, const c5_real *score)
{
  const long o = x->nown;
  x->nown += cnt;
  if (x->row < x->S && x->nown <= x->cap_o && cnt > 0) {   /* beyond: counted, gather reports it (as add) */
    const c5k_ops *ops = x->ops;
    c5k_ctx kc = c5_backend_ctx(x->be, NULL, 0);
    const long es = (long)sizeof *x->sends;
    /* own_row = bat ld + tok, sendp = offset + tok, tok = idx - offset (or j) */
    C5_CALL(ops->index_rows(&kc, 1, cnt, idx, cnt, bat * x->ld - (idx ? x->offset : 0), 1, 0, 0, x->own_row + o, cnt));
    C5_CALL(ops->index_rows(&kc, 1, cnt, idx, cnt, idx ? 0 : x->offset, 1, 0, 0, x->sendp + o, cnt));
    if (score) C5_CALL(ops->copy2d(&kc, x->sends + o, cnt * es, score, cnt * es, cnt * es, 1));
    else C5_CALL(ops->fill_rows(&kc, cnt, 1, x->one, 0, x->sends + o, 1));
  }
  c5_kv_exchange_end_row(x);
  return C5_OK;
}

/* Every rank's counts and entries (rank-major), and the map (source row, slot) -> gathered entry. */
static c5_status exchange(c5_kv_exchange *x, const c5_dist *d)
{
  const long D = x->dim, S = x->S, kslot = x->kslot, o = x->nown;
  const int P = x->P, flags = x->flags;
  for (int q = 0; q < P; q++) { x->rcnt[q] = (int)S; x->rdsp[q] = (int)(q * S); }
  C5_CALL(c5_dist_allgatherv(d, NULL, x->own_cnt, S, x->cnt_all, x->rcnt, x->rdsp, C5_ELEM_LONG));
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
  /* one rank: the gathered entries are the sent ones (read from the send buffers, no copy through the
     host-memory collectives: a device backend's buffers never reach them) */
  if (P > 1) {
    if (flags & C5_KVX_SCORE) C5_CALL(c5_dist_allgatherv(d, x->be, x->sends, o, x->recvs, x->rcnt, x->rdsp, C5_ELEM_REAL));
    if (flags & C5_KVX_POS) C5_CALL(c5_dist_allgatherv(d, x->be, x->sendp, o, x->recvp, x->rcnt, x->rdsp, C5_ELEM_LONG));
    if (flags & C5_KVX_MASK) C5_CALL(c5_dist_allgatherv(d, x->be, x->sendm, o, x->recvm, x->rcnt, x->rdsp, C5_ELEM_U8));
    C5_CALL(c5_dist_allgatherv(d, x->be, x->sendx, o * D, x->recvx, x->rcntx, x->rdspx, C5_ELEM_REAL));
  }
  /* ranks in order, each rank's entries of a row ascending: the row's slots ascend */
  memset(x->fill, 0, (size_t)S * sizeof *x->fill);
  long e = 0;
  for (int q = 0; q < P; q++)
    for (long s = 0; s < S; s++)
      for (long j = 0; j < x->cnt_all[q * S + s]; j++, e++) x->inv[s * kslot + x->fill[s]++] = e;
  return C5_OK;
}

/* One rank and one kv row per source row: the gathered order is the (kv row, slot) order already. */
static int identity(const c5_kv_exchange *x, const long *ksrc) { return x->P == 1 && !ksrc; }

/* The gathered entry each (kv row, slot) reads: kv row r reads source row ksrc[r] (NULL: r). Index
   bookkeeping on the host (ksrc and the counts are host metadata), the same map for the forward's
   permutation and the backward's; on a device it crosses to x->perm in one explicit copy (host to
   device: no wait on the device's work), needed only where the map is not the identity. */
static c5_status permutation(c5_kv_exchange *x, long nrows, const long *ksrc)
{
  const long kslot = x->kslot;
  for (long r = 0; r < nrows; r++) {
    long s = ksrc ? ksrc[r] : r;
    for (long j = 0; j < kslot; j++) x->perm_h[r * kslot + j] = x->inv[s * kslot + j];
  }
  C5_CALL(c5_backend_upload(x->be, x->perm, x->perm_h, (size_t)(nrows * kslot) * sizeof *x->perm));
  return C5_OK;
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
  c5k_ctx kc = c5_backend_ctx(x->be, NULL, 0);
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
  const c5k_ops *ops = x->ops;
  c5k_ctx kc = c5_backend_ctx(x->be, NULL, 0);
  const int one_rank = x->P == 1;
  const c5_real *gx = one_rank ? x->sendx : x->recvx, *gs = one_rank ? x->sends : x->recvs;
  const uint8_t *gm = one_rank ? x->sendm : x->recvm;
  const long *gp = one_rank ? x->sendp : x->recvp;
  const long es = (long)sizeof *ctx;
  if (identity(x, ksrc)) {   /* plain copies (nk = tot entries) */
    C5_CALL(ops->copy2d(&kc, ctx, nk * D * es, gx, nk * D * es, nk * D * es, 1));
    if (kscore && (flags & C5_KVX_SCORE)) C5_CALL(ops->copy2d(&kc, kscore, nk * es, gs, nk * es, nk * es, 1));
    if (kmask && (flags & C5_KVX_MASK)) C5_CALL(ops->copy2d(&kc, kmask, nk, gm, nk, nk, 1));
    if (kpos) C5_CALL(ops->copy2d(&kc, kpos, nk * (long)sizeof *kpos, gp, nk * (long)sizeof *kpos,
                                  nk * (long)sizeof *kpos, 1));
  } else {
    C5_CALL(permutation(x, nrows, ksrc));
    C5_CALL(ops->gather_rows(&kc, nk, D, x->perm, NULL, gx, D, ctx));
    if (kscore && (flags & C5_KVX_SCORE)) C5_CALL(ops->gather_rows(&kc, nk, 1, x->perm, NULL, gs, 1, kscore));
    if (kmask && (flags & C5_KVX_MASK)) C5_CALL(ops->gather2d(&kc, nk, x->perm, gm, 1, 1, kmask, 1));
    if (kpos) C5_CALL(ops->gather2d(&kc, nk, x->perm, gp, sizeof *kpos, sizeof *kpos, kpos, sizeof *kpos));
  }
  if (kscore && !(flags & C5_KVX_SCORE)) C5_CALL(ops->fill_rows(&kc, nk, 1, x->one, 0, kscore, 1));
  if (kmask && !(flags & C5_KVX_MASK)) C5_CALL(ops->memset2d(&kc, kmask, nk, 1, nk, 1));
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
  c5k_ctx kc = c5_backend_ctx(x->be, NULL, 0);
  if (identity(x, ksrc)) return C5_OK;   /* the return reads dctx and dkscore as they are */
  C5_CALL(permutation(x, nrows, ksrc));
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
  const c5k_ops *ops = x->ops;
  c5k_ctx kc = c5_backend_ctx(x->be, NULL, 0);
  const c5_real *down = x->downx;
  if (x->P == 1) {   /* one rank: nothing to sum over ranks; the owner's entries are the gathered ones */
    const long es = (long)sizeof *x->downs, o = x->nown;
    const int id = identity(x, ksrc);
    down = id ? dctx : x->dsendx;
    if (dkscore) C5_CALL(ops->copy2d(&kc, x->downs, o * es, id ? dkscore : x->dsends, o * es, o * es, 1));
  } else {
    c5_phase old = c5_dist_phase(d, C5_PHASE_HEAVY);
    c5_status st = c5_dist_reduce_scatter(d, x->be, x->dsendx, x->downx, x->rcntx, C5_ELEM_REAL);
    if (st == C5_OK && dkscore) st = c5_dist_reduce_scatter(d, x->be, x->dsends, x->downs, x->rcnt, C5_ELEM_REAL);
    c5_dist_phase(d, old);
    C5_CALL(st);
  }
  /* an owner's token may stand in several source rows: added in packing order, one fixed order */
  C5_CALL(ops->scatter_rows(&kc, x->nown, x->dim, x->own_row, down, NULL, NULL, 1, 0, dx));
  return C5_OK;
}
