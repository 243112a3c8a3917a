// GaLore projector refresh on the device: the exact top-r singular vectors of a gradient X
// (rows x cols) with the sign rule of DESIGN §4, and a cheaper warm-started variant. Nothing of X
// goes to the host.
//
// Shape of the computation. The Gram matrix of the smaller side (n = min(rows, cols)): A = X^T X
// when cols <= rows, else X X^T, formed in strict f32 by the GEMM layer (cuBLAS when loaded, else
// the built-in kernel). Its top k = r + p eigenvectors approximate the singular vectors of that
// side, but only to eps ||X||^2 / (lambda_i - lambda_j) (f32 rounding of A, squared condition):
// 1e-6..1e-2 for the smaller vectors of an ordinary spectrum, far from the exact SVD DESIGN §4
// asks for. So a final two-sided Rayleigh-Ritz on X itself follows, with every product summed in
// f64 (gemm_f64.cu reads X as f32; no f64 copy of it) and its small eigen-problems in f64: with
// Xh = X (Gram side cols) or X^T, Y = Z Xh^T for the k vectors Z, Q = an orthonormal basis of Y's
// rows, B = Q Xh (k x n), the small SVD of B from C = B B^T = E^T D E; the Gram side's vectors are
// the rows of E B (normalised), the other side's those of E Q (so no separate X v product). Each
// vector is then that of an exact SVD of the f32 X to far below f32 rounding, as long as the k
// vectors capture it, which the oversampling p ensures: the same bits as the CPU's double solver
// nearly everywhere. (An f32 refinement is not enough: in the GPU suite's 12-step tests its
// ~1e-6 projector errors, amplified by Adam's normalisation of small entries of R, moved the
// update by up to 1.7e-4 where rounding alone moves it by 4e-6; see refine().) Where a Ritz value
// is under the gradient's own rounding (sigma_j < 1e-7 sigma_1), the Gram side keeps the solver's
// vector (E B is noise there). Without the refinement (k beyond the one-block Jacobi) the other
// side is X v (or X^T u) renormalised. The refinement's two k x k f64 eigen-problems use cuSOLVER
// Dsyevd when the Gram went to cuSOLVER, else an f64 one-block Jacobi. Passes: one after cuSOLVER
// on large matrices, two where that costs little (k n other <= 2^30) and after the built-in
// iteration (its span is only as exact as its stopping test).
// The sign rule is applied by the kernel that writes P, one block per vector: the dot product with
// the previous projector's vector of the same index decides; where it is 0 (first refresh, P
// zeros) the largest-magnitude entry (first on ties) is made positive.
//
// Eigen-solvers of A:
//  * The svd default: a Chebyshev-filtered subspace iteration on A with k = r + clamp(r, 32, 128)
//    rows (Refresher::filterSolve: TF32 products while the error is far above TF32's rounding,
//    strict f32 products after; round 0 only the random rows' Rayleigh quotients, Cholesky
//    orthonormalisation after each filtered round; the k x k problems go to cuSOLVER when it
//    loads, Dpotrf + Xtrtri orthonormalising and Dsyevd (XsyevBatched up to kXsyevMaxK) solving,
//    else to the f64 one-block Jacobi). With cuSOLVER loaded it serves blocks of up to kFilterMaxK
//    rows; wider ones, and SLIMOPT_GRAM_SOLVER=syevdx, take Ssyevdx below. If it does not reach
//    its target in kMaxRounds, the exact host solver does.
//  * cuSOLVER (dlopen SLIMOPT_CUSOLVER, libcusolver.so.12, then .11; prototypes declared below
//    because the build has no headers): cusolverDnSsyevdx with the index range [n-r+1, n], i.e.
//    exactly the r largest eigenpairs (ascending in A's first r columns). Enum values from the
//    cuSOLVER documentation: CUSOLVER_EIG_MODE_VECTOR 1; CUSOLVER_EIG_RANGE_I 1002;
//    CUBLAS_FILL_MODE_LOWER 0; CUSOLVER_STATUS_SUCCESS 0. A column-major n x n A is the same bits as
//    a row-major one (symmetric), and column j of the result is row j of our row-major buffer.
//  * Built-in iteration (the warm projector; the svd one beyond the filter's block limit): block
//    subspace iteration on A with k = r + p vectors
//    (p = clamp(r/4, 16, 64)), stored as rows (k x n). An iteration, from an orthonormal Z:
//    Y2 = Z A; Rayleigh-Ritz H = Z Y2^T = W^T Theta W (k x k); Q = W Z are the Ritz vectors in
//    descending order and Y = W Y2 = Q A; the residuals ||A q_i - theta_i q_i|| of the leading r
//    are reduced on the device and their maximum (one scalar) read back: stop when it is
//    <= 1e-6 theta_max, when it stalls at the f32 floor (<= 1e-4 theta_max and no longer halving),
//    or after 64 iterations; else Z = orthonormalize(Y) and again. Orthonormalisation: rows
//    normalised, then E = D^-1/2 U^T from the k x k Gram (U D U^T) and Z = E Y, twice (as
//    CholeskyQR2; the row scaling keeps the Gram well conditioned once the rows are nearly
//    orthogonal, and rows lost to rounding are refilled at random before the second pass). The
//    k x k eigen-problems run in one 1024-thread block: cyclic Jacobi in round-robin order (k/2
//    disjoint rotations per round, each 2x2 block of the matrix transformed by one thread), the
//    matrix in shared memory when it fits, else on a cooperative grid (jacobiKernel<T, true>, the same
//    bits; a 4096² refresh at r = 512 took 18.7 s with one block, 0.69 s with the grid). Exact to
//    f32 rounding for separated singular values; k is limited to 2048 (beyond that, and without
//    cuSOLVER, the exact host solver serves).
//  * Warm ("warm" projector): the same iteration started from the previous projector (mapped to
//    the Gram side through X where needed; zero or non-finite vectors replaced by random ones),
//    a fixed 2 iterations (two applications of A, each with its Rayleigh-Ritz), with A applied
//    implicitly as X^T (X Q) (no Gram matrix; those GEMMs use the group's precision, TF32 by
//    default). Each vector's error shrinks like (lambda_{k+1}/lambda_i)^2 from where the
//    previous projector left it (the basis is then re-sorted by Rayleigh-Ritz): near-exact when
//    the gradient's top subspace moved little since the last refresh, a subspace approximation
//    when it did. No host sync at all.
//
// A gradient with NaN/Inf, an all-zero gradient, the group's skip flag or a solver failure leave
// P as it was: the writer kernel checks the device status words, nothing is decided on the host.
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <string>
#include <vector>
#include "../csrc/cpu/cpu_backend.h"
#include "galore.cuh"
#include "gemm_f64.cuh"
#include "internal.cuh"
#include "launchers.h"

namespace slimopt {
namespace gpu {

namespace {

// ---- cuSOLVER at run time -------------------------------------------------------------------

typedef int (*SolverCreateFn)(void**);
typedef int (*SolverSetStreamFn)(void*, cudaStream_t);
typedef int (*SyevdxBufferSizeFn)(void*, int, int, int, int, const float*, int, float, float, int, int, int*,
                                  const float*, int*);
typedef int (*SyevdxFn)(void*, int, int, int, int, float*, int, float, float, int, int, int*, float*, float*, int,
                        int*);
// cusolverDnDsyevd_bufferSize(handle, jobz, uplo, n, A, lda, W, lwork) / cusolverDnDsyevd(handle, jobz,
// uplo, n, A, lda, W, work, lwork, devInfo): the refinement's small f64 problems (optional symbols).
typedef int (*DsyevdBufferSizeFn)(void*, int, int, int, const double*, int, const double*, int*);
typedef int (*DsyevdFn)(void*, int, int, int, double*, int, double*, double*, int, int*);
// cusolverDnDpotrf_bufferSize(handle, uplo, n, A, lda, lwork) / cusolverDnDpotrf(handle, uplo, n, A,
// lda, work, lwork, devInfo); cusolverDnXtrtri_bufferSize(handle, uplo, diag, n, dataType, A, lda,
// deviceBytes, hostBytes) / cusolverDnXtrtri(handle, uplo, diag, n, dataType, A, lda, device,
// deviceBytes, host, hostBytes, devInfo): the filter's Cholesky orthonormalisation (optional).
typedef int (*DpotrfBufferSizeFn)(void*, int, int, double*, int, int*);
typedef int (*DpotrfFn)(void*, int, int, double*, int, double*, int, int*);
typedef int (*XtrtriBufferSizeFn)(void*, int, int, int64_t, int, void*, int64_t, size_t*, size_t*);
typedef int (*XtrtriFn)(void*, int, int, int64_t, int, void*, int64_t, void*, size_t, void*, size_t, int*);
// cusolverDnCreateParams(params); cusolverDnXsyevBatched_bufferSize(handle, params, jobz, uplo, n,
// dataTypeA, A, lda, dataTypeW, W, computeType, deviceBytes, hostBytes, batchSize) /
// cusolverDnXsyevBatched(handle, params, jobz, uplo, n, dataTypeA, A, lda, dataTypeW, W, computeType,
// device, deviceBytes, host, hostBytes, info, batchSize) (CUDA 12.6+ libraries; optional). With one
// matrix it takes Dsyevd's device time at k <= 256 on the H200, but without Dsyevd's wait on the
// host for the stream (bench/micro/small_eig.cu, bench/results/NVIDIA-H200-2026-11-25-25/).
typedef int (*CreateParamsFn)(void**);
typedef int (*XsyevBatchedBufferSizeFn)(void*, void*, int, int, int64_t, int, const void*, int64_t, int, const void*,
                                        int, size_t*, size_t*, int64_t);
typedef int (*XsyevBatchedFn)(void*, void*, int, int, int64_t, int, void*, int64_t, int, void*, int, void*, size_t,
                              void*, size_t, int*, int64_t);

struct Cusolver {
  bool tried = false;
  void* lib = nullptr;
  std::string path;
  SolverCreateFn create = nullptr;
  SolverSetStreamFn setStream = nullptr;
  SyevdxBufferSizeFn bufferSize = nullptr;
  SyevdxFn syevdx = nullptr;
  DsyevdBufferSizeFn dBufferSize = nullptr;  // optional: without them the f64 Jacobi serves
  DsyevdFn dsyevd = nullptr;
  DpotrfBufferSizeFn dpotrfBufferSize = nullptr;  // optional: without them the eigen-problem serves
  DpotrfFn dpotrf = nullptr;
  XtrtriBufferSizeFn xtrtriBufferSize = nullptr;
  XtrtriFn xtrtri = nullptr;
  CreateParamsFn createParams = nullptr;  // optional: without them Dsyevd serves
  XsyevBatchedBufferSizeFn xsyevBatchedBufferSize = nullptr;
  XsyevBatchedFn xsyevBatched = nullptr;
  void* params = nullptr;  // cusolverDnParams_t for XsyevBatched (default settings), made once
  std::vector<std::pair<cudaStream_t, void*>> handles[64];  // per device: one per stream used
};

// cusolverEigMode_t, cusolverEigRange_t, cublasFillMode_t, cublasDiagType_t, cudaDataType_t values.
constexpr int kEigModeVector = 1, kEigRangeI = 1002, kFillLower = 0, kFillUpper = 1, kDiagNonUnit = 0, kCudaR64F = 1;

std::mutex gSolverMutex;
Cusolver gSolver;

Cusolver* loadCusolver() {
  std::lock_guard<std::mutex> lock(gSolverMutex);
  if (!gSolver.tried) {
    gSolver.tried = true;
    std::vector<std::string> names;
    const char* env = std::getenv("SLIMOPT_CUSOLVER");
    if (env != nullptr && *env != 0) names.push_back(env);
    names.push_back("libcusolver.so.12");
    names.push_back("libcusolver.so.11");
    for (const std::string& n : names) {
      void* h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h == nullptr) continue;
      gSolver.create = reinterpret_cast<SolverCreateFn>(dlsym(h, "cusolverDnCreate"));
      gSolver.setStream = reinterpret_cast<SolverSetStreamFn>(dlsym(h, "cusolverDnSetStream"));
      gSolver.bufferSize = reinterpret_cast<SyevdxBufferSizeFn>(dlsym(h, "cusolverDnSsyevdx_bufferSize"));
      gSolver.syevdx = reinterpret_cast<SyevdxFn>(dlsym(h, "cusolverDnSsyevdx"));
      gSolver.dBufferSize = reinterpret_cast<DsyevdBufferSizeFn>(dlsym(h, "cusolverDnDsyevd_bufferSize"));
      gSolver.dsyevd = reinterpret_cast<DsyevdFn>(dlsym(h, "cusolverDnDsyevd"));
      gSolver.dpotrfBufferSize = reinterpret_cast<DpotrfBufferSizeFn>(dlsym(h, "cusolverDnDpotrf_bufferSize"));
      gSolver.dpotrf = reinterpret_cast<DpotrfFn>(dlsym(h, "cusolverDnDpotrf"));
      gSolver.xtrtriBufferSize = reinterpret_cast<XtrtriBufferSizeFn>(dlsym(h, "cusolverDnXtrtri_bufferSize"));
      gSolver.xtrtri = reinterpret_cast<XtrtriFn>(dlsym(h, "cusolverDnXtrtri"));
      gSolver.createParams = reinterpret_cast<CreateParamsFn>(dlsym(h, "cusolverDnCreateParams"));
      gSolver.xsyevBatchedBufferSize =
          reinterpret_cast<XsyevBatchedBufferSizeFn>(dlsym(h, "cusolverDnXsyevBatched_bufferSize"));
      gSolver.xsyevBatched = reinterpret_cast<XsyevBatchedFn>(dlsym(h, "cusolverDnXsyevBatched"));
      if (gSolver.createParams == nullptr || gSolver.xsyevBatchedBufferSize == nullptr ||
          gSolver.xsyevBatched == nullptr || gSolver.createParams(&gSolver.params) != 0)
        gSolver.params = nullptr;
      if (gSolver.create && gSolver.setStream && gSolver.bufferSize && gSolver.syevdx) {
        gSolver.lib = h;
        gSolver.path = n;
        break;
      }
      dlclose(h);
    }
  }
  return gSolver.lib != nullptr ? &gSolver : nullptr;
}

Cusolver* cusolver() {
  Cusolver* s = loadCusolver();
  return s != nullptr && !forceBuiltin() ? s : nullptr;
}

void* solverHandle(Cusolver* s, int dev, cudaStream_t st) { return streamHandle(s, gSolverMutex, dev, st); }

Status solverFail(int code, const char* what) {
  Status s = invalidArg(std::string("cuSOLVER status ") + std::to_string(code) + " in " + what);
  s.name = "CUSOLVER_ERROR";
  return s;
}

// ---- small kernels --------------------------------------------------------------------------

constexpr int kJacobiThreads = 1024;
constexpr int64_t kMaxBlock = 2048;  // k limit of the one-block Jacobi (k/2 rotations per round)
constexpr int kMaxIters = 64, kWarmIters = 2;

// Status words at the start of the workspace (int32): 0 non-finite (or group flag), 1 non-zero,
// 2 solver info, 3 max residual (float bits), 4 max Rayleigh quotient (float bits), 5 info of the
// refinement's small cuSOLVER solves (folded into 2).
constexpr int kStatusWords = 8;

// The refinement's thresholds (see refine()): rows of the unit-row Gram matrix of Y whose
// eigenvalue is below kDropRatio of the largest are numerically dependent and dropped; Rayleigh-
// Ritz values (squared singular values) below kFloorRatio of the largest are under the f32 rounding
// of the gradient, where the Gram side keeps the solver's vector.
constexpr double kDropRatio = 1e-10, kFloorRatio = 1e-14;
// The filter's rounds and the final refinement orthonormalise by Cholesky where E1 S E1^T is
// within this of the identity, else by the eigen-decomposition (which drops dependent rows). By
// estimate, not measured: the eigen path's own error there is of the same order (f64 rounding
// 1e-16 times the condition number kDropRatio allows, 1e10).
constexpr double kCholResidual = 1e-6;

SLIMOPT_HD uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
__device__ float hashNormal(uint64_t seed, uint64_t i) {
  const uint64_t h = splitmix(seed ^ splitmix(i));
  const float u1 = (float(uint32_t(h)) + 0.5f) * 2.3283064e-10f;
  const float u2 = (float(uint32_t(h >> 32)) + 0.5f) * 2.3283064e-10f;
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

__global__ void checkKernel(const float* x, int64_t n, const int32_t* flag, int32_t* st) {
  bool bad = false, nz = false;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    bad |= !isFiniteFloat(v);
    nz |= v != 0.0f;
  }
  bad = __syncthreads_or(bad);
  nz = __syncthreads_or(nz);
  if (threadIdx.x == 0) {
    if (bad) atomicOr(&st[0], 1);
    if (nz) atomicOr(&st[1], 1);
    if (blockIdx.x == 0 && flag != nullptr && *flag != 0) atomicOr(&st[0], 1);
  }
}

// Rows [row0, rows) of Q (len columns) from the counter-based normal generator.
__global__ void randomRowsKernel(float* Q, int64_t row0, int64_t rows, int64_t len, uint64_t seed) {
  const int64_t n = (rows - row0) * len;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x)
    Q[row0 * len + e] = hashNormal(seed, uint64_t(row0 * len + e));
}

// Qt[j][i] = P[i][j] (P is len x r, a left projector) for j < r.
__global__ void transposeKernel(const float* P, int64_t len, int64_t r, float* Qt) {
  const int64_t n = len * r;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e / len, i = e % len;
    Qt[e] = P[i * r + j];
  }
}

