/* test_cuda_local_attn.c - sliding-window attention (local_attn_forward,
   local_attn_backward) on the CUDA backend against the CPU ops
   (c5k_cpu_ops) on the same inputs, norm-wise: 1e-12 in the double build,
   1e-5 in the single build. q, k, v interleaved in one buffer with a
   padded leading dimension (as lib/attn_local.c lays them out), o and dout
   with their own padded stride; every output poisoned with NaN first (the
   stride gaps must stay NaN: nothing outside the heads is written). Cases:
   windows 2, 8, 128, 512, causal or not, exact_windowsize on/off, look
   1/1, 1/0, 2/0, n a multiple of the window and not, no mask, a random
   mask, and a mask with dead stretches (uniform rows, in window 0 with
   out-of-range slots too), dim_head 16, 33, 64, 128, heads 1 and 4, one
   token, and n = 8192, w = 128, H = 8, dh = 64. A second run must give the
   same bits (no atomics: fixed-order sums). In the double build, central
   differences of the GPU forward check the GPU backward on a small case.
   In the single build, the same comparisons in bf16 matmul mode
   (c5_backend_set_matmul): head dims that are multiples of 8 take the
   cuBLASLt path or, for dim_head 64 and 128 with windows a multiple of 64,
   the flash kernels (their own cases: exact or causal, ragged n, n below
   a window, pad keys, uniform rows; the backward's D from the forward's o,
   which the GPU backward is given; strides of whole 16 bytes, which the
   flash kernels stage by cp.async, and odd ones, which they load plainly),
   both of which round q, k, v, P, dout,
   dS to bf16, at 2e-2 (the bf16 bound of test_cuda_block); dim_head 33
   keeps the SIMT kernels
   and 1e-5; the large case (n 32768, H 8, dh 64, look 1/1) runs in both
   modes (and in bf16 once more with lib/attn_local.c's aligned strides),
   its bf16 error must exceed 1e-5 (the path was taken), and its timing
   lines show the speedup.
   One line per case: shape, errors, PASS/FAIL. Exits 77 without a GPU. */
#include <stdint.h>
#include <time.h>
#include "cuda_util.h"
#include "kernels.h"
#include "backend.h"
#include "cuda/cuda.h"

static const double tol = C5_USE_DOUBLE ? 1e-12 : 1e-5;

typedef struct {
  long batch, n, w;
  int H, dh, lb, lf, causal, exact;
  int mask_kind;   /* 0 none, 1 random, 2 random + dead stretches (uniform rows) */
  int must_round;  /* bf16 mode: an error above 1e-5 required (the cuBLASLt path was taken) */
  int aligned;     /* strides of whole 16 bytes (lib/attn_local.c's layout): the flash kernels' cp.async staging */
} lcase;

static c5k_local_attn shape_of(const lcase *c)
{
  c5k_local_attn L = { .batch = c->batch, .n = c->n, .heads = c->H, .dim_head = c->dh, .window = c->w,
                       .look_backward = c->lb, .look_forward = c->lf, .causal = c->causal,
                       .exact_windowsize = c->exact, .scale = 1.0 / sqrt((double)c->dh),
                       .chunk = c->lb + c->lf > 2 ? c->lb + c->lf : 2 };
  return L;
}

static double err_of(const c5_real *got, const c5_real *want, long rows, long cols, long ld, long off, double *a,
                     double *b)
{
  for (long r = 0; r < rows; r++)
    for (long j = 0; j < cols; j++) {
      a[r * cols + j] = (double)got[r * ld + off + j];
      b[r * cols + j] = (double)want[r * ld + off + j];
    }
  return t_normwise(a, b, rows * cols);
}

/* Elements outside [off, off + cols) of every row (the stride gaps) still NaN. */
static int gaps_poisoned(const c5_real *x, long rows, long ld, long off, long cols)
{
  for (long r = 0; r < rows; r++)
    for (long j = 0; j < ld; j++)
      if ((j < off || j >= off + cols) && !isnan((double)x[r * ld + j])) return 0;
  return 1;
}

