/* heavy_branch.c - registration of the routed attentions' heavy-branch
   parameters and creation of their two routers, and their queries' scores
   (see heavy_branch.h). */
#include "heavy_branch.h"
#include "backend.h"

c5_status c5_heavy_branch_init(c5_heavy_branch *h, c5_params *p, const char *prefix, int dim, int heads, int dim_head,
                               int routes, int multiply_keys_by_score, int use_null_q_tokens,
                               const c5_router_config *router, long kv_block)
{
  C5_CHECK(h && p && router, C5_ERR_ARG, "c5_heavy_branch_init: NULL argument");
  char pre[256];
  long dd[1] = { dim }, rq[2] = { 1, dim }, rkv[2] = { routes, dim };
  h->null_q = -1;
  if (use_null_q_tokens) C5_CALL(c5_params_add_init(p, prefix, "null_q_token", 1, dd, C5_INIT_NORMAL, 0, &h->null_q));
  c5_name_join(pre, sizeof pre, prefix, "q_router");
  C5_CALL(c5_params_add_init(p, pre, "routing_token", 2, rq, C5_INIT_NORMAL, 0, &h->rt_q));
  c5_name_join(pre, sizeof pre, prefix, "kv_router");
  C5_CALL(c5_params_add_init(p, pre, "routing_token", 2, rkv, C5_INIT_NORMAL, 0, &h->rt_kv));
  c5_name_join(pre, sizeof pre, prefix, "heavy_attn");
  C5_CALL(c5_attn_heavy_init(&h->attn, p, pre, dim, heads, dim_head, routes, multiply_keys_by_score));
  c5_router_config rc = *router;
  rc.num_routing_tokens = 1;
  /* on the lane: they may run beside the light branch (backend.h) */
  const c5_backend *lane = c5_backend_lane(c5_params_backend(p));
  C5_CALL(c5_router_create(lane, &rc, dim, &h->q_router));
  rc.num_routing_tokens = routes;
  rc.route_block_size = kv_block;
  C5_CALL(c5_router_create(lane, &rc, dim, &h->kv_router));
  return C5_OK;
}

c5_status c5_heavy_branch_fini(c5_heavy_branch *h)
{
  if (!h) return C5_OK;
  c5_router_destroy(&h->q_router);
  c5_router_destroy(&h->kv_router);
  return C5_OK;
}

c5_status c5_heavy_query_scores(const c5_backend *be, const c5_real *one, long batch, long nq, const long *qcnt,
                                const c5_routing *rq, c5_real *qscore)
{
  const c5k_ops *ops = be->ops;
  const long es = (long)sizeof *qscore;
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  C5_CALL(c5k_zero(ops, &kc, qscore, batch * nq * es));
  for (long b = 0; b < batch; b++) {
    if (rq->routed) C5_CALL(ops->copy2d(&kc, qscore + b * nq, 0, rq->score + rq->start[b], 0, qcnt[b] * es, 1));
    else C5_CALL(ops->fill_rows(&kc, qcnt[b], 1, one, 0, qscore + b * nq, 1));
  }
  return C5_OK;
}

c5_status c5_heavy_query_dscores(const c5_backend *be, long batch, long nq, const long *qcnt, const c5_routing *rq,
                                 const c5_real *dsq, c5_real *dscore)
{
  const c5k_ops *ops = be->ops;
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  if (!rq->routed) return C5_OK;
  for (long b = 0; b < batch; b++)
    C5_CALL(ops->copy2d(&kc, dscore + rq->start[b], 0, dsq + b * nq, 0, qcnt[b] * (long)sizeof *dsq, 1));
  return C5_OK;
}
