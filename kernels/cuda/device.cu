/* device.cu - the CUDA backend's device object: one non-blocking stream per
   backend (every op of the backend is ordered on it), a cuBLASLt handle with
   its workspace, and device memory through the stream-ordered allocator.
   A lane is a second such object on the same device and handle, with its
   own stream (of the highest priority), workspace and scratch, for work that
   may run beside the device's own (the routers beside the light branch);
   the two streams meet only at events (c5k_cuda_fork / join / meet). */
#include <stdio.h>
#include "cuda_internal.cuh"

extern "C" int c5k_cuda_device_count(void)
{
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();   /* no driver, no device: not an error to keep */
    return 0;
  }
  return n;
}

extern "C" c5_status c5k_cuda_dev_create(int device, c5k_cuda_dev **out)
{
  *out = NULL;
  int n = c5k_cuda_device_count();
  if (device < 0 || device >= n)
    return C5K_ERR(C5_ERR_CUDA, "cuda backend: device %d does not exist (%d CUDA devices visible)", device, n);
  c5k_cuda_dev *d = (c5k_cuda_dev *)calloc(1, sizeof *d);
  if (!d) return C5K_ERR(C5_ERR_MEM, "cuda backend: out of host memory");
  d->device = device;
  c5_status st = C5_OK;
  cudaError_t e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&d->sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&d->ev, cudaEventDisableTiming);
  d->lt_ws_bytes = (size_t)32 << 20;
  if (e == cudaSuccess) e = cudaMalloc(&d->lt_ws, d->lt_ws_bytes);
  if (e != cudaSuccess) st = C5K_ERR(C5_ERR_CUDA, "cuda backend: device %d: %s", device, cudaGetErrorString(e));
  if (st == C5_OK && cublasLtCreate(&d->lt) != CUBLAS_STATUS_SUCCESS)
    st = C5K_ERR(C5_ERR_CUDA, "cuda backend: device %d: cublasLtCreate failed", device);
  if (st != C5_OK) {
    c5k_cuda_dev_destroy(d);
    return st;
  }
  *out = d;
  return C5_OK;
}

extern "C" void c5k_cuda_dev_destroy(c5k_cuda_dev *d)
{
  if (!d) return;
  cudaSetDevice(d->device);
  if (d->stream) cudaStreamSynchronize(d->stream);
  if (d->scratch) cudaFree(d->scratch);
  if (d->cvt) cudaFree(d->cvt);
  if (d->mir) cudaFree(d->mir);
  for (int i = 0; i < C5K_LT_ALGOS; i++) c5k_lt_algo_drop(&d->algos[i]);
  if (d->lt && !d->lane_of) cublasLtDestroy(d->lt);
  if (d->lt_ws) cudaFree(d->lt_ws);
  if (d->ev) cudaEventDestroy(d->ev);
  if (d->stream) cudaStreamDestroy(d->stream);
  free(d);
}

/* The workspace as large as the device's, so that cuBLASLt's heuristic picks the same algorithms on both (the
   same bits with or without the lane) */
extern "C" c5_status c5k_cuda_lane_create(c5k_cuda_dev *dev, c5k_cuda_dev **out)
{
  *out = NULL;
  c5k_cuda_dev *d = (c5k_cuda_dev *)calloc(1, sizeof *d);
  if (!d) return C5K_ERR(C5_ERR_MEM, "cuda backend: out of host memory");
  d->device = dev->device;
  d->sms = dev->sms;
  d->matmul = dev->matmul;
  d->lt = dev->lt;
  d->lane_of = 1;
  d->lt_ws_bytes = dev->lt_ws_bytes;
  int lo = 0, hi = 0;
  cudaError_t e = cudaSetDevice(d->device);
  if (e == cudaSuccess) e = cudaDeviceGetStreamPriorityRange(&lo, &hi);
  if (e == cudaSuccess) e = cudaStreamCreateWithPriority(&d->stream, cudaStreamNonBlocking, hi);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&d->ev, cudaEventDisableTiming);
  if (e == cudaSuccess) e = cudaMalloc(&d->lt_ws, d->lt_ws_bytes);
  if (e != cudaSuccess) {
    c5k_cuda_dev_destroy(d);
    return C5K_ERR(C5_ERR_CUDA, "cuda backend: device %d: a second stream: %s", dev->device, cudaGetErrorString(e));
  }
  *out = d;
  return C5_OK;
}

