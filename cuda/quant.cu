// Blockwise quantize / dequantize (cuda/quant.cuh says how a code is found).
//
// Quantize. One warp owns one unit: a tile of 256 elements (holding 256/blockSize whole blocks)
// for blockSize <= 256, else one whole block. A lane holds its elements in registers as 16-byte
// slots (slot s covers elements s*32*V + lane*V .. +V of the tile, V = 4 for f32, 8 for 16-bit),
// so every warp access is contiguous and a block's max is a shuffle reduction over the lanes (and
// slots) that hold it: no shared memory, no __syncthreads. With 16-bit input a warp loads its next
// tile before it encodes the current one, so those loads are in flight through the encoding (512
// bytes per warp at a time are too few in flight for the bandwidth); with blocks of 256 it takes
// two tiles at a time instead (1 KB in flight) and reduces both blocks' absmax in one shuffle
// sequence with one reciprocal. A block larger than a tile is read twice (max, then encode); the
// second read hits L1/L2, so DRAM still sees each byte once.
// The finder table (both signs) is staged in shared memory once per thread block; the grid is
// persistent (occupancy x SMs) so that staging is paid once per resident block.
//
// Dequantize. Element-parallel, a one-shot grid: each thread turns 4 (f32 out) or 8 (16-bit out)
// codes into one 16-byte store, for kDeqGroups such groups.
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdint>
#include "internal.cuh"
#include "quant_device.cuh"
#include "quant_launchers.h"

namespace slimopt {
namespace gpu {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <DType D>
struct Tile {
  static constexpr int V = Vec16<D>::N;
  static constexpr int S = kQuantTile / (32 * V);  // slots per lane: 2 (f32) or 1
};

// Elements [base, base + 256) as lane slots; past n (or when not `full`), scalar and guarded.
template <DType D>
__device__ __forceinline__ void loadTile(const void* x, int64_t base, int64_t n, bool full, int lane,
                                         float (&v)[Tile<D>::S][Tile<D>::V]) {
  constexpr int V = Tile<D>::V, S = Tile<D>::S;
  if (full) {
#pragma unroll
    for (int s = 0; s < S; ++s) load16<D>(x, base + s * 32 * V + lane * V, v[s]);
  } else {
#pragma unroll
    for (int s = 0; s < S; ++s)
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const int64_t e = base + s * 32 * V + lane * V + k;
        v[s][k] = e < n ? loadAsFloat(x, D, e) : 0.0f;
      }
  }
}

// Codes of one slot (findCode's words: code in byte 3): packed with byte permutes into one 4- or
// 8-byte store when `full`.
template <int V>
__device__ __forceinline__ void storeCodes(uint8_t* codes, int64_t e0, int64_t n, bool full, const uint32_t (&c)[V]) {
  if (full) {
    if constexpr (V == 4) {
      *reinterpret_cast<uint32_t*>(codes + e0) = packCodes(c[0], c[1], c[2], c[3]);
    } else {
      *reinterpret_cast<uint2*>(codes + e0) = make_uint2(packCodes(c[0], c[1], c[2], c[3]), packCodes(c[4], c[5], c[6], c[7]));
    }
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k)
      if (e0 + k < n) codes[e0 + k] = uint8_t(c[k] >> 24);
  }
}

// kScaled: findCodeScaled's conditions hold (finite block, map top >= 1).
template <DType D, bool kScaled = false>
__device__ __forceinline__ void encodeSlot(const float (&v)[Tile<D>::V], float inv, const QuantFinder& f,
                                           const uint32_t* table, uint8_t* codes, int64_t e0, int64_t n, bool full) {
  constexpr int V = Tile<D>::V;
  uint32_t c[V];
#pragma unroll
  for (int k = 0; k < V; ++k) {
    const float x = __fmul_rn(v[k], inv);
    c[k] = kScaled ? findCodeScaled(x, f, table) : findCode<true>(x, f, table);
  }
  storeCodes<V>(codes, e0, n, full, c);
}

// A tile's raw 16-byte slots, loaded ahead of its turn (see quantizeKernel); a tile that is not
// `full` (unaligned, or past n) is read element by element, guarded, at its turn instead.
template <DType D>
struct TileAhead {
  uint4 raw[Tile<D>::S];
  bool full;
  __device__ __forceinline__ void load(const void* x, int64_t base, int64_t n, bool aligned, int lane) {
    full = aligned && base + kQuantTile <= n;
    if (full) {
      const uint4* p = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(x) + (base + lane * Tile<D>::V) * dtypeSize(D));
#pragma unroll
      for (int s = 0; s < Tile<D>::S; ++s) raw[s] = __ldg(p + s * 32);
    }
  }
};

