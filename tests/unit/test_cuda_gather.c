/* test_cuda_gather.c - the CUDA backend's moves, gathers and scatters,
   masks, router fills, cosine routing and rotary ops against the CPU ops on
   the same inputs (kernels/cpu: copy2d.c, gather.c, indexed_rows.c, mask.c,
   route.c, cosine_route.c, rotary.c). One printed line per case: op, shape,
   norm-wise error, whether the bits equal the CPU's, whether two GPU runs
   agree, PASS/FAIL. Outputs the op writes entirely are poisoned first (NaN
   for reals, 0xff bytes otherwise); outputs it updates start from random
   values and are compared whole, so a write outside the op's region shows.
   Pure moves, integer and byte outputs must equal the CPU's bits; the
   arithmetic ops round every operation as the CPU does (no fused
   multiply-adds), so their bits are reported, and held to the norm-wise
   bound (1e-12 double, 1e-5 single); scatter_rows, gather_scale_dot and
   row_dot, whose order kernels.h fixes (entries in e order; k in order, in
   double), are held to the CPU's bits. The ops built on log, cos and sin
   (normal_fill, rotary_table) are held elementwise to a few ulps: the CUDA
   library's transcendentals are not the host's. Exits 77 without a GPU. */
#include <stdint.h>
#include "cuda_util.h"
#include "kernels.h"
#include "backend.h"
#include "cuda/cuda.h"

static const double tol = C5_USE_DOUBLE ? 1e-12 : 1e-5;
/* a few ulps of the result, elementwise (normal_fill's and rotary_table's transcendentals);
   rotary_table is double in both builds */
static const double ulps = C5_USE_DOUBLE ? 1e-15 : 2.5e-7, ulps_double = 1e-15;

enum { B_REAL, B_DBL, B_BYTE, B_LONG };
enum { IN, OUT, INOUT };   /* OUT: written entirely by the op (poisoned first) */
static const size_t esize[] = { sizeof(c5_real), sizeof(double), 1, sizeof(long) };

/* A host buffer of an op's argument; count 0 passes NULL. */
typedef struct {
  int type, role;
  long count;
  void *h;
} tbuf;

/* Calls the op under test on ops with the buffers p (host or device) and the case's scalars. */
typedef c5_status (*opfn)(const c5k_ops *ops, c5k_ctx *ctx, void **p, const long *a);

#define MAXB 10

static unsigned long long seed = 20240611;

