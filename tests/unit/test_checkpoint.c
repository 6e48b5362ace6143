/* test_checkpoint.c - checkpoints (lib/checkpoint.c), run by test_checkpoint.sh:
     test_checkpoint write DIR    (mpirun -np 2) every case below, leaving DIR/ckpt-00000100.h5
     test_checkpoint reload DIR   (mpirun -np 1 and 3) that file read back bit for bit
     test_checkpoint default DIR  a checkpoint of the default configuration and one of another, for
                                  tools/load_checkpoint.py --check-only (test_load_checkpoint.sh)
   Cases: a round trip bit for bit (parameters, both moments, the optimizer's
   steps, int64 scalars, the configuration); an AdamW step after reading a
   checkpoint equal to the writer's step after writing it; a file of another configuration
   refused naming the dataset and both shapes; a truncated file, a file with
   flipped bytes inside a dataset's data, a file of another format and one
   without moments refused, with the parameters unchanged; a failed write
   (the tmp name taken, or an unwritable directory when not root; a
   configuration that differs between ranks) leaving the previous checkpoint
   as it was and no tmp file; a checkpoint in the other precision (float32
   in the double build) read converted; latest and prune. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "harness.h"
#include "colt5_io.h"

#define SENTINEL ((c5_real)7.25)
#define STEPS 100
static const char *CONFIG = "{\"model\": {\"dim\": 8, \"depth\": 1}, \"note\": \"test_checkpoint\"}";


typedef struct {
  c5_params *p;
  c5_block *b;
  c5_adamw *o;
} model;

static c5_status make(model *m, int routed_kv)
{
  c5_block_config cfg;
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;
  a.dim = 8; a.num_heavy_tokens_q = 4; a.num_heavy_tokens_kv = 4; a.light_heads = 2; a.light_dim_head = 4;
  a.light_window_size = 8; a.heavy_heads = 2; a.heavy_dim_head = 4; a.num_routed_kv = routed_kv;
  f.dim = 8; f.num_heavy_tokens = 4;
  cfg.attn = a;
  cfg.ff = f;
  c5_adamw_config oc = C5_ADAMW_CONFIG_DEFAULT;
  c5_status st = c5_params_create(c5_backend_cpu(), &m->p);
  if (st == C5_OK) st = c5_block_create(&cfg, m->p, "blocks.0", &m->b);
  if (st == C5_OK) st = c5_params_alloc(m->p);
  if (st == C5_OK) st = c5_adamw_create(&oc, m->p, &m->o);
  return st;
}
static void unmake(model *m)
{
  c5_adamw_destroy(&m->o);
  c5_block_destroy(&m->b);
  c5_params_destroy(&m->p);
}

static c5_real *slab(const model *m) { return c5_params_value(m->p, 0); }
static long total(const model *m) { return c5_params_total(m->p); }
static c5_real *moment(const model *m, int which, long i)
{
  return which ? c5_adamw_exp_avg_sq(m->o, i) : c5_adamw_exp_avg(m->o, i);
}
#define SENTINEL_STEPS 4321

/* The values written: the same on every rank and in every run. */
static void fill(model *m)
{
  unsigned long long s[3] = { 11, 12, 13 };
  for (long i = 0; i < total(m); i++) slab(m)[i] = (c5_real)t_normal(&s[0]);
  for (int w = 0; w < 2; w++)
    for (long i = 0; i < c5_params_count(m->p); i++)
      for (long j = 0; j < c5_params_numel(m->p, i); j++) {
        double v = t_normal(&s[1 + w]);
        moment(m, w, i)[j] = (c5_real)(w ? fabs(v) : v);
      }
  c5_adamw_set_steps(m->o, STEPS);
}
static void fill_sentinel(model *m)
{
  for (long i = 0; i < total(m); i++) slab(m)[i] = SENTINEL;
  for (int w = 0; w < 2; w++)
    for (long i = 0; i < c5_params_count(m->p); i++)
      for (long j = 0; j < c5_params_numel(m->p, i); j++) moment(m, w, i)[j] = SENTINEL;
  c5_adamw_set_steps(m->o, SENTINEL_STEPS);
}
static int is_sentinel(const model *m)
{
  for (long i = 0; i < total(m); i++)
    if (slab(m)[i] != SENTINEL) return 0;
  for (int w = 0; w < 2; w++)
    for (long i = 0; i < c5_params_count(m->p); i++)
      for (long j = 0; j < c5_params_numel(m->p, i); j++)
        if (moment(m, w, i)[j] != SENTINEL) return 0;
  return c5_adamw_steps(m->o) == SENTINEL_STEPS;
}
static int same(const model *a, const model *b)
{
  if (total(a) != total(b) || memcmp(slab(a), slab(b), (size_t)total(a) * sizeof(c5_real)) ||
      c5_adamw_steps(a->o) != c5_adamw_steps(b->o))
    return 0;
  for (int w = 0; w < 2; w++)
    for (long i = 0; i < c5_params_count(a->p); i++)
      if (memcmp(moment(a, w, i), moment(b, w, i), (size_t)c5_params_numel(a->p, i) * sizeof(c5_real))) return 0;
  return 1;
}

