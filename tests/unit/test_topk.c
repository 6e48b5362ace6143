/* test_topk.c - c5_topk_select against an oracle that sorts the whole row by
   (unmasked first, value descending, index ascending).

   Every rank builds the same full rows from a fixed seed, passes its own
   contiguous column slice (c5_layout_compute with unit 1), and the ranks'
   selections are gathered and compared with the oracle's set, so the test
   checks the distributed radix select for any number of ranks (run it under
   mpirun -np 1..4). Each case ends in an allreduce of the verdict so that a
   failure on one rank stops every rank at the same place. */
#include <string.h>
#include "harness.h"

/* ---- the oracle -------------------------------------------------------------------- */

static const c5_real *ov;        /* row being sorted (qsort has no context argument) */
static const uint8_t *om;

/* -0.0 == +0.0 under C's comparison operators, as the rule requires. */
static int cmp_rule(const void *pa, const void *pb)
{
  long a = *(const long *)pa, b = *(const long *)pb;
  int ka = !om || om[a], kb = !om || om[b];
  if (ka != kb) return ka ? -1 : 1;                 /* unmasked first */
  if (ka && ov[a] != ov[b]) return ov[a] > ov[b] ? -1 : 1;
  return a < b ? -1 : (a > b);                       /* then lower index (masked: by index only) */
}

static int cmp_long(const void *pa, const void *pb)
{
  long a = *(const long *)pa, b = *(const long *)pb;
  return a < b ? -1 : (a > b);
}

/* want[r*k ..] = the k selected indices of row r, ascending. */
static void oracle(long rows, long n, const c5_real *v, const uint8_t *mask, long k, long *want)
{
  long *ord = malloc((size_t)n * sizeof *ord);
  for (long r = 0; r < rows; r++) {
    ov = v + r * n;
    om = mask ? mask + r * n : NULL;
    for (long j = 0; j < n; j++) ord[j] = j;
    qsort(ord, (size_t)n, sizeof *ord, cmp_rule);
    qsort(ord, (size_t)k, sizeof *ord, cmp_long);
    memcpy(want + r * k, ord, (size_t)k * sizeof *ord);
  }
  free(ord);
}

/* ---- one distributed case ------------------------------------------------------------ */

static int all_ok(int ok)
{
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  return ok;
}

/* Runs c5_topk_select on this rank's slice of the full rows v [rows, n] and
   compares the gathered selections with the oracle. Collective; returns the
   verdict of all ranks. */
