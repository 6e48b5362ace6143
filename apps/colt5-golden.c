/* colt5-golden - check libcolt5 against golden HDF5 vectors made by the
   PyTorch reference (tests/golden/README.md gives the layout and the
   agreement rule).

     colt5-golden [--tol REL] [--floor ABS] [--quiet] FILE.h5...
     mpirun -np P colt5-golden FILE.h5...   (the sequence is sharded over P ranks; rank 0 prints)

   One line per tensor: file, dataset, absolute and relative error, bound,
   PASS/FAIL (or REPORT for tensors the rule reports but does not judge).
   Exit: 0 all pass, 1 any fails, 2 usage or I/O error, 77 when a file's
   module is not implemented yet; the same on every rank.

   Errors (docs/errors.md): every step a rank takes alone (options, reading
   the file, allocating) is agreed over the ranks (c5_dist_agree) before the
   next collective, the library's or this program's own (gathers, the
   gradient sum); so an error on one rank fails every rank at the same
   point, rank 0 prints it once ("rank R: <R's message>") and every rank
   exits 2. Every rank must be given the same vector: the files' contents
   are compared (a hash) before any module runs. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "colt5_mpi.h"
#include "colt5_io.h"
#include "cli.h"

enum { EXIT_PASS = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_SKIP = 77 };

typedef struct {
  double rel, floor;   /* ||a - b|| <= rel ||b|| + floor sqrt(numel) */
  int rank, size;
  int quiet;
  int failed;
  long hash;            /* of the file being checked */
  c5_dist *dist;
} ctx_t;

/* In a function with c5_status st and label out: a call whose error ends the step. */
#define TRY(call) do { st = (call); if (st != C5_OK) goto out; } while (0)
/* This program's own error (recorded like the library's, so that the agreement carries it). */
#define FAIL(code, ...) do { st = c5_error_raise((code), __VA_ARGS__); goto out; } while (0)

/* *p = count (+1 spare, so that an empty tensor is a valid pointer) elements of elem bytes, zeroed;
   the byte count checked for overflow (count comes from a file's shape). what names the buffer. */
static c5_status alloc_n(const char *file, const char *what, long count, size_t elem, void **p)
{
  size_t bytes;
  *p = NULL;
  if (count < 0 || __builtin_mul_overflow((size_t)count + 1, elem, &bytes))
    return c5_error_raise(C5_ERR_SHAPE, "%s: %s: %ld elements of %zu bytes overflow a size", file, what, count, elem);
  if (!(*p = calloc(bytes, 1)))
    return c5_error_raise(C5_ERR_MEM, "%s: out of memory for %s (%ld elements, %zu bytes)", file, what, count, bytes);
  return C5_OK;
}
#define ALLOC(file, what, p, count) alloc_n((file), (what), (count), sizeof *(p), (void **)&(p))

/* A product of sizes from a file (b * n * dim), or an error naming it. */
static c5_status mul_size(const char *file, const char *what, long a, long b, long *out)
{
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, out))
    return c5_error_raise(C5_ERR_SHAPE, "%s: %s: %ld x %ld overflows", file, what, a, b);
  return C5_OK;
}

/* Every element of a tensor just read is finite: a NaN or Inf of the file is named by its dataset and
   index here, before a module meets it deep inside (where it would name a layer's logits). */
static c5_status check_finite(const char *file, const char *name, const c5_real *v, int nd, const long *dims)
{
  long n = c5_numel(nd, dims);
  for (long i = 0; i < n; i++) {
    if (isfinite(v[i])) continue;
    char at[256];
    size_t o = 0;
    long rest = i, stride = n;
    for (int k = 0; k < nd && o < sizeof at; k++) {
      stride = dims[k] ? stride / dims[k] : 1;
      o += (size_t)snprintf(at + o, sizeof at - o, k ? ", %ld" : "%ld", stride ? rest / stride : 0);
      rest = stride ? rest % stride : 0;
    }
    return c5_error_raise(C5_ERR_NUMERIC, "%s: dataset %s has %s at index [%s] (flat %ld): inputs and parameters must "
                          "be finite", file, name, isnan(v[i]) ? "NaN" : v[i] > 0 ? "+Inf" : "-Inf", at, i);
  }
  return C5_OK;
}

/* Compare and print one tensor. judged = 0: reported only. */
static void compare(ctx_t *cx, const char *file, const char *name, const c5_real *got, const double *ref,
                    long n, int judged)
{
  if (cx->rank != 0) return;   /* only rank 0 holds the gathered tensors */
  double d2 = 0, r2 = 0;
  for (long i = 0; i < n; i++) {
    double e = (double)got[i] - ref[i];
    d2 += e * e;
    r2 += ref[i] * ref[i];
  }
  double abs_err = sqrt(d2), nrm = sqrt(r2), bound = cx->rel * nrm + cx->floor * sqrt((double)n);
  int ok = isfinite(abs_err) && abs_err <= bound;
  if (judged && !ok) cx->failed = 1;
  if ((!cx->quiet || (judged && !ok)))
    printf("%s %-40s abs %.3e rel %.3e bound %.3e %s\n", file, name, abs_err, nrm > 0 ? abs_err / nrm : abs_err,
           bound, !judged ? "REPORT" : ok ? "PASS" : "FAIL");
}

/* The end of a case's loading (every rank reads the file alone): its status agreed, then the files' hashes
   compared, so that a rank's own error (a missing dataset, a wrong shape) is the one reported. Every path of
   run_file comes here first. */
static c5_status agree_loaded(ctx_t *cx, c5_status st)
{
  st = c5_dist_agree(cx->dist, st);
  if (st == C5_OK) st = c5_dist_agree_long(cx->dist, "the input file's contents (its FNV-1a hash)", cx->hash);
  return st;
}

/* This rank's [b, nl, w] slice of a sequence-sharded tensor gathered into full [b, n, w] (on every
   rank; rank 0 compares). Collective. */
static c5_status gather_seq(ctx_t *cx, const c5_real *loc, long b, long nl, long w, long n, long unit, c5_real *full)
{
  (void)nl;
  return c5_dist_allgather_seq(cx->dist, b, n, unit, w, loc, full);
}

/* A tensor of the file as double into *out (NULL on error). Rank-local. */
static c5_status read_ref(const char *file, c5_h5 *f, const char *name, long numel, double **out)
{
  int nd;
  long dims[C5_H5_MAXDIM];
  *out = NULL;
  if (c5_h5_shape(f, name, &nd, dims) != C5_OK || c5_numel(nd, dims) != numel)
    return c5_error_raise(C5_ERR_IO, "%s: dataset %s missing or of the wrong size (%s)", file, name, c5_last_error());
  double *r;
  c5_status st = ALLOC(file, name, r, numel);
  if (st != C5_OK) return st;
  st = c5_h5_read_double(f, name, -1, NULL, r);
  if (st != C5_OK) { free(r); return st; }
  *out = r;
  return C5_OK;
}

/* Gather a sequence-sharded tensor and compare it with the file's name (read on every rank and agreed:
   the file is the same everywhere, a failing read may not be). */
static c5_status compare_gathered(ctx_t *cx, c5_h5 *f, const char *file, const char *name, const c5_real *loc,
                                  long b, long nl, long w, long n, long unit)
{
  double *ref = NULL;
  c5_real *full = NULL;
  c5_status st = read_ref(file, f, name, b * n * w, &ref);
  if (st == C5_OK) st = ALLOC(file, "the gathered output", full, b * n * w);
  TRY(c5_dist_agree(cx->dist, st));
  TRY(gather_seq(cx, loc, b, nl, w, n, unit, full));
  compare(cx, file, name + 1, full, ref, b * n * w, 1);
out:
  free(ref); free(full);
  return st;
}

