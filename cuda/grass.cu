// Grass kernels: the per-step pipeline of a group (non-finite scan, per-slot step sizes, fused
// gather + compact Adam + scatter), the refresh (line norms, top-k / uniform / multinomial
// selection, moment remap) and the standalone gather-rows / scatter-rows. The math, the draws and
// the reduction orders are in grass.cuh, shared with the CPU backend (csrc/cpu/grass.cc).
//
// A step is four launches in stream order, whatever the tensor count:
//   memset(flag) -> scan (sets flag on a NaN/Inf in what the step reads)
//   [refresh steps: per tensor, norms -> select -> remap -> commit; remap/commit check flag]
//   -> prologue (per-slot step sizes and ages, the step/skip counters; checks flag)
//   -> update (checks flag).
// With 8-bit states (stateBits 8, see grass.cuh) two launches join: the blocks' new absmax
// (before the update; a warp per 256-block) and absmax <- new absmax (after it). The maps'
// values and finder tables are staged in shared memory by each block of both.
// The skip is decided on the device with no host sync: every kernel that changes state reads the
// flag the scan wrote (an earlier kernel on the same stream), so a skipped step changes nothing
// but the skip counter, and a skipped refresh keeps the previous selection.
//
// Multi-tensor launches. Each tensor contributes units (a slot row, a tile of W rows, or a flat
// chunk); the glue numbers them (GrassTensor::*Begin, an exclusive prefix) and a block finds its
// tensor by binary search, as cuda/adamw.cu does. One block per unit (grid-strided past 2^20).
//
// Duplicates. Slots are sorted by line; a run of equal lines is handled by the block (Rows) or the
// thread (Cols) that owns its first slot, which sums the run's updates in slot order: no float
// atomics, so the result does not depend on scheduling. Indices out of range (a corrupt state
// dict) are skipped, never dereferenced.
//
// Column mode works on W's rows: a unit is a tile of kGrassColRows rows of W, threads walk the
// slots, so the compact gradient and the moments (m×r) are read contiguously and W/G at the
// selected columns of each row (sorted, so a warp's accesses ascend). Nothing is transposed.
#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>
#include <algorithm>
#include "grass.cuh"
#include "internal.cuh"
#include "launchers.h"
#include "quant_device.cuh"
#include "scan.cuh"

namespace slimopt {
namespace gpu {

namespace {

constexpr int kT = kGrassThreads;
constexpr int64_t kMaxGrid = int64_t(1) << 20;

// ---- loads and stores -------------------------------------------------------------------------

template <DType D>
__device__ __forceinline__ float ld(const void* p, int64_t i) { return loadAsFloat(p, D, i); }
template <DType D>
__device__ __forceinline__ void st(void* p, int64_t i, float x) { storeFromFloat(p, D, i, x); }

// 4 consecutive elements (16 bytes for f32, 8 for 16-bit types); i % 4 == 0, base quad-aligned.
// kStream: the streaming cache hints (ld.global.cs / st.global.cs: evict first), for rows that the
// standalone gather / scatter touch once (bench/micro/rows_bench.cu measured them).
template <typename T, bool kStream>
__device__ __forceinline__ T ldHint(const T* p) { if constexpr (kStream) return __ldcs(p); else return *p; }
template <typename T, bool kStream>
__device__ __forceinline__ void stHint(T* p, T v) { if constexpr (kStream) __stcs(p, v); else *p = v; }
template <DType D, bool kStream = false>
__device__ __forceinline__ void loadQuad(const void* p, int64_t i, float x[4]) {
  if (D == DType::F32) {
    const float4 f = ldHint<float4, kStream>(reinterpret_cast<const float4*>(static_cast<const float*>(p) + i));
    x[0] = f.x; x[1] = f.y; x[2] = f.z; x[3] = f.w;
  } else {
    const uint2 u = ldHint<uint2, kStream>(reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(p) + i));
    uint16_t h[4] = {uint16_t(u.x), uint16_t(u.x >> 16), uint16_t(u.y), uint16_t(u.y >> 16)};
#pragma unroll
    for (int k = 0; k < 4; ++k) x[k] = D == DType::BF16 ? bf16ToFloat(h[k]) : f16ToFloat(h[k]);
  }
}
template <DType D, bool kStream = false>
__device__ __forceinline__ void storeQuad(void* p, int64_t i, const float x[4]) {
  if (D == DType::F32) {
    stHint<float4, kStream>(reinterpret_cast<float4*>(static_cast<float*>(p) + i), make_float4(x[0], x[1], x[2], x[3]));
  } else {
    uint16_t h[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = D == DType::BF16 ? floatToBf16(x[k]) : floatToF16(x[k]);
    stHint<uint2, kStream>(reinterpret_cast<uint2*>(static_cast<uint16_t*>(p) + i),
                           make_uint2(uint32_t(h[0]) | (uint32_t(h[1]) << 16), uint32_t(h[2]) | (uint32_t(h[3]) << 16)));
  }
}
__device__ __forceinline__ void loadQuadF(const float* p, int64_t i, float x[4]) {
  float4 f = *reinterpret_cast<const float4*>(p + i);
  x[0] = f.x; x[1] = f.y; x[2] = f.z; x[3] = f.w;
}
__device__ __forceinline__ void storeQuadF(float* p, int64_t i, const float x[4]) {
  *reinterpret_cast<float4*>(p + i) = make_float4(x[0], x[1], x[2], x[3]);
}
// Whether p can be read in quads of dtype d.
__device__ __forceinline__ bool quadAligned(const void* p, DType d) {
  return (reinterpret_cast<uintptr_t>(p) & uintptr_t(dtypeSize(d) * 4 - 1)) == 0;
}

// ---- multi-tensor bookkeeping -------------------------------------------------------------------

enum class Field { ScanRefresh, ScanStep, Update, Slot };

template <Field F>
__device__ __forceinline__ int64_t beginOf(const GrassTensor* T, int k) {
  switch (F) {
    case Field::ScanRefresh: return __ldg(&T[k].scanBeginRefresh);
    case Field::ScanStep: return __ldg(&T[k].scanBeginStep);
    case Field::Update: return __ldg(&T[k].updateBegin);
    default: return __ldg(&T[k].slotBegin);
  }
}

// The last tensor whose first unit is <= u (tensors with no units share their successor's begin).
template <Field F>
__device__ __forceinline__ int findTensor(const GrassTensor* T, int n, int64_t u) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (beginOf<F>(T, mid) <= u) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The run of slots [j0, j1) holding line idx[j0] when j0 owns it (first of its run, line in
// range); false otherwise. Every thread of a block computes the same answer.
__device__ __forceinline__ bool ownedRun(const int32_t* idx, int64_t r, int64_t lines, int64_t j0,
                                         int32_t* line, int64_t* j1) {
  const int32_t x = idx[j0];
  if (x < 0 || int64_t(x) >= lines) return false;
  if (j0 > 0 && idx[j0 - 1] == x) return false;
  int64_t e = j0 + 1;
  while (e < r && idx[e] == x) ++e;
  *line = x;
  *j1 = e;
  return true;
}

// ---- the non-finite scan ------------------------------------------------------------------------

__device__ __forceinline__ bool scanRange(const void* p, DType d, int64_t begin, int64_t end) {
  return blockScanNonFinite<kT, 4>(p, d, begin, end);
}

__global__ void __launch_bounds__(kT) scanKernel(const GrassTensor* tensors, int n, int64_t units,
                                                 int refreshing, int32_t* flag) {
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int k = refreshing ? findTensor<Field::ScanRefresh>(tensors, n, u)
                             : findTensor<Field::ScanStep>(tensors, n, u);
    const GrassTensor& T = tensors[k];
    const int64_t local = u - (refreshing ? T.scanBeginRefresh : T.scanBeginStep);
    const DType d = T.paramDtype;
    bool bad = false;
    if (T.mode == GrassMode::Dense || refreshing) {
      const int64_t b = local * kGrassFlatUnit;
      bad = scanRange(T.grad, d, b, min(grassNumel(T), b + kGrassFlatUnit));
    } else if (T.compact != nullptr) {
      const int64_t b = local * kGrassFlatUnit;
      bad = scanRange(T.compact, d, b, min(grassCompactNumel(T), b + kGrassFlatUnit));
    } else if (T.mode == GrassMode::Rows) {
      int32_t line;
      int64_t j1;
      if (ownedRun(T.indices, T.rank, T.rows, local, &line, &j1))
        bad = scanRange(T.grad, d, int64_t(line) * T.cols, int64_t(line) * T.cols + T.cols);
    } else {
      const int64_t k0 = local * kGrassColRows, k1 = min(T.rows, k0 + kGrassColRows);
      for (int64_t j = threadIdx.x; j < T.rank; j += kT) {
        const int32_t c = T.indices[j];
        if (c < 0 || int64_t(c) >= T.cols) continue;
        for (int64_t k = k0; k < k1; ++k) bad |= !isFiniteFloat(loadAsFloat(T.grad, d, k * T.cols + c));
      }
    }
    if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
  }
}

// ---- prologue: per-slot step sizes, ages, counters -----------------------------------------------

__global__ void __launch_bounds__(kT) prologueKernel(const GrassTensor* tensors, int n, int64_t units,
                                                     GrassHyper h, const int32_t* flag,
                                                     AdamwCounters* counters) {
  const bool skip = *flag != 0;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (skip) counters->skipped += 1;
    else counters->step += 1;
  }
  if (skip) return;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int k = findTensor<Field::Slot>(tensors, n, u);
    const GrassTensor& T = tensors[k];
    const int64_t j = (u - T.slotBegin) * kT + threadIdx.x;
    if (j >= T.rank) continue;
    const bool dense = T.mode == GrassMode::Dense;
    const int32_t t = T.ages[j] + 1;
    T.ages[j] = t;
    T.coef[j] = grassCoef(h.lr, dense ? 1.0f : h.scale, dense ? 1.0f : T.rho[j], h.beta1, h.beta2, t);
  }
}

// ---- update: fused gather + compact Adam + scatter ------------------------------------------------

struct Step {
  float beta1, beta2, eps, decay;
  Q8View q;  // staged maps (8-bit states)
};

constexpr int kQuads = 2;  // quads per thread per pass: 8 independent 16-byte loads in flight (f32)

// Rows mode, one owned row. The common case (a line selected once, n % 4 == 0, aligned) reads
// W, G (or the compact row), m, v in quads; duplicates and odd shapes take the scalar loop.
template <DType PT>
__device__ __forceinline__ void updateRow(const GrassTensor& T, int64_t j0, const Step& s) {
  int32_t line;
  int64_t j1;
  if (!ownedRun(T.indices, T.rank, T.rows, j0, &line, &j1)) return;
  const int64_t n = T.cols;
  void* const w = T.param;
  const int64_t wBase = int64_t(line) * n;
  const int tid = threadIdx.x;
  if (j1 - j0 == 1 && !T.quantized) {
    const void* g = T.compact != nullptr ? T.compact : T.grad;
    const int64_t gBase = T.compact != nullptr ? j0 * n : wBase;
    float* const m = T.expAvg + j0 * n;
    float* const v = T.expAvgSq + j0 * n;
    const float cf = T.coef[j0], rh = T.rho[j0];
    if ((n & 3) == 0 && quadAligned(w, PT) && quadAligned(g, PT) && quadAligned(T.expAvg, DType::F32) &&
        quadAligned(T.expAvgSq, DType::F32)) {
      const int64_t nq = n >> 2;
      for (int64_t q0 = 0; q0 < nq; q0 += kQuads * kT) {
        float wq[kQuads][4], gq[kQuads][4], mq[kQuads][4], vq[kQuads][4];
#pragma unroll
        for (int a = 0; a < kQuads; ++a) {
          const int64_t q = q0 + a * kT + tid;
          if (q < nq) {
            loadQuad<PT>(g, gBase + 4 * q, gq[a]);
            loadQuad<PT>(w, wBase + 4 * q, wq[a]);
            loadQuadF(m, 4 * q, mq[a]);
            loadQuadF(v, 4 * q, vq[a]);
          }
        }
#pragma unroll
        for (int a = 0; a < kQuads; ++a) {
          const int64_t q = q0 + a * kT + tid;
          if (q < nq) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float nn = grassAdam(rh * gq[a][e], mq[a][e], vq[a][e], s.beta1, s.beta2, s.eps);
              const float acc = 0.0f + cf * nn;
              wq[a][e] = (wq[a][e] - acc) * s.decay;
            }
            storeQuadF(m, 4 * q, mq[a]);
            storeQuadF(v, 4 * q, vq[a]);
            storeQuad<PT>(w, wBase + 4 * q, wq[a]);
          }
        }
      }
      return;
    }
  }
  for (int64_t i = tid; i < n; i += kT) {
    float wi = ld<PT>(w, wBase + i);
    float acc = 0.0f;
    for (int64_t j = j0; j < j1; ++j) {
      const float gi = T.compact != nullptr ? ld<PT>(T.compact, j * n + i) : ld<PT>(T.grad, wBase + i);
      float nn;
      if (T.quantized) {
        nn = grassQ8Adam(T, s.q, j * n + i, j, gi, s.beta1, s.beta2, s.eps);
      } else {
        float mi = T.expAvg[j * n + i], vi = T.expAvgSq[j * n + i];
        nn = grassAdam(T.rho[j] * gi, mi, vi, s.beta1, s.beta2, s.eps);
        T.expAvg[j * n + i] = mi;
        T.expAvgSq[j * n + i] = vi;
      }
      acc = acc + T.coef[j] * nn;
    }
    st<PT>(w, wBase + i, (wi - acc) * s.decay);
  }
}

