// Small network kernels of the character-level language model example: embedding gather and
// deterministic scatter-add, bias add and bias-gradient reduction, activations, softmax
// cross-entropy. The math is in charlm.cuh, shared with the CPU backend (csrc/cpu/charlm.cc).
//
// Determinism: no float atomics. The embedding gradient is reduced by one block per vocabulary
// row, which scans the indices in order (suited to small vocabularies, as characters are: the
// scan costs vocab x n index reads from shared memory); the bias gradient by one thread per
// column walking rows in order; the loss by one block with a fixed reduction tree.
#include <cuda_runtime.h>
#include <algorithm>
#include "charlm_launchers.h"
#include "internal.cuh"

namespace slimopt {
namespace gpu {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = int64_t(1) << 20;

int gridFor(int64_t items, int per = kThreads) {
  int64_t g = (items + per - 1) / per;
  return int(std::max<int64_t>(1, std::min<int64_t>(g, kMaxGrid)));
}

__global__ void embeddingForwardKernel(const float* __restrict__ table, int64_t vocab, int64_t d,
                                       const int32_t* __restrict__ idx, int64_t n, float* __restrict__ out) {
  const int64_t total = n * d;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / d, c = e - i * d;
    const int32_t v = idx[i];
    out[e] = (v >= 0 && v < vocab) ? table[int64_t(v) * d + c] : 0.0f;
  }
}

// One block per vocabulary row (grid-strided); the block loads the indices tile by tile into shared
// memory and, for each match in index order, its threads add that row of dOut over the columns.
constexpr int kIdxTile = 1024;

__global__ void embeddingBackwardKernel(const float* __restrict__ dOut, const int32_t* __restrict__ idx, int64_t n,
                                        float* __restrict__ dTable, int64_t vocab, int64_t d, bool accumulate) {
  __shared__ int32_t tile[kIdxTile];
  __shared__ int32_t matches[kIdxTile];
  __shared__ int32_t matchCount;
  for (int64_t v = blockIdx.x; v < vocab; v += gridDim.x) {
    // Each thread owns columns c = threadIdx.x + k*blockDim.x; d is small, so a few registers.
    constexpr int kMaxCols = 8;
    float acc[kMaxCols];
#pragma unroll
    for (int k = 0; k < kMaxCols; ++k) acc[k] = 0.0f;
    for (int64_t base = 0; base < n; base += kIdxTile) {
      const int len = int(std::min<int64_t>(kIdxTile, n - base));
      for (int i = threadIdx.x; i < len; i += blockDim.x) tile[i] = idx[base + i];
      __syncthreads();
      // Warp 0 compacts the matches of this tile in index order: 32 at a time, each lane's slot is
      // the number of matching lanes below it (ballot + popcount), so the order is fixed.
      if (threadIdx.x < 32) {
        const unsigned lane = threadIdx.x;
        int cnt = 0;
        for (int i0 = 0; i0 < len; i0 += 32) {
          const int i = i0 + int(lane);
          const bool hit = i < len && tile[i] == v;
          const unsigned mask = __ballot_sync(0xffffffffu, hit);
          if (hit) matches[cnt + __popc(mask & ((1u << lane) - 1u))] = i;
          cnt += __popc(mask);
        }
        if (lane == 0) matchCount = cnt;
      }
      __syncthreads();
      const int cnt = matchCount;
      for (int q = 0; q < cnt; ++q) {
        const float* row = dOut + (base + matches[q]) * d;
#pragma unroll
        for (int k = 0; k < kMaxCols; ++k) {
          const int64_t c = threadIdx.x + int64_t(k) * blockDim.x;
          if (c < d) acc[k] += row[c];
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int k = 0; k < kMaxCols; ++k) {
      const int64_t c = threadIdx.x + int64_t(k) * blockDim.x;
      if (c < d) {
        float* dst = dTable + v * d + c;
        *dst = accumulate ? *dst + acc[k] : acc[k];
      }
    }
  }
}

__global__ void biasAddKernel(float* __restrict__ x, const float* __restrict__ bias, int64_t rows, int64_t cols) {
  const int64_t total = rows * cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x)
    x[e] += bias[e % cols];
}

__global__ void biasGradKernel(const float* __restrict__ dy, int64_t rows, int64_t cols, float* __restrict__ dBias,
                               bool accumulate) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int64_t r = 0; r < rows; ++r) s += dy[r * cols + c];
    dBias[c] = accumulate ? dBias[c] + s : s;
  }
}

__global__ void activationForwardKernel(Activation a, const float* x, float* y, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x)
    y[e] = activationForward(a, x[e]);
}

__global__ void activationBackwardKernel(Activation a, const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x)
    dx[e] = dy[e] * activationDerivative(a, x[e]);
}

// Block-wide reductions over kThreads threads, the same tree every time.
__device__ float blockMax(float x, float* sh) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) sh[w] = x;
  __syncthreads();
  float r = sh[0];
  for (int i = 1; i < kThreads / 32; ++i) r = fmaxf(r, sh[i]);
  return r;
}
__device__ float blockSum(float x, float* sh) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) sh[w] = x;
  __syncthreads();
  float r = sh[0];
  for (int i = 1; i < kThreads / 32; ++i) r += sh[i];
  return r;
}

