/* router.c - CoordinateDescentRouter (reference: colt5_attention/
   transformer_block.py): logits against routing tokens, coordinate descent
   over each global row, top-k by the golden tie-break rule, and the backward
   into x and the routing tokens. Rows are (batch, route) pairs, or
   (batch, route, block) segments with route_block_size. */
#include <math.h>
#include <string.h>
#include "c5_internal.h"
#include "backend.h"
#include "cd_internal.h"
#include "topk_internal.h"
#include "arena.h"
#include "dump_internal.h"

struct c5_router {
  const c5_backend *be;
  c5_router_config cfg;
  int dim;
};

struct c5_router_cache {
  const c5_backend *be;     /* the router's: the tensors and index arrays the ops read live there; the row plans,
                               counts and coordinate descent's scalars stay on the host */
  long batch, n_local, rows;   /* rows = batch * r */
  long cap_rows;            /* cd rows the per-cd-row buffers hold */
  long selcap;              /* stride of selpos: at least the selections of any cd row on this rank */
  long nblk;                /* blocks per row (1 without route_block_size) */
  long cd_span;             /* the row length the cd-row workspace was sized for */
  int random_route, cosine;
  int masked;               /* the last forward had a mask (c->mask holds it) */
  void *gmark;              /* set on the lane once g is formed: what backward_end waits for (backend.h) */
  c5_real *s;               /* [rows][n_local] logits */
  c5_real *y;               /* [rows][n_local] coordinate-descent scores (or random draws) */
  c5_real *g;               /* [rows][n_local] backward scratch: dL/dy, then dL/ds */
  uint8_t *mask;            /* [rows][n_local] mask per row (when masked) */
  double *xnorm;            /* [batch][n_local] max(||x_j||, eps) (cosine) */
  double *rtnorm;           /* [r] */
  c5_real *dw;              /* [r, dim] backward scratch: one batch row's gradient product */
  double *dwacc;            /* [r, dim] this call's routing-token gradient, summed over batch rows in double */
  long *plan;               /* [3 * cap_rows + 1] cd row segments */
  double *k;                /* [cap_rows] effective k of each cd row */
  long *ksel;               /* [cap_rows] tokens selected per cd row */
  long *selcount, *selpos;  /* top-k output per cd row: [cap_rows], [cap_rows][selcap] (backend), one block: selpos
                               = selcount + cap_rows, so that one read-back takes both */
  long *dcount, *dstart;    /* out.count and out.start on the backend (the ops read them; on the CPU: the same) */
  long dk;                  /* the per-row count dcount and dstart were last uploaded for (-1: none) */
  long *rowbuf;             /* top-k scratch */
  c5_cd_cache cd;           /* laid out in this cache's arena, with the kernels' workspace */
  c5_routing out;
  long *lpos;               /* [rows][n_local] local position of each selected entry */
  c5_real *yval;            /* [rows][n_local] score value y at the selection (before straight-through) */
  void *mem, *mem_dev;      /* every buffer above (host, backend); without route_block_size, the cd-row ones too */
  void *mem_rows, *mem_rows_dev;   /* route_block_size, or whole rows: the cd-row buffers (size_rows) */
  /* Whole rows (a device backend over several ranks: docs/design.md §4): the logits gathered into rows of
     all n tokens, coordinate descent and top-k run on them as on one rank (every rank the same), each rank
     keeping its own columns. Made by the first such forward, remade for a longer sequence. */
  int whole;                /* the last forward ran on whole rows */
  long n, offset, unit;     /* its layout */
  long nw;                  /* the length the whole-row buffers hold (0: none made) */
  c5_real *sw, *yw, *gw;    /* [rows][nw] logits, scores, backward scratch (backend) */
  uint8_t *mw;              /* [rows][nw] mask */
  long *lposh, *idxh;       /* [rows][n_local] this rank's selections (host), crossing to lpos and out.idx */
  long *selh;               /* [cap_rows][selcap + 1] the selections read back (host) */
  c5_dist *self;            /* this rank alone: the whole-row descent needs no other */
  void *mem_whole, *mem_whole_dev;
};
c5_status c5_router_create(const c5_backend *be, const c5_router_config *cfg, int dim, c5_router **out)
{
  C5_CHECK(be && cfg && out, C5_ERR_ARG, "c5_router_create: NULL argument");
  C5_CHECK(dim > 0, C5_ERR_ARG, "router: dim = %d must be > 0", dim);
  C5_CHECK(cfg->num_routing_tokens > 0, C5_ERR_ARG, "router: num_routing_tokens = %d must be > 0",
           cfg->num_routing_tokens);
  C5_CHECK(cfg->fetch_k_ratio >= 1.0 && isfinite(cfg->fetch_k_ratio), C5_ERR_ARG,
           "router: fetch_k_ratio = %g must be >= 1", cfg->fetch_k_ratio);
  C5_CHECK(cfg->route_block_size >= 0, C5_ERR_ARG, "router: route_block_size = %ld must be >= 0 (0 = off)",
           cfg->route_block_size);
  C5_CHECK(isfinite(cfg->cosine_sim_scale), C5_ERR_ARG, "router: cosine_sim_scale = %g must be finite",
           cfg->cosine_sim_scale);
  c5_cd_config cd = { .n_iters = cfg->n_iters, .eps = cfg->eps, .eps_init = cfg->eps_init,
                      .eps_decay = cfg->eps_decay };
  C5_CALL(c5_cd_config_check(&cd));
  c5_router *r;
  C5_CALLOC(r, 1);
  r->be = be;
  r->cfg = *cfg;
  r->dim = dim;
  *out = r;
  return C5_OK;
}

