/* colt5.h - public API of libcolt5: CoLT5 conditional-computation transformers
   (Ainslie et al. 2023) on long sequences sharded over MPI ranks.

   Conventions (see docs/design.md):
   - every call returns c5_status; on failure c5_last_error() holds the message
     and a file:line trace, newest frame last;
   - argument order: handle, inputs, outputs; a forward's cache is its last
     output and the matching backward's first input;
   - activation gradients are written (=), parameter gradients accumulate (+=),
     and a function that adds into an activation gradient says so;
   - tensors are row-major, shapes given as [dims] beside each pointer;
   - "Collective on dist" means every rank of the communicator calls it with
     the same global arguments, and it returns the same status on every rank
     (c5_dist_agree; docs/errors.md). */
#ifndef COLT5_H
#define COLT5_H

#include <stddef.h>
#include <stdint.h>
#include "colt5_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version ------------------------------------------------------------------- */
/* The version of the library that is linked ("MAJOR.MINOR.PATCH"); the headers'
   own are C5_VERSION_STRING, C5_VERSION_MAJOR/MINOR/PATCH and C5_VERSION
   (colt5_config.h). One line naming the version, the precision, the MPI, the
   BLAS and whether CUDA kernels are built: what every app's --version prints. */
const char *colt5_version(void);
const char *colt5_build_info(void);

/* ---- errors ---------------------------------------------------------------------- */
const char *c5_status_string(c5_status st);
/* The message of the last error raised on this thread, with its trace
   ("" when none). Valid until the next failing call on this thread. */
const char *c5_last_error(void);
void c5_error_clear(void);
/* Record an error of the application's own (a bad option, an unreadable
   input) as the library records its own, so that c5_dist_agree carries its
   message to every rank. Returns st. */
