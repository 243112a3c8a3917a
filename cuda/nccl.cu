// NCCL loaded at run time (see nccl.h). The prototypes and enum values below are NCCL's public C
// API (nccl.h of NCCL 2.x), declared here because the build has no NCCL headers:
// ncclResult_t is an int (ncclSuccess 0), ncclComm_t an opaque pointer, ncclUniqueId 128 bytes
// passed by value; ncclDataType_t: ncclUint8 1, ncclInt32 2, ncclFloat16 6, ncclFloat32 7,
// ncclBfloat16 9; ncclRedOp_t: Sum 0, Prod 1, Max 2, Min 3, Avg 4 (Avg needs NCCL >= 2.10).
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>
#include "internal.cuh"
#include "nccl.h"

namespace slimopt {
namespace gpu {

namespace {

struct UniqueId { char internal[kNcclUniqueIdBytes]; };

typedef int (*GetVersionFn)(int*);
typedef int (*GetUniqueIdFn)(UniqueId*);
typedef int (*CommInitRankFn)(void**, int, UniqueId, int);
typedef int (*CommDestroyFn)(void*);
typedef const char* (*GetErrorStringFn)(int);
typedef int (*GroupFn)();
typedef int (*AllReduceFn)(const void*, void*, size_t, int, int, void*, cudaStream_t);
typedef int (*ReduceFn)(const void*, void*, size_t, int, int, int, void*, cudaStream_t);
typedef int (*ReduceScatterFn)(const void*, void*, size_t, int, int, void*, cudaStream_t);
typedef int (*AllGatherFn)(const void*, void*, size_t, int, void*, cudaStream_t);
typedef int (*BroadcastFn)(const void*, void*, size_t, int, int, void*, cudaStream_t);

struct Nccl {
  bool tried = false;
  void* lib = nullptr;
  std::string path, why;
  int version = 0;
  GetUniqueIdFn getUniqueId = nullptr;
  CommInitRankFn commInitRank = nullptr;
  CommDestroyFn commDestroy = nullptr;
  GetErrorStringFn errorString = nullptr;
  GroupFn groupStart = nullptr, groupEnd = nullptr;
  AllReduceFn allReduce = nullptr;
  ReduceFn reduce = nullptr;
  ReduceScatterFn reduceScatter = nullptr;
  AllGatherFn allGather = nullptr;
  BroadcastFn broadcast = nullptr;
};

std::mutex gMutex;
Nccl gNccl;

template <typename F>
bool bind(void* lib, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  return *out != nullptr;
}

Nccl* nccl() {
  std::lock_guard<std::mutex> lock(gMutex);
  if (gNccl.tried) return gNccl.lib ? &gNccl : nullptr;
  gNccl.tried = true;
  std::vector<std::string> names;
  if (const char* e = std::getenv("SLIMOPT_NCCL"); e != nullptr && *e != 0) names.push_back(e);
  names.push_back("libnccl.so.2");
  std::string tried;
  for (const std::string& n : names) {
    void* h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      tried += (tried.empty() ? "" : "; ") + n + ": " + dlerror();
      continue;
    }
    Nccl& L = gNccl;
    GetVersionFn getVersion = nullptr;
    const bool ok = bind(h, "ncclGetVersion", &getVersion) && bind(h, "ncclGetUniqueId", &L.getUniqueId) &&
                    bind(h, "ncclCommInitRank", &L.commInitRank) && bind(h, "ncclCommDestroy", &L.commDestroy) &&
                    bind(h, "ncclGetErrorString", &L.errorString) && bind(h, "ncclGroupStart", &L.groupStart) &&
                    bind(h, "ncclGroupEnd", &L.groupEnd) && bind(h, "ncclAllReduce", &L.allReduce) &&
                    bind(h, "ncclReduce", &L.reduce) && bind(h, "ncclReduceScatter", &L.reduceScatter) &&
                    bind(h, "ncclAllGather", &L.allGather) && bind(h, "ncclBroadcast", &L.broadcast);
    if (!ok) {
      tried += (tried.empty() ? "" : "; ") + n + ": a symbol is missing";
      dlclose(h);
      continue;
    }
    getVersion(&L.version);
    L.lib = h;
    L.path = n;
    return &gNccl;
  }
  gNccl.why = tried;
  return nullptr;
}

// NCCL's failures as a Status (code 1000 + ncclResult_t, so it never reads as a CUDA error code).
Status ncclStatus(int rc, const char* what) {
  Status s;
  if (rc == 0) return s;
  s.code = 1000 + rc;
  s.name = "nccl error " + std::to_string(rc);
  Nccl* L = gNccl.lib ? &gNccl : nullptr;
  s.message = std::string(what) + ": " + (L ? L->errorString(rc) : "NCCL not loaded");
  return s;
}

Status needNccl(Nccl** out, const char* what) {
  *out = nccl();
  if (*out == nullptr) return invalidArg(std::string(what) + ": NCCL could not be loaded (" + gNccl.why + ")");
  return Status();
}

int ncclType(DType t) {
  switch (t) {
    case DType::F32: return 7;
    case DType::BF16: return 9;
    case DType::F16: return 6;
    case DType::U8: return 1;
    default: return 2;  // I32
  }
}

}  // namespace

std::string ncclPath(std::string* why) {
  Nccl* L = nccl();
  if (why) *why = L ? "" : gNccl.why;
  return L ? L->path : "";
}
int ncclVersion() {
  Nccl* L = nccl();
  return L ? L->version : 0;
}

Status ncclNewUniqueId(std::string* id) {
  Nccl* L;
  Status s = needNccl(&L, "ncclGetUniqueId");
  if (!s.ok()) return s;
  UniqueId u;
  std::memset(&u, 0, sizeof u);
  s = ncclStatus(L->getUniqueId(&u), "ncclGetUniqueId");
  if (s.ok()) id->assign(u.internal, sizeof u.internal);
  return s;
}

Status ncclCommInit(int dev, const std::string& id, int worldSize, int rank, void** comm) {
  Nccl* L;
  Status s = needNccl(&L, "ncclCommInitRank");
  if (!s.ok()) return s;
  if (id.size() != size_t(kNcclUniqueIdBytes)) return invalidArg("ncclCommInitRank: the unique id must be 128 bytes");
  cudaStream_t st;
  s = deviceStream(dev, &st, "ncclCommInitRank");  // selects dev on this thread, as NCCL requires
  if (!s.ok()) return s;
  UniqueId u;
  std::memcpy(u.internal, id.data(), sizeof u.internal);
  return ncclStatus(L->commInitRank(comm, worldSize, u, rank), "ncclCommInitRank");
}

Status ncclCommFree(void* comm) {
  Nccl* L = nccl();
  if (L == nullptr || comm == nullptr) return Status();
  return ncclStatus(L->commDestroy(comm), "ncclCommDestroy");
}

Status ncclGroupBegin() {
  Nccl* L;
  Status s = needNccl(&L, "ncclGroupStart");
  return s.ok() ? ncclStatus(L->groupStart(), "ncclGroupStart") : s;
}
Status ncclGroupEnd() {
  Nccl* L;
  Status s = needNccl(&L, "ncclGroupEnd");
  return s.ok() ? ncclStatus(L->groupEnd(), "ncclGroupEnd") : s;
}

#define SLIMOPT_NCCL_CALL(what, expr)               \
  Nccl* L;                                          \
  Status s = needNccl(&L, what);                    \
  if (!s.ok()) return s;                            \
  cudaStream_t st;                                  \
  s = deviceStream(dev, &st, what);                 \
  if (!s.ok()) return s;                            \
  return ncclStatus((expr), what)

Status ncclAllReduceOn(int dev, void* comm, const void* send, void* recv, int64_t count, DType t, ReduceOp op) {
  SLIMOPT_NCCL_CALL("ncclAllReduce", L->allReduce(send, recv, size_t(count), ncclType(t), int(op), comm, st));
}
Status ncclReduceOn(int dev, void* comm, const void* send, void* recv, int64_t count, DType t, ReduceOp op, int root) {
  SLIMOPT_NCCL_CALL("ncclReduce", L->reduce(send, recv, size_t(count), ncclType(t), int(op), root, comm, st));
}
Status ncclReduceScatterOn(int dev, void* comm, const void* send, void* recv, int64_t recvCount, DType t, ReduceOp op) {
  SLIMOPT_NCCL_CALL("ncclReduceScatter", L->reduceScatter(send, recv, size_t(recvCount), ncclType(t), int(op), comm, st));
}
Status ncclAllGatherOn(int dev, void* comm, const void* send, void* recv, int64_t sendCount, DType t) {
  SLIMOPT_NCCL_CALL("ncclAllGather", L->allGather(send, recv, size_t(sendCount), ncclType(t), comm, st));
}
Status ncclBroadcastOn(int dev, void* comm, const void* send, void* recv, int64_t count, DType t, int root) {
  SLIMOPT_NCCL_CALL("ncclBroadcast", L->broadcast(send, recv, size_t(count), ncclType(t), root, comm, st));
}

}  // namespace gpu
}  // namespace slimopt