static c5_real *reals(long n)
{
  c5_real *x = malloc((n > 0 ? n : 1) * sizeof *x);
  for (long i = 0; i < n; i++) x[i] = (c5_real)t_normal(&seed);
  return x;
}
static double *dbls(long n)
{
  double *x = malloc((n > 0 ? n : 1) * sizeof *x);
  for (long i = 0; i < n; i++) x[i] = t_normal(&seed);
  return x;
}
static uint8_t *bytes(long n, double p_one)
{
  uint8_t *x = malloc(n > 0 ? n : 1);
  for (long i = 0; i < n; i++) x[i] = t_uniform(&seed) < p_one;
  return x;
}
/* n indices in [0, m), each -1 with probability p_pad */
static long *indices(long n, long m, double p_pad)
{
  long *x = malloc((n > 0 ? n : 1) * sizeof *x);
  for (long i = 0; i < n; i++) x[i] = t_uniform(&seed) < p_pad ? -1 : (long)(t_uniform(&seed) * m) % m;
  return x;
}
/* n distinct indices in [0, m) (n <= m) in random order, some -1 */
static long *distinct(long n, long m, double p_pad)
{
  long *perm = malloc(m * sizeof *perm);
  for (long i = 0; i < m; i++) perm[i] = i;
  for (long i = m - 1; i > 0; i--) {
    long j = (long)(t_uniform(&seed) * (i + 1)) % (i + 1), t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  for (long i = 0; i < n; i++)
    if (t_uniform(&seed) < p_pad) perm[i] = -1;
  return perm;
}

static tbuf rbuf(int role, long n) { return (tbuf){ B_REAL, role, n, n ? reals(n) : NULL }; }
static tbuf dbuf(int role, long n) { return (tbuf){ B_DBL, role, n, n ? dbls(n) : NULL }; }
static tbuf bbuf(int role, long n, double p) { return (tbuf){ B_BYTE, role, n, n ? bytes(n, p) : NULL }; }
static tbuf lbuf(long n, long *x) { return (tbuf){ B_LONG, IN, n, x }; }

static int run_gpu(c5_backend *gpu, tbuf *b, int nb, opfn fn, const long *a, void **out)
{
  void *d[MAXB] = { 0 };
  int ok = 0;
  for (int i = 0; i < nb; i++) {
    size_t sz = b[i].count * esize[b[i].type];
    if (!sz) continue;
    void *src = b[i].h;
    if (b[i].role == OUT) { src = malloc(sz); memset(src, 0xff, sz); }
    d[i] = t_dev_upload(gpu, src, sz);
    if (src != b[i].h) free(src);
    T_CHECK(d[i], "device buffer %d", i);
  }
  {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    T_OK(fn(&c5k_cuda_ops, &ctx, d, a));
  }
  for (int i = 0; i < nb; i++)
    if (b[i].role != IN && b[i].count) {
      out[i] = malloc(b[i].count * esize[b[i].type]);
      T_OK(c5_backend_memcpy(gpu, out[i], d[i], b[i].count * esize[b[i].type]));
    }
  ok = 1;
fail:
  for (int i = 0; i < nb; i++) c5_backend_free(gpu, d[i]);
  return ok;
}

static void as_double(const tbuf *b, const void *x, double *y)
{
  for (long i = 0; i < b->count; i++)
    y[i] = b->type == B_REAL ? (double)((const c5_real *)x)[i] : ((const double *)x)[i];
}

/* One case: the CPU op on host copies, the GPU op twice; exact: the bits must be the CPU's;
   rel > 0: reals elementwise within rel of the CPU's instead of norm-wise. */
static int check(c5_backend *gpu, const char *op, const char *shape, tbuf *b, int nb, opfn fn, const long *a,
                 int exact, double rel)
{
  void *cpu[MAXB] = { 0 }, *g1[MAXB] = { 0 }, *g2[MAXB] = { 0 };
  int ok = 0, same = 1, det = 1;
  double err = 0;
  long differ = 0, total = 0;
  c5k_ctx cctx = { 0 };
  for (int i = 0; i < nb; i++) {
    size_t sz = b[i].count * esize[b[i].type];
    if (!sz) continue;
    cpu[i] = malloc(sz);
    if (b[i].role == OUT) memset(cpu[i], 0xff, sz); else memcpy(cpu[i], b[i].h, sz);
  }
  T_OK(fn(&c5k_cpu_ops, &cctx, cpu, a));
  T_CHECK(run_gpu(gpu, b, nb, fn, a, g1) && run_gpu(gpu, b, nb, fn, a, g2), "GPU runs");
  for (int i = 0; i < nb; i++) {
    if (b[i].role == IN || !b[i].count) continue;
    size_t sz = b[i].count * esize[b[i].type];
    det &= !memcmp(g1[i], g2[i], sz);
    same &= !memcmp(g1[i], cpu[i], sz);
    for (long k = 0; k < b[i].count; k++) differ += memcmp((char *)g1[i] + k * esize[b[i].type],
                                                           (char *)cpu[i] + k * esize[b[i].type], esize[b[i].type]) != 0;
    total += b[i].count;
    if (b[i].type == B_REAL || b[i].type == B_DBL) {
      double *x = malloc(b[i].count * sizeof *x), *y = malloc(b[i].count * sizeof *y);
      as_double(&b[i], g1[i], x);
      as_double(&b[i], cpu[i], y);
      double e = 0;
      if (rel > 0)
        for (long k = 0; k < b[i].count; k++) {
          double ek = x[k] == y[k] ? 0 : fabs(x[k] - y[k]) / fabs(y[k]);
          if (!(ek <= e)) e = ek;
        }
      else e = t_normwise(x, y, b[i].count);
      if (!(e <= err)) err = e;
      free(x);
      free(y);
    }
  }
  ok = det && (exact ? same : err <= (rel > 0 ? rel : tol));
  printf("%-24s %-44s err %.3e (%s %.0e) bits %s (%ld of %ld differ) det %s %s\n", op, shape, err,
         rel > 0 ? "elementwise" : "norm-wise", rel > 0 ? rel : tol, same ? "equal" : "differ", differ, total,
         det ? "yes" : "NO", ok ? "PASS" : "FAIL");
fail:
  for (int i = 0; i < nb; i++) {
    free(cpu[i]);
    free(g1[i]);
    free(g2[i]);
    if (b[i].h) free(b[i].h);
    b[i].h = NULL;
  }
  return ok;
}

/* ---- the ops, as called by the cases: a[] holds the scalars ---- */
static c5_status f_copy2d(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->copy2d(c, p[1], a[0], p[0], a[1], a[2], a[3]); }
static c5_status f_memset2d(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->memset2d(c, p[0], a[0], (int)a[1], a[2], a[3]); }
static c5_status f_add2d(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->add2d(c, a[0], a[1], p[0], a[2], p[1], a[3]); }
static c5_status f_fill_rows(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->fill_rows(c, a[0], a[1], p[0], (int)a[2], p[1], a[3]); }
static c5_status f_gather_rows(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->gather_rows(c, a[0], a[1], p[0], p[1], p[2], a[2], p[3]); }
static c5_status f_scatter_rows(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->scatter_rows(c, a[0], a[1], p[0], p[1], p[2], p[3], (int)a[2], (int)a[3], p[4]); }
static c5_status f_gather_scale_dot(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->gather_scale_dot(c, a[0], a[1], p[0], p[1], p[2], p[3], a[2] ? p[1] : p[4], p[5]); }
static c5_status f_acc_rows(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->acc_rows(c, a[0], a[1], p[0], p[1], (int)a[2], p[2]); }
static c5_status f_gather2d(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->gather2d(c, a[0], p[0], (char *)p[1] + a[4], a[1], a[2], (char *)p[2] + a[4], a[3]); }
static c5_status f_mask_before(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->mask_before(c, a[0], a[1], p[0], p[1], p[2]); }
static c5_status f_row_dot(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->row_dot(c, a[0], a[1], p[0], p[1], p[2], p[3]); }
static c5_status f_route_gather(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->route_gather_scores(c, a[0], a[1], p[0], p[1], p[2], p[3], p[4], (int)a[2], p[5], p[6]); }
static c5_status f_route_scatter(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->route_scatter_dscores(c, a[0], a[1], p[0], p[1], p[2], p[3], p[4], p[5]); }
static c5_status f_broadcast_mask(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->broadcast_mask(c, a[0], (int)a[1], a[2], p[0], p[1]); }
static c5_status f_normal_fill(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->normal_fill(c, a[0], a[1], a[2], (uint64_t)a[3] * 0x9e3779b97f4a7c15ull, p[0]); }
static c5_status f_cosine_fwd(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->cosine_route_forward(c, a[0], (int)a[1], a[2], (int)a[3], p[0], p[1], 1.7, p[2], p[3], p[4]); }
static c5_status f_cosine_bwd(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->cosine_route_backward(c, a[0], (int)a[1], a[2], (int)a[3], p[0], p[1], p[2], p[3], 1.7, p[4], p[5]); }
static c5_status f_cosine_bwd_w(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->cosine_route_backward_w(c, (int)a[0], (int)a[1], p[0], p[1], p[2]); }
static c5_status f_rotary_table(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{ return o->rotary_table(c, a[0], p[0], (int)a[1], p[1], p[2]); }
static c5_status f_rotary(const c5k_ops *o, c5k_ctx *c, void **p, const long *a)
{
  return (a[4] ? o->rotary_transpose : o->rotary)(c, a[0], (int)a[1], (int)a[2], p[0], C5_DTYPE_REAL, a[3], a[5], p[1],
                                                 p[2]);
}

#define SHAPE(...) (snprintf(shape, sizeof shape, __VA_ARGS__), shape)
#define CASE(op, fn, exact, rel, ...) do { \
    long a_[] = { __VA_ARGS__ }; \
    ok &= check(gpu, op, shape, b, (int)(sizeof b / sizeof *b), fn, a_, exact, rel); } while (0)

static int moves(c5_backend *gpu)
{
  int ok = 1;
  char shape[96];
  /* copy2d: bytes of odd widths and pitches, one row, rows of reals; the gaps between rows stay */
  long cp[][4] = { { 17, 29, 13, 37 }, { 5, 5, 5, 1 }, { 8 * 70, 8 * 64, 8 * 64, 300 }, { 64, 64, 64, 1000 } };
  for (int c = 0; c < 4; c++) {
    long dp = cp[c][0], sp = cp[c][1], w = cp[c][2], h = cp[c][3];
    tbuf b[] = { bbuf(IN, sp * h, 0.5), bbuf(INOUT, dp * h, 0.5) };
    for (long i = 0; i < sp * h; i++) ((uint8_t *)b[0].h)[i] = (uint8_t)(t_uniform(&seed) * 256);
    SHAPE("dpitch %ld spitch %ld width %ld height %ld", dp, sp, w, h);
    CASE("copy2d", f_copy2d, 1, 0, dp, sp, w, h);
  }
  long ms[][4] = { { 29, 0, 13, 37 }, { 7, 1, 7, 1 }, { 1024, 1, 1000, 64 } };
  for (int c = 0; c < 3; c++) {
    tbuf b[] = { bbuf(INOUT, ms[c][0] * ms[c][3], 0.5) };
    SHAPE("dpitch %ld value %ld width %ld height %ld", ms[c][0], ms[c][1], ms[c][2], ms[c][3]);
    CASE("memset2d", f_memset2d, 1, 0, ms[c][0], ms[c][1], ms[c][2], ms[c][3]);
  }
  long ad[][4] = { { 1, 1, 1, 1 }, { 77, 130, 133, 131 }, { 2048, 512, 512, 512 } };
  for (int c = 0; c < 3; c++) {
    long rows = ad[c][0], cols = ad[c][1], lds = ad[c][2], ldd = ad[c][3];
    tbuf b[] = { rbuf(IN, rows * lds), rbuf(INOUT, rows * ldd) };
    SHAPE("rows %ld cols %ld lds %ld ldd %ld", rows, cols, lds, ldd);
    CASE("add2d", f_add2d, 1, 0, rows, cols, lds, ldd);
  }
  for (int c = 0; c < 7; c++) {   /* vec NULL and set, vec set, vec added, one row; then 16 bytes a thread: the same */
    const int v = c >= 4;
    long rows = c == 3 ? 1 : 301, dim = c == 3 ? 1 : v ? 64 : 67, ldd = dim + (c == 3 ? 0 : v ? 4 : 5);
    int acc = c == 2 || c == 6;
    tbuf b[] = { rbuf(IN, c == 0 || c == 4 ? 0 : dim), rbuf(INOUT, rows * ldd) };
    SHAPE("rows %ld dim %ld ldd %ld vec %s accumulate %d", rows, dim, ldd, c == 0 || c == 4 ? "NULL" : "set", acc);
    CASE("fill_rows", f_fill_rows, 1, 0, rows, dim, acc, ldd);
  }
  return ok;
}

static int gathers(c5_backend *gpu)
{
  int ok = 1;
  char shape[96];
  /* gather_rows: idx with padding, idx NULL, scale or none, lds > dim */
  long gr[][3] = { { 1, 1, 1 }, { 300, 67, 70 }, { 4096, 256, 256 } };
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 3; v++) {   /* 0: idx, no scale; 1: idx and scale; 2: idx NULL, scale */
      long n = gr[c][0], dim = gr[c][1], lds = gr[c][2], m = n + 9;
      tbuf b[] = { lbuf(v == 2 ? 0 : n, v == 2 ? NULL : indices(n, m, 0.1)), rbuf(IN, v ? n : 0), rbuf(IN, m * lds),
                   rbuf(OUT, n * dim) };
      SHAPE("n %ld dim %ld lds %ld idx %s scale %s", n, dim, lds, v == 2 ? "NULL" : "padded", v ? "set" : "NULL");
      CASE("gather_rows", f_gather_rows, 1, 0, n, dim, lds);
    }
  /* scatter_rows: distinct (a permutation with padding) and repeated indices, set and added,
     with and without scale and sub; dims below and past the 32 columns of a warp, n not a multiple
     of the 32 indices a warp reads at once. Repeated rows take their entries in e order (the CPU's
     last write, its sum order), so the bits must be the CPU's. */
  long sr[][2] = { { 1, 1 }, { 257, 65 }, { 300, 20 }, { 64, 33 }, { 3000, 128 }, { 500, 1 }, { 8192, 512 } };
  for (int c = 0; c < 7; c++)
    for (int v = 0; v < 8; v++) {
      int dist = v & 1, acc = (v >> 1) & 1, extra = (v >> 2) & 1;
      long n = sr[c][0], dim = sr[c][1], m = dist ? n + 5 : n / 3 + 1;
      tbuf b[] = { lbuf(n, dist ? distinct(n, m, 0.1) : indices(n, m, 0.1)), rbuf(IN, n * dim), rbuf(IN, extra ? n : 0),
                   rbuf(IN, extra ? dim : 0), rbuf(INOUT, m * dim) };
      SHAPE("n %ld dim %ld rows %ld distinct %d acc %d scale,sub %s", n, dim, m, dist, acc, extra ? "set" : "NULL");
      CASE("scatter_rows", f_scatter_rows, 1, 0, n, dim, acc, dist);
    }
  /* gather_scale_dot: padded idx, dscale or none, in place with idx NULL. The kernels run a warp per
     row over chunks of 32 columns: dims below, at and just past 32, not multiples of it, one row of
     several chunks, and a padded idx of mostly -1 (p_pad, v 3). Its sum over k has the CPU's order
     (kernels.h), so the bits must be the CPU's. */
  long gs[][3] = { { 1, 1, 10 }, { 1, 100, 10 }, { 50, 5, 10 }, { 97, 32, 10 }, { 64, 33, 10 }, { 333, 67, 10 },
                   { 200, 40, 90 }, { 4096, 256, 10 }, { 8192, 512, 10 } };
  for (int c = 0; c < 9; c++)
    for (int v = 0; v < 3; v++) {   /* 0: idx, dscale; 1: idx, dscale NULL; 2: idx NULL, in place, dscale */
      long n = gs[c][0], dim = gs[c][1], m = v == 2 ? n : n + 4;
      double pad = gs[c][2] / 100.0;
      tbuf b[] = { lbuf(v == 2 ? 0 : n, v == 2 ? NULL : indices(n, m, pad)), rbuf(v == 2 ? INOUT : IN, m * dim), rbuf(IN, n),
                   rbuf(IN, n * dim), rbuf(OUT, v == 2 ? 0 : n * dim), rbuf(OUT, v == 1 ? 0 : n) };
      SHAPE("n %ld dim %ld idx %s dscale %s%s", n, dim, v == 2 ? "NULL" : pad > 0.5 ? "mostly -1" : "padded",
            v == 1 ? "NULL" : "set", v == 2 ? " in place" : "");
      CASE("gather_scale_dot", f_gather_scale_dot, 1, 0, n, dim, v == 2);
    }
  /* acc_rows: repeated and padded idx, idx NULL; added, subtracted */
  long ar[][2] = { { 1, 1 }, { 700, 65 }, { 8192, 256 } };
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 3; v++) {   /* 0: idx, add; 1: idx, subtract; 2: idx NULL, add */
      long n = ar[c][0], dim = ar[c][1], m = n / 2 + 1, rows = v == 2 ? n : m;
      tbuf b[] = { lbuf(v == 2 ? 0 : n, v == 2 ? NULL : indices(n, m, 0.1)), rbuf(IN, rows * dim), dbuf(INOUT, dim) };
      SHAPE("n %ld dim %ld idx %s subtract %d", n, dim, v == 2 ? "NULL" : "repeated", v == 1);
      CASE("acc_rows", f_acc_rows, 0, 0, n, dim, v == 1);
    }
  /* gather2d: byte masks, longs, an odd width and pitch, a misaligned base */
  long g2[][5] = { { 1, 1, 1, 1, 0 }, { 300, 40, 40, 40, 0 }, { 257, 8 * 33, 8 * 33, 8 * 34, 0 },
                   { 99, 13, 12, 17, 3 }, { 5000, 64, 64, 64, 0 } };
  for (int c = 0; c < 5; c++) {
    long n = g2[c][0], sp = g2[c][1], w = g2[c][2], dp = g2[c][3], off = g2[c][4], m = n + 3;
    tbuf b[] = { lbuf(n, indices(n, m, 0.1)), bbuf(IN, m * sp + off, 0.5), bbuf(INOUT, n * dp + off, 0.5) };
    for (long i = 0; i < m * sp + off; i++) ((uint8_t *)b[1].h)[i] = (uint8_t)(t_uniform(&seed) * 256);
    SHAPE("n %ld spitch %ld width %ld dpitch %ld offset %ld", n, sp, w, dp, off);
    CASE("gather2d", f_gather2d, 1, 0, n, sp, w, dp, off);
  }
  /* mask_before: positions around each row's limit */
  long mb[][2] = { { 1, 1 }, { 33, 257 }, { 256, 4096 } };
  for (int c = 0; c < 3; c++) {
    long rows = mb[c][0], n = mb[c][1], *pos = malloc(rows * n * sizeof *pos), *lim = malloc(rows * sizeof *lim);
    for (long r = 0; r < rows; r++) lim[r] = (long)(t_uniform(&seed) * 2 * n) - n / 2;
    for (long i = 0; i < rows * n; i++) pos[i] = (long)(t_uniform(&seed) * 2 * n) - n / 2;
    tbuf b[] = { lbuf(rows * n, pos), lbuf(rows, lim), bbuf(OUT, rows * n, 0) };
    SHAPE("rows %ld n %ld", rows, n);
    CASE("mask_before", f_mask_before, 1, 0, rows, n);
  }
  /* row_dot: idx and idx NULL (no -1: kernels.h gives it none); the chunk edges as for
     gather_scale_dot, and bits equal for the same reason */
  long rd[][2] = { { 1, 1 }, { 1, 100 }, { 50, 5 }, { 97, 32 }, { 64, 33 }, { 513, 67 }, { 4096, 512 },
                   { 32768, 512 } };
  for (int c = 0; c < 8; c++)
    for (int v = 0; v < 2; v++) {
      long n = rd[c][0], dim = rd[c][1], m = n + 7;
      long *idx = v ? NULL : indices(n, m, 0);
      tbuf b[] = { lbuf(v ? 0 : n, idx), rbuf(IN, (v ? n : m) * dim), rbuf(IN, n * dim), rbuf(OUT, n) };
      SHAPE("n %ld dim %ld idx %s", n, dim, v ? "NULL" : "set");
      CASE("row_dot", f_row_dot, 1, 0, n, dim);
    }
  return ok;
}

