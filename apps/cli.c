/* cli.c - option parsing shared by the apps (cli.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

const char *cli_parse_int(const char *s, long lo, long hi, long *out)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (end == s || errno == ERANGE || v < lo || v > hi || (*end && *end != ',')) return NULL;
  *out = v;
  return end;
}

int cli_parse_list(const char *s, long lo, long hi, long *out, int max)
{
  int n = 0;
  while (*s) {
    if (n == max) return -1;
    const char *end = cli_parse_int(s, lo, hi, &out[n++]);
    if (!end || (*end == ',' && !end[1])) return -1;
    s = *end == ',' ? end + 1 : end;
  }
  return n > 0 ? n : -1;
}

int cli_parse_real(const char *s, double lo, double hi, double *out)
{
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end || errno == ERANGE || !isfinite(v) || !(v >= lo && v <= hi)) return -1;
  *out = v;
  return 0;
}

c5_status cli_bad_option(c5_status st, const char *opt, const char *val, const char *want)
{
  return st != C5_OK ? st : c5_error_raise(C5_ERR_ARG, "%s %s: expected %s", opt, val, want);
}

static char json_bad[512];

void cli_json_reset(void) { json_bad[0] = 0; }
const char *cli_json_error(void) { return json_bad; }

void cli_json_wrong(const char *key, json_t *v, const char *want)
{
  if (json_bad[0]) return;
  char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
  snprintf(json_bad, sizeof json_bad, "option '%s' is %s, expected %s", key, txt ? txt : "?", want);
  free(txt);
}

double cli_json_num(json_t *o, const char *key, double dflt)
{
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) return dflt;
  if (!json_is_number(v) || !isfinite(json_number_value(v))) { cli_json_wrong(key, v, "a finite number"); return dflt; }
  return json_number_value(v);
}

long cli_json_int(json_t *o, const char *key, long dflt)
{
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) return dflt;
  double d = json_is_number(v) ? json_number_value(v) : NAN;
  if (!(fabs(d) < 2147483648.0) || d != floor(d)) { cli_json_wrong(key, v, "an integer below 2^31"); return dflt; }
  return (long)d;
}

int cli_json_bool(json_t *o, const char *key, int dflt)
{
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) return dflt;
  if (!json_is_boolean(v)) { cli_json_wrong(key, v, "true or false"); return dflt; }
  return json_is_true(v);
}

c5_status cli_check_keys(const char *file, const char *what, json_t *obj, const char *const *allowed)
{
  const char *key;
  json_t *v;
  json_object_foreach(obj, key, v) {
    int found = 0;
    for (const char *const *a = allowed; *a; a++) found |= !strcmp(*a, key);
    if (!found) return c5_error_raise(C5_ERR_ARG, "%s: unknown %s key '%s'", file, what, key);
  }
  return C5_OK;
}

c5_status cli_check_device(const char *device, const char *matmul)
{
  if (strcmp(device, "cpu") && strcmp(device, "cuda"))
    return c5_error_raise(C5_ERR_ARG, "--device %s: expected cpu or cuda", device);
  if (strcmp(matmul, "fp32") && strcmp(matmul, "tf32") && strcmp(matmul, "bf16"))
    return c5_error_raise(C5_ERR_ARG, "--matmul %s: expected fp32, tf32 or bf16", matmul);
  if (strcmp(matmul, "fp32") && strcmp(device, "cuda"))
    return c5_error_raise(C5_ERR_ARG, "--matmul %s: only --device cuda has TF32/bf16 products", matmul);
  return C5_OK;
}

/* This rank's node-local rank (as the launchers export it; 0 when none does): which GPU it takes. */
static int local_rank(void)
{
  const char *vars[] = { "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_LOCAL_RANK", "SLURM_LOCALID" };
  for (size_t k = 0; k < sizeof vars / sizeof *vars; k++) {
    const char *v = getenv(vars[k]);
    if (v && *v) return atoi(v);
  }
  return 0;
}

c5_status cli_device_open(const char *device, const char *matmul, cli_device *dv)
{
  *dv = (cli_device){ .be = c5_backend_cpu(), .matmul = C5_MATMUL_FP32 };
  c5_status st = cli_check_device(device, matmul);
  if (st != C5_OK || !strcmp(device, "cpu")) return st;
  int ngpu = c5_backend_device_count(C5_BACKEND_CUDA);
  if (ngpu <= 0) {
    /* a build without CUDA kernels says so itself; with them, no device is the reason */
    st = c5_backend_create(C5_BACKEND_CUDA, 0, &dv->gpu);
    c5_backend_destroy(&dv->gpu);
    if (st == C5_ERR_NOTIMPL) return st;
    return c5_error_raise(C5_ERR_ARG, "--device cuda: no GPU is visible to this process (CUDA_VISIBLE_DEVICES?)");
  }
  dv->ngpu = ngpu;
  dv->gpu_id = local_rank() % ngpu;
  dv->matmul = !strcmp(matmul, "tf32") ? C5_MATMUL_TF32 : !strcmp(matmul, "bf16") ? C5_MATMUL_BF16 : C5_MATMUL_FP32;
  st = c5_backend_create(C5_BACKEND_CUDA, dv->gpu_id, &dv->gpu);
  if (st == C5_OK) st = c5_backend_set_matmul(dv->gpu, dv->matmul);
  if (st != C5_OK) {
    cli_device_close(dv);
    return st;
  }
  dv->be = dv->gpu;
  return C5_OK;
}

void cli_device_close(cli_device *dv)
{
  c5_backend_destroy(&dv->gpu);
  dv->be = c5_backend_cpu();
}

const char *cli_device_products(const cli_device *dv)
{
  return sizeof(c5_real) == 8 ? "fp64" : c5_matmul_name(dv->matmul);
}

void cli_device_describe(const cli_device *dv, int nranks, char *buf, size_t len)
{
  char name[128] = "";
  if (!dv->gpu) {
    snprintf(buf, len, "cpu");
    return;
  }
  if (c5_backend_device_name(dv->gpu, name, sizeof name) != C5_OK) snprintf(name, sizeof name, "?");
  if (nranks == 1)
    snprintf(buf, len, "%s (%s, GPU %d, matmul %s)", c5_backend_name(dv->gpu), name, dv->gpu_id,
             cli_device_products(dv));
  else
    snprintf(buf, len, "%s (%s, GPU local rank %% %d: rank 0 on GPU %d, matmul %s)", c5_backend_name(dv->gpu), name,
             dv->ngpu, dv->gpu_id, cli_device_products(dv));
}
