/* test_params_io.c - the parameter table through the HDF5 layer: a block's
   parameters written and read back bit for bit; a write that fails leaves
   the existing file as it was; reading checks names, shapes and extra
   datasets. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "harness.h"
#include "colt5_io.h"

static c5_status make_block(c5_params **p, c5_block **b, int dim)
{
  c5_block_config cfg;
  c5_routed_attn_config a = C5_ROUTED_ATTN_CONFIG_DEFAULT;
  c5_routed_ff_config f = C5_ROUTED_FF_CONFIG_DEFAULT;
  a.dim = dim; a.num_heavy_tokens_q = 4; a.num_heavy_tokens_kv = 4; a.light_heads = 2; a.light_dim_head = 4;
  a.light_window_size = 8; a.heavy_heads = 2; a.heavy_dim_head = 4;
  f.dim = dim; f.num_heavy_tokens = 4;
  cfg.attn = a;
  cfg.ff = f;
  c5_status st = c5_params_create(c5_backend_cpu(), p);
  if (st == C5_OK) st = c5_block_create(&cfg, *p, "blocks.0", b);
  if (st == C5_OK) st = c5_params_alloc(*p);
  return st;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int ok = 0;
  char dir[] = "/tmp/c5_params_io_XXXXXX", path[256], bad[300];
  c5_params *p = NULL, *q = NULL, *r = NULL;
  c5_block *b = NULL, *b2 = NULL, *b3 = NULL;
  c5_h5 f = { .file = H5I_INVALID_HID };
  T_CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
  snprintf(path, sizeof path, "%s/params.h5", dir);
  snprintf(bad, sizeof bad, "%s/no/such/dir/params.h5", dir);
  T_OK(make_block(&p, &b, 8));
  unsigned long long seed = 3;
  for (long i = 0; i < c5_params_total(p); i++) c5_params_value(p, 0)[i] = (c5_real)t_normal(&seed);
  T_OK(c5_h5_write_params(path, "/params", p, 0, "{\"note\": \"test\"}"));
  T_OK(make_block(&q, &b2, 8));
  T_OK(c5_h5_open_read(path, &f));
  T_OK(c5_h5_read_params(&f, "/params", q));
  T_CHECK(!memcmp(c5_params_value(p, 0), c5_params_value(q, 0), (size_t)c5_params_total(p) * sizeof(c5_real)),
          "parameters differ after a write and a read");
  T_OK(c5_h5_close(&f));
  printf("write + read: %ld parameters (%ld values) identical\n", c5_params_count(p), c5_params_total(p));
  /* a failed write names the file and leaves the existing one intact */
  T_FAILS(c5_h5_write_params(bad, "/params", p, 0, NULL), C5_ERR_IO, "no/such/dir/params.h5.tmp");
  T_OK(c5_h5_open_read(path, &f));
  memset(c5_params_value(q, 0), 0, (size_t)c5_params_total(q) * sizeof(c5_real));
  T_OK(c5_h5_read_params(&f, "/params", q));
  T_CHECK(!memcmp(c5_params_value(p, 0), c5_params_value(q, 0), (size_t)c5_params_total(p) * sizeof(c5_real)),
          "existing file changed by a failed write");
  /* a model of another size: the message names the dataset and both shapes */
  T_OK(make_block(&r, &b3, 12));
  T_FAILS(c5_h5_read_params(&f, "/params", r), C5_ERR_SHAPE, "has shape [8], expected [12]");
  T_OK(c5_h5_close(&f));
  printf("failed write leaves the file; wrong shapes are named\n");
  /* one byte of a parameter's data flipped: Fletcher32 refuses the file, naming the checksum */
  {
    FILE *fp = fopen(path, "r+b");
    T_CHECK(fp != NULL, "cannot reopen %s", path);
    static char img[1 << 20];
    size_t len = fread(img, 1, sizeof img, fp);
    const c5_real *v = c5_params_value(p, 3);
    char *at = memmem(img, len, v, 2 * sizeof *v);
    T_CHECK(at != NULL, "parameter 3's values not found in the file");
    at[1] ^= 0x10;
    fseek(fp, at + 1 - img, SEEK_SET);
    fputc(at[1], fp);
    fclose(fp);
    T_OK(c5_h5_open_read(path, &f));
    c5_status rs = c5_h5_read_params(&f, "/params", q);
    printf("corrupted data: %s\n", c5_last_error());
    T_CHECK(rs == C5_ERR_IO && strstr(c5_last_error(), "checksum"), "a corrupted parameter file was not refused "
            "naming the checksum (status %d)", (int)rs);
    c5_error_clear();
    T_OK(c5_h5_close(&f));
  }
  ok = 1;
fail:
  c5_h5_close(&f);
  c5_block_destroy(&b); c5_block_destroy(&b2); c5_block_destroy(&b3);
  c5_params_destroy(&p); c5_params_destroy(&q); c5_params_destroy(&r);
  unlink(path);
  rmdir(dir);
  MPI_Finalize();
  return ok ? 0 : 1;
}
