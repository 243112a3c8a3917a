#!/usr/bin/env bash
# Where GaLore's refresh spends its time (bench/profile_refresh.js; rank $RANK, default 128) on the GPU machine:
# wall time per refresh without ncu, then ncu's duration of every kernel of 2 refreshes, summed
# per kernel name. Writes $OUT/refresh-wall-r<rank>.txt and $OUT/ncu-refresh-r<rank>-<shape>.{csv,txt}.
set -uo pipefail
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
RANK="${RANK:-128}"
source .device/gpu-env.sh
source bench/cuda_libs.sh
for shape in 4096x4096 11008x4096; do node bench/profile_refresh.js "$shape" 4 "$RANK"; done 2>&1 | tee "$OUT/refresh-wall-r$RANK.txt"
for shape in 4096x4096 11008x4096; do
  ncu --clock-control none --csv --page raw --print-units base --metrics gpu__time_duration.sum \
    node bench/profile_refresh.js "$shape" 2 "$RANK" > "$OUT/ncu-refresh-r$RANK-$shape.csv" 2> "$OUT/ncu-refresh-r$RANK-$shape.err"
  echo "ncu $shape exit: $?"
  python3 bench/ncu_summary.py --by-name "$OUT/ncu-refresh-r$RANK-$shape.csv" \
    "# bench/profile_refresh.sh $shape (2 refreshes) at $(cat .device/commit 2>/dev/null || echo unknown)" | tee "$OUT/ncu-refresh-r$RANK-$shape.txt"
done
