/* test_init.c - parameter initialization (c5_params_set_init,
   c5_params_init): each rule's values (ones, zeros, N(0,1) moments,
   U(+-1/sqrt(fan_in)) bounds and moments) over every parameter of the
   masked-byte model and of the autoregressive and cross attentions (so every
   module registers a rule for each parameter), the same values whatever the
   registration order and the thread count, determinism by seed, and the
   error for a parameter without a rule. */
#include <omp.h>
#include <string.h>
#include "harness.h"

static c5_model_config small_model(void)
{
  c5_model_config mc = { 0 };
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;
  a.dim = f.dim = 48;
  a.num_heavy_tokens_q = a.num_heavy_tokens_kv = 8;
  a.light_dim_head = 16; a.light_heads = 2; a.light_window_size = 16; a.heavy_dim_head = 16; a.heavy_heads = 4;
  f.num_heavy_tokens = 8;
  mc.depth = 2;
  mc.max_seq_len = 2048;
  mc.block.attn = a;
  mc.block.ff = f;
  return mc;
}

static int ends_with(const char *s, const char *t)
{
  size_t a = strlen(s), b = strlen(t);
  return a >= b && !strcmp(s + a - b, t);
}

/* The expected rule of a parameter by its name (the reference's modules, PyTorch defaults): 1 norm gains,
   0 norm biases, N(0,1) embeddings and randn parameters, else a Linear's U(+-1/sqrt(fan_in)). */
typedef enum { R_ONE, R_ZERO, R_NORMAL, R_UNIFORM } rule_t;
static rule_t rule_of(const char *nm)
{
  if (ends_with(nm, "gamma") || ends_with(nm, "norm.weight")) return R_ONE;
  if (ends_with(nm, "norm.bias")) return R_ZERO;
  if (ends_with(nm, "_emb.weight") || ends_with(nm, "routing_token") || ends_with(nm, "null_q_token") ||
      ends_with(nm, "null_kv"))
    return R_NORMAL;
  return R_UNIFORM;
}

/* The fan-in of a Linear's weight (its columns), or of a bias (its weight's: name with .bias -> .weight). */
static long fan_in_of(const c5_params *p, long i)
{
  char w[256];
  const char *nm = c5_params_name(p, i);
  long dims[C5_PARAM_MAXDIM], j = i;
  if (ends_with(nm, ".bias")) {
    snprintf(w, sizeof w, "%.*s.weight", (int)(strlen(nm) - 5), nm);
    if (c5_params_find(p, w, &j) != C5_OK) return -1;
  }
  int nd = c5_params_shape(p, j, dims);
  return nd == 2 ? dims[1] : -1;
}

/* Every value against its rule; the N(0,1) and U moments pooled over the table, to 6 standard errors. */
static int check_rules(const char *what, const c5_params *p)
{
  double s1 = 0, s2 = 0, s4 = 0, u1 = 0, u2 = 0;
  long nn = 0, nu = 0;
  int ok = 0;
  for (long i = 0; i < c5_params_count(p); i++) {
    const char *nm = c5_params_name(p, i);
    const c5_real *v = c5_params_value(p, i);
    long n = c5_params_numel(p, i);
    rule_t r = rule_of(nm);
    if (r == R_ONE || r == R_ZERO)
      for (long e = 0; e < n; e++) T_CHECK(v[e] == (r == R_ONE), "%s: %s[%ld] = %g", what, nm, e, (double)v[e]);
    if (r == R_NORMAL)
      for (long e = 0; e < n; e++) { double x = v[e]; s1 += x; s2 += x * x; s4 += x * x * x * x; nn++; }
    if (r == R_UNIFORM) {
      long fi = fan_in_of(p, i);
      T_CHECK(fi > 0, "%s: %s: no fan-in", what, nm);
      double bound = 1.0 / sqrt((double)fi), mx = 0;
      for (long e = 0; e < n; e++) {
        double x = v[e] / bound;
        T_CHECK(fabs(x) <= 1, "%s: %s[%ld] = %g outside +-%g", what, nm, e, (double)v[e], bound);
        mx = fmax(mx, fabs(x));
        u1 += x; u2 += x * x; nu++;
      }
      /* the draws fill the interval: a rule that scaled by the wrong fan-in would stay well inside */
      T_CHECK(n < 64 || mx > 0.9, "%s: %s: largest |v| is %g of the bound", what, nm, mx);
    }
  }
  T_CHECK(nn > 10000 && nu > 10000, "%s: %ld normal, %ld uniform values", what, nn, nu);
  double m = s1 / nn, var = s2 / nn - m * m, k = s4 / nn;
  T_CHECK(fabs(m) < 6 / sqrt((double)nn), "%s: N(0,1) mean %g over %ld", what, m, nn);
  T_CHECK(fabs(var - 1) < 6 * sqrt(2.0 / nn), "%s: N(0,1) variance %g over %ld", what, var, nn);
  T_CHECK(fabs(k - 3) < 6 * sqrt(96.0 / nn), "%s: N(0,1) fourth moment %g over %ld", what, k, nn);
  m = u1 / nu;
  var = u2 / nu - m * m;
  T_CHECK(fabs(m) < 6 * sqrt(1.0 / 3 / nu), "%s: uniform mean %g (of the bound) over %ld", what, m, nu);
  T_CHECK(fabs(var - 1.0 / 3) < 6 * sqrt(4.0 / 45 / nu), "%s: uniform variance %g (of the bound^2) over %ld", what,
          var, nu);
  printf("ok: %s: %ld parameters by rule; N(0,1) mean %.4f var %.4f over %ld; U var %.4f (1/3) over %ld\n", what,
         c5_params_count(p), s1 / nn, s2 / nn, nn, var, nu);
  ok = 1;
fail:
  return ok;
}

