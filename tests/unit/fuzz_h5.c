/* fuzz_h5.c - the HDF5 readers (lib/h5.c) on damaged files: every file must
   end in a clear error or a clean read, never a signal or a hang.

     fuzz_h5 FILE...
       reads each file as colt5-golden does (the attributes module, args,
       ctor, forward; every dataset of /inputs, /outputs, /grads, /params and
       /routers, shape first, then the data in the type the app reads it in);
       exit 0 when everything read, 2 when something was refused (each
       message on stderr).

     fuzz_h5 --oom FILE DATASET
       reads DATASET with the address space limited so that libhdf5's own
       buffer fails to allocate: the message must say so (exit 2).

     fuzz_h5 --emit SEED CASE FILE OUT
       writes case CASE of FILE to OUT (to replay a case: fuzz_h5 OUT, under gdb).

     fuzz_h5 --mutate SEED CASES [--timeout S] [--skip FILE:CASE,...] FILE...
       CASES deterministic mutations of each FILE (seeded by SEED, the case
       number and the file's name): byte flips, bytes set to 0x00/0xff, an
       8-byte field overwritten with a huge value, in the first 4 KiB (the
       superblock and the root's metadata), the last 4 KiB or anywhere, and
       truncations. Each case is read in a child process (fork; its address
       space limited to 2 GiB, so that a size libhdf5 takes from the damage
       fails to allocate instead of swapping) under an alarm of S seconds
       (default 10). One line per case; exit 1 when a case ended by a signal
       or ran out of time, unless it is listed in --skip (a crash inside
       libhdf5 that the readers cannot prevent: docs/bad-input.md lists
       each with its mutation). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include "colt5_io.h"

static int nerr;

static void report(c5_status st)
{
  if (st == C5_OK) return;
  nerr++;
  fprintf(stderr, "fuzz_h5: %s: %s\n", c5_status_string(st), c5_last_error());
  c5_error_clear();
}

typedef struct { char names[256][128]; int n; } names_t;
static herr_t name_cb(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
  (void)g; (void)info;
  names_t *nm = data;
  if (nm->n < 256) snprintf(nm->names[nm->n++], sizeof nm->names[0], "%s", name);
  return 0;
}

/* The members of group (none when it is missing or unreadable: the readers then say so themselves). */
static void list_group(c5_h5 *f, const char *group, names_t *nm)
{
  nm->n = 0;
  int ex = c5_h5_exists(f, group);
  if (ex < 0) report(C5_ERR_IO);   /* a damaged group (the error holds its message): H5Literate would hang */
  if (ex <= 0) return;
  hid_t g = H5Gopen2(f->file, group, H5P_DEFAULT);
  if (g < 0) { H5Eclear2(H5E_DEFAULT); return; }
  if (H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, name_cb, nm) < 0) H5Eclear2(H5E_DEFAULT);
  H5Gclose(g);
}

/* Whether a dataset holds integers (the model's tokens and counts: read as integers, as their readers do). */
static int is_integer(c5_h5 *f, const char *name)
{
  if (c5_h5_exists(f, name) <= 0) {   /* a damaged header H5Dopen2 would crash on: read_dataset says so */
    c5_error_clear();
    return 0;
  }
  hid_t d = H5Dopen2(f->file, name, H5P_DEFAULT);
  hid_t t = d >= 0 ? H5Dget_type(d) : H5I_INVALID_HID;
  int r = t >= 0 && H5Tget_class(t) == H5T_INTEGER;
  if (t >= 0) H5Tclose(t);
  if (d >= 0) H5Dclose(d);
  H5Eclear2(H5E_DEFAULT);
  return r;
}

/* A dataset as colt5-golden reads it: shape (checked), then the data. */
static void read_dataset(c5_h5 *f, const char *name, int as_int)
{
  int nd;
  long dims[C5_H5_MAXDIM];
  c5_status st = c5_h5_shape(f, name, &nd, dims);
  if (st != C5_OK) { report(st); return; }
  long n = c5_numel(nd, dims);
  if (n > (1L << 24)) {   /* golden files hold thousands; the app would try (and say out of memory) */
    report(c5_error_raise(C5_ERR_SHAPE, "%s: dataset %s: %ld elements (the harness reads at most 2^24)", f->path, name, n));
    return;
  }
  void *buf = calloc((size_t)n + 1, 8);
  if (!buf) { report(c5_error_raise(C5_ERR_MEM, "out of memory for %s", name)); return; }
  if (as_int == 2) st = c5_h5_read_u8(f, name, nd, dims, buf);
  else if (as_int) st = c5_h5_read_long(f, name, nd, dims, buf);
  else st = c5_h5_read_real(f, name, nd, dims, buf);
  report(st);
  free(buf);
}

