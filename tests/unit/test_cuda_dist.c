/* test_cuda_dist.c - dist's collectives on device buffers (a CUDA backend):
   the halo exchange and its return, the variable-count all-gather (real,
   index and mask elements), the reduce-scatter and the parameter-gradient
   allreduce, at the ranks mpirun gives (test_cuda_dist.sh: 1, 2, 3 ranks on
   one GPU, staged through host memory, and one rank through NCCL), against
   the values each rank can compute on the host. Payloads are small integers,
   so every sum is exact in either precision and every result must be
   identical. Counts differ between ranks (the padding is exercised). One line
   per case: PASS/FAIL with the first differing element. Exits 77 without a
   GPU. */
#include <string.h>
#include "cuda_util.h"
#include "backend.h"
#include "c5_internal.h"

static int rank_, P_;

/* Element i of rank p's payload: an integer < 2^20, exact in float. */
static double val(int p, long i, int salt) { return (double)((p * 7919 + i * 31 + salt * 101) % 1000003 % 4096); }

static int report(const char *what, long bad, long n, double got, double want)
{
  printf("dist %-26s P=%d rank %d: %ld elements %s", what, P_, rank_, n, bad < 0 ? "PASS\n" : "FAIL");
  if (bad >= 0) printf(" (element %ld: %.17g, expected %.17g)\n", bad, got, want);
  return bad < 0 ? 0 : 1;
}

static int down(c5_backend *be, void *host, const void *dev, size_t bytes)
{
  if (c5_backend_memcpy(be, host, dev, bytes) != C5_OK) { fprintf(stderr, "download: %s\n", c5_last_error()); return 0; }
  return 1;
}

/* counts[p] = base + 3 p (+ p % 2): different on every rank */
static void counts_of(long base, int *counts, int *displs)
{
  for (int p = 0, at = 0; p < P_; p++) { counts[p] = (int)(base + 3 * p + p % 2); displs[p] = at; at += counts[p]; }
}

static int check_allgatherv(c5_backend *be, c5_dist *d, c5_elem type, const char *name, long base)
{
  size_t es = type == C5_ELEM_LONG ? sizeof(long) : type == C5_ELEM_U8 ? 1 : sizeof(c5_real);
  int counts[8] = { 0 }, displs[8] = { 0 };
  counts_of(base, counts, displs);
  long total = displs[P_ - 1] + counts[P_ - 1], mine = counts[rank_];
  char *hs = malloc(mine * es + 1), *hr = malloc(total * es + 1), *want = malloc(total * es + 1);
  for (int p = 0; p < P_; p++)
    for (long i = 0; i < counts[p]; i++) {
      double v = val(p, i, (int)type);
      char *w = want + (displs[p] + i) * es, *s = p == rank_ ? hs + i * es : NULL;
      if (type == C5_ELEM_LONG) { long x = (long)v - 2048; memcpy(w, &x, es); if (s) memcpy(s, &x, es); }
      else if (type == C5_ELEM_U8) { uint8_t x = (uint8_t)v; *w = (char)x; if (s) *s = (char)x; }
      else { c5_real x = (c5_real)(v - 2048); memcpy(w, &x, es); if (s) memcpy(s, &x, es); }
    }
  void *ds = t_dev_upload(be, hs, mine * es + 1), *dr = NULL;
  memset(hr, 0x7f, total * es + 1);   /* poison: every element must be written */
  dr = t_dev_upload(be, hr, total * es + 1);
  int fail = 1;
  if (ds && dr) {
    c5_status st = c5_dist_allgatherv(d, be, ds, mine, dr, counts, displs, type);
    if (st != C5_OK) fprintf(stderr, "rank %d: allgatherv: %s\n", rank_, c5_last_error());
    else if (down(be, hr, dr, total * es)) {
      long bad = -1;
      for (long e = 0; e < total && bad < 0; e++) if (memcmp(hr + e * es, want + e * es, es)) bad = e;
      fail = report(name, bad, total, 0, 0);
    }
  }
  c5_backend_free(be, ds); c5_backend_free(be, dr);
  free(hs); free(hr); free(want);
  return fail;
}

