/* test_adamw.c - the AdamW optimizer (lib/optim.c):
     the schedule at chosen steps against values worked out by hand;
     every config option refused out of range, the message naming it;
     the decay rule by name (a step on zero gradients shrinks exactly the
     decayed parameters);
     several steps with warm-up and cosine, clipping on and off, decay_all,
     against a plain-double AdamW written here (torch's formulas);
     a non-finite gradient: C5_ERR_NUMERIC naming the parameter and element,
     nothing changed;
     the golden file from torch (tests/golden/optim_adamw.h5,
     make_optim_golden.py): values, moments, lr and norm after each step.
   test_adamw --dump FILE writes a run's parameters and moments (for
   test_threads.sh: bit-identical at 1 and 2 threads). */
#include <string.h>
#include "harness.h"
#include "colt5_io.h"

#define NP 12
#define MAXN 90000
/* decay: what the rule must say for each name, written out by hand */
static const struct { const char *name; int ndim; long dims[3]; int decay; } SPEC[NP] = {
  { "a.weight", 2, { 6, 5 }, 1 },
  { "b.bias", 1, { 5 }, 0 },
  { "token_emb.weight", 2, { 7, 4 }, 0 },
  { "pos_emb.weight", 2, { 5, 4 }, 0 },
  { "norm.gamma", 1, { 4 }, 0 },
  { "ln.weight", 1, { 5 }, 0 },                     /* rank 1 */
  { "c.weight", 3, { 3, 2, 2 }, 0 },                /* rank 3 */
  { "xweight", 2, { 2, 2 }, 0 },                    /* no ".weight" */
  { "layers.0.router.routing_token", 2, { 1, 8 }, 0 },
  { "layers.1.heavy_ff.0.weight", 2, { 16, 8 }, 1 },
  { "big.weight", 2, { 300, 300 }, 1 },             /* 22 chunks, over the kernels' threading threshold */
  { "to_logits.bias", 1, { 7 }, 0 },
};
#define BIG 10
#define GAMMA 4

static const double RTOL = sizeof(c5_real) == 8 ? 1e-12 : 2e-6;
static const double RTOL_GOLDEN = sizeof(c5_real) == 8 ? 1e-12 : 1e-5;
/* double: element by element; single: relative to the tensor's scale (close_to) */
static const double FLOOR = sizeof(c5_real) == 8 ? 0 : 1e-3;

static int make_params(c5_params **p, unsigned long long seed)
{
  long idx;
  T_OK(c5_params_create(c5_backend_cpu(), p));
  for (int i = 0; i < NP; i++) T_OK(c5_params_add(*p, "", SPEC[i].name, SPEC[i].ndim, SPEC[i].dims, &idx));
  T_OK(c5_params_alloc(*p));
  for (int i = 0; i < NP; i++)
    for (long k = 0; k < c5_params_numel(*p, i); k++) c5_params_value(*p, i)[k] = (c5_real)t_normal(&seed);
  return 1;
fail:
  return 0;
}

/* t_close with the floor at floor_ times the largest |b|: an element that
   nearly cancels (a value crossing zero, a moment whose two terms cancel) is
   judged against its tensor's scale, every other one relatively. */
static int close_to(const char *what, const c5_real *a, const double *b, long n, double rtol, double floor_)
{
  double big = 0;
  for (long k = 0; k < n; k++) big = fmax(big, fabs(b[k]));
  return t_close(what, a, b, n, rtol, floor_ * big + 1e-300);
}

/* ---- the reference: torch.optim.AdamW + clip_grad_norm_ + the schedule, plain double ---- */
static double ref_lr(const c5_adamw_config *c, long t)
{
  if (t <= c->warmup_steps) return c->lr * t / c->warmup_steps;
  double span = c->total_steps - c->warmup_steps < 1 ? 1 : c->total_steps - c->warmup_steps;
  double p = fmin(1.0, (t - c->warmup_steps) / span);
  return c->lr_min + 0.5 * (c->lr - c->lr_min) * (1 + cos(3.14159265358979323846 * p));
}

typedef struct { double *p[NP], *m[NP], *v[NP]; long n[NP]; } ref_state;

/* The gradients' norm, summed in long double (a sum of 90000 squares in
   double, in any order, is good to about 1e-14 only). */
static double ref_norm(const ref_state *s, c5_real *const *g)
{
  long double ss = 0;
  for (int i = 0; i < NP; i++)
    for (long k = 0; k < s->n[i]; k++) ss += (long double)g[i][k] * g[i][k];
  return (double)sqrtl(ss);
}

