#!/bin/sh
# test_golden_cli.sh - colt5-golden's exit codes and messages on bad input:
# 2 for usage and I/O errors (naming the file, dataset or key), 1 when a
# tensor disagrees, 77 for a module not implemented yet.
set -u
b=${top_builddir:-.}; s=${top_srcdir:-.}
g="$b/apps/colt5-golden"
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
fail=0
expect() {   # expect CODE NEEDLE -- command...
  code=$1; needle=$2; shift 3
  "$@" > "$tmp/out" 2>&1; rc=$?
  if [ "$rc" != "$code" ] || ! grep -q -- "$needle" "$tmp/out"; then
    echo "FAIL: $* -> exit $rc (want $code), output:"; cat "$tmp/out"; fail=1
  else echo "ok: exit $code: $needle"; fi
}
expect 2 "no such file" -- "$g" "$tmp/missing.h5"
echo "not hdf5" > "$tmp/bad.h5"
expect 2 "not a readable HDF5 file" -- "$g" "$tmp/bad.h5"
expect 2 "usage" -- "$g"
expect 2 "colt5-golden: unknown option --bogus" -- "$g" --bogus "$s/tests/golden/cd_const_eps.h5"
expect 2 "colt5-golden: option --tol needs a value" -- "$g" --tol
# more ranks than the sequence has layout units: refused on every rank, naming the counts
expect 2 "9 ranks for a sequence of 64 tokens = 8 units of 8: at most 8 ranks" -- \
  timeout 120 mpirun --oversubscribe -np 9 "$g" "$s/tests/golden/attn_basic.h5"
expect 2 "expected a positive number" -- "$g" --tol abc "$s/tests/golden/cd_const_eps.h5"
expect 0 "PASS" -- "$g" "$s/tests/golden/cd_const_eps.h5"
# a bound no float can meet: the comparison must be able to fail
expect 1 "FAIL" -- "$g" --tol 1e-30 --floor 0 "$s/tests/golden/cd_const_eps.h5"
# edited copies (tests/data/README.md): an unknown args key, a missing dataset
expect 2 "unknown args key 'bogus'" -- "$g" "$s/tests/data/cd_bad_key.h5"
expect 2 "dataset /inputs/grad_y is missing" -- "$g" "$s/tests/data/cd_missing_dataset.h5"
# bad parameter files and options: the message names the dataset or the option
expect 2 "dataset /params/heavy_ff.1.weight is missing" -- "$g" "$s/tests/data/ff_missing_param.h5"
expect 2 "dataset /params/light_ff.1.weight has shape \[24,47\], expected \[24,48\]" -- "$g" "$s/tests/data/ff_wrong_shape.h5"
expect 2 "dataset /params/light_ff.0.gamma has integer elements" -- "$g" "$s/tests/data/ff_wrong_dtype.h5"
expect 2 "heavy_heads = 4 must be divisible by num_routed_kv = 3" -- "$g" "$s/tests/data/attn_heads_routes.h5"
expect 2 "heavy_dim_head = -16 must be > 0" -- "$g" "$s/tests/data/attn_negative_dim.h5"
expect 2 "unknown ctor key 'light_window'" -- "$g" "$s/tests/data/block_unknown_option.h5"
# an option of the wrong type or range is refused, not read as its default (a string, 1e300, a string bool)
expect 2 "option 'num_heavy_tokens' is \"16\", expected an integer" -- "$g" "$s/tests/data/ff_string_option.h5"
expect 2 "option 'num_heavy_tokens' is 1.0000000000000001e300, expected an integer" -- "$g" "$s/tests/data/ff_huge_option.h5"
expect 2 "option 'rotary_emb' is \"yes\", expected true or false" -- "$g" "$s/tests/data/attn_string_bool.h5"
expect 2 "args n_iters = 4294967346, expected an integer from 1" -- "$g" "$s/tests/data/cd_n_iters_wrap.h5"
expect 2 "--tol inf: expected a positive number (finite)" -- "$g" --tol inf "$s/tests/golden/cd_const_eps.h5"
# sizes, values and attributes a file claims (tests/data/README.md; docs/bad-input.md)
expect 2 "dataset /inputs/x has shape \[1,36028797018963968,64\]: its element count overflows" -- "$g" "$s/tests/data/ff_x_shape_wraps.h5"
expect 2 "out of memory for k per row (4000000000 elements" -- "$g" "$s/tests/data/cd_huge_input.h5"
expect 2 "dataset /inputs/x has NaN at index \[0, 3, 5\]" -- "$g" "$s/tests/data/ff_nan_input.h5"
expect 2 "dataset /inputs/s has +Inf at index \[1, 2\]" -- "$g" "$s/tests/data/cd_inf_input.h5"
expect 2 "dataset /params/light_ff.1.weight has -Inf at index \[0, 7\]" -- "$g" "$s/tests/data/ff_nan_param.h5"
expect 2 "dataset /inputs/x has shape \[0,96,48\]: the batch (dimension 0) must be >= 1" -- "$g" "$s/tests/data/ff_batch0.h5"
expect 2 "attribute module of / is empty" -- "$g" "$s/tests/data/ff_empty_module.h5"
: > "$tmp/empty.h5"
expect 2 "not a readable HDF5 file" -- "$g" "$tmp/empty.h5"
head -c 20000 "$s/tests/golden/cd_const_eps.h5" > "$tmp/trunc.h5"
expect 2 "truncated file" -- "$g" "$tmp/trunc.h5"
# a module not implemented yet: skip
expect 77 "not implemented yet" -- "$g" "$s/tests/data/image_attn_module.h5"
# a sound file of superblock version 1 (its base address 4 bytes further on): read through the checks of
# h5py's layout (lib/h5_header.c), not refused as a damaged superblock
expect 0 "PASS" -- "$g" "$s/tests/data/cd_superblock_v1.h5"
exit $fail
