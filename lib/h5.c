/* h5.c - the HDF5 layer (colt5_io.h). HDF5's own error stack is silenced
   while probing and copied into our message when a call fails. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include "dist_mpi.h"
#include "colt5_io.h"
#include "h5_internal.h"

/* HDF5's error stack as one line for our message: the outermost and the innermost description, what
   failed and why (a truncated file's sizes, "memory allocation failed ...", "data error detected by
   Fletcher32 checksum"); then the stack is cleared. Read right after the failing call: any later HDF5
   API call (an H5Dclose on the way out) clears the stack first. */
typedef struct { char first[128], last[128]; } reason_walk;
static herr_t ends_cb(unsigned n, const H5E_error2_t *e, void *data)
{
  reason_walk *r = data;
  if (!e->desc) return 0;
  if (n == 0) snprintf(r->first, sizeof r->first, "%s", e->desc);
  snprintf(r->last, sizeof r->last, "%s", e->desc);
  return 0;
}
const char *c5_h5_reason(char buf[256])
{
  reason_walk r = { "", "" };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, ends_cb, &r);
  H5Eclear2(H5E_DEFAULT);
  if (!r.first[0]) snprintf(buf, 256, "no reason given by HDF5");
  else if (!strcmp(r.first, r.last)) snprintf(buf, 256, "%s", r.first);
  else snprintf(buf, 256, "%s: %s", r.first, r.last);
  return buf;
}

static int contains_nocase(const char *s, const char *w)
{
  for (size_t n = strlen(w); *s; s++)
    if (strncasecmp(s, w, n) == 0) return 1;
  return 0;
}
static herr_t mentions_cb(unsigned n, const H5E_error2_t *e, void *data)
{
  (void)n;
  const char **word = data;
  if (*word && e->desc && contains_nocase(e->desc, *word)) *word = NULL;   /* found: stop looking */
  return 0;
}
int c5_h5_stack_mentions(const char *word)
{
  const char *w = word;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, mentions_cb, &w);
  return w == NULL;
}

c5_status c5_h5_fapl_mpio(const c5_dist *d, hid_t *fapl)
{
  char why[256];
  *fapl = H5Pcreate(H5P_FILE_ACCESS);
  C5_CHECK(*fapl >= 0, C5_ERR_IO, "HDF5: cannot make a file access list (%s)", c5_h5_reason(why));
  if (H5Pset_fapl_mpio(*fapl, c5_dist_comm(d), MPI_INFO_NULL) < 0 ||
      H5Pset_libver_bounds(*fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) < 0) {
    H5Pclose(*fapl);
    *fapl = H5I_INVALID_HID;
    return C5_ERR(C5_ERR_IO, "HDF5: cannot set MPI-IO file access in the 1.10 format (%s)", c5_h5_reason(why));
  }
  return C5_OK;
}

c5_status c5_h5_dxpl_collective(hid_t *dxpl)
{
  char why[256];
  *dxpl = H5Pcreate(H5P_DATASET_XFER);
  C5_CHECK(*dxpl >= 0, C5_ERR_IO, "HDF5: cannot make a transfer list (%s)", c5_h5_reason(why));
  if (H5Pset_dxpl_mpio(*dxpl, H5FD_MPIO_COLLECTIVE) < 0) {
    H5Pclose(*dxpl);
    *dxpl = H5I_INVALID_HID;
    return C5_ERR(C5_ERR_IO, "HDF5: cannot set collective transfer (%s)", c5_h5_reason(why));
  }
  return C5_OK;
}

long c5_numel(int ndim, const long *dims)
{
  long n = 1;
  for (int i = 0; i < ndim; i++)
    if (dims[i] < 0 || __builtin_mul_overflow(n, dims[i], &n)) return -1;
  return n;
}

/* Largest element count a dataset may claim: its bytes in the widest memory
   type (8) plus the readers' one spare element still fit a long, so no size
   computed from a checked shape can wrap. */
#define C5_H5_MAX_NUMEL (LONG_MAX / 16)