c5_status c5_router_destroy(c5_router **r)
{
  if (r) C5_FREE(*r);
  return C5_OK;
}

const c5_router_config *c5_router_get_config(const c5_router *r) { return &r->cfg; }

/* The memory plan (docs/design.md §4). Sizes follow from what the cache is
   made for: batch, n_local (nl) and the router (r routes, dim, route_block_size
   bs, n_iters T), never from the data, so no forward or backward allocates.
   rows = batch r. */

/* Per (row, local token): logits, scores, gradients, mask, norms, and the
   routing output. A row selects each of its tokens at most once (blocks are
   disjoint), so this rank holds at most nl selections of a row, whatever
   num_tokens is: the routing output is [rows][nl] at most. */
static void layout_tokens(c5_router_cache *c, c5_arena *m, c5_arena *dm, int R, int dim)
{
  const long rn = c->rows * c->n_local;
  C5_TAKE(dm, c->s, rn);
  C5_TAKE(dm, c->y, rn);
  C5_TAKE(dm, c->g, rn);
  C5_TAKE(dm, c->mask, rn);
  C5_TAKE(dm, c->xnorm, c->batch * c->n_local);
  C5_TAKE(dm, c->rtnorm, R);
  C5_TAKE(dm, c->dw, (long)R * dim);
  C5_TAKE(dm, c->dwacc, (long)R * dim);
  C5_TAKE(m, c->out.count, c->rows);
  C5_TAKE(m, c->out.start, c->rows);
  if (!c5_backend_is_host(c->be)) {
    C5_TAKE(dm, c->dcount, c->rows);
    C5_TAKE(dm, c->dstart, c->rows);
  } else {
    c->dcount = c->out.count;
    c->dstart = c->out.start;
  }
  C5_TAKE(dm, c->out.idx, rn);
  C5_TAKE(dm, c->out.score, rn);
  C5_TAKE(dm, c->lpos, rn);
  C5_TAKE(dm, c->yval, rn);
}

/* The kernels' workspace for this rank's cd rows: c5k_work_len of their
   chunks (C = C5K_CHUNK tokens). Without blocks a row is one cd row of nl
   tokens: ceil(nl / C) chunks. With blocks of bs the rank's tokens
   [o, o + nl) meet blocks floor(o / bs) .. floor((o + nl - 1) / bs), at most
   m = floor((nl - 1) / bs) + 2 = ceil(nl / bs) + 1 of them (the other cd rows
   hold no local token, so no chunk); pieces of lengths l_i summing to at most
   nl make sum ceil(l_i / C) <= nl / C + m chunks, so at most
   ceil(nl / C) + ceil(nl / bs) + 1 per row. */
static long work_bound(const c5_router_cache *c, long nl, long bs)
{
  long chunks = (nl + C5K_CHUNK - 1) / C5K_CHUNK;
  if (bs > 0) chunks += (nl + bs - 1) / bs + 1;
  return c5k_work_len_chunks(c->rows * chunks);
}

/* Per cd row: cdrows of them, each selecting at most selcap tokens on this
   rank; coordinate descent's state and the workspace go with them. */
static void layout_cdrows(c5_router_cache *c, c5_arena *m, c5_arena *dm, long cdrows, int T, long selcap,
                          long work_len)
{
  c->cap_rows = cdrows;
  c->selcap = selcap;
  C5_TAKE(m, c->plan, 3 * cdrows + 1);
  C5_TAKE(m, c->k, cdrows);
  C5_TAKE(m, c->ksel, cdrows);
  C5_TAKE(dm, c->selcount, cdrows * (selcap + 1));   /* then selpos: one read-back for both */
  c->selpos = c->selcount ? c->selcount + cdrows : NULL;
  C5_TAKE(m, c->selh, cdrows * (selcap + 1));
  C5_TAKE(m, c->rowbuf, c5_topk_rowbuf_len(cdrows));
  c5_cd_cache_layout(m, cdrows, T, work_len, &c->cd);
}

/* One arena. Without route_block_size the cd rows are the rows, and a row's
   selections on this rank number at most nl: everything is sized here. With
   it, the cd rows are every (row, block) of the GLOBAL sequence (each of
   coordinate descent's and top-k's allreduces covers all of them; the blocks
   this rank does not touch are empty here), and their number, rows
   floor(n / bs), needs the global n, which this call does not know: those
   buffers are made by the first forward (size_rows). */
static void layout(c5_router_cache *c, c5_arena *m, c5_arena *dm, const c5_router *rt)
{
  const c5_router_config *cfg = &rt->cfg;
  layout_tokens(c, m, dm, cfg->num_routing_tokens, rt->dim);
  if (cfg->route_block_size == 0) {
    layout_cdrows(c, m, dm, c->rows, cfg->n_iters, c->n_local, work_bound(c, c->n_local, 0));
    c->cd_span = c->n_local;
  }
}