// blockSize <= 256: one tile, 256 / kBlock blocks.
template <DType D, int kBlock>
__device__ __forceinline__ void quantizeTile(const void* x, const TileAhead<D>& t, int64_t n, uint8_t* codes,
                                             float* absmax, int64_t base, const QuantFinder& f, const uint32_t* table,
                                             int lane) {
  constexpr int V = Tile<D>::V, S = Tile<D>::S;
  const bool full = t.full;
  float v[S][V];
  if (full) {
#pragma unroll
    for (int s = 0; s < S; ++s) unpack16<D>(t.raw[s], v[s]);
  } else {
    loadTile<D>(x, base, n, false, lane, v);
  }
  float mx[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    mx[s] = 0.0f;
#pragma unroll
    for (int k = 0; k < V; ++k) mx[s] = fmaxf(mx[s], fabsf(v[s][k]));
  }
  float inv[S];  // once per block, not per slot
  if constexpr (kBlock >= 32 * V) {  // a block spans whole slots of the warp
    constexpr int SPB = kBlock / (32 * V);
#pragma unroll
    for (int s0 = 0; s0 < S; s0 += SPB) {
      float m = mx[s0];
#pragma unroll
      for (int j = 1; j < SPB; ++j) m = fmaxf(m, mx[s0 + j]);
      m = groupMax<32>(m);
      const float i = quantInverse(m);
#pragma unroll
      for (int j = 0; j < SPB; ++j) {
        mx[s0 + j] = m;
        inv[s0 + j] = i;
      }
    }
  } else {  // a block is kBlock / V lanes of one slot
    constexpr int L = kBlock / V;
#pragma unroll
    for (int s = 0; s < S; ++s) {
      mx[s] = groupMax<L>(mx[s]);
      inv[s] = quantInverse(mx[s]);
    }
  }
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int64_t e0 = base + s * 32 * V + lane * V;
    encodeSlot<D>(v[s], inv[s], f, table, codes, e0, n, full);
    if ((e0 - base) % kBlock == 0 && e0 < n) absmax[e0 / kBlock] = mx[s];
  }
}

// blockSize 256, two full tiles (two blocks) at a time, the 16-byte slots already loaded: their
// maxima in one warp reduction and one exact reciprocal (warpMaxPair: lanes 0-15 reduce tile 0,
// lanes 16-31 tile 1), so that a block costs half a reduction.
template <DType D>
__device__ __forceinline__ void quantizeTilePair(const TileAhead<D>& t0, const TileAhead<D>& t1, uint8_t* codes,
                                                 float* absmax, int64_t base0, const QuantFinder& f,
                                                 const uint32_t* table, int lane) {
  constexpr int V = Tile<D>::V, S = Tile<D>::S;
  float v0[S][V], v1[S][V];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    unpack16<D>(t0.raw[s], v0[s]);
    unpack16<D>(t1.raw[s], v1[s]);
  }
  // The lane's maxima propagate NaN (a finite result means every value is finite), and as they
  // equal fmaxf's on finite values the absmax stored is unchanged. Pairs of finite values on a
  // map with top >= 1 skip the finder's clamp to top (findCodeScaled); any other pair takes the
  // full finder, which also maps NaN and the infinities as the CPU does.
  float mx0 = 0.0f, mx1 = 0.0f;
#pragma unroll
  for (int s = 0; s < S; ++s)
