/* dump.c - activation dumps (colt5_io.h; the format: docs/formats.md): what
   the last forward computed inside each block - its input, every router's
   logits, scores and picks, the light and heavy branches' outputs - written
   collectively through parallel HDF5, each rank its shard of the sequence
   by hyperslab, so that a dump does not depend on the number of ranks.
   A dump file grows by one group per step: the step is added to a copy
   ("<path>.tmp") that rank 0 renames over path when every rank has closed
   it, so an interrupted dump leaves the previous file as it was. The
   activations of a model on a device backend are staged through host
   buffers one dataset at a time (put: c5_backend_host_view). */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include "h5_internal.h"
#include "dump_internal.h"
#include "backend.h"

#define C5_DUMP_FORMAT 1

typedef struct {
  const c5_dist *d;
  const c5_backend *be;   /* where the dumped tensors live */
  hid_t file, dxpl, lcpl;
  const char *path;    /* the dump's name, for messages */
} dumper;

#define MEM_REAL (C5_USE_DOUBLE ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT)
#define FILE_REAL (C5_USE_DOUBLE ? H5T_IEEE_F64LE : H5T_IEEE_F32LE)

/* Dataset name over the file space fsp (its selection: this rank's elements, nmem of them, in the
   order buf holds them; buf on w->be), written collectively. Collective on w->d; agreed. */
static c5_status put(const dumper *w, const char *name, hid_t fsp, hsize_t nmem, hid_t ftype, hid_t mtype,
                     const void *buf)
{
  char why[256];
  c5_status st = C5_OK;
  hsize_t m = nmem ? nmem : 1;
  hid_t msp = H5Screate_simple(1, &m, NULL);
  if (msp < 0 || (nmem == 0 && H5Sselect_none(msp) < 0))
    st = C5_ERR(C5_ERR_IO, "dump %s: dataset %s: cannot select (%s)", w->path, name, c5_h5_reason(why));
  const void *host = buf;
  void *stage = NULL;
  if (st == C5_OK) st = c5_backend_host_view(w->be, buf, (size_t)nmem * H5Tget_size(mtype), &host, &stage);
  st = c5_dist_agree(w->d, st);
  hid_t ds = H5I_INVALID_HID;
  if (st == C5_OK) {
    ds = H5Dcreate2(w->file, name, ftype, fsp, w->lcpl, H5P_DEFAULT, H5P_DEFAULT);   /* collective */
    if (ds < 0) st = C5_ERR(C5_ERR_IO, "dump %s: cannot create dataset %s (%s)", w->path, name, c5_h5_reason(why));
    st = c5_dist_agree(w->d, st);
  }
  if (st == C5_OK && H5Dwrite(ds, mtype, msp, fsp, w->dxpl, host) < 0)   /* collective */
    st = C5_ERR(C5_ERR_IO, "dump %s: writing dataset %s failed (%s)", w->path, name, c5_h5_reason(why));
  if (ds >= 0) H5Dclose(ds);
  if (msp >= 0) H5Sclose(msp);
  free(stage);
  C5_AGREE(w->d, st);
  return C5_OK;
}

/* A global [dims] dataset of which this rank holds the box [start, start + count). */
static c5_status put_box(const dumper *w, const char *name, int nd, const hsize_t *dims, const hsize_t *start,
                         const hsize_t *count, hid_t ftype, hid_t mtype, const void *buf)
{
  hsize_t nmem = 1;
  for (int k = 0; k < nd; k++) nmem *= count[k];
  hid_t fsp = H5Screate_simple(nd, dims, NULL);
  char why[256];
  c5_status st = fsp >= 0 && (nmem ? H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL)
                                   : H5Sselect_none(fsp)) >= 0
                     ? C5_OK
                     : C5_ERR(C5_ERR_IO, "dump %s: dataset %s: cannot select (%s)", w->path, name, c5_h5_reason(why));
  if (st == C5_OK) st = put(w, name, fsp, nmem, ftype, mtype, buf);
  else st = c5_dist_agree(w->d, st);
  if (fsp >= 0) H5Sclose(fsp);
  return st == C5_OK ? C5_OK : c5_err_trace(st, __FILE__, __LINE__);
}

