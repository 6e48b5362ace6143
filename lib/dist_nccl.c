/* dist_nccl.c - the NCCL collectives of lib/dist.c (dist_nccl.h): every call
   on the backend's stream, errors read asynchronously with a timeout, then
   the communicator aborted (NCCL's own error discipline; dist.c agrees the
   error over MPI). */
#include "config.h"
#include "dist_nccl.h"
#if C5_HAVE_NCCL
#include <time.h>
#include <nccl.h>
#include "backend.h"
#include "cuda/cuda.h"

_Static_assert(NCCL_UNIQUE_ID_BYTES == C5_NCCL_ID_BYTES, "dist_nccl.h: C5_NCCL_ID_BYTES is not NCCL's");

struct c5_nccl {
  ncclComm_t comm;      /* NULL once aborted */
  c5k_cuda_dev *dev;
  cudaStream_t stream;
  int rank, size;
};

#define C5_NCCL(call) do { ncclResult_t r_ = (call); if (r_ != ncclSuccess) \
    return C5_ERR(C5_ERR_NCCL, "%s: %s (%s)", #call, ncclGetErrorString(r_), ncclGetLastError(NULL)); } while (0)

c5_status c5_nccl_get_id(unsigned char id[C5_NCCL_ID_BYTES])
{
  ncclUniqueId u;
  C5_NCCL(ncclGetUniqueId(&u));
  memcpy(id, u.internal, C5_NCCL_ID_BYTES);
  return C5_OK;
}

c5_status c5_nccl_create(const unsigned char id[C5_NCCL_ID_BYTES], int rank, int size, const c5_backend *be,
                         c5_nccl **out)
{
  *out = NULL;
  C5_CHECK(be && be->kind == C5_BACKEND_CUDA && be->dev, C5_ERR_ARG, "NCCL: the backend is not a CUDA device");
  static int logged;
  int v = 0;
  C5_NCCL(ncclGetVersion(&v));
  if (!logged && rank == 0) {   /* the library that was loaded, beside the header this build saw */
    fprintf(stderr, "libcolt5: NCCL %d.%d.%d loaded (built with %d.%d.%d), %d ranks\n", v / 10000, v / 100 % 100,
            v % 100, NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH, size);
    logged = 1;
  }
  ncclUniqueId u;
  memcpy(u.internal, id, C5_NCCL_ID_BYTES);
  c5_nccl *n = calloc(1, sizeof *n);
  C5_CHECK(n, C5_ERR_MEM, "NCCL communicator: out of memory");
  n->dev = be->dev;
  n->stream = (cudaStream_t)c5k_cuda_stream(be->dev);
  n->rank = rank;
  n->size = size;
  /* ncclCommInitRank works on the current device: the backend's */
  cudaError_t ce = cudaSetDevice(be->device);
  ncclResult_t r = ce == cudaSuccess ? ncclCommInitRank(&n->comm, size, u, rank) : ncclUnhandledCudaError;
  if (r != ncclSuccess) {
    free(n);
    return C5_ERR(C5_ERR_NCCL, "ncclCommInitRank (rank %d of %d, device %d): %s%s%s", rank, size, be->device,
                  ncclGetErrorString(r), ce != cudaSuccess ? ": " : "", ce != cudaSuccess ? cudaGetErrorString(ce) : "");
  }
  *out = n;
  return C5_OK;
}

void c5_nccl_destroy(c5_nccl **n)
{
  if (!n || !*n) return;
  if ((*n)->comm) ncclCommDestroy((*n)->comm);
  free(*n);
  *n = NULL;
}

static c5_status live(const c5_nccl *n, const char *what)
{
  C5_CHECK(n && n->comm, C5_ERR_NCCL, "NCCL %s: the communicator was aborted after an earlier error", what);
  return C5_OK;
}

static ncclDataType_t nccl_type(c5_elem t)
{
  switch (t) {
  case C5_ELEM_F64: return ncclFloat64;
  case C5_ELEM_F32: return ncclFloat32;
  case C5_ELEM_BF16: return ncclBfloat16;
  case C5_ELEM_U8: return ncclUint8;
  case C5_ELEM_LONG: return ncclInt64;
  }
  return ncclUint8;
}

c5_status c5_nccl_allgather(c5_nccl *n, void *buf, size_t slot)
{
  C5_CALL(live(n, "all-gather"));
  char *b = buf;
  C5_NCCL(ncclAllGather(b + (size_t)n->rank * slot, b, slot, ncclUint8, n->comm, n->stream));
  return C5_OK;
}

c5_status c5_nccl_reduce_scatter(c5_nccl *n, void *buf, long count, c5_elem type)
{
  C5_CALL(live(n, "reduce-scatter"));
  C5_CHECK(type == C5_ELEM_F64 || type == C5_ELEM_F32 || type == C5_ELEM_LONG, C5_ERR_ARG,
           "NCCL reduce-scatter: element type %d is moved, never summed", (int)type);
  size_t es = type == C5_ELEM_F32 ? 4 : 8;
  char *b = buf;
  C5_NCCL(ncclReduceScatter(b, b + (size_t)n->rank * (size_t)count * es, (size_t)count, nccl_type(type), ncclSum,
                            n->comm, n->stream));
  return C5_OK;
}

c5_status c5_nccl_allreduce_sum(c5_nccl *n, void *buf, long count, c5_elem type)
{
  C5_CALL(live(n, "allreduce"));
  C5_CHECK(type == C5_ELEM_F64 || type == C5_ELEM_F32 || type == C5_ELEM_LONG, C5_ERR_ARG,
           "NCCL allreduce: element type %d is moved, never summed", (int)type);
  C5_NCCL(ncclAllReduce(buf, buf, (size_t)count, nccl_type(type), ncclSum, n->comm, n->stream));
  return C5_OK;
}

c5_status c5_nccl_sendrecv(c5_nccl *n, const void *send, size_t sbytes, int dest, void *recv, size_t rbytes, int src)
{
  C5_CALL(live(n, "send/receive"));
  /* one group: the send and the receive progress together, so neighbours that both send first cannot wait on
     each other */
  C5_NCCL(ncclGroupStart());
  ncclResult_t r = ncclSuccess;
  if (dest >= 0) r = ncclSend(send, sbytes, ncclUint8, dest, n->comm, n->stream);
  if (r == ncclSuccess && src >= 0) r = ncclRecv(recv, rbytes, ncclUint8, src, n->comm, n->stream);
  ncclResult_t e = ncclGroupEnd();
  if (r == ncclSuccess) r = e;
  C5_CHECK(r == ncclSuccess, C5_ERR_NCCL, "NCCL send %zu bytes to rank %d, receive %zu from rank %d: %s", sbytes,
           dest, rbytes, src, ncclGetErrorString(r));
  return C5_OK;
}

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

c5_status c5_nccl_wait(c5_nccl *n, const char *what)
{
  C5_CALL(live(n, what));
  const char *env = getenv("C5_NCCL_TIMEOUT");
  double limit = env && *env ? atof(env) : 600.0, t0 = now();
  c5_status st = C5_OK;
  for (;;) {
    ncclResult_t async = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(n->comm, &async);
    if (r != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
      st = C5_ERR(C5_ERR_NCCL, "NCCL %s (rank %d of %d): %s", what, n->rank, n->size,
                  ncclGetErrorString(r != ncclSuccess ? r : async));
      break;
    }
    int done = 0;
    st = c5k_cuda_query(n->dev, &done);
    if (st != C5_OK || done) break;
    if (now() - t0 > limit) {
      st = C5_ERR(C5_ERR_NCCL, "NCCL %s (rank %d of %d): not done after %.0f s (C5_NCCL_TIMEOUT): another rank "
                  "stopped or failed", what, n->rank, n->size, limit);
      break;
    }
    struct timespec pause = { 0, 20000 };
    nanosleep(&pause, NULL);
  }
  if (st != C5_OK) {   /* the communicator cannot be trusted after an error: no later call waits on it */
    ncclCommAbort(n->comm);
    n->comm = NULL;
  }
  return st;
}
#endif