// One block per row (grid-strided).
__global__ void softmaxCrossEntropyKernel(const float* logits, const int32_t* __restrict__ targets, int64_t rows,
                                          int64_t vocab, float* __restrict__ rowLoss, float* dLogits, float gradScale) {
  __shared__ float sh[kThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* z = logits + r * vocab;
    float mx = -INFINITY;
    for (int64_t c = threadIdx.x; c < vocab; c += kThreads) mx = fmaxf(mx, z[c]);
    mx = blockMax(mx, sh);
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < vocab; c += kThreads) s += expf(z[c] - mx);
    s = blockSum(s, sh);
    const int32_t t = targets[r];
    const bool valid = t >= 0 && t < vocab;
    const float lse = mx + logf(s);
    const float zt = valid ? z[t] : 0.0f;
    __syncthreads();  // every thread has read z[t] before dLogits (which may be logits) is written
    if (threadIdx.x == 0) rowLoss[r] = valid ? lse - zt : NAN;
    if (dLogits != nullptr) {
      float* g = dLogits + r * vocab;
      for (int64_t c = threadIdx.x; c < vocab; c += kThreads) {
        const float p = expf(z[c] - lse);
        g[c] = valid ? (p - (c == t ? 1.0f : 0.0f)) * gradScale : 0.0f;
      }
    }
  }
}

// loss[0] = scale * sum(rowLoss) with one block: thread-strided partial sums in double, fixed tree.
__global__ void sumRowsKernel(const float* __restrict__ rowLoss, int64_t rows, float* __restrict__ loss, float scale) {
  __shared__ double sh[kThreads];
  double s = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += kThreads) s += double(rowLoss[r]);
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) loss[0] = float(sh[0] * double(scale));
}

}  // namespace

Status embeddingForward(int dev, const float* table, int64_t vocab, int64_t d, const int32_t* idx, int64_t n,
                        float* out) {
  if (n <= 0 || d <= 0) return Status();
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "embeddingForward");
  if (!s.ok()) return s;
  embeddingForwardKernel<<<gridFor(n * d), kThreads, 0, st>>>(table, vocab, d, idx, n, out);
  return lastError("embeddingForward");
}

Status embeddingBackward(int dev, const float* dOut, const int32_t* idx, int64_t n, float* dTable, int64_t vocab,
                         int64_t d, bool accumulate) {
  if (vocab <= 0 || d <= 0) return Status();
  if (d > int64_t(8) * 1024) return invalidArg("embeddingBackward: rows wider than 8192 are not supported");
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "embeddingBackward");
  if (!s.ok()) return s;
  const int threads = int(std::min<int64_t>(1024, std::max<int64_t>(32, ((d + 7) / 8 + 31) / 32 * 32)));
  embeddingBackwardKernel<<<gridFor(vocab, 1), threads, 0, st>>>(dOut, idx, n, dTable, vocab, d, accumulate);
  return lastError("embeddingBackward");
}

Status biasAdd(int dev, float* x, const float* bias, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return Status();
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "biasAdd");
  if (!s.ok()) return s;
  biasAddKernel<<<gridFor(rows * cols), kThreads, 0, st>>>(x, bias, rows, cols);
  return lastError("biasAdd");
}

Status biasGrad(int dev, const float* dy, int64_t rows, int64_t cols, float* dBias, bool accumulate) {
  if (cols <= 0) return Status();
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "biasGrad");
  if (!s.ok()) return s;
  biasGradKernel<<<gridFor(cols), kThreads, 0, st>>>(dy, rows, cols, dBias, accumulate);
  return lastError("biasGrad");
}

Status activationForward(int dev, Activation a, const float* x, float* y, int64_t n) {
  if (n <= 0) return Status();
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "activationForward");
  if (!s.ok()) return s;
  activationForwardKernel<<<gridFor(n), kThreads, 0, st>>>(a, x, y, n);
  return lastError("activationForward");
}

Status activationBackward(int dev, Activation a, const float* x, const float* dy, float* dx, int64_t n) {
  if (n <= 0) return Status();
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "activationBackward");
  if (!s.ok()) return s;
  activationBackwardKernel<<<gridFor(n), kThreads, 0, st>>>(a, x, dy, dx, n);
  return lastError("activationBackward");
}

Status softmaxCrossEntropy(int dev, const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                           float* rowLoss, float* loss, float lossScale, float* dLogits, float gradScale) {
  if (vocab <= 0) return invalidArg("softmaxCrossEntropy: vocab must be positive");
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "softmaxCrossEntropy");
  if (!s.ok()) return s;
  if (rows > 0) {
    softmaxCrossEntropyKernel<<<gridFor(rows, 1), kThreads, 0, st>>>(logits, targets, rows, vocab, rowLoss, dLogits,
                                                                    gradScale);
    s = lastError("softmaxCrossEntropy");
    if (!s.ok()) return s;
  }
  sumRowsKernel<<<1, kThreads, 0, st>>>(rowLoss, rows, loss, lossScale);
  return lastError("softmaxCrossEntropy (sum)");
}

}  // namespace gpu
}  // namespace slimopt
