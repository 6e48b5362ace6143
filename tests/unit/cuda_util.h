/* cuda_util.h - what the GPU tests share: skip (77) where no GPU is
   present, so CI on a machine without one passes them by; device buffers
   through the backend; the norm-wise error colt5-golden measures. */
#ifndef C5_CUDA_UTIL_H
#define C5_CUDA_UTIL_H
#include <string.h>
#include "harness.h"

/* The CUDA backend on GPU (node-local rank) % GPUs, as colt5-train picks it: under mpirun on a machine
   with a GPU per rank the sharded tests then run over NCCL, on one GPU through host memory. Exits 77 when
   the runtime sees no GPU. */
static inline c5_backend *t_cuda_backend_or_skip(void)
{
  const int ngpu = c5_backend_device_count(C5_BACKEND_CUDA);
  if (ngpu == 0) {
    fprintf(stderr, "no CUDA device: skipped\n");
    MPI_Finalize();
    exit(77);
  }
  int local = 0;
  const char *vars[] = { "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_LOCAL_RANK", "SLURM_LOCALID" };
  for (size_t k = 0; k < sizeof vars / sizeof *vars; k++) {
    const char *v = getenv(vars[k]);
    if (v && *v) {
      local = atoi(v);
      break;
    }
  }
  c5_backend *be = NULL;
  if (c5_backend_create(C5_BACKEND_CUDA, local % ngpu, &be) != C5_OK) {
    fprintf(stderr, "c5_backend_create(cuda): %s\n", c5_last_error());
    MPI_Finalize();
    exit(1);
  }
  return be;
}

/* A device copy of host (bytes), or NULL with the error printed. */
static inline void *t_dev_upload(c5_backend *be, const void *host, size_t bytes)
{
  void *p = NULL;
  if (c5_backend_alloc(be, bytes, &p) != C5_OK || c5_backend_memcpy(be, p, host, bytes) != C5_OK) {
    fprintf(stderr, "device upload of %zu bytes: %s\n", bytes, c5_last_error());
    c5_backend_free(be, p);
    return NULL;
  }
  return p;
}

/* bf16 bits of f, rounded to nearest even (finite f), and back: the tests' bf16 tensors on the host. */
static inline uint16_t t_bf16(float f)
{
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}
static inline double t_unbf16(uint16_t h)
{
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* ||a - b|| / ||b|| over n doubles (b's norm 0: ||a||); NaN anywhere gives NaN. */
static inline double t_normwise(const double *a, const double *b, long n)
{
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static inline void t_to_double(const c5_real *x, long n, double *out)
{
  for (long i = 0; i < n; i++) out[i] = (double)x[i];
}
#endif
