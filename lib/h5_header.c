/* h5_header.c - object headers and group heaps of files the project did
   not write, checked from the file's bytes before libhdf5 reads them.

   h5py writes superblock 0 with version-1 object headers, no checksums.
   libhdf5 1.10.8 trusts the sizes inside them (asserts only), and the
   fuzzer found four ways a damaged one turns a read into a crash or a
   hang (docs/bad-input.md):
   - an attribute message whose parts (name, datatype, dataspace, value)
     claim more bytes than the message holds: H5Aexists_by_name decodes
     every attribute of the object and copies the value past its buffer
     (heap overflow in H5O__attr_decode);
   - a variable-length string's reference {length, global heap collection
     address, object index} that does not match its collection: H5Aread
     copies past its buffers or loops forever inside H5HG_read; a damaged
     character size makes it allocate length x size bytes first (3 GB);
   - a superblock base address other than 0: every address is read from
     there, and a damaged one sent H5HG_read into an endless loop;
   - a group's local heap (its link names) whose free list points back to
     an earlier block: the first lookup in the group (H5Lexists, H5Gopen)
     walks that list without a bound, allocating a node each step.
   Only the layout h5py writes by default is walked (superblock 0/1, 8-byte
   offsets and lengths, version-1 object headers, base address 0: every
   address below is a file offset); anything else is left to libhdf5: the
   1.10 format the project writes checksums its metadata.
   The bytes are read whole, and kept on the handle (up to 16 MiB); what a
   check found sound (the layout, each object's header and group heap,
   each object's attributes: all of them at once) is kept there too, so
   each object is walked once and a golden file read once. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "h5_internal.h"

typedef struct { unsigned char *b; size_t len; } bytes_t;
static uint64_t le(const unsigned char *p, int n)
{
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/* Whether d, the data of a message flagged shared (or an attribute's shared datatype or dataspace), claims
   the shared message heap: a shared message is its version, then from version 2 its type (1: that heap, 2:
   another object header). The heap's index lives in the superblock extension, which superblocks 0 and 1
   do not have; libhdf5 1.10.8 looks it up anyway (H5SM_get_fheap_addr) and copies from address 0. */
static int sohm_claim(const unsigned char *d, size_t size)
{
  return size >= 2 && d[0] >= 2 && d[1] == 1;
}
#define SOHM_NONE "the shared message heap, which a file of superblock version 0 or 1 does not have"

/* The element count of the dataspace message s of ss bytes (at least 2), saturating at UINT64_MAX: version 1:
   version, rank, flags, 5 reserved bytes, then the dims; version 2: version, rank, flags, type (2: null, no
   element), then the dims; rank 0 is a scalar (one element). -1 when its dims do not fit in ss. */
static int space_count(const unsigned char *s, size_t ss, uint64_t *n)
{
  int sv = s[0], rank = s[1];
  size_t dims_at = sv == 1 ? 8 : 4;
  *n = 1;
  if (sv == 2 && ss >= 4 && s[3] == 2) *n = 0;
  else if (dims_at + 8 * (size_t)rank > ss) return -1;
  else
    for (int i = 0; i < rank; i++) {
      uint64_t dim = le(s + dims_at + 8 * (size_t)i, 8);
      *n = dim && *n > UINT64_MAX / dim ? UINT64_MAX : *n * dim;
    }
  return 0;
}

/* An attribute message's parts as libhdf5 1.10.8 decodes them (H5O_attr_decode): name, datatype and
   dataspace, each 8-byte aligned in version 1, then the value, its dataspace's element count times its
   datatype's size. "" in bad when everything lies inside the message's size bytes at d. */
