// GaLore on CUDA: the GEMM layer (cuBLAS loaded at run time, or the built-in kernel), the fused
// step (project, Adam on R, project back with the update applied to W), and the refresh.
//
// cuBLAS. Loaded with dlopen (SLIMOPT_CUBLAS, then libcublas.so.13, then .12) through the few
// prototypes below, declared here because the build has no cuBLAS headers. Values from the
// cuBLAS documentation: CUBLAS_OP_N 0, CUBLAS_OP_T 1; CUBLAS_POINTER_MODE_HOST 0, _DEVICE 1;
// CUBLAS_DEFAULT_MATH 0, CUBLAS_TF32_TENSOR_OP_MATH 3 (cublasMath_t); CUBLAS_STATUS_SUCCESS 0.
// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: B and A swap places.
//
// cuBLAS serves f32 C: Sgemm (TF32 math mode for GemmMode::Tf32), or GemmEx with compute type
// CUBLAS_COMPUTE_32F_FAST_16BF (75; f32 operands, CUDA_R_32F = 0, rounded to bf16 inside) for
// GemmMode::Bf16. A bf16/f16 C always takes the built-in path, whose epilogue writes it directly.
//
// Built-in GEMM (no cuBLAS, SLIMOPT_LINALG=builtin / setForceBuiltin, or a bf16/f16 C): Tf32 and
// Bf16 run the tensor-core kernel of gemm_tc.cu on sm_80+; Strict (and any mode on older GPUs)
// runs the tiled SIMT f32 kernel below: 64x64 tile of C per 256-thread block, 4x4 per thread, K
// slices of 16 through shared memory. Both epilogues write C <- beta C + alpha acc in C's dtype
// (f32, bf16, f16), alpha/beta read from device memory when given, and do nothing when the
// group's skip flag is set.
//
// The step. R = project(G) (GEMM into sR; a bf16 G is first converted into sBig; or R given, as the
// projection made before the group's non-finite check, see lib/optim/galore.ts), then one kernel
// runs Adam on R in place (R becomes N; or galoreAdamMany has run it for all the group's Rs given)
// and writes the epilogue's alpha, beta to device memory (they depend on the step count held on
// the device), then the project-back GEMM applies the update and the decay in its epilogue. With
// cuBLAS the skip flag cannot stop a GEMM, so the Adam kernel writes N = 0 and (alpha, beta) =
// (0, 1) instead: W is left as it was. A bf16 W takes
// the built-in GEMM with the update in its epilogue too; only where that kernel has no tensor cores
// (sm_75) and cuBLAS is loaded does it take the cuBLAS product into sBig (the one f32
// gradient-sized scratch) and a fused axpy kernel.
//
// The refresh lives in galore_refresh.cu (on the device: cuSOLVER or the built-in eigen-solver).
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>
#include "../csrc/cpu/cpu_backend.h"
#include "galore.cuh"
#include "gemm_tc.cuh"
#include "internal.cuh"
#include "launchers.h"
#include "quant_device.cuh"
#include "scan.cuh"

