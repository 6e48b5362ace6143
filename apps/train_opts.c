/* train_opts.c - colt5-train's options (train_opts.h). */
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "train_opts.h"

/* The defaults are the main job (jobs/setup-and-run.sh): about 3 minutes on 2 cores (BENCHMARKS.md, "Choosing
   the defaults"). Rotary light attention with pos_emb starting at zeros: the light branch learns relative offsets
   at once instead of first untangling random absolute rows. Window 4 (LocalMHA sees two neighbours a side and
   more): one neighbour a side caps a model near 0.74x the unigram entropy (the nearest unmasked byte each side
   holds no more), while 8 and more are averaged over first and learn later. Batch 16 x 1280 steps: the same
   5.2M tokens as 8 x 2560 reach a lower loss, with fewer, less noisy steps. */
static const opts_t opts_default = {
  .dim = 64, .depth = 2, .seq_len = 256, .heavy_q = 0, .heavy_kv = 0, .heavy_ff = 0, .routed_kv = 1,
  .light_heads = 4, .light_dim_head = 16, .heavy_heads = 4, .heavy_dim_head = 16, .window = 4, .n_iters = 20,
  .route_block = 0, .light_ff_mult = 0.5, .heavy_ff_mult = 4, .fetch_k_ratio = 9.0 / 8.0,
  .router_eps = 0.03, .eps_init = 4.0, .eps_decay = 0.7, .cosine_scale = 8.0, .straight_through = 1,
  .cosine_sim = 0, .mult_keys = 0, .mult_queries = 0, .null_q = 1, .light_rotary = 1, .pos_zero = 1,
  .steps = 1280, .batch = 16, .accum = 1, .warmup = 100, .seed = 1234, .val_every = 160, .val_batches = 8,
  .seq_ranks = 0, .threads = 0, .log_every = 50, .ckpt_every = 0, .keep = 2, .stop_after = 0,
  .lr = 5e-3, .lr_min = 1e-4, .weight_decay = 0.01, .clip = 1.0, .random_route = 0, .resume = 0,
  .log = "", .ckpt_dir = "", .dump_steps = "", .dump_file = "activations.h5", .on_nonfinite = "stop",
  .device = "cpu", .matmul = "fp32",
  .data = TRAIN_DEFAULT_DATA, .val_frac = 0.05, .mask_frac = 0.15 };

typedef enum { T_INT, T_REAL, T_BOOL, T_STR } otype;
typedef struct {
  const char *name;      /* --name */
  const char *section;   /* "model", "train", "data": the JSON object that sets it too; NULL: command line only */
  const char *key;       /* its key there; "router_kwargs.KEY" is one level down */
  otype type;
  size_t off;            /* offset in opts_t */
  double lo, hi;         /* range (T_INT, T_REAL) */
  const char *help;
} opt_t;