c5_status c5_error_raise(c5_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- backends ------------------------------------------------------------------- */
/* Where the arithmetic runs: a backend holds a device's kernel table (and,
   on a GPU, its stream and handles). Parameters are created on a backend
   (c5_params_create), and every module, router and function that computes
   takes its backend from them or as an argument; one program may hold
   several backends. */
typedef enum { C5_BACKEND_CPU, C5_BACKEND_CUDA, C5_NUM_BACKEND } c5_backend_kind;
typedef struct c5_backend c5_backend;
/* The process-wide CPU backend (OpenMP, CBLAS): always there, never destroyed. */
const c5_backend *c5_backend_cpu(void);
/* A backend of the given kind on device (0 for the CPU). C5_ERR_NOTIMPL for
   a kind this build has no kernels for. */
c5_status c5_backend_create(c5_backend_kind kind, int device, c5_backend **out);
c5_status c5_backend_destroy(c5_backend **be);   /* NULL-safe; sets *be = NULL */
c5_backend_kind c5_backend_get_kind(const c5_backend *be);
const char *c5_backend_name(const c5_backend *be);
/* The device's product name for a report ("NVIDIA H200"; "cpu" for the CPU), truncated to len - 1 bytes. */
c5_status c5_backend_device_name(const c5_backend *be, char *name, size_t len);
/* Devices of a kind this process can use: 1 for the CPU; for CUDA the GPUs
   the runtime sees (0 when it finds none, fails, or the build has no CUDA). */
int c5_backend_device_count(c5_backend_kind kind);
/* A backend's memory. On a CUDA backend every array argument of a
   computing call (c5_cd_forward's s, mask, y; c5_topk_select's v, count,
   idx; ...) is a device pointer from here or from cudaMalloc, and the
   backend's work is ordered on its own stream: c5_backend_memcpy (any
   direction) and c5_backend_sync return when that work is done. Host
   scalars and per-row parameters (c5_cd_forward's k) stay host memory. On
   the CPU these are host memory (malloc with a size header, which the
   memory statistics count: free it with c5_backend_free, never free) and
   memcpy. */
c5_status c5_backend_alloc(const c5_backend *be, size_t bytes, void **ptr);
c5_status c5_backend_free(const c5_backend *be, void *ptr);   /* NULL-safe */
/* A backend's memory in bytes, for benchmarks: on a GPU the device's memory in use
   by everything (cudaMemGetInfo) and the stream-ordered pool's current and high-watermark use; reset restarts
   the watermarks after reading them. On the CPU: the bytes that c5_backend_alloc/calloc hold now (process-wide,
   every CPU backend together) as dev_used, pool_used and pool_reserved, their high watermark as both _high;
   dev_total 0. Host buffers of plain malloc (row plans, kernel scratch) are not counted. */
typedef struct {
  size_t dev_total, dev_used;
  size_t pool_reserved, pool_used, pool_reserved_high, pool_used_high;
} c5_backend_mem;
c5_status c5_backend_mem_stats(const c5_backend *be, int reset, c5_backend_mem *out);
c5_status c5_backend_memcpy(const c5_backend *be, void *dst, const void *src, size_t bytes);
c5_status c5_backend_sync(const c5_backend *be);
/* How the GPU's f32-compute matrix products treat their f32 inputs: exactly (C5_MATMUL_FP32, the
   default), rounded to TF32 (10-bit mantissa) or to bf16 (7-bit) on the tensor cores, accumulating in
   f32 either way (TF32: cuBLASLt's CUBLAS_COMPUTE_32F_FAST_TF32; bf16: the inputs copied to bf16, then
   the bf16 product). Parameters and gradients stay f32; in bf16 mode the local attention's caches keep
   q, k, v and its head outputs in bf16 where its flash kernels run both ways (dim_head 64, windows a
   multiple of 64; docs/design.md), and the norms (LocalMHA's, the FeedForwards') and GELU write their
   outputs in bf16 (the FeedForward's cache keeps its GELU output so), since the products that read them
   round them to bf16 anyway; other activations stay f32. A cache keeps the type chosen when it was made: set the mode before making caches (a
   forward under another mode fails, naming the cache). The CPU has only C5_MATMUL_FP32. */
typedef enum { C5_MATMUL_FP32, C5_MATMUL_TF32, C5_MATMUL_BF16 } c5_matmul;
c5_status c5_backend_set_matmul(c5_backend *be, c5_matmul m);
const char *c5_matmul_name(c5_matmul m);   /* "fp32", "tf32", "bf16" */
/* c5_backend_set_matmul(be, on ? C5_MATMUL_TF32 : C5_MATMUL_FP32) */
c5_status c5_backend_set_tf32(c5_backend *be, int on);

/* ---- distribution -------------------------------------------------------------- */
/* A communicator over the ranks that share one sequence. The library calls
   every collective through it (lib/dist.c); the app owns MPI_Init/Finalize.
   P = 1 is a communicator of one: nothing else changes. */
typedef struct c5_dist c5_dist;

/* c5_dist_create and c5_dist_create_2d take an MPI communicator: colt5_mpi.h. */
/* Collective. NULL-safe; sets *d = NULL. */
c5_status c5_dist_destroy(c5_dist **d);
int c5_dist_rank(const c5_dist *d);
int c5_dist_size(const c5_dist *d);

/* c5_dist_agree - make a status that may differ between ranks the same on
   all of them, before the next collective (docs/errors.md). Collective on d.
   In:  st, this rank's status of its own work since the last collective.
   Returns C5_OK on every rank when st is C5_OK on every rank; otherwise the
   error of the lowest failing rank R, on every rank, and c5_last_error()
   reads "rank R: <R's message and trace>" on every rank (R numbered in
   MPI_COMM_WORLD, as mpirun numbers it). An error that was agreed already
   (every collective of the library returns an agreed status) travels on
   unchanged and wins over a new one. Costs one small allreduce, and a
   broadcast of the message when some rank failed; both counted in the
   traffic counters under the current phase. On one rank: returns st. */
c5_status c5_dist_agree(const c5_dist *d, c5_status st);
/* c5_dist_agree_long - a global argument (a sequence length, a batch size,
   an option of the run) must be the same on every rank of d. Collective.
   Returns C5_OK, or C5_ERR_ARG on every rank with a message naming what,
   the smallest and the largest value and a rank holding each. */
c5_status c5_dist_agree_long(const c5_dist *d, const char *what, long value);


/* Traffic counters (per rank): calls, bytes and seconds of each collective
   since the last reset, by the phase that issued it (modules set it).
   Printed by colt5-bench. */
typedef enum { C5_COLL_ALLREDUCE, C5_COLL_EXSCAN, C5_COLL_ALLGATHER, C5_COLL_SENDRECV,
               C5_COLL_REDUCE_SCATTER, C5_COLL_BCAST, C5_NUM_COLL } c5_coll;
typedef enum { C5_PHASE_OTHER, C5_PHASE_ROUTER, C5_PHASE_HALO, C5_PHASE_HEAVY, C5_PHASE_GRAD,
               C5_NUM_PHASE } c5_phase;
typedef struct {
  long calls[C5_NUM_PHASE][C5_NUM_COLL];
  long bytes[C5_NUM_PHASE][C5_NUM_COLL];
  double seconds[C5_NUM_PHASE][C5_NUM_COLL];
} c5_dist_stats;
void c5_dist_stats_get(const c5_dist *d, c5_dist_stats *out);
void c5_dist_stats_reset(c5_dist *d);
const char *c5_coll_name(c5_coll c);
const char *c5_phase_name(c5_phase p);
/* Set the phase later collectives are counted under; returns the previous one. */
c5_phase c5_dist_phase(const c5_dist *d, c5_phase p);

/* ---- sequence layout ------------------------------------------------------------- */
/* The shard of a sequence of n tokens held by this rank (docs/design.md §3): cut
   into W = ceil(n / unit) units, rank r holds floor(W/P) units and the first
   W mod P ranks one more; only the last rank may end in a partial unit.
   The unit comes from the module: c5_routed_ff_layout_unit,
   c5_routed_attn_layout_unit, c5_routed_ar_attn_layout_unit,
   c5_routed_cross_attn_layout_unit (sequence and context) and
   c5_block_layout_unit give the smallest unit whose shards keep every window
   the module's forward needs whole on one rank; any multiple of it works too.
   Each takes the module's config (so the layout can be made before the
   module) and returns c5_status: a config whose windows make no unit (a
   window <= 0, an lcm past LONG_MAX) is C5_ERR_ARG naming the option, where
   a plain number would reach c5_layout_compute as a unit whose error could
   not name it. Not collective; no MPI call. */
typedef struct {
  long n;        /* global sequence length */
  long unit;     /* tokens per unit */
  long offset;   /* global index of this rank's first token */
  long n_local;  /* tokens on this rank */
} c5_layout;

/* Not collective (every rank computes the same rule). P > W is C5_ERR_ARG on
   every rank. */
c5_status c5_layout_compute(const c5_dist *d, long n, long unit, c5_layout *out);
/* The layout of rank `rank` (for gathering or checking). */
c5_status c5_layout_of_rank(long n, long unit, int rank, int size, c5_layout *out);

/* ---- coordinate descent (soft top-k), docs/design.md §2 -------------------------------- */
typedef struct {
  int n_iters;       /* > 0, required */
  double eps;        /* > 0: final epsilon */
  double eps_init;   /* starting epsilon; the start is max(eps_init, eps), so 0 = "None" */
  double eps_decay;  /* in (0, 1] */
} c5_cd_config;
/* Matches the reference's coor_descent() defaults (n_iters has none: set it). */
#define C5_CD_CONFIG_DEFAULT { .n_iters = 0, .eps = 0.1, .eps_init = 0.0, .eps_decay = 1.0 }

/* What the backward needs: O(rows * n_iters) scalars, never O(n). */
typedef struct {
  long rows_cap;     /* capacity in rows */
  int n_iters;       /* T of the last forward */
  long rows;         /* rows of the last forward */
  double *a;         /* [rows][T] dual variable a_t */
  double *lse;       /* [rows][T] log sum_j exp(z_j - m_t): the LSE shifted by m_t = -a_{t-1}/eps_t */
  double *nabove;    /* [rows][T] global count of unmasked j with s_j + a_{t-1} > 0 */
  double *inv_eps;   /* [T + 1] 1/eps_t, t = 1..T, then 1/eps_f of the output */
  double *ga;        /* [rows][T] backward workspace: dL/da_t */
  double *work;      /* kernel workspace (chunk partial sums) */
  long work_cap;
  long *plan;        /* [3 * rows_cap + 1]: row offsets, lengths, chunk starts */
  double *rowbuf;    /* [5 * rows_cap]: per-row scratch of one call */
  void *mem;         /* the one allocation the arrays above live in (work apart: sized by the first call) */
  /* On a device backend the forward keeps a, lse, nabove there instead ([3][rows][T] doubles),
     made by the first forward on that backend and freed by c5_cd_cache_free. */
  double *dev_state;
  const c5_backend *dev_be;
  long dev_cap;      /* doubles */
} c5_cd_cache;

c5_status c5_cd_cache_alloc(long rows, int n_iters, c5_cd_cache *cache);
void c5_cd_cache_free(c5_cd_cache *cache);

/* c5_cd_forward - y = coor_descent(s, mask, k) row by row, for rows sharded
   over dist (each rank passes its n local columns of every row).
   Collective on dist.
   In:  s [rows, n]; mask [rows, n] (1 = keep) or NULL; k: k[r * k_stride]
        for row r (k_stride 0: one k for all rows), each k > 0.
   Out: y [rows, n] (masked entries 0; a fully masked row is all 0); cache.
   Errors: k <= 0, n_iters <= 0, eps <= 0, eps_decay outside (0,1], NaN or
   Inf in s. */
c5_status c5_cd_forward(const c5_backend *be, const c5_dist *d, const c5_cd_config *cfg, long rows, long n,
                        const c5_real *s, const uint8_t *mask, const double *k, long k_stride,
                        c5_real *y, c5_cd_cache *cache);

/* c5_cd_backward - ds = dL/ds given gy = dL/dy. Collective on dist (one
   sum-allreduce in all). In: cache, s, mask, y (the forward's), gy [rows, n].
   Out: ds [rows, n]. */
c5_status c5_cd_backward(const c5_backend *be, const c5_dist *d, c5_cd_cache *cache, long rows, long n,
                         const c5_real *s, const uint8_t *mask, const c5_real *y,
                         const c5_real *gy, c5_real *ds);

/* ---- the coordinate-descent router ------------------------------------------------ */
typedef struct {
  int num_routing_tokens;    /* r: routes, one routing token each */
  int straight_through;      /* selected scores read 1 (masked: 0) but carry the gradient */
  double fetch_k_ratio;      /* >= 1: effective_k = min(num_tokens * ratio, n) */
  int n_iters;
  double eps, eps_init, eps_decay;
  int cosine_sim_routing;    /* logits = scale * cos(x, routing_token) */
  double cosine_sim_scale;
  long route_block_size;     /* 0 = off; else whole blocks, k per block ceil(num_tokens / blocks) */
  int use_triton;            /* accepted and ignored */
  long triton_checkpoint_segments; /* accepted and ignored */
} c5_router_config;
/* The reference CoordinateDescentRouter's defaults. */
#define C5_ROUTER_CONFIG_DEFAULT { .num_routing_tokens = 1, .straight_through = 1, \
    .fetch_k_ratio = 9.0 / 8.0, .n_iters = 20, .eps = 0.03, .eps_init = 4.0, .eps_decay = 0.7, \
    .cosine_sim_routing = 0, .cosine_sim_scale = 8.0, .route_block_size = 0, .use_triton = 0, \
    .triton_checkpoint_segments = 0 }