/* One step; g: the gradients as the library holds them; norm: the norm
   (checked against ref_norm by the caller, and taken from the library so
   that its last bits, which scale every moment, are the same here).
   *clipped when scaled. */
static void ref_step(const c5_adamw_config *c, long t, ref_state *s, c5_real *const *g, double norm, int *clipped)
{
  double coef = 1, lr = ref_lr(c, t);
  if (c->clip_norm > 0 && c->clip_norm / (norm + 1e-6) < 1) coef = c->clip_norm / (norm + 1e-6);
  *clipped = coef < 1;
  double bc1 = 1 - pow(c->beta1, t), bc2 = 1 - pow(c->beta2, t);
  for (int i = 0; i < NP; i++) {
    double wd = c->decay_all || SPEC[i].decay ? c->weight_decay : 0;
    for (long k = 0; k < s->n[i]; k++) {
      double gk = (double)g[i][k] * coef;
      double m = c->beta1 * s->m[i][k] + (1 - c->beta1) * gk;
      double v = c->beta2 * s->v[i][k] + (1 - c->beta2) * gk * gk;
      double p = s->p[i][k] * (1 - lr * wd);
      p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + c->eps);
      /* stored as the library stores them */
      s->p[i][k] = (c5_real)p;
      s->m[i][k] = (c5_real)m;
      s->v[i][k] = (c5_real)v;
    }
  }
}

static int same_state(const char *what, long t, const c5_params *p, const c5_adamw *o, const ref_state *s)
{
  for (int i = 0; i < NP; i++) {
    if (!close_to("value", c5_params_value(p, i), s->p[i], s->n[i], RTOL, FLOOR) ||
        !close_to("exp_avg", c5_adamw_exp_avg(o, i), s->m[i], s->n[i], RTOL, FLOOR) ||
        !close_to("exp_avg_sq", c5_adamw_exp_avg_sq(o, i), s->v[i], s->n[i], RTOL, FLOOR)) {
      fprintf(stderr, "  %s: step %ld: parameter %s differs from the reference\n", what, t, SPEC[i].name);
      return 0;
    }
  }
  return 1;
}

/* steps of cfg with gradients scale[s] N(0, 1) against the reference; the final state into dump when given */
static int run(const char *what, const c5_adamw_config *cfg, int nsteps, const double *scale, const char *dump)
{
  int ok = 0, nclipped = 0;
  c5_params *p = NULL;
  c5_adamw *o = NULL;
  ref_state s = { 0 };
  c5_real *g[NP];
  unsigned long long seed = 77;
  T_CHECK(make_params(&p, 5), "parameters");
  T_OK(c5_adamw_create(cfg, p, &o));
  T_CHECK(c5_adamw_steps(o) == 0, "%ld steps at creation", c5_adamw_steps(o));
  for (int i = 0; i < NP; i++) {
    s.n[i] = c5_params_numel(p, i);
    s.p[i] = calloc((size_t)s.n[i], sizeof(double));
    s.m[i] = calloc((size_t)s.n[i], sizeof(double));
    s.v[i] = calloc((size_t)s.n[i], sizeof(double));
    T_CHECK(s.p[i] && s.m[i] && s.v[i], "out of memory");
    for (long k = 0; k < s.n[i]; k++) s.p[i][k] = c5_params_value(p, i)[k];
    g[i] = c5_params_grad(p, i);
  }
  for (long t = 1; t <= nsteps; t++) {
    for (int i = 0; i < NP; i++)
      for (long k = 0; k < s.n[i]; k++) g[i][k] = (c5_real)(scale[t - 1] * t_normal(&seed));
    double norm, lr;
    int clipped;
    T_OK(c5_adamw_step(o, &norm, &lr));
    double rnorm = ref_norm(&s, g);
    ref_step(cfg, t, &s, g, norm, &clipped);
    nclipped += clipped;
    T_CHECK(fabs(norm - rnorm) <= 1e-14 * rnorm, "%s step %ld: norm %.17g, reference %.17g", what, t, norm, rnorm);
    T_CHECK(fabs(lr - ref_lr(cfg, t)) <= 1e-15 * ref_lr(cfg, t), "%s step %ld: lr %.17g, reference %.17g", what, t,
            lr, ref_lr(cfg, t));
    T_CHECK(c5_adamw_steps(o) == t, "%s: %ld steps after step %ld", what, c5_adamw_steps(o), t);
    T_CHECK(same_state(what, t, p, o, &s), "%s: step %ld", what, t);
    c5_params_zero_grad(p);
  }
  if (cfg->clip_norm > 0)
    T_CHECK(nclipped > 0 && nclipped < nsteps, "%s: %d of %d steps clipped: the case should have both", what,
            nclipped, nsteps);
  if (dump) {
    FILE *f = fopen(dump, "wb");
    T_CHECK(f, "cannot write %s", dump);
    long total = c5_params_total(p);
    int w = fwrite(c5_params_value(p, 0), sizeof(c5_real), (size_t)total, f) == (size_t)total &&
            fwrite(c5_adamw_exp_avg(o, 0), sizeof(c5_real), (size_t)total, f) == (size_t)total &&
            fwrite(c5_adamw_exp_avg_sq(o, 0), sizeof(c5_real), (size_t)total, f) == (size_t)total;
    T_CHECK(fclose(f) == 0 && w, "writing %s failed", dump);
  }
  printf("%s: %d steps (%d clipped) match the plain-double AdamW\n", what, nsteps, nclipped);
  ok = 1;
fail:
  for (int i = 0; i < NP; i++) { free(s.p[i]); free(s.m[i]); free(s.v[i]); }
  c5_adamw_destroy(&o);
  c5_params_destroy(&p);
  return ok;
}

