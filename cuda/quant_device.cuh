// Device helpers of the quantization kernels (quant.cu, qadam.cu): 16-byte accesses as floats,
// conversions in hardware, the code finder's table lookup and code packing, warp reductions, and
// staging a map in shared memory.
#pragma once
#include <cuda_runtime.h>
#include <map>
#include <mutex>
#include <utility>
#include "quant.cuh"

namespace slimopt {
namespace gpu {

// Elements of dtype D in one 16-byte access.
template <DType D>
struct Vec16 {
  static constexpr int N = D == DType::F32 ? 4 : 8;
};

// 16-bit floats <-> f32 with the hardware cvt (one instruction per value or pair, where common.cuh's
// portable versions take 6-15). The same bits as floatToBf16 / floatToF16 / f16ToFloat for every
// finite value and inf. NaN: the rounding conversions keep floatToBf16's / floatToF16's result for
// the canonical NaN (0x7fffffff) that every arithmetic op on the device returns, which is the only
// NaN the kernels here convert (they store results of arithmetic); f16ToFloat's NaN payload may
// differ, and every value loaded goes through arithmetic before anything is stored.
__device__ __forceinline__ uint32_t packBf16x2(float lo, float hi) {
#if __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return uint32_t(floatToBf16(lo)) | (uint32_t(floatToBf16(hi)) << 16);
#endif
}
__device__ __forceinline__ uint32_t packF16x2(float lo, float hi) {
#if __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  // floatToF16 turns a NaN into sign | 0x7e00 (the hardware: 0x7fff).
  if (lo != lo) r = (r & 0xffff0000u) | ((__float_as_uint(lo) >> 16) & 0x8000u) | 0x7e00u;
  if (hi != hi) r = (r & 0xffffu) | (__float_as_uint(hi) & 0x80000000u) | 0x7e000000u;
  return r;
#else
  return uint32_t(floatToF16(lo)) | (uint32_t(floatToF16(hi)) << 16);
#endif
}
__device__ __forceinline__ float halfToFloat(uint16_t h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

// The two 16-bit floats of word w as f32 (lo = bits 0-15).
template <DType D>
__device__ __forceinline__ void unpack16x2(uint32_t w, float& lo, float& hi) {
  if (D == DType::BF16) {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xffff0000u);
  } else {
    lo = halfToFloat(uint16_t(w));
    hi = halfToFloat(uint16_t(w >> 16));
  }
}

template <DType D>
__device__ __forceinline__ uint32_t pack16x2(float lo, float hi) {
  return D == DType::BF16 ? packBf16x2(lo, hi) : packF16x2(lo, hi);
}

// x = the 16 bytes u as elements of dtype D.
template <DType D>
__device__ __forceinline__ void unpack16(const uint4 u, float (&x)[Vec16<D>::N]) {
  if (D == DType::F32) {
    x[0] = __uint_as_float(u.x); x[1] = __uint_as_float(u.y);
    x[2] = __uint_as_float(u.z); x[3] = __uint_as_float(u.w);
  } else {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) unpack16x2<D>(w[k], x[2 * k], x[2 * k + 1]);
  }
}

// x = the 16 bytes at element i of p (i a multiple of N, p 16-byte aligned).
template <DType D>
__device__ __forceinline__ void load16(const void* p, int64_t i, float (&x)[Vec16<D>::N]) {
  unpack16<D>(*reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p) + i * dtypeSize(D)), x);
}

template <DType D>
__device__ __forceinline__ void store16(void* p, int64_t i, const float (&x)[Vec16<D>::N]) {
  uint4 u;
  if (D == DType::F32) {
    u = make_uint4(__float_as_uint(x[0]), __float_as_uint(x[1]), __float_as_uint(x[2]), __float_as_uint(x[3]));
  } else {
    u = make_uint4(pack16x2<D>(x[0], x[1]), pack16x2<D>(x[2], x[3]), pack16x2<D>(x[4], x[5]), pack16x2<D>(x[6], x[7]));
  }
  *reinterpret_cast<uint4*>(static_cast<uint8_t*>(p) + i * dtypeSize(D)) = u;
}

// ---- codes ---------------------------------------------------------------------------------------

// The code of x (quantFind's result) in byte 3 of the word returned; `table` is the finder's table
// in shared memory as finderBase / finderBaseNonNegative return it (indexed by key >> 16).
template <bool kSigned>
__device__ __forceinline__ uint32_t findCode(float x, const QuantFinder& f, const uint32_t* table) {
  const uint32_t key = quantKey<kSigned>(x, f);
  return quantPick(key, table[key >> kFinderShift]);
}

constexpr float kFloatMax = 3.4028235e38f;

// findCode for x = y * (1/absmax) with |y| <= absmax, absmax and 1/absmax finite (an absmax of
// 2^-128 or less has an infinite inverse), on a map whose topBits >= 1.0:
// then |x| <= 1 + 2^-22 lies in 1.0's bucket or below, inside the table, so the clamp to top (one
// FMNMX of the ~12 operations per value) is not needed; the result is findCode's.
__device__ __forceinline__ uint32_t findCodeScaled(float x, const QuantFinder& f, const uint32_t* table) {
  uint32_t key = __float_as_uint(fmaxf(fabsf(x), __uint_as_float(f.baseBits)));
  key ^= uint32_t(int32_t(__float_as_uint(x)) >> 31) & f.flipMask;
  return quantPick(key, table[key >> kFinderShift]);
}
__host__ __device__ __forceinline__ bool topAtLeastOne(const QuantFinder& f) { return f.topBits >= 0x3f800000u; }

