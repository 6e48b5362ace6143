/* xent.cu - softmax cross-entropy over the byte logits on the GPU (the
   masked-byte loss), as kernels/cpu/xent.c: a row's max and sum in one block
   (double, a fixed tree), then the loss and count over the fixed parts of
   C5K_ROWPART rows, rows in order within a part and the parts in order, as
   the CPU adds them. */
#include <math.h>
#include <string.h>
#include "rowsum.cuh"

/* lse[r] = log sum_c exp(l_c), shifted by the row's max; 0 for unscored rows */
__global__ void xent_lse(int classes, const c5_real *logits, const int32_t *targets, double *lse)
{
  const long r = blockIdx.x;
  if (targets[r] < 0) {
    if (threadIdx.x == 0) lse[r] = 0;
    return;
  }
  const c5_real *l = logits + r * classes;
  double m = -INFINITY, s = 0;
  for (int c = threadIdx.x; c < classes; c += blockDim.x) m = fmax(m, (double)l[c]);
  m = c5k_block_reduce(m, c5k_max_op(), -INFINITY);
  for (int c = threadIdx.x; c < classes; c += blockDim.x) s += exp((double)l[c] - m);
  s = c5k_block_sum(s);
  if (threadIdx.x == 0) lse[r] = m + log(s);
}

/* Part p's loss and count (rows in order), and its first row whose target is
   outside -1 .. classes-1 (-1: none). */
__global__ void xent_parts(long rows, long np, int classes, const c5_real *logits, const int32_t *targets,
                           const double *lse, double *acc, double *nacc, long long *bad)
{
  const long p = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (p >= np) return;
  double a = 0;
  long cnt = 0;
  long long b = -1;
  for (long r = p * C5K_ROWPART; r < rows && r < (p + 1) * C5K_ROWPART; r++) {
    const int t = targets[r];
    if (t < -1 || t >= classes) {
      if (b < 0) b = r;
      continue;
    }
    if (t < 0) continue;
    a += lse[r] - (double)logits[r * classes + t];
    cnt++;
  }
  acc[p] = a;
  nacc[p] = (double)cnt;
  bad[p] = b;
}

/* out = {loss, count, first bad row}: the parts in order, one thread */
__global__ void xent_total(long np, const double *acc, const double *nacc, const long long *bad, double *out)
{
  double s = 0, cnt = 0;
  long long b = -1;
  for (long p = 0; p < np; p++) {
    s += acc[p];
    cnt += nacc[p];
    if (b < 0) b = bad[p];
  }
  out[0] = s;
  out[1] = cnt;
  ((long long *)out)[2] = b;
}

/* *loss and *count are host values (the model's scalars): the op waits for them. */
extern "C" c5_status c5k_xent_forward_cuda(c5k_ctx *ctx, long rows, int classes, const c5_real *logits,
                                           const int32_t *targets, double *lse, double *loss, long *count)
{
  const char *op = "xent_forward";
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, op, &dev));
  const long np = rows > 0 ? (rows + C5K_ROWPART - 1) / C5K_ROWPART : 0;
  void *scr;
  C5_CALL_K(c5k_cuda_scratch(dev, (size_t)(3 + 3 * np) * sizeof(double), &scr, op));
  double *out = (double *)scr, *acc = out + 3, *nacc = acc + np, h[3];
  long long *bad = (long long *)(nacc + np), b;
  if (np > 0) {
    xent_lse<<<(unsigned)rows, C5K_ROW_THREADS, 0, dev->stream>>>(classes, logits, targets, lse);
    C5K_CUDA_LAUNCHED(op);
    xent_parts<<<(unsigned)((np + 127) / 128), 128, 0, dev->stream>>>(rows, np, classes, logits, targets, lse, acc,
                                                                     nacc, bad);
    C5K_CUDA_LAUNCHED(op);
  }
  xent_total<<<1, 1, 0, dev->stream>>>(np, acc, nacc, bad, out);
  C5K_CUDA_LAUNCHED(op);
  C5K_CUDA_TRY(cudaMemcpyAsync(h, out, sizeof h, cudaMemcpyDeviceToHost, dev->stream), op);
  C5K_CUDA_TRY(cudaStreamSynchronize(dev->stream), op);
  memcpy(&b, &h[2], sizeof b);
  if (b >= 0) {
    int32_t t;
    C5K_CUDA_TRY(cudaMemcpyAsync(&t, targets + b, sizeof t, cudaMemcpyDeviceToHost, dev->stream), op);
    C5K_CUDA_TRY(cudaStreamSynchronize(dev->stream), op);
    return C5K_ERR(C5_ERR_ARG, "xent_forward: target %d of row %lld outside -1..%d", (int)t, b, classes - 1);
  }
  *loss = h[0];
  *count = (long)h[1];
  return C5_OK;
}

/* dlogits = scale (softmax - onehot) for scored rows, 0 for the others; in double, rounded once */
__global__ void xent_bwd(long total, int classes, const c5_real *logits, const int32_t *targets, const double *lse,
                         double scale, c5_real *dlogits)
{
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
    const long r = i / classes;
    const int c = (int)(i % classes), t = targets[r];
    dlogits[i] = t < 0 ? (c5_real)0 : (c5_real)(scale * (exp((double)logits[i] - lse[r]) - (c == t ? 1.0 : 0.0)));
  }
}

extern "C" c5_status c5k_xent_backward_cuda(c5k_ctx *ctx, long rows, int classes, const c5_real *logits,
                                            const int32_t *targets, const double *lse, double scale, c5_real *dlogits)
{
  c5k_cuda_dev *dev;
  C5_CALL_K(c5k_cuda_of(ctx, "xent_backward", &dev));
  const long total = rows * classes;
  if (total <= 0) return C5_OK;
  xent_bwd<<<c5k_grid_for(total, 256), 256, 0, dev->stream>>>(total, classes, logits, targets, lse, scale, dlogits);
  C5K_CUDA_LAUNCHED("xent_backward");
  return C5_OK;
}
