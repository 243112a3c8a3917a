// Tensor data movement and fills: argument checks here, the work in the CPU backend or the CUDA
// launchers.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "cpu/cpu_backend.h"
#include "../cuda/launchers.h"

namespace slimopt {

DType dtypeArg(Napi::Env env, Napi::Value v) {
  if (!v.IsNumber()) throwError(env, "E_DTYPE", "dtype must be a number code");
  int d = v.As<Napi::Number>().Int32Value();
  if (d < 0 || d > 4) throwError(env, "E_DTYPE", "unknown dtype code " + std::to_string(d));
  return DType(d);
}

int64_t countArg(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsNumber()) throwError(env, "E_ARG", std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9.0e15 || d != double(int64_t(d))) throwError(env, "E_ARG", std::string(what) + " out of range");
  return int64_t(d);
}

float finiteFloatField(Napi::Env env, Napi::Object obj, const char* key) {
  Napi::Value v = obj.Get(key);
  if (!v.IsNumber()) throwError(env, "E_ARG", std::string(key) + " must be a number");
  float f = v.As<Napi::Number>().FloatValue();
  if (!std::isfinite(f)) throwError(env, "E_ARG", std::string(key) + " must be finite");
  return f;
}

// A live buffer on dev holding at least `bytes`.
void* bufArg(Napi::Env env, Napi::Value v, int dev, size_t bytes, const char* what) {
  NativeBuffer* b = NativeBuffer::From(env, v, what);
  if (b->device() != dev) throwError(env, "E_DEVICE", std::string(what) + " is on another device");
  if (b->bytes() < bytes) throwError(env, "E_SHAPE", std::string(what) + " is too small");
  return b->data();
}
void* optBufArg(Napi::Env env, Napi::Value v, int dev, size_t bytes, const char* what) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return bufArg(env, v, dev, bytes, what);
}
int deviceOf(Napi::Env env, Napi::Value v) {
  int dev = NativeBuffer::From(env, v, "buffer")->device();
  ensureUsable(env, dev);
  return dev;
}
double numField(Napi::Env env, Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throwError(env, "E_ARG", std::string(key) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throwError(env, "E_ARG", std::string(key) + " must be finite");
  return d;
}
DType floatDtype(Napi::Env env, Napi::Value v) {
  DType d = dtypeArg(env, v);
  if (d != DType::F32 && d != DType::BF16 && d != DType::F16) throwError(env, "E_DTYPE", "expected f32, bf16 or f16");
  return d;
}
static void needBytes(Napi::Env env, NativeBuffer* b, size_t bytes, const char* what) {
  if (bytes > b->bytes())
    throwError(env, "E_SHAPE", std::string(what) + ": " + std::to_string(bytes) + " bytes needed, the buffer has " +
                                   std::to_string(b->bytes()));
}

// writeRaw(buf, byteOffset, typedArray): copy the array's bytes into the buffer.
static Napi::Value WriteRaw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* b = NativeBuffer::From(env, info[0], "destination");
  int64_t off = countArg(env, info[1], "byteOffset");
  if (!info[2].IsTypedArray()) throwError(env, "E_ARG", "source must be a typed array");
  Napi::TypedArray ta = info[2].As<Napi::TypedArray>();
  const uint8_t* src = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  size_t n = ta.ByteLength();
  needBytes(env, b, size_t(off) + n, "copyFrom");
  ensureUsable(env, b->device());
  if (n == 0) return env.Undefined();
  uint8_t* dst = static_cast<uint8_t*>(b->data()) + off;
  if (b->device() == kCpu) {
    std::memcpy(dst, src, n);
  } else {
    gpu::Status st = gpu::copyHtoD(b->device(), dst, src, n);
    if (!st.ok()) throwCuda(env, b->device(), st, "copyFrom");
  }
  return env.Undefined();
}

// writeFloat(buf, dtype, Float32Array): converts to the buffer's dtype on the host, then copies.
static Napi::Value WriteFloat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* b = NativeBuffer::From(env, info[0], "destination");
  DType dt = dtypeArg(env, info[1]);
  if (dt != DType::F32 && dt != DType::BF16 && dt != DType::F16) throwError(env, "E_DTYPE", "writeFloat needs f32, bf16 or f16");
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throwError(env, "E_ARG", "source must be a Float32Array");
  Napi::Float32Array src = info[2].As<Napi::Float32Array>();
  size_t n = src.ElementLength();
  needBytes(env, b, n * size_t(dtypeSize(dt)), "copyFrom");
  ensureUsable(env, b->device());
  if (n == 0) return env.Undefined();
  if (b->device() == kCpu) {
    cpu::convert(src.Data(), DType::F32, b->data(), dt, int64_t(n));
    return env.Undefined();
  }
  gpu::Status st;
  if (dt == DType::F32) {
    st = gpu::copyHtoD(b->device(), b->data(), src.Data(), n * 4);
  } else {
    std::vector<uint16_t> tmp(n);
    cpu::convert(src.Data(), DType::F32, tmp.data(), dt, int64_t(n));
    st = gpu::copyHtoD(b->device(), b->data(), tmp.data(), n * 2);  // staged before return
  }
  if (!st.ok()) throwCuda(env, b->device(), st, "copyFrom");
  return env.Undefined();
}

