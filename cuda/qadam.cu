// AdamW8bit / AdamW4bit: one cooperative launch per group per step, every tensor of the group in
// it (quantized ones and the small ones that keep f32 states).
//
// Work layout. The group is cut into tiles of 256 elements (a tensor's last tile partial). A
// quantization block (256 elements for 8 bits, 128 for 4) never crosses a tile, so one warp owns
// whole blocks: it dequantizes m and v with the old absmax, runs the f32 Adam update, writes W,
// reduces the block's new absmax of |m| and of v with warp shuffles (no shared memory, no
// __syncthreads), and re-encodes. A lane holds its elements as 16-byte slots (slot s covers tile
// elements s*32*V + lane*V .. +V, V = 4 for f32 params, 8 for bf16/f16), so every access of W, G
// and the codes is contiguous across the warp. Warps of a persistent grid (occupancy x SMs
// blocks, all resident) take units of 32 tiles in order from an atomic counter, so the units in
// flight are neighbours in memory (adamw.cu measured a static deal 4-10% slower on an H200); the
// next unit is claimed a unit ahead. The unit size was chosen by measurement (H200, §6 step,
// bench/results/NVIDIA-H200-2026-11-24-16): units of 16 tiles ran 5-10% slower than 32, units of
// 64 or 128 up to 3% slower, and so did units of 64 with the last eighth in units of 16 (so not
// idle warps at the end). A static deal of units of 32 without claims was 1-2.5% slower than the
// claimed ones. Neither the boundary's stalls (claim, descriptor, reloaded registers) nor the span
// of memory that the units in flight cover has been measured apart. Full tiles of 16-byte-aligned tensors are staged in shared
// memory with cp.async one tile ahead: the math of a tile takes longer than the memory latency,
// so the next tile's loads stay in flight through it without holding registers.
// A unit that lies whole in one such tensor (the common case) runs its first 31 tiles in a lean
// loop (leanRun: the copy sources advance by a tile, no per-tile tensor lookup or dispatch); the
// general per-tile path, about twice its overhead, takes the unit's last tile (which claims and
// prefetches the next unit) and everything else. Tails and unaligned tensors take a guarded
// scalar path with the same layout.
//
// Why two phases. A step whose gradients hold NaN/Inf must leave every parameter and state of
// the group untouched, decided on the device without a host sync; no block may write before
// every gradient has been seen. So, as in adamw.cu: phase 1 scans all gradients (units of 32K
// elements dealt round-robin, 16-byte loads, 8 in flight per thread, a flag per block in
// scratch), a grid barrier, then phase 2 updates if no block flagged, taking the units in reverse
// so that what phase 1 read last is still in L2. The scan costs one extra read of G (4 B/param
// for f32, 2 for bf16, over the 16 / 10 the step itself moves), which caps a step with the check
// at 16/20 (f32) or 10/12 (bf16) of the floor. skipNonFinite = 0 has no scan; the one barrier
// remains (block 0 zeroes the unit counter before it, every block reads the step before it, and
// block 0 writes the step only after it).
//
// The maps (values and finder tables) are staged in shared memory once per block; for v only the
// non-negative half of its finder table is needed.
#include <cooperative_groups.h>
#include <cuda_pipeline_primitives.h>
#include <cuda_runtime.h>
#include <algorithm>
#include <climits>
#include <map>
#include <mutex>
#include <tuple>
#include "internal.cuh"
#include "quant_device.cuh"
#include "quant_launchers.h"
#include "scan.cuh"
#include "stochastic_round.cuh"

