/* fuzz_golden.c - libFuzzer harness: the input is a golden-vector file, checked the way colt5-golden
   checks one (its run_file: the module attribute, the JSON configuration, every dataset's shape,
   dtype and values, then the module's forward and backward against the file's outputs). The app is
   included whole, its main renamed, as llm.c's test_gpt2.c includes train_gpt2.c: the harness runs
   the app's own reader, not a copy. MPI on one rank (started once). Any outcome but a sanitizer
   report, a leak, a crash or a hang is fine. Seeds: tests/fuzz/corpus/golden. */
#define main colt5_golden_main
#include "../../apps/colt5-golden.c"
#undef main
#include "fuzz.h"

static ctx_t cx = { .rel = C5_USE_DOUBLE ? 1e-9 : 1e-4, .floor = C5_USE_DOUBLE ? 1e-12 : 1e-6, .quiet = 1 };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  MPI_Init(argc, argv);
  if (c5_dist_create(MPI_COMM_WORLD, &cx.dist) != C5_OK) {
    fprintf(stderr, "fuzz_golden: setup: %s\n", c5_last_error());
    abort();
  }
  cx.rank = c5_dist_rank(cx.dist);
  cx.size = c5_dist_size(cx.dist);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  (void)run_file(&cx, fuzz_input_file(".h5", data, size));
  cx.failed = 0;
  fuzz_check_hdf5_closed("fuzz_golden");
  c5_error_clear();
  return 0;
}