/* Selections of rows [rows, n]: per row `count` ascending positions (or, when shuffled, a row
   in descending order with a repeat), laid out back to back after a gap. */
static void selections(long rows, long n, long k, int shuffled, long **start, long **count, long **lpos, long *total)
{
  *start = malloc(rows * sizeof **start);
  *count = malloc(rows * sizeof **count);
  *lpos = malloc((rows * (k + 2) + 1) * sizeof **lpos);
  long e = 1;
  (*lpos)[0] = 0;
  for (long r = 0; r < rows; r++) {
    long c = r % 5 == 4 ? 0 : k - (r % 3);   /* some rows select nothing, some fewer */
    if (c < 0) c = 0;
    (*start)[r] = e;
    (*count)[r] = c;
    long p = 0;
    for (long i = 0; i < c; i++) {   /* c ascending positions below n */
      long room = n - p - (c - i);
      p += room > 0 ? (long)(t_uniform(&seed) * (room + 1)) % (room + 1) : 0;
      (*lpos)[e + i] = p++;
    }
    if (shuffled && r % 2 == 0 && c > 1) {
      for (long i = 0; i < c / 2; i++) {
        long t = (*lpos)[e + i];
        (*lpos)[e + i] = (*lpos)[e + c - 1 - i];
        (*lpos)[e + c - 1 - i] = t;
      }
      (*lpos)[e + c - 1] = (*lpos)[e];   /* a repeated position: added twice, in e order */
    }
    e += c;
  }
  *total = e;
}

