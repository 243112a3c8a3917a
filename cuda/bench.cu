// The bandwidth probe (the copy that sets the floor of every memory-bound step) and event timing.
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdint>
#include "internal.cuh"
#include "launchers.h"

namespace slimopt {
namespace gpu {

namespace {

constexpr int kThreads = 256;
constexpr int kPer = 1;  // 16-byte vectors per thread

// dst = src over `bytes`, flat: one 16-byte vector per thread, each block retires after 4 KiB.
// On an H200 this matched cudaMemcpy (4.27 vs 4.29 TB/s); 4 or 8 vectors per thread gave 4.13
// and 4.10, a persistent grid-stride loop 3.92-3.97: the smaller the span of addresses in flight,
// the better HBM does.
// When both pointers share their offset from 16-byte alignment, block 0 also does the unaligned
// head and the tail bytewise; otherwise copyBytes does it all.
__global__ void __launch_bounds__(kThreads) copyVec(uint8_t* __restrict__ dst, const uint8_t* __restrict__ src,
                                                    size_t head, size_t nv, size_t bytes) {
  const uint4* s = reinterpret_cast<const uint4*>(src + head);
  uint4* d = reinterpret_cast<uint4*>(dst + head);
  const size_t base = size_t(blockIdx.x) * (kThreads * kPer) + threadIdx.x;
  uint4 r[kPer];
#pragma unroll
  for (int j = 0; j < kPer; ++j)
    if (base + j * kThreads < nv) r[j] = s[base + j * kThreads];
#pragma unroll
  for (int j = 0; j < kPer; ++j)
    if (base + j * kThreads < nv) d[base + j * kThreads] = r[j];
  if (blockIdx.x == 0) {
    if (threadIdx.x < head) dst[threadIdx.x] = src[threadIdx.x];
    for (size_t i = head + nv * 16 + threadIdx.x; i < bytes; i += kThreads) dst[i] = src[i];
  }
}

__global__ void __launch_bounds__(kThreads) copyBytes(uint8_t* __restrict__ dst, const uint8_t* __restrict__ src,
                                                      size_t bytes) {
  for (size_t i = size_t(blockIdx.x) * kThreads + threadIdx.x; i < bytes; i += size_t(gridDim.x) * kThreads)
    dst[i] = src[i];
}

}  // namespace

Status copyKernel(int dev, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status();
  cudaStream_t st;
  Status ok = deviceStream(dev, &st, "copyKernel");
  if (!ok.ok()) return ok;
  uint8_t* d = static_cast<uint8_t*>(dst);
  const uint8_t* s = static_cast<const uint8_t*>(src);
  const size_t mis = reinterpret_cast<uintptr_t>(s) & 15u;
  if (mis != (reinterpret_cast<uintptr_t>(d) & 15u)) {
    const size_t want = (bytes + kThreads - 1) / kThreads;
    copyBytes<<<unsigned(std::min<size_t>(want, size_t(smCount(dev)) * 32)), kThreads, 0, st>>>(d, s, bytes);
    return lastError("copyKernel");
  }
  const size_t head = std::min(bytes, mis ? 16 - mis : size_t(0));
  const size_t nv = (bytes - head) / 16;
  const size_t grid = std::max<size_t>(1, (nv + kThreads * kPer - 1) / (kThreads * kPer));
  if (grid > 0x7fffffffu) return invalidArg("copyKernel: too large");
  copyVec<<<unsigned(grid), kThreads, 0, st>>>(d, s, head, nv, bytes);
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