c5_status c5_h5_open_read(const char *path, c5_h5 *f)
{
  C5_CHECK(path && f, C5_ERR_ARG, "c5_h5_open_read: NULL argument");
  f->file = H5I_INVALID_HID;
  f->checked = NULL;
  snprintf(f->path, sizeof f->path, "%s", path);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   /* errors come back as messages, not stderr dumps */
  FILE *fp = fopen(path, "rb");
  C5_CHECK(fp != NULL, C5_ERR_IO, "%s: cannot open (no such file or no permission)", path);
  fclose(fp);
  f->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  char why[256];
  C5_CHECK(f->file >= 0, C5_ERR_IO, "%s: not a readable HDF5 file (%s)", path, c5_h5_reason(why));
  f->checked = calloc(1, sizeof *f->checked);   /* none: the checks run at every read */
  return C5_OK;
}

c5_status c5_h5_close(c5_h5 *f)
{
  if (f) {
    c5_h5_checked_free(f->checked);
    f->checked = NULL;
  }
  if (f && f->file >= 0) {
    herr_t e = H5Fclose(f->file);
    f->file = H5I_INVALID_HID;
    char why[256];
    C5_CHECK(e >= 0, C5_ERR_IO, "%s: close failed (%s)", f->path, c5_h5_reason(why));
  }
  return C5_OK;
}

int c5_h5_exists(const c5_h5 *f, const char *name)
{
  int found;
  return c5_h5_path_check(f, name, &found) == C5_OK ? found : -1;
}

c5_status c5_h5_shape(const c5_h5 *f, const char *name, int *ndim, long dims[C5_H5_MAXDIM])
{
  int found;
  C5_CALL(c5_h5_path_check(f, name, &found));
  C5_CHECK(found, C5_ERR_IO, "%s: dataset %s is missing", f->path, name);
  char why[256];
  hid_t d = H5Dopen2(f->file, name, H5P_DEFAULT);
  C5_CHECK(d >= 0, C5_ERR_IO, "%s: %s is not a dataset (%s)", f->path, name, c5_h5_reason(why));
  hid_t sp = H5Dget_space(d);
  if (sp < 0) {
    c5_status st = C5_ERR(C5_ERR_IO, "%s: dataset %s: cannot read its shape (%s)", f->path, name, c5_h5_reason(why));
    H5Dclose(d);
    return st;
  }
  int nd = H5Sget_simple_extent_ndims(sp);
  hsize_t hd[C5_H5_MAXDIM];
  c5_status st = C5_OK;
  if (nd < 0 || nd > C5_H5_MAXDIM) st = C5_ERR(C5_ERR_IO, "%s: dataset %s has rank %d (at most %d)", f->path, name, nd, C5_H5_MAXDIM);
  else if (H5Sget_simple_extent_dims(sp, hd, NULL) < 0)
    st = C5_ERR(C5_ERR_IO, "%s: dataset %s: cannot read its shape (%s)", f->path, name, c5_h5_reason(why));
  else {
    long got[C5_H5_MAXDIM];
    int big = 0;
    for (int i = 0; i < nd; i++) { big |= hd[i] > (hsize_t)LONG_MAX; got[i] = big ? -1 : (long)hd[i]; }
    long n = big ? -1 : c5_numel(nd, got);
    if (n < 0 || n > C5_H5_MAX_NUMEL) {
      /* a claimed shape (a corrupted or hostile file) that no buffer can hold: refused before any
         allocation is sized from it */
      char s[256];
      size_t o = (size_t)snprintf(s, sizeof s, "[");
      for (int i = 0; i < nd && o < sizeof s; i++)
        o += (size_t)snprintf(s + o, sizeof s - o, i ? ",%llu" : "%llu", (unsigned long long)hd[i]);
      if (o < sizeof s) snprintf(s + o, sizeof s - o, "]");
      st = C5_ERR(C5_ERR_SHAPE, "%s: dataset %s has shape %s: its element count overflows (at most %ld elements)",
                  f->path, name, s, (long)C5_H5_MAX_NUMEL);
    } else {
      *ndim = nd;
      for (int i = 0; i < nd; i++) dims[i] = got[i];
    }
  }
  H5Sclose(sp);
  H5Dclose(d);
  return st;
}