c5_status c5_router_cache_create(const c5_router *rt, long batch, long n_local, c5_router_cache **out)
{
  C5_CHECK(rt && out, C5_ERR_ARG, "c5_router_cache_create: NULL argument");
  C5_CHECK(batch > 0 && n_local >= 0, C5_ERR_ARG, "router cache: batch = %ld, n_local = %ld", batch, n_local);
  c5_router_cache *c;
  C5_CALLOC(c, 1);
  c->be = rt->be;
  c->dk = -1;
  c->batch = batch;
  c->n_local = n_local;
  c->rows = batch * rt->cfg.num_routing_tokens;
  c5_arena m = { 0 }, dm = { 0 };
  layout(c, &m, &dm, rt);
  c5_status st = c5_arena_alloc(&m, "router cache");
  if (st == C5_OK) {
    c->mem = m.base;
    st = c5_arena_alloc_on(&dm, c->be, "router cache");
  }
  if (st != C5_OK) {
    c5_router_cache_destroy(&c);
    return c5_err_trace(st, __FILE__, __LINE__);
  }
  c->mem_dev = dm.base;
  layout(c, &m, &dm, rt);
  st = c5_backend_mark_create(c->be, &c->gmark);
  if (st != C5_OK) {
    c5_router_cache_destroy(&c);
    return c5_err_trace(st, __FILE__, __LINE__);
  }
  *out = c;
  return C5_OK;
}

c5_status c5_router_cache_destroy(c5_router_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_backend_mark_destroy((*cp)->gmark);
  free((*cp)->mem);
  free((*cp)->mem_rows);
  free((*cp)->mem_whole);
  if ((*cp)->mem_dev) c5_backend_free((*cp)->be, (*cp)->mem_dev);
  if ((*cp)->mem_rows_dev) c5_backend_free((*cp)->be, (*cp)->mem_rows_dev);
  if ((*cp)->mem_whole_dev) c5_backend_free((*cp)->be, (*cp)->mem_whole_dev);
  c5_dist_destroy(&(*cp)->self);
  C5_FREE(*cp);
  return C5_OK;
}

const c5_routing *c5_router_cache_routing(const c5_router_cache *c) { return &c->out; }
const c5_real *c5_router_cache_logits(const c5_router_cache *c) { return c->s; }
const c5_real *c5_router_cache_scores(const c5_router_cache *c) { return c->y; }

/* The cd rows of a forward with route_block_size (cdrows = rows x global
   blocks, each selecting at most selcap tokens here): made by the first
   forward, remade only when a forward needs more (a longer sequence or more
   tokens per block); every later step of a training run finds them. */
static c5_status size_rows(c5_router_cache *c, const c5_router_config *cfg, long cdrows, long selcap, long len)
{
  if (cdrows <= c->cap_rows && selcap <= c->selcap && len <= c->cd_span) return C5_OK;
  C5_CHECK(cfg->route_block_size > 0 || c->whole, C5_ERR_SHAPE, "router: %ld cd rows of %ld selections, cache holds "
           "%ld of %ld", cdrows, selcap, c->cap_rows, c->selcap);   /* sized at create: cannot happen */
  C5_FREE(c->mem_rows);
  if (c->mem_rows_dev) C5_CALL(c5_backend_free(c->be, c->mem_rows_dev));
  c->mem_rows_dev = NULL;
  c->cap_rows = c->selcap = 0;
  c5_arena m = { 0 }, dm = { 0 };
  layout_cdrows(c, &m, &dm, cdrows, cfg->n_iters, selcap, work_bound(c, len, cfg->route_block_size));
  C5_CALL(c5_arena_alloc(&m, "router cache (blocks)"));
  c->mem_rows = m.base;
  C5_CALL(c5_arena_alloc_on(&dm, c->be, "router cache (blocks)"));
  c->mem_rows_dev = dm.base;
  layout_cdrows(c, &m, &dm, cdrows, cfg->n_iters, selcap, work_bound(c, len, cfg->route_block_size));
  c->cd_span = len;
  return C5_OK;
}

/* Whether a forward over layout lay runs on whole rows: a device backend whose sequence is sharded (its
   coordinate descent and top-k run whole on the device, with no collective between iterations).
   C5_ROUTER_WHOLE_ROWS=1 takes the same path on the CPU, so that it is tested where no GPU is. */
static int whole_rows(const c5_router_cache *c, const c5_layout *lay)
{
  if (lay->n_local == lay->n) return 0;
  const char *e = getenv("C5_ROUTER_WHOLE_ROWS");
  return !c5_backend_is_host(c->be) || (e && !strcmp(e, "1"));
}

/* The whole-row buffers for rows of n tokens. */
static void layout_whole(c5_router_cache *c, c5_arena *m, c5_arena *dm, long n)
{
  const long rw = c->rows * n, rn = c->rows * c->n_local;
  C5_TAKE(dm, c->sw, rw);
  C5_TAKE(dm, c->yw, rw);
  C5_TAKE(dm, c->gw, rw);
  C5_TAKE(dm, c->mw, rw);
  C5_TAKE(m, c->lposh, rn);
  C5_TAKE(m, c->idxh, rn);
}

