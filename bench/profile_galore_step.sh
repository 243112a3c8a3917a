#!/usr/bin/env bash
# Per-kernel durations and DRAM bytes of GaLore's steady step on the §6 workload
# (bench/profile_galore_step.js) on the GPU machine, the way bench/profile_steps.sh profiles: every
# kernel launched (the two untimed steps of each rank too; the profiled step is the last group
# before the next rank's, or the last). Writes $OUT/ncu-galore-step.csv and its summary
# $OUT/ncu-galore-step.txt. Usage: bench/profile_galore_step.sh [ranks, e.g. 128,512]
PROFILE_SCRIPT=bench/profile_galore_step.js PROFILE_NAME=galore-step exec bash "$(dirname "$0")/profile_steps.sh" "${1:-128,512,1024}"