void c5_h5_shape_str(char *buf, size_t len, int nd, const long *dims)
{
  size_t o = (size_t)snprintf(buf, len, "[");
  for (int i = 0; i < nd && o < len; i++) o += (size_t)snprintf(buf + o, len - o, i ? ",%ld" : "%ld", dims[i]);
  if (o < len) snprintf(buf + o, len - o, "]");
}

/* Read name into buf as mem type; want_class: H5T_FLOAT or H5T_INTEGER. */
static c5_status read_any(const c5_h5 *f, const char *name, int ndim, const long *dims, hid_t mem,
                          H5T_class_t want_class, void *buf)
{
  int nd;
  long got[C5_H5_MAXDIM];
  C5_CALL(c5_h5_shape(f, name, &nd, got));
  if (ndim >= 0) {
    int same = nd == ndim;
    for (int i = 0; same && i < nd; i++) same = got[i] == dims[i];
    if (!same) {
      char a[128], b[128];
      c5_h5_shape_str(a, sizeof a, nd, got);
      c5_h5_shape_str(b, sizeof b, ndim, dims);
      return C5_ERR(C5_ERR_SHAPE, "%s: dataset %s has shape %s, expected %s", f->path, name, a, b);
    }
  }
  char why[256];
  hid_t d = H5Dopen2(f->file, name, H5P_DEFAULT);
  C5_CHECK(d >= 0, C5_ERR_IO, "%s: cannot open dataset %s (%s)", f->path, name, c5_h5_reason(why));
  hid_t ft = H5Dget_type(d);
  H5T_class_t cls = ft >= 0 ? H5Tget_class(ft) : H5T_NO_CLASS;
  const size_t fsize = ft >= 0 ? H5Tget_size(ft) : 0;
  if (ft >= 0) H5Tclose(ft);
  c5_status st = C5_OK;
  if (cls != want_class)
    st = C5_ERR(C5_ERR_IO, "%s: dataset %s has %s elements, expected %s", f->path, name,
                cls == H5T_FLOAT ? "floating-point" : cls == H5T_INTEGER ? "integer" : "non-numeric",
                want_class == H5T_FLOAT ? "floating-point" : "integer");
  /* An element of another size than the numbers written here (2-8 bytes) is a damaged datatype: libhdf5
     1.10.8 sizes its chunk and conversion buffers by it (a fuzzed float claiming a huge size asked for 3.2 GB) */
  else if (fsize < 1 || fsize > 8 || (cls == H5T_FLOAT && fsize != 2 && fsize != 4 && fsize != 8))
    st = C5_ERR(C5_ERR_IO, "%s: dataset %s is damaged: its %s elements claim %zu bytes each", f->path, name,
                cls == H5T_FLOAT ? "floating-point" : "integer", fsize);
  /* the reason is read before H5Dclose clears the stack */
  else if (H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
    st = C5_ERR(C5_ERR_IO, "%s: reading dataset %s failed (%s)", f->path, name, c5_h5_reason(why));
  H5Eclear2(H5E_DEFAULT);   /* what a refused type's queries left */
  H5Dclose(d);
  return st;
}

c5_status c5_h5_read_real(const c5_h5 *f, const char *name, int ndim, const long *dims, c5_real *buf)
{
  C5_CALL(read_any(f, name, ndim, dims, C5_USE_DOUBLE ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT, H5T_FLOAT, buf));
  return C5_OK;
}
c5_status c5_h5_read_double(const c5_h5 *f, const char *name, int ndim, const long *dims, double *buf)
{
  C5_CALL(read_any(f, name, ndim, dims, H5T_NATIVE_DOUBLE, H5T_FLOAT, buf));
  return C5_OK;
}
c5_status c5_h5_read_u8(const c5_h5 *f, const char *name, int ndim, const long *dims, uint8_t *buf)
{
  C5_CALL(read_any(f, name, ndim, dims, H5T_NATIVE_UINT8, H5T_INTEGER, buf));
  return C5_OK;
}
c5_status c5_h5_read_long(const c5_h5 *f, const char *name, int ndim, const long *dims, long *buf)
{
  C5_CALL(read_any(f, name, ndim, dims, H5T_NATIVE_LONG, H5T_INTEGER, buf));
  return C5_OK;
}

static c5_status open_attr(const c5_h5 *f, const char *obj, const char *attr, hid_t *a)
{
  /* libhdf5 decodes every attribute message of obj's header here, trusting their sizes */
  C5_CALL(c5_h5_header_check(f, obj, attr));
  htri_t ex = H5Aexists_by_name(f->file, obj, attr, H5P_DEFAULT);
  H5Eclear2(H5E_DEFAULT);
  C5_CHECK(ex > 0, C5_ERR_IO, "%s: attribute %s of %s is missing", f->path, attr, obj);
  *a = H5Aopen_by_name(f->file, obj, attr, H5P_DEFAULT, H5P_DEFAULT);
  char why[256];
  C5_CHECK(*a >= 0, C5_ERR_IO, "%s: cannot open attribute %s of %s (%s)", f->path, attr, obj, c5_h5_reason(why));
  return C5_OK;
}

/* An attribute must hold one element: H5Aread writes every element of its
   dataspace, and the buffers below hold one. */
static c5_status attr_one(const c5_h5 *f, const char *obj, const char *attr, hid_t a)
{
  hid_t sp = H5Aget_space(a);
  hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
  if (sp >= 0) H5Sclose(sp);
  char why[256];
  C5_CHECK(np >= 0, C5_ERR_IO, "%s: attribute %s of %s: cannot read its shape (%s)", f->path, attr, obj, c5_h5_reason(why));
  C5_CHECK(np == 1, C5_ERR_IO, "%s: attribute %s of %s holds %lld elements, expected one", f->path, attr, obj,
           (long long)np);
  return C5_OK;
}

/* A fixed-length string attribute longer than this is not one of ours (a corrupted size). */
#define C5_H5_MAX_ATTR (64L << 20)

c5_status c5_h5_attr_string(const c5_h5 *f, const char *obj, const char *attr, char **out)
{
  hid_t a;
  char why[256];
  C5_CALL(open_attr(f, obj, attr, &a));
  c5_status st = attr_one(f, obj, attr, a);
  hid_t t = st == C5_OK ? H5Aget_type(a) : H5I_INVALID_HID;
  if (st != C5_OK) {
  } else if (t < 0 || H5Tget_class(t) != H5T_STRING) {
    H5Eclear2(H5E_DEFAULT);
    st = C5_ERR(C5_ERR_IO, "%s: attribute %s of %s is not a string", f->path, attr, obj);
  } else if (H5Tis_variable_str(t) > 0) {
    char *s = NULL;
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5Tget_cset(t));   /* h5py writes UTF-8 */
    if (H5Aread(a, mt, &s) < 0 || !s)
      st = C5_ERR(C5_ERR_IO, "%s: reading attribute %s of %s failed (%s)", f->path, attr, obj, c5_h5_reason(why));
    else {
      *out = strdup(s);
      H5free_memory(s);
      if (!*out) st = C5_ERR(C5_ERR_MEM, "%s: out of memory copying attribute %s of %s", f->path, attr, obj);
    }
    H5Tclose(mt);
  } else {
    size_t n = H5Tget_size(t);
    char *s = n > 0 && n <= (size_t)C5_H5_MAX_ATTR ? calloc(n + 1, 1) : NULL;
    if (n == 0 || n > (size_t)C5_H5_MAX_ATTR)
      st = C5_ERR(C5_ERR_IO, "%s: attribute %s of %s claims %zu bytes (at most %ld)", f->path, attr, obj, n,
                  C5_H5_MAX_ATTR);
    else if (!s) st = C5_ERR(C5_ERR_MEM, "%s: out of memory reading attribute %s of %s (%zu bytes)", f->path, attr, obj, n);
    else if (H5Aread(a, t, s) < 0) {
      free(s);
      st = C5_ERR(C5_ERR_IO, "%s: reading attribute %s of %s failed (%s)", f->path, attr, obj, c5_h5_reason(why));
    } else *out = s;
  }
  if (t >= 0) H5Tclose(t);
  H5Aclose(a);
  return st;
}

