#!/bin/sh
# Builds and runs the native CUDA-vs-CPU check of the GaLore layer (no Node needed).
set -e
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp}
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xcompiler=-ffp-contract=off -I. \
  -DSLIMOPT_CUDA_ARCHS='"90a"' -DSLIMOPT_BUILD_FLAGS='"check"' \
  test/native/galore_check.cu cuda/*.cu \
  csrc/cpu/linalg.cc csrc/cpu/galore.cc csrc/cpu/parallel.cc csrc/cpu/adamw.cc csrc/cpu/randn.cc \
  -o "$OUT/galore_check" -ldl -lpthread
"$OUT/galore_check"
