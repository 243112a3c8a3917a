// Adafactor on CUDA: one tensor per call, a few launches (cuda/adafactor.cuh has the math). Every
// reduction is deterministic: per-row (or per-chunk) sums by one block each, column sums by one
// thread per column walking the rows, totals by a single block in a fixed order. The step count t
// and the skip flag are read on the device; when the flag is set every kernel returns at once, so
// nothing is written. Factored: rowKernel (row sums of g^2 + eps1 and of W^2), colKernel (column
// sums), statsKernel (new R, C, the r/c factors, into scratch), uSqKernel (per-row sums of u^2),
// finishKernel (lr_t, the clip divisor, R and C into the state), applyKernel (W, m). Non-factored:
// fullSumsKernel, fullFinishKernel, fullApplyKernel.
#include <cuda_runtime.h>
#include <algorithm>
#include "adafactor.cuh"
#include "adafactor_launchers.h"
#include "internal.cuh"
#include "launchers.h"

namespace slimopt {
namespace gpu {

namespace {

constexpr int kThreads = 256;

struct Layout {
  float* scalars;  // [0] lr_t, [1] clip divisor
  float* rowNew; float* colNew; float* rF; float* cF; float* rowMean; float* pSq; float* uSq;
  float* colPart;  // segments x batch x cols
};

Layout layoutOf(const AdafactorTensor& T, float* s) {
  Layout L{};
  L.scalars = s;
  const int64_t br = T.batch * T.rows, bc = T.batch * T.cols;
  if (!T.factored) {
    const int64_t chunks = (adafactorNumel(T) + kAdafactorChunk - 1) / kAdafactorChunk;
    L.pSq = s + 8;
    L.uSq = s + 8 + chunks;
    return L;
  }
  L.rowNew = s + 8;
  L.colNew = L.rowNew + br;
  L.rF = L.colNew + bc;
  L.cF = L.rF + br;
  L.rowMean = L.cF + bc;
  L.pSq = L.rowMean + T.batch;
  L.uSq = L.pSq + br;
  L.colPart = L.uSq + br;
  return L;
}

__device__ double blockSum(double x) {
  __shared__ double red[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
  __syncthreads();
  double s = 0.0;
  if (threadIdx.x == 0) for (int w = 0; w < kThreads / 32; ++w) s += red[w];
  return s;  // valid in thread 0
}

__global__ void rowKernel(const AdafactorTensor T, const AdafactorHyper h, Layout L, const int32_t* flag) {
  if (*flag) return;
  const int64_t r = blockIdx.x;
  double s = 0.0, w2 = 0.0;
  for (int64_t j = threadIdx.x; j < T.cols; j += blockDim.x) {
    const float g = loadAsFloat(T.grad, T.dtype, r * T.cols + j);
    const float w = T.param ? loadAsFloat(T.param, T.dtype, r * T.cols + j) : 0.0f;
    s += double(__fadd_rn(__fmul_rn(g, g), h.eps1));
    w2 += double(w) * double(w);
  }
  s = blockSum(s);
  w2 = blockSum(w2);
  if (threadIdx.x == 0) { L.rowNew[r] = float(s / double(T.cols)); L.pSq[r] = float(w2); }
}

// One thread per column, walking one segment of the rows (coalesced across the block); a 1-D grid
// of segments x batch x column-blocks (gridDim.y would cap the batch at 65535).
__global__ void colKernel(const AdafactorTensor T, const AdafactorHyper h, Layout L, const int32_t* flag, int64_t colBlocks) {
  if (*flag) return;
  const int64_t segs = adafactorColSegments(T);
  const int64_t jb = blockIdx.x % colBlocks, rest = blockIdx.x / colBlocks;
  const int64_t bi = rest % T.batch, seg = rest / T.batch;
  const int64_t j = jb * blockDim.x + threadIdx.x;
  if (j >= T.cols) return;
  const int64_t per = (T.rows + segs - 1) / segs;
  const int64_t i0 = seg * per, i1 = min(T.rows, i0 + per);
  double s = 0.0;
  for (int64_t i = i0; i < i1; ++i) {
    const float g = loadAsFloat(T.grad, T.dtype, (bi * T.rows + i) * T.cols + j);
    s += double(__fadd_rn(__fmul_rn(g, g), h.eps1));
  }
  L.colPart[(seg * T.batch + bi) * T.cols + j] = float(s);
}

// rowNew holds the row means of this step's g^2 + eps1, colPart the column sums of each row
// segment; blend in the old states, then the factors.
__global__ void statsKernel(const AdafactorTensor T, const AdafactorHyper h, Layout L, const AdamwCounters* counters,
                            const int32_t* flag) {
  if (*flag) return;
  const float b2 = adafactorBeta2(h, counters->step + 1);
  const int64_t bi = blockIdx.x;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < T.rows; i += blockDim.x) {
    const int64_t r = bi * T.rows + i;
    const float v = __fadd_rn(__fmul_rn(b2, T.rowState[r]), __fmul_rn(1.0f - b2, L.rowNew[r]));
    L.rowNew[r] = v;
  }
  __syncthreads();
  // Fixed order: thread 0 sums the row states of this batch entry sequentially, as the CPU does.
  if (threadIdx.x == 0) {
    for (int64_t i = 0; i < T.rows; ++i) s += double(L.rowNew[bi * T.rows + i]);
    L.rowMean[bi] = float(s / double(T.rows));
  }
  __syncthreads();
  const float mean = L.rowMean[bi];
  for (int64_t i = threadIdx.x; i < T.rows; i += blockDim.x) {
    const int64_t r = bi * T.rows + i;
    L.rF[r] = 1.0f / sqrtf(__fdiv_rn(L.rowNew[r], mean));
  }
  const int64_t segs = adafactorColSegments(T);
  for (int64_t j = threadIdx.x; j < T.cols; j += blockDim.x) {
    const int64_t c = bi * T.cols + j;
    double cs = 0.0;
    for (int64_t sg = 0; sg < segs; ++sg) cs += double(L.colPart[(sg * T.batch + bi) * T.cols + j]);
    const float colMean = float(cs / double(T.rows));
    const float v = __fadd_rn(__fmul_rn(b2, T.colState[c]), __fmul_rn(1.0f - b2, colMean));
    L.colNew[c] = v;
    L.cF[c] = 1.0f / sqrtf(v);
  }
}

__global__ void uSqKernel(const AdafactorTensor T, Layout L, const int32_t* flag) {
  if (*flag) return;
  const int64_t r = blockIdx.x, bi = r / T.rows;
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < T.cols; j += blockDim.x) {
    const float u = __fmul_rn(__fmul_rn(L.rF[r], L.cF[bi * T.cols + j]), loadAsFloat(T.grad, T.dtype, r * T.cols + j));
    s += double(u) * double(u);
  }
  s = blockSum(s);
  if (threadIdx.x == 0) L.uSq[r] = float(s);
}

// One block: totals in a fixed order, lr_t and the divisor; the factored states are committed.
__global__ void finishKernel(const AdafactorTensor T, const AdafactorHyper h, Layout L, const AdamwCounters* counters,
                             const int32_t* flag, int64_t parts) {
  if (*flag) return;
  if (threadIdx.x == 0) {
    double w2 = 0.0, u2 = 0.0;
    for (int64_t i = 0; i < parts; ++i) { w2 += double(L.pSq[i]); u2 += double(L.uSq[i]); }
    const int64_t n = adafactorNumel(T);
    L.scalars[0] = adafactorLr(h, counters->step + 1, T.param || !T.factored ? float(sqrt(w2 / double(n))) : adafactorParamRms(T, w2));
    L.scalars[1] = adafactorClipDenom(u2, n, h.clipThreshold);
  }
  if (T.factored) {
    for (int64_t r = threadIdx.x; r < T.batch * T.rows; r += blockDim.x) T.rowState[r] = L.rowNew[r];
    for (int64_t c = threadIdx.x; c < T.batch * T.cols; c += blockDim.x) T.colState[c] = L.colNew[c];
  }
}

__global__ void applyKernel(const AdafactorTensor T, const AdafactorHyper h, Layout L, const int32_t* flag) {
  if (*flag) return;
  const int64_t r = blockIdx.x, bi = r / T.rows;
  const float lrT = L.scalars[0], denom = L.scalars[1];
  for (int64_t j = threadIdx.x; j < T.cols; j += blockDim.x) {
    const int64_t i = r * T.cols + j;
    const float u = __fmul_rn(__fmul_rn(L.rF[r], L.cF[bi * T.cols + j]), loadAsFloat(T.grad, T.dtype, i));
    float* m = T.expAvg ? T.expAvg + i : nullptr;
    if (!T.param) T.update[i] = adafactorUpdate(u, m, denom, lrT, h);
    else storeFromFloat(T.param, T.dtype, i, adafactorApply(loadAsFloat(T.param, T.dtype, i), u, m, denom, lrT, h));
  }
}

__global__ void galoreApplyKernel(void* W, DType wt, const float* back, int64_t n, float scale, const AdafactorHyper h,
                                  const float* scalars, const int32_t* flag) {
  if (*flag) return;
  const float lrT = scalars[0];
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    storeFromFloat(W, wt, i, galoreAdafactorApply(loadAsFloat(W, wt, i), back[i], scale, lrT, h));
}

__device__ float fullV(const AdafactorTensor& T, const AdafactorHyper& h, float b2, float g, int64_t i) {
  return __fadd_rn(__fmul_rn(b2, T.fullState[i]), __fmul_rn(1.0f - b2, __fadd_rn(__fmul_rn(g, g), h.eps1)));
}

__global__ void fullSumsKernel(const AdafactorTensor T, const AdafactorHyper h, Layout L, const AdamwCounters* counters,
                               const int32_t* flag) {
  if (*flag) return;
  const float b2 = adafactorBeta2(h, counters->step + 1);
  const int64_t n = adafactorNumel(T);
  const int64_t begin = int64_t(blockIdx.x) * kAdafactorChunk, end = min(n, begin + kAdafactorChunk);
  double w2 = 0.0, u2 = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float g = loadAsFloat(T.grad, T.dtype, i), w = loadAsFloat(T.param, T.dtype, i);
    const float u = __fdiv_rn(g, sqrtf(fullV(T, h, b2, g, i)));
    w2 += double(w) * double(w);
    u2 += double(u) * double(u);
  }
  w2 = blockSum(w2);
  u2 = blockSum(u2);
  if (threadIdx.x == 0) { L.pSq[blockIdx.x] = float(w2); L.uSq[blockIdx.x] = float(u2); }
}

__global__ void fullApplyKernel(const AdafactorTensor T, const AdafactorHyper h, Layout L, const AdamwCounters* counters,
                                const int32_t* flag) {
  if (*flag) return;
  const float b2 = adafactorBeta2(h, counters->step + 1);
  const float lrT = L.scalars[0], denom = L.scalars[1];
  const int64_t n = adafactorNumel(T);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = loadAsFloat(T.grad, T.dtype, i);
    const float v = fullV(T, h, b2, g, i);
    T.fullState[i] = v;
    float* m = T.expAvg ? T.expAvg + i : nullptr;
    storeFromFloat(T.param, T.dtype, i, adafactorApply(loadAsFloat(T.param, T.dtype, i), __fdiv_rn(g, sqrtf(v)), m, denom, lrT, h));
  }
}

}  // namespace

