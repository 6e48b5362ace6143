/* cd_internal.h - coordinate descent over ragged row segments (the router's
   blocked rows use it); private to lib/. */
#ifndef C5_CD_INTERNAL_H
#define C5_CD_INTERNAL_H
#include "kernels.h"
#include "arena.h"

c5_status c5_cd_config_check(const c5_cd_config *cfg);
/* Lay out a cache of rows x n_iters, with work_len doubles of kernel
   workspace (0: none; c5_cd_cache_alloc's public caches grow theirs), in an
   arena (arena.h). A cache laid out in its owner's arena goes with that
   arena: never pass it to c5_cd_cache_free. */
void c5_cd_cache_layout(c5_arena *m, long rows, int n_iters, long work_len, c5_cd_cache *cache);
/* A forward and a backward run in two steps: the rank-local checks
   (prepare; among them that the cache's workspace holds the rows: these
   entries never allocate), which the caller agrees over the ranks together
   with its own local work (docs/errors.md), then the collective run (_rows). */
c5_status c5_cd_forward_prepare(const c5_backend *be, const c5_cd_config *cfg, const c5k_rows *R, const c5_real *s,
                                const double *k, long k_stride, c5_cd_cache *cache);
c5_status c5_cd_forward_rows(const c5_backend *be, const c5_dist *d, const c5_cd_config *cfg, const c5k_rows *R,
                             const c5_real *s, const uint8_t *mask, const double *k, long k_stride,
                             c5_real *y, c5_cd_cache *cache);
c5_status c5_cd_backward_prepare(c5_cd_cache *cache, const c5k_rows *R);
c5_status c5_cd_backward_rows(const c5_backend *be, const c5_dist *d, c5_cd_cache *cache, const c5k_rows *R, const c5_real *s,
                              const uint8_t *mask, const c5_real *y, const c5_real *gy, c5_real *ds);
#endif
