/* error.c - the error record behind c5_status: a message plus a file:line
   trace, one per thread (like PETSc's traceback and NCCL's "-> code" log). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "dist_mpi.h"

static _Thread_local char errbuf[C5_ERR_TEXT_LEN];
static _Thread_local size_t errlen;
/* The record came from c5_dist_agree: every rank of that communicator holds it
   (it travels on as it is, without another "rank R: " prefix). */
static _Thread_local int agreed;

void c5_err_note(const char *fmt, ...)
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
    [C5_ERR_NOTIMPL] = "not implemented in this build", [C5_ERR_INTERNAL] = "internal error",
    [C5_ERR_NUMERIC] = "non-finite value" };
  return (st >= 0 && st < C5_NUM_STATUS) ? names[st] : "unknown status";
}

const char *c5_last_error(void) { return errbuf; }

void c5_error_clear(void) { errlen = 0; errbuf[0] = '\0'; agreed = 0; }

/* Formatted aside first: the arguments may quote the record itself (c5_last_error()). */
static void vraise(const char *fmt, va_list ap)
{
  char tmp[C5_ERR_TEXT_LEN];
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  c5_error_clear();
  c5_err_note("%s", tmp);
}

c5_status c5_err_raise(c5_status st, const char *file, int line, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vraise(fmt, ap);
  va_end(ap);
  c5_err_note("\n  at %s:%d", file, line);
  return st;
}

c5_status c5_error_raise(c5_status st, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vraise(fmt, ap);
  va_end(ap);
  return st;
}

c5_status c5_err_set_agreed(c5_status st, const char *text)
{
  c5_error_clear();
  c5_err_note("%s", text);
  agreed = 1;
  return st;
}

int c5_err_agreed(void) { return agreed; }

c5_status c5_err_trace(c5_status st, const char *file, int line)
{
  c5_err_note("\n  at %s:%d", file, line);
  return st;
}

c5_status c5_err_mpi(int code, const char *call, const char *file, int line)
{
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", code);
  return c5_err_raise(C5_ERR_MPI, file, line, "%s failed: %s", call, msg);
}