/* Gradients of step k (the same on every rank: as after c5_params_allreduce_grad). */
static void set_grads(model *m, unsigned long long k)
{
  for (long i = 0; i < c5_params_count(m->p); i++)
    for (long j = 0; j < c5_params_numel(m->p, i); j++) c5_params_grad(m->p, i)[j] = (c5_real)(0.1 * t_normal(&k));
}

static void set_state(c5_ckpt_scalar st[3])
{
  memset(st, 0, 3 * sizeof *st);
  snprintf(st[0].name, sizeof st[0].name, "step");          st[0].value = STEPS;
  snprintf(st[1].name, sizeof st[1].name, "tokens_seen");   st[1].value = 123456789012LL;   /* past 2^32 */
  snprintf(st[2].name, sizeof st[2].name, "data_offset");   st[2].value = -5;
}
static void clear_state(c5_ckpt_scalar st[3])
{
  set_state(st);
  for (int i = 0; i < 3; i++) st[i].value = 0;
}

/* Rank 0's file surgery (serial HDF5 and stdio); every rank waits for it. */
static int copy_prefix(const char *src, const char *dst, double frac)
{
  FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
  if (!a || !b) { if (a) fclose(a); if (b) fclose(b); return 0; }
  fseek(a, 0, SEEK_END);
  long n = (long)(ftell(a) * frac);
  fseek(a, 0, SEEK_SET);
  char buf[4096];
  for (long left = n; left > 0;) {
    size_t k = fread(buf, 1, left < (long)sizeof buf ? (size_t)left : sizeof buf, a);
    if (k == 0 || fwrite(buf, 1, k, b) != k) break;
    left -= (long)k;
  }
  fclose(a);
  return fclose(b) == 0;
}

/* Flip bytes in the middle of the first chunk of dataset name (its data, not the checksum after it). */
static int flip_data(const char *path, const char *name)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return 0;
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT), sp = H5Dget_space(d);
  hsize_t off[C5_H5_MAXDIM], size = 0;
  unsigned mask;
  haddr_t addr = HADDR_UNDEF;
  herr_t e = H5Dget_chunk_info(d, sp, 0, off, &mask, &addr, &size);
  H5Sclose(sp); H5Dclose(d); H5Fclose(f);
  if (e < 0 || size < 8 || addr == HADDR_UNDEF) return 0;
  FILE *fp = fopen(path, "r+b");
  if (!fp) return 0;
  unsigned char c[2];
  long at = (long)addr + (long)(size - 4) / 2;
  int ok = fseek(fp, at, SEEK_SET) == 0 && fread(c, 1, 2, fp) == 2;
  c[0] ^= 0xFF; c[1] ^= 0x5A;
  ok = ok && fseek(fp, at, SEEK_SET) == 0 && fwrite(c, 1, 2, fp) == 2;
  return fclose(fp) == 0 && ok;
}

