/* dist.c - the communicator object and every collective the library uses
   (docs/design.md §3-4). Nothing else in lib/ calls MPI directly, except that the
   io layer may hand c5_dist_comm() to parallel HDF5. Device buffers (a module
   on a GPU backend) go through host memory around the MPI call, or through
   NCCL (lib/dist_nccl.c); both share the padded packing done by the
   backend's ops here. */
#include "config.h"
#include <limits.h>
#include <math.h>
#include <string.h>
#include "dist_mpi.h"
#include "dist_nccl.h"
#include "backend.h"
#if C5_HAVE_CUDA_BUILD
#include "cuda/cuda.h"
#endif
#ifndef C5_HAVE_NCCL
#define C5_HAVE_NCCL 0
#endif

/* How device buffers cross ranks (chosen at the first device collective, agreed). */
enum { DEV_UNSET, DEV_MPI, DEV_NCCL };

struct c5_dist {
  MPI_Comm comm;
  int rank, size;
  int wrank;             /* rank in MPI_COMM_WORLD: the one error messages name */
  MPI_Op op_maxsumexp;
  c5_dist_stats stats;   /* mutable through const handles: counters, and the device state below */
  c5_phase phase;
  int dev_mode;          /* DEV_*: how device buffers cross ranks */
  const c5_backend *dev_be;   /* the backend it was chosen for (NCCL: the stream the calls are issued on) */
  char *stage;           /* host staging of device buffers (DEV_MPI), grown, kept */
  size_t stage_cap;
  c5_nccl *nccl;         /* DEV_NCCL */
};

/* {max, sumexp} pairs: merging (m1, s1), (m2, s2) gives
   (M, s1 exp(m1 - M) + s2 exp(m2 - M)), M = max(m1, m2); an empty side has
   m = -inf and s = 0. The fallback when the shifted sum underflows. */
static void maxsumexp_op(void *in, void *inout, int *len, MPI_Datatype *dt)
{
  (void)dt;
  const double *a = in;
  double *b = inout;
  for (int i = 0; i < *len; i++) {
    double m1 = a[2 * i], s1 = a[2 * i + 1], m2 = b[2 * i], s2 = b[2 * i + 1];
    double m = m1 > m2 ? m1 : m2;
    if (m == -INFINITY) continue;
    b[2 * i] = m;
    b[2 * i + 1] = (s1 > 0 ? s1 * exp(m1 - m) : 0.0) + (s2 > 0 ? s2 * exp(m2 - m) : 0.0);
  }
}

static MPI_Datatype pair_type(void)
{
  static MPI_Datatype t = MPI_DATATYPE_NULL;
  if (t == MPI_DATATYPE_NULL) {
    MPI_Type_contiguous(2, MPI_DOUBLE, &t);
    MPI_Type_commit(&t);
  }
  return t;
}

static void count(const c5_dist *d, c5_coll c, long bytes);

/* The agreement (docs/errors.md) on comm; d, when not NULL, counts it.
   One allreduce (MIN) of: the lowest rank holding an agreed error, the
   lowest rank with a new error, then each argument's value and its
   negation (so min and max in one). A failing rank's message follows in one
   broadcast of the whole record. */
static c5_status agree(MPI_Comm comm, const c5_dist *d, c5_status st, int nargs, const c5_dist_arg *args)
{
  int rank, size, wrank;
  C5_MPI(MPI_Comm_size(comm, &size));
  if (size == 1) return st;
  C5_MPI(MPI_Comm_rank(comm, &rank));
  C5_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &wrank));
  long buf[2 + 2 * (nargs > 0 ? nargs : 1)];
  const int len = 2 + 2 * nargs;
  buf[0] = st != C5_OK && c5_err_agreed() ? rank : size;
  buf[1] = st != C5_OK && !c5_err_agreed() ? rank : size;
  for (int i = 0; i < nargs; i++) { buf[2 + 2 * i] = args[i].value; buf[3 + 2 * i] = -args[i].value; }
  double t0 = MPI_Wtime();
  C5_MPI(MPI_Allreduce(MPI_IN_PLACE, buf, len, MPI_LONG, MPI_MIN, comm));
  if (d) {
    count(d, C5_COLL_ALLREDUCE, len * (long)sizeof(long));
    ((c5_dist *)d)->stats.seconds[d->phase][C5_COLL_ALLREDUCE] += MPI_Wtime() - t0;
  }
  long root = buf[0] < size ? buf[0] : buf[1];
  if (root < size) {
    static _Thread_local struct { int code; char text[C5_ERR_TEXT_LEN]; } msg;
    if (rank == root) {
      msg.code = (int)st;
      if (c5_err_agreed()) snprintf(msg.text, sizeof msg.text, "%s", c5_last_error());
      else snprintf(msg.text, sizeof msg.text, "rank %d: %s", wrank, c5_last_error());
    }
    t0 = MPI_Wtime();
    C5_MPI(MPI_Bcast(&msg, (int)sizeof msg, MPI_BYTE, (int)root, comm));
    if (d) {
      count(d, C5_COLL_BCAST, (long)sizeof msg);
      ((c5_dist *)d)->stats.seconds[d->phase][C5_COLL_BCAST] += MPI_Wtime() - t0;
    }
    msg.text[sizeof msg.text - 1] = '\0';
    c5_err_set_agreed((c5_status)msg.code, msg.text);
    /* the frames that follow are this rank's own way back */
    if (rank != root) c5_err_note("\n  rank %d learned it", wrank);
    return (c5_status)msg.code;
  }
  for (int i = 0; i < nargs; i++) {
    long lo = buf[2 + 2 * i], hi = -buf[3 + 2 * i];
    if (lo == hi) continue;
    /* every rank sees the same difference: one more allreduce finds a rank holding each end */
    int who[2] = { args[i].value == lo ? wrank : INT_MAX, args[i].value == hi ? wrank : INT_MAX };
    C5_MPI(MPI_Allreduce(MPI_IN_PLACE, who, 2, MPI_INT, MPI_MIN, comm));
    if (d) count(d, C5_COLL_ALLREDUCE, (long)sizeof who);
    char text[C5_ERR_TEXT_LEN];
    snprintf(text, sizeof text, "%s differs between ranks: %ld on rank %d, %ld on rank %d (it must be the same "
             "on every rank)", args[i].name, lo, who[0], hi, who[1]);
    c5_err_set_agreed(C5_ERR_ARG, text);
    return c5_err_trace(C5_ERR_ARG, __FILE__, __LINE__);
  }
  return C5_OK;
}

