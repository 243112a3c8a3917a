// Multi-tensor AdamW: one cooperative launch per group per step.
//
// Work layout. The glue numbers the group's chunks (hyper.chunkSize elements, a tensor's last one
// partial); this kernel cuts each chunk into units of at most kUnit elements and deals the units
// round-robin to a persistent grid (occupancy x SMs blocks, all resident), so tiny and huge
// tensors share one launch and the tail of the step is one small unit, not one chunk. A unit's
// tensor is found by binary search over chunkBegin (checked against the previous hit first).
//
// Why two phases. A step whose gradients hold any NaN/Inf must leave every parameter and state
// of the group untouched, decided on the device without a host sync. A block cannot know that
// before every other block has seen its gradients, so phase 1 scans all gradients (each block
// its own units, a flag per block in scratch), a grid barrier, then phase 2 updates if no block
// flagged. The cost is one extra read of G (4 of 28 B/param for f32), kept as cheap as possible:
// 16-byte loads, one AND+ADD per 32-bit word (no float compare), and phase 2 walks its units in
// reverse so what phase 1 read last is still in L2 (a whole small group is). With
// skipNonFinite = 0 there is no scan: one pass, and one barrier at the end only so that block 0
// bumps the step after every block has read it.
//
// Element mapping. Each thread owns kQuads quads (4 consecutive elements) per pass, quad j at
// (j*kThreads + tid): every warp access is contiguous whatever the dtype (16 B per lane for f32,
// 8 B for bf16/f16). Used when all four pointers are aligned to a quad and the unit starts on a
// quad; otherwise a scalar, still coalesced, path.
//
// Stochastic rounding (bf16 params): the bits of element i of step t are
// srBits(srBlock(seed, seedSalt, t, i), i) (cuda/stochastic_round.cuh), the same on the CPU.
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <algorithm>
#include <climits>
#include "adamw.cuh"
#include "internal.cuh"
#include "launchers.h"
#include "stochastic_round.cuh"

