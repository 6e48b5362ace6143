#!/bin/sh
# test_configure.sh - configure --help lists every option of the build, and
# a bad value of each is refused (exit 1) by a message naming the option and
# the value, before anything is built. Runs configure in a scratch folder.
set -u
s=${top_srcdir:-.}
s=$(cd "$s" && pwd)
# configure refuses to run elsewhere once the source folder holds an in-tree build.
[ -f "$s/config.status" ] && { echo "SKIP: $s is configured in place (configure runs only there)"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
fail=0
help=$("$s/configure" --help)
for opt in --with-precision --with-mpi --with-hdf5 --with-blas --with-cuda --enable-shared --enable-static \
           --prefix C5_REFERENCE NVCC_FLAGS; do
  printf '%s\n' "$help" | grep -q -- "$opt" && echo "ok: --help lists $opt" || { echo "FAIL: --help does not list $opt"; fail=1; }
done
printf '%s\n' "$help" | grep -q "Report bugs to <\?libcolt5 issues" && echo "ok: --help names the bug-report address" \
  || { echo "FAIL: no bug-report address in --help"; fail=1; }
# refused ARG WANT: configure ARG exits non-zero with "error: WANT"
refused() {
  out=$("$s/configure" "$1" 2>&1); rc=$?
  if [ $rc -ne 0 ] && printf '%s\n' "$out" | grep -qF -- "error: $2"; then
    echo "ok: $1 -> $(printf '%s\n' "$out" | grep 'error:')"
  else
    echo "FAIL: $1 (exit $rc), want \"error: $2\":"; printf '%s\n' "$out" | tail -3; fail=1
  fi
}
refused --with-precision=quad "--with-precision=quad: expected double or single"
refused --with-mpi=bogus "--with-mpi=bogus: expected openmpi or mpich"
refused --without-mpi "--without-mpi: libcolt5 needs MPI"
refused --with-blas=bogus "--with-blas=bogus: expected openblas-openmp, openblas-pthread or openblas"
refused --with-openblas=bogus "--with-openblas=bogus: expected openmp, pthread or system"
refused --with-hdf5=bogus "--with-hdf5=bogus: neither a directory nor a pkg-config module"
refused --with-hdf5=/nonexistent/hdf5 "--with-hdf5=/nonexistent/hdf5: no such directory"
refused --with-cuda=/nonexistent/cuda "--with-cuda=/nonexistent/cuda: no such directory"
exit $fail
