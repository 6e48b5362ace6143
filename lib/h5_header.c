/* h5_header.c - object headers of files the project did not write, checked
   from the file's bytes before libhdf5 reads them.

   h5py writes superblock 0 with version-1 object headers, no checksums.
   libhdf5 1.10.8 trusts the sizes inside them (asserts only), and the
   fuzzer found three ways a damaged one turns a read into a crash or a
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
     there, and a damaged one sent H5HG_read into an endless loop.
   Only the layout h5py writes by default is walked (superblock 0/1, 8-byte
   offsets and lengths, version-1 object headers); anything else is left to
   libhdf5: the 1.10 format the project writes checksums its metadata. */
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
  if (v >= 2 && (d[1] & 3)) return;
  if (ts < 8 || ss < 2) {
    snprintf(bad, blen, "its datatype (%zu bytes) or dataspace (%zu bytes) is too short", ts, ss);
    return;
  }
  /* the value: datatype size (bytes 4-7 of the datatype message) x the dataspace's elements; dataspace
     version 1: version, rank, flags, 5 reserved bytes, then the dims; version 2: version, rank, flags, type
     (2: null, no element), then the dims; rank 0 is a scalar (one element) */
  uint64_t esize = le(d + p->type + 4, 4), n = 1;
  const unsigned char *s = d + so;
  int sv = s[0], rank = s[1];
  size_t dims_at = sv == 1 ? 8 : 4;
  if (sv == 2 && ss >= 4 && s[3] == 2) n = 0;
  else if (dims_at + 8 * (size_t)rank > ss) {
    snprintf(bad, blen, "its dataspace claims %d dimensions in %zu bytes", rank, ss);
    return;
  } else
    for (int i = 0; i < rank; i++) {
      uint64_t dim = le(s + dims_at + 8 * (size_t)i, 8);
      n = dim && n > UINT64_MAX / dim ? UINT64_MAX : n * dim;
    }
  uint64_t need = esize && n > UINT64_MAX / esize ? UINT64_MAX : n * esize;
  if (need > size - p->value)
    snprintf(bad, blen, "its value claims %llu bytes (%llu elements of %llu), the message has %zu left",
             (unsigned long long)need, (unsigned long long)n, (unsigned long long)esize, size - p->value);
}

/* Walk the v1 object header at hdr (and its continuations). Every attribute message is checked (libhdf5
   decodes them all when asked for one); the one named attr, when it holds a variable-length string, gives
   its 16-byte reference's file offset in *ref and its character size in *csize. Returns 1 when found so,
   0 otherwise, -1 when an attribute message is damaged (bad says how). A header this walk does not read
   (another version, sizes past its block) returns 0: libhdf5 checks those itself. */
static int walk_header(const bytes_t *f, uint64_t base, uint64_t hdr, const char *attr, size_t *ref,
                       uint64_t *csize, char *bad, size_t blen)
{
  if (hdr > f->len || f->len - hdr < 16 || f->b[hdr] != 1) return 0;
  uint64_t blocks[64][2] = { { hdr + 16, le(f->b + hdr + 8, 4) } };
  int nb = 1, found = 0;
  size_t alen = strlen(attr) + 1;
  for (int bi = 0; bi < nb; bi++) {
    uint64_t at = blocks[bi][0], end = at + blocks[bi][1];
    if (at > f->len || end > f->len || end < at) return found;
    while (end - at >= 8) {
      unsigned type = (unsigned)le(f->b + at, 2);
      uint64_t size = le(f->b + at + 2, 2);
      const unsigned char *d = f->b + at + 8;
      if (size > end - at - 8) return found;
      if (type == 0x10 && size >= 16 && nb < 64) {   /* continuation */
        blocks[nb][0] = le(d, 8) + base;
        blocks[nb][1] = le(d + 8, 8);
        nb++;
      } else if (type == 0x0C && size >= 8 && (d[0] == 1 || d[0] == 2 || d[0] == 3)) {   /* attribute */
        attr_parts p;
        char why[160];
        attr_check(d, (size_t)size, &p, why, sizeof why);
        if (why[0]) {
          snprintf(bad, blen, "the attribute message at byte %llu is damaged: %s", (unsigned long long)at, why);
          return -1;
        }
        const unsigned char *t = d + p.type;
        /* the named one, a variable-length (class 9) string (type 1): its reference is its value; the base
           type (a character) follows the string type's 8 bytes, its size at its byte 4 */
        if (!found && p.name_len == alen && !memcmp(d + p.name, attr, alen) && p.type_len >= 2 &&
            (t[0] & 0x0f) == 9 && (t[1] & 0x0f) == 1 && p.value + 16 <= size) {
          *csize = p.type_len >= 16 ? le(t + 12, 4) : 1;
          *ref = (size_t)(d + p.value - f->b);
          found = 1;
        }
      }
      at += 8 + size;
    }
  }
  return found;
}

