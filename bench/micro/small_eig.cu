// Which cuSOLVER routine solves a small dense symmetric f64 eigen-problem fastest, and which of them
// block the host thread? The projector refresh calls cusolverDnDsyevd at n = 256 (~1.8 ms each,
// latency-bound), twice per refresh. This times, for n = 192, 256 and 640, on two inputs:
//   dsyevd-vec      Dsyevd with vectors (the baseline)
//   dsyevd-val      Dsyevd, values only
//   dsyevdx-top     Dsyevdx, index range [n/2+1, n] (the top half), vectors
//   xsyevbatched    XsyevBatched, batchSize 1, vectors (CUDA 12.6+ libraries only)
//   xsyevd          Xsyevd (64-bit API), vectors
//   dsyevj-default  Dsyevj, default tolerance and sweeps
//   dsyevj-1e-13    Dsyevj, tolerance 1e-13, at most 20 sweeps
// Inputs: "wishart", A = B B^T / 4096 with B n x 4096 standard normal (a flat, clustered spectrum
// like the refresh's problems), and "near-diag", A = diag(d) + E with d_i = 1 + 3 (1 - i/n)^2 and E
// symmetric, 1e-3 mean(d) N(0,1) entries (a Rayleigh-Ritz problem after converged subspace
// iteration).
//
// Per row: "device" is the median CUDA-event time of one call over 20 calls (after 3 warm-ups) on
// a dedicated non-blocking stream; "host-behind-50ms" is the host (std::chrono) time of one call
// made while a ~50 ms spin kernel is queued in front of it on that stream: ~50 ms means the routine
// waits on the host for the stream to drain, a small value that it only enqueues. Accuracy comes
// from that last call (so a routine that read A before the stream reached it would show): resid =
// max over computed pairs ||A v - lambda v||_2 / ||A||_F, orth = max |V^T V - I| over computed
// vectors, dlambda = max |lambda - lambda(dsyevd-vec)| (absolute; the eigenvalues are O(1)).
//
//   nvcc -O3 -arch=sm_90 -cudart static -o .device/smalleig bench/micro/small_eig.cu -ldl -lpthread
//   LD_LIBRARY_PATH=<dir of libcusolver.so.12> .device/smalleig
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "harness.cuh"

