/* checkpoint.c - checkpoints (colt5_io.h; the format: docs/formats.md).
   One parallel HDF5 file per checkpoint, every dataset chunked with
   Fletcher32 and the metadata checksummed (the 1.10 format), so that a
   damaged file is refused by name instead of read as numbers. Written to
   "<path>.tmp" and renamed by rank 0 after every rank closed it; read into
   scratch and copied over the parameters only when all of it was good.
   Parameters and moments on a device backend pass through host buffers
   (c5_backend_host_view, c5_backend_memcpy): the file is the same. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "h5_internal.h"
#include "backend.h"

#define DTYPE_NAME (C5_USE_DOUBLE ? "float64" : "float32")
#define CHUNK_BYTES (1L << 20)   /* chunks of about 1 MiB: Fletcher32 per chunk, and no chunk near HDF5's 4 GiB limit */

static const char *const MOMENT_GROUP[2] = { "/optim/exp_avg", "/optim/exp_avg_sq" };

/* FNV-1a: the configuration string compared across ranks by value. */
static long hash_str(const char *s)
{
  uint64_t h = 1469598103934665603ULL;
  for (; s && *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return (long)(h >> 1);
}

static c5_real *moment(const c5_adamw *o, int which, long i)
{
  return which == 0 ? c5_adamw_exp_avg(o, i) : c5_adamw_exp_avg_sq(o, i);
}

/* Slab g (-1: the parameters' values; 0, 1: the moments), laid out as the value slab, from its first element. */
static c5_real *slab(const c5_params *p, const c5_adamw *o, int g)
{
  return g < 0 ? c5_params_value(p, 0) : moment(o, g, 0);
}

/* The checkpoint's step attribute: the optimizer's steps, else the scalar named "step", else 0. */
static long root_step(const c5_adamw *o, const c5_ckpt_scalar *state, int nstate)
{
  if (o) return c5_adamw_steps(o);
  for (int i = 0; i < nstate; i++)
    if (!strcmp(state[i].name, "step")) return (long)state[i].value;
  return 0;
}

/* ---- writing ---- */

/* Test-only (tests/unit/test_faults.sh): C5_TEST_CKPT_PAUSE_MS=N holds the complete tmp file N ms before
   its rename, so that a SIGKILL lands between the write and the publish. Unset (always, outside that test):
   no pause. */
static void test_pause(void)
{
  const char *e = getenv("C5_TEST_CKPT_PAUSE_MS");
  long ms = e ? strtol(e, NULL, 10) : 0;
  if (ms <= 0) return;
  struct timespec ts = { ms / 1000, ms % 1000 * 1000000L };
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

typedef struct {
  hid_t file, dxpl, lcpl;
  int rank, size;        /* of world: rank r writes rows [r d0 / P, (r + 1) d0 / P) of each dataset */
  const char *tmp;       /* for messages */
} writer;

/* One chunked, Fletcher32-checked dataset, written collectively. The values are replicated: each rank
   writes an even share of the rows (docs/formats.md: measured against rank 0 writing everything). */
static c5_status write_dataset(const writer *w, const char *name, int nd, const long *dims, hid_t ftype, hid_t mtype,
                               const void *buf)
{
  hsize_t hd[C5_H5_MAXDIM], chunk[C5_H5_MAXDIM], start[C5_H5_MAXDIM] = { 0 }, count[C5_H5_MAXDIM];
  size_t row = H5Tget_size(ftype);
  for (int k = 0; k < nd; k++) hd[k] = chunk[k] = count[k] = (hsize_t)dims[k];
  for (int k = 1; k < nd; k++) row *= (size_t)hd[k];
  hsize_t rows = (hsize_t)(CHUNK_BYTES / (long)(row ? row : 1));
  chunk[0] = rows < 1 ? 1 : rows < hd[0] ? rows : hd[0];
  start[0] = hd[0] * (hsize_t)w->rank / (hsize_t)w->size;
  count[0] = hd[0] * (hsize_t)(w->rank + 1) / (hsize_t)w->size - start[0];
  char why[256];
  c5_status st = C5_OK;
  hid_t fsp = H5Screate_simple(nd, hd, NULL), msp = H5Screate_simple(nd, hd, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  hid_t ds = H5I_INVALID_HID;
  if (fsp < 0 || msp < 0 || dcpl < 0 || H5Pset_chunk(dcpl, nd, chunk) < 0 || H5Pset_fletcher32(dcpl) < 0)
    st = C5_ERR(C5_ERR_IO, "checkpoint %s: cannot describe dataset %s (%s)", w->tmp, name, c5_h5_reason(why));
  if (st == C5_OK && (ds = H5Dcreate2(w->file, name, ftype, fsp, w->lcpl, dcpl, H5P_DEFAULT)) < 0)
    st = C5_ERR(C5_ERR_IO, "checkpoint %s: cannot create dataset %s (%s)", w->tmp, name, c5_h5_reason(why));
  if (st == C5_OK) {   /* the same rows of memory and file */
    herr_t e = count[0] == 0 ? H5Sselect_none(fsp) | H5Sselect_none(msp)
                             : H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL) |
                                   H5Sselect_hyperslab(msp, H5S_SELECT_SET, start, NULL, count, NULL);
    if (e < 0) st = C5_ERR(C5_ERR_IO, "checkpoint %s: dataset %s: cannot select rows (%s)", w->tmp, name,
                           c5_h5_reason(why));
  }
  if (st == C5_OK && H5Dwrite(ds, mtype, msp, fsp, w->dxpl, buf) < 0)
    st = C5_ERR(C5_ERR_IO, "checkpoint %s: writing dataset %s failed (%s)", w->tmp, name, c5_h5_reason(why));
  if (ds >= 0) H5Dclose(ds);
  if (dcpl >= 0) H5Pclose(dcpl);
  if (msp >= 0) H5Sclose(msp);
  if (fsp >= 0) H5Sclose(fsp);
  return st;
}

static c5_status write_attr_long(const writer *w, hid_t obj, const char *name, long v)
{
  char why[256];
  C5_CHECK(c5_h5_write_attr_long(obj, name, v) >= 0, C5_ERR_IO, "checkpoint %s: writing attribute %s failed (%s)", w->tmp, name,
           c5_h5_reason(why));
  return C5_OK;
}

static c5_status write_attr_string(const writer *w, hid_t obj, const char *name, const char *v)
{
  char why[256];
  C5_CHECK(c5_h5_write_attr_string(obj, name, v) >= 0, C5_ERR_IO, "checkpoint %s: writing attribute %s failed (%s)", w->tmp, name,
           c5_h5_reason(why));
  return C5_OK;
}

/* Every dataset and attribute. Collective on world: each call below is a collective HDF5 call, and each is
   agreed before the next (an error on one rank stops every rank at the same call). */
static c5_status write_contents(const c5_dist *world, const writer *w, const c5_params *p, const c5_adamw *o,
                                const c5_ckpt_scalar *state, int nstate, const char *config)
{
  const hid_t real = C5_USE_DOUBLE ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
  const hid_t freal = C5_USE_DOUBLE ? H5T_IEEE_F64LE : H5T_IEEE_F32LE;
  char name[512];
  const long total = c5_params_total(p);
  for (int g = -1; g < (o ? 2 : 0) && total > 0; g++) {   /* g = -1: the parameters; 0, 1: the moments */
    const void *host;
    void *stage;
    C5_AGREE(world, c5_backend_host_view(c5_params_backend(p), slab(p, o, g), (size_t)total * sizeof(c5_real), &host,
                                         &stage));
    c5_status st = C5_OK;
    for (long i = 0; i < c5_params_count(p) && st == C5_OK; i++) {
      long dims[C5_PARAM_MAXDIM];
      int nd = c5_params_shape(p, i, dims);
      snprintf(name, sizeof name, "%s/%s", g < 0 ? "/params" : MOMENT_GROUP[g], c5_params_name(p, i));
      st = c5_dist_agree(world, write_dataset(w, name, nd, dims, freal, real,
                                              (const c5_real *)host + (c5_params_value(p, i) - c5_params_value(p, 0))));
    }
    free(stage);
    C5_CALL(st);
  }
  for (int i = 0; i < nstate; i++) {
    long one = 1;
    int64_t v = state[i].value;
    snprintf(name, sizeof name, "/state/%s", state[i].name);
    C5_AGREE(world, write_dataset(w, name, 1, &one, H5T_STD_I64LE, H5T_NATIVE_INT64, &v));
  }
  C5_AGREE(world, write_attr_long(w, w->file, "format", C5_CHECKPOINT_FORMAT));
  C5_AGREE(world, write_attr_string(w, w->file, "dtype", DTYPE_NAME));
  C5_AGREE(world, write_attr_long(w, w->file, "step", root_step(o, state, nstate)));
  C5_AGREE(world, write_attr_string(w, w->file, "config", config));
  if (o) {
    char why[256];
    hid_t g = H5Gopen2(w->file, "/optim", H5P_DEFAULT);
    c5_status st = g >= 0 ? write_attr_long(w, g, "steps", c5_adamw_steps(o))
                          : C5_ERR(C5_ERR_IO, "checkpoint %s: group /optim is missing (%s)", w->tmp, c5_h5_reason(why));
    if (g >= 0) H5Gclose(g);
    C5_AGREE(world, st);
  }
  return C5_OK;
}

/* Rank 0 reserves the checkpoint's bytes (its data and a generous allowance per dataset for HDF5's
   metadata) at the tmp name before HDF5 writes there. A full disk (ENOSPC) or a file-size limit (EFBIG)
   met inside HDF5's collective calls fails on one rank in the middle of a collective (rank 0 writes the
   metadata alone) and hangs the others; met here, it is an error agreed before the first one. The space
   is given back by H5Fcreate's truncation and taken again by the write. */
static c5_status reserve_space(const char *tmp, const c5_params *p, const c5_adamw *o, int nstate)
{
  const long ndata = c5_params_count(p) * (o ? 3 : 1) + nstate;
  const off_t bytes = (off_t)c5_params_total(p) * (o ? 3 : 1) * (off_t)sizeof(c5_real) + (off_t)ndata * 2048 + 65536;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  C5_CHECK(fd >= 0, C5_ERR_IO, "checkpoint %s: cannot create (%s)", tmp, strerror(errno));
  int e = posix_fallocate(fd, 0, bytes);
  close(fd);
  if (e == 0) return C5_OK;
  unlink(tmp);
  return C5_ERR(C5_ERR_IO, "checkpoint %s: cannot reserve its %lld bytes (%s)", tmp, (long long)bytes, strerror(e));
}

/* What every rank checks alone before the first collective. */
static c5_status write_check(const char *path, const c5_params *p, const c5_ckpt_scalar *state, int nstate,
                             char *tmp, size_t len)
{
  C5_CHECK(path && p && (state || nstate == 0) && nstate >= 0, C5_ERR_ARG, "c5_checkpoint_write: NULL argument");
  int w = snprintf(tmp, len, "%s.tmp", path);
  C5_CHECK(w > 0 && (size_t)w < len, C5_ERR_ARG, "checkpoint %s: path too long", path);
  for (int i = 0; i < nstate; i++) {
    C5_CHECK(state[i].name[0] && memchr(state[i].name, '\0', sizeof state[i].name) && !strchr(state[i].name, '/'),
             C5_ERR_ARG, "checkpoint %s: state scalar %d has an empty, unterminated or '/' name", path, i);
    for (int j = 0; j < i; j++)
      C5_CHECK(strcmp(state[i].name, state[j].name), C5_ERR_ARG, "checkpoint %s: state scalar %s given twice", path,
               state[i].name);
  }
  return C5_OK;
}

c5_status c5_checkpoint_write(const c5_dist *world, const char *path, const c5_params *p, const c5_adamw *o,
                              const c5_ckpt_scalar *state, int nstate, const char *config_json)
{
  C5_CHECK(world, C5_ERR_ARG, "c5_checkpoint_write: dist is NULL");
  char tmp[1100];
  const char *config = config_json ? config_json : "{}";
  c5_status st = write_check(path, p, state, nstate, tmp, sizeof tmp);
  /* HDF5 writes the metadata once for all ranks: what it says must be the same on each */
  uint64_t h = 0;
  for (int i = 0; st == C5_OK && i < nstate; i++) h = h * 31 + (uint64_t)hash_str(state[i].name) + (uint64_t)state[i].value;
  const long shash = (long)(h >> 1);
  C5_CALL(c5_dist_agree_args(world, st, 6, (c5_dist_arg[]){
      { "checkpoint: parameter count", p ? c5_params_count(p) : 0 }, { "checkpoint: parameter total", p ? c5_params_total(p) : 0 },
      { "checkpoint: with moments", o != NULL }, { "checkpoint: state scalars", nstate },
      { "checkpoint: state names and values (hash)", shash }, { "checkpoint: config (hash)", hash_str(config) } }));
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   /* errors come back as messages */
  const int rank = c5_dist_rank(world);
  char why[256];
  writer w = { .file = H5I_INVALID_HID, .dxpl = H5I_INVALID_HID, .lcpl = H5I_INVALID_HID, .rank = rank,
               .size = c5_dist_size(world), .tmp = tmp };
  hid_t fapl = H5I_INVALID_HID;
  st = c5_h5_fapl_mpio(world, &fapl);
  if (st == C5_OK) st = c5_h5_dxpl_collective(&w.dxpl);
  if (st == C5_OK) {
    w.lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (w.lcpl < 0 || H5Pset_create_intermediate_group(w.lcpl, 1) < 0)
      st = C5_ERR(C5_ERR_IO, "checkpoint %s: cannot make a link list (%s)", path, c5_h5_reason(why));
  }
  if (st == C5_OK && rank == 0) st = reserve_space(tmp, p, o, nstate);
  st = c5_dist_agree(world, st);
  if (st != C5_OK) goto out;
  w.file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);   /* collective */
  st = w.file >= 0 ? C5_OK : C5_ERR(C5_ERR_IO, "checkpoint %s: cannot create %s (%s)", path, tmp, c5_h5_reason(why));
  st = c5_dist_agree(world, st);
  if (st == C5_OK) st = write_contents(world, &w, p, o, state, nstate, config);
  if (w.file >= 0 && H5Fclose(w.file) < 0 && st == C5_OK)   /* collective */
    st = C5_ERR(C5_ERR_IO, "checkpoint %s: closing %s failed (%s)", path, tmp, c5_h5_reason(why));
out:
  if (fapl >= 0) H5Pclose(fapl);
  if (w.dxpl >= 0) H5Pclose(w.dxpl);
  if (w.lcpl >= 0) H5Pclose(w.lcpl);
  /* every rank has closed the file when the agreement returns */
  st = c5_dist_agree(world, st);
  if (rank == 0) {
    if (st == C5_OK) test_pause();
    if (st == C5_OK) st = c5_h5_publish("checkpoint", tmp, path);
    if (st != C5_OK) unlink(tmp);   /* the previous checkpoint at path stays as it was */
  }
  C5_AGREE(world, st);
  return C5_OK;
}

/* ---- reading ---- */

/* Dataset name of the file, shape and element kind checked, read converted into mem (H5S_ALL, this rank
   alone: the transfer is independent). size: the element size the file's dtype says (0: any). */
static c5_status read_dataset(const c5_h5 *f, const char *name, int nd, const long *dims, hid_t mem,
                              H5T_class_t cls, size_t size, void *buf)
{
  C5_CHECK(c5_h5_exists(f, name), C5_ERR_IO, "checkpoint %s: dataset %s is missing (a checkpoint of another "
           "model, or written without it)", f->path, name);
  int fnd;
  long fdims[C5_H5_MAXDIM];
  C5_CALL(c5_h5_shape(f, name, &fnd, fdims));
  int same = fnd == nd;
  for (int k = 0; same && k < nd; k++) same = fdims[k] == dims[k];
  if (!same) {
    char a[128], b[128];
    c5_h5_shape_str(a, sizeof a, fnd, fdims);
    c5_h5_shape_str(b, sizeof b, nd, dims);
    return C5_ERR(C5_ERR_SHAPE, "checkpoint %s: dataset %s has shape %s, this model's is %s (a checkpoint of "
                  "another configuration?)", f->path, name, a, b);
  }
  char why[256];
  hid_t d = H5Dopen2(f->file, name, H5P_DEFAULT);
  C5_CHECK(d >= 0, C5_ERR_IO, "checkpoint %s: cannot open dataset %s (%s)", f->path, name, c5_h5_reason(why));
  hid_t t = H5Dget_type(d);
  int kind_ok = H5Tget_class(t) == cls && (size == 0 || H5Tget_size(t) == size);
  size_t got = H5Tget_size(t);
  H5Tclose(t);
  if (!kind_ok) {
    H5Dclose(d);
    return C5_ERR(C5_ERR_IO, "checkpoint %s: dataset %s holds %zu-byte %s, expected %s", f->path, name, got,
                  cls == H5T_FLOAT ? "elements (not the file's dtype, or not floating)" : "elements (not integers)",
                  cls == H5T_FLOAT ? "the file's dtype" : "int64");
  }
  herr_t e = H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  c5_status st = C5_OK;
  if (e < 0) {
    if (c5_h5_stack_mentions("checksum") || c5_h5_stack_mentions("fletcher"))
      st = C5_ERR(C5_ERR_IO, "checkpoint %s: dataset %s is corrupted (checksum)", f->path, name);
    else
      st = C5_ERR(C5_ERR_IO, "checkpoint %s: reading dataset %s failed (%s)", f->path, name, c5_h5_reason(why));
    H5Eclear2(H5E_DEFAULT);
  }
  H5Dclose(d);
  return st;
}

typedef struct { const c5_params *p; char unknown[256]; } unknown_iter;
static herr_t unknown_cb(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
  (void)g; (void)info;
  unknown_iter *it = data;
  long idx;
  if (c5_params_find(it->p, name, &idx) == C5_OK) return 0;
  c5_error_clear();
  snprintf(it->unknown, sizeof it->unknown, "%s", name);
  return 1;   /* stop */
}

/* group holds no dataset the table does not know (a file of another configuration). */
static c5_status no_unknown(const c5_h5 *f, const char *group, const c5_params *p)
{
  char why[256];
  int found;
  C5_CALL(c5_h5_path_check(f, group, &found));   /* H5Literate reads the group's local heap */
  hid_t g = H5Gopen2(f->file, group, H5P_DEFAULT);
  C5_CHECK(g >= 0, C5_ERR_IO, "checkpoint %s: group %s is missing (%s)", f->path, group, c5_h5_reason(why));
  unknown_iter it = { .p = p };
  herr_t e = H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, unknown_cb, &it);
  H5Gclose(g);
  C5_CHECK(e >= 0, C5_ERR_IO, "checkpoint %s: cannot list group %s (%s)", f->path, group, c5_h5_reason(why));
  C5_CHECK(!it.unknown[0], C5_ERR_SHAPE, "checkpoint %s: dataset %s/%s is not a parameter of this model (a "
           "checkpoint of another configuration?)", f->path, group, it.unknown);
  return C5_OK;
}