/* waiter's stream waits for the work queued on `on` so far */
static c5_status wait_for(c5k_cuda_dev *waiter, c5k_cuda_dev *on, const char *what)
{
  C5K_CUDA_TRY(cudaEventRecord(on->ev, on->stream), what);
  C5K_CUDA_TRY(cudaStreamWaitEvent(waiter->stream, on->ev, 0), what);
  return C5_OK;
}

extern "C" c5_status c5k_cuda_mark_create(void **mark)
{
  cudaEvent_t e = NULL;
  C5K_CUDA_TRY(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cuda backend: a mark");
  *mark = (void *)e;
  return C5_OK;
}

extern "C" void c5k_cuda_mark_destroy(void *mark)
{
  if (mark) cudaEventDestroy((cudaEvent_t)mark);
}

extern "C" c5_status c5k_cuda_mark(c5k_cuda_dev *d, void *mark)
{
  C5K_CUDA_TRY(cudaEventRecord((cudaEvent_t)mark, d->stream), "cuda backend: mark");
  return C5_OK;
}

extern "C" c5_status c5k_cuda_wait_mark(c5k_cuda_dev *d, void *mark)
{
  C5K_CUDA_TRY(cudaStreamWaitEvent(d->stream, (cudaEvent_t)mark, 0), "cuda backend: wait for a mark");
  return C5_OK;
}

extern "C" c5_status c5k_cuda_fork(c5k_cuda_dev *dev, c5k_cuda_dev *lane)
{
  if (dev->lane_open++) return C5_OK;
  const c5_status st = wait_for(lane, dev, "cuda backend: fork");
  if (st != C5_OK) dev->lane_open--;   /* no region: the caller will not join */
  return st;
}

extern "C" c5_status c5k_cuda_join(c5k_cuda_dev *dev, c5k_cuda_dev *lane)
{
  if (dev->lane_open <= 0) return C5K_ERR(C5_ERR_INTERNAL, "cuda backend: a join without its fork");
  return --dev->lane_open ? C5_OK : wait_for(dev, lane, "cuda backend: join");
}

extern "C" c5_status c5k_cuda_lane_follow(c5k_cuda_dev *dev, c5k_cuda_dev *lane)
{
  return wait_for(lane, dev, "cuda backend: the lane waits");
}

extern "C" c5_status c5k_cuda_stream_follow(c5k_cuda_dev *dev, c5k_cuda_dev *lane)
{
  return wait_for(dev, lane, "cuda backend: the stream waits");
}

extern "C" c5_status c5k_cuda_meet(c5k_cuda_dev *dev, c5k_cuda_dev *lane)
{
  C5_CALL_K(wait_for(dev, lane, "cuda backend: meet"));
  return wait_for(lane, dev, "cuda backend: meet");
}

extern "C" c5_status c5k_cuda_alloc(c5k_cuda_dev *d, size_t bytes, void **ptr)
{
  *ptr = NULL;
  if (bytes == 0) return C5_OK;
  cudaError_t e = cudaMallocAsync(ptr, bytes, d->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(d->stream);   /* usable on any stream on return */
  if (e != cudaSuccess) {
    *ptr = NULL;
    return C5K_ERR(e == cudaErrorMemoryAllocation ? C5_ERR_MEM : C5_ERR_CUDA, "cuda backend: allocating %zu bytes on "
                   "device %d: %s", bytes, d->device, cudaGetErrorString(e));
  }
  return C5_OK;
}

extern "C" c5_status c5k_cuda_free(c5k_cuda_dev *d, void *ptr)
{
  if (!ptr) return C5_OK;
  C5K_CUDA_TRY(cudaFreeAsync(ptr, d->stream), "cuda backend: free");
  return C5_OK;
}

extern "C" c5_status c5k_cuda_memcpy(c5k_cuda_dev *d, void *dst, const void *src, size_t bytes)
{
  if (bytes == 0) return C5_OK;
  C5K_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, d->stream), "cuda backend: copy");
  C5K_CUDA_TRY(cudaStreamSynchronize(d->stream), "cuda backend: copy");
  return C5_OK;
}

