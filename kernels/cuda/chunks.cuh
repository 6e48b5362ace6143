/* chunks.cuh - ragged rows (kernels.h c5k_rows) on the device, for the
   per-step ops lib/cd.c and lib/topk.c call between collectives (cd.cu,
   topk.cu): one block a chunk of C5K_CHUNK elements, the CPU's partition,
   so that each per-chunk partial covers the CPU's elements and a per-row
   merge adds them in chunk order as the CPU does. The row arrays are host
   memory: they go up into the op's scratch in one copy. */
#ifndef C5_CUDA_CHUNKS_CUH
#define C5_CUDA_CHUNKS_CUH
#include <stdlib.h>
#include <string.h>
#include "cuda_internal.cuh"

/* Threads of a chunk's block: 16 elements a thread. */
#define C5K_CHUNK_THREADS 256

struct c5k_drows {
  long rows, nc;                    /* rows, chunks in all */
  const long *off, *len, *cstart;   /* device: [rows], [rows], [rows + 1] */
};

/* Row of chunk c: the largest r with cstart[r] <= c (the CPU's c5k_chunk_row,
   so a chunk after empty rows finds its own). */
__device__ __forceinline__ long c5k_drows_row(const c5k_drows &G, long c)
{
  long lo = 0, hi = G.rows - 1;
  while (lo < hi) {
    long mid = (lo + hi + 1) / 2;
    if (G.cstart[mid] <= c) lo = mid; else hi = mid - 1;
  }
  return lo;
}

/* Element range [*j0, *j1) (absolute) of chunk c of row r (c5k_chunk_range). */
__device__ __forceinline__ void c5k_drows_range(const c5k_drows &G, long r, long c, long *j0, long *j1)
{
  long b = (c - G.cstart[r]) * C5K_CHUNK, e = b + C5K_CHUNK;
  if (e > G.len[r]) e = G.len[r];
  *j0 = G.off[r] + b;
  *j1 = G.off[r] + e;
}

/* Scratch bytes the row arrays take (a multiple of 256: what follows stays aligned). */
static inline size_t c5k_drows_bytes(long rows) { return ((3 * rows + 1) * sizeof(long) + 255) & ~(size_t)255; }

/* R's arrays into dst (device, c5k_drows_bytes(R->rows)), G pointing at them.
   From pageable memory the copy has taken the data when it returns, so the
   host buffer goes at once. */
static inline c5_status c5k_drows_put(c5k_cuda_dev *dev, const c5k_rows *R, void *dst, c5k_drows *G, const char *op)
{
  const long rows = R->rows;
  const size_t bytes = (3 * rows + 1) * sizeof(long);
  long *h = (long *)malloc(bytes);
  if (!h) return C5K_ERR(C5_ERR_MEM, "%s: out of host memory for the plan of %ld rows", op, rows);
  memcpy(h, R->off, rows * sizeof(long));
  memcpy(h + rows, R->len, rows * sizeof(long));
  memcpy(h + 2 * rows, R->cstart, (rows + 1) * sizeof(long));
  cudaError_t e = cudaMemcpyAsync(dst, h, bytes, cudaMemcpyHostToDevice, dev->stream);
  free(h);
  if (e != cudaSuccess) return C5K_ERR(C5_ERR_CUDA, "%s: copying the plan of %ld rows: %s", op, rows, cudaGetErrorString(e));
  const long *d = (const long *)dst;
  *G = { rows, R->cstart[rows], d, d + rows, d + 2 * rows };
  return C5_OK;
}

/* The op's device, its rows' plan in scratch (G), and part_bytes of partials after it (*part). */
static inline c5_status c5k_drows_setup(c5k_ctx *ctx, const c5k_rows *R, size_t part_bytes, const char *op,
                                        c5k_cuda_dev **dev, c5k_drows *G, void **part)
{
  C5_CALL_K(c5k_cuda_of(ctx, op, dev));
  void *scr;
  const size_t gb = c5k_drows_bytes(R->rows);
  C5_CALL_K(c5k_cuda_scratch(*dev, gb + part_bytes, &scr, op));
  C5_CALL_K(c5k_drows_put(*dev, R, scr, G, op));
  *part = (char *)scr + gb;
  return C5_OK;
}

/* Blocks of 128 threads for one thread a row (the per-row merges). */
static inline unsigned c5k_drows_blocks(long rows) { return (unsigned)((rows + 127) / 128); }
#endif
