#!/usr/bin/env bash
# The GPU suite in parts that fit one device call: bench/gpu_tests.sh '<jest path regex>'.
# Writes $OUT/test-gpu.log (and what bench/gpu_run.sh writes), no benchmark.
exec bash "$(dirname "$0")/gpu_run.sh" "$1" --only adamw-host-overhead --steps 3 --no-torch
