/* fuzz_checkpoint.c - libFuzzer harness: the input is a checkpoint file, read by c5_checkpoint_read
   (lib/checkpoint.c) as colt5-train --resume reads one: into the parameters and AdamW moments of the
   tiny model below, with the run's scalars and its configuration. MPI on one rank (started once).
   Any outcome but a sanitizer report, a leak or a crash is fine: a damaged file is refused naming
   what is wrong. Seeds: tests/fuzz/corpus/checkpoint (written by colt5-train with the same options:
   tests/fuzz/README.md). */
#include "colt5_mpi.h"
#include "colt5_io.h"
#include "fuzz.h"
#include "train_opts.h"

/* The seed checkpoints' model: colt5-train with these options (tests/fuzz/README.md). */
static char *tiny[] = { "colt5-train", "--dim", "4", "--depth", "1", "--seq-len", "16", "--heavy-q", "2",
                        "--heavy-kv", "2", "--heavy-ff", "2", "--light-heads", "1", "--light-dim-head", "4",
                        "--heavy-heads", "1", "--heavy-dim-head", "4", "--window", "4", "--n-iters", "5", NULL };

static c5_dist *world;
static c5_params *p;
static c5_model *m;
static c5_adamw *opt;

static void setup_failed(void)
{
  fprintf(stderr, "fuzz_checkpoint: setup: %s\n", c5_last_error());
  abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  MPI_Init(argc, argv);
  opts_t o;
  int help = 0;
  c5_model_config mc;
  c5_adamw_config ac = C5_ADAMW_CONFIG_DEFAULT;
  if (train_opts_init(&o) != C5_OK || train_opts_parse((int)(sizeof tiny / sizeof *tiny) - 1, tiny, &o, &help) != C5_OK)
    setup_failed();
  train_opts_model_config(&o, &mc);
  train_opts_free(&o);
  if (c5_dist_create(MPI_COMM_WORLD, &world) != C5_OK || c5_params_create(c5_backend_cpu(), &p) != C5_OK ||
      c5_model_create(&mc, p, &m) != C5_OK || c5_params_alloc(p) != C5_OK || c5_params_init(p, 1) != C5_OK ||
      c5_adamw_create(&ac, p, &opt) != C5_OK)
    setup_failed();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *path = fuzz_input_file(".h5", data, size);
  c5_ckpt_scalar state[4] = { { "step", 0 }, { "seed", 0 }, { "data_position", 0 }, { "skipped", 0 } };
  char *config = NULL;
  (void)c5_checkpoint_read(world, path, p, opt, state, 4, &config);
  free(config);
  fuzz_check_hdf5_closed("fuzz_checkpoint");
  c5_error_clear();
  return 0;
}
