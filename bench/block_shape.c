/* block_shape.c - the benchmarks' block shapes and their FLOP count (block_shape.h). */
#include <math.h>
#include <string.h>
#include "block_shape.h"

c5_block_config block_shape_issue(long n)
{
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;   /* 8 + 8 heads of 64, window 128, one kv route */
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;       /* mults 0.5 and 4 */
  a.dim = f.dim = 512;
  a.num_heavy_tokens_q = a.num_heavy_tokens_kv = f.num_heavy_tokens = n / 16;
  a.router.straight_through = f.router.straight_through = 1;
  return (c5_block_config){ .attn = a, .ff = f };
}

c5_block_config block_shape_small(long n)
{
  c5_block_config c = block_shape_issue(n);
  c.attn.dim = c.ff.dim = 256;
  c.attn.light_heads = c.attn.heavy_heads = 4;
  return c;
}

int block_shape_by_name(const char *name, long n, c5_block_config *out)
{
  if (!strcmp(name, "small")) *out = block_shape_small(n);
  else if (!strcmp(name, "issue")) *out = block_shape_issue(n);
  else return -1;
  return 0;
}

double block_shape_flops(const c5_block_config *cfg, long batch, long n)
{
  const c5_routed_attn_config *a = &cfg->attn;
  const c5_routed_ff_config *f = &cfg->ff;
  const double d = a->dim, Dl = (double)a->light_heads * a->light_dim_head;
  const double Dh = (double)a->heavy_heads * a->heavy_dim_head, r = a->num_routed_kv;
  const double hl = (int)(a->dim * f->light_ff_mult), hh = (int)(a->dim * f->heavy_ff_mult);
  const long w = a->light_window_size / 2;   /* LocalMHA's window; each query sees its own and one either side */
  double pairs = 0;
  for (long s = 0; s < n; s += w) {
    double len = fmin(w, n - s), prev = s > 0 ? w : 0, next = fmin(w, fmax(0, n - s - w));
    pairs += len * (prev + len + next);
  }
  const long nq = a->num_heavy_tokens_q < n ? a->num_heavy_tokens_q : n;
  const long nk = a->num_heavy_tokens_kv < n ? a->num_heavy_tokens_kv : n;
  const long nf = f->num_heavy_tokens < n ? f->num_heavy_tokens : n;
  /* a router scores every token against its routing tokens only when it has something to choose */
  const double routes = (a->num_heavy_tokens_q < n) + (a->num_heavy_tokens_kv < n) * r + (f->num_heavy_tokens < n);
  double fl = 2.0 * n * d * 3 * Dl + 2.0 * n * Dl * d     /* light to_qkv, to_out */
            + 4.0 * pairs * Dl                             /* light q k^T and p v */
            + 4.0 * n * d * hl                             /* light ff */
            + 2.0 * n * d * routes                         /* router logits */
            + 2.0 * nq * d * Dh + 2.0 * r * nk * d * 2 * Dh + 2.0 * nq * Dh * d   /* heavy to_q, to_kv, to_out */
            + 4.0 * nq * (nk + 1.0) * Dh                   /* heavy q k^T and p v, the null key included */
            + 4.0 * nf * d * hh;                           /* heavy ff */
  return fl * batch;
}
