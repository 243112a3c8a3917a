// Device helpers of the quantization kernels (quant.cu, qadam.cu): 16-byte accesses as floats,
// warp reductions, and staging a map in shared memory.
#pragma once
#include <cuda_runtime.h>
#include "quant.cuh"

namespace slimopt {
namespace gpu {

// Elements of dtype D in one 16-byte access.
template <DType D>
struct Vec16 {
  static constexpr int N = D == DType::F32 ? 4 : 8;
};

// x = the 16 bytes at element i of p (i a multiple of N, p 16-byte aligned).
template <DType D>
__device__ __forceinline__ void load16(const void* p, int64_t i, float (&x)[Vec16<D>::N]) {
  const uint4 u = *reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p) + i * dtypeSize(D));
  if (D == DType::F32) {
    x[0] = __uint_as_float(u.x); x[1] = __uint_as_float(u.y);
    x[2] = __uint_as_float(u.z); x[3] = __uint_as_float(u.w);
  } else {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint16_t lo = uint16_t(w[k]), hi = uint16_t(w[k] >> 16);
      x[2 * k] = D == DType::BF16 ? bf16ToFloat(lo) : f16ToFloat(lo);
      x[2 * k + 1] = D == DType::BF16 ? bf16ToFloat(hi) : f16ToFloat(hi);
    }
  }
}

template <DType D>
__device__ __forceinline__ void store16(void* p, int64_t i, const float (&x)[Vec16<D>::N]) {
  uint4 u;
  if (D == DType::F32) {
    u = make_uint4(__float_as_uint(x[0]), __float_as_uint(x[1]), __float_as_uint(x[2]), __float_as_uint(x[3]));
  } else {
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint16_t lo = D == DType::BF16 ? floatToBf16(x[2 * k]) : floatToF16(x[2 * k]);
      const uint16_t hi = D == DType::BF16 ? floatToBf16(x[2 * k + 1]) : floatToF16(x[2 * k + 1]);
      w[k] = uint32_t(lo) | (uint32_t(hi) << 16);
    }
    u = make_uint4(w[0], w[1], w[2], w[3]);
  }
  *reinterpret_cast<uint4*>(static_cast<uint8_t*>(p) + i * dtypeSize(D)) = u;
}

// Max over aligned groups of kLanes lanes (a power of two <= 32); every lane of the warp must call.
template <int kLanes>
__device__ __forceinline__ float groupMax(float x) {
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Copies `bytes` (a multiple of 8) from global to shared memory with the whole block.
__device__ __forceinline__ void stageToShared(void* dst, const void* src, size_t bytes) {
  const uint2* s = static_cast<const uint2*>(src);
  uint2* d = static_cast<uint2*>(dst);
  for (size_t i = threadIdx.x; i < bytes / 8; i += blockDim.x) d[i] = __ldg(s + i);
}

}  // namespace gpu
}  // namespace slimopt