template <int NT>
__device__ double blockSum(double v, double* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  double t = 0.0;
  for (int w = 0; w < NT / 32; ++w) t += sh[w];
  return t;
}

// Rows of Q (one block each) whose norm is zero or not finite get random entries: the warm
// start's previous projector may be zeros, and an orthonormalisation pass may drop a row.
__global__ void fixRowsKernel(float* Q, int64_t len, uint64_t seed) {
  __shared__ double sh[8];
  float* q = Q + blockIdx.x * len;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < len; i += 256) s += double(q[i]) * q[i];
  s = blockSum<256>(s, sh);
  if (s > 0.0 && s < 1e300) return;
  for (int64_t i = threadIdx.x; i < len; i += 256) q[i] = hashNormal(seed, uint64_t(blockIdx.x * len + i));
}

// Each row of V (len entries) divided by its norm (left as is when the norm is 0).
__global__ void normalizeRowsKernel(float* V, int64_t len) {
  __shared__ double sh[8];
  float* v = V + blockIdx.x * len;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < len; i += 256) s += double(v[i]) * v[i];
  s = blockSum<256>(s, sh);
  if (!(s > 0.0)) return;
  const float inv = float(1.0 / sqrt(s));
  for (int64_t i = threadIdx.x; i < len; i += 256) v[i] *= inv;
}

// d[i] = sum_j Y[i, j] Z[i, j] in f64, one block per row (len entries): with Y = Z A, the Rayleigh
// quotient of each orthonormal row of Z.
__global__ void rowDotKernel(const float* Y, const float* Z, int64_t len, double* d) {
  __shared__ double sh[8];
  const float* y = Y + blockIdx.x * len;
  const float* z = Z + blockIdx.x * len;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < len; i += 256) s += double(y[i]) * z[i];
  s = blockSum<256>(s, sh);
  if (threadIdx.x == 0) d[blockIdx.x] = s;
}

// sq[i] = sum_j A[i, j]^2 in f64 and dg[i] = A[i, i], one block per row of the n x n A: the host
// sums them in order (the same bits every run) for ||A||_F^2 / trace(A), a lower bound of lambda_1
// (sum lambda^2 <= lambda_1 sum lambda for A >= 0) within 2x of it on a flat spectrum.
__global__ void gramRowStatsKernel(const float* A, int64_t n, double* sq, double* dg) {
  __shared__ double sh[8];
  const float* a = A + blockIdx.x * n;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += 256) s += double(a[i]) * a[i];
  s = blockSum<256>(s, sh);
  if (threadIdx.x == 0) {
    sq[blockIdx.x] = s;
    dg[blockIdx.x] = a[blockIdx.x];
  }
}

// cuSOLVER's k x k result (eigenvectors as rows, eigenvalues w ascending) in the Jacobi kernel's
// output format: E rows by descending eigenvalue (times 1/sqrt(d) if scale, 0 where d is at the
// floor), d descending. One block per row.
template <typename T>
__global__ void fromAscendingKernel(const T* V, const T* w, int64_t k, bool scale, T* E, T* d) {
  const int64_t j = blockIdx.x, src = k - 1 - j;
  const T dj = w[src], dmax = w[k - 1];
  T f = 1;
  if (scale) f = (dj > T(1e-12) * dmax && dj > 0) ? T(1) / sqrt(dj) : T(0);
  if (threadIdx.x == 0) d[j] = dj;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) E[j * k + i] = V[src * k + i] * f;
}

// The solver's status word (2) keeps a failure of any small solve (word 5), so that the writer
// leaves P as it was.
__global__ void keepInfoKernel(int32_t* st) { if (st[5] != 0) st[2] = st[5]; }

// Row j of Out takes the solver's vector j (row zReversed ? k-1-j : j of Z) where the Rayleigh-Ritz
// value d[j] (a squared singular value, descending) is at the floor (<= 1e-14 d[0], singular value
// below 1e-7 of the largest: under the f32 rounding of the gradient itself): there E B is noise,
// not orthogonal to the other rows, while the solver's vectors of a (near) null space are
// orthonormal (and as arbitrary as any exact solver's).
__global__ void floorRowsKernel(float* Out, int64_t len, const float* Z, int64_t ldz, bool zReversed, int64_t k,
                                const double* d) {
  const int64_t j = blockIdx.x;
  if (d[j] > kFloorRatio * d[0]) return;
  const float* z = Z + (zReversed ? k - 1 - j : j) * ldz;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) Out[j * len + i] = z[i];
}

// S (k x k) <- diag(s) S diag(s) with s_i = 1/sqrt(S_ii) (0 where S_ii <= 0), s kept: the Gram
// matrix of rows scaled to unit length (well conditioned when the rows are nearly orthogonal).
// Two kernels, s first, so that no block reads a diagonal another has already scaled; then one
// block per row (one block for all of S took 0.2 ms at k = 640 on the H200).
__global__ void rowScalesKernel(const double* S, int64_t k, double* s) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= k) return;
  const double v = S[i * k + i];
  s[i] = v > 0.0 ? 1.0 / sqrt(v) : 0.0;
}
__global__ void unitDiagonalKernel(double* S, int64_t k, const double* s) {
  const int64_t i = blockIdx.x;
  const double si = s[i];
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) S[i * k + j] *= si * s[j];
}

// E (rows x cols) <- diag(f) E diag(c): f_i = 1/sqrt(d_i), 0 where d_i <= floor * d_0 (d descending);
// c = colScale, or ones when null.
__global__ void scaleRowsColsKernel(double* E, int64_t rows, int64_t cols, const double* d, double floor,
                                    const double* colScale) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * cols; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / cols, j = e % cols;
    const double di = d[i];
    const double f = (di > floor * d[0] && di > 0.0) ? 1.0 / sqrt(di) : 0.0;
    E[e] *= colScale != nullptr ? f * colScale[j] : f;
  }
}

// T (k x k) = the lower triangle of L (row-major; what Dpotrf + Xtrtri with the upper fill mode leave
// there: the inverse of the row-major Cholesky factor), zeros above; E = T diag(c).
__global__ void lowerInverseKernel(const double* L, int64_t k, const double* c, double* T, double* E) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < k * k; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / k, j = e % k;
    const double v = j <= i ? L[e] : 0.0;
    T[e] = v;
    E[e] = v * c[j];
  }
}

// *out = max |R_ij - delta_ij| over the k x k R, or +inf when either factorisation reported a
// failure (status words 6, 7). One block of 256 per row, *out zeroed before: the maxima meet by
// atomicMax on the bits (a non-negative double orders like its bits; NaN's bits are above
// +inf's, so a NaN wins).
__global__ void identityResidualKernel(const double* R, int64_t k, const int32_t* st, double* out) {
  __shared__ double red[256];
  const int64_t i = blockIdx.x;
  double m = 0.0;
  for (int64_t j = threadIdx.x; j < k; j += 256) {
    const double v = fabs(R[i * k + j] - (i == j ? 1.0 : 0.0));
    m = v > m || v != v ? v : m;
  }
  red[threadIdx.x] = m;
  __syncthreads();
  for (int w = 128; w > 0; w /= 2) {
    if (threadIdx.x < w) {
      const double o = red[threadIdx.x + w];
      if (o > red[threadIdx.x] || o != o) red[threadIdx.x] = o;
    }
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  const double v = i == 0 && (st[6] != 0 || st[7] != 0) ? INFINITY : red[0];
  atomicMax(reinterpret_cast<unsigned long long*>(out), static_cast<unsigned long long>(__double_as_longlong(fabs(v))));
}

// The Chebyshev filter's schedule (see Refresher::filterSolve): the first filtered round's degree,
// the later rounds' degree, the most rounds before the exact host solver takes over, and the
// predicted reduction of the r-th vector's error that ends the iteration.
constexpr int kFirstDegree = 8, kRoundDegree = 12, kMaxRounds = 16;
constexpr double kFilterTarget = 1e-6;
// A round's degree is also capped so that it grows the top vector at most kMaxGrowth times more
// than the r-th: the block is stored in f32, and a row that the top direction swamps loses the
// r-th's digits (a gradient's spectrum falling steeply, e.g. geometrically, would else collapse it).
constexpr double kMaxGrowth = 1e3;
// The r-th vector's error that a round of TF32 products leaves, as a multiple of lambda_1 /
// lambda_r: TF32 rounds each term to 2^-11 (built-in kernel: truncates, 2^-10), an error spread
// over all n directions, about 2^-11 ||A||_F / sqrt(n) <= 2^-11 lambda_1 per row; counted as 1e-3
// for margin. Where that floor is not below kTf32Useful (a steep spectrum) the filter multiplies in
// strict f32 from the start.
constexpr double kTf32Floor = 1e-3, kTf32Useful = 1e-2;
// With cuSOLVER loaded, blocks wider than this go to Ssyevdx. On the H200, for the 28 matrices of
// DESIGN §6: at r = 128 (k = 256) the filter took 1.31 s against Ssyevdx's 2.67 s (0c7e45e), 0.90 s
// since its Rayleigh-Ritz steps became cheaper (bfade3c); at r = 512 (k = 640) it took 3.07 s
// against Ssyevdx's 3.01 s even so (6b508f2, SLIMOPT_GRAM_SOLVER=filter); since the rounds after
// the first orthonormalise by Cholesky only (c9c0408) it takes 56 / 71 ms per 4096 x 4096 /
// 11008 x 4096 matrix there against Ssyevdx's 106 / 115 (bench/results/NVIDIA-H200-2026-11-25-9).
// At r = 1024 (k = 1152) the two were even (114-140 against 122-135 ms per matrix, -12/).
constexpr int64_t kFilterMaxK = 640;

// One Chebyshev step on rows (one block each, len entries): y = a Ynew + c Ycur, then both rows are
// divided by ||y|| (a row pair scaled alike keeps the three-term recurrence linear in it), so that
// the filter's growth never overflows f32. Rows whose y is zero or not finite are left alone.
__global__ void chebStepKernel(float* Ynew, float* Ycur, int64_t len, float a, float c) {
  __shared__ double sh[8];
  float* yn = Ynew + blockIdx.x * len;
  float* yc = Ycur + blockIdx.x * len;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < len; i += 256) {
    const float y = a * yn[i] + c * yc[i];
    yn[i] = y;
    s += double(y) * y;
  }
  s = blockSum<256>(s, sh);
  if (!(s > 0.0 && s < 1e300)) return;
  const float inv = float(1.0 / sqrt(s));
  for (int64_t i = threadIdx.x; i < len; i += 256) { yn[i] *= inv; yc[i] *= inv; }
}