namespace {

// ---- cuSOLVER, declared here (the build has no cuSOLVER headers) ----------------------------
// Enum values from the cuSOLVER documentation (all enums are int-sized, passed as int):
// CUSOLVER_EIG_MODE_NOVECTOR 0, CUSOLVER_EIG_MODE_VECTOR 1; CUSOLVER_EIG_RANGE_I 1002;
// CUBLAS_FILL_MODE_LOWER 0; CUDA_R_64F 1 (library_types.h); CUSOLVER_STATUS_SUCCESS 0.
// Handles (cusolverDnHandle_t, cusolverDnParams_t, syevjInfo_t) are opaque pointers: void*.
constexpr int kEigModeNoVector = 0, kEigModeVector = 1, kEigRangeI = 1002, kFillLower = 0, kCudaR64F = 1;

// cusolverDnCreate(handle*), cusolverDnDestroy(handle), cusolverDnSetStream(handle, stream),
// cusolverGetVersion(int*), cusolverDnCreateParams(params*) / cusolverDnDestroyParams(params),
// cusolverDnCreateSyevjInfo(info*) / cusolverDnDestroySyevjInfo(info).
typedef int (*CreateFn)(void**);
typedef int (*DestroyFn)(void*);
typedef int (*SetStreamFn)(void*, cudaStream_t);
typedef int (*GetVersionFn)(int*);
// cusolverDnDsyevd_bufferSize(handle, jobz, uplo, n, A, lda, W, lwork*) /
// cusolverDnDsyevd(handle, jobz, uplo, n, A, lda, W, work, lwork, devInfo).
typedef int (*DsyevdBufferSizeFn)(void*, int, int, int, const double*, int, const double*, int*);
typedef int (*DsyevdFn)(void*, int, int, int, double*, int, double*, double*, int, int*);
// cusolverDnDsyevdx_bufferSize(handle, jobz, range, uplo, n, A, lda, vl, vu, il, iu, meig*, W, lwork*) /
// cusolverDnDsyevdx(handle, jobz, range, uplo, n, A, lda, vl, vu, il, iu, meig*, W, work, lwork,
// devInfo); meig is a host pointer.
typedef int (*DsyevdxBufferSizeFn)(void*, int, int, int, int, const double*, int, double, double, int, int, int*,
                                   const double*, int*);
typedef int (*DsyevdxFn)(void*, int, int, int, int, double*, int, double, double, int, int, int*, double*, double*,
                         int, int*);
// cusolverDnXsyevd_bufferSize(handle, params, jobz, uplo, int64 n, dataTypeA, A, int64 lda, dataTypeW,
// W, computeType, size_t* deviceBytes, size_t* hostBytes) /
// cusolverDnXsyevd(handle, params, jobz, uplo, int64 n, dataTypeA, A, int64 lda, dataTypeW, W,
// computeType, bufferOnDevice, size_t deviceBytes, bufferOnHost, size_t hostBytes, int* info).
typedef int (*XsyevdBufferSizeFn)(void*, void*, int, int, int64_t, int, const void*, int64_t, int, const void*, int,
                                  size_t*, size_t*);
typedef int (*XsyevdFn)(void*, void*, int, int, int64_t, int, void*, int64_t, int, void*, int, void*, size_t, void*,
                        size_t, int*);
// cusolverDnXsyevBatched_bufferSize: as Xsyevd_bufferSize plus a trailing int64 batchSize;
// cusolverDnXsyevBatched: as Xsyevd plus a trailing int64 batchSize (info: batchSize ints).
typedef int (*XsyevBatchedBufferSizeFn)(void*, void*, int, int, int64_t, int, const void*, int64_t, int,
                                        const void*, int, size_t*, size_t*, int64_t);
typedef int (*XsyevBatchedFn)(void*, void*, int, int, int64_t, int, void*, int64_t, int, void*, int, void*, size_t,
                              void*, size_t, int*, int64_t);
// cusolverDnXsyevjSetTolerance(info, double), cusolverDnXsyevjSetMaxSweeps(info, int),
// cusolverDnXsyevjGetSweeps(handle, info, int* executed);
// cusolverDnDsyevj_bufferSize(handle, jobz, uplo, n, A, lda, W, lwork*, info) /
// cusolverDnDsyevj(handle, jobz, uplo, n, A, lda, W, work, lwork, devInfo, info).
typedef int (*SyevjSetToleranceFn)(void*, double);
typedef int (*SyevjSetMaxSweepsFn)(void*, int);
typedef int (*SyevjGetSweepsFn)(void*, void*, int*);
typedef int (*DsyevjBufferSizeFn)(void*, int, int, int, const double*, int, const double*, int*, void*);
typedef int (*DsyevjFn)(void*, int, int, int, double*, int, double*, double*, int, int*, void*);

// Required: create, destroy, setStream, dsyevd (the baseline). Everything else may be null.
struct Solver {
  std::string path;
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn setStream = nullptr;
  GetVersionFn getVersion = nullptr;
  DsyevdBufferSizeFn dsyevdSize = nullptr;
  DsyevdFn dsyevd = nullptr;
  DsyevdxBufferSizeFn dsyevdxSize = nullptr;
  DsyevdxFn dsyevdx = nullptr;
  CreateFn createParams = nullptr;
  DestroyFn destroyParams = nullptr;
  XsyevdBufferSizeFn xsyevdSize = nullptr;
  XsyevdFn xsyevd = nullptr;
  XsyevBatchedBufferSizeFn xsyevBatchedSize = nullptr;
  XsyevBatchedFn xsyevBatched = nullptr;
  CreateFn createSyevjInfo = nullptr;
  DestroyFn destroySyevjInfo = nullptr;
  SyevjSetToleranceFn syevjSetTolerance = nullptr;
  SyevjSetMaxSweepsFn syevjSetMaxSweeps = nullptr;
  SyevjGetSweepsFn syevjGetSweeps = nullptr;
  DsyevjBufferSizeFn dsyevjSize = nullptr;
  DsyevjFn dsyevj = nullptr;
};

Solver loadSolver() {
  void* h = micro::openCusolver();
  auto optional = [&](const char* n) { return dlsym(h, n); };
  auto required = [&](const char* n) { return micro::requiredSymbol(h, n); };
  Solver s;
  s.create = reinterpret_cast<CreateFn>(required("cusolverDnCreate"));
  s.destroy = reinterpret_cast<DestroyFn>(required("cusolverDnDestroy"));
  s.setStream = reinterpret_cast<SetStreamFn>(required("cusolverDnSetStream"));
  s.dsyevdSize = reinterpret_cast<DsyevdBufferSizeFn>(required("cusolverDnDsyevd_bufferSize"));
  s.dsyevd = reinterpret_cast<DsyevdFn>(required("cusolverDnDsyevd"));
  s.getVersion = reinterpret_cast<GetVersionFn>(optional("cusolverGetVersion"));
  s.dsyevdxSize = reinterpret_cast<DsyevdxBufferSizeFn>(optional("cusolverDnDsyevdx_bufferSize"));
  s.dsyevdx = reinterpret_cast<DsyevdxFn>(optional("cusolverDnDsyevdx"));
  s.createParams = reinterpret_cast<CreateFn>(optional("cusolverDnCreateParams"));
  s.destroyParams = reinterpret_cast<DestroyFn>(optional("cusolverDnDestroyParams"));
  s.xsyevdSize = reinterpret_cast<XsyevdBufferSizeFn>(optional("cusolverDnXsyevd_bufferSize"));
  s.xsyevd = reinterpret_cast<XsyevdFn>(optional("cusolverDnXsyevd"));
  s.xsyevBatchedSize = reinterpret_cast<XsyevBatchedBufferSizeFn>(optional("cusolverDnXsyevBatched_bufferSize"));
  s.xsyevBatched = reinterpret_cast<XsyevBatchedFn>(optional("cusolverDnXsyevBatched"));
  s.createSyevjInfo = reinterpret_cast<CreateFn>(optional("cusolverDnCreateSyevjInfo"));
  s.destroySyevjInfo = reinterpret_cast<DestroyFn>(optional("cusolverDnDestroySyevjInfo"));
  s.syevjSetTolerance = reinterpret_cast<SyevjSetToleranceFn>(optional("cusolverDnXsyevjSetTolerance"));
  s.syevjSetMaxSweeps = reinterpret_cast<SyevjSetMaxSweepsFn>(optional("cusolverDnXsyevjSetMaxSweeps"));
  s.syevjGetSweeps = reinterpret_cast<SyevjGetSweepsFn>(optional("cusolverDnXsyevjGetSweeps"));
  s.dsyevjSize = reinterpret_cast<DsyevjBufferSizeFn>(optional("cusolverDnDsyevj_bufferSize"));
  s.dsyevj = reinterpret_cast<DsyevjFn>(optional("cusolverDnDsyevj"));
  Dl_info where;
  s.path = dladdr(reinterpret_cast<void*>(s.dsyevd), &where) != 0 && where.dli_fname != nullptr ? where.dli_fname
                                                                                                  : "libcusolver";
  return s;
}

// ---- Variants -------------------------------------------------------------------------------

struct Buffers {
  int n;
  double* A0;  // the input, copied into A before every call (the routines overwrite A)
  double* A;
  double* W;
  int* info;
};

struct Variant {
  std::string name;
  bool vectors = true;
  int il = 1;           // 1-based index, in the ascending spectrum, of the first computed pair
  int pairs = 0;        // computed pairs (dsyevdx: meig of the latest call)
  int meig = 0;         // dsyevdx's host output
  void* deviceWork = nullptr;
  std::vector<char> hostWork;
  void* params = nullptr;      // cusolverDnParams_t (Xsyevd, XsyevBatched)
  void* syevjInfo = nullptr;   // syevjInfo_t (Dsyevj)
  std::function<int(Variant&)> call;  // one solve of A (in place) into W; returns the cuSOLVER status
};

// Prints why a variant is left out at this n (status < 0: no cuSOLVER status to show).
void skip(int n, const char* name, const char* why, int status) {
  if (status >= 0)
    std::printf("n=%-4d %-26s %s status %d\n", n, name, why, status);
  else
    std::printf("n=%-4d %-26s %s\n", n, name, why);
}

void* deviceBytes(size_t bytes) {
  void* p = nullptr;
  CK(cudaMalloc(&p, bytes > 0 ? bytes : 8));
  return p;
}

// The variants the loaded library offers at this n, workspaces sized and allocated.
std::vector<Variant> makeVariants(const Solver& sv, void* handle, const Buffers& b) {
  const int n = b.n;
  std::vector<Variant> out;
  for (int jobz : {kEigModeVector, kEigModeNoVector}) {
    Variant v;
    v.name = jobz == kEigModeVector ? "dsyevd-vec" : "dsyevd-val";
    v.vectors = jobz == kEigModeVector;
    v.pairs = n;
    int lwork = 0;
    const int rc = sv.dsyevdSize(handle, jobz, kFillLower, n, b.A, n, b.W, &lwork);
    if (rc != 0) { skip(n, v.name.c_str(), "bufferSize failed,", rc); continue; }
    v.deviceWork = deviceBytes(size_t(lwork) * sizeof(double));
    v.call = [&sv, handle, b, jobz, lwork](Variant& self) {
      return sv.dsyevd(handle, jobz, kFillLower, b.n, b.A, b.n, b.W, static_cast<double*>(self.deviceWork), lwork,
                       b.info);
    };
    out.push_back(std::move(v));
  }
  if (sv.dsyevdx != nullptr && sv.dsyevdxSize != nullptr) {
    Variant v;
    v.name = "dsyevdx-top";
    v.il = n / 2 + 1;
    const int il = v.il, iu = n;
    int lwork = 0, meig = 0;
    const int rc = sv.dsyevdxSize(handle, kEigModeVector, kEigRangeI, kFillLower, n, b.A, n, 0.0, 0.0, il, iu, &meig,
                                  b.W, &lwork);
    if (rc != 0) {
      skip(n, "dsyevdx-top", "bufferSize failed,", rc);
    } else {
      v.deviceWork = deviceBytes(size_t(lwork) * sizeof(double));
      v.call = [&sv, handle, b, il, iu, lwork](Variant& self) {
        const int status = sv.dsyevdx(handle, kEigModeVector, kEigRangeI, kFillLower, b.n, b.A, b.n, 0.0, 0.0, il, iu,
                                      &self.meig, b.W, static_cast<double*>(self.deviceWork), lwork, b.info);
        self.pairs = self.meig;
        return status;
      };
      out.push_back(std::move(v));
    }
  } else {
    skip(n, "dsyevdx-top", "Dsyevdx: not in this library", -1);
  }
  // XsyevBatched and Xsyevd share the 64-bit API's shape; batchSize 1 for the batched one.
  for (bool batched : {true, false}) {
    const char* name = batched ? "xsyevbatched" : "xsyevd";
    const bool present = sv.createParams != nullptr &&
                         (batched ? sv.xsyevBatched != nullptr && sv.xsyevBatchedSize != nullptr
                                  : sv.xsyevd != nullptr && sv.xsyevdSize != nullptr);
    if (!present) {
      skip(n, name, batched ? "XsyevBatched: not in this library" : "Xsyevd: not in this library", -1);
      continue;
    }
    Variant v;
    v.name = name;
    v.pairs = n;
    int rc = sv.createParams(&v.params);
    if (rc != 0) { skip(n, name, "cusolverDnCreateParams failed,", rc); continue; }
    size_t devBytes = 0, hostBytes = 0;
    rc = batched ? sv.xsyevBatchedSize(handle, v.params, kEigModeVector, kFillLower, n, kCudaR64F, b.A, n, kCudaR64F,
                                       b.W, kCudaR64F, &devBytes, &hostBytes, 1)
                 : sv.xsyevdSize(handle, v.params, kEigModeVector, kFillLower, n, kCudaR64F, b.A, n, kCudaR64F, b.W,
                                 kCudaR64F, &devBytes, &hostBytes);
    if (rc != 0) {
      skip(n, name, "bufferSize failed,", rc);
      if (sv.destroyParams != nullptr) sv.destroyParams(v.params);
      continue;
    }
    v.deviceWork = deviceBytes(devBytes);
    v.hostWork.resize(hostBytes);
    v.call = [&sv, handle, b, batched, devBytes, hostBytes](Variant& self) {
      void* host = hostBytes > 0 ? self.hostWork.data() : nullptr;
      return batched ? sv.xsyevBatched(handle, self.params, kEigModeVector, kFillLower, b.n, kCudaR64F, b.A, b.n,
                                       kCudaR64F, b.W, kCudaR64F, self.deviceWork, devBytes, host, hostBytes, b.info, 1)
                     : sv.xsyevd(handle, self.params, kEigModeVector, kFillLower, b.n, kCudaR64F, b.A, b.n, kCudaR64F,
                                 b.W, kCudaR64F, self.deviceWork, devBytes, host, hostBytes, b.info);
    };
    out.push_back(std::move(v));
  }
  // Dsyevj twice: its defaults, and a tolerance near f64 accuracy with a sweep cap.
  for (bool tuned : {false, true}) {
    const char* name = tuned ? "dsyevj-1e-13" : "dsyevj-default";
    if (sv.dsyevj == nullptr || sv.dsyevjSize == nullptr || sv.createSyevjInfo == nullptr ||
        (tuned && (sv.syevjSetTolerance == nullptr || sv.syevjSetMaxSweeps == nullptr))) {
      skip(n, name, "Dsyevj: not in this library", -1);
      continue;
    }
    Variant v;
    v.name = name;
    v.pairs = n;
    int rc = sv.createSyevjInfo(&v.syevjInfo);
    if (rc != 0) { skip(n, name, "cusolverDnCreateSyevjInfo failed,", rc); continue; }
    if (tuned) {
      if ((rc = sv.syevjSetTolerance(v.syevjInfo, 1e-13)) != 0 || (rc = sv.syevjSetMaxSweeps(v.syevjInfo, 20)) != 0) {
        skip(n, name, "setting tolerance / sweeps failed,", rc);
        if (sv.destroySyevjInfo != nullptr) sv.destroySyevjInfo(v.syevjInfo);
        continue;
      }
    }
    int lwork = 0;
    rc = sv.dsyevjSize(handle, kEigModeVector, kFillLower, n, b.A, n, b.W, &lwork, v.syevjInfo);
    if (rc != 0) {
      skip(n, name, "bufferSize failed,", rc);
      if (sv.destroySyevjInfo != nullptr) sv.destroySyevjInfo(v.syevjInfo);
      continue;
    }
    v.deviceWork = deviceBytes(size_t(lwork) * sizeof(double));
    v.call = [&sv, handle, b, lwork](Variant& self) {
      return sv.dsyevj(handle, kEigModeVector, kFillLower, b.n, b.A, b.n, b.W, static_cast<double*>(self.deviceWork),
                       lwork, b.info, self.syevjInfo);
    };
    out.push_back(std::move(v));
  }
  return out;
}

void freeVariants(const Solver& sv, std::vector<Variant>& variants) {
  for (Variant& v : variants) {
    CK(cudaFree(v.deviceWork));
    if (v.params != nullptr && sv.destroyParams != nullptr) sv.destroyParams(v.params);
    if (v.syevjInfo != nullptr && sv.destroySyevjInfo != nullptr) sv.destroySyevjInfo(v.syevjInfo);
  }
  variants.clear();
}

// ---- Inputs (host, double, deterministic) ---------------------------------------------------

// A = B B^T / m, B n x m standard normal.
std::vector<double> wishart(int n, int m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> B(size_t(n) * m), A(size_t(n) * n);
  for (double& x : B) x = normal(rng);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j <= i; ++j) {
      const double* bi = &B[size_t(i) * m];
      const double* bj = &B[size_t(j) * m];
      double s = 0;
      for (int p = 0; p < m; ++p) s += bi[p] * bj[p];
      A[size_t(i) * n + j] = A[size_t(j) * n + i] = s / m;
    }
  return A;
}