#define O(f) offsetof(opts_t, f)
#define BIG 2147483647.0
static const opt_t opt_table[] = {
  { "dim", "model", "dim", T_INT, O(dim), 1, 65536, "model width" },
  { "depth", "model", "depth", T_INT, O(depth), 1, 1024, "transformer blocks" },
  { "seq-len", "model", "max_seq_len", T_INT, O(seq_len), 2, BIG, "global sequence length (bytes); max_seq_len" },
  { "heavy-q", "model", "num_heavy_attn_tokens_q", T_INT, O(heavy_q), 0, BIG, "routed attention queries (0: seq-len/8)" },
  { "heavy-kv", "model", "num_heavy_attn_tokens_kv", T_INT, O(heavy_kv), 0, BIG, "routed attention keys (0: seq-len/8)" },
  { "heavy-ff", "model", "num_heavy_ff_tokens", T_INT, O(heavy_ff), 0, BIG, "routed feed-forward tokens (0: seq-len/8)" },
  { "routed-kv", "model", "num_routed_kv", T_INT, O(routed_kv), 1, 1024, "routes of the kv router" },
  { "light-heads", "model", "light_heads", T_INT, O(light_heads), 1, 1024, "local attention heads" },
  { "light-dim-head", "model", "light_dim_head", T_INT, O(light_dim_head), 1, 4096, "local attention head width" },
  { "heavy-heads", "model", "heavy_heads", T_INT, O(heavy_heads), 1, 1024, "routed attention heads" },
  { "heavy-dim-head", "model", "heavy_dim_head", T_INT, O(heavy_dim_head), 1, 4096, "routed attention head width" },
  { "window", "model", "light_window_size", T_INT, O(window), 2, BIG, "light_window_size (LocalMHA window: half)" },
  { "light-ff-mult", "model", "light_ff_mult", T_REAL, O(light_ff_mult), 0, 1024, "light feed-forward hidden / dim" },
  { "heavy-ff-mult", "model", "heavy_ff_mult", T_REAL, O(heavy_ff_mult), 0, 1024, "heavy feed-forward hidden / dim" },
  { "straight-through", "model", "router_straight_through", T_BOOL, O(straight_through), 0, 1, "routers' straight-through scores" },
  { "n-iters", "model", "router_kwargs.n_iters", T_INT, O(n_iters), 1, 100000, "coordinate descent iterations" },
  { "fetch-k-ratio", "model", "router_kwargs.fetch_k_ratio", T_REAL, O(fetch_k_ratio), 1, 1e6, "router fetch_k_ratio" },
  { "router-eps", "model", "router_kwargs.eps", T_REAL, O(router_eps), 1e-12, 1e6, "coordinate descent final epsilon" },
  { "eps-init", "model", "router_kwargs.eps_init", T_REAL, O(eps_init), 0, 1e6, "coordinate descent first epsilon" },
  { "eps-decay", "model", "router_kwargs.eps_decay", T_REAL, O(eps_decay), 1e-12, 1, "coordinate descent epsilon decay" },
  { "cosine-sim-routing", "model", "router_kwargs.cosine_sim_routing", T_BOOL, O(cosine_sim), 0, 1, "cosine-similarity router logits" },
  { "cosine-sim-scale", "model", "router_kwargs.cosine_sim_scale", T_REAL, O(cosine_scale), 0, 1e6, "scale of cosine router logits" },
  { "route-block-size", "model", "router_kwargs.route_block_size", T_INT, O(route_block), 0, BIG, "router blocks (0: off)" },
  { "multiply-keys-by-score", "model", "multiply_keys_by_score", T_BOOL, O(mult_keys), 0, 1, "scale routed keys by their score" },
  { "multiply-queries-by-score", "model", "multiply_queries_by_score", T_BOOL, O(mult_queries), 0, 1, "scale routed queries by their score" },
  { "use-null-q-tokens", "model", "use_null_q_tokens", T_BOOL, O(null_q), 0, 1, "null_q_token at unrouted queries" },
  { "light-rotary", "model", "light_rotary_emb", T_BOOL, O(light_rotary), 0, 1, "rotary embeddings in the light branch" },
  { "pos-emb-zero-init", "model", "pos_emb_zero_init", T_BOOL, O(pos_zero), 0, 1, "pos_emb starts at zeros (not N(0,1))" },
  { "random-route", "train", "random_route", T_BOOL, O(random_route), 0, 1, "negative control: routers pick at random" },
  { "steps", "train", "steps", T_INT, O(steps), 1, 1e9, "optimizer steps (the schedule's length)" },
  { "batch", "train", "batch", T_INT, O(batch), 1, 1e6, "sequences per data-parallel group per micro-batch" },
  { "accum", "train", "accum", T_INT, O(accum), 1, 1e6, "micro-batches per step" },
  { "lr", "train", "lr", T_REAL, O(lr), 0, 10, "peak learning rate" },
  { "lr-min", "train", "lr_min", T_REAL, O(lr_min), 0, 10, "learning rate at the end of the cosine decay" },
  { "warmup", "train", "warmup", T_INT, O(warmup), 0, 1e9, "linear warm-up steps" },
  { "weight-decay", "train", "weight_decay", T_REAL, O(weight_decay), 0, 10, "AdamW weight decay (Linear weights)" },
  { "clip", "train", "clip", T_REAL, O(clip), 0, 1e6, "clip the gradient norm to this (0: off)" },
  { "seed", "train", "seed", T_INT, O(seed), 0, BIG, "initialization, batches and random routes" },
  { "val-every", "train", "val_every", T_INT, O(val_every), 0, 1e9, "validate every this many steps (0: at the end only)" },
  { "val-batches", "train", "val_batches", T_INT, O(val_batches), 1, 1e6, "validation micro-batches (fixed by the seed)" },
  { "seq-ranks", "train", "seq_ranks", T_INT, O(seq_ranks), 0, 1e6, "ranks sharing one sequence (0: all)" },
  { "threads", "train", "threads", T_INT, O(threads), 0, 4096, "OpenMP threads per rank (0: OMP_NUM_THREADS)" },
  { "log", "train", "log", T_STR, O(log), 0, 0, "CSV log of every step (rank 0 appends)" },
  { "log-every", "train", "log_every", T_INT, O(log_every), 1, 1e9, "progress line every this many steps" },
  { "ckpt-dir", "train", "ckpt_dir", T_STR, O(ckpt_dir), 0, 0, "checkpoint folder (empty: no checkpoints)" },
  { "ckpt-every", "train", "ckpt_every", T_INT, O(ckpt_every), 0, 1e9, "checkpoint every this many steps (0: at the end)" },
  { "keep", "train", "keep", T_INT, O(keep), 0, 1e6, "checkpoints kept (0: all)" },
  { "dump-activations", "train", "dump_activations", T_STR, O(dump_steps), 0, 0, "comma list of steps whose activations are dumped" },
  { "dump-file", "train", "dump_file", T_STR, O(dump_file), 0, 0, "activation dump file" },
  { "on-nonfinite", "train", "on_nonfinite", T_STR, O(on_nonfinite), 0, 0, "stop (exit 1) or skip (the step) at a NaN/Inf" },
  { "device", "train", "device", T_STR, O(device), 0, 0, "cpu, or cuda: the model on a GPU (each rank on GPU local rank % GPUs)" },
  { "matmul", "train", "matmul", T_STR, O(matmul), 0, 0, "fp32, tf32 or bf16: how --device cuda's f32 products round their inputs" },
  { "data", "data", "path", T_STR, O(data), 0, 0, "text file, or folder of fortune files (shuffled, '%' lines dropped)" },
  { "val-frac", "data", "val_frac", T_REAL, O(val_frac), 1e-6, 0.9, "last fraction of the text used for validation" },
  { "mask-frac", "data", "mask_frac", T_REAL, O(mask_frac), 0.01, 0.9, "fraction of each sequence masked" },
  { "resume", NULL, NULL, T_BOOL, O(resume), 0, 1, "continue from the latest checkpoint of --ckpt-dir" },
  { "stop-after", NULL, NULL, T_INT, O(stop_after), 0, 1e9, "checkpoint and stop after this many steps of this run (0: off)" },
};
#define NOPT ((int)(sizeof opt_table / sizeof *opt_table))
#define OPT_CONFIG 1000
#define OPT_HELP 1001
#define OPT_VERSION 1002