/* coor_descent cases: /inputs/s, mask, grad_y; /outputs/y; /grads/s. */
typedef struct {
  c5_cd_config cfg;
  long rows, n, nl, kstride;
  c5_layout lay;
  double *kv;
  c5_real *ls, *lgy, *y, *ds;   /* this rank's columns */
  uint8_t *lm;
  c5_cd_cache cache;
} cd_case;

static void cd_case_free(cd_case *k)
{
  c5_cd_cache_free(&k->cache);
  free(k->kv); free(k->ls); free(k->lgy); free(k->y); free(k->ds); free(k->lm);
}

/* Everything a coordinate-descent case does before its first collective. Rank-local. */
static c5_status cd_load(ctx_t *cx, c5_h5 *f, const char *file, cd_case *k)
{
  static const char *const keys[] = { "k", "n_iters", "eps", "eps_init", "eps_decay", NULL };
  c5_status st = C5_OK;
  int nd;
  long dims[C5_H5_MAXDIM];
  char *args = NULL;
  json_t *js = NULL;
  c5_real *s = NULL, *gy = NULL;
  uint8_t *mask = NULL;

  TRY(c5_h5_attr_string(f, "/", "args", &args));
  json_error_t je;
  js = json_loads(args, 0, &je);
  if (!js || !json_is_object(js)) FAIL(C5_ERR_IO, "%s: attribute args is not a JSON object (%s)", file, je.text);
  TRY(cli_check_keys(file, "args", js, keys));
  json_t *kj = json_object_get(js, "k"), *ij = json_object_get(js, "n_iters");
  if (!kj || !(json_is_number(kj) || json_is_array(kj)) || !ij || !json_is_integer(ij))
    FAIL(C5_ERR_IO, "%s: args needs k (a number, or a list with one per row) and integer n_iters", file);
  c5_cd_config cfg = C5_CD_CONFIG_DEFAULT;
  if (!(json_integer_value(ij) > 0 && json_integer_value(ij) < 2147483648LL))
    FAIL(C5_ERR_ARG, "%s: args n_iters = %lld, expected an integer from 1 to 2^31 - 1", file, (long long)json_integer_value(ij));
  cfg.n_iters = (int)json_integer_value(ij);
  cfg.eps = cli_json_num(js, "eps", cfg.eps);
  cfg.eps_init = cli_json_num(js, "eps_init", 0.0);   /* null: start at eps */
  cfg.eps_decay = cli_json_num(js, "eps_decay", cfg.eps_decay);
  k->cfg = cfg;

  TRY(c5_h5_shape(f, "/inputs/s", &nd, dims));
  if (nd != 2) FAIL(C5_ERR_SHAPE, "%s: /inputs/s must be [rows, n]", file);
  long rows = k->rows = dims[0], n = k->n = dims[1], rn = rows * n;   /* a checked shape: no wrap */
  if (rows < 1 || n < 1) FAIL(C5_ERR_SHAPE, "%s: dataset /inputs/s has shape [%ld,%ld]: rows and n must be >= 1", file, rows, n);
  k->kstride = json_is_array(kj) ? 1 : 0;
  if (k->kstride && (long)json_array_size(kj) != rows)
    FAIL(C5_ERR_IO, "%s: args k has %zu entries for %ld rows", file, json_array_size(kj), rows);
  TRY(ALLOC(file, "k per row", k->kv, rows));
  for (long r = 0; r < (k->kstride ? rows : 1); r++) {
    json_t *e = k->kstride ? json_array_get(kj, (size_t)r) : kj;
    if (!json_is_number(e)) FAIL(C5_ERR_IO, "%s: args k[%ld] is not a number", file, r);
    k->kv[r] = json_number_value(e);
  }
  TRY(ALLOC(file, "/inputs/s", s, rn));
  TRY(ALLOC(file, "/inputs/grad_y", gy, rn));
  TRY(c5_h5_read_real(f, "/inputs/s", 2, dims, s));
  TRY(check_finite(file, "/inputs/s", s, 2, dims));
  TRY(c5_h5_read_real(f, "/inputs/grad_y", 2, dims, gy));
  TRY(check_finite(file, "/inputs/grad_y", gy, 2, dims));
  if (c5_h5_exists(f, "/inputs/mask")) {
    TRY(ALLOC(file, "/inputs/mask", mask, rn));
    TRY(c5_h5_read_u8(f, "/inputs/mask", 2, dims, mask));
  }
  /* this rank's columns */
  TRY(c5_layout_compute(cx->dist, n, 1, &k->lay));
  long nl = k->nl = k->lay.n_local;
  TRY(ALLOC(file, "this rank's columns of /inputs/s", k->ls, rows * nl));
  TRY(ALLOC(file, "this rank's columns of /inputs/grad_y", k->lgy, rows * nl));
  TRY(ALLOC(file, "the output y", k->y, rows * nl));
  TRY(ALLOC(file, "the gradient of s", k->ds, rows * nl));
  if (mask) TRY(ALLOC(file, "this rank's columns of /inputs/mask", k->lm, rows * nl));
  for (long r = 0; r < rows; r++) {
    memcpy(k->ls + r * nl, s + r * n + k->lay.offset, (size_t)nl * sizeof *s);
    memcpy(k->lgy + r * nl, gy + r * n + k->lay.offset, (size_t)nl * sizeof *s);
    if (mask) memcpy(k->lm + r * nl, mask + r * n + k->lay.offset, (size_t)nl);
  }
  TRY(c5_cd_cache_alloc(rows, cfg.n_iters, &k->cache));
out:
  free(args); json_decref(js);
  free(s); free(gy); free(mask);
  return st;
}

static c5_status run_cd(ctx_t *cx, c5_h5 *f, const char *file)
{
  cd_case k = { 0 };
  c5_status st;
  TRY(agree_loaded(cx, cd_load(cx, f, file, &k)));
  TRY(c5_cd_forward(c5_backend_cpu(), cx->dist, &k.cfg, k.rows, k.nl, k.ls, k.lm, k.kv, k.kstride, k.y, &k.cache));
  TRY(c5_cd_backward(c5_backend_cpu(), cx->dist, &k.cache, k.rows, k.nl, k.ls, k.lm, k.y, k.lgy, k.ds));
  /* rows sharded by columns, unit 1 */
  TRY(compare_gathered(cx, f, file, "/outputs/y", k.y, k.rows, k.nl, 1, k.n, 1));
  TRY(compare_gathered(cx, f, file, "/grads/s", k.ds, k.rows, k.nl, 1, k.n, 1));
out:
  cd_case_free(&k);
  return st;
}

/* ---- module cases ------------------------------------------------------------------ */

/* router_kwargs (and router_straight_through) into a router config. */
static c5_status parse_router(const char *file, json_t *kw, int straight_through, c5_router_config *rc)
{
  static const char *const keys[] = { "n_iters", "fetch_k_ratio", "eps", "eps_init", "eps_decay", "num_routing_tokens",
                                      "use_triton", "cosine_sim_routing", "cosine_sim_scale", "route_block_size",
                                      "triton_checkpoint_segments", "learned_routing_tokens", NULL };
  c5_router_config d = C5_ROUTER_CONFIG_DEFAULT;
  *rc = d;
  rc->straight_through = straight_through;
  if (!kw) return C5_OK;
  if (!json_is_object(kw)) return c5_error_raise(C5_ERR_ARG, "%s: router_kwargs is not a JSON object", file);
  c5_status st = cli_check_keys(file, "router_kwargs", kw, keys);
  if (st != C5_OK) return st;
  json_t *v;
  if (json_is_true(json_object_get(kw, "learned_routing_tokens")))
    return c5_error_raise(C5_ERR_ARG, "%s: router_kwargs learned_routing_tokens=true is not supported", file);
  rc->n_iters = (int)cli_json_int(kw, "n_iters", rc->n_iters);
  rc->fetch_k_ratio = cli_json_num(kw, "fetch_k_ratio", rc->fetch_k_ratio);
  rc->eps = cli_json_num(kw, "eps", rc->eps);
  rc->eps_init = cli_json_num(kw, "eps_init", rc->eps_init);
  rc->eps_decay = cli_json_num(kw, "eps_decay", rc->eps_decay);
  rc->num_routing_tokens = (int)cli_json_int(kw, "num_routing_tokens", rc->num_routing_tokens);
  rc->cosine_sim_scale = cli_json_num(kw, "cosine_sim_scale", rc->cosine_sim_scale);
  rc->route_block_size = (long)cli_json_int(kw, "route_block_size", 0);
  if ((v = json_object_get(kw, "cosine_sim_routing"))) rc->cosine_sim_routing = json_is_true(v);
  return C5_OK;
}

