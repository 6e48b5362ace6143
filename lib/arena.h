/* arena.h - a cache's buffers carved from one allocation, sized once when
   the cache is created (docs/design.md §4: nothing is allocated inside a
   forward or a backward). Private to lib/.

   A cache writes its layout once, as a function that takes every buffer
   from an arena, and runs it twice: on an empty arena (base NULL) to
   measure, then on the allocation. So the sizes are stated in one place
   and cannot drift from the carving:

     c5_arena a = { 0 };
     layout(c, &a);                        measure: pointers are NULL
     C5_CALL(c5_arena_alloc(&a, "what"));  one zeroed allocation
     layout(c, &a);                        carve
     c->mem = a.base;                      freed with free()

   Buffers that live only inside one call are not a cache's: they are frames of the transient workspace
   (ws.h), laid out by the same kind of carve function. */
#ifndef C5_ARENA_H
#define C5_ARENA_H
#include <stdint.h>
#include "c5_internal.h"

typedef struct {
  char *base;     /* NULL while measuring */
  size_t used;    /* bytes taken so far (after c5_arena_alloc: reset to 0) */
} c5_arena;

/* Buffers start 64 bytes apart from the base (calloc's own alignment, at
   least 16, holds for every element type), so that threads writing the ends
   of neighbouring buffers seldom share a cache line. */
#define C5_ARENA_ALIGN 64

/* count elements of size bytes (at least one element, so that an empty
   buffer is still a distinct valid pointer); NULL while measuring. */
static inline void *c5_arena_take(c5_arena *a, size_t count, size_t size)
{
  size_t at, bytes;
  /* a size that wraps (counts from a huge shape) saturates: c5_arena_alloc then refuses it */
  if (a->used > SIZE_MAX - C5_ARENA_ALIGN || __builtin_mul_overflow(count ? count : 1, size, &bytes) ||
      (at = (a->used + C5_ARENA_ALIGN - 1) & ~(size_t)(C5_ARENA_ALIGN - 1), bytes > SIZE_MAX - at)) {
    a->used = SIZE_MAX;
    return NULL;
  }
  a->used = at + bytes;
  return a->base ? a->base + at : NULL;
}
/* p = n elements of *p's type from the arena. */
#define C5_TAKE(a, p, n) ((p) = c5_arena_take((a), (size_t)(n), sizeof *(p)))

/* The measured size as one zeroed allocation; rewinds for the carving pass. */
static inline c5_status c5_arena_alloc(c5_arena *a, const char *what)
{
  size_t bytes = a->used;
  C5_CHECK(bytes != SIZE_MAX, C5_ERR_MEM, "%s: its buffers' byte count overflows a size (a length too large)", what);
  a->base = calloc(bytes ? bytes : 1, 1);
  C5_CHECK(a->base != NULL, C5_ERR_MEM, "%s: out of memory allocating %zu bytes", what, bytes);
  a->used = 0;
  return C5_OK;
}
/* The same on a backend (declared in backend.h's terms, defined in backend.c): the measured size as
   one zeroed allocation of be's memory, freed with c5_backend_free(be, a->base). A cache keeps its
   tensors in such an arena and its host-only metadata (row plans, counts) in a host one. */
struct c5_backend;
c5_status c5_arena_alloc_on(c5_arena *a, const struct c5_backend *be, const char *what);

/* Both passes at once for a cache whose layout is a function carve(obj, a):
   measure, one zeroed allocation (*block, freed with free()), carve. who
   names the cache in the out-of-memory message. */
static inline c5_status c5_arena_build(const char *who, void *obj, void (*carve)(void *obj, c5_arena *a), void **block)
{
  c5_arena a = { 0 };
  carve(obj, &a);
  C5_CALL(c5_arena_alloc(&a, who));
  carve(obj, &a);
  *block = a.base;
  return C5_OK;
}
#endif
