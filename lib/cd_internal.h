/* cd_internal.h - coordinate descent over ragged row segments (the router's
   blocked rows use it); private to lib/. */
#ifndef C5_CD_INTERNAL_H
#define C5_CD_INTERNAL_H
#include "kernels.h"

c5_status c5_cd_config_check(const c5_cd_config *cfg);
c5_status c5_cd_forward_rows(const c5_backend *be, const c5_dist *d, const c5_cd_config *cfg, const c5k_rows *R,
                             const c5_real *s, const uint8_t *mask, const double *k, long k_stride,
                             c5_real *y, c5_cd_cache *cache);
c5_status c5_cd_backward_rows(const c5_backend *be, const c5_dist *d, c5_cd_cache *cache, const c5k_rows *R, const c5_real *s,
                              const uint8_t *mask, const c5_real *y, const c5_real *gy, c5_real *ds);
#endif