/* Compare every parameter gradient (summed over ranks); router ones are
   reported only in single precision (golden README). */
static c5_status compare_param_grads(ctx_t *cx, c5_h5 *f, const char *file, c5_params *p)
{
  c5_status st = C5_OK;
  double *ref = NULL;
  TRY(c5_params_allreduce_grad(p, cx->dist));
  for (long i = 0; i < c5_params_count(p); i++) {
    char name[512];
    snprintf(name, sizeof name, "/grads/%s", c5_params_name(p, i));
    TRY(c5_dist_agree(cx->dist, read_ref(file, f, name, c5_params_numel(p, i), &ref)));
    int judged = C5_USE_DOUBLE || !strstr(c5_params_name(p, i), "routing_token");
    compare(cx, file, name + 1, c5_params_grad(p, i), ref, c5_params_numel(p, i), judged);
    free(ref);
    ref = NULL;
  }
out:
  free(ref);
  return st;
}

/* Router indices (identical) and scores: gather each rank's selections. */
static c5_status compare_routing(ctx_t *cx, c5_h5 *f, const char *file, const char *rname, const c5_routing *rt,
                                 long rows)
{
  char name[512];
  c5_status st = C5_OK;
  long routed = 1, k = rt->k, total = rows * k;
  long *idx = NULL, *ref = NULL;
  c5_real *sc = NULL;
  long *cnts = NULL;
  double *rs = NULL;
  snprintf(name, sizeof name, "/routers/%s", rname);
  if (c5_h5_exists(f, name) && c5_h5_attr_long(f, name, "routed", &routed) != C5_OK) c5_error_clear();   /* absent: 1 */
  if (!routed || !rt->routed) {
    if (cx->rank == 0 && (!cx->quiet || routed != rt->routed))
      printf("%s %-40s routed: file %ld, ours %d %s\n", file, name + 1, routed, rt->routed, routed == rt->routed ? "PASS" : "FAIL");
    if (routed != rt->routed) cx->failed = 1;
    goto out;
  }
  st = mul_size(file, name, rows, k, &total);
  if (st == C5_OK) st = ALLOC(file, "the gathered routing indices", idx, total);
  if (st == C5_OK) st = ALLOC(file, "the gathered routing scores", sc, total);
  if (st == C5_OK) st = ALLOC(file, "the routing counts", cnts, rows);
  TRY(c5_dist_agree(cx->dist, st));
  TRY(c5_dist_allgather_routing(cx->dist, rt, rows, k, idx, sc, cnts));   /* each row's entries, ranks in order */
  char iname[512], sname[512];
  snprintf(iname, sizeof iname, "/routers/%s/indices", rname);
  snprintf(sname, sizeof sname, "/routers/%s/scores", rname);
  int nd;
  long dims[C5_H5_MAXDIM];
  if (c5_h5_shape(f, iname, &nd, dims) != C5_OK || c5_numel(nd, dims) != total)
    st = c5_error_raise(C5_ERR_IO, "%s: %s missing or not %ld x %ld", file, iname, rows, k);
  else if ((st = ALLOC(file, iname, ref, total)) == C5_OK)
    st = c5_h5_read_long(f, iname, -1, NULL, ref);
  if (st == C5_OK) st = read_ref(file, f, sname, total, &rs);
  TRY(c5_dist_agree(cx->dist, st));
  long diff = 0;
  for (long i = 0; i < total; i++) diff += ref[i] != idx[i];
  if (diff) cx->failed = 1;
  if (cx->rank == 0 && (!cx->quiet || diff))
    printf("%s %-40s %ld of %ld differ %s\n", file, iname + 1, diff, total, diff ? "FAIL" : "PASS");
  compare(cx, file, sname + 1, sc, rs, total, 1);
out:
  free(idx); free(sc); free(cnts); free(ref); free(rs);
  return st;
}

/* Inputs of a module case, this rank's slice. */
typedef struct {
  long b, n, dim, nl, unit;
  c5_layout lay;
  c5_real *x, *gout;    /* [b, nl, dim] */
  uint8_t *mask;        /* [b, nl] or NULL */
} mod_inputs;

static void inputs_free(mod_inputs *in) { free(in->x); free(in->gout); free(in->mask); }

/* This rank's slice of /inputs/x, grad_out and mask. Rank-local. */
static c5_status read_inputs(ctx_t *cx, c5_h5 *f, const char *file, long unit, mod_inputs *in)
{
  int nd;
  c5_status st = C5_OK;
  long dims[C5_H5_MAXDIM];
  c5_real *x = NULL, *g = NULL;
  uint8_t *m = NULL;
  memset(in, 0, sizeof *in);
  TRY(c5_h5_shape(f, "/inputs/x", &nd, dims));
  if (nd != 3) FAIL(C5_ERR_SHAPE, "%s: /inputs/x must be [b, n, dim]", file);
  in->b = dims[0]; in->n = dims[1]; in->dim = dims[2]; in->unit = unit;
  static const char *const dname[3] = { "the batch", "the sequence length n", "dim" };
  for (int i = 0; i < 3; i++)
    if (dims[i] < 1)
      FAIL(C5_ERR_SHAPE, "%s: dataset /inputs/x has shape [%ld,%ld,%ld]: %s (dimension %d) must be >= 1", file,
           dims[0], dims[1], dims[2], dname[i], i);
  long N = in->b * in->n * in->dim;   /* a checked shape (c5_h5_shape): no wrap */
  TRY(ALLOC(file, "/inputs/x", x, N));
  TRY(ALLOC(file, "/inputs/grad_out", g, N));
  TRY(c5_h5_read_real(f, "/inputs/x", 3, dims, x));
  TRY(check_finite(file, "/inputs/x", x, 3, dims));
  TRY(c5_h5_read_real(f, "/inputs/grad_out", 3, dims, g));
  TRY(check_finite(file, "/inputs/grad_out", g, 3, dims));
  if (c5_h5_exists(f, "/inputs/mask")) {
    TRY(ALLOC(file, "/inputs/mask", m, in->b * in->n));
    TRY(c5_h5_read_u8(f, "/inputs/mask", 2, dims, m));
  }
  TRY(c5_layout_compute(cx->dist, in->n, unit, &in->lay));
  long nl = in->nl = in->lay.n_local, o = in->lay.offset, D = in->dim;
  TRY(ALLOC(file, "this rank's part of /inputs/x", in->x, in->b * nl * D));
  TRY(ALLOC(file, "this rank's part of /inputs/grad_out", in->gout, in->b * nl * D));
  if (m) TRY(ALLOC(file, "this rank's part of /inputs/mask", in->mask, in->b * nl));
  for (long i = 0; i < in->b; i++) {
    memcpy(in->x + i * nl * D, x + (i * in->n + o) * D, (size_t)(nl * D) * sizeof *x);
    memcpy(in->gout + i * nl * D, g + (i * in->n + o) * D, (size_t)(nl * D) * sizeof *g);
    if (m) memcpy(in->mask + i * nl, m + i * in->n + o, (size_t)nl);
  }
out:
  free(x); free(g); free(m);
  return st;
}

