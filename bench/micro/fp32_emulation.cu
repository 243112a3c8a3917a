// Microbenchmark: does cuBLAS's FP32 emulation (CUBLAS_FP32_EMULATED_BF16X9_MATH: each f32 operand
// as three bf16 parts, the products on the bf16 tensor cores) run on the H200, how fast, and how
// exact, on the strict-f32 products of GaLore's svd refresh (DESIGN §6 shapes, r = 128)? Those are
// the Gram matrix (Ssyrk, n = 4096, K = 4096 or 11008: 1.6 / 4.3 ms strict) and the Chebyshev
// filter's k x n by n x n products (k = 256: 4.3 ms a refresh in strict f32). Rows: strict f32
// (CUBLAS_DEFAULT_MATH), the emulation with the default and the eager strategy, and TF32 for scale;
// error = max |out - ref| / max |ref| against an f64 product of the same f32 inputs. Self-contained
// (cuBLAS by dlopen):
//
//   nvcc -O3 -gencode arch=compute_90a,code=sm_90a -cudart static -o /tmp/emu bench/micro/fp32_emulation.cu -ldl && /tmp/emu
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "harness.cuh"

using micro::CreateFn;
using micro::fillKernel;
using micro::SetIntFn;
using micro::SgemmFn;

namespace {

// C (M x N, row-major) = A (M x K) B (K x N) in f64, A and B row-major f32.
__global__ void refKernel(int64_t M, int64_t N, int64_t K, const float* A, const float* B, double* C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < M * N; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / N, c = i % N;
    double s = 0;
    for (int64_t p = 0; p < K; ++p) s += double(A[r * K + p]) * double(B[p * N + c]);
    C[i] = s;
  }
}
// max |x - y| over max |y|, x f32, y f64. Entries of x left NaN (the triangle Ssyrk does not
// write, poisoned) drop out: fmax ignores a NaN argument.
__global__ void diffKernel(const float* x, const double* y, int64_t n, double* out) {
  double d = 0, m = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    d = fmax(d, fabs(double(x[i]) - y[i]));
    m = fmax(m, fabs(y[i]));
  }
  atomicMax(reinterpret_cast<unsigned long long*>(out), __double_as_longlong(d));
  atomicMax(reinterpret_cast<unsigned long long*>(out) + 1, __double_as_longlong(m));
}

typedef int (*SsyrkFn)(void*, int, int, int, int, const float*, const float*, int, const float*, float*, int);

}  // namespace