typedef struct { size_t name, name_len, type, type_len, value; } attr_parts;
static void attr_check(const unsigned char *d, size_t size, attr_parts *p, char *bad, size_t blen)
{
  bad[0] = '\0';
  int v = d[0];
  size_t ns = (size_t)le(d + 2, 2), ts = (size_t)le(d + 4, 2), ss = (size_t)le(d + 6, 2);
  size_t (*al)(size_t) = v == 1 ? pad8 : NULL;
  p->name = v == 3 ? 9 : 8;
  p->name_len = ns;
  p->type = p->name + (al ? al(ns) : ns);
  p->type_len = ts;
  size_t so = p->type + (al ? al(ts) : ts);
  p->value = so + (al ? al(ss) : ss);
  if (p->value > size) {
    snprintf(bad, blen, "its name, datatype and dataspace claim %zu bytes, the message holds %zu", p->value, size);
    return;
  }
  /* a shared datatype or dataspace (version 2/3 flags) is a reference to another message: its size is not here */
  if (v >= 2 && (d[1] & 3)) {
    if (((d[1] & 1) && sohm_claim(d + p->type, ts)) || ((d[1] & 2) && sohm_claim(d + so, ss)))
      snprintf(bad, blen, "its shared datatype or dataspace claims %s", SOHM_NONE);
    return;
  }
  if (ts < 8 || ss < 2) {
    snprintf(bad, blen, "its datatype (%zu bytes) or dataspace (%zu bytes) is too short", ts, ss);
    return;
  }
  /* the value: datatype size (bytes 4-7 of the datatype message) x the dataspace's elements */
  uint64_t esize = le(d + p->type + 4, 4), n;
  /* a variable-length (class 9) element is a 16-byte reference in the file (length, collection address,
     index): libhdf5 1.10.8 sizes the value's buffer by the size claimed here, then copies 16 bytes an element
     out of it (H5A__read: a heap overflow) */
  if ((d[p->type] & 0x0f) == 9 && esize != 16) {
    snprintf(bad, blen, "its variable-length datatype claims %llu-byte elements, a reference in the file is 16",
             (unsigned long long)esize);
    return;
  }
  if (space_count(d + so, ss, &n) < 0) {
    snprintf(bad, blen, "its dataspace claims %d dimensions in %zu bytes", d[so + 1], ss);
    return;
  }
  uint64_t need = esize && n > UINT64_MAX / esize ? UINT64_MAX : n * esize;
  if (need > size - p->value)
    snprintf(bad, blen, "its value claims %llu bytes (%llu elements of %llu), the message has %zu left",
             (unsigned long long)need, (unsigned long long)n, (unsigned long long)esize, size - p->value);
}

/* Each message of the v1 object header at hdr (and of its continuations), in order, to visit (its type, its
   flags, its data d of size bytes, the message's file offset at) until visit returns nonzero, which is returned. A header
   this walk does not read (another version, sizes past its block) ends it with 0: libhdf5 checks those itself. */
typedef int (*msg_visit)(void *ctx, unsigned type, unsigned flags, const unsigned char *d, uint64_t size,
                         uint64_t at);
static int each_message(const bytes_t *f, uint64_t hdr, msg_visit visit, void *ctx)
{
  if (hdr > f->len || f->len - hdr < 16 || f->b[hdr] != 1) return 0;
  uint64_t blocks[64][2] = { { hdr + 16, le(f->b + hdr + 8, 4) } };
  int nb = 1;
  for (int bi = 0; bi < nb; bi++) {
    uint64_t at = blocks[bi][0], end = at + blocks[bi][1];
    if (at > f->len || end > f->len || end < at) return 0;
    while (end - at >= 8) {
      unsigned type = (unsigned)le(f->b + at, 2);
      uint64_t size = le(f->b + at + 2, 2);
      const unsigned char *d = f->b + at + 8;
      if (size > end - at - 8) return 0;
      if (type == 0x10 && size >= 16) {   /* continuation */
        if (nb < 64) {
          blocks[nb][0] = le(d, 8);
          blocks[nb][1] = le(d + 8, 8);
          nb++;
        }
      } else {
        int r = visit(ctx, type, f->b[at + 4], d, size, at);
        if (r) return r;
      }
      at += 8 + size;
    }
  }
  return 0;
}