/* Everything the file holds for this reader, into scratch (nothing of the caller's is touched):
   vals [3][total] (parameters, then each moment, at the parameters' slab offsets), sv [nstate],
   *steps (the optimizer's), *config. */
static c5_status read_contents(const c5_h5 *f, const c5_params *p, int with_moments, const c5_ckpt_scalar *state,
                               int nstate, c5_real *vals, int64_t *sv, long *steps, char **config)
{
  long format;
  char *dtype = NULL;
  C5_CHECK(c5_h5_exists(f, "/params"), C5_ERR_IO, "checkpoint %s: no group /params (not a libcolt5 checkpoint)",
           f->path);
  C5_CALL(c5_h5_attr_long(f, "/", "format", &format));
  C5_CHECK(format == C5_CHECKPOINT_FORMAT, C5_ERR_IO, "checkpoint %s: format %ld, this library reads format %d",
           f->path, format, C5_CHECKPOINT_FORMAT);
  C5_CALL(c5_h5_attr_string(f, "/", "dtype", &dtype));
  size_t esize = !strcmp(dtype, "float64") ? 8 : !strcmp(dtype, "float32") ? 4 : 0;
  c5_status st = esize ? C5_OK : C5_ERR(C5_ERR_IO, "checkpoint %s: dtype \"%s\" (float64 or float32 expected)",
                                        f->path, dtype);
  free(dtype);
  C5_CALL(st);
  const hid_t mem = C5_USE_DOUBLE ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
  const long total = c5_params_total(p);
  const c5_real *base = c5_params_value(p, 0);
  char name[512];
  for (int g = -1; g < (with_moments ? 2 : 0); g++) {
    const char *group = g < 0 ? "/params" : MOMENT_GROUP[g];
    for (long i = 0; i < c5_params_count(p); i++) {
      long dims[C5_PARAM_MAXDIM];
      int nd = c5_params_shape(p, i, dims);
      snprintf(name, sizeof name, "%s/%s", group, c5_params_name(p, i));
      C5_CALL(read_dataset(f, name, nd, dims, mem, H5T_FLOAT, esize,
                           vals + (g + 1) * total + (c5_params_value(p, i) - base)));
    }
    C5_CALL(no_unknown(f, group, p));
  }
  for (int i = 0; i < nstate; i++) {
    long one = 1;
    snprintf(name, sizeof name, "/state/%s", state[i].name);
    C5_CALL(read_dataset(f, name, 1, &one, H5T_NATIVE_INT64, H5T_INTEGER, 0, &sv[i]));
  }
  if (with_moments) C5_CALL(c5_h5_attr_long(f, "/optim", "steps", steps));
  C5_CALL(c5_h5_attr_string(f, "/", "config", config));
  return C5_OK;
}

