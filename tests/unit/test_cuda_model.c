/* test_cuda_model.c - the masked-byte model and its optimizer on the CUDA
   backend against the CPU backend at one rank. The same parameters (drawn
   by c5_params_init on each backend: the draws must be the same bits) and
   the same batch (host tokens and targets, which the model uploads). One
   line per quantity:
   - init: every parameter's initial values, bit for bit;
   - the loss sum (relative error) and the scored count (identical);
   - every parameter gradient, norm-wise (double build 1e-10, single 1e-4:
     the model is a chain of blocks whose tolerances test_cuda_block holds);
   - sumsq_dev (the optimizer's per-parameter sums of squares, left on the
     device) on the GPU's gradients against the CPU's sumsq of the same
     values: bit for bit;
   - three training steps (zero_grad, forward, backward at 1/count, AdamW
     with clipping and warm-up) on each: each step's loss and gradient norm,
     then every parameter and both moments norm-wise (same tolerances: the
     steps are elementwise in double on both devices);
   - a checkpoint written from the GPU run read back into a CPU table: the
     values and moments bit for bit (the file passes through host buffers);
   - an activation dump of the GPU run's last forward: its logits dataset
     against the CPU run's logits, norm-wise.
   Exits 77 without a GPU. */
#include <string.h>
#include <unistd.h>
#include <hdf5.h>
#include "cuda_util.h"
#include "colt5_io.h"
#include "backend.h"

#if C5_USE_DOUBLE
#define TOL 1e-10
#else
#define TOL 1e-4
#endif

#define BATCH 2
#define SEQ 100
#define STEPS 3

static int all_ok = 1;

static void report(const char *what, const char *name, double e, double tol)
{
  int pass = e <= tol;   /* NaN fails */
  printf("model %-8s %-48s norm-wise error %.3e (tol %.0e) %s\n", what, name, e, tol, pass ? "PASS" : "FAIL");
  all_ok &= pass;
}

static double err(const c5_real *a, const c5_real *b, long n)
{
  double *da = malloc((size_t)n * sizeof *da), *db = malloc((size_t)n * sizeof *db);
  if (!da || !db) { free(da); free(db); return NAN; }
  t_to_double(a, n, da);
  t_to_double(b, n, db);
  double e = t_normwise(da, db, n);
  free(da); free(db);
  return e;
}

static c5_model_config config(void)
{
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;
  a.dim = 32; a.num_heavy_tokens_q = 20; a.num_heavy_tokens_kv = 24;
  a.light_dim_head = 16; a.light_heads = 2; a.light_window_size = 32;
  a.heavy_dim_head = 16; a.heavy_heads = 2; a.num_routed_kv = 1;
  a.router.straight_through = 1;
  f.dim = 32; f.num_heavy_tokens = 30;
  f.router.straight_through = 1;
  c5_model_config m = { .depth = 2, .max_seq_len = 128, .pos_emb_zero_init = 0 };
  m.block.attn = a;
  m.block.ff = f;
  return m;
}

/* One model on a backend with its cache and optimizer. */
typedef struct {
  const c5_backend *be;
  c5_params *p;
  c5_model *m;
  c5_model_cache *c;
  c5_adamw *o;
  c5_layout lay;
} run_t;

static void run_free(run_t *r)
{
  c5_adamw_destroy(&r->o);
  c5_model_cache_destroy(&r->c);
  c5_model_destroy(&r->m);
  c5_params_destroy(&r->p);
}

static int run_make(const c5_backend *be, const c5_dist *d, run_t *r)
{
  c5_model_config cfg = config();
  c5_adamw_config ac = C5_ADAMW_CONFIG_DEFAULT;
  ac.lr = 1e-3; ac.lr_min = 1e-4; ac.warmup_steps = 2; ac.total_steps = 10; ac.clip_norm = 0.5;
  long unit;
  memset(r, 0, sizeof *r);
  r->be = be;
  T_OK(c5_params_create(be, &r->p));
  T_OK(c5_model_create(&cfg, r->p, &r->m));
  T_OK(c5_params_alloc(r->p));
  T_OK(c5_params_init(r->p, 4321));
  T_OK(c5_model_layout_unit(&cfg, &unit));
  T_OK(c5_layout_compute(d, SEQ, unit, &r->lay));
  T_OK(c5_model_cache_create(r->m, BATCH, r->lay.n_local, &r->c));
  T_OK(c5_adamw_create(&ac, r->p, &r->o));
  return 1;
fail:
  return 0;
}

