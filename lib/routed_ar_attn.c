/* routed_ar_attn.c - ConditionalRoutedAutoregressiveAttention (reference:
   colt5_attention/transformer_block.py, f2a8da0): causal LocalMHA over every
   token plus a heavy branch computed window by window.

   The reference, in the terms used here (W = heavy window, nw = ceil(n/W)
   windows of the zero-padded sequence x' [b, nw W, dim], nb = nw - 1 query
   windows, rows = (batch, window m = 1..nw-1) pairs, b-major):
     light = LocalMHA(x): window light_window_size, causal, look back 1,
             look forward 0, exact_windowsize False, no rotary;
     q rows:  window m of x' [W tokens], mask = not padding;
              q router: num_heavy_tokens_q per row (unrouted when W <= it:
              every token, score 1);
     kv rows: the whole x' [nw W tokens], mask = token in a window < m
              (tril(-1)); kv router: num_routed_kv routes of
              num_heavy_tokens_kv (unrouted when nw W <= it); a row with
              fewer unmasked tokens than k selects masked ones too (score 0,
              and masked in the attention);
     heavy = Attention(routed q, routed kv, key mask = the routed mask,
             v (and k) times the kv score, rotary at padded-sequence positions);
     per row: null_q_token (or 0) everywhere, the routed queries' heavy
             output times their q score at their positions; rows un-windowed,
             sliced to n - W and shifted right by W (window 0: no heavy output).
   The reference repeats x' once per window for the kv router (O(n^2 / W dim)
   memory); here the kv router runs once per window on x' itself with that
   window's mask, so nothing is repeated but the router's own per-row scores
   (O(b R n^2 / W) scalars, inherent in the routing: every window has its own
   coordinate-descent row over the padded sequence). The query windows are
   copied ([b nb, W, dim], O(n dim)) so the q router sees them as one batch.

   Sharded (docs/design.md §3): the layout unit is a multiple of lcm(light window,
   W), so every rank holds whole light and heavy windows (the last rank may
   end in a partial one, and holds the padding of x').
     light: causal with look_backward 1: [left halo of one light window |
            shard], the halo from the left neighbour (halo.h); its
            input gradient goes back to that neighbour, who adds it;
     q router: a window's row lies on one rank, so each rank routes the
            windows it holds on a communicator of one (no traffic; with
            random_route every rank routes all windows, the others' masked,
            so that the draws are those of one rank);
     kv router: window by window over the whole padded sequence, distributed
            like any router (local columns; each rank gets its own picks);
     heavy: each rank all-gathers every routed kv entry (rank-major, then
            permuted into (row, slot) order; unrouted: the padded sequence
            once per batch row) and attends for the query windows it holds;
            the key/value gradients are reduce-scattered back to the owners
            (kv_exchange.h).
            This moves b nb R k_kv entries to every rank: traffic that grows
            with n / W (docs/design.md §3), where a many-to-many exchange to the
            window owners would move each entry once. */
#include "c5_internal.h"
#include "attn_local.h"
#include "backend.h"
#include "halo.h"
#include "heavy_branch.h"
#include "heavy_scatter.h"
#include "kv_exchange.h"

struct c5_routed_ar_attn {
  c5_routed_ar_attn_config cfg;
  long W;                        /* heavy window size */
  c5_params *p;
  c5_attn_local light;
  c5_heavy_branch hb;            /* null_q_token, routing tokens, heavy_attn, routers */
};

struct c5_routed_ar_attn_cache {
  long batch, n;                 /* local tokens */
  int rank, size;                /* of the last forward */
  /* light branch on [left halo | shard] */
  c5_attn_local_cache *lc;       /* for n + window tokens */
  c5_halo halo;                  /* left only: causal */
  long *xplan;                   /* [3 batch + 1] x as batch rows of n dim elements (find_nonfinite) */
  double *xwork;                 /* find_nonfinite's scratch for those rows */
  void *block;                   /* the arena the halo and the input check are carved from */
  /* geometry of the heavy branch (setup): global n, first local token, windows, padded length, query windows */
  int geo_valid, geo_P;
  long ng, offset, nw, npad, nb;
  long nlp;                      /* this rank's tokens of the padded sequence x' */
  long m0, nbl, rows;            /* query windows held here: first, count; heavy rows batch * nbl */
  long wq0, nbq, rows_q;         /* windows the q router sees: first, count; rows batch * nbq */
  int qrouted, kvrouted;
  long S, kslot;                 /* kv source rows (routed: batch nb R, (b, window, route); else batch) and slots */
  long nq_cap, nk_cap, own_cap;
  int heavy;                     /* the last forward had query windows */
  c5_dist *self;                 /* a communicator of one: the q router when sharded */
  c5_attn_heavy_cache *hc;       /* NULL when rows == 0 */
  c5_router_cache *rq;           /* batch rows x nbq windows of W tokens; NULL when rows_q == 0 */
  c5_router_cache **rkv;         /* [nb]: query window m = i + 1, batch rows of x' */
  c5_routing kv;                 /* every window's kv routing in the public row order (this rank's picks) */
  c5_routing qpub;               /* sharded: the q routing in the public row order (this rank's windows) */
  c5_routing q0, kv0;            /* empty routings (no query window) */
  c5_real *xpad, *dxpad;         /* [b, nlp, dim] this rank's part of x' and its gradient */
  c5_real *xblk, *dxblk;         /* [rows_q, W, dim] the q router's windows and their gradient */
  uint8_t *qmask;                /* [rows_q, W] held and not padding */
  uint8_t *kvmask;               /* [b, nlp] one window's kv mask */
  long nq, nk;                   /* of the last forward */
  long *qtok;                    /* [rows, nq] position within the window */
  long *qsrc;                    /* [rows, nq] its row of xblk (window row qr: qr W + position) */
  long *qsel;                    /* [rows, nq] its entry of the q routing (routed) */
  long *klim;                    /* [rows] the first key position a row's query window may not see */
  long *qdst;                    /* [rows, nq] output row (b n + local token; -1: padding) */
  c5_heavy_scatter sc;           /* the heavy output over null_q_token */
  long *qpos, *kpos;             /* rotary positions (kpos: the key's position in x') */
  c5_real *xq, *ctx, *qscore, *kscore;
  uint8_t *kmask;
  c5_real *hout;                 /* [rows, nq, dim] heavy output before the q score */
  c5_real *dh, *dxq, *dctx, *dks, *dqs, *dsq;
  c5_real *dqr;                  /* [rows_q nq] q dscore in the q router's entry order */
  c5_real *dsc;                  /* [b R nk] one window's kv dscore in routing order */
  /* kv exchange: this rank's entries of x' in source-row order to every rank */
  c5_kv_exchange *kvx;
  long *ksrc;                    /* [rows R] source row of each heavy kv row (r, route) */
};