static int run(c5_backend *gpu, const lcase *c, c5_matmul mm)
{
  const c5k_local_attn L = shape_of(c);
  const long rows = c->batch * c->n, HD = (long)c->H * c->dh;
  const long ldqkv = 3 * HD + (c->aligned ? 4 : 5), ldo = HD + (c->aligned ? 4 : 3);
  const long nst = c->batch * c->H * c->n, nqkv = rows * ldqkv, no = rows * ldo;
  const long work_len = c5k_local_attn_work(&L);
  int ok = 0;
  /* bf16 mode takes the cuBLASLt products or the flash kernels for dim_head a multiple of 8 (attn_local.cu) */
  const int tc = mm == C5_MATMUL_BF16 && c->dh % 8 == 0;
  const double tl = tc ? 2e-2 : tol;
  const char *mode = mm == C5_MATMUL_BF16 ? " bf16" : "";
  unsigned long long seed = 77 + c->n * 13 + c->w * 7 + c->dh * 3 + c->causal + 2 * c->exact + 4 * c->lf + c->mask_kind;
  c5_real *qkv = malloc(nqkv * sizeof *qkv), *dout = malloc(no * sizeof *dout);
  c5_real *o = malloc(no * sizeof *o), *og = malloc(no * sizeof *og), *o2 = malloc(no * sizeof *o2);
  c5_real *dqkv = malloc(nqkv * sizeof *dqkv), *dg = malloc(nqkv * sizeof *dg), *d2 = malloc(nqkv * sizeof *d2);
  c5_real *nanq = malloc(nqkv * sizeof *nanq);
  double *rmax = malloc(nst * sizeof *rmax), *rinv = malloc(nst * sizeof *rinv);
  double *rmaxg = malloc(nst * sizeof *rmaxg), *rinvg = malloc(nst * sizeof *rinvg), *st2 = malloc(2 * nst * sizeof *st2);
  double *work = malloc((work_len > 0 ? work_len : 1) * sizeof *work);
  double *a = malloc((nqkv > 2 * nst ? nqkv : 2 * nst) * sizeof *a), *b = malloc((nqkv > 2 * nst ? nqkv : 2 * nst) * sizeof *b);
  uint8_t *uni = malloc(nst), *unig = malloc(nst), *uni2 = malloc(nst), *mask = c->mask_kind ? malloc(rows) : NULL;
  void *qkv_d = NULL, *dout_d = NULL, *o_d = NULL, *dqkv_d = NULL, *rmax_d = NULL, *rinv_d = NULL, *uni_d = NULL;
  void *mask_d = NULL;
  T_CHECK(qkv && dout && o && og && o2 && dqkv && dg && d2 && nanq && rmax && rinv && rmaxg && rinvg && st2 && work &&
          a && b && uni && unig && uni2 && (!c->mask_kind || mask), "out of memory");
  for (long i = 0; i < nqkv; i++) {
    qkv[i] = (c5_real)t_normal(&seed);
    nanq[i] = (c5_real)NAN;
  }
  for (long i = 0; i < no; i++) dout[i] = (c5_real)t_normal(&seed);
  if (mask) {
    for (long i = 0; i < rows; i++) mask[i] = t_uniform(&seed) < 0.8;
    if (c->mask_kind == 2 && c->batch > 1) {   /* sequence 1: window 0 sees only dead keys, and a stretch inside */
      long dead0 = (c->lf + 1) * c->w, s = 3 * c->w, dead1 = (c->lb + c->lf + 1) * c->w + c->w;
      for (long p = 0; p < dead0 && p < c->n; p++) mask[c->n + p] = 0;
      for (long p = s; p < s + dead1 && p < c->n; p++) mask[c->n + p] = 0;
    }
  }
  /* the CPU */
  {
    c5k_ctx cpu = { .work = work, .work_len = work_len };
    T_OK(c5k_cpu_ops.local_attn_forward(&cpu, &L, qkv, qkv + HD, qkv + 2 * HD, ldqkv, mask, o, ldo, rmax, rinv, uni));
    T_OK(c5k_cpu_ops.local_attn_backward(&cpu, &L, qkv, qkv + HD, qkv + 2 * HD, ldqkv, mask, rmax, rinv, uni, o,
                                         dout, ldo, dqkv, dqkv + HD, dqkv + 2 * HD));
  }
  long nuni = 0;
  for (long i = 0; i < nst; i++) nuni += uni[i];
  if (c->mask_kind == 2 && c->batch > 1) T_CHECK(nuni > 0, "the dead stretches made no uniform row");
  /* the GPU, twice */
  T_OK(c5_backend_set_matmul(gpu, mm));
  memset(uni2, 0xff, nst);
  T_CHECK((qkv_d = t_dev_upload(gpu, qkv, nqkv * sizeof *qkv)) && (dout_d = t_dev_upload(gpu, dout, no * sizeof *dout)) &&
          (o_d = t_dev_upload(gpu, nanq, no * sizeof *o)) && (dqkv_d = t_dev_upload(gpu, nanq, nqkv * sizeof *dqkv)) &&
          (rmax_d = t_dev_upload(gpu, nanq, nst * sizeof(double))) && (rinv_d = t_dev_upload(gpu, nanq, nst * sizeof(double))) &&
          (uni_d = t_dev_upload(gpu, uni2, nst)) && (!mask || (mask_d = t_dev_upload(gpu, mask, rows))),
          "device buffers");
  for (int rep = 0; rep < 2; rep++) {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    const c5_real *q = qkv_d, *k = (const c5_real *)qkv_d + HD, *v = (const c5_real *)qkv_d + 2 * HD;
    c5_real *dq = dqkv_d;
    T_OK(c5k_cuda_ops.local_attn_forward(&ctx, &L, q, k, v, ldqkv, mask_d, o_d, ldo, rmax_d, rinv_d, uni_d));
    T_OK(c5k_cuda_ops.local_attn_backward(&ctx, &L, q, k, v, ldqkv, mask_d, rmax_d, rinv_d, uni_d, o_d, dout_d, ldo,
                                          dq, dq + HD, dq + 2 * HD));
    T_OK(c5_backend_memcpy(gpu, rep ? o2 : og, o_d, no * sizeof *o));
    T_OK(c5_backend_memcpy(gpu, rep ? d2 : dg, dqkv_d, nqkv * sizeof *dqkv));
    T_OK(c5_backend_memcpy(gpu, rep ? st2 : rmaxg, rmax_d, nst * sizeof(double)));
    T_OK(c5_backend_memcpy(gpu, rep ? st2 + nst : rinvg, rinv_d, nst * sizeof(double)));
    T_OK(c5_backend_memcpy(gpu, rep ? uni2 : unig, uni_d, nst));
  }
  {
    const int same = memcmp(o2, og, no * sizeof *o) == 0 && memcmp(d2, dg, nqkv * sizeof *dg) == 0 &&
                     memcmp(st2, rmaxg, nst * sizeof(double)) == 0 && memcmp(st2 + nst, rinvg, nst * sizeof(double)) == 0 &&
                     memcmp(uni2, unig, nst) == 0;
    const int uni_same = memcmp(unig, uni, nst) == 0;
    const int gaps = gaps_poisoned(og, rows, ldo, 0, HD) && gaps_poisoned(dg, rows, ldqkv, 0, 3 * HD);
    const double eo = err_of(og, o, rows, HD, ldo, 0, a, b);
    const double eq = err_of(dg, dqkv, rows, HD, ldqkv, 0, a, b);
    const double ek = err_of(dg, dqkv, rows, HD, ldqkv, HD, a, b);
    const double ev = err_of(dg, dqkv, rows, HD, ldqkv, 2 * HD, a, b);
    for (long i = 0; i < nst; i++) {   /* both stats in one norm */
      a[i] = rmaxg[i]; b[i] = rmax[i];
      a[nst + i] = rinvg[i]; b[nst + i] = rinv[i];
    }
    const double es = t_normwise(a, b, 2 * nst);
    const double emax = fmax(fmax(eo, eq), fmax(ek, ev));
    const int rounded = !(tc && c->must_round) || emax > 1e-5;
    const int pass = same && uni_same && gaps && rounded && eo <= tl && eq <= tl && ek <= tl && ev <= tl && es <= tl;
    printf("local_attn%s b %ld n %ld w %ld H %d dh %d look %d/%d%s%s%s mask %d (uniform rows %ld): o %.3e stats %.3e "
           "dq %.3e dk %.3e dv %.3e%s%s%s%s (tol %.0e) %s\n", mode, c->batch, c->n, c->w, c->H, c->dh, c->lb, c->lf,
           c->causal ? " causal" : "", c->exact ? " exact" : "", c->aligned ? " aligned" : "", c->mask_kind, nuni, eo, es, eq, ek, ev,
           uni_same ? "" : ", uni DIFFERS", same ? "" : ", second run DIFFERS", gaps ? "" : ", stride gaps WRITTEN",
           rounded ? "" : ", no bf16 rounding (the cuBLASLt path was not taken)", tl, pass ? "PASS" : "FAIL");
    ok = pass;
  }
  if (rows >= 2048) {   /* timing, for the record (not a check): mean of 5 forward + backward pairs */
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    const c5_real *q = qkv_d, *k = (const c5_real *)qkv_d + HD, *v = (const c5_real *)qkv_d + 2 * HD;
    c5_real *dq = dqkv_d;
    struct timespec t0, t1, t2;
    double fwd = 0, bwd = 0;
    for (int rep = 0; rep < 5; rep++) {
      T_OK(c5_backend_sync(gpu));
      clock_gettime(CLOCK_MONOTONIC, &t0);
      T_OK(c5k_cuda_ops.local_attn_forward(&ctx, &L, q, k, v, ldqkv, mask_d, o_d, ldo, rmax_d, rinv_d, uni_d));
      T_OK(c5_backend_sync(gpu));
      clock_gettime(CLOCK_MONOTONIC, &t1);
      T_OK(c5k_cuda_ops.local_attn_backward(&ctx, &L, q, k, v, ldqkv, mask_d, rmax_d, rinv_d, uni_d, o_d, dout_d, ldo,
                                            dq, dq + HD, dq + 2 * HD));
      T_OK(c5_backend_sync(gpu));
      clock_gettime(CLOCK_MONOTONIC, &t2);
      fwd += (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
      bwd += (t2.tv_sec - t1.tv_sec) + 1e-9 * (t2.tv_nsec - t1.tv_nsec);
    }
    printf("local_attn time%s b %ld n %ld w %ld H %d dh %d look %d/%d%s: forward %.3f ms, backward %.3f ms\n", mode,
           c->batch, c->n, c->w, c->H, c->dh, c->lb, c->lf, c->aligned ? " aligned" : "", fwd / 5 * 1e3, bwd / 5 * 1e3);
  }
fail:
  c5_backend_set_matmul(gpu, C5_MATMUL_FP32);
  c5_backend_free(gpu, qkv_d); c5_backend_free(gpu, dout_d); c5_backend_free(gpu, o_d); c5_backend_free(gpu, dqkv_d);
  c5_backend_free(gpu, rmax_d); c5_backend_free(gpu, rinv_d); c5_backend_free(gpu, uni_d); c5_backend_free(gpu, mask_d);
  free(qkv); free(dout); free(o); free(og); free(o2); free(dqkv); free(dg); free(d2); free(nanq);
  free(rmax); free(rinv); free(rmaxg); free(rinvg); free(st2); free(work); free(a); free(b);
  free(uni); free(unig); free(uni2); free(mask);
  return ok;
}

#if C5_USE_DOUBLE
/* sum(o * dout) of the GPU forward at qkv (host), for central differences. */
static int gpu_loss(c5_backend *gpu, const c5k_local_attn *L, const c5_real *qkv, long nqkv, long ldqkv,
                    const c5_real *dout, long no, long ldo, void *qkv_d, void *o_d, void *st_d, void *mask_d,
                    double *loss)
{
  const long HD = (long)L->heads * L->dim_head, nst = L->batch * L->heads * L->n;
  c5_real *o = malloc(no * sizeof *o);
  c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
  const c5_real *q = qkv_d;
  int ok = 0;
  T_CHECK(o, "out of memory");
  T_OK(c5_backend_memcpy(gpu, qkv_d, qkv, nqkv * sizeof *qkv));
  T_OK(c5k_cuda_ops.local_attn_forward(&ctx, L, q, q + HD, q + 2 * HD, ldqkv, mask_d, o_d, ldo, st_d,
                                       (double *)st_d + nst, (uint8_t *)((double *)st_d + 2 * nst)));
  T_OK(c5_backend_memcpy(gpu, o, o_d, no * sizeof *o));
  *loss = 0;
  for (long r = 0; r < no / ldo; r++)
    for (long j = 0; j < HD; j++) *loss += o[r * ldo + j] * dout[r * ldo + j];
  ok = 1;
fail:
  free(o);
  return ok;
}

/* The GPU backward against central differences of the GPU forward (every
   q, k, v entry of a small masked case with uniform rows). */
static int fd_check(c5_backend *gpu)
{
  const lcase c = { .batch = 2, .n = 11, .w = 4, .H = 2, .dh = 16, .lb = 1, .lf = 1, .causal = 0, .exact = 1,
                    .mask_kind = 2 };
  const c5k_local_attn L = shape_of(&c);
  const long rows = c.batch * c.n, HD = (long)c.H * c.dh, ldqkv = 3 * HD + 1, ldo = HD + 2;
  const long nqkv = rows * ldqkv, no = rows * ldo, nst = c.batch * c.H * c.n;
  unsigned long long seed = 4242;
  c5_real *qkv = malloc(nqkv * sizeof *qkv), *dout = malloc(no * sizeof *dout), *g = malloc(nqkv * sizeof *g);
  double *an = malloc(3 * rows * HD * sizeof *an), *fd = malloc(3 * rows * HD * sizeof *fd);
  uint8_t mask[22];
  void *qkv_d = NULL, *o_d = NULL, *st_d = NULL, *mask_d = NULL, *dq_d = NULL, *dout_d = NULL;
  int ok = 0;
  const double h = 1e-6;
  T_CHECK(qkv && dout && g && an && fd, "out of memory");
  for (long i = 0; i < nqkv; i++) qkv[i] = t_normal(&seed);
  for (long i = 0; i < no; i++) dout[i] = t_normal(&seed);
  for (long i = 0; i < rows; i++) mask[i] = t_uniform(&seed) < 0.8;
  for (long p = 0; p < 8; p++) mask[c.n + p] = 0;   /* sequence 1, windows 0 and 1: uniform rows */
  T_CHECK((qkv_d = t_dev_upload(gpu, qkv, nqkv * sizeof *qkv)) && (o_d = t_dev_upload(gpu, dout, no * sizeof *dout)) &&
          (dout_d = t_dev_upload(gpu, dout, no * sizeof *dout)) && (dq_d = t_dev_upload(gpu, qkv, nqkv * sizeof *qkv)) &&
          (mask_d = t_dev_upload(gpu, mask, rows)), "device buffers");
  T_OK(c5_backend_alloc(gpu, 3 * nst * sizeof(double), &st_d));
  {
    double l0;
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    const c5_real *q = qkv_d;
    c5_real *dq = dq_d;
    T_CHECK(gpu_loss(gpu, &L, qkv, nqkv, ldqkv, dout, no, ldo, qkv_d, o_d, st_d, mask_d, &l0), "forward");
    T_OK(c5k_cuda_ops.local_attn_backward(&ctx, &L, q, q + HD, q + 2 * HD, ldqkv, mask_d, st_d, (double *)st_d + nst,
                                          (uint8_t *)((double *)st_d + 2 * nst), o_d, dout_d, ldo, dq, dq + HD,
                                          dq + 2 * HD));
    T_OK(c5_backend_memcpy(gpu, g, dq_d, nqkv * sizeof *g));
  }
  for (long r = 0; r < rows; r++)
    for (long j = 0; j < 3 * HD; j++) {
      const long i = r * ldqkv + j, e = r * 3 * HD + j;
      const c5_real x0 = qkv[i];
      double lp, lm;
      qkv[i] = x0 + h;
      T_CHECK(gpu_loss(gpu, &L, qkv, nqkv, ldqkv, dout, no, ldo, qkv_d, o_d, st_d, mask_d, &lp), "forward");
      qkv[i] = x0 - h;
      T_CHECK(gpu_loss(gpu, &L, qkv, nqkv, ldqkv, dout, no, ldo, qkv_d, o_d, st_d, mask_d, &lm), "forward");
      qkv[i] = x0;
      fd[e] = (lp - lm) / (2 * h);
      an[e] = g[i];
    }
  {
    const double err = t_normwise(an, fd, 3 * rows * HD);
    printf("local_attn finite differences of the GPU forward (b 2 n 11 w 4 H 2 dh 16 look 1/1 exact mask 2): "
           "dq dk dv %.3e (tol 1e-6) %s\n", err, err <= 1e-6 ? "PASS" : "FAIL");
    ok = err <= 1e-6;
  }
fail:
  c5_backend_free(gpu, qkv_d); c5_backend_free(gpu, o_d); c5_backend_free(gpu, st_d); c5_backend_free(gpu, mask_d);
  c5_backend_free(gpu, dq_d); c5_backend_free(gpu, dout_d);
  free(qkv); free(dout); free(g); free(an); free(fd);
  return ok;
}
#endif

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_backend *gpu = t_cuda_backend_or_skip();
  int ok = 1, idx = 0;
  static const long wins[3] = { 2, 8, 128 }, nfull[3] = { 36, 96, 384 }, nragged[3] = { 37, 101, 300 };
  static const int looks[2][2] = { { 1, 1 }, { 1, 0 } };
  for (int wi = 0; wi < 3; wi++)
    for (int causal = 0; causal < 2; causal++)
      for (int exact = 0; exact < 2; exact++)
        for (int li = 0; li < 2; li++, idx++) {
          lcase c = { .batch = 2, .w = wins[wi], .lb = looks[li][0], .lf = looks[li][1], .causal = causal,
                      .exact = exact };
          c.n = idx % 2 ? nragged[wi] : nfull[wi];
          c.H = idx % 4 < 2 ? 1 : 4;
          c.dh = (idx / 2) % 2 ? 64 : 16;
          c.mask_kind = idx % 3 == 0 ? 2 : idx % 3;
          ok &= run(gpu, &c, C5_MATMUL_FP32);
        }
  {
    static const lcase extra[] = {
      { .batch = 2, .n = 1, .w = 8, .H = 1, .dh = 16, .lb = 1, .lf = 0, .causal = 1 },                  /* one token */
      { .batch = 2, .n = 700, .w = 128, .H = 2, .dh = 33, .lb = 2, .lf = 0, .causal = 1, .mask_kind = 2 },
      { .batch = 1, .n = 1500, .w = 512, .H = 1, .dh = 128, .lb = 1, .lf = 0, .causal = 1, .mask_kind = 1 },
      { .batch = 2, .n = 1100, .w = 512, .H = 1, .dh = 128, .lb = 1, .lf = 1, .causal = 0, .mask_kind = 2 },
      { .batch = 2, .n = 8192, .w = 128, .H = 8, .dh = 64, .lb = 1, .lf = 0, .causal = 1, .mask_kind = 1 },
      { .batch = 2, .n = 4096, .w = 8, .H = 4, .dh = 16, .lb = 1, .lf = 0, .causal = 1, .mask_kind = 2 },
      { .batch = 2, .n = 1031, .w = 2, .H = 2, .dh = 64, .lb = 1, .lf = 1, .causal = 0, .exact = 1, .mask_kind = 2 },
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) ok &= run(gpu, &extra[i], C5_MATMUL_FP32);
  }
#if C5_USE_DOUBLE
  ok &= fd_check(gpu);
#else
  {   /* bf16 matmul mode: the cuBLASLt path (dim_head 33: the SIMT kernels, unchanged) */
    static const lcase bf[] = {
      { .batch = 2, .n = 384, .w = 128, .H = 4, .dh = 64, .lb = 1, .lf = 1, .mask_kind = 2 },
      { .batch = 2, .n = 300, .w = 128, .H = 1, .dh = 16, .lb = 1, .lf = 1, .mask_kind = 1 },   /* padded keys */
      { .batch = 2, .n = 700, .w = 128, .H = 2, .dh = 128, .lb = 1, .lf = 0, .causal = 1, .mask_kind = 2 },
      { .batch = 2, .n = 1100, .w = 512, .H = 1, .dh = 128, .lb = 1, .lf = 1, .mask_kind = 2 },
      { .batch = 2, .n = 1031, .w = 2, .H = 2, .dh = 64, .lb = 1, .lf = 1, .exact = 1, .mask_kind = 2 },
      { .batch = 2, .n = 101, .w = 8, .H = 4, .dh = 16, .lb = 2, .lf = 0, .causal = 1, .exact = 1 },
      { .batch = 2, .n = 1, .w = 8, .H = 1, .dh = 16, .lb = 1, .lf = 0, .causal = 1 },                  /* one token */
      { .batch = 2, .n = 37, .w = 8, .H = 2, .dh = 33, .lb = 1, .lf = 1, .mask_kind = 2 },              /* SIMT */
      { .batch = 3, .n = 259, .w = 32, .H = 3, .dh = 24, .lb = 2, .lf = 1, .mask_kind = 2 },            /* dh 8 k */
      { .batch = 2, .n = 45, .w = 4, .H = 2, .dh = 8, .lb = 0, .lf = 0, .exact = 1, .mask_kind = 1 },   /* L = 1 */
      { .batch = 1, .n = 200, .w = 16, .H = 2, .dh = 40, .lb = 0, .lf = 2, .mask_kind = 2 },            /* ahead only */
      { .batch = 2, .n = 8192, .w = 128, .H = 8, .dh = 64, .lb = 1, .lf = 0, .causal = 1, .mask_kind = 1, .must_round = 1 },
      /* the flash kernels (dim_head 64, 128, w a multiple of 64): the routed attention's light shape (exact, not
         causal), the autoregressive one (causal), n not a multiple of the window or of 64, n below one window,
         3 blocks a window, pad keys without a mask, rows that end uniform and rows uniform until a later block */
      { .batch = 2, .n = 300, .w = 128, .H = 2, .dh = 64, .lb = 1, .lf = 1, .exact = 1,
        .mask_kind = 2, .must_round = 1 },
      { .batch = 2, .n = 777, .w = 128, .H = 2, .dh = 128, .lb = 1, .lf = 1, .exact = 1,
        .mask_kind = 2, .must_round = 1 },
      { .batch = 3, .n = 50, .w = 64, .H = 2, .dh = 128, .lb = 1, .lf = 1, .mask_kind = 1, .must_round = 1 },
      { .batch = 2, .n = 1000, .w = 64, .H = 3, .dh = 64, .lb = 1, .lf = 0, .causal = 1, .exact = 1,
        .mask_kind = 2, .must_round = 1 },
      { .batch = 2, .n = 1000, .w = 64, .H = 2, .dh = 64, .lb = 1, .lf = 0, .causal = 1,
        .mask_kind = 2, .must_round = 1 },
      { .batch = 2, .n = 700, .w = 192, .H = 2, .dh = 64, .lb = 2, .lf = 1, .must_round = 1 },
      { .batch = 1, .n = 517, .w = 128, .H = 2, .dh = 128, .lb = 1, .lf = 0, .causal = 1, .must_round = 1 },
      { .batch = 2, .n = 640, .w = 64, .H = 1, .dh = 64, .lb = 0, .lf = 2, .mask_kind = 2, .must_round = 1 },
      /* the block's light shape (w 64, look 1/1, not causal) exact, ragged, with uniform rows: the backward's D
         from the forward's o (out-of-range slots in windows 0 and W - 1, pad keys, masked slots) */
      { .batch = 2, .n = 1000, .w = 64, .H = 2, .dh = 64, .lb = 1, .lf = 1, .exact = 1,
        .mask_kind = 2, .must_round = 1 },
      { .batch = 2, .n = 1000, .w = 64, .H = 2, .dh = 64, .lb = 1, .lf = 1, .mask_kind = 2, .must_round = 1 },
      /* strides of whole 16 bytes: the flash kernels' tiles staged by cp.async (the cases above: plain loads) */
      { .batch = 2, .n = 1000, .w = 64, .H = 2, .dh = 64, .lb = 1, .lf = 1, .exact = 1,
        .mask_kind = 2, .must_round = 1, .aligned = 1 },
      { .batch = 2, .n = 1000, .w = 64, .H = 3, .dh = 64, .lb = 1, .lf = 0, .causal = 1, .mask_kind = 2,
        .must_round = 1, .aligned = 1 },
      { .batch = 2, .n = 700, .w = 192, .H = 2, .dh = 64, .lb = 2, .lf = 1, .must_round = 1, .aligned = 1 },
      { .batch = 2, .n = 777, .w = 128, .H = 2, .dh = 128, .lb = 1, .lf = 1, .exact = 1,
        .mask_kind = 2, .must_round = 1, .aligned = 1 },
      { .batch = 3, .n = 50, .w = 64, .H = 2, .dh = 128, .lb = 1, .lf = 1, .mask_kind = 1, .must_round = 1,
        .aligned = 1 },
      { .batch = 2, .n = 640, .w = 64, .H = 1, .dh = 64, .lb = 0, .lf = 2, .mask_kind = 2, .must_round = 1,
        .aligned = 1 },
    };
    for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++) ok &= run(gpu, &bf[i], C5_MATMUL_BF16);
    /* n = 32768, w 128, 8 heads of 64 (the block has w 64: light_window_size / 2), in both modes: the speedup */
    const lcase big = { .batch = 1, .n = 32768, .w = 128, .H = 8, .dh = 64, .lb = 1, .lf = 1, .must_round = 1 };
    ok &= run(gpu, &big, C5_MATMUL_FP32);
    ok &= run(gpu, &big, C5_MATMUL_BF16);
    /* and with lib/attn_local.c's strides (whole 16 bytes): the flash kernels' cp.async staging, its timing */
    lcase bal = big;
    bal.aligned = 1;
    ok &= run(gpu, &bal, C5_MATMUL_BF16);
  }
#endif
  c5_backend_destroy(&gpu);
  MPI_Finalize();
  return ok ? 0 : 1;
}