static int read_file(const char *path)
{
  c5_h5 f = { .file = H5I_INVALID_HID };
  nerr = 0;
  c5_status st = c5_h5_open_read(path, &f);
  if (st != C5_OK) { report(st); return 2; }
  static const char *const attrs[] = { "module", "args", "ctor", "forward" };
  for (int i = 0; i < 4; i++) {   /* golden reads module and the ones of its kind (cd: args; modules: ctor, forward) */
    char *s = NULL;
    htri_t ex = i ? H5Aexists_by_name(f.file, "/", attrs[i], H5P_DEFAULT) : 1;
    if (ex <= 0) { H5Eclear2(H5E_DEFAULT); continue; }
    report(c5_h5_attr_string(&f, "/", attrs[i], &s));
    free(s);
  }
  static const char *const groups[] = { "/inputs", "/outputs", "/grads", "/params" };
  names_t *nm = malloc(sizeof *nm), *rn = malloc(sizeof *rn);
  if (!nm || !rn) { free(nm); free(rn); return 2; }
  char name[512];
  for (int gi = 0; gi < 4; gi++) {
    list_group(&f, groups[gi], nm);
    for (int i = 0; i < nm->n; i++) {
      snprintf(name, sizeof name, "%s/%s", groups[gi], nm->names[i]);
      read_dataset(&f, name, !strcmp(nm->names[i], "mask") ? 2 : is_integer(&f, name));
    }
  }
  list_group(&f, "/routers", rn);
  for (int i = 0; i < rn->n; i++) {
    long routed = 1;
    snprintf(name, sizeof name, "/routers/%s", rn->names[i]);
    if (H5Aexists_by_name(f.file, name, "routed", H5P_DEFAULT) > 0) report(c5_h5_attr_long(&f, name, "routed", &routed));
    H5Eclear2(H5E_DEFAULT);
    if (!routed) continue;   /* an unrouted router stores no selection */
    snprintf(name, sizeof name, "/routers/%s/indices", rn->names[i]);
    read_dataset(&f, name, 1);
    snprintf(name, sizeof name, "/routers/%s/scores", rn->names[i]);
    read_dataset(&f, name, 0);
  }
  free(nm); free(rn);
  report(c5_h5_close(&f));
  return nerr ? 2 : 0;
}

