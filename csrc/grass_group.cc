// GrassGroup: the Grass tensors of one parameter group (projected Rows/Cols tensors and Dense
// ones), validated once; a step is one N-API call. The glue checks arguments and sizes, owns the
// group's workspace (cuda/grass.cuh GrassWorkspace) and the device copies of the tensor list
// (one per configuration of gradient/compact pointers, cached), and calls the CPU backend or the
// CUDA launcher. No math here. Also: grassSelect (the selection a refresh would make, for tests
// and tools), grassGatherRows and grassScatterRows.
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <string>
#include <vector>
#include "buffer.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "quant_map.h"
#include "cpu/cpu_backend.h"
#include "../cuda/launchers.h"

namespace slimopt {

namespace {

bool floatType(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }

int64_t intArg(Napi::Env env, Napi::Value v, const char* what) { return countArg(env, v, what); }

uint64_t bigArg(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsBigInt()) throwError(env, "E_ARG", std::string(what) + " must be a BigInt");
  bool lossless = true;
  return v.As<Napi::BigInt>().Uint64Value(&lossless);
}

GrassSelect selectArg(Napi::Env env, Napi::Value v) {
  if (!v.IsNumber()) throwError(env, "E_ARG", "select must be a number code");
  int s = v.As<Napi::Number>().Int32Value();
  if (s < 0 || s > 2) throwError(env, "E_ARG", "unknown select code " + std::to_string(s));
  return GrassSelect(s);
}

void needBytes(Napi::Env env, NativeBuffer* b, double bytes, const std::string& what) {
  if (bytes > double(b->bytes()))
    throwError(env, "E_SHAPE", what + ": " + std::to_string(int64_t(bytes)) + " bytes needed, the buffer has " +
                                   std::to_string(b->bytes()));
}

// Workspace memory on the CPU or a device.
void* wsAlloc(Napi::Env env, int dev, size_t bytes) {
  size_t n = std::max<size_t>(256, (bytes + 255) / 256 * 256);
  if (dev == kCpu) {
    void* p = std::aligned_alloc(256, n);
    if (p == nullptr) throwError(env, "E_OOM", "out of host memory: asked " + std::to_string(n) + " bytes for the Grass workspace");
    return p;
  }
  void* p = nullptr;
  gpu::Status st = gpu::alloc(dev, n, &p);
  if (!st.ok()) throwCuda(env, dev, st, "Grass workspace", n);
  return p;
}
void wsFree(int dev, void* p) {
  if (p == nullptr) return;
  if (dev == kCpu) std::free(p);
  else gpu::release(dev, p);
}

// Sizes of the workspace a set of tensors needs.
struct WsNeeds {
  int64_t maxLines = 0, maxRank = 1, maxCompact = 0, maxPartials = 0, coefCount = 0, qBlocks = 0;
};
void addNeeds(WsNeeds& w, const GrassTensor& t) {
  w.coefCount += t.rank;
  w.qBlocks += grassQBlocks(t);
  w.maxRank = std::max(w.maxRank, t.rank);
  if (t.mode == GrassMode::Dense) return;
  w.maxLines = std::max(w.maxLines, grassLines(t));
  w.maxCompact = std::max(w.maxCompact, grassCompactNumel(t));
  if (t.mode == GrassMode::Cols) w.maxPartials = std::max(w.maxPartials, grassCeilDiv(t.rows, kGrassColSegment) * t.cols);
}

// Checks the shape fields of a descriptor; throws E_ARG / E_SHAPE.
void checkShape(Napi::Env env, const GrassTensor& t, const std::string& who) {
  if (t.mode == GrassMode::Dense) {
    if (t.rows != 1 || t.rank != 1) throwError(env, "E_ARG", who + ": a dense tensor is 1 × numel with rank 1");
    return;
  }
  if (t.rows < 1 || t.cols < 1) throwError(env, "E_SHAPE", who + ": a projected tensor needs at least one row and column");
  const int64_t lines = grassLines(t);
  if (lines > INT32_MAX) throwError(env, "E_SHAPE", who + ": more than 2^31 - 1 lines along the selected side");
  if (t.rank < 1 || t.rank > lines)
    throwError(env, "E_ARG", who + ": rank " + std::to_string(t.rank) + " must be in [1, " + std::to_string(lines) + "]");
  if (t.mode == GrassMode::Cols && grassCeilDiv(t.rows, kGrassColSegment) > 65535)
    throwError(env, "E_SHAPE", who + ": too many rows for column selection");
}

}  // namespace

