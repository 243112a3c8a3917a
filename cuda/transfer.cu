// Host transfers that must not block the JS thread (see runtime.h).
#include <cuda_runtime.h>
#include "runtime.h"

namespace slimopt {
namespace gpu {

static Status statusOf(cudaError_t e, const char* what) { return statusFromCode(int(e), what); }

Status pinnedAlloc(size_t bytes, void** out) {
  return statusOf(cudaMallocHost(out, bytes ? bytes : 1), "cudaMallocHost");
}

void pinnedFree(void* p) {
  if (p != nullptr) cudaFreeHost(p);
}

Status copyDtoHAsync(int dev, void* pinnedDst, const void* src, size_t bytes, void** eventOut) {
  cudaError_t e = cudaSetDevice(dev);
  if (e != cudaSuccess) return statusOf(e, "cudaSetDevice");
  cudaStream_t s = static_cast<cudaStream_t>(stream(dev));
  e = cudaMemcpyAsync(pinnedDst, src, bytes, cudaMemcpyDeviceToHost, s);
  if (e != cudaSuccess) return statusOf(e, "cudaMemcpyAsync(DtoH)");
  cudaEvent_t ev;
  e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
  if (e != cudaSuccess) return statusOf(e, "cudaEventCreate");
  e = cudaEventRecord(ev, s);
  if (e != cudaSuccess) { cudaEventDestroy(ev); return statusOf(e, "cudaEventRecord"); }
  *eventOut = ev;
  return Status();
}

Status eventWaitAndDestroy(void* event) {
  cudaEvent_t ev = static_cast<cudaEvent_t>(event);
  cudaError_t e = cudaEventSynchronize(ev);
  cudaEventDestroy(ev);
  return statusOf(e, "cudaEventSynchronize");
}

}  // namespace gpu
}  // namespace slimopt
