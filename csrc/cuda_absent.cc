// cuda/runtime.h and cuda/launchers.h when the addon is built without nvcc: the CPU backend works,
// every CUDA call answers "not compiled", so the glue links and reports the same way either way.
#include "../cuda/charlm_launchers.h"
#include "../cuda/launchers.h"
#include "../cuda/nccl.h"
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
Status statusFromCode(int code, const std::string&) { return code == 0 ? Status() : noCuda(); }
Status pinnedAlloc(size_t, void** out) { *out = nullptr; return noCuda(); }
void pinnedFree(void*) {}
Status copyDtoHAsync(int, void*, const void*, size_t, void** eventOut) { *eventOut = nullptr; return noCuda(); }
Status eventWaitAndDestroy(void*) { return noCuda(); }

Status fillRandn(int, void*, DType, int64_t, uint64_t, float, float) { return noCuda(); }
Status convert(int, const void*, DType, void*, DType, int64_t) { return noCuda(); }
Status adamwStep(int, const AdamwTensor*, int32_t, int64_t, const AdamwHyper&, AdamwCounters*,
                 int32_t*) {
  return noCuda();
}
int32_t adamwScratchInts(int) { return 0; }
std::string blasPath() { return "none (built without CUDA)"; }
std::string solverPath() { return "none (built without CUDA)"; }
void setForceBuiltin(bool) {}
bool forceBuiltin() { return false; }
void setStreamGemm(bool) {}
bool streamGemmEnabled() { return false; }
std::string streamGemmKernel(int) { return "none"; }
Status gemm(int, const GemmArgs&, GemmMode) { return noCuda(); }
Status gemmMany(int, const GemmArgs*, const GemmMode*, int64_t) { return noCuda(); }
Status scanNonFinite(int, const ScanEntry*, int64_t, int32_t*) { return noCuda(); }
Status galoreRefreshWorkspace(int, int64_t, int64_t, int64_t, bool, RefreshMethod, int64_t* floats) {
  *floats = 0;
  return noCuda();
}
Status galoreRefresh(int, const void*, DType, int64_t, int64_t, int64_t, bool, float*, bool, const int32_t*,
                     RefreshMethod, GemmMode, float*, int64_t, float*) {
  return noCuda();
}
Status galoreRefreshMany(int, const GaloreRefreshEntry*, int64_t, float* const*, const int64_t*, int) { return noCuda(); }
Status galoreStep(int, const GaloreTensor&, const GaloreHyper&, const AdamwCounters*, const int32_t*, float*,
                  float*, float*, float*) {
  return noCuda();
}
Status galoreAdamMany(int, const GaloreAdamEntry*, int64_t, const GaloreHyper&, const AdamwCounters*, const int32_t*, float*) {
  return noCuda();
}
Status galoreBackMany(int, const GaloreBackEntry*, int64_t, GemmMode, const int32_t*, const float*, float*, int64_t) {
  return noCuda();
}
Status galoreFinish(int, AdamwCounters*, const int32_t*) { return noCuda(); }
size_t grassCubBytes(int, int64_t, Status* status) {
  if (status) *status = noCuda();
  return 0;
}
Status grassStep(int, const GrassTensor*, const GrassTensor*, int32_t, const GrassUnits&, const GrassHyper&,
                 AdamwCounters*, void*, const GrassWorkspace&) {
  return noCuda();
}
Status grassSelectOnly(int, const GrassTensor&, const GrassHyper&, void*, const GrassWorkspace&, int32_t*, float*) {
  return noCuda();
}
Status grassGatherRows(int, void*, const void*, DType, int64_t, int64_t, const int32_t*, int64_t, const float*) {
  return noCuda();
}
Status grassGatherCols(int, void*, const void*, DType, int64_t, int64_t, const int32_t*, int64_t) { return noCuda(); }
Status grassScatterRows(int, void*, DType, int64_t, int64_t, const int32_t*, int64_t, const void*, float,
                        const float*) {
  return noCuda();
}
Status apolloProjection(int, float*, int64_t, uint64_t, uint32_t, int64_t) { return noCuda(); }
Status apolloGradNorms(int, const void*, DType, int64_t, int64_t, float*, int32_t*, const ApolloFused*) {
  return noCuda();
}
Status apolloStep(int, const ApolloTensor&, const ApolloHyper&, const AdamwCounters*, const int32_t*, float*, float*,
                  float*, float*, const float*) {
  return noCuda();
}
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