class GrassGroup : public Napi::ObjectWrap<GrassGroup> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "GrassGroup", {
        InstanceMethod<&GrassGroup::Step>("step"),
        InstanceMethod<&GrassGroup::WorkspaceBytes>("workspaceBytes"),
        InstanceMethod<&GrassGroup::Dispose>("dispose"),
    });
  }

  // new GrassGroup(device, tensors, counters[, mapA, mapB])
  // tensors: Array of [param, expAvg, expAvgSq, indices|null, rho|null, ages, rows, cols, rank, mode,
  //                    dtype, seed (BigInt)[, absmaxM|null, absmaxV|null]]
  // With absmaxM/absmaxV the tensor's states are 8-bit (expAvg/expAvgSq hold u8 codes of mapA /
  // mapB, 256-entry maps, one absmax per 256-block): only projected tensors, and only with maps.
  explicit GrassGroup(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GrassGroup>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsNumber() || !info[1].IsArray()) throwError(env, "E_ARG", "GrassGroup(device, tensors, counters[, mapA, mapB])");
    device_ = info[0].As<Napi::Number>().Int32Value();
    ensureUsable(env, device_);
    Napi::Array list = info[1].As<Napi::Array>();
    NativeBuffer* counters = NativeBuffer::From(env, info[2], "counters");
    if (counters->bytes() < sizeof(AdamwCounters) || counters->device() != device_)
      throwError(env, "E_ARG", "counters must be 8 bytes on the group's device");
    counters_ = counters;
    refs_.push_back(Napi::Persistent(info[2].As<Napi::Object>()));
    if (!info[3].IsUndefined() && !info[3].IsNull()) {
      const Q8MapArgs m = q8MapArgs(env, info[3], info[4]);
      mapA_ = m.a;
      mapB_ = m.b;
      refs_.push_back(Napi::Persistent(info[3].As<Napi::Object>()));
      refs_.push_back(Napi::Persistent(info[4].As<Napi::Object>()));
    }
    const uint32_t n = list.Length();
    if (n == 0) throwError(env, "E_ARG", "a group needs at least one tensor");
    if (n > 65535) throwError(env, "E_ARG", "a Grass group holds at most 65535 tensors");
    WsNeeds needs;
    for (uint32_t i = 0; i < n; ++i) {
      const std::string who = "tensor " + std::to_string(i);
      Napi::Value e = list.Get(i);
      if (!e.IsArray() || (e.As<Napi::Array>().Length() != 12 && e.As<Napi::Array>().Length() != 14))
        throwError(env, "E_ARG", who + " is malformed");
      Napi::Array a = e.As<Napi::Array>();
      const bool quantized = a.Length() == 14 && !a.Get(12u).IsNull() && !a.Get(12u).IsUndefined();
      GrassTensor t{};
      t.rows = intArg(env, a.Get(6u), "rows");
      t.cols = intArg(env, a.Get(7u), "cols");
      t.rank = intArg(env, a.Get(8u), "rank");
      if (!a.Get(9u).IsNumber()) throwError(env, "E_ARG", who + ": mode must be a number");
      const int mode = a.Get(9u).As<Napi::Number>().Int32Value();
      if (mode < 0 || mode > 2) throwError(env, "E_ARG", who + ": unknown mode");
      t.mode = GrassMode(mode);
      t.paramDtype = dtypeArg(env, a.Get(10u));
      if (!floatType(t.paramDtype)) throwError(env, "E_DTYPE", who + ": parameters are f32, bf16 or f16");
      t.seed = bigArg(env, a.Get(11u), "seed");
      checkShape(env, t, who);
      const double numel = double(t.rows) * double(t.cols);
      const double compact = double(grassCompactNumel(t));
      const bool dense = t.mode == GrassMode::Dense;
      if (quantized && dense) throwError(env, "E_ARG", who + ": a dense tensor keeps f32 states");
      if (quantized && mapA_ == nullptr) throwError(env, "E_ARG", who + ": 8-bit states need the group's maps");
      t.quantized = quantized ? 1 : 0;
      t.qBlockBegin = needs.qBlocks;  // the prefix over the earlier tensors (addNeeds below adds this one's)
      const double stateBytes = quantized ? 1 : 4;
      const double qBlocks = double(grassQBlocks(t));
      struct Want { uint32_t slot; const char* name; double bytes; bool optional; };
      const Want wants[8] = {
          {0, "parameter", numel * dtypeSize(t.paramDtype), false},
          {1, "exp_avg", compact * stateBytes, false},
          {2, "exp_avg_sq", compact * stateBytes, false},
          {3, "indices", double(t.rank) * 4, dense},
          {4, "rho", double(t.rank) * 4, dense},
          {5, "ages", double(t.rank) * 4, false},
          {12, "exp_avg_absmax", qBlocks * 4, false},
          {13, "exp_avg_sq_absmax", qBlocks * 4, false},
      };
      NativeBuffer* bufs[14] = {};
      for (const Want& w : wants) {
        if (w.slot >= 12 && !quantized) continue;
        Napi::Value v = a.Get(w.slot);
        if (w.optional && (v.IsNull() || v.IsUndefined())) continue;
        NativeBuffer* b = NativeBuffer::From(env, v, w.name);
        if (b->device() != device_) throwError(env, "E_DEVICE", who + ": " + w.name + " is on another device");
        needBytes(env, b, w.bytes, who + " " + w.name);
        bufs[w.slot] = b;
        buffers_.push_back(b);
        refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
      }
      t.param = bufs[0]->data();
      if (quantized) {
        t.codeM = static_cast<uint8_t*>(bufs[1]->data());
        t.codeV = static_cast<uint8_t*>(bufs[2]->data());
        t.absmaxM = static_cast<float*>(bufs[12]->data());
        t.absmaxV = static_cast<float*>(bufs[13]->data());
      } else {
        t.expAvg = static_cast<float*>(bufs[1]->data());
        t.expAvgSq = static_cast<float*>(bufs[2]->data());
      }
      if (!dense && (bufs[3] == nullptr || bufs[4] == nullptr)) throwError(env, "E_ARG", who + ": indices and rho are required");
      t.indices = bufs[3] ? static_cast<int32_t*>(bufs[3]->data()) : nullptr;
      t.rho = bufs[4] ? static_cast<float*>(bufs[4]->data()) : nullptr;
      t.ages = static_cast<int32_t*>(bufs[5]->data());
      addNeeds(needs, t);
      base_.push_back(t);
    }
    needs_ = needs;
    allocWorkspace(env, false);
  }

  ~GrassGroup() override { releaseAll(); }

 private:
  struct Plan {
    void* list = nullptr;
    GrassUnits units;
  };

  void releasePlans() {
    for (auto& kv : plans_) if (kv.second.list) gpu::release(device_, kv.second.list);
    plans_.clear();
    planOrder_.clear();
  }
  void releaseAll() {
    releasePlans();
    wsFree(device_, ws_);
    ws_ = nullptr;
  }

  // (Re)allocates the workspace, with the keepState staging if asked. Throws before changing
  // anything when the allocation fails.
  void allocWorkspace(Napi::Env env, bool staging) {
    size_t cub = 0;
    if (device_ != kCpu && needs_.maxLines > 0) {
      gpu::Status st;
      cub = gpu::grassCubBytes(device_, needs_.maxLines, &st);
      if (!st.ok()) throwCuda(env, device_, st, "Grass workspace");
    }
    GrassWorkspace L = grassWorkspaceLayout(needs_.maxLines, needs_.maxRank, needs_.maxCompact, needs_.maxPartials,
                                            needs_.coefCount, staging, cub, needs_.qBlocks);
    void* ws = wsAlloc(env, device_, L.total);
    releasePlans();  // device lists hold the old workspace's coef pointers
    wsFree(device_, ws_);
    ws_ = ws;
    layout_ = L;
    size_t off = 0;
    for (GrassTensor& t : base_) {
      t.coef = reinterpret_cast<float*>(static_cast<uint8_t*>(ws_) + L.coef + off);
      off += size_t(t.rank) * 4;
      if (t.quantized) t.newAbsmax = reinterpret_cast<float*>(static_cast<uint8_t*>(ws_) + L.qAbsmax + size_t(t.qBlockBegin) * 8);
    }
  }

  // The device list for this step's pointers (built once per configuration).
  const Plan& planFor(Napi::Env env, std::vector<GrassTensor>& list) {
    std::vector<uintptr_t> key;
    key.reserve(list.size() * 2);
    for (const GrassTensor& t : list) {
      key.push_back(reinterpret_cast<uintptr_t>(t.grad));
      key.push_back(reinterpret_cast<uintptr_t>(t.compact));
    }
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    if (plans_.size() >= 8) {  // keep a few configurations; the oldest goes (stream-ordered free)
      auto old = plans_.find(planOrder_.front());
      if (old != plans_.end()) {
        gpu::release(device_, old->second.list);
        plans_.erase(old);
      }
      planOrder_.erase(planOrder_.begin());
    }
    Plan p;
    const size_t bytes = list.size() * sizeof(GrassTensor);
    gpu::Status st = gpu::alloc(device_, bytes, &p.list);
    if (st.ok()) st = gpu::copyHtoD(device_, p.list, list.data(), bytes);
    if (!st.ok()) {
      gpu::release(device_, p.list);
      throwCuda(env, device_, st, "GrassGroup plan", bytes);
    }
    p.units = units_;
    planOrder_.push_back(key);
    return plans_.emplace(key, p).first->second;
  }

  // Fills the *Begin prefixes of list and units_.
  void numberUnits(std::vector<GrassTensor>& list) {
    GrassUnits u;
    for (GrassTensor& t : list) {
      t.scanBeginRefresh = u.scanRefresh;
      t.scanBeginStep = u.scanStep;
      t.updateBegin = u.update;
      t.slotBegin = u.slot;
      u.scanRefresh += grassScanUnits(t, true);
      u.scanStep += grassScanUnits(t, false);
      u.update += grassUpdateUnits(t);
      u.slot += grassSlotUnits(t);
      u.qBlocks += grassQBlocks(t);
    }
    units_ = u;
  }

  // step(hyper, grads, compacts)
  // hyper: { lr, beta1, beta2, eps, weightDecay, scale, skipNonFinite, refreshing, select, keepState,
  //          refreshIndex }
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (disposed_) throwError(env, "E_DISPOSED", "optimizer group was disposed");
    if (!info[0].IsObject() || !info[1].IsArray() || !info[2].IsArray())
      throwError(env, "E_ARG", "step(hyper, grads, compacts)");
    Napi::Object h = info[0].As<Napi::Object>();
    GrassHyper hp{};
    hp.lr = finiteFloatField(env, h, "lr");
    hp.beta1 = finiteFloatField(env, h, "beta1");
    hp.beta2 = finiteFloatField(env, h, "beta2");
    hp.eps = finiteFloatField(env, h, "eps");
    hp.weightDecay = finiteFloatField(env, h, "weightDecay");
    hp.scale = finiteFloatField(env, h, "scale");
    hp.skipNonFinite = h.Get("skipNonFinite").ToBoolean() ? 1 : 0;
    hp.refreshing = h.Get("refreshing").ToBoolean() ? 1 : 0;
    hp.keepState = h.Get("keepState").ToBoolean() ? 1 : 0;
    hp.select = selectArg(env, h.Get("select"));
    hp.refreshIndex = uint64_t(intArg(env, h.Get("refreshIndex"), "refreshIndex"));
    if (!(hp.beta1 >= 0 && hp.beta1 < 1 && hp.beta2 >= 0 && hp.beta2 < 1))
      throwError(env, "E_ARG", "betas must be in [0, 1)");
    Napi::Array grads = info[1].As<Napi::Array>(), compacts = info[2].As<Napi::Array>();
    if (grads.Length() != base_.size() || compacts.Length() != base_.size())
      throwError(env, "E_ARG", "step needs one gradient and one compact slot per tensor");
    std::vector<GrassTensor> list = base_;
    for (uint32_t i = 0; i < list.size(); ++i) {
      GrassTensor& t = list[i];
      const std::string who = "tensor " + std::to_string(i);
      NativeBuffer* g = NativeBuffer::From(env, grads.Get(i), "gradient");
      if (g->device() != device_) throwError(env, "E_DEVICE", who + ": gradient is on another device");
      needBytes(env, g, double(t.rows) * double(t.cols) * dtypeSize(t.paramDtype), who + " gradient");
      t.grad = g->data();
      Napi::Value c = compacts.Get(i);
      if (!c.IsNull() && !c.IsUndefined()) {
        if (t.mode == GrassMode::Dense) throwError(env, "E_ARG", who + ": a dense tensor takes no compact gradient");
        if (hp.refreshing) throwError(env, "E_ARG", who + ": a refresh step needs the full gradient");
        NativeBuffer* cb = NativeBuffer::From(env, c, "compact gradient");
        if (cb->device() != device_) throwError(env, "E_DEVICE", who + ": compact gradient is on another device");
        needBytes(env, cb, double(grassCompactNumel(t)) * dtypeSize(t.paramDtype), who + " compact gradient");
        t.compact = cb->data();
      }
    }
    for (NativeBuffer* b : buffers_)
      if (b->disposed()) throwError(env, "E_DISPOSED", "a tensor of this group was disposed");
    if (counters_->disposed()) throwError(env, "E_DISPOSED", "the group's counters were disposed");
    ensureUsable(env, device_);
    if (hp.refreshing && hp.keepState && !layout_.staging) {
      allocWorkspace(env, true);
      for (uint32_t i = 0; i < list.size(); ++i) {
        list[i].coef = base_[i].coef;
        list[i].newAbsmax = base_[i].newAbsmax;
      }
    }
    if (mapA_ != nullptr) hp.q8 = q8MapsOn(env, Q8MapArgs{mapA_, mapB_}, device_);
    auto* counters = static_cast<AdamwCounters*>(counters_->data());
    if (device_ == kCpu) {
      try {
        cpu::grassStep(list.data(), int32_t(list.size()), hp, counters, ws_, layout_,
                       mapA_ ? &mapA_->host() : nullptr, mapB_ ? &mapB_->host() : nullptr);
      } catch (const std::bad_alloc&) {
        throwError(env, "E_OOM", "out of host memory in a Grass step");
      }
      return env.Undefined();
    }
    numberUnits(list);
    const Plan& p = planFor(env, list);
    gpu::Status st = gpu::grassStep(device_, static_cast<const GrassTensor*>(p.list), list.data(),
                                    int32_t(list.size()), p.units, hp, counters, ws_, layout_);
    if (!st.ok()) throwCuda(env, device_, st, "grass");
    return env.Undefined();
  }

  Napi::Value WorkspaceBytes(const Napi::CallbackInfo& info) {
    size_t plans = 0;
    for (auto& kv : plans_) { (void)kv; plans += base_.size() * sizeof(GrassTensor); }
    return Napi::Number::New(info.Env(), disposed_ ? 0.0 : double(layout_.total + plans));
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    disposed_ = true;
    releaseAll();
    for (auto& r : refs_) r.Reset();
    refs_.clear();
    buffers_.clear();
    return info.Env().Undefined();
  }

  int device_ = kCpu;
  bool disposed_ = false;
  NativeBuffer* counters_ = nullptr;
  std::vector<GrassTensor> base_;
  std::vector<NativeBuffer*> buffers_;
  std::vector<Napi::ObjectReference> refs_;
  WsNeeds needs_;
  QuantMap* mapA_ = nullptr;  // 8-bit states: the signed map of m, the unsigned map of v
  QuantMap* mapB_ = nullptr;
  GrassWorkspace layout_;
  void* ws_ = nullptr;
  GrassUnits units_;
  std::map<std::vector<uintptr_t>, Plan> plans_;
  std::vector<std::vector<uintptr_t>> planOrder_;
};

