/* params_h5.c - parameters in an HDF5 file: write a module's parameters,
   read them into a second table, and check that the two agree and give the
   same output. The file holds one dataset per parameter, /params/<name>,
   named and shaped as the reference's PyTorch state_dict (docs/formats.md),
   so h5py or the reference can read it too.

     cc params_h5.c $(pkg-config --cflags --libs libcolt5) -lm -o params_h5
     ./params_h5 [FILE.h5]          (default params.h5, overwritten) */
#include <string.h>
#include "example.h"
#include "colt5_io.h"

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  const char *path = argc > 1 ? argv[1] : "params.h5";
  c5_dist *d = NULL;
  CHECK(c5_dist_create(MPI_COMM_SELF, &d));

  c5_routed_ff_config cfg = C5_ROUTED_FF_CONFIG_DEFAULT;
  cfg.dim = 16;
  cfg.num_heavy_tokens = 8;

  /* The table written... */
  c5_params *p = NULL, *q = NULL;
  c5_routed_ff *ff = NULL, *ff2 = NULL;
  CHECK(c5_params_create(c5_backend_cpu(), &p));
  CHECK(c5_routed_ff_create(&cfg, p, "ff", &ff));   /* names "ff.light_ff.1.weight", ... */
  CHECK(c5_params_alloc(p));
  ex_fill_params(p, 3);
  /* Written to a temporary name and renamed: an old file is never left half-written. */
  CHECK(c5_h5_write_params(path, "/params", p, 0, "{\"example\": \"params_h5\"}"));
  printf("wrote %ld parameters to %s\n", c5_params_count(p), path);

  /* ...and a table of the same modules read from the file: every dataset
     must be there with its shape, and no other. */
  CHECK(c5_params_create(c5_backend_cpu(), &q));
  CHECK(c5_routed_ff_create(&cfg, q, "ff", &ff2));
  CHECK(c5_params_alloc(q));
  c5_h5 f;
  CHECK(c5_h5_open_read(path, &f));
  CHECK(c5_h5_read_params(&f, "/params", q));
  char *meta = NULL;
  CHECK(c5_h5_attr_string(&f, "/", "meta", &meta));
  CHECK(c5_h5_close(&f));
  printf("read them back (meta %s)\n", meta);
  free(meta);

  int ok = c5_params_count(p) == c5_params_count(q);
  for (long i = 0; ok && i < c5_params_count(p); i++)
    ok = !strcmp(c5_params_name(p, i), c5_params_name(q, i)) &&
         !memcmp(c5_params_value(p, i), c5_params_value(q, i), c5_params_numel(p, i) * sizeof(c5_real));

  /* The same parameters give the same output, bit for bit. */
  const long batch = 1, n = 32, len = batch * n * cfg.dim;
  long unit;
  c5_layout lay;
  CHECK(c5_routed_ff_layout_unit(&cfg, &unit));
  CHECK(c5_layout_compute(d, n, unit, &lay));
  c5_routed_ff_cache *c1 = NULL, *c2 = NULL;
  CHECK(c5_routed_ff_cache_create(ff, batch, n, &c1));
  CHECK(c5_routed_ff_cache_create(ff2, batch, n, &c2));
  c5_real *x = malloc(len * sizeof *x), *y1 = malloc(len * sizeof *y1), *y2 = malloc(len * sizeof *y2);
  if (!x || !y1 || !y2) { fprintf(stderr, "out of memory\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
  ex_fill(x, len, 5);
  CHECK(c5_routed_ff_forward(ff, d, &lay, batch, x, NULL, c1, y1));
  CHECK(c5_routed_ff_forward(ff2, d, &lay, batch, x, NULL, c2, y2));
  ok = ok && !memcmp(y1, y2, len * sizeof *y1);
  printf("values and output of the table read equal the table written: %s\n", ok ? "ok" : "FAILED");

  /* A file for another configuration is refused, naming the dataset and both shapes. */
  c5_routed_ff_config other = cfg;
  other.dim = 8;
  c5_params *r = NULL;
  c5_routed_ff *ff3 = NULL;
  CHECK(c5_params_create(c5_backend_cpu(), &r));
  CHECK(c5_routed_ff_create(&other, r, "ff", &ff3));
  CHECK(c5_params_alloc(r));
  CHECK(c5_h5_open_read(path, &f));
  c5_status st = c5_h5_read_params(&f, "/params", r);
  CHECK(c5_h5_close(&f));
  printf("reading it for dim %d: %s\n  %s\n", other.dim, c5_status_string(st), c5_last_error());
  ok = ok && st == C5_ERR_SHAPE;
  c5_error_clear();

  free(x); free(y1); free(y2);
  c5_routed_ff_cache_destroy(&c1);
  c5_routed_ff_cache_destroy(&c2);
  c5_routed_ff_destroy(&ff);
  c5_routed_ff_destroy(&ff2);
  c5_routed_ff_destroy(&ff3);
  c5_params_destroy(&p);
  c5_params_destroy(&q);
  c5_params_destroy(&r);
  c5_dist_destroy(&d);
  MPI_Finalize();
  return ok ? 0 : 1;
}