// Reads: the copy is enqueued on the JS thread (so it sees exactly the work enqueued before
// it), a worker waits for it and converts, and the Promise resolves on the JS thread.
class ReadWorker : public Napi::AsyncWorker {
 public:
  ReadWorker(Napi::Env env, NativeBuffer* buf, Napi::Object bufObj, DType dtype, int64_t n, bool asFloat)
      : Napi::AsyncWorker(env), buf_(buf), dtype_(dtype), n_(n), asFloat_(asFloat), deferred_(env) {
    bufRef_ = Napi::Persistent(bufObj);
    buf_->retain();
  }
  ~ReadWorker() override { gpu::pinnedFree(pinned_); }

  Napi::Promise promise() { return deferred_.Promise(); }

  // Called on the JS thread before Queue(); throws on failure (the worker is then deleted).
  void enqueue(Napi::Env env, Napi::Value result, void* resultData, size_t rawBytes) {
    resultRef_ = Napi::Persistent(result.As<Napi::Object>());
    resultData_ = resultData;
    rawBytes_ = rawBytes;
    gpu::Status st = gpu::pinnedAlloc(rawBytes, &pinned_);
    if (st.ok()) st = gpu::copyDtoHAsync(buf_->device(), pinned_, buf_->data(), rawBytes, &event_);
    if (!st.ok()) {
      buf_->release(env);
      throwCuda(env, buf_->device(), st, "toFloat32Array", rawBytes);
    }
  }

  void Execute() override {
    st_ = gpu::eventWaitAndDestroy(event_);
    if (!st_.ok()) return;
    if (asFloat_) cpu::convert(pinned_, dtype_, resultData_, DType::F32, n_);
    else std::memcpy(resultData_, pinned_, rawBytes_);
  }
  void OnOK() override {
    Napi::Env env = Env();
    buf_->release(env);
    if (st_.ok()) { deferred_.Resolve(resultRef_.Value()); return; }
    try {
      throwCuda(env, buf_->device(), st_, "toFloat32Array");
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

 private:
  NativeBuffer* buf_;
  Napi::ObjectReference bufRef_, resultRef_;
  DType dtype_;
  int64_t n_;
  bool asFloat_;
  void* resultData_ = nullptr;
  size_t rawBytes_ = 0;
  void* pinned_ = nullptr;
  void* event_ = nullptr;
  gpu::Status st_;
  Napi::Promise::Deferred deferred_;
};

static Napi::Value Read(const Napi::CallbackInfo& info, bool asFloat) {
  Napi::Env env = info.Env();
  NativeBuffer* b = NativeBuffer::From(env, info[0], "tensor");
  DType dt = dtypeArg(env, info[1]);
  int64_t n = countArg(env, info[2], "count");
  size_t raw = size_t(n) * size_t(dtypeSize(dt));
  needBytes(env, b, raw, "read");
  ensureUsable(env, b->device());
  Napi::Value result;
  void* data;
  if (asFloat) {
    Napi::Float32Array fa = Napi::Float32Array::New(env, size_t(n));
    result = fa; data = fa.Data();
  } else {
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, raw);
    result = ab; data = ab.Data();
  }
  if (b->device() == kCpu || n == 0) {
    if (n > 0) {
      if (asFloat) cpu::convert(b->data(), dt, data, DType::F32, n);
      else std::memcpy(data, b->data(), raw);
    }
    auto d = Napi::Promise::Deferred::New(env);
    d.Resolve(result);
    return d.Promise();
  }
  auto* w = new ReadWorker(env, b, info[0].As<Napi::Object>(), dt, n, asFloat);
  try {
    w->enqueue(env, result, data, raw);
  } catch (...) {
    delete w;
    throw;
  }
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

static Napi::Value ReadFloat(const Napi::CallbackInfo& info) { return Read(info, true); }
static Napi::Value ReadRaw(const Napi::CallbackInfo& info) { return Read(info, false); }

// copyBuffer(dst, src, bytes): same device on the device; across devices through the host.
static Napi::Value CopyBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* dst = NativeBuffer::From(env, info[0], "destination");
  NativeBuffer* src = NativeBuffer::From(env, info[1], "source");
  int64_t n = countArg(env, info[2], "bytes");
  needBytes(env, dst, size_t(n), "copy");
  needBytes(env, src, size_t(n), "copy");
  ensureUsable(env, dst->device());
  ensureUsable(env, src->device());
  if (n == 0) return env.Undefined();
  int dd = dst->device(), sd = src->device();
  gpu::Status st;
  if (dd == kCpu && sd == kCpu) {
    std::memmove(dst->data(), src->data(), size_t(n));
  } else if (dd == kCpu) {
    st = gpu::copyDtoH(sd, dst->data(), src->data(), size_t(n));
    if (!st.ok()) throwCuda(env, sd, st, "copy");
  } else if (sd == kCpu) {
    st = gpu::copyHtoD(dd, dst->data(), src->data(), size_t(n));
    if (!st.ok()) throwCuda(env, dd, st, "copy");
  } else if (dd == sd) {
    st = gpu::copyDtoD(dd, dst->data(), src->data(), size_t(n));
    if (!st.ok()) throwCuda(env, dd, st, "copy");
  } else {
    std::vector<uint8_t> tmp(static_cast<size_t>(n));
    st = gpu::copyDtoH(sd, tmp.data(), src->data(), size_t(n));
    if (!st.ok()) throwCuda(env, sd, st, "copy");
    st = gpu::copyHtoD(dd, dst->data(), tmp.data(), size_t(n));
    if (!st.ok()) throwCuda(env, dd, st, "copy");
  }
  return env.Undefined();
}

// convertBuffer(dst, dstType, src, srcType, n): same device.
static Napi::Value ConvertBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* dst = NativeBuffer::From(env, info[0], "destination");
  DType dt = dtypeArg(env, info[1]);
  NativeBuffer* src = NativeBuffer::From(env, info[2], "source");
  DType st_ = dtypeArg(env, info[3]);
  int64_t n = countArg(env, info[4], "count");
  for (DType d : {dt, st_})
    if (d != DType::F32 && d != DType::BF16 && d != DType::F16) throwError(env, "E_DTYPE", "conversion needs f32, bf16 or f16");
  if (dst->device() != src->device()) throwError(env, "E_DEVICE", "conversion needs both tensors on one device");
  needBytes(env, dst, size_t(n) * dtypeSize(dt), "convert");
  needBytes(env, src, size_t(n) * dtypeSize(st_), "convert");
  ensureUsable(env, dst->device());
  if (n == 0) return env.Undefined();
  if (dst->device() == kCpu) {
    cpu::convert(src->data(), st_, dst->data(), dt, n);
  } else {
    gpu::Status st = gpu::convert(dst->device(), src->data(), st_, dst->data(), dt, n);
    if (!st.ok()) throwCuda(env, dst->device(), st, "convert");
  }
  return env.Undefined();
}

