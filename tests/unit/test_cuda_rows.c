/* test_cuda_rows.c - the row and elementwise ops of the CUDA backend
   (norms, GELU, colsum, gemm_acc, grad_flush, axpy, acc_add, broadcast_row,
   sumsq, adamw_update, init_fill, embeddings, cross-entropy) against the
   CPU ops on the same inputs, norm-wise: 1e-12 in a double build, 1e-5 in
   a single build. Every output is poisoned with NaN first (each element
   must be written; accumulators start from random values, += must keep
   them), every GPU op runs twice from the same state and must give the same
   bits (fixed-order sums, no atomics). init_fill must give the CPU's bits;
   sumsq's first non-finite index and xent's count must be the CPU's
   exactly. One line per case: op, shape, what, error, PASS/FAIL. Shapes:
   one row, sizes off the block sizes, several row parts, one realistic.
   The norms' and GELU's bf16 outputs (single build) must be the c5_real
   outputs of the same op on the same input rounded to bf16 (t_bf16) bit for
   bit, their statistics the c5_real run's bits, nothing written past them;
   so must convert's bf16 output be t_bf16 of its input (its c5_real output:
   the input's bits); bf16_acts must say 1 in bf16 mode only, the ops refuse
   the types they do not write. The norms' backward also run with a residual
   res = dx (kernels.h: added in place), against the CPU's the same way, their
   parameter gradients into accumulators of their own. Exits 77 without a GPU. */
#include <stdint.h>
#include "cuda_util.h"
#include "kernels.h"
#include "backend.h"
#include "cuda/cuda.h"

static const double tol = C5_USE_DOUBLE ? 1e-12 : 1e-5;
static c5_backend *gpu;
static unsigned long long seed = 42;
static int nfail;

/* ---- host and device buffers: every device buffer of a case is freed at its end ---- */
#define MAXD 64
static void *dlist[MAXD];
static int nd;

static c5_real *rreal(long n, double scale)
{
  c5_real *x = malloc((n > 0 ? n : 1) * sizeof *x);
  for (long i = 0; i < n; i++) x[i] = (c5_real)(scale * t_normal(&seed));
  return x;
}
static double *rdbl(long n)
{
  double *x = malloc((n > 0 ? n : 1) * sizeof *x);
  for (long i = 0; i < n; i++) x[i] = t_normal(&seed);
  return x;
}
static void *dup_(const void *p, size_t bytes)
{
  void *q = malloc(bytes ? bytes : 1);
  memcpy(q, p, bytes);
  return q;
}
/* a device copy of host (bytes); NaN-filled when host is NULL (an output every element of which the op writes) */
static void *D(const void *host, size_t bytes)
{
  void *h = NULL, *p = NULL;
  if (!host) {
    h = malloc(bytes ? bytes : 1);
    memset(h, 0xff, bytes);   /* all-ones bits: NaN as double and as float */
    host = h;
  }
  if (nd < MAXD && bytes > 0) p = t_dev_upload(gpu, host, bytes);
  free(h);
  if (p) dlist[nd++] = p;
  return p;
}
static void Dfree(void)
{
  while (nd > 0) c5_backend_free(gpu, dlist[--nd]);
}
/* the device array into a new host buffer */
static void *H(const void *d, size_t bytes)
{
  void *h = malloc(bytes ? bytes : 1);
  if (bytes > 0 && c5_backend_memcpy(gpu, h, d, bytes) != C5_OK) {
    fprintf(stderr, "download of %zu bytes: %s\n", bytes, c5_last_error());
    memset(h, 0xff, bytes);
  }
  return h;
}

static double err_real(const c5_real *a, const c5_real *b, long n)
{
  double *x = malloc((n + 1) * sizeof *x), *y = malloc((n + 1) * sizeof *y);
  t_to_double(a, n, x);
  t_to_double(b, n, y);
  double e = t_normwise(x, y, n);
  free(x);
  free(y);
  return e;
}

/* One line per compared output; same: the two GPU runs' bits agree. */
static void report(const char *op, const char *shape, const char *what, double e, double bound, int same)
{
  int ok = e <= bound && same;
  printf("%-18s %-28s %-8s err %.3e (tol %.0e)%s %s\n", op, shape, what, e, bound, same ? "" : " runs differ",
         ok ? "PASS" : "FAIL");
  fflush(stdout);
  if (!ok) nfail++;
}
#define CMP_REAL(op, shape, what, g0, g1, cpu, n) \
  report(op, shape, what, err_real(g0, cpu, n), tol, memcmp(g0, g1, (n) * sizeof(c5_real)) == 0)
#define CMP_DBL(op, shape, what, g0, g1, cpu, n) \
  report(op, shape, what, t_normwise(g0, cpu, n), tol, memcmp(g0, g1, (n) * sizeof(double)) == 0)

/* an op returned an error or a buffer failed (printed above) */
static void case_failed(const char *shape)
{
  printf("%-18s %-28s FAIL (an op or a buffer failed: see the message above)\n", "?", shape);
  fflush(stdout);
  nfail++;
}

static c5k_ctx gctx(void) { return c5_backend_ctx(gpu, NULL, 0); }