// Max of a and |b| that is NaN when either is (max.NaN: FMNMX.NAN, as cheap as fmaxf, which drops a NaN).
__device__ __forceinline__ float maxAbsNaN(float a, float b) {
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(fabsf(b)));
  return r;
}

// The finder table of a map staged whole at `tab` in shared memory, as findCode indexes it. The
// pointer points before the table (never dereferenced there): key >> 16 >= firstBucket always.
__device__ __forceinline__ const uint32_t* finderBase(const uint32_t* tab, const QuantFinder& f) {
  return tab - f.firstBucket;
}
// findCode<false> reads no entry before posEntry: a kernel may stage the table from entry
// nonNegativeFirst (even, so that the copy is 8-byte aligned) on, and index it with this base.
__host__ __device__ __forceinline__ uint32_t nonNegativeFirst(const QuantFinder& f) { return f.posEntry & ~1u; }
__device__ __forceinline__ const uint32_t* finderBaseNonNegative(const uint32_t* tab, const QuantFinder& f) {
  return tab - (f.firstBucket + nonNegativeFirst(f));
}

// Byte 3 of each of c0..c3 (findCode's words) packed into one word (c0 lowest): three byte permutes.
__device__ __forceinline__ uint32_t packCodes(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
  return __byte_perm(__byte_perm(c0, c1, 0x0073), __byte_perm(c2, c3, 0x0073), 0x5410);
}

// Byte k of w, zero-extended.
__device__ __forceinline__ uint32_t byteOf(uint32_t w, int k) { return __byte_perm(w, 0, 0x4440 | k); }

// Max over aligned groups of kLanes lanes (a power of two <= 32); every lane of the warp must call.
template <int kLanes>
__device__ __forceinline__ float groupMax(float x) {
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// The max over the warp of a and of b, and the inverse of each, in one reduction and one
// quantInverse (every lane must call): lanes 0-15 reduce a, lanes 16-31 b. Returns this lane's
// half's max (a's on lanes 0-15, b's on 16-31); invA and invB come back on every lane.
__device__ __forceinline__ float warpMaxPair(float a, float b, int lane, float& invA, float& invB) {
  const bool upper = lane & 16;
  float x = upper ? b : a;
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, upper ? a : b, 16));
  x = groupMax<16>(x);
  const float inv = quantInverse(x);
  invA = __shfl_sync(0xffffffffu, inv, 0);
  invB = __shfl_sync(0xffffffffu, inv, 16);
  return x;
}

// Copies `bytes` (a multiple of 8) from global to shared memory with the whole block.
__device__ __forceinline__ void stageToShared(void* dst, const void* src, size_t bytes) {
  const uint2* s = static_cast<const uint2*>(src);
  uint2* d = static_cast<uint2*>(dst);
  for (size_t i = threadIdx.x; i < bytes / 8; i += blockDim.x) d[i] = __ldg(s + i);
}

// ---- 8-bit Adam states (Grass, GaLore): both maps in shared memory ------------------------------

// Dynamic shared memory of a kernel that stages both maps (0 without 8-bit states): ~65 KB for
// the two 8-bit maps, past the 48 KB a launch gets without opting in (q8AllowSmem).
inline size_t q8SmemBytes(const Q8Maps& q) {
  return q.blobA != nullptr ? mapBlobBytes(q.fA) + mapBlobBytes(q.fB) : 0;
}

// Lets `kernel` launch with `bytes` of dynamic shared memory on the current device (once per
// kernel and device; a no-op up to 48 KB).
inline cudaError_t q8AllowSmem(const void* kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> allowed;
  std::lock_guard<std::mutex> lock(mu);
  size_t& have = allowed[{kernel, dev}];
  if (have >= bytes) return cudaSuccess;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (e == cudaSuccess) have = bytes;
  return e;
}

// Copies both maps' blobs into `smem` with the whole block and returns the view of the copies
// (every thread must call; an empty view without 8-bit states).
__device__ __forceinline__ Q8View stageQ8(const Q8Maps& q, uint8_t* smem) {
  if (q.blobA == nullptr) return Q8View{};
  const size_t a = mapBlobBytes(q.fA);
  stageToShared(smem, q.blobA, a);
  stageToShared(smem + a, q.blobB, mapBlobBytes(q.fB));
  __syncthreads();
  return q8View(smem, smem + a, q.fA, q.fB);
}

// A warp's share of one 256-block of 8-bit states: lane holds elements base + t*32 + lane (t < 8,
// so the codes are read and written contiguously across the warp), those < count. `element(t, i,
// m, v)` sets the new f32 m, v of element i; returns with mx, vx the block's max |m| and max v on
// every lane (every lane must call).
constexpr int kQ8PerLane = int(kQ8Block / 32);
template <typename Element>
__device__ __forceinline__ void q8WarpBlock(int64_t base, int64_t count, int lane, float (&m)[kQ8PerLane],
                                            float (&v)[kQ8PerLane], float& mx, float& vx, Element&& element) {
  mx = 0.0f;
  vx = 0.0f;
#pragma unroll
  for (int t = 0; t < kQ8PerLane; ++t) {
    const int64_t i = base + t * 32 + lane;
    m[t] = 0.0f;
    v[t] = 0.0f;
    if (i >= count) continue;
    element(t, i, m[t], v[t]);
    mx = fmaxf(mx, fabsf(m[t]));
    vx = fmaxf(vx, v[t]);
  }
  mx = groupMax<32>(mx);
  vx = groupMax<32>(vx);
}

}  // namespace gpu
}  // namespace slimopt
