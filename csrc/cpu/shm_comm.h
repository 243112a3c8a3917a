// Collectives between the processes of one host through one shared, mmapped segment (the "shm"
// backend of a process group on the CPU). The same operations and reduce-op codes as the NCCL
// path (cuda/nccl.h), synchronous and deterministic: every reduction runs in rank order
// (rank 0 + rank 1 + ...) with the same code on every rank, so every rank gets the same bits.
// f32/bf16/f16 accumulate in f32 and round once; avg = the sum divided by the world size
// (integers: truncated, NCCL's SumPostDiv); max/min of floats ignore NaN (fmaxf, as CUDA).
//
// The segment: a header (barrier word, abort flag and reason, one slot per rank with its pid and
// the collective it is in) and one data slot of `chunkBytes` per rank. Larger tensors go through
// in chunks. A barrier that waits past the timeout, or sees a peer process gone, marks the segment
// aborted; every rank then fails with E_DEVICE at its next wait, and the communicator stays
// broken. Mismatched calls (another op, count, dtype, root) are seen by every rank alike from the
// slots and refused by all (E_SHAPE / E_DTYPE / E_ARG) before any data moves.
#pragma once
#include <cstdint>
#include <string>
#include "../../cuda/common.cuh"  // DType

namespace slimopt {
namespace cpu {

// Same values as gpu::ReduceOp (ncclRedOp_t).
enum class CommOp : int32_t { Sum = 0, Prod = 1, Max = 2, Min = 3, Avg = 4 };

struct CommStatus {
  const char* code = nullptr;  // a SlimoptError code; nullptr when ok
  std::string message;
  bool ok() const { return code == nullptr; }
};

struct ShmSegment;

class ShmComm {
 public:
  // Rank 0 creates the segment file at `path` (world data slots of chunkBytes) and maps it.
  static CommStatus create(const std::string& path, int world, int64_t chunkBytes, int64_t timeoutMs, ShmComm** out);
  // Ranks 1.. map the segment rank 0 created and register.
  static CommStatus join(const std::string& path, int world, int rank, int64_t timeoutMs, ShmComm** out);
  ~ShmComm();
  ShmComm(const ShmComm&) = delete;
  ShmComm& operator=(const ShmComm&) = delete;

  // Waits until every rank has joined; rank 0 then removes the segment's file (the mapping
  // stays), so nothing is left behind whatever happens later.
  CommStatus waitAll();

  // Buffers are host memory; send and recv may be the same (in place).
  CommStatus allReduce(const void* send, void* recv, int64_t count, DType t, CommOp op);
  CommStatus reduce(const void* send, void* recv, int64_t count, DType t, CommOp op, int root);
  CommStatus reduceScatter(const void* send, void* recv, int64_t recvCount, DType t, CommOp op);
  CommStatus allGather(const void* send, void* recv, int64_t sendCount, DType t);
  CommStatus broadcast(const void* send, void* recv, int64_t count, DType t, int root);

  int rank() const { return rank_; }
  int world() const { return world_; }

 private:
  ShmComm() = default;
  enum Kind : int32_t { kAllReduce = 1, kReduce, kReduceScatter, kAllGather, kBroadcast };
  CommStatus begin(Kind kind, int64_t count, DType t, CommOp op, int root);
  CommStatus reduceTo(Kind kind, const void* send, void* recv, int64_t count, DType t, CommOp op, int root);
  CommStatus barrier();
  CommStatus aborted();
  void abort(const std::string& why);
  uint8_t* slot(int r) const;

  ShmSegment* seg_ = nullptr;
  size_t mapBytes_ = 0;
  std::string path_;
  int rank_ = 0, world_ = 1;
  int64_t chunkBytes_ = 0, timeoutMs_ = 0;
  uint64_t seq_ = 0;
  bool unlinked_ = false;
};

// out[i] = op over ranks r = 0..n-1, in order, of slots[r][i] (i < count), as documented above.
void reduceSlots(const void* const* slots, int nSlots, void* out, int64_t count, DType t, CommOp op);

}  // namespace cpu
}  // namespace slimopt