c5_status c5_routed_ar_attn_create(const c5_routed_ar_attn_config *cfg, c5_params *p, const char *prefix,
                                   c5_routed_ar_attn **out)
{
  C5_CHECK(cfg && p && out, C5_ERR_ARG, "c5_routed_ar_attn_create: NULL argument");
  const char *who = "ConditionalRoutedAutoregressiveAttention";
  C5_CHECK(cfg->dim > 0, C5_ERR_ARG, "%s: dim = %d must be > 0", who, cfg->dim);
  C5_CHECK(cfg->num_heavy_tokens_q > 0 && cfg->num_heavy_tokens_kv > 0, C5_ERR_ARG,
           "%s: num_heavy_tokens_q = %ld and num_heavy_tokens_kv = %ld must be > 0", who, cfg->num_heavy_tokens_q,
           cfg->num_heavy_tokens_kv);
  C5_CHECK(cfg->num_routed_kv > 0 && cfg->heavy_heads % cfg->num_routed_kv == 0, C5_ERR_ARG,
           "%s: heavy_heads = %d must be divisible by num_routed_kv = %d", who, cfg->heavy_heads, cfg->num_routed_kv);
  C5_CHECK(cfg->light_window_size > 0, C5_ERR_ARG, "%s: light_window_size = %ld must be > 0", who,
           cfg->light_window_size);
  C5_CHECK(cfg->heavy_window_size >= 0, C5_ERR_ARG, "%s: heavy_window_size = %ld must be >= 0 (0: light_window_size)",
           who, cfg->heavy_window_size);
  C5_CHECK(!cfg->rotary_emb || cfg->heavy_dim_head % 2 == 0, C5_ERR_ARG,
           "%s: rotary_emb needs an even heavy_dim_head (got %d)", who, cfg->heavy_dim_head);
  c5_routed_ar_attn *m;
  C5_CALLOC(m, 1);
  m->cfg = *cfg;
  m->W = cfg->heavy_window_size > 0 ? cfg->heavy_window_size : cfg->light_window_size;
  m->p = p;
  m->hb.null_q = -1;
  char pre[256];
  c5_status st = C5_OK;
  c5_name_join(pre, sizeof pre, prefix, "light_attn");
  C5_CALL_GOTO(c5_attn_local_init(&m->light, p, pre, cfg->dim, cfg->light_heads, cfg->light_dim_head,
                                  cfg->light_window_size, 1, 0, 1, 0), st, fail);
  C5_CALL_GOTO(c5_heavy_branch_init(&m->hb, p, prefix, cfg->dim, cfg->heavy_heads, cfg->heavy_dim_head,
                                    cfg->num_routed_kv, cfg->multiply_keys_by_score, cfg->use_null_q_tokens,
                                    &cfg->router, cfg->router.route_block_size), st, fail);
  *out = m;
  return C5_OK;
fail:
  c5_routed_ar_attn_destroy(&m);
  return st;
}

c5_status c5_routed_ar_attn_destroy(c5_routed_ar_attn **m)
{
  if (!m || !*m) return C5_OK;
  c5_heavy_branch_fini(&(*m)->hb);
  C5_FREE(*m);
  return C5_OK;
}

/* Rows of x the input check scans: one per batch row (n dim elements). */
static long xcheck_chunks(const c5_routed_ar_attn_cache *c)
{
  return c->batch * ((c->n * c->halo.dim + C5K_CHUNK - 1) / C5K_CHUNK);
}

static void carve(void *obj, c5_arena *a)
{
  c5_routed_ar_attn_cache *c = obj;
  c5_halo_carve(&c->halo, a);
  C5_TAKE(a, c->xplan, 3 * c->batch + 1);
  C5_TAKE(a, c->xwork, c5k_work_len_chunks(xcheck_chunks(c)));
}

c5_status c5_routed_ar_attn_cache_create(const c5_routed_ar_attn *m, long batch, long n, c5_routed_ar_attn_cache **out)
{
  C5_CHECK(m && out, C5_ERR_ARG, "c5_routed_ar_attn_cache_create: NULL argument");
  C5_CHECK(batch > 0 && n > 0, C5_ERR_ARG, "ConditionalRoutedAutoregressiveAttention cache: batch %ld, n %ld must be > 0",
           batch, n);
  c5_routed_ar_attn_cache *c;
  C5_CALLOC(c, 1);
  c5_status st = C5_OK;
  c->batch = batch;
  c->n = n;
  /* the light branch on [left halo | shard]: one light window from the left neighbour at most. The heavy
     branch is sized by the first forward, which knows the global length (setup) */
  const long w = m->light.window;
  c5_halo_init(&c->halo, batch, n, m->cfg.dim, w, 0, 0);
  C5_CALL_GOTO(c5_attn_local_cache_create(&m->light, batch, n + w, &c->lc), st, fail);
  C5_CALL_GOTO(c5_arena_build("ConditionalRoutedAutoregressiveAttention cache", c, carve, &c->block), st, fail);
  /* the q router of a sharded forward runs on this rank alone (a window's row lies on one rank) */
  C5_CALL_GOTO(c5_dist_create_self(&c->self), st, fail);
  C5_CALL_GOTO(c5_kv_exchange_create("ConditionalRoutedAutoregressiveAttention", m->cfg.dim,
                                       c5_params_backend(m->p), &c->kvx), st, fail);
  *out = c;
  return C5_OK;
fail:
  c5_routed_ar_attn_cache_destroy(&c);
  return st;
}

