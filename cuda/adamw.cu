// Multi-tensor AdamW: one cooperative launch per group per step.
//
// Work layout. The glue numbers the group's chunks (hyper.chunkSize elements, a tensor's last one
// partial); this kernel cuts each chunk into units of at most kUnit elements. A persistent grid
// (occupancy x SMs blocks, all resident) takes units in order from an atomic counter in scratch,
// so the units in flight at any moment are neighbours in memory (a compact DRAM working set: a
// static round-robin deal measured 4-10% slower on an H200, as a grid-stride copy is against a
// flat one), tiny and huge tensors share one launch, and the tail of the step is one small unit.
// A unit's tensor is found by binary search over chunkBegin (the previous hit is tried first).
//
// Why two phases. A step whose gradients hold any NaN/Inf must leave every parameter and state
// of the group untouched, decided on the device without a host sync. No block may write before
// every gradient has been seen, so phase 1 scans all gradients (larger units dealt round-robin,
// a flag per block in scratch), a grid barrier, then phase 2 updates if no block flagged. The
// cost is one extra read of G (4 of 28 B/param for f32), kept as cheap as possible: 16-byte
// loads, one AND+ADD per 32-bit word (no float compare), and phase 2 takes the units in reverse
// order so that what phase 1 read last is still in L2 (a whole small group is). With
// skipNonFinite = 0 there is no scan and one pass. Either way block 0 zeroes the unit counter
// before the (one) grid barrier, so scratch needs no zeroing by the caller, and the step counter
// is read by every block before that barrier and written by block 0 only after it.
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
#include "scan.cuh"
#include "stochastic_round.cuh"

