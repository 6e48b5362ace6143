/* modules.h - the routed modules behind one interface, for tests that treat
   them alike (test_modules_fd.c, test_routed_ar_attn.c through fd.h,
   test_shard.c): ConditionalRoutedFeedForward (MOD_FF),
   ConditionalRoutedAttention (MOD_AT), ConditionalRoutedTransformerBlock
   (MOD_BL) and ConditionalRoutedAutoregressiveAttention (MOD_AR, whose
   forward takes no mask: its adapter ignores the mask argument), each with
   its layout unit from the library (c5_<module>_layout_unit). Also the
   parameter fill and the soft router those tests share. Header-only. */
#ifndef C5_MODULES_H
#define C5_MODULES_H
#include <string.h>
#include "harness.h"

typedef struct {
  const char *name;                                /* short, for case lines: "ff", "attn", "block", "ar_attn" */
  const char *cls;                                 /* the reference's class name */
  c5_status (*create)(const void *cfg, c5_params *p, void **m);
  c5_status (*unit)(const void *cfg, long *u);    /* the layout unit of cfg (the library's) */
  c5_status (*cache)(void *m, long b, long n, void **c);
  c5_status (*fwd)(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o);
  c5_status (*bwd)(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx);
  const c5_routing *(*routing)(void *c, int i);   /* router i of the last forward; NULL past the last */
  const char *(*router_name)(int i);               /* its name in messages */
  void (*destroy_cache)(void **c);
  void (*destroy)(void **m);
} mod_t;

/* ConditionalRoutedFeedForward */
static c5_status mod_ff_create(const void *cfg, c5_params *p, void **m) { return c5_routed_ff_create(cfg, p, "", (c5_routed_ff **)m); }
static c5_status mod_ff_unit(const void *cfg, long *u) { return c5_routed_ff_layout_unit(cfg, u); }
static c5_status mod_ff_cache(void *m, long b, long n, void **c) { return c5_routed_ff_cache_create(m, b, n, (c5_routed_ff_cache **)c); }
static c5_status mod_ff_fwd(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o) { return c5_routed_ff_forward(m, d, l, b, x, mk, c, o); }
static c5_status mod_ff_bwd(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx) { return c5_routed_ff_backward(m, d, c, x, g, dx); }
static const c5_routing *mod_ff_routing(void *c, int i) { return i == 0 ? c5_routed_ff_routing(c) : NULL; }
static const char *mod_ff_rname(int i) { (void)i; return "router"; }
static void mod_ff_dcache(void **c) { c5_routed_ff_cache_destroy((c5_routed_ff_cache **)c); }
static void mod_ff_destroy(void **m) { c5_routed_ff_destroy((c5_routed_ff **)m); }

/* ConditionalRoutedAttention */
static c5_status mod_at_create(const void *cfg, c5_params *p, void **m) { return c5_routed_attn_create(cfg, p, "", (c5_routed_attn **)m); }
static c5_status mod_at_unit(const void *cfg, long *u) { return c5_routed_attn_layout_unit(cfg, u); }
static c5_status mod_at_cache(void *m, long b, long n, void **c) { return c5_routed_attn_cache_create(m, b, n, (c5_routed_attn_cache **)c); }
static c5_status mod_at_fwd(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o) { return c5_routed_attn_forward(m, d, l, b, x, mk, c, o); }
static c5_status mod_at_bwd(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx) { return c5_routed_attn_backward(m, d, c, x, g, dx); }
static const c5_routing *mod_at_routing(void *c, int i) { return i == 0 ? c5_routed_attn_routing_q(c) : i == 1 ? c5_routed_attn_routing_kv(c) : NULL; }
static const char *mod_at_rname(int i) { return i == 0 ? "q_router" : "kv_router"; }
static void mod_at_dcache(void **c) { c5_routed_attn_cache_destroy((c5_routed_attn_cache **)c); }
static void mod_at_destroy(void **m) { c5_routed_attn_destroy((c5_routed_attn **)m); }

/* ConditionalRoutedTransformerBlock: attn q, attn kv, ff routers */
static c5_status mod_bl_create(const void *cfg, c5_params *p, void **m) { return c5_block_create(cfg, p, "", (c5_block **)m); }
static c5_status mod_bl_unit(const void *cfg, long *u) { return c5_block_layout_unit(cfg, u); }
static c5_status mod_bl_cache(void *m, long b, long n, void **c) { return c5_block_cache_create(m, b, n, (c5_block_cache **)c); }
static c5_status mod_bl_fwd(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o) { return c5_block_forward(m, d, l, b, x, mk, c, o); }
static c5_status mod_bl_bwd(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx) { return c5_block_backward(m, d, c, x, g, dx); }
static const c5_routing *mod_bl_routing(void *c, int i)
{
  if (i == 0) return c5_routed_attn_routing_q(c5_block_attn_cache(c));
  if (i == 1) return c5_routed_attn_routing_kv(c5_block_attn_cache(c));
  if (i == 2) return c5_routed_ff_routing(c5_block_ff_cache(c));
  return NULL;
}
static const char *mod_bl_rname(int i) { return i == 0 ? "attn q_router" : i == 1 ? "attn kv_router" : "ff router"; }
static void mod_bl_dcache(void **c) { c5_block_cache_destroy((c5_block_cache **)c); }
static void mod_bl_destroy(void **m) { c5_block_destroy((c5_block **)m); }