__device__ void atomicMaxNonNeg(int32_t* word, float v) {
  // Non-negative floats order as their bit patterns; NaN (0x7fc00000) sorts above +inf.
  atomicMax(word, int32_t(floatBits(v)));
}

// For row j < r of Qt (unit vectors) and Yt = Qt A: theta = q.y, res = ||y - theta q||.
__global__ void residualKernel(const float* Qt, const float* Yt, int64_t len, int32_t* st) {
  __shared__ double sh[8];
  const float* q = Qt + blockIdx.x * len;
  const float* y = Yt + blockIdx.x * len;
  double t = 0.0;
  for (int64_t i = threadIdx.x; i < len; i += 256) t += double(q[i]) * y[i];
  t = blockSum<256>(t, sh);
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < len; i += 256) { const double d = double(y[i]) - t * q[i]; s += d * d; }
  s = blockSum<256>(s, sh);
  if (threadIdx.x == 0) {
    atomicMaxNonNeg(&st[3], float(sqrt(s)));
    atomicMaxNonNeg(&st[4], float(fabs(t)));
  }
}

// Writes vector j of V (row (reversed ? r-1-j : j), ld apart) into P with the sign rule: P is
// left (len x r, P[i*r+j]) or right (r x len, P[j*len+i]). Does nothing when the status says the
// gradient is unusable or the solver failed.
__global__ void writeKernel(const float* V, int64_t ld, bool reversed, int64_t len, int64_t r, bool left, float* P,
                            bool hasPrev, const int32_t* st, const int32_t* info) {
  if (st[0] != 0 || st[1] == 0 || (info != nullptr && *info != 0)) return;
  __shared__ double sh[8];
  __shared__ float bestV[256];
  __shared__ int64_t bestI[256];
  const int64_t j = blockIdx.x;
  const float* v = V + (reversed ? r - 1 - j : j) * ld;
  auto at = [&](int64_t i) -> float& { return left ? P[i * r + j] : P[j * len + i]; };
  double dot = 0.0;
  float bv = -1.0f;
  int64_t bi = 0;
  for (int64_t i = threadIdx.x; i < len; i += 256) {
    const float x = v[i];
    if (hasPrev) dot += double(at(i)) * x;
    if (fabsf(x) > bv) { bv = fabsf(x); bi = i; }  // ascending i per thread: first index on ties
  }
  dot = blockSum<256>(dot, sh);
  bestV[threadIdx.x] = bv;
  bestI[threadIdx.x] = bi;
  __syncthreads();
  for (int o = 128; o > 0; o >>= 1) {
    if (threadIdx.x < o) {
      const float ov = bestV[threadIdx.x + o];
      const int64_t oi = bestI[threadIdx.x + o];
      if (ov > bestV[threadIdx.x] || (ov == bestV[threadIdx.x] && oi < bestI[threadIdx.x])) {
        bestV[threadIdx.x] = ov;
        bestI[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  const bool flip = dot != 0.0 ? dot < 0.0 : v[bestI[0]] < 0.0f;
  for (int64_t i = threadIdx.x; i < len; i += 256) at(i) = flip ? -v[i] : v[i];
}

// ---- the one-block Jacobi eigen-solver of a k x k symmetric matrix ---------------------------

template <typename T>
struct JacobiArgs {
  T* S;            // k x k (destroyed)
  T* Ew;           // k x k work: its rows become the eigenvectors
  T* E;            // k x k out: eigenvectors as rows by descending eigenvalue (times d^-1/2 if scale)
  T* d;            // k out: eigenvalues, descending
  int k;
  int symmetrize;  // S <- (S + S^T) / 2 first (S = Q^T A Q formed by a GEMM is symmetric only to rounding)
  int scale;       // E rows times 1/sqrt(d) (0 where d <= 1e-12 d_max): E Z is then orthonormal
  int shared;      // S lives in dynamic shared memory during the sweeps
  int maxSweeps;
};

// Circle-method seat of player s in round t of N players (N even): player 0 stays, the others turn.
__device__ __forceinline__ int seat(int s, int t, int N) { return s == 0 ? 0 : 1 + (s - 1 + t) % (N - 1); }

// Off-diagonal entries below this fraction of sqrt(|a_pp a_qq|) are rounding of T: not rotated.
template <typename T> struct JacobiTol;
template <> struct JacobiTol<float> { static constexpr double v = 6.0e-8; };
template <> struct JacobiTol<double> { static constexpr double v = 2.3e-16; };

// One cyclic Jacobi for both launch forms. OnGrid = false: one block, S in dynamic shared memory
// when a.shared. OnGrid = true: a cooperative grid, for k whose matrix does not fit in one block's
// shared memory (there one block's 1024 threads have ~300 global-memory items each in every round at
// k = 640, 639 rounds a sweep; the header has the times). Every
// block computes a round's rotations itself (k/2 of them, from the same S), a barrier, the threads
// (of the block or the grid) share the 2x2 and eigenvector updates, and a barrier again. Each
// element is computed by the same expression in both forms, so their results are the same bits;
// the sweeps end where they end (every block sees the same rotations).
template <typename T, bool OnGrid>
__global__ void __launch_bounds__(kJacobiThreads) jacobiKernel(const JacobiArgs<T> a) {
  extern __shared__ __align__(8) unsigned char dynBytes[];
  __shared__ T cs[kMaxBlock / 2], sn[kMaxBlock / 2];
  __shared__ int pp[kMaxBlock / 2], qq[kMaxBlock / 2];
  __shared__ int rotated;
  __shared__ T diagMax;
  const int k = a.k, tid = threadIdx.x, nt = blockDim.x;
  // This thread's first work item and the stride over the threads sharing the updates.
  const int64_t kk = int64_t(k) * k, gt = OnGrid ? int64_t(blockIdx.x) * nt + tid : tid,
                gn = OnGrid ? int64_t(gridDim.x) * nt : nt;
  auto barrier = [] {
    if constexpr (OnGrid) cooperative_groups::this_grid().sync();
    else __syncthreads();
  };
  T* const S = !OnGrid && a.shared ? reinterpret_cast<T*>(dynBytes) : a.S;
  if (!OnGrid && a.shared)
    for (int64_t e = tid; e < kk; e += nt) S[e] = a.S[e];
  for (int64_t e = gt; e < kk; e += gn) a.Ew[e] = (e / k == e % k) ? T(1) : T(0);
  barrier();
  if (a.symmetrize) {
    for (int64_t e = gt; e < kk; e += gn) {
      const int i = int(e / k), j = int(e % k);
      if (i < j) {
        const T v = T(0.5) * (S[int64_t(i) * k + j] + S[int64_t(j) * k + i]);
        S[int64_t(i) * k + j] = v;
        S[int64_t(j) * k + i] = v;
      }
    }
    barrier();
  }
  if (tid == 0) {
    T m = 0;
    for (int i = 0; i < k; ++i) m = fmax(m, fabs(S[int64_t(i) * k + i]));
    diagMax = m;
  }
  __syncthreads();
  const double tiny = double(diagMax) * 1e-30 + 1e-37;
  const int N = k + (k & 1), half = N / 2;
  for (int sweep = 0; sweep < a.maxSweeps && k > 1; ++sweep) {
    if (tid == 0) rotated = 0;
    __syncthreads();
    for (int t = 0; t < N - 1; ++t) {
      for (int i = tid; i < half; i += nt) {
        const int x = seat(i, t, N), y = seat(N - 1 - i, t, N);
        const int p = min(x, y), q = max(x, y);
        T c = 1, s = 0;
        if (q < k) {
          const double apq = S[int64_t(p) * k + q], app = S[int64_t(p) * k + p], aqq = S[int64_t(q) * k + q];
          // Rotate unless a_pq is below f32 rounding of the two diagonal entries.
          if (fabs(apq) > JacobiTol<T>::v * sqrt(fabs(app * aqq)) && fabs(apq) > tiny) {
            const double th = (aqq - app) / (2.0 * apq);
            const double tt = (th >= 0.0 ? 1.0 : -1.0) / (fabs(th) + sqrt(th * th + 1.0));
            const double cc = 1.0 / sqrt(tt * tt + 1.0);
            c = T(cc);
            s = T(tt * cc);
            rotated = 1;
          }
        }
        pp[i] = p; qq[i] = q; cs[i] = c; sn[i] = s;
      }
      // Every thread has read the entries its rotations need before any updates them.
      barrier();
      // S <- J^T S J, one 2x2 block (pair i1 rows, pair i2 columns) per work item.
      const int64_t blocks = int64_t(half) * half;
      for (int64_t e = gt; e < blocks; e += gn) {
        const int i1 = int(e / half), i2 = int(e % half);
        const T s1 = sn[i1], s2 = sn[i2];
        if (s1 == T(0) && s2 == T(0)) continue;
        const T c1 = cs[i1], c2 = cs[i2];
        const int p1 = pp[i1], q1 = qq[i1], p2 = pp[i2], q2 = qq[i2];
        const bool h1 = q1 < k, h2 = q2 < k;
        const T a00 = S[int64_t(p1) * k + p2];
        const T a01 = h2 ? S[int64_t(p1) * k + q2] : T(0);
        const T a10 = h1 ? S[int64_t(q1) * k + p2] : T(0);
        const T a11 = h1 && h2 ? S[int64_t(q1) * k + q2] : T(0);
        const T t00 = c1 * a00 - s1 * a10, t01 = c1 * a01 - s1 * a11;
        const T t10 = s1 * a00 + c1 * a10, t11 = s1 * a01 + c1 * a11;
        T m00 = c2 * t00 - s2 * t01, m01 = s2 * t00 + c2 * t01;
        T m10 = c2 * t10 - s2 * t11, m11 = s2 * t10 + c2 * t11;
        if (i1 == i2) { m01 = 0; m10 = 0; }  // the rotation's own off-diagonal pair is zero by design
        S[int64_t(p1) * k + p2] = m00;
        if (h2) S[int64_t(p1) * k + q2] = m01;
        if (h1) S[int64_t(q1) * k + p2] = m10;
        if (h1 && h2) S[int64_t(q1) * k + q2] = m11;
      }
      // Ew <- J^T Ew (rows p, q): the accumulated eigenvectors, as rows.
      const int64_t items = int64_t(half) * k;
      for (int64_t e = gt; e < items; e += gn) {
        const int i = int(e / k), j = int(e % k);
        const T s = sn[i];
        if (s == T(0)) continue;
        const T c = cs[i];
        const int64_t p = pp[i], q = qq[i];
        const T ep = a.Ew[p * k + j], eq = a.Ew[q * k + j];
        a.Ew[p * k + j] = c * ep - s * eq;
        a.Ew[q * k + j] = s * ep + c * eq;
      }
      barrier();
    }
    const bool again = rotated != 0;
    __syncthreads();
    if (!again) break;
  }
  // Sort descending (ties by index) and write out.
  for (int64_t i = gt; i < k; i += gn) {
    const T di = S[i * k + i];
    int rank = 0;
    T dmax = di;
    for (int j = 0; j < k; ++j) {
      const T dj = S[int64_t(j) * k + j];
      dmax = fmax(dmax, dj);
      if (dj > di || (dj == di && j < i)) ++rank;
    }
    a.d[rank] = di;
    T f = 1;
    if (a.scale) f = (di > T(1e-12) * dmax && di > T(0)) ? T(1) / sqrt(di) : T(0);
    const T* src = a.Ew + i * k;
    T* dst = a.E + int64_t(rank) * k;
    for (int j = 0; j < k; ++j) dst[j] = src[j] * f;
  }
}

// SLIMOPT_JACOBI=block: the one-block Jacobi even where the grid's would serve (its times, and a
// check that both give the same bits).
bool oneBlockJacobiForced() {
  static const bool on = envIs("SLIMOPT_JACOBI", "block");
  return on;
}

unsigned gridFor(int dev, int64_t n) {
  int64_t b = (n + 255) / 256;
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(b, int64_t(smCount(dev)) * 8)));
}

GemmArgs mk(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, bool ta, const float* B, int64_t ldb,
            bool tb, float* C, int64_t ldc) {
  GemmArgs g;
  g.M = M; g.N = N; g.K = K;
  g.A = A; g.lda = lda; g.transA = ta;
  g.B = B; g.ldb = ldb; g.transB = tb;
  g.C = C; g.cType = DType::F32; g.ldc = ldc;
  g.alpha = 1.0f; g.beta = 0.0f;
  return g;
}

// ---- the plan: which path, and where everything lives in the workspace ----------------------

struct Plan {
  int64_t rows = 0, cols = 0, r = 0, n = 0, other = 0, k = 0;
  bool colsSide = true;  // Gram X^T X (vectors of length cols)
  bool same = true;      // the wanted side is the Gram side
  bool gram = true;      // form A (svd); warm applies X^T X implicitly
  bool solver = false;   // cuSOLVER syevdx
  bool host = false;     // the exact host solver (k over the one-block Jacobi's limit, no cuSOLVER)
  bool refine = false;   // the final two-sided Rayleigh-Ritz on X (k within the one-block Jacobi)
  bool dsyevd = false;   // the refinement's k x k f64 eigen-problems on cuSOLVER Dsyevd (else f64 Jacobi)
  bool xsyev = false;    // ... on XsyevBatched instead (smallEigSizes)
  bool filter = false;   // svd by the Chebyshev-filtered iteration on A (Refresher::filterSolve)
  int lwork = 0;
  int lwork64 = 0;       // Dsyevd's workspace, or XsyevBatched's where larger (doubles)
  bool chol = false;     // orthonormaliser() may use Dpotrf + Xtrtri (else eigen64); filter plans only
  int cholLwork = 0;     // Dpotrf's workspace (doubles)
  size_t trtriDevice = 0, trtriHost = 0;  // Xtrtri's workspaces (bytes)
  // The filter's solver scratch (solverFloats: Dsyevd's workspace, or Dpotrf's, Xtrtri's and the
  // residual): -1 where it borrows the Rayleigh-Ritz step's Z block (rayleighRitz). The
  // refinement's follows its f64 k x k matrices at o64.
  int64_t oSolver = -1;
  int passes = 0;        // of the refinement (see galoreRefresh)
  // Offsets in floats. oQ: k x n (the iteration's Z), followed by oY (its Y2); together they hold
  // the refinement's f64 T. o64: the refinement's f64 k x k matrices (refine()), then its solver
  // scratch.
  int64_t oA = 0, oW = 0, oWork = 0, oQ = 0, oY = 0, oB = 0, oT = 0, oS = 0, oEw = 0, oE = 0, oD = 0, oU = 0,
          oL = 0, o64 = 0, oF = 0, oR64 = 0, total = 0;
};

// SLIMOPT_GRAM_SOLVER=syevdx: the svd refresh solves the Gram matrix with cuSOLVER Ssyevdx (when it
// loads) instead of the Chebyshev filter: the path before it, kept to compare the two in one run.
// SLIMOPT_GRAM_SOLVER=filter: the filter also for blocks wider than kFilterMaxK (to measure where
// the split belongs).
bool syevdxForced() {
  static const bool on = envIs("SLIMOPT_GRAM_SOLVER", "syevdx");
  return on;
}
bool filterForced() {
  static const bool on = envIs("SLIMOPT_GRAM_SOLVER", "filter");
  return on;
}

// SLIMOPT_RR_ORTHO=eigen: orthonormaliser() takes the eigen-decomposition even where Cholesky is
// available (the path before it, kept to compare the two in one run).
bool cholOff() {
  static const bool off = envIs("SLIMOPT_RR_ORTHO", "eigen");
  return off;
}

// SLIMOPT_FILTER_RR=every: every filter round ends in a full Rayleigh-Ritz step (the path before
// the Cholesky-only rounds, kept to compare the two in one run).
bool rrEveryRound() {
  static const bool on = envIs("SLIMOPT_FILTER_RR", "every");
  return on;
}

// SLIMOPT_FILTER_START=ritz: the filter's round 0 is the Rayleigh-Ritz step of the random rows (a
// Dsyevd; the path before the Rayleigh quotients of Refresher::startEstimates, kept to compare the
// two in one run).
bool ritzStart() {
  static const bool on = envIs("SLIMOPT_FILTER_START", "ritz");
  return on;
}

// SLIMOPT_FILTER_SCHEDULE=previous: the filter's cut follows every round's smallest quotient and
// strict rounds take the full degree (the schedule before this one, kept to compare
// the two in one run).
bool previousSchedule() {
  static const bool on = envIs("SLIMOPT_FILTER_SCHEDULE", "previous");
  return on;
}

// SLIMOPT_FILTER_TRACE=1: each filter round's estimates and next degree go to stderr (to see
// where a refresh spends its rounds; no effect on the result).
bool filterTrace() {
  static const bool on = envIs("SLIMOPT_FILTER_TRACE", "1");
  return on;
}

// SLIMOPT_FILTER_TF32=off: the filter multiplies in strict f32 in every round (the path before its
// TF32 rounds, kept to compare the two in one run).
bool filterTf32Off() {
  static const bool off = envIs("SLIMOPT_FILTER_TF32", "off");
  return off;
}

int64_t align64(int64_t x) { return (x + 63) / 64 * 64; }

// SLIMOPT_SMALL_EIG=dsyevd: the k x k f64 eigen-problems on Dsyevd even where XsyevBatched serves
// (the path before it, kept to compare the two in one run).
bool xsyevOff() {
  static const bool off = envIs("SLIMOPT_SMALL_EIG", "dsyevd");
  return off;
}

// XsyevBatched serves the k x k f64 eigen-problems up to this k: on the H200 it took Dsyevd's device
// time at k = 192 and 256 without waiting on the host for the stream; at k = 640 it waited like
// Dsyevd and took 3% longer (bench/results/NVIDIA-H200-2026-11-25-25/).
constexpr int64_t kXsyevMaxK = 256;

// Where Xtrtri's device workspace starts after Dpotrf's (doubles; 256-byte aligned).
int64_t cholTrtriOffset(int64_t potrfDoubles) { return (potrfDoubles + 32) / 32 * 32; }

// Floats of the refinement's f64 block: four k x k matrices, three k-vectors, Dsyevd's workspace.
int64_t small64Floats(int64_t k, int64_t lwork64) { return 2 * (4 * k * k + 3 * k + lwork64); }

// Floats of the solver scratch (Refresher::solverWork_): Dsyevd's workspace, or, at other times,
// Dpotrf's, Xtrtri's and the Cholesky check's residual (never both at once).
int64_t solverFloats(const Plan& p) {
  const int64_t chol = p.chol ? cholTrtriOffset(p.cholLwork) + int64_t((p.trtriDevice + 7) / 8) + 1 : 0;
  return 2 * std::max<int64_t>(p.lwork64, chol);
}

// Dsyevd's workspace for the k x k f64 eigen-problems (p.lwork64, doubles), and XsyevBatched's where
// it serves (p.xsyev; its device bytes within p.lwork64). Only where it needs no host workspace: an
// asynchronous call's host buffer would have to outlive the refresh.
Status smallEigSizes(Cusolver* c, void* h, int64_t k, Plan& p) {
  int rc = c->dBufferSize(h, kEigModeVector, kFillLower, int(k), nullptr, int(k), nullptr, &p.lwork64);
  if (rc != 0) return solverFail(rc, "cusolverDnDsyevd_bufferSize");
  p.dsyevd = true;
  if (c->params == nullptr || k > kXsyevMaxK || xsyevOff()) return Status();
  size_t device = 0, host = 0;
  rc = c->xsyevBatchedBufferSize(h, c->params, kEigModeVector, kFillLower, k, kCudaR64F, nullptr, k, kCudaR64F, nullptr,
                                 kCudaR64F, &device, &host, 1);
  if (rc != 0 || host != 0 || (device + 7) / 8 > size_t(INT32_MAX)) return Status();
  p.xsyev = true;
  p.lwork64 = std::max<int>(p.lwork64, int((device + 7) / 8));
  return Status();
}

// The refinement's blocks (floats): oQ the f64 T (k x n), oT Y (k x other; the Gram side's result
// after it), oL the next pass's vectors or the other side's result, and (small > 0) o64, its f64
// block of `small` floats: inside the `room` floats at `from` (workspace the refinement no longer
// needs) when they fit there, else new (take).
template <typename Take>
void placeRefinement(Plan& p, int64_t k, int64_t room, int64_t from, Take& take, int64_t small = 0) {
  const bool wantL = !p.same || p.passes > 1;
  const int64_t q = 2 * align64(k * p.n), t = align64(k * p.other), l = wantL ? t : 0;
  if (q + t + l + align64(small) <= room) {
    p.oQ = from;
    p.oT = from + q;
    if (wantL) p.oL = from + q + t;
    if (small > 0) p.o64 = from + q + t + l;
    return;
  }
  p.oQ = take(q);
  p.oT = take(k * p.other);
  if (wantL) p.oL = take(k * p.other);
  if (small > 0) p.o64 = take(small);
}

Status makePlan(int dev, int64_t rows, int64_t cols, int64_t r, bool left, RefreshMethod method, Plan* out) {
  Plan p;
  p.rows = rows; p.cols = cols; p.r = r;
  p.colsSide = cols <= rows;
  p.n = p.colsSide ? cols : rows;
  p.other = p.colsSide ? rows : cols;
  p.same = (!left) == p.colsSide;
  p.gram = method == RefreshMethod::Svd;
  // k = r + p vectors: the oversampling keeps the r-th vector's error set by its gap to the
  // (k+1)-th rather than to the (r+1)-th, in the iteration and in the final Rayleigh-Ritz.
  const int64_t extra = std::min<int64_t>(64, std::max<int64_t>(16, r / 4));
  p.k = std::min(p.n, r + extra);
  p.refine = p.k <= kMaxBlock;
  const int64_t k = p.k, n = p.n;
  Cusolver* s = p.gram && p.n <= 46340 ? cusolver() : nullptr;  // n*n must fit cuSOLVER's int lwork math
  int64_t at = align64(kStatusWords);
  auto take = [&](int64_t floats) { const int64_t o = at; at += align64(std::max<int64_t>(floats, 1)); return o; };
  // The filter's block is wider than the old oversampling: its error shrinks per degree with the
  // gap between the r-th and the (kf+1)-th eigenvalue (r + 128 at r = 128 and 512 halved the
  // filter's work against r + 32 in the H200 prototype, bench/proto/chefsi_torch.py).
  const int64_t kf = std::min(n, r + std::min<int64_t>(128, std::max<int64_t>(32, r)));
  if (p.gram && kf <= kMaxBlock && !(s != nullptr && (syevdxForced() || (kf > kFilterMaxK && !filterForced())))) {
    p.filter = true;
    p.refine = true;
    p.k = kf;
    Cusolver* c = cusolver();  // the k x k f64 problems on Dsyevd when it loads
    if (c != nullptr && c->dBufferSize != nullptr && c->dsyevd != nullptr) {
      cudaStream_t st;
      Status ok = deviceStream(dev, &st, "galoreRefresh");
      if (!ok.ok()) return ok;
      void* h = solverHandle(c, dev, st);
      if (h == nullptr) return solverFail(-1, "cusolverDnCreate");
      ok = smallEigSizes(c, h, kf, p);
      if (!ok.ok()) return ok;
      if (!cholOff() && c->dpotrfBufferSize != nullptr && c->dpotrf != nullptr && c->xtrtriBufferSize != nullptr &&
          c->xtrtri != nullptr &&
          c->dpotrfBufferSize(h, kFillUpper, int(kf), nullptr, int(kf), &p.cholLwork) == 0 &&
          c->xtrtriBufferSize(h, kFillUpper, kDiagNonUnit, kf, kCudaR64F, nullptr, kf, &p.trtriDevice, &p.trtriHost) == 0)
        p.chol = true;
    }
    p.oA = take(n * n);
    p.oR64 = take(2 * (6 * kf * kf + 3 * kf));         // the Rayleigh-Ritz's f64 k x k matrices
    const int64_t deadAfterFilter = at - p.oA;         // A and the Rayleigh-Ritz scratch: the filter's only
    p.oF = take(3 * align64(kf * n));                  // three k x n f32 blocks of the filter
    // The solver's scratch during the filter borrows the block its Rayleigh-Ritz step writes last
    // (Z) where it fits: at r = 128 on §6 that keeps a workspace small enough for the optimizer to
    // run two refreshes at once within one f32 gradient (galoreRefreshMany's lanes).
    const int64_t solver = solverFloats(p);
    if (solver > align64(kf * n)) p.oSolver = take(solver);
    p.passes = double(kf) * double(n) * double(p.other) <= 1073741824.0 ? 2 : 1;
    // The refinement's blocks (T, Y, the next pass's vectors, its f64 block and solver scratch) go
    // where A and the Rayleigh-Ritz scratch were, when they fit: a refresh step's peak extra memory
    // then stays within one f32 gradient with the optimizer's scratch (§6 gate/up at r = 512:
    // ~135 MB instead of ~212).
    placeRefinement(p, kf, deadAfterFilter, p.oA, take, small64Floats(kf, 0) + solver);
    p.total = at;
    *out = p;
    return Status();
  }
  if (s != nullptr) {
    cudaStream_t st;
    Status ok = deviceStream(dev, &st, "galoreRefresh");
    if (!ok.ok()) return ok;
    void* h = solverHandle(s, dev, st);
    if (h == nullptr) return solverFail(-1, "cusolverDnCreate");
    int meig = 0, lwork = 0;
    const int want = int(p.refine ? k : r);
    int rc = s->bufferSize(h, kEigModeVector, kEigRangeI, kFillLower, int(n), nullptr, int(n), 0.0f, 0.0f,
                           int(n) - want + 1, int(n), &meig, nullptr, &lwork);
    if (rc != 0) return solverFail(rc, "cusolverDnSsyevdx_bufferSize");
    p.solver = true;
    p.lwork = lwork;
    if (p.refine && s->dBufferSize != nullptr && s->dsyevd != nullptr) {
      ok = smallEigSizes(s, h, k, p);
      if (!ok.ok()) return ok;
    }
    p.oA = take(n * n);
    p.oW = take(n);
    // The refinement's f64 block reuses syevdx's workspace (free once the Gram matrix is solved),
    // and so do its other blocks where they fit after it.
    const int64_t small = p.refine ? align64(small64Floats(k, p.lwork64)) : 0;
    p.oWork = take(std::max<int64_t>(lwork, small));
    p.o64 = p.oWork;
    if (p.refine) {
      p.passes = double(k) * double(n) * double(p.other) <= 1073741824.0 ? 2 : 1;
      placeRefinement(p, k, at - p.oWork - small, p.oWork + small, take);
    } else if (!p.same) {
      p.oU = take(r * p.other);
    }
  } else {
    if (k > kMaxBlock) {
      p.host = true;
      *out = p;
      out->total = 0;
      return Status();
    }
    if (p.gram) p.oA = take(n * n);
    p.oQ = take(2 * align64(k * n));
    p.oY = p.oQ + align64(k * n);
    p.oB = take(k * n);
    p.oS = take(k * k);
    p.oEw = take(k * k);
    p.oE = take(k * k);
    p.oD = take(k);
    p.oT = take(k * p.other);  // warm: X Q; refine: Y
    p.oL = take(k * p.other);  // refine: the next pass's vectors, the other side's result
    p.passes = 2;
    // The f64 block in the Gram matrix's place when it fits (the iteration is done with A by then).
    const int64_t small = small64Floats(k, 0);
    p.o64 = p.gram && n * n >= small ? p.oA : take(small);
  }
  p.total = at;
  *out = p;
  return Status();
}

// The pre-cuSOLVER path, kept for ranks beyond the built-in solver's block limit: G and P to the
// host, cpu::topSingular (double Gram + tred2/tql2), P back. Synchronous.
Status hostRefresh(int dev, const void* X, DType xt, int64_t rows, int64_t cols, int64_t r, bool left, float* P,
                   bool hasPrev, const int32_t* flag) {
  int32_t f = 0;
  Status ok = flag ? copyDtoH(dev, &f, flag, 4) : Status();
  if (!ok.ok() || f != 0) return ok;
  std::vector<uint8_t> hx(size_t(rows * cols) * dtypeSize(xt));
  const size_t pn = size_t((left ? rows : cols) * r);
  std::vector<float> hp(pn, 0.0f);
  ok = copyDtoH(dev, hx.data(), X, hx.size());
  if (ok.ok() && hasPrev) ok = copyDtoH(dev, hp.data(), P, pn * 4);
  if (!ok.ok()) return ok;
  if (!cpu::topSingular(hx.data(), xt, rows, cols, r, left, hp.data(), hasPrev)) return Status();
  ok = copyHtoD(dev, P, hp.data(), pn * 4);
  if (ok.ok()) ok = synchronize(dev);  // hp must outlive the copy
  return ok;
}

class Refresher {
 public:
  Refresher(int dev, cudaStream_t st, const Plan& p, const float* X, float* ws, GemmMode applyMode)
      : dev_(dev), st_(st), p_(p), X_(X), ws_(ws), applyMode_(applyMode) {}

  // The Jacobi on the k x k S: E rows (by descending eigenvalue, times d^-1/2 if scale), d
  // descending; Ew is work. S is destroyed. One block when S fits in its shared memory, else the
  // cooperative grid's (the same bits).
  template <typename T>
  Status jacobi(T* S, int k, bool symmetrize, bool scale, T* Ew, T* E, T* d) {
    JacobiArgs<T> a;
    a.S = S; a.Ew = Ew; a.E = E; a.d = d;
    a.k = k; a.symmetrize = symmetrize; a.scale = scale; a.maxSweeps = 30;
    const size_t bytes = size_t(k) * k * sizeof(T);
    int optin = 0;
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev_);
    // The 48 KB a launch gets without opting in counts static and dynamic shared memory together
    // (the f64 kernel's static part is ~24.6 KB, so k = 64 already needs the opt-in).
    cudaFuncAttributes fa{};
    size_t staticBytes = (sizeof(T) == 4 ? 20 : 28) * 1024;
    if (cudaFuncGetAttributes(&fa, jacobiKernel<T, false>) == cudaSuccess) staticBytes = fa.sharedSizeBytes;
    else (void)cudaGetLastError();
    a.shared = staticBytes + bytes + 1024 <= size_t(optin) ? 1 : 0;
    const size_t dyn = a.shared ? bytes : 0;
    if (dyn > 0 && staticBytes + dyn > 48 * 1024) {
      cudaError_t e = cudaFuncSetAttribute(jacobiKernel<T, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dyn));
      if (e != cudaSuccess) { (void)cudaGetLastError(); a.shared = 0; }
    }
    if (!a.shared && !oneBlockJacobiForced()) {
      // A grid of as many blocks as are resident at once (a cooperative launch's limit), at most
      // one per ~2048 items of a round's work.
      // (A failed query or launch is cleared, and the one-block kernel serves.)
      int perSm = 0, coop = 0;
      if (cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev_) != cudaSuccess ||
          (coop && cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, jacobiKernel<T, true>, kJacobiThreads, 0) != cudaSuccess)) {
        (void)cudaGetLastError();
        perSm = 0;
      }
      const int64_t half = (k + 1) / 2, items = half * half + half * k;
      const int64_t blocks = coop ? std::min<int64_t>(int64_t(perSm) * smCount(dev_), items / 2048) : 0;
      if (blocks > 1) {
        void* args[] = {&a};
        if (cudaLaunchCooperativeKernel((const void*)jacobiKernel<T, true>, unsigned(blocks), kJacobiThreads, args, 0, st_) ==
            cudaSuccess)
          return Status();
        (void)cudaGetLastError();
      }
    }
    jacobiKernel<T, false><<<1, kJacobiThreads, a.shared ? dyn : 0, st_>>>(a);
    return lastError("galoreRefresh (Jacobi)");
  }
  Status jacobi(float* S, int k, bool symmetrize, bool scale) {
    return jacobi<float>(S, k, symmetrize, scale, ws_ + p_.oEw, ws_ + p_.oE, ws_ + p_.oD);
  }

  // The iteration's k x k symmetric eigen-problems (orthonormalisation): the one-block Jacobi.
  Status eigenSmall(float* S, bool scale) { return jacobi(S, int(p_.k), true, scale); }

  // The refinement's k x k symmetric f64 eigen-problems: E rows by descending eigenvalue, d
  // descending; S destroyed, work (k x k) used by the Jacobi, w (k) by Dsyevd. cuSOLVER Dsyevd when
  // the plan has it (S is symmetric: its row-major upper triangle is the column-major lower one,
  // and column j of the result is row j here), else the f64 one-block Jacobi.
  Status eigen64(double* S, double* work, double* w, double* E, double* d) {
    const int k = int(p_.k);
    if (!p_.dsyevd) return jacobi<double>(S, k, true, false, work, E, d);
    Cusolver* s = cusolver();
    void* h = s ? solverHandle(s, dev_, st_) : nullptr;
    if (h == nullptr) return solverFail(-1, "cusolverDnCreate");
    int32_t* stw = reinterpret_cast<int32_t*>(ws_);
    if (p_.xsyev) {
      const int rc = s->xsyevBatched(h, s->params, kEigModeVector, kFillLower, k, kCudaR64F, S, k, kCudaR64F, w,
                                     kCudaR64F, solverWork_, size_t(p_.lwork64) * 8, nullptr, 0, stw + 5, 1);
      if (rc != 0) return solverFail(rc, "cusolverDnXsyevBatched");
    } else {
      const int rc = s->dsyevd(h, kEigModeVector, kFillLower, k, S, k, w, solverWork_, p_.lwork64, stw + 5);
      if (rc != 0) return solverFail(rc, "cusolverDnDsyevd");
    }
    keepInfoKernel<<<1, 1, 0, st_>>>(stw);
    fromAscendingKernel<double><<<unsigned(k), 256, 0, st_>>>(S, w, k, false, E, d);
    return lastError("galoreRefresh (small eigen)");
  }

  // Yt (k x n) = Qt A: with the Gram matrix, or as (Qt X^T) X / (Qt X) X^T.
  Status applyA(const float* Qt, float* Yt) {
    const int64_t k = p_.k, n = p_.n, rows = p_.rows, cols = p_.cols;
    if (p_.gram) return gemm(dev_, mk(k, n, n, Qt, n, false, ws_ + p_.oA, n, false, Yt, n), GemmMode::Strict);
    float* T = ws_ + p_.oT;
    Status ok;
    if (p_.colsSide) {
      ok = gemm(dev_, mk(k, rows, cols, Qt, cols, false, X_, cols, true, T, rows), applyMode_);
      if (ok.ok()) ok = gemm(dev_, mk(k, cols, rows, T, rows, false, X_, cols, false, Yt, cols), applyMode_);
    } else {
      ok = gemm(dev_, mk(k, cols, rows, Qt, rows, false, X_, cols, false, T, cols), applyMode_);
      if (ok.ok()) ok = gemm(dev_, mk(k, rows, cols, T, cols, false, X_, cols, true, Yt, rows), applyMode_);
    }
    return ok;
  }

  // One orthonormalisation pass on the k rows of Zt (len entries each) into tmp: rows normalised
  // (so that the k x k Gram is well conditioned once the rows are nearly orthogonal),
  // S = Zt Zt^T = U D U^T, tmp = D^-1/2 U^T Zt (rows for D below 1e-12 D_max come out zero).
  Status orthoPass(float* Zt, float* tmp, int64_t len) {
    const int64_t k = p_.k;
    float* S = ws_ + p_.oS;
    normalizeRowsKernel<<<unsigned(k), 256, 0, st_>>>(Zt, len);
    Status ok = lastError("galoreRefresh (normalise)");
    if (ok.ok()) ok = gemm(dev_, mk(k, k, len, Zt, len, false, Zt, len, true, S, k), GemmMode::Strict);
    if (ok.ok()) ok = eigenSmall(S, true);
    if (ok.ok()) ok = gemm(dev_, mk(k, len, k, ws_ + p_.oE, k, false, Zt, len, false, tmp, len), GemmMode::Strict);
    return ok;
  }
  // Two passes (as CholeskyQR2), rows lost in the first (numerically dependent) replaced by random
  // ones before the second, so the block keeps k directions. Result in Zt.
  Status orthonormalize(float* Zt, float* tmp, uint64_t seed, int64_t len) {
    Status ok = orthoPass(Zt, tmp, len);
    if (!ok.ok()) return ok;
    fixRowsKernel<<<unsigned(p_.k), 256, 0, st_>>>(tmp, len, seed);
    ok = lastError("galoreRefresh (refill)");
    if (ok.ok()) ok = orthoPass(tmp, Zt, len);
    return ok;
  }
  Status orthonormalize(float* Zt, float* tmp, uint64_t seed) { return orthonormalize(Zt, tmp, seed, p_.n); }

  // The final two-sided Rayleigh-Ritz on X itself (see the header), every product summed in f64
  // (gemm64: X is read as f32, never copied). From k approximate vectors of the Gram side (rows of
  // Z, ld ldz, any order), with Xh = X (Gram X^T X) or X^T (Gram X X^T):
  //   Y = Z Xh^T (k x other, stored f32: any basis of that span serves)
  //   Q = E1 Y with E1 = D1^-1/2 U diag(s) from the unit-row Gram  diag(s) Y Y^T diag(s) = U^T D1 U
  //       (orthonormal to f64 rounding: the rows of Y are nearly orthogonal, so one pass serves;
  //       rows with D1 <= kDropRatio max are dependent and dropped), or E1 = Lr^-1 diag(s) from its
  //       Cholesky factor where the plan has Dpotrf and the factor passes its check
  //       (orthonormaliser); Q is never formed
  //   T = Y Xh (k x n, f64), B = Q Xh = E1 T, C = B B^T = E1 (T T^T) E1^T = E2^T D2 E2
  //   -> Gram-side vectors D2^-1/2 E2 E1 T, other-side vectors E2 E1 Y (rows, descending).
  // So the vectors are those of an exact SVD of X to about 1e-16 / gap, rounded once to f32: what
  // the f32 solvers before it got wrong (eps ||X||^2 / gap of the f32 Gram matrix, f32 GEMM sums)
  // is gone, as long as the k vectors capture the top r (what the oversampling is for).
  // passes > 1 repeats it from the Gram-side vectors (each pass also shrinks what lies outside the
  // k vectors by sigma_{k+1} / sigma_i). Only the wanted side's r leading rows are formed at the
  // end, in f32; *V points at them (ld *ld).
  Status refine(const float* Z0, int64_t ldz, bool zReversed, int passes, const float** V, int64_t* ld) {
    const int64_t k = p_.k, n = p_.n, other = p_.other, rows = p_.rows, cols = p_.cols, r = p_.r;
    float* Y = ws_ + p_.oT;
    double* T = reinterpret_cast<double*>(ws_ + p_.oQ);
    double* E1 = reinterpret_cast<double*>(ws_ + p_.o64);
    double* S = E1 + k * k;    // Gram of Y, then C
    double* tmp = S + k * k;   // Jacobi work, E1 H, M = E2 E1
    double* E2 = tmp + k * k;
    double* d = E2 + k * k;
    double* sc = d + k;
    double* w = sc + k;
    float* Zn = ws_ + p_.oL;
    solverWork_ = reinterpret_cast<double*>(ws_ + p_.o64 + small64Floats(k, 0));
    const Real F = Real::F32, D = Real::F64;
    const unsigned kkGrid = gridFor(dev_, k * k);
    const float* Z = Z0;
    int64_t lz = ldz;
    Status ok;
    for (int pass = 0; pass < passes; ++pass) {
      ok = p_.colsSide ? g64(k, rows, cols, Z, F, lz, false, X_, F, cols, true, Y, F)
                       : g64(k, cols, rows, Z, F, lz, false, X_, F, cols, false, Y, F);
      if (ok.ok()) ok = g64(k, k, other, Y, F, other, false, Y, F, other, true, S, D);
      // T (k x n f64) is formed next: until then it is the Cholesky check's scratch when it holds two
      // k x k matrices.
      if (ok.ok()) ok = orthonormaliser(S, sc, E1, tmp, w, d, E2, T, n >= 2 * k ? T + k * k : nullptr);
      if (ok.ok()) ok = p_.colsSide ? g64(k, cols, rows, Y, F, rows, false, X_, F, cols, false, T, D)
                                    : g64(k, rows, cols, Y, F, cols, false, X_, F, cols, true, T, D);
      if (ok.ok()) ok = g64(k, k, n, T, D, n, false, T, D, n, true, S, D);        // H = T T^T
      if (ok.ok()) ok = g64(k, k, k, E1, D, k, false, S, D, k, false, tmp, D);    // E1 H
      if (ok.ok()) ok = g64(k, k, k, tmp, D, k, false, E1, D, k, true, S, D);     // C = E1 H E1^T
      if (ok.ok()) ok = eigen64(S, tmp, w, E2, d);
      if (ok.ok()) ok = g64(k, k, k, E2, D, k, false, E1, D, k, false, tmp, D);   // M = E2 E1
      if (!ok.ok() || pass + 1 == passes) break;
      // The next pass starts from all k Gram-side vectors D2^-1/2 M T.
      scaleRowsColsKernel<<<kkGrid, 256, 0, st_>>>(tmp, k, k, d, kFloorRatio, nullptr);
      ok = lastError("galoreRefresh (scale)");
      if (ok.ok()) ok = g64(k, n, k, tmp, D, k, false, T, D, n, false, Zn, F);
      if (!ok.ok()) return ok;
      fixRowsKernel<<<unsigned(k), 256, 0, st_>>>(Zn, n, 0x5eedf00dull + uint64_t(n) * 7 + uint64_t(k) + uint64_t(pass));
      ok = lastError("galoreRefresh (refill)");
      if (!ok.ok()) return ok;
      Z = Zn;
      lz = n;
    }
    if (!ok.ok()) return ok;
    // The result: the Gram side's rows go where Y was (Y is dead once T is formed), the other
    // side's to their own buffer (they are formed from Y).
    float* out = p_.same ? Y : Zn;
    const int64_t len = p_.same ? n : other;
    if (p_.same) {
      scaleRowsColsKernel<<<gridFor(dev_, r * k), 256, 0, st_>>>(tmp, r, k, d, kFloorRatio, nullptr);
      ok = lastError("galoreRefresh (scale)");
      if (ok.ok()) ok = g64(r, n, k, tmp, D, k, false, T, D, n, false, out, F);
      if (!ok.ok()) return ok;
      floorRowsKernel<<<unsigned(r), 256, 0, st_>>>(out, len, Z0, ldz, zReversed, k, d);
      ok = lastError("galoreRefresh (floor rows)");
    } else {
      ok = g64(r, other, k, tmp, D, k, false, Y, F, other, false, out, F);
    }
    if (!ok.ok()) return ok;
    normalizeRowsKernel<<<unsigned(r), 256, 0, st_>>>(out, len);
    *V = out;
    *ld = len;
    return lastError("galoreRefresh (normalise)");
  }

  // Reads the status words (one small copy; the built-in svd path's only host sync per iteration).
  Status readStatus(int32_t* out) { return copyDtoH(dev_, out, ws_, kStatusWords * 4); }

  // The built-in iteration. Leaves the r leading eigenvectors as rows of *V (ld n, descending);
  // *V = null when the gradient is unusable (P is then kept).
  //   Z (orthonormal, k x n) -> Y2 = Z A -> Rayleigh-Ritz H = Z Y2^T = W^T Theta W ->
  //   Q = W Z (Ritz vectors, descending), Y = W Y2 (= Q A) -> residuals of Q's first r rows ->
  //   Z = orthonormalize(Y) for the next iteration.
  Status iterate(bool warm, const float* P, bool left, bool hasPrev, const float** V) {
    const int64_t k = p_.k, n = p_.n, r = p_.r;
    float* Z = ws_ + p_.oQ;
    float* Y2 = ws_ + p_.oY;
    float* Q = ws_ + p_.oB;
    int32_t* st = reinterpret_cast<int32_t*>(ws_);
    uint64_t seed = 0x5eed0000ull + uint64_t(n) * 131 + uint64_t(k);
    Status ok;
    if (warm && hasPrev) {
      // The previous projector, mapped to the Gram side; the k - r extra rows random.
      if (p_.same) {
        if (left) transposeKernel<<<gridFor(dev_, n * r), 256, 0, st_>>>(P, n, r, Z);
        else ok = copyDtoD(dev_, Z, P, size_t(r * n) * 4);
      } else if (p_.colsSide) {  // P left (rows x r): v = X^T u  ->  Z = P^T X
        ok = gemm(dev_, mk(r, n, p_.rows, P, r, true, X_, p_.cols, false, Z, n), applyMode_);
      } else {                   // P right (r x cols): u = X v  ->  Z = P X^T
        ok = gemm(dev_, mk(r, n, p_.cols, P, p_.cols, false, X_, p_.cols, true, Z, n), applyMode_);
      }
      if (!ok.ok()) return ok;
      if (k > r) randomRowsKernel<<<gridFor(dev_, (k - r) * n), 256, 0, st_>>>(Z, r, k, n, seed);
      fixRowsKernel<<<unsigned(r), 256, 0, st_>>>(Z, n, seed + 1);
    } else {
      randomRowsKernel<<<gridFor(dev_, k * n), 256, 0, st_>>>(Z, 0, k, n, seed);
    }
    ok = lastError("galoreRefresh (start)");
    if (ok.ok()) ok = orthonormalize(Z, Y2, seed + 2);
    if (!ok.ok()) return ok;
    double prevRes = INFINITY;
    float* S = ws_ + p_.oS;
    float* W = ws_ + p_.oE;
    const int iters = warm ? kWarmIters : kMaxIters;
    for (int it = 0;; ++it) {
      ok = applyA(Z, Y2);
      if (ok.ok()) ok = gemm(dev_, mk(k, k, n, Z, n, false, Y2, n, true, S, k), GemmMode::Strict);
      if (ok.ok()) ok = jacobi(S, int(k), true, false);
      if (ok.ok()) ok = gemm(dev_, mk(k, n, k, W, k, false, Z, n, false, Q, n), GemmMode::Strict);
      if (ok.ok()) ok = gemm(dev_, mk(k, n, k, W, k, false, Y2, n, false, Z, n), GemmMode::Strict);  // Z := Y
      if (!ok.ok()) return ok;
      if (it + 1 >= iters) break;
      if (!warm) {
        ok = memsetZero(dev_, st + 3, 8);
        if (!ok.ok()) return ok;
        residualKernel<<<unsigned(r), 256, 0, st_>>>(Q, Z, n, st);
        ok = lastError("galoreRefresh (residual)");
        int32_t h[kStatusWords];
        if (ok.ok()) ok = readStatus(h);
        if (!ok.ok()) return ok;
        if (h[0] != 0 || h[1] == 0) { *V = nullptr; return Status(); }  // P is kept: nothing to compute
        const double res = bitsFloat(uint32_t(h[3])), th = bitsFloat(uint32_t(h[4]));
        if (!std::isfinite(res) || !std::isfinite(th)) { *V = nullptr; return Status(); }
        if (res <= 1e-6 * th) break;
        if (it >= 4 && res <= 1e-4 * th && res > 0.5 * prevRes) break;  // the f32 floor
        prevRes = res;
      }
      ok = orthonormalize(Z, Y2, seed + 3 + uint64_t(it));
      if (!ok.ok()) return ok;
    }
    *V = Q;
    return ok;
  }

  // ---- the svd path: Chebyshev-filtered subspace iteration on A ----------------------------
  // k rows Z (k x n); each round applies T_d(2A/b - I) (Chebyshev polynomial of degree d: it stays
  // within [-1, 1] on the eigenvalues in [0, b] and grows fast above b) to them, then
  // orthonormalises them. Round 0 takes the random rows' Rayleigh quotients for the first estimates
  // (startEstimates; SLIMOPT_FILTER_START=ritz: their Rayleigh-Ritz step, as before). The filtered
  // rounds orthonormalise by Cholesky only: row i is made orthogonal to the rows before it
  // (simultaneous iteration, which orders the rows by eigenvalue as it converges), and the rows'
  // Rayleigh quotients, sorted, stand in for the Ritz values; a full Rayleigh-Ritz step (its k x k
  // eigen-problem was ~1.8 ms of Dsyevd at k = 256) runs only where Cholesky fails its check. The
  // span after each round, all the final refinement uses, is p(A) span(Z) whatever the basis; the
  // basis only sets how the f32 rows round and the estimates below. The cut b is the smallest Ritz
  // value of the previous round (a lower bound of lambda_k; the smallest Rayleigh quotient of
  // ordered, nearly converged rows is close to it; a TF32 round after the first filtered one does
  // not lower it, see the end of the loop). A round of degree d (capped by kMaxGrowth) shrinks the
  // part of vector i outside the block by about T_d(2 lambda_{k+1}/b - 1) / T_d(2 lambda_i/b - 1);
  // the iteration stops when the product of these factors for i = r, estimated from the Ritz
  // values, is below kFilterTarget (or the r-th and k-th Ritz values are no longer apart in f32).
  // Products with A are TF32 GEMMs while the predicted error is above what TF32's rounding leaves
  // (kTf32Floor), then strict f32 GEMMs, which set the block's accuracy (TF32's rounding would; the
  // error of a TF32 GEMM also grows with its K on the H200); the small problems are f64. Against
  // cuSOLVER Ssyevdx on the same f32 A (the path before it): as exact after the final refinement
  // (worst vector 1.7e-6 against 4.3e-6 in the PyTorch prototype, bench/proto), faster up to k =
  // 640 on the H200 (see kFilterMaxK).
  Status g64(int64_t M, int64_t N, int64_t K, const void* A, Real at, int64_t lda, bool ta, const void* B, Real bt,
             int64_t ldb, bool tb, void* C, Real ct) {
    Gemm64Args g;
    g.M = M; g.N = N; g.K = K;
    g.A = A; g.aType = at; g.lda = lda; g.transA = ta;
    g.B = B; g.bType = bt; g.ldb = ldb; g.transB = tb;
    g.C = C; g.cType = ct; g.ldc = N;
    return gemm64(dev_, st_, g);
  }

  // C (k x n) = alpha F A + beta C, in the filter's current precision (filterMode_).
  Status productA(const float* F, float* C, float alpha, float beta) {
    const int64_t k = p_.k, n = p_.n;
    GemmArgs g = mk(k, n, n, F, n, false, ws_ + p_.oA, n, false, C, n);
    g.alpha = alpha;
    g.beta = beta;
    return gemm(dev_, g, filterMode_);
  }

  // E1 = Lr^-1 diag(sc) from the unit-row Gram S (k x k, kept) = Lr Lr^T: E1 F is then orthonormal.
  // Dpotrf and Xtrtri on a copy in `work`; T, R, U are k x k scratch. *used: the residual
  // max |Lr^-1 S Lr^-T - I| (read on the host: one sync) is within kCholResidual, else the caller
  // takes the eigen-decomposition. At k = 256 on the H200 its kernels took ~0.2 ms against Dsyevd's
  // ~1.9 ms (ncu, bench/results/NVIDIA-H200-2026-11-25-4/).
  Status choleskyE1(const double* S, double* work, const double* sc, double* E1, double* T, double* R, double* U,
                    bool* used) {
    const int64_t k = p_.k, kk = k * k;
    *used = false;
    Cusolver* s = cusolver();
    void* h = s ? solverHandle(s, dev_, st_) : nullptr;
    if (h == nullptr) return solverFail(-1, "cusolverDnCreate");
    int32_t* stw = reinterpret_cast<int32_t*>(ws_);
    double* lwork = solverWork_;
    double* tdev = lwork + cholTrtriOffset(p_.cholLwork);
    double* residual = tdev + (p_.trtriDevice + 7) / 8;
    trtriHost_.resize(p_.trtriHost + 16);
    Status ok = statusOf(cudaMemcpyAsync(work, S, size_t(kk) * 8, cudaMemcpyDeviceToDevice, st_), "galoreRefresh (Cholesky)");
    if (!ok.ok()) return ok;
    int rc = s->dpotrf(h, kFillUpper, int(k), work, int(k), lwork, p_.cholLwork, stw + 6);
    if (rc != 0) return solverFail(rc, "cusolverDnDpotrf");
    rc = s->xtrtri(h, kFillUpper, kDiagNonUnit, k, kCudaR64F, work, k, tdev, p_.trtriDevice, trtriHost_.data(),
                   p_.trtriHost, stw + 7);
    if (rc != 0) return solverFail(rc, "cusolverDnXtrtri");
    lowerInverseKernel<<<gridFor(dev_, kk), 256, 0, st_>>>(work, k, sc, T, E1);
    ok = lastError("galoreRefresh (Cholesky)");
    const Real F64 = Real::F64;
    if (ok.ok()) ok = g64(k, k, k, T, F64, k, false, S, F64, k, false, R, F64);  // Lr^-1 S
    if (ok.ok()) ok = g64(k, k, k, R, F64, k, false, T, F64, k, true, U, F64);   // Lr^-1 S Lr^-T
    if (!ok.ok()) return ok;
    ok = memsetZero(dev_, residual, sizeof(double));
    if (ok.ok()) identityResidualKernel<<<unsigned(k), 256, 0, st_>>>(U, k, stw, residual);
    if (ok.ok()) ok = lastError("galoreRefresh (Cholesky check)");
    double r = INFINITY;
    if (ok.ok()) ok = copyDtoH(dev_, &r, residual, sizeof(double));
    if (!ok.ok()) return ok;
    // A failed factorisation leaves its info word set; clear both for the next attempt.
    ok = memsetZero(dev_, stw + 6, 8);
    *used = r <= kCholResidual;
    return ok;
  }

  // S (f64 k x k, the Gram matrix of some rows F) scaled in place to unit diagonal (sc: the row
  // scales), and E1 with E1 F orthonormal: by choleskyE1 where the plan has it, the scratch x1..x3
  // (k x k f64 each; x3 null: none) is given and its check passes, else by the eigen-decomposition
  // (dependent rows dropped as zeros; work, w, d as eigen64 takes them, d then its eigenvalues).
  Status orthonormaliser(double* S, double* sc, double* E1, double* work, double* w, double* d, double* x1,
                         double* x2, double* x3, bool* byCholesky = nullptr) {
    const int64_t k = p_.k;
    rowScalesKernel<<<unsigned((k + 255) / 256), 256, 0, st_>>>(S, k, sc);
    unitDiagonalKernel<<<unsigned(k), 256, 0, st_>>>(S, k, sc);
    Status ok = lastError("galoreRefresh (unit rows)");
    bool cholesky = false;
    if (ok.ok() && p_.chol && x3 != nullptr) ok = choleskyE1(S, work, sc, E1, x1, x2, x3, &cholesky);
    if (byCholesky != nullptr) *byCholesky = ok.ok() && cholesky;
    if (!ok.ok() || cholesky) return ok;
    ok = eigen64(S, work, w, E1, d);
    if (!ok.ok()) return ok;
    scaleRowsColsKernel<<<gridFor(dev_, k * k), 256, 0, st_>>>(E1, k, k, d, kDropRatio, sc);
    return lastError("galoreRefresh (E1)");
  }

  // Rayleigh-Ritz on the rows of F (any basis, not orthonormal): G = F A; E1 = D^-1/2 U^T diag(s)
  // from the unit-row Gram of F, or its Cholesky factor's inverse (choleskyE1), so that E1 F is
  // orthonormal (on the eigen path dependent rows drop out as zeros); C =
  // E1 (G F^T) E1^T = E2^T Theta E2; M = E2 E1. Writes Z = M F (Ritz vectors, by descending Ritz
  // value) and Y = M G (= Z A) and leaves Theta in theta (f64, device). Z rows that came out zero
  // are refilled at random. Z and G must be apart from F and each other; Y may be F (F is last read
  // for Z) but not G.
  // orthOnly: where Cholesky orthonormalised F, stop there: Z = E1 F, Y = E1 G and theta the rows'
  // Rayleigh quotients (unsorted); *ritz then says false. E1 is triangular, so row i of Z is row i
  // of F made orthogonal to the rows before it: rows that were Ritz vectors by descending value
  // stay ordered, and the filter's span is the same in any basis (see filterSolve).
  Status rayleighRitz(const float* F, float* G, float* Z, float* Y, double** theta, uint64_t seed, bool orthOnly,
                      bool* ritz) {
    const int64_t k = p_.k, n = p_.n, kk = k * k;
    double* S = reinterpret_cast<double*>(ws_ + p_.oR64);
    double* E1 = S + kk;
    double* C = E1 + kk;
    double* T = C + kk;
    double* E2 = T + kk;
    double* work = E2 + kk;
    double* d = work + kk;
    double* sc = d + k;
    double* w = sc + k;
    // Z is written last: until then it can be the solver's scratch (Plan::oSolver).
    solverWork_ = reinterpret_cast<double*>(p_.oSolver >= 0 ? ws_ + p_.oSolver : Z);
    const Real F32 = Real::F32, F64 = Real::F64;
    Status ok = productA(F, G, 1.0f, 0.0f);
    if (ok.ok()) ok = g64(k, k, n, F, F32, n, false, F, F32, n, true, S, F64);
    bool cholesky = false;
    if (ok.ok()) ok = orthonormaliser(S, sc, E1, work, w, d, C, T, E2, &cholesky);
    *ritz = !(orthOnly && cholesky);
    if (ok.ok() && !*ritz) {
      ok = g64(k, n, k, E1, F64, k, false, F, F32, n, false, Z, F32);
      if (ok.ok()) ok = g64(k, n, k, E1, F64, k, false, G, F32, n, false, Y, F32);
      if (!ok.ok()) return ok;
      rowDotKernel<<<unsigned(k), 256, 0, st_>>>(Y, Z, n, d);
      *theta = d;
      return lastError("galoreRefresh (Rayleigh quotients)");
    }
    if (ok.ok()) ok = g64(k, k, n, G, F32, n, false, F, F32, n, true, C, F64);     // H = G F^T
    if (ok.ok()) ok = g64(k, k, k, E1, F64, k, false, C, F64, k, false, T, F64);   // E1 H
    if (ok.ok()) ok = g64(k, k, k, T, F64, k, false, E1, F64, k, true, C, F64);    // E1 H E1^T
    if (ok.ok()) ok = eigen64(C, work, w, E2, d);
    if (ok.ok()) ok = g64(k, k, k, E2, F64, k, false, E1, F64, k, false, T, F64);  // M = E2 E1
    if (ok.ok()) ok = g64(k, n, k, T, F64, k, false, F, F32, n, false, Z, F32);
    if (ok.ok()) ok = g64(k, n, k, T, F64, k, false, G, F32, n, false, Y, F32);
    if (!ok.ok()) return ok;
    fixRowsKernel<<<unsigned(k), 256, 0, st_>>>(Z, n, seed);
    *theta = d;
    return lastError("galoreRefresh (Ritz vectors)");
  }

  // Round 0 without a k x k eigen-problem (a Dsyevd of ~1.8 ms at k = 256 on the H200): the random
  // rows Z normalised, Y = Z A, and their Rayleigh quotients (*th, unsorted) as the first estimates.
  // The first filtered round is close to a power step whatever its cut, and a cut above lambda_r
  // only delays the vectors under it by a round (Cholesky keeps their directions, and the progress
  // estimate counts no gain for them), so the quotients' smallest (about trace / n) serves as well
  // as the smallest Ritz value of random rows did. Only the degree cap needs the top, which both
  // put near trace / n on a steep spectrum: *topCap = max(largest quotient, ||A||_F^2 / trace(A)),
  // a lower bound of lambda_1 (sum lambda^2 <= lambda_1 sum lambda), within 2x of it on a flat
  // spectrum and close to it on a steep one. scratch: k + 2n doubles.
  Status startEstimates(float* Z, float* Y, double* scratch, std::vector<double>* th, double* topCap) {
    const int64_t k = p_.k, n = p_.n;
    normalizeRowsKernel<<<unsigned(k), 256, 0, st_>>>(Z, n);
    Status ok = lastError("galoreRefresh (filter start)");
    if (ok.ok()) ok = productA(Z, Y, 1.0f, 0.0f);
    if (!ok.ok()) return ok;
    rowDotKernel<<<unsigned(k), 256, 0, st_>>>(Y, Z, n, scratch);
    gramRowStatsKernel<<<unsigned(n), 256, 0, st_>>>(ws_ + p_.oA, n, scratch + k, scratch + k + n);
    ok = lastError("galoreRefresh (filter start)");
    std::vector<double> h(size_t(k + 2 * n));
    if (ok.ok()) ok = copyDtoH(dev_, h.data(), scratch, h.size() * sizeof(double));
    if (!ok.ok()) return ok;
    th->assign(h.begin(), h.begin() + k);
    double sq = 0.0, tr = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      sq += h[size_t(k + i)];
      tr += h[size_t(k + n + i)];
    }
    *topCap = *std::max_element(th->begin(), th->end());
    if (tr > 0.0 && std::isfinite(sq / tr)) *topCap = std::max(*topCap, sq / tr);
    return ok;
  }

  // The top k Ritz vectors as rows of *V (ld n, descending). *done false: the filter did not reach
  // its target in kMaxRounds (the caller falls back to the exact host solver).
  Status filterSolve(const float** V, bool* done) {
    const int64_t k = p_.k, n = p_.n, r = p_.r;
    float* buf[3] = {ws_ + p_.oF, ws_ + p_.oF + align64(k * n), ws_ + p_.oF + 2 * align64(k * n)};
    uint64_t seed = 0xc4eb0000ull + uint64_t(n) * 131 + uint64_t(k);
    *done = false;
    // Start: random rows; their Rayleigh quotients give the first cut and degree.
    randomRowsKernel<<<gridFor(dev_, k * n), 256, 0, st_>>>(buf[0], 0, k, n, seed);
    Status ok = lastError("galoreRefresh (filter start)");
    if (!ok.ok()) return ok;
    double b = 0.0;
    std::vector<double> th(size_t(k), 0.0);
    float* zc = buf[0];  // the current rows (random, then Ritz vectors)
    float* yc = buf[1];  // zc A once a Rayleigh-Ritz step has formed it (every round after round 0)
    float* fr = buf[2];
    double progress = 1.0;
    // The early rounds multiply in TF32 (tensor cores, several times the strict f32 rate) while
    // the predicted error is still above what TF32's rounding leaves (tf32Floor, estimated each
    // round); then strict f32 to the end, counting from that floor.
    bool tf32 = !filterTf32Off();
    filterMode_ = tf32 ? GemmMode::Tf32 : GemmMode::Strict;
    int degree = 0;  // round 0: the Rayleigh-Ritz of the random rows only, for the first estimates
    for (int round = 0; round < kMaxRounds; ++round) {
      const int d = degree;
      // The rows to re-base end in y1; y0 is free then. Round 0 (d = 0) takes the random rows.
      float* y0 = yc;
      float* y1 = zc;
      if (d > 0) {
        // y1 = T_1 = (2/b) Z A - Z from the Ritz step's Z A, then
        // y_{j+1} = (4/b) y_j A - 2 y_j - y_{j-1}: the GEMM forms (4/b) y_j A - y_{j-1} over y_{j-1}.
        y0 = zc;
        y1 = yc;
        chebStepKernel<<<unsigned(k), 256, 0, st_>>>(y1, y0, n, float(2.0 / b), -1.0f);
        ok = lastError("galoreRefresh (filter)");
        for (int j = 1; ok.ok() && j < d; ++j) {
          ok = productA(y1, y0, float(4.0 / b), -1.0f);
          if (!ok.ok()) return ok;
          chebStepKernel<<<unsigned(k), 256, 0, st_>>>(y0, y1, n, 1.0f, -2.0f);
          ok = lastError("galoreRefresh (filter)");
          std::swap(y0, y1);
        }
        if (!ok.ok()) return ok;
      }
      // Round 0 (unless the block is the whole space, where its Rayleigh-Ritz step is the answer):
      // the random rows' quotients (startEstimates); zc stays the rows, yc = zc A. Other rounds:
      // Rayleigh-Ritz of the rows in y1 (G = y1 A into y0, Z into fr, Z A over y1), which after
      // round 0 only orthonormalises them (Cholesky, order kept) unless that fails its check or
      // SLIMOPT_FILTER_RR=every.
      double* theta = nullptr;
      bool ritz = true;
      double topCap = 0.0;
      if (round == 0 && k < n && !ritzStart()) {
        ok = startEstimates(y1, y0, reinterpret_cast<double*>(fr), &th, &topCap);
        if (!ok.ok()) return ok;
        ritz = false;
      } else {
        ok = rayleighRitz(y1, y0, fr, y1, &theta, seed + 1 + uint64_t(round), round > 0 && !rrEveryRound(), &ritz);
        if (ok.ok()) ok = copyDtoH(dev_, th.data(), theta, size_t(k) * sizeof(double));
        if (!ok.ok()) return ok;
        zc = fr;
        yc = y1;
        fr = y0;
      }
      // Rayleigh quotients of ordered rows are nearly but not exactly descending: the estimates
      // below take them sorted.
      if (!ritz) std::sort(th.begin(), th.end(), std::greater<double>());
      if (k >= n) { *done = true; break; }  // the block is the whole space: Rayleigh-Ritz is exact
      // How far the r-th vector is. Ritz values at or under the f32 floor of A do not count.
      const double top = th[0];
      // Not expected after the gradient's status check; the exact host solver then decides.
      if (!(top > 0.0) || !std::isfinite(top)) break;
      int64_t rEff = r;
      while (rEff > 0 && !(th[size_t(rEff - 1)] > kFloorRatio * top)) --rEff;
      if (rEff == 0) { *done = true; break; }
      // The smallest Ritz value above the floor: a lower bound of lambda_k (rows dropped as
      // dependent have Ritz value 0 and were refilled), the estimate of lambda_{k+1} and the next cut.
      double cut = 0.0;
      for (int64_t i = k - 1; i >= 0 && !(cut > 1e-12 * top); --i) cut = th[size_t(i)];
      const double thr = th[size_t(rEff - 1)];
      const bool noGap = thr - cut <= 1e-6 * top;  // no gap that f32 resolves
      if (noGap && !tf32) { *done = true; break; }
      auto lnCheb = [](int deg, double x) {  // ln T_deg(x), x >= 1 (1 below: the damped side)
        const double y = x <= 1.0 ? 0.0 : deg * std::acosh(x);
        return y > 40.0 ? y - std::log(2.0) : std::log(std::cosh(y));
      };
      const double tf32Floor = kTf32Floor * top / thr;
      const bool wasTf32 = tf32;
      auto trace = [&](int next) {
        if (filterTrace())
          std::fprintf(stderr, "filter n=%lld k=%lld round %d (degree %d, %s): top %.6g cap %.6g thr %.6g cut %.6g progress %.3g -> %s%d\n",
                       (long long)n, (long long)k, round, d, wasTf32 ? "tf32" : "strict", top, topCap, thr, cut,
                       progress, next < 0 ? "done" : tf32 ? "tf32 degree " : "strict degree ", next < 0 ? round : next);
      };
      if (round > 0) {
        progress *= std::exp(lnCheb(d, 2.0 * cut / b - 1.0) - lnCheb(d, 2.0 * thr / b - 1.0));
        if (tf32) progress = std::max(progress, tf32Floor);
        if (progress <= kFilterTarget) {
          trace(-1);
          *done = true;
          break;
        }
      }
      // (A gap under TF32's rounding of the Ritz values is looked at again in strict f32.)
      if (tf32 && (noGap || !(progress > tf32Floor && tf32Floor < kTf32Useful))) {
        tf32 = false;
        filterMode_ = GemmMode::Strict;
        progress = std::max(progress, tf32Floor);
      }
      // A TF32 round's smallest Rayleigh quotient sits low: TF32's rounding leaves every row a little
      // of the bottom of the spectrum (4096² at r = 128 on the H200: cut 11943 after round 1, 9614
      // after round 2 at TF32's floor, 11976 after the first strict round), and a low cut made the
      // first strict round a third as effective per degree. So after the second filtered round on, a
      // TF32 round does not lower the cut; a strict round's stands as measured, as does the first
      // filtered round's (round 0's quotients only seed it).
      const double measured = cut > 0.0 ? cut : 1e-3 * top;
      b = round > 1 && wasTf32 && !previousSchedule() ? std::max(b, measured) : measured;
      // The next degree: kFirstDegree, then kRoundDegree, as far as kMaxGrowth allows (at least 1).
      const int cap = round == 0 ? kFirstDegree : kRoundDegree;
      const double x1 = 2.0 * std::max(top, topCap) / b - 1.0, xr = 2.0 * thr / b - 1.0;
      degree = 1;
      while (degree < cap && lnCheb(degree + 1, x1) - lnCheb(degree + 1, xr) <= std::log(kMaxGrowth)) ++degree;
      // A strict round predicted to reach the target takes the lowest degree that does so with 10x
      // to spare, with the cut moved up by 15% of its gap to the r-th value (the traces' drift per
      // round was 2-7%): a full degree overshot the target 10-20x.
      if (!tf32 && !previousSchedule()) {
        const double cutNext = measured + 0.15 * std::max(0.0, thr - measured);
        for (int dd = 1; dd < degree; ++dd) {
          if (progress * std::exp(lnCheb(dd, 2.0 * cutNext / b - 1.0) - lnCheb(dd, xr)) <= 0.1 * kFilterTarget) {
            degree = dd;
            break;
          }
        }
      }
      trace(degree);
    }
    *V = zc;
    return Status();
  }

 private:
  int dev_;
  cudaStream_t st_;
  const Plan& p_;
  const float* X_;
  float* ws_;
  GemmMode applyMode_;
  GemmMode filterMode_ = GemmMode::Strict;  // the filter's products with A (filterSolve switches it)
  std::vector<char> trtriHost_;  // Xtrtri's host workspace
  // Dsyevd's workspace, or Dpotrf's, Xtrtri's and the residual: set by rayleighRitz and refine.
  double* solverWork_ = nullptr;
};

}  // namespace

