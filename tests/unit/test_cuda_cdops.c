/* test_cuda_cdops.c - the per-step coordinate-descent and top-k ops of the
   CUDA backend (cd_sumexp, cd_maxsumexp, cd_output, cd_gdot, cd_backward,
   topk_hist, topk_count_eq, topk_select: what lib/cd.c and lib/topk.c call
   between collectives when rows are sharded or ragged) against the CPU ops
   on the same ragged rows: lengths 1, 0, off the chunk, past two chunks of
   C5K_CHUNK, with gaps between rows (elements no row holds must stay as
   they were), with and without masks, a row with a = +inf (the count pass).
   Real outputs norm-wise within 1e-12 (double build) or 1e-5 (single);
   infinities (a fully masked or empty row's max) must match exactly; counts,
   histograms and positions identical (top-k keys are the CPU's 64-bit images
   of (double)v, values quantized so that many tie, -0 meeting +0). Outputs
   are poisoned first; each GPU op runs twice and must give the same bits.
   One line per case: op, rows, what, error, PASS/FAIL. Exits 77 without a
   GPU. Built with -DC5_CDOPS_SELFTEST the "GPU" side is the CPU table on host
   memory: the test's own logic, checked where no GPU is. */
#include <stdint.h>
#include <limits.h>
#include "cuda_util.h"
#include "kernels.h"
#include "backend.h"
#include "cuda/cuda.h"

static const double tol = C5_USE_DOUBLE ? 1e-12 : 1e-5;
static c5_backend *gpu;
static unsigned long long seed = 7;
static int nfail;

#ifdef C5_CDOPS_SELFTEST
#define GOPS c5k_cpu_ops
static double *self_work;
static long self_wl;
#else
#define GOPS c5k_cuda_ops
#endif

/* ---- device buffers of a run: all freed at its end ---- */
#define MAXD 32
static void *dlist[MAXD];
static int nd;

/* a device copy of host (bytes); all-ones bits (NaN) when host is NULL: an output the op must write */
static void *D(const void *host, size_t bytes)
{
  void *p = NULL, *h = NULL;
  if (bytes == 0) bytes = 1;
  if (!host && (h = malloc(bytes))) memset(h, 0xff, bytes);
  if (!host) host = h;
  if (host && nd < MAXD) {
#ifdef C5_CDOPS_SELFTEST
    if ((p = malloc(bytes))) memcpy(p, host, bytes);
#else
    p = t_dev_upload(gpu, host, bytes);
#endif
  }
  free(h);
  if (p) dlist[nd++] = p;
  return p;
}
static void Dfree(void)
{
  while (nd > 0) {
#ifdef C5_CDOPS_SELFTEST
    free(dlist[--nd]);
#else
    c5_backend_free(gpu, dlist[--nd]);
#endif
  }
}
static void *H(const void *d, size_t bytes)
{
  void *h = malloc(bytes ? bytes : 1);
#ifdef C5_CDOPS_SELFTEST
  memcpy(h, d, bytes);
#else
  if (bytes > 0 && c5_backend_memcpy(gpu, h, d, bytes) != C5_OK) {
    fprintf(stderr, "download of %zu bytes: %s\n", bytes, c5_last_error());
    memset(h, 0xff, bytes);
  }
#endif
  return h;
}
static c5k_ctx gctx(void)
{
#ifdef C5_CDOPS_SELFTEST
  return (c5k_ctx){ .work = self_work, .work_len = self_wl };
#else
  return c5_backend_ctx(gpu, NULL, 0);
#endif
}

/* ---- ragged rows with gaps: row r at off[r], gap r + 3 elements before it ---- */
typedef struct {
  const char *name;
  long rows, total;
  long off[8], len[8], cstart[9];
  c5k_rows R;
} layout;

static void layout_make(layout *L, const char *name, long rows, const long *len)
{
  L->name = name;
  L->rows = rows;
  long at = 0;
  for (long r = 0; r < rows; r++) {
    at += r + 3;
    L->off[r] = at;
    L->len[r] = len[r];
    at += len[r];
  }
  L->total = at + 5;
  c5k_rows_plan(rows, L->len, L->cstart);
  L->R = (c5k_rows){ .rows = rows, .off = L->off, .len = L->len, .cstart = L->cstart };
}

