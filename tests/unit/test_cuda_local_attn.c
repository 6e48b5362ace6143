/* test_cuda_local_attn.c - sliding-window attention (local_attn_forward,
   local_attn_backward) on the CUDA backend against the CPU ops
   (c5k_cpu_ops) on the same inputs, norm-wise: 1e-12 in the double build,
   1e-5 in the single build. q, k, v interleaved in one buffer with a
   padded leading dimension (as lib/attn_local.c lays them out), o and dout
   with their own padded stride, the backward's dq written over o (as the
   module does: o read out after the forward) and dk | dv interleaved with a
   third padded stride; every output poisoned with NaN first (the
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
   lines show the speedup. Then bf16 tensors (c5k_local_attn.bf16 = 1,
   as lib/attn_local.c keeps them where local_attn_bf16 says so; dim_head
   64): q, k, v, dout rounded to bf16 on the host, the GPU's bf16 o, dq,
   dk, dv against the CPU on the same values (2e-2) and bit for bit
   against the f32 flash kernels' outputs rounded to bf16 (their stats
   too), strides of whole 16 bytes and odd ones; and, in both builds,
   local_attn_bf16's answers (1 only in bf16 mode, not exact, dim_head
   64, w a multiple of 64) and the ops' refusal of bf16 tensors elsewhere
   (C5_ERR_NOTIMPL).
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

/* The row strides (elements) of a case with tensors of es bytes an element: q|k|v, o (dout, dq), dk|dv; 16-byte
   gaps where aligned (whole 16 bytes a row), else odd ones. */
static void lds_of(const lcase *c, size_t es, long *ldqkv, long *ldo, long *lddkv)
{
  const long HD = (long)c->H * c->dh, al = 16 / (long)es;
  *ldqkv = 3 * HD + (c->aligned ? al : 5);
  *ldo = HD + (c->aligned ? al : 3);
  *lddkv = 2 * HD + (c->aligned ? al : 7);
}

/* The key mask of a case (kind 1: random; 2: also, in sequence 1, window 0 sees only dead keys, and a stretch inside). */
static void fill_mask(const lcase *c, unsigned long long *seed, uint8_t *mask)
{
  const long rows = c->batch * c->n;
  for (long i = 0; i < rows; i++) mask[i] = t_uniform(seed) < 0.8;
  if (c->mask_kind == 2 && c->batch > 1) {
    long dead0 = (c->lf + 1) * c->w, s = 3 * c->w, dead1 = (c->lb + c->lf + 1) * c->w + c->w;
    for (long p = 0; p < dead0 && p < c->n; p++) mask[c->n + p] = 0;
    for (long p = s; p < s + dead1 && p < c->n; p++) mask[c->n + p] = 0;
  }
}

/* A case's device buffers: q|k|v interleaved (row stride ldqkv elements), o and dout (ldo; the backward writes dq
   over o), dk|dv interleaved (lddkv), the row stats and the key mask; tensors of es bytes an element (c5_real, or
   2: bf16, L.bf16 = 1). */
typedef struct {
  void *qkv, *dkv, *o, *dout, *rmax, *rinv, *uni, *mask;
  size_t es;
  long ldqkv, ldo, lddkv;
} ldev;

static c5_status dev_forward(c5k_ctx *ctx, const c5k_local_attn *L, const ldev *d)
{
  const size_t hd = (size_t)L->heads * L->dim_head * d->es;   /* k's, v's offsets in a row: hd, 2 hd bytes */
  const char *q = d->qkv;
  return c5k_cuda_ops.local_attn_forward(ctx, L, q, q + hd, q + 2 * hd, d->ldqkv, d->mask, d->o, d->ldo, d->rmax,
                                         d->rinv, d->uni);
}

static c5_status dev_backward(c5k_ctx *ctx, const c5k_local_attn *L, const ldev *d)
{
  const size_t hd = (size_t)L->heads * L->dim_head * d->es;
  const char *q = d->qkv;
  char *dk = d->dkv;
  return c5k_cuda_ops.local_attn_backward(ctx, L, q, q + hd, q + 2 * hd, d->ldqkv, d->mask, d->rmax, d->rinv, d->uni,
                                          d->o, d->dout, d->ldo, d->o, dk, dk + hd, d->lddkv);
}

static void dev_free(c5_backend *gpu, ldev *d)
{
  c5_backend_free(gpu, d->qkv); c5_backend_free(gpu, d->dkv); c5_backend_free(gpu, d->o);
  c5_backend_free(gpu, d->dout); c5_backend_free(gpu, d->rmax); c5_backend_free(gpu, d->rinv);
  c5_backend_free(gpu, d->uni); c5_backend_free(gpu, d->mask);
}