typedef struct c5_router c5_router;

/* Checks the options (dim > 0, r > 0, ratio >= 1, ...). Not collective. */
c5_status c5_router_create(const c5_backend *be, const c5_router_config *cfg, int dim, c5_router **out);
c5_status c5_router_destroy(c5_router **r);   /* NULL-safe; sets *r = NULL */
const c5_router_config *c5_router_get_config(const c5_router *r);

/* What one forward routed. A "row" is one (batch, route) pair; rows are
   b-major: row = b * r + route. For every row exactly k tokens are selected
   globally (k = num_tokens, or blocks * ceil(num_tokens / blocks) with
   route_block_size); this rank holds count[row] of them. count and start
   are host memory; idx and score live on the router's backend (device
   memory on a GPU: read them with c5_backend_memcpy). */
typedef struct {
  int routed;        /* 0: n <= num_tokens, nothing routed, every score is 1 */
  long rows;         /* batch * num_routing_tokens */
  long k;            /* tokens selected per row, globally */
  long *count;       /* [rows] selected on this rank */
  long *start;       /* [rows] offset of the row's entries in idx/score */
  long *idx;         /* global token indices, ascending within a row */
  c5_real *score;    /* aligned with idx: the router's score (straight-through: 1, masked 0) */
} c5_routing;

/* ---- dist jobs for applications ---- */
/* Jobs for applications (colt5-golden, colt5-bench), so that they need no
   MPI call beyond MPI_Init/Finalize. All collective on d. */
typedef enum { C5_REDUCE_SUM, C5_REDUCE_MAX, C5_REDUCE_MIN } c5_reduce_op;
/* v[0..n) reduced over the ranks in place; every rank gets the result. */
c5_status c5_dist_reduce_long(const c5_dist *d, long *v, long n, c5_reduce_op op);
c5_status c5_dist_reduce_double(const c5_dist *d, double *v, long n, c5_reduce_op op);
c5_status c5_dist_barrier(const c5_dist *d);
/* A sequence-sharded tensor gathered whole on every rank: local [batch,
   n_local, width] of each rank (its shard by the layout rule for n and unit,
   c5_layout_compute) into full [batch, n, width]. */
c5_status c5_dist_allgather_seq(const c5_dist *d, long batch, long n, long unit, long width, const c5_real *local,
                                c5_real *full);
/* A routing's rows gathered on every rank: row r's entries of every rank, in
   rank order (so global indices ascending), into idx and score [rows, cap]
   (row r at r * cap); count[r] their number. cap >= every row's total. */
c5_status c5_dist_allgather_routing(const c5_dist *d, const c5_routing *rt, long rows, long cap, long *idx,
                                    c5_real *score, long *count);

typedef struct c5_router_cache c5_router_cache;
c5_status c5_router_cache_create(const c5_router *r, long batch, long n_local, c5_router_cache **out);
c5_status c5_router_cache_destroy(c5_router_cache **c);
/* The routing the last forward produced (owned by the cache). */
const c5_routing *c5_router_cache_routing(const c5_router_cache *c);

/* c5_router_forward - score tokens against the routing tokens, run
   coordinate descent over each global row, pick the top num_tokens.
   Collective on dist.
   In:  routing_token [r, dim]; x [batch, lay->n_local, dim]; mask
        [batch, n_local] or NULL; num_tokens > 0; random_route (negative
        control: scores replaced by N(0,1) draws from seed, not differentiable).
   Out: cache (holds the routing: c5_router_cache_routing). */
c5_status c5_router_forward(const c5_router *r, const c5_dist *d, const c5_layout *lay,
                            const c5_real *routing_token, long batch, const c5_real *x,
                            const uint8_t *mask, long num_tokens, int random_route, uint64_t seed,
                            c5_router_cache *cache);

/* c5_router_backward - gradients from dscore (aligned with the routing's
   idx/score entries on this rank). Collective on dist.
   Out: dx [batch, n_local, dim] += (adds: x feeds other branches too);
        drouting_token [r, dim] += (this rank's part; the caller sums ranks). */
c5_status c5_router_backward(const c5_router *r, const c5_dist *d, c5_router_cache *cache,
                             const c5_real *routing_token, const c5_real *x,
                             const c5_real *dscore, c5_real *dx, c5_real *drouting_token);