static c5_status size_whole(c5_router_cache *c, long n)
{
  if (!c->self) C5_CALL(c5_dist_create_self(&c->self));
  if (n <= c->nw) return C5_OK;
  C5_FREE(c->mem_whole);
  if (c->mem_whole_dev) C5_CALL(c5_backend_free(c->be, c->mem_whole_dev));
  c->mem_whole_dev = NULL;
  c->nw = 0;
  c5_arena m = { 0 }, dm = { 0 };
  layout_whole(c, &m, &dm, n);
  C5_CALL(c5_arena_alloc(&m, "router cache (whole rows)"));
  c->mem_whole = m.base;
  C5_CALL(c5_arena_alloc_on(&dm, c->be, "router cache (whole rows)"));
  c->mem_whole_dev = dm.base;
  layout_whole(c, &m, &dm, n);
  c->nw = n;
  return C5_OK;
}

/* The cd rows of the last forward (c->plan). */
static c5k_rows cd_rows(const c5_router_cache *c)
{
  long cdrows = c->rows * c->nblk, *off = c->plan;
  return (c5k_rows){ .rows = cdrows, .off = off, .len = off + cdrows, .cstart = off + 2 * cdrows };
}

static c5_cd_config cd_config(const c5_router_config *cfg)
{
  return (c5_cd_config){ .n_iters = cfg->n_iters, .eps = cfg->eps, .eps_init = cfg->eps_init,
                         .eps_decay = cfg->eps_decay };
}

/* A forward's work before its first collective, on this rank alone: checks, the row geometry, buffers,
   the logits and coordinate descent's own checks. *routed = 0: n <= num_tokens, nothing to route. */
static c5_status forward_local(const c5_router *rt, const c5_layout *lay, const c5_real *routing_token, long batch,
                               const c5_real *x, const uint8_t *mask, long num_tokens, int random_route,
                               c5_router_cache *c, int *routed)
{
  C5_CHECK(rt && lay && routing_token && x && c, C5_ERR_ARG, "c5_router_forward: NULL argument");
  const c5_router_config *cfg = &rt->cfg;
  const int R = cfg->num_routing_tokens, dim = rt->dim;
  const long n = lay->n, nl = lay->n_local;
  C5_CHECK(batch == c->batch && nl == c->n_local, C5_ERR_SHAPE,
           "router: input is [%ld, %ld, %d] but the cache was made for [%ld, %ld, %d]",
           batch, nl, dim, c->batch, c->n_local, dim);
  C5_CHECK(num_tokens > 0, C5_ERR_ARG, "router: num_tokens = %ld must be > 0", num_tokens);
  const long rows = c->rows;
  c->whole = whole_rows(c, lay);
  c->n = n;
  c->offset = lay->offset;
  c->unit = lay->unit;
  /* the cd rows cover [off0, off0 + len) of the sequence: this rank's tokens, or every token */
  const long span = c->whole ? n : nl, off0 = c->whole ? 0 : lay->offset;
  c->random_route = random_route;
  c->cosine = cfg->cosine_sim_routing;

  /* routed? n <= num_tokens: every score is 1 (the reference returns ones) */
  c->out.rows = rows;
  c->masked = mask != NULL;
  *routed = n > num_tokens;
  if (!*routed) {
    c->out.routed = 0;
    c->out.k = 0;
    memset(c->out.count, 0, (size_t)rows * sizeof *c->out.count);
    memset(c->out.start, 0, (size_t)rows * sizeof *c->out.start);
    return C5_OK;
  }
  c->out.routed = 1;

  long nblk = 1, seg = n, ktok = num_tokens;
  if (cfg->route_block_size > 0) {
    long bs = cfg->route_block_size;
    C5_CHECK(n >= bs, C5_ERR_ARG, "router: route_block_size = %ld is larger than the sequence (%ld tokens)", bs, n);
    nblk = n / bs;
    seg = bs;
    ktok = (num_tokens + nblk - 1) / nblk;
    C5_CHECK(ktok <= bs, C5_ERR_ARG, "router: %ld tokens per block of %ld (num_tokens %ld over %ld blocks)",
             ktok, bs, num_tokens, nblk);
  }
  c->nblk = nblk;
  /* a cd row selects ktok tokens globally, so at most min(ktok, nl) here */
  const long cdrows = rows * nblk;
  if (c->whole) C5_CALL(size_whole(c, n));
  C5_CALL(size_rows(c, cfg, cdrows, ktok < span ? ktok : span, span));
  c->out.k = ktok * nblk;

  /* logits: s[b, route, j] = x[b, j] . w[route] (cosine: scaled cosine) */
  const c5k_ops *ops = rt->be->ops;
  c5k_ctx kc = c5_backend_ctx(rt->be, NULL, 0);
  kc.exact = 1;   /* the logits in the working precision whatever the matmul mode: top-k compares them */
  for (long b = 0; b < batch; b++)
    C5_CALL(ops->gemm(&kc, 0, 1, R, nl, dim, 1.0, routing_token, dim, x + b * nl * dim, dim, 0.0, c->s + b * R * nl, nl));
  if (cfg->cosine_sim_routing)
    C5_CALL(ops->cosine_route_forward(&kc, batch, R, nl, dim, x, routing_token, cfg->cosine_sim_scale, c->s, c->xnorm,
                                      c->rtnorm));
  if (mask) C5_CALL(ops->broadcast_mask(&kc, batch, R, nl, mask, c->mask));

  /* cd row segments: block q of row covers global [q*seg, (q+1)*seg) */
  long *off = c->plan, *len = off + cdrows, *cst = len + cdrows;
  for (long row = 0; row < rows; row++)
    for (long q = 0; q < nblk; q++) {
      long i = row * nblk + q;
      long g0 = q * seg, g1 = g0 + seg;
      long l0 = g0 > off0 ? g0 - off0 : 0;
      long l1 = g1 - off0 < span ? g1 - off0 : span;
      if (l1 < l0) l1 = l0;
      if (l0 > span) l0 = l1 = span;
      off[i] = row * span + l0;
      len[i] = l1 - l0;
      c->k[i] = fmin((double)ktok * cfg->fetch_k_ratio, (double)seg);
      c->ksel[i] = ktok;
    }
  c5k_rows_plan(cdrows, len, cst);
  c5k_rows Rw = cd_rows(c);
  c5_cd_config cd = cd_config(cfg);
  /* whole rows: checked once gathered (router_forward) */
  if (!c->whole) C5_CALL(c5_cd_forward_prepare(rt->be, &cd, &Rw, c->s, c->k, 1, &c->cd));
  return C5_OK;
}

