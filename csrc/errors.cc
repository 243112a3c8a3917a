#include "errors.h"
#include "devices.h"

namespace slimopt {

static Napi::FunctionReference* gErrorClass = nullptr;

Napi::Error makeError(Napi::Env env, const char* code, const std::string& message) {
  if (gErrorClass != nullptr && !gErrorClass->IsEmpty()) {
    Napi::Object err = gErrorClass->New({Napi::String::New(env, code), Napi::String::New(env, message)});
    return Napi::Error(env, err);
  }
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

void throwError(Napi::Env env, const char* code, const std::string& message) {
  throw makeError(env, code, message);
}

void throwCuda(Napi::Env env, int dev, const gpu::Status& st, const std::string& what, size_t bytesAsked) {
  if (st.outOfMemory()) {
    size_t freeB = 0, totalB = 0;
    gpu::memInfo(dev, &freeB, &totalB);
    Napi::Error err = makeError(env, "E_OOM",
        "out of device memory on cuda:" + std::to_string(dev) + " in " + what + ": asked " +
        std::to_string(bytesAsked) + " bytes, " + std::to_string(freeB) + " free of " + std::to_string(totalB));
    err.Set("bytesAsked", Napi::Number::New(env, double(bytesAsked)));
    err.Set("bytesFree", Napi::Number::New(env, double(freeB)));
    throw err;
  }
  if (st.sticky) markLost(dev, st.name + " in " + what);
  Napi::Error err = makeError(env, "E_CUDA", "CUDA error " + st.name + " in " + what + ": " + st.message +
                                                (st.sticky ? " (the device is now lost)" : ""));
  err.Set("cudaError", Napi::String::New(env, st.name));
  err.Set("kernel", Napi::String::New(env, what));
  throw err;
}

static Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "setErrorClass needs a constructor");
  if (gErrorClass == nullptr) gErrorClass = new Napi::FunctionReference();
  *gErrorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

void registerErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
}

}  // namespace slimopt
