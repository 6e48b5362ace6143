/* kv_exchange.h - the sharded key/value exchange of the routed attentions
   (routed_attn.c, routed_cross_attn.c, routed_ar_attn.c; docs/design.md §3).
   Each rank holds some entries of every kv source row (its routed tokens,
   or its whole part of the sequence); the heavy branch of every rank needs
   all of them.
   Forward (c5_kv_exchange_gather): pack this rank's entries (token row,
   score, mask, position), all-gather the per-rank per-row counts, all-gather
   the entries rank-major, and permute them into (kv row, slot) order, where
   kv row r reads source row src[r] (several kv rows may share one).
   Backward (c5_kv_exchange_return): permute dK/dV and dkscore back to
   rank-major order (summing over the kv rows that share an entry),
   reduce-scatter them to the owners and add each owner's token gradients
   into dx. The collectives count under C5_PHASE_HEAVY.
   Private to lib/. */
#ifndef C5_KV_EXCHANGE_H
#define C5_KV_EXCHANGE_H
#include "c5_internal.h"

/* What the forward gathers besides the token rows (a collective each). */
enum { C5_KVX_SCORE = 1, C5_KVX_MASK = 2, C5_KVX_POS = 4 };

typedef struct {
  const char *who;                     /* the module, for messages */
  long dim;
  long S, kslot;                       /* source rows; entries of each over all ranks */
  long nown, tot;                      /* this rank's entries; all ranks' (S kslot) */
  int P, rank;                         /* of the last size call */
  int flags;                           /* of the last gather */
  long cap_o, cap_t, cap_s;
  int cap_p;
  long row;                            /* packing: the source row being filled */
  /* this rank's entries, source rows in order */
  long *own_tok, *own_bat;             /* [nown] local token and batch row of the source they are read from */
  long *own_at, *own_cnt;              /* [S] first entry and count of each source row */
  c5_real *sendx, *sends;              /* [nown (, dim)] */
  uint8_t *sendm;
  long *sendp;
  c5_real *downx, *downs;              /* [nown (, dim)] backward: the owners' summed gradients */
  /* every rank's entries, rank-major */
  long *cnt_all;                       /* [P, S] */
  int *rcnt, *rdsp, *rcntx, *rdspx;    /* [P] entries and displacements, in entries and in reals */
  long *inv;                           /* [tot] (source row, slot) -> gathered entry */
  long *fill;                          /* [S] scratch: slots filled per source row */
  c5_real *recvx, *recvs, *dsendx, *dsends;   /* [tot (, dim)] */
  uint8_t *recvm;
  long *recvp;
} c5_kv_exchange;

/* An empty exchange of dim-wide token rows; who names the module in messages (kept, not copied). */
c5_status c5_kv_exchange_create(const char *who, long dim, c5_kv_exchange **out);
/* NULL-safe; sets *x = NULL. */
c5_status c5_kv_exchange_destroy(c5_kv_exchange **x);
/* Capacity at cache create, for the worst case of every later exchange: S source rows of kslot entries,
   own_cap of them on this rank, P ranks at most. Not collective. */
c5_status c5_kv_exchange_reserve(c5_kv_exchange *x, long S, long kslot, long own_cap, int P);
/* For the next exchange on d: S source rows of kslot entries each over all ranks, at most own_cap of them
   on this rank. Grows the buffers when they hold less (not collective). */
c5_status c5_kv_exchange_size(c5_kv_exchange *x, const c5_dist *d, long S, long kslot, long own_cap);

/* Packing this rank's entries: begin, then for each source row in order its entries (add) and end_row. */
void c5_kv_exchange_begin(c5_kv_exchange *x);
/* One entry: token tok of batch row bat of the source, with its kv score. */
static inline void c5_kv_exchange_add(c5_kv_exchange *x, long tok, long bat, c5_real score)
{
  long o = x->nown++;
  if (o >= x->cap_o) return;   /* counted: gather reports the overflow */
  x->own_tok[o] = tok;
  x->own_bat[o] = bat;
  x->sends[o] = score;
}
void c5_kv_exchange_end_row(c5_kv_exchange *x);

/* Forward, collective on d. pending: the caller's status of its own rank-local work since its last
   collective (sizing, packing), agreed here with this call's checks (docs/errors.md); when it is an
   error the call only takes part in the agreement and returns it. src: the source [batch, ld, dim] the entries are read from, mask [batch, ld]
   (NULL: 1), offset: the global position of local token 0 (C5_KVX_POS: position = offset + tok).
   flags: which of score, mask and position to gather. nrows kv rows; ksrc [nrows]: the source row of
   each (NULL: kv row r = source row r, nrows = S). Out, in (kv row, slot) order, each [nrows, kslot (, dim)]:
   ctx; kscore (the gathered score, or 1 without C5_KVX_SCORE), kmask (the gathered mask, or 1), kpos
   (C5_KVX_POS) - each may be NULL but ctx. */
c5_status c5_kv_exchange_gather(c5_kv_exchange *x, const c5_dist *d, c5_status pending, const c5_real *src, long ld,
                                const uint8_t *mask, long offset, int flags, long nrows, const long *ksrc,
                                c5_real *ctx, c5_real *kscore, uint8_t *kmask, long *kpos);
/* Backward, collective on d (pending as for the gather), with the gather's nrows and ksrc. dctx [nrows, kslot, dim], dkscore
   [nrows, kslot] (NULL: no score gradient, downs untouched). dx [batch, ld, dim] += this rank's entries'
   token gradients; x->downs [nown] then holds their score gradients, in packing order. */
c5_status c5_kv_exchange_return(c5_kv_exchange *x, const c5_dist *d, c5_status pending, long nrows, const long *ksrc,
                                const c5_real *dctx, const c5_real *dkscore, long ld, c5_real *dx);
#endif
