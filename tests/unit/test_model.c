/* test_model.c - the masked-byte model (lib/model.c).
   One rank: the gradient of loss_sum with respect to every parameter against
   central differences (routers soft: straight_through off, eps 0.3, docs/design.md
   §2; a perturbation that changes a selection is a kink, left out and counted),
   with and without a padding mask; the forward's loss against the same loss
   summed here from its logits; tokens, targets and lengths out of range refused
   naming the value and the place. Under mpirun (test_mpi_units.sh, 2..4 ranks):
   loss and count of the sequence sharded over the ranks equal those of the
   whole sequence on each rank alone to 1e-12, and the gradients summed over
   the ranks equal the whole sequence's (with random_route on as well); a bad
   token on one rank is every rank's error. The numeric parts need double
   precision (single: the checks of the arguments only). */
#include <omp.h>
#include <string.h>
#include "modules.h"

enum { B = 2, N = 16, DIM = 8 };

/* a library call inside a helper that returns c5_status */
#define TRY(call) do { c5_status s_ = (call); if (s_ != C5_OK) return s_; } while (0)

static c5_model_config tiny(int random_route)
{
  c5_model_config mc = { 0 };
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;
  a.dim = f.dim = DIM;
  a.num_heavy_tokens_q = 5; a.num_heavy_tokens_kv = 6;
  a.light_dim_head = 4; a.light_heads = 2; a.light_window_size = 8; a.heavy_dim_head = 4; a.heavy_heads = 2;
  a.router = f.router = mod_soft_router();
  f.num_heavy_tokens = 6; f.heavy_ff_mult = 2;
  a.random_route = f.random_route = random_route;
  a.random_seed = 17; f.random_seed = 23;
  mc.depth = 2;
  mc.max_seq_len = 24;
  mc.block.attn = a;
  mc.block.ff = f;
  return mc;
}

typedef struct {
  c5_params *p;
  c5_model *m;
  c5_model_cache *c;
  c5_layout lay;
} net_t;

static void net_free(net_t *t)
{
  c5_model_cache_destroy(&t->c);
  c5_model_destroy(&t->m);
  c5_params_destroy(&t->p);
}

/* A model on d for [B, N] tokens, parameters from c5_params_init(seed) with the norm gains and biases moved
   off 1 (so that their gradients are not tested at a special point only). */
static c5_status net_make(net_t *t, const c5_model_config *mc, const c5_dist *d, uint64_t seed)
{
  long unit;
  memset(t, 0, sizeof *t);
  TRY(c5_params_create(c5_backend_cpu(), &t->p));
  TRY(c5_model_create(mc, t->p, &t->m));
  TRY(c5_params_alloc(t->p));
  TRY(c5_params_init(t->p, seed));
  unsigned long long s = seed;
  for (long i = 0; i < c5_params_count(t->p); i++)
    if (strstr(c5_params_name(t->p, i), "gamma") || strstr(c5_params_name(t->p, i), "norm."))
      for (long e = 0; e < c5_params_numel(t->p, i); e++) c5_params_value(t->p, i)[e] += (c5_real)(0.2 * t_normal(&s));
  TRY(c5_model_layout_unit(mc, &unit));
  TRY(c5_layout_compute(d, N, unit, &t->lay));
  TRY(c5_model_cache_create(t->m, B, t->lay.n_local, &t->c));
  return C5_OK;
}

/* Tokens: bytes, ~30% of them the mask token; targets: the byte under a mask token, and ~10% of the others. */
static void make_data(unsigned long long seed, int32_t *tok, int32_t *tgt, uint8_t *mask)
{
  for (long i = 0; i < B * N; i++) {
    int byte = (int)(t_uniform(&seed) * 256);
    int masked = t_uniform(&seed) < 0.3;
    tok[i] = masked ? C5_MASK_TOKEN : byte;
    tgt[i] = masked || t_uniform(&seed) < 0.1 ? byte : -1;
    if (mask) mask[i] = i % N < N - 3 || i / N == 0;   /* batch row 1 padded at the end */
    if (mask && !mask[i]) tgt[i] = -1;
  }
}

/* This rank's slice [B, n_local] of a [B, N] array of elements of size es. */
static void slice(const c5_layout *l, const void *full, void *loc, size_t es)
{
  for (long b = 0; b < B; b++)
    memcpy((char *)loc + (size_t)(b * l->n_local) * es, (const char *)full + (size_t)(b * N + l->offset) * es,
           (size_t)l->n_local * es);
}

