// The non-finite scan of the optimizers' NaN/Inf guard, shared by the step kernels (AdamW,
// AdamW8bit/4bit, Grass) and GaLore's scan kernel: does [begin, end) of a float array hold a NaN
// or an infinity? The whole block scans, kThreads threads with kUnroll 16-byte loads in flight
// each; every thread must call, and each gets its own part of the answer (reduce it with
// __syncthreads_or).
#pragma once
#include <cuda_runtime.h>
#include "adamw.cuh"
#include "internal.cuh"

namespace slimopt {
namespace gpu {

// Non-finite <=> exponent all ones <=> (word & mask) + one carries into the lane's top bit. One
// 32-bit word holds one f32 or two 16-bit values (no carry crosses the halves: 0x7f80 + 0x80 =
// 0x8000).
template <int kThreads, int kUnroll>
__device__ __forceinline__ bool blockScanNonFinite(const void* p, DType d, int64_t begin, int64_t end) {
  const int es = dtypeSize(d);
  const uint32_t mask = d == DType::F32 ? 0x7f800000u : d == DType::BF16 ? 0x7f807f80u : 0x7c007c00u;
  const uint32_t one = d == DType::F32 ? 0x00800000u : d == DType::BF16 ? 0x00800080u : 0x04000400u;
  const uint32_t top = d == DType::F32 ? 0x80000000u : 0x80008000u;
  const int tid = threadIdx.x;
  const uint8_t* b = static_cast<const uint8_t*>(p) + begin * es;
  uint32_t acc = 0;
  if ((reinterpret_cast<uintptr_t>(b) & 15) == 0) {
    const int64_t nv = (end - begin) * es / 16;
    const uint4* q = reinterpret_cast<const uint4*>(b);
    for (int64_t v0 = 0; v0 < nv; v0 += kUnroll * kThreads) {
      uint4 x[kUnroll];
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) {
        const int64_t vi = v0 + j * kThreads + tid;
        x[j] = vi < nv ? __ldg(q + vi) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int j = 0; j < kUnroll; ++j)
        acc |= ((x[j].x & mask) + one) | ((x[j].y & mask) + one) | ((x[j].z & mask) + one) | ((x[j].w & mask) + one);
    }
    begin += nv * 16 / es;
  }
  bool bad = (acc & top) != 0;
  for (int64_t i = begin + tid; i < end; i += kThreads) bad |= !isFiniteFloat(loadAsFloat(p, d, i));
  return bad;
}

}  // namespace gpu
}  // namespace slimopt
