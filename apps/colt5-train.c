/* colt5-train - train the masked-byte CoLT5 model (lib/colt5.h, "the
   masked-byte model") on a text file: masked-span prediction over bytes.

     mpirun -np P colt5-train [--config FILE.json] [options]   (colt5-train --help lists them)

   Ranks: --seq-ranks of them share one sequence (sharded by the model's
   layout unit), the rest of the world is the data-parallel axis
   (c5_dist_create_2d). Each data-parallel group trains on --batch sequences
   per micro-batch, --accum micro-batches per step.

   Data: every rank reads the whole text (a file, or a folder of fortune
   files); the last --val-frac of its bytes is the validation text. A
   sample is seq-len bytes at a uniform start; spans of 1..5 bytes (uniform
   length and start) are masked until --mask-frac of the bytes are, the
   masked bytes replaced by C5_MASK_TOKEN and scored. Every draw comes from a
   counter-based generator keyed by (seed, step, micro-batch, sample), so
   every rank computes the same batches without communication, each keeps
   its layout's slice, and a resume needs only the step.

   Step: gradients zeroed; the masked bytes of the whole step counted first
   (over every rank and micro-batch: the targets are known before the
   forward); each micro-batch's forward and backward with scale 1 / that
   count, so the gradient is the one of the step's mean loss; gradients
   summed over the sequence ranks, then the data-parallel ranks; one AdamW
   step (clipping, schedule).

   Errors (docs/errors.md): every stretch a rank runs alone (options, the
   data, buffers, a batch) is agreed over the world before the next
   collective, so a bad option or file on one rank ends every rank, rank 0
   printing it once. Exit: 0 done (or checkpointed on a signal), 1 an error
   while training or a non-finite step under --on-nonfinite stop, 2 a bad
   option, configuration or data file. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include "colt5_mpi.h"
#include "colt5_io.h"
#include "cli.h"
#include "train_opts.h"

enum { EXIT_DONE = 0, EXIT_ERROR = 1, EXIT_USAGE = 2 };

/* A call whose error ends the function (the library adds its own trace frames). */
#define TRY(call) do { c5_status s_ = (call); if (s_ != C5_OK) return s_; } while (0)

#define MAX_DUMPS 64
#define SPAN_MAX 5   /* masked spans are 1..SPAN_MAX bytes */

/* ---- data ----------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t z);

typedef struct { long off, len; uint64_t key; } record_t;
static int by_key(const void *a, const void *b)
{
  uint64_t x = ((const record_t *)a)->key, y = ((const record_t *)b)->key;
  return (x > y) - (x < y);
}

/* The fortunes (records between lines that are exactly "%") in a fixed pseudo-random order, without the
   separators, so that the validation part (the text's end) samples every file rather than the last one.
   Into a new buffer; the new length. */
static long shuffle_fortunes(uint8_t **text, long len)
{
  long nrec = 0, cap = 1024;
  record_t *rec = malloc((size_t)cap * sizeof *rec);
  uint8_t *out = malloc((size_t)len + 1);
  if (!rec || !out) { free(rec); free(out); return -1; }
  const uint8_t *t = *text;
  long start = 0;
  for (long i = 0; i <= len;) {
    long e = i;
    while (e < len && t[e] != '\n') e++;
    int sep = e - i == 1 && t[i] == '%';
    if (sep || e >= len) {
      long end = sep ? i : len;
      if (end > start) {
        if (nrec == cap) {
          record_t *nr = realloc(rec, (size_t)(cap *= 2) * sizeof *rec);
          if (!nr) { free(rec); free(out); return -1; }
          rec = nr;
        }
        rec[nrec] = (record_t){ start, end - start, mix64((uint64_t)nrec) };
        nrec++;
      }
      start = e + 1;
    }
    i = e + 1;
  }
  qsort(rec, (size_t)nrec, sizeof *rec, by_key);
  long w = 0;
  for (long r = 0; r < nrec; r++) {
    memcpy(out + w, t + rec[r].off, (size_t)rec[r].len);
    w += rec[r].len;
    if (out[w - 1] != '\n') out[w++] = '\n';
  }
  free(rec);
  free(*text);
  *text = out;
  return w;
}

