#!/usr/bin/env bash
# Nsight Compute counters of the memory-bound kernels (bench/profile_kernels.js) on the GPU
# machine: ncu with the clocks left alone. Writes $OUT/ncu.txt. Usage: bench/profile.sh [filter]
set -uo pipefail
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
source .device/gpu-env.sh
ncu --clock-control none \
  --kernel-name 'regex:qadamKernel|quantizeKernel|dequantizeKernel|gatherRowsKernel|scatterRowsKernel' \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section LaunchStats --section Occupancy \
  --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
  node bench/profile_kernels.js "${1:-.}" > "$OUT/ncu.txt" 2> "$OUT/ncu.err"
echo "ncu exit: $?"
grep -E "qadamKernel|quantizeKernel|dequantizeKernel|gatherRowsKernel|scatterRowsKernel|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible" "$OUT/ncu.txt" | head -150