static void free_heavy(c5_routed_ar_attn_cache *c)
{
  c5_attn_heavy_cache_destroy(&c->hc);
  c5_router_cache_destroy(&c->rq);
  if (c->rkv)
    for (long i = 0; i < c->nb; i++) c5_router_cache_destroy(&c->rkv[i]);
  void *v[] = { c->rkv, c->kv.count, c->kv.start, c->kv.idx, c->kv.score, c->qpub.count, c->qpub.start,
                c->qpub.idx, c->qpub.score, c->xpad, c->dxpad, c->xblk, c->dxblk, c->qmask, c->kvmask, c->qtok, c->qdst,
                c->qsrc, c->qsel, c->klim, c->qpos, c->kpos, c->xq, c->ctx, c->qscore, c->kscore, c->kmask, c->hout, c->dh, c->dxq, c->dctx,
                c->dks, c->dqs, c->dsq, c->dqr, c->dsc, c->ksrc };
  for (size_t i = 0; i < sizeof v / sizeof *v; i++) free(v[i]);
  c->rkv = NULL;
  memset(&c->kv, 0, sizeof c->kv);
  memset(&c->qpub, 0, sizeof c->qpub);
  c->xpad = c->dxpad = c->xblk = c->dxblk = c->xq = c->ctx = c->qscore = c->kscore = c->hout = c->dh = NULL;
  c->dxq = c->dctx = c->dks = c->dqs = c->dsq = c->dqr = c->dsc = NULL;
  c->qmask = c->kvmask = c->kmask = NULL;
  c->qtok = c->qdst = c->qsrc = c->qsel = c->klim = c->qpos = c->kpos = c->ksrc = NULL;
  c->geo_valid = 0;
}

c5_status c5_routed_ar_attn_cache_destroy(c5_routed_ar_attn_cache **cp)
{
  if (!cp || !*cp) return C5_OK;
  c5_routed_ar_attn_cache *c = *cp;
  free_heavy(c);
  c5_kv_exchange_destroy(&c->kvx);
  c5_attn_local_cache_destroy(&c->lc);
  free(c->block);
  c5_dist_destroy(&c->self);
  C5_FREE(*cp);
  return C5_OK;
}

const c5_routing *c5_routed_ar_attn_routing_q(const c5_routed_ar_attn_cache *c)
{
  if (!c->heavy) return &c->q0;
  return c->size > 1 ? &c->qpub : c5_router_cache_routing(c->rq);
}
const c5_routing *c5_routed_ar_attn_routing_kv(const c5_routed_ar_attn_cache *c) { return c->heavy ? &c->kv : &c->kv0; }


/* Geometry of the heavy branch for this layout, and its buffers (made again when the layout changes). */
static c5_status setup(const c5_routed_ar_attn *m, c5_routed_ar_attn_cache *c, const c5_layout *lay, int P)
{
  const c5_routed_ar_attn_config *cfg = &m->cfg;
  const long W = m->W, R = cfg->num_routed_kv, D = cfg->dim, batch = c->batch, n = c->n;
  const long kq = cfg->num_heavy_tokens_q, kkv = cfg->num_heavy_tokens_kv;
  if (c->geo_valid && c->geo_P == P && c->ng == lay->n && c->offset == lay->offset) return C5_OK;
  free_heavy(c);
  c->geo_P = P;
  c->ng = lay->n;
  c->offset = lay->offset;
  c->nw = (c->ng + W - 1) / W;
  c->npad = c->nw * W;
  c->nb = c->nw - 1;
  /* the last rank holds the padding */
  c->nlp = c->offset + n == c->ng ? c->npad - c->offset : n;
  long ma = c->offset / W, mb = (c->offset + c->nlp) / W;
  c->m0 = ma > 1 ? ma : 1;
  c->nbl = mb > c->m0 ? mb - c->m0 : 0;
  c->rows = batch * c->nbl;
  /* random routes: every rank draws every window's row (the draws depend on the row index) */
  int all = P > 1 && cfg->random_route;
  c->wq0 = all ? 1 : c->m0;
  c->nbq = all ? c->nb : c->nbl;
  c->rows_q = batch * c->nbq;
  c->qrouted = W > kq;
  c->kvrouted = c->npad > kkv;
  c->nq_cap = c->qrouted ? kq : W;
  c->nk_cap = c->kvrouted ? kkv : c->npad;
  c->S = c->kvrouted ? batch * c->nb * R : batch;
  c->kslot = c->nk_cap;
  c->own_cap = c->kvrouted ? c->S * (kkv < c->nlp ? kkv : c->nlp) : batch * c->nlp;
  if (c->nb == 0) { c->geo_valid = 1; return C5_OK; }

  const long nb = c->nb, rows = c->rows, rq = c->rows_q, nq = c->nq_cap, nk = c->nk_cap, nlp = c->nlp;
  const long q = rows * nq, k = rows * R * nk, pub = batch * nb;
  int ok = 1;
  C5_NEW(c->rkv, nb, ok);
  C5_NEW(c->kv.count, pub * R, ok); C5_NEW(c->kv.start, pub * R, ok); C5_NEW(c->kv.idx, pub * R * nk, ok); C5_NEW(c->kv.score, pub * R * nk, ok);
  C5_NEW(c->qpub.count, pub, ok); C5_NEW(c->qpub.start, pub, ok); C5_NEW(c->qpub.idx, pub * nq, ok); C5_NEW(c->qpub.score, pub * nq, ok);
  C5_NEW(c->xpad, batch * nlp * D, ok); C5_NEW(c->dxpad, batch * nlp * D, ok); C5_NEW(c->kvmask, batch * nlp, ok);
  C5_NEW(c->xblk, rq * W * D, ok); C5_NEW(c->dxblk, rq * W * D, ok); C5_NEW(c->qmask, rq * W, ok); C5_NEW(c->dqr, rq * nq, ok);
  C5_NEW(c->qtok, q, ok); C5_NEW(c->qsrc, q, ok); C5_NEW(c->qsel, q, ok); C5_NEW(c->klim, rows, ok); C5_NEW(c->qdst, q, ok); C5_NEW(c->qpos, q, ok); C5_NEW(c->xq, q * D, ok); C5_NEW(c->qscore, q, ok); C5_NEW(c->hout, q * D, ok); C5_NEW(c->dh, q * D, ok);
  C5_NEW(c->dxq, q * D, ok); C5_NEW(c->dqs, q, ok); C5_NEW(c->dsq, q, ok);
  C5_NEW(c->kpos, k, ok); C5_NEW(c->ctx, k * D, ok); C5_NEW(c->kscore, k, ok); C5_NEW(c->kmask, k, ok); C5_NEW(c->dctx, k * D, ok); C5_NEW(c->dks, k, ok);
  C5_NEW(c->dsc, batch * R * nk, ok); C5_NEW(c->ksrc, rows * R, ok);
  C5_CHECK(ok, C5_ERR_MEM, "ConditionalRoutedAutoregressiveAttention cache: out of memory for %ld x %ld tokens "
           "(%ld windows of %ld, %ld held here)", batch, n, c->nw, W, c->nbl);
  /* heavy kv row (r, route) reads source row (b, window, route) when routed, else the batch row b */
  for (long r = 0; r < rows; r++) {
    long b = r / c->nbl, rg = b * nb + c->m0 + r % c->nbl - 1;
    for (long q = 0; q < R; q++) c->ksrc[r * R + q] = c->kvrouted ? rg * R + q : b;
  }
  if (rows > 0) C5_CALL(c5_attn_heavy_cache_create(&m->hb.attn, rows, nq, nk, &c->hc));
  if (rq > 0) C5_CALL(c5_router_cache_create(m->hb.q_router, rq, W, &c->rq));
  for (long i = 0; i < nb; i++) C5_CALL(c5_router_cache_create(m->hb.kv_router, batch, nlp, &c->rkv[i]));
  c->geo_valid = 1;
  return C5_OK;
}