static int schedule(void)
{
  c5_adamw_config c = C5_ADAMW_CONFIG_DEFAULT;
  c.lr = 1e-3; c.lr_min = 1e-4; c.warmup_steps = 10; c.total_steps = 110;
  /* t, lr: warm-up linear to lr; then half a cosine from lr to lr_min over 100 steps; lr_min after */
  static const double want[][2] = { { 1, 1e-4 }, { 5, 5e-4 }, { 10, 1e-3 }, { 35, 8.681980515339464e-4 },
                                    { 60, 5.5e-4 }, { 85, 2.318019484660536e-4 }, { 110, 1e-4 }, { 1000, 1e-4 } };
  for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
    double lr = c5_adamw_lr(&c, (long)want[k][0]);
    T_CHECK(fabs(lr - want[k][1]) <= 1e-15 * want[k][1], "lr at t = %g: %.17g, want %.17g", want[k][0], lr,
            want[k][1]);
  }
  /* no warm-up: the cosine starts at step 1 (p = 1 / total_steps) */
  c.warmup_steps = 0; c.total_steps = 4;
  T_CHECK(fabs(c5_adamw_lr(&c, 2) - 5.5e-4) <= 1e-15 * 5.5e-4, "lr at t = 2 without warm-up: %.17g", c5_adamw_lr(&c, 2));
  T_CHECK(c5_adamw_lr(&c, 4) == 1e-4, "lr at t = 4 = total_steps: %.17g", c5_adamw_lr(&c, 4));
  /* total_steps <= warmup_steps: lr_min right after the warm-up */
  c.warmup_steps = 5; c.total_steps = 3;
  T_CHECK(fabs(c5_adamw_lr(&c, 5) - 1e-3) <= 1e-18 && c5_adamw_lr(&c, 6) == 1e-4, "warm-up past total_steps: %g %g",
          c5_adamw_lr(&c, 5), c5_adamw_lr(&c, 6));
  printf("schedule: warm-up, cosine and floor at chosen steps\n");
  return 1;
fail:
  return 0;
}

static int config_errors(void)
{
  c5_params *p = NULL;
  c5_adamw *o = NULL;
  int ok = 0;
  T_CHECK(make_params(&p, 1), "parameters");
#define BAD(field, value, needle) do { c5_adamw_config c = C5_ADAMW_CONFIG_DEFAULT; c.field = value; \
    T_FAILS(c5_adamw_create(&c, p, &o), C5_ERR_ARG, needle); T_CHECK(o == NULL, "handle set on error"); } while (0)
  BAD(lr, -1e-3, "lr = -0.001");
  BAD(lr, NAN, "lr = nan");
  BAD(lr_min, -1, "lr_min = -1");
  BAD(beta1, 1, "beta1 = 1");
  BAD(beta1, -0.5, "beta1 = -0.5");
  BAD(beta2, 1.5, "beta2 = 1.5");
  BAD(eps, 0, "eps = 0");
  BAD(warmup_steps, -1, "warmup_steps = -1");
  BAD(total_steps, 0, "total_steps = 0");
  BAD(clip_norm, -1, "clip_norm = -1");
  BAD(weight_decay, -0.1, "weight_decay = -0.1");
