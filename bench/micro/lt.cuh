// What the cuBLASLt micro benches (lt_gemm.cu, lt_search.cu) share: the library's types and
// prototypes as they load them by dlopen (the build has no cuBLAS headers; values from
// cublasLt.h), symbol lookup, and the device-side relative difference of two results.
#pragma once
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "harness.cuh"

namespace lt {

typedef struct { uint64_t data[8]; } LtAlgo;
typedef struct {
  LtAlgo algo;
  size_t workspaceSize;
  int state;
  float wavesCount;
  int reserved[4];
} LtHeuristic;

typedef int (*LtDescCreateFn)(void**, int, int);
typedef int (*LtSetAttrFn)(void*, int, const void*, size_t);
typedef int (*LtLayoutCreateFn)(void**, int, uint64_t, uint64_t, int64_t);
typedef int (*LtPrefCreateFn)(void**);
typedef int (*LtHeuristicFn)(void*, void*, void*, void*, void*, void*, void*, int, LtHeuristic*, int*);
typedef int (*LtMatmulFn)(void*, void*, const void*, const void*, void*, const void*, void*, const void*, const void*,
                        void*, void*, void*, const LtAlgo*, void*, size_t, cudaStream_t);
typedef int (*LtConfigGetFn)(const LtAlgo*, int, void*, size_t, size_t*);

// Descriptor: CUBLASLT_MATMUL_DESC_POINTER_MODE 2, _TRANSA 3, _TRANSB 4. Preference:
// CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES 1 (uint64_t). CUBLAS_COMPUTE_32F_FAST_TF32 77, CUDA_R_32F 0.
// Config: CUBLASLT_ALGO_CONFIG_ID 0, _TILE_ID 1, _SPLITK_NUM 2, _REDUCTION_SCHEME 3, _CTA_SWIZZLING 4,
// _CUSTOM_OPTION 5, _STAGES_ID 6, _INNER_SHAPE_ID 7, _CLUSTER_SHAPE_ID 8.
constexpr int kDescPointerMode = 2, kDescTransA = 3, kDescTransB = 4, kPrefMaxWorkspace = 1;
constexpr int kComputeTf32 = 77, kR32F = 0;

inline void* sym(void* h, const char* n) {
  void* p = dlsym(h, n);
  if (p == nullptr) {
    std::fprintf(stderr, "missing symbol %s\n", n);
    std::exit(1);
  }
  return p;
}

// The cuBLAS and cuBLASLt entry points both benches call, loaded from libcublas.so.13 and
// libcublasLt.so.13 (exits when either is missing).
struct Base {
  void* blasLib = nullptr;
  void* ltLib = nullptr;
  micro::CreateFn create, ltCreate;
  micro::SetIntFn setMath, setPointer;
  micro::SgemmFn sgemm;
  LtDescCreateFn descCreate;
  LtSetAttrFn descSet, prefSet;
  LtLayoutCreateFn layoutCreate;
  LtPrefCreateFn prefCreate;
  LtHeuristicFn heuristic;
  LtMatmulFn matmul;
  LtConfigGetFn cfgGet;
};

inline void loadBase(Base& L) {
  L.blasLib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_LOCAL);
  L.ltLib = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_LOCAL);
  if (L.blasLib == nullptr || L.ltLib == nullptr) {
    std::fprintf(stderr, "libcublas.so.13 / libcublasLt.so.13 not found\n");
    std::exit(1);
  }
  void *b = L.blasLib, *l = L.ltLib;
  L.create = reinterpret_cast<micro::CreateFn>(sym(b, "cublasCreate_v2"));
  L.setMath = reinterpret_cast<micro::SetIntFn>(sym(b, "cublasSetMathMode"));
  L.setPointer = reinterpret_cast<micro::SetIntFn>(sym(b, "cublasSetPointerMode_v2"));
  L.sgemm = reinterpret_cast<micro::SgemmFn>(sym(b, "cublasSgemm_v2"));
  L.ltCreate = reinterpret_cast<micro::CreateFn>(sym(l, "cublasLtCreate"));
  L.descCreate = reinterpret_cast<LtDescCreateFn>(sym(l, "cublasLtMatmulDescCreate"));
  L.descSet = reinterpret_cast<LtSetAttrFn>(sym(l, "cublasLtMatmulDescSetAttribute"));
  L.prefSet = reinterpret_cast<LtSetAttrFn>(sym(l, "cublasLtMatmulPreferenceSetAttribute"));
  L.layoutCreate = reinterpret_cast<LtLayoutCreateFn>(sym(l, "cublasLtMatrixLayoutCreate"));
  L.prefCreate = reinterpret_cast<LtPrefCreateFn>(sym(l, "cublasLtMatmulPreferenceCreate"));
  L.heuristic = reinterpret_cast<LtHeuristicFn>(sym(l, "cublasLtMatmulAlgoGetHeuristic"));
  L.matmul = reinterpret_cast<LtMatmulFn>(sym(l, "cublasLtMatmul"));
  L.cfgGet = reinterpret_cast<LtConfigGetFn>(sym(l, "cublasLtMatmulAlgoConfigGetAttribute"));
}

__global__ void diffKernel(const float* x, const float* y, int64_t n, double* sums) {
  double num = 0, den = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double d = double(x[i]) - y[i];
    num += d * d;
    den += double(y[i]) * y[i];
  }
  atomicAdd(&sums[0], num);
  atomicAdd(&sums[1], den);
}

// ‖x − y‖ / ‖y‖ on the device (sums: two doubles of device scratch).
inline double relDiff(const float* x, const float* y, int64_t n, double* sums, cudaStream_t st = nullptr) {
  CK(cudaMemsetAsync(sums, 0, 16, st));
  diffKernel<<<264, 256, 0, st>>>(x, y, n, sums);
  double h[2];
  CK(cudaMemcpyAsync(h, sums, 16, cudaMemcpyDeviceToHost, st));
  CK(cudaStreamSynchronize(st));
  return std::sqrt(h[0] / std::max(h[1], 1e-300));
}

}  // namespace lt