static int in_rows(const layout *L, long i)
{
  for (long r = 0; r < L->rows; r++)
    if (i >= L->off[r] && i < L->off[r] + L->len[r]) return 1;
  return 0;
}

/* ---- comparisons ---- */
static int cur_masked;
static void report(const char *op, const layout *L, const char *what, double e, double bound, int same)
{
  char sh[64];
  snprintf(sh, sizeof sh, "%s%s", L->name, cur_masked ? " masked" : "");
  int ok = e <= bound && same;
  printf("%-14s %-26s %-12s err %.3e (tol %.0e)%s %s\n", op, sh, what, e, bound, same ? "" : " runs differ",
         ok ? "PASS" : "FAIL");
  fflush(stdout);
  if (!ok) nfail++;
}

/* Norm-wise error of a against b; equal values (infinities included) add nothing, a
   non-finite difference makes it infinite, NaN makes it NaN. */
static double err_dbl(const double *a, const double *b, long n)
{
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) {
    if (isnan(a[i]) || isnan(b[i])) return NAN;
    if (a[i] != b[i]) num += (a[i] - b[i]) * (a[i] - b[i]);
    if (isfinite(b[i])) den += b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* A real output over the rows' elements; elements outside the rows must keep their poison bits on the GPU. */
static double err_rows(const layout *L, const c5_real *g, const c5_real *cpu)
{
  double *x = malloc(L->total * sizeof *x), *y = malloc(L->total * sizeof *y);
  long n = 0;
  int gaps_ok = 1;
  for (long i = 0; i < L->total; i++) {
    if (in_rows(L, i)) { x[n] = (double)g[i]; y[n++] = (double)cpu[i]; }
    else if (memcmp(&g[i], &cpu[i], sizeof *g)) gaps_ok = 0;
  }
  double e = gaps_ok ? err_dbl(x, y, n) : INFINITY;
  free(x);
  free(y);
  return e;
}

static int same_long(const long *a, const long *b, long n) { return memcmp(a, b, n * sizeof *a) == 0; }

/* ---- inputs ---- */
static c5_real *scores(long n, double scale, int quant)
{
  c5_real *x = malloc(n * sizeof *x);
  for (long i = 0; i < n; i++) {
    double v = scale * t_normal(&seed);
    if (quant) v = round(v * quant) / quant;
    x[i] = (c5_real)v;
    if (x[i] == 0 && (i & 1)) x[i] = (c5_real)-0.0;
  }
  return x;
}
static uint8_t *mask_of(long n, double keep)
{
  uint8_t *m = malloc(n);
  for (long i = 0; i < n; i++) m[i] = t_uniform(&seed) < keep;
  return m;
}
static c5_real *poison(long n)
{
  c5_real *x = malloc(n * sizeof *x);
  memset(x, 0xff, n * sizeof *x);   /* NaN as double and as float: D(NULL)'s bits */
  return x;
}

/* ---- coordinate descent ---- */
static void cd_case(const layout *L, int masked)
{
  const long N = L->total, rows = L->rows, wl = c5k_work_len(&L->R);
  const int T = 3;
  c5_real *s = scores(N, 2.0, 0), *gy = scores(N, 1.0, 0);
  uint8_t *m = masked ? mask_of(N, 0.7) : NULL;
  double *a = malloc(rows * sizeof *a), *aT = malloc(rows * T * sizeof *aT), *lse = malloc(rows * T * sizeof *lse);
  double *ga = malloc(rows * T * sizeof *ga), ie[4] = { 0.5, 3.0, 7.0, 10.0 };
  double *work = malloc(wl * sizeof *work);
  c5_real *y = poison(N), *ds = poison(N);
  double *sum = malloc(rows * 8), *nab = malloc(rows * 8), *pair = malloc(2 * rows * 8), *dot = malloc(rows * 8);
  c5_real *gyo[2] = { 0 }, *gds[2] = { 0 };
  double *gsum[2] = { 0 }, *gnab[2] = { 0 }, *gpair[2] = { 0 }, *gpair2[2] = { 0 }, *gdot[2] = { 0 };
  double *pair2 = malloc(2 * rows * 8);
  for (long r = 0; r < rows; r++) {
    a[r] = r == 1 ? INFINITY : 0.5 * t_normal(&seed);   /* row 1: the first iteration's count pass */
    for (int t = 0; t < T; t++) {
      aT[r * T + t] = 0.5 * t_normal(&seed);
      lse[r * T + t] = 2 * t_uniform(&seed);
      ga[r * T + t] = t == 1 && r == 0 ? 0.0 : t_normal(&seed);   /* a zero dL/da_t: its term is skipped */
    }
  }
  if (masked && rows > 2) memset(m + L->off[2], 0, L->len[2]);   /* a fully masked row */
  c5k_ctx cpu = { .work = work, .work_len = wl };
  /* the CPU: sums at the first and a later iteration's scale, the fallback at a scale where sums underflow */
  T_OK(c5k_cpu_ops.cd_sumexp(&cpu, &L->R, s, m, a, ie[1], sum, nab));
  T_OK(c5k_cpu_ops.cd_maxsumexp(&cpu, &L->R, s, m, a, ie[1], pair));
  T_OK(c5k_cpu_ops.cd_maxsumexp(&cpu, &L->R, s, m, a, 1e4, pair2));
  T_OK(c5k_cpu_ops.cd_output(&cpu, &L->R, s, m, a, ie[2], y));
  T_OK(c5k_cpu_ops.cd_gdot(&cpu, &L->R, s, m, a, ie[2], y, gy, dot));
  T_OK(c5k_cpu_ops.cd_backward(&cpu, &L->R, s, m, T, aT, lse, ie, ga, y, gy, ds));
#ifdef C5_CDOPS_SELFTEST
  self_work = work;
  self_wl = wl;
#endif
  for (int rep = 0; rep < 2; rep++) {
    c5_real *dS = D(s, N * sizeof *s), *dGY = D(gy, N * sizeof *gy), *dY = D(y, N * sizeof *y);
    c5_real *dYO = D(NULL, N * sizeof *y), *dDS = D(NULL, N * sizeof *ds);
    uint8_t *dM = m ? D(m, N) : NULL;
    double *dA = D(a, rows * 8), *dAT = D(aT, rows * T * 8), *dL = D(lse, rows * T * 8), *dGA = D(ga, rows * T * 8);
    double *dIE = D(ie, sizeof ie), *dSUM = D(NULL, rows * 8), *dNAB = D(NULL, rows * 8), *dP = D(NULL, 2 * rows * 8);
    double *dP2 = D(NULL, 2 * rows * 8), *dDOT = D(NULL, rows * 8);
    T_CHECK(dS && dGY && dY && dYO && dDS && (!m || dM) && dA && dAT && dL && dGA && dIE && dSUM && dNAB && dP && dP2
            && dDOT, "device buffers");
    c5k_ctx c = gctx();
    T_OK(GOPS.cd_sumexp(&c, &L->R, dS, dM, dA, ie[1], dSUM, dNAB));
    T_OK(GOPS.cd_maxsumexp(&c, &L->R, dS, dM, dA, ie[1], dP));
    T_OK(GOPS.cd_maxsumexp(&c, &L->R, dS, dM, dA, 1e4, dP2));
    T_OK(GOPS.cd_output(&c, &L->R, dS, dM, dA, ie[2], dYO));
    /* gdot and the backward read the CPU's y: each op is compared on the same inputs */
    T_OK(GOPS.cd_gdot(&c, &L->R, dS, dM, dA, ie[2], dY, dGY, dDOT));
    T_OK(GOPS.cd_backward(&c, &L->R, dS, dM, T, dAT, dL, dIE, dGA, dY, dGY, dDS));
    gsum[rep] = H(dSUM, rows * 8); gnab[rep] = H(dNAB, rows * 8); gpair[rep] = H(dP, 2 * rows * 8);
    gpair2[rep] = H(dP2, 2 * rows * 8); gdot[rep] = H(dDOT, rows * 8);
    gyo[rep] = H(dYO, N * sizeof *y); gds[rep] = H(dDS, N * sizeof *ds);
    Dfree();
  }
#define SAME(x, n) (memcmp(x[0], x[1], (n)) == 0)
  report("cd_sumexp", L, "sum", err_dbl(gsum[0], sum, rows), tol, SAME(gsum, rows * 8));
  report("cd_sumexp", L, "nabove", err_dbl(gnab[0], nab, rows), 0, SAME(gnab, rows * 8));
  report("cd_maxsumexp", L, "pair", err_dbl(gpair[0], pair, 2 * rows), tol, SAME(gpair, 2 * rows * 8));
  report("cd_maxsumexp", L, "pair 1/e=1e4", err_dbl(gpair2[0], pair2, 2 * rows), tol, SAME(gpair2, 2 * rows * 8));
  report("cd_output", L, "y", err_rows(L, gyo[0], y), tol, SAME(gyo, N * sizeof *y));
  report("cd_gdot", L, "dot", err_dbl(gdot[0], dot, rows), tol, SAME(gdot, rows * 8));
  report("cd_backward", L, "ds", err_rows(L, gds[0], ds), tol, SAME(gds, N * sizeof *ds));
  goto done;
fail:
  printf("%-14s %-26s FAIL (an op or a buffer failed: see above)\n", "cd", L->name);
  nfail++;
done:
  Dfree();
  for (int r = 0; r < 2; r++) { free(gyo[r]); free(gds[r]); free(gsum[r]); free(gnab[r]); free(gpair[r]); free(gpair2[r]); free(gdot[r]); }
  free(s); free(gy); free(m); free(a); free(aT); free(lse); free(ga); free(work); free(y); free(ds);
  free(sum); free(nab); free(pair); free(pair2); free(dot);
}

/* ---- top-k ---- */
static void topk_case(const layout *L, int masked)
{
  const long N = L->total, rows = L->rows, wl = c5k_work_len(&L->R);
  long cap = 1;
  for (long r = 0; r < rows; r++) cap = L->len[r] > cap ? L->len[r] : cap;
  c5_real *v = scores(N, 1.0, 4);   /* steps of 1/4: many ties */
  uint8_t *m = masked ? mask_of(N, 0.6) : NULL;
  uint64_t *pre = malloc(rows * sizeof *pre), *key = malloc(rows * sizeof *key);
  long *take = malloc(rows * sizeof *take), *work = malloc(wl * sizeof(double));
  long *hist = malloc(8 * 256 * rows * sizeof *hist), *ceq = malloc(rows * sizeof *ceq);
  long *cnt = malloc(rows * sizeof *cnt), *pos = malloc(rows * cap * sizeof *pos);
  long *ghist[2] = { 0 }, *gceq[2] = { 0 }, *gcnt[2] = { 0 }, *gpos[2] = { 0 };
  for (long r = 0; r < rows; r++) {
    /* a prefix and a threshold from an element of the row (a masked one gives key 0: the masked count) */
    long j = L->len[r] > 0 ? L->off[r] + (long)(t_uniform(&seed) * L->len[r]) : 0;
    pre[r] = L->len[r] > 0 ? c5k_order_key(v[j], !m || m[j]) : 0;
    key[r] = pre[r];
    take[r] = r % 3 == 0 ? 2 : (r % 3 == 1 ? LONG_MAX : 0);
  }
  for (long i = 0; i < rows * cap; i++) pos[i] = -7;
  c5k_ctx cpu = { .work = (double *)work, .work_len = wl };
  for (int sh = 56, q = 0; sh >= 0; sh -= 8, q++)
    T_OK(c5k_cpu_ops.topk_hist(&cpu, &L->R, v, m, pre, sh, hist + q * 256 * rows));
  T_OK(c5k_cpu_ops.topk_count_eq(&cpu, &L->R, v, m, key, ceq));
  T_OK(c5k_cpu_ops.topk_select(&cpu, &L->R, v, m, key, take, cap, cnt, pos));
#ifdef C5_CDOPS_SELFTEST
  self_work = (double *)work;
  self_wl = wl;
#endif
  for (int rep = 0; rep < 2; rep++) {
    long *pz = malloc(rows * cap * sizeof *pz), *hz = malloc(256 * rows * sizeof *hz);
    for (long i = 0; i < rows * cap; i++) pz[i] = -7;
    for (long i = 0; i < 256 * rows; i++) hz[i] = -3;   /* hist is overwritten */
    c5_real *dV = D(v, N * sizeof *v);
    uint8_t *dM = m ? D(m, N) : NULL;
    uint64_t *dPRE = D(pre, rows * 8), *dKEY = D(key, rows * 8);
    long *dTAKE = D(take, rows * 8), *dH = D(hz, 256 * rows * 8), *dCEQ = D(hz, rows * 8), *dCNT = D(hz, rows * 8);
    long *dPOS = D(pz, rows * cap * 8);
    free(pz);
    free(hz);
    T_CHECK(dV && (!m || dM) && dPRE && dKEY && dTAKE && dH && dCEQ && dCNT && dPOS, "device buffers");
    c5k_ctx c = gctx();
    ghist[rep] = malloc(8 * 256 * rows * sizeof(long));
    for (int sh = 56, q = 0; sh >= 0; sh -= 8, q++) {
      T_OK(GOPS.topk_hist(&c, &L->R, dV, dM, dPRE, sh, dH));
      long *h = H(dH, 256 * rows * 8);
      memcpy(ghist[rep] + q * 256 * rows, h, 256 * rows * 8);
      free(h);
    }
    T_OK(GOPS.topk_count_eq(&c, &L->R, dV, dM, dKEY, dCEQ));
    T_OK(GOPS.topk_select(&c, &L->R, dV, dM, dKEY, dTAKE, cap, dCNT, dPOS));
    gceq[rep] = H(dCEQ, rows * 8); gcnt[rep] = H(dCNT, rows * 8); gpos[rep] = H(dPOS, rows * cap * 8);
    Dfree();
  }
  report("topk_hist", L, "8 rounds", same_long(ghist[0], hist, 8 * 256 * rows) ? 0 : 1, 0,
         SAME(ghist, 8 * 256 * rows * 8));
  report("topk_count_eq", L, "count", same_long(gceq[0], ceq, rows) ? 0 : 1, 0, SAME(gceq, rows * 8));
  report("topk_select", L, "count", same_long(gcnt[0], cnt, rows) ? 0 : 1, 0, SAME(gcnt, rows * 8));
  report("topk_select", L, "pos", same_long(gpos[0], pos, rows * cap) ? 0 : 1, 0, SAME(gpos, rows * cap * 8));
  goto done;
fail:
  printf("%-14s %-26s FAIL (an op or a buffer failed: see above)\n", "topk", L->name);
  nfail++;
done:
  Dfree();
  for (int r = 0; r < 2; r++) { free(ghist[r]); free(gceq[r]); free(gcnt[r]); free(gpos[r]); }
  free(v); free(m); free(pre); free(key); free(take); free(work); free(hist); free(ceq); free(cnt); free(pos);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
#ifndef C5_CDOPS_SELFTEST
  gpu = t_cuda_backend_or_skip();
#endif
  const long C = C5K_CHUNK;
  static const long l5[] = { 1, 2 * C + 777, 300, 0, C }, l3[] = { 5000, 1, 3 * C + 5 },
                    l4[] = { 65536, 40000 + 3, 70001, 1 };
  layout L[3];
  layout_make(&L[0], "1,2C+777,300,0,C", 5, l5);
  layout_make(&L[1], "5000,1,3C+5", 3, l3);
  layout_make(&L[2], "64K,40003,70001,1", 4, l4);
  for (int i = 0; i < 3; i++)
    for (int masked = 0; masked < 2; masked++) {
      cur_masked = masked;
      cd_case(&L[i], masked);
      topk_case(&L[i], masked);
    }
  printf("%s: %d failed\n", nfail ? "FAIL" : "PASS", nfail);
#ifndef C5_CDOPS_SELFTEST
  c5_backend_destroy(&gpu);
#endif
  MPI_Finalize();
  return nfail ? 1 : 0;
}
