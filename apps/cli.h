/* cli.h - command-line and JSON option parsing, and --device, shared by the apps
   (colt5-golden, colt5-bench, colt5-train): values are taken whole and in
   range (no wrap, no overflow, no junk read as 0), and a wrong one is named
   with its option and value in one message. */
#ifndef C5_APPS_CLI_H
#define C5_APPS_CLI_H

#include <jansson.h>
#include "colt5.h"

/* One integer in [lo, hi] at s, ending at a ',' or the end: its end, or NULL
   (junk, empty, out of range, or past what a long holds). */
const char *cli_parse_int(const char *s, long lo, long hi, long *out);
/* A comma-separated list of integers in [lo, hi], at most max of them: its
   length, or -1. */
int cli_parse_list(const char *s, long lo, long hi, long *out, int max);
/* One finite number in [lo, hi], the whole of s: 0, or -1. */
int cli_parse_real(const char *s, double lo, double hi, double *out);
/* The first bad option's message (later ones are dropped: one message). */
c5_status cli_bad_option(c5_status st, const char *opt, const char *val, const char *want);

/* JSON options. The first value of the wrong type or range is remembered
   ("option 'KEY' is VALUE, expected WANT"; cli_json_error, "" when none), and
   the default is returned in its place, so that a caller reads every option
   and refuses the whole set by that one message. */
void cli_json_reset(void);
const char *cli_json_error(void);
void cli_json_wrong(const char *key, json_t *v, const char *want);
/* Absent or null (Python's None) gives dflt. */
double cli_json_num(json_t *o, const char *key, double dflt);
/* An integer (a count, a size): integral and below 2^31 in magnitude. */
long cli_json_int(json_t *o, const char *key, long dflt);
int cli_json_bool(json_t *o, const char *key, int dflt);
/* Keys of a JSON object must all be in allowed (NULL-terminated); what names the object. */
c5_status cli_check_keys(const char *file, const char *what, json_t *obj, const char *const *allowed);

/* --device and --matmul (colt5-train, colt5-bench): device cpu or cuda; matmul fp32, tf32 or bf16, the last two
   only on cuda (the CPU's products are exact). C5_OK, or the first bad option named with its value. */
c5_status cli_check_device(const char *device, const char *matmul);
/* This rank's backend for --device: the CPU's, or a CUDA backend on GPU local rank % GPUs (the launcher's
   node-local rank: OMPI_COMM_WORLD_LOCAL_RANK, PMI_LOCAL_RANK or SLURM_LOCALID; 0 without one) with its
   products set by --matmul. Ranks that share a GPU (more ranks than GPUs on a node) each hold their own
   copy of the parameters and caches there; the library's collectives then stage device buffers through host
   memory, and with one GPU per rank use NCCL (lib/dist.c chooses; C5_DIST overrides). This rank alone: the
   caller agrees the status. */
typedef struct {
  const c5_backend *be;   /* where the run computes: the CPU's, or gpu */
  c5_backend *gpu;        /* --device cuda: the backend (owned); NULL on the CPU */
  int gpu_id, ngpu;       /* its device ordinal; the GPUs this rank sees */
  c5_matmul matmul;
} cli_device;
c5_status cli_device_open(const char *device, const char *matmul, cli_device *dv);
void cli_device_close(cli_device *dv);   /* after the last use of the backend (and of a c5_dist's NCCL on it) */
/* What the matrix products really take: --matmul's mode in the single build; "fp64" in the double build, whose
   products have f64 inputs (--matmul rounds only f32 ones). */
const char *cli_device_products(const cli_device *dv);
/* For a header line, the same on every app: "cpu", or the backend, the GPU and its products, as rank 0 sees
   them ("cuda (NVIDIA H200, GPU 0, matmul bf16)"; on several ranks "cuda (NVIDIA H200, GPU local rank % 8:
   rank 0 on GPU 0, matmul bf16)"). */
void cli_device_describe(const cli_device *dv, int nranks, char *buf, size_t len);

#endif
