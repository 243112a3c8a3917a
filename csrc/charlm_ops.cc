// Glue of the small network kernels (embedding, bias, activation, softmax cross-entropy) used by
// the character-level LM example: argument checks here (every buffer on one device and large
// enough, counts in range), the work in the CPU backend (csrc/cpu/charlm.cc) or the CUDA
// launchers (cuda/charlm.cu). Shapes and dtypes are checked first by lib/nn.ts.
#include <cmath>
#include <string>
#include <vector>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "cpu/charlm.h"
#include "../cuda/charlm_launchers.h"

namespace slimopt {

namespace {

// A buffer argument that must hold `count` elements of `elemBytes`; all buffers of one call share
// the device of the first.
struct Buffers {
  Napi::Env env;
  const char* op;
  int device = kCpu - 1;

  void* need(Napi::Value v, const char* what, int64_t count, int elemBytes) {
    NativeBuffer* b = NativeBuffer::From(env, v, what);
    if (device == kCpu - 1) device = b->device();
    else if (b->device() != device) throwError(env, "E_DEVICE", std::string(op) + ": " + what + " is on another device");
    const double bytes = double(count) * double(elemBytes);
    if (bytes > double(b->bytes()))
      throwError(env, "E_SHAPE", std::string(op) + ": " + what + " needs " + std::to_string(int64_t(bytes)) +
                                     " bytes, the buffer has " + std::to_string(b->bytes()));
    return b->data();
  }
  float* f32(Napi::Value v, const char* what, int64_t count) { return static_cast<float*>(need(v, what, count, 4)); }
  int32_t* i32(Napi::Value v, const char* what, int64_t count) { return static_cast<int32_t*>(need(v, what, count, 4)); }
  // Called once every buffer is checked: refuses a lost device; true for the CPU.
  bool onCpu() {
    ensureUsable(env, device);
    return device == kCpu;
  }
  void check(const gpu::Status& st) {
    if (!st.ok()) throwCuda(env, device, st, op);
  }
};

bool boolArg(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsBoolean()) throwError(env, "E_ARG", std::string(what) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

float finiteArg(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsNumber()) throwError(env, "E_ARG", std::string(what) + " must be a number");
  const float f = v.As<Napi::Number>().FloatValue();
  if (!std::isfinite(f)) throwError(env, "E_ARG", std::string(what) + " must be finite");
  return f;
}

Activation activationArg(Napi::Env env, Napi::Value v) {
  if (!v.IsNumber()) throwError(env, "E_ARG", "activation must be a number code");
  const int a = v.As<Napi::Number>().Int32Value();
  if (a < 0 || a > 2) throwError(env, "E_ARG", "unknown activation code " + std::to_string(a));
  return Activation(a);
}

// Products of counts stay far below 2^53 (so a double check is exact) and in int64.
void needProduct(Napi::Env env, int64_t a, int64_t b, const char* op) {
  if (double(a) * double(b) > 9.0e15) throwError(env, "E_ARG", std::string(op) + ": sizes too large");
}

}  // namespace

// charlmEmbedding(table, vocab, d, idx, n, out)
static Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buffers B{env, "embedding"};
  const int64_t vocab = countArg(env, info[1], "vocab"), d = countArg(env, info[2], "d"), n = countArg(env, info[4], "n");
  needProduct(env, vocab, d, B.op);
  needProduct(env, n, d, B.op);
  const float* table = B.f32(info[0], "table", vocab * d);
  const int32_t* idx = B.i32(info[3], "indices", n);
  float* out = B.f32(info[5], "output", n * d);
  if (B.onCpu()) cpu::embeddingForward(table, vocab, d, idx, n, out);
  else B.check(gpu::embeddingForward(B.device, table, vocab, d, idx, n, out));
  return env.Undefined();
}

// charlmEmbeddingBackward(dOut, idx, n, dTable, vocab, d, accumulate)
static Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buffers B{env, "embeddingBackward"};
  const int64_t n = countArg(env, info[2], "n"), vocab = countArg(env, info[4], "vocab"), d = countArg(env, info[5], "d");
  const bool accumulate = boolArg(env, info[6], "accumulate");
  needProduct(env, vocab, d, B.op);
  needProduct(env, n, d, B.op);
  if (d > 8192) throwError(env, "E_SHAPE", "embeddingBackward: rows wider than 8192 are not supported");
  const float* dOut = B.f32(info[0], "output gradient", n * d);
  const int32_t* idx = B.i32(info[1], "indices", n);
  float* dTable = B.f32(info[3], "table gradient", vocab * d);
  if (B.onCpu()) cpu::embeddingBackward(dOut, idx, n, dTable, vocab, d, accumulate);
  else B.check(gpu::embeddingBackward(B.device, dOut, idx, n, dTable, vocab, d, accumulate));
  return env.Undefined();
}