/* A module behind one interface, so that one runner serves every layout. */
typedef struct {
  const char *module;
  const char *const *ctor_keys, *const *fwd_keys;
  /* build the module from ctor/forward JSON, and its layout unit (the library's) (rank-local) */
  c5_status (*build)(const char *file, json_t *cj, json_t *fj, c5_params *p, void **m, long *unit);
  c5_status (*cache)(void *m, long b, long n, void **c);
  c5_status (*forward)(void *m, const c5_dist *d, const c5_layout *lay, long b, const c5_real *x, const uint8_t *mask,
                       void *c, c5_real *out);
  c5_status (*backward)(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *dout, c5_real *dx);
  /* router i of the module: its name in the file, its routing and rows; 0 past the last */
  int (*router)(void *c, int i, const char **name, const c5_routing **rt);
  void (*destroy)(void **m, void **c);
} module_t;

static c5_status ff_config(const char *file, json_t *cj, const char *ntok_key, json_t *fj, const char *fkey,
                     c5_routed_ff_config *cfg)
{
  c5_routed_ff_config d = C5_ROUTED_FF_CONFIG_DEFAULT;
  *cfg = d;
  cfg->dim = (int)cli_json_int(cj, "dim", 0);
  cfg->num_heavy_tokens = cli_json_int(fj, fkey, cli_json_int(cj, ntok_key, 0));
  cfg->light_ff_mult = cli_json_num(cj, "light_ff_mult", cfg->light_ff_mult);
  cfg->heavy_ff_mult = cli_json_num(cj, "heavy_ff_mult", cfg->heavy_ff_mult);
  return parse_router(file, json_object_get(cj, "router_kwargs"), cli_json_bool(cj, "router_straight_through", 1), &cfg->router);
}

static c5_status attn_config(const char *file, json_t *cj, const char *qk, const char *kvk, json_t *fj, const char *fq,
                       const char *fkv, c5_routed_attn_config *cfg)
{
  c5_routed_attn_config d = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  *cfg = d;
  cfg->dim = (int)cli_json_int(cj, "dim", 0);
  cfg->num_heavy_tokens_q = cli_json_int(fj, fq, cli_json_int(cj, qk, 0));
  cfg->num_heavy_tokens_kv = cli_json_int(fj, fkv, cli_json_int(cj, kvk, 0));
  cfg->num_routed_kv = (int)cli_json_int(cj, "num_routed_kv", cfg->num_routed_kv);
  cfg->has_light_attn = cli_json_bool(cj, "has_light_attn", 1);
  cfg->light_dim_head = (int)cli_json_int(cj, "light_dim_head", cfg->light_dim_head);
  cfg->light_heads = (int)cli_json_int(cj, "light_heads", cfg->light_heads);
  cfg->light_window_size = cli_json_int(cj, "light_window_size", cfg->light_window_size);
  cfg->heavy_dim_head = (int)cli_json_int(cj, "heavy_dim_head", cfg->heavy_dim_head);
  cfg->heavy_heads = (int)cli_json_int(cj, "heavy_heads", cfg->heavy_heads);
  cfg->multiply_keys_by_score = cli_json_bool(cj, "multiply_keys_by_score", 0);
  cfg->multiply_queries_by_score = cli_json_bool(cj, "multiply_queries_by_score", 0);
  cfg->use_null_q_tokens = cli_json_bool(cj, "use_null_q_tokens", 1);
  cfg->rotary_emb = cli_json_bool(cj, "rotary_emb", 0);
  cfg->light_rotary_emb = cli_json_bool(cj, "light_rotary_emb", 0);
  cfg->kv_gather_batch_bug = cli_json_bool(cj, "kv_gather_batch_bug", 1);   /* vectors of the unpatched reference */
  return parse_router(file, json_object_get(cj, "router_kwargs"), cli_json_bool(cj, "router_straight_through", 1), &cfg->router);
}

/* ConditionalRoutedFeedForward */
/* A constructor's error, named by the file. */
static c5_status built(const char *file, c5_status st)
{
  if (cli_json_error()[0]) return c5_error_raise(C5_ERR_ARG, "%s: %s", file, cli_json_error());   /* before what it built from it */
  return st == C5_OK ? st : c5_error_raise(st, "%s: %s", file, c5_last_error());
}

static c5_status ff_build(const char *file, json_t *cj, json_t *fj, c5_params *p, void **m, long *unit)
{
  c5_routed_ff_config cfg;
  c5_status st = ff_config(file, cj, "num_heavy_tokens", fj, "num_heavy_tokens", &cfg);
  if (st != C5_OK) return st;
  st = built(file, c5_routed_ff_create(&cfg, p, "", (c5_routed_ff **)m));
  return st == C5_OK ? built(file, c5_routed_ff_layout_unit(&cfg, unit)) : st;
}
static c5_status ff_cache(void *m, long b, long n, void **c) { return c5_routed_ff_cache_create(m, b, n, (c5_routed_ff_cache **)c); }
static c5_status ff_fwd(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o)
{ return c5_routed_ff_forward(m, d, l, b, x, mk, c, o); }
static c5_status ff_bwd(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx)
{ return c5_routed_ff_backward(m, d, c, x, g, dx); }
static int ff_router(void *c, int i, const char **name, const c5_routing **rt)
{
  if (i > 0) return 0;
  *name = "router"; *rt = c5_routed_ff_routing(c);
  return 1;
}
static void ff_destroy(void **m, void **c) { c5_routed_ff_cache_destroy((c5_routed_ff_cache **)c); c5_routed_ff_destroy((c5_routed_ff **)m); }

/* ConditionalRoutedAttention */
static c5_status attn_build(const char *file, json_t *cj, json_t *fj, c5_params *p, void **m, long *unit)
{
  c5_routed_attn_config cfg;
  c5_status st = attn_config(file, cj, "num_heavy_tokens_q", "num_heavy_tokens_kv", fj, "num_heavy_tokens_q",
                             "num_heavy_tokens_kv", &cfg);
  if (st != C5_OK) return st;
  st = built(file, c5_routed_attn_create(&cfg, p, "", (c5_routed_attn **)m));
  return st == C5_OK ? built(file, c5_routed_attn_layout_unit(&cfg, unit)) : st;
}
static c5_status attn_cache(void *m, long b, long n, void **c) { return c5_routed_attn_cache_create(m, b, n, (c5_routed_attn_cache **)c); }
static c5_status attn_fwd(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o)
{ return c5_routed_attn_forward(m, d, l, b, x, mk, c, o); }
static c5_status attn_bwd(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx)
{ return c5_routed_attn_backward(m, d, c, x, g, dx); }
static int attn_router(void *c, int i, const char **name, const c5_routing **rt)
{
  if (i == 0) { *name = "q_router"; *rt = c5_routed_attn_routing_q(c); return 1; }
  if (i == 1) { *name = "kv_router"; *rt = c5_routed_attn_routing_kv(c); return 1; }
  return 0;
}
static void attn_destroy(void **m, void **c) { c5_routed_attn_cache_destroy((c5_routed_attn_cache **)c); c5_routed_attn_destroy((c5_routed_attn **)m); }