// grassSelect(grad, rows, cols, dtype, mode, rank, select, seed BigInt, refreshIndex, idxOut, rhoOut)
// The selection a refresh of this gradient would make (same kernels), written into idxOut (i32)
// and rhoOut (f32), rank elements each, on the gradient's device. Enqueued; changes nothing else.
static Napi::Value GrassSelectFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* g = NativeBuffer::From(env, info[0], "gradient");
  GrassTensor t{};
  t.rows = intArg(env, info[1], "rows");
  t.cols = intArg(env, info[2], "cols");
  t.paramDtype = dtypeArg(env, info[3]);
  if (!floatType(t.paramDtype)) throwError(env, "E_DTYPE", "gradients are f32, bf16 or f16");
  if (!info[4].IsNumber()) throwError(env, "E_ARG", "mode must be a number");
  const int mode = info[4].As<Napi::Number>().Int32Value();
  if (mode != 0 && mode != 1) throwError(env, "E_ARG", "mode must be rows (0) or cols (1)");
  t.mode = GrassMode(mode);
  t.rank = intArg(env, info[5], "rank");
  GrassHyper h{};
  h.select = selectArg(env, info[6]);
  t.seed = bigArg(env, info[7], "seed");
  h.refreshIndex = uint64_t(intArg(env, info[8], "refreshIndex"));
  checkShape(env, t, "grassSelect");
  NativeBuffer* idx = NativeBuffer::From(env, info[9], "indices");
  NativeBuffer* rho = NativeBuffer::From(env, info[10], "rho");
  const int dev = g->device();
  if (idx->device() != dev || rho->device() != dev) throwError(env, "E_DEVICE", "grassSelect needs every buffer on one device");
  needBytes(env, g, double(t.rows) * double(t.cols) * dtypeSize(t.paramDtype), "grassSelect gradient");
  needBytes(env, idx, double(t.rank) * 4, "grassSelect indices");
  needBytes(env, rho, double(t.rank) * 4, "grassSelect rho");
  ensureUsable(env, dev);
  t.grad = g->data();
  WsNeeds needs;
  addNeeds(needs, t);
  size_t cub = 0;
  if (dev != kCpu) {
    gpu::Status st;
    cub = gpu::grassCubBytes(dev, needs.maxLines, &st);
    if (!st.ok()) throwCuda(env, dev, st, "grassSelect");
  }
  GrassWorkspace L = grassWorkspaceLayout(needs.maxLines, needs.maxRank, needs.maxCompact, needs.maxPartials, 0,
                                          false, cub);
  void* ws = wsAlloc(env, dev, L.total);
  if (dev == kCpu) {
    cpu::grassSelect(t, h, ws, L, static_cast<int32_t*>(idx->data()), static_cast<float*>(rho->data()));
    wsFree(dev, ws);
    return env.Undefined();
  }
  gpu::Status st = gpu::grassSelectOnly(dev, t, h, ws, L, static_cast<int32_t*>(idx->data()), static_cast<float*>(rho->data()));
  wsFree(dev, ws);  // stream-ordered: after the kernels above
  if (!st.ok()) throwCuda(env, dev, st, "grassSelect");
  return env.Undefined();
}

