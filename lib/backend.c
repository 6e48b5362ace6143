/* backend.c - backends chosen at run time (ggml's backends, PETSc's impls):
   one binary may hold several, so a test can run one against another on
   the same inputs. The CPU backend always exists; others come with their
   kernels (configure says which this build has). */
#include "c5_internal.h"
#include "backend.h"
#include "arena.h"
#include "ws.h"
#include <limits.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#if C5_HAVE_CUDA_BUILD
#include "cuda/cuda.h"
#endif

static const c5_backend cpu_backend = { .kind = C5_BACKEND_CPU, .device = 0, .ops = &c5k_cpu_ops, .is_static = 1 };

const c5_backend *c5_backend_cpu(void) { return &cpu_backend; }

/* Whether a CUDA backend has a lane (backend.h) unless C5_CUDA_LANES says */
#define C5_CUDA_LANES_DEFAULT 1

c5_status c5_backend_create(c5_backend_kind kind, int device, c5_backend **out)
{
  C5_CHECK(out != NULL, C5_ERR_ARG, "c5_backend_create: out is NULL");
  *out = NULL;
  switch (kind) {
  case C5_BACKEND_CPU:
    C5_CHECK(device == 0, C5_ERR_ARG, "cpu backend: device %d (the CPU is device 0)", device);
    C5_CALLOC(*out, 1);
    **out = cpu_backend;
    (*out)->is_static = 0;
    return C5_OK;
  case C5_BACKEND_CUDA: {
#if C5_HAVE_CUDA_BUILD
    c5k_cuda_dev *dev = NULL;
    C5_CALL(c5k_cuda_dev_create(device, &dev));
    *out = calloc(1, sizeof **out);
    if (!*out) {
      c5k_cuda_dev_destroy(dev);
      return C5_ERR(C5_ERR_MEM, "cuda backend (device %d): out of memory", device);
    }
    **out = (c5_backend){ .kind = C5_BACKEND_CUDA, .device = device, .ops = &c5k_cuda_ops, .dev = dev };
    const char *lanes = getenv("C5_CUDA_LANES");   /* "0" or "1"; unset: the default */
    if (!(lanes && *lanes) ? !C5_CUDA_LANES_DEFAULT : strcmp(lanes, "0") == 0) return C5_OK;
    c5_status st = C5_OK;
    c5k_cuda_dev *ld = NULL;
    c5_backend *lane = calloc(1, sizeof *lane);
    if (!lane) st = C5_ERR(C5_ERR_MEM, "cuda backend (device %d): out of memory", device);
    if (st == C5_OK) st = c5k_cuda_lane_create(dev, &ld);
    if (st != C5_OK) {
      free(lane);
      c5_backend_destroy(out);
      return c5_err_trace(st, __FILE__, __LINE__);
    }
    *lane = (c5_backend){ .kind = C5_BACKEND_CUDA, .device = device, .ops = &c5k_cuda_ops, .dev = ld, .base = *out };
    (*out)->lane = lane;
    return C5_OK;
#else
    return C5_ERR(C5_ERR_NOTIMPL, "cuda backend (device %d): this build has no CUDA kernels (configure --with-cuda)",
                  device);
#endif
  }
  default:
    return C5_ERR(C5_ERR_ARG, "c5_backend_create: unknown backend kind %d", (int)kind);
  }
}

c5_status c5_backend_destroy(c5_backend **be)
{
  if (!be || !*be) return C5_OK;
#if C5_HAVE_CUDA_BUILD
  if ((*be)->lane) {   /* before the device, whose handle the lane shares */
    c5k_cuda_dev_destroy((*be)->lane->dev);
    free((*be)->lane);
  }
  if ((*be)->dev) c5k_cuda_dev_destroy((*be)->dev);
#endif
  if (!(*be)->is_static) free(*be);
  *be = NULL;
  return C5_OK;
}

c5_backend_kind c5_backend_get_kind(const c5_backend *be) { return be->kind; }
const char *c5_backend_name(const c5_backend *be) { return be->ops->name; }