static long selection(const net_t *t, long *buf, long cap)
{
  long n = 0;
  const int depth = c5_model_get_config(t->m)->depth;
  for (int i = 0; i < depth; i++) {
    const c5_block_cache *bc = c5_model_block_cache(t->c, i);
    const c5_routing *rts[3] = { c5_routed_attn_routing_q(c5_block_attn_cache(bc)),
                                 c5_routed_attn_routing_kv(c5_block_attn_cache(bc)),
                                 c5_routed_ff_routing(c5_block_ff_cache(bc)) };
    for (int k = 0; k < 3; k++)
      for (long r = 0; rts[k]->routed && r < rts[k]->rows; r++)
        for (long e = rts[k]->start[r]; e < rts[k]->start[r] + rts[k]->count[r] && n < cap; e++)
          buf[n++] = rts[k]->idx[e];
  }
  return n;
}

/* Every parameter's gradient of loss_sum against central differences (the rows of token_emb of the tokens
   present, every 5th value of the tensors past 512 values, every value of the others); per parameter
   ||an - fd|| <= 1e-5 ||fd|| + 1e-8 sqrt(numel), and 1e-6 over all of them. */
static int check_fd(const char *what, const c5_dist *d, int masked)
{
  enum { CAP = 4096 };
  static long sel0[CAP], sel1[CAP];
  const double h = 1e-6;
  c5_model_config mc = tiny(0);
  net_t t;
  int32_t tok[B * N], tgt[B * N];
  uint8_t mk[B * N];
  double loss, num = 0, den = 0;
  long count, kinks = 0, total = 0, ns0, checked = 0;
  int ok = 0, nbad = 0;
  uint8_t used[C5_MASK_TOKEN + 1] = { 0 };
  T_OK(net_make(&t, &mc, d, 42));
  make_data(7, tok, tgt, masked ? mk : NULL);
  const uint8_t *mask = masked ? mk : NULL;
  T_OK(c5_model_forward(t.m, d, &t.lay, B, tok, tgt, mask, t.c, &loss, &count));
  ns0 = selection(&t, sel0, CAP);
  for (long i = 0; i < B * N; i++) used[tok[i]] = 1;
  c5_params_zero_grad(t.p);
  T_OK(c5_model_backward(t.m, d, t.c, 1.0));
  total = c5_params_total(t.p);
  for (long i = 0; i < c5_params_count(t.p); i++) {
    c5_real *v = c5_params_value(t.p, i);
    const c5_real *g = c5_params_grad(t.p, i);
    double pn = 0, pd = 0;
    const int is_tok = !strcmp(c5_params_name(t.p, i), "token_emb.weight");
    const long numel = c5_params_numel(t.p, i), stride = numel > 512 ? 5 : 1;
    for (long e = 0; e < numel; e += is_tok ? 1 : stride) {
      if (is_tok && !used[e / DIM]) {   /* a token absent from the input: no gradient, nothing to perturb */
        T_CHECK(g[e] == 0, "%s: token_emb row %ld (absent) has gradient %g", what, e / DIM, (double)g[e]);
        continue;
      }
      c5_real v0 = v[e];
      checked++;
      double lp, lm;
      v[e] = v0 + (c5_real)h;
      T_OK(c5_model_forward(t.m, d, &t.lay, B, tok, tgt, mask, t.c, &lp, NULL));
      int same = selection(&t, sel1, CAP) == ns0 && !memcmp(sel0, sel1, (size_t)ns0 * sizeof *sel0);
      v[e] = v0 - (c5_real)h;
      T_OK(c5_model_forward(t.m, d, &t.lay, B, tok, tgt, mask, t.c, &lm, NULL));
      same = same && selection(&t, sel1, CAP) == ns0 && !memcmp(sel0, sel1, (size_t)ns0 * sizeof *sel0);
      v[e] = v0;
      if (!same) { kinks++; continue; }
      double fd = (lp - lm) / (2 * h);
      pn += (fd - g[e]) * (fd - g[e]);
      pd += fd * fd;
    }
    num += pn;
    den += pd;
    if (!(sqrt(pn) <= 1e-5 * sqrt(pd) + 1e-8 * sqrt((double)c5_params_numel(t.p, i)))) {
      fprintf(stderr, "  %s: %s: ||an - fd|| = %.3e, ||fd|| = %.3e\n", what, c5_params_name(t.p, i), sqrt(pn), sqrt(pd));
      nbad++;
    }
  }
  T_CHECK(nbad == 0, "%s: %d parameters off", what, nbad);
  T_CHECK(kinks < checked / 50 + 1, "%s: %ld of %ld perturbations changed a selection", what, kinks, checked);
  T_CHECK(den > 0, "%s: zero gradient", what);
  T_CHECK(sqrt(num / den) <= 1e-6, "%s: ||an - fd|| / ||fd|| = %.3e", what, sqrt(num / den));
  printf("ok: %s: loss %.6f over %ld scored, %ld parameters (%ld of %ld values: the tokens' rows of token_emb, every "
         "5th of tensors past 512), rel %.2e, %ld at a kink\n", what, loss, count, c5_params_count(t.p), checked, total,
         sqrt(num / den), kinks);
  ok = 1;
fail:
  net_free(&t);
  return ok;
}

