/* cd.c - coordinate descent (the soft top-k behind the router), forward and
   backward, for rows sharded over dist. docs/design.md §2:
     a_t = eps_t (log k - LSE_j min(s_j, -a_{t-1}) / eps_t),  y_j = exp(min(s_j + a_T, 0) / eps_f).
   The LSE is shifted by m_t = -a_{t-1}/eps_t, a bound every rank knows, so
   each iteration is ONE sum-allreduce of {sum, count above} for all rows.
   The backward needs one allreduce in all: since p_j = exp(-lse_t) for every
   "above" j, the recurrence ga_{t-1} = ga_t * nabove_t * exp(-lse_t) runs on
   saved scalars, then a single streaming pass forms ds (better than the
   T-allreduce backward sketched in docs/design.md). */
#include <math.h>
#include <string.h>
#include "c5_internal.h"
#include "backend.h"
#include "cd_internal.h"
#include "arena.h"

void c5_cd_cache_layout(c5_arena *m, long rows, int n_iters, long work_len, c5_cd_cache *c)
{
  c->rows_cap = rows;
  c->n_iters = n_iters;
  C5_TAKE(m, c->a, rows * n_iters);
  C5_TAKE(m, c->lse, rows * n_iters);
  C5_TAKE(m, c->nabove, rows * n_iters);
  C5_TAKE(m, c->ga, rows * n_iters);
  C5_TAKE(m, c->inv_eps, n_iters + 1);
  C5_TAKE(m, c->plan, 3 * rows + 1);
  C5_TAKE(m, c->rowbuf, 5 * rows);
  c->work = NULL;
  c->work_cap = 0;
  if (work_len > 0) {
    C5_TAKE(m, c->work, work_len);
    c->work_cap = work_len;
  }
}

c5_status c5_cd_cache_alloc(long rows, int n_iters, c5_cd_cache *c)
{
  C5_CHECK(c != NULL, C5_ERR_ARG, "c5_cd_cache_alloc: cache is NULL");
  C5_CHECK(rows >= 0, C5_ERR_ARG, "c5_cd_cache_alloc: rows = %ld must be >= 0", rows);
  C5_CHECK(n_iters > 0, C5_ERR_ARG, "coordinate descent: n_iters = %d must be > 0", n_iters);
  memset(c, 0, sizeof *c);
  /* The row length is not known here, so the kernels' workspace (which
     grows with it) is made by the first c5_cd_forward (ensure_work): this
     functional API is not on the training path, whose router sizes the
     workspace with its own cache. */
  c5_arena m = { 0 };
  c5_cd_cache_layout(&m, rows, n_iters, 0, c);
  C5_CALL(c5_arena_alloc(&m, "coordinate descent cache"));
  c5_cd_cache_layout(&m, rows, n_iters, 0, c);
  c->mem = m.base;
  return C5_OK;
}

void c5_cd_cache_free(c5_cd_cache *c)
{
  if (!c) return;
  free(c->mem);
  free(c->work);   /* a cache of c5_cd_cache_alloc: made apart by ensure_work */
  if (c->dev_state) c5_backend_free(c->dev_be, c->dev_state);
  memset(c, 0, sizeof *c);
}

c5_status c5_cd_config_check(const c5_cd_config *cfg)
{
  C5_CHECK(cfg != NULL, C5_ERR_ARG, "coordinate descent: config is NULL");
  C5_CHECK(cfg->n_iters > 0, C5_ERR_ARG, "coordinate descent: n_iters = %d must be > 0", cfg->n_iters);
  C5_CHECK(cfg->eps > 0 && isfinite(cfg->eps), C5_ERR_ARG, "coordinate descent: eps = %g must be > 0 and finite", cfg->eps);
  C5_CHECK(isfinite(cfg->eps_init), C5_ERR_ARG, "coordinate descent: eps_init = %g must be finite (0 = none)", cfg->eps_init);
  C5_CHECK(cfg->eps_decay > 0 && cfg->eps_decay <= 1, C5_ERR_ARG,
           "coordinate descent: eps_decay = %g must be in (0, 1]", cfg->eps_decay);
  return C5_OK;
}

/* This rank's part of the inputs: k of every row, and finite logits. Local:
   the caller agrees the result (docs/errors.md), so that a NaN on one rank
   fails every rank with its message. Rows in order, each its k then its
   logits: the first fault is the one reported. */