namespace slimopt {
namespace gpu {

namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kScanTiles = 128;   // tiles per scan unit (32K elements)
constexpr int kScanUnroll = 8;    // 16-byte gradient loads in flight per thread in the scan
constexpr int kUnitTiles = 32;    // tiles per unit of phase 2 (8192 elements)

// Where a warp stages one tile (cp.async, see the kernel): per warp and stage, these byte offsets.
constexpr int kStW = 0;        // W: 256 elements (1024 B f32, 512 B 16-bit)
constexpr int kStG = 1024;     // G
constexpr int kStCA = 2048;    // codes of m: 256 B (8 bits) or 128 B (4 bits)
constexpr int kStCB = 2304;    // codes of v
constexpr int kStAA = 2560;    // absmax of m: 1 (8 bits) or 2 (4 bits) floats
constexpr int kStAB = 2568;    // absmax of v
constexpr int kStageBytes = 2576;
constexpr int kStages = 2;

struct Params {
  const QAdamTensor* tensors;
  int32_t nTensors;
  int64_t totalTiles;
  const uint8_t* blobA;
  const uint8_t* blobB;
  QuantFinder fA, fB;
  QAdamHyper hyper;
  AdamwCounters* counters;
  uint32_t* work;  // scratch[0]: phase 2's unit counter
  int32_t* flags;  // scratch[2 ..]: one per block
};

// Shared memory: values of A and B, A's finder table (both signs), B's (from nonNegativeFirst on:
// v >= 0). Every region is a multiple of 8 bytes.
// Then each warp's staging buffers (kStages tiles, see stageTile).
struct SmemLayout {
  uint32_t valB, tabA, tabB, tabBBytes, stages, bytes;  // byte offsets (valA at 0), sizes
};
__host__ __device__ inline SmemLayout smemLayout(const QuantFinder& fA, const QuantFinder& fB) {
  SmemLayout l;
  l.valB = fA.nCodes * 4;
  l.tabA = l.valB + fB.nCodes * 4;
  l.tabB = l.tabA + fA.entries * 4;
  l.tabBBytes = (fB.entries - nonNegativeFirst(fB)) * 4;
  l.stages = (l.tabB + l.tabBBytes + 15) & ~15u;
  l.bytes = l.stages + kWarps * kStages * kStageBytes;
  return l;
}

// The maps in shared memory: values, and finder tables as findCode indexes them (finderBase).
using Maps = Q8View;

struct Ctx {
  AdamwScalars s;
  uint64_t seed;
  int32_t t;
  bool stochastic;
  bool normalDenom;  // qadamNormalDenom: the staged path's cheaper sqrt and division (qadamParam)
};

// ---- phase 1: does [begin, end) of this gradient hold a NaN/Inf? (the whole block scans) ------

__device__ __forceinline__ bool scanRange(const void* grad, DType gd, int64_t begin, int64_t end) {
  return blockScanNonFinite<kThreads, kScanUnroll>(grad, gd, begin, end);
}

// Index of the tensor holding `tile`: the last k with tileBegin[k] <= tile (empty tensors share
// their successor's tileBegin and are skipped that way). Checks the previous hit first.
__device__ __forceinline__ int findTensor(const QAdamTensor* T, int n, int64_t tile, int hint) {
  const int64_t hb = __ldg(&T[hint].tileBegin);
  const int64_t he = hint + 1 < n ? __ldg(&T[hint + 1].tileBegin) : LLONG_MAX;
  if (hb <= tile && tile < he) return hint;
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (__ldg(&T[mid].tileBegin) <= tile) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

__device__ __forceinline__ DType dtypeOf(const QAdamTensor* T) {
  return DType(__ldg(reinterpret_cast<const int32_t*>(&T->paramDtype)));
}

// ---- phase 2: one tile of a quantized tensor --------------------------------------------------

// The codes of one slot (elements e0 .. e0+V), packed as stored: V bytes (8 bits) or V nibbles
// (4 bits) in kWords 32-bit words; `full`: one aligned load, else bytewise and guarded. Codes are
// always < 2^kBits = the map's size (qadamStep checks it), so no mask guards the map lookups.
template <int kBits, int V>
struct SlotCodes {
  static constexpr int kWords = kBits == 8 ? V / 4 : 1;
  uint32_t w[kWords];
  __device__ __forceinline__ uint32_t get(int k) const {
    return kBits == 8 ? byteOf(w[k / 4], k % 4) : (w[0] >> (4 * k)) & 0xfu;
  }
  // Packs findCode's words (code in byte 3) with byte permutes; 4-bit codes are < 16, so the odd
  // elements' bytes shifted up a nibble fill the high nibbles.
  __device__ __forceinline__ void pack(const uint32_t (&c)[V]) {
    if constexpr (kBits == 8) {
#pragma unroll
      for (int i = 0; i < kWords; ++i) w[i] = packCodes(c[4 * i], c[4 * i + 1], c[4 * i + 2], c[4 * i + 3]);
    } else if constexpr (V == 8) {
      w[0] = packCodes(c[0], c[2], c[4], c[6]) | (packCodes(c[1], c[3], c[5], c[7]) << 4);
    } else {  // 16 bits used
      w[0] = __byte_perm(c[0], c[2], 0x0073) | (__byte_perm(c[1], c[3], 0x0073) << 4);
    }
  }
};

template <int kBits, int V>
__device__ __forceinline__ void loadCodes(const uint8_t* codes, int64_t e0, int64_t n, bool full, SlotCodes<kBits, V>& c) {
  if (full) {
    if constexpr (kBits == 8 && V == 8) {
      const uint2 u = *reinterpret_cast<const uint2*>(codes + e0);
      c.w[0] = u.x;
      c.w[1] = u.y;
    } else if constexpr (kBits == 8) {
      c.w[0] = *reinterpret_cast<const uint32_t*>(codes + e0);
    } else if constexpr (V == 8) {
      c.w[0] = *reinterpret_cast<const uint32_t*>(codes + e0 / 2);
    } else {
      c.w[0] = *reinterpret_cast<const uint16_t*>(codes + e0 / 2);
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < SlotCodes<kBits, V>::kWords; ++i) c.w[i] = 0;
  if constexpr (kBits == 8) {
#pragma unroll
    for (int k = 0; k < V; ++k)
      if (e0 + k < n) c.w[k / 4] |= uint32_t(codes[e0 + k]) << (8 * (k % 4));
  } else {
#pragma unroll
    for (int k = 0; k < V; k += 2)  // e0 is even: byte (e0+k)/2 holds elements e0+k, e0+k+1
      if (e0 + k < n) c.w[0] |= uint32_t(codes[(e0 + k) >> 1]) << (4 * k);
  }
}

template <int kBits, int V>
__device__ __forceinline__ void storeCodes(uint8_t* codes, int64_t e0, int64_t n, bool full, const SlotCodes<kBits, V>& c) {
  if (full) {
    if constexpr (kBits == 8 && V == 8) {
      *reinterpret_cast<uint2*>(codes + e0) = make_uint2(c.w[0], c.w[1]);
    } else if constexpr (kBits == 8) {
      *reinterpret_cast<uint32_t*>(codes + e0) = c.w[0];
    } else if constexpr (V == 8) {
      *reinterpret_cast<uint32_t*>(codes + e0 / 2) = c.w[0];
    } else {
      *reinterpret_cast<uint16_t*>(codes + e0 / 2) = uint16_t(c.w[0]);
    }
  } else if constexpr (kBits == 8) {
#pragma unroll
    for (int k = 0; k < V; ++k)
      if (e0 + k < n) codes[e0 + k] = uint8_t(c.get(k));
  } else {
#pragma unroll
    for (int k = 0; k < V; k += 2)  // past the end, a nibble is 0
      if (e0 + k < n) codes[(e0 + k) >> 1] = uint8_t(c.get(k) | (e0 + k + 1 < n ? c.get(k + 1) << 4 : 0u));
  }
}

// W of one slot. bf16 with stochastic rounding takes its random bits from `rnd` (16 per element,
// two per word), drawn before the math so that Philox does not add to the registers live there.
template <DType PT>
__device__ __forceinline__ void storeParamSlot(const QAdamTensor& T, int64_t e0, bool full, const float (&w)[Vec16<PT>::N],
                                               const uint32_t (&rnd)[Vec16<PT>::N / 2], bool sr) {
  constexpr int V = Vec16<PT>::N;
  if constexpr (PT == DType::BF16) {
    if (sr) {
      uint16_t h[V];
#pragma unroll
      for (int k = 0; k < V; ++k) h[k] = floatToBf16Stochastic(w[k], (rnd[k / 2] >> (16 * (k % 2))) & 0xffffu);
      if (full) {
        *reinterpret_cast<uint4*>(static_cast<uint16_t*>(T.param) + e0) =
            make_uint4(uint32_t(h[0]) | (uint32_t(h[1]) << 16), uint32_t(h[2]) | (uint32_t(h[3]) << 16),
                       uint32_t(h[4]) | (uint32_t(h[5]) << 16), uint32_t(h[6]) | (uint32_t(h[7]) << 16));
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k)
          if (e0 + k < T.numel) static_cast<uint16_t*>(T.param)[e0 + k] = h[k];
      }
      return;
    }
  }
  if (full) {
    store16<PT>(T.param, e0, w);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k)
      if (e0 + k < T.numel) storeFromFloat(T.param, PT, e0 + k, w[k]);
  }
}

// The stochastic-rounding bits of elements e0 .. e0+V (e0 a multiple of 4): srBits of each.
template <int V>
__device__ __forceinline__ void drawRounding(const QAdamTensor& T, int64_t e0, const Ctx& c, uint32_t (&rnd)[V / 2]) {
#pragma unroll
  for (int q = 0; q < V; q += 4) {
    const Philox4 r = srBlock(c.seed, T.seedSalt, c.t, e0 + q);  // word k is element e0 + q + k
    rnd[q / 2] = (r.v[0] & 0xffffu) | (r.v[1] << 16);
    rnd[q / 2 + 1] = (r.v[2] & 0xffffu) | (r.v[3] << 16);
  }
}

// This lane's sources of the tile at `base` of a quantized tensor (a full tile, 16-byte aligned),
// which stage() copies into a stage with cp.async (every lane of the warp takes part; completion:
// the caller's commit / wait) and advance() moves to another tile of the tensor. kWide: f32 W and
// G, 1024 bytes each, two 16-byte chunks per lane (else one).
template <int kBits, bool kWide>
struct TileSources {
  static constexpr int QB = kBits == 8 ? 256 : 128;
  static constexpr int ES = kWide ? 4 : 2;
  static constexpr int kCodeLanes = kQuantTile * kBits / 8 / 16;  // lanes copying 16 bytes of codes
  static constexpr int kAbsLanes = kQuantTile / QB;                 // lanes copying one absmax
  const uint8_t *w, *g, *ca, *cb;
  const float *aa, *ab;
  __device__ __forceinline__ TileSources(const QAdamTensor& T, int64_t base, int lane) {
    const int64_t off = base * ES + lane * 16;
    w = static_cast<const uint8_t*>(T.param) + off;
    g = static_cast<const uint8_t*>(T.grad) + off;
    const int64_t co = base * kBits / 8 + (lane < kCodeLanes ? lane * 16 : 0);  // idle lanes: in bounds
    ca = static_cast<const uint8_t*>(T.stateA) + co;
    cb = static_cast<const uint8_t*>(T.stateB) + co;
    const int64_t ao = base / QB + (lane < kAbsLanes ? lane : 0);
    aa = T.absmaxA + ao;
    ab = T.absmaxB + ao;
  }
  __device__ __forceinline__ void stage(uint8_t* st, int lane) const {
    uint8_t* sl = st + lane * 16;
    __pipeline_memcpy_async(sl + kStW, w, 16);
    __pipeline_memcpy_async(sl + kStG, g, 16);
    if (kWide) {
      __pipeline_memcpy_async(sl + kStW + 512, w + 512, 16);
      __pipeline_memcpy_async(sl + kStG + 512, g + 512, 16);
    }
    if (lane < kCodeLanes) {
      __pipeline_memcpy_async(sl + kStCA, ca, 16);
      __pipeline_memcpy_async(sl + kStCB, cb, 16);
    }
    if (lane < kAbsLanes) {
      __pipeline_memcpy_async(st + kStAA + lane * 4, aa, 4);
      __pipeline_memcpy_async(st + kStAB + lane * 4, ab, 4);
    }
  }
  template <int kTiles>
  __device__ __forceinline__ void advance() {
    w += kTiles * kQuantTile * ES;
    g += kTiles * kQuantTile * ES;
    ca += kTiles * kQuantTile * kBits / 8;
    cb += kTiles * kQuantTile * kBits / 8;
    aa += kTiles * (kQuantTile / QB);
    ab += kTiles * (kQuantTile / QB);
  }
};

template <int kBits>
__device__ __forceinline__ void stageTile(uint8_t* st, const QAdamTensor& T, int64_t base, int lane) {
  if (T.paramDtype == DType::F32) TileSources<kBits, true>(T, base, lane).stage(st, lane);
  else TileSources<kBits, false>(T, base, lane).stage(st, lane);
}

// One tile of a quantized tensor. kStaged: the tile is staged at `st` in shared memory (full and
// aligned: 16-byte reads there, 16-byte stores of W, 4- or 8-byte stores of codes, all addressed
// from one pointer per array and lane); else it reads global memory element by element, guarded
// (tails, unaligned tensors).
template <DType PT, int kBits, bool kStaged, bool kNormalDenom>
__device__ __forceinline__ void quantizedTile(const QAdamTensor& T, int64_t base, const Ctx& c, const Maps& mp,
                                              int lane, const uint8_t* st) {
  constexpr int V = Vec16<PT>::N;
  constexpr int S = kQuantTile / (32 * V);  // slots per lane
  constexpr int QB = kBits == 8 ? 256 : 128;
  constexpr int ES = PT == DType::F32 ? 4 : 2;
  constexpr int kSlotCodeBytes = V * kBits / 8;
  const int64_t n = T.numel;
  uint8_t* codesA = static_cast<uint8_t*>(T.stateA);
  uint8_t* codesB = static_cast<uint8_t*>(T.stateB);
  // The lane's first element of W and of the codes (staged path; slot s is s*32*V elements on).
  uint8_t* const wLane = static_cast<uint8_t*>(T.param) + (base + lane * V) * ES;
  uint8_t* const caLane = codesA + (base + lane * V) * kBits / 8;
  uint8_t* const cbLane = codesB + (base + lane * V) * kBits / 8;

  // Stochastic-rounding bits first, while little else is live (Philox needs a dozen registers).
  const bool sr = PT == DType::BF16 && c.stochastic;
  uint32_t rnd[S][V / 2];
  if (sr) {
#pragma unroll
    for (int s = 0; s < S; ++s) drawRounding<V>(T, base + s * 32 * V + lane * V, c, rnd[s]);
  }

  float m[S][V], v[S][V], mxA[S], mxB[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int o = s * 32 * V + lane * V;  // the slot's first element in the tile
    const int64_t e0 = base + o;
    float w[V], g[V], amA, amB;
    SlotCodes<kBits, V> ca, cb;
    if constexpr (kStaged) {
      load16<PT>(st + kStW, o, w);
      load16<PT>(st + kStG, o, g);
      loadCodes<kBits, V>(st + kStCA, o, 0, true, ca);
      loadCodes<kBits, V>(st + kStCB, o, 0, true, cb);
      amA = reinterpret_cast<const float*>(st + kStAA)[o / QB];
      amB = reinterpret_cast<const float*>(st + kStAB)[o / QB];
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const bool ok = e0 + k < n;
        g[k] = ok ? loadAsFloat(T.grad, PT, e0 + k) : 0.0f;
        w[k] = ok ? loadAsFloat(T.param, PT, e0 + k) : 0.0f;
      }
      loadCodes<kBits, V>(codesA, e0, n, false, ca);
      loadCodes<kBits, V>(codesB, e0, n, false, cb);
      const int64_t blk = (e0 < n ? e0 : base) / QB;  // a slot past the end reads a real block
      amA = T.absmaxA[blk];
      amB = T.absmaxB[blk];
    }
    mxA[s] = 0.0f;
    mxB[s] = 0.0f;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      m[s][k] = __fmul_rn(mp.valA[ca.get(k)], amA);
      v[s][k] = __fmul_rn(mp.valB[cb.get(k)], amB);
      w[k] = qadamElement<kNormalDenom>(w[k], g[k], m[s][k], v[s][k], c.s);
      if (!kStaged && e0 + k >= n) m[s][k] = v[s][k] = 0.0f;  // past the end: no part of the max
      mxA[s] = fmaxf(mxA[s], fabsf(m[s][k]));
      mxB[s] = fmaxf(mxB[s], v[s][k]);
    }
    if (kStaged && !sr) {
      store16<PT>(wLane + s * 32 * V * ES, 0, w);
    } else {
      storeParamSlot<PT>(T, e0, kStaged, w, rnd[s], sr);
    }
  }