/* ---- norms ---- */
static int case_rmsnorm(long rows, int dim)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "rows %ld dim %d", rows, dim);
  const long N = rows * dim, wl = c5k_rowpart_work(rows, dim);
  c5_real *x = rreal(N, 1), *gam = rreal(dim, 1), *dy = rreal(N, 1), *y = rreal(N, 0), *dx = rreal(N, 0);
  c5_real *res = rreal(N, 1), *dxr = dup_(res, N * sizeof *res);
  double *dg0 = rdbl(dim), *dg = dup_(dg0, dim * 8), *dgr = dup_(dg0, dim * 8), *rn = rdbl(rows), *work = malloc(wl * 8);
  c5_real *gy[2] = { 0 }, *gdx[2] = { 0 }, *gdxr[2] = { 0 };
  double *grn[2] = { 0 }, *gdg[2] = { 0 }, *gdgr[2] = { 0 };
  if (rows > 2) for (int i = 0; i < dim; i++) x[2 * dim + i] = 0;   /* a zero row: the clamp */
  c5k_ctx cpu = { .work = work, .work_len = wl };
  T_OK(c5k_cpu_ops.rmsnorm_forward(&cpu, x, gam, rows, dim, y, C5_DTYPE_REAL, rn));
  T_OK(c5k_cpu_ops.rmsnorm_backward(&cpu, x, gam, rn, dy, rows, dim, NULL, dx, dg));
  T_OK(c5k_cpu_ops.rmsnorm_backward(&cpu, x, gam, rn, dy, rows, dim, dxr, dxr, dgr));
  for (int rep = 0; rep < 2; rep++) {
    c5_real *dX = D(x, N * sizeof *x), *dG = D(gam, dim * sizeof *gam), *dDY = D(dy, N * sizeof *dy);
    c5_real *dY = D(NULL, N * sizeof *y), *dDX = D(NULL, N * sizeof *dx), *dDXR = D(res, N * sizeof *res);
    double *dRN = D(NULL, rows * 8), *dDG = D(dg0, dim * 8), *dDGR = D(dg0, dim * 8);
    T_CHECK(dX && dG && dDY && dY && dDX && dDXR && dRN && dDG && dDGR, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.rmsnorm_forward(&c, dX, dG, rows, dim, dY, C5_DTYPE_REAL, dRN));
    T_OK(c5k_cuda_ops.rmsnorm_backward(&c, dX, dG, dRN, dDY, rows, dim, NULL, dDX, dDG));
    T_OK(c5k_cuda_ops.rmsnorm_backward(&c, dX, dG, dRN, dDY, rows, dim, dDXR, dDXR, dDGR));
    gy[rep] = H(dY, N * sizeof *y); gdx[rep] = H(dDX, N * sizeof *dx); gdxr[rep] = H(dDXR, N * sizeof *dx);
    grn[rep] = H(dRN, rows * 8); gdg[rep] = H(dDG, dim * 8); gdgr[rep] = H(dDGR, dim * 8);
    Dfree();
  }
  CMP_REAL("rmsnorm_forward", sh, "y", gy[0], gy[1], y, N);
  CMP_DBL("rmsnorm_forward", sh, "rnorm", grn[0], grn[1], rn, rows);
  CMP_REAL("rmsnorm_backward", sh, "dx", gdx[0], gdx[1], dx, N);
  CMP_DBL("rmsnorm_backward", sh, "dgamma", gdg[0], gdg[1], dg, dim);
  CMP_REAL("rmsnorm_backward", sh, "dx res=dx", gdxr[0], gdxr[1], dxr, N);
  CMP_DBL("rmsnorm_backward", sh, "dgamma res=dx", gdgr[0], gdgr[1], dgr, dim);
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  for (int r = 0; r < 2; r++) { free(gy[r]); free(gdx[r]); free(gdxr[r]); free(grn[r]); free(gdg[r]); free(gdgr[r]); }
  free(x); free(gam); free(dy); free(y); free(dx); free(res); free(dxr); free(dg0); free(dg); free(dgr); free(rn);
  free(work);
  return 0;
}

static int case_layernorm(long rows, int dim)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "rows %ld dim %d", rows, dim);
  const long N = rows * dim, wl = c5k_rowpart_work(rows, dim);
  c5_real *x = rreal(N, 2), *w = rreal(dim, 1), *b = rreal(dim, 1), *dy = rreal(N, 1), *y = rreal(N, 0),
          *dx = rreal(N, 0), *res = rreal(N, 1), *dxr = dup_(res, N * sizeof *res);
  double *dw0 = rdbl(dim), *db0 = rdbl(dim), *dw = dup_(dw0, dim * 8), *db = dup_(db0, dim * 8);
  double *dwr = dup_(dw0, dim * 8), *dbr = dup_(db0, dim * 8);
  double *mean = rdbl(rows), *rstd = rdbl(rows), *work = malloc(wl * 8);
  c5_real *gy[2] = { 0 }, *gdx[2] = { 0 }, *gdxr[2] = { 0 };
  double *gm[2] = { 0 }, *gr[2] = { 0 }, *gdw[2] = { 0 }, *gdb[2] = { 0 }, *gdwr[2] = { 0 }, *gdbr[2] = { 0 };
  for (long i = 0; i < N; i++) x[i] += (c5_real)3;   /* an offset: the centring matters */
  c5k_ctx cpu = { .work = work, .work_len = wl };
  T_OK(c5k_cpu_ops.layernorm_forward(&cpu, x, w, b, rows, dim, 1e-5, y, C5_DTYPE_REAL, mean, rstd));
  T_OK(c5k_cpu_ops.layernorm_backward(&cpu, x, w, mean, rstd, dy, rows, dim, NULL, dx, dw, db));
  T_OK(c5k_cpu_ops.layernorm_backward(&cpu, x, w, mean, rstd, dy, rows, dim, dxr, dxr, dwr, dbr));
  for (int rep = 0; rep < 2; rep++) {
    c5_real *dX = D(x, N * sizeof *x), *dW = D(w, dim * sizeof *w), *dB = D(b, dim * sizeof *b),
            *dDY = D(dy, N * sizeof *dy), *dY = D(NULL, N * sizeof *y), *dDX = D(NULL, N * sizeof *dx),
            *dDXR = D(res, N * sizeof *res);
    double *dM = D(NULL, rows * 8), *dR = D(NULL, rows * 8), *dDW = D(dw0, dim * 8), *dDB = D(db0, dim * 8);
    double *dDWR = D(dw0, dim * 8), *dDBR = D(db0, dim * 8);
    T_CHECK(dX && dW && dB && dDY && dY && dDX && dDXR && dM && dR && dDW && dDB && dDWR && dDBR, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.layernorm_forward(&c, dX, dW, dB, rows, dim, 1e-5, dY, C5_DTYPE_REAL, dM, dR));
    T_OK(c5k_cuda_ops.layernorm_backward(&c, dX, dW, dM, dR, dDY, rows, dim, NULL, dDX, dDW, dDB));
    T_OK(c5k_cuda_ops.layernorm_backward(&c, dX, dW, dM, dR, dDY, rows, dim, dDXR, dDXR, dDWR, dDBR));
    gy[rep] = H(dY, N * sizeof *y); gdx[rep] = H(dDX, N * sizeof *dx); gdxr[rep] = H(dDXR, N * sizeof *dx);
    gm[rep] = H(dM, rows * 8); gr[rep] = H(dR, rows * 8); gdw[rep] = H(dDW, dim * 8); gdb[rep] = H(dDB, dim * 8);
    gdwr[rep] = H(dDWR, dim * 8); gdbr[rep] = H(dDBR, dim * 8);
    Dfree();
  }
  CMP_REAL("layernorm_forward", sh, "y", gy[0], gy[1], y, N);
  CMP_DBL("layernorm_forward", sh, "mean", gm[0], gm[1], mean, rows);
  CMP_DBL("layernorm_forward", sh, "rstd", gr[0], gr[1], rstd, rows);
  CMP_REAL("layernorm_backward", sh, "dx", gdx[0], gdx[1], dx, N);
  CMP_DBL("layernorm_backward", sh, "dw", gdw[0], gdw[1], dw, dim);
  CMP_DBL("layernorm_backward", sh, "db", gdb[0], gdb[1], db, dim);
  CMP_REAL("layernorm_backward", sh, "dx res=dx", gdxr[0], gdxr[1], dxr, N);
  CMP_DBL("layernorm_backward", sh, "dw res=dx", gdwr[0], gdwr[1], dwr, dim);
  CMP_DBL("layernorm_backward", sh, "db res=dx", gdbr[0], gdbr[1], dbr, dim);
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  for (int r = 0; r < 2; r++) {
    free(gy[r]); free(gdx[r]); free(gdxr[r]); free(gm[r]); free(gr[r]); free(gdw[r]); free(gdb[r]);
    free(gdwr[r]); free(gdbr[r]);
  }
  free(x); free(w); free(b); free(dy); free(y); free(dx); free(res); free(dxr); free(dw0); free(db0); free(dw);
  free(db); free(dwr); free(dbr);
  free(mean); free(rstd); free(work);
  return 0;
}