// Cols mode, a tile of W rows; thread per owned slot run.
template <DType PT>
__device__ __forceinline__ void updateColTile(const GrassTensor& T, int64_t tile, const Step& s) {
  const int64_t n = T.cols, r = T.rank;
  const int64_t k0 = tile * kGrassColRows, k1 = min(T.rows, k0 + kGrassColRows);
  for (int64_t j0 = threadIdx.x; j0 < r; j0 += kT) {
    int32_t col;
    int64_t j1;
    if (!ownedRun(T.indices, r, n, j0, &col, &j1)) continue;
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t wi = k * n + col;
      float w = ld<PT>(T.param, wi);
      float acc = 0.0f;
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t ci = k * r + j;
        const float g = T.compact != nullptr ? ld<PT>(T.compact, ci) : ld<PT>(T.grad, wi);
        float nn;
        if (T.quantized) {
          nn = grassQ8Adam(T, s.q, ci, j, g, s.beta1, s.beta2, s.eps);
        } else {
          float mi = T.expAvg[ci], vi = T.expAvgSq[ci];
          nn = grassAdam(T.rho[j] * g, mi, vi, s.beta1, s.beta2, s.eps);
          T.expAvg[ci] = mi;
          T.expAvgSq[ci] = vi;
        }
        acc = acc + T.coef[j] * nn;
      }
      st<PT>(T.param, wi, (w - acc) * s.decay);
    }
  }
}

// Dense mode: elements [b, e) of a flat tensor, one slot (coef[0]).
template <DType PT>
__device__ __forceinline__ void updateDense(const GrassTensor& T, int64_t b, int64_t e, const Step& s) {
  const float cf = T.coef[0];
  void* const w = T.param;
  const void* const g = T.grad;
  float* const m = T.expAvg;
  float* const v = T.expAvgSq;
  const int tid = threadIdx.x;
  if ((b & 3) == 0 && quadAligned(w, PT) && quadAligned(g, PT) && quadAligned(m, DType::F32) &&
      quadAligned(v, DType::F32)) {
    const int64_t nq = (e - b) >> 2;
    for (int64_t q0 = 0; q0 < nq; q0 += kQuads * kT) {
      float wq[kQuads][4], gq[kQuads][4], mq[kQuads][4], vq[kQuads][4];
#pragma unroll
      for (int a = 0; a < kQuads; ++a) {
        const int64_t q = q0 + a * kT + tid;
        if (q < nq) {
          const int64_t i = b + 4 * q;
          loadQuad<PT>(g, i, gq[a]);
          loadQuad<PT>(w, i, wq[a]);
          loadQuadF(m, i, mq[a]);
          loadQuadF(v, i, vq[a]);
        }
      }
#pragma unroll
      for (int a = 0; a < kQuads; ++a) {
        const int64_t q = q0 + a * kT + tid;
        if (q < nq) {
          const int64_t i = b + 4 * q;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const float nn = grassAdam(gq[a][k], mq[a][k], vq[a][k], s.beta1, s.beta2, s.eps);
            const float acc = 0.0f + cf * nn;
            wq[a][k] = (wq[a][k] - acc) * s.decay;
          }
          storeQuadF(m, i, mq[a]);
          storeQuadF(v, i, vq[a]);
          storeQuad<PT>(w, i, wq[a]);
        }
      }
    }
    b += 4 * nq;
  }
  for (int64_t i = b + tid; i < e; i += kT) {
    float mi = m[i], vi = v[i];
    const float nn = grassAdam(ld<PT>(g, i), mi, vi, s.beta1, s.beta2, s.eps);
    m[i] = mi;
    v[i] = vi;
    const float acc = 0.0f + cf * nn;
    st<PT>(w, i, (ld<PT>(w, i) - acc) * s.decay);
  }
}

