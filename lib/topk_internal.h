/* topk_internal.h - the radix select over ragged row segments (router). */
#ifndef C5_TOPK_INTERNAL_H
#define C5_TOPK_INTERNAL_H
#include "kernels.h"

/* Longs of rowbuf scratch c5_topk_select_rows needs. */
long c5_topk_rowbuf_len(long rows);
/* Selects k[r] entries of each row (globally); this rank's, as positions
   relative to R->off[r], go to pos + r * cap (ascending), their number to
   count[r]. work: at least c5k_work_len(R) doubles (the caller sees to it
   before it agrees). Collective on d. */
c5_status c5_topk_select_rows(const c5_backend *be, const c5_dist *d, const c5k_rows *R, const c5_real *v, const uint8_t *mask,
                              const long *k, long cap, double *work, long work_len, long *rowbuf,
                              long *count, long *pos);
#endif