static c5_status read_check(const char *path, const c5_params *p, const c5_ckpt_scalar *state, int nstate)
{
  C5_CHECK(path && p && (state || nstate == 0) && nstate >= 0, C5_ERR_ARG, "c5_checkpoint_read: NULL argument");
  C5_CHECK(c5_params_count(p) > 0 && c5_params_value(p, 0), C5_ERR_ARG,
           "checkpoint %s: the parameter table is empty or not allocated", path);
  C5_CHECK(access(path, R_OK) == 0, C5_ERR_IO, "checkpoint %s: cannot open (%s)", path, strerror(errno));
  return C5_OK;
}

/* The scratch over the caller's tables: nothing failed on any rank. Rank-local. */
static c5_status commit(c5_params *p, c5_adamw *o, const c5_real *vals, const int64_t *sv, long steps,
                        c5_ckpt_scalar *state, int nstate)
{
  const long total = c5_params_total(p);
  /* scratch and slabs share one layout: one copy per slab (host to device on a GPU) */
  for (int g = -1; g < (o ? 2 : 0); g++)
    C5_CALL(c5_backend_memcpy(c5_params_backend(p), slab(p, o, g), vals + (g + 1) * total,
                              (size_t)total * sizeof(c5_real)));
  for (int i = 0; i < nstate; i++) state[i].value = sv[i];
  if (o) c5_adamw_set_steps(o, steps);
  return C5_OK;
}

