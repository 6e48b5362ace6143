/* colt5_mpi.h - the MPI-facing part of the public API: making the library's
   communicator object from an MPI communicator. Everything else in colt5.h
   is free of MPI types, so code that never creates a communicator (kernels,
   CUDA translation units) needs no MPI headers. */
#ifndef COLT5_MPI_H
#define COLT5_MPI_H

#include <mpi.h>
#include "colt5.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The MPI datatype of c5_real. */
#if C5_USE_DOUBLE
#define C5_MPI_REAL MPI_DOUBLE
#else
#define C5_MPI_REAL MPI_FLOAT
#endif

/* Collective on comm. Duplicates comm (the caller keeps its own). */
c5_status c5_dist_create(MPI_Comm comm, c5_dist **out);
/* Collective on comm. The 2-D layout: comm's ranks in consecutive groups of
   seq_size share one sequence (*seq: the sequence communicator); ranks at the
   same position of every group form the data-parallel communicator (*dp),
   over which parameter gradients are summed after the sequence sum. The
   size of comm must be a multiple of seq_size. */
c5_status c5_dist_create_2d(MPI_Comm comm, int seq_size, c5_dist **seq, c5_dist **dp);

#ifdef __cplusplus
}
#endif
#endif
