#include "quant_map.h"
#include <string>
#include "devices.h"
#include "errors.h"
#include "../cuda/runtime.h"

namespace slimopt {

static Napi::FunctionReference* gQuantMapCtor = nullptr;

Napi::Function QuantMap::Init(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "QuantMap", {
      InstanceAccessor<&QuantMap::Size>("size"),
      InstanceAccessor<&QuantMap::TableBytes>("tableBytes"),
  });
  gQuantMapCtor = new Napi::FunctionReference(Napi::Persistent(ctor));
  return ctor;
}

QuantMap* QuantMap::From(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(gQuantMapCtor->Value()))
    throwError(env, "E_ARG", std::string(what) + " is not a quantization map");
  return Unwrap(v.As<Napi::Object>());
}

// new QuantMap(values: Float32Array of 16 or 256 sorted entries in [-1, 1])
QuantMap::QuantMap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<QuantMap>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throwError(env, "E_ARG", "a quantization map is a Float32Array");
  Napi::Float32Array a = info[0].As<Napi::Float32Array>();
  const size_t n = a.ElementLength();
  if (n != 16 && n != 256)
    throwError(env, "E_SHAPE", "a quantization map has 256 entries (16 for 4-bit codes), got " + std::to_string(n));
  std::string why = cpu::buildQuantMap(a.Data(), int(n), &host_);
  if (!why.empty()) throwError(env, "E_ARG", "quantization map refused: " + why);
}

QuantMap::~QuantMap() {
  for (auto& kv : device_) gpu::release(kv.first, kv.second);  // stream-ordered: after queued kernels
}

const void* QuantMap::deviceBlob(Napi::Env env, int dev) {
  auto it = device_.find(dev);
  if (it != device_.end()) return it->second;
  std::vector<uint8_t> blob = host_.blob();
  void* p = nullptr;
  gpu::Status st = gpu::alloc(dev, blob.size(), &p);
  if (st.ok()) st = gpu::copyHtoD(dev, p, blob.data(), blob.size());
  if (!st.ok()) {
    if (p != nullptr) gpu::release(dev, p);
    throwCuda(env, dev, st, "uploading a quantization map", blob.size());
  }
  device_[dev] = p;
  return p;
}

Napi::Value QuantMap::Size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), size()); }
Napi::Value QuantMap::TableBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(mapBlobBytes(host_.finder)));
}

Q8MapArgs q8MapArgs(Napi::Env env, Napi::Value a, Napi::Value b) {
  Q8MapArgs m{QuantMap::From(env, a, "first-moment map"), QuantMap::From(env, b, "second-moment map")};
  if (m.a->size() != 256 || m.b->size() != 256) throwError(env, "E_SHAPE", "8-bit states need maps of 256 entries");
  return m;
}

Q8Maps q8MapsOn(Napi::Env env, const Q8MapArgs& m, int dev) {
  Q8Maps q{};
  q.fA = m.a->host().finder;
  q.fB = m.b->host().finder;
  q.blobA = dev == kCpu ? m.a->hostBlob() : static_cast<const uint8_t*>(m.a->deviceBlob(env, dev));
  q.blobB = dev == kCpu ? m.b->hostBlob() : static_cast<const uint8_t*>(m.b->deviceBlob(env, dev));
  return q;
}

}  // namespace slimopt