/* ---- GELU (dx aliasing dy, as the CPU allows) ---- */
static int case_gelu(long n)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "n %ld", n);
  c5_real *x = rreal(n, 2.5), *dy = rreal(n, 1), *y = rreal(n, 0), *dx = dup_(dy, n * sizeof *dy);
  c5_real *gy[2] = { 0 }, *gdx[2] = { 0 };
  c5k_ctx cpu = { 0 };
  T_OK(c5k_cpu_ops.gelu_forward(&cpu, x, n, y, C5_DTYPE_REAL));
  T_OK(c5k_cpu_ops.gelu_backward(&cpu, x, dx, n, dx));
  for (int rep = 0; rep < 2; rep++) {
    c5_real *dX = D(x, n * sizeof *x), *dY = D(NULL, n * sizeof *y), *dDY = D(dy, n * sizeof *dy);
    T_CHECK(dX && dY && dDY, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.gelu_forward(&c, dX, n, dY, C5_DTYPE_REAL));
    T_OK(c5k_cuda_ops.gelu_backward(&c, dX, dDY, n, dDY));
    gy[rep] = H(dY, n * sizeof *y); gdx[rep] = H(dDY, n * sizeof *dx);
    Dfree();
  }
  {
    /* 1 + erf(x / sqrt 2) cancels for x << 0: the erf's last-place difference
       between the CPU's (SLEEF) and the GPU's library grows there by
       |x| / |y|. The bound is therefore scaled by the terms' magnitudes,
       0.5 |x| (1 + |erf|) (forward) and |dy| (0.5 (1 + |erf|) + |x| phi)
       (backward), where y's own norm would be smaller. */
    double *sy = malloc(n * sizeof *sy), *sd = malloc(n * sizeof *sd), *z = calloc(n, sizeof *z), *e = malloc(n * 8);
    for (long i = 0; i < n; i++) {
      double xi = x[i], ae = fabs(erf(xi * M_SQRT1_2));
      sy[i] = 0.5 * fabs(xi) * (1 + ae);
      sd[i] = fabs((double)dy[i]) * (0.5 * (1 + ae) + fabs(xi) * 0.3989422804014327 * exp(-0.5 * xi * xi));
    }
    t_to_double(gy[0], n, e);
    for (long i = 0; i < n; i++) e[i] -= (double)y[i];
    double ey = t_normwise(e, z, n) / t_normwise(sy, z, n);
    t_to_double(gdx[0], n, e);
    for (long i = 0; i < n; i++) e[i] -= (double)dx[i];
    double ed = t_normwise(e, z, n) / t_normwise(sd, z, n);
    free(sy); free(sd); free(z); free(e);
    report("gelu_forward", sh, "y/terms", ey, tol, memcmp(gy[0], gy[1], n * sizeof *y) == 0);
    report("gelu_backward", sh, "dx/terms", ed, tol, memcmp(gdx[0], gdx[1], n * sizeof *dx) == 0);
  }
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  for (int r = 0; r < 2; r++) { free(gy[r]); free(gdx[r]); }
  free(x); free(dy); free(y); free(dx);
  return 0;
}

/* ---- typed outputs (kernels.h ytype): bf16 in the single build ---- */
/* buf [off + 2 n] bf16 (poisoned with 0xffff, a NaN t_bf16 never makes of a finite value): elements off .. off + n - 1
   must be t_bf16 of the c5_real output yf bit for bit, the rest still the poison (nothing written outside). */
static void cmp_bf16(const char *op, const char *shape, const c5_real *yf, const uint16_t *buf, long off, long n)
{
  long bad = 0, first = -1, outside = 0;
  for (long i = 0; i < n; i++)
    if (buf[off + i] != t_bf16((float)yf[i])) {
      if (first < 0) first = i;
      bad++;
    }
  for (long j = 0; j < off; j++) outside += buf[j] != 0xffff;
  for (long j = off + n; j < off + 2 * n; j++) outside += buf[j] != 0xffff;
  const int ok = bad == 0 && outside == 0;
  printf("%-18s %-28s bf16 y: %ld of %ld differ from the c5_real y rounded, %ld written outside %s\n", op, shape, bad,
         n, outside, ok ? "PASS" : "FAIL");
  if (first >= 0)
    printf("  first at %ld: %04x, want %04x (c5_real %.9g)\n", first, buf[off + first], t_bf16((float)yf[first]),
           (double)yf[first]);
  fflush(stdout);
  if (!ok) nfail++;
}
/* the bf16 run's statistics (a) against the c5_real run's (b): the same bits */
static void cmp_bits(const char *op, const char *shape, const char *what, const void *a, const void *b, size_t bytes)
{
  const int ok = memcmp(a, b, bytes) == 0;
  printf("%-18s %-28s %-8s the c5_real run's bits %s\n", op, shape, what, ok ? "PASS" : "FAIL");
  fflush(stdout);
  if (!ok) nfail++;
}

/* rmsnorm_forward and layernorm_forward with ytype bf16 against the same op with ytype c5_real on the same device
   input (a zero row: the clamp; an offset: the centring) */