/* n elements of the backend's memory, copied into a new host buffer (NULL on failure, printed). */
static c5_real *down(const c5_backend *be, const void *src, long n)
{
  c5_real *h = malloc((size_t)(n > 0 ? n : 1) * sizeof *h);
  if (!h || c5_backend_memcpy(be, h, src, (size_t)n * sizeof *h) != C5_OK) {
    fprintf(stderr, "copy of %ld values to the host: %s\n", n, c5_last_error());
    free(h);
    return NULL;
  }
  return h;
}

/* The batch: bytes with spans masked (C5_MASK_TOKEN) and scored there, a few of the others scored as well. */
static void batch(int32_t *tok, int32_t *tgt, unsigned long long seed)
{
  for (long i = 0; i < BATCH * SEQ; i++) {
    double u = t_normal(&seed), v = t_normal(&seed);
    int32_t byte = (int32_t)((unsigned long long)(fabs(u) * 1e6) % 256);
    int masked = v > 0.8;
    tok[i] = masked ? C5_MASK_TOKEN : byte;
    tgt[i] = masked || v < -1.5 ? byte : -1;
  }
}

/* A training step on r: zero_grad, forward, backward at 1 / count, AdamW. */
static int step(const c5_dist *d, run_t *r, const int32_t *tok, const int32_t *tgt, double *loss, long *cnt,
                double *norm)
{
  c5_params_zero_grad(r->p);
  T_OK(c5_model_forward(r->m, d, &r->lay, BATCH, tok, tgt, NULL, r->c, loss, cnt));
  T_CHECK(*cnt > 0, "no scored position");
  T_OK(c5_model_backward(r->m, d, r->c, 1.0 / (double)*cnt));
  T_OK(c5_adamw_step(r->o, norm, NULL));
  return 1;
fail:
  return 0;
}

/* The logits dataset of an activation dump, into out [BATCH SEQ 256]. */
static int read_logits(const char *path, long step, c5_real *out)
{
  char name[64];
  snprintf(name, sizeof name, "/step_%ld/logits", step);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return 0;
  hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
  herr_t e = ds >= 0 ? H5Dread(ds, C5_USE_DOUBLE ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                               H5P_DEFAULT, out) : -1;
  if (ds >= 0) H5Dclose(ds);
  H5Fclose(f);
  return e >= 0;
}