/* After a whole-row select: this rank's selections (blocks in order, so ascending) read back on the host,
   crossing to the backend as the sharded host path forms them; this rank's columns of the scores. */
static c5_status select_whole(const c5_router *rt, const c5_layout *lay, c5_router_cache *c, const uint8_t *mask)
{
  const long rows = c->rows, nl = c->n_local, n = lay->n, nblk = c->nblk, cdrows = rows * nblk, cap = c->selcap;
  const long es = (long)sizeof *c->y;
  const c5k_ops *ops = rt->be->ops;
  c5k_ctx kc = c5_backend_ctx(rt->be, NULL, 0);
  c5k_rows Rw = cd_rows(c);
  C5_CALL(ops->copy2d(&kc, c->y, nl * es, c->yw + lay->offset, n * es, nl * es, rows));
  long *cnt = c->selh, *pos = c->selh + c->cap_rows;   /* as selcount and selpos lie on the backend */
  C5_CALL(c5_backend_memcpy(rt->be, cnt, c->selcount, (size_t)(c->cap_rows + cdrows * cap) * sizeof *cnt));
  long at = 0;
  for (long row = 0; row < rows; row++) {
    c->out.start[row] = at;
    for (long q = 0; q < nblk; q++) {
      long i = row * nblk + q;
      for (long e = 0; e < cnt[i]; e++) {
        long g = Rw.off[i] - row * n + pos[i * cap + e];
        if (g < lay->offset || g >= lay->offset + nl) continue;
        c->lposh[at] = g - lay->offset;
        c->idxh[at] = g;
        at++;
      }
    }
    c->out.count[row] = at - c->out.start[row];
  }
  /* uploads: the device goes on with the queued work (no round trip each) */
  C5_CALL(c5_backend_upload(rt->be, c->lpos, c->lposh, (size_t)at * sizeof *c->lpos));
  C5_CALL(c5_backend_upload(rt->be, c->out.idx, c->idxh, (size_t)at * sizeof *c->out.idx));
  if (c->dcount != c->out.count) {   /* the counts change with the data here: they cross at every forward */
    C5_CALL(c5_backend_upload(rt->be, c->dcount, c->out.count, (size_t)rows * sizeof *c->dcount));
    C5_CALL(c5_backend_upload(rt->be, c->dstart, c->out.start, (size_t)rows * sizeof *c->dstart));
    c->dk = -1;
  }
  C5_CALL(ops->route_gather_scores(&kc, rows, nl, c->dstart, c->dcount, c->lpos, c->y, mask ? c->mask : NULL,
                                   rt->cfg.straight_through, c->yval, c->out.score));
  return C5_OK;
}

/* Whole rows from every rank's columns (c5_dist_allgather_rows). The router's ops may run on a lane
   (c5_backend_lane); the collective runs on the backend's own stream, which meets the lane before (it reads
   what the lane wrote) and after (the lane reads what it wrote). */
static c5_status gather_rows(const c5_router *rt, const c5_dist *d, long rows, long n, long unit, long es,
                             const void *local, void *full)
{
  C5_CALL(c5_backend_meet(rt->be));
  C5_CALL(c5_dist_allgather_rows(d, c5_backend_root(rt->be), rows, n, unit, es, local, full));
  return c5_backend_meet(rt->be);
}