template <DType PT>
__device__ __forceinline__ void updateUnit(const GrassTensor& T, int64_t local, const Step& s) {
  if (T.mode == GrassMode::Rows) {
    updateRow<PT>(T, local, s);
  } else if (T.mode == GrassMode::Cols) {
    updateColTile<PT>(T, local, s);
  } else {
    const int64_t b = local * kGrassFlatUnit;
    updateDense<PT>(T, b, min(grassNumel(T), b + kGrassFlatUnit), s);
  }
}

__global__ void __launch_bounds__(kT, 3) updateKernel(const GrassTensor* tensors, int n, int64_t units,
                                                   Step s, Q8Maps q8, const int32_t* flag) {
  if (*flag != 0) return;
  extern __shared__ __align__(16) uint8_t q8Smem[];
  s.q = stageQ8(q8, q8Smem);
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int k = findTensor<Field::Update>(tensors, n, u);
    const GrassTensor T = tensors[k];
    const int64_t local = u - T.updateBegin;
    switch (T.paramDtype) {
      case DType::BF16: updateUnit<DType::BF16>(T, local, s); break;
      case DType::F16: updateUnit<DType::F16>(T, local, s); break;
      default: updateUnit<DType::F32>(T, local, s); break;
    }
  }
}

// ---- 8-bit states: pass 1 (new absmax per block) and pass 3 ---------------------------------------

// The quantized tensor holding 8-bit block u: the last whose qBlockBegin <= u (tensors without
// 8-bit states have no blocks and share their successor's qBlockBegin).
__device__ __forceinline__ int findQTensor(const GrassTensor* T, int n, int64_t u) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (__ldg(&T[mid].qBlockBegin) <= u) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// A warp per 256-block: every element's new m, v (pass 2 computes the same bits again), their
// absmax into newAbsmax; elements of out-of-range slots keep their value and are re-encoded here.
__global__ void __launch_bounds__(kT) q8AbsmaxKernel(const GrassTensor* tensors, int n, int64_t blocks,
                                                     float beta1, float beta2, Q8Maps maps,
                                                     const int32_t* flag) {
  if (*flag != 0) return;
  extern __shared__ __align__(16) uint8_t q8Smem[];
  const Q8View q = stageQ8(maps, q8Smem);
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (kT / 32);
  for (int64_t u = int64_t(blockIdx.x) * (kT / 32) + (threadIdx.x >> 5); u < blocks; u += warps) {
    const int k = findQTensor(tensors, n, u);
    const GrassTensor& T = tensors[k];
    const int64_t b = u - T.qBlockBegin, count = grassCompactNumel(T);
    float m[kQ8PerLane], v[kQ8PerLane], mx, vx;
    uint32_t kept = 0;
    q8WarpBlock(b * kGrassQBlock, count, lane, m, v, mx, vx, [&](int t, int64_t e, float& mi, float& vi) {
      int64_t j, gi;
      const void* src;
      if (grassCompactElement(T, e, &j, &gi, &src)) {
        grassQ8Moments(T, q, e, j, loadAsFloat(src, T.paramDtype, gi), beta1, beta2, mi, vi);
      } else {
        grassQ8Load(T, q, e, mi, vi);
        kept |= 1u << t;
      }
    });
    if (lane == 0) {
      T.newAbsmax[2 * b] = mx;
      T.newAbsmax[2 * b + 1] = vx;
    }
    __syncwarp();
    if (kept == 0) continue;
#pragma unroll
    for (int t = 0; t < kQ8PerLane; ++t)
      if (kept & (1u << t)) grassQ8Store(T, q, b * kGrassQBlock + t * 32 + lane, m[t], v[t]);
  }
}

// Pass 3: absmax <- newAbsmax.
__global__ void __launch_bounds__(kT) q8AbsmaxCommitKernel(const GrassTensor* tensors, int n, int64_t blocks,
                                                           const int32_t* flag) {
  if (*flag != 0) return;
  const int64_t stride = int64_t(gridDim.x) * kT;
  for (int64_t u = int64_t(blockIdx.x) * kT + threadIdx.x; u < blocks; u += stride) {
    const GrassTensor& T = tensors[findQTensor(tensors, n, u)];
    const int64_t b = u - T.qBlockBegin;
    T.absmaxM[b] = T.newAbsmax[2 * b];
    T.absmaxV[b] = T.newAbsmax[2 * b + 1];
  }
}

// ---- refresh: norms ------------------------------------------------------------------------------

// Row norms: block per row; lane t sums (exactly rounded, in index order) the elements of quads
// t, t+256, ...; then a fixed tree over the 256 lanes. The CPU backend sums in the same order.
template <DType D>
__global__ void __launch_bounds__(kGrassNormLanes) normsRowsKernel(const void* g, int64_t m, int64_t n,
                                                                   double* norms) {
  __shared__ double s[kGrassNormLanes];
  const int tid = threadIdx.x;
  for (int64_t row = blockIdx.x; row < m; row += gridDim.x) {
    const int64_t base = row * n;
    double acc = 0.0;
    if ((n & 3) == 0 && quadAligned(g, D)) {
      for (int64_t q = tid; q < (n >> 2); q += kGrassNormLanes) {
        float x[4];
        loadQuad<D>(g, base + 4 * q, x);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc = SLIMOPT_DADD(acc, SLIMOPT_DMUL(double(x[e]), double(x[e])));
      }
    } else {
      for (int64_t q = tid; 4 * q < n; q += kGrassNormLanes) {
        for (int e = 0; e < 4; ++e) {
          const int64_t i = 4 * q + e;
          if (i < n) {
            const double x = double(ld<D>(g, base + i));
            acc = SLIMOPT_DADD(acc, SLIMOPT_DMUL(x, x));
          }
        }
      }
    }
    s[tid] = acc;
    __syncthreads();
    for (int off = kGrassNormLanes / 2; off > 0; off >>= 1) {
      if (tid < off) s[tid] = SLIMOPT_DADD(s[tid], s[tid + off]);
      __syncthreads();
    }
    if (tid == 0) norms[row] = SLIMOPT_DSQRT(s[0]);
    __syncthreads();
  }
}

// Column norms, pass 1: partial[s][c] = sum over rows [256 s, 256 s + 256) of G[k, c]^2, in row
// order. Pass 2: norm[c] = sqrt(sum over s of partial[s][c]), in segment order.
template <DType D>
__global__ void __launch_bounds__(kT) normsColsPartialKernel(const void* g, int64_t m, int64_t n,
                                                             double* partials) {
  const int64_t c = int64_t(blockIdx.x) * kT + threadIdx.x;
  const int64_t s = blockIdx.y;
  if (c >= n) return;
  const int64_t k1 = min(m, (s + 1) * kGrassColSegment);
  double part = 0.0;
  for (int64_t k = s * kGrassColSegment; k < k1; ++k) {
    const double x = double(ld<D>(g, k * n + c));
    part = SLIMOPT_DADD(part, SLIMOPT_DMUL(x, x));
  }
  partials[s * n + c] = part;
}

__global__ void __launch_bounds__(kT) normsColsFinishKernel(const double* partials, int64_t segs,
                                                            int64_t n, double* norms) {
  const int64_t c = int64_t(blockIdx.x) * kT + threadIdx.x;
  if (c >= n) return;
  double total = 0.0;
  for (int64_t s = 0; s < segs; ++s) total = SLIMOPT_DADD(total, partials[s * n + c]);
  norms[c] = SLIMOPT_DSQRT(total);
}

