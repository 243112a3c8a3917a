// fillRandn and convert. fillRandn is bit-identical to cpu::fillRandn: the normals come from the
// shared normal4() (exactly rounded double ops), and mean + std*z is rounded as two separate f32
// ops (no FMA), the way the CPU backend (-ffp-contract=off) computes it.
#include <cuda_runtime.h>
#include <algorithm>
#include "common.cuh"
#include "internal.cuh"
#include "launchers.h"

namespace slimopt {
namespace gpu {

namespace {

constexpr int kThreads = 256;

template <DType D>
__device__ __forceinline__ void put(void* p, int64_t i, float x) { storeFromFloat(p, D, i, x); }

// One thread per block of 4 elements (one Philox call yields 4 normals).
template <DType D>
__global__ void __launch_bounds__(kThreads) randnKernel(void* out, int64_t n, uint64_t seed,
                                                         float mean, float std) {
  int64_t blocks = (n + 3) / 4;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x) {
    float z[4];
    normal4(seed, uint64_t(b), kStreamRandn, z);
    int64_t i0 = b * 4;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (i0 + j < n) put<D>(out, i0 + j, __fadd_rn(mean, __fmul_rn(std, z[j])));
    }
  }
}

template <DType S, DType D>
__global__ void __launch_bounds__(kThreads) convertKernel(const void* __restrict__ src,
                                                           void* __restrict__ dst, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    storeFromFloat(dst, D, i, loadAsFloat(src, S, i));
}

// Grid-stride loops: enough blocks to fill the device, no more.
int gridFor(int dev, int64_t work) {
  int64_t want = (work + kThreads - 1) / kThreads;
  return int(std::max<int64_t>(1, std::min<int64_t>(want, int64_t(smCount(dev)) * 16)));
}

bool floatType(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }

template <DType S>
void launchConvert(DType d, int grid, cudaStream_t st, const void* src, void* dst, int64_t n) {
  switch (d) {
    case DType::F32: convertKernel<S, DType::F32><<<grid, kThreads, 0, st>>>(src, dst, n); break;
    case DType::BF16: convertKernel<S, DType::BF16><<<grid, kThreads, 0, st>>>(src, dst, n); break;
    default: convertKernel<S, DType::F16><<<grid, kThreads, 0, st>>>(src, dst, n); break;
  }
}

}  // namespace

Status fillRandn(int dev, void* out, DType dtype, int64_t n, uint64_t seed, float mean, float std) {
  if (!floatType(dtype)) return invalidArg("fillRandn: dtype must be f32, bf16 or f16");
  if (n <= 0) return Status();
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "fillRandn");
  if (!ok.ok()) return ok;
  int grid = gridFor(dev, (n + 3) / 4);
  switch (dtype) {
    case DType::F32: randnKernel<DType::F32><<<grid, kThreads, 0, st>>>(out, n, seed, mean, std); break;
    case DType::BF16: randnKernel<DType::BF16><<<grid, kThreads, 0, st>>>(out, n, seed, mean, std); break;
    default: randnKernel<DType::F16><<<grid, kThreads, 0, st>>>(out, n, seed, mean, std); break;
  }
  return lastError("fillRandn");
}

Status convert(int dev, const void* src, DType srcType, void* dst, DType dstType, int64_t n) {
  if (!floatType(srcType) || !floatType(dstType)) return invalidArg("convert: dtypes must be f32, bf16 or f16");
  if (n <= 0) return Status();
  if (srcType == dstType) return copyDtoD(dev, dst, src, size_t(n) * dtypeSize(srcType));
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "convert");
  if (!ok.ok()) return ok;
  int grid = gridFor(dev, n);
  switch (srcType) {
    case DType::F32: launchConvert<DType::F32>(dstType, grid, st, src, dst, n); break;
    case DType::BF16: launchConvert<DType::BF16>(dstType, grid, st, src, dst, n); break;
    default: launchConvert<DType::F16>(dstType, grid, st, src, dst, n); break;
  }
  return lastError("convert");
}

}  // namespace gpu
}  // namespace slimopt