/* The causal LocalMHA counts its light windows from token 0 and light_forward takes one whole window
   from the left neighbour; the q router routes each heavy window on the one rank that holds it. So
   every shard starts on a boundary of both windows: their lcm. The kv routers run over any layout and
   rotary positions are global (padded-sequence positions), so nothing else ties tokens together. */
c5_status c5_routed_ar_attn_layout_unit(const c5_routed_ar_attn_config *cfg, long *unit)
{
  C5_CHECK(cfg && unit, C5_ERR_ARG, "c5_routed_ar_attn_layout_unit: NULL argument");
  const char *who = "ConditionalRoutedAutoregressiveAttention";
  C5_CHECK(cfg->light_window_size > 0, C5_ERR_ARG, "%s: light_window_size = %ld must be > 0", who,
           cfg->light_window_size);
  C5_CHECK(cfg->heavy_window_size >= 0, C5_ERR_ARG, "%s: heavy_window_size = %ld must be >= 0 (0: light_window_size)",
           who, cfg->heavy_window_size);
  long W = cfg->heavy_window_size > 0 ? cfg->heavy_window_size : cfg->light_window_size;
  C5_CALL(c5_unit_lcm(who, cfg->light_window_size, W, unit));
  return C5_OK;
}

/* Light branch, forward, before the halo exchange: this rank's last light window, sent right (sharded).
   Rank-local. */
static c5_status light_prepare(c5_routed_ar_attn *m, const c5_layout *lay, const c5_real *x,
                               c5_routed_ar_attn_cache *c)
{
  const long n = c->n, w = m->light.window;
  const int r = c->rank, P = c->size;
  C5_CHECK(r == P - 1 || n >= w, C5_ERR_ARG, "ConditionalRoutedAutoregressiveAttention: rank %d holds %ld tokens, "
           "fewer than the light window %ld it sends right", r, n, w);
  C5_CALL(c5_halo_prepare(&c->halo, c5_params_backend(m->p), lay, r, P, x, NULL));
  return C5_OK;
}

/* Light branch, forward: causal LocalMHA over [left halo | shard]; the halo is the left neighbour's last
   light window (the shard starts on a window boundary, so the windows line up with one rank's). Rank-local. */
static c5_status light_local(c5_routed_ar_attn *m, const c5_real *x, c5_routed_ar_attn_cache *c, c5_real *out)
{
  const c5_params *p = m->p;
  c5_halo *h = &c->halo;
  if (h->hl == 0) {
    C5_CALL(c5_attn_local_forward(&m->light, p, c->batch, c->n, c->offset, x, NULL, c->lc, NULL, NULL, out));
    return C5_OK;
  }
  C5_CALL(c5_halo_extend(h, c5_params_backend(p), x, NULL));
  C5_CALL(c5_attn_local_forward(&m->light, p, c->batch, c5_halo_ne(h), c->offset - h->hl, h->xe, NULL, c->lc,
                                NULL, NULL, h->ye));
  C5_CALL(c5_halo_crop(h, c5_params_backend(p), out));
  return C5_OK;
}

/* Light branch, backward: the halo rows' outputs get no gradient; their input gradient is staged for the
   left neighbour. Rank-local. */
static c5_status light_backward_local(c5_routed_ar_attn *m, c5_routed_ar_attn_cache *c, const c5_real *x,
                                      const c5_real *dout, c5_real *dx)
{
  const c5_params *p = m->p;
  c5_halo *h = &c->halo;
  if (h->hl == 0) {
    C5_CALL(c5_attn_local_backward(&m->light, p, c->lc, x, dout, NULL, dx));
    return C5_OK;
  }
  C5_CALL(c5_halo_pad(h, c5_params_backend(p), dout));
  C5_CALL(c5_attn_local_backward(&m->light, p, c->lc, h->xe, h->ye, NULL, h->dxe));
  C5_CALL(c5_halo_split(h, c5_params_backend(p), dx));
  return C5_OK;
}

/* The kv exchange, before it: this rank's entries of every source row (routed: its picks of (b, window,
   route), read from the batch row the reference reads them from; unrouted: its part of x' for each batch
   row). Rank-local. */