/* Host to device without waiting for the stream's queued work where that is safe: from pageable host memory
   cudaMemcpyAsync returns once the bytes are staged (src may be reused), so the copy is ordered on the stream
   and the device keeps working; from pinned or device memory the copy reads src later, so it waits, as
   c5k_cuda_memcpy. */
extern "C" c5_status c5k_cuda_upload(c5k_cuda_dev *d, void *dst, const void *src, size_t bytes)
{
  if (bytes == 0) return C5_OK;
  cudaPointerAttributes at;
  C5K_CUDA_TRY(cudaPointerGetAttributes(&at, src), "cuda backend: upload");
  if (at.type != cudaMemoryTypeUnregistered) return c5k_cuda_memcpy(d, dst, src, bytes);
  C5K_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, d->stream), "cuda backend: upload");
  return C5_OK;
}

extern "C" c5_status c5k_cuda_sync(c5k_cuda_dev *d)
{
  C5K_CUDA_TRY(cudaStreamSynchronize(d->stream), "cuda backend: synchronize");
  return C5_OK;
}

extern "C" void c5k_cuda_set_matmul(c5k_cuda_dev *d, int mode) { d->matmul = mode; }

extern "C" c5_status c5k_cuda_mem_stats(c5k_cuda_dev *d, int reset, c5k_cuda_mem *m)
{
  const char *what = "cuda backend: memory statistics";
  size_t free_b = 0, total_b = 0;
  cudaMemPool_t pool;
  /* the pool cudaMallocAsync draws from: the device's current one */
  unsigned long long v[4] = { 0, 0, 0, 0 };   /* the runtime's cuuint64_t (cuda.h, not included here) */
  const cudaMemPoolAttr attr[4] = { cudaMemPoolAttrReservedMemCurrent, cudaMemPoolAttrUsedMemCurrent,
                                    cudaMemPoolAttrReservedMemHigh, cudaMemPoolAttrUsedMemHigh };
  C5K_CUDA_TRY(cudaSetDevice(d->device), what);
  C5K_CUDA_TRY(cudaMemGetInfo(&free_b, &total_b), what);
  C5K_CUDA_TRY(cudaDeviceGetMemPool(&pool, d->device), what);
  for (int i = 0; i < 4; i++) C5K_CUDA_TRY(cudaMemPoolGetAttribute(pool, attr[i], &v[i]), what);
  if (reset) {   /* the only value these two accept: 0, which restarts them at the current use */
    unsigned long long zero = 0;
    C5K_CUDA_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero), what);
    C5K_CUDA_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero), what);
  }
  m->dev_total = total_b;
  m->dev_used = total_b - free_b;
  m->pool_reserved = (size_t)v[0];
  m->pool_used = (size_t)v[1];
  m->pool_reserved_high = (size_t)v[2];
  m->pool_used_high = (size_t)v[3];
  return C5_OK;
}

extern "C" void *c5k_cuda_stream(c5k_cuda_dev *d) { return (void *)d->stream; }

extern "C" c5_status c5k_cuda_query(c5k_cuda_dev *d, int *done)
{
  cudaError_t e = cudaStreamQuery(d->stream);
  *done = e == cudaSuccess;
  if (e == cudaSuccess || e == cudaErrorNotReady) {
    (void)cudaGetLastError();   /* not ready is no error to keep */
    return C5_OK;
  }
  return C5K_ERR(C5_ERR_CUDA, "cuda backend (device %d): waiting for the stream: %s", d->device,
                 cudaGetErrorString(e));
}

extern "C" c5_status c5k_cuda_bus_id(c5k_cuda_dev *d, char *id, int len)
{
  C5K_CUDA_TRY(cudaDeviceGetPCIBusId(id, len, d->device), "cuda backend: PCI bus id");
  return C5_OK;
}

extern "C" c5_status c5k_cuda_device_name(c5k_cuda_dev *d, char *name, int len)
{
  cudaDeviceProp p;
  C5K_CUDA_TRY(cudaGetDeviceProperties(&p, d->device), "cuda backend: device name");
  snprintf(name, (size_t)len, "%s", p.name);
  return C5_OK;
}