c5_status c5_checkpoint_read(const c5_dist *world, const char *path, c5_params *p, c5_adamw *o,
                             c5_ckpt_scalar *state, int nstate, char **config_json)
{
  C5_CHECK(world, C5_ERR_ARG, "c5_checkpoint_read: dist is NULL");
  c5_status st = read_check(path, p, state, nstate);
  C5_CALL(c5_dist_agree_args(world, st, 3, (c5_dist_arg[]){
      { "checkpoint read: parameter total", st == C5_OK ? c5_params_total(p) : 0 },
      { "checkpoint read: with moments", o != NULL }, { "checkpoint read: state scalars", nstate } }));
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  char why[256];
  c5_real *vals = NULL;
  int64_t *sv = NULL;
  char *config = NULL;
  long steps = 0;
  c5_h5 f = { .file = H5I_INVALID_HID };
  snprintf(f.path, sizeof f.path, "%s", path);
  hid_t fapl = H5I_INVALID_HID;
  st = c5_h5_fapl_mpio(world, &fapl);
  C5_AGREE(world, st);
  f.file = H5Fopen(path, H5F_ACC_RDONLY, fapl);   /* collective */
  if (f.file < 0) {   /* (before any other HDF5 call clears the error stack) */
    int sum = c5_h5_stack_mentions("checksum");
    st = C5_ERR(C5_ERR_IO, "checkpoint %s: not a readable HDF5 file (%s%s)", path,
                sum ? "metadata checksum: corrupted; " : "", c5_h5_reason(why));
  }
  H5Pclose(fapl);
  C5_AGREE(world, st);
  /* rank-local from here to the close: independent reads, nothing collective */
  const long total = c5_params_total(p);
  vals = malloc((size_t)total * (o ? 3 : 1) * sizeof *vals);
  sv = calloc((size_t)nstate + 1, sizeof *sv);
  if (!vals || !sv)
    st = C5_ERR(C5_ERR_MEM, "checkpoint %s: out of memory for %ld values of scratch", path, total * (o ? 3 : 1));
  else
    st = read_contents(&f, p, o != NULL, state, nstate, vals, sv, &steps, &config);
  if (H5Fclose(f.file) < 0 && st == C5_OK)   /* collective */
    st = C5_ERR(C5_ERR_IO, "checkpoint %s: close failed (%s)", path, c5_h5_reason(why));
  st = c5_dist_agree(world, st);
  if (st == C5_OK) st = commit(p, o, vals, sv, steps, state, nstate);
  free(vals);
  free(sv);
  if (st == C5_OK && config_json) *config_json = config;
  else free(config);
  return st == C5_OK ? C5_OK : c5_err_trace(st, __FILE__, __LINE__);
}