/* The reference at ref (length, collection address, index) against its collection. "" when sound. */
static void check_vlen_ref(const bytes_t *f, size_t ref, char *bad, size_t blen)
{
  uint64_t len = le(f->b + ref, 4), col = le(f->b + ref + 4, 8), idx = le(f->b + ref + 12, 4);
  bad[0] = '\0';
  if (col > f->len || f->len - col < 16 || memcmp(f->b + col, "GCOL", 4) || f->b[col + 4] != 1) {
    snprintf(bad, blen, "no global heap collection at address %llu", (unsigned long long)col);
    return;
  }
  uint64_t csize = le(f->b + col + 8, 8);
  if (csize < 16 || csize > f->len - col) {
    snprintf(bad, blen, "the collection at %llu claims %llu bytes, the file has %zu", (unsigned long long)col,
             (unsigned long long)csize, f->len);
    return;
  }
  /* libhdf5's own walk (H5HG__cache_heap_deserialize), with the bounds and the progress it assumes */
  uint64_t p = col + 16, end = col + csize, found = UINT64_MAX;
  while (p < end) {
    if (end - p < 16) break;   /* too small for an object header: free space */
    uint64_t hidx = le(f->b + p, 2), size = le(f->b + p + 8, 8);
    uint64_t need = hidx ? (size > end - p - 16 ? UINT64_MAX : 16 + pad8((size_t)size)) : size;
    if (need == 0 || need > end - p) {
      snprintf(bad, blen, "object %llu of the collection at %llu claims %llu bytes, %llu are left",
               (unsigned long long)hidx, (unsigned long long)col, (unsigned long long)size, (unsigned long long)(end - p));
      return;
    }
    if (hidx && hidx == idx) found = size;
    p += need;
  }
  if (found == UINT64_MAX)
    snprintf(bad, blen, "object %llu is not in the collection at %llu", (unsigned long long)idx, (unsigned long long)col);
  else if (found != len)
    snprintf(bad, blen, "the string claims %llu bytes, its heap object holds %llu", (unsigned long long)len,
             (unsigned long long)found);
}

/* A variable-length string's reference at ref and its character size csize. "" when libhdf5 can read it. */
static void check_string(const bytes_t *f, size_t ref, uint64_t csize, char *bad, size_t blen)
{
  check_vlen_ref(f, ref, bad, blen);
  /* libhdf5 sizes its conversion buffer as length x character size before reading the heap */
  if (!bad[0] && csize != 1)
    snprintf(bad, blen, "its characters claim %llu bytes each, a string's are 1", (unsigned long long)csize);
}

/* Every attribute message is checked (libhdf5 decodes them all when asked for one), and every variable-length
   string's reference against its global heap (sound: all of them match), so that one walk answers for every
   attribute of the object; the one named attr (none: NULL), when it is such a string, gives its reference's
   file offset in ref and what is wrong with it in sbad ("" when sound). */
typedef struct {
  const bytes_t *f;
  const char *attr;
  size_t alen, ref;
  int found, sound;
  char *bad, *sbad;
  size_t blen;
} attr_walk;
static int visit_attr(void *ctx, unsigned type, unsigned flags, const unsigned char *d, uint64_t size,
                      uint64_t at)
{
  (void)flags;
  attr_walk *w = ctx;
  if (type != 0x0C || size < 8 || d[0] < 1 || d[0] > 3) return 0;
  attr_parts p;
  char why[256];
  attr_check(d, (size_t)size, &p, why, sizeof why);
  if (why[0]) {
    snprintf(w->bad, w->blen, "the attribute message at byte %llu is damaged: %s", (unsigned long long)at, why);
    return -1;
  }
  const unsigned char *t = d + p.type;
  /* a variable-length (class 9) string (type 1): its reference is its value; the base type (a character)
     follows the string type's 8 bytes, its size at its byte 4 */
  if (p.type_len >= 2 && (t[0] & 0x0f) == 9 && (t[1] & 0x0f) == 1 && p.value + 16 <= size) {
    size_t ref = (size_t)(d + p.value - w->f->b);
    check_string(w->f, ref, p.type_len >= 16 ? le(t + 12, 4) : 1, why, sizeof why);
    if (why[0]) w->sound = 0;
    if (w->attr && !w->found && p.name_len == w->alen && !memcmp(d + p.name, w->attr, w->alen)) {
      w->found = 1;
      w->ref = ref;
      snprintf(w->sbad, w->blen, "%s", why);
    }
  }
  return 0;
}

