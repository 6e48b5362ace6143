/* test_layout_unit.c - the layout unit each module asks for
   (c5_<module>_layout_unit), value by value: what each forward's windows
   need (routed attention: its LocalMHA window light_window_size / 2,
   rounded down, or 1 without the light branch; autoregressive attention:
   lcm of its light and heavy windows; routed FF and cross attention: 1; the
   block: its attention's), that the options which do not cut windows
   (routes, rotary, scores, null q tokens, route_block_size, cosine routing,
   random routes) leave it alone, and that a config whose windows make no
   unit is C5_ERR_ARG naming the option. One process; no MPI call. */
#include <limits.h>
#include <string.h>
#include "harness.h"

static int n_ok, n_fail;

/* One line per value. */
static void expect(const char *what, c5_status st, long got, long want)
{
  int ok = st == C5_OK && got == want;
  printf("%-72s %s (unit %ld, want %ld)\n", what, ok ? "ok" : "FAILED", st == C5_OK ? got : -1L, want);
  if (!ok && st != C5_OK) fprintf(stderr, "  %s: %s\n", c5_status_string(st), c5_last_error());
  c5_error_clear();
  ok ? n_ok++ : n_fail++;
}

/* A config that makes no unit: C5_ERR_ARG and a message containing needle. */
static void refuse(const char *what, c5_status st, const char *needle)
{
  char msg[256];
  snprintf(msg, sizeof msg, "%s", st == C5_OK ? "accepted" : c5_last_error());
  msg[strcspn(msg, "\n")] = 0;   /* the message, without its file:line trace */
  int ok = st == C5_ERR_ARG && strstr(msg, needle);
  printf("%-72s %s (%s)\n", what, ok ? "ok" : "FAILED", msg);
  c5_error_clear();
  ok ? n_ok++ : n_fail++;
}

