// AdamW: the per-element math and the tensor-list layout, shared by the CUDA kernel and the CPU
// backend so both compute the same function.
#pragma once
#include <cmath>
#include "common.cuh"

namespace slimopt {

// One tensor of a multi-tensor step. Pointers are device pointers for CUDA, host for the CPU.
struct AdamwTensor {
  void* param;
  const void* grad;
  void* expAvg;       // m
  void* expAvgSq;     // v
  int64_t numel;
  int64_t chunkBegin; // index of this tensor's first chunk in the group's chunk list
  DType paramDtype;
  DType gradDtype;
  uint32_t seedSalt;  // distinguishes tensors in the stochastic-rounding stream
  uint32_t pad;
};

enum class AdamConvention : int32_t {
  // torch.optim.AdamW: decoupled decay first, eps added after the bias-corrected sqrt(v).
  Torch = 0,
  // GaLore / APOLLO reference code: eps inside before bias correction, decay applied after.
  Galore = 1,
};

struct AdamwHyper {
  float lr;
  float beta1;
  float beta2;
  float eps;
  float weightDecay;
  DType stateDtype;          // F32 or BF16
  AdamConvention convention;
  int32_t stochasticRounding;  // bf16 params only
  int32_t skipNonFinite;       // 1: a group with any non-finite grad is left untouched
  uint64_t seed;               // stochastic rounding stream key
  int64_t chunkSize;           // elements per chunk of the chunk list
};

// Counters a group keeps on its device so that skipping is decided there with no host sync.
struct AdamwCounters {
  int32_t step;     // completed (not skipped) steps
  int32_t skipped;  // skipped steps
};

// Adam update of one element given its step t (1-based). Returns the new parameter in f32 and
// writes the new moments. bc1 = 1 - beta1^t, bc2 = 1 - beta2^t, precomputed per launch.
struct AdamwScalars {
  float lr, beta1, beta2, eps, decayFactor;  // decayFactor = 1 - lr*wd
  float stepSize;                            // Torch: lr/bc1. Galore: lr*sqrt(bc2)/bc1
  float invSqrtBc2;                          // Torch only: 1/sqrt(bc2)
  AdamConvention convention;
};

SLIMOPT_HD float adamwElement(float w, float g, float& m, float& v, const AdamwScalars& s) {
  m = s.beta1 * m + (1.0f - s.beta1) * g;
  v = s.beta2 * v + (1.0f - s.beta2) * g * g;
  if (s.convention == AdamConvention::Torch) {
    w = w * s.decayFactor;
    float denom = sqrtf(v) * s.invSqrtBc2 + s.eps;
    return w - s.stepSize * (m / denom);
  }
  float n = m / (sqrtf(v) + s.eps);
  w = w - s.stepSize * n;
  return w * s.decayFactor;
}

// The scalars of step t, in double then rounded (once per block on the device).
SLIMOPT_HD AdamwScalars adamwScalars(const AdamwHyper& h, int32_t t) {
  double bc1 = 1.0 - pow(double(h.beta1), double(t));
  double bc2 = 1.0 - pow(double(h.beta2), double(t));
  AdamwScalars s;
  s.lr = h.lr; s.beta1 = h.beta1; s.beta2 = h.beta2; s.eps = h.eps;
  s.decayFactor = float(1.0 - double(h.lr) * double(h.weightDecay));
  s.convention = h.convention;
#if defined(__CUDA_ARCH__)
  double sq = sqrt(bc2);
#else
  double sq = __builtin_sqrt(bc2);
#endif
  if (h.convention == AdamConvention::Torch) {
    s.stepSize = float(double(h.lr) / bc1);
    s.invSqrtBc2 = float(1.0 / sq);
  } else {
    s.stepSize = float(double(h.lr) * sq / bc1);
    s.invSqrtBc2 = 1.0f;
  }
  return s;
}

SLIMOPT_HD bool isFiniteFloat(float x) { return (floatBits(x) & 0x7f800000u) != 0x7f800000u; }

}  // namespace slimopt
