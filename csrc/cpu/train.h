// CPU backend of the training-loop helpers (cuda/train.cuh): same contracts as the gpu:: launchers
// in cuda/train_launchers.h, host pointers.
#pragma once
#include "../../cuda/train.cuh"

namespace slimopt {
namespace cpu {

void gradSumSquares(const GradRef* list, int32_t n, float* ws, bool reset);
void gradNormFinish(float* ws, float maxNorm);
void gradScale(const GradRef* list, int32_t n, const float* factor, float value);
void gradAdd(void* dst, DType dt, const void* src, DType st, int64_t n, float alpha);

}  // namespace cpu
}  // namespace slimopt