c5_status c5_backend_device_name(const c5_backend *be, char *name, size_t len)
{
  C5_CHECK(be && name && len > 0 && len <= INT_MAX, C5_ERR_ARG, "c5_backend_device_name: NULL argument or length %zu",
           len);
#if C5_HAVE_CUDA_BUILD
  if (be->dev) return c5k_cuda_device_name(be->dev, name, (int)len);
#endif
  snprintf(name, len, "%s", be->ops->name);
  return C5_OK;
}

int c5_backend_device_count(c5_backend_kind kind)
{
#if C5_HAVE_CUDA_BUILD
  if (kind == C5_BACKEND_CUDA) return c5k_cuda_device_count();
#endif
  return kind == C5_BACKEND_CPU ? 1 : 0;
}

/* The CPU backend's memory statistics (c5_backend_mem_stats), the counterpart of the device pool's: every
   host block of c5_backend_alloc/calloc carries its size in a header, so that free can take it back without a
   size map. One count for the process (every CPU backend draws on the same heap); atomics because the
   optimizer or a test may free from another thread than the one that allocated. */
typedef union {
  size_t bytes;
  max_align_t align;   /* the block after the header keeps malloc's alignment */
} host_hdr;
static _Atomic size_t host_used, host_high;

static void host_count(size_t add, size_t sub)
{
  if (sub) atomic_fetch_sub(&host_used, sub);
  if (!add) return;
  size_t now = atomic_fetch_add(&host_used, add) + add, high = atomic_load(&host_high);
  while (now > high && !atomic_compare_exchange_weak(&host_high, &high, now)) {}
}

static void *host_alloc(size_t bytes, int zero)
{
  if (bytes > SIZE_MAX - sizeof(host_hdr)) return NULL;
  host_hdr *h = zero ? calloc(1, sizeof *h + bytes) : malloc(sizeof *h + bytes);
  if (!h) return NULL;
  h->bytes = bytes;
  host_count(bytes, 0);
  return h + 1;
}

static void host_free(void *p)
{
  if (!p) return;
  host_hdr *h = (host_hdr *)p - 1;
  host_count(0, h->bytes);
  free(h);
}

/* Memory of a backend: host memory on the CPU, device memory (stream-ordered) on a GPU. */
/* C5_MEM_TRACE=1 in the environment: every allocation of a backend's memory (and each growth of the CUDA
   kernels' own scratch) is written to stderr with its size, to see what a peak is made of. */
int c5_mem_trace(void)
{
  static int t = -1;
  if (t < 0) {
    const char *e = getenv("C5_MEM_TRACE");
    t = e && e[0] == '1';
  }
  return t;
}

c5_status c5_backend_alloc(const c5_backend *be, size_t bytes, void **ptr)
{
  C5_CHECK(be && ptr, C5_ERR_ARG, "c5_backend_alloc: NULL argument");
  if (c5_mem_trace()) fprintf(stderr, "c5 mem: alloc %.3f MiB on %s\n", bytes / 1048576.0, be->ops->name);
#if C5_HAVE_CUDA_BUILD
  if (be->dev) return c5k_cuda_alloc(be->dev, bytes, ptr);
#endif
  *ptr = NULL;
  if (bytes == 0) return C5_OK;
  *ptr = host_alloc(bytes, 0);
  C5_CHECK(*ptr != NULL, C5_ERR_MEM, "c5_backend_alloc: out of memory for %zu bytes on the cpu backend", bytes);
  return C5_OK;
}

c5_status c5_backend_calloc(const c5_backend *be, size_t count, size_t size, void **ptr)
{
  C5_CHECK(be && ptr, C5_ERR_ARG, "c5_backend_calloc: NULL argument");
  *ptr = NULL;
  size_t bytes;
  C5_CHECK(!__builtin_mul_overflow(count ? count : 1, size, &bytes), C5_ERR_MEM,
           "c5_backend_calloc: %zu elements of %zu bytes overflow a size", count, size);
  if (c5_backend_is_host(be)) {   /* calloc: the pages are zeroed lazily, as before the backends */
    *ptr = host_alloc(bytes, 1);
    C5_CHECK(*ptr != NULL, C5_ERR_MEM, "c5_backend_calloc: out of memory for %zu bytes on the cpu backend", bytes);
    return C5_OK;
  }
  C5_NEED_OP(be, memset2d);
  C5_CALL(c5_backend_alloc(be, bytes, ptr));
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  c5_status st = c5k_zero(be->ops, &kc, *ptr, (long)bytes);
  if (st != C5_OK) {
    c5_backend_free(be, *ptr);
    *ptr = NULL;
    return c5_err_trace(st, __FILE__, __LINE__);
  }
  return C5_OK;
}