// A = diag(d) + E, d_i = 1 + 3 (1 - i/n)^2, E symmetric with 1e-3 mean(d) N(0,1) entries.
std::vector<double> nearDiagonal(int n, uint64_t seed) {
  std::vector<double> d(n), A(size_t(n) * n);
  double mean = 0;
  for (int i = 0; i < n; ++i) {
    const double t = 1.0 - double(i) / n;
    d[i] = 1.0 + 3.0 * t * t;
    mean += d[i] / n;
  }
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j <= i; ++j) A[size_t(i) * n + j] = A[size_t(j) * n + i] = 1e-3 * mean * normal(rng);
  for (int i = 0; i < n; ++i) A[size_t(i) * n + i] += d[i];
  return A;
}

// ---- Accuracy (host, double) ----------------------------------------------------------------

// Negative: not computed (printed "-"); NaN outputs stay NaN.
struct Accuracy {
  double resid = -1, orth = -1, dlambda = -1;
};

// max that keeps a NaN (std::fmax would drop it and hide a broken result).
double worse(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : std::fmax(a, b); }

// V: column-major n x pairs (pair k in column k), w: pairs ascending values, the pairs being
// spectrum indices il-1 .. il-2+pairs; wRef: dsyevd's full spectrum (empty if it failed).
Accuracy accuracy(const std::vector<double>& A, int n, const double* V, const double* w, int pairs, int il,
                  const std::vector<double>& wRef) {
  Accuracy acc;
  if (V != nullptr) {
    double frob = 0;
    for (double a : A) frob += a * a;
    frob = std::sqrt(frob);
    acc.resid = 0;
    for (int k = 0; k < pairs; ++k) {
      const double* v = V + size_t(k) * n;
      double s2 = 0;
      for (int i = 0; i < n; ++i) {
        const double* row = &A[size_t(i) * n];  // symmetric: row i = column i
        double s = 0;
        for (int j = 0; j < n; ++j) s += row[j] * v[j];
        const double ri = s - w[k] * v[i];
        s2 += ri * ri;
      }
      acc.resid = worse(acc.resid, std::sqrt(s2) / frob);
    }
    acc.orth = 0;
    for (int a = 0; a < pairs; ++a)
      for (int c = 0; c <= a; ++c) {
        const double* va = V + size_t(a) * n;
        const double* vc = V + size_t(c) * n;
        double s = 0;
        for (int i = 0; i < n; ++i) s += va[i] * vc[i];
        acc.orth = worse(acc.orth, std::fabs(s - (a == c ? 1.0 : 0.0)));
      }
  }
  if (!wRef.empty()) {
    acc.dlambda = 0;
    for (int k = 0; k < pairs; ++k) acc.dlambda = worse(acc.dlambda, std::fabs(w[k] - wRef[size_t(il - 1 + k)]));
  }
  return acc;
}