// ---- refresh: selection ----------------------------------------------------------------------------

__global__ void __launch_bounds__(kT) iotaKernel(int32_t* vals, int64_t L) {
  for (int64_t i = int64_t(blockIdx.x) * kT + threadIdx.x; i < L; i += int64_t(gridDim.x) * kT)
    vals[i] = int32_t(i);
}

__global__ void __launch_bounds__(kT) uniformKeysKernel(uint64_t* keys, int32_t* vals, int64_t L,
                                                        uint64_t seed, uint64_t refresh) {
  for (int64_t i = int64_t(blockIdx.x) * kT + threadIdx.x; i < L; i += int64_t(gridDim.x) * kT) {
    keys[i] = grassUniformKey(seed, refresh, i);
    vals[i] = int32_t(i);
  }
}

// counts[line] = 1 for the first r lines of the sorted order (distinct: vals is a permutation).
__global__ void __launch_bounds__(kT) markKernel(const int32_t* sortedVals, int64_t r, int32_t* counts) {
  const int64_t j = int64_t(blockIdx.x) * kT + threadIdx.x;
  if (j < r) counts[sortedVals[j]] = 1;
}

// Inclusive prefix sums of the norms in the fixed order of grass.cuh: 1024 contiguous parts, each
// summed in order; the parts' offsets in order by one thread; then each part again from its offset.
__global__ void __launch_bounds__(kGrassScanParts) prefixKernel(const double* norms, int64_t L,
                                                                double* prefix) {
  __shared__ double part[kGrassScanParts];
  const int t = threadIdx.x;
  const int64_t chunk = grassCeilDiv(L, kGrassScanParts);
  const int64_t b = min(L, t * chunk), e = min(L, b + chunk);
  double acc = 0.0;
  for (int64_t i = b; i < e; ++i) acc = SLIMOPT_DADD(acc, norms[i]);
  part[t] = acc;
  __syncthreads();
  if (t == 0) {
    double off = 0.0;
    for (int i = 0; i < kGrassScanParts; ++i) {
      const double p = part[i];
      part[i] = off;
      off = SLIMOPT_DADD(off, p);
    }
  }
  __syncthreads();
  double run = part[t];
  for (int64_t i = b; i < e; ++i) {
    run = SLIMOPT_DADD(run, norms[i]);
    prefix[i] = run;
  }
}

// Draw j: the line whose CDF interval holds u_j; multiplicities counted (integer atomics, so the
// counts do not depend on the order).
__global__ void __launch_bounds__(kT) drawKernel(const double* prefix, const double* norms, int64_t L,
                                                 int64_t r, uint64_t seed, uint64_t refresh,
                                                 int32_t* counts) {
  const int64_t j = int64_t(blockIdx.x) * kT + threadIdx.x;
  if (j >= r) return;
  const int64_t i = grassPick(prefix, norms, L, grassDrawU(seed, refresh, j));
  atomicAdd(counts + i, 1);
}

// Exclusive prefix sums of the counts (integers: exact in any order), same 1024-part layout.
__global__ void __launch_bounds__(kGrassScanParts) countScanKernel(const int32_t* counts, int64_t L,
                                                                   int32_t* offsets) {
  __shared__ int32_t part[kGrassScanParts];
  const int t = threadIdx.x;
  const int64_t chunk = grassCeilDiv(L, kGrassScanParts);
  const int64_t b = min(L, t * chunk), e = min(L, b + chunk);
  int32_t acc = 0;
  for (int64_t i = b; i < e; ++i) acc += counts[i];
  part[t] = acc;
  __syncthreads();
  if (t == 0) {
    int32_t off = 0;
    for (int i = 0; i < kGrassScanParts; ++i) {
      const int32_t p = part[i];
      part[i] = off;
      off += p;
    }
  }
  __syncthreads();
  int32_t run = part[t];
  for (int64_t i = b; i < e; ++i) {
    offsets[i] = run;
    run += counts[i];
  }
}

// The sorted selection: line i repeated counts[i] times at offsets[i], with its rho.
__global__ void __launch_bounds__(kT) expandKernel(const int32_t* counts, const int32_t* offsets, int64_t L,
                                                   int64_t r, GrassSelect sel, const double* norms,
                                                   const double* prefix, int32_t* newIdx, float* newRho) {
  const int64_t i = int64_t(blockIdx.x) * kT + threadIdx.x;
  if (i >= L) return;
  const int32_t c = counts[i];
  if (c <= 0) return;
  const bool multi = sel == GrassSelect::Multinomial;
  const float rho = grassRho(sel, L, r, multi ? norms[i] : 0.0, multi ? prefix[L - 1] : 0.0);
  const int32_t o = offsets[i];
  for (int32_t k = 0; k < c && int64_t(o) + k < r; ++k) {
    newIdx[o + k] = int32_t(i);
    newRho[o + k] = rho;
  }
}

// ---- refresh: remap and commit (all gated by the flag) --------------------------------------------