/* Same values for the same names in two tables. */
static int same_by_name(const char *what, const c5_params *a, const c5_params *b, int want_same)
{
  long diff = 0, tot = 0;
  for (long i = 0; i < c5_params_count(a); i++) {
    long j;
    if (c5_params_find(b, c5_params_name(a, i), &j) != C5_OK) { c5_error_clear(); continue; }
    long n = c5_params_numel(a, i);
    T_CHECK(n == c5_params_numel(b, j), "%s: %s sizes differ", what, c5_params_name(a, i));
    tot += n;
    if (memcmp(c5_params_value(a, i), c5_params_value(b, j), (size_t)n * sizeof(c5_real))) diff++;
  }
  T_CHECK(tot > 0, "%s: no common parameter", what);
  if (want_same) T_CHECK(diff == 0, "%s: %ld parameters differ", what, diff);
  return 1;
fail:
  return 0;
}

int main(void)
{
  c5_params *a = NULL, *b = NULL, *c = NULL;
  c5_model *ma = NULL, *mb = NULL;
  c5_routed_ar_attn *ar = NULL;
  c5_routed_cross_attn *ca = NULL;
  c5_model_config mc = small_model();
  int ok = 0;
  long idx, dummy;
  /* A: the model; B: a parameter of its own first, so every slot of the model moves */
  T_OK(c5_params_create(c5_backend_cpu(), &a));
  T_OK(c5_model_create(&mc, a, &ma));
  T_OK(c5_params_alloc(a));
  T_OK(c5_params_init(a, 1234));
  if (!check_rules("model (seed 1234)", a)) goto fail;

  T_OK(c5_params_create(c5_backend_cpu(), &b));
  long d1[1] = { 5 };
  T_OK(c5_params_add(b, "", "first", 1, d1, &idx));
  T_OK(c5_params_set_init(b, idx, C5_INIT_NORMAL, 0));
  T_OK(c5_model_create(&mc, b, &mb));
  T_OK(c5_params_alloc(b));
  T_OK(c5_params_find(b, "token_emb.weight", &dummy));
  T_CHECK(dummy == 1, "token_emb.weight at slot %ld in B", dummy);
  T_OK(c5_params_init(b, 1234));
  if (!same_by_name("registration order", a, b, 1)) goto fail;
  printf("ok: the same values by name with every slot moved\n");

  /* C: the model's names registered in reverse order, each with A's rule and fan-in */
  T_OK(c5_params_create(c5_backend_cpu(), &c));
  for (long i = c5_params_count(a) - 1; i >= 0; i--) {
    long dims[C5_PARAM_MAXDIM];
    int nd = c5_params_shape(a, i, dims);
    rule_t r = rule_of(c5_params_name(a, i));
    T_OK(c5_params_add(c, "", c5_params_name(a, i), nd, dims, &idx));
    T_OK(c5_params_set_init(c, idx, r == R_ONE ? C5_INIT_ONE : r == R_ZERO ? C5_INIT_ZERO : r == R_NORMAL
                                    ? C5_INIT_NORMAL : C5_INIT_UNIFORM_FAN_IN, fan_in_of(a, i)));
  }
  T_OK(c5_params_alloc(c));
  T_OK(c5_params_init(c, 1234));
  if (!same_by_name("reverse order", a, c, 1)) goto fail;
  printf("ok: the same values registered in reverse order\n");

  /* thread count: pos_emb [2048, 48] is filled in parallel (above 65536 elements) */
  omp_set_num_threads(1);
  T_OK(c5_params_init(b, 99));
  omp_set_num_threads(4);
  T_OK(c5_params_init(c, 99));
  if (!same_by_name("threads 1 and 4", b, c, 1)) goto fail;
  T_CHECK(c5_params_numel(a, 1) > 65536, "pos_emb has only %ld values", c5_params_numel(a, 1));
  printf("ok: the same values on 1 and 4 threads\n");

  /* seed: another seed changes every random parameter, the same seed reproduces */
  T_OK(c5_params_init(a, 99));
  if (!same_by_name("seed 99 twice", a, c, 1)) goto fail;
  T_OK(c5_params_init(c, 100));
  {
    long same = 0;
    for (long i = 0; i < c5_params_count(a); i++) {
      long j;
      T_OK(c5_params_find(c, c5_params_name(a, i), &j));
      if (rule_of(c5_params_name(a, i)) >= R_NORMAL &&
          !memcmp(c5_params_value(a, i), c5_params_value(c, j), (size_t)c5_params_numel(a, i) * sizeof(c5_real)))
        same++;
    }
    T_CHECK(same == 0, "%ld random parameters equal under seeds 99 and 100", same);
    if (!check_rules("model (seed 100)", c)) goto fail;
  }
  printf("ok: seeds 99 twice equal, 99 and 100 differ\n");

  /* the other modules register every parameter's rule too */
  c5_params_destroy(&c);
  T_OK(c5_params_create(c5_backend_cpu(), &c));
  {
    c5_routed_ar_attn_config r = C5_ROUTED_AR_ATTN_CONFIG_DEFAULT;
    r.dim = 32; r.num_heavy_tokens_q = r.num_heavy_tokens_kv = 4; r.light_window_size = 8;
    r.light_heads = r.heavy_heads = 2; r.light_dim_head = r.heavy_dim_head = 8; r.num_routed_kv = 2;
    c5_routed_cross_attn_config x = C5_ROUTED_CROSS_ATTN_CONFIG_DEFAULT;
    x.dim = 32; x.num_tokens_q = x.num_tokens_kv = 4; x.heads = 2; x.dim_head = 8;
    T_OK(c5_routed_ar_attn_create(&r, c, "ar", &ar));
    T_OK(c5_routed_cross_attn_create(&x, c, "cross", &ca));
  }
  T_OK(c5_params_alloc(c));
  T_OK(c5_params_init(c, 5));
  for (long i = 0; i < c5_params_count(c); i++) {
    const char *nm = c5_params_name(c, i);
    rule_t r = rule_of(nm);
    const c5_real *v = c5_params_value(c, i);
    for (long e = 0; e < c5_params_numel(c, i); e++) {
      if (r == R_ONE || r == R_ZERO) T_CHECK(v[e] == (r == R_ONE), "%s[%ld] = %g", nm, e, (double)v[e]);
      if (r == R_UNIFORM) T_CHECK(fabs(v[e]) < 1 / sqrt((double)fan_in_of(c, i)), "%s[%ld] = %g", nm, e, (double)v[e]);
    }
  }
  printf("ok: autoregressive and cross attention: %ld parameters, each by its rule\n", c5_params_count(c));

  /* a parameter without a rule: refused, by name, before anything is written */
  c5_params_destroy(&c);
  T_OK(c5_params_create(c5_backend_cpu(), &c));
  T_OK(c5_params_add(c, "", "a", 1, d1, &idx));
  T_OK(c5_params_set_init(c, idx, C5_INIT_ONE, 0));
  T_OK(c5_params_add(c, "layers.3", "mystery.weight", 1, d1, &idx));
  T_FAILS(c5_params_init(c, 1), C5_ERR_ARG, "not allocated");
  T_OK(c5_params_alloc(c));
  T_FAILS(c5_params_init(c, 1), C5_ERR_ARG, "layers.3.mystery.weight has no initialization rule");
  T_CHECK(c5_params_value(c, 0)[0] == 0, "a was written before the error");
  T_FAILS(c5_params_set_init(c, idx, C5_INIT_UNIFORM_FAN_IN, 0), C5_ERR_ARG, "layers.3.mystery.weight");
  T_FAILS(c5_params_set_init(c, 7, C5_INIT_ONE, 0), C5_ERR_ARG, "no parameter 7");
  printf("ok: a parameter without a rule is named\n");
  ok = 1;
fail:
  c5_model_destroy(&ma);
  c5_model_destroy(&mb);
  c5_routed_ar_attn_destroy(&ar);
  c5_routed_cross_attn_destroy(&ca);
  c5_params_destroy(&a);
  c5_params_destroy(&b);
  c5_params_destroy(&c);
  return ok ? 0 : 1;
}