/* [batch, n, width] sharded on the sequence: this rank's tokens [offset, offset + n_local). */
static c5_status put_seq(const dumper *w, const char *name, const c5_layout *lay, long batch, long width,
                         const c5_real *buf)
{
  const hid_t ft = FILE_REAL;
  hsize_t dims[3] = { (hsize_t)batch, (hsize_t)lay->n, (hsize_t)width };
  hsize_t start[3] = { 0, (hsize_t)lay->offset, 0 }, count[3] = { (hsize_t)batch, (hsize_t)lay->n_local, (hsize_t)width };
  C5_CALL(put_box(w, name, 3, dims, start, count, ft, MEM_REAL, buf));
  return C5_OK;
}

static c5_status attr_long(const dumper *w, hid_t obj, const char *name, long v)
{
  char why[256];
  C5_CHECK(c5_h5_write_attr_long(obj, name, v) >= 0, C5_ERR_IO, "dump %s: writing attribute %s failed (%s)", w->path, name,
           c5_h5_reason(why));
  return C5_OK;
}

static c5_status attr_string(const dumper *w, hid_t obj, const char *name, const char *v)
{
  char why[256];
  C5_CHECK(c5_h5_write_attr_string(obj, name, v) >= 0, C5_ERR_IO, "dump %s: writing attribute %s failed (%s)", w->path, name,
           c5_h5_reason(why));
  return C5_OK;
}

/* A group with integer attributes (names[i] = values[i]). Collective; agreed. */
static c5_status make_group(const dumper *w, const char *name, int nattr, const char *const *names, const long *values)
{
  char why[256];
  hid_t g = H5Gcreate2(w->file, name, w->lcpl, H5P_DEFAULT, H5P_DEFAULT);   /* collective */
  c5_status st = g >= 0 ? C5_OK : C5_ERR(C5_ERR_IO, "dump %s: cannot create group %s (%s)", w->path, name,
                                         c5_h5_reason(why));
  C5_AGREE(w->d, st);
  for (int i = 0; i < nattr && st == C5_OK; i++) st = c5_dist_agree(w->d, attr_long(w, g, names[i], values[i]));
  H5Gclose(g);
  return st == C5_OK ? C5_OK : c5_err_trace(st, __FILE__, __LINE__);
}

/* One router's part: its group (attributes routed, rows, k), and when it routed router_logits and
   router_scores [rows, n] and routed_indices [rows, k] (global, ascending per row: rank r's picks after
   those of ranks < r, at the columns an exclusive scan of the counts gives). */
