// CPU backend of the small network kernels of the character-level LM example (cuda/charlm.cu is
// the CUDA side; the per-element math is shared in cuda/charlm.cuh). Sums run in a fixed order,
// so results are deterministic; element-wise work is split across cores with parallelFor.
#include "charlm.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
#include "cpu_backend.h"

namespace slimopt {
namespace cpu {

namespace {

constexpr int64_t kGrain = 1 << 15;

struct ActivationCtx {
  Activation a;
  const float* x;
  const float* dy;
  float* out;
};

void activationForwardRange(void* c, int64_t b, int64_t e) {
  const ActivationCtx& k = *static_cast<const ActivationCtx*>(c);
  for (int64_t i = b; i < e; ++i) k.out[i] = activationForward(k.a, k.x[i]);
}

void activationBackwardRange(void* c, int64_t b, int64_t e) {
  const ActivationCtx& k = *static_cast<const ActivationCtx*>(c);
  for (int64_t i = b; i < e; ++i) k.out[i] = k.dy[i] * activationDerivative(k.a, k.x[i]);
}

struct CrossEntropyCtx {
  const float* logits;
  const int32_t* targets;
  int64_t vocab;
  float* rowLoss;
  float* dLogits;
  float gradScale;
};

void crossEntropyRows(void* c, int64_t b, int64_t e) {
  const CrossEntropyCtx& k = *static_cast<const CrossEntropyCtx*>(c);
  for (int64_t r = b; r < e; ++r) {
    const float* z = k.logits + r * k.vocab;
    float mx = -INFINITY;
    for (int64_t j = 0; j < k.vocab; ++j) mx = std::max(mx, z[j]);
    float s = 0.0f;
    for (int64_t j = 0; j < k.vocab; ++j) s += std::exp(z[j] - mx);
    const float lse = mx + std::log(s);
    const int32_t t = k.targets[r];
    const bool valid = t >= 0 && t < k.vocab;
    k.rowLoss[r] = valid ? lse - z[t] : NAN;
    if (k.dLogits == nullptr) continue;
    float* g = k.dLogits + r * k.vocab;  // may be z: each element is read before it is written
    for (int64_t j = 0; j < k.vocab; ++j) {
      const float p = std::exp(z[j] - lse);
      g[j] = valid ? (p - (j == t ? 1.0f : 0.0f)) * k.gradScale : 0.0f;
    }
  }
}

}  // namespace

void embeddingForward(const float* table, int64_t vocab, int64_t d, const int32_t* idx, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const int32_t v = idx[i];
    if (v >= 0 && v < vocab) std::memcpy(out + i * d, table + int64_t(v) * d, size_t(d) * 4);
    else std::fill(out + i * d, out + (i + 1) * d, 0.0f);
  }
}

void embeddingBackward(const float* dOut, const int32_t* idx, int64_t n, float* dTable, int64_t vocab, int64_t d,
                       bool accumulate) {
  // Each row's sum starts at 0 and adds its gradients in index order, then lands on dTable: the
  // same operations, in the same order, as the CUDA kernel (so the results are bit-identical).
  std::vector<float> sum(size_t(vocab * d), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t v = idx[i];
    if (v < 0 || v >= vocab) continue;
    float* dst = sum.data() + int64_t(v) * d;
    const float* src = dOut + i * d;
    for (int64_t c = 0; c < d; ++c) dst[c] += src[c];
  }
  for (int64_t e = 0; e < vocab * d; ++e) dTable[e] = accumulate ? dTable[e] + sum[size_t(e)] : sum[size_t(e)];
}

void biasAdd(float* x, const float* bias, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) row[c] += bias[c];
  }
}

void biasGrad(const float* dy, int64_t rows, int64_t cols, float* dBias, bool accumulate) {
  std::vector<float> s(size_t(cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = dy + r * cols;
    for (int64_t c = 0; c < cols; ++c) s[c] += row[c];
  }
  for (int64_t c = 0; c < cols; ++c) dBias[c] = accumulate ? dBias[c] + s[c] : s[c];
}

void activationForward(Activation a, const float* x, float* y, int64_t n) {
  ActivationCtx k{a, x, nullptr, y};
  parallelFor(n, kGrain, activationForwardRange, &k);
}

void activationBackward(Activation a, const float* x, const float* dy, float* dx, int64_t n) {
  ActivationCtx k{a, x, dy, dx};
  parallelFor(n, kGrain, activationBackwardRange, &k);
}

void softmaxCrossEntropy(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* rowLoss,
                         float* loss, float lossScale, float* dLogits, float gradScale) {
  CrossEntropyCtx k{logits, targets, vocab, rowLoss, dLogits, gradScale};
  parallelFor(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, vocab)), crossEntropyRows, &k);
  double s = 0.0;
  for (int64_t r = 0; r < rows; ++r) s += double(rowLoss[r]);
  loss[0] = float(s * double(lossScale));
}

}  // namespace cpu
}  // namespace slimopt
