/* c5_internal.h - private to libcolt5: error macros, allocation, the dist
   internals other lib/ files may use. Not installed. Free of MPI: the
   MPI-typed internals are dist_mpi.h's, for the files that speak MPI. */
#ifndef C5_INTERNAL_H
#define C5_INTERNAL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "colt5.h"

/* Start a new error: records the message and the first trace frame. */
c5_status c5_err_raise(c5_status st, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Add one "at file:line" frame to the current error and pass its code on. */
c5_status c5_err_trace(c5_status st, const char *file, int line);
/* The error record's capacity (message and trace); c5_dist_agree sends it whole. */
#define C5_ERR_TEXT_LEN 4096
/* Replace the record by text that every rank of a communicator now holds
   (c5_dist_agree), and whether the current record is such a one. */
c5_status c5_err_set_agreed(c5_status st, const char *text);
int c5_err_agreed(void);
/* Append text to the current record (a line of the trace that is not a frame). */
void c5_err_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define C5_ERR(st, ...) c5_err_raise((st), __FILE__, __LINE__, __VA_ARGS__)

/* Check a condition; on failure raise st with the message and return it. */
#define C5_CHECK(cond, st, ...) do { if (!(cond)) return C5_ERR((st), __VA_ARGS__); } while (0)

/* Call a c5 function; on failure add this frame and return its code. */
#define C5_CALL(call) do { c5_status s_ = (call); \
    if (s_ != C5_OK) return c5_err_trace(s_, __FILE__, __LINE__); } while (0)

/* Call a c5 function; on failure store the code in st and jump to label. */
#define C5_CALL_GOTO(call, st, label) do { c5_status s_ = (call); \
    if (s_ != C5_OK) { (st) = c5_err_trace(s_, __FILE__, __LINE__); goto label; } } while (0)
#define C5_CHECK_GOTO(cond, st, label, code, ...) do { if (!(cond)) { \
    (st) = C5_ERR((code), __VA_ARGS__); goto label; } } while (0)

/* Cleanup that keeps the first error. */
#define C5_KEEP_FIRST(st, call) do { c5_status s_ = (call); if ((st) == C5_OK) (st) = s_; } while (0)

/* Close a stretch of rank-local work before the next collective (docs/errors.md):
   every rank of d goes on, or every rank returns the first failing rank's error. */
#define C5_AGREE(d, st) C5_CALL(c5_dist_agree((d), (st)))

/* Whether the bytes [a, a + bytes) and [b, b + bytes) do not overlap */
static inline int c5_apart(const void *a, const void *b, size_t bytes)
{
  return (const char *)a + bytes <= (const char *)b || (const char *)b + bytes <= (const char *)a;
}