c5_status c5_dist_agree(const c5_dist *d, c5_status st)
{
  C5_CHECK(d != NULL, C5_ERR_ARG, "c5_dist_agree: dist is NULL");
  return agree(d->comm, d, st, 0, NULL);
}

c5_status c5_dist_agree_args(const c5_dist *d, c5_status st, int nargs, const c5_dist_arg *args)
{
  C5_CHECK(d != NULL, C5_ERR_ARG, "c5_dist_agree: dist is NULL");
  return agree(d->comm, d, st, nargs, args);
}

c5_status c5_dist_agree_long(const c5_dist *d, const char *what, long value)
{
  C5_CHECK(d != NULL, C5_ERR_ARG, "c5_dist_agree_long: dist is NULL");
  c5_dist_arg a = { what ? what : "a global argument", value };
  return agree(d->comm, d, C5_OK, 1, &a);
}

c5_status c5_dist_create(MPI_Comm comm, c5_dist **out)
{
  int init = 0;
  C5_CHECK(out != NULL, C5_ERR_ARG, "c5_dist_create: out is NULL");
  *out = NULL;
  C5_MPI(MPI_Initialized(&init));
  C5_CHECK(init, C5_ERR_MPI, "c5_dist_create: MPI is not initialized (the application calls MPI_Init)");
  c5_dist *d = calloc(1, sizeof *d);
  c5_status st = d ? C5_OK : C5_ERR(C5_ERR_MEM, "c5_dist_create: out of memory");
  /* MPI_Comm_dup is collective: a rank that failed above must not leave the others in it */
  st = agree(comm, NULL, st, 0, NULL);
  if (st != C5_OK) { free(d); return c5_err_trace(st, __FILE__, __LINE__); }
  int e = MPI_Comm_dup(comm, &d->comm);
  if (e != MPI_SUCCESS) { free(d); return c5_err_mpi(e, "MPI_Comm_dup", __FILE__, __LINE__); }
  MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(d->comm, &d->rank);
  MPI_Comm_size(d->comm, &d->size);
  MPI_Comm_rank(MPI_COMM_WORLD, &d->wrank);
  MPI_Op_create(maxsumexp_op, 1, &d->op_maxsumexp);
  *out = d;
  return C5_OK;
}

int c5_dist_world_size(void)
{
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

c5_status c5_dist_create_self(c5_dist **out) { return c5_dist_create(MPI_COMM_SELF, out); }

c5_status c5_dist_create_2d(MPI_Comm comm, int seq_size, c5_dist **seq, c5_dist **dp)
{
  C5_CHECK(seq && dp, C5_ERR_ARG, "c5_dist_create_2d: NULL argument");
  *seq = *dp = NULL;
  int size, rank;
  C5_MPI(MPI_Comm_size(comm, &size));
  C5_MPI(MPI_Comm_rank(comm, &rank));
  c5_status st = seq_size > 0 && size % seq_size == 0 ? C5_OK : C5_ERR(C5_ERR_ARG,
                 "2-D layout: %d ranks cannot be cut into sequence groups of %d", size, seq_size);
  c5_dist_arg a = { "2-D layout: seq_size", seq_size };
  C5_CALL(agree(comm, NULL, st, 1, &a));
  MPI_Comm cs, cd;
  C5_MPI(MPI_Comm_split(comm, rank / seq_size, rank % seq_size, &cs));
  C5_MPI(MPI_Comm_split(comm, rank % seq_size, rank / seq_size, &cd));
  st = c5_dist_create(cs, seq);
  /* agreed within one sequence group only: the data-parallel groups cross them */
  st = agree(comm, NULL, st, 0, NULL);
  if (st == C5_OK) st = agree(comm, NULL, c5_dist_create(cd, dp), 0, NULL);
  MPI_Comm_free(&cs);
  MPI_Comm_free(&cd);
  if (st != C5_OK) { c5_dist_destroy(seq); c5_dist_destroy(dp); }
  return st;
}

c5_status c5_dist_destroy(c5_dist **d)
{
  if (!d || !*d) return C5_OK;
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) {
    MPI_Op_free(&(*d)->op_maxsumexp);
    MPI_Comm_free(&(*d)->comm);
  }
#if C5_HAVE_NCCL
  c5_nccl_destroy(&(*d)->nccl);
#endif
  free((*d)->stage);
  C5_FREE(*d);
  return C5_OK;
}

int c5_dist_rank(const c5_dist *d) { return d->rank; }
int c5_dist_size(const c5_dist *d) { return d->size; }
MPI_Comm c5_dist_comm(const c5_dist *d) { return d->comm; }

const char *c5_phase_name(c5_phase p)
{
  static const char *n[C5_NUM_PHASE] = { "other", "router", "halo", "heavy_kv", "grad" };
  return (p >= 0 && p < C5_NUM_PHASE) ? n[p] : "?";
}

c5_phase c5_dist_phase(const c5_dist *d, c5_phase p)
{
  c5_phase old = d->phase;
  ((c5_dist *)d)->phase = p;
  return old;
}

const char *c5_coll_name(c5_coll c)
{
  static const char *n[C5_NUM_COLL] = { "allreduce", "exscan", "allgather", "sendrecv", "reduce_scatter", "bcast" };
  return (c >= 0 && c < C5_NUM_COLL) ? n[c] : "?";
}

