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
#include <string>

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

using micro::requiredSymbol;

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
  L.create = reinterpret_cast<micro::CreateFn>(requiredSymbol(b, "cublasCreate_v2"));
  L.setMath = reinterpret_cast<micro::SetIntFn>(requiredSymbol(b, "cublasSetMathMode"));
  L.setPointer = reinterpret_cast<micro::SetIntFn>(requiredSymbol(b, "cublasSetPointerMode_v2"));
  L.sgemm = reinterpret_cast<micro::SgemmFn>(requiredSymbol(b, "cublasSgemm_v2"));
  L.ltCreate = reinterpret_cast<micro::CreateFn>(requiredSymbol(l, "cublasLtCreate"));
  L.descCreate = reinterpret_cast<LtDescCreateFn>(requiredSymbol(l, "cublasLtMatmulDescCreate"));
  L.descSet = reinterpret_cast<LtSetAttrFn>(requiredSymbol(l, "cublasLtMatmulDescSetAttribute"));
  L.prefSet = reinterpret_cast<LtSetAttrFn>(requiredSymbol(l, "cublasLtMatmulPreferenceSetAttribute"));
  L.layoutCreate = reinterpret_cast<LtLayoutCreateFn>(requiredSymbol(l, "cublasLtMatrixLayoutCreate"));
  L.prefCreate = reinterpret_cast<LtPrefCreateFn>(requiredSymbol(l, "cublasLtMatmulPreferenceCreate"));
  L.heuristic = reinterpret_cast<LtHeuristicFn>(requiredSymbol(l, "cublasLtMatmulAlgoGetHeuristic"));
  L.matmul = reinterpret_cast<LtMatmulFn>(requiredSymbol(l, "cublasLtMatmul"));
  L.cfgGet = reinterpret_cast<LtConfigGetFn>(requiredSymbol(l, "cublasLtMatmulAlgoConfigGetAttribute"));
}

// A product in row-major terms, as GemmArgs: C[M×N] = α op(A) op(B) + β C.
struct Case {
  std::string name;
  int64_t M, N, K;
  bool transA, transB;
  float beta;  // 1: C read (project back, W in C); 0: C written only (projection)
};

// c's operands on the device, filled (A, B, and C0, the C each run starts from), with C and Cref
// for results. Row-major: A is M×K (K×M when transA), B is K×N (N×K when transB), C M×N.
struct Operands {
  int64_t lda, ldb, ldc, nA, nB, nC;
  float *A, *B, *C0, *C, *Cref;
  Operands(const Case& c, cudaStream_t st = nullptr)
      : lda(c.transA ? c.M : c.K), ldb(c.transB ? c.K : c.N), ldc(c.N), nA(c.M * c.K), nB(c.K * c.N), nC(c.M * c.N) {
    CK(cudaMalloc(&A, nA * 4));
    CK(cudaMalloc(&B, nB * 4));
    CK(cudaMalloc(&C0, nC * 4));
    CK(cudaMalloc(&C, nC * 4));
    CK(cudaMalloc(&Cref, nC * 4));
    micro::fillKernel<<<1024, 256, 0, st>>>(A, nA, 1, 1.0f);
    micro::fillKernel<<<1024, 256, 0, st>>>(B, nB, 2, 1.0f);
    micro::fillKernel<<<1024, 256, 0, st>>>(C0, nC, 3, 1.0f);
  }
  ~Operands() {
    for (float* p : {A, B, C0, C, Cref}) CK(cudaFree(p));
  }
  Operands(const Operands&) = delete;
  Operands& operator=(const Operands&) = delete;
};

// c in cuBLASLt's column-major form, as runGemm calls cublasSgemm: A' = B (op transB), B' = A
// (op transA), C' = C (N × M, ld N); TF32 compute, alpha and beta in device memory. Exits on failure.
struct Desc {
  void *desc, *la, *lb, *lc;
};
inline Desc makeDesc(const Base& L, const Case& c, const Operands& o) {
  Desc d;
  const int ta = c.transB ? 1 : 0, tb = c.transA ? 1 : 0, pm = 1;
  // Column-major shapes of the stored matrices: A' is (ta ? K×N : N×K) rows×cols with ld ldb.
  if (L.descCreate(&d.desc, kComputeTf32, kR32F) != 0 || L.descSet(d.desc, kDescTransA, &ta, 4) != 0 ||
      L.descSet(d.desc, kDescTransB, &tb, 4) != 0 || L.descSet(d.desc, kDescPointerMode, &pm, 4) != 0 ||
      L.layoutCreate(&d.la, kR32F, ta ? c.K : c.N, ta ? c.N : c.K, o.ldb) != 0 ||
      L.layoutCreate(&d.lb, kR32F, tb ? c.M : c.K, tb ? c.K : c.M, o.lda) != 0 ||
      L.layoutCreate(&d.lc, kR32F, c.N, c.M, o.ldc) != 0) {
    std::fprintf(stderr, "Lt descriptor failed\n");
    std::exit(1);
  }
  return d;
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