static int set_format(const char *path, long format)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) return 0;
  hid_t a = H5Aopen(f, "format", H5P_DEFAULT);
  int64_t v = format;
  herr_t e = a >= 0 ? H5Awrite(a, H5T_NATIVE_INT64, &v) : -1;
  if (a >= 0) H5Aclose(a);
  return H5Fclose(f) >= 0 && e >= 0;
}

/* A checkpoint in the other precision (float32 in the double build), written here by the format's
   description (docs/formats.md) with serial HDF5, independently of lib/checkpoint.c. */
static int write_other(const char *path, const model *m, const c5_ckpt_scalar *state, int nstate)
{
  const hid_t ftype = C5_USE_DOUBLE ? H5T_IEEE_F32LE : H5T_IEEE_F64LE;
  const hid_t mem = C5_USE_DOUBLE ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110);
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  if (f < 0) return 0;
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  int ok = 1;
  const char *groups[3] = { "/params", "/optim/exp_avg", "/optim/exp_avg_sq" };
  for (int g = 0; g < 3; g++)
    for (long i = 0; i < c5_params_count(m->p); i++) {
      long dims[C5_PARAM_MAXDIM];
      hsize_t hd[C5_PARAM_MAXDIM];
      int nd = c5_params_shape(m->p, i, dims);
      for (int k = 0; k < nd; k++) hd[k] = (hsize_t)dims[k];
      char name[512];
      snprintf(name, sizeof name, "%s/%s", groups[g], c5_params_name(m->p, i));
      hid_t sp = H5Screate_simple(nd, hd, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
      H5Pset_chunk(dcpl, nd, hd);
      H5Pset_fletcher32(dcpl);
      hid_t d = H5Dcreate2(f, name, ftype, sp, lcpl, dcpl, H5P_DEFAULT);
      const c5_real *src = g == 0 ? c5_params_value(m->p, i) : g == 1 ? c5_adamw_exp_avg(m->o, i)
                                                                      : c5_adamw_exp_avg_sq(m->o, i);
      ok = ok && d >= 0 && H5Dwrite(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, src) >= 0;
      if (d >= 0) H5Dclose(d);
      H5Pclose(dcpl); H5Sclose(sp);
    }
  for (int i = 0; i < nstate; i++) {
    hsize_t one = 1;
    char name[512];
    snprintf(name, sizeof name, "/state/%s", state[i].name);
    hid_t sp = H5Screate_simple(1, &one, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &one);
    H5Pset_fletcher32(dcpl);
    hid_t d = H5Dcreate2(f, name, H5T_STD_I64LE, sp, lcpl, dcpl, H5P_DEFAULT);
    int64_t v = state[i].value;
    ok = ok && d >= 0 && H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) >= 0;
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl); H5Sclose(sp);
  }
  struct { hid_t obj; const char *name; int64_t v; } longs[3] = {
    { f, "format", C5_CHECKPOINT_FORMAT }, { f, "step", STEPS }, { H5I_INVALID_HID, "steps", STEPS } };
  longs[2].obj = H5Gopen2(f, "/optim", H5P_DEFAULT);
  for (int i = 0; i < 3; i++) {
    hid_t sp = H5Screate(H5S_SCALAR), a = H5Acreate2(longs[i].obj, longs[i].name, H5T_STD_I64LE, sp, H5P_DEFAULT,
                                                     H5P_DEFAULT);
    ok = ok && a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &longs[i].v) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
  }
  H5Gclose(longs[2].obj);
  const char *strs[2][2] = { { "dtype", C5_USE_DOUBLE ? "float32" : "float64" }, { "config", CONFIG } };
  for (int i = 0; i < 2; i++) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(strs[i][1]) + 1);
    hid_t sp = H5Screate(H5S_SCALAR), a = H5Acreate2(f, strs[i][0], t, sp, H5P_DEFAULT, H5P_DEFAULT);
    ok = ok && a >= 0 && H5Awrite(a, t, strs[i][1]) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp); H5Tclose(t);
  }
  H5Pclose(lcpl);
  return H5Fclose(f) >= 0 && ok;
}