  // The new absmax of each block, over the lanes (and slots) that hold it, and its inverse (once
  // per block, not per slot). A block of whole slots: m's and v's in one reduction (warpMaxPair),
  // after which lane 0 holds m's absmax and lane 16 v's (absmaxOut).
  constexpr bool kPair = QB >= 32 * V;
  float invA[S], invB[S];
  if constexpr (kPair) {
    constexpr int SPB = QB / (32 * V);
#pragma unroll
    for (int s0 = 0; s0 < S; s0 += SPB) {
      float a = mxA[s0], b = mxB[s0];
#pragma unroll
      for (int j = 1; j < SPB; ++j) {
        a = fmaxf(a, mxA[s0 + j]);
        b = fmaxf(b, mxB[s0 + j]);
      }
      mxA[s0] = warpMaxPair(a, b, lane, invA[s0], invB[s0]);
#pragma unroll
      for (int j = 1; j < SPB; ++j) {
        invA[s0 + j] = invA[s0];
        invB[s0 + j] = invB[s0];
      }
    }
  } else {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      mxA[s] = groupMax<QB / V>(mxA[s]);
      mxB[s] = groupMax<QB / V>(mxB[s]);
      invA[s] = quantInverse(mxA[s]);
      invB[s] = quantInverse(mxB[s]);
    }
  }
  float* const absmaxOut = lane & 16 ? T.absmaxB : T.absmaxA;