static c5_status put_router(const dumper *w, const char *group, const char *which, const c5_layout *lay,
                            const c5_router_cache *rc)
{
  const c5_routing *rt = c5_router_cache_routing(rc);
  char name[512];
  snprintf(name, sizeof name, "%s/%s", group, which);
  const char *an[3] = { "routed", "rows", "k" };
  const long av[3] = { rt->routed, rt->rows, rt->routed ? rt->k : 0 };
  C5_CALL(make_group(w, name, 3, an, av));
  if (!rt->routed) return C5_OK;
  const hid_t ft = FILE_REAL;
  const long rows = rt->rows;
  char ds[600];
  {
    hsize_t dims[2] = { (hsize_t)rows, (hsize_t)lay->n }, start[2] = { 0, (hsize_t)lay->offset },
            count[2] = { (hsize_t)rows, (hsize_t)lay->n_local };
    snprintf(ds, sizeof ds, "%s/router_logits", name);
    C5_CALL(put_box(w, ds, 2, dims, start, count, ft, MEM_REAL, c5_router_cache_logits(rc)));
    snprintf(ds, sizeof ds, "%s/router_scores", name);
    C5_CALL(put_box(w, ds, 2, dims, start, count, ft, MEM_REAL, c5_router_cache_scores(rc)));
  }
  long *col = malloc((size_t)rows * sizeof *col + 1);
  C5_AGREE(w->d, col ? C5_OK : C5_ERR(C5_ERR_MEM, "dump %s: out of memory for %ld rows", w->path, rows));
  for (long r = 0; r < rows; r++) col[r] = rt->count[r];
  c5_status st = c5_dist_exscan_sum_long(w->d, col, rows);
  hid_t fsp = H5I_INVALID_HID;
  hsize_t nmem = 0;
  if (st == C5_OK) {
    hsize_t dims[2] = { (hsize_t)rows, (hsize_t)rt->k };
    fsp = H5Screate_simple(2, dims, NULL);
    herr_t e = fsp >= 0 ? H5Sselect_none(fsp) : -1;
    for (long r = 0; r < rows && e >= 0; r++) {
      if (rt->count[r] == 0) continue;
      if (col[r] + rt->count[r] > rt->k) {
        st = C5_ERR(C5_ERR_INTERNAL, "dump %s: %s row %ld holds %ld picks after %ld on lower ranks, k = %ld", w->path,
                    name, r, rt->count[r], col[r], rt->k);
        break;
      }
      hsize_t start[2] = { (hsize_t)r, (hsize_t)col[r] }, count[2] = { 1, (hsize_t)rt->count[r] };
      e = H5Sselect_hyperslab(fsp, H5S_SELECT_OR, start, NULL, count, NULL);
      nmem += (hsize_t)rt->count[r];
    }
    if (st == C5_OK && e < 0) {
      char why[256];
      st = C5_ERR(C5_ERR_IO, "dump %s: %s: cannot select the routed indices (%s)", w->path, name, c5_h5_reason(why));
    }
  }
  free(col);
  st = c5_dist_agree(w->d, st);
  snprintf(ds, sizeof ds, "%s/routed_indices", name);
  /* this rank's picks lie in idx in row order from entry 0 (router.c): the selection's order */
  if (st == C5_OK) st = put(w, ds, fsp, nmem, H5T_STD_I64LE, H5T_NATIVE_LONG, rt->idx);
  if (fsp >= 0) H5Sclose(fsp);
  return st == C5_OK ? C5_OK : c5_err_trace(st, __FILE__, __LINE__);
}

/* group/<branch>/light_out and heavy_out (light_out absent for attention without the light branch). */
static c5_status put_branches(const dumper *w, const char *group, const c5_block *b, const c5_block_cache *c,
                              const c5_layout *lay, long batch, c5_real *buf)
{
  const c5_routed_attn *ma = c5_block_attn(b);
  const c5_routed_ff *mf = c5_block_ff(b);
  const c5_routed_attn_cache *ac = c5_block_attn_cache(c);
  const c5_routed_ff_cache *fc = c5_block_ff_cache(c);
  const long dim = c5_block_get_config(b)->attn.dim;
  char ds[600];
  if (c5_routed_attn_has_light(ma)) {
    C5_AGREE(w->d, c5_routed_attn_light_out(ma, ac, buf));
    snprintf(ds, sizeof ds, "%s/attn/light_out", group);
    C5_CALL(put_seq(w, ds, lay, batch, dim, buf));
  }
  C5_AGREE(w->d, c5_routed_attn_heavy_out(ma, ac, buf));
  snprintf(ds, sizeof ds, "%s/attn/heavy_out", group);
  C5_CALL(put_seq(w, ds, lay, batch, dim, buf));
  C5_AGREE(w->d, c5_routed_ff_light_out(mf, fc, buf));
  snprintf(ds, sizeof ds, "%s/ff/light_out", group);
  C5_CALL(put_seq(w, ds, lay, batch, dim, buf));
  C5_AGREE(w->d, c5_routed_ff_heavy_out(mf, fc, buf));
  snprintf(ds, sizeof ds, "%s/ff/heavy_out", group);
  C5_CALL(put_seq(w, ds, lay, batch, dim, buf));
  return C5_OK;
}

