/* fuzz_train_options.c - libFuzzer harness: the input is colt5-train's command line, its arguments
   each ended by a NUL byte or the input's end (at most 64; "colt5-train" is argv[0]). train_opts_parse as the app calls
   it, then what the app derives from the options (train_check.h). Runs in a folder holding c.json, a
   valid configuration, so that "--config c.json" in an input reaches the file reader too. Seeds:
   tests/fuzz/corpus/train_options. */
#include "fuzz.h"
#include "train_check.h"

enum { MAX_ARGS = 64 };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc; (void)argv;
  const char *t = getenv("TMPDIR");
  static char dir[512];
  snprintf(dir, sizeof dir, "%s/c5fuzz-opts-XXXXXX", t && *t ? t : "/tmp");
  FILE *f;
  if (!mkdtemp(dir) || chdir(dir) || !(f = fopen("c.json", "w"))) { perror(dir); abort(); }
  fputs("{\"model\": {\"dim\": 16, \"depth\": 1, \"max_seq_len\": 64, \"router_kwargs\": {\"n_iters\": 5}},"
        " \"train\": {\"steps\": 3, \"batch\": 2}, \"data\": {\"val_frac\": 0.1}}\n", f);
  fclose(f);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  /* a copy with a NUL after the last argument; argv points into it (getopt permutes argv, not the strings) */
  char *buf = malloc(size + 1);
  if (!buf) return 0;
  memcpy(buf, data, size);
  buf[size] = 0;
  char a0[] = "colt5-train";
  char *argv[MAX_ARGS + 2] = { a0 };
  int argc = 1;
  for (size_t i = 0; i < size && argc <= MAX_ARGS;) {
    argv[argc++] = buf + i;
    i += strlen(buf + i) + 1;
  }
  argv[argc] = NULL;
  opts_t o;
  int help = 0;
  if (train_opts_init(&o) == C5_OK) {
    if (train_opts_parse(argc, argv, &o, &help) == C5_OK) train_check(&o);
    train_opts_free(&o);
  }
  c5_error_clear();
  free(buf);
  return 0;
}