static unsigned long long rng(unsigned long long *s)
{
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  unsigned long long z = *s;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Case c of a file: its bytes mutated into out (the new length returned), described in what. */
static size_t mutate(const unsigned char *in, size_t len, unsigned long long seed, const char *file, int c,
                     unsigned char *out, char *what, size_t wlen)
{
  unsigned long long s = seed * 0x9e3779b97f4a7c15ULL + (unsigned long long)c;
  for (const char *p = file; *p; p++) s = (s ^ (unsigned char)*p) * 1099511628211ULL;
  rng(&s);
  memcpy(out, in, len);
  int kind = (int)(rng(&s) % 6);
  size_t region = len < 4096 ? len : 4096;
  size_t where = rng(&s) % 3;   /* 0: first 4 KiB, 1: last 4 KiB, 2: anywhere */
  size_t off = where == 0 ? rng(&s) % region : where == 1 ? len - 1 - rng(&s) % region : rng(&s) % len;
  switch (kind) {
  case 0: {   /* one bit */
    int bit = (int)(rng(&s) % 8);
    out[off] ^= (unsigned char)(1u << bit);
    snprintf(what, wlen, "flip bit %d at offset %zu", bit, off);
    return len;
  }
  case 1: {   /* a few random bytes near one another */
    int k = 1 + (int)(rng(&s) % 8);
    for (int i = 0; i < k && off + (size_t)i < len; i++) out[off + (size_t)i] = (unsigned char)rng(&s);
    snprintf(what, wlen, "%d random bytes at offset %zu", k, off);
    return len;
  }
  case 2:
  case 3: {   /* 0x00 or 0xff */
    unsigned char v = kind == 2 ? 0x00 : 0xff;
    out[off] = v;
    snprintf(what, wlen, "byte 0x%02x at offset %zu", v, off);
    return len;
  }
  case 4: {   /* a size or address field made huge */
    for (int i = 0; i < 8 && off + (size_t)i < len; i++) out[off + (size_t)i] = i < 6 ? 0xff : 0x7f;
    snprintf(what, wlen, "8 bytes 0xff..7f at offset %zu", off);
    return len;
  }
  default: {  /* truncated */
    size_t n = rng(&s) % len;
    snprintf(what, wlen, "truncated to %zu of %zu bytes", n, len);
    return n;
  }
  }
}

static int listed(const char *skip, const char *file, int c)
{
  if (!skip) return 0;
  const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
  char key[600];
  snprintf(key, sizeof key, "%s:%d", base, c);
  size_t kl = strlen(key);
  for (const char *p = skip; (p = strstr(p, key)); p += kl)
    if ((p == skip || p[-1] == ',') && (p[kl] == ',' || p[kl] == '\0')) return 1;
  return 0;
}

static int fuzz(unsigned long long seed, int cases, int timeout, const char *skip, int nfiles, char **files)
{
  int bad = 0, counts[4] = { 0 };   /* read, refused, crashed, skipped */
  char tmpl[] = "/tmp/fuzz_h5_XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) { perror("fuzz_h5: mkstemp"); return 2; }
  close(fd);
  for (int fi = 0; fi < nfiles; fi++) {
    FILE *fp = fopen(files[fi], "rb");
    if (!fp) { fprintf(stderr, "fuzz_h5: %s: cannot open\n", files[fi]); bad = 1; continue; }
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    rewind(fp);
    unsigned char *in = malloc((size_t)len + 1), *out = malloc((size_t)len + 1);
    if (!in || !out || len <= 0 || fread(in, 1, (size_t)len, fp) != (size_t)len) {
      fprintf(stderr, "fuzz_h5: %s: cannot read\n", files[fi]);
      fclose(fp); free(in); free(out); bad = 1; continue;
    }
    fclose(fp);
    if (read_file(files[fi]) != 0) {   /* else every case would be "refused" and prove nothing */
      fprintf(stderr, "fuzz_h5: %s does not read cleanly undamaged\n", files[fi]);
      free(in); free(out); bad = 1; continue;
    }
    for (int c = 0; c < cases; c++) {
      char what[128];
      size_t n = mutate(in, (size_t)len, seed, strrchr(files[fi], '/') ? strrchr(files[fi], '/') + 1 : files[fi], c,
                        out, what, sizeof what);
      FILE *tp = fopen(tmpl, "wb");
      if (!tp || fwrite(out, 1, n, tp) != n || fclose(tp) != 0) { fprintf(stderr, "fuzz_h5: cannot write %s\n", tmpl); bad = 1; break; }
      fflush(stdout);
      pid_t pid = fork();
      if (pid == 0) {
#ifndef __SANITIZE_ADDRESS__   /* AddressSanitizer maps terabytes of shadow: no address-space limit there */
        struct rlimit rl = { 2UL << 30, 2UL << 30 };
        setrlimit(RLIMIT_AS, &rl);
#endif
        alarm((unsigned)timeout);
        if (!freopen("/dev/null", "w", stderr)) _exit(3);
        _exit(read_file(tmpl));
      }
      int ws = 0;
      if (pid < 0 || waitpid(pid, &ws, 0) < 0) { perror("fuzz_h5: fork"); bad = 1; break; }
      int skipped = listed(skip, files[fi], c);
      const char *base = strrchr(files[fi], '/') ? strrchr(files[fi], '/') + 1 : files[fi];
      if (WIFEXITED(ws) && (WEXITSTATUS(ws) == 0 || WEXITSTATUS(ws) == 2)) {
        counts[WEXITSTATUS(ws) ? 1 : 0]++;
        printf("%s:%d %s -> %s\n", base, c, what, WEXITSTATUS(ws) ? "refused (exit 2)" : "read (exit 0)");
      } else {
        char how[64];
        if (WIFSIGNALED(ws) && WTERMSIG(ws) == SIGALRM) snprintf(how, sizeof how, "no answer in %d s", timeout);
        else if (WIFSIGNALED(ws)) snprintf(how, sizeof how, "signal %d (%s)", WTERMSIG(ws), strsignal(WTERMSIG(ws)));
        else snprintf(how, sizeof how, "exit %d", WEXITSTATUS(ws));
        counts[skipped ? 3 : 2]++;
        printf("%s:%d %s -> %s%s\n", base, c, what, how, skipped ? " (listed in --skip: docs/bad-input.md)" : " FAIL");
        if (!skipped) bad = 1;
      }
    }
    free(in); free(out);
  }
  unlink(tmpl);
  printf("fuzz_h5: %d read, %d refused, %d crashed or hung, %d listed crashes of libhdf5\n", counts[0], counts[1],
         counts[2], counts[3]);
  return bad;
}

/* --oom FILE DATASET: the dataset's buffer allocated, then the address space limited to what is in use
   plus half the dataset's bytes, so that libhdf5's own buffer (a compressed chunk's) cannot be had: the
   read must fail naming the allocation, not "unknown HDF5 error". */
static int oom_read(const char *path, const char *name)
{
  c5_h5 f = { .file = H5I_INVALID_HID };
  int nd;
  long dims[C5_H5_MAXDIM];
  c5_status st = c5_h5_open_read(path, &f);
  if (st == C5_OK) st = c5_h5_shape(&f, name, &nd, dims);
  if (st != C5_OK) { report(st); return 2; }
  long n = c5_numel(nd, dims);
  c5_real *buf = calloc((size_t)n, sizeof *buf);
  unsigned long pages = 0;
  FILE *sm = fopen("/proc/self/statm", "r");
  if (!buf || !sm || fscanf(sm, "%lu", &pages) != 1) { fprintf(stderr, "fuzz_h5: --oom: setup failed\n"); return 3; }
  fclose(sm);
  rlim_t lim = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (rlim_t)n * sizeof *buf / 2;
  struct rlimit rl = { lim, lim };
  if (setrlimit(RLIMIT_AS, &rl) != 0) { perror("fuzz_h5: setrlimit"); return 3; }
  st = c5_h5_read_real(&f, name, nd, dims, buf);
  fprintf(stderr, "fuzz_h5: --oom %s: %s\n", name, st == C5_OK ? "read (no allocation failed)" : c5_last_error());
  free(buf);
  c5_h5_close(&f);
  return st == C5_OK ? 0 : 2;
}

int main(int argc, char **argv)
{
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
#ifndef __SANITIZE_ADDRESS__
  if (argc == 4 && !strcmp(argv[1], "--oom")) return oom_read(argv[2], argv[3]);
#else
  if (argc == 4 && !strcmp(argv[1], "--oom")) return 77;   /* no address-space limit under ASan */
#endif
  if (argc == 6 && !strcmp(argv[1], "--emit")) {   /* --emit SEED CASE FILE OUT: one case's file, to replay */
    FILE *fp = fopen(argv[4], "rb");
    if (!fp) { fprintf(stderr, "fuzz_h5: %s: cannot open\n", argv[4]); return 2; }
    static unsigned char in[64 << 20], out[64 << 20];
    size_t len = fread(in, 1, sizeof in, fp);
    fclose(fp);
    char what[128];
    const char *base = strrchr(argv[4], '/') ? strrchr(argv[4], '/') + 1 : argv[4];
    size_t n = mutate(in, len, strtoull(argv[2], NULL, 10), base, atoi(argv[3]), out, what, sizeof what);
    FILE *op = fopen(argv[5], "wb");
    if (!op || fwrite(out, 1, n, op) != n || fclose(op) != 0) { fprintf(stderr, "fuzz_h5: cannot write %s\n", argv[5]); return 2; }
    printf("%s:%s %s -> %s\n", base, argv[3], what, argv[5]);
    return 0;
  }
  if (argc > 3 && !strcmp(argv[1], "--mutate")) {
    unsigned long long seed = strtoull(argv[2], NULL, 10);
    int cases = atoi(argv[3]), timeout = 10, i = 4;
    const char *skip = NULL;
    for (; i + 1 < argc && !strncmp(argv[i], "--", 2); i += 2) {
      if (!strcmp(argv[i], "--timeout")) timeout = atoi(argv[i + 1]);
      else if (!strcmp(argv[i], "--skip")) skip = argv[i + 1];
      else { fprintf(stderr, "fuzz_h5: unknown option %s\n", argv[i]); return 2; }
    }
    if (cases <= 0 || timeout <= 0 || i >= argc) { fprintf(stderr, "fuzz_h5: --mutate SEED CASES [--timeout S] [--skip F:C,...] FILE...\n"); return 2; }
    return fuzz(seed, cases, timeout, skip, argc - i, argv + i);
  }
  if (argc < 2) { fprintf(stderr, "usage: fuzz_h5 FILE... | fuzz_h5 --mutate SEED CASES [--timeout S] [--skip F:C,...] FILE...\n"); return 2; }
  int rc = 0;
  for (int i = 1; i < argc; i++) if (read_file(argv[i])) rc = 2;
  return rc;
}