/* The loss is the cross-entropy of the logits the forward returns: summed here from them. */
static int check_loss(const c5_dist *d)
{
  c5_model_config mc = tiny(0);
  net_t t;
  int32_t tok[B * N], tgt[B * N];
  double loss, want = 0;
  long count, cnt = 0;
  int ok = 0;
  T_OK(net_make(&t, &mc, d, 3));
  make_data(9, tok, tgt, NULL);
  T_OK(c5_model_forward(t.m, d, &t.lay, B, tok, tgt, NULL, t.c, &loss, &count));
  const c5_real *lg = c5_model_logits(t.c);
  for (long r = 0; r < B * N; r++) {
    if (tgt[r] < 0) continue;
    double s = 0;
    for (int k = 0; k < 256; k++) s += exp((double)lg[r * 256 + k]);
    want += log(s) - lg[r * 256 + tgt[r]];
    cnt++;
  }
  T_CHECK(count == cnt && cnt > 5, "count %ld, want %ld", count, cnt);
  T_CHECK(fabs(loss - want) <= 1e-12 * fabs(want), "loss %.17g, from the logits %.17g", loss, want);
  printf("ok: loss %.12f = the cross-entropy of the logits over %ld scored positions\n", loss, count);
  ok = 1;
fail:
  net_free(&t);
  return ok;
}

/* Tokens and targets out of range, a sequence past max_seq_len: C5_ERR_ARG naming value and place. */
static int check_args(const c5_dist *d)
{
  c5_model_config mc = tiny(0);
  net_t t;
  int32_t tok[B * N], tgt[B * N];
  int ok = 0;
  double loss;
  T_OK(net_make(&t, &mc, d, 3));
  make_data(9, tok, tgt, NULL);
  tok[N + 5] = 257;
  T_FAILS(c5_model_forward(t.m, d, &t.lay, B, tok, tgt, NULL, t.c, &loss, NULL), C5_ERR_ARG,
          "token 257 at batch 1, position 5");
  tok[N + 5] = -1;
  T_FAILS(c5_model_forward(t.m, d, &t.lay, B, tok, tgt, NULL, t.c, &loss, NULL), C5_ERR_ARG,
          "token -1 at batch 1, position 5");
  tok[N + 5] = 256;
  tgt[3] = 256;
  T_FAILS(c5_model_forward(t.m, d, &t.lay, B, tok, tgt, NULL, t.c, &loss, NULL), C5_ERR_ARG,
          "target 256 at batch 0, position 3");
  tgt[3] = -1;
  T_OK(c5_model_forward(t.m, d, &t.lay, B, tok, tgt, NULL, t.c, &loss, NULL));
  c5_layout longer = t.lay;
  longer.n = 25;
  T_FAILS(c5_model_forward(t.m, d, &longer, B, tok, tgt, NULL, t.c, &loss, NULL), C5_ERR_ARG, "max_seq_len 24");
  T_FAILS(c5_model_backward(t.m, d, t.c, 1.0 / 0.0), C5_ERR_ARG, "not finite");
  printf("ok: tokens 257 and -1, target 256, a sequence of 25 > max_seq_len refused by name\n");
  ok = 1;
fail:
  net_free(&t);
  return ok;
}

