// QAdamGroup: the tensor list of one AdamW8bit/AdamW4bit parameter group (quantized tensors and
// the small ones that keep f32 states), validated and laid out once (on the device for CUDA), so
// that a step is one N-API call and one kernel launch whatever the tensor count.
#include <cmath>
#include <string>
#include <vector>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "quant_map.h"
#include "cpu/quant.h"
#include "../cuda/quant_launchers.h"

namespace slimopt {

class QAdamGroup : public Napi::ObjectWrap<QAdamGroup> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "QAdamGroup", {
        InstanceMethod<&QAdamGroup::Step>("step"),
        InstanceMethod<&QAdamGroup::Dispose>("dispose"),
    });
  }

  // new QAdamGroup(device, bits, tensors, counters, mapA, mapB)
  // tensors: Array of [param, grad, stateA, stateB, absmaxA | null, absmaxB | null, numel, dtype, quantized, seedSalt?]
  explicit QAdamGroup(const Napi::CallbackInfo& info) : Napi::ObjectWrap<QAdamGroup>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsArray())
      throwError(env, "E_ARG", "QAdamGroup(device, bits, tensors, counters, mapA, mapB)");
    device_ = info[0].As<Napi::Number>().Int32Value();
    ensureUsable(env, device_);
    bits_ = info[1].As<Napi::Number>().Int32Value();
    if (bits_ != 8 && bits_ != 4) throwError(env, "E_ARG", "bits must be 8 or 4");
    NativeBuffer* counters = NativeBuffer::From(env, info[3], "counters");
    if (counters->bytes() < sizeof(AdamwCounters) || counters->device() != device_)
      throwError(env, "E_ARG", "counters must be 8 bytes on the group's device");
    mapA_ = QuantMap::From(env, info[4], "first-moment map");
    mapB_ = QuantMap::From(env, info[5], "second-moment map");
    const int codes = bits_ == 8 ? 256 : 16;
    if (mapA_->size() != codes || mapB_->size() != codes)
      throwError(env, "E_SHAPE", std::to_string(bits_) + "-bit states need maps of " + std::to_string(codes) + " entries");
    counters_ = counters;
    keep(info[3]);
    keep(info[4]);
    keep(info[5]);
    Napi::Array list = info[2].As<Napi::Array>();
    const uint32_t n = list.Length();
    if (n == 0) throwError(env, "E_ARG", "a group needs at least one tensor");
    const int qb = quantBlockSize(bits_);
    int64_t tiles = 0;
    for (uint32_t i = 0; i < n; ++i) {
      Napi::Value e = list.Get(i);
      const uint32_t len = e.IsArray() ? e.As<Napi::Array>().Length() : 0;
      if (len != 9 && len != 10) throwError(env, "E_ARG", "tensor entry " + std::to_string(i) + " is malformed");
      Napi::Array a = e.As<Napi::Array>();
      QAdamTensor t{};
      t.numel = countArg(env, a.Get(6u), "numel");
      t.paramDtype = dtypeArg(env, a.Get(7u));
      if (t.paramDtype != DType::F32 && t.paramDtype != DType::BF16 && t.paramDtype != DType::F16)
        throwError(env, "E_DTYPE", "parameters and gradients must be f32, bf16 or f16");
      t.quantized = a.Get(8u).ToBoolean() ? 1 : 0;
      const size_t pbytes = size_t(t.numel) * dtypeSize(t.paramDtype);
      const size_t sbytes = t.quantized ? (bits_ == 8 ? size_t(t.numel) : size_t(t.numel + 1) / 2) : size_t(t.numel) * 4;
      const size_t abytes = size_t((t.numel + qb - 1) / qb) * 4;
      const char* names[6] = {"parameter", "gradient", "exp_avg", "exp_avg_sq", "exp_avg absmax", "exp_avg_sq absmax"};
      const size_t need[6] = {pbytes, pbytes, sbytes, sbytes, abytes, abytes};
      NativeBuffer* bufs[6] = {};
      for (int k = 0; k < (t.quantized ? 6 : 4); ++k) {
        bufs[k] = NativeBuffer::From(env, a.Get(uint32_t(k)), names[k]);
        if (bufs[k]->device() != device_)
          throwError(env, "E_DEVICE", std::string(names[k]) + " of tensor " + std::to_string(i) + " is on another device");
        if (bufs[k]->bytes() < need[k])
          throwError(env, "E_SHAPE", std::string(names[k]) + " of tensor " + std::to_string(i) + " is too small");
        keep(a.Get(uint32_t(k)));
        buffers_.push_back(bufs[k]);
      }
      t.param = bufs[0]->data();
      t.grad = bufs[1]->data();
      t.stateA = bufs[2]->data();
      t.stateB = bufs[3]->data();
      t.absmaxA = t.quantized ? static_cast<float*>(bufs[4]->data()) : nullptr;
      t.absmaxB = t.quantized ? static_cast<float*>(bufs[5]->data()) : nullptr;
      t.vectorOk = 1;
      for (const void* p : {static_cast<const void*>(t.param), t.grad, static_cast<const void*>(t.stateA),
                            static_cast<const void*>(t.stateB)})
        if ((reinterpret_cast<uintptr_t>(p) & 15) != 0) t.vectorOk = 0;
      t.tileBegin = tiles;
      // The 10th entry, when given, is the tensor's index in its whole group (a layer-wise step).
      t.seedSalt = len == 10 ? uint32_t(countArg(env, a.Get(9u), "seedSalt")) : i;
      tiles += (t.numel + kQuantTile - 1) / kQuantTile;
      host_.push_back(t);
    }
    totalTiles_ = tiles;
    if (device_ != kCpu) {
      const void* a = mapA_->deviceBlob(env, device_);
      const void* b = mapB_->deviceBlob(env, device_);
      blobA_ = a;
      blobB_ = b;
      const size_t bytes = host_.size() * sizeof(QAdamTensor);
      gpu::Status st = gpu::alloc(device_, bytes, &deviceList_);
      if (st.ok()) st = gpu::copyHtoD(device_, deviceList_, host_.data(), bytes);
      const int32_t scratchInts = gpu::qadamScratchInts(device_);
      if (st.ok()) st = gpu::alloc(device_, size_t(scratchInts) * 4, reinterpret_cast<void**>(&scratch_));
      if (!st.ok()) {
        releaseDevice();
        throwCuda(env, device_, st, "QAdamGroup", bytes);
      }
    }
  }

  ~QAdamGroup() override { releaseDevice(); }

 private:
  void keep(Napi::Value v) { refs_.push_back(Napi::Persistent(v.As<Napi::Object>())); }

  void releaseDevice() {
    if (deviceList_ != nullptr) gpu::release(device_, deviceList_);
    if (scratch_ != nullptr) gpu::release(device_, scratch_);
    deviceList_ = nullptr;
    scratch_ = nullptr;
  }

  // step({ lr, beta1, beta2, eps, weightDecay, stochasticRounding, skipNonFinite, seed })
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (disposed_) throwError(env, "E_DISPOSED", "optimizer group was disposed");
    if (!info[0].IsObject()) throwError(env, "E_ARG", "step needs hyperparameters");
    Napi::Object h = info[0].As<Napi::Object>();
    QAdamHyper hp{};
    hp.lr = finiteFloatField(env, h, "lr");
    hp.beta1 = finiteFloatField(env, h, "beta1");
    hp.beta2 = finiteFloatField(env, h, "beta2");
    hp.eps = finiteFloatField(env, h, "eps");
    hp.weightDecay = finiteFloatField(env, h, "weightDecay");
    hp.bits = bits_;
    hp.stochasticRounding = h.Get("stochasticRounding").ToBoolean() ? 1 : 0;
    hp.skipNonFinite = h.Get("skipNonFinite").ToBoolean() ? 1 : 0;
    Napi::Value seed = h.Get("seed");
    bool lossless = true;
    hp.seed = seed.IsBigInt() ? seed.As<Napi::BigInt>().Uint64Value(&lossless) : 0;
    // A tensor disposed since the group was built would leave a dangling pointer here.
    for (NativeBuffer* b : buffers_)
      if (b->disposed()) throwError(env, "E_DISPOSED", "a tensor of this group was disposed");
    if (counters_->disposed()) throwError(env, "E_DISPOSED", "the group's counters were disposed");
    ensureUsable(env, device_);
    auto* counters = static_cast<AdamwCounters*>(counters_->data());
    if (device_ == kCpu) {
      cpu::qadamStep(host_.data(), int32_t(host_.size()), hp, mapA_->host(), mapB_->host(), counters);
      return env.Undefined();
    }
    gpu::Status st = gpu::qadamStep(device_, static_cast<const QAdamTensor*>(deviceList_), int32_t(host_.size()),
                                    totalTiles_, hp, blobA_, mapA_->host().finder, blobB_, mapB_->host().finder,
                                    counters, scratch_);
    if (!st.ok()) throwCuda(env, device_, st, bits_ == 8 ? "adamw8bit" : "adamw4bit");
    return env.Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    disposed_ = true;
    releaseDevice();
    for (auto& r : refs_) r.Reset();
    refs_.clear();
    buffers_.clear();
    return info.Env().Undefined();
  }

  int device_ = kCpu;
  int bits_ = 8;
  int64_t totalTiles_ = 0;
  bool disposed_ = false;
  NativeBuffer* counters_ = nullptr;
  QuantMap* mapA_ = nullptr;
  QuantMap* mapB_ = nullptr;
  const void* blobA_ = nullptr;
  const void* blobB_ = nullptr;
  std::vector<QAdamTensor> host_;
  std::vector<NativeBuffer*> buffers_;
  std::vector<Napi::ObjectReference> refs_;
  void* deviceList_ = nullptr;
  int32_t* scratch_ = nullptr;
};

void registerQAdam(Napi::Env env, Napi::Object exports) {
  exports.Set("QAdamGroup", QAdamGroup::Init(env));
}

}  // namespace slimopt
