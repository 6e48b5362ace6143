/* params.c - the parameter table: state_dict names and shapes over one
   value slab and one gradient slab (llm.c's malloc_and_point_parameters),
   with the gradients' double accumulators beside them. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "c5_internal.h"
#include "backend.h"

typedef struct {
  char name[160];
  int ndim;
  long dims[C5_PARAM_MAXDIM];
  long offset, numel;
  int has_init;          /* c5_params_set_init was called */
  c5_init_rule rule;
  long fan_in;
} entry;

struct c5_params {
  entry *e;
  const c5_backend *be;   /* where values and gradients live and are computed on */
  long n, cap, total, max_numel;
  long *slot, nslot;      /* names' hash index: slot[h] = entry + 1, 0 empty; nslot a power of 2 >= 2 cap */
  c5_real *value, *grad;
  double *acc;          /* [total] a backward's gradient parts, summed in double; zero between backwards */
  c5_real *scratch;     /* [max_numel] one gradient GEMM's product before it is added to acc */
};

int c5_name_join(char *buf, size_t len, const char *prefix, const char *name)
{
  return prefix && *prefix ? snprintf(buf, len, "%s.%s", prefix, name) : snprintf(buf, len, "%s", name);
}

c5_status c5_params_create(const c5_backend *be, c5_params **out)
{
  C5_CHECK(be && out, C5_ERR_ARG, "c5_params_create: backend or out is NULL");
  C5_CALLOC(*out, 1);
  (*out)->be = be;
  return C5_OK;
}

const c5_backend *c5_params_backend(const c5_params *p) { return p->be; }

/* The names' index: a model of 1024 layers has 30 000 parameters, and every registration and every read
   looks a name up (a linear search made building such a model take most of a minute). */
static uint64_t name_hash(const char *s)
{
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
  return h;
}

/* The entry named name, or -1. */
static long lookup(const c5_params *p, const char *name)
{
  if (!p->nslot) return -1;
  for (uint64_t h = name_hash(name) & (uint64_t)(p->nslot - 1);; h = (h + 1) & (uint64_t)(p->nslot - 1)) {
    long i = p->slot[h] - 1;
    if (i < 0) return -1;
    if (!strcmp(p->e[i].name, name)) return i;
  }
}

static void index_put(c5_params *p, long i)
{
  uint64_t h = name_hash(p->e[i].name) & (uint64_t)(p->nslot - 1);
  while (p->slot[h]) h = (h + 1) & (uint64_t)(p->nslot - 1);
  p->slot[h] = i + 1;
}

/* Room for entry p->n in the index (rebuilt twice as large when half full). */
static c5_status index_reserve(c5_params *p)
{
  if (2 * (p->n + 1) <= p->nslot) return C5_OK;
  long ns = p->nslot ? 2 * p->nslot : 64;
  long *slot = calloc((size_t)ns, sizeof *slot);
  C5_CHECK(slot, C5_ERR_MEM, "out of memory growing the parameter names' index (%ld slots)", ns);
  free(p->slot);
  p->slot = slot;
  p->nslot = ns;
  for (long i = 0; i < p->n; i++) index_put(p, i);
  return C5_OK;
}

c5_status c5_params_destroy(c5_params **p)
{
  if (!p || !*p) return C5_OK;
  const c5_backend *be = (*p)->be;
  free((*p)->e); free((*p)->slot);
  c5_backend_free(be, (*p)->value); c5_backend_free(be, (*p)->grad); c5_backend_free(be, (*p)->acc);
  c5_backend_free(be, (*p)->scratch);
  C5_FREE(*p);
  return C5_OK;
}

