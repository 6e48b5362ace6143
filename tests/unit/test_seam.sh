#!/bin/sh
# test_seam.sh - the backend seam holds in the sources (docs/design.md §4):
#   lib/ orchestrates and kernels/ computes: no lib/*.c or lib/*.h uses
#     OpenMP (#pragma omp, omp_ calls, <omp.h>), CBLAS or SLEEF;
#   dist speaks MPI: no MPI name (MPI_..., an include of mpi.h, colt5_mpi.h or
#     dist_mpi.h) in lib/ outside dist.c, error.c, h5.c, the public
#     colt5_mpi.h and the private dist_mpi.h;
#   apps call MPI_Init and MPI_Finalize only (and name MPI_COMM_WORLD to make
#     their dist): every other collective is a dist job.
# Comments are stripped first: they may name what the code may not use.
set -u
top=${top_srcdir:-.}
fail=0

# A C file without its comments (strings kept; a comment marker inside one is rare enough here).
strip() {
  awk '
    BEGIN { inc = 0 }
    {
      line = $0; out = ""; i = 1; n = length(line); instr = 0
      while (i <= n) {
        c = substr(line, i, 1); d = substr(line, i, 2)
        if (inc) { if (d == "*/") { inc = 0; i += 2 } else i++; continue }
        if (instr) { out = out c; if (c == "\\") { out = out substr(line, i + 1, 1); i += 2; continue }
                     if (c == "\"") instr = 0; i++; continue }
        if (d == "/*") { inc = 1; i += 2; continue }
        if (d == "//") break
        if (c == "\"") instr = 1
        out = out c; i++
      }
      print out
    }' "$1"
}

# check FILE REGEX WHAT: fail with the offending lines when FILE (comments stripped) matches.
check() {
  hits=$(strip "$1" | grep -nE "$2")
  if [ -n "$hits" ]; then
    echo "FAIL: $1: $3:"; echo "$hits" | sed 's/^/    /'; fail=1
  fi
}

for f in "$top"/lib/*.c "$top"/lib/*.h; do
  check "$f" '#[[:space:]]*pragma[[:space:]]+omp|\bomp_[a-z_]+[[:space:]]*\(|#[[:space:]]*include[[:space:]]*<omp\.h>' \
    "OpenMP in lib/ (a kernel's work: kernels/)"
  check "$f" 'cblas|[Ss]leef|SLEEF' "CBLAS or SLEEF in lib/ (a kernel's work: kernels/)"
  case $(basename "$f") in
    dist.c|error.c|h5.c|colt5_mpi.h|dist_mpi.h) ;;
    *) check "$f" '\bMPI_[A-Za-z]|#[[:space:]]*include[[:space:]]*[<"]((colt5|dist)_)?mpi\.h' \
         "MPI outside dist (lib/dist.c, error.c, h5.c and the headers colt5_mpi.h, dist_mpi.h)" ;;
  esac
done

for f in "$top"/apps/*.c; do
  hits2=$(strip "$f" | grep -noE '\bMPI_[A-Za-z_]+' | grep -vE ':MPI_(Init|Finalize|COMM_WORLD)$')
  if [ -n "$hits2" ]; then echo "FAIL: $f: MPI beyond MPI_Init/Finalize (use the dist API):"; echo "$hits2" | sed 's/^/    /'; fail=1; fi
done

[ $fail = 0 ] && echo "ok: the seam holds in lib/ and apps/"
exit $fail
