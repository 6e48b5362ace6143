/* arena.c - one zeroed block per cache, carved in a fixed order (see arena.h). */
#include "arena.h"

void *c5_arena_take(c5_arena *a, long n, size_t esize)
{
  size_t at = (a->used + 63) & ~(size_t)63   /* offsets: 64-byte apart from a 16-byte aligned base */, len = (size_t)(n > 0 ? n : 0) * esize;
  a->used = at + len;
  if (!a->base) return NULL;
  /* the counting pass measured this very sequence: the block holds it */
  return a->used <= a->size ? a->base + at : NULL;
}

c5_status c5_arena_build(const char *who, void *obj, void (*carve)(void *obj, c5_arena *a), void **block)
{
  c5_arena a = { 0 };
  carve(obj, &a);
  size_t size = a.used + 64;
  /* calloc: zeroed, and seen by the tests that count or fail allocations */
  void *base = calloc(size, 1);
  C5_CHECK(base != NULL, C5_ERR_MEM, "%s: out of memory for its buffers (%zu bytes)", who, size);
  a = (c5_arena){ .base = base, .size = size };
  carve(obj, &a);
  *block = base;
  return C5_OK;
}
