#include "buffer.h"
#include <cstdlib>
#include <string>
#include "devices.h"
#include "errors.h"
#include "../cuda/runtime.h"

namespace slimopt {

static Napi::FunctionReference* gBufferCtor = nullptr;

Napi::Function NativeBuffer::Init(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "NativeBuffer", {
      InstanceAccessor<&NativeBuffer::Ptr>("ptr"),
      InstanceAccessor<&NativeBuffer::Bytes>("bytes"),
      InstanceAccessor<&NativeBuffer::Device>("device"),
      InstanceAccessor<&NativeBuffer::Disposed>("disposed"),
      InstanceAccessor<&NativeBuffer::Owned>("owned"),
      InstanceMethod<&NativeBuffer::Dispose>("dispose"),
  });
  gBufferCtor = new Napi::FunctionReference(Napi::Persistent(ctor));
  return ctor;
}

NativeBuffer* NativeBuffer::From(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(gBufferCtor->Value()))
    throwError(env, "E_ARG", std::string(what) + " is not a tensor buffer");
  NativeBuffer* b = Unwrap(v.As<Napi::Object>());
  if (b->disposed()) throwError(env, "E_DISPOSED", std::string(what) + " was disposed");
  return b;
}

// new NativeBuffer(device, bytes)            allocates (uninitialised)
// new NativeBuffer(device, bytes, ptrBigInt) wraps foreign device memory (not freed by us)
NativeBuffer::NativeBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeBuffer>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber()) throwError(env, "E_ARG", "NativeBuffer(device, bytes[, ptr])");
  int dev = info[0].As<Napi::Number>().Int32Value();
  double bytesD = info[1].As<Napi::Number>().DoubleValue();
  if (!(bytesD >= 0) || bytesD > 9.0e15) throwError(env, "E_ARG", "buffer size out of range");
  size_t bytes = size_t(bytesD);
  ensureUsable(env, dev);
  device_ = dev;
  bytes_ = bytes;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!info[2].IsBigInt()) throwError(env, "E_ARG", "pointer must be a BigInt");
    bool lossless = true;
    uint64_t p = info[2].As<Napi::BigInt>().Uint64Value(&lossless);
    if (p == 0 || !lossless) throwError(env, "E_ARG", "fromDevicePointer: the pointer is null or not a 64-bit address");
    if (dev == kCpu) throwError(env, "E_DEVICE", "fromDevicePointer wraps CUDA device memory; the device given is cpu");
    gpu::Status st = gpu::pointerCheck(dev, reinterpret_cast<void*>(uintptr_t(p)));
    if (!st.ok()) throwError(env, "E_ARG", "fromDevicePointer: " + st.message);
    data_ = reinterpret_cast<void*>(uintptr_t(p));
    owned_ = false;
    return;
  }
  size_t alloc = bytes == 0 ? 64 : bytes;
  if (dev == kCpu) {
    // 64-byte aligned so the CPU loops vectorise; rounded up as aligned_alloc requires.
    data_ = std::aligned_alloc(64, (alloc + 63) / 64 * 64);
    if (data_ == nullptr) throwError(env, "E_OOM", "out of host memory: asked " + std::to_string(bytes) + " bytes");
  } else {
    void* p = nullptr;
    gpu::Status st = gpu::alloc(dev, alloc, &p);
    if (!st.ok()) throwCuda(env, dev, st, "alloc", bytes);
    data_ = p;
  }
  reported_ = int64_t(alloc);
  Napi::MemoryManagement::AdjustExternalMemory(env, reported_);
}

NativeBuffer::~NativeBuffer() { freeMemory(nullptr); }

void NativeBuffer::freeMemory(Napi::Env* env) {
  if (data_ == nullptr) return;
  if (owned_) {
    if (device_ == kCpu) std::free(data_);
    else gpu::release(device_, data_);  // stream-ordered: after every kernel already enqueued
  }
  data_ = nullptr;
  if (env != nullptr && reported_ != 0) Napi::MemoryManagement::AdjustExternalMemory(*env, -reported_);
  reported_ = 0;
}

void NativeBuffer::release(Napi::Env env) {
  if (--pending_ == 0 && disposeRequested_) freeMemory(&env);
}

Napi::Value NativeBuffer::Ptr(const Napi::CallbackInfo& info) {
  if (disposed()) throwError(info.Env(), "E_DISPOSED", "tensor was disposed");
  return Napi::BigInt::New(info.Env(), uint64_t(reinterpret_cast<uintptr_t>(data_)));
}
Napi::Value NativeBuffer::Bytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(bytes_)); }
Napi::Value NativeBuffer::Device(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), device_); }
Napi::Value NativeBuffer::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), disposed());
}
Napi::Value NativeBuffer::Owned(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), owned_); }

Napi::Value NativeBuffer::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposeRequested_) return env.Undefined();
  disposeRequested_ = true;
  if (pending_ == 0) freeMemory(&env);
  return env.Undefined();
}

}  // namespace slimopt
