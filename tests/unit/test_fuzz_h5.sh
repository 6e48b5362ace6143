#!/bin/sh
# test_fuzz_h5.sh - damaged HDF5 files through the library's readers
# (tests/unit/fuzz_h5.c): seeded byte flips, overwrites and truncations of
# golden files, each read in a child under a time limit. Every case must end
# in a clean read or a clear refusal (exit 0 or 2), never a signal or a hang.
# Then the regression inputs: cases of other seeds that crashed or hung
# inside libhdf5 1.10.8 (H5HG_read, a damaged global heap reference) before
# lib/h5.c checked variable-length strings, replayed through the harness and
# colt5-golden: each must be refused naming the damage (docs/bad-input.md); and a group's local heap
# whose free list loops (H5Lexists never returned before lib/h5_header.c walked it), a message flagged
# shared in a shared message heap the file cannot have (H5Dopen2 crashed), a variable-length string type
# of 4-byte elements (H5Aread overflowed).
# C5_FUZZ_CASES sets the cases per file (default 80; the campaign in
# docs/bad-input.md ran 1000 per file and seed).
set -u
b=${top_builddir:-.}; s=${top_srcdir:-.}
g="$s/tests/golden"
fz="$b/tests/unit/fuzz_h5"
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
fail=0
# FILE:CASE of seed 1 that crash inside libhdf5 and cannot be prevented (none since the checks of lib/h5.c)
known=none
timeout 300 "$fz" --mutate 1 "${C5_FUZZ_CASES:-80}" --timeout 10 --skip "$known" \
  "$g/cd_const_eps.h5" "$g/ff_basic.h5" "$g/attn_masked.h5" "$g/block_basic.h5" > "$tmp/log" 2>&1 || fail=1
tail -n 1 "$tmp/log"; grep FAIL "$tmp/log"
# seed case file: a libhdf5 SIGSEGV (s) or endless loop (l) before the checks
for r in "2 242 cd_const_eps s" "2 508 cd_const_eps s" "3 262 cd_const_eps s" "4 315 cd_const_eps s" \
         "2 282 ff_basic s" "2 526 ff_basic l" "3 221 ff_basic s" "4 147 ff_basic s" "4 463 ff_basic s" \
         "2 276 ff_basic l" "3 626 ff_basic l" "2 370 ff_basic l" "4 30 ff_basic l"; do
  set -- $r
  "$fz" --emit "$1" "$2" "$g/$3.h5" "$tmp/r.h5" > "$tmp/what" || { fail=1; continue; }
  timeout 60 "$fz" "$tmp/r.h5" > "$tmp/out" 2>&1; rc=$?
  if [ $rc -eq 2 ] && grep -q "is damaged\|bad global heap\|past end" "$tmp/out"; then echo "ok: $(cat "$tmp/what") -> refused"
  else echo "FAIL: $(cat "$tmp/what") -> exit $rc:"; head -3 "$tmp/out"; fail=1; fi
done
# and through colt5-golden itself: exit 2 with the message, on one rank and on two
for r in "2 508 cd_const_eps" "3 626 ff_basic"; do
  set -- $r
  "$fz" --emit "$1" "$2" "$g/$3.h5" "$tmp/r.h5" > /dev/null || { fail=1; continue; }
  timeout 60 "$b/apps/colt5-golden" "$tmp/r.h5" > "$tmp/out" 2>&1; rc=$?
  if [ $rc -eq 2 ] && grep -q "is damaged" "$tmp/out"; then echo "ok: colt5-golden on $3 case $2 of seed $1 -> exit 2, damaged"
  else echo "FAIL: colt5-golden on $3 case $2 of seed $1 -> exit $rc:"; head -3 "$tmp/out"; fail=1; fi