/* ---- distributed top-k ----------------------------------------------------------- */
/* c5_topk_select - for each row pick the k largest values among unmasked
   entries, ties to the lower global index, masked entries last by index:
   the rule of golden/README.md. Rows are sharded like the layout; each rank
   passes its local columns and gets its own selected entries.
   Collective on dist (radix select over allreduced histograms, MPI_Exscan
   for ties at the threshold).
   In:  v [rows, n] (any finite values), mask or NULL, offset = global index
        of column 0, k (<= global n).
   Out: count[rows], idx [rows, k] (row r's entries at r*k, global,
        ascending). */
c5_status c5_topk_select(const c5_backend *be, const c5_dist *d, long rows, long n, long offset, const c5_real *v,
                         const uint8_t *mask, long k, long *count, long *idx);

/* ---- the CPU BLAS ----------------------------------------------------------------- */
/* The kernel core OpenBLAS picked for this CPU ("Haswell", "SkylakeX", "Prescott", ...;
   OPENBLAS_CORETYPE overrides it). Results do not depend on it: every parameter
   gradient's parts are summed in double. */
const char *c5_blas_core(void);
/* A one-line warning naming OPENBLAS_CORETYPE when OpenBLAS runs a generic
   (pre-AVX2) core on a CPU with AVX2 or AVX-512 (an OpenBLAS too old to know
   the CPU: matrix products several times slower); NULL otherwise. */
const char *c5_blas_warning(void);

/* ---- parameters ----------------------------------------------------------------- */
/* One table of named parameters (PyTorch state_dict names and shapes) over
   two slabs, values and gradients, allocated once. Modules add their entries
   at create time; c5_params_alloc then carves the slabs. */
typedef struct c5_params c5_params;
#define C5_PARAM_MAXDIM 4
c5_status c5_params_create(const c5_backend *be, c5_params **out);   /* values and gradients live on be */
const c5_backend *c5_params_backend(const c5_params *p);
c5_status c5_params_destroy(c5_params **p);   /* NULL-safe */
/* Register name (prefix + "." + name when prefix is not empty); *index gets its slot. */
c5_status c5_params_add(c5_params *p, const char *prefix, const char *name, int ndim, const long *dims, long *index);
c5_status c5_params_alloc(c5_params *p);     /* zeroed values and gradients */
long c5_params_count(const c5_params *p);
long c5_params_total(const c5_params *p);    /* elements over all entries */
const char *c5_params_name(const c5_params *p, long i);
int c5_params_shape(const c5_params *p, long i, long dims[C5_PARAM_MAXDIM]);   /* returns ndim */
long c5_params_numel(const c5_params *p, long i);
c5_real *c5_params_value(const c5_params *p, long i);
c5_real *c5_params_grad(const c5_params *p, long i);
c5_status c5_params_find(const c5_params *p, const char *name, long *index);
void c5_params_zero_grad(c5_params *p);
/* Sum every gradient over the ranks of d (parameters are replicated; each
   rank holds its shard's share). Collective on d. */
c5_status c5_params_allreduce_grad(c5_params *p, const c5_dist *d);

/* ---- ConditionalRoutedFeedForward ----------------------------------------------------- */
typedef struct {
  int dim;
  long num_heavy_tokens;
  double light_ff_mult, heavy_ff_mult;   /* hidden = int(dim * mult), as Python's int() */
  c5_router_config router;               /* router_kwargs; router.straight_through = router_straight_through */
  int random_route;                      /* negative control: the router draws N(0,1) scores (c5_router_forward) */
  uint64_t random_seed;                  /* seed of those draws */
} c5_routed_ff_config;
#define C5_ROUTED_FF_CONFIG_DEFAULT { .dim = 0, .num_heavy_tokens = 0, .light_ff_mult = 0.5, \
    .heavy_ff_mult = 4.0, .router = C5_ROUTER_CONFIG_DEFAULT, .random_route = 0, .random_seed = 0 }

typedef struct c5_routed_ff c5_routed_ff;
typedef struct c5_routed_ff_cache c5_routed_ff_cache;
/* Adds light_ff.*, heavy_ff.*, router.routing_token under prefix to params. */
c5_status c5_routed_ff_create(const c5_routed_ff_config *cfg, c5_params *params, const char *prefix,
                              c5_routed_ff **out);
c5_status c5_routed_ff_destroy(c5_routed_ff **m);
/* The seed of the next forwards' random routes (random_route; cfg.random_seed until called). */
c5_status c5_routed_ff_set_random_seed(c5_routed_ff *m, uint64_t seed);
c5_status c5_routed_ff_cache_create(const c5_routed_ff *m, long batch, long n_local, c5_routed_ff_cache **out);
c5_status c5_routed_ff_cache_destroy(c5_routed_ff_cache **c);
const c5_routing *c5_routed_ff_routing(const c5_routed_ff_cache *c);
/* out = light_ff(x) + scatter(heavy_ff(routed x) * score). Collective on d.
   x, out: [batch, lay->n_local, dim]; mask [batch, n_local] or NULL. */
c5_status c5_routed_ff_forward(c5_routed_ff *m, const c5_dist *d, const c5_layout *lay, long batch,
                               const c5_real *x, const uint8_t *mask, c5_routed_ff_cache *cache, c5_real *out);
/* *unit = 1: both feed-forwards act token by token and the router's rows
   (route_block_size blocks included) run over any layout, so no option ties
   tokens to one rank. */
c5_status c5_routed_ff_layout_unit(const c5_routed_ff_config *cfg, long *unit);
/* dx = dL/dx (written); parameter gradients accumulate. Collective on d. */
c5_status c5_routed_ff_backward(c5_routed_ff *m, const c5_dist *d, c5_routed_ff_cache *cache, const c5_real *x,
                                const c5_real *dout, c5_real *dx);

