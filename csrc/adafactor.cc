// Adafactor glue: argument checks and dispatch to cpu:: or gpu:: (no math here). The group's
// non-finite scan and its counters are galoreScan / galoreFinish (the same contract).
#include <cmath>
#include <string>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "cpu/adafactor.h"
#include "../cuda/adafactor_launchers.h"

namespace slimopt {

namespace {

void* bufOn(Napi::Env env, Napi::Value v, int dev, size_t bytes, const char* what) {
  NativeBuffer* b = NativeBuffer::From(env, v, what);
  if (b->device() != dev) throwError(env, "E_DEVICE", std::string(what) + " is on another device");
  if (b->bytes() < bytes) throwError(env, "E_SHAPE", std::string(what) + " is too small");
  return b->data();
}

AdafactorTensor describe(Napi::Env env, const Napi::CallbackInfo& info) {
  AdafactorTensor T{};
  T.dtype = dtypeArg(env, info[2]);
  if (T.dtype != DType::F32 && T.dtype != DType::BF16 && T.dtype != DType::F16)
    throwError(env, "E_DTYPE", "parameters are f32, bf16 or f16");
  T.factored = info[3].ToBoolean() ? 1 : 0;
  T.batch = countArg(env, info[4], "batch");
  T.rows = countArg(env, info[5], "rows");
  T.cols = countArg(env, info[6], "cols");
  if (!T.factored && (T.batch != 1 || T.rows != 1)) throwError(env, "E_ARG", "a non-factored tensor is 1 x 1 x numel");
  if (T.factored && T.batch * T.rows > 2147483647) throwError(env, "E_SHAPE", "too many rows");
  return T;
}

// adafactorScratchFloats(dtype, factored, batch, rows, cols) — arguments 2.. as adafactorStep's.
Napi::Value ScratchFloats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AdafactorTensor T{};
  T.factored = info[0].ToBoolean() ? 1 : 0;
  T.batch = countArg(env, info[1], "batch");
  T.rows = countArg(env, info[2], "rows");
  T.cols = countArg(env, info[3], "cols");
  return Napi::Number::New(env, double(adafactorScratchFloats(T)));
}

// adafactorStep(W, G, dtype, factored, batch, rows, cols, rowState, colState, fullState, expAvg,
//               counters, flag, scratch, hyper)
Napi::Value Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 15 || !info[14].IsObject()) throwError(env, "E_ARG", "adafactorStep: bad arguments");
  NativeBuffer* wb = NativeBuffer::From(env, info[0], "parameter");
  const int dev = wb->device();
  ensureUsable(env, dev);
  AdafactorTensor T = describe(env, info);
  const size_t n = size_t(adafactorNumel(T));
  T.param = bufOn(env, info[0], dev, n * dtypeSize(T.dtype), "parameter");
  T.grad = bufOn(env, info[1], dev, n * dtypeSize(T.dtype), "gradient");
  if (T.factored) {
    T.rowState = static_cast<float*>(bufOn(env, info[7], dev, size_t(T.batch * T.rows) * 4, "row state"));
    T.colState = static_cast<float*>(bufOn(env, info[8], dev, size_t(T.batch * T.cols) * 4, "column state"));
  } else {
    T.fullState = static_cast<float*>(bufOn(env, info[9], dev, n * 4, "second moment"));
  }
  T.expAvg = info[10].IsNull() || info[10].IsUndefined() ? nullptr : static_cast<float*>(bufOn(env, info[10], dev, n * 4, "exp_avg"));
  auto* counters = static_cast<AdamwCounters*>(bufOn(env, info[11], dev, sizeof(AdamwCounters), "counters"));
  auto* flag = static_cast<int32_t*>(bufOn(env, info[12], dev, 4, "flag"));
  float* scratch = dev == kCpu ? nullptr : static_cast<float*>(bufOn(env, info[13], dev, size_t(adafactorScratchFloats(T)) * 4, "scratch"));
  Napi::Object o = info[14].As<Napi::Object>();
  AdafactorHyper h{};
  h.lr = finiteFloatField(env, o, "lr");
  h.eps1 = finiteFloatField(env, o, "eps1");
  h.eps2 = finiteFloatField(env, o, "eps2");
  h.clipThreshold = finiteFloatField(env, o, "clipThreshold");
  h.decayRate = finiteFloatField(env, o, "decayRate");
  h.beta1 = finiteFloatField(env, o, "beta1");
  h.weightDecay = finiteFloatField(env, o, "weightDecay");
  h.relativeStep = o.Get("relativeStep").ToBoolean() ? 1 : 0;
  h.warmupInit = o.Get("warmupInit").ToBoolean() ? 1 : 0;
  h.scaleParameter = o.Get("scaleParameter").ToBoolean() ? 1 : 0;
  h.firstMoment = T.expAvg != nullptr ? 1 : 0;
  if (!(h.clipThreshold > 0.0f)) throwError(env, "E_ARG", "clipThreshold must be positive");
  if (dev == kCpu) {
    cpu::adafactorStep(T, h, counters, flag, scratch);
    return env.Undefined();
  }
  gpu::Status st = gpu::adafactorStep(dev, T, h, counters, flag, scratch);
  if (!st.ok()) throwCuda(env, dev, st, "adafactorStep");
  return env.Undefined();
}

}  // namespace

void registerAdafactor(Napi::Env env, Napi::Object exports) {
  exports.Set("adafactorStep", Napi::Function::New(env, Step));
  exports.Set("adafactorScratchFloats", Napi::Function::New(env, ScratchFloats));
}

}  // namespace slimopt
