// Host launchers of the small network kernels (cuda/charlm.cu): plain C++, callable from the glue.
// Each enqueues on the device's stream and returns the launch status. All tensors are f32 but the
// indices and targets (int32). Contracts are those of the CPU backend (csrc/cpu/charlm.h).
#pragma once
#include <cstdint>
#include "charlm.cuh"
#include "runtime.h"

namespace slimopt {
namespace gpu {

// out[i, :] = table[idx[i], :] (n indices, rows of width d); an index outside [0, vocab) gives 0s.
Status embeddingForward(int dev, const float* table, int64_t vocab, int64_t d, const int32_t* idx, int64_t n,
                        float* out);
// dTable[v, :] (= or +=) sum of dOut[i, :] over i with idx[i] == v, summed in i order (deterministic).
Status embeddingBackward(int dev, const float* dOut, const int32_t* idx, int64_t n, float* dTable, int64_t vocab,
                         int64_t d, bool accumulate);
// x[r, c] += bias[c] over rows x cols.
Status biasAdd(int dev, float* x, const float* bias, int64_t rows, int64_t cols);
// dBias[c] (= or +=) sum over r of dy[r, c], in r order.
Status biasGrad(int dev, const float* dy, int64_t rows, int64_t cols, float* dBias, bool accumulate);
// y = act(x) over n elements (y may be x).
Status activationForward(int dev, Activation a, const float* x, float* y, int64_t n);
// dx = dy * act'(x) over n elements (dx may be dy).
Status activationBackward(int dev, Activation a, const float* x, const float* dy, float* dx, int64_t n);
// Per row r of logits (rows x vocab): rowLoss[r] = logsumexp(logits[r]) - logits[r, target[r]]
// (NaN when the target is outside [0, vocab)); loss[0] = sum(rowLoss) * lossScale, summed in row
// order. When dLogits is not null: dLogits[r] = (softmax(logits[r]) - onehot(target[r])) * gradScale
// (a row with a bad target gets 0s). dLogits may be logits.
Status softmaxCrossEntropy(int dev, const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                           float* rowLoss, float* loss, float lossScale, float* dLogits, float gradScale);

}  // namespace gpu
}  // namespace slimopt
