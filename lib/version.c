/* version.c - the version and build of the library that is linked, which may
   differ from the headers a program was compiled with (C5_VERSION_STRING):
   a program that cares compares the two. */
#include "c5_internal.h"
#include "config.h"

const char *colt5_version(void) { return C5_VERSION_STRING; }

const char *colt5_build_info(void)
{
  return "libcolt5 " C5_VERSION_STRING " (" C5_REAL_NAME " precision; MPI " C5_BUILD_MPI "; BLAS " C5_BUILD_BLAS
         "; CUDA kernels " C5_BUILD_CUDA ")";
}
