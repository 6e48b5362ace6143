/* train_check.h - what colt5-train does with its options before any data or MPI collective, for the
   harnesses of its configuration file and its command line: the effective configuration's JSON (stored
   in checkpoints), and the model built from the options (every size and divisibility check of the
   modules; parameters registered, none allocated). Errors are the input's: cleared. */
#ifndef C5_TESTS_FUZZ_TRAIN_CHECK_H
#define C5_TESTS_FUZZ_TRAIN_CHECK_H

#include "train_opts.h"

static void train_check(opts_t *o)
{
  free(train_opts_json(o));
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