// New slot j's source: the first old slot holding the same line (keepState), with the rho rescale
// and the age to carry; -1 (reset) otherwise.
__global__ void __launch_bounds__(kT) remapPrepKernel(const int32_t* oldIdx, const float* oldRho,
                                                      const int32_t* oldAges, int64_t r, int keep,
                                                      const int32_t* newIdx, const float* newRho,
                                                      int32_t* srcSlot, float* srcScale, int32_t* newAges,
                                                      const int32_t* flag) {
  if (*flag != 0) return;
  const int64_t j = int64_t(blockIdx.x) * kT + threadIdx.x;
  if (j >= r) return;
  int32_t src = -1;
  if (keep) {
    const int32_t x = newIdx[j];
    int64_t lo = 0, hi = r;
    while (lo < hi) {
      const int64_t mid = (lo + hi) >> 1;
      if (oldIdx[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    if (lo < r && oldIdx[lo] == x) src = int32_t(lo);
  }
  srcSlot[j] = src;
  srcScale[j] = src >= 0 ? grassCarryScale(newRho[j], oldRho[src]) : 1.0f;
  newAges[j] = src >= 0 ? oldAges[src] : 0;
}

// One moment carried to the new slots (scale squared for v), 0 without a source; as the CPU's
// remapMoments. Rows: block per new slot row; staging[j, :] = old[src, :]·s.
__global__ void __launch_bounds__(kT) remapRowsKernel(const float* in, int64_t r, int64_t len, const int32_t* srcSlot,
                                                      const float* srcScale, int squared, float* out,
                                                      const int32_t* flag) {
  if (*flag != 0) return;
  for (int64_t j = blockIdx.x; j < r; j += gridDim.x) {
    const int32_t src = srcSlot[j];
    const float s = squared ? srcScale[j] * srcScale[j] : srcScale[j];
    for (int64_t i = threadIdx.x; i < len; i += kT) out[j * len + i] = src >= 0 ? in[int64_t(src) * len + i] * s : 0.0f;
  }
}

// Cols: block per W row k; staging[k, j] = old[k, src_j]·s or 0.
__global__ void __launch_bounds__(kT) remapColsKernel(const float* in, int64_t rows, int64_t r, const int32_t* srcSlot,
                                                      const float* srcScale, int squared, float* out,
                                                      const int32_t* flag) {
  if (*flag != 0) return;
  for (int64_t k = blockIdx.x; k < rows; k += gridDim.x) {
    for (int64_t j = threadIdx.x; j < r; j += kT) {
      const int32_t src = srcSlot[j];
      const float s = squared ? srcScale[j] * srcScale[j] : srcScale[j];
      out[k * r + j] = src >= 0 ? in[k * r + src] * s : 0.0f;
    }
  }
}

// 8-bit states at a refresh, gated like the rest (the map blobs read from global memory: refresh
// steps only). out = dequantized codes (f32 staging).
__global__ void __launch_bounds__(kT) q8DequantizeKernel(const uint8_t* codes, const float* absmax, int64_t count,
                                                         const float* values, float* out, const int32_t* flag) {
  if (*flag != 0) return;
  const int64_t stride = int64_t(gridDim.x) * kT;
  for (int64_t i = int64_t(blockIdx.x) * kT + threadIdx.x; i < count; i += stride)
    out[i] = __fmul_rn(values[codes[i]], absmax[i / kGrassQBlock]);
}

// codes, absmax = blockwise quantization of x (a warp per block, as quantizeBlockwise on the CPU).
__global__ void __launch_bounds__(kT) q8QuantizeKernel(const float* x, int64_t count, uint8_t* codes, float* absmax,
                                                       QuantFinder f, const uint32_t* table, const int32_t* flag) {
  if (*flag != 0) return;
  const int lane = threadIdx.x & 31;
  const int64_t blocks = grassCeilDiv(count, kGrassQBlock), warps = int64_t(gridDim.x) * (kT / 32);
  for (int64_t b = int64_t(blockIdx.x) * (kT / 32) + (threadIdx.x >> 5); b < blocks; b += warps) {
    float mx = 0.0f;
    for (int t = 0; t < kQ8PerLane; ++t) {
      const int64_t e = b * kGrassQBlock + t * 32 + lane;
      if (e < count) mx = fmaxf(mx, fabsf(x[e]));
    }
    mx = groupMax<32>(mx);
    const float inv = quantInverse(mx);
    for (int t = 0; t < kQ8PerLane; ++t) {
      const int64_t e = b * kGrassQBlock + t * 32 + lane;
      if (e < count) codes[e] = uint8_t(quantFind<true>(__fmul_rn(x[e], inv), f, table));
    }
    if (lane == 0) absmax[b] = mx;
  }
}

// Reset: every code the code of 0, absmax 0.
__global__ void __launch_bounds__(kT) q8ResetKernel(uint8_t* codeM, uint8_t* codeV, float* absmaxM, float* absmaxV,
                                                    int64_t count, Q8View q, const int32_t* flag) {
  if (*flag != 0) return;
  const uint8_t zeroM = uint8_t(quantFind<true>(0.0f, q.fA, q.tabA));
  const uint8_t zeroV = uint8_t(quantFind<false>(0.0f, q.fB, q.tabB));
  const int64_t stride = int64_t(gridDim.x) * kT, blocks = grassCeilDiv(count, kGrassQBlock);
  for (int64_t i = int64_t(blockIdx.x) * kT + threadIdx.x; i < count; i += stride) {
    codeM[i] = zeroM;
    codeV[i] = zeroV;
    if (i < blocks) {
      absmaxM[i] = 0.0f;
      absmaxV[i] = 0.0f;
    }
  }
}

__global__ void __launch_bounds__(kT) commitKernel(float* m, float* v, int64_t count, const float* sm,
                                                   const float* sv, int32_t* idx, float* rho, int32_t* ages,
                                                   int64_t r, const int32_t* newIdx, const float* newRho,
                                                   const int32_t* newAges, const int32_t* flag) {
  if (*flag != 0) return;
  const int64_t stride = int64_t(gridDim.x) * kT;
  for (int64_t i = int64_t(blockIdx.x) * kT + threadIdx.x; i < count; i += stride) {
    m[i] = sm != nullptr ? sm[i] : 0.0f;
    v[i] = sv != nullptr ? sv[i] : 0.0f;
  }
  for (int64_t i = int64_t(blockIdx.x) * kT + threadIdx.x; i < r; i += stride) {
    idx[i] = newIdx[i];
    rho[i] = newRho[i];
    ages[i] = newAges[i];
  }
}

// ---- standalone gather / scatter ------------------------------------------------------------------
//
// Work unit: one chunk of one slot's row (kThreads × kQuads quads of 4 elements: 4 KiB of f32 for
// the gather, 8 KiB for the scatter), one block per unit (grid-strided past kMaxGrid); a slot's
// chunks are adjacent units, so the addresses in flight stay close. Each thread first issues all
// its loads (scatter: of the update row and of W's row), then computes and stores. Many small
// blocks, all resident at once for 512 rows of 4096, spread the ramp over every SM and retire
// early; one block per row left most SMs waiting on a few long blocks (issue #6).
// bench/micro/rows_bench.cu times the alternatives; the H200 runs of 2026-11-24 chose, for the
// gather, gatherChunk<256, 1, LD_CS, ST_CS, 1, 1> ("chk4K t256 q1 +cs+stcs+pdl": 2048 rows 0.93 of
// the floor per launch, where 128 threads × 4 quads with plain loads and stores gave 0.86; 512
// rows 0.75 either way), and for the scatter scatterChunk<128, 4, LD_DEF, ST_CS, 2, 1> ("chk8K
// t128 q4 +stcs+pdlpf": 0.91 / 0.87 at 512 / 2048 rows). The streaming hints (evict first) suit
// rows that are touched once. Change the constants below to the winning rows of its table.
//
// Launch overlap (programmatic dependent launch, sm_90): the launchers allow the next kernel's
// blocks to start while the previous kernel in the stream drains. Before griddepcontrol.wait
// (which returns once the previous grid has completed and its writes are visible) a block only
// reads its index through L2 (ld.cg, no L1 line to go stale) and prefetches the rows it names into
// L2: hints, and L2 is the device's point of coherence, so the loads after the wait see whatever the
// previous kernel wrote (W, the indices); when the index was not being rewritten (the usual case)
// the rows are already coming from DRAM. Once its loads are issued a block calls
// griddepcontrol.launch_dependents, so the next such launch can start the same way. Where the
// previous kernel does not trigger early, or before sm_90, this is an ordinary launch.
constexpr int kGatherThreads = 256;
constexpr int kGatherQuads = 1;
constexpr int kScatterThreads = 128;
constexpr int kScatterQuads = 4;
constexpr bool kRowOverlap = true;
// The gather without the prefetch: it was slightly faster so (512 rows 0.77 vs 0.74 of the floor,
// 2048 rows 0.86 vs 0.85); the scatter faster with it.
constexpr bool kGatherPrefetch = false;
constexpr int64_t kGatherChunk = int64_t(kGatherThreads) * kGatherQuads * 4;    // elements per unit
constexpr int64_t kScatterChunk = int64_t(kScatterThreads) * kScatterQuads * 4;

__device__ __forceinline__ void gridDependencyWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void gridLaunchDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}
__device__ __forceinline__ int32_t loadIndexL2(const int32_t* p) {
  int32_t v;
  asm volatile("ld.global.cg.s32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}
// Prefetches bytes [b0, b1) of p into L2, one 128-byte line per thread per step (kT threads).
template <int kT>
__device__ __forceinline__ void prefetchL2(const void* p, int64_t b0, int64_t b1) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = b0 + int64_t(threadIdx.x) * 128; b < b1; b += int64_t(kT) * 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(c + b));
}
// Before the wait: prefetch chunk c (kChunk elements, kT threads) of row `guess` of src (when in
// range) into L2.
template <int kT, int64_t kChunk>
__device__ __forceinline__ void prefetchChunk(const void* src, int es, int64_t rows, int64_t n, int32_t guess,
                                              int64_t c) {
  if (guess < 0 || int64_t(guess) >= rows) return;
  const int64_t i0 = c * kChunk, i1 = min(n, i0 + kChunk);
  prefetchL2<kT>(static_cast<const uint8_t*>(src) + int64_t(guess) * n * es, i0 * es, i1 * es);
}

// Unit u -> (slot j, chunk c) = (u / cpr, u % cpr); 32-bit division when u fits (always, in
// practice): a 64-bit division per unit cost the scatter ~20 registers.
__device__ __forceinline__ void rowUnit(int64_t u, int64_t cpr, int64_t* j, int64_t* c) {
  if (((u | cpr) >> 32) == 0) {
    const uint32_t q = uint32_t(u) / uint32_t(cpr);
    *j = q;
    *c = uint32_t(u) - q * uint32_t(cpr);
  } else {
    *j = u / cpr;
    *c = u - *j * cpr;
  }
}

// out[j, :] = scale_j · src[idx_j, :] (scale 1 without a scale array), j in [0, count); rows
// whose index is out of range are skipped (left as they were). vec: n % 4 == 0 and both pointers
// quad-aligned. cpr = chunks per row, units = count · cpr.
template <DType D>
__global__ void __launch_bounds__(kGatherThreads) gatherRowsKernel(void* __restrict__ out, const void* __restrict__ src,
                                                                   int64_t rows, int64_t n,
                                                                   const int32_t* __restrict__ idx, int64_t count,
                                                                   const float* __restrict__ scale, int vec,
                                                                   int64_t cpr, int64_t units) {
  constexpr int kT = kGatherThreads, kQ = kGatherQuads;
  if (kRowOverlap && kGatherPrefetch && blockIdx.x < units) {
    int64_t j, c;
    rowUnit(blockIdx.x, cpr, &j, &c);
    prefetchChunk<kT, kGatherChunk>(src, dtypeSize(D), rows, n, loadIndexL2(idx + j), c);
  }
  if (kRowOverlap) gridDependencyWait();
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    int64_t j, c;
    rowUnit(u, cpr, &j, &c);
    const int32_t line = idx[j];
    if (line < 0 || int64_t(line) >= rows) continue;
    const float sc = scale != nullptr ? scale[j] : 1.0f;
    const int64_t base = int64_t(line) * n, i0 = c * kGatherChunk, i1 = min(n, i0 + kGatherChunk);
    if (vec) {
      const int64_t q0 = (i0 >> 2) + threadIdx.x, q1 = i1 >> 2;
      float x[kQ][4];
#pragma unroll
      for (int k = 0; k < kQ; ++k)
        if (q0 + k * kT < q1) loadQuad<D, true>(src, base + 4 * (q0 + k * kT), x[k]);
      if (kRowOverlap) gridLaunchDependents();
#pragma unroll
      for (int k = 0; k < kQ; ++k) {
        if (q0 + k * kT >= q1) continue;
#pragma unroll
        for (int e = 0; e < 4; ++e) x[k][e] = sc * x[k][e];
        storeQuad<D, true>(out, j * n + 4 * (q0 + k * kT), x[k]);
      }
      continue;
    }
    for (int64_t i = i0 + threadIdx.x; i < i1; i += kT) st<D>(out, j * n + i, sc * ld<D>(src, base + i));
  }
}

// dst[idx_j, :] += alpha · scale_j · src[j, :]. Duplicates (adjacent: idx sorted) are summed in
// slot order by the blocks owning the run's first slot (one per chunk), exactly rounded, so the
// result is the CPU backend's bits; out-of-range indices are skipped.
template <DType D>
__global__ void __launch_bounds__(kScatterThreads) scatterRowsKernel(void* __restrict__ dst, int64_t rows, int64_t n,
                                                                 const int32_t* __restrict__ idx, int64_t count,
                                                                 const void* __restrict__ src, float alpha,
                                                                 const float* __restrict__ scale, int vec,
                                                                 int64_t cpr, int64_t units) {
  constexpr int kT = kScatterThreads, kQ = kScatterQuads;
  if (kRowOverlap && blockIdx.x < units) {
    int64_t j, c;
    rowUnit(blockIdx.x, cpr, &j, &c);
    const int es = dtypeSize(D);
    const int64_t i0 = c * kScatterChunk, i1 = min(n, i0 + kScatterChunk);
    prefetchL2<kT>(static_cast<const uint8_t*>(src) + j * n * es, i0 * es, i1 * es);
    prefetchChunk<kT, kScatterChunk>(dst, es, rows, n, loadIndexL2(idx + j), c);
  }
  if (kRowOverlap) gridDependencyWait();
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    int64_t j0, c;
    rowUnit(u, cpr, &j0, &c);
    int32_t line;
    int64_t j1;
    if (!ownedRun(idx, count, rows, j0, &line, &j1)) continue;
    const int64_t base = int64_t(line) * n, i0 = c * kScatterChunk, i1 = min(n, i0 + kScatterChunk);
    if (vec && j1 - j0 == 1) {
      const float cf = alpha * (scale != nullptr ? scale[j0] : 1.0f);
      const int64_t q0 = (i0 >> 2) + threadIdx.x, q1 = i1 >> 2;
      float sq[kQ][4], dq[kQ][4];
#pragma unroll
      for (int k = 0; k < kQ; ++k) {
        const int64_t q = q0 + k * kT;
        if (q < q1) {
          loadQuad<D>(src, j0 * n + 4 * q, sq[k]);
          loadQuad<D>(dst, base + 4 * q, dq[k]);
        }
      }
      if (kRowOverlap) gridLaunchDependents();
#pragma unroll
      for (int k = 0; k < kQ; ++k) {
        const int64_t q = q0 + k * kT;
        if (q >= q1) continue;
#pragma unroll
        for (int e = 0; e < 4; ++e) dq[k][e] = __fadd_rn(dq[k][e], __fadd_rn(0.0f, __fmul_rn(cf, sq[k][e])));
        storeQuad<D, true>(dst, base + 4 * q, dq[k]);
      }
      continue;
    }
    for (int64_t i = i0 + threadIdx.x; i < i1; i += kT) {
      float acc = 0.0f;
      // Exactly rounded (no FMA contraction), so the sums are the CPU's bits.
      for (int64_t j = j0; j < j1; ++j)
        acc = __fadd_rn(acc, __fmul_rn(alpha * (scale != nullptr ? scale[j] : 1.0f), ld<D>(src, j * n + i)));
      st<D>(dst, base + i, __fadd_rn(ld<D>(dst, base + i), acc));
    }
  }
}