done
timeout 120 mpirun --oversubscribe -np 2 "$b/apps/colt5-golden" "$tmp/r.h5" > "$tmp/out" 2>&1; rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "rank 0: .*is damaged" "$tmp/out"; then echo "ok: 2 ranks -> refused on both"
else echo "FAIL: 2 ranks -> exit $rc:"; head -3 "$tmp/out"; fail=1; fi
# a group's local heap whose free list loops (libhdf5 follows it forever at the first lookup in the group):
# the fuzz_golden input (a 0-byte block naming itself the next one), and the same block given 16 bytes (a
# sound size: only the walk's bound stops it); each refused through the harness and colt5-golden
cp "$s/tests/fuzz/regress/golden/golden-local-heap-free-list-loop.h5" "$tmp/heap0.h5" || fail=1
cp "$tmp/heap0.h5" "$tmp/heap16.h5" || fail=1
# the free block at offset 240 of /params' data segment (at byte 18960): next 240, size 16
printf '\360\0\0\0\0\0\0\0\020\0\0\0\0\0\0\0' | dd of="$tmp/heap16.h5" bs=1 seek=19200 conv=notrunc 2> /dev/null || fail=1
for r in "heap0 claims 0 bytes" "heap16 goes on past 22 blocks"; do
  h=${r%% *} want=${r#* }
  for exe in "$fz" "$b/apps/colt5-golden"; do
    timeout 60 "$exe" "$tmp/$h.h5" > "$tmp/out" 2>&1; rc=$?
    if [ $rc -eq 2 ] && grep -q "local heap of group /params (at byte 1568) is damaged: .*$want" "$tmp/out"; then
      echo "ok: $(basename "$exe") on $h.h5 -> exit 2, the local heap of /params"
    else echo "FAIL: $(basename "$exe") on $h.h5 -> exit $rc:"; head -3 "$tmp/out"; fail=1; fi
  done
done
# fuzz_golden inputs that crashed libhdf5 past the checks above, each refused naming the damage: a dataset's
# fill-value message flagged shared in the shared message heap a superblock-0 file has none of (H5Dopen2:
# SIGSEGV in H5SM_get_fheap_addr); the module string's datatype claiming 4-byte elements (H5Aread: a heap
# overflow copying its 16-byte reference); a dataset's layout turned compact with 0 bytes of its 3200 (H5Dread:
# SIGSEGV, a memcpy from address 0)
for r in "golden-fill-value-shared-sohm-segv|/params/layers.0.conditional_ff.light_ff.0.gamma is damaged (its message of type 5 .*shared message heap" \
         "golden-vlen-size-4-H5Aread-overflow|object header of / is damaged (.*variable-length datatype claims 4-byte elements" \
         "golden-compact-layout-0-bytes-segv|object header of /inputs/s is damaged (its compact layout holds 0 bytes"; do
  h=${r%%|*} want=${r#*|}
  for exe in "$fz" "$b/apps/colt5-golden"; do
    timeout 60 "$exe" "$s/tests/fuzz/regress/golden/$h.h5" > "$tmp/out" 2>&1; rc=$?
    if [ $rc -eq 2 ] && grep -q "$want" "$tmp/out"; then echo "ok: $(basename "$exe") on $h -> exit 2, damaged"
    else echo "FAIL: $(basename "$exe") on $h -> exit $rc:"; head -3 "$tmp/out"; fail=1; fi
  done
done
# out of memory inside libhdf5 (a 64 MiB compressed chunk under a limited address space): its own
# message, not "unknown HDF5 error" (exit 77: not under AddressSanitizer)
"$fz" --oom "$s/tests/data/big_chunk.h5" /inputs/x > "$tmp/out" 2>&1; rc=$?
if [ $rc -eq 77 ]; then echo "skip: --oom under AddressSanitizer"
elif [ $rc -eq 2 ] && grep -q "reading dataset /inputs/x failed (.*memory allocation failed" "$tmp/out"; then echo "ok: $(head -1 "$tmp/out")"
else echo "FAIL: --oom -> exit $rc:"; head -3 "$tmp/out"; fail=1; fi
exit $fail