#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int64_t e0 = base + s * 32 * V + lane * V;
    uint32_t wa[V], wb[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      wa[k] = findCode<true>(__fmul_rn(m[s][k], invA[s]), mp.fA, mp.tabA);
      wb[k] = findCode<false>(__fmul_rn(v[s][k], invB[s]), mp.fB, mp.tabB);
    }
    SlotCodes<kBits, V> ca, cb;
    ca.pack(wa);
    cb.pack(wb);
    if constexpr (kStaged) {
      storeCodes<kBits, V>(caLane + s * 32 * kSlotCodeBytes, 0, 0, true, ca);
      storeCodes<kBits, V>(cbLane + s * 32 * kSlotCodeBytes, 0, 0, true, cb);
    } else {
      storeCodes<kBits, V>(codesA, e0, n, false, ca);
      storeCodes<kBits, V>(codesB, e0, n, false, cb);
    }
    if constexpr (kPair) {
      const int64_t b0 = base + s * 32 * V;  // the block's first element
      if ((s * 32 * V) % QB == 0 && (lane & 15) == 0 && (kStaged || b0 < n)) absmaxOut[b0 / QB] = mxA[s];
    } else if ((s * 32 * V + lane * V) % QB == 0 && (kStaged || e0 < n)) {
      T.absmaxA[e0 / QB] = mxA[s];
      T.absmaxB[e0 / QB] = mxB[s];
    }
  }
}