/* One block's activations under group (e.g. /step_100/layer_0). Collective on w->d. */
static c5_status dump_block(const dumper *w, const char *group, const c5_block *b, const c5_layout *lay,
                            const c5_block_cache *c, const c5_real *x)
{
  const long batch = c5_block_cache_batch(c), dim = c5_block_get_config(b)->attn.dim;
  C5_CALL(make_group(w, group, 0, NULL, NULL));
  char ds[600];
  snprintf(ds, sizeof ds, "%s/input", group);
  C5_CALL(put_seq(w, ds, lay, batch, dim, x));
  C5_CALL(put_router(w, group, "q", lay, c5_routed_attn_router_q(c5_block_attn_cache(c))));
  C5_CALL(put_router(w, group, "kv", lay, c5_routed_attn_router_kv(c5_block_attn_cache(c))));
  C5_CALL(put_router(w, group, "ff", lay, c5_routed_ff_router(c5_block_ff_cache(c))));
  c5_real *buf = NULL;   /* on the block's backend: the modules form the branches' outputs there */
  c5_status st = c5_backend_alloc(w->be, (size_t)(batch * lay->n_local * dim) * sizeof *buf + 1, (void **)&buf);
  C5_AGREE(w->d, st == C5_OK ? C5_OK : C5_ERR(C5_ERR_MEM, "dump %s: out of memory for [%ld, %ld, %ld] on the %s "
                                              "backend", w->path, batch, lay->n_local, dim, c5_backend_name(w->be)));
  st = put_branches(w, group, b, c, lay, batch, buf);
  c5_backend_free(w->be, buf);
  return st == C5_OK ? C5_OK : c5_err_trace(st, __FILE__, __LINE__);
}

/* Rank 0: path's bytes into tmp (the file a step is added to). */
static c5_status copy_file(const char *src, const char *dst)
{
  int in = open(src, O_RDONLY), out = in >= 0 ? open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
  c5_status st = in >= 0 && out >= 0 ? C5_OK : C5_ERR(C5_ERR_IO, "dump %s: cannot copy it to %s (%s)", src, dst,
                                                       strerror(errno));
  char buf[1 << 16];
  for (ssize_t k; st == C5_OK && (k = read(in, buf, sizeof buf)) != 0;) {
    if (k < 0 || write(out, buf, (size_t)k) != k)
      st = C5_ERR(C5_ERR_IO, "dump %s: copying it to %s failed (%s)", src, dst, strerror(errno));
  }
  if (in >= 0) close(in);
  if (out >= 0 && close(out) != 0 && st == C5_OK)
    st = C5_ERR(C5_ERR_IO, "dump %s: closing %s failed (%s)", src, dst, strerror(errno));
  return st;
}

/* The dump file open on every rank of d as tmp (a copy of path, or new), with the step's group
   (replacing one of the same step: a run resumed from an earlier checkpoint dumps it again). */