static int router(c5_backend *gpu)
{
  int ok = 1;
  char shape[96];
  long rs[][3] = { { 1, 1, 1 }, { 12, 300, 77 }, { 64, 4096, 1024 } };
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 4; v++) {   /* mask or none, straight through or the scores */
      long rows = rs[c][0], n = rs[c][1], k = rs[c][2], *start, *count, *lpos, tot;
      selections(rows, n, k, 0, &start, &count, &lpos, &tot);
      tbuf b[] = { lbuf(rows, start), lbuf(rows, count), lbuf(tot, lpos), rbuf(IN, rows * n), bbuf(IN, v & 1 ? rows * n : 0, 0.8),
                   rbuf(INOUT, tot), rbuf(INOUT, tot) };
      SHAPE("rows %ld n %ld k %ld mask %s straight %d", rows, n, k, v & 1 ? "set" : "NULL", v >> 1);
      CASE("route_gather_scores", f_route_gather, 1, 0, rows, n, v >> 1);
    }
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 4; v++) {   /* mask or none; top-k's ascending positions, or rows out of order with repeats */
      long rows = rs[c][0], n = rs[c][1], k = rs[c][2], *start, *count, *lpos, tot;
      selections(rows, n, k, v >> 1, &start, &count, &lpos, &tot);
      tbuf b[] = { lbuf(rows, start), lbuf(rows, count), lbuf(tot, lpos), bbuf(IN, v & 1 ? rows * n : 0, 0.8), rbuf(IN, tot),
                   rbuf(OUT, rows * n) };
      SHAPE("rows %ld n %ld k %ld mask %s %s", rows, n, k, v & 1 ? "set" : "NULL", v >> 1 ? "repeats" : "ascending");
      CASE("route_scatter_dscores", f_route_scatter, 0, 0, rows, n);
    }
  long bm[][3] = { { 1, 1, 1 }, { 3, 4, 333 }, { 8, 2, 8192 } };
  for (int c = 0; c < 3; c++) {
    tbuf b[] = { bbuf(IN, bm[c][0] * bm[c][2], 0.7), bbuf(OUT, bm[c][0] * bm[c][1] * bm[c][2], 0) };
    SHAPE("batch %ld routes %ld n %ld", bm[c][0], bm[c][1], bm[c][2]);
    CASE("broadcast_mask", f_broadcast_mask, 1, 0, bm[c][0], bm[c][1], bm[c][2]);
  }
  long nf[][4] = { { 1, 1, 0, 1 }, { 7, 1000, 12345, 77 }, { 64, 8192, 1L << 33, 5 } };
  for (int c = 0; c < 3; c++) {
    tbuf b[] = { rbuf(OUT, nf[c][0] * nf[c][1]) };
    SHAPE("rows %ld n %ld col0 %ld", nf[c][0], nf[c][1], nf[c][2]);
    CASE("normal_fill", f_normal_fill, 0, ulps, nf[c][0], nf[c][1], nf[c][2], nf[c][3]);
  }
  return ok;
}