// NCCL: never loaded without CUDA.
std::string ncclPath(std::string* why) {
  if (why) *why = kWhy;
  return "";
}
int ncclVersion() { return 0; }
Status ncclNewUniqueId(std::string*) { return noCuda(); }
Status ncclCommInit(int, const std::string&, int, int, void** comm) {
  if (comm) *comm = nullptr;
  return noCuda();
}
Status ncclCommFree(void*) { return Status(); }
Status ncclGroupBegin() { return noCuda(); }
Status ncclGroupEnd() { return noCuda(); }
Status ncclAllReduceOn(int, void*, const void*, void*, int64_t, DType, ReduceOp) { return noCuda(); }
Status ncclReduceOn(int, void*, const void*, void*, int64_t, DType, ReduceOp, int) { return noCuda(); }
Status ncclReduceScatterOn(int, void*, const void*, void*, int64_t, DType, ReduceOp) { return noCuda(); }
Status ncclAllGatherOn(int, void*, const void*, void*, int64_t, DType) { return noCuda(); }
Status ncclBroadcastOn(int, void*, const void*, void*, int64_t, DType, int) { return noCuda(); }
Status embeddingForward(int, const float*, int64_t, int64_t, const int32_t*, int64_t, float*) { return noCuda(); }
Status embeddingBackward(int, const float*, const int32_t*, int64_t, float*, int64_t, int64_t, bool) { return noCuda(); }
Status biasAdd(int, float*, const float*, int64_t, int64_t) { return noCuda(); }
Status biasGrad(int, const float*, int64_t, int64_t, float*, bool) { return noCuda(); }
Status activationForward(int, Activation, const float*, float*, int64_t) { return noCuda(); }
Status activationBackward(int, Activation, const float*, const float*, float*, int64_t) { return noCuda(); }
Status softmaxCrossEntropy(int, const float*, const int32_t*, int64_t, int64_t, float*, float*, float, float*, float) {
  return noCuda();
}

}  // namespace gpu
}  // namespace slimopt

// Training-loop launchers (cuda/train.cu).
#include "../cuda/train_launchers.h"
namespace slimopt {
namespace gpu {
Status gradSumSquares(int, const GradRef*, int32_t, float*, bool) { return noCuda(); }
Status gradNormFinish(int, float*, float) { return noCuda(); }
Status gradScale(int, const GradRef*, int32_t, const float*, float) { return noCuda(); }
Status countersMax(int, AdamwCounters*, AdamwCounters* const*, int32_t) { return noCuda(); }
Status gradAdd(int, void*, DType, const void*, DType, int64_t, float) { return noCuda(); }
}  // namespace gpu
}  // namespace slimopt

// Adafactor launcher (cuda/adafactor.cu).
#include "../cuda/adafactor_launchers.h"
namespace slimopt {
namespace gpu {
Status adafactorStep(int, const AdafactorTensor&, const AdafactorHyper&, const AdamwCounters*, const int32_t*, float*) {
  return noCuda();
}
}  // namespace gpu
}  // namespace slimopt
namespace slimopt {
namespace gpu {
Status galoreProject(int, const GaloreTensor&, float*, float*, float*, GemmMode) { return noCuda(); }
Status galoreProjectMany(int, const GaloreTensor*, float* const*, int64_t, float*, float*, GemmMode, float*, int64_t) {
  return noCuda();
}
Status galoreBackF32(int, const GaloreTensor&, const float*, float*, float*, GemmMode) { return noCuda(); }
Status galoreAdafactorStep(int, const GaloreTensor&, const AdafactorTensor&, const AdafactorHyper&, float, const AdamwCounters*,
                           const int32_t*, float*, float*, float*, float*, GemmMode) {
  return noCuda();
}
}  // namespace gpu
}  // namespace slimopt
