#!/bin/sh
# Builds and runs the native CUDA-vs-CPU check of the Grass layer (no Node needed): selections,
# steps, and gather-rows / scatter-rows bandwidth on 11008 x 4096 f32.
set -e
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp}
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xcompiler=-ffp-contract=off -I. \
  -DSLIMOPT_CUDA_ARCHS='"90a"' -DSLIMOPT_BUILD_FLAGS='"check"' \
  test/native/grass_check.cu cuda/*.cu \
  csrc/cpu/*.cc -o "$OUT/grass_check" -ldl -lpthread
"$OUT/grass_check"
