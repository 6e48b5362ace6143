/* halo.c - the light branch's halo: lengths, packing, the exchange and its
   return (see halo.h). */
#include "halo.h"

void c5_halo_init(c5_halo *h, long batch, long n, long dim, long w, int two_sided, int masked)
{
  *h = (c5_halo){ .batch = batch, .n = n, .dim = dim, .w = w, .two_sided = two_sided, .masked = masked };
}

void c5_halo_carve(c5_halo *h, c5_arena *a)
{
  const long b = h->batch, D = h->dim, w = h->w;
  const long ne = h->n + (h->two_sided ? 2 : 1) * w;   /* at most one window from each neighbour */
  C5_TAKE(a, h->xe, b * ne * D); C5_TAKE(a, h->ye, b * ne * D); C5_TAKE(a, h->dxe, b * ne * D);
  C5_TAKE(a, h->sendr, b * w * D); C5_TAKE(a, h->recvl, b * w * D);
  if (h->masked) { C5_TAKE(a, h->me, b * ne); C5_TAKE(a, h->msendr, b * w); C5_TAKE(a, h->mrecvl, b * w); }
  /* one-sided: these stay NULL, and the exchange skips the right-to-left pass on every rank */
  if (!h->two_sided) return;
  C5_TAKE(a, h->sendl, b * w * D); C5_TAKE(a, h->recvr, b * w * D);
  if (h->masked) { C5_TAKE(a, h->msendl, b * w); C5_TAKE(a, h->mrecvr, b * w); }
}

c5_status c5_halo_prepare(c5_halo *h, const c5_backend *be, const c5_layout *lay, int rank, int P, const c5_real *x,
                          const uint8_t *mask)
{
  const long b = h->batch, n = h->n, D = h->dim, w = h->w;
  c5_layout left = { 0 }, right = { 0 };
  if (rank > 0) C5_CALL(c5_layout_of_rank(lay->n, lay->unit, rank - 1, P, &left));
  if (rank < P - 1 && h->two_sided) C5_CALL(c5_layout_of_rank(lay->n, lay->unit, rank + 1, P, &right));
  const long edge = n < w ? n : w;   /* my first (last) tokens, at most a window */
  h->hl = rank > 0 ? (left.n_local < w ? left.n_local : w) : 0;
  h->hr = rank < P - 1 && h->two_sided ? (right.n_local < w ? right.n_local : w) : 0;
  h->sl = rank > 0 && h->two_sided ? edge : 0;
  h->sr = rank < P - 1 ? edge : 0;
  C5_CHECK(!mask || h->masked, C5_ERR_INTERNAL, "halo: a mask, but no room for one");
  const long ps = (long)sizeof *x * D, row = n * ps;
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  const c5k_ops *ops = be->ops;
  C5_CALL(ops->copy2d(&kc, h->sendr, h->sr * ps, x + (n - h->sr) * D, row, h->sr * ps, b));
  if (h->two_sided) C5_CALL(ops->copy2d(&kc, h->sendl, h->sl * ps, x, row, h->sl * ps, b));
  if (mask) {
    C5_CALL(ops->copy2d(&kc, h->msendr, h->sr, mask + n - h->sr, n, h->sr, b));
    if (h->two_sided) C5_CALL(ops->copy2d(&kc, h->msendl, h->sl, mask, n, h->sl, b));
  }
  return C5_OK;
}

/* What goes where: my edge rows out, the neighbours' into the receive buffers (elements of one row: per). */
static c5_halo_msg message(const c5_halo *h, const void *sl, const void *sr, void *rl, void *rr, long per)
{
  const long b = h->batch;
  return (c5_halo_msg){ .to_left = sl, .to_right = sr, .from_left = rl, .from_right = rr,
                        .n_to_left = b * h->sl * per, .n_to_right = b * h->sr * per,
                        .n_from_left = b * h->hl * per, .n_from_right = b * h->hr * per };
}

c5_status c5_halo_exchange(c5_halo *h, const c5_dist *d, int mask)
{
  c5_halo_msg m = message(h, h->sendl, h->sendr, h->recvl, h->recvr, h->dim);
  C5_CALL(c5_dist_halo_exchange(d, C5_ELEM_REAL, &m));
  if (mask) {
    m = message(h, h->msendl, h->msendr, h->mrecvl, h->mrecvr, 1);
    C5_CALL(c5_dist_halo_exchange(d, C5_ELEM_U8, &m));
  }
  return C5_OK;
}

