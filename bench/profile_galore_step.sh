#!/usr/bin/env bash
# Per-kernel durations and DRAM bytes of GaLore's steady step on the §6 workload
# (bench/profile_galore_step.js) on the GPU machine: ncu, clocks left alone, every kernel launched
# (the two untimed steps of each rank too; the profiled step is the last group before the next
# rank's, or the last). Writes $OUT/ncu-galore-step.csv and its summary $OUT/ncu-galore-step.txt.
# Usage: bench/profile_galore_step.sh [ranks, e.g. 128,512]
set -uo pipefail
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
source .device/gpu-env.sh
source bench/cuda_libs.sh
ncu --clock-control none --csv --page raw --print-units base \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__registers_per_thread \
  node bench/profile_galore_step.js "${1:-128,512,1024}" > "$OUT/ncu-galore-step.csv" 2> "$OUT/ncu-galore-step.err"
echo "ncu exit: $?"
python3 bench/ncu_summary.py "$OUT/ncu-galore-step.csv" "# bench/profile_galore_step.sh ${1:-128,512,1024} at $(cat .device/commit 2>/dev/null || echo unknown)" > "$OUT/ncu-galore-step.txt"