static void *field(opts_t *o, const opt_t *t) { return (char *)o + t->off; }

static void want_text(const opt_t *t, char *buf, size_t len)
{
  switch (t->type) {
  case T_INT: snprintf(buf, len, "an integer from %.0f to %.0f", t->lo, t->hi); break;
  case T_REAL: snprintf(buf, len, "a number from %g to %g", t->lo, t->hi); break;
  case T_BOOL: snprintf(buf, len, "0 or 1 (true or false)"); break;
  case T_STR: snprintf(buf, len, "a string"); break;
  }
}

static void value_text(const opts_t *o, const opt_t *t, char *buf, size_t len)
{
  const void *f = (const char *)o + t->off;
  switch (t->type) {
  case T_INT: snprintf(buf, len, "%ld", *(const long *)f); break;
  case T_REAL: snprintf(buf, len, "%g", *(const double *)f); break;
  case T_BOOL: snprintf(buf, len, "%d", *(const int *)f); break;
  case T_STR: snprintf(buf, len, "%s", *(char *const *)f); break;
  }
}

/* A string option's new value, copied (its old one freed), or the first error. */
static c5_status set_string(char **f, const char *v, const char *what, c5_status st)
{
  char *c = strdup(v);
  if (!c) return st != C5_OK ? st : c5_error_raise(C5_ERR_MEM, "out of memory for %s", what);
  free(*f);
  *f = c;
  return st;
}

