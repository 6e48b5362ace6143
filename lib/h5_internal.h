/* h5_internal.h - what the library's parallel HDF5 files (checkpoint.c,
   dump.c) share with h5.c: HDF5's error stack read into messages, and file
   access over a dist's communicator. h5.c holds the MPI side of it, so
   those files name no MPI (tests/unit/test_seam.sh). Private to lib/. */
#ifndef C5_H5_INTERNAL_H
#define C5_H5_INTERNAL_H
#include "c5_internal.h"
#include "colt5_io.h"

/* HDF5's innermost error description into buf (and the stack cleared). */
const char *c5_h5_reason(char buf[256]);
/* Whether a record of HDF5's current error stack mentions word (any case).
   The stack is kept: read c5_h5_reason after it. */
int c5_h5_stack_mentions(const char *word);
/* A file access list for parallel HDF5 on d's communicator (MPI-IO), in
   the HDF5 1.10 format (checksummed metadata); *fapl closed with H5Pclose. */
c5_status c5_h5_fapl_mpio(const c5_dist *d, hid_t *fapl);
/* A transfer list for collective MPI-IO (filtered datasets are written only so). */
c5_status c5_h5_dxpl_collective(hid_t *dxpl);
/* tmp renamed over path, made durable: tmp's data synced first, the directory after, so that after a
   crash path holds the old file or the whole new one. what names the file's kind in messages. Not
   collective (one rank renames). */
c5_status c5_h5_publish(const char *what, const char *tmp, const char *path);
/* A scalar attribute name on obj: an int64, or a UTF-8 string. Return HDF5's status (< 0: failed;
   c5_h5_reason then says why) so that each file kind words its own message. */
herr_t c5_h5_write_attr_long(hid_t obj, const char *name, long v);
herr_t c5_h5_write_attr_string(hid_t obj, const char *name, const char *v);
/* Before libhdf5 reads attribute attr of obj in a file the project did not write (h5py's layout:
   superblock 0/1, version-1 object headers without checksums): every attribute message of obj's header,
   the variable-length string references among them and the superblock's base address checked from the
   file's bytes (h5_header.c says which damage crashes or hangs libhdf5 1.10.8), after obj's path
   (c5_h5_path_check). C5_ERR_IO naming the damage of the header or of attr's string; an object found
   sound whole is not read again (c5_h5_checked). */
c5_status c5_h5_header_check(const c5_h5 *f, const char *obj, const char *attr);
/* Before libhdf5 looks a name up in a group of a file in h5py's layout, or opens it: the root group's and
   every group's on the way to name (name's own too, when a group) local heap checked from the file's bytes,
   each before the first lookup inside it, and every object's header on the way (name's too) for shared
   messages the file cannot hold. *found: whether name exists. C5_ERR_IO naming the file, the object and
   the damage. */
c5_status c5_h5_path_check(const c5_h5 *f, const char *name, int *found);
/* What a handle's checks above found sound, so that each reads the file once per object (h5_header.c):
   the file's layout (0: not read yet, 1: h5py's, -1: another), each object by its header's address and the
   checks it passed (n of cap), the file's bytes when small (len; NULL: read at each check). Made by
   c5_h5_open_read (NULL: checked at every read), freed by c5_h5_close (c5_h5_checked_free). */
struct c5_h5_checked {
  int layout, n, cap;
  struct c5_h5_checked_obj { haddr_t addr; unsigned what; } *obj;
  unsigned char *bytes;
  size_t len;
};
typedef struct c5_h5_checked c5_h5_checked;
void c5_h5_checked_free(c5_h5_checked *c);
/* "[a,b,c]" */
void c5_h5_shape_str(char *buf, size_t len, int nd, const long *dims);
#endif