c5_status c5_backend_free(const c5_backend *be, void *ptr)
{
  C5_CHECK(be, C5_ERR_ARG, "c5_backend_free: backend is NULL");
#if C5_HAVE_CUDA_BUILD
  if (be->base && ptr) {
    /* a lane's memory (a router's cache) may still be read by the stream's queued work (the routing): freed
       in the stream's order, after the lane's */
    C5_CALL(c5k_cuda_stream_follow(be->base->dev, be->dev));
    return c5k_cuda_free(be->base->dev, ptr);
  }
  if (be->dev) return c5k_cuda_free(be->dev, ptr);
#endif
  host_free(ptr);
  return C5_OK;
}

c5_status c5_backend_memcpy(const c5_backend *be, void *dst, const void *src, size_t bytes)
{
  C5_CHECK(be && (bytes == 0 || (dst && src)), C5_ERR_ARG, "c5_backend_memcpy: NULL argument");
#if C5_HAVE_CUDA_BUILD
  if (be->dev) return c5k_cuda_memcpy(be->dev, dst, src, bytes);
#endif
  if (bytes) memcpy(dst, src, bytes);
  return C5_OK;
}

c5_status c5_backend_upload(const c5_backend *be, void *dst, const void *src, size_t bytes)
{
  C5_CHECK(be && (bytes == 0 || (dst && src)), C5_ERR_ARG, "c5_backend_upload: NULL argument");
#if C5_HAVE_CUDA_BUILD
  if (be->dev) return c5k_cuda_upload(be->dev, dst, src, bytes);
#endif
  if (bytes) memcpy(dst, src, bytes);
  return C5_OK;
}

c5_status c5_backend_host_view(const c5_backend *be, const void *src, size_t bytes, const void **host, void **stage)
{
  C5_CHECK(be && host && stage, C5_ERR_ARG, "c5_backend_host_view: NULL argument");
  *stage = NULL;
  *host = src;
  if (c5_backend_is_host(be) || bytes == 0 || !src) return C5_OK;
  *stage = malloc(bytes);
  C5_CHECK(*stage != NULL, C5_ERR_MEM, "staging %zu bytes of the %s backend on the host: out of memory", bytes,
           be->ops->name);
  c5_status st = c5_backend_memcpy(be, *stage, src, bytes);
  if (st != C5_OK) {
    C5_FREE(*stage);
    return c5_err_trace(st, __FILE__, __LINE__);
  }
  *host = *stage;
  return C5_OK;
}

c5_status c5_backend_sync(const c5_backend *be)
{
  C5_CHECK(be, C5_ERR_ARG, "c5_backend_sync: backend is NULL");
#if C5_HAVE_CUDA_BUILD
  if (be->dev) return c5k_cuda_sync(be->dev);
#endif
  return C5_OK;
}

const c5_backend *c5_backend_lane(const c5_backend *be) { return be->lane ? be->lane : be; }

/* The backend that owns the lane, or NULL when be has none */
static inline const c5_backend *lane_base(const c5_backend *be)
{
  const c5_backend *b = be->base ? be->base : be;
  return b->lane ? b : NULL;
}

/* A lane operation of kernels/cuda/cuda.h on be's device and lane; nothing where be has no lane */
#if C5_HAVE_CUDA_BUILD
typedef c5_status (*lane_fn)(c5k_cuda_dev *dev, c5k_cuda_dev *lane);
static c5_status on_lane(const c5_backend *be, lane_fn fn)
{
  const c5_backend *b = lane_base(be);
  return b ? fn(b->dev, b->lane->dev) : C5_OK;
}
#define LANE_OP(be, fn) on_lane((be), (fn))
#else
#define LANE_OP(be, fn) ((void)(be), C5_OK)
#endif