/* A command-line value into its field, or the first error. */
static c5_status set_cli(opts_t *o, const opt_t *t, const char *arg, c5_status st)
{
  char opt[80], want[96];
  snprintf(opt, sizeof opt, "--%s", t->name);
  want_text(t, want, sizeof want);
  void *f = field(o, t);
  long v;
  switch (t->type) {
  case T_INT: {
    const char *end = cli_parse_int(arg, (long)t->lo, (long)t->hi, &v);
    if (!end || *end) return cli_bad_option(st, opt, arg, want);
    *(long *)f = v;
    return st;
  }
  case T_REAL:
    return cli_parse_real(arg, t->lo, t->hi, (double *)f) ? cli_bad_option(st, opt, arg, want) : st;
  case T_BOOL:
    if (!arg || !strcmp(arg, "1") || !strcmp(arg, "true")) *(int *)f = 1;
    else if (!strcmp(arg, "0") || !strcmp(arg, "false")) *(int *)f = 0;
    else return cli_bad_option(st, opt, arg, want);
    return st;
  case T_STR: {
    /* the options are stored as JSON (checkpoints, the log) and compared between ranks through it: a string
       JSON cannot hold would drop out of it */
    json_t *j = json_string(arg);
    json_decref(j);
    if (!j) return st != C5_OK ? st : c5_error_raise(C5_ERR_ARG, "%s: the value is not valid UTF-8 text", opt);
    return set_string((char **)f, arg, opt, st);
  }
  }
  return st;
}

/* The reference's route_block_size is None when off (0 would divide by zero in its router): the JSON
   holds null for our 0, and null reads back as 0. */
static int is_none_zero(const opt_t *t) { return !strcmp(t->key, "router_kwargs.route_block_size"); }

/* A JSON value into its field; a wrong one is remembered by cli_json_wrong ("option 'model.dim' is ..."),
   out of memory returned. */
static c5_status set_json(opts_t *o, const opt_t *t, const char *qual, json_t *v)
{
  char want[96];
  want_text(t, want, sizeof want);
  void *f = field(o, t);
  double d = json_is_number(v) ? json_number_value(v) : NAN;
  switch (t->type) {
  case T_INT:
    if (is_none_zero(t) && json_is_null(v)) *(long *)f = 0;
    else if (!(d >= t->lo && d <= t->hi) || d != floor(d)) cli_json_wrong(qual, v, want);
    else *(long *)f = (long)d;
    break;
  case T_REAL:
    if (!(d >= t->lo && d <= t->hi)) cli_json_wrong(qual, v, want);
    else *(double *)f = d;
    break;
  case T_BOOL:
    if (!json_is_boolean(v)) cli_json_wrong(qual, v, "true or false");
    else *(int *)f = json_is_true(v);
    break;
  case T_STR:
    if (!json_is_string(v)) cli_json_wrong(qual, v, "a string");
    else return set_string((char **)f, json_string_value(v), qual, C5_OK);
    break;
  }
  return C5_OK;
}