/* ---- ConditionalRoutedAttention ------------------------------------------------------- */
typedef struct {
  int dim;
  long num_heavy_tokens_q, num_heavy_tokens_kv;
  int num_routed_kv;               /* routes of the kv router; heavy_heads % routes == 0 */
  int has_light_attn;
  int light_dim_head, light_heads;
  long light_window_size;          /* LocalMHA window = light_window_size / 2 */
  int heavy_dim_head, heavy_heads;
  c5_router_config router;         /* router_kwargs + router_straight_through (both routers) */
  int multiply_keys_by_score, multiply_queries_by_score;
  int use_null_q_tokens;
  int rotary_emb;                  /* rotary positions in the heavy branch (computed in double) */
  /* Rotary embeddings in the light branch: its LocalMHA built with use_rotary_pos_emb=True (the reference
     builds it with False, so light_attn has no positional information of its own). As local-attention
     computes them, the queries are rotated one window further than the keys of their own window (docs/model.md);
     angles in double. Needs an even light_dim_head. No new parameters. */
  int light_rotary_emb;
  /* The reference (f2a8da0) gathers the routed keys of batch row b from row b // num_routed_kv
     when num_routed_kv > 1 (batched_gather over x repeated '(b r)' indexes it with the batch
     range only). 1 reproduces that, to match its vectors; 0 (default) reads row b. */
  int kv_gather_batch_bug;
  /* Negative control, as the reference's random_route forward argument (ConditionalRoutedAutoregressiveAttention
     has it; this module's forward would take it the same way): both routers draw N(0,1) scores from random_seed
     (the kv router from a seed derived from it, so the two pick independently). */
  int random_route;
  uint64_t random_seed;
} c5_routed_attn_config;
#define C5_ROUTED_ATTN_CONFIG_DEFAULT { .dim = 0, .num_heavy_tokens_q = 0, .num_heavy_tokens_kv = 0, \
    .num_routed_kv = 1, .has_light_attn = 1, .light_dim_head = 64, .light_heads = 8, .light_window_size = 128, \
    .heavy_dim_head = 64, .heavy_heads = 8, .router = C5_ROUTER_CONFIG_DEFAULT, .multiply_keys_by_score = 0, \
    .multiply_queries_by_score = 0, .use_null_q_tokens = 1, .rotary_emb = 0, .light_rotary_emb = 0, \
    .kv_gather_batch_bug = 0, .random_route = 0, .random_seed = 0 }

typedef struct c5_routed_attn c5_routed_attn;
typedef struct c5_routed_attn_cache c5_routed_attn_cache;
/* Adds light_attn.*, null_q_token, q_router.*, kv_router.*, heavy_attn.* under prefix. */
c5_status c5_routed_attn_create(const c5_routed_attn_config *cfg, c5_params *params, const char *prefix,
                                c5_routed_attn **out);
c5_status c5_routed_attn_destroy(c5_routed_attn **m);
/* The seed of the next forwards' random routes (random_route; cfg.random_seed until called; the kv router's
   is derived from it as at create). */
c5_status c5_routed_attn_set_random_seed(c5_routed_attn *m, uint64_t seed);
c5_status c5_routed_attn_cache_create(const c5_routed_attn *m, long batch, long n_local, c5_routed_attn_cache **out);
c5_status c5_routed_attn_cache_destroy(c5_routed_attn_cache **c);
const c5_routing *c5_routed_attn_routing_q(const c5_routed_attn_cache *c);
const c5_routing *c5_routed_attn_routing_kv(const c5_routed_attn_cache *c);
/* *unit = the LocalMHA window, light_window_size / 2 (rounded down, as the
   reference's window_size = light_window_size // 2), when has_light_attn:
   its windows are counted from token 0 and the halo exchange sends one window
   each way, so each shard must start on a window boundary. Without the light
   branch 1 (light_window_size is then ignored): the heavy branch gathers its
   keys from every rank and places rotary positions globally, and the routers
   take any layout. C5_ERR_ARG: light_window_size < 2 with the light branch. */
c5_status c5_routed_attn_layout_unit(const c5_routed_attn_config *cfg, long *unit);
/* out = LocalMHA(x) + scatter(heavy attention of the routed queries over the routed keys). Collective on d.
   x, out [batch, n_local, dim]; mask [batch, n_local] or NULL. Sharded, lay->unit must be a multiple of
   c5_routed_attn_layout_unit. */
c5_status c5_routed_attn_forward(c5_routed_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                                 const c5_real *x, const uint8_t *mask, c5_routed_attn_cache *c, c5_real *out);
c5_status c5_routed_attn_backward(c5_routed_attn *m, const c5_dist *d, c5_routed_attn_cache *c, const c5_real *x,
                                  const c5_real *dout, c5_real *dx);

/* ---- ConditionalRoutedAutoregressiveAttention ------------------------------------------- */
/* Causal LocalMHA over every token (window light_window_size, look back one
   window, not exact) plus a blockwise heavy branch: the sequence is zero-padded
   to nw = ceil(n / W) windows of W = heavy_window_size tokens; for every window
   m = 1 .. nw-1 the q router picks num_heavy_tokens_q queries within the window
   (padding masked), the kv router picks num_heavy_tokens_kv keys per route from
   the whole padded sequence with only the windows before m unmasked (tril(-1));
   the heavy output times the q score replaces null_q_token (or 0) at the picked
   positions of window m. Window 0 gets no heavy output. Takes no mask. */
typedef struct {
  int dim;
  long num_heavy_tokens_q, num_heavy_tokens_kv;
  int num_routed_kv;               /* routes of the kv router; heavy_heads % routes == 0 */
  int light_dim_head, light_heads;
  long light_window_size;          /* LocalMHA window (causal, look_backward 1, look_forward 0) */
  long heavy_window_size;          /* W of the heavy blocks; 0 = light_window_size (the reference's None) */
  int heavy_dim_head, heavy_heads;
  c5_router_config router;         /* router_kwargs + router_straight_through (both routers) */
  int multiply_keys_by_score, multiply_queries_by_score;
  int use_null_q_tokens;
  int rotary_emb;                  /* rotary positions = positions in the padded sequence */
  int random_route;                /* negative control (forward's random_route): routers draw N(0,1) scores */
  uint64_t random_seed;            /* seed of those draws */
  /* As c5_routed_attn_config.kv_gather_batch_bug: with num_routed_kv > 1 the reference reads the routed
     keys (and their mask) of (batch, window) row i from row i // num_routed_kv. 1 reproduces that. */
  int kv_gather_batch_bug;
} c5_routed_ar_attn_config;
#define C5_ROUTED_AR_ATTN_CONFIG_DEFAULT { .dim = 0, .num_heavy_tokens_q = 0, .num_heavy_tokens_kv = 0, \
    .num_routed_kv = 1, .light_dim_head = 64, .light_heads = 8, .light_window_size = 128, \
    .heavy_window_size = 0, .heavy_dim_head = 64, .heavy_heads = 8, .router = C5_ROUTER_CONFIG_DEFAULT, \
    .multiply_keys_by_score = 0, .multiply_queries_by_score = 0, .use_null_q_tokens = 1, .rotary_emb = 0, \
    .random_route = 0, .random_seed = 0, .kv_gather_batch_bug = 0 }