c5_status c5_backend_fork(const c5_backend *be) { return LANE_OP(be, c5k_cuda_fork); }
c5_status c5_backend_join(const c5_backend *be) { return LANE_OP(be, c5k_cuda_join); }
c5_status c5_backend_meet(const c5_backend *be) { return LANE_OP(be, c5k_cuda_meet); }
c5_status c5_backend_lane_follow(const c5_backend *be) { return LANE_OP(be, c5k_cuda_lane_follow); }
c5_status c5_backend_stream_follow(const c5_backend *be) { return LANE_OP(be, c5k_cuda_stream_follow); }

c5_status c5_backend_mark_create(const c5_backend *be, void **mark)
{
  *mark = NULL;
#if C5_HAVE_CUDA_BUILD
  if (lane_base(be)) return c5k_cuda_mark_create(mark);
#endif
  (void)be;
  return C5_OK;
}

void c5_backend_mark_destroy(void *mark)
{
#if C5_HAVE_CUDA_BUILD
  c5k_cuda_mark_destroy(mark);
#endif
  (void)mark;
}

c5_status c5_backend_mark(const c5_backend *be, void *mark)
{
#if C5_HAVE_CUDA_BUILD
  if (mark) return c5k_cuda_mark(be->dev, mark);
#endif
  (void)be;
  (void)mark;
  return C5_OK;
}

c5_status c5_backend_stream_wait_mark(const c5_backend *be, void *mark)
{
#if C5_HAVE_CUDA_BUILD
  if (mark) return c5k_cuda_wait_mark(c5_backend_root(be)->dev, mark);
#endif
  (void)be;
  (void)mark;
  return C5_OK;
}

const char *c5_matmul_name(c5_matmul m)
{
  return m == C5_MATMUL_FP32 ? "fp32" : m == C5_MATMUL_TF32 ? "tf32" : m == C5_MATMUL_BF16 ? "bf16" : "?";
}

c5_status c5_backend_set_matmul(c5_backend *be, c5_matmul m)
{
  C5_CHECK(be, C5_ERR_ARG, "c5_backend_set_matmul: backend is NULL");
  C5_CHECK(m == C5_MATMUL_FP32 || m == C5_MATMUL_TF32 || m == C5_MATMUL_BF16, C5_ERR_ARG,
           "c5_backend_set_matmul: unknown mode %d", (int)m);
#if C5_HAVE_CUDA_BUILD
  if (be->dev) {
    c5k_cuda_set_matmul(be->dev, (int)m);
    if (be->lane) c5k_cuda_set_matmul(be->lane->dev, (int)m);
    return C5_OK;
  }
#endif
  C5_CHECK(m == C5_MATMUL_FP32, C5_ERR_NOTIMPL, "c5_backend_set_matmul: the %s backend has no %s products",
           be->ops->name, c5_matmul_name(m));
  return C5_OK;
}

c5_status c5_backend_set_tf32(c5_backend *be, int on)
{
  return c5_backend_set_matmul(be, on ? C5_MATMUL_TF32 : C5_MATMUL_FP32);
}

c5_status c5_backend_mem_stats(const c5_backend *be, int reset, c5_backend_mem *out)
{
  C5_CHECK(be && out, C5_ERR_ARG, "c5_backend_mem_stats: NULL argument");
  memset(out, 0, sizeof *out);
#if C5_HAVE_CUDA_BUILD
  if (be->dev) {
    c5k_cuda_mem m;
    C5_CALL(c5k_cuda_mem_stats(be->dev, reset, &m));
    *out = (c5_backend_mem){ .dev_total = m.dev_total, .dev_used = m.dev_used, .pool_reserved = m.pool_reserved,
                             .pool_used = m.pool_used, .pool_reserved_high = m.pool_reserved_high,
                             .pool_used_high = m.pool_used_high };
    return C5_OK;
  }
#endif
  /* the host has no pool: what the backend holds is both the pool's use and its reservation */
  size_t used = atomic_load(&host_used), high = atomic_load(&host_high);
  if (reset) {   /* as the device pool's: the watermark restarts at the current use */
    atomic_store(&host_high, used);
  }
  *out = (c5_backend_mem){ .dev_used = used, .pool_reserved = used, .pool_used = used,
                           .pool_reserved_high = high, .pool_used_high = high };
  return C5_OK;
}