std::string sci(double x) {
  if (std::isnan(x)) return "    nan";
  if (x < 0) return "      -";
  char s[32];
  std::snprintf(s, sizeof s, "%7.1e", x);
  return s;
}

// ---- Timing ---------------------------------------------------------------------------------

// Spins one warp until `cycles` SM clocks have passed: a long, cheap kernel to keep the stream busy.
__global__ void spinKernel(long long cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}

struct Timing {
  cudaStream_t st;
  cudaEvent_t start, stop;
  long long spinCycles;  // calibrated to ~50 ms
};

float eventMs(const Timing& t) {
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, t.start, t.stop));
  return ms;
}

int readInfo(const Timing& t, const int* dInfo) {
  int info = 0;
  CK(cudaMemcpyAsync(&info, dInfo, sizeof(int), cudaMemcpyDeviceToHost, t.st));
  CK(cudaStreamSynchronize(t.st));
  return info;
}

// Times one variant on the input in b.A0 and prints its row. wRef: dsyevd-vec's eigenvalues for
// this input, filled when `v` is dsyevd-vec itself.
void runVariant(const Solver& sv, void* handle, const Timing& t, const Buffers& b, Variant& v, const char* input,
                const std::vector<double>& hostA, std::vector<double>& wRef) {
  const int n = b.n;
  const size_t bytes = size_t(n) * n * sizeof(double);
  char label[96];
  std::snprintf(label, sizeof label, "n=%-4d %-10s %-15s", n, input, v.name.c_str());
  const int warmups = 3, reps = 20;
  std::vector<double> us;
  int badInfo = 0;
  for (int i = 0; i < warmups + reps; ++i) {
    CK(cudaMemcpyAsync(b.A, b.A0, bytes, cudaMemcpyDeviceToDevice, t.st));
    CK(cudaEventRecord(t.start, t.st));
    const int status = v.call(v);
    CK(cudaEventRecord(t.stop, t.st));
    CK(cudaEventSynchronize(t.stop));
    CK(cudaGetLastError());
    if (status != 0) {
      std::printf("%s failed: cuSOLVER status %d (call %d)\n", label, status, i);
      return;
    }
    const int info = readInfo(t, b.info);
    if (info != 0 && badInfo == 0) badInfo = info;
    if (i >= warmups) us.push_back(eventMs(t) * 1e3);
  }
  // Host time of one call with the stream ~50 ms behind.
  CK(cudaMemcpyAsync(b.A, b.A0, bytes, cudaMemcpyDeviceToDevice, t.st));
  spinKernel<<<1, 32, 0, t.st>>>(t.spinCycles);
  CK(cudaGetLastError());
  const auto h0 = std::chrono::steady_clock::now();
  const int status = v.call(v);
  const double hostMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - h0).count();
  CK(cudaStreamSynchronize(t.st));
  CK(cudaGetLastError());
  if (status != 0) {
    std::printf("%s failed behind the spin kernel: cuSOLVER status %d\n", label, status);
    return;
  }
  const int lastInfo = readInfo(t, b.info);
  if (lastInfo != 0) badInfo = lastInfo;
  int sweeps = -1;
  if (v.syevjInfo != nullptr && sv.syevjGetSweeps != nullptr) {
    const int rc = sv.syevjGetSweeps(handle, v.syevjInfo, &sweeps);
    if (rc != 0) sweeps = -2;
  }

  // Accuracy of that last call.
  const int pairs = v.pairs;
  std::vector<double> w(n), V;
  CK(cudaMemcpy(w.data(), b.W, size_t(n) * sizeof(double), cudaMemcpyDeviceToHost));
  if (v.vectors) {
    V.resize(size_t(n) * n);
    CK(cudaMemcpy(V.data(), b.A, bytes, cudaMemcpyDeviceToHost));
  }
  const bool isReference = v.name == "dsyevd-vec";
  if (isReference) {
    wRef.clear();
    if (lastInfo == 0) wRef = w;
  }
  Accuracy acc;
  if (pairs > 0 && pairs <= n)
    acc = accuracy(hostA, n, v.vectors ? V.data() : nullptr, w.data(), pairs, v.il, wRef);

  std::string extra;
  if (v.name == "dsyevdx-top") extra += "  meig " + std::to_string(pairs);
  if (sweeps >= 0) extra += "  sweeps " + std::to_string(sweeps);
  if (sweeps == -2) extra += "  sweeps ?";
  if (badInfo != 0) extra += "  devInfo " + std::to_string(badInfo) + " (nonzero)";
  std::printf("%s device %9.1f us  host-behind-50ms %8.3f ms  resid %s  orth %s  dlambda %s%s\n", label,
              micro::median(us), hostMs, sci(acc.resid).c_str(), sci(acc.orth).c_str(), sci(acc.dlambda).c_str(),
              extra.c_str());
  std::fflush(stdout);
}

}  // namespace