#pragma unroll
    for (int k = 0; k < V; ++k) {
      mx0 = maxAbsNaN(mx0, v0[s][k]);
      mx1 = maxAbsNaN(mx1, v1[s][k]);
    }
  const bool finite = __all_sync(0xffffffffu, mx0 <= kFloatMax && mx1 <= kFloatMax);  // false for NaN
  if (!finite) {  // fmaxf's maxima (NaN dropped), as the CPU computes absmax
    mx0 = mx1 = 0.0f;
#pragma unroll
    for (int s = 0; s < S; ++s)
#pragma unroll
      for (int k = 0; k < V; ++k) {
        mx0 = fmaxf(mx0, fabsf(v0[s][k]));
        mx1 = fmaxf(mx1, fabsf(v1[s][k]));
      }
  }
  float inv0, inv1;
  const float mx = warpMaxPair(mx0, mx1, lane, inv0, inv1);  // tile 0's on lanes 0-15, tile 1's on 16-31
  // An absmax of 2^-128 or less has an infinite inverse: its values scale to inf (NaN for 0), which
  // only the full finder clamps (findCodeScaled would index past its table).
  const bool scaled = finite && topAtLeastOne(f) && inv0 <= kFloatMax && inv1 <= kFloatMax;
  uint8_t* const c0 = codes + base0 + lane * V;
  if (scaled) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      encodeSlot<D, true>(v0[s], inv0, f, table, c0 + s * 32 * V, 0, 0, true);
      encodeSlot<D, true>(v1[s], inv1, f, table, c0 + kQuantTile + s * 32 * V, 0, 0, true);
    }
  } else {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      encodeSlot<D>(v0[s], inv0, f, table, c0 + s * 32 * V, 0, 0, true);
      encodeSlot<D>(v1[s], inv1, f, table, c0 + kQuantTile + s * 32 * V, 0, 0, true);
    }
  }
  if ((lane & 15) == 0) absmax[base0 / kQuantTile + (lane >> 4)] = mx;
}

// blockSize > 256: the warp reads its block twice (max, then encode).
template <DType D, int kBlock>
__device__ __forceinline__ void quantizeBlock(const void* x, int64_t n, uint8_t* codes, float* absmax, int64_t base,
                                              bool aligned, const QuantFinder& f, const uint32_t* table, int lane) {
  constexpr int V = Tile<D>::V, S = Tile<D>::S, T = kBlock / kQuantTile;
  float mx = 0.0f;
#pragma unroll 2
  for (int t = 0; t < T; ++t) {
    const int64_t tb = base + int64_t(t) * kQuantTile;
    if (tb >= n) break;
    float v[S][V];
    loadTile<D>(x, tb, n, aligned && tb + kQuantTile <= n, lane, v);
#pragma unroll
    for (int s = 0; s < S; ++s)
#pragma unroll
      for (int k = 0; k < V; ++k) mx = fmaxf(mx, fabsf(v[s][k]));
  }
  mx = groupMax<32>(mx);
  const float inv = quantInverse(mx);
#pragma unroll 2
  for (int t = 0; t < T; ++t) {
    const int64_t tb = base + int64_t(t) * kQuantTile;
    if (tb >= n) break;
    const bool full = aligned && tb + kQuantTile <= n;
    float v[S][V];
    loadTile<D>(x, tb, n, full, lane, v);
#pragma unroll
    for (int s = 0; s < S; ++s) encodeSlot<D>(v[s], inv, f, table, codes, tb + s * 32 * V + lane * V, n, full);
  }
  if (lane == 0) absmax[base / kBlock] = mx;
}

// Blocks per SM the register budget is sized for: 6 (40 registers), or 5 (51) for the 16-bit
// pair loop with its next pair in registers.
template <DType D, int kBlock>
constexpr int kQuantMinBlocks = kBlock == kQuantTile && D != DType::F32 ? 5 : 6;