int main() {
  void* lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_LOCAL);
  if (!lib) lib = dlopen("libcublas.so.12", RTLD_NOW | RTLD_LOCAL);
  if (!lib) { std::printf("no cuBLAS\n"); return 1; }
  auto create = reinterpret_cast<CreateFn>(dlsym(lib, "cublasCreate_v2"));
  auto setMath = reinterpret_cast<SetIntFn>(dlsym(lib, "cublasSetMathMode"));
  auto setStrategy = reinterpret_cast<SetIntFn>(dlsym(lib, "cublasSetEmulationStrategy"));
  auto sgemm = reinterpret_cast<SgemmFn>(dlsym(lib, "cublasSgemm_v2"));
  auto ssyrk = reinterpret_cast<SsyrkFn>(dlsym(lib, "cublasSsyrk_v2"));
  int version = 0;
  auto getVersion = reinterpret_cast<int (*)(void*, int*)>(dlsym(lib, "cublasGetVersion_v2"));
  void* h = nullptr;
  create(&h);
  if (getVersion) getVersion(h, &version);
  std::printf("{\"cublasVersion\": %d, \"setEmulationStrategy\": %s, \"rows\": [\n", version, setStrategy ? "true" : "false");
  const int64_t n = 4096, k = 256, tall = 11008;
  float *X, *F, *A, *C;
  double *ref, *dd;
  CK(cudaMalloc(&X, tall * n * 4)); CK(cudaMalloc(&F, k * n * 4)); CK(cudaMalloc(&A, n * n * 4)); CK(cudaMalloc(&C, n * n * 4));
  CK(cudaMalloc(&ref, n * n * 8)); CK(cudaMalloc(&dd, 16));
  fillKernel<<<1024, 256>>>(X, tall * n, 1, 1.0f);
  fillKernel<<<1024, 256>>>(F, k * n, 2, 1.0f);
  const float one = 1.0f, zero = 0.0f;
  auto err = [&](const float* out, int64_t count) {
    CK(cudaMemset(dd, 0, 16));
    diffKernel<<<1024, 256>>>(out, ref, count, dd);
    double hd[2]; CK(cudaMemcpy(hd, dd, 16, cudaMemcpyDeviceToHost));
    return hd[0] / hd[1];
  };
  // modes: name, math mode, strategy (-1: leave)
  struct Mode { const char* name; int math; int strategy; };
  const Mode modes[] = {{"strict f32", 0, -1}, {"bf16x9 emulation, default strategy", 4, 0},
                        {"bf16x9 emulation, eager strategy", 4, 2}, {"bf16x9 emulation, performant strategy", 4, 1},
                        {"tf32", 3, -1}};
  bool first = true;
  auto row = [&](const char* what, const Mode& m, int rc, double us, double e) {
    std::printf("%s  {\"product\": \"%s\", \"mode\": \"%s\", \"rc\": %d, \"us\": %.1f, \"relErr\": %.3e}", first ? "" : ",\n",
                what, m.name, rc, us, e);
    first = false;
    std::fflush(stdout);
  };
  // Gram A = X^T X of X (K x n row-major) by Ssyrk; the f64 reference for its first k rows (from
  // X^T, transposed on the host).
  for (int64_t K : {n, tall}) {
    float* Xt; CK(cudaMalloc(&Xt, K * n * 4));
    {
      std::vector<float> hx(size_t(K * n)), ht(size_t(K * n));
      CK(cudaMemcpy(hx.data(), X, K * n * 4, cudaMemcpyDeviceToHost));
      for (int64_t p = 0; p < K; ++p) for (int64_t i = 0; i < n; ++i) ht[size_t(i * K + p)] = hx[size_t(p * n + i)];
      CK(cudaMemcpy(Xt, ht.data(), K * n * 4, cudaMemcpyHostToDevice));
    }
    refKernel<<<4096, 256>>>(k, n, K, Xt, X, ref);
    CK(cudaDeviceSynchronize());
    char what[96];
    std::snprintf(what, sizeof what, "Ssyrk n=%lld K=%lld", (long long)n, (long long)K);
    for (const Mode& m : modes) {
      setMath(h, m.math);
      if (m.strategy >= 0 && setStrategy) setStrategy(h, m.strategy);
      CK(cudaMemset(C, 0xff, n * n * 4));
      // row-major X (K x n) = column-major Xc (n x K): X^T X = Xc Xc^T: uplo lower (0), trans N (0).
      int rc = ssyrk(h, 0, 0, int(n), int(K), &one, X, int(n), &zero, C, int(n));
      CK(cudaDeviceSynchronize());
      // The column-major lower triangle is the row-major upper one; the rest stays NaN.
      const double e = rc == 0 ? err(C, k * n) : -1.0;
      const double us = rc == 0 ? micro::timeUs([&](int) { ssyrk(h, 0, 0, int(n), int(K), &one, X, int(n), &zero, C, int(n)); }, 10) : 0.0;
      row(what, m, rc, us, e);
    }
    CK(cudaFree(Xt));
  }
  // The filter's product: Y (k x n) = F (k x n) A (n x n), A = the tall Gram from above (reused as input).
  {
    // A := a symmetric f32 matrix (the strict Gram of the tall X, mirrored), scaled.
    setMath(h, 0);
    sgemm(h, 0, 1, int(n), int(n), int(tall), &one, X, int(n), X, int(n), &zero, A, int(n));  // A = X^T X (full)
    refKernel<<<4096, 256>>>(k, n, n, F, A, ref);
    CK(cudaDeviceSynchronize());
    for (const Mode& m : modes) {
      setMath(h, m.math);
      if (m.strategy >= 0 && setStrategy) setStrategy(h, m.strategy);
      CK(cudaMemset(C, 0xff, k * n * 4));
      // row-major Y = F A: column-major Y^T = A^T F^T = A F^T (A symmetric).
      auto call = [&] { return sgemm(h, 0, 0, int(n), int(k), int(n), &one, A, int(n), F, int(n), &zero, C, int(n)); };
      int rc = call();
      CK(cudaDeviceSynchronize());
      const double e = rc == 0 ? err(C, k * n) : -1.0;
      const double us = rc == 0 ? micro::timeUs([&](int) { call(); }, 10) : 0.0;
      row("Sgemm 256x4096 by 4096x4096", m, rc, us, e);
    }
  }
  std::printf("\n]}\n");
  return 0;
}