c5_status train_opts_config(opts_t *o, const char *path, json_t *root)
{
  c5_status st = C5_OK;
  static const char *const sections[] = { "model", "train", "data", NULL };
  if (!json_is_object(root)) st = c5_error_raise(C5_ERR_ARG, "--config %s: not a JSON object", path);
  if (st == C5_OK) st = cli_check_keys(path, "top-level", root, sections);
  cli_json_reset();
  for (int s = 0; st == C5_OK && sections[s]; s++) {
    json_t *sec = json_object_get(root, sections[s]);
    if (!sec) continue;
    if (!json_is_object(sec)) { st = c5_error_raise(C5_ERR_ARG, "--config %s: \"%s\" is not an object", path, sections[s]); break; }
    const char *key;
    json_t *v;
    json_object_foreach(sec, key, v) {
      int found = 0;
      if (!strcmp(key, "router_kwargs") && json_is_object(v)) {
        const char *k2;
        json_t *v2;
        json_object_foreach(v, k2, v2) {
          int f2 = 0;
          for (int i = 0; i < NOPT; i++) {
            const opt_t *t = &opt_table[i];
            if (t->section && !strcmp(t->section, sections[s]) && !strncmp(t->key, "router_kwargs.", 14) &&
                !strcmp(t->key + 14, k2)) {
              char qual[160];
              snprintf(qual, sizeof qual, "%s.router_kwargs.%s", sections[s], k2);
              if (st == C5_OK) st = set_json(o, t, qual, v2);
              f2 = 1;
            }
          }
          if (!f2 && st == C5_OK)
            st = c5_error_raise(C5_ERR_ARG, "--config %s: unknown key \"%s.router_kwargs.%s\"", path, sections[s], k2);
        }
        continue;
      }
      /* a key with a dot is not one of the object's ("router_kwargs.n_iters" is one level down) */
      for (int i = 0; i < NOPT && !strchr(key, '.'); i++) {
        const opt_t *t = &opt_table[i];
        if (t->section && !strcmp(t->section, sections[s]) && !strcmp(t->key, key)) {
          char qual[160];
          snprintf(qual, sizeof qual, "%s.%s", sections[s], key);
          if (st == C5_OK) st = set_json(o, t, qual, v);
          found = 1;
        }
      }
      if (!found && st == C5_OK) st = c5_error_raise(C5_ERR_ARG, "--config %s: unknown key \"%s.%s\"", path, sections[s], key);
    }
  }
  if (st == C5_OK && cli_json_error()[0]) st = c5_error_raise(C5_ERR_ARG, "--config %s: %s", path, cli_json_error());
  return st;
}

c5_status train_opts_load_config(opts_t *o, const char *path)
{
  json_error_t je;
  json_t *root = json_load_file(path, 0, &je);
  if (!root) return c5_error_raise(C5_ERR_ARG, "--config %s: %s (line %d)", path, je.text, je.line);
  c5_status st = train_opts_config(o, path, root);
  json_decref(root);
  return st;
}

c5_status train_opts_init(opts_t *o)
{
  *o = opts_default;
  for (int i = 0; i < NOPT; i++) {
    const opt_t *t = &opt_table[i];
    if (t->type != T_STR) continue;
    char **f = field(o, t);
    if (!(*f = strdup(*f))) {
      for (int j = i + 1; j < NOPT; j++)   /* not yet copied: the defaults' literals, not to be freed */
        if (opt_table[j].type == T_STR) *(char **)field(o, &opt_table[j]) = NULL;
      train_opts_free(o);
      return c5_error_raise(C5_ERR_MEM, "out of memory for the options");
    }
  }
  return C5_OK;
}

void train_opts_free(opts_t *o)
{
  for (int i = 0; i < NOPT; i++)
    if (opt_table[i].type == T_STR) {
      char **f = field(o, &opt_table[i]);
      free(*f);
      *f = NULL;
    }
}

/* The effective configuration as the shared JSON (HELPERS: "model" holds the reference block's kwargs plus
   dim, depth, max_seq_len), stored in checkpoints and compared between ranks. */