static c5_status kv_pack(c5_routed_ar_attn *m, const c5_dist *d, c5_routed_ar_attn_cache *c)
{
  const c5_routed_ar_attn_config *cfg = &m->cfg;
  const long R = cfg->num_routed_kv, nb = c->nb, nlp = c->nlp, S = c->S;
  C5_CALL(c5_kv_exchange_size(c->kvx, d, S, c->kslot, c->own_cap, c->rows * R));
  c5_kv_exchange_begin(c->kvx, nlp, c->offset);
  for (long s = 0; s < S; s++) {
    if (c->kvrouted) {
      long b = s / (nb * R), i = (s / R) % nb, q = s % R, r = b * nb + i;
      long bs = (cfg->kv_gather_batch_bug ? r / R : r) / nb;   /* see the config's comment */
      const c5_routing *ri = c5_router_cache_routing(c->rkv[i]);
      long src = b * R + q;
      for (long j = 0; j < ri->count[src]; j++)
        c5_kv_exchange_add(c->kvx, ri->idx[ri->start[src] + j] - c->offset, bs, ri->score[ri->start[src] + j]);
    } else {
      for (long t = 0; t < nlp; t++) c5_kv_exchange_add(c->kvx, t, s, 1);
    }
    c5_kv_exchange_end_row(c->kvx);
  }
  return C5_OK;
}

/* A forward's checks, before anything else: the shapes, the layout and the input itself. The q router of a
   sharded forward runs on this rank alone, so its own NaN check would agree with nobody: x is checked here,
   naming the token, and agreed with the rest. Rank-local. */
static c5_status forward_check(c5_routed_ar_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                               const c5_real *x, c5_routed_ar_attn_cache *c, const c5_real *out)
{
  C5_CHECK(m && lay && x && c && out, C5_ERR_ARG, "c5_routed_ar_attn_forward: NULL argument");
  const char *who = "ConditionalRoutedAutoregressiveAttention";
  const long n = lay->n_local, D = m->cfg.dim, W = m->W, wl = m->light.window;
  const int P = c5_dist_size(d);
  C5_CHECK(batch == c->batch && n == c->n && (P > 1 || (lay->n == n && lay->offset == 0)), C5_ERR_SHAPE,
           "%s: input [%ld, %ld, %ld] (global n %ld), cache made for [%ld, %ld, %ld]", who, batch, n, D, lay->n,
           c->batch, c->n, D);
  if (P > 1) {
    long u = lay->unit, end = lay->offset + n, need;
    C5_CALL(c5_routed_ar_attn_layout_unit(&m->cfg, &need));
    C5_CHECK(u > 0 && u % need == 0, C5_ERR_ARG, "%s: the layout unit %ld must be a multiple of %ld, the lcm of the "
             "light window %ld and the heavy window %ld, when the sequence is sharded (c5_routed_ar_attn_layout_unit)",
             who, u, need, wl, W);
    C5_CHECK(lay->offset % u == 0 && (end == lay->n || end % u == 0) && end <= lay->n, C5_ERR_ARG,
             "%s: this rank's tokens [%ld, %ld) of %ld are not whole units of %ld", who, lay->offset, end, lay->n, u);
  }
  c5k_rows rx;
  c5k_rows_dense(batch, n * D, c->xplan, &rx);
  c5k_ctx kc = { .work = c->xwork, .work_len = c5k_work_len(&rx) };
  long b, col;
  double bad;
  C5_CALL(c5_params_backend(m->p)->ops->find_nonfinite(&kc, &rx, x, &b, &col, &bad));
  if (b >= 0)
    return C5_ERR(C5_ERR_ARG, "%s: input x[%ld, %ld, %ld] is %g (batch row, token of %ld, feature)", who, b,
                  lay->offset + col / D, col % D, bad, lay->n);
  c->rank = c5_dist_rank(d);
  c->size = P;
  return C5_OK;
}

/* After the halo exchange, before the kv routers: the light branch, the heavy branch's geometry and
   buffers, and the q router. Sharded, the q router runs on this rank alone (c->self): a window's row lies on
   one rank. Rank-local when sharded (on one rank everything is). */
static c5_status forward_middle(c5_routed_ar_attn *m, const c5_dist *d, const c5_layout *lay, const c5_real *x,
                                c5_routed_ar_attn_cache *c, c5_real *out)
{
  const c5_routed_ar_attn_config *cfg = &m->cfg;
  const char *who = "ConditionalRoutedAutoregressiveAttention";
  const int P = c->size;
  const c5_params *p = m->p;
  C5_CALL(light_local(m, x, c, out));
  C5_CALL(setup(m, c, lay, P));
  /* n <= W: no query window (the reference fails for n < W; at n = W it adds nothing) */
  c->q0.rows = c->kv0.rows = 0;
  c->heavy = c->nb > 0;
  if (!c->heavy) return C5_OK;

  const long batch = c->batch, n = c->n, D = cfg->dim, W = m->W;
  const long nlp = c->nlp, rows_q = c->rows_q, nbl = c->nbl, nbq = c->nbq, m0 = c->m0, wq0 = c->wq0;
  const long off = c->offset, ng = c->ng;
  /* this rank's part of x' (the pad stays zero from the allocation) and the q router's windows: per batch
     row, the windows held here are consecutive rows of both */
  const c5k_ops *ops = c5_params_backend(p)->ops;
  c5k_ctx kc = { 0 };
  const long es = (long)sizeof *x;
  C5_CALL(ops->copy2d(&kc, c->xpad, nlp * D * es, x, n * D * es, n * D * es, batch));
  if (rows_q == 0) return C5_OK;
  if (nbq != nbl) C5_CALL(c5k_zero(ops, &kc, c->xblk, rows_q * W * D * es));
  uint8_t *held = c->qmask + (m0 - wq0) * W;   /* [batch] blocks of nbl windows, nbq W apart */
  C5_CALL(ops->copy2d(&kc, c->xblk + (m0 - wq0) * W * D, nbq * W * D * es, c->xpad + (m0 * W - off) * D, nlp * D * es,
                      nbl * W * D * es, batch));
  /* the q router's mask: the windows held here, but not the padding (the last window's tokens >= ng) */
  if (nbq != nbl) C5_CALL(ops->memset2d(&kc, c->qmask, rows_q * W, 0, rows_q * W, 1));
  C5_CALL(ops->memset2d(&kc, held, nbq * W, 1, nbl * W, batch));
  const long end = (m0 + nbl) * W;
  if (nbl > 0 && end > ng) C5_CALL(ops->memset2d(&kc, held + ng - m0 * W, nbq * W, 0, end - ng, batch));
  const c5_dist *dq = d;
  if (P > 1) dq = c->self;
  c5_layout lq = { .n = W, .unit = W, .offset = 0, .n_local = W };
  c5_status st = c5_router_forward(m->hb.q_router, dq, &lq, c5_params_value(p, m->hb.rt_q), rows_q, c->xblk, c->qmask,
                                   cfg->num_heavy_tokens_q, cfg->random_route, cfg->random_seed, c->rq);
  /* its rows are this rank's windows (one batch row after another), not tokens: say which */
  if (st != C5_OK)
    return C5_ERR(st, "%s: q router over windows %ld..%ld (tokens %ld..%ld) of each batch row: %s", who, wq0,
                  wq0 + nbq - 1, wq0 * W, (wq0 + nbq) * W - 1, c5_last_error());
  const c5_routing *rq = c5_router_cache_routing(c->rq);
  C5_CHECK(rq->routed == c->qrouted, C5_ERR_INTERNAL, "%s: q router routed %d, expected %d", who, rq->routed,
           c->qrouted);
  return C5_OK;
}