void c5_dist_stats_get(const c5_dist *d, c5_dist_stats *out) { *out = d->stats; }
void c5_dist_stats_reset(c5_dist *d) { memset(&d->stats, 0, sizeof d->stats); }

static void count(const c5_dist *d, c5_coll c, long bytes)
{
  c5_dist_stats *s = (c5_dist_stats *)&d->stats;
  s->calls[d->phase][c]++;
  s->bytes[d->phase][c] += bytes;
}

/* Wall time of one collective, added to the phase's counter. */
#define TIMED(d, c, call) do { double t0_ = MPI_Wtime(); C5_MPI(call); \
    ((c5_dist *)(d))->stats.seconds[(d)->phase][c] += MPI_Wtime() - t0_; } while (0)

c5_status c5_dist_allreduce_sum_double(const c5_dist *d, double *buf, long n)
{
  if (d->size == 1 || n == 0) return C5_OK;
  count(d, C5_COLL_ALLREDUCE, n * (long)sizeof(double));
  TIMED(d, C5_COLL_ALLREDUCE, MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, d->comm));
  return C5_OK;
}

c5_status c5_dist_allreduce_sum_long(const c5_dist *d, long *buf, long n)
{
  if (d->size == 1 || n == 0) return C5_OK;
  count(d, C5_COLL_ALLREDUCE, n * (long)sizeof(long));
  TIMED(d, C5_COLL_ALLREDUCE, MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_LONG, MPI_SUM, d->comm));
  return C5_OK;
}

c5_status c5_dist_allreduce_maxsumexp(const c5_dist *d, double *pairs, long n)
{
  if (d->size == 1 || n == 0) return C5_OK;
  count(d, C5_COLL_ALLREDUCE, 2 * n * (long)sizeof(double));
  TIMED(d, C5_COLL_ALLREDUCE, MPI_Allreduce(MPI_IN_PLACE, pairs, (int)n, pair_type(), d->op_maxsumexp, d->comm));
  return C5_OK;
}

c5_status c5_dist_exscan_sum_long(const c5_dist *d, long *buf, long n)
{
  if (n == 0) return C5_OK;
  if (d->size == 1) { memset(buf, 0, (size_t)n * sizeof *buf); return C5_OK; }
  count(d, C5_COLL_EXSCAN, n * (long)sizeof(long));
  TIMED(d, C5_COLL_EXSCAN, MPI_Exscan(MPI_IN_PLACE, buf, (int)n, MPI_LONG, MPI_SUM, d->comm));
  if (d->rank == 0) memset(buf, 0, (size_t)n * sizeof *buf);   /* undefined on rank 0 */
  return C5_OK;
}

static MPI_Datatype mpi_type(c5_elem t)
{
  switch (t) {
  case C5_ELEM_F64: return MPI_DOUBLE;
  case C5_ELEM_F32: return MPI_FLOAT;
  case C5_ELEM_BF16: return MPI_UINT16_T;   /* moved, never reduced */
  case C5_ELEM_U8: return MPI_UINT8_T;
  case C5_ELEM_LONG: return MPI_LONG;
  }
  return MPI_DATATYPE_NULL;
}

static c5_status sendrecv(const c5_dist *d, const void *send, long scount, int dest, void *recv, long rcount, int src,
                          c5_elem type)
{
  int tsz;
  MPI_Type_size(mpi_type(type), &tsz);
  count(d, C5_COLL_SENDRECV, (dest != MPI_PROC_NULL ? scount : 0) * tsz);
  TIMED(d, C5_COLL_SENDRECV, MPI_Sendrecv(send, (int)scount, mpi_type(type), dest, 71, recv, (int)rcount,
                                          mpi_type(type), src, 71, d->comm, MPI_STATUS_IGNORE));
  return C5_OK;
}

static c5_status sendrecv_dev(const c5_dist *d, const c5_backend *be, const void *send, long scount, int dest,
                              void *recv, long rcount, int src, c5_elem type);

/* One pass each way: the left-to-right pass (to_right -> from_left), then right-to-left. back: the
   return, where the buffers swap roles. */
static c5_status halo(const c5_dist *d, c5_elem type, const c5_halo_msg *m, int back)
{
  if (d->size == 1) return C5_OK;   /* no neighbour: nothing to move, on any path */
  const c5_backend *be = m->be && !c5_backend_is_host(m->be) ? m->be : NULL;
  int lt = d->rank > 0 ? d->rank - 1 : MPI_PROC_NULL, rt = d->rank < d->size - 1 ? d->rank + 1 : MPI_PROC_NULL;
  c5_phase old = c5_dist_phase(d, C5_PHASE_HALO);
  c5_status st = C5_OK;
#define SR(s, sc, dst, r, rc, src) (be ? sendrecv_dev(d, be, s, sc, dst, r, rc, src, type) : \
                                          sendrecv(d, s, sc, dst, r, rc, src, type))
  if (!back) {
    if (m->to_right || m->from_left)
      st = SR(m->to_right, m->n_to_right, rt, m->from_left, m->n_from_left, lt);
    if (st == C5_OK && (m->to_left || m->from_right))
      st = SR(m->to_left, m->n_to_left, lt, m->from_right, m->n_from_right, rt);
  } else {
    /* the gradients of my left halo belong to the left neighbour's last tokens, and so on */
    if (m->to_right || m->from_left)
      st = SR(m->from_left, m->n_from_left, lt, (void *)m->to_right, m->n_to_right, rt);
    if (st == C5_OK && (m->to_left || m->from_right))
      st = SR(m->from_right, m->n_from_right, rt, (void *)m->to_left, m->n_to_left, lt);
  }
#undef SR
  c5_dist_phase(d, old);
  return st;
}

