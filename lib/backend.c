/* backend.c - backends chosen at run time (ggml's backends, PETSc's impls):
   one binary may hold several, so a test can run one against another on
   the same inputs. The CPU backend always exists; others come with their
   kernels (configure says which this build has). */
#include "c5_internal.h"
#include "backend.h"

static const c5_backend cpu_backend = { .kind = C5_BACKEND_CPU, .device = 0, .ops = &c5k_cpu_ops, .is_static = 1 };

const c5_backend *c5_backend_cpu(void) { return &cpu_backend; }

c5_status c5_backend_create(c5_backend_kind kind, int device, c5_backend **out)
{
  C5_CHECK(out != NULL, C5_ERR_ARG, "c5_backend_create: out is NULL");
  *out = NULL;
  switch (kind) {
  case C5_BACKEND_CPU:
    C5_CHECK(device == 0, C5_ERR_ARG, "cpu backend: device %d (the CPU is device 0)", device);
    C5_CALLOC(*out, 1);
    **out = cpu_backend;
    (*out)->is_static = 0;
    return C5_OK;
  case C5_BACKEND_CUDA:
    return C5_ERR(C5_ERR_NOTIMPL, "cuda backend (device %d): this build has no CUDA kernels yet", device);
  default:
    return C5_ERR(C5_ERR_ARG, "c5_backend_create: unknown backend kind %d", (int)kind);
  }
}

c5_status c5_backend_destroy(c5_backend **be)
{
  if (!be || !*be) return C5_OK;
  if (!(*be)->is_static) free(*be);
  *be = NULL;
  return C5_OK;
}

c5_backend_kind c5_backend_get_kind(const c5_backend *be) { return be->kind; }
const char *c5_backend_name(const c5_backend *be) { return be->ops->name; }