namespace slimopt {
namespace gpu {

namespace {

// ---- cuBLAS at run time ---------------------------------------------------------------------

typedef int (*CreateFn)(void**);
typedef int (*SetStreamFn)(void*, cudaStream_t);
typedef int (*SetMathModeFn)(void*, int);
typedef int (*SetPointerModeFn)(void*, int);
typedef int (*SgemmFn)(void*, int, int, int, int, int, const float*, const float*, int, const float*, int,
                       const float*, float*, int);
// cublasGemmEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype,
// ldc, computeType, algo): cudaDataType_t, cublasComputeType_t and cublasGemmAlgo_t are C enums.
typedef int (*GemmExFn)(void*, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int,
                        const void*, void*, int, int, int, int);
// cublasGemmBatchedEx(handle, transa, transb, m, n, k, alpha, Aarray, Atype, lda, Barray, Btype, ldb, beta,
// Carray, Ctype, ldc, batchCount, computeType, algo): arrays of device pointers in device memory.
typedef int (*GemmBatchedExFn)(void*, int, int, int, int, int, const void*, const void* const*, int, int,
                               const void* const*, int, int, const void*, void* const*, int, int, int, int, int);
// cublasSsyrk_v2(handle, uplo, trans, n, k, alpha, A, lda, beta, C, ldc): the refresh's Gram matrix.
typedef int (*SsyrkFn)(void*, int, int, int, int, const float*, const float*, int, const float*, float*, int);
// cublasComputeType_t: CUBLAS_COMPUTE_32F 68, CUBLAS_COMPUTE_32F_FAST_16BF 75, _FAST_TF32 77.
constexpr int kCudaR32F = 0, kCompute32F = 68, kComputeFast16BF = 75, kComputeFastTf32 = 77, kGemmDefault = -1;

struct Cublas {
  bool tried = false;
  void* lib = nullptr;
  std::string path;
  CreateFn create = nullptr;
  SetStreamFn setStream = nullptr;
  SetMathModeFn setMathMode = nullptr;
  SetPointerModeFn setPointerMode = nullptr;
  SgemmFn sgemm = nullptr;
  GemmExFn gemmEx = nullptr;  // optional: without it GemmMode::Bf16 takes the built-in kernel
  GemmBatchedExFn gemmBatchedEx = nullptr;  // optional: without it a batch is one call per product
  SsyrkFn ssyrk = nullptr;  // optional: without it the Gram matrix is a full GEMM
  std::vector<std::pair<cudaStream_t, void*>> handles[64];  // per device: one per stream used
  void** ptrArrays[64] = {};  // per device: the batched call's A, B, C pointer arrays (3 x kBatchMax)
};

std::mutex gBlasMutex;
Cublas gBlas;
int gForce = -1;  // -1: read SLIMOPT_LINALG once

bool forced() {
  if (gForce < 0) gForce = envIs("SLIMOPT_LINALG", "builtin") ? 1 : 0;
  return gForce == 1;
}

Cublas* cublas() {
  std::lock_guard<std::mutex> lock(gBlasMutex);
  if (!gBlas.tried) {
    gBlas.tried = true;
    std::vector<std::string> names;
    const char* env = std::getenv("SLIMOPT_CUBLAS");
    if (env != nullptr && *env != 0) names.push_back(env);
    names.push_back("libcublas.so.13");
    names.push_back("libcublas.so.12");
    for (const std::string& n : names) {
      void* h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h == nullptr) continue;
      gBlas.create = reinterpret_cast<CreateFn>(dlsym(h, "cublasCreate_v2"));
      gBlas.setStream = reinterpret_cast<SetStreamFn>(dlsym(h, "cublasSetStream_v2"));
      gBlas.setMathMode = reinterpret_cast<SetMathModeFn>(dlsym(h, "cublasSetMathMode"));
      gBlas.setPointerMode = reinterpret_cast<SetPointerModeFn>(dlsym(h, "cublasSetPointerMode_v2"));
      gBlas.sgemm = reinterpret_cast<SgemmFn>(dlsym(h, "cublasSgemm_v2"));
      gBlas.gemmEx = reinterpret_cast<GemmExFn>(dlsym(h, "cublasGemmEx"));
      gBlas.gemmBatchedEx = reinterpret_cast<GemmBatchedExFn>(dlsym(h, "cublasGemmBatchedEx"));
      gBlas.ssyrk = reinterpret_cast<SsyrkFn>(dlsym(h, "cublasSsyrk_v2"));
      if (gBlas.create && gBlas.setStream && gBlas.setMathMode && gBlas.setPointerMode && gBlas.sgemm) {
        gBlas.lib = h;
        gBlas.path = n;
        break;
      }
      dlclose(h);
    }
  }
  return gBlas.lib != nullptr && !forced() ? &gBlas : nullptr;
}

void* blasHandle(Cublas* b, int dev, cudaStream_t st) { return streamHandle(b, gBlasMutex, dev, st); }

Status blasFail(int code, const char* what) {
  Status s = invalidArg(std::string("cuBLAS status ") + std::to_string(code) + " in " + what);
  s.name = "CUBLAS_ERROR";
  return s;
}

// dev's handle, set for one call: TF32 math in Tf32 mode, else the default (strict f32; Bf16 says
// it by the compute type), alpha and beta read from device memory when devicePointers.
Status preparedHandle(Cublas* b, int dev, cudaStream_t st, GemmMode mode, bool devicePointers, void** out) {
  void* h = blasHandle(b, dev, st);
  if (h == nullptr) return blasFail(-1, "cublasCreate");
  int rc = b->setMathMode(h, mode == GemmMode::Tf32 ? 3 : 0);
  if (rc != 0) return blasFail(rc, "cublasSetMathMode");
  rc = b->setPointerMode(h, devicePointers ? 1 : 0);
  if (rc != 0) return blasFail(rc, "cublasSetPointerMode");
  *out = h;
  return Status();
}

// ---- built-in GEMM --------------------------------------------------------------------------

constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;

struct KGemm {
  GemmArgs g;
  const float* alphaBeta;  // device [alpha, beta] or null (then g.alpha/g.beta)
  const int32_t* flag;     // skip everything when *flag != 0 (null: never)
};

__global__ void __launch_bounds__(256) gemmKernel(const KGemm k) {
  if (k.flag != nullptr && *k.flag != 0) return;
  const GemmArgs& g = k.g;
  __shared__ float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 4];
  const int tid = threadIdx.x;
  const int tx = tid % (BN / TN), ty = tid / (BN / TN);  // 16 x 16 threads
  const int64_t i0 = int64_t(blockIdx.y) * BM, j0 = int64_t(blockIdx.x) * BN;
  const float* A = static_cast<const float*>(g.A);
  const float* B = static_cast<const float*>(g.B);
  float acc[TM][TN] = {};
  for (int64_t p0 = 0; p0 < g.K; p0 += BK) {
    // Each of 256 threads loads 4 of the 64x16 A slice and 4 of the 16x64 B slice.
    for (int e = tid; e < BM * BK; e += 256) {
      int ii, pp;
      if (g.transA) { ii = e % BM; pp = e / BM; } else { pp = e % BK; ii = e / BK; }  // coalesced either way
      const int64_t i = i0 + ii, p = p0 + pp;
      As[pp][ii] = (i < g.M && p < g.K) ? (g.transA ? A[p * g.lda + i] : A[i * g.lda + p]) : 0.0f;
    }
    for (int e = tid; e < BK * BN; e += 256) {
      int jj, pp;
      if (g.transB) { pp = e % BK; jj = e / BK; } else { jj = e % BN; pp = e / BN; }
      const int64_t j = j0 + jj, p = p0 + pp;
      Bs[pp][jj] = (j < g.N && p < g.K) ? (g.transB ? B[j * g.ldb + p] : B[p * g.ldb + j]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int pp = 0; pp < BK; ++pp) {
      float a[TM], b[TN];
#pragma unroll
      for (int u = 0; u < TM; ++u) a[u] = As[pp][ty * TM + u];
#pragma unroll
      for (int u = 0; u < TN; ++u) b[u] = Bs[pp][tx * TN + u];
#pragma unroll
      for (int u = 0; u < TM; ++u)
#pragma unroll
        for (int w = 0; w < TN; ++w) acc[u][w] = fmaf(a[u], b[w], acc[u][w]);
    }
    __syncthreads();
  }
  const float alpha = k.alphaBeta ? k.alphaBeta[0] : g.alpha;
  const float beta = k.alphaBeta ? k.alphaBeta[1] : g.beta;
#pragma unroll
  for (int u = 0; u < TM; ++u) {
    const int64_t i = i0 + ty * TM + u;
    if (i >= g.M) continue;
#pragma unroll
    for (int w = 0; w < TN; ++w) {
      const int64_t j = j0 + tx * TN + w;
      if (j >= g.N) continue;
      const int64_t idx = i * g.ldc + j;
      float out = alpha * acc[u][w];
      if (beta != 0.0f) out += beta * loadAsFloat(g.C, g.cType, idx);
      storeFromFloat(g.C, g.cType, idx, out);
    }
  }
}

Status builtinGemm(int dev, cudaStream_t st, const GemmArgs& g, GemmMode mode, const float* alphaBeta,
                   const int32_t* flag) {
  if (g.M <= 0 || g.N <= 0) return Status();
  if (g.aType != DType::F32 || g.bType != DType::F32 ||
      (g.cType != DType::F32 && g.cType != DType::BF16 && g.cType != DType::F16))
    return invalidArg("gemm: the built-in kernel takes f32 A, B and f32/bf16/f16 C");
  if (streamGemmFits(dev, g, mode)) return streamGemm(dev, st, g, alphaBeta, flag);  // short K, C read back
  if (mode != GemmMode::Strict && tensorCoreGemmAvailable(dev)) return tensorCoreGemm(dev, st, g, mode, alphaBeta, flag);
  if ((g.N + BN - 1) / BN > INT32_MAX || (g.M + BM - 1) / BM > 65535) return invalidArg("gemm: too large");
  KGemm k{g, alphaBeta, flag};
  dim3 grid(unsigned((g.N + BN - 1) / BN), unsigned((g.M + BM - 1) / BM));
  gemmKernel<<<grid, 256, 0, st>>>(k);
  return lastError("gemm (built-in)");
}

}  // namespace

// The GEMM of every caller (declared in internal.cuh): cuBLAS when loaded (f32 C), else the
// built-in kernels (builtinGemm picks one).
Status runGemm(int dev, const GemmArgs& g, GemmMode mode, const float* alphaBeta, const int32_t* flag) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "gemm");
  if (!ok.ok()) return ok;
  // The Hopper streaming kernel serves short-K products with C read and B as given on both paths
  // (faster than cuBLAS's kernels for that layout). GaLore's project-back with cuBLAS passes B
  // transposed instead (runBacksTransposed), which cuBLAS runs faster still.
  if (streamGemmWgmma(dev) && streamGemmFits(dev, g, mode)) return streamGemm(dev, st, g, alphaBeta, flag);
  Cublas* b = cublas();
  if (b == nullptr || g.cType != DType::F32 || g.aType != DType::F32 || g.bType != DType::F32 ||
      (mode == GemmMode::Bf16 && b->gemmEx == nullptr))
    return builtinGemm(dev, st, g, mode, alphaBeta, flag);
  if (g.M <= 0 || g.N <= 0) return Status();
  if (g.M > INT32_MAX || g.N > INT32_MAX || g.K > INT32_MAX) return invalidArg("gemm: too large for cuBLAS");
  void* h;
  ok = preparedHandle(b, dev, st, mode, alphaBeta != nullptr, &h);
  if (!ok.ok()) return ok;
  int rc;
  const float* alpha = alphaBeta ? alphaBeta : &g.alpha;
  const float* beta = alphaBeta ? alphaBeta + 1 : &g.beta;
  // (cuBLAS with k = 0 scales C by beta: the same as ours.)
  if (mode == GemmMode::Bf16)
    rc = b->gemmEx(h, g.transB ? 1 : 0, g.transA ? 1 : 0, int(g.N), int(g.M), int(g.K), alpha, g.B, kCudaR32F, int(g.ldb),
                   g.A, kCudaR32F, int(g.lda), beta, g.C, kCudaR32F, int(g.ldc), kComputeFast16BF, kGemmDefault);
  else
    rc = b->sgemm(h, g.transB ? 1 : 0, g.transA ? 1 : 0, int(g.N), int(g.M), int(g.K), alpha,
                  static_cast<const float*>(g.B), int(g.ldb), static_cast<const float*>(g.A), int(g.lda), beta,
                  static_cast<float*>(g.C), int(g.ldc));
  if (alphaBeta) b->setPointerMode(h, 0);
  if (rc != 0) return blasFail(rc, mode == GemmMode::Bf16 ? "cublasGemmEx" : "cublasSgemm");
  return lastError("gemm (cuBLAS)");
}

