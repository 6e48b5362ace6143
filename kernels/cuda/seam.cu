/* seam.cu - compiled by nvcc whenever it is present (CI has it): the kernel
   interface must stay valid CUDA C++ with C linkage and no MPI, so that the
   CUDA backend can fill the same ops table as kernels/cpu. A device kernel
   reads a c5_buf and the ops table is named, so both headers are exercised. */
#include "kernels.h"

__global__ static void seam_touch(c5_buf b, c5_status *st)
{
  if (threadIdx.x == 0 && blockIdx.x == 0) *st = b.count == (long)c5_dtype_size(b.type) ? C5_OK : C5_ERR_INTERNAL;
}

extern "C" const char *c5k_cuda_seam_name(void)
{
  (void)seam_touch;
  static const c5k_ops *cpu = &c5k_cpu_ops;   /* C linkage: the symbol nvcc sees is the C one */
  return cpu ? "cuda seam" : "";
}