static int case_norms_bf16(long rows, int dim)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "rows %ld dim %d", rows, dim);
  const long N = rows * dim;
  c5_real *x = rreal(N, 2), *gam = rreal(dim, 1), *w = rreal(dim, 1), *b = rreal(dim, 1), *yf = NULL;
  uint16_t *yb = NULL;
  double *s0 = NULL, *s1 = NULL;
  if (rows > 2) for (int i = 0; i < dim; i++) x[2 * dim + i] = 0;
  c5_real *dX = D(x, N * sizeof *x), *dG = D(gam, dim * sizeof *gam), *dW = D(w, dim * sizeof *w),
          *dB = D(b, dim * sizeof *b), *dYf = D(NULL, N * sizeof *x);
  void *dYb = D(NULL, 2 * N * sizeof(uint16_t));
  double *dS0 = D(NULL, rows * 8), *dS1 = D(NULL, rows * 8), *dT0 = D(NULL, rows * 8), *dT1 = D(NULL, rows * 8);
  T_CHECK(dX && dG && dW && dB && dYf && dYb && dS0 && dS1 && dT0 && dT1, "device buffers");
  c5k_ctx c = gctx();
  T_OK(c5k_cuda_ops.rmsnorm_forward(&c, dX, dG, rows, dim, dYf, C5_DTYPE_REAL, dS0));
  T_OK(c5k_cuda_ops.rmsnorm_forward(&c, dX, dG, rows, dim, dYb, C5_DTYPE_BF16, dS1));
  yf = H(dYf, N * sizeof *x); yb = H(dYb, 2 * N * sizeof *yb); s0 = H(dS0, rows * 8); s1 = H(dS1, rows * 8);
  cmp_bf16("rmsnorm_forward", sh, yf, yb, 0, N);
  cmp_bits("rmsnorm_forward", sh, "rnorm", s1, s0, rows * 8);
  free(yf); free(yb); free(s0); free(s1);
  yf = NULL; yb = NULL; s0 = s1 = NULL;
  /* the poison again (the rmsnorm wrote over it), then the LayerNorm: mean in S, rstd in T */
  {
    uint16_t *p = malloc(2 * N * sizeof *p);
    memset(p, 0xff, 2 * N * sizeof *p);
    const c5_status st = c5_backend_memcpy(gpu, dYb, p, 2 * N * sizeof *p);
    free(p);
    T_OK(st);
  }
  T_OK(c5k_cuda_ops.layernorm_forward(&c, dX, dW, dB, rows, dim, 1e-5, dYf, C5_DTYPE_REAL, dS0, dT0));
  T_OK(c5k_cuda_ops.layernorm_forward(&c, dX, dW, dB, rows, dim, 1e-5, dYb, C5_DTYPE_BF16, dS1, dT1));
  yf = H(dYf, N * sizeof *x); yb = H(dYb, 2 * N * sizeof *yb); s0 = H(dS0, rows * 8); s1 = H(dS1, rows * 8);
  cmp_bf16("layernorm_forward", sh, yf, yb, 0, N);
  cmp_bits("layernorm_forward", sh, "mean", s1, s0, rows * 8);
  free(s0); free(s1);
  s0 = H(dT0, rows * 8); s1 = H(dT1, rows * 8);
  cmp_bits("layernorm_forward", sh, "rstd", s1, s0, rows * 8);
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  free(x); free(gam); free(w); free(b); free(yf); free(yb); free(s0); free(s1);
  return 0;
}

/* gelu_forward with ytype bf16 against ytype c5_real on the same device input x + xoff (c5_reals); the bf16 y at
   yoff bf16 elements into its buffer (1, 2: not 8-byte aligned, the elementwise path; 4: 8-byte aligned only) */
static int case_gelu_bf16(long n, int xoff, int yoff)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "n %ld x+%d y+%d", n, xoff, yoff);
  c5_real *x = rreal(n + xoff, 2.5), *yf = NULL;
  uint16_t *yb = NULL;
  c5_real *dX = D(x, (n + xoff) * sizeof *x), *dYf = D(NULL, n * sizeof *x);
  uint16_t *dYb = D(NULL, (yoff + 2 * n) * sizeof *yb);
  T_CHECK(dX && dYf && dYb, "device buffers");
  c5k_ctx c = gctx();
  T_OK(c5k_cuda_ops.gelu_forward(&c, dX + xoff, n, dYf, C5_DTYPE_REAL));
  T_OK(c5k_cuda_ops.gelu_forward(&c, dX + xoff, n, dYb + yoff, C5_DTYPE_BF16));
  yf = H(dYf, n * sizeof *x);
  yb = H(dYb, (yoff + 2 * n) * sizeof *yb);
  cmp_bf16("gelu_forward", sh, yf, yb, yoff, n);
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  free(x); free(yf); free(yb);
  return 0;
}

/* convert of n elements at x + xoff (c5_reals): ytype c5_real gives x's bits; bf16 (single build) at yoff bf16
   elements into its buffer gives t_bf16 of x bit for bit, nothing written outside */
static int case_convert(long n, int xoff, int yoff)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "n %ld x+%d y+%d", n, xoff, yoff);
  c5_real *x = rreal(n + xoff, 3), *yf = NULL;
  uint16_t *yb = NULL;
  if (n > 2) x[xoff + 1] = (c5_real)1.00390625;   /* halfway between two bf16 values: to even */
  c5_real *dX = D(x, (n + xoff) * sizeof *x), *dYf = D(NULL, n * sizeof *x);
  uint16_t *dYb = D(NULL, (yoff + 2 * n) * sizeof *yb);
  T_CHECK(dX && dYf && dYb, "device buffers");
  c5k_ctx c = gctx();
  T_OK(c5k_cuda_ops.convert(&c, n, dX + xoff, dYf, C5_DTYPE_REAL));
  yf = H(dYf, n * sizeof *x);
  cmp_bits("convert", sh, "c5_real", yf, x + xoff, n * sizeof *x);
  if (!C5_USE_DOUBLE) {
    T_OK(c5k_cuda_ops.convert(&c, n, dX + xoff, dYb + yoff, C5_DTYPE_BF16));
    yb = H(dYb, (yoff + 2 * n) * sizeof *yb);
    cmp_bf16("convert", sh, x + xoff, yb, yoff, n);
  }
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  free(x); free(yf); free(yb);
  return 0;
}

/* bf16_acts: 1 in bf16 mode only (not fp32, tf32, an exact ctx; never in the double build, never on the CPU); the
   typed outputs' refusals: the CPU writes c5_real only, the GPU c5_real or (single build) bf16 */