namespace {

// Ssyrk leaves the lower triangle of a column-major n x n matrix, which is the upper one (column
// >= row) of the row-major M: copy it over the other, 32 x 32 tiles through shared memory so that
// both the reads and the writes are coalesced.
__global__ void mirrorUpperKernel(float* M, int64_t n) {
  const int64_t ta = blockIdx.y, tb = blockIdx.x;  // the destination tile: rows ta, columns tb < ta
  if (tb > ta) return;
  __shared__ float t[32][33];
  for (int y = threadIdx.y; y < 32; y += blockDim.y) {  // source rows tb*32 + y, columns ta*32 + x
    const int64_t r = tb * 32 + y, c = ta * 32 + threadIdx.x;
    if (r < n && c < n) t[y][threadIdx.x] = M[r * n + c];
  }
  __syncthreads();
  for (int y = threadIdx.y; y < 32; y += blockDim.y) {
    const int64_t r = ta * 32 + y, c = tb * 32 + threadIdx.x;
    if (r < n && c < r) M[r * n + c] = t[threadIdx.x][y];
  }
}

}  // namespace

Status gramStrict(int dev, const float* X, int64_t rows, int64_t cols, bool colsSide, float* A) {
  const int64_t n = colsSide ? cols : rows, inner = colsSide ? rows : cols;
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "gram");
  if (!ok.ok()) return ok;
  Cublas* b = cublas();
  // SLIMOPT_GRAM=gemm: the full GEMM even where Ssyrk loads (to compare the two in one run).
  static const bool gemmForced = envIs("SLIMOPT_GRAM", "gemm");
  if (b == nullptr || b->ssyrk == nullptr || gemmForced || n > INT32_MAX || inner > INT32_MAX || cols > INT32_MAX) {
    GemmArgs g;
    g.M = n; g.N = n; g.K = inner;
    g.A = X; g.lda = cols; g.transA = colsSide;
    g.B = X; g.ldb = cols; g.transB = !colsSide;
    g.C = A; g.ldc = n;
    return runGemm(dev, g, GemmMode::Strict, nullptr, nullptr);
  }
  void* h;
  ok = preparedHandle(b, dev, st, GemmMode::Strict, false, &h);
  if (!ok.ok()) return ok;
  // Row-major X (rows x cols) is the column-major Xc (cols x rows): X^T X = Xc Xc^T (no transpose),
  // X X^T = Xc^T Xc (transpose). Lower triangle (0), operation N (0) / T (1).
  const float one = 1.0f, zero = 0.0f;
  const int rc = b->ssyrk(h, 0, colsSide ? 0 : 1, int(n), int(inner), &one, X, int(cols), &zero, A, int(n));
  if (rc != 0) return blasFail(rc, "cublasSsyrk");
  const unsigned tiles = unsigned((n + 31) / 32);
  mirrorUpperKernel<<<dim3(tiles, tiles), dim3(32, 8), 0, st>>>(A, n);
  return lastError("gram (mirror)");
}

