/* test_cuda_topk.c - c5_topk_select on the CUDA backend (device radix
   select over the score type's order keys) against the CPU's selection on
   the same logits: counts and indices identical. Logits are quantized so
   that many entries tie at the threshold (ties go to the lower index),
   masks make masked entries fill the places the unmasked ones cannot
   (masked last, by index), and -0 and +0 meet. Exits 77 without a GPU. */
#include "cuda_util.h"

static int run(c5_backend *gpu, const c5_dist *d, long rows, long n, long k, int masked, double quant, long offset)
{
  const long N = rows * n;
  int ok = 0;
  c5_real *v = malloc(N * sizeof *v);
  uint8_t *m = masked ? malloc(N) : NULL;
  long *cnt = malloc(rows * sizeof *cnt), *idx = malloc(rows * k * sizeof *idx);
  long *cntg = malloc(rows * sizeof *cntg), *idxg = malloc(rows * k * sizeof *idxg);
  void *v_d = NULL, *m_d = NULL, *c_d = NULL, *i_d = NULL;
  unsigned long long seed = 99 + rows + n + k;
  T_CHECK(v && cnt && idx && cntg && idxg && (!masked || m), "out of memory");
  for (long i = 0; i < N; i++) {
    double x = t_normal(&seed);
    v[i] = (c5_real)(quant > 0 ? round(x * quant) / quant : x);
    if (v[i] == 0 && (i & 1)) v[i] = (c5_real)-0.0;
    if (m) m[i] = t_uniform(&seed) < 0.3;   /* few unmasked: k may pass them */
  }
  T_OK(c5_topk_select(c5_backend_cpu(), d, rows, n, offset, v, m, k, cnt, idx));
  T_CHECK((v_d = t_dev_upload(gpu, v, N * sizeof *v)) && (!m || (m_d = t_dev_upload(gpu, m, N))), "device buffers");
  for (long i = 0; i < rows * k; i++) idxg[i] = -7;
  T_CHECK((c_d = t_dev_upload(gpu, idxg, rows * sizeof(long))) && (i_d = t_dev_upload(gpu, idxg, rows * k * sizeof(long))),
          "device buffers");
  T_OK(c5_topk_select(gpu, d, rows, n, offset, v_d, m_d, k, c_d, i_d));
  T_OK(c5_backend_memcpy(gpu, cntg, c_d, rows * sizeof *cntg));
  T_OK(c5_backend_memcpy(gpu, idxg, i_d, rows * k * sizeof *idxg));
  for (long r = 0; r < rows; r++) {
    T_CHECK(cntg[r] == cnt[r], "rows %ld n %ld k %ld: row %ld count %ld, cpu %ld", rows, n, k, r, cntg[r], cnt[r]);
    for (long i = 0; i < cnt[r]; i++)
      T_CHECK(idxg[r * k + i] == idx[r * k + i], "rows %ld n %ld k %ld: row %ld entry %ld is %ld, cpu %ld", rows, n, k,
              r, i, idxg[r * k + i], idx[r * k + i]);
  }
  printf("topk rows %ld n %ld k %ld%s quant %g: identical\n", rows, n, k, m ? " masked" : "", quant);
  ok = 1;
fail:
  c5_backend_free(gpu, v_d); c5_backend_free(gpu, m_d); c5_backend_free(gpu, c_d); c5_backend_free(gpu, i_d);
  free(v); free(m); free(cnt); free(idx); free(cntg); free(idxg);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_backend *gpu = t_cuda_backend_or_skip();
  c5_dist *d = NULL;
  int ok = 1;
  if (c5_dist_create(MPI_COMM_WORLD, &d) != C5_OK) { fprintf(stderr, "%s\n", c5_last_error()); return 1; }
  ok &= run(gpu, d, 3, 1000, 64, 0, 0, 0);
  ok &= run(gpu, d, 3, 1000, 500, 1, 4, 10);          /* k past the unmasked entries */
  ok &= run(gpu, d, 4, 50000, 3125, 0, 4, 0);         /* heavy ties at the threshold, several chunks */
  ok &= run(gpu, d, 16, 8192, 576, 1, 16, 0);
  ok &= run(gpu, d, 1, 1L << 21, 1L << 17, 0, 64, 5); /* one long row */
  ok &= run(gpu, d, 2, 7, 7, 1, 0, 0);                /* k = n */
  c5_dist_destroy(&d);
  c5_backend_destroy(&gpu);
  MPI_Finalize();
  return ok ? 0 : 1;
}
