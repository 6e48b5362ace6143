#!/bin/sh
# test_valgrind.sh - a short colt5-train run (1 rank, 3 steps of a tiny model) under Valgrind's
# memcheck with --leak-check=full is clean for libcolt5's own allocations (jobs/valgrind.sh: any
# memcheck error or definite/indirect leak outside OpenMPI's suppressed noise fails). Skips (77)
# without valgrind, and in a sanitizer build (memcheck cannot run ASan binaries).
b=$(cd "${top_builddir:-.}" && pwd)
s=${top_srcdir:-.}
grep -q -- "--enable-sanitizers\|--enable-fuzzers" "$b/configure.args" 2>/dev/null && { echo "sanitizer build: skipped"; exit 77; }
C5_VALGRIND_BUILD=$b exec "$s/jobs/valgrind.sh" 1
