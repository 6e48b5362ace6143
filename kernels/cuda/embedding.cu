/* embedding.cu - the model's token and position embeddings on the GPU, as
   kernels/cpu/embedding.c. The backward adds into double accumulators with
   each element's adds in (b, j) order, without atomics: the rows are sorted
   by token with a stable radix sort (equal tokens keep their row order),
   then one thread per (token, column) walks its token's rows in order, and
   one thread per (position, column) walks the batch in order. */
#include <cub/cub.cuh>
#include "rowsum.cuh"

__global__ void embedding_fwd(long total, long n, long pos0, int dim, const int32_t *tokens, const c5_real *tok_emb,
                              const c5_real *pos_emb, c5_real *x)
{
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
    const long r = i / dim;
    const int k = (int)(i % dim);
    x[i] = tok_emb[(long)tokens[r] * dim + k] + pos_emb[(pos0 + r % n) * dim + k];
  }
}

extern "C" c5_status c5k_embedding_forward_cuda(c5k_ctx *ctx, long batch, long n, long pos0, int dim,
                                                const int32_t *tokens, const c5_real *tok_emb, const c5_real *pos_emb,
                                                c5_real *x)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "embedding_forward", &dev));
  const long total = batch * n * dim;
  if (total <= 0) return C5_OK;
  embedding_fwd<<<c5k_grid_for(total, 256), 256, 0, dev->stream>>>(total, n, pos0, dim, tokens, tok_emb, pos_emb, x);
  C5K_CUDA_LAUNCHED("embedding_forward");
  return C5_OK;
}

__global__ void iota_k(int total, int *v)
{
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) v[i] = i;
}

/* Block (i, column block): sorted row i heads a run of one token (the block
   returns as a whole otherwise); its threads add the run's rows in order.
   The run's end is found first (a binary search of the sorted keys), so the
   loop's loads do not wait on its exit test: only the adds are serial. */
__global__ void embedding_bwd_tok(int total, int dim, const int32_t *key, const int *row, const c5_real *dx,
                                  double *dtok)
{
  const int i = blockIdx.x, k = blockIdx.y * blockDim.x + threadIdx.x;
  if ((i > 0 && key[i - 1] == key[i]) || k >= dim) return;
  const int32_t v = key[i];
  int lo = i + 1, hi = total;   /* the first q > i with key[q] != v */
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (key[mid] == v) lo = mid + 1;
    else hi = mid;
  }
  double *d = dtok + (long)v * dim + k;
  double a = *d;
#pragma unroll 8
  for (int q = i; q < lo; q++) a += dx[(long)row[q] * dim + k];
  *d = a;
}

/* Thread (j, k): position pos0 + j's element k over the batch in order. */
__global__ void embedding_bwd_pos(long batch, long n, long pos0, int dim, const c5_real *dx, double *dpos)
{
  const long j = blockIdx.x;
  const int k = blockIdx.y * blockDim.x + threadIdx.x;
  if (k >= dim) return;
  double *d = dpos + (pos0 + j) * dim + k;
  double a = *d;
  for (long b = 0; b < batch; b++) a += dx[(b * n + j) * dim + k];
  *d = a;
}

extern "C" c5_status c5k_embedding_backward_cuda(c5k_ctx *ctx, long batch, long n, long pos0, int dim,
                                                 const int32_t *tokens, const c5_real *dx, double *dtok, double *dpos)
{
  const char *op = "embedding_backward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const long rows = batch * n;
  if (rows <= 0 || dim <= 0) return C5_OK;
  if (rows > 0x7fffffffL)
    return C5K_ERR(C5_ERR_NOTIMPL, "cuda op %s: %ld rows (batch %ld x n %ld): at most 2^31 - 1", op, rows, batch, n);
  const int total = (int)rows;
  /* scratch: sorted keys, row indices in and out (4-byte each), then the sort's own storage */
  size_t sort_bytes = 0;
  C5K_CUDA_TRY(cub::DeviceRadixSort::SortPairs(NULL, sort_bytes, (const int32_t *)NULL, (int32_t *)NULL,
                                               (const int *)NULL, (int *)NULL, total, 0, 32, dev->stream), op);
  const size_t arr = ((size_t)total * 4 + 255) & ~(size_t)255;
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, 3 * arr + sort_bytes, &scr, op));
  char *base = (char *)scr;
  int32_t *key = (int32_t *)base;
  int *row_in = (int *)(base + arr), *row = (int *)(base + 2 * arr);
  void *sort_tmp = base + 3 * arr;
  iota_k<<<c5k_grid_for(total, 256), 256, 0, dev->stream>>>(total, row_in);
  C5K_CUDA_LAUNCHED(op);
  C5K_CUDA_TRY(cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, tokens, key, row_in, row, total, 0, 32,
                                               dev->stream), op);
  const unsigned cb = (unsigned)((dim + C5K_ROW_THREADS - 1) / C5K_ROW_THREADS);
  embedding_bwd_tok<<<dim3((unsigned)total, cb), C5K_ROW_THREADS, 0, dev->stream>>>(total, dim, key, row, dx, dtok);
  C5K_CUDA_LAUNCHED(op);
  embedding_bwd_pos<<<dim3((unsigned)n, cb), C5K_ROW_THREADS, 0, dev->stream>>>(batch, n, pos0, dim, dx, dpos);
  C5K_CUDA_LAUNCHED(op);
  return C5_OK;
}