static c5_status dump_open(dumper *w, const char *path, const char *tmp, long step, const c5_layout *lay)
{
  const int rank = c5_dist_rank(w->d);
  long existed = 0;
  c5_status st = C5_OK;
  if (rank == 0) {
    existed = access(path, F_OK) == 0;
    if (existed) st = copy_file(path, tmp);
    else if (unlink(tmp) != 0 && errno != ENOENT)
      st = C5_ERR(C5_ERR_IO, "dump %s: cannot remove the stale %s (%s)", path, tmp, strerror(errno));
  }
  C5_AGREE(w->d, st);
  C5_CALL(c5_dist_reduce_long(w->d, &existed, 1, C5_REDUCE_MAX));
  char why[256];
  hid_t fapl = H5I_INVALID_HID;
  st = c5_h5_fapl_mpio(w->d, &fapl);
  if (st == C5_OK) st = c5_h5_dxpl_collective(&w->dxpl);
  if (st == C5_OK) {
    w->lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (w->lcpl < 0 || H5Pset_create_intermediate_group(w->lcpl, 1) < 0)
      st = C5_ERR(C5_ERR_IO, "dump %s: cannot make a link list (%s)", path, c5_h5_reason(why));
  }
  st = c5_dist_agree(w->d, st);
  if (st == C5_OK) {
    w->file = existed ? H5Fopen(tmp, H5F_ACC_RDWR, fapl) : H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (w->file < 0) st = C5_ERR(C5_ERR_IO, "dump %s: cannot %s %s (%s)", path, existed ? "open" : "create", tmp,
                                 c5_h5_reason(why));
  }
  if (fapl >= 0) H5Pclose(fapl);
  C5_AGREE(w->d, st);
  if (!existed) {
    C5_AGREE(w->d, attr_long(w, w->file, "format", C5_DUMP_FORMAT));
    C5_AGREE(w->d, attr_string(w, w->file, "dtype", C5_USE_DOUBLE ? "float64" : "float32"));
  } else {
    c5_h5 f = { .file = w->file };
    snprintf(f.path, sizeof f.path, "%s", path);
    long format = 0;
    st = c5_h5_attr_long(&f, "/", "format", &format);
    if (st == C5_OK && format != C5_DUMP_FORMAT)
      st = C5_ERR(C5_ERR_IO, "dump %s: format %ld, this library writes format %d", path, format, C5_DUMP_FORMAT);
    C5_AGREE(w->d, st);
  }
  char group[64];
  snprintf(group, sizeof group, "/step_%ld", step);
  if (H5Lexists(w->file, group, H5P_DEFAULT) > 0 && H5Ldelete(w->file, group, H5P_DEFAULT) < 0)   /* collective */
    st = C5_ERR(C5_ERR_IO, "dump %s: cannot replace group %s (%s)", path, group, c5_h5_reason(why));
  C5_AGREE(w->d, st);
  const char *an[3] = { "step", "n", "ranks" };
  const long av[3] = { step, lay->n, c5_dist_size(w->d) };
  C5_CALL(make_group(w, group, 3, an, av));
  return C5_OK;
}

/* Close on every rank, then rank 0 renames tmp over path (or removes it after an error). st: the
   (agreed) status so far. */
static c5_status dump_close(dumper *w, const char *path, const char *tmp, c5_status st)
{
  char why[256];
  if (w->file >= 0 && H5Fclose(w->file) < 0 && st == C5_OK)   /* collective */
    st = C5_ERR(C5_ERR_IO, "dump %s: closing %s failed (%s)", path, tmp, c5_h5_reason(why));
  w->file = H5I_INVALID_HID;
  if (w->dxpl >= 0) H5Pclose(w->dxpl);
  if (w->lcpl >= 0) H5Pclose(w->lcpl);
  st = c5_dist_agree(w->d, st);   /* every rank has closed the file when it returns */
  if (c5_dist_rank(w->d) == 0) {
    if (st == C5_OK) st = c5_h5_publish("dump", tmp, path);
    if (st != C5_OK) unlink(tmp);
  }
  C5_AGREE(w->d, st);
  return C5_OK;
}

/* Checks on this rank before the first collective: arguments and the tmp name. */
static c5_status dump_check(const c5_dist *d, const c5_layout *lay, const char *path, long step, char *tmp,
                            size_t len)
{
  C5_CHECK(d && lay && path, C5_ERR_ARG, "activation dump: NULL argument");
  C5_CHECK(step >= 0, C5_ERR_ARG, "dump %s: step %ld < 0", path, step);
  int n = snprintf(tmp, len, "%s.tmp", path);
  C5_CHECK(n > 0 && (size_t)n < len, C5_ERR_ARG, "dump %s: path too long", path);
  return C5_OK;
}

/* A backward spends the caches a dump reads (their memory goes to the backward's own buffers): the same refusal
   on every rank (whether a cache is live is the same on all). */