static int case_bf16_acts(void)
{
  static const c5_matmul mm[] = { C5_MATMUL_FP32, C5_MATMUL_TF32, C5_MATMUL_BF16 };
  int ok = 0;
  c5k_ctx cpu = { 0 };
  c5_real v = 0;
  const c5_dtype other = C5_USE_DOUBLE ? C5_DTYPE_F32 : C5_DTYPE_F64;
  T_CHECK(c5k_cpu_ops.bf16_acts(&cpu) == 0, "the CPU's bf16_acts says 0");
  for (int i = 0; i < 3; i++) {
    T_OK(c5_backend_set_matmul(gpu, mm[i]));
    c5k_ctx c = gctx();
    const int got = c5k_cuda_ops.bf16_acts(&c), want = !C5_USE_DOUBLE && mm[i] == C5_MATMUL_BF16;
    c.exact = 1;
    const int got_exact = c5k_cuda_ops.bf16_acts(&c);
    printf("bf16_acts          matmul %-4s                 %d (want %d), exact ctx %d (want 0) %s\n",
           c5_matmul_name(mm[i]), got, want, got_exact, got == want && got_exact == 0 ? "PASS" : "FAIL");
    if (got != want || got_exact != 0) nfail++;
  }
  T_OK(c5_backend_set_matmul(gpu, C5_MATMUL_FP32));
  T_FAILS(c5k_cpu_ops.rmsnorm_forward(&cpu, &v, &v, 1, 1, &v, C5_DTYPE_BF16, NULL), C5_ERR_NOTIMPL,
          "rmsnorm_forward: the CPU writes");
  T_FAILS(c5k_cpu_ops.layernorm_forward(&cpu, &v, &v, &v, 1, 1, 1e-5, &v, C5_DTYPE_BF16, NULL, NULL),
          C5_ERR_NOTIMPL, "layernorm_forward: the CPU writes");
  T_FAILS(c5k_cpu_ops.gelu_forward(&cpu, &v, 1, &v, C5_DTYPE_BF16), C5_ERR_NOTIMPL, "gelu_forward: the CPU writes");
  T_FAILS(c5k_cpu_ops.convert(&cpu, 1, &v, &v, C5_DTYPE_BF16), C5_ERR_NOTIMPL, "convert: the CPU writes");
  {
    c5k_ctx c = gctx();
    /* refused before any launch: host pointers never reach a kernel */
    T_FAILS(c5k_cuda_ops.rmsnorm_forward(&c, &v, &v, 1, 1, &v, other, NULL), C5_ERR_NOTIMPL, "rmsnorm_forward");
    T_FAILS(c5k_cuda_ops.layernorm_forward(&c, &v, &v, &v, 1, 1, 1e-5, &v, other, NULL, NULL), C5_ERR_NOTIMPL,
            "layernorm_forward");
    T_FAILS(c5k_cuda_ops.gelu_forward(&c, &v, 1, &v, other), C5_ERR_NOTIMPL, "gelu_forward");
    T_FAILS(c5k_cuda_ops.convert(&c, 1, &v, &v, other), C5_ERR_NOTIMPL, "convert");
    if (C5_USE_DOUBLE) {
      T_FAILS(c5k_cuda_ops.rmsnorm_forward(&c, &v, &v, 1, 1, &v, C5_DTYPE_BF16, NULL), C5_ERR_NOTIMPL, "bf16 output");
      T_FAILS(c5k_cuda_ops.layernorm_forward(&c, &v, &v, &v, 1, 1, 1e-5, &v, C5_DTYPE_BF16, NULL, NULL),
              C5_ERR_NOTIMPL, "bf16 output");
      T_FAILS(c5k_cuda_ops.gelu_forward(&c, &v, 1, &v, C5_DTYPE_BF16), C5_ERR_NOTIMPL, "bf16 output");
      T_FAILS(c5k_cuda_ops.convert(&c, 1, &v, &v, C5_DTYPE_BF16), C5_ERR_NOTIMPL, "bf16 output");
    }
  }
  printf("%-18s %-28s the CPU refuses bf16 y, the GPU %s PASS\n", "typed outputs", "refusals",
         C5_USE_DOUBLE ? "bf16 y and f32 y" : "f64 y");
  ok = 1;
fail:
  if (!ok) {
    printf("%-18s %-28s FAIL\n", "bf16_acts", "answers and refusals");
    nfail++;
  }
  c5_backend_set_matmul(gpu, C5_MATMUL_FP32);
  return ok;
}

/* ---- gradient sums ---- */
static int case_colsum(long rows, int cols)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "rows %ld cols %d", rows, cols);
  const long wl = c5k_rowpart_work(rows, cols);
  c5_real *dy = rreal(rows * cols, 1);
  double *db0 = rdbl(cols), *db = dup_(db0, cols * 8), *work = malloc(wl * 8), *g[2] = { 0 };
  c5k_ctx cpu = { .work = work, .work_len = wl };
  T_OK(c5k_cpu_ops.colsum(&cpu, dy, rows, cols, db));
  for (int rep = 0; rep < 2; rep++) {
    c5_real *dDY = D(dy, rows * cols * sizeof *dy);
    double *dDB = D(db0, cols * 8);
    T_CHECK(dDY && dDB, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.colsum(&c, dDY, rows, cols, dDB));
    g[rep] = H(dDB, cols * 8);
    Dfree();
  }
  CMP_DBL("colsum", sh, "db", g[0], g[1], db, cols);
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  free(g[0]); free(g[1]); free(dy); free(db0); free(db); free(work);
  return 0;
}

static int case_gemm_acc(int ta, int tb, long m, long n, long k)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "ta %d tb %d m %ld n %ld k %ld", ta, tb, m, n, k);
  const long lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 3;
  const long na = (ta ? k : m) * lda, nb = (tb ? n : k) * ldb;
  c5_real *A = rreal(na, 1), *B = rreal(nb, 1), *prod = rreal(m * n, 0);
  double *acc0 = rdbl(m * n), *acc = dup_(acc0, m * n * 8), *g[2] = { 0 };
  c5k_ctx cpu = { 0 };
  T_OK(c5k_cpu_ops.gemm_acc(&cpu, ta, tb, m, n, k, 0.5, A, lda, B, ldb, prod, acc));
  for (int rep = 0; rep < 2; rep++) {
    c5_real *dA = D(A, na * sizeof *A), *dB = D(B, nb * sizeof *B), *dP = D(NULL, m * n * sizeof *prod);
    double *dAcc = D(acc0, m * n * 8);
    T_CHECK(dA && dB && dP && dAcc, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.gemm_acc(&c, ta, tb, m, n, k, 0.5, dA, lda, dB, ldb, dP, dAcc));
    g[rep] = H(dAcc, m * n * 8);
    Dfree();
  }
  CMP_DBL("gemm_acc", sh, "acc", g[0], g[1], acc, m * n);
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  free(g[0]); free(g[1]); free(A); free(B); free(prod); free(acc0); free(acc);
  return 0;
}

static int case_grad_flush(long n)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "n %ld", n);
  c5_real *g0 = rreal(n, 1), *gc = dup_(g0, n * sizeof *g0), *gg[2] = { 0 };
  double *acc0 = rdbl(n), *acc = dup_(acc0, n * 8), *ga[2] = { 0 };
  c5k_ctx cpu = { 0 };
  T_OK(c5k_cpu_ops.grad_flush(&cpu, acc, n, gc));
  for (int rep = 0; rep < 2; rep++) {
    c5_real *dG = D(g0, n * sizeof *g0);
    double *dAcc = D(acc0, n * 8);
    T_CHECK(dG && dAcc, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.grad_flush(&c, dAcc, n, dG));
    gg[rep] = H(dG, n * sizeof *g0); ga[rep] = H(dAcc, n * 8);
    Dfree();
  }
  CMP_REAL("grad_flush", sh, "g", gg[0], gg[1], gc, n);
  CMP_DBL("grad_flush", sh, "acc", ga[0], ga[1], acc, n);   /* zeros: the error is the norm itself */
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  for (int r = 0; r < 2; r++) { free(gg[r]); free(ga[r]); }
  free(g0); free(gc); free(acc0); free(acc);
  return 0;
}