// fillRandn(buf, dtype, n, seed BigInt, mean, std)
static Napi::Value FillRandn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* b = NativeBuffer::From(env, info[0], "tensor");
  DType dt = dtypeArg(env, info[1]);
  if (dt != DType::F32 && dt != DType::BF16 && dt != DType::F16) throwError(env, "E_DTYPE", "randn needs f32, bf16 or f16");
  int64_t n = countArg(env, info[2], "count");
  if (!info[3].IsBigInt()) throwError(env, "E_ARG", "seed must be a BigInt");
  bool lossless = true;
  uint64_t seed = info[3].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!info[4].IsNumber() || !info[5].IsNumber()) throwError(env, "E_ARG", "mean and std must be numbers");
  float mean = info[4].As<Napi::Number>().FloatValue();
  float std_ = info[5].As<Napi::Number>().FloatValue();
  needBytes(env, b, size_t(n) * dtypeSize(dt), "randn");
  ensureUsable(env, b->device());
  if (n == 0) return env.Undefined();
  if (b->device() == kCpu) {
    cpu::fillRandn(b->data(), dt, n, seed, mean, std_);
  } else {
    gpu::Status st = gpu::fillRandn(b->device(), b->data(), dt, n, seed, mean, std_);
    if (!st.ok()) throwCuda(env, b->device(), st, "randn");
  }
  return env.Undefined();
}

// fillZero(buf, bytes)
static Napi::Value FillZero(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* b = NativeBuffer::From(env, info[0], "tensor");
  int64_t n = countArg(env, info[1], "bytes");
  needBytes(env, b, size_t(n), "zero");
  ensureUsable(env, b->device());
  if (n == 0) return env.Undefined();
  if (b->device() == kCpu) {
    std::memset(b->data(), 0, size_t(n));
  } else {
    gpu::Status st = gpu::memsetZero(b->device(), b->data(), size_t(n));
    if (!st.ok()) throwCuda(env, b->device(), st, "zero");
  }
  return env.Undefined();
}

void registerTensorOps(Napi::Env env, Napi::Object exports) {
  exports.Set("writeRaw", Napi::Function::New(env, WriteRaw));
  exports.Set("writeFloat", Napi::Function::New(env, WriteFloat));
  exports.Set("readFloat", Napi::Function::New(env, ReadFloat));
  exports.Set("readRaw", Napi::Function::New(env, ReadRaw));
  exports.Set("copyBuffer", Napi::Function::New(env, CopyBuffer));
  exports.Set("convertBuffer", Napi::Function::New(env, ConvertBuffer));
  exports.Set("fillRandn", Napi::Function::New(env, FillRandn));
  exports.Set("fillZero", Napi::Function::New(env, FillZero));
}

}  // namespace slimopt