char *train_opts_json(const opts_t *o)
{
  json_t *root = json_object(), *sec[3] = { json_object(), json_object(), json_object() }, *rk = json_object();
  static const char *const names[3] = { "model", "train", "data" };
  int bad = 0;
  for (int i = 0; i < NOPT; i++) {
    const opt_t *t = &opt_table[i];
    if (!t->section) continue;
    int s = !strcmp(t->section, "model") ? 0 : !strcmp(t->section, "train") ? 1 : 2;
    const void *f = (const char *)o + t->off;
    json_t *v = t->type == T_INT ? json_integer(*(const long *)f) : t->type == T_REAL ? json_real(*(const double *)f)
              : t->type == T_BOOL ? json_boolean(*(const int *)f) : json_string(*(char *const *)f);
    if (is_none_zero(t) && *(const long *)f == 0) { json_decref(v); v = json_null(); }
    /* a failed set (no value: out of memory) would drop the option from the stored configuration silently */
    if (!strncmp(t->key, "router_kwargs.", 14)) bad |= json_object_set_new(rk, t->key + 14, v);
    else bad |= json_object_set_new(sec[s], t->key, v);
  }
  bad |= json_object_set_new(sec[0], "router_kwargs", rk);
  for (int s = 0; s < 3; s++) bad |= json_object_set_new(root, names[s], sec[s]);
  char *txt = bad ? NULL : json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return txt;
}

void train_opts_usage(FILE *f)
{
  opts_t d = opts_default;
  fprintf(f, "usage: mpirun -np P colt5-train [--config FILE.json] [options]\n"
             "  --config FILE.json   its \"model\", \"train\" and \"data\" objects set the options below (key in [ ]);\n"
             "                       options given on the command line override it\n"
             "  --help               this list\n"
             "  --version            the library's version and build\n");
  const char *last = "";
  for (int i = 0; i < NOPT; i++) {
    const opt_t *t = &opt_table[i];
    const char *sec = t->section ? t->section : "run";
    if (strcmp(sec, last)) fprintf(f, "%s:\n", sec);
    last = sec;
    char val[64], arg[64], key[80] = "";
    value_text(&d, t, val, sizeof val);
    snprintf(arg, sizeof arg, "--%s%s", t->name, t->type == T_BOOL ? "[=0|1]" : t->type == T_STR ? " S" : " N");
    if (t->section) snprintf(key, sizeof key, " [%s]", t->key);
    fprintf(f, "  %-32s %s (default %s)%s\n", arg, t->help, t->type == T_STR && !*val ? "none" : val, key);
  }
  fprintf(f, "exit: 0 done or checkpointed on SIGTERM/SIGUSR1, 1 error or non-finite step, 2 bad option or data\n");
}

