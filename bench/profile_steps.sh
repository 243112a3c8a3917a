#!/usr/bin/env bash
# Per-kernel durations and DRAM bytes of one step of APOLLO-Mini, APOLLO r256 and GaLore r128
# (bench/profile_steps.js) on the GPU machine: ncu, clocks left alone, every kernel of both steps
# (the first, untimed step of each is profiled too: it is labelled in ncu-steps.err). Writes
# $OUT/ncu-steps.csv and its summary, one line per launch, $OUT/ncu-steps.txt. Usage: bench/profile_steps.sh [filter]
set -uo pipefail
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
source .device/gpu-env.sh
source bench/cuda_libs.sh
# PROFILE_SCRIPT / PROFILE_NAME: another script to profile the same way (bench/profile_galore_step.sh).
script="${PROFILE_SCRIPT:-bench/profile_steps.js}"; name="${PROFILE_NAME:-steps}"
ncu --clock-control none --csv --page raw --print-units base \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__registers_per_thread \
  node "$script" "${1:-.}" > "$OUT/ncu-$name.csv" 2> "$OUT/ncu-$name.err"
echo "ncu exit: $?"
python3 bench/ncu_summary.py "$OUT/ncu-$name.csv" "# $script ${1:-.} at $(cat .device/commit 2>/dev/null || echo unknown)" | tee "$OUT/ncu-$name.txt"