c5_status c5_dist_halo_exchange(const c5_dist *d, c5_elem type, const c5_halo_msg *m) { return halo(d, type, m, 0); }
c5_status c5_dist_halo_return(const c5_dist *d, c5_elem type, const c5_halo_msg *m) { return halo(d, type, m, 1); }

static c5_status allgatherv_dev(const c5_dist *d, const c5_backend *be, const void *send, long scount, void *recv,
                                const int *counts, const int *displs, c5_elem type);
static c5_status reduce_scatter_dev(const c5_dist *d, const c5_backend *be, const void *send, void *recv,
                                    const int *counts, c5_elem type);

c5_status c5_dist_allgatherv(const c5_dist *d, const c5_backend *be, const void *send, long scount, void *recv,
                             const int *counts, const int *displs, c5_elem type)
{
  if (be && !c5_backend_is_host(be)) return allgatherv_dev(d, be, send, scount, recv, counts, displs, type);
  int tsz;
  MPI_Type_size(mpi_type(type), &tsz);
  if (d->size == 1) {
    if (recv != send) memmove((char *)recv + (long)displs[0] * tsz, send, (size_t)(scount * tsz));
    return C5_OK;
  }
  long total = 0;
  for (int p = 0; p < d->size; p++) total += counts[p];
  count(d, C5_COLL_ALLGATHER, total * tsz);
  TIMED(d, C5_COLL_ALLGATHER, MPI_Allgatherv(send, (int)scount, mpi_type(type), recv, counts, displs, mpi_type(type),
                                             d->comm));
  return C5_OK;
}

c5_status c5_dist_reduce_scatter(const c5_dist *d, const c5_backend *be, const void *send, void *recv,
                                 const int *counts, c5_elem type)
{
  C5_CHECK(type == C5_ELEM_F64 || type == C5_ELEM_F32 || type == C5_ELEM_LONG, C5_ERR_ARG,
           "c5_dist_reduce_scatter: element type %d is moved, never summed", (int)type);
  if (be && !c5_backend_is_host(be)) return reduce_scatter_dev(d, be, send, recv, counts, type);
  int tsz;
  MPI_Type_size(mpi_type(type), &tsz);
  if (d->size == 1) {
    if (recv != send) memmove(recv, send, (size_t)counts[0] * (size_t)tsz);
    return C5_OK;
  }
  long total = 0;
  for (int p = 0; p < d->size; p++) total += counts[p];
  count(d, C5_COLL_REDUCE_SCATTER, total * tsz);
  TIMED(d, C5_COLL_REDUCE_SCATTER, MPI_Reduce_scatter(send, recv, counts, mpi_type(type), MPI_SUM, d->comm));
  return C5_OK;
}

/* ---- device buffers --------------------------------------------------------------------
   A module on a device backend hands dist device pointers. DEV_MPI (some ranks sharing a GPU, or
   C5_DIST=mpi) copies them to host memory around the MPI call; DEV_NCCL (C5_DIST=nccl, the default on
   CUDA when every rank has its own GPU) moves them by NCCL on the backend's stream, at one rank too.
   Variable counts travel padded to the largest, packed and unpacked by the backend's ops (copy2d) on
   the device, the same for both. A device collective ends with the agreement (docs/errors.md): a copy
   or an NCCL error on one rank, after the communication it would have missed, reaches every rank. */

enum { DEV_NAME_LEN = 64 };   /* a device's name: the host's, then the GPU's PCI bus id */
static int by_name(const void *a, const void *b) { return memcmp(a, b, 2 * DEV_NAME_LEN); }

/* Ranks of d whose devices share one PCI bus id on one host (NCCL refuses a device twice): *shared, this
   rank's device is another's too; *any, some rank's is (the same on every rank: 3 ranks on 2 GPUs share on
   two ranks only, and the mode must be one). */
static c5_status shared_device(const c5_dist *d, const c5_backend *be, c5_status st, int *shared, int *any)
{
  enum { LEN = DEV_NAME_LEN };
  char mine[2 * LEN] = { 0 }, *all = calloc((size_t)d->size, sizeof mine);
  *shared = 0;
  int len = 0;
  MPI_Get_processor_name(mine, &len);
#if C5_HAVE_CUDA_BUILD
  if (st == C5_OK && be->kind == C5_BACKEND_CUDA) st = c5k_cuda_bus_id(be->dev, mine + LEN, LEN - 1);
#endif
  if (!all) st = C5_ERR(C5_ERR_MEM, "dist: %d device names: out of memory", d->size);
  char dummy[2 * LEN];
  int e = MPI_Allgather(mine, 2 * LEN, MPI_CHAR, all ? all : dummy, all ? 2 * LEN : 0, MPI_CHAR, d->comm);
  if (st == C5_OK && e != MPI_SUCCESS) st = c5_err_mpi(e, "MPI_Allgather(device names)", __FILE__, __LINE__);
  for (int p = 0; st == C5_OK && p < d->size; p++)
    if (p != d->rank && !memcmp(all + p * 2 * LEN, mine, sizeof mine)) *shared = 1;
  *any = 0;
  if (st == C5_OK) {   /* sorted, equal names are neighbours */
    qsort(all, (size_t)d->size, sizeof mine, by_name);
    for (int p = 1; p < d->size; p++) *any |= !memcmp(all + (p - 1) * 2 * LEN, all + p * 2 * LEN, sizeof mine);
  }
  free(all);
  return st;
}

