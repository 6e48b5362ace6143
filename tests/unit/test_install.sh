#!/bin/sh
# test_install.sh - the library as a user gets it: `make install` into a
# temporary DESTDIR, then every installed example is built there with a plain
# C compiler and `pkg-config --cflags --libs libcolt5` alone (linked against
# the shared library) and run; then, with the shared library removed, built
# with `pkg-config --static` (libcolt5.a and every dependency from
# Libs.private / Requires.private) and run again. Also: the installed apps
# answer --version with this version, colt5-bench's default reference script
# is the installed one, the man pages and docs are there.
set -u
b=${top_builddir:-.}
b=$(cd "$b" && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cc=${C5_TEST_CC:-cc}
command -v pkg-config > /dev/null || { echo "SKIP: no pkg-config"; exit 77; }
command -v "$cc" > /dev/null || { echo "SKIP: no C compiler $cc"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
D=$tmp/dest
fail=0
bad() { echo "FAIL: $*"; fail=1; }

${MAKE:-make} -C "$b" install DESTDIR="$D" > "$tmp/install.log" 2>&1 || {
  echo "FAIL: make install DESTDIR=$D:"; tail -20 "$tmp/install.log"; exit 1; }
pc=$(find "$D" -name libcolt5.pc | head -1)
[ -n "$pc" ] || { echo "FAIL: no libcolt5.pc installed"; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# The .pc names the final prefix; the files are under DESTDIR: its own path
# variables move there (a --define-variable would move those of the MPI's .pc too).
sed -i "s#^\(prefix\|exec_prefix\|libdir\|includedir\|datarootdir\|pkgdatadir\)=/#\1=$D/#" "$pc"
pcv() { pkg-config "$@" libcolt5; }
libdir=$(pcv --variable=libdir); pkgdatadir=$(pcv --variable=pkgdatadir)
bindir=$(dirname "$(find "$D" -type f -name colt5-golden | head -1)")
docex=$(find "$D" -type d -path '*/examples' | head -1)
version=$(pcv --modversion)
echo "installed libcolt5 $version: lib $libdir, examples $docex"

# What must be there.
for f in "$pkgdatadir/reference_bench.py" \
         "$(pcv --variable=includedir)/colt5.h" "$(pcv --variable=includedir)/colt5_config.h" \
         "$(pcv --variable=includedir)/colt5_io.h" "$(pcv --variable=includedir)/colt5_mpi.h"; do
  [ -e "$f" ] || bad "not installed: $f"
done
for doc in api.md formats.md design.md errors.md; do find "$D" -name $doc | grep -q . || bad "docs/$doc not installed"; done
[ -n "$docex" ] && [ -f "$docex/routed_ff.c" ] || { bad "examples not installed"; exit 1; }
# Each kind configure built (--disable-shared, --disable-static leave one).
have_shared=0; have_static=0
[ -e "$libdir/libcolt5.so" ] && have_shared=1
[ -e "$libdir/libcolt5.a" ] && have_static=1
[ $have_shared$have_static = 00 ] && { bad "neither libcolt5.so nor libcolt5.a in $libdir"; exit 1; }
if [ $have_shared = 1 ]; then
  soname=$(readelf -d "$libdir/libcolt5.so" 2>/dev/null | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
  case $soname in libcolt5.so.[0-9]*) echo "ok: soname $soname" ;; *) bad "soname '$soname'" ;; esac
fi

# Every installed app runs (the library from DESTDIR), says its version and has a man page.
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
apps=$(ls "$bindir")
for app in colt5-golden colt5-bench; do [ -x "$bindir/$app" ] || bad "$app not installed"; done
for app in $apps; do
  find "$D" -name "$app.1" | grep -q . || bad "man page $app.1 not installed"
  out=$("$bindir/$app" --version 2>&1) && printf '%s\n' "$out" | grep -q "^$app libcolt5 $version " \
    && echo "ok: $out" || bad "$app --version: $out"
done
# The installed colt5-bench's reference script is the installed one (its final path), not the build tree's.
want=${pkgdatadir#$D}/reference_bench.py
"$bindir/colt5-bench" --help 2>&1 | grep -qF "(default $want)" && echo "ok: colt5-bench reads $want" \
  || bad "colt5-bench --help does not name $want: $("$bindir/colt5-bench" --help 2>&1 | grep -- --script)"

# build MODE: every example in a copy of the installed examples, then run it.
build() {
  mode=$1; w=$tmp/$mode; mkdir -p "$w"; cp "$docex"/*.c "$docex"/*.h "$w"/
  flags=$(if [ "$mode" = static ]; then pcv --static --cflags --libs; else pcv --cflags --libs; fi)
  echo "$mode: $cc EXAMPLE.c $flags -lm"
  for ex in routed_ff block_sharded params_h5; do
    # shellcheck disable=SC2086
    if ! "$cc" -o "$w/$ex" "$w/$ex.c" $flags -lm > "$w/$ex.log" 2>&1; then
      bad "$mode: $ex does not build:"; tail -10 "$w/$ex.log"; continue
    fi
    needs=$(readelf -d "$w/$ex" | grep -c 'NEEDED.*libcolt5')
    if [ "$mode" = shared ] && [ "$needs" -ne 1 ]; then bad "$mode: $ex is not linked against libcolt5.so"; fi
    if [ "$mode" = static ] && [ "$needs" -ne 0 ]; then bad "$mode: $ex needs libcolt5.so"; fi
    case $ex in
    block_sharded) out=$(cd "$w" && timeout 300 mpirun --oversubscribe -np 2 "./$ex" 2>&1) ;;
    *) out=$(cd "$w" && timeout 300 "./$ex" 2>&1) ;;
    esac
    rc=$?
    if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q ': ok$' && ! printf '%s\n' "$out" | grep -q FAILED; then
      echo "ok: $mode $ex"
    else
      bad "$mode $ex (exit $rc):"; printf '%s\n' "$out" | tail -6
    fi
  done
}
if [ $have_shared = 1 ]; then build shared; else echo "no shared library (configured --disable-shared)"; fi
# Static: with only libcolt5.a left, -lcolt5 takes it; what it needs must come from the .pc.
rm -f "$libdir"/libcolt5.so*
if [ $have_static = 1 ]; then build static; else echo "no static library (configured --disable-static)"; fi
exit $fail
