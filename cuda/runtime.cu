// cuda/runtime.h on the CUDA runtime (linked statically, so this loads with no driver at all).
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>
#include "internal.cuh"
#include "runtime.h"

#ifndef SLIMOPT_CUDA_ARCHS
#define SLIMOPT_CUDA_ARCHS "unknown"
#endif

namespace slimopt {
namespace gpu {

namespace {

// Errors after which the context is corrupted: every later call fails the same way.
bool isSticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
    case cudaErrorContained:
    case cudaErrorTensorMemoryLeak:
    case cudaErrorExternalDevice:
    case cudaErrorUnknown:
      return true;
    default:
      return false;
  }
}

Status fail(cudaError_t e, const std::string& what) {
  Status s;
  s.code = int(e);
  s.name = cudaGetErrorName(e);
  s.message = std::string(cudaGetErrorString(e)) + " (" + what + ")";
  s.sticky = isSticky(e);
  // A failed API call also sets the thread's last error; clear it so that a later lastError()
  // after a good launch does not report this one. (Sticky errors stay regardless.)
  cudaGetLastError();
  return s;
}

Status check(cudaError_t e, const std::string& what) { return e == cudaSuccess ? Status() : fail(e, what); }

std::string devWhat(const char* op, int dev) { return std::string(op) + " on cuda:" + std::to_string(dev); }

std::mutex gMutex;
std::vector<cudaStream_t> gStreams;  // one per device, created on first use
std::vector<std::vector<cudaStream_t>> gLanes;  // per device: lane i at [i - 1]
thread_local int tLaneDev = -1;
thread_local cudaStream_t tLane = nullptr;

// Selects dev and returns its stream, creating it (and tuning its memory pool) the first time.
Status useDevice(int dev, cudaStream_t* out, const char* op) {
  cudaError_t e = cudaSetDevice(dev);
  if (e != cudaSuccess) return fail(e, devWhat(op, dev));
  std::lock_guard<std::mutex> lock(gMutex);
  if (dev >= int(gStreams.size())) gStreams.resize(dev + 1, nullptr);
  if (!gStreams[dev]) {
    cudaStream_t s;
    e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (e != cudaSuccess) return fail(e, devWhat("creating the stream", dev));
    // Keep freed blocks in the pool instead of returning them at every synchronize: the default
    // threshold (0) makes each step's temporaries pay a driver allocation again.
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) {
      uint64_t keep = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    cudaGetLastError();
    gStreams[dev] = s;
  }
  *out = tLaneDev == dev && tLane != nullptr ? tLane : gStreams[dev];
  return Status();
}

}  // namespace

Status laneStream(int dev, int lane, cudaStream_t* out) {
  cudaStream_t main;
  Status st = useDevice(dev, &main, "creating a lane");
  if (!st.ok()) return st;
  if (lane < 1) return invalidArg("laneStream: lanes start at 1");
  std::lock_guard<std::mutex> lock(gMutex);
  if (dev >= int(gLanes.size())) gLanes.resize(dev + 1);
  std::vector<cudaStream_t>& ls = gLanes[dev];
  while (int(ls.size()) < lane) {
    cudaStream_t s;
    cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (e != cudaSuccess) return fail(e, devWhat("creating a lane's stream", dev));
    ls.push_back(s);
  }
  *out = ls[lane - 1];
  return Status();
}

void useLane(int dev, cudaStream_t st) {
  tLaneDev = st != nullptr ? dev : -1;
  tLane = st;
}

Status deviceStream(int dev, cudaStream_t* out, const char* what) { return useDevice(dev, out, what); }

bool envIs(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e != nullptr && std::string(e) == value;
}
Status statusOf(cudaError_t e, const std::string& what) { return check(e, what); }
Status statusFromCode(int code, const std::string& what) { return check(cudaError_t(code), what); }
Status invalidArg(const std::string& what) {
  Status s;
  s.code = int(cudaErrorInvalidValue);
  s.name = cudaGetErrorName(cudaErrorInvalidValue);
  s.message = what;
  return s;
}
int smCount(int dev) {
  static int cached[64] = {0};
  if (dev < 0 || dev >= 64) return 1;
  if (cached[dev] == 0) {
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) {
      cudaGetLastError();
      return 1;
    }
    cached[dev] = n;
  }
  return cached[dev];
}

bool Status::outOfMemory() const { return code == int(cudaErrorMemoryAllocation); }

bool compiled() { return true; }
std::string compiledArchs() { return SLIMOPT_CUDA_ARCHS; }

int deviceCount(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess && n > 0) return n;
  cudaGetLastError();
  if (!why) return 0;
  int driver = 0;
  cudaDriverGetVersion(&driver);  // 0 when libcuda.so.1 could not be loaded
  cudaGetLastError();
  if (e == cudaSuccess || e == cudaErrorNoDevice) {
    *why = "no CUDA device found";
  } else if (e == cudaErrorInsufficientDriver && driver == 0) {
    *why = "no NVIDIA driver (libcuda.so.1) on this machine";
  } else if (e == cudaErrorInsufficientDriver || e == cudaErrorCallRequiresNewerDriver) {
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "the NVIDIA driver (CUDA %d.%d) is too old for CUDA 13 (or missing)",
                  driver / 1000, (driver % 1000) / 10);
    *why = buf;
  } else if (e == cudaErrorStubLibrary) {
    *why = "the CUDA driver found is a stub library (libcuda.so.1 from the toolkit, not a driver)";
  } else if (e == cudaErrorSystemDriverMismatch) {
    *why = "the NVIDIA kernel module and libcuda.so.1 have different versions (reboot or reinstall "
           "the driver)";
  } else {
    *why = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  }
  return 0;
}

