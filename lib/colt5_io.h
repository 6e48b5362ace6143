/* colt5_io.h - the HDF5 layer of libcolt5: every tensor file (golden vectors,
   parameters, later checkpoints and activation dumps) is read and written
   through these calls. Errors name the file, the dataset and both shapes. */
#ifndef COLT5_IO_H
#define COLT5_IO_H

#include <hdf5.h>
#include "colt5.h"

#ifdef __cplusplus
extern "C" {
#endif

#define C5_H5_MAXDIM 8

typedef struct {
  hid_t file;
  char path[1024];   /* for messages */
} c5_h5;

/* Open an existing file read-only (serial: each rank may open it). */
c5_status c5_h5_open_read(const char *path, c5_h5 *f);
c5_status c5_h5_close(c5_h5 *f);   /* NULL-safe, idempotent */

int c5_h5_exists(const c5_h5 *f, const char *name);   /* dataset or group, any depth */
/* Shape of dataset name; error when it does not exist. */
c5_status c5_h5_shape(const c5_h5 *f, const char *name, int *ndim, long dims[C5_H5_MAXDIM]);
/* String attribute attr of object obj ("/" for the root), malloc'ed into *out. */
c5_status c5_h5_attr_string(const c5_h5 *f, const char *obj, const char *attr, char **out);
/* Integer attribute (error when absent). */
c5_status c5_h5_attr_long(const c5_h5 *f, const char *obj, const char *attr, long *out);

/* Read a whole dataset converting to the memory type. If ndim >= 0 the shape
   must be exactly dims[0..ndim): otherwise C5_ERR_SHAPE names both shapes.
   Floating datasets only for _real, integer ones for _u8/_long. */
c5_status c5_h5_read_real(const c5_h5 *f, const char *name, int ndim, const long *dims, c5_real *buf);
c5_status c5_h5_read_double(const c5_h5 *f, const char *name, int ndim, const long *dims, double *buf);
c5_status c5_h5_read_u8(const c5_h5 *f, const char *name, int ndim, const long *dims, uint8_t *buf);
c5_status c5_h5_read_long(const c5_h5 *f, const char *name, int ndim, const long *dims, long *buf);

/* Read every parameter of the table from group (e.g. "/params"): each
   dataset must exist with the registered shape; the message names the
   dataset and both shapes. Datasets the table does not know are an error
   too (a file for another configuration). */
c5_status c5_h5_read_params(const c5_h5 *f, const char *group, c5_params *p);

/* Write every parameter (or, with grads = 1, every gradient) of the table as
   group/<state_dict name> datasets of the configured precision into a new
   file path: written to "path.tmp.<pid>" and renamed over path only when
   complete, so an existing file is never left half-written. attrs_json (or
   NULL) is stored as the root attribute "meta". */
c5_status c5_h5_write_params(const char *path, const char *group, const c5_params *p, int grads,
                             const char *attrs_json);

/* Number of elements of dims[0..ndim). */
long c5_numel(int ndim, const long *dims);

#ifdef __cplusplus
}
#endif
#endif