/* One window's kv routing into the public kv routing. Rank-local. */
static c5_status kv_collect(c5_routed_ar_attn *m, c5_routed_ar_attn_cache *c, long i)
{
  const char *who = "ConditionalRoutedAutoregressiveAttention";
  const long R = m->cfg.num_routed_kv, kkv = m->cfg.num_heavy_tokens_kv, nb = c->nb;
  c5_routing *kv = &c->kv;
  const c5_routing *ri = c5_router_cache_routing(c->rkv[i]);
  const c5k_ops *ops = c5_params_backend(m->p)->ops;
  c5k_ctx kc = { 0 };
  C5_CHECK(ri->routed == kv->routed && (!ri->routed || ri->k == kkv), C5_ERR_INTERNAL,
           "%s: kv router of window %ld: routed %d, k %ld (expected %d, %ld)", who, i + 1, ri->routed, ri->k,
           kv->routed, kkv);
  for (long b = 0; b < c->batch; b++)
    for (long q = 0; q < R; q++) {
      long row = ((b * nb + i) * R + q), src = b * R + q;
      kv->start[row] = row * kv->k;
      kv->count[row] = kv->routed ? ri->count[src] : 0;
      if (!kv->routed) continue;
      C5_CHECK(ri->count[src] <= kkv && (c->size > 1 || ri->count[src] == kkv), C5_ERR_INTERNAL,
               "%s: kv router row %ld selected %ld of %ld", who, src, ri->count[src], kkv);
      /* the indices are bookkeeping lib/ reads (kv_pack); the scores move by the backend's op */
      memcpy(kv->idx + row * kkv, ri->idx + ri->start[src], (size_t)ri->count[src] * sizeof *kv->idx);
      C5_CALL(ops->copy2d(&kc, kv->score + row * kkv, 0, ri->score + ri->start[src], 0,
                          ri->count[src] * (long)sizeof *kv->score, 1));
    }
  return C5_OK;
}

/* After the kv exchange: the public q routing, the heavy queries and keys, the heavy attention and the
   scatter into out. Rank-local. */
static c5_status forward_tail(c5_routed_ar_attn *m, c5_routed_ar_attn_cache *c, c5_real *out)
{
  const c5_routed_ar_attn_config *cfg = &m->cfg;
  const long batch = c->batch, n = c->n, D = cfg->dim, R = cfg->num_routed_kv, W = m->W;
  const long nb = c->nb, rows = c->rows, nbl = c->nbl, nbq = c->nbq, m0 = c->m0, wq0 = c->wq0;
  const long off = c->offset, ng = c->ng, kq = cfg->num_heavy_tokens_q;
  const c5_params *p = m->p;
  const c5_routing *rq = c->rows_q > 0 ? c5_router_cache_routing(c->rq) : NULL;
  const c5k_ops *ops = c5_params_backend(p)->ops;
  c5k_ctx kc = { 0 };

  /* the public q routing (sharded): every (batch, window) row, this rank's windows filled */
  if (c->size > 1) {
    c5_routing *qp = &c->qpub;
    qp->rows = batch * nb;
    qp->routed = c->qrouted;
    qp->k = qp->routed ? kq : 0;
    long at = 0;
    for (long b = 0; b < batch; b++)
      for (long mm = 1; mm <= nb; mm++) {
        long row = b * nb + mm - 1, cnt = 0;
        qp->start[row] = at;
        if (qp->routed && mm >= m0 && mm < m0 + nbl) {
          long qr = b * nbq + mm - wq0;
          cnt = rq->count[qr];
          memcpy(qp->idx + at, rq->idx + rq->start[qr], (size_t)cnt * sizeof *qp->idx);
          C5_CALL(ops->copy2d(&kc, qp->score + at, 0, rq->score + rq->start[qr], 0, cnt * (long)sizeof *qp->score, 1));
        }
        qp->count[row] = cnt;
        at += cnt;
      }
  }
  if (rows == 0) return C5_OK;   /* no query window here */

  /* heavy queries: the routed positions of each window held here, or all W (score 1) */
  const long nq = c->nq = c->qrouted ? kq : W;
  static const c5_real one = 1;
  for (long r = 0; r < rows; r++) {
    long b = r / nbl, mm = m0 + r % nbl, qr = b * nbq + mm - wq0;
    for (long j = 0; j < nq; j++) {
      long e = r * nq + j;
      long t = c->qrouted ? rq->idx[rq->start[qr] + j] : j;
      c->qtok[e] = t;
      c->qpos[e] = mm * W + t;
      c->qsrc[e] = qr * W + t;
      c->qsel[e] = c->qrouted ? rq->start[qr] + j : -1;
    }
  }
  C5_CALL(ops->gather_rows(&kc, rows * nq, D, c->qsrc, NULL, c->xblk, D, c->xq));
  if (c->qrouted) C5_CALL(ops->gather_rows(&kc, rows * nq, 1, c->qsel, NULL, rq->score, 1, c->qscore));
  else C5_CALL(ops->fill_rows(&kc, rows * nq, 1, &one, 0, c->qscore, 1));
  /* heavy keys per route (gathered: the entries of the row's source row; routed: the row itself,
     unrouted: the batch row's whole padded sequence), masked beyond the window the reference reads the
     mask of */
  const long nk = c->nk = c->kslot;
  for (long r = 0; r < rows; r++) {
    long b = r / nbl, mm = m0 + r % nbl, rg = b * nb + mm - 1;
    long src = cfg->kv_gather_batch_bug && c->kvrouted ? rg / R : rg;   /* see the config's comment */
    c->klim[r] = (src % nb + 1) * W;
  }
  C5_CALL(ops->mask_before(&kc, rows, R * nk, c->kpos, c->klim, c->kmask));
  C5_CALL(c5_attn_heavy_forward(&m->hb.attn, p, rows, nq, nk, c->xq, c->ctx, c->kmask, c->kscore,
                                cfg->multiply_queries_by_score ? c->qscore : NULL, cfg->rotary_emb ? c->qpos : NULL,
                                cfg->rotary_emb ? c->kpos : NULL, c->hc, c->hout));

  /* scatter: window m of row r lands on tokens m W .. m W + W - 1 (those < n): every token of windows 1..
     held here, local tokens t1 .. n-1. Routed: null_q_token (or 0) everywhere, the routed queries' output
     times their score at their positions. */
  for (long e = 0; e < rows * nq; e++) {
    long r = e / nq, b = r / nbl, t = (m0 + r % nbl) * W + c->qtok[e];
    c->qdst[e] = t < ng ? b * n + t - off : -1;   /* padding: sliced off */
  }
  c->sc = (c5_heavy_scatter){ .batch = batch, .n = n, .dim = D, .t1 = W - off > 0 ? W - off : 0,
                              .null_q = m->hb.null_q, .fill = c->qrouted && m->hb.null_q >= 0, .accumulate = 1,
                              .nq = rows * nq, .dst = c->qdst };
  C5_CALL(c5_heavy_scatter_forward(&c->sc, p, c->hout, c->qscore, out));
  return C5_OK;
}

