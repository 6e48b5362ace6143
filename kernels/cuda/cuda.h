/* cuda.h - the CUDA backend's device object, seen from C (lib/backend.c):
   made and freed here, carried by the backend and handed to every op in
   c5k_ctx.dev. Plain C declarations: lib/ links them but never includes a
   CUDA header. */
#ifndef C5_KERNELS_CUDA_H
#define C5_KERNELS_CUDA_H
#include <stddef.h>
#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct c5k_cuda_dev c5k_cuda_dev;

extern const c5k_ops c5k_cuda_ops;

/* GPUs visible to this process; 0 when the runtime finds none or fails. */
int c5k_cuda_device_count(void);
/* The device's stream (non-blocking), cuBLASLt handle and workspace. */
c5_status c5k_cuda_dev_create(int device, c5k_cuda_dev **out);
void c5k_cuda_dev_destroy(c5k_cuda_dev *dev);
/* A lane: a second stream (the highest priority) on dev's device and cuBLASLt handle, with its own workspace
   and scratch, for work that may overlap dev's (its ops take the lane as their device). Destroyed before dev. */
c5_status c5k_cuda_lane_create(c5k_cuda_dev *dev, c5k_cuda_dev **out);
/* Fork: the lane waits for the work queued on dev so far; join: dev waits for the lane's. Regions nest (a
   count on dev): only the outermost fork and join wait, so an op that brackets its own lane work stays
   correct alone and overlaps inside a caller's region. Meet: each waits for the other's work so far (before
   a collective on dev's stream reads what the lane wrote). */
c5_status c5k_cuda_fork(c5k_cuda_dev *dev, c5k_cuda_dev *lane);
c5_status c5k_cuda_join(c5k_cuda_dev *dev, c5k_cuda_dev *lane);
c5_status c5k_cuda_meet(c5k_cuda_dev *dev, c5k_cuda_dev *lane);
/* One way (no region count): the lane waits for dev's work so far, or dev for the lane's */
c5_status c5k_cuda_lane_follow(c5k_cuda_dev *dev, c5k_cuda_dev *lane);
c5_status c5k_cuda_stream_follow(c5k_cuda_dev *dev, c5k_cuda_dev *lane);
/* A mark (an event): recorded on a device's stream at a point of its work, waited for by another's */
c5_status c5k_cuda_mark_create(void **mark);
void c5k_cuda_mark_destroy(void *mark);
c5_status c5k_cuda_mark(c5k_cuda_dev *dev, void *mark);
c5_status c5k_cuda_wait_mark(c5k_cuda_dev *dev, void *mark);
/* Device memory, ordered on the device's stream. */
c5_status c5k_cuda_alloc(c5k_cuda_dev *dev, size_t bytes, void **ptr);
c5_status c5k_cuda_free(c5k_cuda_dev *dev, void *ptr);
/* Any direction (unified addressing); returns when the copy is done. */
c5_status c5k_cuda_memcpy(c5k_cuda_dev *dev, void *dst, const void *src, size_t bytes);
c5_status c5k_cuda_upload(c5k_cuda_dev *dev, void *dst, const void *src, size_t bytes);
c5_status c5k_cuda_sync(c5k_cuda_dev *dev);
/* How F32-compute products (gemm_ex, gemm) round their f32 inputs on this device: c5_matmul's values
   (0 exact, 1 TF32, 2 bf16). */
void c5k_cuda_set_matmul(c5k_cuda_dev *dev, int mode);
/* Device memory in bytes, for benchmarks: what the whole device has in use (cudaMemGetInfo: every
   process and allocator, the context included) and the high watermarks of the pool the backend's
   stream-ordered allocations come from (its memory held from the driver, and handed out to callers).
   reset: the watermarks restart from the pool's current use after they are read. */
typedef struct {
  size_t dev_total, dev_used;
  size_t pool_reserved, pool_used, pool_reserved_high, pool_used_high;
} c5k_cuda_mem;
c5_status c5k_cuda_mem_stats(c5k_cuda_dev *dev, int reset, c5k_cuda_mem *out);
/* For the NCCL collectives of lib/dist_nccl.c: the stream they are issued on (a cudaStream_t), whether
   the work queued on it so far is done (1 done, 0 pending; an error as C5_ERR_CUDA), and the device's PCI
   bus id (ranks sharing one GPU cannot form an NCCL communicator). */
void *c5k_cuda_stream(c5k_cuda_dev *dev);
c5_status c5k_cuda_query(c5k_cuda_dev *dev, int *done);
c5_status c5k_cuda_bus_id(c5k_cuda_dev *dev, char *id, int len);
/* The device's product name ("NVIDIA H200"), for a benchmark's report. */
c5_status c5k_cuda_device_name(c5k_cuda_dev *dev, char *name, int len);

#ifdef __cplusplus
}
#endif
#endif
