// NativeBuffer: one block of memory on the CPU or a CUDA device, owned or wrapping a foreign
// pointer. dispose is idempotent; a buffer with reads in flight is freed when they finish.
#pragma once
#include <napi.h>
#include <cstddef>

namespace slimopt {

class NativeBuffer : public Napi::ObjectWrap<NativeBuffer> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Unwraps argument v; throws E_ARG if it is no buffer, E_DISPOSED if it was freed.
  static NativeBuffer* From(Napi::Env env, Napi::Value v, const char* what);

  explicit NativeBuffer(const Napi::CallbackInfo& info);
  ~NativeBuffer() override;

  void* data() const { return data_; }
  int device() const { return device_; }
  size_t bytes() const { return bytes_; }
  bool disposed() const { return data_ == nullptr || disposeRequested_; }
  // Reads in flight keep the memory alive past dispose().
  void retain() { ++pending_; }
  void release(Napi::Env env);

 private:
  Napi::Value Ptr(const Napi::CallbackInfo& info);
  Napi::Value Bytes(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Owned(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  void freeMemory(Napi::Env* env);

  void* data_ = nullptr;
  size_t bytes_ = 0;
  int device_ = -1;
  bool owned_ = true;
  bool disposeRequested_ = false;
  int pending_ = 0;
  int64_t reported_ = 0;  // bytes reported to V8 as external memory
};

}  // namespace slimopt