std::string solverPath() {
  Cusolver* s = loadCusolver();
  if (s != nullptr && !forceBuiltin()) {
    // The k x k problems: where XsyevBatched takes them.
    const std::string smallEig = s->params != nullptr && !xsyevOff()
                                     ? "; k x k eigen-problems up to k = " + std::to_string(kXsyevMaxK) + " on XsyevBatched"
                                     : std::string();
    if (syevdxForced())
      return "cuSOLVER syevdx (" + s->path + ") on the f32 Gram matrix + an f64 Rayleigh-Ritz refinement, on the device" +
             smallEig;
    const bool chol = !cholOff() && s->dpotrf != nullptr && s->xtrtri != nullptr;
    const std::string products = filterTf32Off() ? "strict f32 products" : "TF32 then strict f32 products";
    const std::string rounds = !chol || rrEveryRound() ? "Dsyevd Rayleigh-Ritz steps"
                               : ritzStart()           ? "a Dsyevd Rayleigh-Ritz step, then Dpotrf/Xtrtri-orthonormalised rounds"
                                                       : "Dpotrf/Xtrtri-orthonormalised rounds";
    return "cuSOLVER (" + s->path + "): a Chebyshev-filtered subspace iteration on the f32 Gram matrix (" + products +
           "; " + rounds + ") for blocks of " +
           (filterForced() ? std::string("any width (forced)")
                           : "up to " + std::to_string(kFilterMaxK) + " vectors, Ssyevdx on it for wider ones") +
           "; + an f64 Rayleigh-Ritz refinement, on the device" + smallEig;
  }
  return std::string("built-in: Chebyshev-filtered subspace iteration on the f32 Gram matrix with f64 Jacobi "
                     "Rayleigh-Ritz (one block, or a cooperative grid where the k x k matrix does not fit in its "
                     "shared memory) + an f64 Rayleigh-Ritz refinement, on the device") +
         (s != nullptr ? " (forced)" : " (cuSOLVER not found)");
}