/* Zeroed allocation of n elements of *p's type; names what failed. */
#define C5_CALLOC(p, n) do { size_t n_ = (size_t)(n); (p) = calloc(n_ ? n_ : 1, sizeof *(p)); \
    C5_CHECK((p) != NULL, C5_ERR_MEM, "out of memory allocating %zu x %zu bytes for %s", \
             n_, sizeof *(p), #p); } while (0)
/* Zeroed allocation of n (+1) elements that clears flag ok on failure: for a
   run of allocations checked once (one message for the whole set). */
#define C5_NEW(p, n, ok) do { (p) = calloc((size_t)(n) + 1, sizeof *(p)); (ok) = (ok) && (p); } while (0)
#define C5_FREE(p) do { free(p); (p) = NULL; } while (0)

/* "prefix.name", or "name" for an empty prefix: every state_dict name (params.c).
   Returns the full length (>= len: truncated), as snprintf. */
int c5_name_join(char *buf, size_t len, const char *prefix, const char *name);

/* Parameter gradients (params.c). A module's backward adds every part of a
   parameter's gradient to its double accumulator (zero between backwards),
   then flushes: gradient += (c5_real)accumulator, once, and the accumulator
   is zeroed. So a gradient accumulated over k backwards is the sum of k
   values each rounded once, whichever BLAS kernel formed the parts.
   scratch: working-precision room for the largest parameter (gemm_acc's product). */
double *c5_params_acc(const c5_params *p, long i);
c5_real *c5_params_scratch(const c5_params *p);
/* Flush the accumulators of parameters idx[0..n) (negative entries: absent). */
c5_status c5_params_flush(const c5_params *p, const long *idx, int n);
/* c5_params_add then c5_params_set_init: how every module registers a parameter, so none lacks its rule. */
c5_status c5_params_add_init(c5_params *p, const char *prefix, const char *name, int ndim, const long *dims,
                             c5_init_rule rule, long fan_in, long *index);

/* c5_router_backward in two parts (the same bits): begin forms the routing token's gradient (into
   drouting_token) and what dx will take, on the router's lane (lib/backend.h), reading dscore and x only;
   end adds the router's part of dx on the backend's own stream. Between them the caller may queue work of its
   own that writes dx but not x (ConditionalRoutedFeedForward: its light and heavy FF's backward, which the
   router's part of dx follows as before; where dx overlaps x, begin has the stream wait for the lane's reads
   of x first). end follows every begin that returned C5_OK. */
c5_status c5_router_backward_begin(const c5_router *r, const c5_dist *d, c5_router_cache *cache,
                                   const c5_real *routing_token, const c5_real *x, const c5_real *dscore,
                                   const c5_real *dx, c5_real *drouting_token);
c5_status c5_router_backward_end(const c5_router *r, c5_router_cache *cache, const c5_real *routing_token,
                                 const c5_real *x, c5_real *dx, c5_real *drouting_token);
/* c5_router_backward that adds this call's routing-token gradient to a double
   accumulator (a module's c5_params_acc, flushed by the module), so that
   several router calls on one parameter (the autoregressive attention's
   per-window kv routers) sum in double. */
c5_status c5_router_backward_acc(const c5_router *r, const c5_dist *d, c5_router_cache *cache,
                                 const c5_real *routing_token, const c5_real *x,
                                 const c5_real *dscore, c5_real *dx, double *dacc);

/* Module caches made inside another's, sharing its transient workspace (ws.h): ws is the maker's, reserved
   at its current depth, fitted by the workspace's owner. ws NULL: the cache makes, fits and owns its own
   (what the public c5_*_cache_create do). */
struct c5_ws;
c5_status c5_block_cache_create_ws(const c5_block *b, long batch, long n_local, struct c5_ws *ws,
                                   c5_block_cache **out);
c5_status c5_routed_attn_cache_create_ws(const c5_routed_attn *m, long batch, long n_local, struct c5_ws *ws,
                                         c5_routed_attn_cache **out);
c5_status c5_routed_ff_cache_create_ws(const c5_routed_ff *m, long batch, long n_local, struct c5_ws *ws,
                                       c5_routed_ff_cache **out);
/* The same, with the cache's own buffers (not its router's) a region of ws at its current depth instead of an
   arena: its maker lends that region to the frames of the modules that run while the cache holds nothing (a
   block with its own workspace: its attention, whose forward runs before the feed-forward's forward fills the
   cache and whose backward after the feed-forward's backward spends it). The forward holds the region (the
   workspace's top above it) until the backward releases it; c5_routed_ff_cache_release gives it back early
   (a forward that starts over). Carved into the workspace's memory by c5_routed_ff_cache_place, once it is
   fitted, and again by the forward when that memory moved (a refit). */
c5_status c5_routed_ff_cache_create_held(const c5_routed_ff *m, long batch, long n_local, struct c5_ws *ws,
                                         c5_routed_ff_cache **out);
void c5_routed_ff_cache_place(const c5_routed_ff *m, c5_routed_ff_cache *c);
void c5_routed_ff_cache_release(c5_routed_ff_cache *c);

/* The modules with their residual (residual 1: out = x + module(x), and in the backward dx = dout + dL/dx), a
   block's two adds done by the modules' own ops instead of passes of their own: the forward adds x in the last
   product of the light branch (LocalMHA's to_out, the light FeedForward's second Linear) and the backward dout in
   its last op (its norm's backward), the heavy scatters and the routers' gradients adding after (the attention
   without the light branch starts its output from a copy of x, its dx from one of dout). The sums are the
   module's and the residual's in another order than an add after: equal to rounding. residual 0: the public
   functions. out (dx) a buffer apart from x and dout. */
c5_status c5_routed_attn_forward_res(c5_routed_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                                     const c5_real *x, const uint8_t *mask, c5_routed_attn_cache *c, int residual,
                                     c5_real *out);
c5_status c5_routed_attn_backward_res(c5_routed_attn *m, const c5_dist *d, c5_routed_attn_cache *c, const c5_real *x,
                                      const c5_real *dout, int residual, c5_real *dx);
c5_status c5_routed_ff_forward_res(c5_routed_ff *m, const c5_dist *d, const c5_layout *lay, long batch,
                                   const c5_real *x, const uint8_t *mask, c5_routed_ff_cache *c, int residual,
                                   c5_real *out);
c5_status c5_routed_ff_backward_res(c5_routed_ff *m, const c5_dist *d, c5_routed_ff_cache *c, const c5_real *x,
                                    const c5_real *dout, int residual, c5_real *dx);

/* Least common multiple of two layout units (layout.c): a layout whose unit
   is a multiple of both keeps the windows of either whole on each rank.
   C5_ERR_ARG, naming who, when either is <= 0 or the lcm overflows. */
c5_status c5_unit_lcm(const char *who, long a, long b, long *out);

/* dist internals: collectives used inside the library, in the library's own types (the communicator
   itself: dist_mpi.h). Every MPI call lives in dist.c. */
c5_status c5_dist_allreduce_sum_double(const c5_dist *d, double *buf, long count);
c5_status c5_dist_allreduce_sum_long(const c5_dist *d, long *buf, long count);
/* Per row {max, sum of exp(x - max)} merged across ranks (user MPI_Op):
   the underflow fallback of the shifted LSE. pairs: [count][2]. */
c5_status c5_dist_allreduce_maxsumexp(const c5_dist *d, double *pairs, long count);
c5_status c5_dist_exscan_sum_long(const c5_dist *d, long *buf, long count);
/* A communicator of this rank alone (a stretch of work that needs no other rank, e.g. the
   autoregressive attention's q router over the windows a rank holds). Not collective. */
c5_status c5_dist_create_self(c5_dist **out);
/* Ranks of MPI_COMM_WORLD: the most any communicator of this process holds, so a bound for buffers
   sized per rank before the communicator is known (cache create). */
int c5_dist_world_size(void);
/* Element types of the dist jobs: the working types (c5_dtype) and the index and mask types the
   routing moves. lib/ names these, never an MPI type (dist.c maps them). */
typedef enum { C5_ELEM_F64 = C5_DTYPE_F64, C5_ELEM_F32 = C5_DTYPE_F32, C5_ELEM_BF16 = C5_DTYPE_BF16,
               C5_ELEM_U8 = C5_NUM_DTYPE, C5_ELEM_LONG } c5_elem;
#define C5_ELEM_REAL ((c5_elem)C5_DTYPE_REAL)
/* The halo of a sequence cut into consecutive shards (docs/design.md §3): each rank sends its first
   tokens to the left neighbour (rank - 1) and its last to the right one (rank + 1) and receives theirs;
   the first and last ranks have no neighbour on their outer side. Counts are elements of type; a
   direction whose buffers are both NULL on every rank (the autoregressive attention sends nothing left)
   is not exchanged. Collective on d; counted under C5_PHASE_HALO. Forward: to_right -> the right
   neighbour's from_left, to_left -> the left neighbour's from_right. be: where the buffers live (NULL or a
   host backend: host memory; a device backend: its memory, staged through the host or moved by NCCL). */
typedef struct {
  const void *to_left, *to_right;
  void *from_left, *from_right;
  long n_to_left, n_to_right, n_from_left, n_from_right;
  const c5_backend *be;
} c5_halo_msg;
c5_status c5_dist_halo_exchange(const c5_dist *d, c5_elem type, const c5_halo_msg *m);
/* Its backward: the gradients of the received halos (from_left, from_right: read) go back to their
   owners, into the buffers the forward sent from (to_left, to_right: written). */
c5_status c5_dist_halo_return(const c5_dist *d, c5_elem type, const c5_halo_msg *m);
/* Variable-count all-gather (counts, displs per rank, in elements of type). be: where send and recv live,
   as for c5_halo_msg (a device's: every rank's part padded to the largest count, unpacked by its ops). */
c5_status c5_dist_allgatherv(const c5_dist *d, const c5_backend *be, const void *send, long scount, void *recv,
                             const int *counts, const int *displs, c5_elem type);
/* Sum send [sum of counts] over ranks; rank p receives its counts[p] block (counts in elements of type:
   F64, F32 or LONG, the types that are summed). be: as for c5_dist_allgatherv. */
c5_status c5_dist_reduce_scatter(const c5_dist *d, const c5_backend *be, const void *send, void *recv,
                                 const int *counts, c5_elem type);
/* Whole rows from their sharded columns: local [rows, n_local] (this rank's columns of the layout (n, unit),
   es bytes each) -> full [rows, n] on every rank, both on be. Collective on d (agreed: an error on one rank
   is every rank's). The router's coordinate descent over whole rows on a device (router.c). */
c5_status c5_dist_allgather_rows(const c5_dist *d, const c5_backend *be, long rows, long n, long unit, long es,
                                 const void *local, void *full);
/* Whether d moves be's buffers by NCCL (then it runs the device collectives at one rank too, and callers
   that skip a collective at one rank call it anyway: every NCCL call is issued). Collective on d the first
   time it is asked for a device backend (the choice of docs/design.md §4 is made and agreed then). */
c5_status c5_dist_uses_nccl(const c5_dist *d, const c5_backend *be, int *nccl);
/* c5_dist_agree and, in the same allreduce, global arguments that must be
   the same on every rank: when st is C5_OK everywhere but some value
   differs, every rank returns C5_ERR_ARG naming it, the smallest and the
   largest value and a rank holding each. */
typedef struct { const char *name; long value; } c5_dist_arg;
c5_status c5_dist_agree_args(const c5_dist *d, c5_status st, int nargs, const c5_dist_arg *args);

#endif