static c5_status choose_device_mode(const c5_dist *d, const c5_backend *be)
{
  c5_dist *w = (c5_dist *)d;
  const char *env = getenv("C5_DIST");
  c5_status st = C5_OK;
  int want = DEV_UNSET, shared = 0, any_shared = 0;
  if (env && *env) {
    if (!strcmp(env, "mpi")) want = DEV_MPI;
    else if (!strcmp(env, "nccl")) want = DEV_NCCL;
    else st = C5_ERR(C5_ERR_ARG, "C5_DIST=%s: expected nccl or mpi", env);
  }
  if (st == C5_OK && want == DEV_NCCL && (!C5_HAVE_NCCL || be->kind != C5_BACKEND_CUDA))
    st = C5_ERR(C5_ERR_NOTIMPL, "C5_DIST=nccl: %s", C5_HAVE_NCCL ? "the backend is not a CUDA device" :
                "this build has no NCCL (configure found no libnccl.so)");
  st = shared_device(d, be, st, &shared, &any_shared);   /* collective: called on every rank, whatever st */
  if (st == C5_OK && want == DEV_NCCL && shared)
    st = C5_ERR(C5_ERR_ARG, "C5_DIST=nccl: rank %d shares its GPU with another rank (NCCL needs one GPU per rank; "
                "C5_DIST=mpi stages through host memory)", d->wrank);
  int mode = want != DEV_UNSET ? want : C5_HAVE_NCCL && be->kind == C5_BACKEND_CUDA && !any_shared ? DEV_NCCL : DEV_MPI;
  c5_dist_arg a = { "dist: device collectives (1: MPI through host memory, 2: NCCL; C5_DIST)", mode };
  C5_CALL(agree(d->comm, d, st, 1, &a));
#if C5_HAVE_NCCL
  if (mode == DEV_NCCL) {
    static _Thread_local struct { int st; unsigned char id[C5_NCCL_ID_BYTES]; } idm;
    idm.st = d->rank == 0 ? (int)c5_nccl_get_id(idm.id) : (int)C5_OK;
    C5_MPI(MPI_Bcast(&idm, (int)sizeof idm, MPI_BYTE, 0, d->comm));
    st = idm.st == C5_OK ? C5_OK : d->rank == 0 ? (c5_status)idm.st :
         C5_ERR((c5_status)idm.st, "NCCL: rank 0 could not make the communicator's id");
    C5_CALL(agree(d->comm, d, st, 0, NULL));
    C5_CALL(agree(d->comm, d, c5_nccl_create(idm.id, d->rank, d->size, be, &w->nccl), 0, NULL));
  }
#endif
  w->dev_mode = mode;
  w->dev_be = be;
  return C5_OK;
}

c5_status c5_dist_uses_nccl(const c5_dist *d, const c5_backend *be, int *nccl)
{
  *nccl = 0;
  if (!be || c5_backend_is_host(be)) return C5_OK;
  if (d->dev_mode == DEV_UNSET) C5_CALL(choose_device_mode(d, be));
  /* one communicator, one stream: NCCL's work would not be ordered with another backend's */
  C5_CHECK(d->dev_mode != DEV_NCCL || be == d->dev_be, C5_ERR_ARG, "dist: NCCL collectives on the %s backend of "
           "device %d, but this communicator's NCCL runs on device %d's backend (one device backend per c5_dist)",
           be->ops->name, be->device, d->dev_be->device);
  *nccl = d->dev_mode == DEV_NCCL;
  return C5_OK;
}

static c5_status host_room(const c5_dist *d, size_t bytes, char **p)
{
  c5_dist *w = (c5_dist *)d;
  if (w->stage_cap < bytes) {
    char *q = realloc(w->stage, bytes);
    C5_CHECK(q, C5_ERR_MEM, "dist: out of memory for %zu bytes of host memory to stage device buffers", bytes);
    w->stage = q;
    w->stage_cap = bytes;
  }
  *p = w->stage;
  return C5_OK;
}

/* A device collective's clock starts once the work queued before it is done: the collective then waits for
   nothing but its peers, and the seconds counted (c5_dist_stats) are communication, not the compute ahead
   of it on the stream (colt5-bench's split of a step). The host waits at the collective either way. On the
   NCCL path the ranks' errors are agreed here, before it (st becomes the agreed one): NCCL has no way out
   for a rank that does not call it, so a rank failed before (a buffer it could not allocate, a failed sync)
   would leave its peers in c5_nccl_wait until C5_NCCL_TIMEOUT; now no rank calls NCCL then. */
static double coll_start(const c5_dist *d, const c5_backend *be, int nccl, c5_status *st)
{
  if (be && !c5_backend_is_host(be)) C5_KEEP_FIRST(*st, c5_backend_sync(be));
  if (nccl) *st = agree(d->comm, d, *st, 0, NULL);
  return MPI_Wtime();
}

/* NCCL's work on the stream done, or its error (the communicator then aborted). */
static c5_status nccl_done(const c5_dist *d, c5_status st, const char *what)
{
#if C5_HAVE_NCCL
  if (st == C5_OK) st = c5_nccl_wait(d->nccl, what);
#endif
  return st;
}

static c5_status sendrecv_dev(const c5_dist *d, const c5_backend *be, const void *send, long scount, int dest,
                              void *recv, long rcount, int src, c5_elem type)
{
  int nccl, tsz;
  C5_CALL(c5_dist_uses_nccl(d, be, &nccl));
  MPI_Type_size(mpi_type(type), &tsz);
  const size_t sb = dest != MPI_PROC_NULL ? (size_t)scount * tsz : 0, rb = src != MPI_PROC_NULL ? (size_t)rcount * tsz : 0;
  count(d, C5_COLL_SENDRECV, (long)sb);
  c5_status st = C5_OK;
  const double t0 = coll_start(d, be, nccl, &st);
  if (nccl) {
#if C5_HAVE_NCCL
    if (st == C5_OK)
      st = c5_nccl_sendrecv(d->nccl, send, sb, dest != MPI_PROC_NULL ? dest : -1, recv, rb,
                            src != MPI_PROC_NULL ? src : -1);
#endif
    st = nccl_done(d, st, "halo send/receive");
  } else {
    char *h = NULL;
    C5_KEEP_FIRST(st, host_room(d, sb + rb + 1, &h));
    if (st == C5_OK && sb) st = c5_backend_memcpy(be, h, send, sb);
    int e = MPI_Sendrecv(h, (int)(sb / tsz), mpi_type(type), dest, 71, h ? h + sb : NULL, (int)(rb / tsz),
                         mpi_type(type), src, 71, d->comm, MPI_STATUS_IGNORE);
    if (st == C5_OK && e != MPI_SUCCESS) st = c5_err_mpi(e, "MPI_Sendrecv(staged halo)", __FILE__, __LINE__);
    if (st == C5_OK && rb) st = c5_backend_memcpy(be, recv, h + sb, rb);
  }
  ((c5_dist *)d)->stats.seconds[d->phase][C5_COLL_SENDRECV] += MPI_Wtime() - t0;
  return agree(d->comm, d, st, 0, NULL);
}