static c5_status router_forward(const c5_router *rt, const c5_dist *d, const c5_layout *lay,
                                const c5_real *routing_token, long batch, const c5_real *x,
                                const uint8_t *mask, long num_tokens, int random_route, uint64_t seed,
                                c5_router_cache *c)
{
  int routed = 0;
  c5_status st = forward_local(rt, lay, routing_token, batch, x, mask, num_tokens, random_route, c, &routed);
  /* what decides the sequence of collectives must be the same on every rank */
  const c5_router_config *cfg = rt ? &rt->cfg : NULL;
  c5_dist_arg args[] = { { "router: sequence length n", lay ? lay->n : 0 }, { "router: batch", batch },
                         { "router: num_tokens", num_tokens },
                         { "router: num_routing_tokens", cfg ? cfg->num_routing_tokens : 0 },
                         { "router: route_block_size", cfg ? cfg->route_block_size : 0 },
                         { "router: n_iters", cfg ? cfg->n_iters : 0 }, { "router: random_route", random_route } };
  C5_CALL(c5_dist_agree_args(d, st, (int)(sizeof args / sizeof *args), args));
  if (!routed) return C5_OK;

  const long rows = c->rows, nl = c->n_local, nblk = c->nblk;
  const uint8_t *m = mask ? c->mask : NULL;
  c5k_rows Rw = cd_rows(c);
  c5_cd_config cd = cd_config(cfg);
  /* whole rows: the descent and the select below run on every token, on this rank alone */
  const c5_dist *dd = d;
  const c5_real *s = c->s;
  c5_real *y = c->y;
  long span = nl, off0 = lay->offset;
  if (c->whole) {
    C5_CALL(gather_rows(rt, d, rows, lay->n, lay->unit, (long)sizeof *c->s, c->s, c->sw));
    if (m) C5_CALL(gather_rows(rt, d, rows, lay->n, lay->unit, 1, c->mask, c->mw));
    C5_AGREE(d, c5_cd_forward_prepare(rt->be, &cd, &Rw, c->sw, c->k, 1, &c->cd));
    dd = c->self;
    s = c->sw;
    m = m ? c->mw : NULL;
    y = c->yw;
    span = lay->n;
    off0 = 0;
  }
  C5_CALL(c5_cd_forward_rows(rt->be, dd, &cd, &Rw, s, m, c->k, 1, y, &c->cd));

  /* negative control: random scores, masked ones lowest (they sort last) */
  const c5k_ops *ops = rt->be->ops;
  c5k_ctx kc = c5_backend_ctx(rt->be, NULL, 0);
  const c5_real *key = s;
  if (random_route) {
    C5_CALL(ops->normal_fill(&kc, rows, span, off0, seed, y));
    key = y;
  }
  const long ktok = c->ksel[0], k = c->out.k;
  if (ops->topk_select_dev && c5_dist_size(dd) == 1) {   /* the whole select on the device */
    kc = c5_backend_ctx(rt->be, c->cd.work, c->cd.work_cap);
    C5_CALL(ops->topk_select_dev(&kc, &Rw, key, m, ktok, c->selcap, 0, c->selcount, c->selpos));
  } else {
    C5_CALL(c5_topk_select_rows(rt->be, dd, &Rw, key, m, c->ksel, c->selcap, c->cd.work, c->cd.work_cap, c->rowbuf,
                                c->selcount, c->selpos));
  }
  if (c->whole) return select_whole(rt, lay, c, mask);

  if (c5_dist_size(d) == 1) {
    /* One rank holds every selection: each cd row selected exactly ktok tokens (ktok <= its length), so
       row `row` holds k = nblk ktok entries from row k on, known here without reading a count. The local
       positions, blocks in order (ascending): lpos = selpos + (cd row % nblk) seg, by an op. */
    const long seg = nblk > 1 ? rt->cfg.route_block_size : nl;
    for (long row = 0; row < rows; row++) {
      c->out.start[row] = row * k;
      c->out.count[row] = k;
    }
    C5_CALL(ops->index_rows(&kc, rows * nblk, ktok, c->selpos, c->selcap, 0, 1, nblk, seg, c->lpos, ktok));
    C5_CALL(ops->index_rows(&kc, 1, rows * k, c->lpos, 0, lay->offset, 1, 0, 0, c->out.idx, rows * k));
    if (c->dcount != c->out.count && c->dk != k) {
      /* the ops read count and start on the device: they change only with k (and the cache's rows), so
         they cross to it once, at the first forward of this k, not at every step */
      C5_CALL(c5_backend_upload(rt->be, c->dcount, c->out.count, (size_t)rows * sizeof *c->dcount));
      C5_CALL(c5_backend_upload(rt->be, c->dstart, c->out.start, (size_t)rows * sizeof *c->dstart));
      c->dk = k;
    }
    C5_CALL(ops->route_gather_scores(&kc, rows, nl, c->dstart, c->dcount, c->lpos, c->y, m, cfg->straight_through,
                                     c->yval, c->out.score));
    return C5_OK;
  }
  /* sharded (a host backend: forward_local): this rank's selections per row, read on the host; blocks in
     order, so indices ascend */
  long at = 0;
  for (long row = 0; row < rows; row++) {
    c->out.start[row] = at;
    for (long q = 0; q < nblk; q++) {
      long i = row * nblk + q;
      for (long e = 0; e < c->selcount[i]; e++) {
        long lp = Rw.off[i] - row * nl + c->selpos[i * c->selcap + e];
        c->lpos[at] = lp;
        c->out.idx[at] = lay->offset + lp;
        at++;
      }
    }
    c->out.count[row] = at - c->out.start[row];
  }
  C5_CALL(ops->route_gather_scores(&kc, rows, nl, c->out.start, c->out.count, c->lpos, c->y, m, cfg->straight_through,
                                   c->yval, c->out.score));
  return C5_OK;
}

/* Whether the last forward's scores have a gradient: unrouted scores are constants, random ones are not
   differentiable */
static int has_gradient(const c5_router_cache *c) { return c->out.routed && !c->random_route; }

