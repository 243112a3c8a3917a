// A GEMM with f64 accumulation whose operands may be f32 or f64 (cuda/gemm_f64.cu): what the
// GaLore refresh's final Rayleigh-Ritz runs on, so that the projector is exact to the f32 rounding
// of its output whatever the f32 GEMMs and the f32 eigen-solvers before it left (DESIGN §4: the
// same vectors as an exact SVD). An f32 operand (the gradient itself) is read as is and widened in
// the kernel: no f64 copy of a gradient-sized matrix is ever made.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include "internal.cuh"

namespace slimopt {
namespace gpu {

enum class Real : int32_t { F32 = 0, F64 = 1 };

// Row-major C (M x N) = op(A) op(B), op(A) M x K (A[i*lda+p], or A[p*lda+i] when transA), op(B)
// K x N (B[p*ldb+j], or B[j*ldb+p] when transB); every product and sum in f64, C written in its
// own type (f32: rounded once). C must not overlap A or B.
struct Gemm64Args {
  int64_t M = 0, N = 0, K = 0;
  const void* A = nullptr; Real aType = Real::F32; int64_t lda = 0; bool transA = false;
  const void* B = nullptr; Real bType = Real::F32; int64_t ldb = 0; bool transB = false;
  void* C = nullptr; Real cType = Real::F64; int64_t ldc = 0;
};

// On st, dev's stream: the FP64 tensor cores on sm_80+, SIMT FMAs before (SLIMOPT_GEMM64=simt
// forces those everywhere, to tell the two apart in a diagnosis). Same sums either way up to the
// order of f64 additions.
Status gemm64(int dev, cudaStream_t st, const Gemm64Args& g);

}  // namespace gpu
}  // namespace slimopt
