/* arena.h - one allocation per module cache (docs/design.md §4, "Memory"):
   a cache lists its buffers twice through the same function, once to count
   their bytes (an arena with no base) and once to carve them out of one
   zeroed block, so the list of sizes is written once and a cache made at
   create time never allocates again. Private to lib/. */
#ifndef C5_ARENA_H
#define C5_ARENA_H
#include "c5_internal.h"

typedef struct {
  char *base;      /* NULL: counting pass */
  size_t used;     /* bytes taken so far (counting: the total needed) */
  size_t size;     /* of base */
} c5_arena;

/* The next n elements of esize bytes at a multiple of 64 bytes from the block's start (whole cache
   lines: no false sharing between buffers written by different threads); NULL on the counting pass. */
void *c5_arena_take(c5_arena *a, long n, size_t esize);
#define C5_TAKE(a, p, n) ((p) = c5_arena_take((a), (long)(n), sizeof *(p)))

/* Runs carve(obj, arena) to count, allocates the zeroed block into *block and runs carve again to
   place every buffer. who names the cache in the out-of-memory message. */
c5_status c5_arena_build(const char *who, void *obj, void (*carve)(void *obj, c5_arena *a), void **block);
#endif
