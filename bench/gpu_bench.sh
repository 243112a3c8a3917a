#!/usr/bin/env bash
# The benchmark rows of one GPU run (no tests): bench/gpu_bench.sh <comma-separated --only list>.
export SLIMOPT_EXPERIMENTAL=1
exec bash "$(dirname "$0")/gpu_run.sh" 'test/gpu/dist' --only "$1"