static int check(c5_backend *gpu, const c5_dist *d)
{
  run_t rc = { 0 }, rg = { 0 }, rb = { 0 };
  const long R = BATCH * SEQ;
  int32_t *tok = malloc((size_t)R * sizeof *tok), *tgt = malloc((size_t)R * sizeof *tgt);
  c5_real *hv = NULL, *hg = NULL, *hm[2] = { NULL, NULL }, *dl = NULL, *cl = NULL;
  char ckpt[256] = "", dump[256] = "";
  int ok = 0;
  T_CHECK(tok && tgt, "out of memory");
  T_CHECK(run_make(c5_backend_cpu(), d, &rc), "the CPU model");
  T_CHECK(run_make(gpu, d, &rg), "the CUDA model");
  const long np = c5_params_count(rc.p), total = c5_params_total(rc.p);

  /* initialization: the same draws on both devices */
  T_CHECK((hv = down(gpu, c5_params_value(rg.p, 0), total)), "values");
  {
    long diff = 0;
    for (long i = 0; i < total; i++) diff += memcmp(&hv[i], c5_params_value(rc.p, 0) + i, sizeof *hv) != 0;
    printf("model init     %-48s %ld of %ld values differ in their bits %s\n", "c5_params_init", diff, total,
           diff ? "FAIL" : "PASS");
    all_ok &= diff == 0;
    /* from here the two runs start from the same values whatever init did */
    T_OK(c5_backend_memcpy(gpu, c5_params_value(rg.p, 0), c5_params_value(rc.p, 0), (size_t)total * sizeof *hv));
  }

  /* one forward and backward: loss, count, every gradient */
  batch(tok, tgt, 99);
  double lc = 0, lg = 0;
  long cc = 0, cg = 0;
  T_OK(c5_model_forward(rc.m, d, &rc.lay, BATCH, tok, tgt, NULL, rc.c, &lc, &cc));
  T_OK(c5_model_forward(rg.m, d, &rg.lay, BATCH, tok, tgt, NULL, rg.c, &lg, &cg));
  printf("model forward  %-48s %ld and %ld %s\n", "scored count", cg, cc, cg == cc ? "PASS" : "FAIL");
  all_ok &= cg == cc;
  report("forward", "loss sum (relative)", fabs(lg - lc) / fabs(lc), TOL);
  T_CHECK((cl = malloc((size_t)R * C5_NUM_BYTES * sizeof *cl)), "out of memory");
  memcpy(cl, c5_model_logits(rc.c), (size_t)R * C5_NUM_BYTES * sizeof *cl);
  T_CHECK((dl = down(gpu, c5_model_logits(rg.c), R * C5_NUM_BYTES)), "logits");
  report("forward", "logits", err(dl, cl, R * C5_NUM_BYTES), TOL);
  /* activation dump of the GPU forward, before the backward that spends it: its logits as the CPU's */
  snprintf(dump, sizeof dump, "/tmp/test_cuda_model_%d_act.h5", (int)getpid());
  T_OK(c5_model_dump_activations(rg.m, d, &rg.lay, rg.c, dump, 1));
  T_CHECK(read_logits(dump, 1, dl), "reading %s", dump);
  report("dump", "/step_1/logits (GPU run) vs CPU logits", err(dl, cl, R * C5_NUM_BYTES), TOL);
  T_OK(c5_model_backward(rc.m, d, rc.c, 1.0 / (double)cc));
  T_OK(c5_model_backward(rg.m, d, rg.c, 1.0 / (double)cc));
  T_CHECK((hg = down(gpu, c5_params_grad(rg.p, 0), total)), "gradients");
  for (long i = 0; i < np; i++) {
    const long off = c5_params_grad(rc.p, i) - c5_params_grad(rc.p, 0);
    report("grad", c5_params_name(rc.p, i), err(hg + off, c5_params_grad(rc.p, i), c5_params_numel(rc.p, i)), TOL);
  }

  /* the optimizer's sums of squares on the device: the CPU's bits on the same gradients */
  {
    double *dss = NULL, gss, css;
    long diff = 0, maxn = 1;
    for (long i = 0; i < np; i++) if (c5_params_numel(rc.p, i) > maxn) maxn = c5_params_numel(rc.p, i);
    double *work = malloc((size_t)((maxn + C5K_CHUNK - 1) / C5K_CHUNK) * sizeof *work);
    T_CHECK(work != NULL, "out of memory");
    c5k_ctx gc = c5_backend_ctx(gpu, NULL, 0), cc0 = { .work = work, .work_len = (maxn + C5K_CHUNK - 1) / C5K_CHUNK };
    c5_status st = c5_backend_alloc(gpu, sizeof *dss, (void **)&dss);
    for (long i = 0; i < np && st == C5_OK; i++) {
      const long off = c5_params_grad(rc.p, i) - c5_params_grad(rc.p, 0);
      st = gpu->ops->sumsq_dev(&gc, c5_params_numel(rc.p, i), c5_params_grad(rg.p, i), dss);
      if (st == C5_OK) st = c5_backend_memcpy(gpu, &gss, dss, sizeof gss);
      if (st == C5_OK) st = c5k_cpu_ops.sumsq(&cc0, c5_params_numel(rc.p, i), hg + off, &css, NULL);
      if (st == C5_OK && memcmp(&gss, &css, sizeof gss)) {
        if (!diff) fprintf(stderr, "sumsq_dev %s: %.17g, CPU %.17g\n", c5_params_name(rc.p, i), gss, css);
        diff++;
      }
    }
    c5_backend_free(gpu, dss);
    free(work);
    T_OK(st);
    printf("model sumsq    %-48s %ld of %ld parameters' sums differ in their bits %s\n", "sumsq_dev (GPU) vs sumsq (CPU)",
           diff, np, diff ? "FAIL" : "PASS");
    all_ok &= diff == 0;
  }

  /* training steps */
  for (int s = 1; s <= STEPS; s++) {
    double l[2], n[2];
    long k[2];
    batch(tok, tgt, 1000 + (unsigned long long)s);
    T_CHECK(step(d, &rc, tok, tgt, &l[0], &k[0], &n[0]), "CPU step %d", s);
    T_CHECK(step(d, &rg, tok, tgt, &l[1], &k[1], &n[1]), "CUDA step %d", s);
    char what[64];
    snprintf(what, sizeof what, "step %d loss sum (relative)", s);
    report("train", what, fabs(l[1] - l[0]) / fabs(l[0]), TOL);
    snprintf(what, sizeof what, "step %d gradient norm (relative)", s);
    report("train", what, fabs(n[1] - n[0]) / fabs(n[0]), TOL);
  }
  free(hv);
  T_CHECK((hv = down(gpu, c5_params_value(rg.p, 0), total)), "values");
  for (int g = 0; g < 2; g++)
    T_CHECK((hm[g] = down(gpu, g ? c5_adamw_exp_avg_sq(rg.o, 0) : c5_adamw_exp_avg(rg.o, 0), total)), "moments");
  for (long i = 0; i < np; i++) {
    const long off = c5_params_value(rc.p, i) - c5_params_value(rc.p, 0), n = c5_params_numel(rc.p, i);
    char what[200];
    snprintf(what, sizeof what, "%s", c5_params_name(rc.p, i));
    report("value", what, err(hv + off, c5_params_value(rc.p, i), n), TOL);
    report("exp_avg", what, err(hm[0] + off, c5_adamw_exp_avg(rc.o, i), n), TOL);
    report("exp_avg2", what, err(hm[1] + off, c5_adamw_exp_avg_sq(rc.o, i), n), TOL);
  }

  /* a checkpoint of the GPU run read into a CPU table: the same bits */
  snprintf(ckpt, sizeof ckpt, "/tmp/test_cuda_model_%d.h5", (int)getpid());
  T_OK(c5_checkpoint_write(d, ckpt, rg.p, rg.o, NULL, 0, "{}"));
  T_CHECK(run_make(c5_backend_cpu(), d, &rb), "the CPU model to read into");
  T_OK(c5_checkpoint_read(d, ckpt, rb.p, rb.o, NULL, 0, NULL));
  {
    long diff = 0;
    for (long i = 0; i < total; i++)
      diff += (memcmp(&hv[i], c5_params_value(rb.p, 0) + i, sizeof *hv) != 0) +
              (memcmp(&hm[0][i], c5_adamw_exp_avg(rb.o, 0) + i, sizeof *hv) != 0) +
              (memcmp(&hm[1][i], c5_adamw_exp_avg_sq(rb.o, 0) + i, sizeof *hv) != 0);
    int steps_ok = c5_adamw_steps(rb.o) == STEPS;
    printf("model ckpt     %-48s %ld of %ld values and moments differ, steps %ld %s\n",
           "GPU checkpoint read on the CPU", diff, 3 * total, c5_adamw_steps(rb.o), diff || !steps_ok ? "FAIL" : "PASS");
    all_ok &= diff == 0 && steps_ok;
  }
  ok = 1;
fail:
  if (ckpt[0]) unlink(ckpt);
  if (dump[0]) unlink(dump);
  run_free(&rb);
  run_free(&rg);
  run_free(&rc);
  free(tok); free(tgt); free(hv); free(hg); free(hm[0]); free(hm[1]); free(dl); free(cl);
  return ok && all_ok;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  c5_backend *gpu = t_cuda_backend_or_skip();
  c5_dist *d = NULL;
  int ok = 0;
  if (c5_dist_create(MPI_COMM_SELF, &d) != C5_OK) fprintf(stderr, "c5_dist_create: %s\n", c5_last_error());
  else ok = check(gpu, d);
  if (!ok) fprintf(stderr, "test_cuda_model: FAIL%s%s\n", c5_last_error()[0] ? ": " : "", c5_last_error());
  c5_dist_destroy(&d);
  c5_backend_destroy(&gpu);
  MPI_Finalize();
  return ok ? 0 : 1;
}
