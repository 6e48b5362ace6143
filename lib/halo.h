/* halo.h - the light branch's halo (docs/design.md §3), shared by the routed
   and the autoregressive attention: LocalMHA on a shard needs one window of
   each neighbour's tokens (the routed attention looks one window each way;
   the autoregressive one, causal, only left), so a forward runs it on
   [left halo | shard | right halo] and keeps the shard's rows, and the
   backward returns the halo rows' input gradients to their owners, who add
   them. Every buffer is carved at cache create (arena.h) for the largest
   halo, one window each side. The moves are kernel ops; the exchange is a
   dist job (c5_dist_halo_exchange). Private to lib/. */
#ifndef C5_HALO_H
#define C5_HALO_H
#include "c5_internal.h"
#include "arena.h"
#include "kernels.h"
#include "backend.h"

typedef struct {
  long batch, n, dim, w;        /* local tokens; the window (the most a halo holds) */
  int two_sided;                /* 1: both neighbours (routed attention); 0: the left one only (causal) */
  int masked;                   /* room for a mask */
  long hl, hr, sl, sr;          /* this forward: rows received from the left, right; sent left, right */
  c5_real *xe, *ye, *dxe;       /* [batch, ne, dim], ne = hl + n + hr: the extended input, its output (forward)
                                   or output gradient (backward), its input gradient */
  uint8_t *me;                  /* [batch, ne] the extended mask */
  c5_real *sendl, *sendr, *recvl, *recvr;      /* [batch, w, dim]: my edge rows out, the neighbours' in */
  uint8_t *msendl, *msendr, *mrecvl, *mrecvr;  /* [batch, w] */
} c5_halo;

/* The halo of batch x n tokens of dim features, window w; masked: with a mask. Sets the shape only. */
void c5_halo_init(c5_halo *h, long batch, long n, long dim, long w, int two_sided, int masked);
/* Places the buffers (both arena passes; sizes: at most w rows from each neighbour, so ne <= n + 2w, or
   n + w with the left one only). */
void c5_halo_carve(c5_halo *h, c5_arena *a);
/* Extended rows per batch row this forward. */
static inline long c5_halo_ne(const c5_halo *h) { return h->hl + h->n + h->hr; }

/* This forward's lengths from the layout (rank and P of the communicator it runs on) and this rank's edge
   rows (and mask) into the send buffers. Rank-local. */
c5_status c5_halo_prepare(c5_halo *h, const c5_backend *be, const c5_layout *lay, int rank, int P, const c5_real *x,
                          const uint8_t *mask);
/* The exchange (collective on d; mask: the masks too). */
c5_status c5_halo_exchange(c5_halo *h, const c5_dist *d, int mask);
/* xe (and me) = [left halo | x | right halo]. Rank-local. */
c5_status c5_halo_extend(c5_halo *h, const c5_backend *be, const c5_real *x, const uint8_t *mask);
/* out [batch, n, dim] = the shard's rows of ye. Rank-local. */
c5_status c5_halo_crop(const c5_halo *h, const c5_backend *be, c5_real *out);
/* The same from ext [batch, ne, dim], laid out as ye (the last forward's extents). */
c5_status c5_halo_crop_from(const c5_halo *h, const c5_backend *be, const c5_real *ext, c5_real *out);
/* Backward: ye = [0 | dout | 0] (the halo rows' outputs belong to the neighbours: no gradient here). */
c5_status c5_halo_pad(c5_halo *h, const c5_backend *be, const c5_real *dout);
/* Backward, after LocalMHA's backward into dxe: dx = its shard rows; the halo rows' gradients staged for
   their owners. Rank-local. */
c5_status c5_halo_split(c5_halo *h, const c5_backend *be, c5_real *dx);
/* The halo gradients back to their owners, who add them to their edge rows of dx (collective on d). */
c5_status c5_halo_return(c5_halo *h, const c5_dist *d, const c5_backend *be, c5_real *dx);
#endif
