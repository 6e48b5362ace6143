/* fuzz.h - what the libFuzzer harnesses of tests/fuzz share (jobs/fuzz.sh builds and runs them):
   the fuzz input written to a file of its own (the readers take a path), and MPI started once on
   one rank for the readers that are collective. */
#ifndef C5_TESTS_FUZZ_H
#define C5_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_path[512];
static void fuzz_unlink(void) { unlink(fuzz_path); }

/* A file of this process (under $TMPDIR or /tmp, removed at exit) that every input is written to,
   whole. An error here is the harness's, not the input's: it aborts. */
static const char *fuzz_input_file(const char *suffix, const uint8_t *data, size_t size)
{
  if (!fuzz_path[0]) {
    const char *dir = getenv("TMPDIR");
    snprintf(fuzz_path, sizeof fuzz_path, "%s/c5fuzz-%ld%s", dir && *dir ? dir : "/tmp", (long)getpid(), suffix);
    atexit(fuzz_unlink);
  }
  FILE *f = fopen(fuzz_path, "wb");
  if (!f || fwrite(data, 1, size, f) != size || fclose(f)) {
    perror(fuzz_path);
    abort();
  }
  return fuzz_path;
}

#ifdef H5_VERS_MAJOR
/* After a reader returned: no HDF5 file or object of it left open (a handle the reader forgot, which
   LeakSanitizer cannot tell from libhdf5's own leaks on damaged files: jobs/lsan-fuzz.supp). */
static void fuzz_check_hdf5_closed(const char *who)
{
  ssize_t n = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
  if (n != 0) {
    fprintf(stderr, "%s: %ld HDF5 files or objects left open after the reader returned\n", who, (long)n);
    abort();
  }
}
#endif

#endif