/* The loss and every gradient bit for bit the same on 1 and 4 threads (fixed partitions, docs/design.md). */
static int check_threads(const c5_dist *d)
{
  c5_model_config mc = tiny(0);
  net_t t;
  int32_t tok[B * N], tgt[B * N];
  uint8_t mk[B * N];
  double loss[2];
  c5_real *g1 = NULL;
  int ok = 0;
  T_OK(net_make(&t, &mc, d, 5));
  make_data(13, tok, tgt, mk);
  T_CHECK((g1 = malloc((size_t)c5_params_total(t.p) * sizeof *g1)) != NULL, "out of memory");
  for (int k = 0; k < 2; k++) {
    omp_set_num_threads(k == 0 ? 1 : 4);
    c5_params_zero_grad(t.p);
    T_OK(c5_model_forward(t.m, d, &t.lay, B, tok, tgt, mk, t.c, &loss[k], NULL));
    T_OK(c5_model_backward(t.m, d, t.c, 0.25));
    if (k == 0) memcpy(g1, c5_params_grad(t.p, 0), (size_t)c5_params_total(t.p) * sizeof *g1);
  }
  T_CHECK(loss[0] == loss[1], "loss %.17g on 1 thread, %.17g on 4", loss[0], loss[1]);
  T_CHECK(!memcmp(g1, c5_params_grad(t.p, 0), (size_t)c5_params_total(t.p) * sizeof *g1),
          "gradients differ between 1 and 4 threads");
  printf("ok: loss and gradients bit for bit the same on 1 and 4 threads\n");
  ok = 1;
fail:
  free(g1);
  net_free(&t);
  return ok;
}

/* c5_model_set_random_seed: a model told seed 99 routes (and so scores) as one created with seed 99 for both
   modules, and another seed routes elsewhere. */
static int check_random_seed(const c5_dist *d)
{
  c5_model_config mc = tiny(1), m99 = tiny(1);
  m99.block.attn.random_seed = m99.block.ff.random_seed = 99;
  net_t t, u;
  int32_t tok[B * N], tgt[B * N];
  double l0, l1, l2;
  int ok = 0;
  memset(&u, 0, sizeof u);
  T_OK(net_make(&t, &mc, d, 5));
  T_OK(net_make(&u, &m99, d, 5));
  make_data(13, tok, tgt, NULL);
  T_OK(c5_model_forward(t.m, d, &t.lay, B, tok, tgt, NULL, t.c, &l0, NULL));
  T_OK(c5_model_set_random_seed(t.m, 99));
  T_OK(c5_model_forward(t.m, d, &t.lay, B, tok, tgt, NULL, t.c, &l1, NULL));
  T_OK(c5_model_forward(u.m, d, &u.lay, B, tok, tgt, NULL, u.c, &l2, NULL));
  T_CHECK(l1 == l2, "set_random_seed(99): loss %.17g, created with seed 99: %.17g", l1, l2);
  T_CHECK(l0 != l1, "seeds 17/23 and 99 give the same loss %.17g: the seed changed no route", l0);
  printf("ok: c5_model_set_random_seed routes as a model created with that seed (loss %.12f; %.12f before)\n",
         l1, l0);
  ok = 1;
fail:
  net_free(&t);
  net_free(&u);
  return ok;
}