/* Timing, for the record (not a check): mean of 5 forward + backward pairs. */
static int dev_time(c5_backend *gpu, const lcase *c, const c5k_local_attn *L, const ldev *d, const char *mode)
{
  c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
  struct timespec t0, t1, t2;
  double fwd = 0, bwd = 0;
  for (int rep = 0; rep < 5; rep++) {
    T_OK(c5_backend_sync(gpu));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    T_OK(dev_forward(&ctx, L, d));
    T_OK(c5_backend_sync(gpu));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    T_OK(dev_backward(&ctx, L, d));
    T_OK(c5_backend_sync(gpu));
    clock_gettime(CLOCK_MONOTONIC, &t2);
    fwd += (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    bwd += (t2.tv_sec - t1.tv_sec) + 1e-9 * (t2.tv_nsec - t1.tv_nsec);
  }
  printf("local_attn time%s b %ld n %ld w %ld H %d dh %d look %d/%d%s: forward %.3f ms, backward %.3f ms\n", mode,
         c->batch, c->n, c->w, c->H, c->dh, c->lb, c->lf, c->aligned ? " aligned" : "", fwd / 5 * 1e3, bwd / 5 * 1e3);
  return 1;
fail:
  return 0;
}

/* The GPU's o, dq (ldo), dk|dv (lddkv) (c5_real copies) and stats against the CPU's, norm-wise: e = o, stats
   (both in one norm), dq, dk, dv. a, b: scratch of max(rows HD, 2 nst) doubles. */
static void errs_of(const c5k_local_attn *L, long ldo, long lddkv, const c5_real *og, const c5_real *o,
                    const c5_real *dqg, const c5_real *dq, const c5_real *dg, const c5_real *dkv,
                    const double *rmaxg, const double *rmax, const double *rinvg, const double *rinv, double *a,
                    double *b, double e[5])
{
  const long rows = L->batch * L->n, HD = (long)L->heads * L->dim_head, nst = L->batch * L->heads * L->n;
  e[0] = err_of(og, o, rows, HD, ldo, 0, a, b);
  for (long i = 0; i < nst; i++) {
    a[i] = rmaxg[i]; b[i] = rmax[i];
    a[nst + i] = rinvg[i]; b[nst + i] = rinv[i];
  }
  e[1] = t_normwise(a, b, 2 * nst);
  e[2] = err_of(dqg, dq, rows, HD, ldo, 0, a, b);
  for (int x = 0; x < 2; x++) e[3 + x] = err_of(dg, dkv, rows, HD, lddkv, x * HD, a, b);
}

/* The CPU's forward and backward of a case (c5_real tensors in its strides; work: c5k_local_attn_work(L) doubles)
   and its uniform rows (*nuni; the dead stretches of mask kind 2 must make some): dq (ldo) apart from o. */
static int cpu_ref(const lcase *c, const c5k_local_attn *L, const c5_real *qkv, long ldqkv, const uint8_t *mask,
                   const c5_real *dout, long ldo, long lddkv, double *work, c5_real *o, double *rmax, double *rinv,
                   uint8_t *uni, c5_real *dq, c5_real *dkv, long *nuni)
{
  const long HD = (long)c->H * c->dh, nst = c->batch * c->H * c->n;
  c5k_ctx cpu = { .work = work, .work_len = c5k_local_attn_work(L) };
  T_OK(c5k_cpu_ops.local_attn_forward(&cpu, L, qkv, qkv + HD, qkv + 2 * HD, ldqkv, mask, o, ldo, rmax, rinv, uni));
  T_OK(c5k_cpu_ops.local_attn_backward(&cpu, L, qkv, qkv + HD, qkv + 2 * HD, ldqkv, mask, rmax, rinv, uni, o, dout,
                                       ldo, dq, dkv, dkv + HD, lddkv));
  *nuni = 0;
  for (long i = 0; i < nst; i++) *nuni += uni[i];
  if (c->mask_kind == 2 && c->batch > 1) T_CHECK(*nuni > 0, "the dead stretches made no uniform row");
  return 1;
fail:
  return 0;
}

static int run(c5_backend *gpu, const lcase *c, c5_matmul mm)
{
  const c5k_local_attn L = shape_of(c);
  const long rows = c->batch * c->n, HD = (long)c->H * c->dh;
  long ldqkv, ldo, lddkv;
  lds_of(c, sizeof(c5_real), &ldqkv, &ldo, &lddkv);
  const long nst = c->batch * c->H * c->n, nqkv = rows * ldqkv, no = rows * ldo, nkv = rows * lddkv;
  const long work_len = c5k_local_attn_work(&L);
  int ok = 0;
  /* bf16 mode takes the cuBLASLt products or the flash kernels for dim_head a multiple of 8 (attn_local.cu) */
  const int tc = mm == C5_MATMUL_BF16 && c->dh % 8 == 0;
  const double tl = tc ? 2e-2 : tol;
  const char *mode = mm == C5_MATMUL_BF16 ? " bf16" : "";
  unsigned long long seed = 77 + c->n * 13 + c->w * 7 + c->dh * 3 + c->causal + 2 * c->exact + 4 * c->lf + c->mask_kind;
  c5_real *qkv = malloc(nqkv * sizeof *qkv), *dout = malloc(no * sizeof *dout);
  c5_real *o = malloc(no * sizeof *o), *og = malloc(no * sizeof *og), *o2 = malloc(no * sizeof *o2);
  c5_real *dq = malloc(no * sizeof *dq), *dqg = malloc(no * sizeof *dqg), *dq2 = malloc(no * sizeof *dq2);
  c5_real *dkv = malloc(nkv * sizeof *dkv), *dg = malloc(nkv * sizeof *dg), *d2 = malloc(nkv * sizeof *d2);
  c5_real *nanq = malloc(nqkv * sizeof *nanq);
  double *rmax = malloc(nst * sizeof *rmax), *rinv = malloc(nst * sizeof *rinv);
  double *rmaxg = malloc(nst * sizeof *rmaxg), *rinvg = malloc(nst * sizeof *rinvg), *st2 = malloc(2 * nst * sizeof *st2);
  double *work = malloc((work_len > 0 ? work_len : 1) * sizeof *work);
  double *a = malloc((nqkv > 2 * nst ? nqkv : 2 * nst) * sizeof *a), *b = malloc((nqkv > 2 * nst ? nqkv : 2 * nst) * sizeof *b);
  uint8_t *uni = malloc(nst), *unig = malloc(nst), *uni2 = malloc(nst), *mask = c->mask_kind ? malloc(rows) : NULL;
  ldev d = { .es = sizeof(c5_real), .ldqkv = ldqkv, .ldo = ldo, .lddkv = lddkv };
  T_CHECK(qkv && dout && o && og && o2 && dq && dqg && dq2 && dkv && dg && d2 && nanq && rmax && rinv && rmaxg &&
          rinvg && st2 && work &&
          a && b && uni && unig && uni2 && (!c->mask_kind || mask), "out of memory");
  for (long i = 0; i < nqkv; i++) {
    qkv[i] = (c5_real)t_normal(&seed);
    nanq[i] = (c5_real)NAN;
  }
  for (long i = 0; i < no; i++) dout[i] = (c5_real)t_normal(&seed);
  if (mask) fill_mask(c, &seed, mask);
  long nuni;
  T_CHECK(cpu_ref(c, &L, qkv, ldqkv, mask, dout, ldo, lddkv, work, o, rmax, rinv, uni, dq, dkv, &nuni), "the CPU");
  /* the GPU, twice (o read out before the backward writes dq over it) */
  T_OK(c5_backend_set_matmul(gpu, mm));
  memset(uni2, 0xff, nst);
  T_CHECK((d.qkv = t_dev_upload(gpu, qkv, nqkv * sizeof *qkv)) && (d.dout = t_dev_upload(gpu, dout, no * sizeof *dout)) &&
          (d.o = t_dev_upload(gpu, nanq, no * sizeof *o)) && (d.dkv = t_dev_upload(gpu, nanq, nkv * sizeof *dkv)) &&
          (d.rmax = t_dev_upload(gpu, nanq, nst * sizeof(double))) && (d.rinv = t_dev_upload(gpu, nanq, nst * sizeof(double))) &&
          (d.uni = t_dev_upload(gpu, uni2, nst)) && (!mask || (d.mask = t_dev_upload(gpu, mask, rows))),
          "device buffers");
  for (int rep = 0; rep < 2; rep++) {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    T_OK(dev_forward(&ctx, &L, &d));
    T_OK(c5_backend_memcpy(gpu, rep ? o2 : og, d.o, no * sizeof *o));
    T_OK(dev_backward(&ctx, &L, &d));
    T_OK(c5_backend_memcpy(gpu, rep ? dq2 : dqg, d.o, no * sizeof *dq));
    T_OK(c5_backend_memcpy(gpu, rep ? d2 : dg, d.dkv, nkv * sizeof *dkv));
    T_OK(c5_backend_memcpy(gpu, rep ? st2 : rmaxg, d.rmax, nst * sizeof(double)));
    T_OK(c5_backend_memcpy(gpu, rep ? st2 + nst : rinvg, d.rinv, nst * sizeof(double)));
    T_OK(c5_backend_memcpy(gpu, rep ? uni2 : unig, d.uni, nst));
  }
  {
    const int same = memcmp(o2, og, no * sizeof *o) == 0 && memcmp(dq2, dqg, no * sizeof *dq) == 0 &&
                     memcmp(d2, dg, nkv * sizeof *dg) == 0 &&
                     memcmp(st2, rmaxg, nst * sizeof(double)) == 0 && memcmp(st2 + nst, rinvg, nst * sizeof(double)) == 0 &&
                     memcmp(uni2, unig, nst) == 0;
    const int uni_same = memcmp(unig, uni, nst) == 0;
    const int gaps = gaps_poisoned(og, rows, ldo, 0, HD) && gaps_poisoned(dqg, rows, ldo, 0, HD) &&
                     gaps_poisoned(dg, rows, lddkv, 0, 2 * HD);
    double e[5];
    errs_of(&L, ldo, lddkv, og, o, dqg, dq, dg, dkv, rmaxg, rmax, rinvg, rinv, a, b, e);
    const double eo = e[0], es = e[1], eq = e[2], ek = e[3], ev = e[4];
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
  if (rows >= 2048) ok &= dev_time(gpu, c, &L, &d, mode);
fail:
  c5_backend_set_matmul(gpu, C5_MATMUL_FP32);
  dev_free(gpu, &d);
  free(qkv); free(dout); free(o); free(og); free(o2); free(dq); free(dqg); free(dq2); free(dkv); free(dg); free(d2);
  free(nanq);
  free(rmax); free(rinv); free(rmaxg); free(rinvg); free(st2); free(work); free(a); free(b);
  free(uni); free(unig); free(uni2); free(mask);
  return ok;
}

/* local_attn_bf16's answer (1 exactly where the flash kernels run both ways: single build, bf16 mode, ctx not
   exact, dim_head 64, w a multiple of 64), the same whatever L.bf16; where it says 0, both ops refuse L.bf16 = 1
   (C5_ERR_NOTIMPL, before touching a tensor: NULL ones here). */
static int bf16_answers(c5_backend *gpu)
{
  static const struct { int dh; long w; c5_matmul mm; int exact, want; } qs[] = {
    { 64, 128, C5_MATMUL_BF16, 0, 1 }, { 64, 64, C5_MATMUL_BF16, 0, 1 }, { 64, 192, C5_MATMUL_BF16, 0, 1 },
    { 64, 96, C5_MATMUL_BF16, 0, 0 }, { 128, 128, C5_MATMUL_BF16, 0, 0 }, { 32, 128, C5_MATMUL_BF16, 0, 0 },
    { 64, 128, C5_MATMUL_FP32, 0, 0 }, { 64, 128, C5_MATMUL_TF32, 0, 0 }, { 64, 128, C5_MATMUL_BF16, 1, 0 },
  };
  int ok = 1;
  for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
    const lcase c = { .batch = 2, .n = 1000, .w = qs[i].w, .H = 2, .dh = qs[i].dh, .lb = 1, .lf = 1 };
    c5k_local_attn L = shape_of(&c);
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    const int want = qs[i].want && !C5_USE_DOUBLE;
    int pass = 0;
    ctx.exact = qs[i].exact;
    T_OK(c5_backend_set_matmul(gpu, qs[i].mm));
    const int got = c5k_cuda_ops.local_attn_bf16(&ctx, &L);
    L.bf16 = 1;
    const int got1 = c5k_cuda_ops.local_attn_bf16(&ctx, &L);
    if (!want) {
      T_FAILS(c5k_cuda_ops.local_attn_forward(&ctx, &L, NULL, NULL, NULL, 3 * 128, NULL, NULL, 128, NULL, NULL, NULL),
              C5_ERR_NOTIMPL, "bf16 tensors");
      T_FAILS(c5k_cuda_ops.local_attn_backward(&ctx, &L, NULL, NULL, NULL, 3 * 128, NULL, NULL, NULL, NULL, NULL, NULL,
                                               128, NULL, NULL, NULL, 2 * 128), C5_ERR_NOTIMPL, "bf16 tensors");
    }
    pass = got == want && got1 == want;
    printf("local_attn_bf16 dh %d w %ld %s%s: %d, with L.bf16 %d (want %d)%s %s\n", qs[i].dh, qs[i].w,
           qs[i].mm == C5_MATMUL_BF16 ? "bf16" : qs[i].mm == C5_MATMUL_TF32 ? "tf32" : "fp32",
           qs[i].exact ? " exact" : "", got, got1, want, want ? "" : ", bf16 tensors refused both ways",
           pass ? "PASS" : "FAIL");
    ok &= pass;
    continue;
  fail:
    printf("local_attn_bf16 dh %d w %ld: FAIL\n", qs[i].dh, qs[i].w);
    ok = 0;
  }
  c5_backend_set_matmul(gpu, C5_MATMUL_FP32);
  return ok;
}

#if !C5_USE_DOUBLE
/* bf16 storage (L.bf16 = 1: lib/attn_local.c's LocalMHA where local_attn_bf16 says so), dim_head 64: q, k, v, dout
   drawn in f32 and rounded to bf16 on the host; the GPU's bf16 o, dq, dk, dv (and stats) against the CPU on the same
   rounded values (norm-wise, 2e-2: the bf16 mode's bound) and bit for bit against the f32 flash kernels on them
   (which round the rows to bf16 in shared memory: the same tiles): o and the stats from the f32 forward (o rounded
   to bf16), dq, dk, dv from the f32 backward given the bf16 o (rounded; dq over it, as the bf16 run's). A second
   run: the same bits; the stride gaps of o, dq and dkv (bf16 NaN) unwritten. */
static int run_bf16(c5_backend *gpu, const lcase *c)
{
  c5k_local_attn L = shape_of(c);
  const long rows = c->batch * c->n, HD = (long)c->H * c->dh;
  long ldqkv, ldo, lddkv;
  lds_of(c, 2, &ldqkv, &ldo, &lddkv);
  const long nst = c->batch * c->H * c->n, nqkv = rows * ldqkv, no = rows * ldo, nkv = rows * lddkv;
  const long nmax = nqkv > 2 * nst ? nqkv : 2 * nst;
  const long work_len = c5k_local_attn_work(&L);
  const double tl = 2e-2;
  int ok = 0;
  unsigned long long seed = 91 + c->n * 13 + c->w * 7 + c->causal + 2 * c->exact + 4 * c->lf + c->mask_kind;
  /* host: rounded f32 inputs (qkv, dout) and their bf16 (qkvb, doutb); the CPU's o, dq, dkv, stats; the bf16 runs'
     outputs (ob, dqb, db: dk|dv, st: rmax | rinv, ub; two runs) and the first as c5_real (og, dqg, dg); the f32
     runs' (of, dqf, df, stf, uf) */
  c5_real *qkv = malloc(nqkv * sizeof *qkv), *dout = malloc(no * sizeof *dout), *o = malloc(no * sizeof *o);
  c5_real *dq = malloc(no * sizeof *dq), *dkv = malloc(nkv * sizeof *dkv), *og = malloc(no * sizeof *og);
  c5_real *dqg = malloc(no * sizeof *dqg), *dg = malloc(nkv * sizeof *dg), *of = malloc(no * sizeof *of);
  c5_real *dqf = malloc(no * sizeof *dqf), *df = malloc(nkv * sizeof *df), *nanr = malloc(nqkv * sizeof *nanr);
  uint16_t *qkvb = malloc(nqkv * 2), *doutb = malloc(no * 2), *nanb = malloc(nqkv * 2);
  uint16_t *ob[2] = { malloc(no * 2), malloc(no * 2) }, *dqb[2] = { malloc(no * 2), malloc(no * 2) };
  uint16_t *db[2] = { malloc(nkv * 2), malloc(nkv * 2) };
  double *rmax = malloc(nst * sizeof *rmax), *rinv = malloc(nst * sizeof *rinv), *stf = malloc(2 * nst * sizeof *stf);
  double *st[2] = { malloc(2 * nst * sizeof(double)), malloc(2 * nst * sizeof(double)) };
  double *work = malloc((work_len > 0 ? work_len : 1) * sizeof *work);
  double *a = malloc(nmax * sizeof *a), *b = malloc(nmax * sizeof *b);
  uint8_t *uni = malloc(nst), *ub[2] = { malloc(nst), malloc(nst) }, *uf = malloc(nst);
  uint8_t *mask = c->mask_kind ? malloc(rows) : NULL;
  ldev d = { .es = 2, .ldqkv = ldqkv, .ldo = ldo, .lddkv = lddkv };
  ldev f = { .es = sizeof(c5_real), .ldqkv = ldqkv, .ldo = ldo, .lddkv = lddkv };
  T_CHECK(qkv && dout && o && dq && dkv && og && dqg && dg && of && dqf && df && nanr && qkvb && doutb && nanb &&
          ob[0] && ob[1] && dqb[0] && dqb[1] && db[0] && db[1] && rmax && rinv && stf && st[0] && st[1] && work && a &&
          b && uni && ub[0] && ub[1] && uf && (!c->mask_kind || mask), "out of memory");
  for (long i = 0; i < nqkv; i++) {
    qkvb[i] = t_bf16((float)t_normal(&seed));
    qkv[i] = (c5_real)t_unbf16(qkvb[i]);
    nanb[i] = 0x7fc0;   /* bf16 NaN */
    nanr[i] = (c5_real)NAN;
  }
  for (long i = 0; i < no; i++) {
    doutb[i] = t_bf16((float)t_normal(&seed));
    dout[i] = (c5_real)t_unbf16(doutb[i]);
  }
  for (long i = 0; i < 2 * nst; i++) stf[i] = NAN;
  if (mask) fill_mask(c, &seed, mask);
  long nuni;   /* the CPU, on the rounded values */
  T_CHECK(cpu_ref(c, &L, qkv, ldqkv, mask, dout, ldo, lddkv, work, o, rmax, rinv, uni, dq, dkv, &nuni), "the CPU");
  T_OK(c5_backend_set_matmul(gpu, C5_MATMUL_BF16));
  {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    T_CHECK(c5k_cuda_ops.local_attn_bf16(&ctx, &L) == 1, "local_attn_bf16 says no to dim_head %d, w %ld", c->dh, c->w);
  }
  /* the bf16 tensors, twice */
  T_CHECK((d.qkv = t_dev_upload(gpu, qkvb, nqkv * 2)) && (d.dout = t_dev_upload(gpu, doutb, no * 2)) &&
          (d.o = t_dev_upload(gpu, nanb, no * 2)) && (d.dkv = t_dev_upload(gpu, nanb, nkv * 2)) &&
          (d.rmax = t_dev_upload(gpu, stf, nst * sizeof(double))) &&
          (d.rinv = t_dev_upload(gpu, stf, nst * sizeof(double))) && (d.uni = t_dev_upload(gpu, nanb, nst)) &&
          (!mask || (d.mask = t_dev_upload(gpu, mask, rows))), "device buffers");
  L.bf16 = 1;
  for (int rep = 0; rep < 2; rep++) {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    T_OK(dev_forward(&ctx, &L, &d));
    T_OK(c5_backend_memcpy(gpu, ob[rep], d.o, no * 2));
    T_OK(dev_backward(&ctx, &L, &d));
    T_OK(c5_backend_memcpy(gpu, dqb[rep], d.o, no * 2));
    T_OK(c5_backend_memcpy(gpu, db[rep], d.dkv, nkv * 2));
    T_OK(c5_backend_memcpy(gpu, st[rep], d.rmax, nst * sizeof(double)));
    T_OK(c5_backend_memcpy(gpu, st[rep] + nst, d.rinv, nst * sizeof(double)));
    T_OK(c5_backend_memcpy(gpu, ub[rep], d.uni, nst));
  }
  for (long i = 0; i < no; i++) {
    og[i] = (c5_real)t_unbf16(ob[0][i]);
    dqg[i] = (c5_real)t_unbf16(dqb[0][i]);
  }
  for (long i = 0; i < nkv; i++) dg[i] = (c5_real)t_unbf16(db[0][i]);
  /* the f32 tensors holding the same values: the forward, then the backward given the bf16 o */
  L.bf16 = 0;
  T_CHECK((f.qkv = t_dev_upload(gpu, qkv, nqkv * sizeof *qkv)) && (f.dout = t_dev_upload(gpu, dout, no * sizeof *dout)) &&
          (f.o = t_dev_upload(gpu, nanr, no * sizeof *o)) && (f.dkv = t_dev_upload(gpu, nanr, nkv * sizeof *dkv)) &&
          (f.rmax = t_dev_upload(gpu, stf, nst * sizeof(double))) &&
          (f.rinv = t_dev_upload(gpu, stf, nst * sizeof(double))) && (f.uni = t_dev_upload(gpu, nanb, nst)) &&
          (!mask || (f.mask = t_dev_upload(gpu, mask, rows))), "device buffers");
  {
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    T_OK(dev_forward(&ctx, &L, &f));
    T_OK(c5_backend_memcpy(gpu, of, f.o, no * sizeof *of));
    T_OK(c5_backend_memcpy(gpu, stf, f.rmax, nst * sizeof(double)));
    T_OK(c5_backend_memcpy(gpu, stf + nst, f.rinv, nst * sizeof(double)));
    T_OK(c5_backend_memcpy(gpu, uf, f.uni, nst));
    T_OK(c5_backend_memcpy(gpu, f.o, og, no * sizeof *og));
    T_OK(dev_backward(&ctx, &L, &f));
    T_OK(c5_backend_memcpy(gpu, dqf, f.o, no * sizeof *dqf));
    T_OK(c5_backend_memcpy(gpu, df, f.dkv, nkv * sizeof *df));
  }
  {
    const int same = memcmp(ob[0], ob[1], no * 2) == 0 && memcmp(dqb[0], dqb[1], no * 2) == 0 &&
                     memcmp(db[0], db[1], nkv * 2) == 0 &&
                     memcmp(st[0], st[1], 2 * nst * sizeof(double)) == 0 && memcmp(ub[0], ub[1], nst) == 0;
    const int uni_same = memcmp(ub[0], uni, nst) == 0;
    const int gaps = gaps_poisoned(og, rows, ldo, 0, HD) && gaps_poisoned(dqg, rows, ldo, 0, HD) &&
                     gaps_poisoned(dg, rows, lddkv, 0, 2 * HD);
    int fo = memcmp(stf, st[0], 2 * nst * sizeof(double)) == 0 && memcmp(uf, ub[0], nst) == 0, fd = 1;
    for (long r = 0; r < rows; r++) {
      for (long j = 0; j < HD; j++) {
        fo &= t_bf16((float)of[r * ldo + j]) == ob[0][r * ldo + j];
        fd &= t_bf16((float)dqf[r * ldo + j]) == dqb[0][r * ldo + j];
      }
      for (long j = 0; j < 2 * HD; j++) fd &= t_bf16((float)df[r * lddkv + j]) == db[0][r * lddkv + j];
    }
    double e[5];
    errs_of(&L, ldo, lddkv, og, o, dqg, dq, dg, dkv, st[0], rmax, st[0] + nst, rinv, a, b, e);
    const int rounded = fmax(fmax(e[0], e[2]), fmax(e[3], e[4])) > 1e-5;
    const int pass = same && uni_same && gaps && fo && fd && rounded && e[0] <= tl && e[1] <= tl && e[2] <= tl &&
                     e[3] <= tl && e[4] <= tl;
    printf("local_attn bf16 tensors b %ld n %ld w %ld H %d dh %d look %d/%d%s%s%s mask %d (uniform rows %ld): o %.3e "
           "stats %.3e dq %.3e dk %.3e dv %.3e%s%s%s%s%s%s (tol %.0e) %s\n", c->batch, c->n, c->w, c->H, c->dh, c->lb,
           c->lf, c->causal ? " causal" : "", c->exact ? " exact" : "", c->aligned ? " aligned" : "", c->mask_kind,
           nuni, e[0], e[1], e[2], e[3], e[4], uni_same ? "" : ", uni DIFFERS", same ? "" : ", second run DIFFERS",
           gaps ? "" : ", stride gaps WRITTEN", fo ? "" : ", o or stats DIFFER from the f32 path's (rounded)",
           fd ? "" : ", dq dk dv DIFFER from the f32 path's (rounded)", rounded ? "" : ", no bf16 rounding", tl,
           pass ? "PASS" : "FAIL");
    ok = pass;
  }
  if (rows >= 2048) {
    L.bf16 = 1;
    ok &= dev_time(gpu, c, &L, &d, " bf16 tensors");
  }
fail:
  c5_backend_set_matmul(gpu, C5_MATMUL_FP32);
  dev_free(gpu, &d);
  dev_free(gpu, &f);
  free(qkv); free(dout); free(o); free(dq); free(dkv); free(og); free(dqg); free(dg); free(of); free(dqf); free(df);
  free(nanr); free(qkvb); free(doutb); free(nanb); free(ob[0]); free(ob[1]); free(dqb[0]); free(dqb[1]); free(db[0]);
  free(db[1]);
  free(rmax); free(rinv); free(stf); free(st[0]); free(st[1]); free(work); free(a); free(b);
  free(uni); free(ub[0]); free(ub[1]); free(uf); free(mask);
  return ok;
}
#endif

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
  const long rows = c.batch * c.n, HD = (long)c.H * c.dh, ldqkv = 3 * HD + 1, ldo = HD + 2, lddkv = 2 * HD + 3;
  const long nqkv = rows * ldqkv, no = rows * ldo, nkv = rows * lddkv, nst = c.batch * c.H * c.n;
  unsigned long long seed = 4242;
  c5_real *qkv = malloc(nqkv * sizeof *qkv), *dout = malloc(no * sizeof *dout), *gq = malloc(no * sizeof *gq);
  c5_real *gkv = malloc(nkv * sizeof *gkv);
  double *an = malloc(3 * rows * HD * sizeof *an), *fd = malloc(3 * rows * HD * sizeof *fd);
  uint8_t mask[22];
  void *qkv_d = NULL, *o_d = NULL, *st_d = NULL, *mask_d = NULL, *dkv_d = NULL, *dout_d = NULL;
  int ok = 0;
  const double h = 1e-6;
  T_CHECK(qkv && dout && gq && gkv && an && fd, "out of memory");
  for (long i = 0; i < nqkv; i++) qkv[i] = t_normal(&seed);
  for (long i = 0; i < no; i++) dout[i] = t_normal(&seed);
  for (long i = 0; i < rows; i++) mask[i] = t_uniform(&seed) < 0.8;
  for (long p = 0; p < 8; p++) mask[c.n + p] = 0;   /* sequence 1, windows 0 and 1: uniform rows */
  T_CHECK((qkv_d = t_dev_upload(gpu, qkv, nqkv * sizeof *qkv)) && (o_d = t_dev_upload(gpu, dout, no * sizeof *dout)) &&
          (dout_d = t_dev_upload(gpu, dout, no * sizeof *dout)) && (dkv_d = t_dev_upload(gpu, qkv, nkv * sizeof *qkv)) &&
          (mask_d = t_dev_upload(gpu, mask, rows)), "device buffers");
  T_OK(c5_backend_alloc(gpu, 3 * nst * sizeof(double), &st_d));
  {
    double l0;
    c5k_ctx ctx = c5_backend_ctx(gpu, NULL, 0);
    const c5_real *q = qkv_d;
    c5_real *dk = dkv_d;
    T_CHECK(gpu_loss(gpu, &L, qkv, nqkv, ldqkv, dout, no, ldo, qkv_d, o_d, st_d, mask_d, &l0), "forward");
    /* dq over the forward's o, as lib/attn_local.c writes it */
    T_OK(c5k_cuda_ops.local_attn_backward(&ctx, &L, q, q + HD, q + 2 * HD, ldqkv, mask_d, st_d, (double *)st_d + nst,
                                          (uint8_t *)((double *)st_d + 2 * nst), o_d, dout_d, ldo, o_d, dk, dk + HD,
                                          lddkv));
    T_OK(c5_backend_memcpy(gpu, gq, o_d, no * sizeof *gq));
    T_OK(c5_backend_memcpy(gpu, gkv, dkv_d, nkv * sizeof *gkv));
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
      an[e] = j < HD ? gq[r * ldo + j] : gkv[r * lddkv + j - HD];
    }
  {
    const double err = t_normwise(an, fd, 3 * rows * HD);
    printf("local_attn finite differences of the GPU forward (b 2 n 11 w 4 H 2 dh 16 look 1/1 exact mask 2): "
           "dq dk dv %.3e (tol 1e-6) %s\n", err, err <= 1e-6 ? "PASS" : "FAIL");
    ok = err <= 1e-6;
  }
fail:
  c5_backend_free(gpu, qkv_d); c5_backend_free(gpu, o_d); c5_backend_free(gpu, st_d); c5_backend_free(gpu, mask_d);
  c5_backend_free(gpu, dkv_d); c5_backend_free(gpu, dout_d);
  free(qkv); free(dout); free(gq); free(gkv); free(an); free(fd);
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
    /* bf16 tensors (dim_head 64): the benchmark shape (its timing beside the f32 lines above), a key mask with
       uniform rows, pad keys (n % w != 0), causal, n below a window, 3 blocks a window, and odd strides (plain
       loads, not cp.async) */
    static const lcase bt[] = {
      { .batch = 1, .n = 32768, .w = 128, .H = 8, .dh = 64, .lb = 1, .lf = 1, .aligned = 1 },
      { .batch = 2, .n = 4096, .w = 128, .H = 4, .dh = 64, .lb = 1, .lf = 1, .mask_kind = 2, .aligned = 1 },
      { .batch = 2, .n = 1000, .w = 128, .H = 2, .dh = 64, .lb = 1, .lf = 1, .exact = 1, .mask_kind = 1,
        .aligned = 1 },
      { .batch = 2, .n = 2048, .w = 64, .H = 2, .dh = 64, .lb = 1, .lf = 0, .causal = 1, .mask_kind = 2,
        .aligned = 1 },
      { .batch = 3, .n = 50, .w = 64, .H = 2, .dh = 64, .lb = 1, .lf = 1, .mask_kind = 1, .aligned = 1 },
      { .batch = 2, .n = 700, .w = 192, .H = 2, .dh = 64, .lb = 2, .lf = 1 },
      { .batch = 2, .n = 1000, .w = 64, .H = 3, .dh = 64, .lb = 1, .lf = 0, .causal = 1, .exact = 1,
        .mask_kind = 2 },
      { .batch = 2, .n = 1000, .w = 64, .H = 2, .dh = 64, .lb = 1, .lf = 1, .mask_kind = 2 },
    };
    for (size_t i = 0; i < sizeof bt / sizeof bt[0]; i++) ok &= run_bf16(gpu, &bt[i]);
  }
#endif
  ok &= bf16_answers(gpu);
  c5_backend_destroy(&gpu);
  MPI_Finalize();
  return ok ? 0 : 1;
}
