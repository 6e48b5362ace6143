#!/bin/sh
# build.sh PRECISION - configure and build out of tree in build-PRECISION/
# (PRECISION = double or single; sanitize: double precision under
# AddressSanitizer and UndefinedBehaviorSanitizer, jobs/sanitize.sh). Extra
# arguments go to configure.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
prec=${1:-double}; [ $# -gt 0 ] && shift
[ -x "$top/configure" ] || (cd "$top" && autoreconf -fi > /dev/null)
mkdir -p "$top/build-$prec"
cd "$top/build-$prec"
case $prec in
  sanitize) set -- --with-precision=double --enable-sanitizers "$@" ;;
  *) set -- --with-precision="$prec" "$@" ;;
esac
[ -f Makefile ] || "$top/configure" "$@" > configure.out
make -j"$(nproc)" > make.out
echo "built $top/build-$prec"