int main(void)
{
  long u = 0, u2 = 0;
  c5_status st;

  /* ConditionalRoutedFeedForward: token by token, any layout */
  c5_routed_ff_config ff = C5_ROUTED_FF_CONFIG_DEFAULT;
  ff.dim = 8; ff.num_heavy_tokens = 4;
  st = c5_routed_ff_layout_unit(&ff, &u);
  expect("ff: defaults", st, u, 1);
  c5_routed_ff_config ffo = ff;
  ffo.router.route_block_size = 9; ffo.router.cosine_sim_routing = 1; ffo.heavy_ff_mult = 2;
  st = c5_routed_ff_layout_unit(&ffo, &u);
  expect("ff: route_block_size 9, cosine routing, heavy mult 2", st, u, 1);

  /* ConditionalRoutedAttention: the LocalMHA window, or 1 without it */
  c5_routed_attn_config at = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  at.dim = 8; at.num_heavy_tokens_q = 4; at.num_heavy_tokens_kv = 4;
  st = c5_routed_attn_layout_unit(&at, &u);
  expect("attn: defaults (light_window_size 128)", st, u, 64);
  const struct { long w, want; } wins[] = { { 10, 5 }, { 9, 4 }, { 16, 8 }, { 3, 1 }, { 2, 1 } };
  for (size_t i = 0; i < sizeof wins / sizeof *wins; i++) {
    c5_routed_attn_config a = at;
    char what[96];
    a.light_window_size = wins[i].w;
    snprintf(what, sizeof what, "attn: light_window_size %ld", wins[i].w);
    st = c5_routed_attn_layout_unit(&a, &u);
    expect(what, st, u, wins[i].want);
  }
  c5_routed_attn_config atn = at;
  atn.has_light_attn = 0;
  st = c5_routed_attn_layout_unit(&atn, &u);
  expect("attn: has_light_attn 0 (light_window_size 128 ignored)", st, u, 1);
  atn.light_window_size = 0;
  st = c5_routed_attn_layout_unit(&atn, &u);
  expect("attn: has_light_attn 0, light_window_size 0 (no window to check)", st, u, 1);
  c5_routed_attn_config ato = at;
  ato.light_window_size = 10; ato.num_routed_kv = 2; ato.heavy_heads = 4; ato.rotary_emb = 1;
  ato.multiply_keys_by_score = 1; ato.multiply_queries_by_score = 1; ato.use_null_q_tokens = 0;
  ato.kv_gather_batch_bug = 1; ato.router.route_block_size = 7; ato.router.cosine_sim_routing = 1;
  st = c5_routed_attn_layout_unit(&ato, &u);
  expect("attn: window 10, 2 kv routes, rotary, scores, no null q, blocks of 7", st, u, 5);
  ato.has_light_attn = 0;
  st = c5_routed_attn_layout_unit(&ato, &u);
  expect("attn: the same without the light branch", st, u, 1);
  c5_routed_attn_config atb = at;
  atb.light_window_size = 1;
  refuse("attn: light_window_size 1 with the light branch", c5_routed_attn_layout_unit(&atb, &u),
         "light_window_size = 1 must be >= 2");
  refuse("attn: NULL config", c5_routed_attn_layout_unit(NULL, &u), "NULL");

  /* ConditionalRoutedAutoregressiveAttention: lcm of the light and heavy windows */
  c5_routed_ar_attn_config ar = C5_ROUTED_AR_ATTN_CONFIG_DEFAULT;
  ar.dim = 8; ar.num_heavy_tokens_q = 2; ar.num_heavy_tokens_kv = 4;
  st = c5_routed_ar_attn_layout_unit(&ar, &u);
  expect("ar_attn: defaults (light 128, heavy 0 = light)", st, u, 128);
  const struct { long l, h, want; } arw[] = { { 4, 6, 12 }, { 8, 0, 8 }, { 4, 8, 8 }, { 8, 4, 8 }, { 6, 6, 6 },
                                              { 1, 0, 1 }, { 1, 7, 7 }, { 9, 6, 18 } };
  for (size_t i = 0; i < sizeof arw / sizeof *arw; i++) {
    c5_routed_ar_attn_config a = ar;
    char what[96];
    a.light_window_size = arw[i].l; a.heavy_window_size = arw[i].h;
    snprintf(what, sizeof what, "ar_attn: light window %ld, heavy window %ld", arw[i].l, arw[i].h);
    st = c5_routed_ar_attn_layout_unit(&a, &u);
    expect(what, st, u, arw[i].want);
  }
  c5_routed_ar_attn_config aro = ar;
  aro.light_window_size = 4; aro.heavy_window_size = 6; aro.rotary_emb = 1; aro.num_routed_kv = 2;
  aro.heavy_heads = 4; aro.random_route = 1; aro.multiply_queries_by_score = 1; aro.router.route_block_size = 5;
  st = c5_routed_ar_attn_layout_unit(&aro, &u);
  expect("ar_attn: windows 4/6 with rotary, 2 routes, random routes, blocks of 5", st, u, 12);
  c5_routed_ar_attn_config arb = ar;
  arb.light_window_size = 0;
  refuse("ar_attn: light_window_size 0", c5_routed_ar_attn_layout_unit(&arb, &u), "light_window_size = 0 must be > 0");
  arb = ar;
  arb.heavy_window_size = -2;
  refuse("ar_attn: heavy_window_size -2", c5_routed_ar_attn_layout_unit(&arb, &u), "heavy_window_size = -2");
  arb = ar;
  arb.light_window_size = LONG_MAX; arb.heavy_window_size = LONG_MAX - 1;   /* coprime: lcm past LONG_MAX */
  refuse("ar_attn: windows LONG_MAX and LONG_MAX - 1: the lcm overflows", c5_routed_ar_attn_layout_unit(&arb, &u),
         "overflows");

  /* ConditionalRoutedCrossAttention: 1 on both sequences */
  c5_routed_cross_attn_config cr = C5_ROUTED_CROSS_ATTN_CONFIG_DEFAULT;
  cr.dim = 8; cr.num_tokens_q = 4; cr.num_tokens_kv = 4;
  u = u2 = 0;
  st = c5_routed_cross_attn_layout_unit(&cr, &u, &u2);
  expect("cross_attn: defaults, queries", st, u, 1);
  expect("cross_attn: defaults, context", st, u2, 1);
  cr.route_block_size = 5; cr.kv_routing_tokens = 2; cr.multiply_keys_by_score = 1;
  u = u2 = 0;
  st = c5_routed_cross_attn_layout_unit(&cr, &u, &u2);
  expect("cross_attn: kv blocks of 5, 2 kv routes, keys by score: queries", st, u, 1);
  expect("cross_attn: kv blocks of 5, 2 kv routes, keys by score: context", st, u2, 1);
  u2 = 0;
  st = c5_routed_cross_attn_layout_unit(&cr, NULL, &u2);
  expect("cross_attn: the context's alone (queries' pointer NULL)", st, u2, 1);

  /* ConditionalRoutedTransformerBlock: lcm of its attention's and its FF's, so the attention's */
  c5_block_config bl = { .attn = at, .ff = ff };
  st = c5_block_layout_unit(&bl, &u);
  expect("block: defaults (window 128)", st, u, 64);
  bl.attn.light_window_size = 8;
  st = c5_block_layout_unit(&bl, &u);
  expect("block: light_window_size 8", st, u, 4);
  bl.ff.router.route_block_size = 3;
  st = c5_block_layout_unit(&bl, &u);
  expect("block: light_window_size 8, ff route_block_size 3", st, u, 4);
  bl.attn.has_light_attn = 0;
  st = c5_block_layout_unit(&bl, &u);
  expect("block: no light branch", st, u, 1);
  bl.attn.has_light_attn = 1; bl.attn.light_window_size = 0;
  refuse("block: light_window_size 0 with the light branch", c5_block_layout_unit(&bl, &u),
         "light_window_size = 0 must be >= 2");

  printf("test_layout_unit: %d ok, %d failed\n", n_ok, n_fail);
  return n_fail ? 1 : 0;
}
