// Helpers the launchers share with runtime.cu (CUDA-side only; the glue never includes this).
#pragma once
#include <cuda_runtime.h>
#include <mutex>
#include <string>
#include "galore.cuh"
#include "runtime.h"

namespace slimopt {
namespace gpu {

// Selects dev on this thread and returns its one stream (created on first use), or the lane this
// thread has selected for dev.
Status deviceStream(int dev, cudaStream_t* out, const char* what);
// Lanes: more streams of dev (lane >= 1, created once, kept) for work that runs beside the device's
// stream on other host threads (GaLore's concurrent refreshes). While a thread has selected one
// (useLane), everything it does on dev's stream (deviceStream, copies, allocations, synchronize)
// goes to the lane instead; null selects the device's stream again.
Status laneStream(int dev, int lane, cudaStream_t* out);
void useLane(int dev, cudaStream_t st);

// A run-time loaded library's handle for dev and stream st, created once per stream (creation is
// slow; one per stream, so threads on their own lanes never share one). Lib: the library's table,
// with create(void**), setStream(void*, cudaStream_t) and handles[64] of (stream, handle) pairs;
// m guards it. Null when dev is out of range or creation fails.
template <typename Lib>
void* streamHandle(Lib* lib, std::mutex& m, int dev, cudaStream_t st) {
  if (dev < 0 || dev >= 64) return nullptr;
  std::lock_guard<std::mutex> lock(m);
  for (const auto& e : lib->handles[dev])
    if (e.first == st) return e.second;
  void* h = nullptr;
  if (lib->create(&h) != 0) return nullptr;
  if (lib->setStream(h, st) != 0) return nullptr;
  lib->handles[dev].emplace_back(st, h);
  return h;
}
// A Status for a CUDA error (classified; clears the thread's last error), or success.
Status statusOf(cudaError_t e, const std::string& what);
// A refused argument, as cudaErrorInvalidValue with our message.
Status invalidArg(const std::string& what);
// Row-major GEMM on dev's stream (cuda/galore.cu): cuBLAS when loaded and every operand is f32,
// else the built-in kernel. alphaBeta: device [alpha, beta] or null; flag: the built-in kernel does
// nothing when *flag != 0 (cuBLAS cannot skip: callers must make its result harmless).
Status runGemm(int dev, const GemmArgs& g, GemmMode mode, const float* alphaBeta, const int32_t* flag);
// The Gram matrix A (n x n) = X^T X (colsSide, n = cols) or X X^T (n = rows) of a row-major f32 X,
// strict f32 (cuda/galore.cu): cuBLAS Ssyrk (one triangle, half the GEMM's work) and a mirror
// kernel when it loads, else a full GEMM through runGemm.
Status gramStrict(int dev, const float* X, int64_t rows, int64_t cols, bool colsSide, float* A);
// Whether environment variable `name` is set to `value` (the diagnostic switches, read once by
// their callers).
bool envIs(const char* name, const char* value);
// Multiprocessor count of dev (cached).
int smCount(int dev);

}  // namespace gpu
}  // namespace slimopt
