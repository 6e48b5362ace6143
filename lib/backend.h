/* backend.h - the backend object behind the public c5_backend handle
   (private to lib/): which device computes, and its kernel table. Modules
   keep the backend they were created on and call only be->ops. */
#ifndef C5_BACKEND_H
#define C5_BACKEND_H
#include "kernels.h"
#include "colt5.h"

struct c5_backend {
  c5_backend_kind kind;
  int device;             /* CUDA device ordinal; 0 on the CPU */
  const c5k_ops *ops;     /* the device's kernel table */
  int is_static;          /* the process-wide CPU backend: never freed */
};
#endif
