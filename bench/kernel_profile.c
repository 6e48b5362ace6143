/* kernel_profile.c - where a CUDA program's GPU time goes, per kernel, with
   no profiler installed: a CUDA injection library (CUDA loads it at
   initialization when CUDA_INJECTION64_PATH names it) that records every
   kernel, memcpy and memset through CUPTI's activity API and, at exit,
   writes one line per kernel name: total ms, calls, mean us, share of the
   recorded GPU time, sorted by total. The GPU machines here have no nsys;
   CUPTI ships with the CUDA toolkit.

     CUDA_INJECTION64_PATH=bench/libc5kprof.so C5_KPROF_OUT=prof.txt \
       mpirun -np 1 -x CUDA_INJECTION64_PATH -x C5_KPROF_OUT bench/c5-cuda-bench block 1x32768

   Names are as compiled (C++ mangled); `c++filt < prof.txt` demangles.
   Built by `make bench/libc5kprof.so` in a CUDA build (not installed). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cupti.h>

#define KP_MAX 4096
typedef struct { char *name; double ns; long calls; } kp_entry;
static kp_entry kp[KP_MAX];
static int kp_n;
static double kp_other_ns[2];   /* memcpy, memset */
static long kp_other_calls[2];

static uint64_t kp_hash(const char *s)
{
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* open addressing over kp: the entry of name, made on first sight (NULL when full) */
static kp_entry *kp_find(const char *name)
{
  for (uint64_t i = kp_hash(name) % KP_MAX, tries = 0; tries < KP_MAX; i = (i + 1) % KP_MAX, tries++) {
    if (!kp[i].name) {
      kp[i].name = strdup(name);
      kp_n++;
      return kp[i].name ? &kp[i] : NULL;
    }
    if (!strcmp(kp[i].name, name)) return &kp[i];
  }
  return NULL;
}

static void CUPTIAPI kp_request(uint8_t **buf, size_t *size, size_t *max_records)
{
  *size = 8u << 20;
  *buf = aligned_alloc(8, *size);
  *max_records = 0;
}

static void CUPTIAPI kp_complete(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size, size_t valid)
{
  (void)ctx; (void)stream; (void)size;
  CUpti_Activity *rec = NULL;
  while (cuptiActivityGetNextRecord(buf, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || rec->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)rec;
      kp_entry *e = kp_find(k->name ? k->name : "?");
      if (e) { e->ns += (double)(k->end - k->start); e->calls++; }
    } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)rec;
      kp_other_ns[0] += (double)(m->end - m->start); kp_other_calls[0]++;
    } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
      const CUpti_ActivityMemset4 *m = (const CUpti_ActivityMemset4 *)rec;
      kp_other_ns[1] += (double)(m->end - m->start); kp_other_calls[1]++;
    }
  }
  free(buf);
}

static int kp_cmp(const void *a, const void *b)
{
  const kp_entry *x = a, *y = b;
  return (y->ns > x->ns) - (y->ns < x->ns);
}

static void kp_report(void)
{
  cuptiActivityFlushAll(1);
  kp_entry *v = malloc(sizeof(kp_entry) * (kp_n ? kp_n : 1));
  int n = 0;
  double total = kp_other_ns[0] + kp_other_ns[1];
  for (int i = 0; i < KP_MAX; i++)
    if (kp[i].name) { v[n++] = kp[i]; total += kp[i].ns; }
  qsort(v, n, sizeof *v, kp_cmp);
  const char *path = getenv("C5_KPROF_OUT");
  FILE *f = path && *path ? fopen(path, "w") : stderr;
  if (!f) f = stderr;
  fprintf(f, "# kernel_profile: %d kernels, %.3f ms of recorded GPU time\n# total_ms calls mean_us share name\n",
          n, total * 1e-6);
  for (int i = 0; i < n; i++)
    fprintf(f, "%10.3f %8ld %10.2f %6.2f%% %s\n", v[i].ns * 1e-6, v[i].calls, v[i].ns * 1e-3 / v[i].calls,
            100 * v[i].ns / total, v[i].name);
  const char *other[2] = { "[memcpy]", "[memset]" };
  for (int i = 0; i < 2; i++)
    if (kp_other_calls[i])
      fprintf(f, "%10.3f %8ld %10.2f %6.2f%% %s\n", kp_other_ns[i] * 1e-6, kp_other_calls[i],
              kp_other_ns[i] * 1e-3 / kp_other_calls[i], 100 * kp_other_ns[i] / total, other[i]);
  if (f != stderr) fclose(f);
  free(v);
}

/* CUDA calls this when CUDA_INJECTION64_PATH names the library; 1 is success */
int InitializeInjection(void)
{
  if (cuptiActivityRegisterCallbacks(kp_request, kp_complete) != CUPTI_SUCCESS) return 0;
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY);
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET);
  atexit(kp_report);
  return 1;
}
