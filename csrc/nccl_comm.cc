// NCCL communicators and collectives on device buffers: argument checks here, the calls in
// cuda/nccl.cu. One NcclComm per process and device (rank of a process group); the collectives
// are enqueued on the device's stream like every other launch.
#include <cstring>
#include <string>
#include "buffer.h"
#include "comm_args.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "../cuda/nccl.h"

namespace slimopt {

namespace {

gpu::ReduceOp ncclOpArg(Napi::Env env, Napi::Value v) { return gpu::ReduceOp(reduceOpArg(env, v)); }

}  // namespace

class NcclComm : public Napi::ObjectWrap<NcclComm> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NcclComm", {
        InstanceMethod<&NcclComm::AllReduce>("allReduce"),
        InstanceMethod<&NcclComm::Reduce>("reduce"),
        InstanceMethod<&NcclComm::ReduceScatter>("reduceScatter"),
        InstanceMethod<&NcclComm::AllGather>("allGather"),
        InstanceMethod<&NcclComm::Broadcast>("broadcast"),
        InstanceMethod<&NcclComm::Dispose>("dispose"),
    });
  }

  // new NcclComm(device, uniqueId (Uint8Array of 128), worldSize, rank)
  explicit NcclComm(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NcclComm>(info) {
    Napi::Env env = info.Env();
    dev_ = int(countArg(env, info[0], "device"));
    if (!info[1].IsTypedArray()) throwError(env, "E_ARG", "NcclComm: the unique id must be a Uint8Array");
    Napi::Uint8Array id = info[1].As<Napi::Uint8Array>();
    if (id.ByteLength() != size_t(gpu::kNcclUniqueIdBytes)) throwError(env, "E_ARG", "NcclComm: the unique id must be 128 bytes");
    world_ = int(countArg(env, info[2], "world size"));
    rank_ = int(countArg(env, info[3], "rank"));
    if (world_ < 1 || rank_ >= world_) throwError(env, "E_ARG", "NcclComm: rank must be in [0, worldSize)");
    ensureUsable(env, dev_);
    std::string bytes(reinterpret_cast<const char*>(id.Data()), id.ByteLength());
    gpu::Status st = gpu::ncclCommInit(dev_, bytes, world_, rank_, &comm_);
    if (!st.ok()) throwCuda(env, dev_, st, "NCCL communicator");
  }
  ~NcclComm() override { gpu::ncclCommFree(comm_); }

 private:
  void live(Napi::Env env) {
    if (comm_ == nullptr) throwError(env, "E_DISPOSED", "the NCCL communicator was disposed");
    ensureUsable(env, dev_);
  }
  NativeBuffer* buffer(Napi::Env env, Napi::Value v, const char* what) {
    NativeBuffer* b = NativeBuffer::From(env, v, what);
    if (b->device() != dev_) throwError(env, "E_DEVICE", std::string(what) + " is not on the communicator's device");
    return b;
  }
  Napi::Value done(Napi::Env env, const gpu::Status& st, const char* what) {
    if (!st.ok()) throwCuda(env, dev_, st, what);
    return env.Undefined();
  }

  // allReduce(send, recv, count, dtype, op)
  Napi::Value AllReduce(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    NativeBuffer* s = buffer(env, info[0], "send buffer");
    NativeBuffer* r = buffer(env, info[1], "receive buffer");
    const int64_t n = countArg(env, info[2], "count");
    const DType t = dtypeArg(env, info[3]);
    const gpu::ReduceOp op = ncclOpArg(env, info[4]);
    needBytes(env, s, n, t, "allReduce send");
    needBytes(env, r, n, t, "allReduce receive");
    return done(env, gpu::ncclAllReduceOn(dev_, comm_, s->data(), r->data(), n, t, op), "allReduce");
  }
  // reduce(send, recv, count, dtype, op, root)
  Napi::Value Reduce(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    NativeBuffer* s = buffer(env, info[0], "send buffer");
    NativeBuffer* r = buffer(env, info[1], "receive buffer");
    const int64_t n = countArg(env, info[2], "count");
    const DType t = dtypeArg(env, info[3]);
    const gpu::ReduceOp op = ncclOpArg(env, info[4]);
    const int64_t root = countArg(env, info[5], "root");
    if (root >= world_) throwError(env, "E_ARG", "reduce: root must be a rank");
    needBytes(env, s, n, t, "reduce send");
    needBytes(env, r, n, t, "reduce receive");
    return done(env, gpu::ncclReduceOn(dev_, comm_, s->data(), r->data(), n, t, op, int(root)), "reduce");
  }
  // reduceScatter(send, recv, recvCount, dtype, op): send holds worldSize * recvCount.
  Napi::Value ReduceScatter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    NativeBuffer* s = buffer(env, info[0], "send buffer");
    NativeBuffer* r = buffer(env, info[1], "receive buffer");
    const int64_t n = countArg(env, info[2], "count");
    const DType t = dtypeArg(env, info[3]);
    const gpu::ReduceOp op = ncclOpArg(env, info[4]);
    needBytes(env, s, n * world_, t, "reduceScatter send");
    needBytes(env, r, n, t, "reduceScatter receive");
    return done(env, gpu::ncclReduceScatterOn(dev_, comm_, s->data(), r->data(), n, t, op), "reduceScatter");
  }
  // allGather(send, recv, sendCount, dtype): recv holds worldSize * sendCount.
  Napi::Value AllGather(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    NativeBuffer* s = buffer(env, info[0], "send buffer");
    NativeBuffer* r = buffer(env, info[1], "receive buffer");
    const int64_t n = countArg(env, info[2], "count");
    const DType t = dtypeArg(env, info[3]);
    needBytes(env, s, n, t, "allGather send");
    needBytes(env, r, n * world_, t, "allGather receive");
    return done(env, gpu::ncclAllGatherOn(dev_, comm_, s->data(), r->data(), n, t), "allGather");
  }
  // broadcast(send, recv, count, dtype, root)
  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    NativeBuffer* s = buffer(env, info[0], "send buffer");
    NativeBuffer* r = buffer(env, info[1], "receive buffer");
    const int64_t n = countArg(env, info[2], "count");
    const DType t = dtypeArg(env, info[3]);
    const int64_t root = countArg(env, info[4], "root");
    if (root >= world_) throwError(env, "E_ARG", "broadcast: root must be a rank");
    needBytes(env, s, n, t, "broadcast send");
    needBytes(env, r, n, t, "broadcast receive");
    return done(env, gpu::ncclBroadcastOn(dev_, comm_, s->data(), r->data(), n, t, int(root)), "broadcast");
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    gpu::ncclCommFree(comm_);
    comm_ = nullptr;
    return info.Env().Undefined();
  }

  int dev_ = -1, world_ = 1, rank_ = 0;
  void* comm_ = nullptr;
};