/* The largest of counts (elements), and the slot of one rank in bytes. */
static c5_status padded_slot(const c5_dist *d, const int *counts, int tsz, const char *what, long *max, long *slot)
{
  *max = 0;
  for (int p = 0; p < d->size; p++) *max = counts[p] > *max ? counts[p] : *max;
  *slot = *max * tsz;
  C5_CHECK(*slot <= INT_MAX, C5_ERR_ARG, "dist %s: %ld elements of %d bytes per rank: over the %d bytes one MPI "
           "count holds", what, *max, tsz, INT_MAX);
  return C5_OK;
}

/* The padded all-gather both device paths share: pad [P][slot bytes] on be holds this rank's mine bytes at
   slot rank; after it every slot holds its rank's. Host memory (a host be): MPI on pad itself. st: an
   earlier error of this rank, which still takes part (the others must not wait on it). */
static c5_status padded_allgather(const c5_dist *d, const c5_backend *be, char *pad, long slot, long mine,
                                  c5_status st)
{
  const int P = d->size;
  int nccl = 0;
  if (!c5_backend_is_host(be)) C5_KEEP_FIRST(st, c5_dist_uses_nccl(d, be, &nccl));
  const double t0 = coll_start(d, be, nccl, &st);
  if (nccl) {
#if C5_HAVE_NCCL
    if (st == C5_OK) st = c5_nccl_allgather(d->nccl, pad, (size_t)slot);
#endif
    st = nccl_done(d, st, "all-gather");
  } else if (P > 1) {
    char *h = pad;
    if (!c5_backend_is_host(be)) {
      C5_KEEP_FIRST(st, host_room(d, (size_t)(P * slot + 1), &h));
      if (st == C5_OK && mine) st = c5_backend_memcpy(be, h + d->rank * slot, pad + d->rank * slot, (size_t)mine);
    }
    int e = MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, h, h ? (int)slot : 0, MPI_BYTE, d->comm);
    if (st == C5_OK && e != MPI_SUCCESS) st = c5_err_mpi(e, "MPI_Allgather(padded)", __FILE__, __LINE__);
    if (st == C5_OK && h != pad) st = c5_backend_memcpy(be, pad, h, (size_t)(P * slot));
  }
  ((c5_dist *)d)->stats.seconds[d->phase][C5_COLL_ALLGATHER] += MPI_Wtime() - t0;
  return st;
}

static c5_status allgatherv_dev(const c5_dist *d, const c5_backend *be, const void *send, long scount, void *recv,
                                const int *counts, const int *displs, c5_elem type)
{
  int tsz;
  MPI_Type_size(mpi_type(type), &tsz);
  const int P = d->size;
  long max = 0, slot = 0, total = 0;
  for (int p = 0; p < P; p++) total += counts[p];
  c5_status st = padded_slot(d, counts, tsz, "all-gather", &max, &slot);
  const c5k_ops *ops = be->ops;
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  char *pad = NULL;
  if (st == C5_OK) st = c5_backend_alloc(be, (size_t)(P * slot + 1), (void **)&pad);
  /* my part into my slot: the in-place all-gather of NCCL */
  if (st == C5_OK && scount) st = ops->copy2d(&kc, pad + d->rank * slot, slot, send, scount * tsz, scount * tsz, 1);
  count(d, C5_COLL_ALLGATHER, total * tsz);
  st = padded_allgather(d, be, pad, slot, scount * tsz, st);
  for (int p = 0; st == C5_OK && p < P; p++)   /* unpad: rank p's part to its displacement */
    if (counts[p]) st = ops->copy2d(&kc, (char *)recv + (long)displs[p] * tsz, slot, pad + p * slot, slot,
                                    (long)counts[p] * tsz, 1);
  if (pad) C5_KEEP_FIRST(st, c5_backend_free(be, pad));
  return agree(d->comm, d, st, 0, NULL);
}

c5_status c5_dist_allgather_rows(const c5_dist *d, const c5_backend *be, long rows, long n, long unit, long es,
                                 const void *local, void *full)
{
  const int P = d->size;
  c5_layout mine = { 0 };
  long max = 0;
  c5_status st = C5_OK;
  for (int p = 0; st == C5_OK && p < P; p++) {
    c5_layout l;
    st = c5_layout_of_rank(n, unit, p, P, &l);
    if (st == C5_OK && l.n_local > max) max = l.n_local;
    if (p == d->rank) mine = l;
  }
  const long slot = rows * max * es;
  if (st == C5_OK && slot > INT_MAX)
    st = C5_ERR(C5_ERR_ARG, "dist: gathering rows [%ld, %ld] of %ld bytes: %ld bytes per rank, over the %d one MPI "
                "count holds", rows, n, es, slot, INT_MAX);
  const c5k_ops *ops = be->ops;
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  char *pad = NULL;
  if (st == C5_OK) st = c5_backend_alloc(be, (size_t)(P * slot + 1), (void **)&pad);
  const long w = mine.n_local * es;
  if (st == C5_OK && w) st = ops->copy2d(&kc, pad + d->rank * slot, w, local, w, w, rows);
  count(d, C5_COLL_ALLGATHER, rows * n * es);
  st = padded_allgather(d, be, pad, slot, rows * w, st);
  for (int p = 0; st == C5_OK && p < P; p++) {   /* rank p's columns [rows, n_local(p)] into the whole rows */
    c5_layout l;
    c5_layout_of_rank(n, unit, p, P, &l);
    if (l.n_local) st = ops->copy2d(&kc, (char *)full + l.offset * es, n * es, pad + p * slot, l.n_local * es,
                                    l.n_local * es, rows);
  }
  if (pad) C5_KEEP_FIRST(st, c5_backend_free(be, pad));
  return agree(d->comm, d, st, 0, NULL);
}