template <DType D, int kBlock>
__global__ void __launch_bounds__(kThreads, kQuantMinBlocks<D, kBlock>) quantizeKernel(const void* __restrict__ x, int64_t n,
                                                           uint8_t* __restrict__ codes, float* __restrict__ absmax,
                                                           const uint32_t* __restrict__ tableG, const QuantFinder f,
                                                           bool aligned) {
  extern __shared__ uint2 sQuantTable[];
  stageToShared(sQuantTable, tableG, size_t(f.entries) * 4);
  __syncthreads();
  const uint32_t* table = finderBase(reinterpret_cast<const uint32_t*>(sQuantTable), f);
  constexpr int64_t kUnit = kBlock > kQuantTile ? kBlock : kQuantTile;
  const int lane = threadIdx.x & 31;
  const int64_t units = (n + kUnit - 1) / kUnit;
  const int64_t nw = int64_t(gridDim.x) * kWarps;
  int64_t u = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if constexpr (kBlock == kQuantTile && D != DType::F32) {
    // 16-bit input, blocks of 256: two tiles a step, and the warp's next pair is loaded before
    // this one is encoded, so 2 KB per warp are in flight through the encoding (with only the
    // current pair, 1 KB, warps waited on their loads ~44% of the time: ncu on the H200,
    // 2026-11-24). Full pairs take quantizeTilePair; a pair at the end (or unaligned input) goes
    // tile by tile, guarded. (With f32 the pair needs more registers than 6 blocks per SM allow.)
    const int64_t pairs = (units + 1) / 2;
    auto fullPair = [&](int64_t pu) { return aligned && (pu + 1) * 2 * kUnit <= n; };
    TileAhead<D> c0, c1;
    if (u < pairs && fullPair(u)) {
      c0.load(x, u * 2 * kUnit, n, true, lane);
      c1.load(x, u * 2 * kUnit + kUnit, n, true, lane);
    }
    for (; u < pairs; u += nw) {
      const int64_t b0 = u * 2 * kUnit;
      TileAhead<D> n0, n1;
      if (u + nw < pairs && fullPair(u + nw)) {
        n0.load(x, (u + nw) * 2 * kUnit, n, true, lane);
        n1.load(x, (u + nw) * 2 * kUnit + kUnit, n, true, lane);
      }
      if (fullPair(u)) {
        quantizeTilePair<D>(c0, c1, codes, absmax, b0, f, table, lane);
      } else {
        for (int64_t b = b0; b < b0 + 2 * kUnit && b < n; b += kUnit) {
          TileAhead<D> t;
          t.load(x, b, n, aligned, lane);
          quantizeTile<D, kBlock>(x, t, n, codes, absmax, b, f, table, lane);
        }
      }
      c0 = n0;
      c1 = n1;
    }
  } else if constexpr (kBlock <= kQuantTile && D == DType::F32) {
    // 1 KB per warp in flight is enough at full occupancy; loading ahead would cost occupancy.
    for (; u < units; u += nw) {
      TileAhead<D> cur;
      cur.load(x, u * kUnit, n, aligned, lane);
      quantizeTile<D, kBlock>(x, cur, n, codes, absmax, u * kUnit, f, table, lane);
    }
  } else if constexpr (kBlock <= kQuantTile) {
    // 16-bit input: the warp's next tile is loaded before this one is encoded, so its loads are in
    // flight through the encoding (512 bytes per warp at a time is too few for the bandwidth).
    TileAhead<D> cur;
    if (u < units) cur.load(x, u * kUnit, n, aligned, lane);
    for (; u < units; u += nw) {
      TileAhead<D> next;
      next.full = false;
      if (u + nw < units) next.load(x, (u + nw) * kUnit, n, aligned, lane);
      quantizeTile<D, kBlock>(x, cur, n, codes, absmax, u * kUnit, f, table, lane);
      cur = next;
    }
  } else {
    for (; u < units; u += nw) quantizeBlock<D, kBlock>(x, n, codes, absmax, u * kUnit, aligned, f, table, lane);
  }
}

// ---- dequantize --------------------------------------------------------------------------------

// Groups per thread: a one-shot grid, block b owning groups [b * 256 * kDeqGroups, ...), each
// thread kDeqGroups of them at stride 256 (loads first). Not a persistent grid: on the H200 a
// grid-stride loop that writes 4 bytes per byte read reached 0.83-0.85 of the copy bandwidth
// whatever its order and cache hints, this shape 0.94-0.96 (bench/micro/stream_mix.cu,
// bench/results/NVIDIA-H200-2026-11-24-stream-mix.txt). Two groups per thread halve the
// per-block staging of the map.
constexpr int kDeqGroups = 2;

// values[byte k of w, mod nCodes] for a table in shared memory: the byte's offset in bytes taken
// straight from w (one shift, one mask: mask4 = (nCodes - 1) * 4), so the load needs no index scaling.
__device__ __forceinline__ float valueAt(const float* values, uint32_t w, int k, uint32_t mask4) {
  const uint32_t off = (k == 0 ? w << 2 : w >> (8 * k - 2)) & mask4;
  return *reinterpret_cast<const float*>(reinterpret_cast<const uint8_t*>(values) + off);
}