static int cosine(c5_backend *gpu)
{
  int ok = 1;
  char shape[96];
  long cs[][4] = { { 1, 1, 1, 1 }, { 2, 3, 77, 64 }, { 4, 2, 2048, 256 } };
  for (int c = 0; c < 3; c++) {
    long batch = cs[c][0], routes = cs[c][1], n = cs[c][2], dim = cs[c][3];
    {
      tbuf b[] = { rbuf(IN, batch * n * dim), rbuf(IN, routes * dim), rbuf(INOUT, batch * routes * n), dbuf(OUT, batch * n),
                   dbuf(OUT, routes) };
      if (n > 1) memset((c5_real *)b[0].h + dim, 0, dim * sizeof(c5_real));   /* a zero token: the clamp */
      SHAPE("batch %ld routes %ld n %ld dim %ld", batch, routes, n, dim);
      CASE("cosine_route_forward", f_cosine_fwd, 0, 0, batch, routes, n, dim);
    }
    {
      tbuf b[] = { rbuf(IN, batch * n * dim), rbuf(IN, routes * dim), dbuf(IN, batch * n), dbuf(IN, routes),
                   rbuf(INOUT, batch * routes * n), rbuf(INOUT, batch * n * dim) };
      for (int i = 2; i < 4; i++)   /* norms as the forward leaves them: positive, one at the clamp */
        for (long k = 0; k < b[i].count; k++) ((double *)b[i].h)[k] = k == 1 ? 1e-12 : 0.5 + fabs(((double *)b[i].h)[k]);
      SHAPE("batch %ld routes %ld n %ld dim %ld", batch, routes, n, dim);
      CASE("cosine_route_backward", f_cosine_bwd, 0, 0, batch, routes, n, dim);
    }
    {
      tbuf b[] = { rbuf(IN, routes * dim), dbuf(IN, routes), dbuf(INOUT, routes * dim) };
      for (long k = 0; k < routes; k++) ((double *)b[1].h)[k] = k == 1 ? 1e-12 : 0.5 + fabs(((double *)b[1].h)[k]);
      SHAPE("routes %ld dim %ld", routes, dim);
      CASE("cosine_route_backward_w", f_cosine_bwd_w, 0, 0, routes, dim);
    }
  }
  return ok;
}