/* A backward's work before its collective, on this rank alone. *run = 0: no gradient to form. */
static c5_status backward_local(const c5_router *rt, c5_router_cache *c, const c5_real *routing_token,
                                const c5_real *x, const c5_real *dscore, const c5_real *dx, const void *dst, int *run)
{
  *run = 0;
  C5_CHECK(rt && c && routing_token && x && dx && dst, C5_ERR_ARG, "c5_router_backward: NULL argument");
  const c5k_ops *ops = rt->be->ops;
  c5k_ctx kc = c5_backend_ctx(rt->be, NULL, 0);
  C5_CALL(c5k_zero(ops, &kc, c->dwacc, (long)rt->cfg.num_routing_tokens * rt->dim * (long)sizeof *c->dwacc));
  if (!has_gradient(c)) return C5_OK;
  C5_CHECK(dscore != NULL, C5_ERR_ARG, "c5_router_backward: dscore is NULL");
  const uint8_t *m = c->masked ? c->mask : NULL;

  /* dL/dy at the selections (straight-through passes it on unchanged; a
     masked selection was filled with 0 and gets none) */
  C5_CALL(ops->route_scatter_dscores(&kc, c->rows, c->n_local, c->dstart, c->dcount, c->lpos, m, dscore, c->g));
  c5k_rows Rw = cd_rows(c);
  C5_CALL(c5_cd_backward_prepare(&c->cd, &Rw));
  *run = 1;
  return C5_OK;
}

/* Where a backward's routing-token gradient goes: added once (rounded once) to the working-precision gradient,
   or to a double accumulator */
typedef struct { c5_real *grad; double *acc; } grad_dst;

static c5_status grad_out(const c5_router *rt, c5k_ctx *kc, const c5_router_cache *c, grad_dst g)
{
  const long n = (long)rt->cfg.num_routing_tokens * rt->dim;
  return g.grad ? rt->be->ops->grad_flush(kc, c->dwacc, n, g.grad) : rt->be->ops->acc_add(kc, n, c->dwacc, g.acc);
}

/* The backward's first part, on the router's backend (the lane: backend.h): dL/ds of the routed entries
   through the coordinate descent, and (without cosine routing, whose projection changes g with dx) the
   routing token's gradient g^T x, out to g. Reads dscore and x, never dx: the caller's stream may write dx
   meanwhile. */
static c5_status backward_begin(const c5_router *rt, const c5_dist *d, c5_router_cache *c,
                                const c5_real *routing_token, const c5_real *x, const c5_real *dscore,
                                const c5_real *dx, grad_dst gd)
{
  int run = 0;
  C5_AGREE(d, backward_local(rt, c, routing_token, x, dscore, dx, gd.grad ? (const void *)gd.grad : gd.acc, &run));
  const c5_router_config *cfg = &rt->cfg;
  const int R = cfg->num_routing_tokens, dim = rt->dim;
  const long nl = c->n_local, batch = c->batch;
  const c5k_ops *ops = rt->be->ops;
  c5k_ctx kc = c5_backend_ctx(rt->be, NULL, 0);
  if (run) {
    const uint8_t *m = c->masked ? c->mask : NULL;
    c5k_rows Rw = cd_rows(c);
    /* ds written in place over g; tokens outside every block keep g = 0 */
    if (c->whole) {   /* the gradient gathered to whole rows, the descent's backward there, this rank's columns back */
      const long es = (long)sizeof *c->g;
      C5_CALL(gather_rows(rt, d, c->rows, c->n, c->unit, es, c->g, c->gw));
      C5_CALL(c5_cd_backward_rows(rt->be, c->self, &c->cd, &Rw, c->sw, m ? c->mw : NULL, c->yw, c->gw, c->gw));
      C5_CALL(ops->copy2d(&kc, c->g, nl * es, c->gw + c->offset, c->n * es, nl * es, c->rows));
    } else {
      C5_CALL(c5_cd_backward_rows(rt->be, d, &c->cd, &Rw, c->s, m, c->y, c->g, c->g));
    }
    C5_CALL(c5_backend_mark(rt->be, c->gmark));   /* backward_end waits for g, not for what follows */
    if (cfg->cosine_sim_routing) return C5_OK;   /* backward_end: g changes with dx first */
    /* the routing token's gradient g^T x in the working precision whatever the matmul mode: a [R, dim] sum over
       every token, bound by reading x once, which a bf16 product would first copy whole (n dim bf16 of scratch) */
    c5k_ctx kx = kc;
    kx.exact = 1;
    for (long b = 0; b < batch; b++)
      C5_CALL(ops->gemm_acc(&kx, 0, 0, R, dim, nl, 1.0, c->g + b * R * nl, nl, x + b * nl * dim, dim, c->dw,
                            c->dwacc));
  }
  return grad_out(rt, &kc, c, gd);
}

/* The rest, on the backend's own stream once it has waited for the first part: dx += the logits' gradient
   (g rt; cosine: through the scale and both normalizations, the routing token's gradient after it). */