/* Rank-local stretches alternate with collectives; each stretch is agreed before the next collective
   (docs/errors.md), so every rank returns the same status, and a bad input on one rank (x not finite)
   fails all of them with that rank's message. */
c5_status c5_routed_ar_attn_forward(c5_routed_ar_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                                    const c5_real *x, c5_routed_ar_attn_cache *c, c5_real *out)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_routed_ar_attn_forward: dist is NULL");
  c5_status st = forward_check(m, d, lay, batch, x, c, out);
  if (st == C5_OK) st = light_prepare(m, lay, x, c);
  C5_CALL(c5_dist_agree_args(d, st, 3, (c5_dist_arg[]){
      { "ConditionalRoutedAutoregressiveAttention: sequence length n", lay ? lay->n : 0 },
      { "ConditionalRoutedAutoregressiveAttention: batch", batch },
      { "ConditionalRoutedAutoregressiveAttention: layout unit", lay ? lay->unit : 0 } }));
  C5_CALL(c5_halo_exchange(&c->halo, d, 0));
  C5_AGREE(d, forward_middle(m, d, lay, x, c, out));
  if (!c->heavy) return C5_OK;

  /* kv router: for window m = i + 1, the padded sequence with windows < m unmasked (distributed: this
     rank's columns of x'). Collecting a window's routing is rank-local: its status waits for the kv
     exchange's agreement (the routers run on, every rank alike). */
  const c5_routed_ar_attn_config *cfg = &m->cfg;
  const long nb = c->nb, nlp = c->nlp, off = c->offset, W = m->W, kkv = cfg->num_heavy_tokens_kv;
  c5_layout lk = { .n = c->npad, .unit = W, .offset = off, .n_local = nlp };
  c5_routing *kv = &c->kv;
  kv->rows = batch * nb * cfg->num_routed_kv;
  kv->routed = c->kvrouted;
  kv->k = kv->routed ? kkv : 0;
  st = C5_OK;
  const c5k_ops *ops = c5_params_backend(m->p)->ops;
  c5k_ctx kc = { 0 };
  for (long i = 0; i < nb; i++) {
    /* this rank's tokens before window i + 1: the first lim of each batch row */
    long lim = (i + 1) * W - off;
    lim = lim < 0 ? 0 : lim > nlp ? nlp : lim;
    C5_CALL(ops->memset2d(&kc, c->kvmask, nlp, 1, lim, batch));
    C5_CALL(ops->memset2d(&kc, c->kvmask + lim, nlp, 0, nlp - lim, batch));
    uint64_t seed = cfg->random_seed ^ (0x632be59bd9b4e019ull * (uint64_t)(i + 1));
    C5_CALL(c5_router_forward(m->hb.kv_router, d, &lk, c5_params_value(m->p, m->hb.rt_kv), batch, c->xpad, c->kvmask,
                              kkv, cfg->random_route, seed, c->rkv[i]));
    if (st == C5_OK) st = kv_collect(m, c, i);
  }
  /* every routed kv entry to every rank */
  if (st == C5_OK) st = kv_pack(m, d, c);
  C5_CALL(c5_kv_exchange_gather(c->kvx, d, st, c->xpad, NULL, C5_KVX_SCORE | C5_KVX_POS, c->rows * cfg->num_routed_kv,
                                c->ksrc, c->ctx, c->kscore, NULL, c->kpos));
  C5_AGREE(d, forward_tail(m, c, out));
  return C5_OK;
}