namespace {

// ---- batched products (cuBLAS) --------------------------------------------------------------
//
// Products of one shape (a group's same-shaped tensors) go to cuBLAS as one cublasGemmBatchedEx
// call: small products (a 4096 x 4096 gradient projected to rank 128 is 32 output tiles) then fill
// the GPU together. On the H200 (bench/results/NVIDIA-H200-2026-11-25-2/lt_gemm_batched.txt) the
// projections ran 1.1-1.6x faster per matrix batched than back to back, while the project-back
// (C read and written) ran 1.2-1.3x slower: only projections are batched. The pointer arrays are
// written by a kernel from its parameters, in stream order, so the call never waits on the host.
constexpr int kBatchMax = 32;

struct PtrBatch {
  const void* a[kBatchMax];
  const void* b[kBatchMax];
  void* c[kBatchMax];
  int n;
};

__global__ void fillPtrArraysKernel(const PtrBatch p, void** out) {
  const int i = threadIdx.x;
  if (i >= p.n) return;
  out[i] = const_cast<void*>(p.a[i]);
  out[kBatchMax + i] = const_cast<void*>(p.b[i]);
  out[2 * kBatchMax + i] = p.c[i];
}

bool sameProduct(const GemmArgs& x, const GemmArgs& y) {
  return x.M == y.M && x.N == y.N && x.K == y.K && x.lda == y.lda && x.ldb == y.ldb && x.ldc == y.ldc &&
         x.transA == y.transA && x.transB == y.transB && x.aType == y.aType && x.bType == y.bType &&
         x.cType == y.cType && x.alpha == y.alpha && x.beta == y.beta;
}

// Every product of gs (same shape, f32, host alpha/beta), batched when cuBLAS is loaded and has
// cublasGemmBatchedEx, else one runGemm each.
Status runGemmBatched(int dev, const std::vector<GemmArgs>& gs, GemmMode mode) {
  if (gs.empty()) return Status();
  Cublas* b = cublas();
  const GemmArgs& g = gs[0];
  bool batch = b != nullptr && b->gemmBatchedEx != nullptr && gs.size() > 1 && g.aType == DType::F32 &&
               g.bType == DType::F32 && g.cType == DType::F32 && g.M > 0 && g.N > 0 && g.M <= INT32_MAX &&
               g.N <= INT32_MAX && g.K <= INT32_MAX;
  for (const GemmArgs& x : gs) batch = batch && sameProduct(x, g);
  if (!batch) {
    for (const GemmArgs& x : gs) {
      Status ok = runGemm(dev, x, mode, nullptr, nullptr);
      if (!ok.ok()) return ok;
    }
    return Status();
  }
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "gemm (batched)");
  if (!ok.ok()) return ok;
  void* h;
  ok = preparedHandle(b, dev, st, mode, false, &h);
  if (!ok.ok()) return ok;
  void** arrays;
  {
    std::lock_guard<std::mutex> lock(gBlasMutex);
    if (b->ptrArrays[dev] == nullptr) {
      ok = statusOf(cudaMalloc(&b->ptrArrays[dev], 3 * kBatchMax * sizeof(void*)), "gemm (batched): pointer arrays");
      if (!ok.ok()) {
        b->ptrArrays[dev] = nullptr;
        return ok;
      }
    }
    arrays = b->ptrArrays[dev];
  }
  const int compute = mode == GemmMode::Tf32 ? kComputeFastTf32 : mode == GemmMode::Bf16 ? kComputeFast16BF : kCompute32F;
  for (size_t at = 0; at < gs.size(); at += kBatchMax) {
    PtrBatch p{};
    p.n = int(std::min<size_t>(kBatchMax, gs.size() - at));
    // Column-major swap as runGemm: cuBLAS's A is our B, its B our A.
    for (int i = 0; i < p.n; ++i) {
      p.a[i] = gs[at + i].B;
      p.b[i] = gs[at + i].A;
      p.c[i] = gs[at + i].C;
    }
    fillPtrArraysKernel<<<1, kBatchMax, 0, st>>>(p, arrays);
    ok = lastError("gemm (batched): pointer arrays");
    if (!ok.ok()) return ok;
    const int rc = b->gemmBatchedEx(h, g.transB ? 1 : 0, g.transA ? 1 : 0, int(g.N), int(g.M), int(g.K), &g.alpha,
                          const_cast<const void* const*>(arrays), kCudaR32F, int(g.ldb),
                          const_cast<const void* const*>(arrays + kBatchMax), kCudaR32F, int(g.lda), &g.beta,
                          arrays + 2 * kBatchMax, kCudaR32F, int(g.ldc), p.n, compute, kGemmDefault);
    if (rc != 0) return blasFail(rc, "cublasGemmBatchedEx");
  }
  return lastError("gemm (cuBLAS, batched)");
}

// ---- elementwise kernels --------------------------------------------------------------------

// One launch over many arrays (a group's scan, its Adam on R): up to kLaunchBatch arrays, each cut
// into chunks of one block; block b works on chunk b - first[e] of the array e it falls in. Those
// were one launch per array: the 28 Rs of the §6 workload at rank 128 (2-6 MB each) took 4.4-5.1 µs
// a scan and 6.5-12.9 µs an Adam launch (bench/results/NVIDIA-H200-2026-11-25-18/ncu-galore-step.txt).
constexpr int kLaunchBatch = 32;
struct BatchBlocks {
  int64_t first[kLaunchBatch + 1];  // first block of each array; first[count] = the grid
  int32_t count;
  // The array this block falls in, and the first element of its chunk.
  __device__ int locate(int64_t chunk, int64_t* begin) const {
    int e = 0;
    while (e + 1 < count && int64_t(blockIdx.x) >= first[e + 1]) ++e;
    *begin = (int64_t(blockIdx.x) - first[e]) * chunk;
    return e;
  }
};

// Gathers entries into batches (put(batch, slot, entry) stores one and returns its element count)
// and calls launch(batch) for each, in order.
template <typename Batch, typename Entry, typename Put, typename Launch>
Status launchInBatches(const Entry* entries, int64_t count, int64_t chunk, Put put, Launch launch) {
  Batch b{};
  for (int64_t i = 0; i < count; ++i) {
    if (b.blocks.count == kLaunchBatch) {
      const Status ok = launch(b);
      if (!ok.ok()) return ok;
      b = Batch{};
    }
    const int slot = b.blocks.count;
    const int64_t n = put(b, slot, entries[i]);
    b.blocks.first[slot + 1] = b.blocks.first[slot] + (n + chunk - 1) / chunk;
    ++b.blocks.count;
  }
  return b.blocks.count > 0 ? launch(b) : Status();
}

// The NaN/Inf guard's read of G (or of every R), a group's arrays in one launch (BatchBlocks): each
// block scans kScanChunk elements with 16-byte loads, 8 in flight per thread (a grid-stride loop
// of 4-byte loads read G at 2.4 TB/s on the H200, 2026-11-24:
// bench/results/NVIDIA-H200-2026-11-24-steps-ncu.txt).
constexpr int64_t kScanChunk = 16384;
struct ScanBatch {
  const void* p[kLaunchBatch];
  int64_t n[kLaunchBatch];
  int32_t t[kLaunchBatch];
  BatchBlocks blocks;
};
__global__ void __launch_bounds__(256) scanKernel(const ScanBatch sb, int32_t* flag) {
  int64_t b;
  const int e = sb.blocks.locate(kScanChunk, &b);
  const bool bad = blockScanNonFinite<256, 8>(sb.p[e], DType(sb.t[e]), b, min(sb.n[e], b + kScanChunk));
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}

// Element i of Adam on R in place (R becomes N); skipped: N = 0, m and v untouched.
__device__ __forceinline__ void adamRElement(float* r, float* m, float* v, int64_t i, const GaloreHyper& h, bool skip) {
  if (skip) { r[i] = 0.0f; return; }
  float mi = m[i], vi = v[i];
  r[i] = galoreAdamElement(r[i], mi, vi, h.beta1, h.beta2, h.eps);
  m[i] = mi;
  v[i] = vi;
}

