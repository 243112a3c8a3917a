// Why do two refresh lanes (galoreRefreshMany: one host thread and one stream each) gain only
// 1.29x on the H200 (bench/results/NVIDIA-H200-2026-11-25-24/)? A refresh is mostly small,
// latency-bound work: k x k Dsyevd and Dpotrf at k = 256, small kernels, and a few small
// device-to-host reads that wait for the stream. This times each kind of work on one thread, then
// the same work on each of two threads at once (own stream, own cuSOLVER handle). A ratio of 1.0
// means the two threads overlap fully, 2.0 that they serialise.
//
//   nvcc -O3 -arch=sm_90 -cudart static -o .device/lane bench/micro/lane_overlap.cu -ldl -lpthread
//   LD_LIBRARY_PATH=<dir of libcusolver.so.12> .device/lane
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "harness.cuh"

namespace {

// cusolverDn prototypes (as cuda/galore_refresh.cu declares them; CUSOLVER_EIG_MODE_VECTOR 1,
// CUBLAS_FILL_MODE_LOWER 0).
typedef int (*SolverCreateFn)(void**);
typedef int (*SolverSetStreamFn)(void*, cudaStream_t);
typedef int (*DsyevdBufferSizeFn)(void*, int, int, int, const double*, int, const double*, int*);
typedef int (*DsyevdFn)(void*, int, int, int, double*, int, double*, double*, int, int*);
typedef int (*DpotrfBufferSizeFn)(void*, int, int, double*, int, int*);
typedef int (*DpotrfFn)(void*, int, int, double*, int, double*, int, int*);
constexpr int kEigModeVector = 1, kFillLower = 0;

struct Solver {
  SolverCreateFn create;
  SolverSetStreamFn setStream;
  DsyevdBufferSizeFn syevdSize;
  DsyevdFn syevd;
  DpotrfBufferSizeFn potrfSize;
  DpotrfFn potrf;
};

Solver loadSolver() {
  void* h = micro::openCusolver();
  auto sym = [&](const char* n) { return micro::requiredSymbol(h, n); };
  Solver s;
  s.create = reinterpret_cast<SolverCreateFn>(sym("cusolverDnCreate"));
  s.setStream = reinterpret_cast<SolverSetStreamFn>(sym("cusolverDnSetStream"));
  s.syevdSize = reinterpret_cast<DsyevdBufferSizeFn>(sym("cusolverDnDsyevd_bufferSize"));
  s.syevd = reinterpret_cast<DsyevdFn>(sym("cusolverDnDsyevd"));
  s.potrfSize = reinterpret_cast<DpotrfBufferSizeFn>(sym("cusolverDnDpotrf_bufferSize"));
  s.potrf = reinterpret_cast<DpotrfFn>(sym("cusolverDnDpotrf"));
  return s;
}

// A one-block kernel that spins for about `ns` nanoseconds: latency-bound work on one SM.
__global__ void spinKernel(long long ns) {
  const long long t0 = clock64();
  // clock64 counts SM cycles; ~1.98 GHz on the H200 at its maximum clock.
  while (clock64() - t0 < ns * 2) {
  }
}

// S = M M^T + k I (f64, k x k): symmetric positive definite, a fresh copy per call.
__global__ void spdKernel(double* S, int k, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < int64_t(k) * k; i += int64_t(gridDim.x) * blockDim.x) {
    const int r = int(i / k), c = int(i % k);
    uint32_t x = uint32_t(r < c ? r * 7919 + c : c * 7919 + r) * 2654435761u ^ seed;
    x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15;
    S[i] = (r == c ? double(k) : 0.0) + (double(x) / 4294967296.0 - 0.5);
  }
}

struct Lane {
  cudaStream_t st;
  void* solver;
  double *S, *W, *work;
  int lwork;
  int* info;
  float* small;      // device: a k-vector to read back
  float* pageable;   // host
  float* pinned;     // host, page-locked
};

double wallMs(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Median over 5 of: `work` on lane 0 alone, then on lanes 0 and 1 from two threads at once.
void compare(const char* name, std::vector<Lane>& lanes, const std::function<void(Lane&)>& work) {
  std::vector<double> one, two;
  for (int rep = 0; rep < 6; ++rep) {
    const double a = wallMs([&] { work(lanes[0]); });
    const double b = wallMs([&] {
      std::thread t([&] { work(lanes[1]); });
      work(lanes[0]);
      t.join();
    });
    if (rep > 0) { one.push_back(a); two.push_back(b); }
  }
  const double m1 = micro::median(one), m2 = micro::median(two);
  std::printf("%-58s one thread %8.2f ms   two threads %8.2f ms   ratio %.2f\n", name, m1, m2, m2 / m1);
  std::fflush(stdout);
}

}  // namespace