/* ---- elementwise ---- */
static int case_elementwise(long rows, long cols, double alpha)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "%ld x %ld alpha %g", rows, cols, alpha);
  const long n = rows * cols;
  c5_real *x = rreal(n, 1), *y0 = rreal(n, 1), *y = dup_(y0, n * sizeof *y0), *v = rreal(cols, 1), *b = rreal(n, 0);
  double *s = rdbl(n), *acc0 = rdbl(n), *acc = dup_(acc0, n * 8), *ga[2] = { 0 };
  c5_real *gy[2] = { 0 }, *gb[2] = { 0 };
  c5k_ctx cpu = { 0 };
  T_OK(c5k_cpu_ops.axpy(&cpu, n, alpha, x, y));
  T_OK(c5k_cpu_ops.acc_add(&cpu, n, s, acc));
  T_OK(c5k_cpu_ops.broadcast_row(&cpu, rows, cols, v, b));
  for (int rep = 0; rep < 2; rep++) {
    c5_real *dX = D(x, n * sizeof *x), *dY = D(y0, n * sizeof *y0), *dV = D(v, cols * sizeof *v),
            *dB = D(NULL, n * sizeof *b);
    double *dS = D(s, n * 8), *dAcc = D(acc0, n * 8);
    T_CHECK(dX && dY && dV && dB && dS && dAcc, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.axpy(&c, n, alpha, dX, dY));
    T_OK(c5k_cuda_ops.acc_add(&c, n, dS, dAcc));
    T_OK(c5k_cuda_ops.broadcast_row(&c, rows, cols, dV, dB));
    gy[rep] = H(dY, n * sizeof *y); ga[rep] = H(dAcc, n * 8); gb[rep] = H(dB, n * sizeof *b);
    Dfree();
  }
  /* elementwise with the CPU's roundings: the same bits */
  report("axpy", sh, "y", err_real(gy[0], y, n), 0, memcmp(gy[0], gy[1], n * sizeof *y) == 0);
  report("acc_add", sh, "acc", t_normwise(ga[0], acc, n), 0, memcmp(ga[0], ga[1], n * 8) == 0);
  report("broadcast_row", sh, "y", err_real(gb[0], b, n), 0, memcmp(gb[0], gb[1], n * sizeof *b) == 0);
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  for (int r = 0; r < 2; r++) { free(gy[r]); free(ga[r]); free(gb[r]); }
  free(x); free(y0); free(y); free(v); free(b); free(s); free(acc0); free(acc);
  return 0;
}

/* ---- optimizer ---- */
/* bad: index of a planted value (-1: none), NaN or Inf; big: every value 1e200 (the sum overflows, no bad entry) */
static int case_sumsq(long n, long bad, int inf, int big)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "n %ld bad %ld%s%s", n, bad, inf ? " inf" : "", big ? " overflow" : "");
  c5_real *x = rreal(n, 1);
  double *work = malloc(((n + C5K_CHUNK - 1) / C5K_CHUNK + 1) * 8), ss = 0, gs[2] = { 0 };
  long first = -2, gf[2] = { -3, -3 };
  if (big) for (long i = 0; i < n; i++) x[i] = (c5_real)1e200;
  if (bad >= 0) {
    x[bad] = (c5_real)(inf ? INFINITY : NAN);
    if (bad + 5000 < n) x[bad + 5000] = (c5_real)NAN;   /* a later one, in another chunk: not the first */
  }
  c5k_ctx cpu = { .work = work, .work_len = (n + C5K_CHUNK - 1) / C5K_CHUNK + 1 };
  T_OK(c5k_cpu_ops.sumsq(&cpu, n, x, &ss, &first));
  for (int rep = 0; rep < 2; rep++) {
    c5_real *dX = D(x, n * sizeof *x);
    T_CHECK(dX || n == 0, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.sumsq(&c, n, dX, &gs[rep], &gf[rep]));
    Dfree();
  }
  {
    /* the CPU's order of additions exactly: the same bits (NaN/Inf: the same class) */
    int same = memcmp(&gs[0], &gs[1], 8) == 0 && gf[0] == gf[1];
    int eq = isfinite(ss) ? memcmp(&gs[0], &ss, 8) == 0 : !isfinite(gs[0]) && isnan(gs[0]) == isnan(ss);
    double e = isfinite(ss) ? fabs(gs[0] - ss) / (ss > 0 ? ss : 1) : eq ? 0 : INFINITY;
    report("sumsq", sh, "ss", eq ? 0 : e, 0, same);
    printf("%-18s %-28s %-8s gpu %ld cpu %ld %s\n", "sumsq", sh, "first", gf[0], first, gf[0] == first ? "PASS" : "FAIL");
    if (gf[0] != first) nfail++;
  }
  {
    /* without first_nonfinite: the sum alone */
    c5k_ctx c = gctx();
    c5_real *dX = D(x, n * sizeof *x);
    double s2 = 0;
    T_CHECK(dX || n == 0, "device buffers");
    T_OK(c5k_cuda_ops.sumsq(&c, n, dX, &s2, NULL));
    report("sumsq", sh, "ss/NULL", memcmp(&s2, &gs[0], 8) == 0 ? 0 : INFINITY, 0, 1);
  }
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  free(x); free(work);
  return 0;
}

static int case_adamw(long n, double wd)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "n %ld wd %g", n, wd);
  c5k_adamw A = { .grad_scale = 0.8, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = wd,
                  .step = 3 };
  c5_real *g = rreal(n, 1), *p0 = rreal(n, 1), *m0 = rreal(n, 0.1), *v0 = rreal(n, 0.1);
  for (long i = 0; i < n; i++) v0[i] = v0[i] * v0[i];
  c5_real *p = dup_(p0, n * sizeof *p), *m = dup_(m0, n * sizeof *m), *v = dup_(v0, n * sizeof *v);
  c5_real *gp[2] = { 0 }, *gm[2] = { 0 }, *gv[2] = { 0 };
  c5k_ctx cpu = { 0 };
  T_OK(c5k_cpu_ops.adamw_update(&cpu, &A, n, g, p, m, v));
  for (int rep = 0; rep < 2; rep++) {
    c5_real *dG = D(g, n * sizeof *g), *dP = D(p0, n * sizeof *p), *dM = D(m0, n * sizeof *m), *dV = D(v0, n * sizeof *v);
    T_CHECK(dG && dP && dM && dV, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.adamw_update(&c, &A, n, dG, dP, dM, dV));
    gp[rep] = H(dP, n * sizeof *p); gm[rep] = H(dM, n * sizeof *m); gv[rep] = H(dV, n * sizeof *v);
    Dfree();
  }
  CMP_REAL("adamw_update", sh, "p", gp[0], gp[1], p, n);
  CMP_REAL("adamw_update", sh, "m", gm[0], gm[1], m, n);
  CMP_REAL("adamw_update", sh, "v", gv[0], gv[1], v, n);
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  for (int r = 0; r < 2; r++) { free(gp[r]); free(gm[r]); free(gv[r]); }
  free(g); free(p0); free(m0); free(v0); free(p); free(m); free(v);
  return 0;
}

