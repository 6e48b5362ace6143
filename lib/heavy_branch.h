/* heavy_branch.h - the parameters and routers the routed attentions share
   (routed_attn.c, routed_cross_attn.c, routed_ar_attn.c; reference:
   colt5_attention/transformer_block.py): null_q_token [dim] (optional),
   q_router.routing_token [1, dim], kv_router.routing_token [routes, dim] and
   heavy_attn.* (attn_heavy.h) under the module's prefix, in that order, and
   the q router (one route) and kv router (routes routes).
   Private to lib/. */
#ifndef C5_HEAVY_BRANCH_H
#define C5_HEAVY_BRANCH_H
#include "c5_internal.h"
#include "attn_heavy.h"
#include "kernels.h"
#include "backend.h"

typedef struct {
  c5_attn_heavy attn;            /* heavy_attn.* */
  long null_q, rt_q, rt_kv;      /* parameter indices (null_q = -1 when unused) */
  c5_router *q_router, *kv_router;
} c5_heavy_branch;

/* Registers the parameters under prefix and creates the routers from router: the q router with one routing
   token, the kv router with routes of them and route_block_size kv_block. On error the routers made so far
   stay in h: the caller's cleanup calls c5_heavy_branch_fini. */
c5_status c5_heavy_branch_init(c5_heavy_branch *h, c5_params *p, const char *prefix, int dim, int heads, int dim_head,
                               int routes, int multiply_keys_by_score, int use_null_q_tokens,
                               const c5_router_config *router, long kv_block);
/* Destroys the routers; safe on a zeroed or partly initialized h. */
c5_status c5_heavy_branch_fini(c5_heavy_branch *h);

/* The heavy queries of a q routing with one row per batch row, padded to nq per row: batch row b's first
   qcnt[b] queries are its routing's entries in order (routed) or its tokens (unrouted), the rest padding.
   qscore [batch, nq] = the entries' scores (unrouted: 1; padding: 0). qcnt and rq's start are host
   metadata; one is the constant 1 in be's memory. Rank-local. */
c5_status c5_heavy_query_scores(const c5_backend *be, const c5_real *one, long batch, long nq, const long *qcnt,
                                const c5_routing *rq, c5_real *qscore);
/* Backward: the queries' dscore dsq [batch, nq] into the routing's entry order, dscore[rq->start[b] + i] =
   dsq[b nq + i] for i < qcnt[b] (routed only). Rank-local. */
c5_status c5_heavy_query_dscores(const c5_backend *be, long batch, long nq, const long *qcnt, const c5_routing *rq,
                                 const c5_real *dsq, c5_real *dscore);
#endif
