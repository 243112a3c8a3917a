// Blockwise quantization entry points: argument checks here, the work in the CPU backend or the
// CUDA launchers.
#include <cstring>
#include <string>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "quant_map.h"
#include "cpu/quant.h"
#include "../cuda/quant_launchers.h"

namespace slimopt {

namespace {

int64_t blockSizeArg(Napi::Env env, Napi::Value v) {
  if (!v.IsNumber()) throwError(env, "E_ARG", "blockSize must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  const int64_t b = int64_t(d);
  if (double(b) != d || b < 64 || b > 4096 || (b & (b - 1)) != 0)
    throwError(env, "E_ARG", "blockSize must be a power of two in [64, 4096], got " + v.ToString().Utf8Value());
  return b;
}

void needBytes(Napi::Env env, NativeBuffer* b, size_t bytes, const char* what) {
  if (bytes > b->bytes())
    throwError(env, "E_SHAPE", std::string(what) + ": " + std::to_string(bytes) + " bytes needed, the buffer has " +
                                   std::to_string(b->bytes()));
}

bool isFloat(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }

}  // namespace

// quantizeBlockwise(x, dtype, n, codes, absmax, blockSize, map)
static Napi::Value QuantizeBlockwise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* x = NativeBuffer::From(env, info[0], "input");
  DType dt = dtypeArg(env, info[1]);
  if (!isFloat(dt)) throwError(env, "E_DTYPE", "quantizeBlockwise takes f32, bf16 or f16 input");
  int64_t n = countArg(env, info[2], "count");
  NativeBuffer* codes = NativeBuffer::From(env, info[3], "codes");
  NativeBuffer* absmax = NativeBuffer::From(env, info[4], "absmax");
  int64_t block = blockSizeArg(env, info[5]);
  QuantMap* map = QuantMap::From(env, info[6], "map");
  const int dev = x->device();
  if (codes->device() != dev || absmax->device() != dev) throwError(env, "E_DEVICE", "input, codes and absmax must be on one device");
  needBytes(env, x, size_t(n) * dtypeSize(dt), "quantizeBlockwise input");
  needBytes(env, codes, size_t(n), "quantizeBlockwise codes");
  const int64_t blocks = (n + block - 1) / block;
  needBytes(env, absmax, size_t(blocks) * 4, "quantizeBlockwise absmax");
  ensureUsable(env, dev);
  if (n == 0) return env.Undefined();
  if (dev == kCpu) {
    cpu::quantizeBlockwise(x->data(), dt, n, static_cast<uint8_t*>(codes->data()), static_cast<float*>(absmax->data()),
                           block, map->host());
    return env.Undefined();
  }
  const void* blob = map->deviceBlob(env, dev);
  gpu::Status st = gpu::quantizeBlockwise(dev, x->data(), dt, n, static_cast<uint8_t*>(codes->data()),
                                          static_cast<float*>(absmax->data()), block, blob, map->host().finder);
  if (!st.ok()) throwCuda(env, dev, st, "quantizeBlockwise");
  return env.Undefined();
}

// dequantizeBlockwise(codes, absmax, n, out, dtype, blockSize, map)
static Napi::Value DequantizeBlockwise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* codes = NativeBuffer::From(env, info[0], "codes");
  NativeBuffer* absmax = NativeBuffer::From(env, info[1], "absmax");
  int64_t n = countArg(env, info[2], "count");
  NativeBuffer* out = NativeBuffer::From(env, info[3], "output");
  DType dt = dtypeArg(env, info[4]);
  if (!isFloat(dt)) throwError(env, "E_DTYPE", "dequantizeBlockwise writes f32, bf16 or f16");
  int64_t block = blockSizeArg(env, info[5]);
  QuantMap* map = QuantMap::From(env, info[6], "map");
  const int dev = out->device();
  if (codes->device() != dev || absmax->device() != dev) throwError(env, "E_DEVICE", "codes, absmax and output must be on one device");
  needBytes(env, codes, size_t(n), "dequantizeBlockwise codes");
  const int64_t blocks = (n + block - 1) / block;
  needBytes(env, absmax, size_t(blocks) * 4, "dequantizeBlockwise absmax");
  needBytes(env, out, size_t(n) * dtypeSize(dt), "dequantizeBlockwise output");
  ensureUsable(env, dev);
  if (n == 0) return env.Undefined();
  if (dev == kCpu) {
    cpu::dequantizeBlockwise(static_cast<const uint8_t*>(codes->data()), static_cast<const float*>(absmax->data()), n,
                             out->data(), dt, block, map->host());
    return env.Undefined();
  }
  const void* blob = map->deviceBlob(env, dev);
  gpu::Status st = gpu::dequantizeBlockwise(dev, static_cast<const uint8_t*>(codes->data()),
                                            static_cast<const float*>(absmax->data()), n, out->data(), dt, block, blob,
                                            map->host().finder);
  if (!st.ok()) throwCuda(env, dev, st, "dequantizeBlockwise");
  return env.Undefined();
}

// fillBytes(buf, value, bytes): the initial codes of quantized states.
static Napi::Value FillBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* b = NativeBuffer::From(env, info[0], "tensor");
  int64_t value = countArg(env, info[1], "value");
  if (value > 255) throwError(env, "E_ARG", "fillBytes: value must be a byte");
  int64_t n = countArg(env, info[2], "bytes");
  needBytes(env, b, size_t(n), "fillBytes");
  ensureUsable(env, b->device());
  if (n == 0) return env.Undefined();
  if (b->device() == kCpu) {
    std::memset(b->data(), int(value), size_t(n));
    return env.Undefined();
  }
  gpu::Status st = gpu::memsetBytes(b->device(), b->data(), int(value), size_t(n));
  if (!st.ok()) throwCuda(env, b->device(), st, "fillBytes");
  return env.Undefined();
}

void registerQuant(Napi::Env env, Napi::Object exports) {
  exports.Set("QuantMap", QuantMap::Init(env));
  exports.Set("quantizeBlockwise", Napi::Function::New(env, QuantizeBlockwise));
  exports.Set("dequantizeBlockwise", Napi::Function::New(env, DequantizeBlockwise));
  exports.Set("fillBytes", Napi::Function::New(env, FillBytes));
}

}  // namespace slimopt
