// The C++ CPU backend: the reference for the CUDA kernels and the fallback without a GPU.
#pragma once
#include <cstdint>
#include "../../cuda/adamw.cuh"

namespace slimopt {
namespace cpu {

void fillRandn(void* out, DType dtype, int64_t n, uint64_t seed, float mean, float std);
void convert(const void* src, DType srcType, void* dst, DType dstType, int64_t n);
// Same contract as gpu::adamwStep, host pointers; tensors[i].chunkBegin is ignored.
void adamwStep(const AdamwTensor* tensors, int32_t nTensors, const AdamwHyper& hyper,
               AdamwCounters* counters);
// Runs fn(begin, end) over [0, n) split across the machine's cores (serial when n is small).
void parallelFor(int64_t n, int64_t grain, void (*fn)(void* ctx, int64_t begin, int64_t end), void* ctx);

}  // namespace cpu
}  // namespace slimopt
