// Benchmark support: the bandwidth probe kernel and device event timers.
#include <string>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "../cuda/launchers.h"

namespace slimopt {

// copyKernel(dst, src, bytes): enqueue the 16-byte copy kernel (CUDA buffers on one device).
static Napi::Value CopyKernel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* dst = NativeBuffer::From(env, info[0], "destination");
  NativeBuffer* src = NativeBuffer::From(env, info[1], "source");
  int64_t n = countArg(env, info[2], "bytes");
  if (dst->device() == kCpu || dst->device() != src->device()) throwError(env, "E_DEVICE", "copyKernel needs two buffers on one CUDA device");
  if (size_t(n) > dst->bytes() || size_t(n) > src->bytes()) throwError(env, "E_SHAPE", "copyKernel: buffers too small");
  ensureUsable(env, dst->device());
  gpu::Status st = gpu::copyKernel(dst->device(), dst->data(), src->data(), size_t(n));
  if (!st.ok()) throwCuda(env, dst->device(), st, "copyKernel");
  return env.Undefined();
}

struct EventBox { void* ev = nullptr; };

// newEvent() -> External; recordEvent(device, ev); elapsedMs(start, stop) (waits for stop).
static Napi::Value NewEvent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* box = new EventBox();
  gpu::Status st = gpu::eventCreate(&box->ev);
  if (!st.ok()) { delete box; throwCuda(env, 0, st, "eventCreate"); }
  return Napi::External<EventBox>::New(env, box, [](Napi::Env, EventBox* b) {
    gpu::eventDestroy(b->ev);
    delete b;
  });
}

static EventBox* eventArg(Napi::Env env, Napi::Value v) {
  if (!v.IsExternal()) throwError(env, "E_ARG", "not an event");
  return v.As<Napi::External<EventBox>>().Data();
}

static Napi::Value RecordEvent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throwError(env, "E_ARG", "device index must be a number");
  int dev = info[0].As<Napi::Number>().Int32Value();
  ensureUsable(env, dev);
  if (dev == kCpu) throwError(env, "E_DEVICE", "events are for CUDA devices");
  gpu::Status st = gpu::eventRecord(dev, eventArg(env, info[1])->ev);
  if (!st.ok()) throwCuda(env, dev, st, "eventRecord");
  return env.Undefined();
}

static Napi::Value ElapsedMs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  float ms = 0;
  gpu::Status st = gpu::eventElapsedMs(eventArg(env, info[0])->ev, eventArg(env, info[1])->ev, &ms);
  if (!st.ok()) throwCuda(env, 0, st, "eventElapsedMs");
  return Napi::Number::New(env, ms);
}

void registerBench(Napi::Env env, Napi::Object exports) {
  exports.Set("copyKernel", Napi::Function::New(env, CopyKernel));
  exports.Set("newEvent", Napi::Function::New(env, NewEvent));
  exports.Set("recordEvent", Napi::Function::New(env, RecordEvent));
  exports.Set("elapsedMs", Napi::Function::New(env, ElapsedMs));
}

}  // namespace slimopt