// Vector part (aligned, groups [0, nv) of V elements: one 16-byte store each), then the block
// past the last whole group takes the tail element by element.
template <DType D>
__global__ void __launch_bounds__(kThreads) dequantizeKernel(const uint8_t* __restrict__ codes,
                                                             const float* __restrict__ absmax, int64_t n,
                                                             void* __restrict__ out, const float* __restrict__ valuesG,
                                                             uint32_t nCodes, int shift, bool aligned) {
  __shared__ float sVal[256];
  constexpr int V = Vec16<D>::N;
  const int64_t nv = aligned ? n / V : 0;
  const int64_t i0 = int64_t(blockIdx.x) * (kThreads * kDeqGroups) + threadIdx.x;
  // The codes and absmax first, so that their DRAM latency overlaps the staging of the map.
  uint32_t cw[kDeqGroups][V / 4];
  float am[kDeqGroups];
#pragma unroll
  for (int j = 0; j < kDeqGroups; ++j) {
    const int64_t q = i0 + j * kThreads;
    if (q < nv) {
      if constexpr (V == 4) {
        cw[j][0] = __ldg(reinterpret_cast<const uint32_t*>(codes) + q);
      } else {
        const uint2 c2 = __ldg(reinterpret_cast<const uint2*>(codes) + q);
        cw[j][0] = c2.x;
        cw[j][1] = c2.y;
      }
      am[j] = __ldg(absmax + ((q * V) >> shift));
    }
  }
  for (uint32_t i = threadIdx.x; i < nCodes; i += kThreads) sVal[i] = __ldg(valuesG + i);
  __syncthreads();
  const uint32_t mask = nCodes - 1, mask4 = mask << 2;
#pragma unroll
  for (int j = 0; j < kDeqGroups; ++j) {
    const int64_t q = i0 + j * kThreads;
    if (q < nv) {
      float o[V];
#pragma unroll
      for (int k = 0; k < V; ++k) o[k] = __fmul_rn(valueAt(sVal, cw[j][k / 4], k % 4, mask4), am[j]);
      store16<D>(out, q * V, o);
    }
  }
  // The tail (n % V elements, or all of them when unaligned): the blocks past the vector part.
  const int64_t vecBlocks = (nv + kThreads * kDeqGroups - 1) / (kThreads * kDeqGroups);
  if (int64_t(blockIdx.x) < vecBlocks) return;
  const int64_t stride = int64_t(gridDim.x - vecBlocks) * kThreads;
  for (int64_t e = nv * V + (int64_t(blockIdx.x) - vecBlocks) * kThreads + threadIdx.x; e < n; e += stride)
    storeFromFloat(out, D, e, __fmul_rn(sVal[codes[e] & mask], __ldg(absmax + (e >> shift))));
}

// ---- launch ------------------------------------------------------------------------------------

template <typename K>
int persistentGrid(int dev, K kernel, size_t smem, int64_t wantBlocks) {
  int occ = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, kThreads, smem) != cudaSuccess || occ <= 0) occ = 1;
  cudaGetLastError();
  return int(std::max<int64_t>(1, std::min<int64_t>(wantBlocks, int64_t(occ) * smCount(dev))));
}

template <DType D, int kBlock>
Status launchQuantize(int dev, cudaStream_t st, const void* x, int64_t n, uint8_t* codes, float* absmax,
                      const void* mapBlob, const QuantFinder& f) {
  auto kernel = quantizeKernel<D, kBlock>;
  const size_t smem = size_t(f.entries) * 4;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return statusOf(e, "quantizeBlockwise (shared memory)");
  }
  constexpr int64_t kUnit = kBlock > kQuantTile ? kBlock : kQuantTile;
  const int64_t units = (n + kUnit - 1) / kUnit;
  const int64_t items = kBlock == kQuantTile && D != DType::F32 ? (units + 1) / 2 : units;  // warp work items
  const int grid = persistentGrid(dev, kernel, smem, (items + kWarps - 1) / kWarps);
  const bool aligned = (reinterpret_cast<uintptr_t>(x) & 15) == 0 && (reinterpret_cast<uintptr_t>(codes) & 7) == 0;
  const uint32_t* table = reinterpret_cast<const uint32_t*>(static_cast<const uint8_t*>(mapBlob) + size_t(f.nCodes) * 4);
  kernel<<<grid, kThreads, smem, st>>>(x, n, codes, absmax, table, f, aligned);
  return lastError("quantizeBlockwise");
}

template <DType D>
Status quantizeByBlock(int dev, cudaStream_t st, const void* x, int64_t n, uint8_t* codes, float* absmax,
                       int64_t blockSize, const void* mapBlob, const QuantFinder& f) {
  switch (blockSize) {
    case 64: return launchQuantize<D, 64>(dev, st, x, n, codes, absmax, mapBlob, f);
    case 128: return launchQuantize<D, 128>(dev, st, x, n, codes, absmax, mapBlob, f);
    case 256: return launchQuantize<D, 256>(dev, st, x, n, codes, absmax, mapBlob, f);
    case 512: return launchQuantize<D, 512>(dev, st, x, n, codes, absmax, mapBlob, f);
    case 1024: return launchQuantize<D, 1024>(dev, st, x, n, codes, absmax, mapBlob, f);
    case 2048: return launchQuantize<D, 2048>(dev, st, x, n, codes, absmax, mapBlob, f);
    case 4096: return launchQuantize<D, 4096>(dev, st, x, n, codes, absmax, mapBlob, f);
    default: return invalidArg("quantizeBlockwise: blockSize must be a power of two in [64, 4096]");
  }
}