static int check_reduce_scatter(c5_backend *be, c5_dist *d, long base)
{
  int counts[8] = { 0 }, displs[8] = { 0 };
  counts_of(base, counts, displs);
  long total = displs[P_ - 1] + counts[P_ - 1], mine = counts[rank_];
  c5_real *hs = malloc((total + 1) * sizeof *hs), *hr = malloc((mine + 1) * sizeof *hr);
  double *want = calloc(mine + 1, sizeof *want);
  for (long e = 0; e < total; e++) hs[e] = (c5_real)(val(rank_, e, 5) - 2000);
  for (int q = 0; q < P_; q++)
    for (long i = 0; i < mine; i++) want[i] += val(q, displs[rank_] + i, 5) - 2000;
  for (long i = 0; i <= mine; i++) hr[i] = (c5_real)NAN;
  void *ds = t_dev_upload(be, hs, (total + 1) * sizeof *hs), *dr = t_dev_upload(be, hr, (mine + 1) * sizeof *hr);
  int fail = 1;
  if (ds && dr) {
    c5_status st = c5_dist_reduce_scatter(d, be, ds, dr, counts, C5_ELEM_REAL);
    if (st != C5_OK) fprintf(stderr, "rank %d: reduce_scatter: %s\n", rank_, c5_last_error());
    else if (down(be, hr, dr, (mine + 1) * sizeof *hr)) {
      long bad = -1;
      for (long i = 0; i < mine && bad < 0; i++) if ((double)hr[i] != want[i]) bad = i;
      if (bad < 0 && !isnan((double)hr[mine])) bad = mine;   /* nothing past its block written */
      fail = report("reduce_scatter real", bad, mine, bad >= 0 ? (double)hr[bad] : 0, bad >= 0 && bad < mine ? want[bad] : NAN);
    }
  }
  c5_backend_free(be, ds); c5_backend_free(be, dr);
  free(hs); free(hr); free(want);
  return fail;
}

/* Forward: my first hl rows to the left, my last to the right; back: the received ones return. */
static int check_halo(c5_backend *be, c5_dist *d, long w)
{
  const long nl = w + rank_ % 2, nr = w + (rank_ + 1) % 2;   /* what I send left, right */
  const long hl = rank_ > 0 ? w + (rank_ - 1 + 1) % 2 : 0;   /* the left neighbour's nr */
  const long hr = rank_ < P_ - 1 ? w + (rank_ + 1) % 2 : 0;  /* the right neighbour's nl */
  const long sl = rank_ > 0 ? nl : 0, sr = rank_ < P_ - 1 ? nr : 0;
  c5_real *h = malloc((sl + sr + hl + hr + 4) * sizeof *h);
  c5_real *tl = h, *tr = tl + sl, *fl = tr + sr, *fr = fl + hl;
  for (long i = 0; i < sl; i++) tl[i] = (c5_real)val(rank_, i, 11);
  for (long i = 0; i < sr; i++) tr[i] = (c5_real)val(rank_, i, 13);
  for (long i = 0; i < hl + hr; i++) fl[i] = (c5_real)NAN;
  c5_real *dv = t_dev_upload(be, h, (sl + sr + hl + hr + 4) * sizeof *h);
  int fail = 1;
  if (dv) {
    c5_halo_msg m = { .to_left = sl ? dv : NULL, .to_right = sr ? dv + sl : NULL, .from_left = hl ? dv + sl + sr : NULL,
                      .from_right = hr ? dv + sl + sr + hl : NULL, .n_to_left = sl, .n_to_right = sr,
                      .n_from_left = hl, .n_from_right = hr, .be = be };
    c5_status st = c5_dist_halo_exchange(d, C5_ELEM_REAL, &m);
    if (st != C5_OK) fprintf(stderr, "rank %d: halo: %s\n", rank_, c5_last_error());
    else if (down(be, h, dv, (sl + sr + hl + hr) * sizeof *h)) {
      long bad = -1;
      double got = 0, want = 0;
      for (long i = 0; i < hl && bad < 0; i++)
        if ((double)fl[i] != (want = val(rank_ - 1, i, 13))) { bad = i; got = fl[i]; }
      for (long i = 0; i < hr && bad < 0; i++)
        if ((double)fr[i] != (want = val(rank_ + 1, i, 11))) { bad = hl + i; got = fr[i]; }
      fail = report("halo exchange real", bad, hl + hr, got, want);
      /* the return: what I received goes back, doubled, into the neighbours' send buffers */
      for (long i = 0; i < hl + hr; i++) fl[i] = 2 * fl[i];
      for (long i = 0; i < sl + sr; i++) tl[i] = (c5_real)NAN;
      if (c5_backend_memcpy(be, dv, h, (sl + sr + hl + hr) * sizeof *h) != C5_OK) fail = 1;
      st = c5_dist_halo_return(d, C5_ELEM_REAL, &m);
      if (st != C5_OK) { fprintf(stderr, "rank %d: halo return: %s\n", rank_, c5_last_error()); fail = 1; }
      else if (down(be, h, dv, (sl + sr) * sizeof *h)) {
        bad = -1;
        for (long i = 0; i < sl && bad < 0; i++) if ((double)tl[i] != (want = 2 * val(rank_, i, 11))) { bad = i; got = tl[i]; }
        for (long i = 0; i < sr && bad < 0; i++) if ((double)tr[i] != (want = 2 * val(rank_, i, 13))) { bad = sl + i; got = tr[i]; }
        fail |= report("halo return real", bad, sl + sr, got, want);
      }
    }
  }
  c5_backend_free(be, dv);
  free(h);
  return fail;
}

