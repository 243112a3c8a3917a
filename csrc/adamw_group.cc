// AdamwGroup: the tensor list of one parameter group, validated and laid out once (on the device
// for CUDA), so that a step is one N-API call and one kernel launch whatever the tensor count.
#include <cmath>
#include <string>
#include <vector>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "cpu/cpu_backend.h"
#include "../cuda/launchers.h"

namespace slimopt {

class AdamwGroup : public Napi::ObjectWrap<AdamwGroup> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "AdamwGroup", {
        InstanceMethod<&AdamwGroup::Step>("step"),
        InstanceMethod<&AdamwGroup::Dispose>("dispose"),
    });
  }

  // new AdamwGroup(device, tensors, counters, stateDtype, chunkSize)
  // tensors: Array of [param, grad, expAvg, expAvgSq, numel, paramDtype, gradDtype, seedSalt?]
  explicit AdamwGroup(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AdamwGroup>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsNumber() || !info[1].IsArray()) throwError(env, "E_ARG", "AdamwGroup(device, tensors, counters, stateDtype, chunkSize)");
    device_ = info[0].As<Napi::Number>().Int32Value();
    ensureUsable(env, device_);
    Napi::Array list = info[1].As<Napi::Array>();
    NativeBuffer* counters = NativeBuffer::From(env, info[2], "counters");
    stateDtype_ = dtypeArg(env, info[3]);
    chunkSize_ = countArg(env, info[4], "chunkSize");
    if (chunkSize_ < 1024 || chunkSize_ % 1024 != 0) throwError(env, "E_ARG", "chunkSize must be a positive multiple of 1024");
    if (stateDtype_ != DType::F32 && stateDtype_ != DType::BF16) throwError(env, "E_DTYPE", "state dtype must be f32 or bf16");
    if (counters->bytes() < sizeof(AdamwCounters) || counters->device() != device_)
      throwError(env, "E_ARG", "counters must be 8 bytes on the group's device");
    counters_ = counters;
    refs_.push_back(Napi::Persistent(info[2].As<Napi::Object>()));
    uint32_t n = list.Length();
    if (n == 0) throwError(env, "E_ARG", "a group needs at least one tensor");
    int64_t chunk = 0;
    for (uint32_t i = 0; i < n; ++i) {
      Napi::Value e = list.Get(i);
      const uint32_t len = e.IsArray() ? e.As<Napi::Array>().Length() : 0;
      if (len != 7 && len != 8) throwError(env, "E_ARG", "tensor entry " + std::to_string(i) + " is malformed");
      Napi::Array a = e.As<Napi::Array>();
      AdamwTensor t{};
      NativeBuffer* bufs[4];
      const char* names[4] = {"parameter", "gradient", "exp_avg", "exp_avg_sq"};
      for (int k = 0; k < 4; ++k) {
        bufs[k] = NativeBuffer::From(env, a.Get(uint32_t(k)), names[k]);
        if (bufs[k]->device() != device_)
          throwError(env, "E_DEVICE", std::string(names[k]) + " of tensor " + std::to_string(i) + " is on another device");
        refs_.push_back(Napi::Persistent(a.Get(uint32_t(k)).As<Napi::Object>()));
        buffers_.push_back(bufs[k]);
      }
      t.numel = countArg(env, a.Get(4u), "numel");
      t.paramDtype = dtypeArg(env, a.Get(5u));
      t.gradDtype = dtypeArg(env, a.Get(6u));
      for (DType d : {t.paramDtype, t.gradDtype})
        if (d != DType::F32 && d != DType::BF16 && d != DType::F16) throwError(env, "E_DTYPE", "parameters and gradients must be f32, bf16 or f16");
      size_t need[4] = {size_t(t.numel) * dtypeSize(t.paramDtype), size_t(t.numel) * dtypeSize(t.gradDtype),
                        size_t(t.numel) * dtypeSize(stateDtype_), size_t(t.numel) * dtypeSize(stateDtype_)};
      for (int k = 0; k < 4; ++k)
        if (bufs[k]->bytes() < need[k]) throwError(env, "E_SHAPE", std::string(names[k]) + " of tensor " + std::to_string(i) + " is too small");
      t.param = bufs[0]->data();
      t.grad = bufs[1]->data();
      t.expAvg = bufs[2]->data();
      t.expAvgSq = bufs[3]->data();
      t.chunkBegin = chunk;
      // The 8th entry, when given, is the tensor's index in its whole group: a one-tensor group
      // (a layer-wise step) then draws the same stochastic-rounding bits as the whole group.
      t.seedSalt = len == 8 ? uint32_t(countArg(env, a.Get(7u), "seedSalt")) : i;
      chunk += (t.numel + chunkSize_ - 1) / chunkSize_;
      host_.push_back(t);
    }
    totalChunks_ = chunk;
    if (device_ != kCpu) {
      size_t bytes = host_.size() * sizeof(AdamwTensor);
      gpu::Status st = gpu::alloc(device_, bytes, &deviceList_);
      if (st.ok()) st = gpu::copyHtoD(device_, deviceList_, host_.data(), bytes);
      int32_t scratchInts = gpu::adamwScratchInts(device_);
      if (st.ok()) st = gpu::alloc(device_, size_t(scratchInts) * 4, reinterpret_cast<void**>(&scratch_));
      if (!st.ok()) { releaseDevice(); throwCuda(env, device_, st, "AdamwGroup", bytes); }
    }
  }

  ~AdamwGroup() override { releaseDevice(); }

 private:
  void releaseDevice() {
    if (deviceList_ != nullptr) gpu::release(device_, deviceList_);
    if (scratch_ != nullptr) gpu::release(device_, scratch_);
    deviceList_ = nullptr;
    scratch_ = nullptr;
  }

  // step({ lr, beta1, beta2, eps, weightDecay, convention, stochasticRounding, skipNonFinite, seed })
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (disposed_) throwError(env, "E_DISPOSED", "optimizer group was disposed");
    if (!info[0].IsObject()) throwError(env, "E_ARG", "step needs hyperparameters");
    Napi::Object h = info[0].As<Napi::Object>();
    AdamwHyper hp{};
    hp.lr = finiteFloatField(env, h, "lr");
    hp.beta1 = finiteFloatField(env, h, "beta1");
    hp.beta2 = finiteFloatField(env, h, "beta2");
    hp.eps = finiteFloatField(env, h, "eps");
    hp.weightDecay = finiteFloatField(env, h, "weightDecay");
    hp.convention = AdamConvention(int32_t(finiteFloatField(env, h, "convention")));
    hp.stochasticRounding = h.Get("stochasticRounding").ToBoolean() ? 1 : 0;
    hp.skipNonFinite = h.Get("skipNonFinite").ToBoolean() ? 1 : 0;
    Napi::Value seed = h.Get("seed");
    bool lossless = true;
    hp.seed = seed.IsBigInt() ? seed.As<Napi::BigInt>().Uint64Value(&lossless) : 0;
    hp.stateDtype = stateDtype_;
    hp.chunkSize = chunkSize_;
    // A tensor disposed since the group was built would leave a dangling pointer here.
    for (NativeBuffer* b : buffers_)
      if (b->disposed()) throwError(env, "E_DISPOSED", "a tensor of this group was disposed");
    if (counters_->disposed()) throwError(env, "E_DISPOSED", "the group's counters were disposed");
    ensureUsable(env, device_);
    auto* counters = static_cast<AdamwCounters*>(counters_->data());
    if (device_ == kCpu) {
      cpu::adamwStep(host_.data(), int32_t(host_.size()), hp, counters);
      return env.Undefined();
    }
    gpu::Status st = gpu::adamwStep(device_, static_cast<const AdamwTensor*>(deviceList_), int32_t(host_.size()),
                                    totalChunks_, hp, counters, scratch_);
    if (!st.ok()) throwCuda(env, device_, st, "adamw");
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
  DType stateDtype_ = DType::F32;
  int64_t chunkSize_ = 65536;
  int64_t totalChunks_ = 0;
  bool disposed_ = false;
  NativeBuffer* counters_ = nullptr;
  std::vector<AdamwTensor> host_;
  std::vector<NativeBuffer*> buffers_;
  std::vector<Napi::ObjectReference> refs_;
  void* deviceList_ = nullptr;
  int32_t* scratch_ = nullptr;
};

void registerAdamw(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = AdamwGroup::Init(env);
  exports.Set("AdamwGroup", ctor);
}

}  // namespace slimopt