static int run_case(const c5_dist *d, const char *name, long rows, long n, const c5_real *v,
                    const uint8_t *mask, long k)
{
  int ok = 1, rank = c5_dist_rank(d), size = c5_dist_size(d);
  c5_layout lay;
  if (c5_layout_compute(d, n, 1, &lay) != C5_OK) {
    fprintf(stderr, "%s: layout: %s\n", name, c5_last_error());
    return all_ok(0);
  }
  long nl = lay.n_local, off = lay.offset;
  c5_real *vl = malloc((size_t)(rows * nl + 1) * sizeof *vl);
  uint8_t *ml = malloc((size_t)(rows * nl + 1));
  long *count = calloc((size_t)rows, sizeof *count), *idx = calloc((size_t)(rows * k), sizeof *idx);
  long *want = malloc((size_t)(rows * k) * sizeof *want), *got = malloc((size_t)k * sizeof *got);
  int *rc = malloc((size_t)size * sizeof *rc), *rd = malloc((size_t)size * sizeof *rd);
  for (long r = 0; r < rows; r++) {
    memcpy(vl + r * nl, v + r * n + off, (size_t)nl * sizeof *vl);
    if (mask) memcpy(ml + r * nl, mask + r * n + off, (size_t)nl);
  }
  c5_status st = c5_topk_select(c5_backend_cpu(), d, rows, nl, off, vl, mask ? ml : NULL, k, count, idx);
  if (st != C5_OK) {
    fprintf(stderr, "%s: rank %d: c5_topk_select: %s: %s\n", name, rank, c5_status_string(st), c5_last_error());
    ok = 0;
    memset(count, 0, (size_t)rows * sizeof *count);
  }
  /* local promises: at most k, ascending, inside this rank's slice */
  for (long r = 0; r < rows && ok; r++) {
    const long *ir = idx + r * k;
    if (count[r] < 0 || count[r] > k) {
      fprintf(stderr, "%s: rank %d row %ld: count %ld outside [0, %ld]\n", name, rank, r, count[r], k);
      ok = 0;
      count[r] = 0;
    }
    for (long e = 0; e < count[r] && ok; e++)
      if (ir[e] < off || ir[e] >= off + nl || (e > 0 && ir[e] <= ir[e - 1])) {
        fprintf(stderr, "%s: rank %d row %ld: entry %ld = %ld (slice [%ld, %ld), previous %ld)\n", name,
                rank, r, e, ir[e], off, off + nl, e ? ir[e - 1] : -1L);
        ok = 0;
      }
  }
  /* gather every rank's entries of each row; rank order = index order */
  oracle(rows, n, v, mask, k, want);
  for (long r = 0; r < rows; r++) {
    int c = (int)count[r];
    MPI_Allgather(&c, 1, MPI_INT, rc, 1, MPI_INT, MPI_COMM_WORLD);
    long tot = 0;
    for (int p = 0; p < size; p++) { rd[p] = (int)tot; tot += rc[p]; }
    if (tot != k) {   /* same on every rank: all skip the Allgatherv */
      if (rank == 0) fprintf(stderr, "%s: row %ld: %ld entries selected over all ranks, want %ld\n",
                             name, r, tot, k);
      ok = 0;
      continue;
    }
    MPI_Allgatherv(idx + r * k, c, MPI_LONG, got, rc, rd, MPI_LONG, MPI_COMM_WORLD);
    for (long e = 0; e < k; e++)
      if (got[e] != want[r * k + e]) {
        if (rank == 0)
          fprintf(stderr, "%s: row %ld: entry %ld is %ld, oracle %ld (value %.17g vs %.17g)\n", name, r, e,
                  got[e], want[r * k + e], (double)v[r * n + got[e]], (double)v[r * n + want[r * k + e]]);
        ok = 0;
        break;
      }
  }
  free(vl); free(ml); free(count); free(idx); free(want); free(got); free(rc); free(rd);
  ok = all_ok(ok);
  if (rank == 0) printf("  topk %-34s rows=%ld n=%ld k=%ld: %s\n", name, rows, n, k, ok ? "ok" : "FAILED");
  return ok;
}

/* ---- data ------------------------------------------------------------------------------ */

static void fill_normal(c5_real *v, long len, unsigned long long seed)
{
  for (long i = 0; i < len; i++) v[i] = (c5_real)t_normal(&seed);
}

/* values from {0, 1, ..., levels-1}: many ties at the threshold */
static void fill_levels(c5_real *v, long len, int levels, unsigned long long seed)
{
  for (long i = 0; i < len; i++) v[i] = (c5_real)(long)(t_uniform(&seed) * levels);
}

/* mask[i] = 0 with probability p */
static void fill_mask(uint8_t *m, long len, double p, unsigned long long seed)
{
  for (long i = 0; i < len; i++) m[i] = t_uniform(&seed) >= p;
}

/* both signs and magnitudes 1e-30 .. 1e30 (valid in float too): every byte of
   the order key matters, negatives sort below positives */
