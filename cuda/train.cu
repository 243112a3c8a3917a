// Training-loop kernels: the multi-tensor sum of squares behind clipGradNorm, the in-place scale
// of a gradient list by a factor read on the device (no host sync), and the counters merge of a
// layer-wise round. Tensor lists travel in the kernel parameters, 128 tensors per launch (as
// PyTorch's multi_tensor_apply does), so nothing is allocated or copied per call.
#include <cuda_runtime.h>
#include <algorithm>
#include "internal.cuh"
#include "train_launchers.h"

namespace slimopt {
namespace gpu {

namespace {

constexpr int kListMax = 128;
constexpr int64_t kChunk = 16384;
constexpr int kThreads = 256;

struct GradBatch {
  int32_t n;
  int64_t chunkBegin[kListMax + 1];
  void* ptr[kListMax];
  int64_t numel[kListMax];
  DType dtype[kListMax];
};

// Fills a batch from list[first..) and returns how many tensors it took.
int32_t fillBatch(const GradRef* list, int32_t n, int32_t first, GradBatch* b) {
  const int32_t k = std::min(kListMax, n - first);
  b->n = k;
  int64_t c = 0;
  for (int32_t i = 0; i < k; ++i) {
    const GradRef& g = list[first + i];
    b->ptr[i] = g.ptr;
    b->numel[i] = g.numel;
    b->dtype[i] = g.dtype;
    b->chunkBegin[i] = c;
    c += (g.numel + kChunk - 1) / kChunk;
  }
  b->chunkBegin[k] = c;
  return k;
}

__device__ int32_t tensorOfChunk(const GradBatch& b, int64_t c) {
  int32_t lo = 0, hi = b.n - 1;
  while (lo < hi) {  // last i with chunkBegin[i] <= c
    const int32_t mid = (lo + hi + 1) / 2;
    if (b.chunkBegin[mid] <= c) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__global__ void sumSquaresKernel(const GradBatch b, float* partials) {
  const int64_t total = b.chunkBegin[b.n];
  float acc = 0.0f;
  for (int64_t c = blockIdx.x; c < total; c += gridDim.x) {
    const int32_t t = tensorOfChunk(b, c);
    const int64_t begin = (c - b.chunkBegin[t]) * kChunk;
    const int64_t end = min(b.numel[t], begin + kChunk);
    const void* p = b.ptr[t];
    const DType d = b.dtype[t];
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const float x = loadAsFloat(p, d, i);
      acc = fmaf(x, x, acc);
    }
  }
  __shared__ float red[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) s += red[w];
    partials[blockIdx.x] += s;  // one block per slot per launch; launches are stream-ordered
  }
}

__global__ void normFinishKernel(float* ws, float maxNorm) {
  // One warp: fixed-order partial sums per lane, then a fixed shuffle tree (deterministic).
  double s = 0.0;
  for (int i = threadIdx.x; i < kGradPartials; i += 32) s += double(ws[kGradWsHeader + i]);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  if (threadIdx.x == 0) {
    const float norm = float(sqrt(s));
    ws[0] = norm;
    ws[1] = clipFactor(norm, maxNorm);
  }
}

__global__ void scaleKernel(const GradBatch b, const float* factor, float value) {
  const float f = factor ? *factor : value;
  if (f == 1.0f) return;
  const int64_t total = b.chunkBegin[b.n];
  for (int64_t c = blockIdx.x; c < total; c += gridDim.x) {
    const int32_t t = tensorOfChunk(b, c);
    const int64_t begin = (c - b.chunkBegin[t]) * kChunk;
    const int64_t end = min(b.numel[t], begin + kChunk);
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
      storeFromFloat(b.ptr[t], b.dtype[t], i, loadAsFloat(b.ptr[t], b.dtype[t], i) * f);
  }
}

__global__ void addKernel(void* dst, DType dt, const void* src, DType st, int64_t n, float alpha) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    storeFromFloat(dst, dt, i, __fadd_rn(loadAsFloat(dst, dt, i), __fmul_rn(alpha, loadAsFloat(src, st, i))));
}

struct CounterBatch {
  int32_t n;
  AdamwCounters* src[kListMax];
};

__global__ void countersMaxKernel(AdamwCounters* dst, const CounterBatch b) {
  AdamwCounters c = *dst;
  for (int32_t i = 0; i < b.n; ++i) {
    c.step = max(c.step, b.src[i]->step);
    c.skipped = max(c.skipped, b.src[i]->skipped);
  }
  *dst = c;
}

int gridOf(int dev, int64_t chunks) {
  return int(std::max<int64_t>(1, std::min<int64_t>({chunks, int64_t(smCount(dev)) * 2, int64_t(kGradPartials)})));
}

}  // namespace

Status gradSumSquares(int dev, const GradRef* list, int32_t n, float* ws, bool reset) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "gradSumSquares");
  if (!ok.ok()) return ok;
  float* partials = ws + kGradWsHeader;
  if (reset) {
    ok = statusOf(cudaMemsetAsync(partials, 0, sizeof(float) * kGradPartials, st), "gradSumSquares");
    if (!ok.ok()) return ok;
  }
  GradBatch b;
  for (int32_t first = 0; first < n;) {
    first += fillBatch(list, n, first, &b);
    if (b.chunkBegin[b.n] == 0) continue;
    sumSquaresKernel<<<gridOf(dev, b.chunkBegin[b.n]), kThreads, 0, st>>>(b, partials);
    ok = lastError("gradSumSquares");
    if (!ok.ok()) return ok;
  }
  return ok;
}

Status gradNormFinish(int dev, float* ws, float maxNorm) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "gradNormFinish");
  if (!ok.ok()) return ok;
  normFinishKernel<<<1, 32, 0, st>>>(ws, maxNorm);
  return lastError("gradNormFinish");
}

Status gradScale(int dev, const GradRef* list, int32_t n, const float* factor, float value) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "gradScale");
  if (!ok.ok()) return ok;
  GradBatch b;
  for (int32_t first = 0; first < n;) {
    first += fillBatch(list, n, first, &b);
    if (b.chunkBegin[b.n] == 0) continue;
    scaleKernel<<<int(std::min<int64_t>(b.chunkBegin[b.n], int64_t(smCount(dev)) * 8)), kThreads, 0, st>>>(b, factor, value);
    ok = lastError("gradScale");
    if (!ok.ok()) return ok;
  }
  return ok;
}

Status gradAdd(int dev, void* dst, DType dt, const void* src, DType st, int64_t n, float alpha) {
  cudaStream_t s;
  Status ok = deviceStream(dev, &s, "gradAdd");
  if (!ok.ok() || n == 0) return ok;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(smCount(dev)) * 8);
  addKernel<<<unsigned(blocks), kThreads, 0, s>>>(dst, dt, src, st, n, alpha);
  return lastError("gradAdd");
}

Status countersMax(int dev, AdamwCounters* dst, AdamwCounters* const* srcs, int32_t n) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "countersMax");
  if (!ok.ok()) return ok;
  CounterBatch b;
  for (int32_t first = 0; first < n; first += kListMax) {
    b.n = std::min(kListMax, n - first);
    for (int32_t i = 0; i < b.n; ++i) b.src[i] = srcs[first + i];
    countersMaxKernel<<<1, 1, 0, st>>>(dst, b);
    ok = lastError("countersMax");
    if (!ok.ok()) return ok;
  }
  return ok;
}

}  // namespace gpu
}  // namespace slimopt