namespace slimopt {
namespace gpu {

namespace {

namespace cg = cooperative_groups;

#ifndef SLIMOPT_ADAMW_THREADS
#define SLIMOPT_ADAMW_THREADS 512
#define SLIMOPT_ADAMW_QUADS 2
#define SLIMOPT_ADAMW_MINBLOCKS 1
#endif
constexpr int kThreads = SLIMOPT_ADAMW_THREADS;
constexpr int kQuads = SLIMOPT_ADAMW_QUADS;  // quads per thread per pass (f32: 4*kQuads loads in flight)
constexpr int64_t kUnit = 16384;   // elements per unit of work (a multiple of 4 * kThreads)
constexpr int kScanUnroll = 4;     // 16-byte gradient loads in flight per thread in the scan

struct Params {
  const AdamwTensor* tensors;
  int32_t nTensors;
  int64_t unitsPerChunk;
  int64_t totalUnits;
  AdamwHyper hyper;
  AdamwCounters* counters;
  int32_t* flags;
};

// ---- quads: 4 consecutive elements as f32 --------------------------------------------------

template <DType D>
__device__ __forceinline__ void loadQuad(const void* p, int64_t i, float x[4]) {
  if (D == DType::F32) {
    float4 f = *reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
    x[0] = f.x; x[1] = f.y; x[2] = f.z; x[3] = f.w;
  } else {
    uint2 u = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(p) + i);
    uint16_t h[4] = {uint16_t(u.x), uint16_t(u.x >> 16), uint16_t(u.y), uint16_t(u.y >> 16)};
#pragma unroll
    for (int k = 0; k < 4; ++k) x[k] = D == DType::BF16 ? bf16ToFloat(h[k]) : f16ToFloat(h[k]);
  }
}

__device__ __forceinline__ void storeHalfQuad(void* p, int64_t i, const uint16_t h[4]) {
  uint2 u;
  u.x = uint32_t(h[0]) | (uint32_t(h[1]) << 16);
  u.y = uint32_t(h[2]) | (uint32_t(h[3]) << 16);
  *reinterpret_cast<uint2*>(static_cast<uint16_t*>(p) + i) = u;
}

template <DType D>
__device__ __forceinline__ void storeQuad(void* p, int64_t i, const float x[4]) {
  if (D == DType::F32) {
    *reinterpret_cast<float4*>(static_cast<float*>(p) + i) = make_float4(x[0], x[1], x[2], x[3]);
  } else {
    uint16_t h[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = D == DType::BF16 ? floatToBf16(x[k]) : floatToF16(x[k]);
    storeHalfQuad(p, i, h);
  }
}

template <DType D>
__device__ __forceinline__ bool quadAligned(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & (4 * sizeof(float) / (D == DType::F32 ? 1 : 2) - 1)) == 0;
}

struct Ctx {
  AdamwScalars s;
  uint64_t seed;
  int32_t t;
  bool stochastic;
};

// ---- phase 2: the update of elements [begin, end) of one tensor -----------------------------

template <DType PT, DType GT, DType ST>
__device__ __forceinline__ void updateRange(const AdamwTensor& T, int64_t begin, int64_t end,
                                            const Ctx& c) {
  void* const w = T.param;
  const void* const g = T.grad;
  void* const m = T.expAvg;
  void* const v = T.expAvgSq;
  const bool sr = PT == DType::BF16 && c.stochastic;
  const int tid = threadIdx.x;
  if ((begin & 3) == 0 && quadAligned<PT>(w) && quadAligned<GT>(g) && quadAligned<ST>(m) &&
      quadAligned<ST>(v)) {
    const int64_t nq = (end - begin) >> 2;
    for (int64_t q0 = 0; q0 < nq; q0 += kQuads * kThreads) {
      float wq[kQuads][4], gq[kQuads][4], mq[kQuads][4], vq[kQuads][4];
      // All loads first: kQuads * 4 independent accesses in flight before the first use.
#pragma unroll
      for (int j = 0; j < kQuads; ++j) {
        const int64_t q = q0 + j * kThreads + tid;
        if (q < nq) {
          const int64_t i = begin + 4 * q;
          loadQuad<GT>(g, i, gq[j]);
          loadQuad<PT>(w, i, wq[j]);
          loadQuad<ST>(m, i, mq[j]);
          loadQuad<ST>(v, i, vq[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < kQuads; ++j) {
        const int64_t q = q0 + j * kThreads + tid;
        if (q < nq) {
          const int64_t i = begin + 4 * q;
#pragma unroll
          for (int k = 0; k < 4; ++k) wq[j][k] = adamwElement(wq[j][k], gq[j][k], mq[j][k], vq[j][k], c.s);
          storeQuad<ST>(m, i, mq[j]);
          storeQuad<ST>(v, i, vq[j]);
          if (sr) {
            const Philox4 r = srBlock(c.seed, T.seedSalt, c.t, i);  // i % 4 == 0: word k is element i+k
            uint16_t h[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) h[k] = floatToBf16Stochastic(wq[j][k], r.v[k] & 0xffffu);
            storeHalfQuad(w, i, h);
          } else {
            storeQuad<PT>(w, i, wq[j]);
          }
        }
      }
    }
    begin += 4 * nq;  // at most 3 elements left, done below
    if (begin + tid >= end) return;
    end = begin + tid + 1;
  }
  for (int64_t i = begin + tid; i < end; i += kThreads) {
    float mi = loadAsFloat(m, ST, i), vi = loadAsFloat(v, ST, i);
    float wi = adamwElement(loadAsFloat(w, PT, i), loadAsFloat(g, GT, i), mi, vi, c.s);
    storeFromFloat(m, ST, i, mi);
    storeFromFloat(v, ST, i, vi);
    if (sr) {
      static_cast<uint16_t*>(w)[i] = floatToBf16Stochastic(wi, srBits(srBlock(c.seed, T.seedSalt, c.t, i), i));
    } else {
      storeFromFloat(w, PT, i, wi);
    }
  }
}

template <DType PT, DType GT>
__device__ __forceinline__ void updateByState(const AdamwTensor& T, int64_t b, int64_t e,
                                              const Ctx& c, DType st) {
  if (st == DType::BF16) updateRange<PT, GT, DType::BF16>(T, b, e, c);
  else updateRange<PT, GT, DType::F32>(T, b, e, c);
}

template <DType PT>
__device__ __forceinline__ void updateByGrad(const AdamwTensor& T, int64_t b, int64_t e,
                                             const Ctx& c, DType st) {
  switch (T.gradDtype) {
    case DType::BF16: updateByState<PT, DType::BF16>(T, b, e, c, st); break;
    case DType::F16: updateByState<PT, DType::F16>(T, b, e, c, st); break;
    default: updateByState<PT, DType::F32>(T, b, e, c, st); break;
  }
}

__device__ __forceinline__ void updateUnit(const AdamwTensor& T, int64_t b, int64_t e, const Ctx& c,
                                           DType st) {
  switch (T.paramDtype) {
    case DType::BF16: updateByGrad<DType::BF16>(T, b, e, c, st); break;
    case DType::F16: updateByGrad<DType::F16>(T, b, e, c, st); break;
    default: updateByGrad<DType::F32>(T, b, e, c, st); break;
  }
}

// ---- phase 1: does [begin, end) of this gradient hold a NaN/Inf? ----------------------------

// Non-finite <=> exponent all ones <=> (word & mask) + one carries into the lane's top bit. One
// 32-bit word holds one f32 or two 16-bit values (no carry crosses the halves: 0x7f80 + 0x80 =
// 0x8000).
__device__ __forceinline__ uint32_t nonFiniteBits(uint32_t x, uint32_t mask, uint32_t one) {
  return (x & mask) + one;
}

__device__ __forceinline__ bool scanRange(const void* grad, DType gd, int64_t begin, int64_t end) {
  const int es = dtypeSize(gd);
  const uint32_t mask = gd == DType::F32 ? 0x7f800000u : gd == DType::BF16 ? 0x7f807f80u : 0x7c007c00u;
  const uint32_t one = gd == DType::F32 ? 0x00800000u : gd == DType::BF16 ? 0x00800080u : 0x04000400u;
  const uint32_t top = gd == DType::F32 ? 0x80000000u : 0x80008000u;
  const int tid = threadIdx.x;
  const uint8_t* p = static_cast<const uint8_t*>(grad) + begin * es;
  uint32_t acc = 0;
  if ((reinterpret_cast<uintptr_t>(p) & 15) == 0) {
    const int64_t nv = (end - begin) * es / 16;
    const uint4* q = reinterpret_cast<const uint4*>(p);
    for (int64_t v0 = 0; v0 < nv; v0 += kScanUnroll * kThreads) {
      uint4 x[kScanUnroll];
#pragma unroll
      for (int j = 0; j < kScanUnroll; ++j) {
        const int64_t vi = v0 + j * kThreads + tid;
        x[j] = vi < nv ? __ldg(q + vi) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int j = 0; j < kScanUnroll; ++j)
        acc |= nonFiniteBits(x[j].x, mask, one) | nonFiniteBits(x[j].y, mask, one) |
               nonFiniteBits(x[j].z, mask, one) | nonFiniteBits(x[j].w, mask, one);
    }
    begin += nv * 16 / es;
  }
  bool bad = (acc & top) != 0;
  for (int64_t i = begin + tid; i < end; i += kThreads) bad |= !isFiniteFloat(loadAsFloat(grad, gd, i));
  return bad;
}

// ---- the kernel -----------------------------------------------------------------------------

// Index of the tensor holding `chunk`: the last k with chunkBegin[k] <= chunk (empty tensors
// share their successor's chunkBegin and are skipped that way).
__device__ __forceinline__ int findTensor(const AdamwTensor* T, int n, int64_t chunk, int hint) {
  const int64_t hb = __ldg(&T[hint].chunkBegin);
  const int64_t he = hint + 1 < n ? __ldg(&T[hint + 1].chunkBegin) : LLONG_MAX;
  if (hb <= chunk && chunk < he) return hint;
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (__ldg(&T[mid].chunkBegin) <= chunk) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Unit u -> (tensor, element range). Returns false when the unit is empty (past a tensor's end).
__device__ __forceinline__ bool locate(const Params& p, int64_t u, int& k, int64_t& b, int64_t& e) {
  const int64_t chunk = u / p.unitsPerChunk;
  const int64_t off = (u - chunk * p.unitsPerChunk) * kUnit;
  k = findTensor(p.tensors, p.nTensors, chunk, k);
  const AdamwTensor& T = p.tensors[k];
  b = (chunk - __ldg(&T.chunkBegin)) * p.hyper.chunkSize + off;
  e = min(b + min(kUnit, p.hyper.chunkSize - off), __ldg(&T.numel));
  return b < e;
}

__device__ __forceinline__ AdamwTensor loadTensor(const AdamwTensor* T) {
  AdamwTensor r;
  r.param = T->param;
  r.grad = T->grad;
  r.expAvg = T->expAvg;
  r.expAvgSq = T->expAvgSq;
  r.paramDtype = DType(__ldg(reinterpret_cast<const int32_t*>(&T->paramDtype)));
  r.gradDtype = DType(__ldg(reinterpret_cast<const int32_t*>(&T->gradDtype)));
  r.seedSalt = __ldg(&T->seedSalt);
  return r;
}

template <bool kCheck>
__global__ void __launch_bounds__(kThreads, SLIMOPT_ADAMW_MINBLOCKS) adamwKernel(const Params p) {
  __shared__ AdamwScalars sScalars;
  __shared__ int32_t sStep;
  cg::grid_group grid = cg::this_grid();
  // Every block reads the step before the barrier; block 0 writes it only after.
  if (threadIdx.x == 0) {
    const int32_t t = p.counters->step + 1;
    sStep = t;
    sScalars = adamwScalars(p.hyper, t);
  }
  const int64_t first = blockIdx.x, stride = gridDim.x;
  const int64_t count = first < p.totalUnits ? (p.totalUnits - 1 - first) / stride + 1 : 0;

  bool skip = false;
  if (kCheck) {
    bool bad = false;
    int k = 0;
    for (int64_t j = 0; j < count && !bad; ++j) {  // per-thread early out: no barrier in here
      int64_t b, e;
      if (!locate(p, first + j * stride, k, b, e)) continue;
      const AdamwTensor* T = p.tensors + k;
      bad = scanRange(T->grad, DType(__ldg(reinterpret_cast<const int32_t*>(&T->gradDtype))), b, e);
    }
    bad = __syncthreads_or(bad);
    if (threadIdx.x == 0) p.flags[blockIdx.x] = bad ? 1 : 0;
    grid.sync();
    int any = 0;
    for (int i = threadIdx.x; i < int(gridDim.x); i += kThreads) any |= __ldcg(p.flags + i);
    skip = __syncthreads_or(any) != 0;
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      if (skip) p.counters->skipped += 1;
      else p.counters->step += 1;
    }
  } else {
    __syncthreads();
  }

  if (!skip) {
    Ctx c;
    c.s = sScalars;
    c.t = sStep;
    c.seed = p.hyper.seed;
    c.stochastic = p.hyper.stochasticRounding != 0;
    const DType st = p.hyper.stateDtype;
    int k = p.nTensors - 1;
    for (int64_t j = count - 1; j >= 0; --j) {  // reverse: the last-scanned gradients are in L2
      int64_t b, e;
      if (!locate(p, first + j * stride, k, b, e)) continue;
      const AdamwTensor T = loadTensor(p.tensors + k);
      updateUnit(T, b, e, c, st);
    }
  }

  if (!kCheck) {
    grid.sync();
    if (blockIdx.x == 0 && threadIdx.x == 0) p.counters->step += 1;
  }
}

// Largest co-resident grid of each kernel variant on each device (what the launch may use).
int maxGrid(int dev, bool check) {
  static int cache[64][2] = {};
  if (dev < 0 || dev >= 64) return 0;
  int& g = cache[dev][check ? 1 : 0];
  if (g == 0) {
    int occ = 0;
    cudaError_t e = check ? cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, adamwKernel<true>, kThreads, 0)
                          : cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, adamwKernel<false>, kThreads, 0);
    if (e != cudaSuccess || occ <= 0) {
      cudaGetLastError();
      return 0;
    }
    g = occ * smCount(dev);
  }
  return g;
}

}  // namespace

int32_t adamwScratchInts(int dev) {
  return std::max(1, std::max(maxGrid(dev, true), maxGrid(dev, false)));
}

Status adamwStep(int dev, const AdamwTensor* tensors, int32_t nTensors, int64_t totalChunks,
                 const AdamwHyper& hyper, AdamwCounters* counters, int32_t* scratch) {
  if (hyper.chunkSize <= 0) return invalidArg("adamwStep: chunkSize must be positive");
  if (nTensors < 0 || totalChunks < 0 || (totalChunks > 0 && (nTensors == 0 || !tensors)))
    return invalidArg("adamwStep: bad tensor list");
  if (!counters) return invalidArg("adamwStep: counters is null");
  if (hyper.skipNonFinite && !scratch) return invalidArg("adamwStep: scratch is null");
  if (hyper.stateDtype != DType::F32 && hyper.stateDtype != DType::BF16)
    return invalidArg("adamwStep: state dtype must be f32 or bf16");
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "adamwStep");
  if (!ok.ok()) return ok;
  const bool check = hyper.skipNonFinite != 0;
  const int cap = maxGrid(dev, check);
  if (cap <= 0) return lastError("adamwStep (occupancy query)");

  Params p;
  p.tensors = tensors;
  p.nTensors = nTensors;
  p.unitsPerChunk = (hyper.chunkSize + kUnit - 1) / kUnit;
  p.totalUnits = totalChunks * p.unitsPerChunk;
  p.hyper = hyper;
  p.counters = counters;
  p.flags = scratch;
  const int grid = int(std::max<int64_t>(1, std::min<int64_t>(cap, p.totalUnits)));
  void* args[] = {&p};
  cudaError_t e = check ? cudaLaunchCooperativeKernel((const void*)adamwKernel<true>, grid, kThreads, args, 0, st)
                        : cudaLaunchCooperativeKernel((const void*)adamwKernel<false>, grid, kThreads, args, 0, st);
  if (e != cudaSuccess) return statusOf(e, "launching adamwStep");
  return lastError("adamwStep");
}

}  // namespace gpu
}  // namespace slimopt
