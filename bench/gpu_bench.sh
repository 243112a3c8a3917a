#!/usr/bin/env bash
# The benchmark rows of one GPU run (no tests): bench/gpu_bench.sh <comma-separated --only list>.
exec bash "$(dirname "$0")/gpu_run.sh" 'test/gpu/dist' --only "$1"