/* ---- the checkpoints of a directory ---- */

/* The step of a checkpoint's file name "ckpt-<digits>.h5" (nothing after: "*.tmp" is not one), or -1. */
static long long ckpt_step(const char *name)
{
  if (strncmp(name, "ckpt-", 5)) return -1;
  const char *s = name + 5, *e = s;
  long long step = 0;
  for (; *e >= '0' && *e <= '9'; e++) {
    if (step > (LLONG_MAX - 9) / 10) return -1;
    step = step * 10 + (*e - '0');
  }
  return e > s && !strcmp(e, ".h5") ? step : -1;
}

typedef struct { long long step; char name[256]; } ckpt_entry;

static int by_step_desc(const void *a, const void *b)
{
  const ckpt_entry *x = a, *y = b;
  return x->step < y->step ? 1 : x->step > y->step ? -1 : strcmp(x->name, y->name);
}

/* The checkpoints of dir, newest first (*n = 0 when dir does not exist). */
static c5_status list_ckpts(const char *dir, ckpt_entry **out, long *n)
{
  *out = NULL;
  *n = 0;
  DIR *dp = opendir(dir);
  if (!dp && errno == ENOENT) return C5_OK;
  C5_CHECK(dp, C5_ERR_IO, "checkpoint directory %s: cannot list (%s)", dir, strerror(errno));
  long cap = 0;
  c5_status st = C5_OK;
  for (struct dirent *de; (de = readdir(dp)) != NULL;) {
    long long s = ckpt_step(de->d_name);
    if (s < 0 || strlen(de->d_name) >= sizeof(*out)->name) continue;
    if (*n == cap) {
      cap = cap ? 2 * cap : 16;
      ckpt_entry *e = realloc(*out, (size_t)cap * sizeof *e);
      if (!e) { st = C5_ERR(C5_ERR_MEM, "checkpoint directory %s: out of memory listing it", dir); break; }
      *out = e;
    }
    (*out)[*n].step = s;
    snprintf((*out)[*n].name, sizeof (*out)[*n].name, "%s", de->d_name);
    (*n)++;
  }
  closedir(dp);
  if (st != C5_OK) { C5_FREE(*out); *n = 0; return st; }
  if (*n > 1) qsort(*out, (size_t)*n, sizeof **out, by_step_desc);
  return C5_OK;
}