int main() {
  const Solver sv = loadSolver();
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  int version = -1;
  if (sv.getVersion != nullptr && sv.getVersion(&version) != 0) version = -1;
  std::printf("device %s, %d SMs; %s, cusolverGetVersion %d\n", prop.name, prop.multiProcessorCount, sv.path.c_str(),
              version);

  Timing t;
  CK(cudaStreamCreateWithFlags(&t.st, cudaStreamNonBlocking));
  CK(cudaEventCreate(&t.start));
  CK(cudaEventCreate(&t.stop));
  void* handle = nullptr;
  int rc = sv.create(&handle);
  if (rc == 0) rc = sv.setStream(handle, t.st);
  if (rc != 0) {
    std::fprintf(stderr, "cusolverDnCreate / SetStream failed: status %d\n", rc);
    return 1;
  }

  // Calibrate the spin kernel to ~50 ms of device time (clock64 counts SM cycles; the clock varies).
  {
    const long long probe = 20000000;
    spinKernel<<<1, 32, 0, t.st>>>(probe);  // warm-up, lets the clock ramp
    CK(cudaEventRecord(t.start, t.st));
    spinKernel<<<1, 32, 0, t.st>>>(probe);
    CK(cudaEventRecord(t.stop, t.st));
    CK(cudaEventSynchronize(t.stop));
    CK(cudaGetLastError());
    t.spinCycles = (long long)(double(probe) * 50.0 / eventMs(t));
    CK(cudaEventRecord(t.start, t.st));
    spinKernel<<<1, 32, 0, t.st>>>(t.spinCycles);
    CK(cudaEventRecord(t.stop, t.st));
    CK(cudaEventSynchronize(t.stop));
    std::printf("spin kernel: %.2f ms on the device (%lld cycles); a routine that waits for the stream shows a "
                "host-behind-50ms time near that\n\n",
                eventMs(t), t.spinCycles);
  }

  for (int n : {192, 256, 640}) {
    Buffers b;
    b.n = n;
    CK(cudaMalloc(&b.A0, size_t(n) * n * sizeof(double)));
    CK(cudaMalloc(&b.A, size_t(n) * n * sizeof(double)));
    CK(cudaMalloc(&b.W, size_t(n) * sizeof(double)));
    CK(cudaMalloc(&b.info, sizeof(int)));
    std::vector<Variant> variants = makeVariants(sv, handle, b);
    for (int input = 0; input < 2; ++input) {
      const char* inputName = input == 0 ? "wishart" : "near-diag";
      const std::vector<double> hostA = input == 0 ? wishart(n, 4096, 1000 + n) : nearDiagonal(n, 2000 + n);
      CK(cudaMemcpy(b.A0, hostA.data(), hostA.size() * sizeof(double), cudaMemcpyHostToDevice));
      std::vector<double> wRef;  // dsyevd-vec runs first and fills it
      for (Variant& v : variants) runVariant(sv, handle, t, b, v, inputName, hostA, wRef);
    }
    std::printf("\n");
    freeVariants(sv, variants);
    CK(cudaFree(b.A0));
    CK(cudaFree(b.A));
    CK(cudaFree(b.W));
    CK(cudaFree(b.info));
  }

  sv.destroy(handle);
  CK(cudaEventDestroy(t.start));
  CK(cudaEventDestroy(t.stop));
  CK(cudaStreamDestroy(t.st));
  return 0;
}