/* The symbol-table message (type 0x11) of a group's header: its v1 B-tree's and local heap's addresses. */
typedef struct { uint64_t btree, heap; } stab_msg;
static int visit_stab(void *ctx, unsigned type, unsigned flags, const unsigned char *d, uint64_t size,
                      uint64_t at)
{
  (void)flags; (void)at;
  if (type != 0x11 || size < 16) return 0;
  stab_msg *s = ctx;
  s->btree = le(d, 8);
  s->heap = le(d + 8, 8);
  return 1;
}

/* A message flagged shared (flags bit 1) that claims the shared message heap (sohm_claim). */
typedef struct { char *bad; size_t blen; } shared_walk;
static int visit_shared(void *ctx, unsigned type, unsigned flags, const unsigned char *d, uint64_t size,
                        uint64_t at)
{
  shared_walk *w = ctx;
  if (!(flags & 2) || !sohm_claim(d, (size_t)size)) return 0;
  snprintf(w->bad, w->blen, "its message of type %u at byte %llu is flagged shared and claims %s", type,
           (unsigned long long)at, SOHM_NONE);
  return -1;
}

/* A dataset's dataspace (type 0x01), datatype (0x03) and layout (0x08) messages, the first of each not
   flagged shared (a shared one holds a reference to the message). */
typedef struct { const unsigned char *d[3]; uint64_t len[3]; } dset_msgs;
static int visit_dset(void *ctx, unsigned type, unsigned flags, const unsigned char *d, uint64_t size,
                      uint64_t at)
{
  (void)at;
  dset_msgs *m = ctx;
  int k = type == 0x01 ? 0 : type == 0x03 ? 1 : type == 0x08 ? 2 : -1;
  if (k >= 0 && !m->d[k] && !(flags & 2)) {
    m->d[k] = d;
    m->len[k] = size;
  }
  return 0;
}

/* A compact layout (layout message version 3, class 0: the data's size in 2 bytes, then the data) must hold
   the whole data, the dataspace's elements times the datatype's size: H5Dread copies that many bytes out of
   it (a fuzzed compact layout of 0 bytes: a memcpy from address 0). Other layouts, and messages this does
   not read, are left to libhdf5. "" in bad when sound. */
static void check_compact(const dset_msgs *m, char *bad, size_t blen)
{
  const unsigned char *sp = m->d[0], *ty = m->d[1], *ly = m->d[2];
  uint64_t n;
  bad[0] = '\0';
  if (!ly || m->len[2] < 4 || ly[0] != 3 || ly[1] != 0 || !sp || m->len[0] < 2 || !ty || m->len[1] < 8 ||
      space_count(sp, (size_t)m->len[0], &n) < 0)
    return;
  uint64_t esize = le(ty + 4, 4), have = le(ly + 2, 2);
  uint64_t need = esize && n > UINT64_MAX / esize ? UINT64_MAX : n * esize;
  if (have != need || have > m->len[2] - 4)
    snprintf(bad, blen, "its compact layout holds %llu bytes in a %llu-byte message, its %llu elements of %llu "
             "bytes are %llu", (unsigned long long)have, (unsigned long long)m->len[2], (unsigned long long)n,
             (unsigned long long)esize, (unsigned long long)need);
}

/* The local heap at addr (a group's link names), as libhdf5 1.10.8 reads it (H5HL__hdr_deserialize,
   H5HL__fl_deserialize): "HEAP", version 0, 3 reserved bytes, the data segment's size, the offset of the
   free list's first block in it (1: none), the data segment's address. Each free block starts with the
   offset of the next one and its own size; libhdf5 follows them with no bound, so one pointing back to
   an earlier block loops forever. Every block must lie inside the data segment and hold at least those
   two lengths (libhdf5 never keeps a smaller one); blocks that do not overlap number at most size / 16,
   so a longer walk has revisited one. A heap libhdf5 refuses itself (no signature, a data segment past
   the file's end) is left to it. "" in bad when sound. */
