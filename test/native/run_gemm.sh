#!/bin/sh
# Builds and runs the native check and timing of the GEMM layer (no Node needed): the built-in
# kernels and cuBLAS against the CPU backend, the tensor-core kernel's device-side contract, and
# GaLore's projection GEMMs on the §6 shapes timed built-in vs cuBLAS (the table printed last).
# SLIMOPT_GEMM_SPLITK=s forces s K-splits in the tensor-core kernel (tuning).
set -e
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp}
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xcompiler=-ffp-contract=off -I. \
  -DSLIMOPT_CUDA_ARCHS='"90a"' -DSLIMOPT_BUILD_FLAGS='"check"' \
  test/native/gemm_check.cu cuda/*.cu \
  csrc/cpu/*.cc -o "$OUT/gemm_check" -ldl -lpthread
"$OUT/gemm_check"
