#!/bin/sh
# setup-and-run.sh - on a fresh Debian 12 machine: install the packages,
# build (double precision), and run the main job: colt5-train with its
# defaults on 2 ranks x 1 thread (the sequence sharded over both), the
# masked-span byte model on the fortunes package's English text, then the
# loss curve (runs/train.png). The training prints its progress, the
# validation bits per masked byte against the text's unigram entropy, and a
# validation passage filled in by the model.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/jobs/deps.sh"
"$top/jobs/build.sh" double
mkdir -p "$top/runs"
rm -f "$top/runs/train.csv"
NP=2 THREADS=1 "$top/jobs/train.sh" --log "$top/runs/train.csv" "$@"
"$top/jobs/plot-loss.sh" "$top/runs/train.csv" "$top/runs/train.png"