// Shared checks of the row ops: (matrix, rows, cols, dtype, idx, count, rowsBuf, scale|null).
struct RowOpArgs {
  NativeBuffer* matrix;
  NativeBuffer* rowsBuf;
  NativeBuffer* idx;
  NativeBuffer* scale;
  int64_t rows, cols, count;
  DType dtype;
};

static RowOpArgs rowOpArgs(Napi::Env env, NativeBuffer* matrix, Napi::Value rows, Napi::Value cols, Napi::Value dtype,
                           Napi::Value idx, Napi::Value count, NativeBuffer* rowsBuf, Napi::Value scale, const char* what) {
  RowOpArgs a{};
  a.matrix = matrix;
  a.rowsBuf = rowsBuf;
  a.rows = intArg(env, rows, "rows");
  a.cols = intArg(env, cols, "cols");
  a.dtype = dtypeArg(env, dtype);
  if (!floatType(a.dtype)) throwError(env, "E_DTYPE", std::string(what) + " needs f32, bf16 or f16");
  a.idx = NativeBuffer::From(env, idx, "indices");
  a.count = intArg(env, count, "count");
  a.scale = (scale.IsNull() || scale.IsUndefined()) ? nullptr : NativeBuffer::From(env, scale, "scale");
  const int dev = matrix->device();
  if (rowsBuf->device() != dev || a.idx->device() != dev || (a.scale && a.scale->device() != dev))
    throwError(env, "E_DEVICE", std::string(what) + " needs every tensor on one device");
  const int es = dtypeSize(a.dtype);
  needBytes(env, matrix, double(a.rows) * double(a.cols) * es, what);
  needBytes(env, rowsBuf, double(a.count) * double(a.cols) * es, what);
  needBytes(env, a.idx, double(a.count) * 4, what);
  if (a.scale) needBytes(env, a.scale, double(a.count) * 4, what);
  if (a.rows > INT32_MAX) throwError(env, "E_SHAPE", std::string(what) + ": more than 2^31 - 1 rows");
  ensureUsable(env, dev);
  return a;
}