// ---- host side ----------------------------------------------------------------------------------------

int gridOf(int64_t units) { return int(std::max<int64_t>(1, std::min<int64_t>(units, kMaxGrid))); }
int blocksOf(int64_t items) { return gridOf(grassCeilDiv(items, kT)); }

template <typename T>
T* at(void* ws, size_t off) { return static_cast<T*>(static_cast<void*>(static_cast<uint8_t*>(ws) + off)); }

// Line norms of T's full gradient into ws.norms.
Status launchNorms(cudaStream_t st, const GrassTensor& T, void* ws, const GrassWorkspace& L) {
  double* norms = at<double>(ws, L.norms);
  const DType d = T.paramDtype;
  if (T.mode == GrassMode::Rows) {
    const int grid = gridOf(T.rows);
    switch (d) {
      case DType::BF16: normsRowsKernel<DType::BF16><<<grid, kGrassNormLanes, 0, st>>>(T.grad, T.rows, T.cols, norms); break;
      case DType::F16: normsRowsKernel<DType::F16><<<grid, kGrassNormLanes, 0, st>>>(T.grad, T.rows, T.cols, norms); break;
      default: normsRowsKernel<DType::F32><<<grid, kGrassNormLanes, 0, st>>>(T.grad, T.rows, T.cols, norms); break;
    }
    return lastError("grass row norms");
  }
  const int64_t segs = grassCeilDiv(T.rows, kGrassColSegment);
  if (segs * T.cols > L.maxPartials || segs > 65535) return invalidArg("grass column norms: workspace too small");
  double* partials = at<double>(ws, L.partials);
  const dim3 grid(unsigned(grassCeilDiv(T.cols, kT)), unsigned(segs));
  switch (d) {
    case DType::BF16: normsColsPartialKernel<DType::BF16><<<grid, kT, 0, st>>>(T.grad, T.rows, T.cols, partials); break;
    case DType::F16: normsColsPartialKernel<DType::F16><<<grid, kT, 0, st>>>(T.grad, T.rows, T.cols, partials); break;
    default: normsColsPartialKernel<DType::F32><<<grid, kT, 0, st>>>(T.grad, T.rows, T.cols, partials); break;
  }
  normsColsFinishKernel<<<unsigned(grassCeilDiv(T.cols, kT)), kT, 0, st>>>(partials, segs, T.cols, norms);
  return lastError("grass column norms");
}