c5_status c5_h5_attr_long(const c5_h5 *f, const char *obj, const char *attr, long *out)
{
  hid_t a;
  C5_CALL(open_attr(f, obj, attr, &a));
  c5_status st = attr_one(f, obj, attr, a);
  herr_t e = st == C5_OK ? H5Aread(a, H5T_NATIVE_LONG, out) : 0;
  H5Eclear2(H5E_DEFAULT);
  H5Aclose(a);
  if (st != C5_OK) return st;
  C5_CHECK(e >= 0, C5_ERR_IO, "%s: attribute %s of %s is not an integer", f->path, attr, obj);
  return C5_OK;
}

typedef struct { const c5_params *p; char unknown[256]; } iter_t;
static herr_t unknown_cb(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
  (void)g; (void)info;
  iter_t *it = data;
  long idx;
  if (c5_params_find(it->p, name, &idx) != C5_OK) {
    c5_error_clear();
    snprintf(it->unknown, sizeof it->unknown, "%s", name);
    return 1;   /* stop */
  }
  return 0;
}

c5_status c5_h5_read_params(const c5_h5 *f, const char *group, c5_params *p)
{
  char name[512];
  for (long i = 0; i < c5_params_count(p); i++) {
    long dims[C5_PARAM_MAXDIM];
    int nd = c5_params_shape(p, i, dims);
    snprintf(name, sizeof name, "%s/%s", group, c5_params_name(p, i));
    C5_CALL(c5_h5_read_real(f, name, nd, dims, c5_params_value(p, i)));
  }
  iter_t it = { .p = p };
  int found;
  C5_CALL(c5_h5_path_check(f, group, &found));   /* H5Literate reads the group's local heap */
  hid_t g = H5Gopen2(f->file, group, H5P_DEFAULT);
  char why[256];
  C5_CHECK(g >= 0, C5_ERR_IO, "%s: group %s is missing (%s)", f->path, group, c5_h5_reason(why));
  H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, unknown_cb, &it);
  H5Gclose(g);
  C5_CHECK(!it.unknown[0], C5_ERR_IO, "%s: dataset %s/%s is not a parameter of this model (options differ?)",
           f->path, group, it.unknown);
  return C5_OK;
}