/* The reference at ref (length, collection address, index) against its collection. "" when sound. */
static void check_vlen_ref(const bytes_t *f, uint64_t base, size_t ref, char *bad, size_t blen)
{
  uint64_t len = le(f->b + ref, 4), col = le(f->b + ref + 4, 8) + base, idx = le(f->b + ref + 12, 4);
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

c5_status c5_h5_header_check(const c5_h5 *f, const char *obj, const char *attr)
{
  /* the basic info counts attribute messages without decoding them. An object whose kind libhdf5 cannot tell
     (a damaged message type) is refused here: its attributes would still be read, unchecked (a fuzzed root
     group whose symbol-table message became a dataspace one hid a damaged global heap so) */
  H5O_info_t oi;
  if (H5Oget_info_by_name2(f->file, obj, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0) {
    char why[256];
    return C5_ERR(C5_ERR_IO, "%s: cannot read the object header of %s (%s)", f->path, obj, c5_h5_reason(why));
  }
  FILE *fp = fopen(f->path, "rb");
  if (!fp) return C5_OK;   /* libhdf5 has it open: it will say */
  /* the superblock first: only h5py's layout is read whole (small files); the project's own are left alone */
  unsigned char sb[72];
  bytes_t b = { NULL, 0 };
  if (fread(sb, 1, sizeof sb, fp) == sizeof sb && !memcmp(sb, "\211HDF\r\n\032\n", 8) && sb[8] <= 1 &&
      sb[13] == 8 && sb[14] == 8 && fseek(fp, 0, SEEK_END) == 0) {
    long n = ftell(fp);
    if (n > 0 && n <= (1L << 31) && (b.b = malloc((size_t)n)) != NULL) {   /* larger files: left to libhdf5 */
      rewind(fp);
      b.len = fread(b.b, 1, (size_t)n, fp) == (size_t)n ? (size_t)n : 0;
    }
  }
  fclose(fp);
  c5_status st = C5_OK;
  if (b.len >= sizeof sb) {
    uint64_t base = le(b.b + 24, 8), csize = 1;
    size_t ref;
    char bad[256];
    int w;
    /* the format puts the base address at the superblock itself (here 0); libhdf5 1.10.8 takes another one
       and reads every address from there */
    if (base != 0)
      st = C5_ERR(C5_ERR_IO, "%s: the superblock is damaged: its base address is %llu, the superblock's own is 0",
                  f->path, (unsigned long long)base);
    else if ((w = walk_header(&b, base, oi.addr + base, attr, &ref, &csize, bad, sizeof bad)) < 0)
      st = C5_ERR(C5_ERR_IO, "%s: the object header of %s is damaged (%s)", f->path, obj, bad);
    else if (w == 1) {
      check_vlen_ref(&b, base, ref, bad, sizeof bad);
      /* libhdf5 sizes its conversion buffer as length x character size before reading the heap */
      if (!bad[0] && csize != 1)
        snprintf(bad, sizeof bad, "its characters claim %llu bytes each, a string's are 1", (unsigned long long)csize);
      if (bad[0])
        st = C5_ERR(C5_ERR_IO, "%s: attribute %s of %s is damaged: its string's reference at byte %zu does not match "
                    "the global heap (%s)", f->path, attr, obj, ref, bad);
    }
  }
  free(b.b);
  return st;
}
