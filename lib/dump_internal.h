/* dump_internal.h - what an activation dump (dump.c) reads of the modules
   beyond their public accessors: the routers' logits and scores, and the
   light and heavy branches' outputs, formed again from what the caches keep
   (a forward adds them into one output; a backward leaves these parts of
   the caches as they were). Each lives in its module's .c file. Private to
   lib/. */
#ifndef C5_DUMP_INTERNAL_H
#define C5_DUMP_INTERNAL_H
#include "c5_internal.h"

/* router.c: the last forward's logits and coordinate-descent scores (random draws under random_route),
   [rows][n_local], rows = batch * routes; meaningful when its routing is routed. */
const c5_real *c5_router_cache_logits(const c5_router_cache *c);
const c5_real *c5_router_cache_scores(const c5_router_cache *c);

/* routed_attn.c */
const c5_router_cache *c5_routed_attn_router_q(const c5_routed_attn_cache *c);
const c5_router_cache *c5_routed_attn_router_kv(const c5_routed_attn_cache *c);
int c5_routed_attn_has_light(const c5_routed_attn *m);
/* out [batch, n_local, dim]: LocalMHA's output of the last forward (C5_ERR_ARG without the light branch). */
c5_status c5_routed_attn_light_out(const c5_routed_attn *m, const c5_routed_attn_cache *c, c5_real *out);
/* out [batch, n_local, dim]: the heavy branch scattered: null_q_token (or 0) where no query went, each
   routed query's heavy output times its score where one did (the whole output without the light branch). */
c5_status c5_routed_attn_heavy_out(const c5_routed_attn *m, const c5_routed_attn_cache *c, c5_real *out);

/* routed_ff.c: out [batch, n_local, dim], the light FF on every token; the heavy FF times the score at
   the routed tokens, 0 elsewhere. */
const c5_router_cache *c5_routed_ff_router(const c5_routed_ff_cache *c);
c5_status c5_routed_ff_light_out(const c5_routed_ff *m, const c5_routed_ff_cache *c, c5_real *out);
c5_status c5_routed_ff_heavy_out(const c5_routed_ff *m, const c5_routed_ff_cache *c, c5_real *out);

/* model.c: layer i's block; whether a forward filled the cache (and its local tokens then). */
const c5_block *c5_model_block(const c5_model *m, int layer);
int c5_model_cache_filled(const c5_model_cache *c);

/* block.c */
long c5_block_cache_batch(const c5_block_cache *c);
/* Whether a forward filled the cache and no backward has spent it since (the activations a dump reads). */
int c5_block_cache_live(const c5_block_cache *c);
const c5_backend *c5_block_backend(const c5_block *b);   /* where its parameters and caches live */
const c5_routed_attn *c5_block_attn(const c5_block *b);
const c5_routed_ff *c5_block_ff(const c5_block *b);
const c5_block_config *c5_block_get_config(const c5_block *b);
#endif