/* ConditionalRoutedAutoregressiveAttention (takes no mask) */
static c5_status ar_build(const char *file, json_t *cj, json_t *fj, c5_params *p, void **m, long *unit)
{
  c5_routed_ar_attn_config cfg = C5_ROUTED_AR_ATTN_CONFIG_DEFAULT;
  cfg.dim = (int)cli_json_int(cj, "dim", 0);
  cfg.num_heavy_tokens_q = cli_json_int(fj, "num_heavy_tokens_q", cli_json_int(cj, "num_heavy_tokens_q", 0));
  cfg.num_heavy_tokens_kv = cli_json_int(fj, "num_heavy_tokens_kv", cli_json_int(cj, "num_heavy_tokens_kv", 0));
  cfg.num_routed_kv = (int)cli_json_int(cj, "num_routed_kv", cfg.num_routed_kv);
  cfg.light_dim_head = (int)cli_json_int(cj, "light_dim_head", cfg.light_dim_head);
  cfg.light_heads = (int)cli_json_int(cj, "light_heads", cfg.light_heads);
  cfg.light_window_size = cli_json_int(cj, "light_window_size", cfg.light_window_size);
  cfg.heavy_window_size = (long)cli_json_int(cj, "heavy_window_size", 0);   /* null: light_window_size */
  cfg.heavy_dim_head = (int)cli_json_int(cj, "heavy_dim_head", cfg.heavy_dim_head);
  cfg.heavy_heads = (int)cli_json_int(cj, "heavy_heads", cfg.heavy_heads);
  cfg.multiply_keys_by_score = cli_json_bool(cj, "multiply_keys_by_score", 0);
  cfg.multiply_queries_by_score = cli_json_bool(cj, "multiply_queries_by_score", 0);
  cfg.use_null_q_tokens = cli_json_bool(cj, "use_null_q_tokens", 1);
  cfg.rotary_emb = cli_json_bool(cj, "rotary_emb", 0);
  cfg.kv_gather_batch_bug = cli_json_bool(cj, "kv_gather_batch_bug", 1);   /* vectors of the unpatched reference */
  c5_status st = parse_router(file, json_object_get(cj, "router_kwargs"), cli_json_bool(cj, "router_straight_through", 1),
                              &cfg.router);
  if (st != C5_OK) return st;
  st = built(file, c5_routed_ar_attn_create(&cfg, p, "", (c5_routed_ar_attn **)m));
  return st == C5_OK ? built(file, c5_routed_ar_attn_layout_unit(&cfg, unit)) : st;
}
static c5_status ar_cache(void *m, long b, long n, void **c) { return c5_routed_ar_attn_cache_create(m, b, n, (c5_routed_ar_attn_cache **)c); }
static c5_status ar_fwd(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o)
{
  c5_status st = mk ? c5_error_raise(C5_ERR_ARG, "ConditionalRoutedAutoregressiveAttention takes no mask, but the file "
                                     "has /inputs/mask") : C5_OK;
  st = c5_dist_agree(d, st);
  return st != C5_OK ? st : c5_routed_ar_attn_forward(m, d, l, b, x, c, o);
}
static c5_status ar_bwd(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx)
{ return c5_routed_ar_attn_backward(m, d, c, x, g, dx); }
static int ar_router(void *c, int i, const char **name, const c5_routing **rt)
{
  if (i == 0) { *name = "q_router"; *rt = c5_routed_ar_attn_routing_q(c); return 1; }
  if (i == 1) { *name = "kv_router"; *rt = c5_routed_ar_attn_routing_kv(c); return 1; }
  return 0;
}
static void ar_destroy(void **m, void **c) { c5_routed_ar_attn_cache_destroy((c5_routed_ar_attn_cache **)c); c5_routed_ar_attn_destroy((c5_routed_ar_attn **)m); }

/* ConditionalRoutedTransformerBlock */
static c5_status block_build(const char *file, json_t *cj, json_t *fj, c5_params *p, void **m, long *unit)
{
  c5_block_config cfg;
  c5_status st = attn_config(file, cj, "num_heavy_attn_tokens_q", "num_heavy_attn_tokens_kv", fj,
                             "num_heavy_attn_tokens_q", "num_heavy_attn_tokens_kv", &cfg.attn);
  if (st == C5_OK) st = ff_config(file, cj, "num_heavy_ff_tokens", fj, "num_heavy_ff_tokens", &cfg.ff);
  if (st != C5_OK) return st;
  st = built(file, c5_block_create(&cfg, p, "", (c5_block **)m));
  return st == C5_OK ? built(file, c5_block_layout_unit(&cfg, unit)) : st;
}
static c5_status block_cache(void *m, long b, long n, void **c) { return c5_block_cache_create(m, b, n, (c5_block_cache **)c); }
static c5_status block_fwd(void *m, const c5_dist *d, const c5_layout *l, long b, const c5_real *x, const uint8_t *mk, void *c, c5_real *o)
{ return c5_block_forward(m, d, l, b, x, mk, c, o); }
static c5_status block_bwd(void *m, const c5_dist *d, void *c, const c5_real *x, const c5_real *g, c5_real *dx)
{ return c5_block_backward(m, d, c, x, g, dx); }
static int block_router(void *c, int i, const char **name, const c5_routing **rt)
{
  const c5_block_cache *bc = c;
  if (i == 0) { *name = "conditional_attn.q_router"; *rt = c5_routed_attn_routing_q(c5_block_attn_cache(bc)); return 1; }
  if (i == 1) { *name = "conditional_attn.kv_router"; *rt = c5_routed_attn_routing_kv(c5_block_attn_cache(bc)); return 1; }
  if (i == 2) { *name = "conditional_ff.router"; *rt = c5_routed_ff_routing(c5_block_ff_cache(bc)); return 1; }
  return 0;
}
static void block_destroy(void **m, void **c) { c5_block_cache_destroy((c5_block_cache **)c); c5_block_destroy((c5_block **)m); }

static const char *const ff_keys[] = { "dim", "num_heavy_tokens", "light_ff_mult", "heavy_ff_mult",
                                       "router_straight_through", "router_kwargs", "use_triton", NULL };
static const char *const ff_fkeys[] = { "num_heavy_tokens", NULL };
static const char *const attn_keys[] = { "dim", "num_heavy_tokens_q", "num_heavy_tokens_kv", "num_routed_kv",
  "has_light_attn", "light_dim_head", "light_heads", "light_window_size", "heavy_dim_head", "heavy_heads",
  "router_straight_through", "router_kwargs", "multiply_keys_by_score", "multiply_queries_by_score", "use_triton",
  "use_null_q_tokens", "use_flash_attn", "rotary_emb", "light_rotary_emb", "kv_gather_batch_bug", NULL };
static const char *const attn_fkeys[] = { "num_heavy_tokens_q", "num_heavy_tokens_kv", NULL };
static const char *const ar_keys[] = { "dim", "num_heavy_tokens_q", "num_heavy_tokens_kv", "num_routed_kv",
  "light_dim_head", "light_heads", "light_window_size", "heavy_window_size", "heavy_dim_head", "heavy_heads",
  "router_straight_through", "router_kwargs", "multiply_keys_by_score", "multiply_queries_by_score", "use_triton",
  "use_null_q_tokens", "use_flash_attn", "rotary_emb", "kv_gather_batch_bug", NULL };
static const char *const block_keys[] = { "dim", "num_heavy_attn_tokens_q", "num_heavy_attn_tokens_kv",
  "num_routed_kv", "num_heavy_ff_tokens", "light_dim_head", "light_heads", "light_window_size", "heavy_dim_head",
  "heavy_heads", "light_ff_mult", "heavy_ff_mult", "router_straight_through", "router_kwargs",
  "multiply_keys_by_score", "multiply_queries_by_score", "use_triton", "use_null_q_tokens", "use_flash_attn",
  "light_rotary_emb", "kv_gather_batch_bug", NULL };
static const char *const block_fkeys[] = { "num_heavy_attn_tokens_q", "num_heavy_attn_tokens_kv", "num_heavy_ff_tokens", NULL };

static const module_t modules_tab[] = {
  { "ConditionalRoutedFeedForward", ff_keys, ff_fkeys, ff_build, ff_cache, ff_fwd, ff_bwd, ff_router, ff_destroy },
  { "ConditionalRoutedAttention", attn_keys, attn_fkeys, attn_build, attn_cache, attn_fwd, attn_bwd, attn_router, attn_destroy },
  { "ConditionalRoutedAutoregressiveAttention", ar_keys, attn_fkeys, ar_build, ar_cache, ar_fwd, ar_bwd, ar_router,
    ar_destroy },
  { "ConditionalRoutedTransformerBlock", block_keys, block_fkeys, block_build, block_cache, block_fwd, block_bwd,
    block_router, block_destroy },
};

