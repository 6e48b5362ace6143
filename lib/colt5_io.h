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
  /* private: what the readers' checks of the file's bytes found sound (c5_h5_open_read makes it,
     c5_h5_close frees it; NULL in a handle made otherwise: nothing kept) */
  struct c5_h5_checked *checked;
} c5_h5;

/* Open an existing file read-only (serial: each rank may open it). */
c5_status c5_h5_open_read(const char *path, c5_h5 *f);
c5_status c5_h5_close(c5_h5 *f);   /* NULL-safe, idempotent */

/* Whether name (a dataset or group, any depth) exists: 1 or 0; -1 when an object on the way is damaged (an
   h5py file's group heap or header that would hang or crash libhdf5): the error is set, and reading name
   refuses with it. */
int c5_h5_exists(const c5_h5 *f, const char *name);
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
   NULL) is stored as the root attribute "meta". The file is in the HDF5 1.10
   format (checksummed metadata) with each dataset chunked and Fletcher32
   checksummed: a corrupted file is refused on read with a "checksum" message. */
c5_status c5_h5_write_params(const char *path, const char *group, const c5_params *p, int grads,
                             const char *attrs_json);


/* ---- checkpoints (docs/formats.md) ------------------------------------------------------ */
/* One HDF5 file per checkpoint, written collectively through parallel HDF5
   (MPI-IO) in the HDF5 1.10 format (checksummed metadata) with Fletcher32 on
   every dataset: /params/<state_dict name>, /optim/exp_avg/<name>,
   /optim/exp_avg_sq/<name> in the build's precision, the scalars under
   /state (int64 datasets), the run's configuration as the root attribute
   "config" (JSON), the attributes "format" (C5_CHECKPOINT_FORMAT), "dtype"
   ("float64"/"float32") and "step". Written to "<path>.tmp" then renamed over path
   by rank 0 after every rank closed it: a reader sees the old file or the new
   one, never a part. */
#define C5_CHECKPOINT_FORMAT 1
typedef struct {
  char name[64];      /* set by the caller on both write and read */
  int64_t value;
} c5_ckpt_scalar;
/* Collective on world (every rank of the job; parameters and moments are
   replicated, so each element is written once). o may be NULL (no moments).
   Rank 0 first reserves the file's size at the tmp name: a full disk or a
   file-size limit is an agreed C5_ERR_IO naming the tmp file, and the file
   at path stays as it was. */
c5_status c5_checkpoint_write(const c5_dist *world, const char *path, const c5_params *p, const c5_adamw *o,
                              const c5_ckpt_scalar *state, int nstate, const char *config_json);
/* Collective on world. Reads into p (and o when not NULL: its moments and
   step) and the values of state[0..nstate) by name (each must exist). The
   file's element type may differ from the build's (converted on read).
   *config_json (when not NULL) gets the malloc'ed configuration. A missing,
   truncated or corrupted file, another format, another model's names or
   shapes: C5_ERR_IO / C5_ERR_SHAPE naming the file and dataset, on every
   rank, with nothing changed in p or o. */
c5_status c5_checkpoint_read(const c5_dist *world, const char *path, c5_params *p, c5_adamw *o,
                             c5_ckpt_scalar *state, int nstate, char **config_json);
/* The newest complete checkpoint dir/ckpt-<step>.h5 (largest step), into path;
   "" when there is none. Not collective (call it on every rank). */
c5_status c5_checkpoint_latest(const char *dir, char *path, size_t len);
/* Remove all but the newest keep checkpoints of dir (rank 0 removes; collective). keep >= 1. */
c5_status c5_checkpoint_prune(const c5_dist *world, const char *dir, int keep);
/* The name of step's checkpoint in dir: "<dir>/ckpt-<step, 8 digits or more>.h5". Not collective. */
c5_status c5_checkpoint_name(const char *dir, long step, char *path, size_t len);

/* ---- activation dumps ------------------------------------------------------------------ */
/* c5_model_dump_activations - the last forward's activations (before its backward: see below) into path
   (created, or extended: one group per step), collectively over the
   sequence ranks of d, each rank writing its shard by hyperslab:
   /step_<s>/layer_<i>/input [batch, n, dim], router_logits and router_scores
   (of each router: q, kv, ff) [rows, n], routed_indices [rows, k] (int64),
   light_out and heavy_out [batch, n, dim]. Collective on d. */
c5_status c5_model_dump_activations(const c5_model *m, const c5_dist *d, const c5_layout *lay,
                                    const c5_model_cache *c, const char *path, long step);
/* The same for one block, as layer_0: x [batch, n_local, dim] its last forward's input (the block
   cache does not keep it). The branches' outputs are formed again from what the cache keeps: a dump
   goes between the forward and its backward (LocalMHA's backward writes over its head outputs; a dump
   after it is refused, C5_ERR_ARG, until a forward runs again). Collective on d. */
c5_status c5_block_dump_activations(const c5_block *b, const c5_dist *d, const c5_layout *lay,
                                    const c5_block_cache *c, const c5_real *x, const char *path, long step);

/* Number of elements of dims[0..ndim); -1 when a dimension is negative or
   the product overflows a long. c5_h5_shape refuses (C5_ERR_SHAPE, naming
   file, dataset and shape) a dataset whose count times 16 would overflow, so
   sizes computed from a shape it returned cannot wrap. */
long c5_numel(int ndim, const long *dims);

#ifdef __cplusplus
}
#endif
#endif
