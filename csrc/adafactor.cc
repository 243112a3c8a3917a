// Adafactor glue: argument checks and dispatch to cpu:: or gpu:: (no math here). The group's
// non-finite scan and its counters are galoreScan / galoreFinish (the same contract).
#include <algorithm>
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

AdafactorHyper hyperOf(Napi::Env env, Napi::Object o);

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
  AdafactorHyper h = hyperOf(env, info[14].As<Napi::Object>());
  h.firstMoment = T.expAvg != nullptr ? 1 : 0;
  if (dev == kCpu) {
    cpu::adafactorStep(T, h, counters, flag, scratch);
    return env.Undefined();
  }
  gpu::Status st = gpu::adafactorStep(dev, T, h, counters, flag, scratch);
  if (!st.ok()) throwCuda(env, dev, st, "adafactorStep");
  return env.Undefined();
}

DType floatDtype(Napi::Env env, Napi::Value v) {
  DType d = dtypeArg(env, v);
  if (d != DType::F32 && d != DType::BF16 && d != DType::F16) throwError(env, "E_DTYPE", "expected f32, bf16 or f16");
  return d;
}

void* optBuf(Napi::Env env, Napi::Value v, int dev, size_t bytes, const char* what) {
  return v.IsNull() || v.IsUndefined() ? nullptr : bufOn(env, v, dev, bytes, what);
}

AdafactorHyper hyperOf(Napi::Env env, Napi::Object o) {
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
  if (!(h.clipThreshold > 0.0f)) throwError(env, "E_ARG", "clipThreshold must be positive");
  return h;
}

// galoreAdafactorStep(W, wType, G, gType, side, rows, cols, rank, Pa, Pb, rowState, colState, expAvg,
//                     counters, flag, sR, sT, sBig, scratch, normWs, hyper{...Adafactor, scale, mode})
// normWs: a norm workspace holding ||W|| in element 0 (scaleParameter), or null.
Napi::Value GaloreStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 21 || !info[20].IsObject()) throwError(env, "E_ARG", "galoreAdafactorStep: bad arguments");
  NativeBuffer* wb = NativeBuffer::From(env, info[0], "parameter");
  const int dev = wb->device();
  ensureUsable(env, dev);
  GaloreTensor G{};
  G.paramDtype = floatDtype(env, info[1]);
  G.gradDtype = floatDtype(env, info[3]);
  const int64_t side = countArg(env, info[4], "side");
  if (side > 2) throwError(env, "E_ARG", "side must be 0, 1 or 2");
  G.side = GaloreSide(side);
  G.rows = countArg(env, info[5], "rows"); G.cols = countArg(env, info[6], "cols"); G.rank = countArg(env, info[7], "rank");
  if (G.rank < 1 || G.rank > std::min(G.rows, G.cols)) throwError(env, "E_ARG", "rank must be in [1, min(rows, cols)]");
  const size_t mn = size_t(G.rows * G.cols), rn = size_t(galoreRNumel(G));
  G.param = bufOn(env, info[0], dev, mn * dtypeSize(G.paramDtype), "parameter");
  G.grad = bufOn(env, info[2], dev, mn * dtypeSize(G.gradDtype), "gradient");
  G.projA = static_cast<float*>(bufOn(env, info[8], dev, size_t(G.side == GaloreSide::Right ? G.rank * G.cols : G.rows * G.rank) * 4, "projector"));
  G.projB = G.side == GaloreSide::Full ? static_cast<float*>(bufOn(env, info[9], dev, size_t(G.rank * G.cols) * 4, "projector B")) : nullptr;
  AdafactorTensor R{};
  R.dtype = DType::F32;
  R.factored = 1;
  R.batch = 1;
  R.rows = G.side == GaloreSide::Right ? G.rows : G.rank;
  R.cols = G.side == GaloreSide::Left ? G.cols : G.rank;
  R.rowState = static_cast<float*>(bufOn(env, info[10], dev, size_t(R.rows) * 4, "row state"));
  R.colState = static_cast<float*>(bufOn(env, info[11], dev, size_t(R.cols) * 4, "column state"));
  R.expAvg = static_cast<float*>(optBuf(env, info[12], dev, rn * 4, "exp_avg"));
  auto* counters = static_cast<AdamwCounters*>(bufOn(env, info[13], dev, sizeof(AdamwCounters), "counters"));
  auto* flag = static_cast<int32_t*>(bufOn(env, info[14], dev, 4, "flag"));
  auto* sR = static_cast<float*>(bufOn(env, info[15], dev, rn * 4, "scratch R"));
  auto* sT = G.side == GaloreSide::Full ? static_cast<float*>(bufOn(env, info[16], dev, size_t(G.rank * G.cols) * 4, "scratch T")) : nullptr;
  R.grad = sR;
  R.update = sR;
  R.paramNorm = static_cast<const float*>(optBuf(env, info[19], dev, 4, "norm workspace"));
  R.paramNumel = int64_t(mn);
  AdafactorHyper h = hyperOf(env, info[20].As<Napi::Object>());
  h.firstMoment = R.expAvg != nullptr ? 1 : 0;
  Napi::Object o = info[20].As<Napi::Object>();
  const float scale = finiteFloatField(env, o, "scale");
  const int64_t mode = countArg(env, o.Get("mode"), "mode");
  if (mode > 1) throwError(env, "E_ARG", "mode must be 0 (tf32) or 1 (strict f32)");
  if (dev == kCpu) {
    float scalars[2] = {0.0f, 1.0f};
    cpu::galoreAdafactorStep(G, R, h, scale, counters, flag, sR, sT, scalars);
    return env.Undefined();
  }
  auto* sBig = static_cast<float*>(bufOn(env, info[17], dev, mn * 4, "scratch"));
  auto* scratch = static_cast<float*>(bufOn(env, info[18], dev, size_t(adafactorScratchFloats(R)) * 4, "scratch"));
  gpu::Status st = gpu::galoreAdafactorStep(dev, G, R, h, scale, counters, flag, sR, sT, sBig, scratch, GemmMode(mode));
  if (!st.ok()) throwCuda(env, dev, st, "galoreAdafactorStep");
  return env.Undefined();
}

}  // namespace

void registerAdafactor(Napi::Env env, Napi::Object exports) {
  exports.Set("adafactorStep", Napi::Function::New(env, Step));
  exports.Set("adafactorScratchFloats", Napi::Function::New(env, ScratchFloats));
  exports.Set("galoreAdafactorStep", Napi::Function::New(env, GaloreStep));
}

}  // namespace slimopt
