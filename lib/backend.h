/* backend.h - the backend object behind the public c5_backend handle
   (private to lib/): which device computes, and its kernel table. Modules
   keep the backend they were created on and call only be->ops. */
#ifndef C5_BACKEND_H
#define C5_BACKEND_H
#include "kernels.h"
#include "colt5.h"

struct c5_backend {
  c5_backend_kind kind;
  int device;             /* CUDA device ordinal; 0 on the CPU */
  const c5k_ops *ops;     /* the device's kernel table */
  int is_static;          /* the process-wide CPU backend: never freed */
  void *dev;              /* CUDA: the device object (kernels/cuda/cuda.h); NULL on the CPU */
  struct c5_backend *lane;   /* CUDA: the same device on a second stream (c5_backend_lane); NULL: none */
  struct c5_backend *base;   /* a lane's backend; NULL otherwise */
};

/* A kernel context on be: the caller's host scratch, and the device (stream, handles) the ops run on. */
static inline c5k_ctx c5_backend_ctx(const c5_backend *be, double *work, long work_len)
{
  c5k_ctx c = { .work = work, .work_len = work_len, .dev = be->dev };
  return c;
}

/* Work that may overlap (docs/design.md "Streams"): the routers of a block run on be's lane, a second stream
   of the same device, while the light branch runs on be's own. c5_backend_lane(be) is that lane (be itself on
   the CPU, or where C5_CUDA_LANES=0 at the backend's creation: one stream, everything in order). Lane work
   happens only inside a fork ... join region: fork makes the lane wait for what be has queued so far, join
   makes be wait for the lane. Regions nest, and any of be, its lane may be passed. Meet (inside a region):
   each stream waits for the other, before a collective on be's stream reads what the lane wrote. */
const c5_backend *c5_backend_lane(const c5_backend *be);
/* The backend a lane belongs to (be itself when be is no lane): what a collective takes (lib/dist.c runs
   NCCL on that backend's stream) */
static inline const c5_backend *c5_backend_root(const c5_backend *be) { return be->base ? be->base : be; }
c5_status c5_backend_fork(const c5_backend *be);
c5_status c5_backend_join(const c5_backend *be);
c5_status c5_backend_meet(const c5_backend *be);
/* One way only, inside a region: the lane waits for the stream's work so far (lane_follow), or the stream for
   the lane's (stream_follow). */
c5_status c5_backend_lane_follow(const c5_backend *be);
c5_status c5_backend_stream_follow(const c5_backend *be);
/* A point of the lane's work that the stream waits for alone (not for what the lane queues after it): made
   for a backend with a lane (*mark NULL otherwise: marking and waiting do nothing), set by c5_backend_mark on
   be's stream (the lane when be is one), waited for by the stream. */
c5_status c5_backend_mark_create(const c5_backend *be, void **mark);
void c5_backend_mark_destroy(void *mark);
c5_status c5_backend_mark(const c5_backend *be, void *mark);
c5_status c5_backend_stream_wait_mark(const c5_backend *be, void *mark);

/* A cache's activations are kept in the type its backend took when it was made (have); a call in another
   matmul mode (the backend now wants want) is refused, naming the cache (who). */
c5_status c5_act_agree(c5_dtype have, c5_dtype want, const char *who);

/* An op this backend lacks is refused by name: never a silent fallback to another device. */
#define C5_NEED_OP(be, op) C5_CHECK((be)->ops->op != NULL, C5_ERR_NOTIMPL, \
    "%s backend: kernel op %s is not implemented on this device yet", (be)->ops->name, #op)

/* Whether be computes on host memory (the CPU): lib/ may then read tensors directly where a device
   backend needs an op or an explicit copy (the P > 1 paths, which a device backend refuses). */
static inline int c5_backend_is_host(const c5_backend *be) { return be->dev == NULL; }

/* Whether C5_MEM_TRACE=1 (backend.c): allocations and the memory plan's choices go to stderr. */
int c5_mem_trace(void);

/* The doubles of ctx work a cache keeps for its kernels, given what the CPU's kernels need: the CUDA ops never
   read ctx work (their scratch is the device's own), so a device cache keeps none (at n = 131072 the block's
   LocalMHA and FeedForward caches held 36 MiB of it). */
static inline long c5_backend_work(const c5_backend *be, long cpu_need) { return c5_backend_is_host(be) ? cpu_need : 0; }

/* count elements of size bytes on be, zeroed (calloc on the CPU). *ptr NULL for count 0 on the CPU's
   terms (calloc of at least one byte: a distinct valid pointer). Free with c5_backend_free. */
c5_status c5_backend_calloc(const c5_backend *be, size_t count, size_t size, void **ptr);
#define C5_BE_NEW(be, p, n) c5_backend_calloc((be), (size_t)(n), sizeof *(p), (void **)&(p))

/* bytes at src (be's memory) readable on the host, for the files (checkpoints, dumps) that HDF5 writes
   from host memory: *host = src on the CPU (*stage NULL: no copy, the bits the writer always wrote);
   on a device a copy in a new host buffer, *host = *stage (free(*stage) after the write). */
/* dst (the backend's memory) = src (host memory) in the backend's order: returns once src may be reused, without
   waiting for the backend's queued work where it can (a GPU: src in pageable host memory, as malloc gives). */
c5_status c5_backend_upload(const c5_backend *be, void *dst, const void *src, size_t bytes);
c5_status c5_backend_host_view(const c5_backend *be, const void *src, size_t bytes, const void **host, void **stage);
#endif
