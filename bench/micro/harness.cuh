// What several micro benches share: deterministic fills, a median, CUDA-event timing, and the
// cuBLAS prototypes they load by dlopen (as cuda/galore.cu does; the build has no cuBLAS headers).
#pragma once
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdint>
#include <vector>

#include "check.cuh"

namespace micro {

// p[i] = scale * (u - 0.5), u uniform in [0, 1) from a hash of (i, seed).
__global__ void fillKernel(float* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed;
    x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16;
    p[i] = scale * (float(x) * (1.0f / 4294967296.0f) - 0.5f);
  }
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median of `reps` timed launches (after two untimed), CUDA events on the default stream;
// launch(i) gets i % 4 (for benches that rotate over four buffers).
template <class F>
double timeUs(F launch, int reps = 20) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  std::vector<double> us;
  for (int i = 0; i < reps + 2; ++i) {
    CK(cudaEventRecord(a));
    launch(i % 4);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    CK(cudaGetLastError());
    float t; CK(cudaEventElapsedTime(&t, a, b));
    if (i >= 2) us.push_back(t * 1e3);
  }
  CK(cudaEventDestroy(a)); CK(cudaEventDestroy(b));
  return median(us);
}

typedef int (*CreateFn)(void**);
typedef int (*SetIntFn)(void*, int);
typedef int (*SgemmFn)(void*, int, int, int, int, int, const float*, const float*, int, const float*, int,
                       const float*, float*, int);

}  // namespace micro