static void fill_wide(c5_real *v, long len, unsigned long long seed)
{
  for (long i = 0; i < len; i++) {
    double s = t_uniform(&seed) < 0.5 ? -1 : 1;
    v[i] = (c5_real)(s * (1 + t_uniform(&seed)) * pow(10.0, -30 + 60 * t_uniform(&seed)));
  }
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_dist *d = NULL;
  int rank = 0, ret = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  enum { NMAX = 17000, RMAX = 5 };
  c5_real *v = malloc((size_t)(RMAX * NMAX) * sizeof *v);
  uint8_t *m = malloc((size_t)(RMAX * NMAX));
  long cnt[1], idx[4];
  T_OK(c5_dist_create(MPI_COMM_WORLD, &d));
  if (rank == 0) printf("test_topk (%s, %d ranks)\n", C5_REAL_NAME, c5_dist_size(d));

  fill_normal(v, 3 * 50, 11);
  T_CHECK(run_case(d, "random", 3, 50, v, NULL, 7), "random values");
  fill_wide(v, 4 * 60, 12);
  T_CHECK(run_case(d, "wide magnitudes, both signs", 4, 60, v, NULL, 23), "wide values");

  fill_levels(v, 4 * 64, 3, 13);
  T_CHECK(run_case(d, "ties {0,1,2}", 4, 64, v, NULL, 20), "ties");
  T_CHECK(run_case(d, "ties {0,1,2} k=n-1", 4, 64, v, NULL, 63), "ties");
  for (long i = 0; i < 2 * 30; i++) v[i] = (c5_real)0.5;
  T_CHECK(run_case(d, "all equal", 2, 30, v, NULL, 11), "all equal");

  /* masked: k below and above the number of unmasked entries; row 2 fully masked */
  fill_normal(v, 3 * 40, 14);
  fill_mask(m, 3 * 40, 0.4, 15);
  memset(m + 2 * 40, 0, 40);
  T_CHECK(run_case(d, "masked", 3, 40, v, m, 10), "masked");
  fill_mask(m, 3 * 40, 0.85, 16);   /* ~6 unmasked of 40 */
  T_CHECK(run_case(d, "masked, k > unmasked", 3, 40, v, m, 12), "masked k > unmasked");
  fill_levels(v, 3 * 40, 2, 17);
  fill_mask(m, 3 * 40, 0.3, 18);
  T_CHECK(run_case(d, "masked ties {0,1}", 3, 40, v, m, 30), "masked ties");

  /* -0.0 and +0.0 are one value: ties among them go by index */
  for (long i = 0; i < 2 * 24; i++) v[i] = (c5_real)((i % 3 == 0) ? -0.0 : (i % 3 == 1) ? 0.0 : (i % 2 ? 1 : -1));
  T_CHECK(run_case(d, "-0.0 == +0.0", 2, 24, v, NULL, 9), "signed zeros");
  T_CHECK(run_case(d, "-0.0 == +0.0 (more zeros)", 2, 24, v, NULL, 13), "signed zeros");

  fill_normal(v, 5 * 37, 19);
  T_CHECK(run_case(d, "k = 1", 5, 37, v, NULL, 1), "k = 1");
  T_CHECK(run_case(d, "k = n", 5, 37, v, NULL, 37), "k = n");
  fill_mask(m, 5 * 37, 0.5, 20);
  T_CHECK(run_case(d, "k = n masked", 5, 37, v, m, 37), "k = n masked");

  /* rows longer than the kernel chunk (4096) */
  fill_normal(v, 2 * 10000, 21);
  T_CHECK(run_case(d, "long rows", 2, 10000, v, NULL, 3000), "long rows");
  fill_levels(v, 2 * NMAX, 3, 22);
  fill_mask(m, 2 * NMAX, 0.2, 23);
  T_CHECK(run_case(d, "long rows, ties and mask", 2, NMAX, v, m, 9000), "long rows with ties");

  /* invalid k: every rank raises it (the length is global) */
  v[0] = v[1] = v[2] = v[3] = 1;
  {
    c5_layout lay;
    T_OK(c5_layout_compute(d, 4, 1, &lay));
    T_FAILS(c5_topk_select(c5_backend_cpu(), d, 1, lay.n_local, lay.offset, v, NULL, 0, cnt, idx), C5_ERR_ARG, "k = 0");
    T_FAILS(c5_topk_select(c5_backend_cpu(), d, 1, lay.n_local, lay.offset, v, NULL, 5, cnt, idx), C5_ERR_ARG,
            "k = 5 must be in [1, 4]");
    T_FAILS(c5_topk_select(c5_backend_cpu(), d, 1, lay.n_local, lay.offset, v, NULL, -3, cnt, idx), C5_ERR_ARG, "k = -3");
  }
  if (rank == 0) printf("  topk invalid k (0, n + 1, -3): ok\n");
  ret = 0;
fail:
  if (ret && rank == 0) printf("test_topk: FAILED\n");
  free(v); free(m);
  c5_dist_destroy(&d);
  MPI_Finalize();
  return ret;
}
