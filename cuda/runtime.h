// The CUDA runtime as the glue sees it: plain C++, no CUDA headers. Implemented in runtime.cu when
// nvcc is present, by csrc/cuda_absent.cc otherwise (every call then answers "not compiled").
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace slimopt {
namespace gpu {

struct Status {
  int code = 0;          // cudaError_t value; 0 = success
  std::string name;      // e.g. "cudaErrorMemoryAllocation"
  std::string message;   // CUDA's description, plus what we were doing
  bool sticky = false;   // the context is corrupted: the device must be treated as lost
  bool ok() const { return code == 0; }
  bool outOfMemory() const;
};

struct DeviceProps {
  std::string name;
  int major = 0, minor = 0;
  size_t totalMemory = 0;
  int multiprocessors = 0;
  size_t l2Bytes = 0;
  int driverVersion = 0;
  int runtimeVersion = 0;
};

bool compiled();                 // the addon was built with CUDA kernels
std::string compiledArchs();     // e.g. "90" or "75;80;86;89;90;100;120"
// Number of usable devices; when 0, *why says why (no driver, driver too old, no device).
int deviceCount(std::string* why);
Status deviceProps(int dev, DeviceProps* out);
Status memInfo(int dev, size_t* freeBytes, size_t* totalBytes);

// Stream-ordered allocation on the device's one stream.
Status alloc(int dev, size_t bytes, void** out);
Status release(int dev, void* ptr);
void* stream(int dev);           // cudaStream_t of the device, created on first use

// Copies on the device's stream. HtoD returns once the source may be reused; DtoH once the
// destination holds the data.
Status copyHtoD(int dev, void* dst, const void* src, size_t bytes);
Status copyDtoH(int dev, void* dst, const void* src, size_t bytes);
Status copyDtoD(int dev, void* dst, const void* src, size_t bytes);
Status memsetZero(int dev, void* dst, size_t bytes);
Status synchronize(int dev);
// Reads without blocking the JS thread: enqueue a copy into pinned host memory and an event on
// the stream (in program order, on the JS thread), then wait for the event on a worker thread.
// Implemented in transfer.cu.
Status pinnedAlloc(size_t bytes, void** out);
void pinnedFree(void* p);
Status copyDtoHAsync(int dev, void* pinnedDst, const void* src, size_t bytes, void** eventOut);
Status eventWaitAndDestroy(void* event);
// Checks that ptr is device memory of dev (for fromDevicePointer).
Status pointerCheck(int dev, const void* ptr);
// A Status for a cudaError_t value (name, message, sticky classification); code 0 is success.
Status statusFromCode(int code, const std::string& what);
// The last launch's error on this thread (cudaGetLastError), classified.
Status lastError(const char* what);

}  // namespace gpu
}  // namespace slimopt