namespace slimopt {
namespace gpu {

namespace {

namespace cg = cooperative_groups;

// Measured on an H200 (809.5M f32 params in 28 tensors, and 300 small mixed tensors): 256 threads
// x 4 blocks per SM (64 registers) with one quad per thread per pass beat 512 x 1..2 blocks with
// 1..4 quads (a block barrier per unit is hidden only when another block shares the SM); units
// of 4096 elements beat 8192/16384 (a smaller DRAM working set); scan units of 32K elements with
// 8 loads in flight per thread.
constexpr int kThreads = 256;
constexpr int kMinBlocks = 4;
constexpr int kQuads = 1;             // quads per thread per pass
constexpr int64_t kUnit = 4096;       // elements per unit of the update
constexpr int64_t kScanUnit = 32768;  // elements per unit of the scan
constexpr int kScanUnroll = 8;        // 16-byte gradient loads in flight per thread

struct Params {
  const AdamwTensor* tensors;
  int32_t nTensors;
  int64_t unitsPerChunk;
  int64_t totalUnits;
  int64_t scanUnitsPerChunk;
  int64_t totalScanUnits;
  AdamwHyper hyper;
  AdamwCounters* counters;
  uint32_t* work;  // scratch[0]: phase 2's unit counter (scratch[1] unused)
  int32_t* flags;  // scratch[2..]: one per block
};

// ---- quads: 4 consecutive elements as f32 --------------------------------------------------
// Explicit global-space vector accesses: through void* the compiler emits generic LD/ST and
// splits the vector stores into 32-bit ones (and __ldca/__stwb measured 7% slower for bf16).

__device__ __forceinline__ float4 ld4(const float* p) {
  float4 r;
  asm("ld.global.v4.f32 {%0,%1,%2,%3}, [%4];" : "=f"(r.x), "=f"(r.y), "=f"(r.z), "=f"(r.w) : "l"(p));
  return r;
}
__device__ __forceinline__ uint2 ld2(const uint16_t* p) {
  uint2 r;
  asm("ld.global.v2.u32 {%0,%1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
  return r;
}
// The loads are plain (non-volatile) asm so the compiler may schedule them early: every element is
// loaded once and stored once by the same thread, and a store depends on its own load's value.
// The stores are volatile with a memory clobber: they keep program order.
__device__ __forceinline__ void st4(float* p, float4 x) {
  asm volatile("st.global.v4.f32 [%0], {%1,%2,%3,%4};" ::"l"(p), "f"(x.x), "f"(x.y), "f"(x.z), "f"(x.w) : "memory");
}
__device__ __forceinline__ void st2(uint16_t* p, uint2 x) {
  asm volatile("st.global.v2.u32 [%0], {%1,%2};" ::"l"(p), "r"(x.x), "r"(x.y) : "memory");
}

template <DType D>
__device__ __forceinline__ void loadQuad(const void* p, int64_t i, float x[4]) {
  if (D == DType::F32) {
    float4 f = ld4(static_cast<const float*>(p) + i);
    x[0] = f.x; x[1] = f.y; x[2] = f.z; x[3] = f.w;
  } else {
    uint2 u = ld2(static_cast<const uint16_t*>(p) + i);
    uint16_t h[4] = {uint16_t(u.x), uint16_t(u.x >> 16), uint16_t(u.y), uint16_t(u.y >> 16)};
#pragma unroll
    for (int k = 0; k < 4; ++k) x[k] = D == DType::BF16 ? bf16ToFloat(h[k]) : f16ToFloat(h[k]);
  }
}

__device__ __forceinline__ void storeHalfQuad(void* p, int64_t i, const uint16_t h[4]) {
  uint2 u;
  u.x = uint32_t(h[0]) | (uint32_t(h[1]) << 16);
  u.y = uint32_t(h[2]) | (uint32_t(h[3]) << 16);
  st2(static_cast<uint16_t*>(p) + i, u);
}

template <DType D>
__device__ __forceinline__ void storeQuad(void* p, int64_t i, const float x[4]) {
  if (D == DType::F32) {
    st4(static_cast<float*>(p) + i, make_float4(x[0], x[1], x[2], x[3]));
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

__device__ __forceinline__ bool scanRange(const void* grad, DType gd, int64_t begin, int64_t end) {
  return blockScanNonFinite<kThreads, kScanUnroll>(grad, gd, begin, end);
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
// (Units of `size` elements, `perChunk` of them per chunk.)
__device__ __forceinline__ bool locate(const Params& p, int64_t u, int64_t size, int64_t perChunk,
                                       int& k, int64_t& b, int64_t& e) {
  const int64_t chunk = u / perChunk;
  const int64_t off = (u - chunk * perChunk) * size;
  k = findTensor(p.tensors, p.nTensors, chunk, k);
  const AdamwTensor& T = p.tensors[k];
  b = (chunk - __ldg(&T.chunkBegin)) * p.hyper.chunkSize + off;
  e = min(b + min(size, p.hyper.chunkSize - off), __ldg(&T.numel));
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

// Runs f(unit) for units taken in order from *counter (reverse: last unit first) until none is
// left. Thread 0 fetches the next unit while the block works on the current one, so the atomic's
// latency is hidden; a second block on the SM covers the barrier at each unit's end.
template <typename F>
__device__ __forceinline__ void forEachUnit(uint32_t* counter, int64_t total, bool reverse, F f) {
  __shared__ uint32_t sNext;
  if (threadIdx.x == 0) sNext = atomicAdd(counter, 1u);
  __syncthreads();
  int64_t u = sNext;
  while (u < total) {
    __syncthreads();  // everyone has read sNext
    if (threadIdx.x == 0) sNext = atomicAdd(counter, 1u);
    f(reverse ? total - 1 - u : u);
    __syncthreads();
    u = sNext;
  }
}

template <bool kCheck>
__global__ void __launch_bounds__(kThreads, kMinBlocks) adamwKernel(const Params p) {
  __shared__ AdamwScalars sScalars;
  __shared__ int32_t sStep;
  cg::grid_group grid = cg::this_grid();
  if (threadIdx.x == 0) {
    const int32_t t = p.counters->step + 1;
    sStep = t;
    sScalars = adamwScalars(p.hyper, t);
    if (blockIdx.x == 0) p.work[0] = 0;  // phase 2's unit counter, used after the barrier
  }

  bool skip = false;
  if (kCheck) {
    // Phase 1: scan units dealt round-robin, no block barrier inside (a scan unit is a few
    // 16-byte loads per thread: a barrier per unit would leave the SM idle at each one).
    bool bad = false;
    int k = 0;
    for (int64_t u = blockIdx.x; u < p.totalScanUnits && !bad; u += gridDim.x) {
      int64_t b, e;
      if (!locate(p, u, kScanUnit, p.scanUnitsPerChunk, k, b, e)) continue;
      const AdamwTensor* T = p.tensors + k;
      bad = scanRange(T->grad, DType(__ldg(reinterpret_cast<const int32_t*>(&T->gradDtype))), b, e);
    }
    bad = __syncthreads_or(bad);
    if (threadIdx.x == 0) p.flags[blockIdx.x] = bad ? 1 : 0;
    grid.sync();  // every block has read the step, zeroed counter, flags written
    int any = 0;
    for (int i = threadIdx.x; i < int(gridDim.x); i += kThreads) any |= __ldcg(p.flags + i);
    skip = __syncthreads_or(any) != 0;
  } else {
    grid.sync();  // every block has read the step; counter zeroed
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (skip) p.counters->skipped += 1;
    else p.counters->step += 1;
  }

  if (!skip) {
    Ctx c;
    c.s = sScalars;
    c.t = sStep;
    c.seed = p.hyper.seed;
    c.stochastic = p.hyper.stochasticRounding != 0;
    const DType st = p.hyper.stateDtype;
    int k = p.nTensors - 1;
    // Reverse order after a scan: the gradients phase 1 read last are still in L2.
    forEachUnit(p.work, p.totalUnits, kCheck, [&](int64_t u) {
      int64_t b, e;
      if (locate(p, u, kUnit, p.unitsPerChunk, k, b, e)) {
        const AdamwTensor T = loadTensor(p.tensors + k);
        updateUnit(T, b, e, c, st);
      }
    });
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
  return 2 + std::max(1, std::max(maxGrid(dev, true), maxGrid(dev, false)));
}

Status adamwStep(int dev, const AdamwTensor* tensors, int32_t nTensors, int64_t totalChunks,
                 const AdamwHyper& hyper, AdamwCounters* counters, int32_t* scratch) {
  if (hyper.chunkSize <= 0) return invalidArg("adamwStep: chunkSize must be positive");
  if (nTensors < 0 || totalChunks < 0 || (totalChunks > 0 && (nTensors == 0 || !tensors)))
    return invalidArg("adamwStep: bad tensor list");
  if (!counters) return invalidArg("adamwStep: counters is null");
  if (!scratch) return invalidArg("adamwStep: scratch is null");
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
  p.scanUnitsPerChunk = (hyper.chunkSize + kScanUnit - 1) / kScanUnit;
  p.totalScanUnits = totalChunks * p.scanUnitsPerChunk;
  p.hyper = hyper;
  p.counters = counters;
  p.work = reinterpret_cast<uint32_t*>(scratch);
  p.flags = scratch + 2;
  const int grid = int(std::max<int64_t>(1, std::min<int64_t>(cap, p.totalUnits)));
  void* args[] = {&p};
  cudaError_t e = check ? cudaLaunchCooperativeKernel((const void*)adamwKernel<true>, grid, kThreads, args, 0, st)
                        : cudaLaunchCooperativeKernel((const void*)adamwKernel<false>, grid, kThreads, args, 0, st);
  if (e != cudaSuccess) return statusOf(e, "launching adamwStep");
  return lastError("adamwStep");
}

}  // namespace gpu
}  // namespace slimopt