c5_status train_opts_parse(int argc, char **argv, opts_t *o, int *help)
{
  struct option lo[NOPT + 4];
  for (int i = 0; i < NOPT; i++)
    lo[i] = (struct option){ opt_table[i].name, opt_table[i].type == T_BOOL ? optional_argument : required_argument, 0, i };
  lo[NOPT] = (struct option){ "config", required_argument, 0, OPT_CONFIG };
  lo[NOPT + 1] = (struct option){ "help", no_argument, 0, OPT_HELP };
  lo[NOPT + 2] = (struct option){ "version", no_argument, 0, OPT_VERSION };
  lo[NOPT + 3] = (struct option){ 0 };
  c5_status st = C5_OK;
  int c;
  opterr = 0;   /* getopt's own message would come before ours: one message, ours */
  for (int pass = 0; pass < 2; pass++) {
    optind = 0;   /* GNU getopt: restart */
    while ((c = getopt_long(argc, argv, ":", lo, NULL)) != -1) {
      if (c == ':') { if (st == C5_OK) st = c5_error_raise(C5_ERR_ARG, "option %s needs a value", argv[optind - 1]); }
      else if (c == '?') { if (st == C5_OK) st = c5_error_raise(C5_ERR_ARG, "unknown option %s", argv[optind - 1]); }
      else if (c == OPT_HELP) *help = 1;
      else if (c == OPT_VERSION) *help = 2;   /* like --help: print, exit 0 */
      else if (c == OPT_CONFIG) { if (pass == 0 && st == C5_OK) st = train_opts_load_config(o, optarg); }
      else if (pass == 1) st = set_cli(o, &opt_table[c], optarg, st);
    }
    if (st != C5_OK) return st;
  }
  if (optind < argc) return c5_error_raise(C5_ERR_ARG, "unexpected argument %s", argv[optind]);
  if (strcmp(o->on_nonfinite, "stop") && strcmp(o->on_nonfinite, "skip"))
    return c5_error_raise(C5_ERR_ARG, "--on-nonfinite %s: expected stop or skip", o->on_nonfinite);
  c5_status dst = cli_check_device(o->device, o->matmul);
  if (dst != C5_OK) return dst;
  if (o->lr_min > o->lr) return c5_error_raise(C5_ERR_ARG, "--lr-min %g: above --lr %g", o->lr_min, o->lr);
  if (o->resume && !*o->ckpt_dir) return c5_error_raise(C5_ERR_ARG, "--resume: needs --ckpt-dir");
  if (o->stop_after && !*o->ckpt_dir) return c5_error_raise(C5_ERR_ARG, "--stop-after: needs --ckpt-dir");
  long n = o->seq_len;
  if (!o->heavy_q) o->heavy_q = n / 8 > 0 ? n / 8 : 1;
  if (!o->heavy_kv) o->heavy_kv = n / 8 > 0 ? n / 8 : 1;
  if (!o->heavy_ff) o->heavy_ff = n / 8 > 0 ? n / 8 : 1;
  return C5_OK;
}

void train_opts_model_config(const opts_t *o, c5_model_config *mc)
{
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;
  c5_router_config rc = C5_ROUTER_CONFIG_DEFAULT;
  rc.straight_through = o->straight_through;
  rc.n_iters = (int)o->n_iters;
  rc.fetch_k_ratio = o->fetch_k_ratio;
  rc.eps = o->router_eps;
  rc.eps_init = o->eps_init;
  rc.eps_decay = o->eps_decay;
  /* one routing token a router: the reference block passes num_routing_tokens = num_routed_kv to its kv
     router beside router_kwargs, so router_kwargs cannot hold it (TypeError: multiple values) */
  rc.num_routing_tokens = 1;
  rc.cosine_sim_routing = o->cosine_sim;
  rc.cosine_sim_scale = o->cosine_scale;
  rc.route_block_size = o->route_block;
  a.dim = (int)o->dim;
  a.num_heavy_tokens_q = o->heavy_q;
  a.num_heavy_tokens_kv = o->heavy_kv;
  a.num_routed_kv = (int)o->routed_kv;
  a.light_dim_head = (int)o->light_dim_head;
  a.light_heads = (int)o->light_heads;
  a.light_window_size = o->window;
  a.heavy_dim_head = (int)o->heavy_dim_head;
  a.heavy_heads = (int)o->heavy_heads;
  a.router = rc;
  a.multiply_keys_by_score = o->mult_keys;
  a.multiply_queries_by_score = o->mult_queries;
  a.use_null_q_tokens = o->null_q;
  a.light_rotary_emb = o->light_rotary;
  /* the negative control: content-blind routes, new draws every forward (route_seed) */
  a.random_route = o->random_route;
  a.random_seed = (uint64_t)o->seed;
  f.dim = (int)o->dim;
  f.num_heavy_tokens = o->heavy_ff;
  f.light_ff_mult = o->light_ff_mult;
  f.heavy_ff_mult = o->heavy_ff_mult;
  f.router = rc;
  f.random_route = o->random_route;
  f.random_seed = (uint64_t)o->seed;
  mc->depth = (int)o->depth;
  mc->max_seq_len = o->seq_len;
  mc->pos_emb_zero_init = o->pos_zero;
  mc->block.attn = a;
  mc->block.ff = f;
}