Status galoreRefreshWorkspace(int dev, int64_t rows, int64_t cols, int64_t r, bool left, RefreshMethod method,
                              int64_t* floats) {
  Plan p;
  Status ok = makePlan(dev, rows, cols, r, left, method, &p);
  *floats = ok.ok() ? p.total : 0;
  return ok;
}

Status galoreRefresh(int dev, const void* X, DType xt, int64_t rows, int64_t cols, int64_t r, bool left, float* P,
                     bool hasPrev, const int32_t* flag, RefreshMethod method, GemmMode mode, float* ws,
                     int64_t wsFloats, float* xScratch) {
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "galoreRefresh");
  if (!ok.ok()) return ok;
  if (r < 1 || r > std::min(rows, cols)) return invalidArg("galoreRefresh: rank out of range");
  Plan p;
  ok = makePlan(dev, rows, cols, r, left, method, &p);
  if (!ok.ok()) return ok;
  if (p.host) return hostRefresh(dev, X, xt, rows, cols, r, left, P, hasPrev, flag);
  if (ws == nullptr || wsFloats < p.total) return invalidArg("galoreRefresh: the workspace is too small");
  const float* Xf = static_cast<const float*>(X);
  if (xt != DType::F32) {
    if (xScratch == nullptr) return invalidArg("galoreRefresh: a non-f32 gradient needs the f32 scratch");
    ok = convert(dev, X, xt, xScratch, DType::F32, rows * cols);
    if (!ok.ok()) return ok;
    Xf = xScratch;
  }
  int32_t* stw = reinterpret_cast<int32_t*>(ws);
  ok = memsetZero(dev, ws, kStatusWords * 4);
  if (!ok.ok()) return ok;
  checkKernel<<<gridFor(dev, rows * cols), 256, 0, st>>>(Xf, rows * cols, flag, stw);
  ok = lastError("galoreRefresh (check)");
  if (!ok.ok()) return ok;

  const int64_t n = p.n;
  if (p.gram) {
    ok = gramStrict(dev, Xf, rows, cols, p.colsSide, ws + p.oA);
    if (!ok.ok()) return ok;
  }
  const float* V = nullptr;  // the solver's vectors of the Gram side, ld n
  bool reversed = false;
  const int32_t* info = nullptr;
  int64_t got = p.refine ? p.k : r;  // vectors the solver leaves
  if (p.solver) {
    Cusolver* s = cusolver();
    void* h = s ? solverHandle(s, dev, st) : nullptr;
    if (h == nullptr) return solverFail(-1, "cusolverDnCreate");
    // syevdx returns to the host anyway (meig is a host output): look at the gradient first, so an
    // unusable one keeps P without a solver call that could fail on NaN.
    int32_t h0[kStatusWords];
    ok = copyDtoH(dev, h0, ws, sizeof h0);
    if (!ok.ok()) return ok;
    if (h0[0] != 0 || h0[1] == 0) return Status();
    int meig = 0;
    int32_t* dinfo = stw + 2;
    const int in = int(n);
    const int rc = s->syevdx(h, kEigModeVector, kEigRangeI, kFillLower, in, ws + p.oA, in, 0.0f, 0.0f,
                             int(n - got + 1), in, &meig, ws + p.oW, ws + p.oWork, p.lwork, dinfo);
    if (rc != 0) return solverFail(rc, "cusolverDnSsyevdx");
    if (meig != int(got)) return solverFail(-2, "cusolverDnSsyevdx (fewer eigenpairs than asked)");
    V = ws + p.oA;     // column j of the column-major result = row j here: eigenvectors as rows
    reversed = true;   // ascending: the largest is the last
    info = dinfo;
  }
  Refresher rf(dev, st, p, Xf, ws, mode);
  if (p.filter) {
    int32_t h0[kStatusWords];
    ok = copyDtoH(dev, h0, ws, sizeof h0);
    if (!ok.ok()) return ok;
    if (h0[0] != 0 || h0[1] == 0) return Status();  // unusable gradient: P is kept
    bool done = false;
    ok = rf.filterSolve(&V, &done);
    if (!ok.ok()) return ok;
    // Not converged in kMaxRounds (eigenvalues clustered across the block's edge): the exact
    // host solver. Not seen on random or training gradients; there for the worst case.
    if (!done) return hostRefresh(dev, X, xt, rows, cols, r, left, P, hasPrev, flag);
    info = stw + 2;
  } else if (!p.solver) {
    ok = rf.iterate(method == RefreshMethod::Warm, P, left, hasPrev, &V);
    if (!ok.ok()) return ok;
    if (V == nullptr) return Status();  // unusable gradient: P kept
  }
  int64_t len = n, ld = n;
  if (p.refine) {
    // Eigenvectors of the f32 Gram matrix are exact only to eps ||X||^2 / (lambda_i - lambda_j);
    // the f64 Rayleigh-Ritz on X makes them exact within the span of the k vectors, and each pass
    // shrinks what lies outside it by sigma_{k+1} / sigma_i (see the header). One pass after
    // cuSOLVER (its k vectors are eigenvectors of the f32 Gram: outside the span only to
    // eps ||X||^2 / (lambda_i - lambda_{k+1})), two where that costs little (k n other <= 2^30,
    // about 0.1 ms: the result is then exact whatever the f32 solver's accuracy); two after the
    // built-in iteration, whose stopping test leaves the span less exact.
    ok = rf.refine(V, n, reversed, p.passes, &V, &ld);
    if (!ok.ok()) return ok;
    len = ld;
    reversed = false;
  } else if (!p.same) {
    // The other side: u = X v (Gram X^T X) or v = X^T u (Gram X X^T), renormalised.
    const float* Vr = reversed ? V + (got - r) * n : V;  // the r largest (still ascending)
    float* U = ws + p.oU;
    const GemmMode m = method == RefreshMethod::Svd ? GemmMode::Strict : mode;
    ok = p.colsSide ? gemm(dev, mk(r, rows, cols, Vr, ld, false, Xf, cols, true, U, rows), m)
                    : gemm(dev, mk(r, cols, rows, Vr, ld, false, Xf, cols, false, U, cols), m);
    if (!ok.ok()) return ok;
    len = p.other;
    ld = p.other;
    normalizeRowsKernel<<<unsigned(r), 256, 0, st>>>(U, len);
    ok = lastError("galoreRefresh (normalise)");
    if (!ok.ok()) return ok;
    V = U;
  } else if (reversed) {
    V += (got - r) * n;
  }
  writeKernel<<<unsigned(r), 256, 0, st>>>(V, ld, reversed, len, r, left, P, hasPrev, stw, info);
  return lastError("galoreRefresh (write)");
}