/* Everything a module case does before its first collective: the options, the module, its parameters,
   this rank's inputs and buffers. Rank-local. */
typedef struct {
  char *ctor, *fwd;
  json_t *cj, *fj;
  c5_params *p;
  void *m, *cache;
  mod_inputs in;
  c5_real *out, *dx;
} mod_case;

static c5_status module_load(ctx_t *cx, c5_h5 *f, const char *file, const module_t *mt, mod_case *k)
{
  c5_status st = C5_OK;
  json_error_t je;
  TRY(c5_h5_attr_string(f, "/", "ctor", &k->ctor));
  TRY(c5_h5_attr_string(f, "/", "forward", &k->fwd));
  k->cj = json_loads(k->ctor, 0, &je);
  k->fj = json_loads(k->fwd, 0, &je);
  if (!k->cj || !k->fj || !json_is_object(k->cj) || !json_is_object(k->fj))
    FAIL(C5_ERR_IO, "%s: ctor or forward attribute is not a JSON object", file);
  TRY(cli_check_keys(file, "ctor", k->cj, mt->ctor_keys));
  TRY(cli_check_keys(file, "forward", k->fj, mt->fwd_keys));
  TRY(c5_params_create(c5_backend_cpu(), &k->p));
  long unit = 0;
  TRY(mt->build(file, k->cj, k->fj, k->p, &k->m, &unit));
  TRY(c5_params_alloc(k->p));
  TRY(c5_h5_read_params(f, "/params", k->p));
  for (long i = 0; i < c5_params_count(k->p); i++) {
    char name[512];
    long pd[C5_PARAM_MAXDIM];
    int nd = c5_params_shape(k->p, i, pd);
    snprintf(name, sizeof name, "/params/%s", c5_params_name(k->p, i));
    TRY(check_finite(file, name, c5_params_value(k->p, i), nd, pd));
  }
  TRY(read_inputs(cx, f, file, unit, &k->in));
  if (k->in.dim != (long)cli_json_num(k->cj, "dim", 0))
    FAIL(C5_ERR_SHAPE, "%s: /inputs/x has dim %ld, ctor dim %g", file, k->in.dim, cli_json_num(k->cj, "dim", 0));
  TRY(ALLOC(file, "the output", k->out, k->in.b * k->in.nl * k->in.dim));
  TRY(ALLOC(file, "the input gradient", k->dx, k->in.b * k->in.nl * k->in.dim));
  TRY(mt->cache(k->m, k->in.b, k->in.nl, &k->cache));
out:
  return st;
}

static c5_status run_module(ctx_t *cx, c5_h5 *f, const char *file, const module_t *mt)
{
  mod_case k = { 0 };
  mod_inputs *in = &k.in;
  c5_status st;
  TRY(agree_loaded(cx, module_load(cx, f, file, mt, &k)));
  if (cx->rank == 0 && !cx->quiet)   /* the shards the sequence was cut into (the unit is the module's) */
    printf("%s layout: n %ld, unit %ld, %d ranks\n", file, in->n, in->unit, cx->size);
  TRY(mt->forward(k.m, cx->dist, &in->lay, in->b, in->x, in->mask, k.cache, k.out));
  TRY(mt->backward(k.m, cx->dist, k.cache, in->x, in->gout, k.dx));
  TRY(compare_gathered(cx, f, file, "/outputs/out", k.out, in->b, in->nl, in->dim, in->n, in->unit));
  TRY(compare_gathered(cx, f, file, "/grads/x", k.dx, in->b, in->nl, in->dim, in->n, in->unit));
  TRY(compare_param_grads(cx, f, file, k.p));
  const char *rname;
  const c5_routing *rt;
  for (int i = 0; mt->router(k.cache, i, &rname, &rt); i++) TRY(compare_routing(cx, f, file, rname, rt, rt->rows));
out:
  if (k.m) mt->destroy(&k.m, &k.cache);
  c5_params_destroy(&k.p);
  inputs_free(in);
  free(k.out); free(k.dx); free(k.ctor); free(k.fwd);
  json_decref(k.cj); json_decref(k.fj);
  return st;
}

/* ---- the masked-byte model (CoLT5ByteModel of tools/colt5_torch.py; make_model_golden.py) ------------------ */
/* ctor: the block's options plus depth and max_seq_len; inputs tokens, targets [b, n] (int64), mask; outputs
   loss_sum, count, logits; grads of loss_sum / count; the three routers of each layer's block; /adamw: one
   optimizer step from those gradients. */
typedef struct {
  char *ctor;
  json_t *cj;
  c5_params *p;
  c5_model *m;
  c5_model_cache *cache;
  long b, n, unit;
  c5_layout lay;
  int32_t *tok, *tgt;   /* this rank's [b, n_local] */
  uint8_t *mask;
} model_case;

static c5_status model_load(ctx_t *cx, c5_h5 *f, const char *file, model_case *k)
{
  c5_status st = C5_OK;
  json_error_t je;
  json_t *bj = NULL, *none = json_object();
  long *tok = NULL, *tgt = NULL, dims[C5_H5_MAXDIM];
  uint8_t *mask = NULL;
  int nd;
  c5_model_config mc = { 0 };
  TRY(c5_h5_attr_string(f, "/", "ctor", &k->ctor));
  if (!(k->cj = json_loads(k->ctor, 0, &je)) || !json_is_object(k->cj))
    FAIL(C5_ERR_IO, "%s: ctor attribute is not a JSON object", file);
  /* the block's keys, and the model's own two */
  if (!(bj = json_deep_copy(k->cj)) || !none) FAIL(C5_ERR_MEM, "%s: out of memory", file);
  json_object_del(bj, "depth");
  json_object_del(bj, "max_seq_len");
  json_object_del(bj, "pos_emb_zero_init");
  TRY(cli_check_keys(file, "ctor", bj, block_keys));
  TRY(attn_config(file, k->cj, "num_heavy_attn_tokens_q", "num_heavy_attn_tokens_kv", none, "", "", &mc.block.attn));
  TRY(ff_config(file, k->cj, "num_heavy_ff_tokens", none, "", &mc.block.ff));
  mc.depth = (int)cli_json_int(k->cj, "depth", 0);
  mc.max_seq_len = cli_json_int(k->cj, "max_seq_len", 0);
  mc.pos_emb_zero_init = cli_json_bool(k->cj, "pos_emb_zero_init", 0);   /* the stored parameters decide anyway */
  TRY(c5_params_create(c5_backend_cpu(), &k->p));
  TRY(built(file, c5_model_create(&mc, k->p, &k->m)));
  TRY(built(file, c5_model_layout_unit(&mc, &k->unit)));
  TRY(c5_params_alloc(k->p));
  TRY(c5_h5_read_params(f, "/params", k->p));
  TRY(c5_h5_shape(f, "/inputs/tokens", &nd, dims));
  if (nd != 2) FAIL(C5_ERR_SHAPE, "%s: /inputs/tokens must be [b, n]", file);
  k->b = dims[0];
  k->n = dims[1];
  tok = malloc((size_t)(k->b * k->n + 1) * sizeof *tok);
  tgt = malloc((size_t)(k->b * k->n + 1) * sizeof *tgt);
  mask = malloc((size_t)(k->b * k->n + 1));
  if (!tok || !tgt || !mask) FAIL(C5_ERR_MEM, "%s: out of memory for [%ld, %ld] tokens", file, k->b, k->n);
  TRY(c5_h5_read_long(f, "/inputs/tokens", 2, dims, tok));
  TRY(c5_h5_read_long(f, "/inputs/targets", 2, dims, tgt));
  int masked = c5_h5_exists(f, "/inputs/mask");
  if (masked) TRY(c5_h5_read_u8(f, "/inputs/mask", 2, dims, mask));
  TRY(c5_layout_compute(cx->dist, k->n, k->unit, &k->lay));
  const long nl = k->lay.n_local, o = k->lay.offset;
  k->tok = malloc((size_t)(k->b * nl + 1) * sizeof *k->tok);
  k->tgt = malloc((size_t)(k->b * nl + 1) * sizeof *k->tgt);
  if (masked) k->mask = malloc((size_t)(k->b * nl + 1));
  if (!k->tok || !k->tgt || (masked && !k->mask)) FAIL(C5_ERR_MEM, "%s: out of memory for this rank's tokens", file);
  for (long i = 0; i < k->b; i++)
    for (long j = 0; j < nl; j++) {
      long t = tok[i * k->n + o + j], g = tgt[i * k->n + o + j];
      /* out of int32's range: kept out of range, for the model's check to name */
      k->tok[i * nl + j] = (int32_t)(t < -1 ? -1 : t > 65536 ? 65536 : t);
      k->tgt[i * nl + j] = (int32_t)(g < -2 ? -2 : g > 65536 ? 65536 : g);
      if (masked) k->mask[i * nl + j] = mask[i * k->n + o + j];
    }
  TRY(c5_model_cache_create(k->m, k->b, nl, &k->cache));
out:
  json_decref(bj);
  json_decref(none);
  free(tok); free(tgt); free(mask);
  return st;
}