static c5_status backward_end(const c5_router *rt, c5_router_cache *c, const c5_real *routing_token,
                              const c5_real *x, c5_real *dx, grad_dst gd)
{
  if (!has_gradient(c)) return C5_OK;
  const c5_router_config *cfg = &rt->cfg;
  const int R = cfg->num_routing_tokens, dim = rt->dim;
  const long nl = c->n_local, batch = c->batch;
  const c5k_ops *ops = rt->be->ops;
  C5_CALL(c5_backend_stream_wait_mark(rt->be, c->gmark));
  c5k_ctx kc = c5_backend_ctx(c5_backend_root(rt->be), NULL, 0);
  if (!cfg->cosine_sim_routing) {
    for (long b = 0; b < batch; b++)
      C5_CALL(ops->gemm(&kc, 1, 0, nl, dim, R, 1.0, c->g + b * R * nl, nl, routing_token, dim, 1.0, dx + b * nl * dim,
                        dim));
    return C5_OK;
  }
  C5_CALL(ops->cosine_route_backward(&kc, batch, R, nl, dim, x, routing_token, c->xnorm, c->rtnorm,
                                     cfg->cosine_sim_scale, c->g, dx));
  c5k_ctx kx = kc;
  kx.exact = 1;
  for (long b = 0; b < batch; b++)
    C5_CALL(ops->gemm_acc(&kx, 0, 0, R, dim, nl, 1.0, c->g + b * R * nl, nl, x + b * nl * dim, dim, c->dw, c->dwacc));
  C5_CALL(ops->cosine_route_backward_w(&kc, R, dim, routing_token, c->rtnorm, c->dwacc));
  return grad_out(rt, &kc, c, gd);
}

/* The public entries count their collectives under the router phase. */
c5_status c5_router_forward(const c5_router *rt, const c5_dist *d, const c5_layout *lay,
                            const c5_real *routing_token, long batch, const c5_real *x,
                            const uint8_t *mask, long num_tokens, int random_route, uint64_t seed,
                            c5_router_cache *c)
{
  C5_CHECK(d && rt, C5_ERR_ARG, "c5_router_forward: NULL argument");
  c5_phase old = c5_dist_phase(d, C5_PHASE_ROUTER);
  c5_status st = c5_backend_fork(rt->be);   /* a region of its own, or the caller's (backend.h) */
  if (st == C5_OK) {
    st = router_forward(rt, d, lay, routing_token, batch, x, mask, num_tokens, random_route, seed, c);
    C5_KEEP_FIRST(st, c5_backend_join(rt->be));
  }
  c5_dist_phase(d, old);
  return st == C5_OK ? st : c5_err_trace(st, __FILE__, __LINE__);
}

/* The backward's two parts: begin opens a region (backend.h) for the first part's work on the lane, end closes
   it; between them the caller's stream may do work of its own that writes dx but not x (where dx overlaps x,
   begin makes the stream wait for the lane first). */
static c5_status begin_phase(const c5_router *rt, const c5_dist *d, c5_router_cache *c, const c5_real *routing_token,
                             const c5_real *x, const c5_real *dscore, const c5_real *dx, grad_dst gd)
{
  C5_CHECK(d && rt && c, C5_ERR_ARG, "c5_router_backward: NULL argument");
  c5_phase old = c5_dist_phase(d, C5_PHASE_ROUTER);
  c5_status st = c5_backend_fork(rt->be);
  if (st == C5_OK) st = c5_backend_lane_follow(rt->be);   /* dscore: the stream's, even inside a caller's region */
  if (st == C5_OK) st = backward_begin(rt, d, c, routing_token, x, dscore, dx, gd);
  /* where dx overlaps x, the stream waits for the lane's reads of x before the caller writes dx */
  const size_t bytes = (size_t)c->batch * c->n_local * rt->dim * sizeof *x;
  if (st == C5_OK && !c5_apart(x, dx, bytes)) st = c5_backend_stream_follow(rt->be);
  if (st != C5_OK) C5_KEEP_FIRST(st, c5_backend_join(rt->be));   /* no end follows */
  c5_dist_phase(d, old);
  return st;
}

static c5_status end_phase(const c5_router *rt, c5_router_cache *c, const c5_real *routing_token, const c5_real *x,
                           c5_real *dx, grad_dst gd)
{
  c5_status st = backward_end(rt, c, routing_token, x, dx, gd);
  C5_KEEP_FIRST(st, c5_backend_join(rt->be));
  return st;
}

c5_status c5_router_backward_begin(const c5_router *rt, const c5_dist *d, c5_router_cache *c,
                                   const c5_real *routing_token, const c5_real *x, const c5_real *dscore,
                                   const c5_real *dx, c5_real *drouting_token)
{
  return begin_phase(rt, d, c, routing_token, x, dscore, dx, (grad_dst){ drouting_token, NULL });
}

c5_status c5_router_backward_end(const c5_router *rt, c5_router_cache *c, const c5_real *routing_token,
                                 const c5_real *x, c5_real *dx, c5_real *drouting_token)
{
  C5_CHECK(rt && c, C5_ERR_ARG, "c5_router_backward_end: NULL argument");
  return end_phase(rt, c, routing_token, x, dx, (grad_dst){ drouting_token, NULL });
}

c5_status c5_router_backward(const c5_router *rt, const c5_dist *d, c5_router_cache *c,
                             const c5_real *routing_token, const c5_real *x,
                             const c5_real *dscore, c5_real *dx, c5_real *drouting_token)
{
  const grad_dst gd = { drouting_token, NULL };
  C5_CALL(begin_phase(rt, d, c, routing_token, x, dscore, dx, gd));
  return end_phase(rt, c, routing_token, x, dx, gd);
}

c5_status c5_router_backward_acc(const c5_router *rt, const c5_dist *d, c5_router_cache *c,
                                 const c5_real *routing_token, const c5_real *x,
                                 const c5_real *dscore, c5_real *dx, double *dacc)
{
  const grad_dst gd = { NULL, dacc };
  C5_CALL(begin_phase(rt, d, c, routing_token, x, dscore, dx, gd));
  return end_phase(rt, c, routing_token, x, dx, gd);
}