// grassGatherRows(out, src, rows, cols, dtype, idx, count, scale|null): out[j] = scale_j · src[idx_j]
static Napi::Value GatherRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* out = NativeBuffer::From(env, info[0], "output");
  NativeBuffer* src = NativeBuffer::From(env, info[1], "source");
  RowOpArgs a = rowOpArgs(env, src, info[2], info[3], info[4], info[5], info[6], out, info[7], "gatherRows");
  if (a.count == 0 || a.cols == 0) return env.Undefined();
  const float* sc = a.scale ? static_cast<const float*>(a.scale->data()) : nullptr;
  if (src->device() == kCpu) {
    cpu::grassGatherRows(out->data(), src->data(), a.dtype, a.rows, a.cols, static_cast<const int32_t*>(a.idx->data()),
                         a.count, sc);
    return env.Undefined();
  }
  gpu::Status st = gpu::grassGatherRows(src->device(), out->data(), src->data(), a.dtype, a.rows, a.cols,
                                        static_cast<const int32_t*>(a.idx->data()), a.count, sc);
  if (!st.ok()) throwCuda(env, src->device(), st, "gatherRows");
  return env.Undefined();
}

// grassGatherCols(out, src, rows, cols, dtype, idx, count): out[k, j] = src[k, idx_j] (out rows × count)
static Napi::Value GatherCols(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* out = NativeBuffer::From(env, info[0], "output");
  NativeBuffer* src = NativeBuffer::From(env, info[1], "source");
  const int64_t rows = intArg(env, info[2], "rows"), cols = intArg(env, info[3], "cols");
  const DType d = dtypeArg(env, info[4]);
  if (!floatType(d)) throwError(env, "E_DTYPE", "gatherCols needs f32, bf16 or f16");
  NativeBuffer* idx = NativeBuffer::From(env, info[5], "indices");
  const int64_t count = intArg(env, info[6], "count");
  const int dev = src->device();
  if (out->device() != dev || idx->device() != dev) throwError(env, "E_DEVICE", "gatherCols needs every tensor on one device");
  if (cols > INT32_MAX) throwError(env, "E_SHAPE", "gatherCols: more than 2^31 - 1 columns");
  const int es = dtypeSize(d);
  needBytes(env, src, double(rows) * double(cols) * es, "gatherCols");
  needBytes(env, out, double(rows) * double(count) * es, "gatherCols");
  needBytes(env, idx, double(count) * 4, "gatherCols");
  ensureUsable(env, dev);
  if (rows == 0 || count == 0) return env.Undefined();
  const auto* ix = static_cast<const int32_t*>(idx->data());
  if (dev == kCpu) {
    cpu::grassGatherCols(out->data(), src->data(), d, rows, cols, ix, count);
    return env.Undefined();
  }
  gpu::Status st = gpu::grassGatherCols(dev, out->data(), src->data(), d, rows, cols, ix, count);
  if (!st.ok()) throwCuda(env, dev, st, "gatherCols");
  return env.Undefined();
}

