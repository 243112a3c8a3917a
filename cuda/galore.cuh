// GaLore: the per-element math and the descriptors shared by the CUDA kernels and the CPU backend.
// Layout conventions (row-major, W viewed as rows x cols, r = rank):
//   side Right: P is r x cols (rows = right singular vectors), R = G P^T (rows x r), back(N) = N P
//   side Left:  P is rows x r (cols = left singular vectors),  R = P^T G (r x cols), back(N) = P N
//   side Full:  A rows x r (left), B r x cols (right),          R = A^T G B^T (r x r), back = A N B
#pragma once
#include <cmath>
#include "adamw.cuh"
#include "quant.cuh"  // 8-bit states

namespace slimopt {

enum class GaloreSide : int32_t { Right = 0, Left = 1, Full = 2 };

// Row-major GEMM: C (M x N) = alpha * op(A) op(B) + beta * C. op(A) is M x K (A[i*lda+p], or
// A[p*lda+i] when transA), op(B) is K x N (B[p*ldb+j], or B[j*ldb+p] when transB). With beta 0 C is
// not read (it may hold garbage). A, B are f32 (the CPU also takes bf16/f16 A); C f32, bf16 or f16.
struct GemmArgs {
  int64_t M = 0, N = 0, K = 0;
  const void* A = nullptr; DType aType = DType::F32; int64_t lda = 0; bool transA = false;
  const void* B = nullptr; DType bType = DType::F32; int64_t ldb = 0; bool transB = false;
  void* C = nullptr; DType cType = DType::F32; int64_t ldc = 0;
  float alpha = 1.0f, beta = 0.0f;
};

// How a refresh computes the projector: the exact top-r singular vectors, or subspace iteration
// started from the previous projector (a few GEMM passes; see cuda/galore_refresh.cu).
enum class RefreshMethod : int32_t { Svd = 0, Warm = 1 };

// GEMM precision on the GPU: TF32 tensor cores (default), strict f32, or bf16 tensor cores (operands
// rounded to bf16, f32 accumulation). The CPU is always f32.
enum class GemmMode : int32_t { Tf32 = 0, Strict = 1, Bf16 = 2 };

// One parameter of a GaLore group. Pointers are device pointers for CUDA, host for the CPU.
struct GaloreTensor {
  void* param; DType paramDtype;
  const void* grad; DType gradDtype;
  float* expAvg;      // m, shaped like R (null when quantized)
  float* expAvgSq;    // v, shaped like R
  // stateBits 8 (quantized): m, v as codes of the signed / unsigned map, shaped like R, blocks of
  // 256 in flattened order, one absmax per block and state (as AdamW8bit).
  uint8_t* codeM;
  uint8_t* codeV;
  float* absmaxM;
  float* absmaxV;
  int32_t quantized;
  float* projA;       // Right: P (r x cols). Left: P (rows x r). Full: A (rows x r)
  float* projB;       // Full only: B (r x cols)
  int64_t rows, cols, rank;
  GaloreSide side;
  // R given (f32, R-shaped; distributed steps average projected gradients): galoreStep copies it
  // in place of projecting grad, which it does not read then. Null: project grad.
  const float* projected;
  // CUDA: Adam has run on `projected` already (galoreAdamMany: it holds N): galoreStep projects back only.
  int32_t adamDone;
};

struct GaloreHyper {
  float lr, beta1, beta2, eps, weightDecay, scale;
  GemmMode mode;
  Q8Maps q8;  // the maps of 8-bit states (blobs null without them)
};

// Elements of R for a tensor.
SLIMOPT_HD int64_t galoreRNumel(const GaloreTensor& t) {
  return t.side == GaloreSide::Right ? t.rows * t.rank
       : t.side == GaloreSide::Left ? t.rank * t.cols : t.rank * t.rank;
}

// N = m / (sqrt(v) + eps): the bias correction goes into the step size (adamwScalars with
// AdamConvention::Galore).
SLIMOPT_HD float galoreDirection(float m, float v, float eps) { return m / (sqrtf(v) + eps); }

// Adam on one element of R in the GaLore convention: returns N.
SLIMOPT_HD float galoreAdamElement(float g, float& m, float& v, float beta1, float beta2, float eps) {
  m = beta1 * m + (1.0f - beta1) * g;
  v = beta2 * v + (1.0f - beta2) * g * g;
  return galoreDirection(m, v, eps);
}

// 8-bit states: element i of R (g = R[i]) with m, v decoded with its block's absmax, updated with
// every op rounded on its own (the same bits on both backends, so the codes are too); returns N
// from the f32 m, v and leaves the new m, v for re-encoding.
SLIMOPT_HD float galoreQ8Element(const GaloreTensor& T, const Q8View& q, int64_t i, float g, float beta1, float beta2,
                                 float eps, float& m, float& v) {
  const int64_t b = i / kQ8Block;
  q8Decode(T.codeM[i], T.codeV[i], T.absmaxM[b], T.absmaxV[b], q, m, v);
  adamMomentsRn(g, m, v, beta1, beta2);
  return galoreDirection(m, v, eps);
}

// The two scalars of the project-back epilogue W <- beta*W + alpha*back(N) for step t:
// W_new = (W - c back(N)) (1 - lr wd) with c = lr sqrt(bc2)/bc1 * scale.
SLIMOPT_HD void galoreEpilogue(const GaloreHyper& h, int32_t t, float* alpha, float* beta) {
  AdamwHyper a{};
  a.lr = h.lr; a.beta1 = h.beta1; a.beta2 = h.beta2; a.eps = h.eps; a.weightDecay = h.weightDecay;
  a.convention = AdamConvention::Galore;
  AdamwScalars s = adamwScalars(a, t);
  *beta = s.decayFactor;
  *alpha = float(-double(s.stepSize) * double(h.scale) * double(s.decayFactor));
}

}  // namespace slimopt
