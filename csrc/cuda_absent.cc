// cuda/runtime.h and cuda/launchers.h when the addon is built without nvcc: the CPU backend works,
// every CUDA call answers "not compiled", so the glue links and reports the same way either way.
#include "../cuda/launchers.h"
#include "../cuda/quant_launchers.h"
#include "../cuda/runtime.h"

namespace slimopt {
namespace gpu {

namespace {
constexpr const char* kWhy = "slimopt was built without CUDA";
Status noCuda() {
  Status s;
  s.code = -1;
  s.name = "E_NO_CUDA";
  s.message = kWhy;
  return s;
}
}  // namespace

bool Status::outOfMemory() const { return false; }

bool compiled() { return false; }
std::string compiledArchs() { return ""; }
int deviceCount(std::string* why) {
  if (why) *why = kWhy;
  return 0;
}
Status deviceProps(int, DeviceProps*) { return noCuda(); }
Status memInfo(int, size_t* freeBytes, size_t* totalBytes) {
  if (freeBytes) *freeBytes = 0;
  if (totalBytes) *totalBytes = 0;
  return noCuda();
}
Status alloc(int, size_t, void** out) {
  if (out) *out = nullptr;
  return noCuda();
}
Status release(int, void*) { return noCuda(); }
void* stream(int) { return nullptr; }
Status copyHtoD(int, void*, const void*, size_t) { return noCuda(); }
Status copyDtoH(int, void*, const void*, size_t) { return noCuda(); }
Status copyDtoD(int, void*, const void*, size_t) { return noCuda(); }
Status memsetZero(int, void*, size_t) { return noCuda(); }
Status synchronize(int) { return noCuda(); }
Status pointerCheck(int, const void*) { return noCuda(); }
Status lastError(const char*) { return Status(); }

Status fillRandn(int, void*, DType, int64_t, uint64_t, float, float) { return noCuda(); }
Status convert(int, const void*, DType, void*, DType, int64_t) { return noCuda(); }
Status adamwStep(int, const AdamwTensor*, int32_t, int64_t, const AdamwHyper&, AdamwCounters*,
                 int32_t*) {
  return noCuda();
}
int32_t adamwScratchInts(int) { return 0; }
Status copyKernel(int, void*, const void*, size_t) { return noCuda(); }
Status eventCreate(void** ev) {
  if (ev) *ev = nullptr;
  return noCuda();
}
Status eventRecord(int, void*) { return noCuda(); }
Status eventElapsedMs(void*, void*, float* ms) {
  if (ms) *ms = 0.0f;
  return noCuda();
}
void eventDestroy(void*) {}

Status quantizeBlockwise(int, const void*, DType, int64_t, uint8_t*, float*, int64_t, const void*, const QuantFinder&) {
  return noCuda();
}
Status dequantizeBlockwise(int, const uint8_t*, const float*, int64_t, void*, DType, int64_t, const void*,
                           const QuantFinder&) {
  return noCuda();
}
Status qadamStep(int, const QAdamTensor*, int32_t, int64_t, const QAdamHyper&, const void*, const QuantFinder&,
                 const void*, const QuantFinder&, AdamwCounters*, int32_t*) {
  return noCuda();
}
int32_t qadamScratchInts(int) { return 0; }
Status memsetBytes(int, void*, int, size_t) { return noCuda(); }

}  // namespace gpu
}  // namespace slimopt