static int check_grad(c5_backend *be, c5_dist *d)
{
  c5_params *p = NULL;
  long dims[2] = { 37, 5 }, dims2[1] = { 3 }, i0, i1;
  int fail = 1;
  if (c5_params_create(be, &p) != C5_OK || c5_params_add(p, "", "w", 2, dims, &i0) != C5_OK ||
      c5_params_add(p, "", "b", 1, dims2, &i1) != C5_OK || c5_params_alloc(p) != C5_OK) {
    fprintf(stderr, "params: %s\n", c5_last_error());
    c5_params_destroy(&p);
    return 1;
  }
  const long n = c5_params_total(p);
  c5_real *h = malloc(n * sizeof *h);
  for (long e = 0; e < n; e++) h[e] = (c5_real)(val(rank_, e, 17) - 1000);
  if (c5_backend_memcpy(be, c5_params_grad(p, 0), h, n * sizeof *h) == C5_OK) {
    c5_status st = c5_params_allreduce_grad(p, d);
    if (st != C5_OK) fprintf(stderr, "rank %d: allreduce_grad: %s\n", rank_, c5_last_error());
    else if (down(be, h, c5_params_grad(p, 0), n * sizeof *h)) {
      long bad = -1;
      double want = 0;
      for (long e = 0; e < n && bad < 0; e++) {
        want = 0;
        for (int q = 0; q < P_; q++) want += val(q, e, 17) - 1000;
        if ((double)h[e] != want) bad = e;
      }
      fail = report("allreduce parameter grads", bad, n, bad >= 0 ? (double)h[bad] : 0, want);
    }
  }
  free(h);
  c5_params_destroy(&p);
  return fail;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &P_);
  c5_backend *be = t_cuda_backend_or_skip();
  c5_dist *d = NULL;
  if (P_ > 8 || c5_dist_create(MPI_COMM_WORLD, &d) != C5_OK) { fprintf(stderr, "dist: %s\n", c5_last_error()); return 1; }
  int nccl = -1;
  if (c5_dist_uses_nccl(d, be, &nccl) != C5_OK) {
    /* an expected refusal (test_cuda_dist.sh: C5_DIST=nccl on ranks sharing a GPU): the same error everywhere */
    printf("dist refused P=%d rank %d: %s\n", P_, rank_, c5_last_error());
    c5_dist_destroy(&d); c5_backend_destroy(&be);
    MPI_Finalize();
    return 3;
  }
  if (rank_ == 0) printf("dist: %d ranks, device collectives by %s\n", P_, nccl ? "NCCL" : "MPI through host memory");
  int fail = 0;
  for (long base = 1; base <= 1000; base *= 10) {
    fail |= check_allgatherv(be, d, C5_ELEM_REAL, "allgatherv real", base);
    fail |= check_allgatherv(be, d, C5_ELEM_LONG, "allgatherv long", base);
    fail |= check_allgatherv(be, d, C5_ELEM_U8, "allgatherv u8", base);
    fail |= check_reduce_scatter(be, d, base);
  }
  fail |= check_halo(be, d, 1);
  fail |= check_halo(be, d, 33);
  fail |= check_grad(be, d);
  long f = fail;
  c5_dist_reduce_long(d, &f, 1, C5_REDUCE_MAX);
  c5_dist_destroy(&d);
  c5_backend_destroy(&be);
  MPI_Finalize();
  return f ? 1 : 0;
}
