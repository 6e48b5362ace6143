#!/bin/sh
# test_load_checkpoint.sh - tools/load_checkpoint.py --check-only (h5py, no
# torch) on a checkpoint of the default configuration written by the library
# (test_checkpoint default): its /params match tests/data/model_state_dict.txt,
# the wrapper's state_dict; one of another configuration is refused, naming
# the dataset and both shapes. Skipped (77) without h5py.
set -u
b=${top_builddir:-.}
top=${top_srcdir:-.}
py=${PYTHON:-python3}
$py -c 'import h5py' 2> /dev/null || { echo "SKIP: no h5py for $py"; exit 77; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/c5_load.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
fail=0
OMP_NUM_THREADS=1 "$b/tests/unit/test_checkpoint" default "$dir" || { echo "FAIL: test_checkpoint default"; exit 1; }
if $py "$top/tools/load_checkpoint.py" --check-only "$dir/ckpt-00000007.h5"; then echo "ok: default configuration"
else echo "FAIL: the default configuration's checkpoint does not match the list"; fail=1; fi
$py "$top/tools/load_checkpoint.py" --check-only "$dir/other.h5" > "$dir/out" 2>&1
rc=$?
cat "$dir/out"
if [ $rc -eq 1 ] && grep -q 'dataset /params/layers.0.conditional_attn.light_attn.to_qkv.weight has shape \[96,64\], the list.s is \[192,64\]' "$dir/out"; then
  echo "ok: another configuration refused"
else echo "FAIL: another configuration: exit $rc, or the message does not name the dataset and both shapes"; fail=1; fi
exit $fail