/* Sharded over W against whole on S: loss, count, and the gradients summed over W's ranks. */
static int check_shard(const char *what, c5_dist *W, c5_dist *S, int random_route, int masked)
{
  c5_model_config mc = tiny(random_route);
  net_t w, s;
  int32_t tok[B * N], tgt[B * N], ltok[B * N], ltgt[B * N];
  uint8_t mk[B * N], lmk[B * N];
  double lw, ls;
  long cw, cs;
  int ok = 0;
  memset(&s, 0, sizeof s);
  T_OK(net_make(&w, &mc, W, 42));
  T_OK(net_make(&s, &mc, S, 42));
  make_data(11, tok, tgt, masked ? mk : NULL);
  slice(&w.lay, tok, ltok, sizeof *tok);
  slice(&w.lay, tgt, ltgt, sizeof *tgt);
  if (masked) slice(&w.lay, mk, lmk, 1);
  T_OK(c5_model_forward(w.m, W, &w.lay, B, ltok, ltgt, masked ? lmk : NULL, w.c, &lw, &cw));
  T_OK(c5_model_forward(s.m, S, &s.lay, B, tok, tgt, masked ? mk : NULL, s.c, &ls, &cs));
  T_CHECK(cw == cs, "%s: count %ld sharded, %ld whole", what, cw, cs);
  T_CHECK(fabs(lw - ls) <= 1e-12 * fabs(ls), "%s: loss %.17g sharded, %.17g whole", what, lw, ls);
  c5_params_zero_grad(w.p);
  c5_params_zero_grad(s.p);
  T_OK(c5_model_backward(w.m, W, w.c, 1.0 / (double)cw));
  T_OK(c5_model_backward(s.m, S, s.c, 1.0 / (double)cs));
  T_OK(c5_params_allreduce_grad(w.p, W));
  double worst = 0;
  for (long i = 0; i < c5_params_count(s.p); i++) {
    const c5_real *a = c5_params_grad(w.p, i), *b = c5_params_grad(s.p, i);
    double nd = 0, nb = 0;
    for (long e = 0; e < c5_params_numel(s.p, i); e++) { nd += (a[e] - b[e]) * (a[e] - b[e]); nb += b[e] * b[e]; }
    double rel = sqrt(nd) / (sqrt(nb) + 1e-300);
    T_CHECK(sqrt(nd) <= 1e-11 * sqrt(nb) + 1e-15, "%s: gradient of %s: sharded vs whole %.3e relative", what,
            c5_params_name(s.p, i), rel);
    if (nb > 0 && rel > worst) worst = rel;
  }
  if (c5_dist_rank(W) == 0)
    printf("ok: %s: %d ranks, loss %.15f over %ld = whole (diff %.1e), gradients within %.1e\n", what,
           c5_dist_size(W), lw, cw, fabs(lw - ls), worst);
  ok = 1;
fail:
  net_free(&w);
  net_free(&s);
  return ok;
}

/* A bad token on the last rank only: every rank returns its error. */
static int check_agree(c5_dist *W)
{
  c5_model_config mc = tiny(0);
  net_t w;
  int32_t tok[B * N], tgt[B * N], ltok[B * N], ltgt[B * N];
  int ok = 0;
  T_OK(net_make(&w, &mc, W, 1));
  make_data(11, tok, tgt, NULL);
  tok[N + N - 1] = 300;   /* batch 1, the last position: on the last rank */
  slice(&w.lay, tok, ltok, sizeof *tok);
  slice(&w.lay, tgt, ltgt, sizeof *tgt);
  T_FAILS(c5_model_forward(w.m, W, &w.lay, B, ltok, ltgt, NULL, w.c, NULL, NULL), C5_ERR_ARG,
          "token 300 at batch 1, position 15");
  if (c5_dist_rank(W) == 0) printf("ok: a token of 300 on the last rank is every rank's error\n");
  ok = 1;
fail:
  net_free(&w);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_dist *W = NULL, *S = NULL;
  int ok = 0, size;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  T_OK(c5_dist_create(MPI_COMM_WORLD, &W));
  T_OK(c5_dist_create(MPI_COMM_SELF, &S));
  if (size == 1 && !check_args(S)) goto fail;
  if (size > 1 && !check_agree(W)) goto fail;
  if (!C5_USE_DOUBLE) {
    printf("single precision: the numeric checks need double (args only)\n");
    ok = 1;
    goto fail;
  }
  if (size == 1) {
    if (!check_loss(S)) goto fail;
    if (!check_threads(S)) goto fail;
    if (!check_random_seed(S)) goto fail;
    /* thousands of tiny forwards: on one thread, where a loaded machine's thread barriers would dominate
       (the thread count changes no bit: check_threads) */
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    int fd_ok = check_fd("fd, no mask", S, 0) && check_fd("fd, padding mask", S, 1);
    omp_set_num_threads(nt);
    if (!fd_ok) goto fail;
  }
  if (!check_shard("shard", W, S, 0, 0)) goto fail;
  if (!check_shard("shard, padding mask", W, S, 0, 1)) goto fail;
  if (!check_shard("shard, random_route", W, S, 1, 0)) goto fail;
  ok = 1;
fail:
  c5_dist_destroy(&S);
  c5_dist_destroy(&W);
  MPI_Finalize();
  return ok ? 0 : 1;
}
