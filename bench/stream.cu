/* stream.cu - the memory ceilings the coordinate-descent timings are read
   against (bench/cuda_bench.c): a read-only streaming kernel (16-byte
   loads, a grid of a few blocks a multiprocessor, one word written a
   block so nothing is optimized away) and a device-to-device copy, timed
   with CUDA events, median of reps, over a buffer of a given size (a few
   GB: device memory; 32 MB: what a 1 x 8M row reads, L2-sized). */
#include <algorithm>
#include <vector>
#include <cuda_runtime.h>

__global__ void read_only(const float4 *__restrict__ x, size_t n4, float *out)
{
  float acc = 0.f;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
    float4 v = __ldg(x + i);
    acc += v.x + v.y + v.z + v.w;
  }
  if (acc == 1234.5f) out[blockIdx.x] = acc;   /* never true for the data below; keeps the loads */
}

static double median(std::vector<float> v)
{
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/* GB/s of reading bytes (kind 0) or of copying them (kind 1, read + write counted); < 0 on error. */
extern "C" double c5_bench_bandwidth(size_t bytes, int kind, int reps)
{
  float *x = NULL, *y = NULL, *out = NULL;
  int dev = 0, sms = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (cudaMalloc(&x, bytes) != cudaSuccess || cudaMalloc(&out, 4096 * sizeof(float)) != cudaSuccess) return -1;
  if (kind == 1 && cudaMalloc(&y, bytes) != cudaSuccess) return -1;
  cudaMemset(x, 0x3c, bytes);   /* 0.0117 in every float: not zero, not a special value */
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int r = 0; r < reps + 3; r++) {
    cudaEventRecord(e0);
    if (kind == 0) read_only<<<sms * 8, 512>>>((const float4 *)x, bytes / 16, out);
    else cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t;
    cudaEventElapsedTime(&t, e0, e1);
    if (r >= 3) ms.push_back(t);
  }
  cudaError_t err = cudaGetLastError();
  cudaFree(x); cudaFree(y); cudaFree(out);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  if (err != cudaSuccess) return -1;
  return (kind == 1 ? 2.0 : 1.0) * bytes / (median(ms) * 1e-3) / 1e9;
}