static c5_status check_inputs(const c5_backend *be, c5_cd_cache *c, const c5k_rows *R, const c5_real *s,
                              const double *k, long k_stride)
{
  long bad_row, bad_col;
  double bad;
  c5k_ctx ctx = c5_backend_ctx(be, c->work, c->work_cap);
  C5_NEED_OP(be, find_nonfinite);
  C5_CALL(be->ops->find_nonfinite(&ctx, R, s, &bad_row, &bad_col, &bad));
  for (long r = 0; r < (bad_row >= 0 ? bad_row + 1 : R->rows); r++) {
    double kr = k[r * k_stride];
    C5_CHECK(kr > 0 && isfinite(kr), C5_ERR_ARG, "coordinate descent: row %ld has k = %g; k must be > 0 and finite",
             r, kr);
  }
  C5_CHECK(bad_row < 0, C5_ERR_NUMERIC, "coordinate descent: logits row %ld, local column %ld is %g (NaN or Inf)",
           bad_row, bad_col, bad);
  return C5_OK;
}

/* The public entries' workspace, grown to the call's rows (their cache
   cannot know the row length when it is made). */
static c5_status ensure_work(c5_cd_cache *c, const c5k_rows *R)
{
  long need = c5k_work_len(R);
  if (need > c->work_cap) {
    C5_FREE(c->work);
    C5_CALLOC(c->work, need);
    c->work_cap = need;
  }
  return C5_OK;
}

/* The internal entries never allocate: their caller sized the workspace. */
static c5_status check_work(const c5_cd_cache *c, const c5k_rows *R)
{
  long need = c5k_work_len(R);
  C5_CHECK(need <= c->work_cap, C5_ERR_SHAPE, "coordinate descent: workspace holds %ld doubles, call needs %ld",
           c->work_cap, need);
  return C5_OK;
}

c5_status c5_cd_forward_prepare(const c5_backend *be, const c5_cd_config *cfg, const c5k_rows *R, const c5_real *s,
                                const double *k, long k_stride, c5_cd_cache *c)
{
  C5_CALL(c5_cd_config_check(cfg));
  C5_CHECK(c->rows_cap >= R->rows && c->n_iters == cfg->n_iters, C5_ERR_SHAPE,
           "coordinate descent: cache holds %ld rows x %d iterations, call needs %ld x %d",
           c->rows_cap, c->n_iters, R->rows, cfg->n_iters);
  C5_CALL(check_work(c, R));
  C5_CALL(check_inputs(be, c, R, s, k, k_stride));
  return C5_OK;
}

/* A device backend runs the whole descent in one op (no host round trip per
   iteration), its state on the device. One rank: the collectives between
   iterations are host MPI, which a device path would stage through the host. */
static c5_status forward_dev(const c5_backend *be, const c5_dist *d, const c5_cd_config *cfg, const c5k_rows *R,
                             const c5_real *s, const uint8_t *mask, const double *k, long k_stride, c5_real *y,
                             c5_cd_cache *c)
{
  const int T = cfg->n_iters;
  C5_CHECK(c5_dist_size(d) == 1, C5_ERR_NOTIMPL, "coordinate descent on the %s backend: %d ranks (the device path "
           "runs on one rank)", be->ops->name, c5_dist_size(d));
  long need = 3 * R->rows * (long)T + T + 1;
  if (c->dev_state && (c->dev_be != be || c->dev_cap < need)) {
    C5_CALL(c5_backend_free(c->dev_be, c->dev_state));
    c->dev_state = NULL;
  }
  if (!c->dev_state) {
    C5_CALL(c5_backend_alloc(be, (size_t)need * sizeof(double), (void **)&c->dev_state));
    c->dev_be = be;
    c->dev_cap = need;
  }
  double eps_t = fmax(cfg->eps_init, cfg->eps);
  for (int t = 1; t <= T; t++) {
    c->inv_eps[t - 1] = 1.0 / eps_t;
    eps_t = fmax(eps_t * cfg->eps_decay, cfg->eps);
  }
  c->inv_eps[T] = 1.0 / eps_t;
  c5k_ctx ctx = c5_backend_ctx(be, c->work, c->work_cap);
  return be->ops->cd_forward_dev(&ctx, R, s, mask, k, k_stride, T, cfg->eps, cfg->eps_init, cfg->eps_decay,
                                 c->dev_state, y);
}

