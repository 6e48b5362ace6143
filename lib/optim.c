/* optim.c - AdamW over a parameter table (torch.optim.AdamW with two
   parameter groups, decay and no decay), clipping by the global gradient
   norm (torch.nn.utils.clip_grad_norm_) and the warm-up + cosine schedule.
   Orchestration only: the sum of squares and the update are kernel ops
   (sumsq, adamw_update); here are the schedule, the choice of the decayed
   parameters and the order of the norm's sum. The moments are one slab each,
   laid out as the parameters' value slab, so a checkpoint writes them under
   the parameters' names. They live on the parameters' backend; on a device
   the host reads only the per-parameter sums of squares, in one copy a step
   (c5_adamw_step). */
#include <math.h>
#include "c5_internal.h"
#include "backend.h"

struct c5_adamw {
  c5_adamw_config cfg;
  c5_params *params;
  const c5_backend *be;
  long n, steps;
  long *offset;            /* [n] parameter i's first element in the slabs */
  uint8_t *decay;          /* [n] 1: weight decay applies */
  double *ss;              /* [n] each gradient's sum of squares (one step's), host */
  double *ss_be;           /* [n] where sumsq_dev writes them: ss on the CPU, device doubles on a GPU */
  c5_real *exp_avg, *exp_avg_sq;   /* [total] the moments, on be */
  double *work;            /* sumsq's chunk sums on the CPU: the largest parameter's chunks */
  long work_len;
};

static const char *const no_decay_names[] = { "token_emb.weight", "pos_emb.weight" };

/* Matrices of Linear layers: "*.weight" of rank 2, except the embeddings
   (rows looked up, not multiplied: decaying them shrinks rare tokens' rows). */
static int decays(const c5_params *p, long i)
{
  long dims[C5_PARAM_MAXDIM];
  const char *name = c5_params_name(p, i);
  size_t len = strlen(name), sfx = strlen(".weight");
  if (c5_params_shape(p, i, dims) != 2 || len <= sfx || strcmp(name + len - sfx, ".weight")) return 0;
  for (size_t k = 0; k < sizeof no_decay_names / sizeof *no_decay_names; k++)
    if (!strcmp(name, no_decay_names[k])) return 0;
  return 1;
}

static c5_status check_config(const c5_adamw_config *c)
{
  /* written as !(ok) so that a NaN fails too */
  C5_CHECK(!(c->lr < 0) && isfinite(c->lr), C5_ERR_ARG, "AdamW option lr = %g: must be finite and >= 0", c->lr);
  C5_CHECK(!(c->lr_min < 0) && isfinite(c->lr_min), C5_ERR_ARG, "AdamW option lr_min = %g: must be finite and >= 0",
           c->lr_min);
  C5_CHECK(c->beta1 >= 0 && c->beta1 < 1, C5_ERR_ARG, "AdamW option beta1 = %g: must be in [0, 1)", c->beta1);
  C5_CHECK(c->beta2 >= 0 && c->beta2 < 1, C5_ERR_ARG, "AdamW option beta2 = %g: must be in [0, 1)", c->beta2);
  C5_CHECK(c->eps > 0 && isfinite(c->eps), C5_ERR_ARG, "AdamW option eps = %g: must be finite and > 0", c->eps);
  C5_CHECK(c->warmup_steps >= 0, C5_ERR_ARG, "AdamW option warmup_steps = %ld: must be >= 0", c->warmup_steps);
  C5_CHECK(c->total_steps >= 1, C5_ERR_ARG, "AdamW option total_steps = %ld: must be >= 1", c->total_steps);
  C5_CHECK(!(c->clip_norm < 0) && isfinite(c->clip_norm), C5_ERR_ARG,
           "AdamW option clip_norm = %g: must be finite and >= 0 (0: no clipping)", c->clip_norm);
  C5_CHECK(!(c->weight_decay < 0) && isfinite(c->weight_decay), C5_ERR_ARG,
           "AdamW option weight_decay = %g: must be finite and >= 0", c->weight_decay);
  return C5_OK;
}