c5_status c5_arena_alloc_on(c5_arena *a, const c5_backend *be, const char *what)
{
  size_t bytes = a->used;
  C5_CHECK(bytes != SIZE_MAX, C5_ERR_MEM, "%s: its buffers' byte count overflows a size (a length too large)", what);
  if (c5_mem_trace()) fprintf(stderr, "c5 mem: %s: %.3f MiB\n", what, bytes / 1048576.0);
  c5_status st = c5_backend_calloc(be, bytes ? bytes : 1, 1, (void **)&a->base);
  C5_CHECK(st == C5_OK, st, "%s: %s%zu bytes on the %s backend", what,
           st == C5_ERR_MEM ? "out of memory allocating " : "", bytes, be->ops->name);
  a->used = 0;
  return C5_OK;
}

/* ---- the transient workspace (ws.h) ---- */
c5_status c5_ws_create(const c5_backend *be, c5_ws **out)
{
  C5_CHECK(be && out, C5_ERR_ARG, "c5_ws_create: NULL argument");
  C5_CALLOC(*out, 1);
  (*out)->be = be;
  const char *poison = getenv("C5_WS_POISON");
  (*out)->poison = c5_backend_is_host(be) && poison && poison[0] == '1';
  return C5_OK;
}

void c5_ws_destroy(c5_ws **ws)
{
  if (!ws || !*ws) return;
  if ((*ws)->base) c5_backend_free((*ws)->be, (*ws)->base);
  C5_FREE(*ws);
}

c5_status c5_act_agree(c5_dtype have, c5_dtype want, const char *who)
{
  C5_CHECK(want == have, C5_ERR_ARG, "%s: the cache keeps its activations in %s (the backend's matmul mode when it "
           "was made); the mode now wants %s: make the cache again after c5_backend_set_matmul", who,
           c5_dtype_name(have), c5_dtype_name(want));
  return C5_OK;
}

c5_status c5_ws_use(const struct c5_backend *be, c5_ws *given, c5_ws **ws, int *own)
{
  *own = !given;
  if (given) {
    *ws = given;
    return C5_OK;
  }
  return c5_ws_create(be, ws);
}

c5_status c5_ws_fit(c5_ws *ws, const char *who)
{
  C5_CHECK(ws->need != SIZE_MAX, C5_ERR_MEM, "%s workspace: its byte count overflows a size (a length too large)",
           who);
  if (ws->need <= ws->cap) return C5_OK;
  C5_CHECK(ws->top == 0, C5_ERR_INTERNAL, "%s workspace: must grow to %zu bytes while %zu bytes of it are in use",
           who, ws->need, ws->top);
  if (ws->base) c5_backend_free(ws->be, ws->base);
  ws->base = NULL;
  ws->cap = 0;
  if (c5_mem_trace()) fprintf(stderr, "c5 mem: %s workspace: %.3f MiB\n", who, ws->need / 1048576.0);
  c5_status st = c5_backend_alloc(ws->be, ws->need, (void **)&ws->base);
  C5_CHECK(st == C5_OK, st, "%s workspace: %s%zu bytes on the %s backend", who,
           st == C5_ERR_MEM ? "out of memory allocating " : "", ws->need, ws->be->ops->name);
  ws->cap = ws->need;
  return C5_OK;
}

c5_status c5_ws_open(c5_ws *ws, void (*carve)(void *obj, c5_arena *a), void *obj, size_t *mark)
{
  const size_t bytes = c5_ws_measure(carve, obj);
  C5_CHECK(ws->base && bytes != SIZE_MAX && ws->top <= ws->cap && bytes <= ws->cap - ws->top, C5_ERR_INTERNAL,
           "workspace: a frame of %zu bytes at %zu, %zu bytes reserved", bytes, ws->top, ws->cap);
  c5_arena a = { .base = ws->base + ws->top, .used = 0 };
  carve(obj, &a);
  if (ws->poison) memset(a.base, 0xff, bytes);
  *mark = ws->top;
  ws->top += bytes;
  return C5_OK;
}