/* The file's /adamw: one c5_adamw_step on the summed gradients, with the options of the config attribute's
   "train" object, against torch's clip_grad_norm_ + AdamW + LambdaLR step (make_model_golden.py). Every rank
   steps (the gradients are the same everywhere); rank 0 compares. */
static c5_status model_adamw(ctx_t *cx, c5_h5 *f, const char *file, c5_params *p)
{
  static const char *const keys[] = { "lr", "lr_min", "warmup_steps", "total_steps", "beta1", "beta2", "eps",
                                      "weight_decay", "clip_norm", "decay_all", NULL };
  c5_status st = C5_OK;
  char *cfgtxt = NULL;
  json_t *cj = NULL, *tj = NULL;
  json_error_t je;
  c5_adamw *o = NULL;
  double norm = 0, lr = 0, *ref = NULL, *rlr = NULL;
  c5_adamw_config ac = C5_ADAMW_CONFIG_DEFAULT;
  st = c5_h5_attr_string(f, "/", "config", &cfgtxt);
  if (st == C5_OK && (!(cj = json_loads(cfgtxt, 0, &je)) || !json_is_object(tj = json_object_get(cj, "train"))))
    st = c5_error_raise(C5_ERR_IO, "%s: the config attribute has no \"train\" object", file);
  if (st == C5_OK) st = cli_check_keys(file, "train", tj, keys);
  if (st == C5_OK) {
    ac.lr = cli_json_num(tj, "lr", ac.lr);
    ac.lr_min = cli_json_num(tj, "lr_min", ac.lr_min);
    ac.warmup_steps = cli_json_int(tj, "warmup_steps", ac.warmup_steps);
    ac.total_steps = cli_json_int(tj, "total_steps", ac.total_steps);
    ac.beta1 = cli_json_num(tj, "beta1", ac.beta1);
    ac.beta2 = cli_json_num(tj, "beta2", ac.beta2);
    ac.eps = cli_json_num(tj, "eps", ac.eps);
    ac.weight_decay = cli_json_num(tj, "weight_decay", ac.weight_decay);
    ac.clip_norm = cli_json_num(tj, "clip_norm", ac.clip_norm);
    ac.decay_all = cli_json_bool(tj, "decay_all", 0);
    st = built(file, c5_adamw_create(&ac, p, &o));
  }
  if (st == C5_OK) st = built(file, c5_adamw_step(o, &norm, &lr));
  if (st == C5_OK) st = read_ref(file, f, "/adamw/grad_norm", 1, &ref);
  if (st == C5_OK) st = read_ref(file, f, "/adamw/lr", 1, &rlr);
  TRY(c5_dist_agree(cx->dist, st));
  c5_real got[2] = { (c5_real)norm, (c5_real)lr };
  compare(cx, file, "adamw/grad_norm", &got[0], ref, 1, 1);
  compare(cx, file, "adamw/lr", &got[1], rlr, 1, 1);
  for (long i = 0; i < c5_params_count(p); i++) {
    static const char *const what[] = { "params", "exp_avg", "exp_avg_sq" };
    const c5_real *ours[] = { c5_params_value(p, i), c5_adamw_exp_avg(o, i), c5_adamw_exp_avg_sq(o, i) };
    for (int w = 0; w < 3; w++) {
      char name[512];
      snprintf(name, sizeof name, "/adamw/%s/%s", what[w], c5_params_name(p, i));
      free(ref);
      ref = NULL;
      TRY(c5_dist_agree(cx->dist, read_ref(file, f, name, c5_params_numel(p, i), &ref)));
      compare(cx, file, name + 1, ours[w], ref, c5_params_numel(p, i), 1);
    }
  }
out:
  c5_adamw_destroy(&o);
  free(ref); free(rlr); free(cfgtxt);
  json_decref(cj);
  return st;
}

static c5_status run_model(ctx_t *cx, c5_h5 *f, const char *file)
{
  model_case k = { 0 };
  c5_status st;
  double loss = 0, *ref = NULL;
  long count = 0, ref_count = -1;
  TRY(agree_loaded(cx, model_load(cx, f, file, &k)));
  if (cx->rank == 0 && !cx->quiet)
    printf("%s layout: n %ld, unit %ld, %d ranks\n", file, k.n, k.unit, cx->size);
  TRY(c5_model_forward(k.m, cx->dist, &k.lay, k.b, k.tok, k.tgt, k.mask, k.cache, &loss, &count));
  st = read_ref(file, f, "/outputs/loss_sum", 1, &ref);
  if (st == C5_OK) st = c5_h5_read_long(f, "/outputs/count", 1, (long[]){ 1 }, &ref_count);
  TRY(c5_dist_agree(cx->dist, st));
  c5_real got = (c5_real)loss;
  compare(cx, file, "outputs/loss_sum", &got, ref, 1, 1);
  if (count != ref_count) cx->failed = 1;
  if (cx->rank == 0 && (!cx->quiet || count != ref_count))
    printf("%s %-40s %ld, file %ld %s\n", file, "outputs/count", count, ref_count, count == ref_count ? "PASS" : "FAIL");
  TRY(compare_gathered(cx, f, file, "/outputs/logits", c5_model_logits(k.cache), k.b, k.lay.n_local, C5_NUM_BYTES, k.n,
                       k.unit));
  TRY(c5_model_backward(k.m, cx->dist, k.cache, count > 0 ? 1.0 / (double)count : 0.0));
  TRY(compare_param_grads(cx, f, file, k.p));
  for (int i = 0; i < c5_model_get_config(k.m)->depth; i++) {
    const c5_block_cache *bc = c5_model_block_cache(k.cache, i);
    const char *rname;
    const c5_routing *rt;
    for (int r = 0; block_router((void *)bc, r, &rname, &rt); r++) {
      char name[256];
      snprintf(name, sizeof name, "layers.%d.%s", i, rname);
      TRY(compare_routing(cx, f, file, name, rt, rt->rows));
    }
  }
  if (c5_h5_exists(f, "/adamw")) TRY(model_adamw(cx, f, file, k.p));
out:
  free(ref);
  c5_model_cache_destroy(&k.cache);
  c5_model_destroy(&k.m);
  c5_params_destroy(&k.p);
  free(k.tok); free(k.tgt); free(k.mask); free(k.ctor);
  json_decref(k.cj);
  return st;
}

