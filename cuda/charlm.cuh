// Small neural-network kernels for the character-level language model example (examples/charlm):
// embedding gather/scatter, bias add/reduce, activations, softmax cross-entropy. f32 only. The
// per-element math lives here, shared by the CUDA kernels (cuda/charlm.cu) and the CPU backend
// (csrc/cpu/charlm.cc), so both compute the same formulas.
#pragma once
#include <cmath>
#include <cstdint>
#include "common.cuh"

namespace slimopt {

enum class Activation : int32_t { Gelu = 0, Tanh = 1, Relu = 2 };

// sqrt(2/pi): GELU's tanh approximation (the one GPT-2 and llm.c use).
constexpr float kGeluScale = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

SLIMOPT_HD float activationForward(Activation a, float z) {
  switch (a) {
    case Activation::Tanh: return tanhf(z);
    case Activation::Relu: return z > 0.0f ? z : 0.0f;
    default: {
      float u = kGeluScale * (z + kGeluCubic * z * z * z);
      return 0.5f * z * (1.0f + tanhf(u));
    }
  }
}

// d activation(z) / dz.
SLIMOPT_HD float activationDerivative(Activation a, float z) {
  switch (a) {
    case Activation::Tanh: {
      float t = tanhf(z);
      return 1.0f - t * t;
    }
    case Activation::Relu: return z > 0.0f ? 1.0f : 0.0f;
    default: {
      float u = kGeluScale * (z + kGeluCubic * z * z * z);
      float t = tanhf(u);
      float du = kGeluScale * (1.0f + 3.0f * kGeluCubic * z * z);
      return 0.5f * (1.0f + t) + 0.5f * z * (1.0f - t * t) * du;
    }
  }
}

}  // namespace slimopt