// A tile of a small tensor with f32 states: the same math, unquantized (coalesced scalar).
template <DType PT>
__device__ __forceinline__ void plainTile(const QAdamTensor& T, int64_t base, const Ctx& c, int lane) {
  float* ma = static_cast<float*>(T.stateA);
  float* vb = static_cast<float*>(T.stateB);
  const bool sr = PT == DType::BF16 && c.stochastic;
#pragma unroll 4
  for (int k = 0; k < kQuantTile / 32; ++k) {
    const int64_t e = base + k * 32 + lane;
    if (e >= T.numel) break;
    float m = ma[e], v = vb[e];
    const float w = qadamElement(loadAsFloat(T.param, PT, e), loadAsFloat(T.grad, PT, e), m, v, c.s);
    ma[e] = m;
    vb[e] = v;
    if (sr) static_cast<uint16_t*>(T.param)[e] = floatToBf16Stochastic(w, srBits(srBlock(c.seed, T.seedSalt, c.t, e), e));
    else storeFromFloat(T.param, PT, e, w);
  }
}

template <DType PT, int kBits>
__device__ __forceinline__ void typedTile(const QAdamTensor& T, int64_t base, const Ctx& c, const Maps& mp, int lane,
                                          const uint8_t* st) {
  if (!T.quantized) plainTile<PT>(T, base, c, lane);
  else if (!st) quantizedTile<PT, kBits, false, false>(T, base, c, mp, lane, nullptr);
  else if (c.normalDenom) quantizedTile<PT, kBits, true, true>(T, base, c, mp, lane, st);
  else quantizedTile<PT, kBits, true, false>(T, base, c, mp, lane, st);
}

template <int kBits>
__device__ __forceinline__ void runTile(const QAdamTensor& T, int64_t base, const Ctx& c, const Maps& mp, int lane,
                                        const uint8_t* st) {
  switch (T.paramDtype) {
    case DType::BF16: typedTile<DType::BF16, kBits>(T, base, c, mp, lane, st); break;
    case DType::F16: typedTile<DType::F16, kBits>(T, base, c, mp, lane, st); break;
    default: typedTile<DType::F32, kBits>(T, base, c, mp, lane, st); break;
  }
}