/* rotary on bf16 rows (a module's activations kept in bf16), in place: every element within half a bf16 ulp (and
   a little) of the rotation formed in double from the same bf16 inputs; the gaps between heads and rows stay. */
static int rotary_bf16(c5_backend *gpu, int transpose)
{
  const long rows = 1000, heads = 4, dh = 64, hs = 2 * dh, ld = heads * hs + 8, half = dh / 2, nx = rows * ld;
  uint16_t *hx = malloc(nx * 2), *got = malloc(nx * 2);
  double *cs = malloc(rows * half * 8), *sn = malloc(rows * half * 8);
  void *dx = NULL, *dcs = NULL, *dsn = NULL;
  int ok = 0;
  long bad = 0;
  for (long i = 0; i < nx; i++) hx[i] = t_bf16((float)t_normal(&seed));
  for (long k = 0; k < rows * half; k++) {
    double a = 100 * t_uniform(&seed);
    cs[k] = cos(a);
    sn[k] = sin(a);
  }
  T_CHECK((dx = t_dev_upload(gpu, hx, nx * 2)) && (dcs = t_dev_upload(gpu, cs, rows * half * 8)) &&
          (dsn = t_dev_upload(gpu, sn, rows * half * 8)), "device buffers");
  {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    T_OK((transpose ? c5k_cuda_ops.rotary_transpose : c5k_cuda_ops.rotary)(&ctx, rows, (int)heads, (int)dh, dx,
                                                                          C5_DTYPE_BF16, ld, hs, dcs, dsn));
  }
  T_OK(c5_backend_memcpy(gpu, got, dx, nx * 2));
  for (long i = 0; i < rows; i++)
    for (long e = 0; e < ld; e++) {
      const long h = e / hs, j = e % hs, at = i * ld + e;
      double want = t_unbf16(hx[at]);
      if (h < heads && j < dh) {
        const long jj = j % half;
        const double t1 = t_unbf16(hx[i * ld + h * hs + jj]), t2 = t_unbf16(hx[i * ld + h * hs + jj + half]);
        const double c = cs[i * half + jj], s = (transpose ? -1 : 1) * sn[i * half + jj];
        want = j < half ? t1 * c - t2 * s : t2 * c + t1 * s;
      }
      const double d = fabs(t_unbf16(got[at]) - want);
      bad += h < heads && j < dh ? !(d <= fabs(want) * 0x1p-8 + 1e-30) : got[at] != hx[at];
    }
  printf("%s bf16 rows %ld heads %ld dh %ld ld %ld hstride %ld: %ld elements off by more than half a bf16 ulp or "
         "gaps changed %s\n", transpose ? "rotary_transpose" : "rotary", rows, heads, dh, ld, hs, bad,
         bad ? "FAIL" : "PASS");
  T_CHECK(bad == 0, "rotary bf16");
  ok = 1;
fail:
  c5_backend_free(gpu, dx); c5_backend_free(gpu, dcs); c5_backend_free(gpu, dsn);
  free(hx); free(got); free(cs); free(sn);
  return ok;
}

