#include "devices.h"
#include <dlfcn.h>
#include <cstdlib>
#include <map>
#include <vector>
#include "errors.h"
#include "../cuda/runtime.h"

namespace slimopt {

static int gCount = -1;
static std::string gWhy;
static std::map<int, std::string> gLost;

int cudaDeviceCount() {
  if (gCount < 0) gCount = gpu::deviceCount(&gWhy);
  return gCount;
}
const std::string& noCudaReason() { cudaDeviceCount(); return gWhy; }

void markLost(int dev, const std::string& why) {
  if (dev >= 0 && gLost.find(dev) == gLost.end()) gLost[dev] = why;
}

void ensureUsable(Napi::Env env, int dev) {
  if (dev == kCpu) return;
  int n = cudaDeviceCount();
  if (n == 0) throwError(env, "E_NO_CUDA", "no CUDA device: " + gWhy);
  if (dev < 0 || dev >= n)
    throwError(env, "E_DEVICE", "cuda:" + std::to_string(dev) + " does not exist (" + std::to_string(n) + " CUDA device(s))");
  auto it = gLost.find(dev);
  if (it != gLost.end())
    throwError(env, "E_CUDA", "cuda:" + std::to_string(dev) + " is lost after " + it->second +
                                  "; restart the process to use it again");
}

static int deviceArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) throwError(info.Env(), "E_ARG", "device index must be a number");
  return info[i].As<Napi::Number>().Int32Value();
}

static Napi::Value DeviceCount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("count", Napi::Number::New(env, cudaDeviceCount()));
  o.Set("why", Napi::String::New(env, gWhy));
  return o;
}

static Napi::Value DeviceProps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceArg(info, 0);
  ensureUsable(env, dev);
  gpu::DeviceProps p;
  gpu::Status st = gpu::deviceProps(dev, &p);
  if (!st.ok()) throwCuda(env, dev, st, "deviceProps");
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", p.name);
  o.Set("major", p.major);
  o.Set("minor", p.minor);
  o.Set("totalMemory", double(p.totalMemory));
  o.Set("multiprocessors", p.multiprocessors);
  o.Set("l2Bytes", double(p.l2Bytes));
  o.Set("driverVersion", p.driverVersion);
  o.Set("runtimeVersion", p.runtimeVersion);
  return o;
}

static Napi::Value MemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceArg(info, 0);
  ensureUsable(env, dev);
  size_t freeB = 0, totalB = 0;
  gpu::Status st = gpu::memInfo(dev, &freeB, &totalB);
  if (!st.ok()) throwCuda(env, dev, st, "memInfo");
  Napi::Object o = Napi::Object::New(env);
  o.Set("free", double(freeB));
  o.Set("total", double(totalB));
  return o;
}

static Napi::Value Stream(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceArg(info, 0);
  ensureUsable(env, dev);
  return Napi::BigInt::New(env, uint64_t(reinterpret_cast<uintptr_t>(gpu::stream(dev))));
}

static Napi::Value LostReason(const Napi::CallbackInfo& info) {
  int dev = deviceArg(info, 0);
  auto it = gLost.find(dev);
  if (it == gLost.end()) return info.Env().Null();
  return Napi::String::New(info.Env(), it->second);
}

// Waits for the device's stream on a worker thread, so the event loop keeps running.
class SyncWorker : public Napi::AsyncWorker {
 public:
  SyncWorker(Napi::Env env, int dev) : Napi::AsyncWorker(env), dev_(dev), deferred_(env) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override { st_ = gpu::synchronize(dev_); }
  void OnOK() override {
    Napi::Env env = Env();
    if (st_.ok()) { deferred_.Resolve(env.Undefined()); return; }
    try {
      throwCuda(env, dev_, st_, "synchronize");
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

 private:
  int dev_;
  gpu::Status st_;
  Napi::Promise::Deferred deferred_;
};

static Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dev = deviceArg(info, 0);
  if (dev == kCpu) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Resolve(env.Undefined());
    return d.Promise();
  }
  ensureUsable(env, dev);
  auto* w = new SyncWorker(env, dev);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

static Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cudaCompiled", gpu::compiled());
  o.Set("cudaArchs", gpu::compiledArchs());
  o.Set("buildFlags", SLIMOPT_BUILD_FLAGS);
  o.Set("napiVersion", NAPI_VERSION);
  return o;
}

// probeLibrary(envVar, [names]): the first of the env var's path, then the sonames, that dlopen
// accepts, or null. Used by `slimopt info` to say which linear-algebra path is available.
static Napi::Value ProbeLibrary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsArray()) throwError(env, "E_ARG", "probeLibrary(envVar, names)");
  std::vector<std::string> names;
  const char* fromEnv = std::getenv(info[0].As<Napi::String>().Utf8Value().c_str());
  if (fromEnv != nullptr && *fromEnv != 0) names.push_back(fromEnv);
  Napi::Array a = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) names.push_back(a.Get(i).ToString().Utf8Value());
  for (const std::string& n : names) {
    void* h = dlopen(n.c_str(), RTLD_LAZY | RTLD_LOCAL);
    if (h != nullptr) {
      dlclose(h);
      return Napi::String::New(env, n);
    }
  }
  return env.Null();
}

void registerDevices(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceCount", Napi::Function::New(env, DeviceCount));
  exports.Set("deviceProps", Napi::Function::New(env, DeviceProps));
  exports.Set("memInfo", Napi::Function::New(env, MemInfo));
  exports.Set("stream", Napi::Function::New(env, Stream));
  exports.Set("lostReason", Napi::Function::New(env, LostReason));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  exports.Set("probeLibrary", Napi::Function::New(env, ProbeLibrary));
}

}  // namespace slimopt