// ncclInfo(): { path, version, why } — path null when NCCL did not load.
static Napi::Value NcclInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string why;
  const std::string path = gpu::ncclPath(&why);
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", path.empty() ? env.Null() : Napi::String::New(env, path));
  o.Set("version", Napi::Number::New(env, gpu::ncclVersion()));
  o.Set("why", Napi::String::New(env, why));
  return o;
}

// ncclUniqueId(): a fresh Uint8Array(128) for rank 0 to hand to the others.
static Napi::Value NcclUniqueId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string id;
  gpu::Status st = gpu::ncclNewUniqueId(&id);
  if (!st.ok()) throwError(env, st.code == -1 ? "E_NO_CUDA" : "E_CUDA", st.message);
  Napi::Uint8Array out = Napi::Uint8Array::New(env, id.size());
  std::memcpy(out.Data(), id.data(), id.size());
  return out;
}

static Napi::Value NcclGroupStart(const Napi::CallbackInfo& info) {
  gpu::Status st = gpu::ncclGroupBegin();
  if (!st.ok()) throwError(info.Env(), "E_CUDA", st.message);
  return info.Env().Undefined();
}
static Napi::Value NcclGroupEnd(const Napi::CallbackInfo& info) {
  gpu::Status st = gpu::ncclGroupEnd();
  if (!st.ok()) throwError(info.Env(), "E_CUDA", st.message);
  return info.Env().Undefined();
}

void registerNccl(Napi::Env env, Napi::Object exports) {
  exports.Set("NcclComm", NcclComm::Init(env));
  exports.Set("ncclInfo", Napi::Function::New(env, NcclInfo));
  exports.Set("ncclUniqueId", Napi::Function::New(env, NcclUniqueId));
  exports.Set("ncclGroupStart", Napi::Function::New(env, NcclGroupStart));
  exports.Set("ncclGroupEnd", Napi::Function::New(env, NcclGroupEnd));
}

}  // namespace slimopt
