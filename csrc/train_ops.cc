// Training-loop glue: argument checks for the gradient-norm, gradient-scale and counters-merge
// calls, dispatch to cpu:: or gpu:: (cuda/train.cu). No math here.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "cpu/train.h"
#include "../cuda/train_launchers.h"

namespace slimopt {

namespace {

NativeBuffer* bufOn(Napi::Env env, Napi::Value v, int dev, size_t bytes, const char* what) {
  NativeBuffer* b = NativeBuffer::From(env, v, what);
  if (b->device() != dev) throwError(env, "E_DEVICE", std::string(what) + " is on another device");
  if (b->bytes() < bytes) throwError(env, "E_SHAPE", std::string(what) + " is too small");
  return b;
}

int deviceOf(Napi::Env env, Napi::Value v, const char* what) {
  int dev = NativeBuffer::From(env, v, what)->device();
  ensureUsable(env, dev);
  return dev;
}

// [[grad, dtype, numel], ...] on dev.
std::vector<GradRef> gradList(Napi::Env env, Napi::Value v, int dev) {
  if (!v.IsArray()) throwError(env, "E_ARG", "expected a list of [gradient, dtype, numel]");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<GradRef> out;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 3) throwError(env, "E_ARG", "malformed gradient entry " + std::to_string(i));
    Napi::Array x = e.As<Napi::Array>();
    GradRef g{};
    g.dtype = dtypeArg(env, x.Get(1u));
    if (g.dtype != DType::F32 && g.dtype != DType::BF16 && g.dtype != DType::F16)
      throwError(env, "E_DTYPE", "gradients are f32, bf16 or f16");
    g.numel = countArg(env, x.Get(2u), "numel");
    g.ptr = bufOn(env, x.Get(0u), dev, size_t(g.numel) * dtypeSize(g.dtype), "gradient")->data();
    out.push_back(g);
  }
  return out;
}

float* wsArg(Napi::Env env, Napi::Value v, int dev) {
  return static_cast<float*>(bufOn(env, v, dev, size_t(kGradWsFloats) * 4, "norm workspace")->data());
}

// gradSumSquares(ws, grads, reset)
Napi::Value GradSumSquares(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceOf(env, info[0], "norm workspace");
  float* ws = wsArg(env, info[0], dev);
  std::vector<GradRef> list = gradList(env, info[1], dev);
  bool reset = info[2].ToBoolean();
  if (dev == kCpu) {
    cpu::gradSumSquares(list.data(), int32_t(list.size()), ws, reset);
    return env.Undefined();
  }
  gpu::Status st = gpu::gradSumSquares(dev, list.data(), int32_t(list.size()), ws, reset);
  if (!st.ok()) throwCuda(env, dev, st, "gradSumSquares");
  return env.Undefined();
}

// gradNormFinish(ws, maxNorm)
Napi::Value GradNormFinish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceOf(env, info[0], "norm workspace");
  float* ws = wsArg(env, info[0], dev);
  if (!info[1].IsNumber()) throwError(env, "E_ARG", "maxNorm must be a number");
  float maxNorm = info[1].As<Napi::Number>().FloatValue();
  if (!(maxNorm > 0.0f) || !std::isfinite(maxNorm)) throwError(env, "E_ARG", "maxNorm must be a positive finite number");
  if (dev == kCpu) {
    cpu::gradNormFinish(ws, maxNorm);
    return env.Undefined();
  }
  gpu::Status st = gpu::gradNormFinish(dev, ws, maxNorm);
  if (!st.ok()) throwCuda(env, dev, st, "gradNormFinish");
  return env.Undefined();
}

