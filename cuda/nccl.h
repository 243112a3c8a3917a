// NCCL as the glue sees it: plain C++, no NCCL headers (this build has none). Implemented in
// nccl.cu (NCCL loaded at run time: SLIMOPT_NCCL, then libnccl.so.2) when nvcc is present, by
// csrc/cuda_absent.cc otherwise. Collectives are enqueued on the device's one stream.
#pragma once
#include <cstdint>
#include <string>
#include "runtime.h"
#include "common.cuh"  // DType

namespace slimopt {
namespace gpu {

// ncclRedOp_t values.
enum class ReduceOp : int32_t { Sum = 0, Prod = 1, Max = 2, Min = 3, Avg = 4 };
constexpr int kNcclUniqueIdBytes = 128;

// The library that loaded ("" when none), its version code (e.g. 22803), and why not.
std::string ncclPath(std::string* why);
int ncclVersion();

Status ncclNewUniqueId(std::string* id);  // kNcclUniqueIdBytes bytes
Status ncclCommInit(int dev, const std::string& id, int worldSize, int rank, void** comm);
Status ncclCommFree(void* comm);

// Grouped operations: between begin and end, NCCL fuses the calls into one launch.
Status ncclGroupBegin();
Status ncclGroupEnd();
Status ncclAllReduceOn(int dev, void* comm, const void* send, void* recv, int64_t count, DType t, ReduceOp op);
Status ncclReduceOn(int dev, void* comm, const void* send, void* recv, int64_t count, DType t, ReduceOp op, int root);
Status ncclReduceScatterOn(int dev, void* comm, const void* send, void* recv, int64_t recvCount, DType t, ReduceOp op);
Status ncclAllGatherOn(int dev, void* comm, const void* send, void* recv, int64_t sendCount, DType t);
Status ncclBroadcastOn(int dev, void* comm, const void* send, void* recv, int64_t count, DType t, int root);

}  // namespace gpu
}  // namespace slimopt