static c5_status reduce_scatter_dev(const c5_dist *d, const c5_backend *be, const void *send, void *recv,
                                    const int *counts, c5_elem type)
{
  int nccl, tsz;
  C5_CALL(c5_dist_uses_nccl(d, be, &nccl));
  MPI_Type_size(mpi_type(type), &tsz);
  const int P = d->size;
  long max = 0, slot = 0, total = 0;
  for (int p = 0; p < P; p++) total += counts[p];
  c5_status st = padded_slot(d, counts, tsz, "reduce-scatter", &max, &slot);
  const c5k_ops *ops = be->ops;
  c5k_ctx kc = c5_backend_ctx(be, NULL, 0);
  char *pad = NULL, *h = NULL;
  if (st == C5_OK) st = c5_backend_alloc(be, (size_t)(P * slot + 1), (void **)&pad);
  /* rank p's block into slot p, zeros after it: equal counts, as NCCL's reduce-scatter takes them */
  if (st == C5_OK) st = c5k_zero(ops, &kc, pad, P * slot);
  for (int p = 0, at = 0; st == C5_OK && p < P; at += counts[p], p++)
    if (counts[p]) st = ops->copy2d(&kc, pad + p * slot, slot, (const char *)send + (long)at * tsz, slot,
                                    (long)counts[p] * tsz, 1);
  count(d, C5_COLL_REDUCE_SCATTER, total * tsz);
  const double t0 = coll_start(d, be, nccl, &st);
  char *mine = pad ? pad + d->rank * slot : NULL;
  if (nccl) {
#if C5_HAVE_NCCL
    if (st == C5_OK) st = c5_nccl_reduce_scatter(d->nccl, pad, max, type);
#endif
    st = nccl_done(d, st, "reduce-scatter");
  } else if (P > 1) {
    C5_KEEP_FIRST(st, host_room(d, (size_t)(P * slot + 1), &h));   /* a failed rank still takes part */
    if (st == C5_OK) st = c5_backend_memcpy(be, h, pad, (size_t)(P * slot));
    int e = MPI_Reduce_scatter_block(MPI_IN_PLACE, h, h ? (int)max : 0, mpi_type(type), MPI_SUM, d->comm);
    if (st == C5_OK && e != MPI_SUCCESS) st = c5_err_mpi(e, "MPI_Reduce_scatter_block(staged)", __FILE__, __LINE__);
    if (st == C5_OK && counts[d->rank]) st = c5_backend_memcpy(be, mine, h, (size_t)counts[d->rank] * tsz);
  }
  ((c5_dist *)d)->stats.seconds[d->phase][C5_COLL_REDUCE_SCATTER] += MPI_Wtime() - t0;
  if (st == C5_OK && counts[d->rank])
    st = ops->copy2d(&kc, recv, slot, mine, slot, (long)counts[d->rank] * tsz, 1);
  if (pad) C5_KEEP_FIRST(st, c5_backend_free(be, pad));
  return agree(d->comm, d, st, 0, NULL);
}

c5_status c5_params_allreduce_grad(c5_params *p, const c5_dist *d)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_params_allreduce_grad: dist is NULL");
  c5_status st = p ? C5_OK : C5_ERR(C5_ERR_ARG, "c5_params_allreduce_grad: the parameter table is NULL");
  c5_dist_arg total = { "parameter gradients: elements", st == C5_OK ? c5_params_total(p) : 0 };
  C5_CALL(agree(d->comm, d, st, 1, &total));
  const c5_backend *be = c5_params_backend(p);
  const long n = c5_params_total(p);
  int nccl = 0;
  if (!c5_backend_is_host(be)) C5_CALL(c5_dist_uses_nccl(d, be, &nccl));
  if ((d->size == 1 && !nccl) || n == 0) return C5_OK;
  c5_real *g = c5_params_grad(p, 0);
  c5_phase old = c5_dist_phase(d, C5_PHASE_GRAD);
  count(d, C5_COLL_ALLREDUCE, n * (long)sizeof(c5_real));
  const double t0 = coll_start(d, be, nccl, &st);
  if (c5_backend_is_host(be)) {
    int e = MPI_Allreduce(MPI_IN_PLACE, g, (int)n, C5_MPI_REAL, MPI_SUM, d->comm);
    st = e == MPI_SUCCESS ? C5_OK : c5_err_mpi(e, "MPI_Allreduce(gradients)", __FILE__, __LINE__);
  } else if (nccl) {
#if C5_HAVE_NCCL
    if (st == C5_OK) st = c5_nccl_allreduce_sum(d->nccl, g, n, C5_ELEM_REAL);
#endif
    st = nccl_done(d, st, "allreduce of the parameter gradients");
  } else {   /* through host memory */
    char *h = NULL;
    C5_KEEP_FIRST(st, host_room(d, (size_t)n * sizeof *g, &h));
    if (st == C5_OK) st = c5_backend_memcpy(be, h, g, (size_t)n * sizeof *g);
    int e = MPI_Allreduce(MPI_IN_PLACE, h, h ? (int)n : 0, C5_MPI_REAL, MPI_SUM, d->comm);
    if (st == C5_OK && e != MPI_SUCCESS) st = c5_err_mpi(e, "MPI_Allreduce(staged gradients)", __FILE__, __LINE__);
    if (st == C5_OK) st = c5_backend_memcpy(be, g, h, (size_t)n * sizeof *g);
  }
  ((c5_dist *)d)->stats.seconds[C5_PHASE_GRAD][C5_COLL_ALLREDUCE] += MPI_Wtime() - t0;
  c5_dist_phase(d, old);
  if (!c5_backend_is_host(be)) st = agree(d->comm, d, st, 0, NULL);
  return st;
}

