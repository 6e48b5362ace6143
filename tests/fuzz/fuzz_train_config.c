/* fuzz_train_config.c - libFuzzer harness: the input is colt5-train's --config file. It goes the
   app's way: train_opts_parse of "colt5-train --config FILE" (jansson's reader, every key and value
   checked, then the checks between options), then what the app derives from the options
   (train_check.h). Any outcome but a sanitizer report, a leak or a crash is fine: a bad file is
   refused with a message. Seeds: tests/fuzz/corpus/train_config. */
#include "fuzz.h"
#include "train_check.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; return 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *path = fuzz_input_file(".json", data, size);
  char a0[] = "colt5-train", a1[] = "--config", a2[512];
  snprintf(a2, sizeof a2, "%s", path);
  char *argv[] = { a0, a1, a2, NULL };
  opts_t o;
  int help = 0;
  if (train_opts_init(&o) == C5_OK) {
    if (train_opts_parse(3, argv, &o, &help) == C5_OK) train_check(&o);
    train_opts_free(&o);
  }
  c5_error_clear();
  return 0;
}
