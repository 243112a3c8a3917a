// The shm communicator of a CPU process group (csrc/cpu/shm_comm.h): argument checks here, the
// segment and the collectives in the CPU backend. Same methods and arguments as NcclComm, on
// host buffers; every call returns when the collective is done.
#include <string>
#include "buffer.h"
#include "comm_args.h"
#include "devices.h"
#include "errors.h"
#include "ops.h"
#include "cpu/shm_comm.h"

namespace slimopt {

class ShmComm : public Napi::ObjectWrap<ShmComm> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "ShmComm", {
        InstanceMethod<&ShmComm::WaitAll>("waitAll"),
        InstanceMethod<&ShmComm::AllReduce>("allReduce"),
        InstanceMethod<&ShmComm::Reduce>("reduce"),
        InstanceMethod<&ShmComm::ReduceScatter>("reduceScatter"),
        InstanceMethod<&ShmComm::AllGather>("allGather"),
        InstanceMethod<&ShmComm::Broadcast>("broadcast"),
        InstanceMethod<&ShmComm::Dispose>("dispose"),
    });
  }

  // new ShmComm(segmentPath, worldSize, rank, chunkBytes, timeoutMs): rank 0 creates the segment
  // file, the others map it. waitAll() then waits for every rank.
  explicit ShmComm(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ShmComm>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) throwError(env, "E_ARG", "ShmComm: the segment path must be a string");
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    const int64_t world = countArg(env, info[1], "world size");
    const int64_t rank = countArg(env, info[2], "rank");
    const int64_t chunk = countArg(env, info[3], "chunk bytes");
    const int64_t timeout = countArg(env, info[4], "timeout ms");
    if (world < 1 || world > 4096 || rank >= world) throwError(env, "E_ARG", "ShmComm: rank must be in [0, worldSize), worldSize <= 4096");
    cpu::CommStatus st = rank == 0 ? cpu::ShmComm::create(path, int(world), chunk, timeout, &comm_)
                                   : cpu::ShmComm::join(path, int(world), int(rank), timeout, &comm_);
    check(env, st);
  }
  ~ShmComm() override { delete comm_; }

 private:
  static void check(Napi::Env env, const cpu::CommStatus& st) {
    if (!st.ok()) throwError(env, st.code, st.message);
  }
  cpu::ShmComm* live(Napi::Env env) {
    if (comm_ == nullptr) throwError(env, "E_DISPOSED", "the shm communicator was disposed");
    return comm_;
  }
  // Argument v as a host buffer holding `count` elements of t.
  static void* host(Napi::Env env, Napi::Value v, int64_t count, DType t, const char* what) {
    NativeBuffer* b = NativeBuffer::From(env, v, what);
    if (b->device() != kCpu) throwError(env, "E_DEVICE", std::string(what) + " is not on the CPU (the shm backend moves host memory)");
    needBytes(env, b, count, t, what);
    return b->data();
  }
  int rootArg(Napi::Env env, Napi::Value v) {
    const int64_t root = countArg(env, v, "root");
    if (root >= comm_->world()) throwError(env, "E_ARG", "root must be a rank");
    return int(root);
  }
  Napi::Value done(Napi::Env env, const cpu::CommStatus& st) {
    check(env, st);
    return env.Undefined();
  }

  Napi::Value WaitAll(const Napi::CallbackInfo& info) {
    return done(info.Env(), live(info.Env())->waitAll());
  }
  // The count, dtype and reduce op of allReduce, reduce and reduceScatter (arguments 2, 3, 4).
  struct ReduceArgs {
    int64_t n;
    DType t;
    cpu::CommOp op;
  };
  static ReduceArgs reduceArgs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return {countArg(env, info[2], "count"), dtypeArg(env, info[3]), cpu::CommOp(reduceOpArg(env, info[4]))};
  }

  // allReduce(send, recv, count, dtype, op)
  Napi::Value AllReduce(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    cpu::ShmComm* c = live(env);
    const ReduceArgs a = reduceArgs(info);
    const void* s = host(env, info[0], a.n, a.t, "allReduce send");
    return done(env, c->allReduce(s, host(env, info[1], a.n, a.t, "allReduce receive"), a.n, a.t, a.op));
  }
  // reduce(send, recv, count, dtype, op, root)
  Napi::Value Reduce(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    cpu::ShmComm* c = live(env);
    const ReduceArgs a = reduceArgs(info);
    const int root = rootArg(env, info[5]);
    const void* s = host(env, info[0], a.n, a.t, "reduce send");
    return done(env, c->reduce(s, host(env, info[1], a.n, a.t, "reduce receive"), a.n, a.t, a.op, root));
  }
  // reduceScatter(send, recv, recvCount, dtype, op): send holds worldSize * recvCount.
  Napi::Value ReduceScatter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    cpu::ShmComm* c = live(env);
    const ReduceArgs a = reduceArgs(info);
    const void* s = host(env, info[0], a.n * c->world(), a.t, "reduceScatter send");
    return done(env, c->reduceScatter(s, host(env, info[1], a.n, a.t, "reduceScatter receive"), a.n, a.t, a.op));
  }
  // allGather(send, recv, sendCount, dtype): recv holds worldSize * sendCount.
  Napi::Value AllGather(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    cpu::ShmComm* c = live(env);
    const int64_t n = countArg(env, info[2], "count");
    const DType t = dtypeArg(env, info[3]);
    const void* s = host(env, info[0], n, t, "allGather send");
    return done(env, c->allGather(s, host(env, info[1], n * c->world(), t, "allGather receive"), n, t));
  }
  // broadcast(send, recv, count, dtype, root)
  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    cpu::ShmComm* c = live(env);
    const int64_t n = countArg(env, info[2], "count");
    const DType t = dtypeArg(env, info[3]);
    const int root = rootArg(env, info[4]);
    const void* s = host(env, info[0], n, t, "broadcast send");
    return done(env, c->broadcast(s, host(env, info[1], n, t, "broadcast receive"), n, t, root));
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    delete comm_;
    comm_ = nullptr;
    return info.Env().Undefined();
  }

  cpu::ShmComm* comm_ = nullptr;
};

void registerShm(Napi::Env env, Napi::Object exports) {
  exports.Set("ShmComm", ShmComm::Init(env));
}

}  // namespace slimopt