#undef BAD
  c5_adamw_config c = C5_ADAMW_CONFIG_DEFAULT;
  c.beta1 = 0; c.beta2 = 0; c.clip_norm = 0; c.weight_decay = 0; c.lr = 0;   /* the edges are allowed */
  T_OK(c5_adamw_create(&c, p, &o));
  T_CHECK(c5_adamw_get_config(o)->beta2 == 0 && c5_adamw_get_config(o)->clip_norm == 0, "config not kept");
  printf("config: every option out of range refused by name\n");
  ok = 1;
fail:
  c5_adamw_destroy(&o);
  c5_params_destroy(&p);
  return ok;
}

/* A step on zero gradients moves nothing but the decay: p (1 - lr wd) for
   the decayed parameters, p bit for bit for the others. */
static int decay_rule(int decay_all)
{
  c5_params *p = NULL;
  c5_adamw *o = NULL;
  c5_real *before = NULL;
  int ok = 0;
  c5_adamw_config c = C5_ADAMW_CONFIG_DEFAULT;
  c.lr = 0.01; c.weight_decay = 0.1; c.total_steps = 10; c.lr_min = 0.01; c.decay_all = decay_all;
  T_CHECK(make_params(&p, 9), "parameters");
  T_OK(c5_adamw_create(&c, p, &o));
  long total = c5_params_total(p);
  before = malloc((size_t)total * sizeof *before);
  T_CHECK(before, "out of memory");
  memcpy(before, c5_params_value(p, 0), (size_t)total * sizeof *before);
  double lr;
  T_OK(c5_adamw_step(o, NULL, &lr));
  T_CHECK(lr == 0.01, "lr %g", lr);
  for (int i = 0; i < NP; i++) {
    const c5_real *b = before + (c5_params_value(p, i) - c5_params_value(p, 0)), *a = c5_params_value(p, i);
    int decayed = decay_all || SPEC[i].decay;
    for (long k = 0; k < c5_params_numel(p, i); k++) {
      c5_real want = decayed ? (c5_real)((double)b[k] * (1 - 0.01 * 0.1)) : b[k];
      T_CHECK(a[k] == want && (!decayed || a[k] != b[k]), "%s (decay_all %d, %s): element %ld %.17g -> %.17g, "
              "want %.17g", SPEC[i].name, decay_all, decayed ? "decayed" : "not decayed", k, (double)b[k],
              (double)a[k], (double)want);
    }
  }
  printf("decay rule: %s\n", decay_all ? "decay_all shrinks every parameter"
                                         : "exactly the *.weight of rank 2 but the embeddings shrink");
  ok = 1;
fail:
  free(before);
  c5_adamw_destroy(&o);
  c5_params_destroy(&p);
  return ok;
}

/* Non-finite gradients: C5_ERR_NUMERIC naming the first such parameter and
   element; the values, the moments, the gradients and the step count stay. */