c5_status c5_cd_forward_rows(const c5_backend *be, const c5_dist *d, const c5_cd_config *cfg, const c5k_rows *R,
                             const c5_real *s, const uint8_t *mask, const double *k, long k_stride,
                             c5_real *y, c5_cd_cache *c)
{
  const c5k_ops *ops = be->ops;
  const long rows = R->rows;
  const int T = cfg->n_iters;
  c->rows = rows;
  c5k_ctx ctx = c5_backend_ctx(be, c->work, c->work_cap);
  if (ops->cd_forward_dev) return forward_dev(be, d, cfg, R, s, mask, k, k_stride, y, c);
  C5_NEED_OP(be, cd_sumexp);
  C5_NEED_OP(be, cd_maxsumexp);
  C5_NEED_OP(be, cd_output);

  /* a_{t-1} [rows]; {sum, nabove} [2][rows], reduced together; {max, sumexp} [rows][2] */
  double *aprev = c->rowbuf, *buf = aprev + rows, *pair = buf + 2 * rows;
  for (long r = 0; r < rows; r++) aprev[r] = INFINITY;   /* iteration 1: s + b = 0, sum = count */

  double eps_t = fmax(cfg->eps_init, cfg->eps);
  for (int t = 1; t <= T; t++) {
    double ie = 1.0 / eps_t;
    c->inv_eps[t - 1] = ie;
    C5_CALL(ops->cd_sumexp(&ctx, R, s, mask, aprev, ie, buf, buf + rows));
    C5_CALL(c5_dist_allreduce_sum_double(d, buf, 2 * rows));
    /* A row with unmasked entries whose shifted sum underflowed takes the
       {max, sumexp} path; buf is global, so every rank decides alike. */
    int underflow = 0;
    for (long r = 0; r < rows; r++)
      underflow |= t > 1 && c->nabove[r * T] > 0 && !(buf[r] > 0 && isfinite(buf[r]));
    if (underflow) {
      C5_CALL(ops->cd_maxsumexp(&ctx, R, s, mask, aprev, ie, pair));
      C5_CALL(c5_dist_allreduce_maxsumexp(d, pair, rows));
    }
    for (long r = 0; r < rows; r++) {
      double *a = c->a + r * T, *lse = c->lse + r * T, *nab = c->nabove + r * T;
      double sum = buf[r];
      if ((t == 1 ? sum : nab[0]) == 0.0) {   /* fully masked row: scores 0, no gradient */
        a[t - 1] = lse[t - 1] = nab[t - 1] = 0.0;
        aprev[r] = 0.0;
        continue;
      }
      double l = (sum > 0 && isfinite(sum)) ? log(sum) : pair[2 * r] + log(pair[2 * r + 1]);
      double logk = log(k[r * k_stride]);
      double at = t == 1 ? eps_t * (logk - l) : eps_t * logk + aprev[r] - eps_t * l;
      a[t - 1] = at;
      lse[t - 1] = l;
      nab[t - 1] = buf[rows + r];
      aprev[r] = at;
    }
    eps_t = fmax(eps_t * cfg->eps_decay, cfg->eps);
  }
  c->inv_eps[T] = 1.0 / eps_t;   /* the reference scores with eps after the last decay */
  C5_CALL(ops->cd_output(&ctx, R, s, mask, aprev, c->inv_eps[T], y));
  return C5_OK;
}

c5_status c5_cd_backward_prepare(c5_cd_cache *c, const c5k_rows *R)
{
  C5_CHECK(c->rows == R->rows, C5_ERR_SHAPE, "coordinate descent backward: the forward had %ld rows, "
           "this call %ld", c->rows, R->rows);
  C5_CALL(check_work(c, R));
  return C5_OK;
}