int main() {
  Solver sv = loadSolver();
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  const int k = 256;
  std::vector<Lane> lanes(2);
  for (Lane& L : lanes) {
    CK(cudaStreamCreateWithFlags(&L.st, cudaStreamNonBlocking));
    if (sv.create(&L.solver) != 0 || sv.setStream(L.solver, L.st) != 0) {
      std::fprintf(stderr, "cusolverDnCreate failed\n");
      return 1;
    }
    CK(cudaMalloc(&L.S, size_t(k) * k * 8));
    CK(cudaMalloc(&L.W, size_t(k) * 8));
    CK(cudaMalloc(&L.info, 4));
    CK(cudaMalloc(&L.small, size_t(k) * 4));
    int ls = 0, lp = 0;
    sv.syevdSize(L.solver, kEigModeVector, kFillLower, k, L.S, k, L.W, &ls);
    sv.potrfSize(L.solver, kFillLower, k, L.S, k, &lp);
    L.lwork = std::max(ls, lp);
    CK(cudaMalloc(&L.work, size_t(L.lwork) * 8));
    L.pageable = static_cast<float*>(std::malloc(size_t(k) * 4));
    CK(cudaMallocHost(&L.pinned, size_t(k) * 4));
  }
  const int iters = 20;
  auto solverOk = [](int rc, const char* what) {
    if (rc != 0) {
      std::fprintf(stderr, "%s status %d\n", what, rc);
      std::exit(1);
    }
  };
  compare("20 x Dsyevd k=256 (stream sync at the end)", lanes, [&](Lane& L) {
    for (int i = 0; i < iters; ++i) {
      spdKernel<<<64, 256, 0, L.st>>>(L.S, k, uint32_t(i));
      solverOk(sv.syevd(L.solver, kEigModeVector, kFillLower, k, L.S, k, L.W, L.work, L.lwork, L.info), "Dsyevd");
    }
    CK(cudaStreamSynchronize(L.st));
  });
  compare("20 x Dpotrf k=256 (stream sync at the end)", lanes, [&](Lane& L) {
    for (int i = 0; i < iters; ++i) {
      spdKernel<<<64, 256, 0, L.st>>>(L.S, k, uint32_t(i));
      solverOk(sv.potrf(L.solver, kFillLower, k, L.S, k, L.work, L.lwork, L.info), "Dpotrf");
    }
    CK(cudaStreamSynchronize(L.st));
  });
  compare("20 x (50 one-block 10 us kernels, stream sync)", lanes, [&](Lane& L) {
    for (int i = 0; i < iters; ++i) {
      for (int j = 0; j < 50; ++j) spinKernel<<<1, 32, 0, L.st>>>(10000);
      CK(cudaStreamSynchronize(L.st));
    }
  });
  compare("20 x (50 kernels, 1 KB read to pageable memory)", lanes, [&](Lane& L) {
    for (int i = 0; i < iters; ++i) {
      for (int j = 0; j < 50; ++j) spinKernel<<<1, 32, 0, L.st>>>(10000);
      CK(cudaMemcpyAsync(L.pageable, L.small, size_t(k) * 4, cudaMemcpyDeviceToHost, L.st));
      CK(cudaStreamSynchronize(L.st));
    }
  });
  compare("20 x (50 kernels, 1 KB read to pinned memory)", lanes, [&](Lane& L) {
    for (int i = 0; i < iters; ++i) {
      for (int j = 0; j < 50; ++j) spinKernel<<<1, 32, 0, L.st>>>(10000);
      CK(cudaMemcpyAsync(L.pinned, L.small, size_t(k) * 4, cudaMemcpyDeviceToHost, L.st));
      CK(cudaStreamSynchronize(L.st));
    }
  });
  compare("20 x (Dsyevd + 1 KB read to pageable memory)", lanes, [&](Lane& L) {
    for (int i = 0; i < iters; ++i) {
      spdKernel<<<64, 256, 0, L.st>>>(L.S, k, uint32_t(i));
      solverOk(sv.syevd(L.solver, kEigModeVector, kFillLower, k, L.S, k, L.W, L.work, L.lwork, L.info), "Dsyevd");
      CK(cudaMemcpyAsync(L.pageable, L.small, size_t(k) * 4, cudaMemcpyDeviceToHost, L.st));
      CK(cudaStreamSynchronize(L.st));
    }
  });
  // The same Dsyevd calls on both streams from one thread, alternated: if Dsyevd waited on the
  // host, these could not overlap at all.
  {
    std::vector<double> one, two;
    for (int rep = 0; rep < 6; ++rep) {
      auto run = [&](int nl) {
        for (int i = 0; i < iters; ++i)
          for (int l = 0; l < nl; ++l) {
            Lane& L = lanes[l];
            spdKernel<<<64, 256, 0, L.st>>>(L.S, k, uint32_t(i));
            solverOk(sv.syevd(L.solver, kEigModeVector, kFillLower, k, L.S, k, L.W, L.work, L.lwork, L.info), "Dsyevd");
          }
        for (int l = 0; l < nl; ++l) CK(cudaStreamSynchronize(lanes[l].st));
      };
      const double a = wallMs([&] { run(1); }), b = wallMs([&] { run(2); });
      if (rep > 0) { one.push_back(a); two.push_back(b); }
    }
    const double m1 = micro::median(one), m2 = micro::median(two);
    std::printf("%-58s one stream %8.2f ms   two streams %8.2f ms   ratio %.2f\n",
                "20 x Dsyevd k=256, two streams from one thread", m1, m2, m2 / m1);
    // Host time of one Dsyevd call (enqueue only, the stream busy behind a long kernel).
    Lane& L = lanes[0];
    spinKernel<<<1, 32, 0, L.st>>>(200000000);  // ~0.2 s
    const double host = wallMs([&] {
      for (int i = 0; i < iters; ++i)
        solverOk(sv.syevd(L.solver, kEigModeVector, kFillLower, k, L.S, k, L.W, L.work, L.lwork, L.info), "Dsyevd");
    });
    CK(cudaStreamSynchronize(L.st));
    std::printf("host time of one Dsyevd call behind a busy stream: %.3f ms (a call that waited would show ~200 ms)\n",
                host / iters);
  }
  return 0;
}
