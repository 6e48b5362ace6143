#!/bin/bash
# mask_sweep.sh REF - every line "NAME OPTIONS" of bench/mask_sweep_configs.txt (or $CONFIGS) as one
# bench/mask_sweep.py run, all at once on one GPU under MPS (each run is launch-bound: alone it would
# leave the GPU idle). REF: the folder holding the reference's packages. Output: $OUT/all.txt (the
# validation lines), $OUT/results.jsonl. Each run is stopped after LIMIT seconds (default 500).
set -u
here=$(cd "$(dirname "$0")" && pwd)
ref=$1
OUT=${OUT:-out}; logs=$(mktemp -d); mkdir -p "$OUT"
python3 "$here/fortunes_text.py" "$logs/text.bin" 2>/dev/null || cp "${TEXT:?no fortunes here: set TEXT}" "$logs/text.bin"
export CUDA_MPS_PIPE_DIRECTORY=$logs/mps CUDA_MPS_LOG_DIRECTORY=$logs/mpslog OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
nvidia-cuda-mps-control -d && echo "MPS on"
while read -r name args; do
  [ -n "$name" ] || continue
  # shellcheck disable=SC2086
  timeout "${LIMIT:-500}" python3 "$here/mask_sweep.py" --ref "$ref" --text "$logs/text.bin" --name "$name" $args \
    > "$logs/$name.log" 2>&1 &
done < "${CONFIGS:-$here/mask_sweep_configs.txt}"
wait
cat "$logs"/*.log | grep -v RESULT > "$OUT/all.txt"
grep -h RESULT "$logs"/*.log > "$OUT/results.jsonl"
echo quit | nvidia-cuda-mps-control 2>/dev/null