c5_status c5_h5_write_params(const char *path, const char *group, const c5_params *p, int grads,
                             const char *attrs_json)
{
  C5_CHECK(path && group && p, C5_ERR_ARG, "c5_h5_write_params: NULL argument");
  char tmp[1100], why[256];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  /* The 1.10 format checksums every piece of metadata and Fletcher32 every (chunked) dataset, so that a
     corrupted parameter file is refused on read ("... checksum ...") instead of read as other numbers. */
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110);
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  C5_CHECK(f >= 0, C5_ERR_IO, "%s: cannot create (%s)", tmp, c5_h5_reason(why));
  c5_status st = C5_OK;
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  const hid_t mem = C5_USE_DOUBLE ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
  for (long i = 0; i < c5_params_count(p) && st == C5_OK; i++) {
    long dims[C5_PARAM_MAXDIM];
    hsize_t hd[C5_PARAM_MAXDIM];
    int nd = c5_params_shape(p, i, dims);
    hsize_t chunk[C5_PARAM_MAXDIM], cbytes = sizeof(c5_real);
    for (int k = 0; k < nd; k++) { hd[k] = (hsize_t)dims[k]; chunk[k] = hd[k] ? hd[k] : 1; cbytes *= chunk[k]; }
    /* one chunk per parameter, but under HDF5's 4 GiB chunk limit: halve the leading dimension */
    for (int k = 0; k < nd && cbytes > ((hsize_t)1 << 30); k++)
      while (chunk[k] > 1 && cbytes > ((hsize_t)1 << 30)) { cbytes = cbytes / chunk[k] * ((chunk[k] + 1) / 2); chunk[k] = (chunk[k] + 1) / 2; }
    char name[512];
    snprintf(name, sizeof name, "%s/%s", group, c5_params_name(p, i));
    hid_t sp = H5Screate_simple(nd, hd, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (nd > 0) {   /* a scalar cannot be chunked (nor filtered) */
      H5Pset_chunk(dcpl, nd, chunk);
      H5Pset_fletcher32(dcpl);
    }
    hid_t ds = H5Dcreate2(f, name, mem, sp, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    if (ds < 0 || H5Dwrite(ds, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                           grads ? c5_params_grad(p, i) : c5_params_value(p, i)) < 0)
      st = C5_ERR(C5_ERR_IO, "%s: writing dataset %s failed (%s)", tmp, name, c5_h5_reason(why));
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
  }
  if (st == C5_OK && attrs_json) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(attrs_json) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "meta", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, t, attrs_json) < 0) st = C5_ERR(C5_ERR_IO, "%s: writing attribute meta failed", tmp);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
  }
  H5Pclose(lcpl);
  if (H5Fclose(f) < 0 && st == C5_OK) st = C5_ERR(C5_ERR_IO, "%s: close failed (%s)", tmp, c5_h5_reason(why));
  if (st == C5_OK && rename(tmp, path) != 0)
    st = C5_ERR(C5_ERR_IO, "%s: cannot rename to %s", tmp, path);
  if (st != C5_OK) remove(tmp);
  return st;
}

