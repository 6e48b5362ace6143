/* colt5-golden - check libcolt5 against golden HDF5 vectors made by the
   PyTorch reference (tests/golden/README.md gives the layout and the
   agreement rule).

     colt5-golden [--tol REL] [--floor ABS] [--quiet] FILE.h5...
     mpirun -np P colt5-golden FILE.h5...   (the sequence is sharded over P ranks; rank 0 prints)

   One line per tensor: file, dataset, absolute and relative error, bound,
   PASS/FAIL (or REPORT for tensors the rule reports but does not judge).
   Exit: 0 all pass, 1 any fails, 2 usage or I/O error, 77 when a file's
   module is not implemented yet. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "colt5.h"
#include "colt5_io.h"

enum { EXIT_PASS = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_SKIP = 77 };

typedef struct {
  double rel, floor;   /* ||a - b|| <= rel ||b|| + floor sqrt(numel) */
  int rank, size;
  int quiet;
  int failed;
  c5_dist *dist;
} ctx_t;

/* An error from the library: print it (rank 0) and return the usage code. */
#define TRY(call) do { c5_status s_ = (call); if (s_ != C5_OK) { \
    fprintf(stderr, "colt5-golden: %s: %s\n", c5_status_string(s_), c5_last_error()); \
    rc = EXIT_USAGE; goto out; } } while (0)

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

/* Keys of a JSON object must all be in allowed (NULL-terminated). */
static int check_keys(const char *file, const char *what, json_t *obj, const char *const *allowed)
{
  const char *key;
  json_t *v;
  json_object_foreach(obj, key, v) {
    int found = 0;
    for (const char *const *a = allowed; *a; a++) found |= !strcmp(*a, key);
    if (!found) {
      fprintf(stderr, "colt5-golden: %s: unknown %s key '%s'\n", file, what, key);
      return 0;
    }
  }
  return 1;
}

static double json_num(json_t *o, const char *key, double dflt)
{
  json_t *v = json_object_get(o, key);
  return (v && json_is_number(v)) ? json_number_value(v) : dflt;
}

/* Gather this rank's columns [rows, nl] of a row-sharded matrix into
   full [rows, n] on rank 0. */
static void gather_cols(ctx_t *cx, const c5_real *loc, long rows, long nl, long n, c5_real *full)
{
  int *cnt = calloc((size_t)cx->size, sizeof *cnt), *dsp = calloc((size_t)cx->size, sizeof *dsp);
  c5_real *tmp = malloc((size_t)(rows * n) * sizeof *tmp);
  c5_real *send = malloc((size_t)(rows * (nl ? nl : 1)) * sizeof *send);
  for (int p = 0; p < cx->size; p++) {
    c5_layout l;
    c5_layout_of_rank(n, 1, p, cx->size, &l);
    cnt[p] = (int)(rows * l.n_local);
    dsp[p] = (int)(rows * l.offset);
  }
  memcpy(send, loc, (size_t)(rows * nl) * sizeof *send);
  MPI_Gatherv(send, (int)(rows * nl), C5_MPI_REAL, tmp, cnt, dsp, C5_MPI_REAL, 0, MPI_COMM_WORLD);
  if (cx->rank == 0)
    for (int p = 0; p < cx->size; p++) {
      c5_layout l;
      c5_layout_of_rank(n, 1, p, cx->size, &l);
      for (long r = 0; r < rows; r++)
        memcpy(full + r * n + l.offset, tmp + dsp[p] + r * l.n_local, (size_t)l.n_local * sizeof *full);
    }
  free(cnt); free(dsp); free(tmp); free(send);
}

