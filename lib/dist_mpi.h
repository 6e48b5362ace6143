/* dist_mpi.h - the MPI-typed internals (private to lib/): MPI error codes
   into the error record, and the communicator behind a c5_dist. Included
   only by the files that speak MPI - dist.c (every collective), error.c
   (MPI's error text) and h5.c (parallel HDF5 opens files on the
   communicator) - so that the rest of lib/ compiles without MPI, as a
   device backend's collectives (NCCL) will need. Not installed. */
#ifndef C5_DIST_MPI_H
#define C5_DIST_MPI_H
#include "c5_internal.h"
#include "colt5_mpi.h"

/* MPI error code -> C5_ERR_MPI with MPI's own text and the failing call. */
c5_status c5_err_mpi(int code, const char *call, const char *file, int line);
#define C5_MPI(call) do { int e_ = (call); \
    if (e_ != MPI_SUCCESS) return c5_err_mpi(e_, #call, __FILE__, __LINE__); } while (0)

/* The communicator (for parallel HDF5 in the io layer). */
MPI_Comm c5_dist_comm(const c5_dist *d);
#endif