/* Data on disk before the rename, and the rename itself on disk (the directory), so that after a crash the
   path holds the old checkpoint or the whole new one. One rank (rank 0) calls it. */
c5_status c5_h5_publish(const char *what, const char *tmp, const char *path)
{
  int fd = open(tmp, O_RDONLY);
  int e = fd >= 0 ? fsync(fd) : -1;
  if (fd >= 0) close(fd);
  C5_CHECK(e == 0, C5_ERR_IO, "%s %s: cannot sync %s (%s)", what, path, tmp, strerror(errno));
  C5_CHECK(rename(tmp, path) == 0, C5_ERR_IO, "%s %s: cannot rename %s over it (%s)", what, path, tmp,
           strerror(errno));
  char dir[1100];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) dir[1] = '\0';
  else if (slash) *slash = '\0';
  else snprintf(dir, sizeof dir, ".");
  fd = open(dir, O_RDONLY | O_DIRECTORY);
  C5_CHECK(fd >= 0, C5_ERR_IO, "%s %s: cannot open its directory %s to sync it (%s)", what, path, dir,
           strerror(errno));
  e = fsync(fd);
  close(fd);
  C5_CHECK(e == 0, C5_ERR_IO, "%s %s: cannot sync its directory %s (%s)", what, path, dir, strerror(errno));
  return C5_OK;
}

herr_t c5_h5_write_attr_long(hid_t obj, const char *name, long v)
{
  int64_t x = v;
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
  herr_t e = a >= 0 ? H5Awrite(a, H5T_NATIVE_INT64, &x) : -1;
  if (a >= 0) H5Aclose(a);
  H5Sclose(sp);
  return e;
}

herr_t c5_h5_write_attr_string(hid_t obj, const char *name, const char *v)
{
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, strlen(v) + 1);
  H5Tset_cset(t, H5T_CSET_UTF8);
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
  herr_t e = a >= 0 ? H5Awrite(a, t, v) : -1;
  if (a >= 0) H5Aclose(a);
  H5Sclose(sp);
  H5Tclose(t);
  return e;
}
