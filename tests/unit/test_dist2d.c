/* test_dist2d.c - the 2-D layout: with 4 ranks and sequence groups of 2, the
   sequence communicators are {0,1} and {2,3}, the data-parallel ones {0,2}
   and {1,3}; a sum over each adds what its members hold. A group size that
   does not divide the ranks is an error with a message. */
#include <string.h>
#include "harness.h"
#include "../../lib/c5_internal.h"

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int ok = 0, rank, size;
  c5_dist *seq = NULL, *dp = NULL;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 4) { printf("needs 4 ranks: skipped\n"); MPI_Finalize(); return 77; }
  T_OK(c5_dist_create_2d(MPI_COMM_WORLD, 2, &seq, &dp));
  T_CHECK(c5_dist_size(seq) == 2 && c5_dist_rank(seq) == rank % 2, "seq rank %d of %d", c5_dist_rank(seq), c5_dist_size(seq));
  T_CHECK(c5_dist_size(dp) == 2 && c5_dist_rank(dp) == rank / 2, "dp rank %d of %d", c5_dist_rank(dp), c5_dist_size(dp));
  double v = rank, w = rank;
  T_OK(c5_dist_allreduce_sum_double(seq, &v, 1));
  T_OK(c5_dist_allreduce_sum_double(dp, &w, 1));
  T_CHECK(v == (rank < 2 ? 1 : 5), "sequence sum %g", v);
  T_CHECK(w == (rank % 2 ? 4 : 2), "data-parallel sum %g", w);
  c5_dist_destroy(&seq);
  c5_dist_destroy(&dp);
  T_FAILS(c5_dist_create_2d(MPI_COMM_WORLD, 3, &seq, &dp), C5_ERR_ARG, "cannot be cut into sequence groups of 3");
  ok = 1;
fail:
  c5_dist_destroy(&seq);
  c5_dist_destroy(&dp);
  MPI_Finalize();
  return ok ? 0 : 1;
}
