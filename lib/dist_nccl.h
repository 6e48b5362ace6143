/* dist_nccl.h - NCCL under lib/dist.c (private to lib/): a communicator over
   the ranks of a c5_dist, each on its backend's GPU, and the collectives dist
   moves device buffers with, issued on the backend's stream. dist.c does the
   MPI side (the ncclUniqueId's broadcast, the agreement after each call);
   these functions speak NCCL only. Built when configure finds NCCL
   (C5_HAVE_NCCL); not installed. */
#ifndef C5_DIST_NCCL_H
#define C5_DIST_NCCL_H
#include "c5_internal.h"

#define C5_NCCL_ID_BYTES 128   /* NCCL_UNIQUE_ID_BYTES: checked where nccl.h is seen */

typedef struct c5_nccl c5_nccl;

/* A new communicator's id (rank 0 makes it, dist broadcasts it). */
c5_status c5_nccl_get_id(unsigned char id[C5_NCCL_ID_BYTES]);
/* Collective over the size ranks that hold id: rank on be's device (a CUDA backend). Logs the NCCL version
   loaded once per process (rank 0 of the first communicator). */
c5_status c5_nccl_create(const unsigned char id[C5_NCCL_ID_BYTES], int rank, int size, const c5_backend *be,
                         c5_nccl **out);
/* NULL-safe; an aborted communicator is only freed. */
void c5_nccl_destroy(c5_nccl **n);

/* Issued on the stream, not waited for (c5_nccl_wait). In place, as NCCL defines it:
   allgather: buf [size][slot bytes], this rank's slot filled; every slot filled after.
   reduce_scatter: buf [size][count] summed over ranks; the sum of slot rank lands in slot rank.
   allreduce_sum: buf [count] summed over ranks.
   sendrecv: one group of a send of sbytes to dest and a receive of rbytes from src (-1: none). */
c5_status c5_nccl_allgather(c5_nccl *n, void *buf, size_t slot);
c5_status c5_nccl_reduce_scatter(c5_nccl *n, void *buf, long count, c5_elem type);
c5_status c5_nccl_allreduce_sum(c5_nccl *n, void *buf, long count, c5_elem type);
c5_status c5_nccl_sendrecv(c5_nccl *n, const void *send, size_t sbytes, int dest, void *recv, size_t rbytes, int src);
/* Until the stream's work is done: ncclCommGetAsyncError polled, at most C5_NCCL_TIMEOUT seconds (default
   600); an error or the timeout aborts the communicator (ncclCommAbort: every later call fails) and returns
   C5_ERR_NCCL naming what. dist.c agrees the result over MPI, so every rank returns the error. */
c5_status c5_nccl_wait(c5_nccl *n, const char *what);
#endif