c5_status c5_adamw_create(const c5_adamw_config *cfg, c5_params *params, c5_adamw **out)
{
  C5_CHECK(cfg && params && out, C5_ERR_ARG, "c5_adamw_create: config, params or out is NULL");
  *out = NULL;
  C5_CALL(check_config(cfg));
  long n = c5_params_count(params);
  C5_CHECK(n == 0 || c5_params_value(params, 0) != NULL, C5_ERR_ARG,
           "c5_adamw_create: the parameter table is not allocated yet (c5_params_alloc first)");
  const c5_backend *be = c5_params_backend(params);
  C5_NEED_OP(be, sumsq_dev);
  C5_NEED_OP(be, adamw_update);
  c5_adamw *o;
  C5_CALLOC(o, 1);
  o->cfg = *cfg;
  o->params = params;
  o->be = be;
  o->n = n;
  long total = c5_params_total(params), max_chunks = 1;
  int ok = 1;
  C5_NEW(o->offset, n, ok);
  C5_NEW(o->decay, n, ok);
  C5_NEW(o->ss, n, ok);
  ok = ok && C5_BE_NEW(be, o->exp_avg, total) == C5_OK && C5_BE_NEW(be, o->exp_avg_sq, total) == C5_OK;
  if (ok && c5_backend_is_host(be)) o->ss_be = o->ss;
  else ok = ok && C5_BE_NEW(be, o->ss_be, n) == C5_OK;
  for (long i = 0; i < n; i++) {
    long chunks = (c5_params_numel(params, i) + C5K_CHUNK - 1) / C5K_CHUNK;
    if (chunks > max_chunks) max_chunks = chunks;
  }
  o->work_len = max_chunks;
  C5_NEW(o->work, o->work_len, ok);
  if (!ok) {
    c5_adamw_destroy(&o);
    return C5_ERR(C5_ERR_MEM, "out of memory allocating AdamW state for %ld parameters (%ld values, two moments "
                  "on the %s backend)", n, total, c5_backend_name(be));
  }
  for (long i = 0; i < n; i++) {
    o->offset[i] = (long)(c5_params_value(params, i) - c5_params_value(params, 0));
    o->decay[i] = (uint8_t)(cfg->decay_all || decays(params, i));
  }
  *out = o;
  return C5_OK;
}

c5_status c5_adamw_destroy(c5_adamw **o)
{
  if (!o || !*o) return C5_OK;
  const c5_backend *be = (*o)->be;
  if ((*o)->ss_be != (*o)->ss) c5_backend_free(be, (*o)->ss_be);
  free((*o)->offset); free((*o)->decay); free((*o)->ss);
  c5_backend_free(be, (*o)->exp_avg); c5_backend_free(be, (*o)->exp_avg_sq); free((*o)->work);
  C5_FREE(*o);
  return C5_OK;
}

const c5_adamw_config *c5_adamw_get_config(const c5_adamw *o) { return &o->cfg; }
long c5_adamw_steps(const c5_adamw *o) { return o->steps; }
void c5_adamw_set_steps(c5_adamw *o, long steps) { o->steps = steps > 0 ? steps : 0; }
c5_real *c5_adamw_exp_avg(const c5_adamw *o, long i) { return o->exp_avg + o->offset[i]; }
c5_real *c5_adamw_exp_avg_sq(const c5_adamw *o, long i) { return o->exp_avg_sq + o->offset[i]; }

double c5_adamw_lr(const c5_adamw_config *cfg, long t)
{
  if (cfg->warmup_steps > 0 && t <= cfg->warmup_steps) return cfg->lr * (double)t / (double)cfg->warmup_steps;
  long span = cfg->total_steps - cfg->warmup_steps;
  double p = (double)(t - cfg->warmup_steps) / (double)(span > 1 ? span : 1);
  if (p > 1) p = 1;
  return cfg->lr_min + (cfg->lr - cfg->lr_min) * (1 + cos(M_PI * p)) / 2;
}