// The new selection of T (sorted lines into ws.newIdx, their rho into ws.newRho). Changes no state.
Status launchSelect(int dev, cudaStream_t st, const GrassTensor& T, const GrassHyper& h, void* ws,
                    const GrassWorkspace& L) {
  const int64_t lines = grassLines(T), r = T.rank;
  if (lines > L.maxLines || r > L.maxRank || r < 1 || r > lines) return invalidArg("grass select: sizes exceed the workspace");
  const int n = int(lines);
  double* norms = at<double>(ws, L.norms);
  double* prefix = at<double>(ws, L.prefix);
  int32_t* valsA = at<int32_t>(ws, L.valsA);
  int32_t* valsB = at<int32_t>(ws, L.valsB);
  int32_t* counts = at<int32_t>(ws, L.counts);
  int32_t* offsets = at<int32_t>(ws, L.offsets);
  Status s;
  if (h.select != GrassSelect::Uniform) {
    s = launchNorms(st, T, ws, L);
    if (!s.ok()) return s;
  }
  s = statusOf(cudaMemsetAsync(counts, 0, size_t(lines) * 4, st), "grass select (counts)");
  if (!s.ok()) return s;
  if (h.select == GrassSelect::Multinomial) {
    prefixKernel<<<1, kGrassScanParts, 0, st>>>(norms, lines, prefix);
    drawKernel<<<blocksOf(r), kT, 0, st>>>(prefix, norms, lines, r, T.seed, h.refreshIndex, counts);
  } else {
    size_t tb = L.cubBytes;
    cudaError_t e;
    if (h.select == GrassSelect::TopK) {
      iotaKernel<<<blocksOf(lines), kT, 0, st>>>(valsA, lines);
      e = cub::DeviceRadixSort::SortPairsDescending(at<void>(ws, L.cub), tb, norms, at<double>(ws, L.keysB),
                                                    valsA, valsB, n, 0, 64, st);
    } else {
      uniformKeysKernel<<<blocksOf(lines), kT, 0, st>>>(at<uint64_t>(ws, L.keysA), valsA, lines, T.seed, h.refreshIndex);
      e = cub::DeviceRadixSort::SortPairs(at<void>(ws, L.cub), tb, at<uint64_t>(ws, L.keysA),
                                          at<uint64_t>(ws, L.keysB), valsA, valsB, n, 0, 64, st);
    }
    if (e != cudaSuccess) return statusOf(e, "grass select (radix sort)");
    markKernel<<<blocksOf(r), kT, 0, st>>>(valsB, r, counts);
  }
  countScanKernel<<<1, kGrassScanParts, 0, st>>>(counts, lines, offsets);
  expandKernel<<<blocksOf(lines), kT, 0, st>>>(counts, offsets, lines, r, h.select, norms, prefix,
                                               at<int32_t>(ws, L.newIdx), at<float>(ws, L.newRho));
  (void)dev;
  return lastError("grass select");
}

// Replaces T's selection with ws.newIdx/newRho, remapping or resetting the moments; all gated.
Status launchCommit(cudaStream_t st, const GrassTensor& T, const GrassHyper& h, void* ws,
                    const GrassWorkspace& L) {
  const int64_t r = T.rank, len = grassLineLen(T), count = grassCompactNumel(T);
  const int32_t* flag = at<int32_t>(ws, L.flag);
  const bool keep = h.keepState != 0;
  if (keep && (!L.staging || count > L.maxCompact)) return invalidArg("grass commit: no staging for keepState");
  int32_t* srcSlot = at<int32_t>(ws, L.srcSlot);
  float* srcScale = at<float>(ws, L.srcScale);
  int32_t* newAges = at<int32_t>(ws, L.newAges);
  remapPrepKernel<<<blocksOf(r), kT, 0, st>>>(T.indices, T.rho, T.ages, r, keep ? 1 : 0, at<int32_t>(ws, L.newIdx),
                                              at<float>(ws, L.newRho), srcSlot, srcScale, newAges, flag);
  float* sm = nullptr;
  float* sv = nullptr;
  auto remap = [&](const float* in, bool squared, float* out) {
    if (T.mode == GrassMode::Rows)
      remapRowsKernel<<<gridOf(r), kT, 0, st>>>(in, r, len, srcSlot, srcScale, squared ? 1 : 0, out, flag);
    else
      remapColsKernel<<<gridOf(T.rows), kT, 0, st>>>(in, T.rows, r, srcSlot, srcScale, squared ? 1 : 0, out, flag);
  };
  if (T.quantized) {
    // 8-bit states: each state dequantized into f32 staging, carried as the f32 path does, and
    // quantized again (refresh steps only); or reset to the code of 0.
    const Q8View q = q8View(h.q8.blobA, h.q8.blobB, h.q8.fA, h.q8.fB);
    if (keep) {
      float* carried = at<float>(ws, L.stagingM);
      float* old = at<float>(ws, L.stagingV);
      const int grid = blocksOf(count);
      const int qgrid = gridOf(grassCeilDiv(grassQBlocks(T), kT / 32));
      q8DequantizeKernel<<<grid, kT, 0, st>>>(T.codeM, T.absmaxM, count, q.valA, old, flag);
      remap(old, false, carried);
      q8QuantizeKernel<<<qgrid, kT, 0, st>>>(carried, count, T.codeM, T.absmaxM, q.fA, q.tabA, flag);
      q8DequantizeKernel<<<grid, kT, 0, st>>>(T.codeV, T.absmaxV, count, q.valB, old, flag);
      remap(old, true, carried);
      q8QuantizeKernel<<<qgrid, kT, 0, st>>>(carried, count, T.codeV, T.absmaxV, q.fB, q.tabB, flag);
    } else {
      q8ResetKernel<<<blocksOf(count), kT, 0, st>>>(T.codeM, T.codeV, T.absmaxM, T.absmaxV, count, q, flag);
    }
  } else if (keep) {
    sm = at<float>(ws, L.stagingM);
    sv = at<float>(ws, L.stagingV);
    remap(T.expAvg, false, sm);
    remap(T.expAvgSq, true, sv);
  }
  commitKernel<<<blocksOf(std::max(T.quantized ? 0 : count, r)), kT, 0, st>>>(
      T.expAvg, T.expAvgSq, T.quantized ? 0 : count, sm, sv, T.indices, T.rho, T.ages, r, at<int32_t>(ws, L.newIdx),
      at<float>(ws, L.newRho), newAges, flag);
  return lastError("grass commit");
}

bool floatType(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }

}  // namespace

size_t grassCubBytes(int dev, int64_t maxLines, Status* status) {
  *status = Status();
  if (maxLines <= 0) return 0;
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "grass workspace");
  if (!s.ok()) { *status = s; return 0; }
  const int n = int(maxLines);
  size_t a = 0, b = 0;
  cudaError_t e = cub::DeviceRadixSort::SortPairsDescending(nullptr, a, static_cast<const double*>(nullptr),
                                                            static_cast<double*>(nullptr),
                                                            static_cast<const int32_t*>(nullptr),
                                                            static_cast<int32_t*>(nullptr), n, 0, 64, st);
  if (e == cudaSuccess)
    e = cub::DeviceRadixSort::SortPairs(nullptr, b, static_cast<const uint64_t*>(nullptr),
                                        static_cast<uint64_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                        static_cast<int32_t*>(nullptr), n, 0, 64, st);
  if (e != cudaSuccess) { *status = statusOf(e, "grass workspace (radix sort size)"); return 0; }
  return std::max(a, b);
}