Status adafactorStep(int dev, const AdafactorTensor& T, const AdafactorHyper& h, const AdamwCounters* counters,
                     const int32_t* flag, float* scratch) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "adafactorStep");
  if (!ok.ok()) return ok;
  const int64_t n = adafactorNumel(T);
  if (n == 0) return ok;
  const Layout L = layoutOf(T, scratch);
  if (!T.factored) {
    const int64_t chunks = (n + kAdafactorChunk - 1) / kAdafactorChunk;
    fullSumsKernel<<<unsigned(chunks), kThreads, 0, st>>>(T, h, L, counters, flag);
    finishKernel<<<1, kThreads, 0, st>>>(T, h, L, counters, flag, chunks);
    const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(smCount(dev)) * 8);
    fullApplyKernel<<<unsigned(blocks), kThreads, 0, st>>>(T, h, L, counters, flag);
    return lastError("adafactorStep");
  }
  const int64_t br = T.batch * T.rows;
  rowKernel<<<unsigned(br), kThreads, 0, st>>>(T, h, L, flag);
  const int64_t colBlocks = (T.cols + kThreads - 1) / kThreads;
  colKernel<<<unsigned(colBlocks * T.batch * adafactorColSegments(T)), kThreads, 0, st>>>(T, h, L, flag, colBlocks);
  statsKernel<<<unsigned(T.batch), kThreads, 0, st>>>(T, h, L, counters, flag);
  uSqKernel<<<unsigned(br), kThreads, 0, st>>>(T, L, flag);
  finishKernel<<<1, kThreads, 0, st>>>(T, h, L, counters, flag, br);
  applyKernel<<<unsigned(br), kThreads, 0, st>>>(T, h, L, flag);
  return lastError("adafactorStep");
}

Status galoreAdafactorStep(int dev, const GaloreTensor& G, const AdafactorTensor& R, const AdafactorHyper& h, float scale,
                           const AdamwCounters* counters, const int32_t* flag, float* sR, float* sT, float* sBig,
                           float* scratch, GemmMode mode) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "galoreAdafactorStep");
  if (!ok.ok()) return ok;
  ok = galoreProject(dev, G, sR, sT, sBig, mode);
  if (ok.ok()) ok = adafactorStep(dev, R, h, counters, flag, scratch);
  if (ok.ok()) ok = galoreBackF32(dev, G, R.update, sBig, sT, mode);
  if (!ok.ok()) return ok;
  const int64_t n = G.rows * G.cols;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(smCount(dev)) * 8));
  galoreApplyKernel<<<unsigned(blocks), kThreads, 0, st>>>(G.param, G.paramDtype, sBig, n, scale, h, scratch, flag);
  return lastError("galoreAdafactorStep");
}

}  // namespace gpu
}  // namespace slimopt