/* ---- model: init, embeddings, loss ---- */
static int case_init_fill(int kind, long n)
{
  static const char *kinds[] = { "const", "normal", "uniform" };
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "%s n %ld", kinds[kind], n);
  const uint64_t key = 0x1234abcd5678ef01ull;
  c5_real *y = rreal(n, 0), *gy[2] = { 0 };
  c5k_ctx cpu = { 0 };
  T_OK(c5k_cpu_ops.init_fill(&cpu, kind, key, 0.02, n, y));
  for (int rep = 0; rep < 2; rep++) {
    c5_real *dY = D(NULL, n * sizeof *y);
    T_CHECK(dY, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.init_fill(&c, kind, key, 0.02, n, dY));
    gy[rep] = H(dY, n * sizeof *y);
    Dfree();
  }
  {
    long diff = 0, first = -1;
    double ulps = 0;   /* the largest difference in units of the last place */
    for (long i = 0; i < n; i++)
      if (gy[0][i] != y[i]) {
        diff++;
        if (first < 0) first = i;
        const double a = fabs((double)y[i]);
        const double ulp = C5_USE_DOUBLE ? nextafter(a, INFINITY) - a : (double)nextafterf((float)a, INFINITY) - a;
        double u = fabs((double)gy[0][i] - y[i]) / ulp;
        if (!(u <= ulps)) ulps = u;
      }
    if (diff) printf("  init_fill %s: %ld of %ld differ (at most %.3g ulp), first %ld: gpu %.17g cpu %.17g\n",
                     kinds[kind], diff, n, ulps, first, (double)gy[0][first], (double)y[first]);
    /* the CPU's values exactly */
    report("init_fill", sh, "y", diff ? err_real(gy[0], y, n) + 1 : 0, 0, memcmp(gy[0], gy[1], n * sizeof *y) == 0);
  }
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  free(gy[0]); free(gy[1]); free(y);
  return 0;
}

static int case_embedding(long batch, long n, long pos0, int dim)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "b %ld n %ld pos0 %ld dim %d", batch, n, pos0, dim);
  const long V = 257, P = pos0 + n + 3, R = batch * n;
  int32_t *tok = malloc(R * sizeof *tok);
  for (long r = 0; r < R; r++)   /* skewed: the mask token and a few bytes repeat often */
    tok[r] = t_uniform(&seed) < 0.2 ? 256 : t_uniform(&seed) < 0.5 ? 97 + (int)(4 * t_uniform(&seed))
                                                                    : (int)(256 * t_uniform(&seed));
  c5_real *te = rreal(V * dim, 1), *pe = rreal(P * dim, 1), *dx = rreal(R * dim, 1), *x = rreal(R * dim, 0);
  double *dt0 = rdbl(V * dim), *dp0 = rdbl(P * dim), *dt = dup_(dt0, V * dim * 8), *dp = dup_(dp0, P * dim * 8);
  c5_real *gx[2] = { 0 };
  double *gt[2] = { 0 }, *gp[2] = { 0 };
  c5k_ctx cpu = { 0 };
  T_OK(c5k_cpu_ops.embedding_forward(&cpu, batch, n, pos0, dim, tok, te, pe, x));
  T_OK(c5k_cpu_ops.embedding_backward(&cpu, batch, n, pos0, dim, tok, dx, dt, dp));
  for (int rep = 0; rep < 2; rep++) {
    int32_t *dTok = D(tok, R * sizeof *tok);
    c5_real *dTE = D(te, V * dim * sizeof *te), *dPE = D(pe, P * dim * sizeof *pe), *dDX = D(dx, R * dim * sizeof *dx),
            *dXo = D(NULL, R * dim * sizeof *x);
    double *dDT = D(dt0, V * dim * 8), *dDP = D(dp0, P * dim * 8);
    T_CHECK(dTok && dTE && dPE && dDX && dXo && dDT && dDP, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.embedding_forward(&c, batch, n, pos0, dim, dTok, dTE, dPE, dXo));
    T_OK(c5k_cuda_ops.embedding_backward(&c, batch, n, pos0, dim, dTok, dDX, dDT, dDP));
    gx[rep] = H(dXo, R * dim * sizeof *x); gt[rep] = H(dDT, V * dim * 8); gp[rep] = H(dDP, P * dim * 8);
    Dfree();
  }
  /* one add in c5_real, and each accumulator's adds in the CPU's order: the same bits */
  report("embedding_forward", sh, "x", err_real(gx[0], x, R * dim), 0, memcmp(gx[0], gx[1], R * dim * sizeof *x) == 0);
  report("embedding_backward", sh, "dtok", t_normwise(gt[0], dt, V * dim), 0, memcmp(gt[0], gt[1], V * dim * 8) == 0);
  report("embedding_backward", sh, "dpos", t_normwise(gp[0], dp, P * dim), 0, memcmp(gp[0], gp[1], P * dim * 8) == 0);
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  for (int r = 0; r < 2; r++) { free(gx[r]); free(gt[r]); free(gp[r]); }
  free(tok); free(te); free(pe); free(dx); free(x); free(dt0); free(dp0); free(dt); free(dp);
  return 0;
}