c5_status c5_params_add(c5_params *p, const char *prefix, const char *name, int ndim, const long *dims, long *index)
{
  C5_CHECK(p && name && dims && index, C5_ERR_ARG, "c5_params_add: NULL argument");
  C5_CHECK(!p->value, C5_ERR_ARG, "parameter %s: the table is already allocated", name);
  C5_CHECK(ndim >= 1 && ndim <= C5_PARAM_MAXDIM, C5_ERR_ARG, "parameter %s: rank %d", name, ndim);
  if (p->n == p->cap) {
    long cap = p->cap ? 2 * p->cap : 32;
    entry *e = realloc(p->e, (size_t)cap * sizeof *e);
    C5_CHECK(e, C5_ERR_MEM, "out of memory growing the parameter table");
    p->e = e;
    p->cap = cap;
  }
  entry *e = &p->e[p->n];
  memset(e, 0, sizeof *e);
  int w = c5_name_join(e->name, sizeof e->name, prefix, name);
  C5_CHECK(w > 0 && (size_t)w < sizeof e->name, C5_ERR_ARG, "parameter name %s.%s too long", prefix ? prefix : "", name);
  C5_CHECK(lookup(p, e->name) < 0, C5_ERR_ARG, "parameter %s registered twice", e->name);
  C5_CALL(index_reserve(p));
  e->ndim = ndim;
  e->numel = 1;
  for (int i = 0; i < ndim; i++) {
    C5_CHECK(dims[i] > 0, C5_ERR_ARG, "parameter %s: dimension %d is %ld", e->name, i, dims[i]);
    e->dims[i] = dims[i];
    e->numel *= dims[i];
  }
  e->offset = p->total;
  p->total += e->numel;
  if (e->numel > p->max_numel) p->max_numel = e->numel;
  index_put(p, p->n);
  *index = p->n++;
  return C5_OK;
}

c5_status c5_params_alloc(c5_params *p)
{
  C5_CHECK(p && !p->value, C5_ERR_ARG, "c5_params_alloc: table missing or already allocated");
  /* the slabs live on the backend (device memory on a GPU): only the table of names stays on the host */
  C5_CALL(C5_BE_NEW(p->be, p->value, p->total));
  C5_CALL(C5_BE_NEW(p->be, p->grad, p->total));
  C5_CALL(C5_BE_NEW(p->be, p->acc, p->total));
  C5_CALL(C5_BE_NEW(p->be, p->scratch, p->max_numel));
  return C5_OK;
}

long c5_params_count(const c5_params *p) { return p->n; }
long c5_params_total(const c5_params *p) { return p->total; }
const char *c5_params_name(const c5_params *p, long i) { return p->e[i].name; }
long c5_params_numel(const c5_params *p, long i) { return p->e[i].numel; }
c5_real *c5_params_value(const c5_params *p, long i) { return p->value + p->e[i].offset; }
c5_real *c5_params_grad(const c5_params *p, long i) { return p->grad + p->e[i].offset; }
double *c5_params_acc(const c5_params *p, long i) { return p->acc + p->e[i].offset; }
c5_real *c5_params_scratch(const c5_params *p) { return p->scratch; }

static int cmp_long(const void *a, const void *b)
{
  const long x = *(const long *)a, y = *(const long *)b;
  return x < y ? -1 : x > y;
}

/* Parameters follow one another in the slabs in index order, so a run of consecutive indices (a module's, as
   its init adds them) is one span: one flush a run (elementwise: the same bits as one a parameter, a module's
   backward then launches one kernel instead of up to five: 28 launches of 3.4 us a block step on the H200). */
c5_status c5_params_flush(const c5_params *p, const long *idx, int n)
{
  const c5k_ops *ops = p->be->ops;
  c5k_ctx kc = c5_backend_ctx(p->be, NULL, 0);
  long s[16];
  if (n > (int)(sizeof s / sizeof *s)) {   /* no caller flushes this many at once: one at a time */
    for (int k = 0; k < n; k++)
      if (idx[k] >= 0) C5_CALL(ops->grad_flush(&kc, c5_params_acc(p, idx[k]), p->e[idx[k]].numel, c5_params_grad(p, idx[k])));
    return C5_OK;
  }
  int m = 0;
  for (int k = 0; k < n; k++)
    if (idx[k] >= 0) s[m++] = idx[k];
  qsort(s, (size_t)m, sizeof *s, cmp_long);
  for (int a = 0, b; a < m; a = b) {
    for (b = a + 1; b < m && s[b] == s[b - 1] + 1; b++) {}
    const long off = p->e[s[a]].offset, len = p->e[s[b - 1]].offset + p->e[s[b - 1]].numel - off;
    C5_CALL(ops->grad_flush(&kc, p->acc + off, len, p->grad + off));
  }
  return C5_OK;
}