// grassScatterRows(dst, rows, cols, dtype, idx, count, src, alpha, scale|null):
// dst[idx_j] += alpha · scale_j · src[j] (idx sorted)
static Napi::Value ScatterRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeBuffer* dst = NativeBuffer::From(env, info[0], "destination");
  NativeBuffer* src = NativeBuffer::From(env, info[6], "source");
  RowOpArgs a = rowOpArgs(env, dst, info[1], info[2], info[3], info[4], info[5], src, info[8], "scatterRows");
  if (!info[7].IsNumber()) throwError(env, "E_ARG", "alpha must be a number");
  const float alpha = info[7].As<Napi::Number>().FloatValue();
  if (!std::isfinite(alpha)) throwError(env, "E_ARG", "alpha must be finite");
  if (a.count == 0 || a.cols == 0) return env.Undefined();
  const float* sc = a.scale ? static_cast<const float*>(a.scale->data()) : nullptr;
  if (dst->device() == kCpu) {
    cpu::grassScatterRows(dst->data(), a.dtype, a.rows, a.cols, static_cast<const int32_t*>(a.idx->data()), a.count,
                          src->data(), alpha, sc);
    return env.Undefined();
  }
  gpu::Status st = gpu::grassScatterRows(dst->device(), dst->data(), a.dtype, a.rows, a.cols,
                                         static_cast<const int32_t*>(a.idx->data()), a.count, src->data(), alpha, sc);
  if (!st.ok()) throwCuda(env, dst->device(), st, "scatterRows");
  return env.Undefined();
}

void registerGrass(Napi::Env env, Napi::Object exports) {
  exports.Set("GrassGroup", GrassGroup::Init(env));
  exports.Set("grassSelect", Napi::Function::New(env, GrassSelectFn));
  exports.Set("grassGatherRows", Napi::Function::New(env, GatherRows));
  exports.Set("grassGatherCols", Napi::Function::New(env, GatherCols));
  exports.Set("grassScatterRows", Napi::Function::New(env, ScatterRows));
}

}  // namespace slimopt