typedef struct c5_routed_ar_attn c5_routed_ar_attn;
typedef struct c5_routed_ar_attn_cache c5_routed_ar_attn_cache;
/* Adds light_attn.*, null_q_token, q_router.*, kv_router.*, heavy_attn.* under prefix. Not collective. */
c5_status c5_routed_ar_attn_create(const c5_routed_ar_attn_config *cfg, c5_params *params, const char *prefix,
                                   c5_routed_ar_attn **out);
c5_status c5_routed_ar_attn_destroy(c5_routed_ar_attn **m);   /* NULL-safe; sets *m = NULL */
/* Sized for [batch, n_local] inputs. Memory: the kv router keeps O(batch * routes * n^2 / W) scores
   (one row of the padded sequence per window, as the reference's routing defines). */
c5_status c5_routed_ar_attn_cache_create(const c5_routed_ar_attn *m, long batch, long n_local,
                                         c5_routed_ar_attn_cache **out);
c5_status c5_routed_ar_attn_cache_destroy(c5_routed_ar_attn_cache **c);   /* NULL-safe */
/* The routings of the last forward (owned by the cache). Rows are (batch, window) pairs, b-major,
   windows 1 .. nw-1: q rows = batch * (nw-1), idx = positions within the window; kv rows =
   batch * (nw-1) * routes (route fastest), idx = positions in the padded sequence. routed = 0
   when W <= num_heavy_tokens_q (q) or nw W <= num_heavy_tokens_kv (kv). */
const c5_routing *c5_routed_ar_attn_routing_q(const c5_routed_ar_attn_cache *c);
const c5_routing *c5_routed_ar_attn_routing_kv(const c5_routed_ar_attn_cache *c);
/* *unit = lcm(light_window_size, heavy window W) (W = light_window_size when heavy_window_size is 0):
   the causal LocalMHA's windows (halo: the left neighbour's last light window) and each heavy window's
   q-router row (routed on the rank that holds the window) must lie whole on one rank. Rotary positions
   are global, the kv routers run over any layout. C5_ERR_ARG: light_window_size <= 0,
   heavy_window_size < 0, or an lcm past LONG_MAX. */
c5_status c5_routed_ar_attn_layout_unit(const c5_routed_ar_attn_config *cfg, long *unit);
/* out [batch, n_local, dim] = causal LocalMHA(x) + the blockwise heavy branch. Collective on d;
   sharded, the layout unit is a multiple of c5_routed_ar_attn_layout_unit (each rank holds
   whole windows; c5_layout_compute with that unit does it). */
c5_status c5_routed_ar_attn_forward(c5_routed_ar_attn *m, const c5_dist *d, const c5_layout *lay, long batch,
                                    const c5_real *x, c5_routed_ar_attn_cache *c, c5_real *out);
/* dx [batch, n_local, dim] written; parameter gradients accumulate. Collective on d. */
c5_status c5_routed_ar_attn_backward(c5_routed_ar_attn *m, const c5_dist *d, c5_routed_ar_attn_cache *c,
                                     const c5_real *x, const c5_real *dout, c5_real *dx);

/* ---- ConditionalRoutedTransformerBlock ------------------------------------------------ */
/* x1 = conditional_attn(x) + x; out = conditional_ff(x1) + x1. The block's
   options are those of its two modules (num_heavy_ff_tokens is ff.num_heavy_tokens;
   dim, router and the mask are shared). */
typedef struct {
  c5_routed_attn_config attn;
  c5_routed_ff_config ff;
} c5_block_config;

typedef struct c5_block c5_block;
typedef struct c5_block_cache c5_block_cache;
/* Adds conditional_attn.* and conditional_ff.* under prefix. */
c5_status c5_block_create(const c5_block_config *cfg, c5_params *params, const char *prefix, c5_block **out);
c5_status c5_block_destroy(c5_block **b);
/* The attention's and the feed-forward's random-route seeds for the next forwards (the set_random_seed above). */
c5_status c5_block_set_random_seed(c5_block *b, uint64_t attn_seed, uint64_t ff_seed);
c5_status c5_block_cache_create(const c5_block *b, long batch, long n_local, c5_block_cache **out);
c5_status c5_block_cache_destroy(c5_block_cache **c);
const c5_routed_attn_cache *c5_block_attn_cache(const c5_block_cache *c);
const c5_routed_ff_cache *c5_block_ff_cache(const c5_block_cache *c);
/* *unit = lcm of its attention's and its feed-forward's units, that is the attention's
   (c5_routed_attn_layout_unit: light_window_size / 2, or 1 without the light branch). */
c5_status c5_block_layout_unit(const c5_block_config *cfg, long *unit);
/* Collective on d. x, out [batch, n_local, dim]; mask [batch, n_local] or NULL. */
c5_status c5_block_forward(c5_block *b, const c5_dist *d, const c5_layout *lay, long batch, const c5_real *x,
                           const uint8_t *mask, c5_block_cache *c, c5_real *out);
/* dx written; parameter gradients accumulate. dx is a buffer of its own (not x, not dout: it holds the gradient
   at the attention's output while they are read). A backward spends the cache's forward (it writes over the
   activation between the two modules): run c5_block_forward again before another backward. */
c5_status c5_block_backward(c5_block *b, const c5_dist *d, c5_block_cache *c, const c5_real *x, const c5_real *dout,
                            c5_real *dx);

/* ---- ConditionalRoutedCrossAttention -------------------------------------------------- */
/* Queries routed from x, keys/values routed from a separate context, one
   heavy Attention between them, scattered back over null_q_token
   (transformer_block.py ConditionalRoutedCrossAttention). The reference's
   forward raises NameError at f2a8da0 (should_route_queries is never
   defined); this follows its evident intent: queries are routed when the
   query length n > num_tokens_q (else every token is a query and the heavy
   output is returned as is), keys/values when the context length
   m > num_tokens_kv (else the whole context with context_mask, no kv score).
   There is no light branch, no rotary and no multiply_queries_by_score. */
typedef struct {
  int dim;
  int dim_context;                 /* width of the context: 0 = dim. The reference projects the context with
                                      heavy_attn (norm, to_kv over dim), so any other value is an error */
  long num_tokens_q, num_tokens_kv;
  int num_sets_kv;                 /* accepted and ignored: the reference stores nothing for it */
  int dim_head, heads;
  c5_router_config router;         /* router_kwargs + router_straight_through (both routers). Its
                                      route_block_size must be 0: the reference passes route_block_size to
                                      the kv router by keyword, so router_kwargs cannot hold it */
  int kv_routing_tokens;           /* routes of the kv router (num_routed_kv of routed attention); heads % it == 0 */
  int multiply_keys_by_score;
  int use_null_q_tokens;
  long route_block_size;           /* the kv router's route_block_size; 0 = None */
  /* As c5_routed_attn_config.kv_gather_batch_bug: 1 gathers the routed context of batch row b from row
     b // kv_routing_tokens when kv_routing_tokens > 1 (the reference's batched_gather); 0 (default) row b. */
  int kv_gather_batch_bug;
} c5_routed_cross_attn_config;
#define C5_ROUTED_CROSS_ATTN_CONFIG_DEFAULT { .dim = 0, .dim_context = 0, .num_tokens_q = 0, .num_tokens_kv = 0, \
    .num_sets_kv = 1, .dim_head = 64, .heads = 8, .router = C5_ROUTER_CONFIG_DEFAULT, .kv_routing_tokens = 1, \
    .multiply_keys_by_score = 0, .use_null_q_tokens = 1, .route_block_size = 0, .kv_gather_batch_bug = 0 }