static void check_local_heap(const bytes_t *f, uint64_t addr, char *bad, size_t blen)
{
  bad[0] = '\0';
  if (addr > f->len || f->len - addr < 32 || memcmp(f->b + addr, "HEAP", 4) || f->b[addr + 4] != 0) return;
  uint64_t size = le(f->b + addr + 8, 8), next = le(f->b + addr + 16, 8), data = le(f->b + addr + 24, 8);
  if (data > f->len || size > f->len - data) return;
  const unsigned char *seg = f->b + data;
  for (uint64_t n = 0; next != 1; n++) {
    uint64_t at = next;
    if (at >= size || size - at < 16) {
      snprintf(bad, blen, "free block %llu at offset %llu does not fit its 16-byte start (the next block's "
               "offset, its size) in the %llu-byte data segment", (unsigned long long)n, (unsigned long long)at,
               (unsigned long long)size);
      return;
    }
    if (n == size / 16) {
      snprintf(bad, blen, "its free list goes on past %llu blocks, more than its %llu-byte data segment holds "
               "(it comes back to a block, at offset %llu, or its blocks overlap)", (unsigned long long)n,
               (unsigned long long)size, (unsigned long long)at);
      return;
    }
    uint64_t bsize = le(seg + at + 8, 8);
    next = le(seg + at, 8);
    if (bsize < 16 || bsize > size - at) {
      snprintf(bad, blen, "free block %llu at offset %llu claims %llu bytes (at least 16, at most the %llu left "
               "in the data segment)", (unsigned long long)n, (unsigned long long)at, (unsigned long long)bsize,
               (unsigned long long)(size - at));
      return;
    }
  }
}

/* What the handle's checks found sound (c5_h5_open_read's handles; others have none and check every time):
   the file's layout, and each object, by its header's address, for the checks it passed: its header's shared
   messages and, a group, its local heap (before libhdf5 opens it or looks inside), its attributes. */
enum { CHECKED_OBJ = 1, CHECKED_ATTRS = 2 };
static int was_checked(const c5_h5 *f, haddr_t addr, unsigned what)
{
  const c5_h5_checked *c = f->checked;
  for (int i = 0; c && i < c->n; i++)
    if (c->obj[i].addr == addr) return (c->obj[i].what & what) == what;
  return 0;
}
static void mark_checked(const c5_h5 *f, haddr_t addr, unsigned what)
{
  c5_h5_checked *c = f->checked;
  if (!c) return;
  int i = 0;
  while (i < c->n && c->obj[i].addr != addr) i++;
  if (i == c->cap) {
    int cap = c->cap ? 2 * c->cap : 32;
    struct c5_h5_checked_obj *o = realloc(c->obj, (size_t)cap * sizeof *o);
    if (!o) return;   /* not kept: checked again at the next read */
    c->obj = o;
    c->cap = cap;
  }
  if (i == c->n) {
    c->obj[i].addr = addr;
    c->obj[i].what = 0;
    c->n++;
  }
  c->obj[i].what |= what;
}

void c5_h5_checked_free(c5_h5_checked *c)
{
  if (c) {
    free(c->obj);
    free(c->bytes);
  }
  free(c);
}

/* *yes: whether f is in h5py's layout (superblock 0/1, 8-byte addresses and lengths, at most 2 GiB: the checks
   read it whole); anything else is left to libhdf5. Remembered on the handle. C5_ERR_IO when the superblock's
   base address is not 0 (every check refuses such a file). */
