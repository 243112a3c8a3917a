// Training-loop helpers shared by the CUDA kernels and the CPU backend: the global gradient norm
// (torch.nn.utils.clip_grad_norm_ semantics), scaling gradients by a factor held on the device, and
// the max-merge of step counters that closes a layer-wise (stepParam) round.
#pragma once
#include <cstdint>
#include "adamw.cuh"

namespace slimopt {

// One gradient of a tensor list (device pointers for CUDA, host for the CPU).
struct GradRef {
  void* ptr;
  int64_t numel;
  DType dtype;
};

// The norm workspace (f32 elements): [0] norm, [1] clip factor, [2..8) unused, then kGradPartials
// per-block partial sums of squares. Partials accumulate across gradSumSquares calls until a call
// with reset, so a layer-wise round can add one parameter at a time; gradNormFinish sums them in a
// fixed order (deterministic, no atomics on floats).
constexpr int kGradPartials = 512;
constexpr int kGradWsHeader = 8;
constexpr int64_t kGradWsFloats = kGradWsHeader + kGradPartials;

// The clip factor of torch.nn.utils.clip_grad_norm_: min(1, maxNorm / (norm + 1e-6)). A NaN norm
// gives 1 (the gradients stay non-finite, and the step's non-finite skip catches them).
SLIMOPT_HD float clipFactor(float norm, float maxNorm) {
  float f = maxNorm / (norm + 1e-6f);
  return f < 1.0f ? f : 1.0f;
}

}  // namespace slimopt
