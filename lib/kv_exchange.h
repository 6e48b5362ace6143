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
   into dx. The collectives count under C5_PHASE_HEAVY; the moves are kernel
   ops (gather_rows, gather2d, scatter_rows) through index maps built here.
   Private to lib/. */
#ifndef C5_KV_EXCHANGE_H
#define C5_KV_EXCHANGE_H
#include "c5_internal.h"
#include "kernels.h"
#include "backend.h"

/* What the forward gathers besides the token rows (a collective each). */
enum { C5_KVX_SCORE = 1, C5_KVX_MASK = 2, C5_KVX_POS = 4 };

typedef struct {
  const char *who;                     /* the module, for messages */
  const c5_backend *be;                /* the module's backend: its tensors live there, every move is one of its ops */
  const c5k_ops *ops;                  /* be->ops */
  long dim;
  long S, kslot;                       /* source rows; entries of each over all ranks */
  long nown, tot;                      /* this rank's entries; all ranks' (S kslot) */
  int P, rank;                         /* of the last size call */
  int flags;                           /* of the last gather */
  long cap_o, cap_t, cap_s, cap_k;
  int cap_p;
  long row;                            /* packing: the source row being filled */
  long ld, offset;                     /* packing: the source's tokens per batch row; global position of token 0 */
  /* this rank's entries, source rows in order */
  long *own_row;                       /* [nown] row of the source [batch, ld] each is read from (batch ld + token) */
  long *own_at, *own_cnt;              /* [S] first entry and count of each source row */
  c5_real *sendx, *sends;              /* [nown (, dim)] */
  uint8_t *sendm;
  long *sendp;
  c5_real *downx, *downs;              /* [nown (, dim)] backward: the owners' summed gradients */
  /* every rank's entries, rank-major */
  long *cnt_all;                       /* [P, S] */
  int *rcnt, *rdsp, *rcntx, *rdspx;    /* [P] entries and displacements, in entries and in reals */
  long *inv;                           /* [tot] (source row, slot) -> gathered entry */
  long *perm;                          /* [nrows kslot] (kv row, slot) -> gathered entry (on the backend) */
  long *perm_h;                        /* the same, built on the host (uploaded to perm on a device) */
  c5_real *one;                        /* [1] the constant 1 on the backend (unrouted scores) */
  long *fill;                          /* [S] scratch: slots filled per source row */
  c5_real *recvx, *recvs, *dsendx, *dsends;   /* [tot (, dim)] */
  uint8_t *recvm;
  long *recvp;
} c5_kv_exchange;

/* An empty exchange of dim-wide token rows on be (the module's backend: the entries' buffers live there
   and move by its ops; counts and index maps stay on the host); who names the module in messages (kept,
   not copied). On a device backend only one rank is supported: the exchange is then local copies. */
c5_status c5_kv_exchange_create(const char *who, long dim, const c5_backend *be, c5_kv_exchange **out);
/* NULL-safe; sets *x = NULL. */
c5_status c5_kv_exchange_destroy(c5_kv_exchange **x);
/* Capacity at cache create, for the worst case of every later exchange: S source rows of kslot entries,
   own_cap of them on this rank, nrows kv rows read from them, P ranks at most. Not collective. */
c5_status c5_kv_exchange_reserve(c5_kv_exchange *x, long S, long kslot, long own_cap, long nrows, int P);
/* For the next exchange on d: S source rows of kslot entries each over all ranks, at most own_cap of them
   on this rank, nrows kv rows. Grows the buffers when they hold less (not collective). */
c5_status c5_kv_exchange_size(c5_kv_exchange *x, const c5_dist *d, long S, long kslot, long own_cap, long nrows);

/* Packing this rank's entries from a source of ld tokens per batch row whose token 0 stands at global
   position offset: begin, then for each source row in order its entries (add) and end_row. */
void c5_kv_exchange_begin(c5_kv_exchange *x, long ld, long offset);
/* One entry: token tok of batch row bat of the source, with its kv score. Writes the backend's buffers
   from the host: a host backend only (the P > 1 paths; c5_kv_exchange_pack_rows is the device's). */
static inline void c5_kv_exchange_add(c5_kv_exchange *x, long tok, long bat, c5_real score)
{
  long o = x->nown++;
  if (o >= x->cap_o) return;   /* counted: gather reports the overflow */
  x->own_row[o] = bat * x->ld + tok;
  x->sendp[o] = x->offset + tok;
  x->sends[o] = score;
}
void c5_kv_exchange_end_row(c5_kv_exchange *x);
/* Packing without reading indices on the host, for source rows that all hold cnt entries (one rank):
   begin's ld and offset, then source row r < rows holds tokens tok = idx[r ldi + j] - offset (idx NULL:
   tok = j) of batch row r / div, with kv scores score[r ldi + j] (NULL: 1), j < cnt. idx and score are
   backend arrays; the entries are formed by ops (index_rows, copy2d). Replaces add/end_row. */
c5_status c5_kv_exchange_pack_rows(c5_kv_exchange *x, long rows, long cnt, const long *idx, long ldi, long div,
                                   const c5_real *score);

/* Forward, collective on d. pending: the caller's status of its own rank-local work since its last
   collective (sizing, packing), agreed here with this call's checks (docs/errors.md); when it is an
   error the call only takes part in the agreement and returns it. src: the source [batch, ld, dim] the
   entries are read from, mask [batch, ld] (NULL: 1) (ld, and the positions C5_KVX_POS gathers: begin's).
   flags: which of score, mask and position to gather. nrows kv rows; ksrc [nrows]: the source row of
   each (NULL: kv row r = source row r, nrows = S). Out, in (kv row, slot) order, each [nrows, kslot (, dim)]:
   ctx; kscore (the gathered score, or 1 without C5_KVX_SCORE), kmask (the gathered mask, or 1), kpos
   (C5_KVX_POS) - each may be NULL but ctx. */
c5_status c5_kv_exchange_gather(c5_kv_exchange *x, const c5_dist *d, c5_status pending, const c5_real *src,
                                const uint8_t *mask, int flags, long nrows, const long *ksrc,
                                c5_real *ctx, c5_real *kscore, uint8_t *kmask, long *kpos);
/* Backward, collective on d (pending as for the gather), with the gather's nrows and ksrc. dctx
   [nrows, kslot, dim], dkscore [nrows, kslot] (NULL: no score gradient, downs untouched). dx [batch, ld, dim] (begin's ld) += this
   rank's entries' token gradients; x->downs [nown] then holds their score gradients, in packing order. */
c5_status c5_kv_exchange_return(c5_kv_exchange *x, const c5_dist *d, c5_status pending, long nrows, const long *ksrc,
                                const c5_real *dctx, const c5_real *dkscore, c5_real *dx);
#endif