static c5_status append_file(const char *path, uint8_t **buf, long *len, long *cap)
{
  FILE *f = fopen(path, "rb");
  if (!f) return c5_error_raise(C5_ERR_IO, "--data %s: %s", path, strerror(errno));
  for (;;) {
    if (*cap - *len < 65536) {
      long nc = *cap * 2 + 65536;
      uint8_t *nb = realloc(*buf, (size_t)nc);
      if (!nb) { fclose(f); return c5_error_raise(C5_ERR_MEM, "--data %s: out of memory at %ld bytes", path, nc); }
      *buf = nb;
      *cap = nc;
    }
    size_t got = fread(*buf + *len, 1, (size_t)(*cap - *len), f);
    *len += (long)got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  return bad ? c5_error_raise(C5_ERR_IO, "--data %s: read error", path) : C5_OK;
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

/* The text of --data: a file's bytes, or the fortunes of a folder's regular files (not *.dat, not links; read
   in name order) shuffled by a fixed hash, their '%' separator lines dropped. */
static c5_status load_text(const char *path, uint8_t **out, long *len)
{
  struct stat sb;
  long cap = 0;
  *out = NULL;
  *len = 0;
  if (stat(path, &sb)) return c5_error_raise(C5_ERR_IO, "--data %s: %s", path, strerror(errno));
  if (!S_ISDIR(sb.st_mode)) return append_file(path, out, len, &cap);
  struct dirent **ents;
  int ne = scandir(path, &ents, NULL, by_name);
  if (ne < 0) return c5_error_raise(C5_ERR_IO, "--data %s: %s", path, strerror(errno));
  c5_status st = C5_OK;
  for (int i = 0; i < ne; i++) {
    char full[4096];
    const char *nm = ents[i]->d_name;
    size_t l = strlen(nm);
    snprintf(full, sizeof full, "%s/%s", path, nm);
    if (st == C5_OK && nm[0] != '.' && !(l > 4 && !strcmp(nm + l - 4, ".dat")) && !lstat(full, &sb) &&
        S_ISREG(sb.st_mode))
      st = append_file(full, out, len, &cap);
    free(ents[i]);
  }
  free(ents);
  if (st == C5_OK && (*len = shuffle_fortunes(out, *len)) < 0)
    st = c5_error_raise(C5_ERR_MEM, "--data %s: out of memory shuffling the fortunes", path);
  return st;
}

static double unigram_bits(const uint8_t *t, long n)
{
  long h[256] = { 0 };
  for (long i = 0; i < n; i++) h[t[i]]++;
  double e = 0;
  for (int b = 0; b < 256; b++)
    if (h[b]) e -= (double)h[b] / n * log2((double)h[b] / n);
  return e;
}

/* ---- batches: a counter-based generator ----------------------------------------------------- */
/* splitmix64's finalizer; a stream is the hash of its key, draw i the hash of (stream, i). */
static uint64_t mix64(uint64_t z)
{
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

enum { DOMAIN_TRAIN = 1, DOMAIN_VAL = 2, DOMAIN_ROUTE = 3 };
typedef struct { uint64_t key, ctr; } rng_t;

static rng_t rng_at(uint64_t seed, uint64_t domain, uint64_t a, uint64_t b, uint64_t c)
{
  uint64_t k = mix64(mix64(mix64(mix64(mix64(seed) ^ domain) ^ a) ^ b) ^ c);
  return (rng_t){ k, 0 };
}

static uint64_t rng_next(rng_t *r) { return mix64(r->key ^ mix64(++r->ctr)); }
/* Uniform in [0, m) (m > 0): the high word of a 64x64 product. */
static long rng_below(rng_t *r, long m) { return (long)(((unsigned __int128)rng_next(r) * (uint64_t)m) >> 64); }

/* One sample: n bytes at a uniform start of text, masked in spans until target bytes are. */
static void make_sample(rng_t *r, const uint8_t *text, long len, long n, long target, uint8_t *seq, uint8_t *masked)
{
  long start = rng_below(r, len - n + 1), nm = 0;
  memcpy(seq, text + start, (size_t)n);
  memset(masked, 0, (size_t)n);
  while (nm < target) {
    long L = 1 + rng_below(r, SPAN_MAX < n ? SPAN_MAX : n), s = rng_below(r, n - L + 1);
    for (long j = s; j < s + L; j++) { nm += !masked[j]; masked[j] = 1; }
  }
}

/* ---- the run -------------------------------------------------------------------------- */

typedef struct {
  opts_t o;
  char *cfg_json;
  c5_dist *world, *seq, *dp;
  int rank, size;
  c5_model_config mcfg;
  cli_device dev;              /* --device: its backend (the CPU's, or a GPU's, owned) holds the parameters, the
                                  optimizer and the model's caches */
  c5_real *hbuf;               /* host copies of device tensors (diagnostics, the validation passage) */
  long hbuf_len;
  c5_params *p;
  c5_model *m;
  c5_model_cache *cache;
  c5_adamw *opt;
  c5_layout lay;
  uint8_t *text;
  long text_len, train_len, val_len, target;
  double unigram;
  int32_t *tokens, *targets;   /* [accum][batch][n_local] */
  uint8_t *seqbuf, *maskbuf;   /* [n] */
  long *pred;                  /* [n] */
  long dumps[MAX_DUMPS];
  int ndumps;
  FILE *log;
  long skipped;
} run_t;

static volatile sig_atomic_t got_signal;
static void on_signal(int sig) { (void)sig; got_signal = 1; }

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Micro-batch mb's tokens and targets (this rank's slice of its group's samples) from the stream (domain, a,
   b); *count = the masked bytes of the slice. Sample i of the group is global sample dp_rank * batch + i, so
   every group draws its own. */
static long make_batch(run_t *r, int domain, long a, long b, int32_t *tok, int32_t *tgt)
{
  const opts_t *o = &r->o;
  long n = o->seq_len, nl = r->lay.n_local, off = r->lay.offset, count = 0;
  const uint8_t *text = domain == DOMAIN_VAL ? r->text + r->train_len : r->text;
  long len = domain == DOMAIN_VAL ? r->val_len : r->train_len;
  for (long i = 0; i < o->batch; i++) {
    rng_t g = rng_at((uint64_t)o->seed, (uint64_t)domain, (uint64_t)a, (uint64_t)b,
                     (uint64_t)(c5_dist_rank(r->dp) * o->batch + i));
    make_sample(&g, text, len, n, r->target, r->seqbuf, r->maskbuf);
    for (long j = 0; j < nl; j++) {
      int mk = r->maskbuf[off + j];
      tok[i * nl + j] = mk ? C5_MASK_TOKEN : r->seqbuf[off + j];
      tgt[i * nl + j] = mk ? r->seqbuf[off + j] : -1;
      count += mk;
    }
  }
  return count;
}

/* Routed tokens held per rank in one routing: max over the sequence ranks / their mean. Collective on seq. */
static c5_status balance(const c5_dist *d, const c5_routing *rt, double *out)
{
  long v[2] = { 0, 0 };
  for (long i = 0; rt && rt->routed && i < rt->rows; i++) v[0] += rt->count[i];
  v[1] = v[0];
  c5_status st = c5_dist_reduce_long(d, &v[0], 1, C5_REDUCE_MAX);
  if (st == C5_OK) st = c5_dist_reduce_long(d, &v[1], 1, C5_REDUCE_SUM);
  *out = v[1] > 0 ? (double)v[0] * c5_dist_size(d) / v[1] : 1.0;
  return st;
}

/* The random routes' seed of one forward (--random-route): the reference draws new scores on every
   forward, so each (domain, step, micro-batch) gets its own, and each data-parallel group too (its ranks
   share it: a sharded forward needs one seed). */
static uint64_t route_seed(const run_t *r, uint64_t domain, long step, long mb)
{
  rng_t g = rng_at((uint64_t)r->o.seed, DOMAIN_ROUTE, domain, (uint64_t)step,
                   (uint64_t)mb * 65536u + (uint64_t)c5_dist_rank(r->dp));
  return rng_next(&g);
}

/* Forward over the validation batches (fixed by the seed), summed over the data-parallel groups: bits per
   masked byte. Collective on the world. */
static c5_status validate(run_t *r, double *bits)
{
  const opts_t *o = &r->o;
  double v[2] = { 0, 0 };
  c5_status st = C5_OK;
  for (long k = 0; st == C5_OK && k < o->val_batches; k++) {
    double ls = 0;
    long cnt = 0;
    make_batch(r, DOMAIN_VAL, k, 0, r->tokens, r->targets);
    if (o->random_route) st = c5_model_set_random_seed(r->m, route_seed(r, DOMAIN_VAL, 0, k));
    if (st != C5_OK) break;
    st = c5_model_forward(r->m, r->seq, &r->lay, o->batch, r->tokens, r->targets, NULL, r->cache, &ls, &cnt);
    v[0] += ls;
    v[1] += (double)cnt;
  }
  st = c5_dist_agree(r->world, st);
  if (st == C5_OK) st = c5_dist_reduce_double(r->dp, v, 2, C5_REDUCE_SUM);
  *bits = v[0] / v[1] / log(2.0);
  return st;
}

static c5_status ckpt_path(const run_t *r, long step, char *path, size_t len)
{
  int l = snprintf(path, len, "%s/ckpt-%ld.h5", r->o.ckpt_dir, step);
  return l < 0 || (size_t)l >= len ? c5_error_raise(C5_ERR_ARG, "--ckpt-dir %s: path too long", r->o.ckpt_dir) : C5_OK;
}

/* Collective on the world. */
static c5_status checkpoint(run_t *r, long step)
{
  char path[4096];
  c5_status st = ckpt_path(r, step, path, sizeof path);
  if (st == C5_OK && mkdir(r->o.ckpt_dir, 0777) && errno != EEXIST)
    st = c5_error_raise(C5_ERR_IO, "--ckpt-dir %s: %s", r->o.ckpt_dir, strerror(errno));
  st = c5_dist_agree(r->world, st);
  c5_ckpt_scalar state[4] = { { "step", step }, { "seed", r->o.seed },
                              { "data_position", step * r->o.accum * r->o.batch * c5_dist_size(r->dp) },
                              { "skipped", r->skipped } };
  if (st == C5_OK) st = c5_checkpoint_write(r->world, path, r->p, r->opt, state, 4, r->cfg_json);
  if (st == C5_OK && r->o.keep > 0) st = c5_checkpoint_prune(r->world, r->o.ckpt_dir, (int)r->o.keep);
  if (st == C5_OK && r->rank == 0) printf("checkpoint %s\n", path);
  return st;
}

/* n elements at x (memory of the run's backend) readable here: x itself on the CPU, else a copy in r->hbuf
   (valid until the next call). NULL when the copy fails (diagnostics then say nothing more). */
static const c5_real *host_view(run_t *r, const c5_real *x, long n)
{
  if (c5_backend_get_kind(r->dev.be) == C5_BACKEND_CPU || !x) return x;
  if (n > r->hbuf_len) {
    c5_real *b = realloc(r->hbuf, (size_t)(n > 0 ? n : 1) * sizeof *b);
    if (!b) return NULL;
    r->hbuf = b;
    r->hbuf_len = n;
  }
  return c5_backend_memcpy(r->dev.be, r->hbuf, x, (size_t)n * sizeof *x) == C5_OK ? r->hbuf : NULL;
}

/* The first parameter whose gradient holds a NaN or Inf ("" when none): where a non-finite step came from. */
static void first_nonfinite_grad(run_t *r, char *buf, size_t len)
{
  const c5_params *p = r->p;
  buf[0] = 0;
  for (long i = 0; i < c5_params_count(p); i++) {
    const c5_real *g = host_view(r, c5_params_grad(p, i), c5_params_numel(p, i));
    for (long e = 0; g && e < c5_params_numel(p, i); e++)
      if (!isfinite(g[e])) {
        snprintf(buf, len, "; first non-finite gradient: %s[%ld] = %g", c5_params_name(p, i), e, (double)g[e]);
        return;
      }
  }
}

/* Where a non-finite loss (or a library finite check) first appears in this rank's last forward: the first
   layer input (layer = depth: the final norm's), else the logits, and the first parameter whose value is not
   finite. (After a forward that failed at layer l, the inputs past l are the previous step's: the scan stops at
   the first non-finite one, which is this step's unless an earlier step was skipped.) */
static void first_nonfinite_forward(run_t *r, char *buf, size_t len)
{
  const long per = r->o.batch * r->lay.n_local;
  buf[0] = 0;
  for (int l = 0; l <= r->mcfg.depth + 1 && !buf[0]; l++) {
    const long row = l <= r->mcfg.depth ? r->o.dim : C5_NUM_BYTES;
    const c5_real *x = host_view(r, l <= r->mcfg.depth ? c5_model_layer_input(r->cache, l) : c5_model_logits(r->cache),
                                 per * row);
    for (long e = 0; x && e < per * row; e++)
      if (!isfinite(x[e])) {
        char what[64];
        if (l < r->mcfg.depth) snprintf(what, sizeof what, "input of layer %d", l);
        else snprintf(what, sizeof what, "%s", l == r->mcfg.depth ? "input of the final norm" : "logits");
        snprintf(buf, len, "; first non-finite activation: %s [batch row %ld, position %ld, %ld] = %g on rank %d",
                 what, e / row / r->lay.n_local, r->lay.offset + e / row % r->lay.n_local, e % row, (double)x[e],
                 r->rank);
        break;
      }
  }
  for (long i = 0; i < c5_params_count(r->p); i++) {
    const c5_real *v = host_view(r, c5_params_value(r->p, i), c5_params_numel(r->p, i));
    for (long e = 0; v && e < c5_params_numel(r->p, i); e++)
      if (!isfinite(v[e])) {
        size_t u = strlen(buf);
        snprintf(buf + u, len - u, "; first non-finite parameter: %s[%ld] = %g", c5_params_name(r->p, i), e,
                 (double)v[e]);
        return;
      }
  }
}

/* Test-only (tests/unit/test_faults.sh): C5_TEST_NAN_STEP=S poisons, at step S, element 0 of the gradient of
   parameter C5_TEST_NAN_GRAD on rank 0 (after the backward: the sums spread it) or of the value of parameter
   C5_TEST_NAN_VALUE on every rank (before the forward: values are replicated). Unset (always, outside that
   test): nothing. */
static void test_poison(const run_t *r, long step, const char *which)
{
  const char *e = getenv("C5_TEST_NAN_STEP"), *name = getenv(which);
  long i;
  int grad = !strcmp(which, "C5_TEST_NAN_GRAD");
  if (!e || !name || (grad && r->rank != 0) || strtol(e, NULL, 10) != step || c5_params_find(r->p, name, &i) != C5_OK) return;
  c5_real *x = grad ? c5_params_grad(r->p, i) : c5_params_value(r->p, i), nan = NAN;
  (void)c5_backend_memcpy(r->dev.be, x, &nan, sizeof nan);   /* the backend's memory: a device's too */
}

typedef struct {
  double loss, grad_norm, lr, bal[3];
  long count;
  int nonfinite;
  char why[1024];
} step_out;

/* One optimizer step. Collective on the world. A non-finite loss or gradient norm (or a library finite check,
   C5_ERR_NUMERIC) sets out->nonfinite and returns C5_OK with nothing updated; other errors return. */
static c5_status train_step(run_t *r, long step, step_out *out)
{
  const opts_t *o = &r->o;
  long nl = r->lay.n_local, per = o->batch * nl, count = 0;
  memset(out, 0, sizeof *out);
  c5_params_zero_grad(r->p);
  for (long mb = 0; mb < o->accum; mb++) count += make_batch(r, DOMAIN_TRAIN, step, mb, r->tokens + mb * per, r->targets + mb * per);
  c5_status st = c5_dist_reduce_long(r->world, &count, 1, C5_REDUCE_SUM);
  if (st != C5_OK) return st;
  out->count = count;
  double loss = 0;
  int dump = 0;
  for (int i = 0; i < r->ndumps; i++) dump |= r->dumps[i] == step;
  test_poison(r, step, "C5_TEST_NAN_VALUE");
  for (long mb = 0; st == C5_OK && mb < o->accum; mb++) {
    double ls = 0;
    if (o->random_route) st = c5_model_set_random_seed(r->m, route_seed(r, DOMAIN_TRAIN, step, mb));
    if (st == C5_OK)
      st = c5_model_forward(r->m, r->seq, &r->lay, o->batch, r->tokens + mb * per, r->targets + mb * per, NULL,
                            r->cache, &ls, NULL);
    if (st == C5_OK && dump && mb == 0 && c5_dist_rank(r->dp) == 0)
      st = c5_model_dump_activations(r->m, r->seq, &r->lay, r->cache, o->dump_file, step);
    if (st == C5_OK) st = c5_model_backward(r->m, r->seq, r->cache, 1.0 / (double)count);
    loss += ls;
  }
  if (st == C5_OK) test_poison(r, step, "C5_TEST_NAN_GRAD");
  st = c5_dist_agree(r->world, st);
  if (st == C5_ERR_NUMERIC) {
    out->nonfinite = 1;
    snprintf(out->why, sizeof out->why, "%.*s", (int)strcspn(c5_last_error(), "\n"), c5_last_error());
    first_nonfinite_forward(r, out->why + strlen(out->why), sizeof out->why - strlen(out->why));
    out->loss = NAN;
    return C5_OK;
  }
  if (st == C5_OK) {
    const c5_block_cache *bc = c5_model_block_cache(r->cache, 0);
    st = balance(r->seq, c5_routed_attn_routing_q(c5_block_attn_cache(bc)), &out->bal[0]);
    if (st == C5_OK) st = balance(r->seq, c5_routed_attn_routing_kv(c5_block_attn_cache(bc)), &out->bal[1]);
    if (st == C5_OK) st = balance(r->seq, c5_routed_ff_routing(c5_block_ff_cache(bc)), &out->bal[2]);
  }
  if (st == C5_OK) st = c5_dist_reduce_double(r->dp, &loss, 1, C5_REDUCE_SUM);
  if (st != C5_OK) return st;
  out->loss = loss / (double)count;
  if (!isfinite(out->loss)) {
    out->nonfinite = 1;
    snprintf(out->why, sizeof out->why, "loss %g", out->loss);
    first_nonfinite_forward(r, out->why + strlen(out->why), sizeof out->why - strlen(out->why));
    first_nonfinite_grad(r, out->why + strlen(out->why), sizeof out->why - strlen(out->why));
    return C5_OK;
  }
  /* a one-rank axis has nothing to sum: skipped, so that a device run does not set up a communicator (NCCL's,
     with one GPU per rank) for it */
  if (c5_dist_size(r->seq) > 1) st = c5_params_allreduce_grad(r->p, r->seq);
  if (st == C5_OK && c5_dist_size(r->dp) > 1) st = c5_params_allreduce_grad(r->p, r->dp);
  if (st != C5_OK) return st;
  /* every rank holds the same gradients, so the same verdict; agreed all the same */
  st = c5_dist_agree(r->world, c5_adamw_step(r->opt, &out->grad_norm, &out->lr));
  if (st == C5_ERR_NUMERIC) {
    out->nonfinite = 1;
    /* the library's message without its trace lines */
    snprintf(out->why, sizeof out->why, "gradient norm not finite (%.*s)", (int)strcspn(c5_last_error(), "\n"),
             c5_last_error());
    first_nonfinite_grad(r, out->why + strlen(out->why), sizeof out->why - strlen(out->why));
    return C5_OK;
  }
  return st;
}

static void fmt_eta(double s, char *buf, size_t len)
{
  long t = (long)(s + 0.5);
  if (t >= 3600) snprintf(buf, len, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
}

static char show(int b) { return b == '\n' ? '|' : b >= 32 && b < 127 ? (char)b : '.'; }

/* Validation sample 0 of group 0 with its masked bytes as '_', the model's argmax filling, and the truth.
   Collective on the world. */
static c5_status passage(run_t *r)
{
  const opts_t *o = &r->o;
  long n = o->seq_len, nl = r->lay.n_local, off = r->lay.offset;
  make_batch(r, DOMAIN_VAL, 0, 0, r->tokens, r->targets);
  c5_status st = c5_model_forward(r->m, r->seq, &r->lay, o->batch, r->tokens, r->targets, NULL, r->cache, NULL, NULL);
  if (st != C5_OK) return st;
  const c5_real *lg = host_view(r, c5_model_logits(r->cache), nl * C5_NUM_BYTES);   /* sample 0's rows */
  /* agreed: a rank that failed alone must not leave the others in the sum below */
  st = c5_dist_agree(r->world, lg ? C5_OK : c5_error_raise(C5_ERR_MEM, "validation passage: cannot copy rank %d's "
                                                            "logits [%ld, %d] to the host", r->rank, nl, C5_NUM_BYTES));
  if (st != C5_OK) return st;
  memset(r->pred, 0, (size_t)n * sizeof *r->pred);
  for (long j = 0; j < nl; j++) {
    if (r->targets[j] < 0) continue;
    int best = 0;
    for (int b = 1; b < C5_NUM_BYTES; b++)
      if (lg[j * C5_NUM_BYTES + b] > lg[j * C5_NUM_BYTES + best]) best = b;
    r->pred[off + j] = best + 1;   /* 0: not masked */
  }
  st = c5_dist_reduce_long(r->seq, r->pred, n, C5_REDUCE_SUM);
  if (st != C5_OK || r->rank != 0) return st;
  /* make_batch left sample batch-1 in seqbuf: redraw sample 0 of group 0 (rank 0's) */
  rng_t g = rng_at((uint64_t)o->seed, DOMAIN_VAL, 0, 0, 0);
  make_sample(&g, r->text + r->train_len, r->val_len, n, r->target, r->seqbuf, r->maskbuf);
  long right = 0, masked = 0, show_n = n < 320 ? n : 320;
  for (long j = 0; j < n; j++)
    if (r->maskbuf[j]) { masked++; right += r->pred[j] - 1 == r->seqbuf[j]; }
  printf("validation passage (first %ld of %ld bytes; '|' is a newline): %ld of %ld masked bytes right (%.1f%%)\n",
         show_n, n, right, masked, 100.0 * right / (masked ? masked : 1));
  for (long c0 = 0; c0 < show_n; c0 += 80) {
    long c1 = c0 + 80 < show_n ? c0 + 80 : show_n;
    char a[81], b[81], t[81];
    for (long j = c0; j < c1; j++) {
      t[j - c0] = show(r->seqbuf[j]);
      a[j - c0] = r->maskbuf[j] ? '_' : show(r->seqbuf[j]);
      b[j - c0] = r->maskbuf[j] ? show((int)r->pred[j] - 1) : show(r->seqbuf[j]);
    }
    a[c1 - c0] = b[c1 - c0] = t[c1 - c0] = 0;
    printf("  masked: %s\n  filled: %s\n  truth:  %s\n", a, b, t);
  }
  return C5_OK;
}

/* Everything a rank builds alone before training: the data, the model, the optimizer, the buffers. Agreed by
   the caller. */
static c5_status setup(run_t *r)
{
  opts_t *o = &r->o;
  c5_status st = C5_OK;
  long n = o->seq_len;
  if (o->dump_steps[0]) {
    r->ndumps = cli_parse_list(o->dump_steps, 1, 1000000000, r->dumps, MAX_DUMPS);
    if (r->ndumps < 0)
      return c5_error_raise(C5_ERR_ARG, "--dump-activations %s: expected a comma list of at most %d steps from 1 to 1e9",
                            o->dump_steps, MAX_DUMPS);
  }
  TRY(load_text(o->data, &r->text, &r->text_len));
  r->val_len = (long)(r->text_len * o->val_frac);
  r->train_len = r->text_len - r->val_len;
  if (r->val_len < n || r->train_len < n)
    return c5_error_raise(C5_ERR_ARG, "--data %s: %ld bytes, too short: train %ld and validation %ld bytes "
                          "(--val-frac %g) must each hold a sequence of --seq-len %ld", o->data, r->text_len,
                          r->train_len, r->val_len, o->val_frac, n);
  r->unigram = unigram_bits(r->text, r->train_len);
  r->target = (long)ceil(o->mask_frac * n);
  train_opts_model_config(o, &r->mcfg);
  long unit = 0;
  TRY(cli_device_open(r->o.device, r->o.matmul, &r->dev));   /* cli.h: which GPU, and how the ranks share it */
  TRY(c5_params_create(r->dev.be, &r->p));
  TRY(c5_model_create(&r->mcfg, r->p, &r->m));
  TRY(c5_params_alloc(r->p));
  TRY(c5_params_init(r->p, (uint64_t)o->seed));
  TRY(c5_model_layout_unit(&r->mcfg, &unit));
  TRY(c5_layout_compute(r->seq, n, unit, &r->lay));
  TRY(c5_model_cache_create(r->m, o->batch, r->lay.n_local, &r->cache));
  c5_adamw_config ac = C5_ADAMW_CONFIG_DEFAULT;
  ac.lr = o->lr;
  ac.lr_min = o->lr_min;
  ac.warmup_steps = o->warmup;
  ac.total_steps = o->steps;
  ac.weight_decay = o->weight_decay;
  ac.clip_norm = o->clip;
  TRY(c5_adamw_create(&ac, r->p, &r->opt));
  size_t tot = (size_t)(o->accum * o->batch * r->lay.n_local);
  r->tokens = malloc(tot * sizeof *r->tokens);
  r->targets = malloc(tot * sizeof *r->targets);
  r->seqbuf = malloc((size_t)n);
  r->maskbuf = malloc((size_t)n);
  r->pred = malloc((size_t)n * sizeof *r->pred);
  if (!r->tokens || !r->targets || !r->seqbuf || !r->maskbuf || !r->pred)
    return c5_error_raise(C5_ERR_MEM, "out of memory for %ld x %ld x %ld tokens", o->accum, o->batch, r->lay.n_local);
  if (r->rank == 0 && *o->log) {
    r->log = fopen(o->log, "a");
    if (!r->log) return c5_error_raise(C5_ERR_IO, "--log %s: %s", o->log, strerror(errno));
    if (ftell(r->log) == 0) {
      fprintf(r->log, "# colt5-train %s\n# unigram_bits_per_byte=%.6f\n", r->cfg_json, r->unigram);
      fprintf(r->log, "step,loss,bpb,lr,grad_norm,tokens_per_s,val_bpb,balance_q,balance_kv,balance_ff,skipped,elapsed_s\n");
    }
  }
  return st;
}

static void teardown(run_t *r)
{
  if (r->log) fclose(r->log);
  c5_adamw_destroy(&r->opt);
  c5_model_cache_destroy(&r->cache);
  c5_model_destroy(&r->m);
  c5_params_destroy(&r->p);
  free(r->hbuf);
  free(r->text); free(r->tokens); free(r->targets); free(r->seqbuf); free(r->maskbuf); free(r->pred);
  free(r->cfg_json);
  train_opts_free(&r->o);
  c5_dist_destroy(&r->seq);
  c5_dist_destroy(&r->dp);
  c5_dist_destroy(&r->world);
  cli_device_close(&r->dev);   /* after the communicators: their NCCL ran on its stream */
}

static long fnv1a(const char *s)
{
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
  return (long)(h >> 1);
}

/* Rank 0 removes the ckpt-*.h5.tmp files of dir: writes a killed job left (c5_checkpoint_latest never takes
   one; removed so they do not pile up). */
static void remove_stale_tmp(const char *dir)
{
  DIR *dp = opendir(dir);
  if (!dp) return;
  for (struct dirent *de; (de = readdir(dp)) != NULL;) {
    size_t l = strlen(de->d_name);
    if (strncmp(de->d_name, "ckpt-", 5) || l < 8 || strcmp(de->d_name + l - 7, ".h5.tmp")) continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    if (unlink(path) == 0) printf("resume: removed %s (an interrupted checkpoint write)\n", path);
    else fprintf(stderr, "colt5-train: resume: cannot remove %s (%s)\n", path, strerror(errno));
  }
  closedir(dp);
}

/* --resume: the latest checkpoint of --ckpt-dir into the model and optimizer; *step its step (0 without one).
   Collective on the world. */
static c5_status resume(run_t *r, long *step)
{
  char path[4096];
  *step = 0;
  c5_status st = c5_dist_agree(r->world, c5_checkpoint_latest(r->o.ckpt_dir, path, sizeof path));
  if (st != C5_OK) return st;
  if (r->rank == 0) remove_stale_tmp(r->o.ckpt_dir);
  if (!path[0]) {
    if (r->rank == 0) printf("resume: no checkpoint in %s, starting at step 0\n", r->o.ckpt_dir);
    return C5_OK;
  }
  c5_ckpt_scalar state[4] = { { "step", 0 }, { "seed", 0 }, { "data_position", 0 }, { "skipped", 0 } };
  TRY(c5_checkpoint_read(r->world, path, r->p, r->opt, state, 4, NULL));
  if (state[1].value != r->o.seed)
    st = c5_error_raise(C5_ERR_ARG, "--resume: %s was written with --seed %lld, this run has --seed %ld", path,
                        (long long)state[1].value, r->o.seed);
  st = c5_dist_agree(r->world, st);
  if (st != C5_OK) return st;
  *step = (long)state[0].value;
  r->skipped = (long)state[3].value;
  if (r->rank == 0) printf("resume: %s, step %ld\n", path, *step);
  return C5_OK;
}

/* The training loop from step start+1 to --steps (or a signal, or --stop-after). Collective on the world. */
static c5_status train(run_t *r, long start, int *stopped)
{
  const opts_t *o = &r->o;
  long last_ckpt = start, step = start, tokens_per_step = o->accum * o->batch * c5_dist_size(r->dp) * o->seq_len;
  double t_run = now(), t_log = t_run, t_step, val = NAN;
  long steps_since_log = 0;
  c5_status st = C5_OK;
  *stopped = 0;
  while (step < o->steps) {
    long flag = got_signal;
    TRY(c5_dist_reduce_long(r->world, &flag, 1, C5_REDUCE_MAX));
    if (flag) {
      if (*o->ckpt_dir) TRY(checkpoint(r, step));
      if (r->rank == 0)
        printf(*o->ckpt_dir ? "checkpointed at step %ld on signal\n" : "stopped at step %ld on signal (no --ckpt-dir)\n", step);
      *stopped = 1;
      return C5_OK;
    }
    step++;
    t_step = now();
    step_out so;
    TRY(train_step(r, step, &so));
    double dt = now() - t_step;
    if (so.nonfinite) {
      if (r->rank == 0) fprintf(stderr, "colt5-train: step %ld: non-finite: %s\n", step, so.why);
      if (!strcmp(o->on_nonfinite, "stop"))
        return c5_error_raise(C5_ERR_NUMERIC, "step %ld: non-finite step (--on-nonfinite stop)", step);
      r->skipped++;
      c5_params_zero_grad(r->p);
    }
    val = NAN;
    if (o->val_every > 0 && step % o->val_every == 0) TRY(validate(r, &val));
    if (r->log) {
      fprintf(r->log, "%ld,%.17g,%.17g,%.17g,%.17g,%.1f,", step, so.loss, so.loss / log(2.0), so.lr, so.grad_norm,
              tokens_per_step / dt);
      if (isfinite(val)) fprintf(r->log, "%.17g", val);
      fprintf(r->log, ",%.4f,%.4f,%.4f,%ld,%.3f\n", so.bal[0], so.bal[1], so.bal[2], r->skipped, now() - t_run);
      fflush(r->log);
    }
    steps_since_log++;
    if (r->rank == 0 && (step % o->log_every == 0 || step == o->steps || isfinite(val))) {
      double tn = now(), rate = tokens_per_step * steps_since_log / (tn - t_log);
      char eta[32];
      fmt_eta((tn - t_run) / (step - start) * (o->steps - step), eta, sizeof eta);
      printf("step %6ld/%ld  loss %.4f  bits/masked byte %.3f  lr %.2e  grad norm %.3f  tokens/s %.0f  eta %s  "
             "routed max/mean q %.2f kv %.2f ff %.2f", step, o->steps, so.loss, so.loss / log(2.0), so.lr,
             so.grad_norm, rate, eta, so.bal[0], so.bal[1], so.bal[2]);
      if (r->skipped) printf("  skipped %ld", r->skipped);
      if (isfinite(val)) printf("  | validation %.3f bits/masked byte (%.2f x unigram)", val, val / r->unigram);
      printf("\n");
      fflush(stdout);
      t_log = tn;
      steps_since_log = 0;
    }
    if (*o->ckpt_dir && o->ckpt_every > 0 && step % o->ckpt_every == 0) {
      TRY(checkpoint(r, step));
      last_ckpt = step;
    }
    if (o->stop_after > 0 && step - start >= o->stop_after && step < o->steps) {
      if (last_ckpt != step) TRY(checkpoint(r, step));
      if (r->rank == 0) printf("stopped after step %ld (--stop-after %ld)\n", step, o->stop_after);
      *stopped = 1;
      return C5_OK;
    }
  }
  if (*o->ckpt_dir && last_ckpt != step) TRY(checkpoint(r, step));
  if (r->rank == 0) {
    double t = now() - t_run;
    printf("trained %ld steps in %.1f s (%.0f tokens/s)\n", step - start, t, tokens_per_step * (step - start) / t);
  }
  return st;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  run_t run = { 0 }, *r = &run;
  int help = 0, rc = EXIT_DONE;
  if (c5_dist_create(MPI_COMM_WORLD, &r->world) != C5_OK) {   /* agreed inside: every rank says it */
    fprintf(stderr, "colt5-train: %s\n", c5_last_error());
    MPI_Finalize();
    return EXIT_USAGE;
  }
  r->rank = c5_dist_rank(r->world);
  r->size = c5_dist_size(r->world);
  /* each rank parses its own command line (mpirun may give them different ones): agreed below */
  c5_status st = train_opts_init(&r->o);
  if (st == C5_OK) st = train_opts_parse(argc, argv, &r->o, &help);
  st = c5_dist_agree(r->world, st);
  int syntax = st != C5_OK;
  if (st == C5_OK) st = c5_dist_agree_long(r->world, "colt5-train: --help", help);
  if (st == C5_OK && !help) {
    if (!r->o.seq_ranks) r->o.seq_ranks = r->size;
    if (r->size % r->o.seq_ranks)
      st = c5_error_raise(C5_ERR_ARG, "--seq-ranks %ld: does not divide the %d ranks", r->o.seq_ranks, r->size);
    r->cfg_json = train_opts_json(&r->o);
    if (!r->cfg_json && st == C5_OK) st = c5_error_raise(C5_ERR_MEM, "out of memory for the configuration");
    st = c5_dist_agree(r->world, st);
    if (st == C5_OK) st = c5_dist_agree_long(r->world, "colt5-train: the options (a hash of their JSON)", fnv1a(r->cfg_json));
  }
  if (st != C5_OK || help) {
    if (r->rank == 0) {
      if (st != C5_OK) fprintf(stderr, "colt5-train: %s\n", c5_last_error());
      if (help == 2 && st == C5_OK) printf("colt5-train %s\n", colt5_build_info());
      else if (help && st == C5_OK) train_opts_usage(stdout);
      else if (syntax) fprintf(stderr, "colt5-train --help lists the options\n");
    }
    teardown(r);
    MPI_Finalize();
    return st == C5_OK ? EXIT_DONE : EXIT_USAGE;
  }
  const opts_t *o = &r->o;
  if (o->threads > 0) omp_set_num_threads((int)o->threads);
  st = c5_dist_create_2d(MPI_COMM_WORLD, (int)o->seq_ranks, &r->seq, &r->dp);
  if (st == C5_OK) st = c5_dist_agree(r->world, setup(r));
  if (st != C5_OK) {
    if (r->rank == 0) fprintf(stderr, "colt5-train: %s\n", c5_last_error());
    teardown(r);
    MPI_Finalize();
    return EXIT_USAGE;
  }
  struct sigaction sa = { .sa_handler = on_signal };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  if (r->rank == 0) {
    if (c5_blas_warning()) fprintf(stderr, "colt5-train: %s\n", c5_blas_warning());
    char dev[256];
    cli_device_describe(&r->dev, r->size, dev, sizeof dev);
    printf("colt5-train: %d ranks = %d per sequence x %d data-parallel, %d threads each, precision %s, BLAS core %s, "
           "device %s\n", r->size, c5_dist_size(r->seq), c5_dist_size(r->dp), omp_get_max_threads(), C5_REAL_NAME,
           c5_blas_core(), dev);
    printf("data: %s: %ld bytes, train %ld, validation %ld; unigram entropy of the train text %.4f bits/byte\n",
           o->data, r->text_len, r->train_len, r->val_len, r->unigram);
    printf("model: dim %ld, depth %ld, seq-len %ld, heavy tokens q %ld kv %ld ff %ld, window %ld, %ld parameters%s\n",
           o->dim, o->depth, o->seq_len, o->heavy_q, o->heavy_kv, o->heavy_ff, o->window, c5_params_total(r->p),
           o->random_route ? ", random routes (negative control)" : "");
    printf("train: %ld steps of %ld sequences (%ld x %ld micro-batches x %d groups), %ld masked of %ld bytes each; "
           "lr %g -> %g, warmup %ld\n", o->steps, o->batch * o->accum * c5_dist_size(r->dp), o->batch, o->accum,
           c5_dist_size(r->dp), r->target, o->seq_len, o->lr, o->lr_min, o->warmup);
    fflush(stdout);
  }
  long start = 0;
  int stopped = 0;
  if (o->resume) st = resume(r, &start);
  if (st == C5_OK) st = train(r, start, &stopped);
  double val = NAN;
  if (st == C5_OK && !stopped) st = validate(r, &val);
  if (st == C5_OK && !stopped && r->rank == 0)
    printf("final validation: %.4f bits per masked byte = %.3f x the unigram entropy (%.4f bits/byte)\n", val,
           val / r->unigram, r->unigram);
  if (st == C5_OK && !stopped) st = passage(r);
  if (st != C5_OK) {
    if (r->rank == 0) fprintf(stderr, "colt5-train: %s: %s\n", c5_status_string(st), c5_last_error());
    rc = EXIT_ERROR;
  }
  teardown(r);
  MPI_Finalize();
  return rc;
}
