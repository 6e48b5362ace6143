/* heavy_branch.c - registration of the routed attentions' heavy-branch
   parameters and creation of their two routers (see heavy_branch.h). */
#include "heavy_branch.h"

c5_status c5_heavy_branch_init(c5_heavy_branch *h, c5_params *p, const char *prefix, int dim, int heads, int dim_head,
                               int routes, int multiply_keys_by_score, int use_null_q_tokens,
                               const c5_router_config *router, long kv_block)
{
  C5_CHECK(h && p && router, C5_ERR_ARG, "c5_heavy_branch_init: NULL argument");
  char pre[256];
  long dd[1] = { dim }, rq[2] = { 1, dim }, rkv[2] = { routes, dim };
  h->null_q = -1;
  if (use_null_q_tokens) C5_CALL(c5_params_add(p, prefix, "null_q_token", 1, dd, &h->null_q));
  c5_name_join(pre, sizeof pre, prefix, "q_router");
  C5_CALL(c5_params_add(p, pre, "routing_token", 2, rq, &h->rt_q));
  c5_name_join(pre, sizeof pre, prefix, "kv_router");
  C5_CALL(c5_params_add(p, pre, "routing_token", 2, rkv, &h->rt_kv));
  c5_name_join(pre, sizeof pre, prefix, "heavy_attn");
  C5_CALL(c5_attn_heavy_init(&h->attn, p, pre, dim, heads, dim_head, routes, multiply_keys_by_score));
  c5_router_config rc = *router;
  rc.num_routing_tokens = 1;
  C5_CALL(c5_router_create(c5_params_backend(p), &rc, dim, &h->q_router));
  rc.num_routing_tokens = routes;
  rc.route_block_size = kv_block;
  C5_CALL(c5_router_create(c5_params_backend(p), &rc, dim, &h->kv_router));
  return C5_OK;
}

c5_status c5_heavy_branch_fini(c5_heavy_branch *h)
{
  if (!h) return C5_OK;
  c5_router_destroy(&h->q_router);
  c5_router_destroy(&h->kv_router);
  return C5_OK;
}
