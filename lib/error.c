/* error.c - the error record behind c5_status: a message plus a file:line
   trace, one per thread (like PETSc's traceback and NCCL's "-> code" log). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "c5_internal.h"

#define C5_ERRMSG_LEN 4096
static _Thread_local char errbuf[C5_ERRMSG_LEN];
static _Thread_local size_t errlen;

static void append(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void append(const char *fmt, ...)
{
  if (errlen >= sizeof errbuf - 1) return;
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(errbuf + errlen, sizeof errbuf - errlen, fmt, ap);
  va_end(ap);
  if (w > 0) errlen += (size_t)w < sizeof errbuf - errlen ? (size_t)w : sizeof errbuf - errlen - 1;
}

const char *c5_status_string(c5_status st)
{
  static const char *names[C5_NUM_STATUS] = {
    [C5_OK] = "success", [C5_ERR_ARG] = "invalid argument", [C5_ERR_SHAPE] = "shape mismatch",
    [C5_ERR_MEM] = "out of memory", [C5_ERR_IO] = "I/O error", [C5_ERR_MPI] = "MPI error",
    [C5_ERR_CUDA] = "CUDA error", [C5_ERR_NCCL] = "NCCL error",
    [C5_ERR_NOTIMPL] = "not implemented in this build", [C5_ERR_INTERNAL] = "internal error" };
  return (st >= 0 && st < C5_NUM_STATUS) ? names[st] : "unknown status";
}

const char *c5_last_error(void) { return errbuf; }

void c5_error_clear(void) { errlen = 0; errbuf[0] = '\0'; }

c5_status c5_err_raise(c5_status st, const char *file, int line, const char *fmt, ...)
{
  c5_error_clear();
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(errbuf, sizeof errbuf, fmt, ap);
  va_end(ap);
  errlen = w < 0 ? 0 : ((size_t)w < sizeof errbuf ? (size_t)w : sizeof errbuf - 1);
  append("\n  at %s:%d", file, line);
  return st;
}

c5_status c5_err_trace(c5_status st, const char *file, int line)
{
  append("\n  at %s:%d", file, line);
  return st;
}

c5_status c5_err_mpi(int code, const char *call, const char *file, int line)
{
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", code);
  return c5_err_raise(C5_ERR_MPI, file, line, "%s failed: %s", call, msg);
}