static int nonfinite(void)
{
  c5_params *p = NULL;
  c5_adamw *o = NULL;
  c5_real *snap = NULL;
  int ok = 0;
  c5_adamw_config c = C5_ADAMW_CONFIG_DEFAULT;
  c.total_steps = 10;
  T_CHECK(make_params(&p, 3), "parameters");
  T_OK(c5_adamw_create(&c, p, &o));
  long total = c5_params_total(p);
  unsigned long long seed = 11;
  for (long k = 0; k < total; k++) c5_params_grad(p, 0)[k] = (c5_real)t_normal(&seed);
  T_OK(c5_adamw_step(o, NULL, NULL));   /* moments not zero */
  snap = malloc(4 * (size_t)total * sizeof *snap);
  T_CHECK(snap, "out of memory");
  for (int round = 0; round < 3; round++) {
    c5_real *g = c5_params_grad(p, 0);
    const char *needle;
    if (round == 0) {   /* a NaN and, later in the table, an Inf: the first is named */
      c5_params_grad(p, GAMMA)[2] = NAN;
      c5_params_grad(p, BIG)[50000] = INFINITY;
      needle = "gradient of norm.gamma is not finite (element 2 is nan)";
    } else if (round == 1) {
      c5_params_grad(p, GAMMA)[2] = 0.5;
      needle = "gradient of big.weight is not finite (element 50000 is inf)";
    } else {
      if (sizeof(c5_real) != 8) break;   /* a float's square cannot overflow a double */
      c5_params_grad(p, BIG)[50000] = (c5_real)1e200;
      needle = "gradient of big.weight is finite but its sum of squares overflows";
    }
    memcpy(snap, c5_params_value(p, 0), (size_t)total * sizeof *snap);
    memcpy(snap + total, c5_adamw_exp_avg(o, 0), (size_t)total * sizeof *snap);
    memcpy(snap + 2 * total, c5_adamw_exp_avg_sq(o, 0), (size_t)total * sizeof *snap);
    memcpy(snap + 3 * total, g, (size_t)total * sizeof *snap);
    T_FAILS(c5_adamw_step(o, NULL, NULL), C5_ERR_NUMERIC, needle);
    T_CHECK(!memcmp(snap, c5_params_value(p, 0), (size_t)total * sizeof *snap), "values changed by a failed step");
    T_CHECK(!memcmp(snap + total, c5_adamw_exp_avg(o, 0), (size_t)total * sizeof *snap), "exp_avg changed");
    T_CHECK(!memcmp(snap + 2 * total, c5_adamw_exp_avg_sq(o, 0), (size_t)total * sizeof *snap), "exp_avg_sq changed");
    T_CHECK(!memcmp(snap + 3 * total, g, (size_t)total * sizeof *snap), "gradients changed");
    T_CHECK(c5_adamw_steps(o) == 1, "step count %ld after a failed step", c5_adamw_steps(o));
  }
  /* once finite again the step goes on as step 2; a successful step leaves the gradients as they were */
  c5_params_grad(p, BIG)[50000] = 0.25;
  memcpy(snap, c5_params_grad(p, 0), (size_t)total * sizeof *snap);
  double lr;
  T_OK(c5_adamw_step(o, NULL, &lr));
  T_CHECK(c5_adamw_steps(o) == 2 && lr == c5_adamw_lr(&c, 2), "after recovery: step %ld lr %g",
          c5_adamw_steps(o), lr);
  T_CHECK(!memcmp(snap, c5_params_grad(p, 0), (size_t)total * sizeof *snap), "the step changed the gradients");
  /* resume: set_steps sets the next step's schedule position */
  c5_adamw_set_steps(o, 6);
  T_OK(c5_adamw_step(o, NULL, &lr));
  T_CHECK(c5_adamw_steps(o) == 7 && lr == c5_adamw_lr(&c, 7), "after set_steps(6): step %ld lr %g",
          c5_adamw_steps(o), lr);
  printf("non-finite gradients: C5_ERR_NUMERIC naming the parameter, nothing changed\n");
  ok = 1;
fail:
  free(snap);
  c5_adamw_destroy(&o);
  c5_params_destroy(&p);
  return ok;
}