/* A backward's checks and the light branch's own part. Rank-local. */
static c5_status backward_head(c5_routed_ar_attn *m, const c5_dist *d, c5_routed_ar_attn_cache *c, const c5_real *x,
                               const c5_real *dout, c5_real *dx)
{
  C5_CHECK(m && c && x && dout && dx, C5_ERR_ARG, "c5_routed_ar_attn_backward: NULL argument");
  C5_CHECK(c->size > 0 && c5_dist_size(d) == c->size, C5_ERR_ARG, "c5_routed_ar_attn_backward: no forward in this "
           "cache on this communicator");
  C5_CALL(light_backward_local(m, c, x, dout, dx));
  return C5_OK;
}

/* The heavy branch's backward before the kv gradients go back: null_q_token, the heavy attention, the
   queries back into their windows and the q router (on this rank alone when sharded). Rank-local when
   sharded (on one rank everything is). */
static c5_status backward_heavy(c5_routed_ar_attn *m, c5_routed_ar_attn_cache *c, const c5_dist *d,
                                const c5_real *dout)
{
  const c5_routed_ar_attn_config *cfg = &m->cfg;
  const long D = cfg->dim, W = m->W, batch = c->batch;
  const c5_params *p = m->p;
  const long nlp = c->nlp, rows = c->rows, nq = c->nq, es = (long)sizeof(c5_real);
  const c5_dist *dq = c->size > 1 ? c->self : d;
  const c5k_ops *ops = c5_params_backend(p)->ops;
  c5k_ctx kc = { 0 };

  if (rows > 0) {
    /* null_q_token: every token of windows 1.. (below n) not replaced by a routed query; through the query
       score: out = hout * s (padding queries: sliced off, no gradient) */
    C5_CALL(c5_heavy_scatter_backward(&c->sc, p, dout, c->hout, c->qscore, c->dh, c->dsq));
    C5_CALL(c5_attn_heavy_backward(&m->hb.attn, p, c->hc, c->dh, c->dxq, c->dctx, c->dks,
                                   cfg->multiply_queries_by_score ? c->dqs : NULL));
    if (cfg->multiply_queries_by_score) C5_CALL(ops->add2d(&kc, 1, rows * nq, c->dqs, 0, c->dsq, 0));
  }

  /* queries back into their windows (distinct rows of xblk), their dscore into the router's entry order,
     then the q router */
  if (c->rows_q > 0) {
    C5_CALL(c5k_zero(ops, &kc, c->dxblk, c->rows_q * W * D * es));
    C5_CALL(ops->scatter_rows(&kc, rows * nq, D, c->qsrc, c->dxq, NULL, NULL, 1, 1, c->dxblk));
    if (c->qrouted) {
      C5_CALL(c5k_zero(ops, &kc, c->dqr, c->rows_q * nq * es));
      C5_CALL(ops->scatter_rows(&kc, rows * nq, 1, c->qsel, c->dsq, NULL, NULL, 0, 1, c->dqr));
    }
    C5_CALL(c5_router_backward(m->hb.q_router, dq, c->rq, c5_params_value(p, m->hb.rt_q), c->xblk, c->dqr, c->dxblk,
                               c5_params_grad(p, m->hb.rt_q)));
  }
  C5_CALL(c5k_zero(ops, &kc, c->dxpad, batch * nlp * D * es));
  return C5_OK;
}

c5_status c5_routed_ar_attn_backward(c5_routed_ar_attn *m, const c5_dist *d, c5_routed_ar_attn_cache *c,
                                     const c5_real *x, const c5_real *dout, c5_real *dx)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_routed_ar_attn_backward: dist is NULL");
  C5_AGREE(d, backward_head(m, d, c, x, dout, dx));
  C5_CALL(c5_halo_return(&c->halo, d, c5_params_backend(m->p), dx));
  if (!c->heavy) return C5_OK;

  const c5_routed_ar_attn_config *cfg = &m->cfg;
  const long n = c->n, D = cfg->dim, R = cfg->num_routed_kv, W = m->W, batch = c->batch;
  const c5_params *p = m->p;
  const long nb = c->nb, nlp = c->nlp, rows = c->rows, nbl = c->nbl, nbq = c->nbq, m0 = c->m0, wq0 = c->wq0;
  const long off = c->offset;
  const c5_routing *kv = &c->kv;

  /* keys: this rank's rows' gradients in gathered (rank-major) order, summed over the ranks; each owner
     gets its entries (a token feeds many rows: one fixed order) */
  c5_status st = backward_heavy(m, c, d, dout);
  C5_CALL(c5_kv_exchange_return(c->kvx, d, st, rows * R, c->ksrc, c->dctx, c->kvrouted ? c->dks : NULL,
                                c->dxpad));
  /* the query windows' gradients into x': per batch row, the windows held here are consecutive in both */
  const c5k_ops *ops = c5_params_backend(p)->ops;
  c5k_ctx kc = { 0 };
  if (nbl > 0)
    C5_CALL(ops->add2d(&kc, batch, nbl * W * D, c->dxblk + (m0 - wq0) * W * D, nbq * W * D,
                       c->dxpad + (m0 * W - off) * D, nlp * D));
  /* kv routers, window by window, dscore in each router's own entry order */
  const c5_kv_exchange *kvx = c->kvx;
  if (kv->routed)
    for (long i = 0; i < nb; i++) {
      const c5_routing *ri = c5_router_cache_routing(c->rkv[i]);
      for (long b = 0; b < batch; b++)
        for (long q = 0; q < R; q++) {
          long s = (b * nb + i) * R + q, src = b * R + q;
          C5_CALL(ops->copy2d(&kc, c->dsc + ri->start[src], 0, kvx->downs + kvx->own_at[s], 0,
                              ri->count[src] * (long)sizeof *c->dsc, 1));
        }
      C5_CALL(c5_router_backward_acc(m->hb.kv_router, d, c->rkv[i], c5_params_value(p, m->hb.rt_kv), c->xpad,
                                     c->dsc, c->dxpad, c5_params_acc(p, m->hb.rt_kv)));
    }
  C5_CALL(c5_params_flush(p, &m->hb.rt_kv, 1));   /* the windows' parts, summed in double, added once */
  C5_CALL(ops->add2d(&kc, batch, n * D, c->dxpad, nlp * D, dx, n * D));
  return C5_OK;
}
