/* train_opts.h - colt5-train's options: the table of every option (command
   line --name and JSON config key), their defaults, ranges and help; parsing
   from argv and from a --config file, the effective configuration as JSON and
   the model configuration they give. Split from the app so that the fuzz
   harnesses (tests/fuzz) call the same code on their inputs without MPI. */
#ifndef C5_APPS_TRAIN_OPTS_H
#define C5_APPS_TRAIN_OPTS_H

#include <stdio.h>
#include <jansson.h>
#include "colt5.h"

#define TRAIN_DEFAULT_DATA "/usr/share/games/fortunes"

typedef struct {
  /* model */
  long dim, depth, seq_len, heavy_q, heavy_kv, heavy_ff, routed_kv, light_heads, light_dim_head, heavy_heads,
      heavy_dim_head, window, n_iters, route_block;
  double light_ff_mult, heavy_ff_mult, fetch_k_ratio, router_eps, eps_init, eps_decay, cosine_scale;
  int straight_through, cosine_sim, mult_keys, mult_queries, null_q, light_rotary, pos_zero;
  /* train */
  long steps, batch, accum, warmup, seed, val_every, val_batches, seq_ranks, threads, log_every, ckpt_every, keep,
      stop_after;
  double lr, lr_min, weight_decay, clip;
  int random_route, resume;
  /* strings: owned (train_opts_init duplicates the defaults, every value set replaces and frees) */
  char *log, *ckpt_dir, *dump_steps, *dump_file, *on_nonfinite, *device, *matmul;
  /* data */
  char *data;
  double val_frac, mask_frac;
} opts_t;

/* The defaults, strings duplicated (C5_ERR_MEM); train_opts_free releases them. */
c5_status train_opts_init(opts_t *o);
void train_opts_free(opts_t *o);   /* NULL-safe, idempotent */
/* Every option from --config FILE (first), then the command line, then the checks between options (ranges are
   checked per option); *help = 1 for --help, 2 for --version. Not collective: the caller agrees the result.
   Uses getopt_long (resets it: callable again). */
c5_status train_opts_parse(int argc, char **argv, opts_t *o, int *help);
/* A parsed config (root) into o: only "model", "train" and "data" objects, every key known, every value of its
   type and range (one message naming the key and value); name names it in messages. */
c5_status train_opts_config(opts_t *o, const char *name, json_t *root);
/* --config FILE: read and train_opts_config. */
c5_status train_opts_load_config(opts_t *o, const char *path);
/* The effective configuration as the shared JSON (malloc'd; NULL when out of memory). */
char *train_opts_json(const opts_t *o);
void train_opts_usage(FILE *f);
/* The model's configuration from the options. */
void train_opts_model_config(const opts_t *o, c5_model_config *mc);

#endif
