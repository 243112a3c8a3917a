// The bandwidth probe (the copy that sets the floor of every memory-bound step) and event timing.
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdint>
#include "internal.cuh"
#include "launchers.h"

namespace slimopt {
namespace gpu {

namespace {

constexpr int kThreads = 512;
constexpr int kUnroll = 4;  // independent 16-byte loads in flight per thread

// dst = src over `bytes`. When both pointers share their offset from 16-byte alignment, a scalar
// head brings them to alignment, then 16-byte accesses (4 per thread per iteration), then a
// scalar tail; otherwise bytewise.
__global__ void __launch_bounds__(kThreads) copyKernelImpl(uint8_t* __restrict__ dst,
                                                            const uint8_t* __restrict__ src,
                                                            size_t bytes) {
  const size_t tid = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t nthreads = size_t(gridDim.x) * blockDim.x;
  size_t mis = reinterpret_cast<uintptr_t>(src) & 15u;
  if (mis != (reinterpret_cast<uintptr_t>(dst) & 15u)) {
    for (size_t i = tid; i < bytes; i += nthreads) dst[i] = src[i];
    return;
  }
  size_t head = std::min(bytes, mis ? 16 - mis : size_t(0));
  if (tid < head) dst[tid] = src[tid];
  const uint4* s = reinterpret_cast<const uint4*>(src + head);
  uint4* d = reinterpret_cast<uint4*>(dst + head);
  size_t nv = (bytes - head) / 16;
  size_t i = tid;
  for (; i + (kUnroll - 1) * nthreads < nv; i += kUnroll * nthreads) {
    uint4 r[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) r[j] = __ldcs(s + i + j * nthreads);
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) __stcs(d + i + j * nthreads, r[j]);
  }
  for (; i < nv; i += nthreads) __stcs(d + i, __ldcs(s + i));
  size_t tail = head + nv * 16;
  if (tail + tid < bytes) dst[tail + tid] = src[tail + tid];
}

}  // namespace

Status copyKernel(int dev, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status();
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "copyKernel");
  if (!ok.ok()) return ok;
  int occ = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, copyKernelImpl, kThreads, 0) != cudaSuccess ||
      occ <= 0)
    occ = 1;
  cudaGetLastError();
  size_t want = (bytes / 16 + size_t(kThreads) * kUnroll - 1) / (size_t(kThreads) * kUnroll);
  int grid = int(std::max<size_t>(1, std::min<size_t>(want, size_t(occ) * smCount(dev))));
  copyKernelImpl<<<grid, kThreads, 0, st>>>(static_cast<uint8_t*>(dst),
                                            static_cast<const uint8_t*>(src), bytes);
  return lastError("copyKernel");
}

// An event handle is created before its device is known (eventCreate takes none), and a CUDA
// event must belong to the device of the stream it is recorded on: so the handle holds the event
// and its device, and eventRecord (re)creates the event on the device it is recorded for.
namespace {
struct Event {
  cudaEvent_t e = nullptr;
  int dev = -1;
};
}  // namespace

Status eventCreate(void** ev) {
  *ev = new Event();
  return Status();
}

Status eventRecord(int dev, void* ev) {
  Event* h = static_cast<Event*>(ev);
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "recording an event");
  if (!ok.ok()) return ok;
  if (h->dev != dev) {
    if (h->e) cudaEventDestroy(h->e);
    h->e = nullptr;
    h->dev = -1;
    ok = statusOf(cudaEventCreate(&h->e), "creating an event");
    if (!ok.ok()) return ok;
    h->dev = dev;
  }
  return statusOf(cudaEventRecord(h->e, st), "recording an event");
}

Status eventElapsedMs(void* start, void* stop, float* ms) {
  *ms = 0.0f;
  Event* a = static_cast<Event*>(start);
  Event* b = static_cast<Event*>(stop);
  if (!a->e || !b->e) return invalidArg("eventElapsedMs: an event was never recorded");
  Status s = statusOf(cudaEventSynchronize(b->e), "waiting for an event");
  if (!s.ok()) return s;
  return statusOf(cudaEventElapsedTime(ms, a->e, b->e), "timing events");
}

void eventDestroy(void* ev) {
  Event* h = static_cast<Event*>(ev);
  if (!h) return;
  if (h->e) cudaEventDestroy(h->e);
  cudaGetLastError();
  delete h;
}

}  // namespace gpu
}  // namespace slimopt