static int touch(const char *dir, const char *name)
{
  char p[600];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "wb");
  return f && fclose(f) == 0;
}
static int exists(const char *dir, const char *name)
{
  char p[600];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  return access(p, F_OK) == 0;
}

/* T_FAILS that also shows the message (rank 0): the log shows what a user would read. */
#define T_FAILS_SHOW(call, want, needle) do { c5_status s_ = (call); \
    if (s_ == (want) && strstr(c5_last_error(), (needle)) && c5_dist_rank(world) == 0) \
      printf("  refused: %.300s\n", c5_last_error()); \
    if (s_ != (want) || !strstr(c5_last_error(), (needle))) { \
      fprintf(stderr, "%s:%d: %s returned %s (%s), expected %s with \"%s\"\n", __FILE__, __LINE__, #call, \
              c5_status_string(s_), c5_last_error(), c5_status_string(want), (needle)); goto fail; } \
    c5_error_clear(); } while (0)

/* rank 0 runs what (0: failed), every rank learns its result after a barrier */
#define ON_ROOT(what) do { long ok_ = rank == 0 ? (long)(what) : 1; \
    T_OK(c5_dist_reduce_long(world, &ok_, 1, C5_REDUCE_MIN)); T_CHECK(ok_, "rank 0: %s failed", #what); } while (0)

static int run_write(c5_dist *world, const char *dir)
{
  const int rank = c5_dist_rank(world);
  int ok = 0;
  model m = { 0 }, q = { 0 }, r = { 0 };
  char path[512], tmp[600], other[600], trunc[600], flip[600], fmt[600], nomom[600], lp[600], latest[700];
  c5_ckpt_scalar state[3], st2[3];
  char *config = NULL;
  T_OK(c5_checkpoint_name(dir, STEPS, path, sizeof path));
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  snprintf(other, sizeof other, "%s/other.h5", dir);
  snprintf(trunc, sizeof trunc, "%s/trunc.h5", dir);
  snprintf(flip, sizeof flip, "%s/flip.h5", dir);
  snprintf(fmt, sizeof fmt, "%s/format.h5", dir);
  snprintf(nomom, sizeof nomom, "%s/nomoments.h5", dir);
  snprintf(lp, sizeof lp, "%s/latest", dir);
  T_OK(make(&m, 1));
  T_OK(make(&q, 1));
  T_OK(make(&r, 2));
  fill(&m);
  set_state(state);

  /* round trip */
  T_OK(c5_checkpoint_write(world, path, m.p, m.o, state, 3, CONFIG));
  T_CHECK(access(tmp, F_OK) != 0, "%s left behind", tmp);
  fill_sentinel(&q);
  clear_state(st2);
  T_OK(c5_checkpoint_read(world, path, q.p, q.o, st2, 3, &config));
  T_CHECK(same(&m, &q), "round trip: parameters, moments or steps differ");
  for (int i = 0; i < 3; i++) T_CHECK(st2[i].value == state[i].value, "state %s: %lld, wrote %lld", st2[i].name,
                                      (long long)st2[i].value, (long long)state[i].value);
  T_CHECK(config && !strcmp(config, CONFIG), "config read back as %s", config ? config : "(null)");
  free(config);
  config = NULL;
  if (rank == 0) printf("round trip at P=%d: %ld parameters, moments, steps, 3 scalars, config identical\n",
                        c5_dist_size(world), c5_params_count(m.p));

  /* resume: a step after reading a checkpoint = the step the writer took after writing it, bit for bit */
  {
    char rpath[600];
    snprintf(rpath, sizeof rpath, "%s/resume.h5", dir);
    fill_sentinel(&q);
    for (unsigned long long k = 31; k <= 32; k++) { set_grads(&m, k); T_OK(c5_adamw_step(m.o, NULL, NULL)); }
    T_OK(c5_checkpoint_write(world, rpath, m.p, m.o, state, 3, CONFIG));
    set_grads(&m, 33);
    T_OK(c5_adamw_step(m.o, NULL, NULL));
    T_OK(c5_checkpoint_read(world, rpath, q.p, q.o, st2, 3, NULL));
    T_CHECK(c5_adamw_steps(q.o) == STEPS + 2, "resume: %ld optimizer steps read, %d written", c5_adamw_steps(q.o),
            STEPS + 2);
    set_grads(&q, 33);
    T_OK(c5_adamw_step(q.o, NULL, NULL));
    T_CHECK(same(&m, &q), "resume: the step after reading differs from the writer's");
    fill(&m);   /* back to the values of the checkpoint at path */
    if (rank == 0) printf("resume: AdamW step %d after a read = the writer's, bit for bit\n", STEPS + 3);
  }

  /* another configuration: one dataset's shape differs, named with both shapes */
  fill_sentinel(&r);
  T_FAILS_SHOW(c5_checkpoint_read(world, path, r.p, r.o, NULL, 0, NULL), C5_ERR_SHAPE,
          "dataset /params/blocks.0.conditional_attn.kv_router.routing_token has shape [1,8], this model's is [2,8]");
  T_CHECK(is_sentinel(&r), "another configuration: the parameters changed");

  /* damaged files: refused, nothing changed */
  ON_ROOT(copy_prefix(path, trunc, 0.6));
  fill_sentinel(&q);
  T_FAILS_SHOW(c5_checkpoint_read(world, trunc, q.p, q.o, st2, 3, NULL), C5_ERR_IO, "trunc.h5: not a readable HDF5 file (unable to open file: truncated file");
  T_CHECK(is_sentinel(&q), "truncated file: the parameters changed");
  const char *victim = c5_params_name(m.p, 3);
  char vname[300], want[400];
  snprintf(vname, sizeof vname, "/params/%s", victim);
  ON_ROOT(copy_prefix(path, flip, 1.0) && flip_data(flip, vname));
  snprintf(want, sizeof want, "dataset %s is corrupted (checksum)", vname);
  T_FAILS_SHOW(c5_checkpoint_read(world, flip, q.p, q.o, st2, 3, NULL), C5_ERR_IO, want);
  T_CHECK(is_sentinel(&q), "flipped bytes: the parameters changed");
  ON_ROOT(copy_prefix(path, fmt, 1.0) && set_format(fmt, 2));
  T_FAILS_SHOW(c5_checkpoint_read(world, fmt, q.p, q.o, st2, 3, NULL), C5_ERR_IO, "format 2, this library reads format 1");
  T_CHECK(is_sentinel(&q), "another format: the parameters changed");
  T_OK(c5_checkpoint_write(world, nomom, m.p, NULL, state, 3, CONFIG));
  T_FAILS_SHOW(c5_checkpoint_read(world, nomom, q.p, q.o, st2, 3, NULL), C5_ERR_IO, "/optim/exp_avg/");
  T_CHECK(is_sentinel(&q), "no moments: the parameters changed");
  T_OK(c5_checkpoint_read(world, nomom, q.p, NULL, st2, 3, NULL));   /* the parameters alone are there */
  T_CHECK(!memcmp(slab(&q), slab(&m), (size_t)total(&m) * sizeof(c5_real)), "parameters of a file without moments");
  /* an error on one rank alone reaches every rank, and nothing changes on any */
  char missing1[600];
  snprintf(missing1, sizeof missing1, "%s/no-such-file.h5", dir);
  fill_sentinel(&q);
  T_FAILS_SHOW(c5_checkpoint_read(world, rank == 1 ? missing1 : path, q.p, q.o, st2, 3, NULL), C5_ERR_IO,
               "no-such-file.h5: cannot open");
  T_CHECK(is_sentinel(&q), "a missing file on rank 1: the parameters changed on rank %d", rank);
  fill_sentinel(&r);
  T_FAILS_SHOW(c5_checkpoint_read(world, path, rank == 1 ? r.p : q.p, NULL, NULL, 0, NULL), C5_ERR_ARG,
               "parameter total differs between ranks");
  T_CHECK(is_sentinel(&q) && is_sentinel(&r), "tables differing between ranks: the parameters changed");
  if (rank == 0) printf("refused, nothing changed: another configuration, truncated, flipped bytes in %s, format 2, "
                        "no moments; a missing file or another table on rank 1 alone\n", vname);

  /* failed writes leave the previous checkpoint and no tmp file */
  fill(&r);   /* (a model of the right shape with other values: the one written over path) */
  for (long i = 0; i < total(&q); i++) slab(&q)[i] = slab(&m)[i] + 1;
  ON_ROOT(mkdir(tmp, 0700) == 0);   /* the tmp name is taken: the create fails, even for root */
  T_FAILS_SHOW(c5_checkpoint_write(world, path, q.p, q.o, state, 3, CONFIG), C5_ERR_IO, ".tmp");
  ON_ROOT(rmdir(tmp) == 0);
  {
    char nodir[700];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/ckpt-00000001.h5", dir);
    T_FAILS_SHOW(c5_checkpoint_write(world, nodir, q.p, q.o, state, 3, CONFIG), C5_ERR_IO, "no/such/dir/ckpt-00000001.h5");
  }
  if (geteuid() != 0) {   /* root writes into a read-only directory anyway */
    char ro[600], rop[700];
    snprintf(ro, sizeof ro, "%s/readonly", dir);
    snprintf(rop, sizeof rop, "%s/ckpt-00000001.h5", ro);
    ON_ROOT(mkdir(ro, 0500) == 0);
    T_FAILS(c5_checkpoint_write(world, rop, q.p, q.o, state, 3, CONFIG), C5_ERR_IO, "readonly");
    ON_ROOT(rmdir(ro) == 0);
  }
  T_FAILS_SHOW(c5_checkpoint_write(world, path, q.p, q.o, state, 3, rank == 1 ? "{\"other\": 1}" : CONFIG), C5_ERR_ARG,
          "config (hash) differs between ranks");
  T_CHECK(access(tmp, F_OK) != 0, "%s left behind by a failed write", tmp);
  fill_sentinel(&q);
  T_OK(c5_checkpoint_read(world, path, q.p, q.o, st2, 3, NULL));
  T_CHECK(same(&m, &q), "a failed write changed the previous checkpoint");
  if (rank == 0) printf("failed writes (tmp name taken, missing directory%s, config differing between ranks) leave the "
                        "checkpoint\n",
                        geteuid() != 0 ? ", read-only directory" : "");

  /* the other precision, converted on read */
  ON_ROOT(write_other(other, &m, state, 3));
  fill_sentinel(&q);
  T_OK(c5_checkpoint_read(world, other, q.p, q.o, st2, 3, NULL));
  typedef
#if C5_USE_DOUBLE
      float
#else
      double
#endif
      other_t;
  for (long i = 0; i < total(&m); i++)
    T_CHECK(slab(&q)[i] == (c5_real)(other_t)slab(&m)[i], "other precision: element %ld read as %.17g, want %.17g",
            i, (double)slab(&q)[i], (double)(other_t)slab(&m)[i]);
  for (int w = 0; w < 2; w++)
    for (long i = 0; i < c5_params_count(m.p); i++)
      for (long j = 0; j < c5_params_numel(m.p, i); j++)
        T_CHECK(moment(&q, w, i)[j] == (c5_real)(other_t)moment(&m, w, i)[j], "other precision: moment %d of %s",
                w, c5_params_name(m.p, i));
  if (rank == 0) printf("a %s checkpoint read into the %s build\n", C5_USE_DOUBLE ? "float32" : "float64",
                        C5_USE_DOUBLE ? "double" : "single");

  /* latest and prune */
  ON_ROOT(mkdir(lp, 0700) == 0 && touch(lp, "ckpt-00000100.h5") && touch(lp, "ckpt-00000200.h5") &&
          touch(lp, "ckpt-5.h5") && touch(lp, "ckpt-00000300.h5.tmp") && touch(lp, "ckpt-abc.h5") &&
          touch(lp, "ckpt-.h5") && touch(lp, "notes.txt"));
  T_OK(c5_checkpoint_latest(lp, latest, sizeof latest));
  T_CHECK(!strcmp(latest + strlen(lp), "/ckpt-00000200.h5"), "latest: %s", latest);
  char small[8];
  T_FAILS(c5_checkpoint_latest(lp, small, sizeof small), C5_ERR_ARG, "bytes");
  T_FAILS(c5_checkpoint_prune(world, lp, 0), C5_ERR_ARG, "keep = 0");
  T_OK(c5_checkpoint_prune(world, lp, 2));
  T_CHECK(exists(lp, "ckpt-00000200.h5") && exists(lp, "ckpt-00000100.h5") && !exists(lp, "ckpt-5.h5") &&
          exists(lp, "ckpt-00000300.h5.tmp") && exists(lp, "ckpt-abc.h5") && exists(lp, "notes.txt"),
          "prune kept the wrong files");
  T_OK(c5_checkpoint_prune(world, lp, 1));
  T_CHECK(!exists(lp, "ckpt-00000100.h5") && exists(lp, "ckpt-00000200.h5"), "prune to 1");
  T_OK(c5_checkpoint_latest(dir, latest, sizeof latest));
  T_CHECK(!strcmp(latest, path), "latest of %s: %s, want %s", dir, latest, path);
  snprintf(latest, sizeof latest, "x");
  char missing[700];
  snprintf(missing, sizeof missing, "%s/no-such-dir", dir);
  T_OK(c5_checkpoint_latest(missing, latest, sizeof latest));
  T_CHECK(latest[0] == '\0', "latest of a missing directory: %s", latest);
  if (rank == 0) printf("latest and prune: steps by number, *.tmp and other names ignored\n");
  ok = 1;
fail:
  free(config);
  unmake(&m); unmake(&q); unmake(&r);
  return ok;
}

static int run_reload(c5_dist *world, const char *dir)
{
  int ok = 0;
  model m = { 0 }, q = { 0 };
  char path[512];
  c5_ckpt_scalar state[3], st2[3];
  char *config = NULL;
  T_OK(c5_checkpoint_name(dir, STEPS, path, sizeof path));
  T_OK(make(&m, 1));
  T_OK(make(&q, 1));
  fill(&m);
  set_state(state);
  fill_sentinel(&q);
  clear_state(st2);
  T_OK(c5_checkpoint_read(world, path, q.p, q.o, st2, 3, &config));
  T_CHECK(same(&m, &q), "reload: parameters, moments or steps differ");
  for (int i = 0; i < 3; i++) T_CHECK(st2[i].value == state[i].value, "state %s", st2[i].name);
  T_CHECK(config && !strcmp(config, CONFIG), "config");
  if (c5_dist_rank(world) == 0) printf("reload at P=%d: identical\n", c5_dist_size(world));
  ok = 1;
fail:
  free(config);
  unmake(&m); unmake(&q);
  return ok;
}

/* The masked-byte model for the default configuration (docs/formats.md); heads: the light heads (4 by
   default; 2 makes another configuration). */
static c5_status make_default(c5_params **p, c5_model **m, int heads)
{
  c5_model_config mc = { .depth = 2, .max_seq_len = 512 };
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;
  a.dim = 64; a.num_heavy_tokens_q = 32; a.num_heavy_tokens_kv = 32; a.num_routed_kv = 1; a.light_dim_head = 16;
  a.light_heads = heads; a.light_window_size = 32; a.heavy_dim_head = 16; a.heavy_heads = 4;
  f.dim = 64; f.num_heavy_tokens = 32; f.light_ff_mult = 0.5; f.heavy_ff_mult = 4;
  mc.block.attn = a;
  mc.block.ff = f;
  c5_status st = c5_params_create(c5_backend_cpu(), p);
  if (st == C5_OK) st = c5_model_create(&mc, *p, m);
  if (st == C5_OK) st = c5_params_alloc(*p);
  if (st == C5_OK) st = c5_params_init(*p, 21);
  return st;
}

/* DIR/ckpt-00000007.h5 of the default configuration, DIR/other.h5 of another (tools/load_checkpoint.py). */
static int run_default(c5_dist *world, const char *dir)
{
  int ok = 0;
  c5_params *p = NULL, *q = NULL;
  c5_model *mp = NULL, *mq = NULL;
  c5_adamw *o = NULL;
  char path[512], other[600];
  c5_adamw_config oc = C5_ADAMW_CONFIG_DEFAULT;
  T_OK(make_default(&p, &mp, 4));
  T_OK(make_default(&q, &mq, 2));
  T_OK(c5_adamw_create(&oc, p, &o));
  c5_adamw_set_steps(o, 7);
  c5_ckpt_scalar st[1] = { { .name = "step", .value = 7 } };
  const char *cfg = "{\"model\": {\"dim\": 64, \"depth\": 2, \"max_seq_len\": 512, \"num_heavy_attn_tokens_q\": 32, "
                    "\"num_heavy_attn_tokens_kv\": 32, \"num_routed_kv\": 1, \"num_heavy_ff_tokens\": 32, "
                    "\"light_dim_head\": 16, \"light_heads\": 4, \"light_window_size\": 32, \"heavy_dim_head\": 16, "
                    "\"heavy_heads\": 4, \"light_ff_mult\": 0.5, \"heavy_ff_mult\": 4, \"router_straight_through\": true, "
                    "\"router_kwargs\": {}, \"multiply_keys_by_score\": false, \"multiply_queries_by_score\": false, "
                    "\"use_null_q_tokens\": true}}";
  T_OK(c5_checkpoint_name(dir, 7, path, sizeof path));
  snprintf(other, sizeof other, "%s/other.h5", dir);
  T_OK(c5_checkpoint_write(world, path, p, o, st, 1, cfg));
  T_OK(c5_checkpoint_write(world, other, q, NULL, st, 1, cfg));
  if (c5_dist_rank(world) == 0) printf("wrote %s (%ld parameters) and %s\n", path, c5_params_count(p), other);
  ok = 1;
fail:
  c5_adamw_destroy(&o);
  c5_model_destroy(&mp);
  c5_model_destroy(&mq);
  c5_params_destroy(&p);
  c5_params_destroy(&q);
  return ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_dist *world = NULL;
  int ok = 0;
  if (argc != 3 || (strcmp(argv[1], "write") && strcmp(argv[1], "reload") && strcmp(argv[1], "default"))) {
    fprintf(stderr, "usage: test_checkpoint write|reload|default DIR\n");
    goto fail;
  }
  T_OK(c5_dist_create(MPI_COMM_WORLD, &world));
  ok = !strcmp(argv[1], "write") ? run_write(world, argv[2]) : !strcmp(argv[1], "reload") ? run_reload(world, argv[2])
                                                                                         : run_default(world, argv[2]);
fail:
  c5_dist_destroy(&world);
  MPI_Finalize();
  return ok ? 0 : 1;
}
