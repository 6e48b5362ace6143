/* ws.h - the transient workspace: buffers that live only inside one call (one forward or one backward of one
   module), carved at the call's start from memory that the caches of a block (or a model) share. Private
   to lib/ (docs/design.md §4, "Memory").

   A cache keeps two kinds of buffers. Persistent ones (written in the forward, read in the backward or by
   an activation dump) stay in its arena (arena.h). Transient ones (a backward's gradients of
   intermediates, a forward's gathered inputs, the normed inputs formed again in the backward) are a
   frame of the workspace: the module lays them out with a carve function over an arena, as a cache
   does, and opens the frame at the start of each call:

     size_t mark;
     C5_CALL(c5_ws_open(c->ws, carve_frame, c, &mark));   pointers into the workspace
     st = body(...);                                       may call other modules: their frames go above
     c5_ws_close(c->ws, mark);                             on every path, error or not

   Frames nest like a stack: a callee's frame starts where its caller's ends, so a caller's transient
   buffers live on across its callees' calls. Modules that take frames run one at a time on the
   backend's stream (the routers, which run on its lane beside them, keep their own memory: backend.h), so
   the workspace needs the deepest stack of frames, not the sum of every module's buffers.

   Sizing, at cache creation (nothing is allocated inside a step): each cache reserves its frame at the
   depth its calls will open it. A caller that holds a frame across a callee holds it while creating the
   callee's cache too (c5_ws_hold, create, c5_ws_release), so the reservations follow the calls' nesting;
   c5_ws_fit then allocates the deepest. The cache that made the workspace (a standalone module cache:
   created with ws NULL) owns it, fits it at the end of its creation and frees it; caches created inside
   it share it. The one place a workspace grows after creation is where a cache itself does (the routed
   attention's heavy branch beyond its create-time bound, route blocks only): it refits between frames.

   The frames' contents are undefined when opened (another module's leftovers): every transient buffer
   is written before it is read. C5_WS_POISON=1 in the environment (CPU backend) fills each frame with
   0xff bytes (NaN in every float type) when it is opened, which tests use to check that rule. */
#ifndef C5_WS_H
#define C5_WS_H
#include <stdint.h>
#include <string.h>
#include "arena.h"

typedef struct c5_ws {
  const struct c5_backend *be;
  char *base;      /* cap bytes of be's memory; NULL until c5_ws_fit allocates */
  size_t cap;      /* bytes allocated */
  size_t need;     /* the deepest stack of frames reserved (SIZE_MAX: overflowed) */
  size_t top;      /* bytes in frames now (at creation: held by the callers of the cache being created) */
  int poison;      /* C5_WS_POISON on the CPU backend: frames filled with 0xff bytes when opened */
} c5_ws;

/* An empty workspace on be (no memory yet). */
c5_status c5_ws_create(const struct c5_backend *be, c5_ws **out);
/* Frees the memory and the workspace; *ws NULL after. */
void c5_ws_destroy(c5_ws **ws);
/* The workspace a cache works in: given, when its maker passes one (*own = 0), else a new one on be that the cache
   owns (*own = 1: it fits and destroys it). */
c5_status c5_ws_use(const struct c5_backend *be, c5_ws *given, c5_ws **ws, int *own);
/* The memory for the reservations: allocated (or reallocated larger, only with no frame open) when need
   exceeds cap. who names the cache in an error. */
c5_status c5_ws_fit(c5_ws *ws, const char *who);

/* Frame sizes are whole multiples of the arena's alignment, so every frame starts aligned as the base. */
static inline size_t c5_ws_round(size_t bytes)
{
  return bytes > SIZE_MAX - C5_ARENA_ALIGN ? SIZE_MAX : (bytes + C5_ARENA_ALIGN - 1) & ~(size_t)(C5_ARENA_ALIGN - 1);
}

/* The bytes obj's frame takes: carve run on an empty arena (it sets obj's pointers to NULL). */
static inline size_t c5_ws_measure(void (*carve)(void *obj, c5_arena *a), void *obj)
{
  c5_arena a = { 0 };
  carve(obj, &a);
  return c5_ws_round(a.used);
}

/* Creation: hold bytes above the current top (as a call's frame would be), raising the reservation;
   returns the mark that c5_ws_release takes back to. */
static inline size_t c5_ws_hold(c5_ws *ws, size_t bytes)
{
  const size_t mark = ws->top;
  bytes = c5_ws_round(bytes);
  ws->top = bytes == SIZE_MAX || mark > SIZE_MAX - bytes ? SIZE_MAX : mark + bytes;
  if (ws->top > ws->need) ws->need = ws->top;
  return mark;
}
static inline void c5_ws_release(c5_ws *ws, size_t mark) { ws->top = mark; }
/* Creation: a frame of bytes at the current top, reserved (held and released at once). */
static inline void c5_ws_reserve(c5_ws *ws, size_t bytes) { c5_ws_release(ws, c5_ws_hold(ws, bytes)); }

/* Runs call (a c5_status expression) inside obj's frame of ws, closed on every path; returns from the calling
   function with the call's error, traced. */
#define C5_WS_RUN(ws, carve, obj, call) do { \
    size_t m_; \
    C5_CALL(c5_ws_open((ws), (carve), (obj), &m_)); \
    const c5_status s_ = (call); \
    c5_ws_close((ws), m_); \
    if (s_ != C5_OK) return c5_err_trace(s_, __FILE__, __LINE__); \
  } while (0)

/* A call: obj's frame at the top (carve sets obj's transient pointers into it); *mark for c5_ws_close.
   C5_ERR_INTERNAL when the frame exceeds what was reserved (a sizing bug: nothing is allocated here). */
c5_status c5_ws_open(c5_ws *ws, void (*carve)(void *obj, c5_arena *a), void *obj, size_t *mark);
/* Closes the frames above mark (the frame opened with it and any a failed callee left open). */
static inline void c5_ws_close(c5_ws *ws, size_t mark) { if (ws && mark < ws->top) ws->top = mark; }
#endif