// Tiles base, base + kDir * 256, ... (kUnitTiles - 1 of them) of a quantized, aligned tensor, all full,
// the first already staged at stage `parity`: each stages its successor into the other stage and
// runs the staged path, without the general loop's per-tile tensor lookup and checks. Returns the
// stage that then holds tile base + (kUnitTiles - 1) * kDir * 256, staged and committed.
template <DType PT, int kBits, bool kNormalDenom, int kDir>
__device__ __forceinline__ uint32_t leanTiles(const QAdamTensor& T, int64_t base, const Ctx& c, const Maps& mp,
                                              int lane, uint8_t* stages, uint32_t parity) {
  TileSources<kBits, PT == DType::F32> next(T, base + kDir * kQuantTile, lane);
#pragma unroll 1
  for (int j = 0; j < kUnitTiles - 1; ++j) {
    __syncwarp();  // every lane is done reading the stage refilled now
    next.stage(stages + (parity ^ 1u) * kStageBytes, lane);
    next.template advance<kDir>();
    __pipeline_commit();
    __pipeline_wait_prior(1);  // this lane's copies of tile `base` have landed
    __syncwarp();              // and every other lane's
    quantizedTile<PT, kBits, true, kNormalDenom>(T, base, c, mp, lane, stages + parity * kStageBytes);
    parity ^= 1u;
    base += kDir * kQuantTile;
  }
  return parity;
}

template <int kBits, int kDir>
__device__ __forceinline__ uint32_t leanRun(const QAdamTensor& T, int64_t base, const Ctx& c, const Maps& mp,
                                            int lane, uint8_t* stages, uint32_t parity) {
  switch (T.paramDtype) {
    case DType::BF16:
      return c.normalDenom ? leanTiles<DType::BF16, kBits, true, kDir>(T, base, c, mp, lane, stages, parity)
                           : leanTiles<DType::BF16, kBits, false, kDir>(T, base, c, mp, lane, stages, parity);
    case DType::F16:
      return c.normalDenom ? leanTiles<DType::F16, kBits, true, kDir>(T, base, c, mp, lane, stages, parity)
                           : leanTiles<DType::F16, kBits, false, kDir>(T, base, c, mp, lane, stages, parity);
    default:
      return c.normalDenom ? leanTiles<DType::F32, kBits, true, kDir>(T, base, c, mp, lane, stages, parity)
                           : leanTiles<DType::F32, kBits, false, kDir>(T, base, c, mp, lane, stages, parity);
  }
}

// Stages the tile of tensor T at `base` if it takes the staged path (quantized, full, aligned).
template <int kBits>
__device__ __forceinline__ bool prefetchTile(uint8_t* st, const QAdamTensor& T, int64_t base, int lane) {
  if (!T.quantized || !T.vectorOk || base + kQuantTile > T.numel) return false;
  stageTile<kBits>(st, T, base, lane);
  return true;
}

// The descriptor in five 16-byte reads (the list is 16-byte aligned: qadamStep checks it).
__device__ __forceinline__ QAdamTensor loadTensor(const QAdamTensor* T) {
  static_assert(sizeof(QAdamTensor) == 80 && alignof(QAdamTensor) == 16, "QAdamTensor is read as five uint4");
  uint4 w[5];
#pragma unroll
  for (int k = 0; k < 5; ++k) w[k] = __ldg(reinterpret_cast<const uint4*>(T) + k);
  QAdamTensor r;
  memcpy(&r, w, sizeof r);
  return r;
}

// ---- the kernel -------------------------------------------------------------------------------