static c5_status spent(const char *path)
{
  return C5_ERR(C5_ERR_ARG, "dump %s: the cache holds no forward to dump (none ran, or a backward spent it): dump "
                "after the forward, before the backward", path);
}

c5_status c5_model_dump_activations(const c5_model *m, const c5_dist *d, const c5_layout *lay,
                                    const c5_model_cache *c, const char *path, long step)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_model_dump_activations: dist is NULL");
  char tmp[1100];
  c5_status st = dump_check(d, lay, path, step, tmp, sizeof tmp);
  if (st == C5_OK && !(m && c)) st = C5_ERR(C5_ERR_ARG, "c5_model_dump_activations: NULL argument");
  if (st == C5_OK && !c5_model_cache_filled(c))
    st = C5_ERR(C5_ERR_ARG, "dump %s: no forward has filled the model's cache", path);
  const int depth = st == C5_OK ? c5_model_get_config(m)->depth : 0;
  for (int i = 0; i < depth && st == C5_OK; i++)
    if (!c5_block_cache_live(c5_model_block_cache(c, i))) st = spent(path);
  C5_CALL(c5_dist_agree_args(d, st, 3, (c5_dist_arg[]){ { "activation dump: step", step },
                                                        { "activation dump: sequence length", lay ? lay->n : 0 },
                                                        { "activation dump: depth", depth } }));
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  dumper w = { .d = d, .be = c5_block_backend(c5_model_block(m, 0)), .file = H5I_INVALID_HID,
                .dxpl = H5I_INVALID_HID, .lcpl = H5I_INVALID_HID, .path = path };
  st = dump_open(&w, path, tmp, step, lay);
  char group[96];
  for (int i = 0; i < depth && st == C5_OK; i++) {
    snprintf(group, sizeof group, "/step_%ld/layer_%d", step, i);
    st = dump_block(&w, group, c5_model_block(m, i), lay, c5_model_block_cache(c, i), c5_model_layer_input(c, i));
  }
  const long batch = c5_block_cache_batch(c5_model_block_cache(c, 0)), dim = c5_model_get_config(m)->block.attn.dim;
  if (st == C5_OK) {
    snprintf(group, sizeof group, "/step_%ld/norm_input", step);
    st = put_seq(&w, group, lay, batch, dim, c5_model_layer_input(c, depth));
  }
  if (st == C5_OK) {
    snprintf(group, sizeof group, "/step_%ld/logits", step);
    st = put_seq(&w, group, lay, batch, C5_NUM_BYTES, c5_model_logits(c));
  }
  C5_CALL(dump_close(&w, path, tmp, st));
  return C5_OK;
}

c5_status c5_block_dump_activations(const c5_block *b, const c5_dist *d, const c5_layout *lay,
                                    const c5_block_cache *c, const c5_real *x, const char *path, long step)
{
  C5_CHECK(d, C5_ERR_ARG, "c5_block_dump_activations: dist is NULL");
  char tmp[1100];
  c5_status st = dump_check(d, lay, path, step, tmp, sizeof tmp);
  if (st == C5_OK && !(b && c && x)) st = C5_ERR(C5_ERR_ARG, "c5_block_dump_activations: NULL argument");
  if (st == C5_OK && !c5_block_cache_live(c)) st = spent(path);
  C5_CALL(c5_dist_agree_args(d, st, 2, (c5_dist_arg[]){ { "activation dump: step", step },
                                                        { "activation dump: sequence length", lay ? lay->n : 0 } }));
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  dumper w = { .d = d, .be = c5_block_backend(b), .file = H5I_INVALID_HID, .dxpl = H5I_INVALID_HID,
                .lcpl = H5I_INVALID_HID, .path = path };
  st = dump_open(&w, path, tmp, step, lay);
  char group[96];
  snprintf(group, sizeof group, "/step_%ld/layer_0", step);
  if (st == C5_OK) st = dump_block(&w, group, b, lay, c, x);
  C5_CALL(dump_close(&w, path, tmp, st));
  return C5_OK;
}