/* Rows [hl | n | hr] of each batch row of a tensor with per-row width es bytes: the three parts
   moved between (left, mid, right) and the extended buffer ext. */
static c5_status join(const c5_halo *h, const c5_backend *be, long es, void *ext, const void *left, const void *mid,
                      const void *right)
{
  const long b = h->batch, n = h->n, hl = h->hl, hr = h->hr, ne = c5_halo_ne(h);
  char *e = ext;
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  const c5k_ops *ops = be->ops;
  C5_CALL(ops->copy2d(&kc, e, ne * es, left, hl * es, hl * es, b));
  C5_CALL(ops->copy2d(&kc, e + hl * es, ne * es, mid, n * es, n * es, b));
  if (right) C5_CALL(ops->copy2d(&kc, e + (hl + n) * es, ne * es, right, hr * es, hr * es, b));
  return C5_OK;
}

static c5_status split(const c5_halo *h, const c5_backend *be, long es, const void *ext, void *left, void *mid,
                       void *right)
{
  const long b = h->batch, n = h->n, hl = h->hl, hr = h->hr, ne = c5_halo_ne(h);
  const char *e = ext;
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  const c5k_ops *ops = be->ops;
  if (left) C5_CALL(ops->copy2d(&kc, left, hl * es, e, ne * es, hl * es, b));
  C5_CALL(ops->copy2d(&kc, mid, n * es, e + hl * es, ne * es, n * es, b));
  if (right) C5_CALL(ops->copy2d(&kc, right, hr * es, e + (hl + n) * es, ne * es, hr * es, b));
  return C5_OK;
}

c5_status c5_halo_extend(c5_halo *h, const c5_backend *be, const c5_real *x, const uint8_t *mask)
{
  const long es = (long)sizeof *x * h->dim;
  C5_CALL(join(h, be, es, h->xe, h->recvl, x, h->two_sided ? h->recvr : NULL));
  if (mask) C5_CALL(join(h, be, 1, h->me, h->mrecvl, mask, h->two_sided ? h->mrecvr : NULL));
  return C5_OK;
}

c5_status c5_halo_crop_from(const c5_halo *h, const c5_backend *be, const c5_real *ext, c5_real *out)
{
  return split(h, be, (long)sizeof *out * h->dim, ext, NULL, out, NULL);
}

c5_status c5_halo_crop(const c5_halo *h, const c5_backend *be, c5_real *out)
{
  return c5_halo_crop_from(h, be, h->ye, out);
}

c5_status c5_halo_pad(c5_halo *h, const c5_backend *be, const c5_real *dout)
{
  const long es = (long)sizeof *dout * h->dim, ne = c5_halo_ne(h), b = h->batch, hl = h->hl, n = h->n;
  char *y = (char *)h->ye;
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  const c5k_ops *ops = be->ops;
  C5_CALL(ops->memset2d(&kc, y, ne * es, 0, hl * es, b));
  C5_CALL(ops->copy2d(&kc, y + hl * es, ne * es, dout, n * es, n * es, b));
  C5_CALL(ops->memset2d(&kc, y + (hl + n) * es, ne * es, 0, h->hr * es, b));
  return C5_OK;
}

c5_status c5_halo_split(c5_halo *h, const c5_backend *be, c5_real *dx)
{
  return split(h, be, (long)sizeof *dx * h->dim, h->dxe, h->recvl, dx, h->two_sided ? h->recvr : NULL);
}

c5_status c5_halo_return(c5_halo *h, const c5_dist *d, const c5_backend *be, c5_real *dx)
{
  const long b = h->batch, n = h->n, D = h->dim;
  c5_halo_msg m = message(h, h->sendl, h->sendr, h->recvl, h->recvr, D);
  C5_CALL(c5_dist_halo_return(d, C5_ELEM_REAL, &m));
  /* my first tokens' gradients from the left neighbour, then my last ones' from the right (they may be
     the same tokens when n < 2w: this order, every time) */
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  const c5k_ops *ops = be->ops;
  for (long i = 0; i < b; i++) {
    if (h->sl) C5_CALL(ops->add2d(&kc, 1, h->sl * D, h->sendl + i * h->sl * D, 0, dx + i * n * D, 0));
    if (h->sr) C5_CALL(ops->add2d(&kc, 1, h->sr * D, h->sendr + i * h->sr * D, 0, dx + (i * n + n - h->sr) * D, 0));
  }
  return C5_OK;
}