template <bool kCheck, int kBits>
__global__ void __launch_bounds__(kThreads, 2) qadamKernel(const Params p) {
  extern __shared__ uint4 sQAdam[];  // 16-byte aligned: cp.async and 16-byte reads of the stages
  __shared__ AdamwScalars sScalars;
  __shared__ int32_t sStep;
  cg::grid_group grid = cg::this_grid();
  uint8_t* sm = reinterpret_cast<uint8_t*>(sQAdam);
  const SmemLayout L = smemLayout(p.fA, p.fB);
  stageToShared(sm, p.blobA, p.fA.nCodes * 4);
  stageToShared(sm + L.valB, p.blobB, p.fB.nCodes * 4);
  stageToShared(sm + L.tabA, p.blobA + p.fA.nCodes * 4, size_t(p.fA.entries) * 4);
  stageToShared(sm + L.tabB, p.blobB + (p.fB.nCodes + nonNegativeFirst(p.fB)) * 4, L.tabBBytes);
  // Every block reads the step before the barrier; block 0 writes it only after.
  if (threadIdx.x == 0) {
    const int32_t t = p.counters->step + 1;
    sStep = t;
    sScalars = qadamScalars(p.hyper, t);
  }

  if (threadIdx.x == 0 && blockIdx.x == 0) p.work[0] = 0;  // phase 2's unit counter, used after the barrier

  bool skip = false;
  if (kCheck) {
    // Phase 1: scan units dealt round-robin; a thread stops at its first bad value (no barrier in
    // here). A unit may span tensors.
    bool bad = false;
    int k = 0;
    const int64_t scanUnits = (p.totalTiles + kScanTiles - 1) / kScanTiles;
    for (int64_t u = blockIdx.x; u < scanUnits && !bad; u += gridDim.x) {
      int64_t t0 = u * kScanTiles;
      const int64_t t1 = min(t0 + kScanTiles, p.totalTiles);
      k = findTensor(p.tensors, p.nTensors, t0, k);
      for (; t0 < t1 && !bad && k < p.nTensors; ++k) {
        const QAdamTensor* T = p.tensors + k;
        const int64_t tb = __ldg(&T->tileBegin), numel = __ldg(&T->numel);
        const int64_t te = tb + (numel + kQuantTile - 1) / kQuantTile;
        if (t0 >= te) continue;  // empty, or ends before this unit
        const int64_t segEnd = min(t1, te);
        bad = scanRange(T->grad, dtypeOf(T), (t0 - tb) * kQuantTile, min((segEnd - tb) * kQuantTile, numel));
        t0 = segEnd;
      }
      --k;  // the last tensor touched is the next unit's first guess
      if (k < 0) k = 0;
    }
    bad = __syncthreads_or(bad);
    if (threadIdx.x == 0) p.flags[blockIdx.x] = bad ? 1 : 0;
    grid.sync();  // every block has read the step, the counter is zeroed, flags written
    int any = 0;
    for (int i = threadIdx.x; i < int(gridDim.x); i += kThreads) any |= __ldcg(p.flags + i);
    skip = __syncthreads_or(any) != 0;
  } else {
    grid.sync();  // every block has read the step; the counter is zeroed
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
    c.normalDenom = qadamNormalDenom(c.s);
    Maps mp;
    mp.valA = reinterpret_cast<const float*>(sm);
    mp.valB = reinterpret_cast<const float*>(sm + L.valB);
    mp.tabA = finderBase(reinterpret_cast<const uint32_t*>(sm + L.tabA), p.fA);
    mp.tabB = finderBaseNonNegative(reinterpret_cast<const uint32_t*>(sm + L.tabB), p.fB);
    mp.fA = p.fA;
    mp.fB = p.fB;
    const int lane = threadIdx.x & 31;
    uint8_t* stages = sm + L.stages + (threadIdx.x >> 5) * (kStages * kStageBytes);
    const int64_t total = p.totalTiles;
    const int64_t units = (total + kUnitTiles - 1) / kUnitTiles;
    // The tile at position `pos` of the work order: in reverse after a scan.
    auto tileAt = [&](int64_t pos) { return kCheck ? total - 1 - pos : pos; };
    // Lane 0 claims units; the claim of the next unit is issued a unit ahead and only read (and
    // broadcast) when the warp gets there, so the atomic's latency is hidden.
    uint32_t claim = lane == 0 ? atomicAdd(p.work, 1u) : 0u;
    int64_t unit = __shfl_sync(0xffffffffu, claim, 0);
    if (lane == 0 && unit < units) claim = atomicAdd(p.work, 1u);
    int64_t pos = unit * kUnitTiles;  // position of the current tile in the work order
    // Double buffering: while the warp computes tile `pos`, the next one's W, G, codes and absmax
    // are on their way into the other stage.
    // The tensor of a tile is looked up once, when it is prefetched (kNext), against the tile range
    // of the last tensor found, kept in registers; the tile's own turn reuses the index (kCur).
    int kCur = p.nTensors - 1, kNext = p.nTensors - 1;
    int64_t hintBegin = 0, hintEnd = 0;  // tiles of tensor kNext: [hintBegin, hintEnd)
    uint32_t parity = 0, staged = 0;  // stage of the current tile; bit s: stage s holds a copy
    auto prefetch = [&](int64_t ps, uint32_t stage) {
      const int64_t t = tileAt(ps);
      if (t < hintBegin || t >= hintEnd) {
        kNext = findTensor(p.tensors, p.nTensors, t, kNext);
        hintBegin = __ldg(&p.tensors[kNext].tileBegin);
        hintEnd = kNext + 1 < p.nTensors ? __ldg(&p.tensors[kNext + 1].tileBegin) : LLONG_MAX;
      }
      const QAdamTensor T = loadTensor(p.tensors + kNext);
      staged &= ~(1u << stage);
      if (prefetchTile<kBits>(stages + stage * kStageBytes, T, (t - T.tileBegin) * kQuantTile, lane)) staged |= 1u << stage;
    };
    if (pos < total) prefetch(pos, 0);
    kCur = kNext;
    __pipeline_commit();
    while (pos < total) {
      // A whole unit within one quantized, aligned tensor, every tile full (the common case): its
      // first kUnitTiles - 1 tiles take leanRun; the last one goes the general way below, which
      // claims the next unit and prefetches its first tile. (The unit's first tile is staged: the
      // general prefetch stages every tile that qualifies.)
      if (pos % kUnitTiles == 0 && pos + kUnitTiles <= total && ((staged >> parity) & 1u)) {
        const QAdamTensor T = loadTensor(p.tensors + kCur);
        const int64_t t0 = tileAt(pos), t1 = tileAt(pos + kUnitTiles - 1);
        const int64_t lo = min(t0, t1) - T.tileBegin, hi = max(t0, t1) - T.tileBegin;
        if (T.quantized && T.vectorOk && lo >= 0 && (hi + 1) * kQuantTile <= T.numel) {
          parity = leanRun<kBits, kCheck ? -1 : 1>(T, (t0 - T.tileBegin) * kQuantTile, c, mp, lane, stages, parity);
          staged |= 1u << parity;
          pos += kUnitTiles - 1;
        }
      }
      // The next tile: the following one of this unit, else the first of the claimed next unit.
      int64_t next = pos + 1;
      if (next % kUnitTiles == 0 || next >= total) {
        const int64_t nu = __shfl_sync(0xffffffffu, claim, 0);
        if (lane == 0 && nu < units) claim = atomicAdd(p.work, 1u);
        next = nu < units ? nu * kUnitTiles : total;
      }
      __syncwarp();  // every lane is done reading the stage refilled now
      if (next < total) prefetch(next, parity ^ 1u);
      __pipeline_commit();
      __pipeline_wait_prior(1);  // this lane's copies of the current tile have landed
      __syncwarp();              // and every other lane's
      const int64_t t = tileAt(pos);
      const QAdamTensor T = loadTensor(p.tensors + kCur);
      runTile<kBits>(T, (t - T.tileBegin) * kQuantTile, c, mp, lane,
                     (staged >> parity) & 1u ? stages + parity * kStageBytes : nullptr);
      parity ^= 1u;
      pos = next;
      kCur = kNext;
    }
    __pipeline_wait_prior(0);
  }
}