c5_status c5_checkpoint_name(const char *dir, long step, char *path, size_t len)
{
  C5_CHECK(dir && path && len > 0 && step >= 0, C5_ERR_ARG, "c5_checkpoint_name: NULL argument or step %ld < 0", step);
  int w = snprintf(path, len, "%s/ckpt-%08ld.h5", dir, step);
  C5_CHECK(w > 0 && (size_t)w < len, C5_ERR_ARG, "checkpoint name in %s: %zu bytes are too few", dir, len);
  return C5_OK;
}

c5_status c5_checkpoint_latest(const char *dir, char *path, size_t len)
{
  C5_CHECK(dir && path && len > 0, C5_ERR_ARG, "c5_checkpoint_latest: NULL argument");
  path[0] = '\0';
  ckpt_entry *e;
  long n;
  C5_CALL(list_ckpts(dir, &e, &n));
  c5_status st = C5_OK;
  if (n > 0) {
    int w = snprintf(path, len, "%s/%s", dir, e[0].name);
    if (w < 0 || (size_t)w >= len) {
      path[0] = '\0';
      st = C5_ERR(C5_ERR_ARG, "checkpoint %s/%s: the path needs %d bytes, %zu given", dir, e[0].name, w + 1, len);
    }
  }
  free(e);
  return st;
}