// Adam on R in place (R becomes N) over a group's Rs in one launch (BatchBlocks; the same
// hyper-parameters and counters, so the same scalars), kAdamChunk elements per block; block 0 writes
// the epilogue scalars. With the flag set: N = 0 and (alpha, beta) = (0, 1), m and v untouched.
constexpr int64_t kAdamChunk = 4096;
struct AdamBatch {
  float* r[kLaunchBatch];
  float* m[kLaunchBatch];
  float* v[kLaunchBatch];
  int64_t n[kLaunchBatch];
  BatchBlocks blocks;
};
__global__ void __launch_bounds__(256) adamManyKernel(const AdamBatch ab, GaloreHyper h, const AdamwCounters* counters,
                                                      const int32_t* flag, float* scalars) {
  const bool skip = *flag != 0;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (skip) { scalars[0] = 0.0f; scalars[1] = 1.0f; }
    else galoreEpilogue(h, counters->step + 1, &scalars[0], &scalars[1]);
  }
  int64_t b;
  const int e = ab.blocks.locate(kAdamChunk, &b);
  const int64_t end = min(ab.n[e], b + kAdamChunk);
  float* const r = ab.r[e];
  float* const m = ab.m[e];
  float* const v = ab.v[e];
  const bool aligned = ((reinterpret_cast<uintptr_t>(r) | reinterpret_cast<uintptr_t>(m) | reinterpret_cast<uintptr_t>(v)) & 15) == 0;
  if (skip || !aligned || end - b != kAdamChunk) {
    for (int64_t i = b + threadIdx.x; i < end; i += blockDim.x) adamRElement(r, m, v, i, h, skip);
    return;
  }
  // A whole chunk of 16-byte-aligned arrays: every load of the thread issued before any store (12
  // in flight, 192 bytes; the scalar loop's stores may alias its next loads, so it kept 3), the
  // same element arithmetic.
  constexpr int kVec = kAdamChunk / (4 * 256);
  float4 rv[kVec], mv[kVec], vv[kVec];
  float4* const r4 = reinterpret_cast<float4*>(r + b);
  float4* const m4 = reinterpret_cast<float4*>(m + b);
  float4* const v4 = reinterpret_cast<float4*>(v + b);
#pragma unroll
  for (int u = 0; u < kVec; ++u) {
    rv[u] = r4[threadIdx.x + 256 * u];
    mv[u] = m4[threadIdx.x + 256 * u];
    vv[u] = v4[threadIdx.x + 256 * u];
  }
#pragma unroll
  for (int u = 0; u < kVec; ++u) {
    rv[u].x = galoreAdamElement(rv[u].x, mv[u].x, vv[u].x, h.beta1, h.beta2, h.eps);
    rv[u].y = galoreAdamElement(rv[u].y, mv[u].y, vv[u].y, h.beta1, h.beta2, h.eps);
    rv[u].z = galoreAdamElement(rv[u].z, mv[u].z, vv[u].z, h.beta1, h.beta2, h.eps);
    rv[u].w = galoreAdamElement(rv[u].w, mv[u].w, vv[u].w, h.beta1, h.beta2, h.eps);
    r4[threadIdx.x + 256 * u] = rv[u];
    m4[threadIdx.x + 256 * u] = mv[u];
    v4[threadIdx.x + 256 * u] = vv[u];
  }
}

// Adam on R with 8-bit states: a warp per 256-block (8 elements per lane, strided by 32 so the
// codes are read and written contiguously across the warp): decode, Adam, N into R, the block's
// new absmax by warp reductions, re-encode. The maps are staged in shared memory per block; the
// grid is at most one wave so the staging is amortised. With the flag set: N = 0, states untouched.
__global__ void __launch_bounds__(256) adamRQ8Kernel(const GaloreTensor T, float* r, int64_t n, GaloreHyper h,
                                                     const AdamwCounters* counters, const int32_t* flag,
                                                     float* scalars) {
  const bool skip = *flag != 0;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (skip) { scalars[0] = 0.0f; scalars[1] = 1.0f; }
    else galoreEpilogue(h, counters->step + 1, &scalars[0], &scalars[1]);
  }
  if (skip) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) r[i] = 0.0f;
    return;
  }
  extern __shared__ __align__(16) uint8_t q8Smem[];
  const Q8View q = stageQ8(h.q8, q8Smem);
  const int lane = threadIdx.x & 31;
  const int64_t blocks = (n + kQ8Block - 1) / kQ8Block, warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t b = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5); b < blocks; b += warps) {
    float m[kQ8PerLane], v[kQ8PerLane], mx, vx;
    q8WarpBlock(b * kQ8Block, n, lane, m, v, mx, vx, [&](int, int64_t i, float& mi, float& vi) {
      r[i] = galoreQ8Element(T, q, i, r[i], h.beta1, h.beta2, h.eps, mi, vi);
    });
    const float ia = quantInverse(mx), iv = quantInverse(vx);
#pragma unroll
    for (int t = 0; t < kQ8PerLane; ++t) {
      const int64_t i = b * kQ8Block + t * 32 + lane;
      if (i >= n) continue;
      T.codeM[i] = q8EncodeM(m[t], ia, q);
      T.codeV[i] = q8EncodeV(v[t], iv, q);
    }
    if (lane == 0) {
      T.absmaxM[b] = mx;
      T.absmaxV[b] = vx;
    }
  }
}

// W <- beta W + alpha S (a bf16 or f16 W after a cuBLAS product into S).
__global__ void axpyKernel(void* w, DType wt, const float* s, int64_t n, const float* scalars, const int32_t* flag) {
  if (*flag != 0) return;
  const float alpha = scalars[0], beta = scalars[1];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    storeFromFloat(w, wt, i, beta * loadAsFloat(w, wt, i) + alpha * s[i]);
}

__global__ void finishKernel(AdamwCounters* c, const int32_t* flag) {
  if (*flag != 0) c->skipped += 1;
  else c->step += 1;
}

unsigned gridFor(int dev, int64_t n) {
  int64_t b = (n + 255) / 256;
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(b, int64_t(smCount(dev)) * 8)));
}

GemmArgs mk(int64_t M, int64_t N, int64_t K, const void* A, int64_t lda, bool ta, const void* B, int64_t ldb, bool tb,
            void* C, DType ct, int64_t ldc) {
  GemmArgs g;
  g.M = M; g.N = N; g.K = K;
  g.A = A; g.lda = lda; g.transA = ta;
  g.B = B; g.ldb = ldb; g.transB = tb;
  g.C = C; g.cType = ct; g.ldc = ldc;
  g.alpha = 1.0f; g.beta = 0.0f;
  return g;
}

// Up to kTransposeGroup transposes in one launch (blockIdx.z: the entry): Y = X^T for row-major X
// (rows x cols), 32 x 32 tiles through shared memory so that both the reads and the writes are
// coalesced. One launch for several Bs: each is a few MB, so alone a launch is mostly its latency.
constexpr int kTransposeGroup = 32;
struct TransposeGroup {
  const float* x[kTransposeGroup];
  float* y[kTransposeGroup];
  int64_t rows[kTransposeGroup], cols[kTransposeGroup];
};
__global__ void transposeGroupKernel(const TransposeGroup g) {
  __shared__ float t[32][33];
  const int e = blockIdx.z;
  const int64_t rows = g.rows[e], cols = g.cols[e];
  const int64_t r0 = int64_t(blockIdx.y) * 32, c0 = int64_t(blockIdx.x) * 32;
  if (r0 >= rows || c0 >= cols) return;  // the grid covers the group's largest entry
  const float* X = g.x[e];
  float* Y = g.y[e];
  for (int y = threadIdx.y; y < 32; y += blockDim.y) {
    const int64_t r = r0 + y, c = c0 + threadIdx.x;
    if (r < rows && c < cols) t[y][threadIdx.x] = X[r * cols + c];
  }
  __syncthreads();
  for (int y = threadIdx.y; y < 32; y += blockDim.y) {
    const int64_t c = c0 + y, r = r0 + threadIdx.x;
    if (c < cols && r < rows) Y[c * rows + r] = t[threadIdx.x][y];
  }
}

