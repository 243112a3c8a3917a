// What several micro benches share: deterministic fills, a copy kernel for the copy rate, a
// max-difference check, a median, CUDA-event timing, and cuBLAS and cuSOLVER loaded by dlopen (as
// cuda/galore.cu and cuda/galore_refresh.cu do; the build has neither's headers).
#pragma once
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "check.cuh"

namespace micro {

// The cuSOLVER library as cuda/galore_refresh.cu finds it (libcusolver.so.12, then .11); exits
// when neither loads.
inline void* openCusolver() {
  void* h = dlopen("libcusolver.so.12", RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) h = dlopen("libcusolver.so.11", RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    std::fprintf(stderr, "libcusolver.so.12 / .11 not found\n");
    std::exit(1);
  }
  return h;
}

// dlsym that exits naming the symbol when the library lacks it.
inline void* requiredSymbol(void* lib, const char* name) {
  void* p = dlsym(lib, name);
  if (p == nullptr) {
    std::fprintf(stderr, "missing %s\n", name);
    std::exit(1);
  }
  return p;
}

// p[i] = scale * (u - 0.5), u uniform in [0, 1) from a hash of (i, seed).
__global__ void fillKernel(float* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed;
    x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16;
    p[i] = scale * (float(x) * (1.0f / 4294967296.0f) - 0.5f);
  }
}

// The project-back benches' reference: R = ab[0] A B + ab[1] C0 (row-major, A M x K, B K x N),
// a plain f32 sum per element.
__global__ void refKernel(int64_t M, int64_t N, int64_t K, const float* A, const float* B, const float* C0, float* R,
                          const float* ab) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < M * N; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / N, c = i % N;
    float s = 0;
    for (int64_t p = 0; p < K; ++p) s += A[r * K + p] * B[p * N + c];
    R[i] = ab[0] * s + ab[1] * C0[i];
  }
}

// d[i] = s[i] (16 bytes a thread per iteration): the copy rate the benches measure against.
__global__ void copyKernel(const float4* __restrict__ s, float4* __restrict__ d, int64_t nv) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nv; i += int64_t(gridDim.x) * blockDim.x)
    d[i] = s[i];
}

// out[0] = max |x - y| (infinite where x holds a NaN), out[1] = max |y|: non-negative floats order
// as their bit patterns, so atomicMax on ints serves.
__global__ void maxDiffKernel(const float* x, const float* y, int64_t n, float* out) {
  float d = 0, m = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    d = fmaxf(d, fabsf(x[i] - y[i]));
    if (!(x[i] == x[i])) d = INFINITY;
    m = fmaxf(m, fabsf(y[i]));
  }
  atomicMax(reinterpret_cast<int*>(out), __float_as_int(d));
  atomicMax(reinterpret_cast<int*>(out) + 1, __float_as_int(m));
}

// max |x - y| / max |y| over n floats; dd: two floats of device scratch.
inline float maxRelDiff(const float* x, const float* y, int64_t n, float* dd) {
  CK(cudaMemset(dd, 0, 8));
  maxDiffKernel<<<1024, 256>>>(x, y, n, dd);
  float h[2];
  CK(cudaMemcpy(h, dd, 8, cudaMemcpyDeviceToHost));
  return h[0] / h[1];
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

// The project-back benches' buffers: four rotating C's (beyond L2 together), C0 (a problem's C),
// Ref (its reference result), tmp (a result to check), A, B, ab (alpha, beta on the device), dd
// (maxRelDiff's scratch), and the copy rate measured over the C's.
struct BackBuffers {
  std::vector<float*> Cs;
  float *C0, *Ref, *tmp, *A, *B, *ab, *dd;
  double copyGBps;
};
inline BackBuffers backBuffers(int sms, int64_t maxC, int64_t maxA, int64_t maxB) {
  BackBuffers b;
  b.Cs.resize(4);
  for (auto& p : b.Cs) { CK(cudaMalloc(&p, maxC * 4)); fillKernel<<<1024, 256>>>(p, maxC, 3, 1.0f); }
  CK(cudaMalloc(&b.C0, maxC * 4)); CK(cudaMalloc(&b.Ref, maxC * 4)); CK(cudaMalloc(&b.tmp, maxC * 4));
  CK(cudaMalloc(&b.A, maxA * 4)); CK(cudaMalloc(&b.B, maxB * 4));
  CK(cudaMalloc(&b.ab, 8)); CK(cudaMalloc(&b.dd, 8));
  const double copyUs = timeUs([&](int i) { copyKernel<<<sms * 8, 256>>>((const float4*)b.Cs[i], (float4*)b.tmp, maxC / 4); });
  b.copyGBps = 2.0 * maxC * 4 / (copyUs * 1e3);
  return b;
}
// The problem C <- -0.5 A B + 0.999 C0 (A M x K, B K x N): A, B and C0 filled, ab set, Ref computed.
inline void backProblem(const BackBuffers& b, int64_t M, int64_t N, int64_t K) {
  fillKernel<<<1024, 256>>>(b.A, M * K, 1, 1.0f);
  fillKernel<<<1024, 256>>>(b.B, K * N, 2, 1.0f / 16);
  fillKernel<<<1024, 256>>>(b.C0, M * N, 3, 1.0f);
  const float hab[2] = {-0.5f, 0.999f};
  CK(cudaMemcpy(b.ab, hab, 8, cudaMemcpyHostToDevice));
  refKernel<<<4096, 256>>>(M, N, K, b.A, b.B, b.C0, b.Ref, b.ab);
}

typedef int (*CreateFn)(void**);
typedef int (*SetIntFn)(void*, int);
typedef int (*SgemmFn)(void*, int, int, int, int, int, const float*, const float*, int, const float*, int,
                       const float*, float*, int);

// cublasSgemm with TF32 math and device pointer mode on the default stream, or fn null (with a
// line saying so) where libcublas.so.13 does not load.
struct Tf32Sgemm {
  void* handle = nullptr;
  SgemmFn fn = nullptr;
};
inline Tf32Sgemm openTf32Sgemm() {
  Tf32Sgemm s;
  void* lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::printf("# libcublas.so.13 not found: no cuBLAS rows\n");
    return s;
  }
  auto create = reinterpret_cast<CreateFn>(dlsym(lib, "cublasCreate_v2"));
  auto setMath = reinterpret_cast<SetIntFn>(dlsym(lib, "cublasSetMathMode"));
  auto setPtr = reinterpret_cast<SetIntFn>(dlsym(lib, "cublasSetPointerMode_v2"));
  s.fn = reinterpret_cast<SgemmFn>(dlsym(lib, "cublasSgemm_v2"));
  create(&s.handle); setMath(s.handle, 3); setPtr(s.handle, 1);
  return s;
}

}  // namespace micro