Status deviceProps(int dev, DeviceProps* out) {
  cudaDeviceProp p;
  cudaError_t e = cudaGetDeviceProperties(&p, dev);
  if (e != cudaSuccess) return fail(e, devWhat("reading the properties", dev));
  out->name = p.name;
  out->major = p.major;
  out->minor = p.minor;
  out->totalMemory = p.totalGlobalMem;
  out->multiprocessors = p.multiProcessorCount;
  out->l2Bytes = size_t(p.l2CacheSize);
  cudaDriverGetVersion(&out->driverVersion);
  cudaRuntimeGetVersion(&out->runtimeVersion);
  return Status();
}

Status memInfo(int dev, size_t* freeBytes, size_t* totalBytes) {
  cudaError_t e = cudaSetDevice(dev);
  if (e == cudaSuccess) e = cudaMemGetInfo(freeBytes, totalBytes);
  return check(e, devWhat("reading free memory", dev));
}

Status alloc(int dev, size_t bytes, void** out) {
  *out = nullptr;
  cudaStream_t s;
  Status st = useDevice(dev, &s, "allocating");
  if (!st.ok() || bytes == 0) return st;
  cudaError_t e = cudaMallocAsync(out, bytes, s);
  if (e == cudaErrorMemoryAllocation) {
    // The pool may hold freed blocks that are not yet reusable here: drain, trim, try once more.
    cudaGetLastError();
    cudaMemPool_t pool;
    if (cudaStreamSynchronize(s) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess)
      cudaMemPoolTrimTo(pool, 0);
    cudaGetLastError();
    e = cudaMallocAsync(out, bytes, s);
  }
  if (e != cudaSuccess) {
    *out = nullptr;
    return fail(e, devWhat(("allocating " + std::to_string(bytes) + " bytes").c_str(), dev));
  }
  return Status();
}

Status release(int dev, void* ptr) {
  if (!ptr) return Status();
  cudaStream_t s;
  Status st = useDevice(dev, &s, "freeing");
  if (!st.ok()) return st;
  return check(cudaFreeAsync(ptr, s), devWhat("freeing", dev));
}

void* stream(int dev) {
  cudaStream_t s = nullptr;
  return useDevice(dev, &s, "creating the stream").ok() ? static_cast<void*>(s) : nullptr;
}

static Status copy(int dev, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                   bool sync, const char* what) {
  if (bytes == 0) return Status();
  cudaStream_t s;
  Status st = useDevice(dev, &s, what);
  if (!st.ok()) return st;
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, s);
  if (e == cudaSuccess && sync) e = cudaStreamSynchronize(s);
  return check(e, devWhat(what, dev));
}

Status copyHtoD(int dev, void* dst, const void* src, size_t bytes) {
  // No stream sync: from pageable memory, cudaMemcpyAsync returns once the source is staged, so
  // the caller may reuse it, and the JS thread does not wait for the kernels enqueued before.
  return copy(dev, dst, src, bytes, cudaMemcpyHostToDevice, false, "copying host to device");
}
Status copyDtoH(int dev, void* dst, const void* src, size_t bytes) {
  return copy(dev, dst, src, bytes, cudaMemcpyDeviceToHost, true, "copying device to host");
}
Status copyDtoD(int dev, void* dst, const void* src, size_t bytes) {
  return copy(dev, dst, src, bytes, cudaMemcpyDeviceToDevice, false, "copying device to device");
}

Status memsetZero(int dev, void* dst, size_t bytes) {
  if (bytes == 0) return Status();
  cudaStream_t s;
  Status st = useDevice(dev, &s, "zeroing");
  if (!st.ok()) return st;
  return check(cudaMemsetAsync(dst, 0, bytes, s), devWhat("zeroing", dev));
}

Status synchronize(int dev) {
  cudaStream_t s;
  Status st = useDevice(dev, &s, "synchronizing");
  if (!st.ok()) return st;
  return check(cudaStreamSynchronize(s), devWhat("synchronizing", dev));
}

Status pointerCheck(int dev, const void* ptr) {
  char where[64];
  std::snprintf(where, sizeof where, "%p", ptr);
  if (!ptr) return fail(cudaErrorInvalidValue, "a null pointer is not device memory");
  cudaError_t e = cudaSetDevice(dev);
  if (e != cudaSuccess) return fail(e, devWhat("checking a pointer", dev));
  cudaPointerAttributes a;
  e = cudaPointerGetAttributes(&a, ptr);
  if (e != cudaSuccess) return fail(e, std::string("checking pointer ") + where);
  if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged) {
    const char* kind = a.type == cudaMemoryTypeHost ? "pinned host memory" : "not CUDA memory";
    return fail(cudaErrorInvalidDevicePointer,
                std::string("pointer ") + where + " is " + kind + ", not device memory of cuda:" +
                    std::to_string(dev));
  }
  if (a.type == cudaMemoryTypeDevice && a.device != dev) {
    return fail(cudaErrorInvalidDevicePointer,
                std::string("pointer ") + where + " is memory of cuda:" + std::to_string(a.device) +
                    ", not of cuda:" + std::to_string(dev));
  }
  return Status();
}

Status lastError(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return Status();
  return fail(e, std::string("launching ") + (what ? what : "a kernel"));
}

}  // namespace gpu
}  // namespace slimopt