// Launches the first `count` transposes of tg: the grid covers the largest.
Status launchTransposes(cudaStream_t st, const TransposeGroup& tg, int64_t count, const char* what) {
  int64_t rows = 0, cols = 0;
  for (int64_t e = 0; e < count; ++e) {
    rows = std::max(rows, tg.rows[e]);
    cols = std::max(cols, tg.cols[e]);
  }
  const dim3 grid(unsigned((cols + 31) / 32), unsigned((rows + 31) / 32), unsigned(count)), block(32, 8);
  transposeGroupKernel<<<grid, block, 0, st>>>(tg);
  return lastError(what);
}

// The project-back of a one-sided f32 W (m x n) <- alpha A B + beta W at rank r <= 128 with cuBLAS
// (A m x r; B r x n: the projector on the right, N on the left) runs on B transposed into sT
// (n x r): cuBLAS's TF32 kernels on Hopper want both operands K-major (r contiguous), and with
// them it streams W faster than the wgmma kernel here does (ncu of a §6 step at r=128: 45.5 / 111
// / 114 us per 4096^2 / 11008x4096 / 4096x11008 project-back against 2604 us for all 28 grouped;
// the host-time bench's device step 3.58 against 3.79 ms). At r = 512 it gained nothing (6.93
// against 6.91 ms), so larger ranks keep B as given. SLIMOPT_GALORE_BACK=direct: B as given.
bool backTransposes(int64_t r) {
  static const bool direct = envIs("SLIMOPT_GALORE_BACK", "direct");
  return !direct && r <= kBackTransposeMaxRank && cublas() != nullptr;
}
// The products gs (one-sided project-backs, B r x n as given) in order, each on B transposed into
// sT (sTFloats floats): as many Bs as fit there are transposed by one launch, then their products
// run.
Status runBacksTransposed(int dev, cudaStream_t st, const GemmArgs* gs, int64_t count, GemmMode mode,
                          const float* alphaBeta, const int32_t* flag, float* sT, int64_t sTFloats) {
  for (int64_t i = 0; i < count;) {
    TransposeGroup tg{};
    int64_t used = 0, j = i;
    for (; j < count && j - i < kTransposeGroup; ++j) {
      const int64_t r = gs[j].K, n = gs[j].N;
      if (j > i && used + r * n > sTFloats) break;
      tg.x[j - i] = static_cast<const float*>(gs[j].B);
      tg.y[j - i] = sT + used;
      tg.rows[j - i] = r;
      tg.cols[j - i] = n;
      used += r * n;
    }
    Status ok = launchTransposes(st, tg, j - i, "galore project-back (B transposed)");
    for (int64_t k = i; ok.ok() && k < j; ++k) {
      GemmArgs t = gs[k];
      t.B = tg.y[k - i];
      t.ldb = t.K;
      t.transB = true;
      ok = runGemm(dev, t, mode, alphaBeta, flag);
    }
    if (!ok.ok()) return ok;
    i = j;
  }
  return Status();
}

}  // namespace

std::string blasPath() {
  Cublas* b = cublas();
  static const std::string builtin =
      "built-in GEMM (tensor cores, mma.sync TF32/bf16, on sm_80+; strict f32 on the SIMT kernel)";
  if (b) return "cuBLAS (" + b->path + "); bf16/f16 outputs on the " + builtin;
  return builtin + (forced() ? " (forced)" : " (cuBLAS not found)");
}
void setForceBuiltin(bool force) { forced(); gForce = force ? 1 : 0; }
bool forceBuiltin() { return forced(); }

Status gemm(int dev, const GemmArgs& a, GemmMode mode) { return runGemm(dev, a, mode, nullptr, nullptr); }

namespace {

// The bytes a row-major f32 operand of rows x cols at leading dimension ld spans: [first, last).
struct Span {
  uintptr_t first, last;
};
Span spanOf(const void* p, int64_t rows, int64_t cols, int64_t ld) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  return {a, a + uintptr_t(((rows - 1) * ld + cols) * 4)};
}
bool overlap(const Span& x, const Span& y) { return x.first < y.last && y.first < x.last; }

// Products in order. On Hopper, consecutive ones the streaming kernel serves go out together
// (streamGemmMany) unless one of them writes what another of the run reads or writes: a grouped
// launch runs its products at the same time.
Status runGemmsInOrder(int dev, const GemmArgs* gs, const GemmMode* modes, int64_t count, const float* alphaBeta,
                       const int32_t* flag) {
  if (!streamGemmWgmma(dev)) {
    for (int64_t i = 0; i < count; ++i) {
      const Status ok = runGemm(dev, gs[i], modes[i], alphaBeta, flag);
      if (!ok.ok()) return ok;
    }
    return Status();
  }
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "gemm");
  if (!ok.ok()) return ok;
  std::vector<GemmArgs> run;
  auto flush = [&]() {
    const Status s = streamGemmMany(dev, st, run.data(), int64_t(run.size()), alphaBeta, flag);
    run.clear();
    return s;
  };
  for (int64_t i = 0; i < count; ++i) {
    const GemmArgs& g = gs[i];
    if (!streamGemmFits(dev, g, modes[i])) {
      ok = flush();
      if (ok.ok()) ok = runGemm(dev, g, modes[i], alphaBeta, flag);
      if (!ok.ok()) return ok;
      continue;
    }
    if (g.M <= 0 || g.N <= 0) continue;
    const Span a = spanOf(g.A, g.M, g.K, g.lda), b = spanOf(g.B, g.K, g.N, g.ldb), c = spanOf(g.C, g.M, g.N, g.ldc);
    bool clash = false;
    for (const GemmArgs& h : run) {
      const Span ha = spanOf(h.A, h.M, h.K, h.lda), hb = spanOf(h.B, h.K, h.N, h.ldb), hc = spanOf(h.C, h.M, h.N, h.ldc);
      clash = clash || overlap(c, ha) || overlap(c, hb) || overlap(c, hc) || overlap(hc, a) || overlap(hc, b);
    }
    if (clash) {
      ok = flush();
      if (!ok.ok()) return ok;
    }
    run.push_back(g);
  }
  return flush();
}

}  // namespace

Status gemmMany(int dev, const GemmArgs* gs, const GemmMode* modes, int64_t count) {
  return runGemmsInOrder(dev, gs, modes, count, nullptr, nullptr);
}