static c5_status h5py_layout(const c5_h5 *f, int *yes)
{
  c5_h5_checked *c = f->checked;
  *yes = c && c->layout > 0;
  if (c && c->layout) return C5_OK;
  FILE *fp = fopen(f->path, "rb");
  if (!fp) return C5_OK;   /* libhdf5 has it open: it will say */
  unsigned char sb[72];
  long n = -1;
  if (fread(sb, 1, sizeof sb, fp) == sizeof sb && !memcmp(sb, "\211HDF\r\n\032\n", 8) && sb[8] <= 1 &&
      sb[13] == 8 && sb[14] == 8 && fseek(fp, 0, SEEK_END) == 0)
    n = ftell(fp);
  fclose(fp);
  *yes = n >= (long)sizeof sb && n <= (1L << 31);
  /* the format puts the base address at the superblock itself (here 0); libhdf5 1.10.8 takes another one and
     reads every address from there. Version 1 has 4 more bytes before it (the indexed storage's K). */
  uint64_t base = *yes ? le(sb + (sb[8] == 1 ? 28 : 24), 8) : 0;
  C5_CHECK(base == 0, C5_ERR_IO, "%s: the superblock is damaged: its base address is %llu, the superblock's own is 0",
           f->path, (unsigned long long)base);
  if (c) c->layout = *yes ? 1 : -1;
  return C5_OK;
}

/* The file's bytes, read whole at the first object of a check the handle has not found sound yet (b->len 0
   when they cannot be read: the walks then find nothing and leave the file to libhdf5). A file of at most
   C5_H5_KEEP_BYTES stays on the handle for its next objects (golden files are a few MB); a larger one is read
   again for each (owned: the check frees it). */
#define C5_H5_KEEP_BYTES (16L << 20)
typedef struct { bytes_t b; int read, owned; } view_t;
static const bytes_t *view_bytes(const c5_h5 *f, view_t *v)
{
  c5_h5_checked *c = f->checked;
  if (v->read) return &v->b;
  v->read = 1;
  if (c && c->bytes) {
    v->b = (bytes_t){ c->bytes, c->len };
    return &v->b;
  }
  FILE *fp = fopen(f->path, "rb");
  if (!fp) return &v->b;
  long n = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
  if (n > 0 && n <= (1L << 31) && (v->b.b = malloc((size_t)n)) != NULL) {
    rewind(fp);
    v->b.len = fread(v->b.b, 1, (size_t)n, fp) == (size_t)n ? (size_t)n : 0;
  }
  fclose(fp);
  if (c && v->b.len && v->b.len <= (size_t)C5_H5_KEEP_BYTES) {
    c->bytes = v->b.b;
    c->len = v->b.len;
  } else
    v->owned = 1;
  return &v->b;
}
static void view_done(view_t *v)
{
  if (v->owned) free(v->b.b);
}

/* The object at obj (a path), unless the handle found it sound already: its header's shared messages, a
   dataset's compact layout, a group's local heap. An object whose header libhdf5 cannot describe is passed over: libhdf5
   cannot open it or look inside it either. */
