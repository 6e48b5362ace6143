#!/bin/sh
# compare.sh [REV] - the working tree against REV (default HEAD), built and
# run in one go on this machine, both precisions: a block forward+backward at
# a fixed seed (tests/unit/test_modules_fd --dump: output, dx and every
# parameter gradient) and, per tensor, "identical" or the norm-wise relative
# difference ||new - old|| / ||old|| and how many elements changed bits.
# For code motion (must be identical) and deliberate numeric changes (must be
# small). Builds REV in .compare/ (git-ignored); needs python3.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:-HEAD}
sha=$(git -C "$top" rev-parse --short "$rev")
work="$top/.compare"
src="$work/src-$sha"
mkdir -p "$work"
[ -d "$src" ] || git -C "$top" worktree add --detach "$src" "$sha" > /dev/null
[ -x "$src/configure" ] || (cd "$src" && autoreconf -fi > /dev/null 2>&1)
for prec in double single; do
  old="$work/build-$sha-$prec"
  mkdir -p "$old"
  (cd "$old" && { [ -f Makefile ] || "$src/configure" --with-precision="$prec" > configure.out; } &&
   make -j"$(nproc)" tests/unit/test_modules_fd > make.out)   # builds the library first, libtool or not
  "$top/jobs/build.sh" "$prec" > /dev/null
  (cd "$top/build-$prec" && make -j"$(nproc)" tests/unit/test_modules_fd > /dev/null)
  OMP_NUM_THREADS=1 "$old/tests/unit/test_modules_fd" --dump "$work/old-$prec.bin" > /dev/null
  OMP_NUM_THREADS=1 "$top/build-$prec/tests/unit/test_modules_fd" --dump "$work/new-$prec.bin" > /dev/null
  echo "== $prec: working tree against $rev ($sha)"
  python3 - "$work/old-$prec.bin" "$work/new-$prec.bin" "$work/new-$prec.bin.names" "$prec" <<'PY'
import array, math, sys
old, new, names, prec = sys.argv[1:5]
tc = 'd' if prec == 'double' else 'f'
a = array.array(tc); a.frombytes(open(old, 'rb').read())
b = array.array(tc); b.frombytes(open(new, 'rb').read())
if len(a) != len(b): sys.exit(f"dumps differ in size: {len(a)} vs {len(b)} values")
at, worst, nid = 0, 0.0, 0
rows = [l.split() for l in open(names)]
for name, n in rows:
    n = int(n); x, y = a[at:at + n], b[at:at + n]; at += n
    nb = sum(1 for u, v in zip(x, y) if u != v or math.copysign(1, u) != math.copysign(1, v))
    if nb == 0:
        nid += 1; continue
    d = math.sqrt(sum((v - u) ** 2 for u, v in zip(x, y))); r = math.sqrt(sum(u * u for u in x))
    rel = d / r if r else float('inf'); worst = max(worst, rel)
    print(f"  {name:50s} {nb:7d} of {n:7d} changed  rel {rel:.3e}")
print(f"  {nid} of {len(rows)} tensors bit-identical; worst norm-wise change {worst:.3e}")
PY
done
