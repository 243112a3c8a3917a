// Host launchers of the training-loop kernels (cuda/train.cu): plain C++, callable from the glue;
// each enqueues on the device's stream and returns the launch status.
#pragma once
#include <cstdint>
#include "runtime.h"
#include "train.cuh"

namespace slimopt {
namespace gpu {

// ws partials += sums of squares of the gradients (f32 math, one launch per 128 tensors); with
// reset the partials are zeroed first.
Status gradSumSquares(int dev, const GradRef* list, int32_t n, float* ws, bool reset);
// ws[0] = sqrt(sum of the partials), ws[1] = clipFactor(ws[0], maxNorm). One tiny launch.
Status gradNormFinish(int dev, float* ws, float maxNorm);
// g *= (factor ? *factor : value) for every gradient (nothing written when the factor is 1).
Status gradScale(int dev, const GradRef* list, int32_t n, const float* factor, float value);
// dst[i] = dst[i] + alpha * src[i] (f32 math, rounded to dst's dtype), i < n.
Status gradAdd(int dev, void* dst, DType dt, const void* src, DType st, int64_t n, float alpha);
// dst->step = max(dst->step, srcs[i]->step), same for skipped.
Status countersMax(int dev, AdamwCounters* dst, AdamwCounters* const* srcs, int32_t n);

}  // namespace gpu
}  // namespace slimopt
