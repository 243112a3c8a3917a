#!/usr/bin/env bash
# Where GaLore's refresh spends its time (bench/profile_refresh.js, rank 128) on the GPU machine:
# wall time per refresh without ncu, then ncu's duration of every kernel of 2 refreshes, summed
# per kernel name. Writes $OUT/refresh-wall.txt and $OUT/ncu-refresh-<shape>.{csv,txt}.
set -uo pipefail
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
source .device/gpu-env.sh
source bench/cuda_libs.sh
for shape in 4096x4096 11008x4096; do node bench/profile_refresh.js "$shape" 4; done 2>&1 | tee "$OUT/refresh-wall.txt"
for shape in 4096x4096 11008x4096; do
  ncu --clock-control none --csv --page raw --print-units base --metrics gpu__time_duration.sum \
    node bench/profile_refresh.js "$shape" 2 > "$OUT/ncu-refresh-$shape.csv" 2> "$OUT/ncu-refresh-$shape.err"
  echo "ncu $shape exit: $?"
  python3 bench/ncu_summary.py --by-name "$OUT/ncu-refresh-$shape.csv" \
    "# bench/profile_refresh.sh $shape (2 refreshes) at $(cat .device/commit 2>/dev/null || echo unknown)" | tee "$OUT/ncu-refresh-$shape.txt"
done