Status galoreRefreshMany(int dev, const GaloreRefreshEntry* entries, int64_t count, float* const* ws,
                         const int64_t* wsFloats, int lanes) {
  if (count <= 0) return Status();
  cudaStream_t main;
  Status ok = deviceStream(dev, &main, "galoreRefreshMany");
  if (!ok.ok()) return ok;
  std::vector<cudaStream_t> streams(size_t(lanes), main);
  for (int l = 1; ok.ok() && l < lanes; ++l) ok = laneStream(dev, l, &streams[size_t(l)]);
  if (!ok.ok()) return ok;
  // The lanes start after what the device's stream has enqueued (the gradients, the flag).
  cudaEvent_t start = nullptr;
  if (lanes > 1) {
    ok = statusOf(cudaEventCreateWithFlags(&start, cudaEventDisableTiming), "galoreRefreshMany (event)");
    if (ok.ok()) ok = statusOf(cudaEventRecord(start, main), "galoreRefreshMany (event)");
    for (int l = 1; ok.ok() && l < lanes; ++l)
      ok = statusOf(cudaStreamWaitEvent(streams[size_t(l)], start, 0), "galoreRefreshMany (wait)");
    if (start) cudaEventDestroy(start);
    if (!ok.ok()) return ok;
  }
  std::mutex m;
  std::vector<bool> taken(size_t(count), false);
  int64_t failedAt = count;
  Status failure;
  auto lane = [&](int l) {
    if (l > 0) {
      if (cudaSetDevice(dev) != cudaSuccess) (void)cudaGetLastError();
      useLane(dev, streams[size_t(l)]);
    }
    for (;;) {
      int64_t i = 0;
      {
        std::lock_guard<std::mutex> lock(m);
        if (failedAt < count) break;
        while (i < count && (taken[size_t(i)] || (l > 0 && entries[i].floats > wsFloats[l]))) ++i;
        if (i == count) break;
        taken[size_t(i)] = true;
      }
      const GaloreRefreshEntry& e = entries[i];
      const Status s = galoreRefresh(dev, e.X, DType::F32, e.rows, e.cols, e.rank, e.left, e.P, true, e.flag, e.method,
                                     e.mode, ws[l], wsFloats[l], nullptr);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(m);
        if (i < failedAt) { failedAt = i; failure = s; }
      }
    }
    if (l > 0) useLane(dev, nullptr);
  };
  std::vector<std::thread> helpers;
  for (int l = 1; l < lanes; ++l) {
    try {
      helpers.emplace_back(lane, l);
    } catch (...) {
      break;  // no thread: the lanes that started take the work
    }
  }
  lane(0);
  for (std::thread& t : helpers) t.join();
  // The device's stream waits for every lane.
  for (int l = 1; l < lanes; ++l) {
    cudaEvent_t done = nullptr;
    Status s = statusOf(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "galoreRefreshMany (event)");
    if (s.ok()) s = statusOf(cudaEventRecord(done, streams[size_t(l)]), "galoreRefreshMany (event)");
    if (s.ok()) s = statusOf(cudaStreamWaitEvent(main, done, 0), "galoreRefreshMany (wait)");
    if (done) cudaEventDestroy(done);
    if (!s.ok() && failedAt == count) { failedAt = 0; failure = s; }
  }
  return failedAt < count ? failure : Status();
}

}  // namespace gpu
}  // namespace slimopt