// ---- launch ------------------------------------------------------------------------------------

template <bool kCheck, int kBits>
const void* kernelOf() {
  return reinterpret_cast<const void*>(qadamKernel<kCheck, kBits>);
}

const void* pickKernel(bool check, int bits) {
  if (bits == 8) return check ? kernelOf<true, 8>() : kernelOf<false, 8>();
  return check ? kernelOf<true, 4>() : kernelOf<false, 4>();
}

// Largest co-resident grid of a kernel variant with `smem` dynamic bytes on a device (cached).
int maxGrid(int dev, bool check, int bits, size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<int, bool, int, size_t>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_tuple(dev, check, bits, smem);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const void* k = pickKernel(check, bits);
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  int occ = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k, kThreads, smem) != cudaSuccess || occ <= 0) {
    cudaGetLastError();
    return 0;
  }
  const int g = occ * smCount(dev);
  cache[key] = g;
  return g;
}

}  // namespace

int32_t qadamScratchInts(int dev) {
  // The unit counter, a spare, then a flag per block: the grid's upper bound over the variants is
  // the occupancy without dynamic shared memory.
  int g = 1;
  for (int bits : {8, 4})
    for (bool check : {false, true}) g = std::max(g, maxGrid(dev, check, bits, 0));
  return 2 + g;
}

Status qadamStep(int dev, const QAdamTensor* tensors, int32_t nTensors, int64_t totalTiles, const QAdamHyper& hyper,
                 const void* mapA, const QuantFinder& fA, const void* mapB, const QuantFinder& fB,
                 AdamwCounters* counters, int32_t* scratch) {
  const uint32_t codes = hyper.bits == 8 ? 256u : hyper.bits == 4 ? 16u : 0u;
  if (codes == 0) return invalidArg("qadamStep: bits must be 8 or 4");
  if (fA.nCodes != codes || fB.nCodes != codes || !mapA || !mapB) return invalidArg("qadamStep: maps do not match bits");
  if (nTensors < 0 || totalTiles < 0 || (totalTiles > 0 && (nTensors == 0 || !tensors)))
    return invalidArg("qadamStep: bad tensor list");
  if (!counters) return invalidArg("qadamStep: counters is null");
  if (!scratch) return invalidArg("qadamStep: scratch is null");
  if (reinterpret_cast<uintptr_t>(tensors) & 15) return invalidArg("qadamStep: tensor list not 16-byte aligned");
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "qadamStep");
  if (!ok.ok()) return ok;
  const bool check = hyper.skipNonFinite != 0;
  const SmemLayout L = smemLayout(fA, fB);
  const int cap = maxGrid(dev, check, hyper.bits, L.bytes);
  if (cap <= 0) return lastError("qadamStep (occupancy query)");
  if (cap + 2 > qadamScratchInts(dev)) return invalidArg("qadamStep: scratch too small");

  Params p;
  p.tensors = tensors;
  p.nTensors = nTensors;
  p.totalTiles = totalTiles;
  p.blobA = static_cast<const uint8_t*>(mapA);
  p.blobB = static_cast<const uint8_t*>(mapB);
  p.fA = fA;
  p.fB = fB;
  p.hyper = hyper;
  p.counters = counters;
  p.work = reinterpret_cast<uint32_t*>(scratch);
  p.flags = scratch + 2;
  const int grid = int(std::max<int64_t>(1, std::min<int64_t>(cap, (totalTiles + kWarps - 1) / kWarps)));
  void* args[] = {&p};
  cudaError_t e = cudaLaunchCooperativeKernel(pickKernel(check, hyper.bits), grid, kThreads, args, L.bytes, st);
  if (e != cudaSuccess) return statusOf(e, "launching qadamStep");
  return lastError("qadamStep");
}

}  // namespace gpu
}  // namespace slimopt
