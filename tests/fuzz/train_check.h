/* train_check.h - what colt5-train does with its options before any data or MPI collective, for the
   harnesses of its configuration file and its command line: the effective configuration's JSON (stored
   in checkpoints), and the model built from the options (every size and divisibility check of the
   modules; parameters registered, none allocated). Errors are the input's: cleared. And one property: the
   configuration's JSON reads back (train_opts_config) as the same options. */
#ifndef C5_TESTS_FUZZ_TRAIN_CHECK_H
#define C5_TESTS_FUZZ_TRAIN_CHECK_H

#include "cli.h"
#include "train_opts.h"

/* A property, not an outcome: the harness's own abort, reported by libFuzzer as a crash. */
#define TRAIN_CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "train_check: " __VA_ARGS__); fputc('\n', stderr); abort(); } } while (0)

static void train_check(opts_t *o)
{
  /* the configuration JSON (stored in checkpoints, hashed between ranks) reads back as the same options */
  char *txt = train_opts_json(o);
  TRAIN_CHECK(txt, "no configuration JSON for accepted options (%s)", c5_last_error());
  json_error_t je;
  json_t *back = json_loads(txt, 0, &je);
  TRAIN_CHECK(back, "the configuration JSON does not parse: %s: %s", je.text, txt);
  opts_t o2;
  TRAIN_CHECK(train_opts_init(&o2) == C5_OK, "out of memory");
  c5_status st = train_opts_config(&o2, "(the configuration JSON)", back);
  TRAIN_CHECK(st == C5_OK, "the configuration JSON is refused: %s: %s", c5_last_error(), txt);
  char *txt2 = train_opts_json(&o2);
  TRAIN_CHECK(txt2 && !strcmp(txt, txt2), "the configuration JSON reads back as other options: %s, then %s", txt,
              txt2 ? txt2 : "(none)");
  free(txt2);
  train_opts_free(&o2);
  json_decref(back);
  free(txt);
  /* what the app checks in its setup before any data: the steps to dump, the model */
  long dumps[64];
  if (o->dump_steps[0]) (void)cli_parse_list(o->dump_steps, 1, 1000000000, dumps, 64);
  c5_model_config mc;
  train_opts_model_config(o, &mc);
  c5_params *p = NULL;
  c5_model *m = NULL;
  long unit = 0;
  if (c5_params_create(c5_backend_cpu(), &p) == C5_OK && c5_model_create(&mc, p, &m) == C5_OK)
    (void)c5_model_layout_unit(&mc, &unit);
  c5_model_destroy(&m);
  c5_params_destroy(&p);
  c5_error_clear();
}

#endif