typedef struct c5_routed_cross_attn c5_routed_cross_attn;
typedef struct c5_routed_cross_attn_cache c5_routed_cross_attn_cache;
/* Adds null_q_token, q_router.routing_token [1, dim], kv_router.routing_token [kv_routing_tokens, dim] and
   heavy_attn.* under prefix. Not collective. */
c5_status c5_routed_cross_attn_create(const c5_routed_cross_attn_config *cfg, c5_params *params, const char *prefix,
                                      c5_routed_cross_attn **out);
c5_status c5_routed_cross_attn_destroy(c5_routed_cross_attn **m);   /* NULL-safe; sets *m = NULL */
/* n_local: query tokens on this rank; m_local: context tokens on this rank. */
c5_status c5_routed_cross_attn_cache_create(const c5_routed_cross_attn *m, long batch, long n_local, long m_local,
                                            c5_routed_cross_attn_cache **out);
c5_status c5_routed_cross_attn_cache_destroy(c5_routed_cross_attn_cache **c);   /* NULL-safe */
/* *unit (queries) = *context_unit (context) = 1: no light branch and no rotary; both routers run
   over any layout and every rank gathers the routed context from all ranks. The two sequences still
   have a layout each (their lengths differ). Either pointer may be NULL. */
c5_status c5_routed_cross_attn_layout_unit(const c5_routed_cross_attn_config *cfg, long *unit, long *context_unit);
/* What the last forward routed (routed = 0 where that side was not routed). */
const c5_routing *c5_routed_cross_attn_routing_q(const c5_routed_cross_attn_cache *c);
const c5_routing *c5_routed_cross_attn_routing_kv(const c5_routed_cross_attn_cache *c);
/* c5_routed_cross_attn_forward - out = scatter(heavy attention of the routed queries of x over the routed
   tokens of context). Collective on d; x and the context each have their own layout.
   In:  lay: x's layout; ctx_lay: the context's own layout; x [batch, lay->n_local, dim]; mask
        [batch, n_local] (1 = keep) or NULL; context [batch, ctx_lay->n_local, dim]; context_mask
        [batch, ctx_lay->n_local] or NULL.
   Out: out [batch, n_local, dim] (written); the cache. x and context must stay unchanged until the backward. */
c5_status c5_routed_cross_attn_forward(c5_routed_cross_attn *m, const c5_dist *d, const c5_layout *lay,
                                       const c5_layout *ctx_lay, long batch, const c5_real *x, const uint8_t *mask,
                                       const c5_real *context, const uint8_t *context_mask,
                                       c5_routed_cross_attn_cache *c, c5_real *out);
/* dx [batch, n_local, dim] and dcontext [batch, ctx n_local, dim] are written (=); parameter gradients
   accumulate (+=). Collective on d. */
c5_status c5_routed_cross_attn_backward(c5_routed_cross_attn *m, const c5_dist *d, c5_routed_cross_attn_cache *c,
                                        const c5_real *x, const c5_real *context, const c5_real *dout, c5_real *dx,
                                        c5_real *dcontext);


/* ---- parameter initialization ------------------------------------------------------ */
/* Every parameter is registered with the rule PyTorch's default initialization
   gives it in the reference's modules (c5_params_set_init; modules call it
   right after c5_params_add): nn.Linear weight and bias U(-1/sqrt(fan_in),
   1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)), nn.Embedding and the
   reference's torch.randn parameters (routing tokens, null_q_token, null_kv)
   N(0, 1), norm gains 1, norm biases 0. */
typedef enum { C5_INIT_ZERO, C5_INIT_ONE, C5_INIT_NORMAL, C5_INIT_UNIFORM_FAN_IN } c5_init_rule;
/* fan_in: the bound's fan-in for C5_INIT_UNIFORM_FAN_IN (ignored otherwise). */
c5_status c5_params_set_init(c5_params *p, long index, c5_init_rule rule, long fan_in);
/* Fill every value from seed by its rule. Element e of the parameter named N
   draws from a counter-based generator keyed by (seed, N, e): the result does
   not depend on the rank count, the thread count, or the order parameters
   were registered in (the key: FNV-1a of N xor SplitMix64 of seed; the draws:
   kernels.h init_fill). Not collective (every rank computes the same values).
   Errors (C5_ERR_ARG, nothing written): the table not allocated; a parameter
   without a rule, named. */
c5_status c5_params_init(c5_params *p, uint64_t seed);

/* ---- the masked-byte model ------------------------------------------------------------ */
/* A CoLT5 encoder over bytes, trained by masked-span prediction
   (docs/model.md): tokens are bytes 0..255 and C5_MASK_TOKEN;
   x = token_emb[token] + pos_emb[global position]; depth
   ConditionalRoutedTransformerBlocks; RMSNorm (the reference's, "norm.gamma");
   logits = to_logits(x) over the 256 bytes. Parameter names are the
   state_dict of the PyTorch wrapper tools/colt5_torch.py:
   token_emb.weight [257, dim], pos_emb.weight [max_seq_len, dim],
   layers.<i>.conditional_attn.*, layers.<i>.conditional_ff.*, norm.gamma [dim],
   to_logits.weight [256, dim], to_logits.bias [256]. */
#define C5_MASK_TOKEN 256
#define C5_NUM_BYTES 256
typedef struct {
  int depth;              /* blocks, > 0 */
  long max_seq_len;       /* rows of pos_emb: the longest global sequence the model takes */
  /* 1: pos_emb starts at zeros instead of N(0, 1) (nn.Embedding's). With light_rotary_emb the light branch
     has relative positions of its own, and random absolute rows are noise every token carries until
     training learns to ignore it (docs/model.md). 0: the PyTorch default. Config key pos_emb_zero_init. */
  int pos_emb_zero_init;
  c5_block_config block;  /* every layer the same; block.attn.dim is the model width. With
                             block.attn/ff.random_route, layer i's routers draw from random_seed
                             mixed with i (each layer its own draws) */
} c5_model_config;