Status galoreBackMany(int dev, const GaloreBackEntry* entries, int64_t count, GemmMode mode, const int32_t* flag,
                      const float* scalars, float* sT, int64_t sTFloats) {
  std::vector<GemmArgs> gs;
  bool transposed = sT != nullptr;
  for (int64_t i = 0; i < count; ++i) {
    const GaloreBackEntry& e = entries[i];
    const int64_t m = e.rows, n = e.cols, r = e.rank;
    if (e.side == GaloreSide::Right) gs.push_back(mk(m, n, r, e.n, r, false, e.proj, n, false, e.param, DType::F32, n));
    else if (e.side == GaloreSide::Left) gs.push_back(mk(m, n, r, e.proj, r, false, e.n, n, false, e.param, DType::F32, n));
    else return invalidArg("galoreBackMany: one-sided parameters only");
    transposed = transposed && backTransposes(r) && r * n <= sTFloats;
  }
  if (!transposed) {
    const std::vector<GemmMode> modes(gs.size(), mode);
    return runGemmsInOrder(dev, gs.data(), modes.data(), int64_t(gs.size()), scalars, flag);
  }
  // sT serves the Bs in turn: the products run in order on the device's stream.
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "galoreBackMany");
  if (!ok.ok()) return ok;
  return runBacksTransposed(dev, st, gs.data(), int64_t(gs.size()), mode, scalars, flag, sT, sTFloats);
}

Status scanNonFinite(int dev, const ScanEntry* entries, int64_t count, int32_t* flag) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "scanNonFinite");
  if (!ok.ok()) return ok;
  return launchInBatches<ScanBatch>(
      entries, count, kScanChunk,
      [](ScanBatch& b, int slot, const ScanEntry& e) {
        b.p[slot] = e.p;
        b.n[slot] = e.n;
        b.t[slot] = int32_t(e.t);
        return e.n;
      },
      [&](const ScanBatch& b) {
        const int64_t blocks = b.blocks.first[b.blocks.count];
        if (blocks == 0) return Status();
        scanKernel<<<unsigned(blocks), 256, 0, st>>>(b, flag);
        return lastError("scanNonFinite");
      });
}

Status galoreAdamMany(int dev, const GaloreAdamEntry* entries, int64_t count, const GaloreHyper& h,
                      const AdamwCounters* counters, const int32_t* flag, float* scalars) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "galoreAdamMany");
  if (!ok.ok()) return ok;
  return launchInBatches<AdamBatch>(
      entries, count, kAdamChunk,
      [](AdamBatch& b, int slot, const GaloreAdamEntry& e) {
        b.r[slot] = e.r;
        b.m[slot] = e.m;
        b.v[slot] = e.v;
        b.n[slot] = e.n;
        return e.n;
      },
      [&](const AdamBatch& b) {  // at least one block: each launch writes the scalars
        const int64_t blocks = std::max<int64_t>(1, b.blocks.first[b.blocks.count]);
        adamManyKernel<<<unsigned(blocks), 256, 0, st>>>(b, h, counters, flag, scalars);
        return lastError("galoreAdamMany");
      });
}

Status galoreFinish(int dev, AdamwCounters* counters, const int32_t* flag) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "galoreFinish");
  if (!ok.ok()) return ok;
  finishKernel<<<1, 1, 0, st>>>(counters, flag);
  return lastError("galoreFinish");
}

namespace {

// R = G P^T (Right: P is r x cols) or R = P^T G (Left: P is rows x r) for an f32 G.
GemmArgs oneSidedProjection(const GaloreTensor& T, const void* G, float* sR) {
  const int64_t m = T.rows, n = T.cols, r = T.rank;
  return T.side == GaloreSide::Right ? mk(m, r, n, G, n, false, T.projA, n, true, sR, DType::F32, r)
                                     : mk(r, n, m, T.projA, r, true, G, n, false, sR, DType::F32, n);
}

}  // namespace

Status galoreProject(int dev, const GaloreTensor& T, float* sR, float* sT, float* sBig, GemmMode mode) {
  const int64_t m = T.rows, n = T.cols, r = T.rank;
  const DType F = DType::F32;
  const void* G = T.grad;
  Status ok;
  if (T.gradDtype != DType::F32) {
    if (!sBig) return invalidArg("galoreProject: a non-f32 gradient needs the f32 scratch");
    ok = convert(dev, T.grad, T.gradDtype, sBig, F, m * n);
    if (!ok.ok()) return ok;
    G = sBig;
  }
  switch (T.side) {
    case GaloreSide::Right:
    case GaloreSide::Left: ok = runGemm(dev, oneSidedProjection(T, G, sR), mode, nullptr, nullptr); break;
    case GaloreSide::Full:
      ok = runGemm(dev, mk(r, n, m, T.projA, r, true, G, n, false, sT, F, n), mode, nullptr, nullptr);
      if (ok.ok()) ok = runGemm(dev, mk(r, r, n, sT, n, false, T.projB, n, true, sR, F, r), mode, nullptr, nullptr);
      break;
  }
  return ok;
}

namespace {

// A left-side projection R = P^T G reduces over G's rows, so cuBLAS gets both operands M/N-major
// (P is stored rows x r). With P transposed (r x rows, K-major) its TF32 kernels on the H200 ran a
// batch of four 4096 x 11008 projections at 69.9 / 134.3 / 253.6 us a matrix at r = 128 / 512 /
// 1024, against 79.2 / 214.9 / 398.3 with P as stored (bench/results/NVIDIA-H200-2026-11-25-27/).
// Measured in TF32 only, so only TF32 takes it. SLIMOPT_GALORE_LEFT=direct: P as stored.
bool leftTransposes(GemmMode mode) {
  static const bool direct = envIs("SLIMOPT_GALORE_LEFT", "direct");
  return !direct && mode == GemmMode::Tf32 && cublas() != nullptr;
}

// The left-side projections of `idx` (same shape, f32 G) as batched products on their Ps
// transposed into sP (which overlaps no output and holds at least one, rank x rows), as many per
// launch as sP holds.
Status projectLeftTransposed(int dev, const GaloreTensor* ts, float* const* outs, const std::vector<int64_t>& idx,
                             float* sP, int64_t sPFloats, GemmMode mode) {
  const GaloreTensor& T = ts[idx[0]];
  const int64_t m = T.rows, n = T.cols, r = T.rank, each = r * m;
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "galoreProjectMany");
  if (!ok.ok()) return ok;
  const int64_t per = std::min<int64_t>(kTransposeGroup, sPFloats / each);
  for (size_t at = 0; at < idx.size(); at += size_t(per)) {
    const size_t count = std::min(idx.size() - at, size_t(per));
    TransposeGroup tg{};
    std::vector<GemmArgs> batch;
    for (size_t k = 0; k < count; ++k) {
      const GaloreTensor& U = ts[idx[at + k]];
      tg.x[k] = U.projA;
      tg.y[k] = sP + int64_t(k) * each;
      tg.rows[k] = m;
      tg.cols[k] = r;
      batch.push_back(mk(r, n, m, tg.y[k], m, false, U.grad, n, false, outs[idx[at + k]], DType::F32, n));
    }
    ok = launchTransposes(st, tg, int64_t(count), "galore projection (P transposed)");
    if (ok.ok()) ok = runGemmBatched(dev, batch, mode);
    if (!ok.ok()) return ok;
  }
  return ok;
}

}  // namespace