template <DType D>
Status launchDequantize(int dev, cudaStream_t st, const uint8_t* codes, const float* absmax, int64_t n, void* out,
                        int shift, const void* mapBlob, const QuantFinder& f) {
  constexpr int V = Vec16<D>::N;
  (void)dev;
  const bool aligned = (reinterpret_cast<uintptr_t>(out) & 15) == 0 && (reinterpret_cast<uintptr_t>(codes) & 7) == 0;
  const int64_t nv = aligned ? n / V : 0;
  const int64_t perBlock = int64_t(kThreads) * kDeqGroups;
  const int64_t vecBlocks = (nv + perBlock - 1) / perBlock;
  // Tail blocks: enough for the leftover elements (all of n when unaligned), a few hundred at most.
  const int64_t rest = n - nv * V;
  const int64_t tailBlocks = rest == 0 ? 0 : std::min<int64_t>(1024, (rest + kThreads - 1) / kThreads);
  const int64_t grid = vecBlocks + tailBlocks;
  if (grid > int64_t(INT32_MAX)) return invalidArg("dequantizeBlockwise: tensor too large for one launch");
  dequantizeKernel<D><<<unsigned(grid), kThreads, 0, st>>>(codes, absmax, n, out, static_cast<const float*>(mapBlob),
                                                           f.nCodes, shift, aligned);
  return lastError("dequantizeBlockwise");
}

bool validBlock(int64_t b) { return b >= 64 && b <= 4096 && (b & (b - 1)) == 0; }
bool validMap(const QuantFinder& f) { return (f.nCodes == 16 || f.nCodes == 256) && f.entries > 0 && f.entries % 2 == 0; }

}  // namespace

Status quantizeBlockwise(int dev, const void* x, DType dtype, int64_t n, uint8_t* codes, float* absmax,
                         int64_t blockSize, const void* mapBlob, const QuantFinder& f) {
  if (n < 0 || !validBlock(blockSize) || !validMap(f) || (n > 0 && (!x || !codes || !absmax || !mapBlob)))
    return invalidArg("quantizeBlockwise: bad arguments");
  if (n == 0) return Status();
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "quantizeBlockwise");
  if (!ok.ok()) return ok;
  switch (dtype) {
    case DType::F32: return quantizeByBlock<DType::F32>(dev, st, x, n, codes, absmax, blockSize, mapBlob, f);
    case DType::BF16: return quantizeByBlock<DType::BF16>(dev, st, x, n, codes, absmax, blockSize, mapBlob, f);
    case DType::F16: return quantizeByBlock<DType::F16>(dev, st, x, n, codes, absmax, blockSize, mapBlob, f);
    default: return invalidArg("quantizeBlockwise: input must be f32, bf16 or f16");
  }
}

Status dequantizeBlockwise(int dev, const uint8_t* codes, const float* absmax, int64_t n, void* out, DType dtype,
                           int64_t blockSize, const void* mapBlob, const QuantFinder& f) {
  if (n < 0 || !validBlock(blockSize) || !validMap(f) || (n > 0 && (!out || !codes || !absmax || !mapBlob)))
    return invalidArg("dequantizeBlockwise: bad arguments");
  if (n == 0) return Status();
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "dequantizeBlockwise");
  if (!ok.ok()) return ok;
  int shift = 0;
  while ((int64_t(1) << shift) < blockSize) ++shift;
  switch (dtype) {
    case DType::F32: return launchDequantize<DType::F32>(dev, st, codes, absmax, n, out, shift, mapBlob, f);
    case DType::BF16: return launchDequantize<DType::BF16>(dev, st, codes, absmax, n, out, shift, mapBlob, f);
    case DType::F16: return launchDequantize<DType::F16>(dev, st, codes, absmax, n, out, shift, mapBlob, f);
    default: return invalidArg("dequantizeBlockwise: output must be f32, bf16 or f16");
  }
}

Status memsetBytes(int dev, void* dst, int value, size_t bytes) {
  if (bytes == 0) return Status();
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "memsetBytes");
  if (!ok.ok()) return ok;
  return statusOf(cudaMemsetAsync(dst, value, bytes, st), "memsetBytes");
}

}  // namespace gpu
}  // namespace slimopt
