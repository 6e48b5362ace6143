#!/bin/sh
# build.sh PRECISION [CONFIGURE-ARGS...] - configure and build out of tree in
# build-PRECISION/ (PRECISION = double or single; sanitize: double precision
# under AddressSanitizer and UndefinedBehaviorSanitizer, jobs/sanitize.sh).
# Configures when there is no Makefile yet or when arguments are given that
# differ from the last configure's (kept in build-PRECISION/configure.args);
# otherwise builds what changed (make reruns configure with the last
# arguments when configure.ac or Makefile.am changed).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
prec=${1:-double}; [ $# -gt 0 ] && shift
given=$#
case $prec in
  double|single) set -- --with-precision="$prec" "$@" ;;
  sanitize) set -- --with-precision=double --enable-sanitizers "$@" ;;
  *) echo "build.sh: precision '$prec': expected double, single or sanitize" >&2; exit 2 ;;
esac
[ -x "$top/configure" ] || (cd "$top" && autoreconf -fi > /dev/null)
mkdir -p "$top/build-$prec"
cd "$top/build-$prec"
# The arguments, one per line, so that spaces inside one stay inside it.
want=$(printf '%s\n' "$@")
have=$(cat configure.args 2>/dev/null || true)
if [ ! -f Makefile ] || { [ "$given" -gt 0 ] && [ "$want" != "$have" ]; }; then
  echo "build.sh: configuring build-$prec: $*"
  rm -f configure.args
  "$top/configure" "$@" > configure.out || {
    echo "build.sh: configure failed (build-$prec/configure.out, config.log):" >&2; tail -5 configure.out >&2; exit 1; }
  printf '%s\n' "$@" > configure.args.tmp && mv configure.args.tmp configure.args
fi
make -j"$(nproc)" > make.out
echo "built $top/build-$prec"
