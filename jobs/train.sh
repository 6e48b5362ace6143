#!/bin/sh
# train.sh [colt5-train options...] - the main job under a plain mpirun:
# NP ranks (default 2), THREADS OpenMP threads each (default 1), the build
# of PRECISION (default double: build-double/). Everything after goes to
# colt5-train (colt5-train --help lists it); without --log the step log is
# runs/train.csv. SIGTERM/SIGUSR1 to the job checkpoint it (with --ckpt-dir)
# and a later run with --resume continues it.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
NP=${NP:-2} THREADS=${THREADS:-1} PRECISION=${PRECISION:-double}
bin="$top/build-$PRECISION/apps/colt5-train"
[ -x "$bin" ] || { echo "train.sh: $bin not built (jobs/build.sh $PRECISION)" >&2; exit 2; }
case " $* " in *" --log "*|*" --log="*) ;; *) mkdir -p "$top/runs"; set -- --log "$top/runs/train.csv" "$@";; esac
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS="$THREADS"
# exec: mpirun gets the job's signals (it forwards SIGUSR1; SIGTERM ends the ranks after their checkpoint)
exec mpirun --oversubscribe -np "$NP" "$bin" --threads "$THREADS" "$@"