static int rotary(c5_backend *gpu)
{
  int ok = 1;
  char shape[96];
  long rt[][2] = { { 1, 2 }, { 100, 64 }, { 37, 300 }, { 4096, 128 } };
  for (int c = 0; c < 4; c++) {
    long rows = rt[c][0], dh = rt[c][1], half = dh / 2, *pos = malloc(rows * sizeof *pos);
    for (long i = 0; i < rows; i++) pos[i] = c == 3 ? i : (long)(t_uniform(&seed) * 100000);
    tbuf b[] = { lbuf(rows, pos), dbuf(OUT, rows * half), dbuf(OUT, rows * half) };
    SHAPE("rows %ld dh %ld", rows, dh);
    CASE("rotary_table", f_rotary_table, 0, ulps_double, rows, dh);
  }
  /* rows of heads with padded strides: the gaps stay */
  long ro[][5] = { { 1, 1, 2, 2, 2 }, { 50, 3, 16, 55, 18 }, { 2048, 4, 64, 4 * 64 * 2, 2 * 64 } };
  for (int c = 0; c < 3; c++)
    for (int t = 0; t < 2; t++) {
      long rows = ro[c][0], heads = ro[c][1], dh = ro[c][2], ld = ro[c][3], hs = ro[c][4];
      tbuf b[] = { rbuf(INOUT, rows * ld), dbuf(IN, rows * dh / 2), dbuf(IN, rows * dh / 2) };
      for (long k = 0; k < rows * dh / 2; k++) {   /* a rotation: cos^2 + sin^2 = 1 */
        double a = ((double *)b[1].h)[k];
        ((double *)b[1].h)[k] = cos(a);
        ((double *)b[2].h)[k] = sin(a);
      }
      SHAPE("rows %ld heads %ld dh %ld ld %ld hstride %ld", rows, heads, dh, ld, hs);
      CASE(t ? "rotary_transpose" : "rotary", f_rotary, 0, 0, rows, heads, dh, ld, t, hs);
    }
  ok &= rotary_bf16(gpu, 0) & rotary_bf16(gpu, 1);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_backend *gpu = t_cuda_backend_or_skip();
  int ok = 1;
  printf("precision %s: norm-wise bound %.0e, elementwise (log/cos/sin) %.0e\n", C5_REAL_NAME, tol, ulps);
  ok &= moves(gpu);
  ok &= gathers(gpu);
  ok &= router(gpu);
  ok &= cosine(gpu);
  ok &= rotary(gpu);
  {
    c5k_ctx none = { 0 };
    T_FAILS(c5k_cuda_ops.gather_rows(&none, 1, 1, NULL, NULL, NULL, 1, NULL), C5_ERR_ARG, "gather_rows");
  }
  goto done;
fail:
  ok = 0;
done:
  printf("%s\n", ok ? "all PASS" : "some FAIL");
  c5_backend_destroy(&gpu);
  MPI_Finalize();
  return ok ? 0 : 1;
}