/* The error of a non-finite norm: the first parameter whose gradient holds a
   NaN or Inf, or else the one whose sum of squares overflowed. */
static c5_status nonfinite_error(c5_adamw *o, c5k_ctx *kc, double norm)
{
  const c5k_ops *ops = o->be->ops;
  long t = o->steps + 1;
  for (long i = 0; i < o->n; i++) {
    if (isfinite(o->ss[i])) continue;
    long bad;
    const c5_real *g = c5_params_grad(o->params, i);
    C5_CALL(ops->sumsq(kc, c5_params_numel(o->params, i), g, &o->ss[i], &bad));
    c5_real gb = 0;   /* the element, copied to the host (the gradient may live on a device) */
    if (bad >= 0) C5_CALL(c5_backend_memcpy(o->be, &gb, g + bad, sizeof gb));
    if (bad >= 0)
      return C5_ERR(C5_ERR_NUMERIC, "AdamW step %ld: the gradient of %s is not finite (element %ld is %g); "
                    "nothing updated", t, c5_params_name(o->params, i), bad, (double)gb);
  }
  for (long i = 0; i < o->n; i++)
    if (!isfinite(o->ss[i]))
      return C5_ERR(C5_ERR_NUMERIC, "AdamW step %ld: the gradient of %s is finite but its sum of squares "
                    "overflows a double; nothing updated", t, c5_params_name(o->params, i));
  return C5_ERR(C5_ERR_NUMERIC, "AdamW step %ld: the gradients are finite but the sum of their squares "
                "overflows a double (norm %g); nothing updated", t, norm);
}

c5_status c5_adamw_step(c5_adamw *o, double *grad_norm, double *lr)
{
  C5_CHECK(o, C5_ERR_ARG, "c5_adamw_step: optimizer is NULL");
  const c5k_ops *ops = o->be->ops;
  c5k_ctx kc = c5_backend_ctx(o->be, o->work, o->work_len);
  /* the norm's order: chunks within a parameter (the kernel), then the
     parameters in table order */
  for (long i = 0; i < o->n; i++)
    C5_CALL(ops->sumsq_dev(&kc, c5_params_numel(o->params, i), c5_params_grad(o->params, i), &o->ss_be[i]));
  /* the step's one read-back on a device: every parameter's sum of squares (waits for the backward) */
  if (o->ss_be != o->ss) C5_CALL(c5_backend_memcpy(o->be, o->ss, o->ss_be, (size_t)o->n * sizeof *o->ss));
  double total = 0;
  for (long i = 0; i < o->n; i++) total += o->ss[i];
  double norm = sqrt(total);
  if (!isfinite(norm)) return nonfinite_error(o, &kc, norm);
  long t = o->steps + 1;
  c5k_adamw A = { .grad_scale = 1, .lr = c5_adamw_lr(&o->cfg, t), .beta1 = o->cfg.beta1, .beta2 = o->cfg.beta2,
                  .eps = o->cfg.eps, .step = t };
  if (o->cfg.clip_norm > 0) {
    double coef = o->cfg.clip_norm / (norm + 1e-6);
    if (coef < 1) A.grad_scale = coef;
  }
  for (long i = 0; i < o->n; i++) {
    A.weight_decay = o->decay[i] ? o->cfg.weight_decay : 0;
    C5_CALL(ops->adamw_update(&kc, &A, c5_params_numel(o->params, i), c5_params_grad(o->params, i),
                              c5_params_value(o->params, i), c5_adamw_exp_avg(o, i), c5_adamw_exp_avg_sq(o, i)));
  }
  o->steps = t;
  if (grad_norm) *grad_norm = norm;
  if (lr) *lr = A.lr;
  return C5_OK;
}