/* coor_descent cases: /inputs/s, mask, grad_y; /outputs/y; /grads/s. */
static int run_cd(ctx_t *cx, c5_h5 *f, const char *file)
{
  static const char *const keys[] = { "k", "n_iters", "eps", "eps_init", "eps_decay", NULL };
  int rc = EXIT_PASS, nd;
  long dims[C5_H5_MAXDIM];
  char *args = NULL;
  json_t *js = NULL;
  c5_real *s = NULL, *gy = NULL, *y = NULL, *ds = NULL, *ls = NULL, *lgy = NULL, *full = NULL;
  uint8_t *mask = NULL, *lm = NULL;
  double *ref = NULL;
  c5_cd_cache cache = { 0 };

  TRY(c5_h5_attr_string(f, "/", "args", &args));
  json_error_t je;
  js = json_loads(args, 0, &je);
  if (!js || !json_is_object(js)) {
    fprintf(stderr, "colt5-golden: %s: attribute args is not a JSON object (%s)\n", file, je.text);
    rc = EXIT_USAGE; goto out;
  }
  if (!check_keys(file, "args", js, keys)) { rc = EXIT_USAGE; goto out; }
  json_t *kj = json_object_get(js, "k"), *ij = json_object_get(js, "n_iters");
  if (!kj || !json_is_number(kj) || !ij || !json_is_integer(ij)) {
    fprintf(stderr, "colt5-golden: %s: args needs numeric k and integer n_iters\n", file);
    rc = EXIT_USAGE; goto out;
  }
  c5_cd_config cfg = C5_CD_CONFIG_DEFAULT;
  cfg.n_iters = (int)json_integer_value(ij);
  cfg.eps = json_num(js, "eps", cfg.eps);
  cfg.eps_init = json_num(js, "eps_init", 0.0);   /* null: start at eps */
  cfg.eps_decay = json_num(js, "eps_decay", cfg.eps_decay);
  double k = json_number_value(kj);

  TRY(c5_h5_shape(f, "/inputs/s", &nd, dims));
  if (nd != 2) { fprintf(stderr, "colt5-golden: %s: /inputs/s must be [rows, n]\n", file); rc = EXIT_USAGE; goto out; }
  long rows = dims[0], n = dims[1];
  s = malloc((size_t)(rows * n) * sizeof *s);
  gy = malloc((size_t)(rows * n) * sizeof *gy);
  ref = malloc((size_t)(rows * n) * sizeof *ref);
  full = malloc((size_t)(rows * n) * sizeof *full);
  TRY(c5_h5_read_real(f, "/inputs/s", 2, dims, s));
  TRY(c5_h5_read_real(f, "/inputs/grad_y", 2, dims, gy));
  if (c5_h5_exists(f, "/inputs/mask")) {
    mask = malloc((size_t)(rows * n));
    TRY(c5_h5_read_u8(f, "/inputs/mask", 2, dims, mask));
  }
  /* this rank's columns */
  c5_layout lay;
  TRY(c5_layout_compute(cx->dist, n, 1, &lay));
  long nl = lay.n_local;
  ls = malloc((size_t)(rows * nl + 1) * sizeof *ls);
  lgy = malloc((size_t)(rows * nl + 1) * sizeof *lgy);
  y = malloc((size_t)(rows * nl + 1) * sizeof *y);
  ds = malloc((size_t)(rows * nl + 1) * sizeof *ds);
  if (mask) lm = malloc((size_t)(rows * nl + 1));
  for (long r = 0; r < rows; r++) {
    memcpy(ls + r * nl, s + r * n + lay.offset, (size_t)nl * sizeof *s);
    memcpy(lgy + r * nl, gy + r * n + lay.offset, (size_t)nl * sizeof *s);
    if (mask) memcpy(lm + r * nl, mask + r * n + lay.offset, (size_t)nl);
  }
  TRY(c5_cd_cache_alloc(rows, cfg.n_iters, &cache));
  TRY(c5_cd_forward(cx->dist, &cfg, rows, nl, ls, lm, &k, 0, y, &cache));
  TRY(c5_cd_backward(cx->dist, &cache, rows, nl, ls, lm, y, lgy, ds));

  gather_cols(cx, y, rows, nl, n, full);
  TRY(c5_h5_read_double(f, "/outputs/y", 2, dims, ref));
  compare(cx, file, "outputs/y", full, ref, rows * n, 1);
  gather_cols(cx, ds, rows, nl, n, full);
  TRY(c5_h5_read_double(f, "/grads/s", 2, dims, ref));
  compare(cx, file, "grads/s", full, ref, rows * n, 1);
out:
  c5_cd_cache_free(&cache);
  free(args); json_decref(js);
  free(s); free(gy); free(y); free(ds); free(ls); free(lgy); free(full); free(mask); free(lm); free(ref);
  return rc;
}