static int case_xent(long rows, int classes, double scored)
{
  char sh[64];
  int ok = 0;
  snprintf(sh, sizeof sh, "rows %ld classes %d", rows, classes);
  const long N = rows * classes, wl = c5k_rowpart_work(rows, 1);
  int32_t *tg = malloc(rows * sizeof *tg);
  for (long r = 0; r < rows; r++) tg[r] = t_uniform(&seed) < scored ? (int)(classes * t_uniform(&seed)) : -1;
  c5_real *l = rreal(N, 3), *dl = rreal(N, 0), *gdl[2] = { 0 };
  double *lse = rdbl(rows), *work = malloc(wl * 8), loss = 0, gl[2] = { 0 }, *glse[2] = { 0 };
  long cnt = -1, gc[2] = { -2, -2 };
  c5k_ctx cpu = { .work = work, .work_len = wl };
  T_OK(c5k_cpu_ops.xent_forward(&cpu, rows, classes, l, tg, lse, &loss, &cnt));
  T_OK(c5k_cpu_ops.xent_backward(&cpu, rows, classes, l, tg, lse, cnt > 0 ? 1.0 / cnt : 1.0, dl));
  for (int rep = 0; rep < 2; rep++) {
    int32_t *dT = D(tg, rows * sizeof *tg);
    c5_real *dL = D(l, N * sizeof *l), *dDL = D(NULL, N * sizeof *dl);
    double *dLse = D(NULL, rows * 8);
    T_CHECK(dT && dL && dDL && dLse, "device buffers");
    c5k_ctx c = gctx();
    T_OK(c5k_cuda_ops.xent_forward(&c, rows, classes, dL, dT, dLse, &gl[rep], &gc[rep]));
    T_OK(c5k_cuda_ops.xent_backward(&c, rows, classes, dL, dT, dLse, gc[rep] > 0 ? 1.0 / gc[rep] : 1.0, dDL));
    glse[rep] = H(dLse, rows * 8); gdl[rep] = H(dDL, N * sizeof *dl);
    if (rep == 1) {   /* a target out of range is refused by row */
      int32_t badt = classes + 3;
      long br = rows / 2;
      T_OK(c5_backend_memcpy(gpu, dT + br, &badt, sizeof badt));
      char needle[64];
      snprintf(needle, sizeof needle, "target %d of row %ld", badt, br);
      double x1;
      long x2;
      T_FAILS(c5k_cuda_ops.xent_forward(&c, rows, classes, dL, dT, dLse, &x1, &x2), C5_ERR_ARG, needle);
    }
    Dfree();
  }
  CMP_DBL("xent_forward", sh, "lse", glse[0], glse[1], lse, rows);
  report("xent_forward", sh, "loss", fabs(gl[0] - loss) / (fabs(loss) > 0 ? fabs(loss) : 1), tol,
         memcmp(&gl[0], &gl[1], 8) == 0);
  printf("%-18s %-28s %-8s gpu %ld cpu %ld %s\n", "xent_forward", sh, "count", gc[0], cnt,
         gc[0] == cnt && gc[1] == cnt ? "PASS" : "FAIL");
  if (gc[0] != cnt || gc[1] != cnt) nfail++;
  CMP_REAL("xent_backward", sh, "dlogits", gdl[0], gdl[1], dl, N);
  ok = 1;
fail:
  if (!ok) case_failed(sh);
  Dfree();
  for (int r = 0; r < 2; r++) { free(glse[r]); free(gdl[r]); }
  free(tg); free(l); free(dl); free(lse); free(work);
  return 0;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  gpu = t_cuda_backend_or_skip();
  int before = nfail;
  /* one row; sizes off the block (128) and the row part (64); a realistic one. The norms' backward takes its
     fused kernel (norm.cu) where dim is a multiple of 4 up to 1024: 64, 196 (a lane's second vector only in part),
     512 and 1024 (the widest), the unfused pair at 130, 257, 1 */
  static const long rmr[][2] = { { 1, 64 }, { 37, 130 }, { 323, 257 }, { 2, 1 }, { 4096, 512 }, { 200, 196 },
                                 { 70, 1024 } };
  const int nrm = (int)(sizeof rmr / sizeof rmr[0]);
  for (int i = 0; i < nrm; i++) {
    case_rmsnorm(rmr[i][0], (int)rmr[i][1]);
    case_layernorm(rmr[i][0], (int)rmr[i][1]);
  }
  case_gelu(1); case_gelu(1000); case_gelu(1003); case_gelu(1 << 21);
  case_bf16_acts();
  if (!C5_USE_DOUBLE) {
    /* the shapes above and an odd dim */
    for (int i = 0; i < nrm; i++) case_norms_bf16(rmr[i][0], (int)rmr[i][1]);
    case_norms_bf16(129, 67);
    static const int off[][2] = { { 0, 0 }, { 1, 0 }, { 0, 1 }, { 0, 2 }, { 0, 4 }, { 3, 4 } };
    static const long gn[] = { 1, 3, 1003, (1L << 21) + 3 };
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 6; j++) case_gelu_bf16(gn[i], off[j][0], off[j][1]);
    case_gelu_bf16(1000, 0, 0);
    case_gelu_bf16(1L << 21, 0, 0);
  }
  /* the aligned four-a-thread path, the misaligned one, a tail; a [rows, dim] gradient's size */
  {
    static const int off[][2] = { { 0, 0 }, { 1, 0 }, { 0, 1 }, { 0, 2 }, { 3, 4 } };
    static const long cn[] = { 1, 3, 1003, 4096L * 512 + 3 };
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 5; j++) case_convert(cn[i], off[j][0], off[j][1]);
  }
  static const long cs[][2] = { { 1, 1 }, { 63, 37 }, { 64, 300 }, { 65, 129 }, { 8193, 256 } };
  for (int i = 0; i < 5; i++) case_colsum(cs[i][0], (int)cs[i][1]);
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) case_gemm_acc(ta, tb, 70, 33, 129);
  case_gemm_acc(1, 0, 256, 512, 4096);   /* a weight gradient: [out, in] from [tokens, out] and [tokens, in] */
  case_grad_flush(1); case_grad_flush(100003);
  case_elementwise(1, 1, 1.0); case_elementwise(37, 129, 1.0); case_elementwise(300, 257, 0.37);
  case_sumsq(1, -1, 0, 0); case_sumsq(5, -1, 0, 0); case_sumsq(4096 * 3 + 17, -1, 0, 0);
  case_sumsq(1000003, -1, 0, 0); case_sumsq(0, -1, 0, 0);
  case_sumsq(4096 * 3 + 17, 4100, 0, 0); case_sumsq(4096 * 3 + 17, 4096 * 3 + 9, 1, 0);
  if (C5_USE_DOUBLE) case_sumsq(10000, -1, 0, 1);
  case_adamw(1, 0.1); case_adamw(100003, 0.1); case_adamw(5000, 0);
  for (int k = 0; k < 3; k++) {
    case_init_fill(k, 1);
    case_init_fill(k, 1000003);
  }
  case_embedding(1, 1, 0, 1); case_embedding(3, 37, 5, 70); case_embedding(8, 512, 0, 256);
  case_xent(1, 256, 1.0); case_xent(200, 256, 0.7); case_xent(4097, 256, 0.85); case_xent(130, 7, 0.5);
  {
    c5k_ctx c = gctx();
    c5_real y;
    T_FAILS(c5k_cuda_ops.init_fill(&c, 7, 1, 1.0, 1, &y), C5_ERR_ARG, "init_fill: unknown kind 7");
  }
  goto done;
fail:
  nfail++;
done:
  printf("test_cuda_rows: %d failure(s)%s\n", nfail - before, nfail ? "" : ", all PASS");
  c5_backend_destroy(&gpu);
  MPI_Finalize();
  return nfail ? 1 : 0;
}