int c5_params_shape(const c5_params *p, long i, long dims[C5_PARAM_MAXDIM])
{
  for (int k = 0; k < p->e[i].ndim; k++) dims[k] = p->e[i].dims[k];
  return p->e[i].ndim;
}

c5_status c5_params_find(const c5_params *p, const char *name, long *index)
{
  long i = lookup(p, name);
  if (i >= 0) { *index = i; return C5_OK; }
  return C5_ERR(C5_ERR_ARG, "no parameter named %s", name);
}

void c5_params_zero_grad(c5_params *p)
{
  /* the fill cannot fail on the CPU; on a device it is a memset, which fails only with the device */
  c5k_ctx kc = c5_backend_ctx(p->be, NULL, 0);
  if (p->grad) (void)c5k_zero(p->be->ops, &kc, p->grad, p->total * (long)sizeof *p->grad);
  if (p->acc) (void)c5k_zero(p->be->ops, &kc, p->acc, p->total * (long)sizeof *p->acc);   /* a failed backward's parts */
}

c5_status c5_params_set_init(c5_params *p, long index, c5_init_rule rule, long fan_in)
{
  C5_CHECK(p && index >= 0 && index < p->n, C5_ERR_ARG, "c5_params_set_init: no parameter %ld (table of %ld)", index,
           p ? p->n : 0);
  entry *e = &p->e[index];
  C5_CHECK(rule >= C5_INIT_ZERO && rule <= C5_INIT_UNIFORM_FAN_IN, C5_ERR_ARG, "parameter %s: unknown init rule %d",
           e->name, (int)rule);
  C5_CHECK(rule != C5_INIT_UNIFORM_FAN_IN || fan_in > 0, C5_ERR_ARG, "parameter %s: uniform init with fan-in %ld",
           e->name, fan_in);
  e->has_init = 1;
  e->rule = rule;
  e->fan_in = fan_in;
  return C5_OK;
}

/* FNV-1a of the name, then SplitMix64 with the seed: the parameter's key, so its draws depend on its name
   and the seed, not on its slot in the table */
static uint64_t init_key(uint64_t seed, const char *name)
{
  uint64_t h = 0xcbf29ce484222325ull;
  for (const unsigned char *c = (const unsigned char *)name; *c; c++) h = (h ^ *c) * 0x100000001b3ull;
  uint64_t x = seed + 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return h ^ x ^ (x >> 31);
}

c5_status c5_params_init(c5_params *p, uint64_t seed)
{
  C5_CHECK(p && p->value, C5_ERR_ARG, "c5_params_init: table missing or not allocated (c5_params_alloc first)");
  /* every rule first: a table with a hole is refused before anything is written */
  for (long i = 0; i < p->n; i++)
    C5_CHECK(p->e[i].has_init, C5_ERR_ARG, "parameter %s has no initialization rule (its module must call "
             "c5_params_set_init after c5_params_add)", p->e[i].name);
  const c5k_ops *ops = p->be->ops;
  c5k_ctx kc = c5_backend_ctx(p->be, NULL, 0);
  for (long i = 0; i < p->n; i++) {
    const entry *e = &p->e[i];
    int kind = e->rule == C5_INIT_NORMAL ? C5K_FILL_NORMAL : e->rule == C5_INIT_UNIFORM_FAN_IN ? C5K_FILL_UNIFORM
                                                                                               : C5K_FILL_CONST;
    /* nn.Linear: kaiming_uniform(a = sqrt(5)) for the weight and U(-1/sqrt(fan_in), ..) for the bias: one bound */
    double scale = e->rule == C5_INIT_ONE ? 1.0 : e->rule == C5_INIT_ZERO ? 0.0
                   : e->rule == C5_INIT_UNIFORM_FAN_IN ? 1.0 / sqrt((double)e->fan_in) : 1.0;
    C5_CALL(ops->init_fill(&kc, kind, init_key(seed, e->name), scale, e->numel, p->value + e->offset));
  }
  return C5_OK;
}

c5_status c5_params_add_init(c5_params *p, const char *prefix, const char *name, int ndim, const long *dims,
                             c5_init_rule rule, long fan_in, long *index)
{
  C5_CALL(c5_params_add(p, prefix, name, ndim, dims, index));
  C5_CALL(c5_params_set_init(p, *index, rule, fan_in));
  return C5_OK;
}
