#!/bin/sh
# build.sh PRECISION - configure and build out of tree in build-PRECISION/
# (PRECISION = double or single). Extra arguments go to configure.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
prec=${1:-double}; [ $# -gt 0 ] && shift
[ -x "$top/configure" ] || (cd "$top" && autoreconf -fi > /dev/null)
mkdir -p "$top/build-$prec"
cd "$top/build-$prec"
[ -f Makefile ] || "$top/configure" --with-precision="$prec" "$@" > configure.out
make -j"$(nproc)" > make.out
echo "built $top/build-$prec"