typedef int (*runner)(ctx_t *, c5_h5 *, const char *);
static const struct { const char *module; runner run; } modules[] = {
  { "coor_descent", run_cd },
};

static int run_file(ctx_t *cx, const char *file)
{
  c5_h5 f = { .file = H5I_INVALID_HID };
  char *module = NULL;
  int rc = EXIT_PASS;
  TRY(c5_h5_open_read(file, &f));
  TRY(c5_h5_attr_string(&f, "/", "module", &module));
  rc = EXIT_SKIP;
  for (size_t i = 0; i < sizeof modules / sizeof *modules; i++)
    if (!strcmp(modules[i].module, module)) rc = modules[i].run(cx, &f, file);
  if (rc == EXIT_SKIP && cx->rank == 0)
    printf("%s module %s: not implemented yet (SKIP)\n", file, module);
out:
  free(module);
  c5_h5_close(&f);
  return rc;
}

static void usage(FILE *o)
{
  fprintf(o, "usage: colt5-golden [--tol REL] [--floor ABS] [--quiet] FILE.h5...\n"
             "  --tol REL   relative bound (default: 1e-9 in double, 1e-4 in single)\n"
             "  --floor ABS absolute floor per sqrt(numel) (default: 1e-12 in double, 1e-6 in single)\n"
             "  --quiet     print only failures\n"
             "exit: 0 pass, 1 fail, 2 usage or I/O error, 77 module not implemented\n");
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  ctx_t cx = { .rel = C5_USE_DOUBLE ? 1e-9 : 1e-4, .floor = C5_USE_DOUBLE ? 1e-12 : 1e-6 };
  MPI_Comm_rank(MPI_COMM_WORLD, &cx.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &cx.size);
  static const struct option opts[] = {
    { "tol", required_argument, 0, 't' }, { "floor", required_argument, 0, 'f' }, { "quiet", no_argument, 0, 'q' }, { "help", no_argument, 0, 'h' }, { 0 } };
  int c, rc = EXIT_PASS, skipped = 0;
  while ((c = getopt_long(argc, argv, "t:f:qh", opts, NULL)) != -1) {
    char *end;
    switch (c) {
    case 't':
      cx.rel = strtod(optarg, &end);
      if (*end || !(cx.rel > 0)) { fprintf(stderr, "colt5-golden: --tol %s: expected a positive number\n", optarg); rc = EXIT_USAGE; }
      break;
    case 'f':
      cx.floor = strtod(optarg, &end);
      if (*end || !(cx.floor >= 0)) { fprintf(stderr, "colt5-golden: --floor %s: expected a number >= 0\n", optarg); rc = EXIT_USAGE; }
      break;
    case 'q': cx.quiet = 1; break;
    case 'h': if (cx.rank == 0) usage(stdout); MPI_Finalize(); return 0;
    default: rc = EXIT_USAGE;
    }
  }
  if (rc == EXIT_PASS && optind >= argc) { rc = EXIT_USAGE; fprintf(stderr, "colt5-golden: no input file\n"); }
  if (rc != EXIT_PASS) { if (cx.rank == 0) usage(stderr); MPI_Finalize(); return rc; }
  if (c5_dist_create(MPI_COMM_WORLD, &cx.dist) != C5_OK) {
    fprintf(stderr, "colt5-golden: %s\n", c5_last_error());
    MPI_Finalize();
    return EXIT_USAGE;
  }
  int nfiles = 0;
  for (int i = optind; i < argc; i++, nfiles++) {
    int r = run_file(&cx, argv[i]);
    if (r == EXIT_USAGE) rc = EXIT_USAGE;
    else if (r == EXIT_SKIP) skipped++;
  }
  MPI_Bcast(&cx.failed, 1, MPI_INT, 0, MPI_COMM_WORLD);
  c5_dist_destroy(&cx.dist);
  MPI_Finalize();
  if (rc == EXIT_USAGE) return rc;
  if (cx.failed) return EXIT_FAILED;
  return skipped == nfiles ? EXIT_SKIP : EXIT_PASS;
}