typedef struct c5_model c5_model;
typedef struct c5_model_cache c5_model_cache;
/* Adds every parameter above to params (not allocated yet: c5_params_alloc after). Not collective. */
c5_status c5_model_create(const c5_model_config *cfg, c5_params *params, c5_model **out);
c5_status c5_model_destroy(c5_model **m);   /* NULL-safe; sets *m = NULL */
const c5_model_config *c5_model_get_config(const c5_model *m);
/* Random routes (block.attn/ff.random_route): the next forwards draw as a model created with
   block.attn.random_seed = block.ff.random_seed = seed would (each layer its own draws). The reference draws
   new scores on every forward: a trainer sets a new seed per forward (colt5-train: keyed by seed, step and
   micro-batch). Every rank of a sharded forward must set the same seed. Not collective. */
c5_status c5_model_set_random_seed(c5_model *m, uint64_t seed);
c5_status c5_model_layout_unit(const c5_model_config *cfg, long *unit);   /* the block's */
c5_status c5_model_cache_create(const c5_model *m, long batch, long n_local, c5_model_cache **out);
c5_status c5_model_cache_destroy(c5_model_cache **c);   /* NULL-safe */
/* The block cache of layer i of the last forward (activation dumps, tests). */
const c5_block_cache *c5_model_block_cache(const c5_model_cache *c, int layer);
/* The cache's tensors live on the model's backend (device memory on a GPU: read them with c5_backend_memcpy). */
/* Input of layer i (layer = depth: the final norm's input) [batch, n_local, dim]. */
const c5_real *c5_model_layer_input(const c5_model_cache *c, int layer);
/* Logits of the last forward [batch, n_local, 256]. */
const c5_real *c5_model_logits(const c5_model_cache *c);

/* c5_model_forward - logits and the masked-byte loss. Collective on d.
   In:  tokens [batch, lay->n_local] (0..256); targets [batch, n_local]: the
        byte to predict (0..255) or -1 where nothing is scored; mask
        [batch, n_local] (1 = keep) or NULL (padding). All three are host
        memory on every backend: a device backend uploads them into the
        cache, and reads back only the loss sum and count.
   Out: cache; *loss_sum = sum over scored positions of every rank of d of
        -log softmax(logits)[target], summed in double in a fixed order;
        *count = the number of scored positions over the ranks of d. Either may be NULL. */
c5_status c5_model_forward(c5_model *m, const c5_dist *d, const c5_layout *lay, long batch, const int32_t *tokens,
                           const int32_t *targets, const uint8_t *mask, c5_model_cache *c, double *loss_sum,
                           long *count);
/* c5_model_backward - parameter gradients (accumulate, +=) of scale * loss_sum
   (scale = 1 / the scored positions of the whole step, over every rank and
   micro-batch: the loss is then their mean). Collective on d. Gradients are
   this rank's part: c5_params_allreduce_grad sums them. */
c5_status c5_model_backward(c5_model *m, const c5_dist *d, c5_model_cache *c, double scale);

/* ---- optimizer ------------------------------------------------------------------------ */
/* AdamW as torch.optim.AdamW (decoupled weight decay, bias-corrected moments),
   with clipping by the global gradient norm as torch.nn.utils.clip_grad_norm_
   (coefficient clip / (norm + 1e-6) when below 1) and the learning-rate
   schedule, for optimizer step t = 1, 2, ...:
     t <= warmup:  lr * t / warmup
     else:         lr_min + (lr - lr_min) (1 + cos(pi p)) / 2,
                   p = min(1, (t - warmup) / max(1, total_steps - warmup)).
   Weight decay applies to the parameters named "*.weight" of rank 2 other
   than token_emb.weight and pos_emb.weight (matrices of Linear layers), or to
   every parameter when decay_all: torch's two parameter groups, decay and
   no decay (docs/optim.md).
   Gradient accumulation over micro-batches needs nothing here: backwards add
   (+=) into the gradients, so k backwards then one c5_adamw_step on the
   sum (for the mean, scale the loss by 1/k), and c5_params_zero_grad after
   the step starts the next accumulation. The step reads the gradients and
   does not change them (clipping scales them inside the update).
   The arithmetic is the backend's (kernels sumsq and adamw_update): each
   element in double, stored in c5_real. Config errors (c5_adamw_create):
   lr, lr_min >= 0; beta1, beta2 in [0, 1); eps > 0; warmup_steps >= 0;
   total_steps >= 1; clip_norm >= 0; weight_decay >= 0; C5_ERR_ARG naming
   the option and its value. */
typedef struct {
  double lr, lr_min;
  long warmup_steps, total_steps;
  double beta1, beta2, eps, weight_decay;
  double clip_norm;        /* 0: no clipping */
  int decay_all;
} c5_adamw_config;
#define C5_ADAMW_CONFIG_DEFAULT { .lr = 1e-3, .lr_min = 1e-4, .warmup_steps = 0, .total_steps = 1, \
    .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01, .clip_norm = 1.0, .decay_all = 0 }

typedef struct c5_adamw c5_adamw;
/* Moments (zero) on params' backend, one slab each. Not collective. */
c5_status c5_adamw_create(const c5_adamw_config *cfg, c5_params *params, c5_adamw **out);
c5_status c5_adamw_destroy(c5_adamw **o);   /* NULL-safe */
const c5_adamw_config *c5_adamw_get_config(const c5_adamw *o);
/* The learning rate of step t (t >= 1) by the schedule (cfg need not be validated). */
double c5_adamw_lr(const c5_adamw_config *cfg, long t);
/* One step on the summed gradients (c5_params_allreduce_grad first: every
   rank then holds the same gradients and takes the same step). The norm is
   the 2-norm over every gradient, summed in double in a fixed order. Not
   collective. Out (either may be NULL): the norm before clipping, the lr used.
   Errors: a non-finite gradient norm (C5_ERR_NUMERIC naming the first
   parameter, in table order, whose gradient holds a NaN or Inf, and the
   element; nothing updated, the step count included). */
c5_status c5_adamw_step(c5_adamw *o, double *grad_norm, double *lr);
long c5_adamw_steps(const c5_adamw *o);                 /* steps taken */
void c5_adamw_set_steps(c5_adamw *o, long steps);      /* on resume (negative: 0); the next step is steps + 1 */
/* The first and second moments of parameter i (layout as its value), on params' backend. */
c5_real *c5_adamw_exp_avg(const c5_adamw *o, long i);
c5_real *c5_adamw_exp_avg_sq(const c5_adamw *o, long i);

#ifdef __cplusplus
}
#endif
#endif /* COLT5_H */
