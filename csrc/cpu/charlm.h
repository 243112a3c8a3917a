// CPU backend of the small network kernels (the reference for cuda/charlm.cu): same contracts as
// the gpu:: launchers in cuda/charlm_launchers.h, host pointers.
#pragma once
#include <cstdint>
#include "../../cuda/charlm.cuh"

namespace slimopt {
namespace cpu {

void embeddingForward(const float* table, int64_t vocab, int64_t d, const int32_t* idx, int64_t n, float* out);
void embeddingBackward(const float* dOut, const int32_t* idx, int64_t n, float* dTable, int64_t vocab, int64_t d,
                       bool accumulate);
void biasAdd(float* x, const float* bias, int64_t rows, int64_t cols);
void biasGrad(const float* dy, int64_t rows, int64_t cols, float* dBias, bool accumulate);
void activationForward(Activation a, const float* x, float* y, int64_t n);
void activationBackward(Activation a, const float* x, const float* dy, float* dx, int64_t n);
void softmaxCrossEntropy(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* rowLoss,
                         float* loss, float lossScale, float* dLogits, float gradScale);

}  // namespace cpu
}  // namespace slimopt