/* ---- the golden file from torch ---- */
static int golden(const char *path)
{
  c5_h5 f = { .file = H5I_INVALID_HID };
  c5_params *p = NULL;
  c5_adamw *o = NULL;
  char *names = NULL, ds[256];
  double *want = NULL;
  int ok = 0, ndim;
  long dims[C5_H5_MAXDIM], idx, nsteps, nck = 0;
  T_OK(c5_h5_open_read(path, &f));
  T_OK(c5_h5_attr_string(&f, "/", "params", &names));
  T_OK(c5_h5_attr_long(&f, "/", "steps", &nsteps));
  T_OK(c5_params_create(c5_backend_cpu(), &p));
  char *save, *tok;
  for (tok = strtok_r(names, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    snprintf(ds, sizeof ds, "/init/%s", tok);
    T_OK(c5_h5_shape(&f, ds, &ndim, dims));
    T_OK(c5_params_add(p, "", tok, ndim, dims, &idx));
  }
  T_OK(c5_params_alloc(p));
  want = malloc((size_t)c5_params_total(p) * sizeof *want);
  T_CHECK(want, "out of memory");
  long one = 1;
  c5_adamw_config c = C5_ADAMW_CONFIG_DEFAULT;
  double v;
#define CFG(field) do { T_OK(c5_h5_read_double(&f, "/config/" #field, 1, &one, &v)); c.field = v; } while (0)
  CFG(lr); CFG(lr_min); CFG(warmup_steps); CFG(total_steps); CFG(beta1); CFG(beta2); CFG(eps);
  CFG(weight_decay); CFG(clip_norm);
#undef CFG
  for (long i = 0; i < c5_params_count(p); i++) {
    snprintf(ds, sizeof ds, "/init/%s", c5_params_name(p, i));
    ndim = c5_params_shape(p, i, dims);
    T_OK(c5_h5_read_real(&f, ds, ndim, dims, c5_params_value(p, i)));
  }
  T_OK(c5_adamw_create(&c, p, &o));
  for (long s = 1; s <= nsteps; s++) {
    for (long i = 0; i < c5_params_count(p); i++) {
      snprintf(ds, sizeof ds, "/step_%ld/grads/%s", s, c5_params_name(p, i));
      ndim = c5_params_shape(p, i, dims);
      T_OK(c5_h5_read_real(&f, ds, ndim, dims, c5_params_grad(p, i)));
    }
    double norm, lr, wnorm, wlr;
    T_OK(c5_adamw_step(o, &norm, &lr));
    snprintf(ds, sizeof ds, "/step_%ld/grad_norm", s);
    T_OK(c5_h5_read_double(&f, ds, 1, &one, &wnorm));
    snprintf(ds, sizeof ds, "/step_%ld/lr", s);
    T_OK(c5_h5_read_double(&f, ds, 1, &one, &wlr));
    T_CHECK(fabs(norm - wnorm) <= RTOL_GOLDEN * wnorm, "golden step %ld: norm %.17g, torch %.17g", s, norm, wnorm);
    T_CHECK(fabs(lr - wlr) <= 1e-15 * wlr, "golden step %ld: lr %.17g, torch %.17g", s, lr, wlr);
    for (long i = 0; i < c5_params_count(p); i++) {
      static const char *const what[3] = { "params", "exp_avg", "exp_avg_sq" };
      for (int w = 0; w < 3; w++) {
        const c5_real *got = w == 0 ? c5_params_value(p, i) : w == 1 ? c5_adamw_exp_avg(o, i)
                                                                       : c5_adamw_exp_avg_sq(o, i);
        snprintf(ds, sizeof ds, "/step_%ld/%s/%s", s, what[w], c5_params_name(p, i));
        ndim = c5_params_shape(p, i, dims);
        T_OK(c5_h5_read_double(&f, ds, ndim, dims, want));
        /* double: relative, element by element (the worst is 5e-15); single: the
           float rounding of the gradients, relative to the tensor's scale */
        T_CHECK(close_to(ds, got, want, c5_params_numel(p, i), RTOL_GOLDEN, FLOOR),
                "%s differs from torch", ds);
        nck++;
      }
    }
    c5_params_zero_grad(p);
  }
  printf("golden %s: %ld steps, %ld datasets match torch.optim.AdamW\n", path, nsteps, nck);
  ok = 1;
fail:
  free(names);
  free(want);
  c5_adamw_destroy(&o);
  c5_params_destroy(&p);
  c5_h5_close(&f);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int ok = 0;
  /* gradient scales per step: clipped (norm > clip) and not, mixed */
  static const double scale[8] = { 1.0, 0.001, 0.3, 0.002, 2.0, 0.0005, 0.01, 1.0 };
  c5_adamw_config c = C5_ADAMW_CONFIG_DEFAULT;
  c.lr = 0.02; c.lr_min = 0.002; c.warmup_steps = 3; c.total_steps = 7; c.beta2 = 0.95;
  c.weight_decay = 0.05; c.clip_norm = 5.0;
  if (argc == 3 && !strcmp(argv[1], "--dump")) {
    ok = run("dump", &c, 8, scale, argv[2]);
    goto fail;
  }
  T_CHECK(schedule(), "schedule");
  T_CHECK(config_errors(), "config");
  T_CHECK(decay_rule(0) && decay_rule(1), "decay rule");
  T_CHECK(run("clip on", &c, 8, scale, NULL), "clipping on");
  c.clip_norm = 0;
  T_CHECK(run("clip off", &c, 8, scale, NULL), "clipping off");
  c.clip_norm = 1; c.decay_all = 1; c.warmup_steps = 0; c.beta1 = 0.5;
  T_CHECK(run("decay_all, no warm-up", &c, 8, scale, NULL), "decay_all");
  T_CHECK(nonfinite(), "non-finite");
  const char *top = getenv("top_srcdir");
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/golden/optim_adamw.h5", top ? top : ".");
  T_CHECK(golden(path), "golden");
  ok = 1;
fail:
  MPI_Finalize();
  return ok ? 0 : 1;
}