/* FNV-1a of a file's bytes (63 bits): every rank must read the same vector. Rank-local. */
static c5_status file_hash(const char *file, long *out)
{
  FILE *fp = fopen(file, "rb");
  if (!fp) return c5_error_raise(C5_ERR_IO, "%s: cannot open (no such file or no permission)", file);
  unsigned long long h = 1469598103934665603ULL;
  unsigned char buf[65536];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, fp)) > 0)
    for (size_t i = 0; i < got; i++) h = (h ^ buf[i]) * 1099511628211ULL;
  int bad = ferror(fp);
  fclose(fp);
  if (bad) return c5_error_raise(C5_ERR_IO, "%s: read error", file);
  *out = (long)(h >> 1);
  return C5_OK;
}

typedef c5_status (*runner)(ctx_t *, c5_h5 *, const char *);
static const struct { const char *module; runner run; } modules[] = {
  { "coor_descent", run_cd },
  { "CoLT5ByteModel", run_model },
};

/* One vector: every rank opens it and reads its module; the runner loads the case and agrees it
   (agree_loaded), and is agreed throughout, so the result is the same on every rank. Rank 0 reports an
   error. */
static int run_file(ctx_t *cx, const char *file)
{
  c5_h5 f = { .file = H5I_INVALID_HID };
  char *module = NULL;
  int rc = EXIT_PASS;
  cx->hash = 0;
  cli_json_reset();
  c5_status st = c5_h5_open_read(file, &f);
  if (st == C5_OK) st = c5_h5_attr_string(&f, "/", "module", &module);
  if (st == C5_OK && !module[0]) st = c5_error_raise(C5_ERR_IO, "%s: attribute module of / is empty (it names the "
                                                     "reference class the vector was made from)", file);
  if (st == C5_OK) st = file_hash(file, &cx->hash);
  /* the runners agree it with their own loading; an error here ends the file now */
  if (st != C5_OK) TRY(agree_loaded(cx, st));
  int found = 0;
  for (size_t i = 0; i < sizeof modules / sizeof *modules; i++)
    if (!strcmp(modules[i].module, module)) { found = 1; st = modules[i].run(cx, &f, file); }
  for (size_t i = 0; i < sizeof modules_tab / sizeof *modules_tab; i++)
    if (!strcmp(modules_tab[i].module, module)) { found = 1; st = run_module(cx, &f, file, &modules_tab[i]); }
  if (!found) {
    TRY(agree_loaded(cx, C5_OK));
    if (cx->rank == 0) printf("%s module %s: not implemented yet (SKIP)\n", file, module);
    rc = EXIT_SKIP;
  }
out:
  if (st == C5_ERR_NOTIMPL) {
    if (cx->rank == 0) printf("%s: %s (SKIP)\n", file, c5_last_error());
    rc = EXIT_SKIP;
  } else if (st != C5_OK) {
    if (cx->rank == 0) fprintf(stderr, "colt5-golden: %s: %s\n", c5_status_string(st), c5_last_error());
    rc = EXIT_USAGE;
  }
  free(module);
  c5_h5_close(&f);
  return rc;
}

static void usage(FILE *o)
{
  fprintf(o, "usage: colt5-golden [--tol REL] [--floor ABS] [--quiet] FILE.h5...\n"
             "       colt5-golden --help | --version\n"
             "  --tol REL   relative bound (default: 1e-9 in double, 1e-4 in single)\n"
             "  --floor ABS absolute floor per sqrt(numel) (default: 1e-12 in double, 1e-6 in single)\n"
             "  --quiet     print only failures\n"
             "exit: 0 pass, 1 fail, 2 usage or I/O error, 77 module not implemented\n");
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  ctx_t cx = { .rel = C5_USE_DOUBLE ? 1e-9 : 1e-4, .floor = C5_USE_DOUBLE ? 1e-12 : 1e-6 };
  if (c5_dist_create(MPI_COMM_WORLD, &cx.dist) != C5_OK) {   /* agreed inside: every rank says it */
    fprintf(stderr, "colt5-golden: %s\n", c5_last_error());
    MPI_Finalize();
    return EXIT_USAGE;
  }
  cx.rank = c5_dist_rank(cx.dist);
  cx.size = c5_dist_size(cx.dist);
  static const struct option opts[] = {
    { "tol", required_argument, 0, 't' }, { "floor", required_argument, 0, 'f' }, { "quiet", no_argument, 0, 'q' }, { "help", no_argument, 0, 'h' },
    { "version", no_argument, 0, 'V' }, { 0 } };
  int c, rc = EXIT_PASS, skipped = 0, help = 0;
  c5_status st = C5_OK;
  /* each rank parses its own command line (mpirun may give them different ones): agreed below */
  opterr = 0;   /* getopt's own message would come before ours: one message, ours */
  while ((c = getopt_long(argc, argv, ":t:f:qh", opts, NULL)) != -1) {
    char *end;
    switch (c) {
    case 't':
      cx.rel = strtod(optarg, &end);
      if (*end || !(cx.rel > 0) || !isfinite(cx.rel)) st = c5_error_raise(C5_ERR_ARG, "--tol %s: expected a positive number (finite)", optarg);
      break;
    case 'f':
      cx.floor = strtod(optarg, &end);
      if (*end || !(cx.floor >= 0) || !isfinite(cx.floor)) st = c5_error_raise(C5_ERR_ARG, "--floor %s: expected a number >= 0 (finite)", optarg);
      break;
    case 'q': cx.quiet = 1; break;
    case 'h': help = 1; break;
    case 'V': help = 2; break;   /* like --help: print, exit 0 */
    case ':': if (st == C5_OK) st = c5_error_raise(C5_ERR_ARG, "option %s needs a value", argv[optind - 1]); break;
    default: if (st == C5_OK) st = c5_error_raise(C5_ERR_ARG, "unknown option %s", argv[optind - 1]);
    }
  }
  if (st == C5_OK && !help && optind >= argc) st = c5_error_raise(C5_ERR_ARG, "no input file");
  st = c5_dist_agree(cx.dist, st);
  if (st == C5_OK) st = c5_dist_agree_long(cx.dist, "colt5-golden: --help", help);
  if (st == C5_OK && !help) st = c5_dist_agree_long(cx.dist, "colt5-golden: the number of input files", argc - optind);
  if (st != C5_OK || help) {
    if (cx.rank == 0) {
      if (st != C5_OK) fprintf(stderr, "colt5-golden: %s\n", c5_last_error());
      if (st == C5_OK && help == 2) printf("colt5-golden %s\n", colt5_build_info());
      else usage(help && st == C5_OK ? stdout : stderr);
    }
    c5_dist_destroy(&cx.dist);
    MPI_Finalize();
    return st != C5_OK ? EXIT_USAGE : EXIT_PASS;
  }
  if (cx.rank == 0 && c5_blas_warning()) fprintf(stderr, "colt5-golden: %s\n", c5_blas_warning());
  int nfiles = 0;
  for (int i = optind; i < argc; i++, nfiles++) {
    int r = run_file(&cx, argv[i]);
    if (r == EXIT_USAGE) rc = EXIT_USAGE;
    else if (r == EXIT_SKIP) skipped++;
  }
  long failed = cx.rank == 0 ? cx.failed : 0;   /* only rank 0 compares: its verdict for all */
  if (c5_dist_reduce_long(cx.dist, &failed, 1, C5_REDUCE_MAX) != C5_OK) rc = EXIT_USAGE;
  cx.failed = (int)failed;
  c5_dist_destroy(&cx.dist);
  MPI_Finalize();
  if (rc == EXIT_USAGE) return rc;
  if (cx.failed) return EXIT_FAILED;
  return skipped == nfiles ? EXIT_SKIP : EXIT_PASS;
}