c5_status c5_cd_backward_rows(const c5_backend *be, const c5_dist *d, c5_cd_cache *c, const c5k_rows *R, const c5_real *s,
                              const uint8_t *mask, const c5_real *y, const c5_real *gy, c5_real *ds)
{
  const c5k_ops *ops = be->ops;
  const long rows = R->rows;
  const int T = c->n_iters;
  c5k_ctx ctx = c5_backend_ctx(be, c->work, c->work_cap);
  if (ops->cd_backward_dev) {
    C5_CHECK(c->dev_state && c->dev_be == be, C5_ERR_ARG, "coordinate descent backward on the %s backend: the cache "
             "holds no forward on this backend", ops->name);
    return ops->cd_backward_dev(&ctx, R, s, mask, T, c->dev_state, y, gy, ds);
  }
  C5_NEED_OP(be, cd_gdot);
  C5_NEED_OP(be, cd_backward);
  double *aT = c->rowbuf, *dot = aT + rows;
  for (long r = 0; r < rows; r++) aT[r] = c->a[r * T + T - 1];
  C5_CALL(ops->cd_gdot(&ctx, R, s, mask, aT, c->inv_eps[T], y, gy, dot));
  C5_CALL(c5_dist_allreduce_sum_double(d, dot, rows));
  for (long r = 0; r < rows; r++) {
    double *ga = c->ga + r * T;
    ga[T - 1] = c->nabove[r * T] > 0 ? dot[r] : 0.0;
    for (int t = T; t >= 2; t--)   /* dL/da_{t-1} = dL/da_t * sum_{j above} p_j, p_j = exp(-lse_t) */
      ga[t - 2] = ga[t - 1] * c->nabove[r * T + t - 1] * exp(-c->lse[r * T + t - 1]);
  }
  C5_CALL(ops->cd_backward(&ctx, R, s, mask, T, c->a, c->lse, c->inv_eps, c->ga, y, gy, ds));
  return C5_OK;
}

/* The public entries validate this rank's part, agree, then run. */
static c5_status forward_local(const c5_backend *be, const c5_cd_config *cfg, long rows, long n, const c5_real *s,
                               const double *k, long k_stride, c5_real *y, c5_cd_cache *cache, c5k_rows *R)
{
  C5_CHECK(be && cfg && s && k && y && cache, C5_ERR_ARG, "c5_cd_forward: NULL argument");
  C5_CHECK(rows >= 0 && n >= 0, C5_ERR_ARG, "c5_cd_forward: rows = %ld, n = %ld must be >= 0", rows, n);
  C5_CHECK(k_stride >= 0, C5_ERR_ARG, "c5_cd_forward: k_stride = %ld must be >= 0", k_stride);
  C5_CHECK(cache->rows_cap >= rows && cache->plan, C5_ERR_SHAPE, "c5_cd_forward: cache holds %ld rows, call has %ld",
           cache->rows_cap, rows);
  c5k_rows_dense(rows, n, cache->plan, R);
  C5_CALL(ensure_work(cache, R));
  C5_CALL(c5_cd_forward_prepare(be, cfg, R, s, k, k_stride, cache));
  return C5_OK;
}

c5_status c5_cd_forward(const c5_backend *be, const c5_dist *d, const c5_cd_config *cfg, long rows, long n,
                        const c5_real *s, const uint8_t *mask, const double *k, long k_stride,
                        c5_real *y, c5_cd_cache *cache)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_cd_forward: dist is NULL");
  c5k_rows R;
  c5_status st = forward_local(be, cfg, rows, n, s, k, k_stride, y, cache, &R);
  C5_CALL(c5_dist_agree_args(d, st, 2, (c5_dist_arg[]){ { "coordinate descent: rows", rows },
                                                         { "coordinate descent: n_iters", cfg ? cfg->n_iters : 0 } }));
  C5_CALL(c5_cd_forward_rows(be, d, cfg, &R, s, mask, k, k_stride, y, cache));
  return C5_OK;
}

static c5_status backward_local(c5_cd_cache *cache, long rows, long n, const c5_real *s, const c5_real *y,
                                const c5_real *gy, c5_real *ds, c5k_rows *R)
{
  C5_CHECK(cache && s && y && gy && ds, C5_ERR_ARG, "c5_cd_backward: NULL argument");
  C5_CHECK(cache->rows == rows && cache->plan, C5_ERR_SHAPE, "c5_cd_backward: the forward had %ld rows, this call %ld",
           cache->rows, rows);
  c5k_rows_dense(rows, n, cache->plan, R);
  C5_CALL(ensure_work(cache, R));
  C5_CALL(c5_cd_backward_prepare(cache, R));
  return C5_OK;
}

c5_status c5_cd_backward(const c5_backend *be, const c5_dist *d, c5_cd_cache *cache, long rows, long n,
                         const c5_real *s, const uint8_t *mask, const c5_real *y,
                         const c5_real *gy, c5_real *ds)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_cd_backward: dist is NULL");
  c5k_rows R;
  C5_AGREE(d, backward_local(cache, rows, n, s, y, gy, ds, &R));
  C5_CALL(c5_cd_backward_rows(be, d, cache, &R, s, mask, y, gy, ds));
  return C5_OK;
}