// gradScale(grads, ws | null, value): g *= ws[1] (the clip factor) when ws is given, else value.
Napi::Value GradScale(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray() || info[0].As<Napi::Array>().Length() == 0) return env.Undefined();
  Napi::Array first = info[0].As<Napi::Array>().Get(0u).As<Napi::Array>();
  int dev = deviceOf(env, first.Get(0u), "gradient");
  std::vector<GradRef> list = gradList(env, info[0], dev);
  const float* factor = nullptr;
  if (!info[1].IsNull() && !info[1].IsUndefined()) factor = wsArg(env, info[1], dev) + 1;
  float value = 1.0f;
  if (!factor) {
    if (!info[2].IsNumber()) throwError(env, "E_ARG", "scale must be a number");
    value = info[2].As<Napi::Number>().FloatValue();
    if (!std::isfinite(value)) throwError(env, "E_ARG", "scale must be finite");
  }
  if (dev == kCpu) {
    cpu::gradScale(list.data(), int32_t(list.size()), factor, value);
    return env.Undefined();
  }
  gpu::Status st = gpu::gradScale(dev, list.data(), int32_t(list.size()), factor, value);
  if (!st.ok()) throwCuda(env, dev, st, "gradScale");
  return env.Undefined();
}

// countersMax(dst, [src, ...]): dst = elementwise max of dst and every src (int32 [step, skipped]).
Napi::Value CountersMax(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceOf(env, info[0], "counters");
  auto* dst = static_cast<AdamwCounters*>(bufOn(env, info[0], dev, sizeof(AdamwCounters), "counters")->data());
  if (!info[1].IsArray()) throwError(env, "E_ARG", "countersMax(dst, srcs)");
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<AdamwCounters*> srcs;
  for (uint32_t i = 0; i < a.Length(); ++i)
    srcs.push_back(static_cast<AdamwCounters*>(bufOn(env, a.Get(i), dev, sizeof(AdamwCounters), "counters")->data()));
  if (dev == kCpu) {
    for (AdamwCounters* s : srcs) {
      dst->step = std::max(dst->step, s->step);
      dst->skipped = std::max(dst->skipped, s->skipped);
    }
    return env.Undefined();
  }
  gpu::Status st = gpu::countersMax(dev, dst, srcs.data(), int32_t(srcs.size()));
  if (!st.ok()) throwCuda(env, dev, st, "countersMax");
  return env.Undefined();
}

// gradAdd(dst, dstType, src, srcType, n, alpha): dst += alpha * src.
Napi::Value GradAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceOf(env, info[0], "destination");
  DType dt = dtypeArg(env, info[1]), st = dtypeArg(env, info[3]);
  for (DType d : {dt, st})
    if (d != DType::F32 && d != DType::BF16 && d != DType::F16) throwError(env, "E_DTYPE", "gradients are f32, bf16 or f16");
  int64_t n = countArg(env, info[4], "numel");
  void* dst = bufOn(env, info[0], dev, size_t(n) * dtypeSize(dt), "destination")->data();
  const void* src = bufOn(env, info[2], dev, size_t(n) * dtypeSize(st), "source")->data();
  if (!info[5].IsNumber()) throwError(env, "E_ARG", "alpha must be a number");
  float alpha = info[5].As<Napi::Number>().FloatValue();
  if (!std::isfinite(alpha)) throwError(env, "E_ARG", "alpha must be finite");
  if (dev == kCpu) {
    cpu::gradAdd(dst, dt, src, st, n, alpha);
    return env.Undefined();
  }
  gpu::Status s = gpu::gradAdd(dev, dst, dt, src, st, n, alpha);
  if (!s.ok()) throwCuda(env, dev, s, "gradAdd");
  return env.Undefined();
}

}  // namespace

void registerTrain(Napi::Env env, Napi::Object exports) {
  exports.Set("gradSumSquares", Napi::Function::New(env, GradSumSquares));
  exports.Set("gradNormFinish", Napi::Function::New(env, GradNormFinish));
  exports.Set("gradScale", Napi::Function::New(env, GradScale));
  exports.Set("countersMax", Napi::Function::New(env, CountersMax));
  exports.Set("gradAdd", Napi::Function::New(env, GradAdd));
}

}  // namespace slimopt
