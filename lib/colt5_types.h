/* colt5_types.h - the types every layer shares: the CPU precision, the
   status code, and the element types and buffer descriptor of the backend
   seam. Plain C that also compiles as CUDA C++ (nvcc) and needs no MPI, so
   kernels.h can include it on either side of the seam. */
#ifndef COLT5_TYPES_H
#define COLT5_TYPES_H

#include <stddef.h>
#include "colt5_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Small inline helpers usable on both sides of the seam (host C, CUDA device code). */
#ifdef __CUDACC__
#define C5_HD __host__ __device__
#else
#define C5_HD
#endif

/* ---- precision: chosen at configure time (--with-precision) ---------------- */
#if C5_USE_DOUBLE
typedef double c5_real;
#define C5_REAL_NAME "double"
#else
typedef float c5_real;
#define C5_REAL_NAME "single"
#endif

/* ---- status and errors ---------------------------------------------------------- */
typedef enum {
  C5_OK = 0,
  C5_ERR_ARG,      /* an argument or option is invalid */
  C5_ERR_SHAPE,    /* sizes do not agree */
  C5_ERR_MEM,      /* allocation failed */
  C5_ERR_IO,       /* file, dataset or attribute problem */
  C5_ERR_MPI,
  C5_ERR_CUDA,
  C5_ERR_NCCL,
  C5_ERR_NOTIMPL,  /* a feature this build does not provide */
  C5_ERR_INTERNAL,
  C5_ERR_NUMERIC,  /* a NaN or Inf where a finite value is needed */
  C5_NUM_STATUS
} c5_status;

/* ---- element types and buffers of the backend seam ------------------------------- */
/* The CPU path computes in c5_real; a device backend keeps fp32 master
   parameters and gradients beside bf16 matmul inputs and activations, so a
   tensor's element type is a run-time property there. */
typedef enum { C5_DTYPE_F64, C5_DTYPE_F32, C5_DTYPE_BF16, C5_NUM_DTYPE } c5_dtype;
#define C5_DTYPE_REAL (C5_USE_DOUBLE ? C5_DTYPE_F64 : C5_DTYPE_F32)

C5_HD static inline size_t c5_dtype_size(c5_dtype t)
{
  return t == C5_DTYPE_F64 ? 8 : t == C5_DTYPE_F32 ? 4 : t == C5_DTYPE_BF16 ? 2 : 0;
}
C5_HD static inline const char *c5_dtype_name(c5_dtype t)
{
  return t == C5_DTYPE_F64 ? "f64" : t == C5_DTYPE_F32 ? "f32" : t == C5_DTYPE_BF16 ? "bf16" : "?";
}

/* Where a buffer's memory lives. */
typedef enum { C5_MEM_HOST, C5_MEM_DEVICE } c5_memloc;

/* A buffer: count elements of type at ptr, in host or device memory. */
typedef struct {
  void *ptr;
  c5_dtype type;
  long count;
  c5_memloc loc;
} c5_buf;

#ifdef __cplusplus
}
#endif
#endif