Status galoreProjectMany(int dev, const GaloreTensor* ts, float* const* outs, int64_t n, float* sT, float* sBig,
                         GemmMode mode, float* sP, int64_t sPFloats) {
  // sP where it overlaps an output would be overwritten after, or written before, that product.
  for (int64_t i = 0; sP != nullptr && i < n; ++i) {
    const int64_t rn = galoreRNumel(ts[i]);
    if (overlap(spanOf(sP, 1, sPFloats, sPFloats), spanOf(outs[i], 1, rn, rn))) sP = nullptr;
  }
  std::vector<bool> done(size_t(n), false);
  for (int64_t i = 0; i < n; ++i) {
    if (done[i]) continue;
    const GaloreTensor& T = ts[i];
    if (T.gradDtype != DType::F32 || T.side == GaloreSide::Full) {
      Status ok = galoreProject(dev, T, outs[i], sT, sBig, mode);
      if (!ok.ok()) return ok;
      continue;
    }
    std::vector<int64_t> idx;
    for (int64_t j = i; j < n; ++j) {
      const GaloreTensor& U = ts[j];
      if (done[j] || U.gradDtype != DType::F32 || U.side != T.side || U.rows != T.rows || U.cols != T.cols ||
          U.rank != T.rank)
        continue;
      idx.push_back(j);
      done[j] = true;
    }
    Status ok;
    if (T.side == GaloreSide::Left && leftTransposes(mode) && sP != nullptr && T.rank * T.rows <= sPFloats) {
      ok = projectLeftTransposed(dev, ts, outs, idx, sP, sPFloats, mode);
    } else {
      std::vector<GemmArgs> batch;
      for (int64_t j : idx) batch.push_back(oneSidedProjection(ts[j], ts[j].grad, outs[j]));
      ok = runGemmBatched(dev, batch, mode);
    }
    if (!ok.ok()) return ok;
  }
  return Status();
}

Status galoreBackF32(int dev, const GaloreTensor& T, const float* N, float* out, float* sT, GemmMode mode) {
  const int64_t m = T.rows, n = T.cols, r = T.rank;
  const DType F = DType::F32;
  switch (T.side) {
    case GaloreSide::Right: return runGemm(dev, mk(m, n, r, N, r, false, T.projA, n, false, out, F, n), mode, nullptr, nullptr);
    case GaloreSide::Left: return runGemm(dev, mk(m, n, r, T.projA, r, false, N, n, false, out, F, n), mode, nullptr, nullptr);
    default: {
      Status ok = runGemm(dev, mk(r, n, r, N, r, false, T.projB, n, false, sT, F, n), mode, nullptr, nullptr);
      if (!ok.ok()) return ok;
      return runGemm(dev, mk(m, n, r, T.projA, r, false, sT, n, false, out, F, n), mode, nullptr, nullptr);
    }
  }
}

Status galoreStep(int dev, const GaloreTensor& T, const GaloreHyper& h, const AdamwCounters* counters,
                  const int32_t* flag, float* sR, float* sT, float* sBig, float* scalars) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "galoreStep");
  if (!ok.ok()) return ok;
  const int64_t m = T.rows, n = T.cols, r = T.rank;
  const DType F = DType::F32;
  const GemmMode mode = h.mode;
  const int64_t rn = galoreRNumel(T);
  // R given in sR itself (projected before the group's check): Adam runs on it in place.
  ok = T.projected == nullptr ? galoreProject(dev, T, sR, sT, sBig, mode)
       : T.projected == sR    ? Status()
                              : statusOf(cudaMemcpyAsync(sR, T.projected, size_t(rn) * 4, cudaMemcpyDeviceToDevice, st),
                                         "galoreStep (R given)");
  if (!ok.ok()) return ok;
  if (T.adamDone) {
    // galoreAdamMany ran Adam on sR (it must be the R given) and wrote the scalars.
    if (T.projected != sR || T.quantized) return invalidArg("galoreStep: Adam done only on the R given, f32 states");
  } else if (T.quantized) {
    const size_t smem = q8SmemBytes(h.q8);
    if (h.q8.blobA == nullptr) return invalidArg("galoreStep: 8-bit states without their maps");
    ok = statusOf(q8AllowSmem(reinterpret_cast<const void*>(adamRQ8Kernel), smem), "galore 8-bit (shared memory)");
    if (!ok.ok()) return ok;
    // A warp per 256-block, 8 per CTA; at most one wave (3 CTAs per SM fit the ~65 KB of maps).
    const int64_t ctas = std::max<int64_t>(1, std::min<int64_t>((rn + 8 * kQ8Block - 1) / (8 * kQ8Block), int64_t(smCount(dev)) * 3));
    adamRQ8Kernel<<<unsigned(ctas), 256, smem, st>>>(T, sR, rn, h, counters, flag, scalars);
    ok = lastError("galore Adam on R");
  } else {
    // The group's kernel on one entry: whole chunks load before they store (ncu on §6 at rank
    // 1024, one 11008 x 1024 R: ~3.6 TB/s, where a grid-stride loop ran at ~2.7).
    const GaloreAdamEntry one{sR, T.expAvg, T.expAvgSq, rn};
    ok = galoreAdamMany(dev, &one, 1, h, counters, flag, scalars);
  }
  if (!ok.ok()) return ok;
  // Project back into W (f32 W, or any W on the built-in path) or into sBig then axpy.
  const bool viaScratch = T.paramDtype != DType::F32 && cublas() != nullptr && !tensorCoreGemmAvailable(dev);
  void* C = viaScratch ? static_cast<void*>(sBig) : T.param;
  const DType ct = viaScratch ? F : T.paramDtype;
  if (viaScratch && !sBig) return invalidArg("galoreStep: a non-f32 parameter needs the f32 scratch");
  GemmArgs back;
  const float* ab = viaScratch ? nullptr : scalars;
  switch (T.side) {
    case GaloreSide::Right: back = mk(m, n, r, sR, r, false, T.projA, n, false, C, ct, n); break;
    case GaloreSide::Left: back = mk(m, n, r, T.projA, r, false, sR, n, false, C, ct, n); break;
    case GaloreSide::Full:
      ok = runGemm(dev, mk(r, n, r, sR, r, false, T.projB, n, false, sT, F, n), mode, nullptr, nullptr);
      if (!ok.ok()) return ok;
      back = mk(m, n, r, T.projA, r, false, sT, n, false, C, ct, n);
      break;
  }
  // A one-sided f32 W at rank <= 128 with cuBLAS: on B transposed into sT (which only Full uses
  // otherwise).
  if (T.side != GaloreSide::Full && !viaScratch && ct == F && sT != nullptr && backTransposes(r))
    return runBacksTransposed(dev, st, &back, 1, mode, ab, flag, sT, r * n);
  ok = runGemm(dev, back, mode, ab, flag);
  if (!ok.ok()) return ok;
  if (viaScratch) {
    axpyKernel<<<gridFor(dev, m * n), 256, 0, st>>>(T.param, T.paramDtype, sBig, m * n, scalars, flag);
    ok = lastError("galore update (axpy)");
  }
  return ok;
}

}  // namespace gpu
}  // namespace slimopt