/* Rank 0's part of the prune. */
static c5_status prune_local(const char *dir, int keep)
{
  ckpt_entry *e;
  long n;
  C5_CALL(list_ckpts(dir, &e, &n));
  c5_status st = C5_OK;
  char path[1300];
  for (long i = keep; i < n; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, e[i].name);
    if (unlink(path) != 0 && errno != ENOENT && st == C5_OK)
      st = C5_ERR(C5_ERR_IO, "checkpoint %s: cannot remove it (%s)", path, strerror(errno));
  }
  free(e);
  return st;
}

c5_status c5_checkpoint_prune(const c5_dist *world, const char *dir, int keep)
{
  C5_CHECK(world, C5_ERR_ARG, "c5_checkpoint_prune: dist is NULL");
  c5_status st = !dir ? C5_ERR(C5_ERR_ARG, "c5_checkpoint_prune: dir is NULL")
               : keep < 1 ? C5_ERR(C5_ERR_ARG, "checkpoint prune in %s: keep = %d must be >= 1", dir, keep) : C5_OK;
  C5_CALL(c5_dist_agree_args(world, st, 1, (c5_dist_arg[]){ { "checkpoint prune: keep", keep } }));
  if (c5_dist_rank(world) == 0) st = prune_local(dir, keep);
  C5_AGREE(world, st);
  return C5_OK;
}