Status grassStep(int dev, const GrassTensor* deviceList, const GrassTensor* hostList, int32_t n,
                 const GrassUnits& units, const GrassHyper& h, AdamwCounters* counters, void* ws,
                 const GrassWorkspace& L) {
  if (n <= 0 || !deviceList || !hostList || !counters || !ws) return invalidArg("grassStep: bad arguments");
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "grassStep");
  if (!s.ok()) return s;
  int32_t* flag = at<int32_t>(ws, L.flag);
  s = statusOf(cudaMemsetAsync(flag, 0, sizeof(int32_t), st), "grassStep (flag)");
  if (!s.ok()) return s;
  if (h.skipNonFinite) {
    const int64_t u = h.refreshing ? units.scanRefresh : units.scanStep;
    scanKernel<<<gridOf(u), kT, 0, st>>>(deviceList, n, u, h.refreshing, flag);
    s = lastError("grass scan");
    if (!s.ok()) return s;
  }
  if (h.refreshing) {
    for (int32_t k = 0; k < n; ++k) {
      const GrassTensor& T = hostList[k];
      if (T.mode == GrassMode::Dense) continue;
      s = launchSelect(dev, st, T, h, ws, L);
      if (!s.ok()) return s;
      s = launchCommit(st, T, h, ws, L);
      if (!s.ok()) return s;
    }
  }
  prologueKernel<<<gridOf(units.slot), kT, 0, st>>>(deviceList, n, units.slot, h, flag, counters);
  s = lastError("grass prologue");
  if (!s.ok()) return s;
  const size_t q8Smem = units.qBlocks > 0 ? q8SmemBytes(h.q8) : 0;
  if (q8Smem > 0) {
    s = statusOf(q8AllowSmem(reinterpret_cast<const void*>(q8AbsmaxKernel), q8Smem), "grass 8-bit (shared memory)");
    if (s.ok()) s = statusOf(q8AllowSmem(reinterpret_cast<const void*>(updateKernel), q8Smem), "grass 8-bit (shared memory)");
    if (!s.ok()) return s;
  }
  // Kernels that stage the maps (~65 KB) run one wave (3 blocks per SM: the update's launch bound,
  // and what fits in shared memory), so each block's staging is amortised over many units.
  const int64_t stagedGrid = int64_t(smCount(dev)) * 3;
  if (units.qBlocks > 0) {
    const int grid = int(std::min<int64_t>(gridOf(grassCeilDiv(units.qBlocks, kT / 32)), stagedGrid));
    q8AbsmaxKernel<<<grid, kT, q8Smem, st>>>(deviceList, n, units.qBlocks, h.beta1, h.beta2, h.q8, flag);
    s = lastError("grass 8-bit absmax");
    if (!s.ok()) return s;
  }
  Step stp{h.beta1, h.beta2, h.eps, grassDecay(h.lr, h.weightDecay), Q8View{}};
  const int updateGrid = int(units.qBlocks > 0 ? std::min<int64_t>(gridOf(units.update), stagedGrid) : gridOf(units.update));
  updateKernel<<<updateGrid, kT, q8Smem, st>>>(deviceList, n, units.update, stp,
                                               units.qBlocks > 0 ? h.q8 : Q8Maps{}, flag);
  s = lastError("grass update");
  if (!s.ok() || units.qBlocks == 0) return s;
  q8AbsmaxCommitKernel<<<blocksOf(units.qBlocks), kT, 0, st>>>(deviceList, n, units.qBlocks, flag);
  return lastError("grass 8-bit absmax commit");
}

Status grassSelectOnly(int dev, const GrassTensor& T, const GrassHyper& h, void* ws, const GrassWorkspace& L,
                       int32_t* idxOut, float* rhoOut) {
  if (T.mode == GrassMode::Dense) return invalidArg("grassSelectOnly: a dense tensor has no selection");
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "grassSelect");
  if (!s.ok()) return s;
  s = launchSelect(dev, st, T, h, ws, L);
  if (!s.ok()) return s;
  s = statusOf(cudaMemcpyAsync(idxOut, at<int32_t>(ws, L.newIdx), size_t(T.rank) * 4, cudaMemcpyDeviceToDevice, st),
               "grassSelect (copy out)");
  if (!s.ok()) return s;
  return statusOf(cudaMemcpyAsync(rhoOut, at<float>(ws, L.newRho), size_t(T.rank) * 4, cudaMemcpyDeviceToDevice, st),
                  "grassSelect (copy out)");
}

// Launches a row kernel with programmatic stream serialization (see the standalone gather /
// scatter above) where the device has it (sm_90+).
template <typename... KArgs, typename... Args>
Status launchRowKernel(int dev, void (*kernel)(KArgs...), int threads, int64_t units, cudaStream_t st,
                       const char* what, Args... args) {
  static int major[64] = {0};
  if (dev >= 0 && dev < 64 && major[dev] == 0 &&
      cudaDeviceGetAttribute(&major[dev], cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    cudaGetLastError();
    major[dev] = 1;
  }
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(gridOf(units)));
  cfg.blockDim = dim3(unsigned(threads));
  cfg.stream = st;
  cfg.attrs = attr;
  cfg.numAttrs = kRowOverlap && dev >= 0 && dev < 64 && major[dev] >= 9 ? 1 : 0;
  return statusOf(cudaLaunchKernelEx(&cfg, kernel, KArgs(args)...), what);
}

Status grassGatherRows(int dev, void* out, const void* src, DType d, int64_t rows, int64_t cols,
                       const int32_t* idx, int64_t count, const float* scale) {
  if (!floatType(d)) return invalidArg("grassGatherRows: dtype must be f32, bf16 or f16");
  if (count <= 0 || cols <= 0) return Status();
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "gatherRows");
  if (!s.ok()) return s;
  const int es = dtypeSize(d);
  const int vec = ((cols & 3) == 0 && (reinterpret_cast<uintptr_t>(out) & uintptr_t(4 * es - 1)) == 0 &&
                   (reinterpret_cast<uintptr_t>(src) & uintptr_t(4 * es - 1)) == 0) ? 1 : 0;
  const int64_t cpr = grassCeilDiv(cols, kGatherChunk), units = count * cpr;
  switch (d) {
    case DType::BF16: return launchRowKernel(dev, gatherRowsKernel<DType::BF16>, kGatherThreads, units, st, "gatherRows", out, src, rows, cols, idx, count, scale, vec, cpr, units);
    case DType::F16: return launchRowKernel(dev, gatherRowsKernel<DType::F16>, kGatherThreads, units, st, "gatherRows", out, src, rows, cols, idx, count, scale, vec, cpr, units);
    default: return launchRowKernel(dev, gatherRowsKernel<DType::F32>, kGatherThreads, units, st, "gatherRows", out, src, rows, cols, idx, count, scale, vec, cpr, units);
  }
}

Status grassScatterRows(int dev, void* dst, DType d, int64_t rows, int64_t cols, const int32_t* idx,
                        int64_t count, const void* src, float alpha, const float* scale) {
  if (!floatType(d)) return invalidArg("grassScatterRows: dtype must be f32, bf16 or f16");
  if (count <= 0 || cols <= 0) return Status();
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "scatterRows");
  if (!s.ok()) return s;
  const int es = dtypeSize(d);
  const int vec = ((cols & 3) == 0 && (reinterpret_cast<uintptr_t>(dst) & uintptr_t(4 * es - 1)) == 0 &&
                   (reinterpret_cast<uintptr_t>(src) & uintptr_t(4 * es - 1)) == 0) ? 1 : 0;
  const int64_t cpr = grassCeilDiv(cols, kScatterChunk), units = count * cpr;
  switch (d) {
    case DType::BF16: return launchRowKernel(dev, scatterRowsKernel<DType::BF16>, kScatterThreads, units, st, "scatterRows", dst, rows, cols, idx, count, src, alpha, scale, vec, cpr, units);
    case DType::F16: return launchRowKernel(dev, scatterRowsKernel<DType::F16>, kScatterThreads, units, st, "scatterRows", dst, rows, cols, idx, count, src, alpha, scale, vec, cpr, units);
    default: return launchRowKernel(dev, scatterRowsKernel<DType::F32>, kScatterThreads, units, st, "scatterRows", dst, rows, cols, idx, count, src, alpha, scale, vec, cpr, units);
  }
}

namespace {
// out[k, j] = src[k, idx_j] (an exact copy of the element bits; E: element type of its size);
// indices out of range leave the slot as it was.
template <typename E>
__global__ void gatherColsKernel(E* __restrict__ out, const E* __restrict__ src, int64_t rows, int64_t cols,
                                 const int32_t* __restrict__ idx, int64_t count) {
  const int64_t total = rows * count;
  for (int64_t u = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; u < total; u += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = u / count, j = u - k * count;
    const int32_t col = idx[j];
    if (col < 0 || int64_t(col) >= cols) continue;
    out[u] = src[k * cols + col];
  }
}
}  // namespace

Status grassGatherCols(int dev, void* out, const void* src, DType d, int64_t rows, int64_t cols,
                       const int32_t* idx, int64_t count) {
  if (!floatType(d)) return invalidArg("grassGatherCols: dtype must be f32, bf16 or f16");
  if (count <= 0 || rows <= 0) return Status();
  cudaStream_t st;
  Status s = deviceStream(dev, &st, "gatherCols");
  if (!s.ok()) return s;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((rows * count + 255) / 256, 65535));
  if (dtypeSize(d) == 4)
    gatherColsKernel<uint32_t><<<unsigned(blocks), 256, 0, st>>>(static_cast<uint32_t*>(out), static_cast<const uint32_t*>(src), rows, cols, idx, count);
  else
    gatherColsKernel<uint16_t><<<unsigned(blocks), 256, 0, st>>>(static_cast<uint16_t*>(out), static_cast<const uint16_t*>(src), rows, cols, idx, count);
  return lastError("gatherCols");
}

}  // namespace gpu
}  // namespace slimopt