/* ---- jobs for applications ---------------------------------------------------------- */

static MPI_Op mpi_op(c5_reduce_op op) { return op == C5_REDUCE_MAX ? MPI_MAX : op == C5_REDUCE_MIN ? MPI_MIN : MPI_SUM; }

c5_status c5_dist_reduce_long(const c5_dist *d, long *v, long n, c5_reduce_op op)
{
  if (d->size == 1 || n == 0) return C5_OK;
  count(d, C5_COLL_ALLREDUCE, n * (long)sizeof *v);
  TIMED(d, C5_COLL_ALLREDUCE, MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_LONG, mpi_op(op), d->comm));
  return C5_OK;
}

c5_status c5_dist_reduce_double(const c5_dist *d, double *v, long n, c5_reduce_op op)
{
  if (d->size == 1 || n == 0) return C5_OK;
  count(d, C5_COLL_ALLREDUCE, n * (long)sizeof *v);
  TIMED(d, C5_COLL_ALLREDUCE, MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_DOUBLE, mpi_op(op), d->comm));
  return C5_OK;
}

c5_status c5_dist_barrier(const c5_dist *d)
{
  if (d->size == 1) return C5_OK;
  C5_MPI(MPI_Barrier(d->comm));
  return C5_OK;
}

c5_status c5_dist_allgather_seq(const c5_dist *d, long batch, long n, long unit, long width, const c5_real *local,
                                c5_real *full)
{
  const int P = d->size;
  c5_status st = C5_OK;
  int *cnt = calloc((size_t)P, sizeof *cnt), *dsp = calloc((size_t)P, sizeof *dsp);
  c5_real *tmp = malloc((size_t)(batch * n * width + 1) * sizeof *tmp);
  c5_layout mine = { 0 };
  if (!cnt || !dsp || !tmp) st = C5_ERR(C5_ERR_MEM, "gathering a sequence [%ld, %ld, %ld]: out of memory", batch, n, width);
  /* rank p's part is [batch, n_local(p), width], placed rank after rank in tmp */
  for (int p = 0, at = 0; st == C5_OK && p < P; p++) {
    c5_layout l;
    st = c5_layout_of_rank(n, unit, p, P, &l);
    if (st == C5_OK) { cnt[p] = (int)(batch * l.n_local * width); dsp[p] = at; at += cnt[p]; }
    if (p == d->rank) mine = l;
  }
  st = c5_dist_agree(d, st);
  if (st == C5_OK) {
    count(d, C5_COLL_ALLGATHER, batch * n * width * (long)sizeof *tmp);
    int e = MPI_Allgatherv(local, (int)(batch * mine.n_local * width), C5_MPI_REAL, tmp, cnt, dsp, C5_MPI_REAL, d->comm);
    if (e != MPI_SUCCESS) st = c5_err_mpi(e, "MPI_Allgatherv(sequence)", __FILE__, __LINE__);
  }
  for (int p = 0; st == C5_OK && p < P; p++) {
    c5_layout l;
    c5_layout_of_rank(n, unit, p, P, &l);
    for (long i = 0; i < batch; i++)
      memcpy(full + (i * n + l.offset) * width, tmp + dsp[p] + i * l.n_local * width,
             (size_t)(l.n_local * width) * sizeof *full);
  }
  free(cnt); free(dsp); free(tmp);
  return st;
}

c5_status c5_dist_allgather_routing(const c5_dist *d, const c5_routing *rt, long rows, long cap, long *idx,
                                    c5_real *score, long *count_out)
{
  const int P = d->size;
  c5_status st = C5_OK;
  int *cnts = calloc((size_t)P, sizeof *cnts), *dsp = calloc((size_t)P, sizeof *dsp);
  if (!cnts || !dsp) st = C5_ERR(C5_ERR_MEM, "gathering a routing of %ld rows: out of memory", rows);
  st = c5_dist_agree(d, st);
  for (long r = 0; st == C5_OK && r < rows; r++) {   /* each row's entries come from the ranks in order */
    int cnt = (int)rt->count[r], e;
    e = MPI_Allgather(&cnt, 1, MPI_INT, cnts, 1, MPI_INT, d->comm);
    long total = 0;
    for (int q = 0; q < P; q++) { dsp[q] = (int)total; total += cnts[q]; }
    if (e == MPI_SUCCESS && total > cap)
      st = C5_ERR(C5_ERR_SHAPE, "routing row %ld: %ld entries over the ranks, room for %ld", r, total, cap);
    if (st == C5_OK && e == MPI_SUCCESS)
      e = MPI_Allgatherv(rt->idx + rt->start[r], cnt, MPI_LONG, idx + r * cap, cnts, dsp, MPI_LONG, d->comm);
    if (st == C5_OK && e == MPI_SUCCESS)
      e = MPI_Allgatherv(rt->score + rt->start[r], cnt, C5_MPI_REAL, score + r * cap, cnts, dsp, C5_MPI_REAL, d->comm);
    if (e != MPI_SUCCESS) st = c5_err_mpi(e, "MPI_Allgatherv(routing)", __FILE__, __LINE__);
    count_out[r] = total;
    count(d, C5_COLL_ALLGATHER, total * (long)(sizeof *idx + sizeof *score));
  }
  free(cnts); free(dsp);
  return st;
}