/* ConditionalRoutedAutoregressiveAttention (no mask: mk is ignored) */
static c5_status mod_ar_create(const void *cfg, c5_params *p, void **m) { return c5_routed_ar_attn_create(cfg, p, "", (c5_routed_ar_attn **)m); }
static c5_status mod_ar_unit(const void *cfg, long *u) { return c5_routed_ar_attn_layout_unit(cfg, u); }
static c5_status mod_ar_cache(void *m, long b, long n, void **c) { return c5_routed_ar_attn_cache_create(m, b, n, (c5_routed_ar_attn_cache **)c); }
static c5_status mod_ar_fwd(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o) { (void)mk; return c5_routed_ar_attn_forward(m, d, l, b, x, c, o); }
static c5_status mod_ar_bwd(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx) { return c5_routed_ar_attn_backward(m, d, c, x, g, dx); }
static const c5_routing *mod_ar_routing(void *c, int i) { return i == 0 ? c5_routed_ar_attn_routing_q(c) : i == 1 ? c5_routed_ar_attn_routing_kv(c) : NULL; }
static const char *mod_ar_rname(int i) { return i == 0 ? "q_router" : "kv_router"; }
static void mod_ar_dcache(void **c) { c5_routed_ar_attn_cache_destroy((c5_routed_ar_attn_cache **)c); }
static void mod_ar_destroy(void **m) { c5_routed_ar_attn_destroy((c5_routed_ar_attn **)m); }

static const mod_t MOD_FF = { "ff", "ConditionalRoutedFeedForward", mod_ff_create, mod_ff_unit, mod_ff_cache,
                              mod_ff_fwd, mod_ff_bwd, mod_ff_routing, mod_ff_rname, mod_ff_dcache, mod_ff_destroy };
static const mod_t MOD_AT = { "attn", "ConditionalRoutedAttention", mod_at_create, mod_at_unit, mod_at_cache,
                              mod_at_fwd, mod_at_bwd, mod_at_routing, mod_at_rname, mod_at_dcache, mod_at_destroy };
static const mod_t MOD_BL = { "block", "ConditionalRoutedTransformerBlock", mod_bl_create, mod_bl_unit, mod_bl_cache,
                              mod_bl_fwd, mod_bl_bwd, mod_bl_routing, mod_bl_rname, mod_bl_dcache, mod_bl_destroy };
static const mod_t MOD_AR = { "ar_attn", "ConditionalRoutedAutoregressiveAttention", mod_ar_create, mod_ar_unit,
                              mod_ar_cache, mod_ar_fwd, mod_ar_bwd, mod_ar_routing, mod_ar_rname, mod_ar_dcache,
                              mod_ar_destroy };

/* Frees a module and its cache (either may be NULL); sets both to NULL. */
static inline void mod_free(const mod_t *mt, void **m, void **c)
{
  if (*c) mt->destroy_cache(c);
  if (*m) mt->destroy(m);
  *c = *m = NULL;
}

/* Every parameter ~ N(0, 1/fan-in) (0.3 for vectors), norm weights ("gamma", "norm.weight") around 1:
   norms near 1 whatever the module. Draws from *seed, parameter by parameter. */
static inline void mod_fill_params(c5_params *p, unsigned long long *seed)
{
  for (long i = 0; i < c5_params_count(p); i++) {
    c5_real *v = c5_params_value(p, i);
    long dims[C5_PARAM_MAXDIM];
    int nd = c5_params_shape(p, i, dims);
    double sc = nd >= 2 ? 1.0 / sqrt((double)dims[nd - 1]) : 0.3;
    const char *nm = c5_params_name(p, i);
    int is_norm = strstr(nm, "gamma") || strstr(nm, "norm.weight");
    for (long j = 0; j < c5_params_numel(p, i); j++) v[j] = (c5_real)((is_norm ? 1.0 : 0.0) + sc * t_normal(seed));
  }
}

/* Routers with straight_through off and eps 0.3 (docs/design.md §2): the forward then depends on the router
   parameters, and random inputs keep |s + a_T| away from the kinks. */
static inline c5_router_config mod_soft_router(void)
{
  c5_router_config r = C5_ROUTER_CONFIG_DEFAULT;
  r.straight_through = 0;
  r.eps = 0.3;
  return r;
}
#endif