static c5_status object_check(const c5_h5 *f, view_t *v, const char *obj)
{
  H5O_info_t oi;
  if (H5Oget_info_by_name2(f->file, obj, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0) {
    H5Eclear2(H5E_DEFAULT);
    return C5_OK;
  }
  if (was_checked(f, oi.addr, CHECKED_OBJ)) return C5_OK;
  const bytes_t *b = view_bytes(f, v);
  char bad[256];
  shared_walk sw = { bad, sizeof bad };
  C5_CHECK(each_message(b, oi.addr, visit_shared, &sw) == 0, C5_ERR_IO, "%s: the object header of %s is damaged (%s)",
           f->path, obj, bad);
  if (oi.type == H5O_TYPE_DATASET) {
    dset_msgs m = { { NULL, NULL, NULL }, { 0, 0, 0 } };
    each_message(b, oi.addr, visit_dset, &m);
    check_compact(&m, bad, sizeof bad);
    C5_CHECK(!bad[0], C5_ERR_IO, "%s: the object header of %s is damaged (%s)", f->path, obj, bad);
  }
  stab_msg s;
  if (oi.type == H5O_TYPE_GROUP && each_message(b, oi.addr, visit_stab, &s) == 1) {
    check_local_heap(b, s.heap, bad, sizeof bad);
    C5_CHECK(!bad[0], C5_ERR_IO, "%s: the local heap of group %s (at byte %llu) is damaged: %s", f->path, obj,
             (unsigned long long)s.heap, bad);
  }
  if (b->len) {
    /* its attributes too while the bytes are here (their damage is refused when one is read: header_walk) */
    char sbad[256];
    attr_walk w = { .f = b, .sound = 1, .bad = bad, .sbad = sbad, .blen = sizeof bad };
    int sound = each_message(b, oi.addr, visit_attr, &w) == 0 && w.sound;
    mark_checked(f, oi.addr, CHECKED_OBJ | (sound ? CHECKED_ATTRS : 0));
  }
  return C5_OK;
}

/* c5_h5_path_check with the bytes of v (read at most once for the whole walk) */
static c5_status path_walk(const c5_h5 *f, view_t *v, const char *name, int *found)
{
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", name);
  int ok = 1, h5py;   /* ok: every component so far exists */
  c5_status st = h5py_layout(f, &h5py);
  /* the root first (no lookup reaches it), then each prefix of name, looked up in its parent (checked by then),
     name itself last (before libhdf5 opens it) */
  if (st == C5_OK && h5py) st = object_check(f, v, "/");
  for (char *p = buf + (buf[0] == '/'); st == C5_OK && ok && *p;) {
    char *end = p + strcspn(p, "/"), c = *end;
    *end = '\0';
    ok = H5Lexists(f->file, buf, H5P_DEFAULT) > 0;   /* H5Lexists fails on a missing intermediate group */
    if (!ok) H5Eclear2(H5E_DEFAULT);
    else if (h5py) st = object_check(f, v, buf);
    *end = c;
    p = c ? end + 1 : end;
  }
  *found = st == C5_OK && ok;
  return st;
}

c5_status c5_h5_path_check(const c5_h5 *f, const char *name, int *found)
{
  view_t v = { { NULL, 0 }, 0, 0 };
  c5_status st = path_walk(f, &v, name, found);
  view_done(&v);
  return st;
}

/* c5_h5_header_check with the bytes of v (the path's walk and the header's read them at most once) */
static c5_status header_walk(const c5_h5 *f, view_t *v, const char *obj, const char *attr)
{
  /* the lookups of obj's path read the local heaps of the groups on the way */
  int found, h5py;
  C5_CALL(path_walk(f, v, obj, &found));
  /* the basic info counts attribute messages without decoding them. An object whose kind libhdf5 cannot tell
     (a damaged message type) is refused here: its attributes would still be read, unchecked (a fuzzed root
     group whose symbol-table message became a dataspace one hid a damaged global heap so) */
  H5O_info_t oi;
  if (H5Oget_info_by_name2(f->file, obj, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0) {
    char why[256];
    return C5_ERR(C5_ERR_IO, "%s: cannot read the object header of %s (%s)", f->path, obj, c5_h5_reason(why));
  }
  C5_CALL(h5py_layout(f, &h5py));
  /* an object found sound answers for every attribute of it: the walk checked them all */
  if (!h5py || was_checked(f, oi.addr, CHECKED_ATTRS)) return C5_OK;
  const bytes_t *b = view_bytes(f, v);
  c5_status st = C5_OK;
  char bad[256], sbad[256];
  attr_walk w = { .f = b, .attr = attr, .alen = strlen(attr) + 1, .sound = 1, .bad = bad, .sbad = sbad,
                  .blen = sizeof bad };
  if (!b->len) {
  } else if (each_message(b, oi.addr, visit_attr, &w) < 0)
    st = C5_ERR(C5_ERR_IO, "%s: the object header of %s is damaged (%s)", f->path, obj, bad);
  else if (w.found && sbad[0])
    st = C5_ERR(C5_ERR_IO, "%s: attribute %s of %s is damaged: its string's reference at byte %zu does not match "
                "the global heap (%s)", f->path, attr, obj, w.ref, sbad);
  else if (w.sound)
    mark_checked(f, oi.addr, CHECKED_ATTRS);
  return st;
}

c5_status c5_h5_header_check(const c5_h5 *f, const char *obj, const char *attr)
{
  view_t v = { { NULL, 0 }, 0, 0 };
  c5_status st = header_walk(f, &v, obj, attr);
  view_done(&v);
  return st;
}