// charlmBiasAdd(x, bias, rows, cols)
static Napi::Value BiasAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buffers B{env, "addBias"};
  const int64_t rows = countArg(env, info[2], "rows"), cols = countArg(env, info[3], "cols");
  needProduct(env, rows, cols, B.op);
  float* x = B.f32(info[0], "input", rows * cols);
  const float* bias = B.f32(info[1], "bias", cols);
  if (B.onCpu()) cpu::biasAdd(x, bias, rows, cols);
  else B.check(gpu::biasAdd(B.device, x, bias, rows, cols));
  return env.Undefined();
}

// charlmBiasGrad(dy, rows, cols, dBias, accumulate)
static Napi::Value BiasGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buffers B{env, "biasGrad"};
  const int64_t rows = countArg(env, info[1], "rows"), cols = countArg(env, info[2], "cols");
  const bool accumulate = boolArg(env, info[4], "accumulate");
  needProduct(env, rows, cols, B.op);
  const float* dy = B.f32(info[0], "output gradient", rows * cols);
  float* dBias = B.f32(info[3], "bias gradient", cols);
  if (B.onCpu()) cpu::biasGrad(dy, rows, cols, dBias, accumulate);
  else B.check(gpu::biasGrad(B.device, dy, rows, cols, dBias, accumulate));
  return env.Undefined();
}

// charlmActivation(kind, x, y, n)
static Napi::Value ActivationFwd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buffers B{env, "activation"};
  const Activation a = activationArg(env, info[0]);
  const int64_t n = countArg(env, info[3], "n");
  const float* x = B.f32(info[1], "input", n);
  float* y = B.f32(info[2], "output", n);
  if (B.onCpu()) cpu::activationForward(a, x, y, n);
  else B.check(gpu::activationForward(B.device, a, x, y, n));
  return env.Undefined();
}

// charlmActivationBackward(kind, x, dy, dx, n)
static Napi::Value ActivationBwd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buffers B{env, "activationBackward"};
  const Activation a = activationArg(env, info[0]);
  const int64_t n = countArg(env, info[4], "n");
  const float* x = B.f32(info[1], "input", n);
  const float* dy = B.f32(info[2], "output gradient", n);
  float* dx = B.f32(info[3], "input gradient", n);
  if (B.onCpu()) cpu::activationBackward(a, x, dy, dx, n);
  else B.check(gpu::activationBackward(B.device, a, x, dy, dx, n));
  return env.Undefined();
}

// charlmCrossEntropy(logits, targets, rows, vocab, rowLoss, loss, lossScale, dLogits|null, gradScale)
static Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buffers B{env, "crossEntropy"};
  const int64_t rows = countArg(env, info[2], "rows"), vocab = countArg(env, info[3], "vocab");
  needProduct(env, rows, vocab, B.op);
  if (vocab == 0) throwError(env, "E_SHAPE", "crossEntropy: vocab must be positive");
  const float lossScale = finiteArg(env, info[6], "lossScale");
  const float gradScale = finiteArg(env, info[8], "gradScale");
  const float* logits = B.f32(info[0], "logits", rows * vocab);
  const int32_t* targets = B.i32(info[1], "targets", rows);
  float* rowLoss = B.f32(info[4], "row losses", rows);
  float* loss = B.f32(info[5], "loss", 1);
  float* dLogits = info[7].IsNull() || info[7].IsUndefined() ? nullptr : B.f32(info[7], "logits gradient", rows * vocab);
  if (B.onCpu()) cpu::softmaxCrossEntropy(logits, targets, rows, vocab, rowLoss, loss, lossScale, dLogits, gradScale);
  else B.check(gpu::softmaxCrossEntropy(B.device, logits, targets, rows, vocab, rowLoss, loss, lossScale, dLogits,
                                        gradScale));
  return env.Undefined();
}

void registerCharlm(Napi::Env env, Napi::Object exports) {
  exports.Set("charlmEmbedding", Napi::Function::New(env, Embedding));
  exports.Set("charlmEmbeddingBackward", Napi::Function::New(env, EmbeddingBackward));
  exports.Set("charlmBiasAdd", Napi::Function::New(env, BiasAdd));
  exports.Set("charlmBiasGrad", Napi::Function::New(env, BiasGrad));
  exports.Set("charlmActivation", Napi::Function::New(env, ActivationFwd));
  exports.Set("charlmActivationBackward", Napi::Function::New(env, ActivationBwd));
  exports.Set("charlmCrossEntropy", Napi::Function::New(env, CrossEntropy));
}

}  // namespace slimopt
