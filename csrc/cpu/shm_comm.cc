// The shm backend of a process group (see shm_comm.h): segment layout, a barrier on a futex with
// a timeout and a watch on the peers' pids, the chunked collectives and the rank-ordered reduction.
#include "shm_comm.h"
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace slimopt {
namespace cpu {

namespace {

constexpr uint64_t kMagic = 0x31686d736d696c73ull;  // "slimshm1"
constexpr int kWhyBytes = 480;
// Atomics in the segment are shared between processes: they must need no lock.
static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free &&
                  std::atomic<int32_t>::is_always_lock_free, "process-shared atomics need lock-free types");

// The collective a rank is in, published before the first barrier of every call.
struct alignas(64) RankSlot {
  std::atomic<int32_t> pid;  // 0 until the rank has joined
  uint64_t seq;
  int32_t kind, dtype, op, root;
  int64_t count;
};

}  // namespace

struct ShmSegment {
  std::atomic<uint64_t> magic;  // stored last by rank 0: the rest is initialised
  int32_t world;
  int32_t unused;
  int64_t chunkBytes;
  int64_t dataOffset;
  alignas(64) std::atomic<uint32_t> arrived;     // ranks in the current barrier
  alignas(64) std::atomic<uint32_t> generation;  // the futex word: bumped when a barrier opens
  std::atomic<uint32_t> abortState;              // 0 fine, 1 being written, 2 aborted (why is set)
  char why[kWhyBytes];
  RankSlot* ranks() { return reinterpret_cast<RankSlot*>(reinterpret_cast<uint8_t*>(this) + headerBytes()); }
  static size_t headerBytes() { return (sizeof(ShmSegment) + 63) / 64 * 64; }
};

namespace {

size_t dataOffsetFor(int world) { return ShmSegment::headerBytes() + size_t(world) * sizeof(RankSlot); }

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void futexWait(std::atomic<uint32_t>* word, uint32_t expected, int64_t ms) {
  timespec ts{time_t(ms / 1000), long((ms % 1000) * 1000000)};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}
void futexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

CommStatus failed(const char* code, std::string message) {
  CommStatus s;
  s.code = code;
  s.message = std::move(message);
  return s;
}

const char* kindName(int32_t k) {
  static const char* names[] = {"?", "allReduce", "reduce", "reduceScatter", "allGather", "broadcast"};
  return k >= 1 && k <= 5 ? names[k] : names[0];
}
const char* dtypeName(int32_t t) {
  static const char* names[] = {"f32", "bf16", "f16", "u8", "i32"};
  return t >= 0 && t <= 4 ? names[t] : "?";
}
const char* opName(int32_t o) {
  static const char* names[] = {"sum", "prod", "max", "min", "avg"};
  return o >= 0 && o <= 4 ? names[o] : "?";
}
std::string describe(const RankSlot& s) {
  std::string d = std::string(kindName(s.kind)) + " of " + std::to_string(s.count) + " " + dtypeName(s.dtype);
  if (s.kind == 1 || s.kind == 2 || s.kind == 3) d += std::string(" (") + opName(s.op) + ")";
  if (s.kind == 2 || s.kind == 5) d += ", root " + std::to_string(s.root);
  return d;
}

// ---- the rank-ordered reduction ---------------------------------------------------------------

void loadFloats(const void* src, DType t, int64_t at, int64_t n, float* out) {
  if (t == DType::F32) {
    std::memcpy(out, static_cast<const float*>(src) + at, size_t(n) * 4);
    return;
  }
  const uint16_t* h = static_cast<const uint16_t*>(src) + at;
  if (t == DType::BF16)
    for (int64_t i = 0; i < n; ++i) out[i] = bf16ToFloat(h[i]);
  else
    for (int64_t i = 0; i < n; ++i) out[i] = f16ToFloat(h[i]);
}

void storeFloats(const float* in, int64_t n, void* dst, DType t, int64_t at) {
  if (t == DType::F32) {
    std::memcpy(static_cast<float*>(dst) + at, in, size_t(n) * 4);
    return;
  }
  uint16_t* h = static_cast<uint16_t*>(dst) + at;
  if (t == DType::BF16)
    for (int64_t i = 0; i < n; ++i) h[i] = floatToBf16(in[i]);
  else
    for (int64_t i = 0; i < n; ++i) h[i] = floatToF16(in[i]);
}

void combineFloats(float* acc, const float* x, int64_t n, CommOp op) {
  switch (op) {
    case CommOp::Prod: for (int64_t i = 0; i < n; ++i) acc[i] *= x[i]; break;
    case CommOp::Max: for (int64_t i = 0; i < n; ++i) acc[i] = std::fmax(acc[i], x[i]); break;
    case CommOp::Min: for (int64_t i = 0; i < n; ++i) acc[i] = std::fmin(acc[i], x[i]); break;
    default: for (int64_t i = 0; i < n; ++i) acc[i] += x[i]; break;  // Sum, Avg
  }
}

void reduceFloats(const void* const* slots, int nSlots, void* out, int64_t count, DType t, CommOp op) {
  constexpr int64_t kBlock = 1024;
  float acc[kBlock], x[kBlock];
  for (int64_t b = 0; b < count; b += kBlock) {
    const int64_t m = std::min(kBlock, count - b);
    loadFloats(slots[0], t, b, m, acc);
    for (int r = 1; r < nSlots; ++r) {
      loadFloats(slots[r], t, b, m, x);
      combineFloats(acc, x, m, op);
    }
    if (op == CommOp::Avg)
      for (int64_t i = 0; i < m; ++i) acc[i] /= float(nSlots);
    storeFloats(acc, m, out, t, b);
  }
}

// Integers wrap (arithmetic in the unsigned type U); avg is the wrapped sum divided, truncated.
template <typename T, typename U>
void reduceInts(const void* const* slots, int nSlots, void* out, int64_t count, CommOp op) {
  T* o = static_cast<T*>(out);
  for (int64_t i = 0; i < count; ++i) {
    T acc = static_cast<const T*>(slots[0])[i];
    for (int r = 1; r < nSlots; ++r) {
      const T x = static_cast<const T*>(slots[r])[i];
      switch (op) {
        case CommOp::Prod: acc = T(U(U(acc) * U(x))); break;
        case CommOp::Max: acc = std::max(acc, x); break;
        case CommOp::Min: acc = std::min(acc, x); break;
        default: acc = T(U(U(acc) + U(x))); break;
      }
    }
    o[i] = op == CommOp::Avg ? T(acc / T(nSlots)) : acc;
  }
}

}  // namespace

void reduceSlots(const void* const* slots, int nSlots, void* out, int64_t count, DType t, CommOp op) {
  switch (t) {
    case DType::I32: reduceInts<int32_t, uint32_t>(slots, nSlots, out, count, op); break;
    case DType::U8: reduceInts<uint8_t, uint32_t>(slots, nSlots, out, count, op); break;
    default: reduceFloats(slots, nSlots, out, count, t, op); break;
  }
}

// ---- the segment ------------------------------------------------------------------------------

CommStatus ShmComm::create(const std::string& path, int world, int64_t chunkBytes, int64_t timeoutMs, ShmComm** out) {
  if (world < 1 || chunkBytes < 64 * 8 * world || chunkBytes % 64 != 0 || timeoutMs < 1)
    return failed("E_ARG", "shm segment: world >= 1, chunkBytes a multiple of 64 of at least 512 per rank, timeout >= 1 ms");
  const size_t total = dataOffsetFor(world) + size_t(world) * size_t(chunkBytes);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return failed("E_DEVICE", "shm segment " + path + ": " + std::strerror(errno));
  void* p = MAP_FAILED;
  if (::ftruncate(fd, off_t(total)) == 0) p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) {
    ::unlink(path.c_str());
    return failed("E_DEVICE", "shm segment " + path + " of " + std::to_string(total) + " bytes: " + std::strerror(err));
  }
  ShmComm* c = new ShmComm();
  c->seg_ = static_cast<ShmSegment*>(p);
  c->mapBytes_ = total;
  c->path_ = path;
  c->world_ = world;
  c->rank_ = 0;
  c->chunkBytes_ = chunkBytes;
  c->timeoutMs_ = timeoutMs;
  ShmSegment& S = *c->seg_;  // the file is zero-filled: counters, flags and pids start at 0
  S.world = world;
  S.chunkBytes = chunkBytes;
  S.dataOffset = int64_t(dataOffsetFor(world));
  S.ranks()[0].pid.store(int32_t(::getpid()), std::memory_order_relaxed);
  S.magic.store(kMagic, std::memory_order_release);
  *out = c;
  return {};
}

CommStatus ShmComm::join(const std::string& path, int world, int rank, int64_t timeoutMs, ShmComm** out) {
  if (rank < 1 || rank >= world || timeoutMs < 1) return failed("E_ARG", "shm join: rank must be in [1, world)");
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return failed("E_DEVICE", "shm segment " + path + ": " + std::strerror(errno));
  struct stat st;
  void* p = MAP_FAILED;
  size_t size = 0;
  if (::fstat(fd, &st) == 0 && size_t(st.st_size) >= dataOffsetFor(1)) {
    size = size_t(st.st_size);
    p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  ::close(fd);
  if (p == MAP_FAILED) return failed("E_DEVICE", "shm segment " + path + " is not a segment of a process group");
  ShmSegment& S = *static_cast<ShmSegment*>(p);
  if (S.magic.load(std::memory_order_acquire) != kMagic || S.world < 1 ||
      size != dataOffsetFor(S.world) + size_t(S.world) * size_t(S.chunkBytes)) {
    ::munmap(p, size);  // nothing of ours: leave it as it is
    return failed("E_DEVICE", "shm segment " + path + " is not a segment of a process group");
  }
  std::string bad;
  ShmComm* c = new ShmComm();
  c->seg_ = &S;
  c->mapBytes_ = size;
  c->path_ = path;
  c->unlinked_ = true;  // rank 0 removes the file
  c->world_ = world;
  c->rank_ = rank;
  c->chunkBytes_ = S.chunkBytes;
  c->timeoutMs_ = timeoutMs;
  if (S.world != world) {
    bad = "rank " + std::to_string(rank) + " was started for a world of " + std::to_string(world) +
          " ranks, rank 0 for " + std::to_string(S.world);
    c->abort(bad);  // the others fail now instead of waiting for a rank that will not come
  } else {
    int32_t none = 0;
    if (!S.ranks()[rank].pid.compare_exchange_strong(none, int32_t(::getpid()))) {
      bad = "rank " + std::to_string(rank) + " joined twice (pid " + std::to_string(none) + " has it)";
      c->abort(bad);
    }
  }
  if (!bad.empty()) {
    delete c;
    return failed("E_ARG", bad);
  }
  *out = c;
  return {};
}

ShmComm::~ShmComm() {
  if (!unlinked_) ::unlink(path_.c_str());
  if (seg_ != nullptr) ::munmap(seg_, mapBytes_);
}

CommStatus ShmComm::waitAll() {
  CommStatus s = barrier();
  if (rank_ == 0 && !unlinked_) {
    ::unlink(path_.c_str());
    unlinked_ = true;
  }
  return s;
}

uint8_t* ShmComm::slot(int r) const {
  return reinterpret_cast<uint8_t*>(seg_) + seg_->dataOffset + int64_t(r) * chunkBytes_;
}

void ShmComm::abort(const std::string& why) {
  ShmSegment& S = *seg_;
  uint32_t fine = 0;
  if (S.abortState.compare_exchange_strong(fine, 1)) {
    const size_t n = std::min(why.size(), size_t(kWhyBytes - 1));
    std::memcpy(S.why, why.data(), n);
    S.why[n] = 0;
    S.abortState.store(2, std::memory_order_release);
  }
  // Wake the waiters: they see the flag on their next look.
  S.generation.fetch_add(0x10000u, std::memory_order_acq_rel);
  futexWakeAll(&S.generation);
}

CommStatus ShmComm::aborted() {
  ShmSegment& S = *seg_;
  for (int i = 0; i < 100000 && S.abortState.load(std::memory_order_acquire) != 2; ++i) sched_yield();
  return failed("E_DEVICE", "the process group is broken (rank " + std::to_string(rank_) + " of " +
                                std::to_string(world_) + " sees): " + std::string(S.why));
}

// A sense-counting barrier: the last rank to arrive opens it by bumping the generation. Waiters
// yield a little, then sleep on the futex in short slices, watching the abort flag, the deadline
// and whether the peers' processes still exist.
CommStatus ShmComm::barrier() {
  ShmSegment& S = *seg_;
  if (S.abortState.load(std::memory_order_acquire) != 0) return aborted();
  const uint32_t gen = S.generation.load(std::memory_order_acquire);
  if (S.arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == uint32_t(world_)) {
    S.arrived.store(0, std::memory_order_relaxed);
    S.generation.fetch_add(1, std::memory_order_release);
    futexWakeAll(&S.generation);
    return {};
  }
  const int64_t start = nowMs();
  int64_t nextPeerCheck = start + 100;
  for (int spin = 0;; ++spin) {
    const uint32_t g = S.generation.load(std::memory_order_acquire);
    if (S.abortState.load(std::memory_order_acquire) != 0) return aborted();
    if (g != gen) return {};
    if (spin < 64) {
      sched_yield();
      continue;
    }
    const int64_t now = nowMs();
    if (now - start >= timeoutMs_) {
      abort("rank " + std::to_string(rank_) + " waited " + std::to_string(now - start) + " ms for the others " +
            "(SLIMOPT_DIST_TIMEOUT_MS); a rank did not arrive or called another collective");
      return aborted();
    }
    if (now >= nextPeerCheck) {
      nextPeerCheck = now + 100;
      for (int r = 0; r < world_; ++r) {
        const int32_t pid = S.ranks()[r].pid.load(std::memory_order_relaxed);
        if (r != rank_ && pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) {
          abort("rank " + std::to_string(r) + " (pid " + std::to_string(pid) + ") has exited");
          return aborted();
        }
      }
    }
    futexWait(&S.generation, gen, 20);
  }
}

// ---- the collectives --------------------------------------------------------------------------

// Publishes this rank's call, waits for every rank's, and compares them all with rank 0's: every
// rank sees the same slots, so all refuse a mismatch alike (after one more barrier, so that no
// rank overwrites its slot while another still reads it).
CommStatus ShmComm::begin(Kind kind, int64_t count, DType t, CommOp op, int root) {
  RankSlot& me = seg_->ranks()[rank_];
  me.seq = ++seq_;
  me.kind = kind;
  me.dtype = int32_t(t);
  me.op = int32_t(op);
  me.root = root;
  me.count = count;
  CommStatus s = barrier();
  if (!s.ok()) return s;
  const RankSlot& first = seg_->ranks()[0];
  for (int r = 1; r < world_ && s.ok(); ++r) {
    const RankSlot& o = seg_->ranks()[r];
    const char* code = o.seq != first.seq || o.kind != first.kind || o.op != first.op || o.root != first.root ? "E_ARG"
                       : o.dtype != first.dtype                                                              ? "E_DTYPE"
                       : o.count != first.count                                                              ? "E_SHAPE"
                                                                                                             : nullptr;
    if (code != nullptr)
      s = failed(code, "collective #" + std::to_string(first.seq) + " differs across ranks: rank 0 called " +
                           describe(first) + ", rank " + std::to_string(r) + " (call #" + std::to_string(o.seq) +
                           ") " + describe(o));
  }
  if (!s.ok() || count == 0) {
    CommStatus b = barrier();
    return s.ok() ? b : s;
  }
  return s;
}

CommStatus ShmComm::allReduce(const void* send, void* recv, int64_t count, DType t, CommOp op) {
  return reduceTo(kAllReduce, send, recv, count, t, op, -1);
}
CommStatus ShmComm::reduce(const void* send, void* recv, int64_t count, DType t, CommOp op, int root) {
  return reduceTo(kReduce, send, recv, count, t, op, root);
}

// Per round every rank stages a chunk; the receivers (root, or every rank when root < 0) reduce
// all slots into their own output.
CommStatus ShmComm::reduceTo(Kind kind, const void* send, void* recv, int64_t count, DType t, CommOp op, int root) {
  CommStatus s = begin(kind, count, t, op, root < 0 ? 0 : root);
  const int64_t esz = dtypeSize(t), per = chunkBytes_ / esz;
  std::vector<const void*> slots(world_);
  for (int64_t off = 0; s.ok() && off < count; off += per) {
    const int64_t n = std::min(per, count - off);
    std::memcpy(slot(rank_), static_cast<const uint8_t*>(send) + off * esz, size_t(n * esz));
    s = barrier();
    if (!s.ok()) break;
    if (root < 0 || rank_ == root) {
      for (int r = 0; r < world_; ++r) slots[r] = slot(r);
      reduceSlots(slots.data(), world_, static_cast<uint8_t*>(recv) + off * esz, n, t, op);
    }
    s = barrier();
  }
  return s;
}

// Per round, each rank writes the same range [off, off+n) of every rank's block of its input,
// block q at q·n in its slot; rank q reduces block q of every slot.
CommStatus ShmComm::reduceScatter(const void* send, void* recv, int64_t recvCount, DType t, CommOp op) {
  const int64_t esz = dtypeSize(t), per = chunkBytes_ / (esz * world_);
  CommStatus s = begin(kReduceScatter, recvCount, t, op, 0);
  std::vector<const void*> slots(world_);
  for (int64_t off = 0; s.ok() && off < recvCount; off += per) {
    const int64_t n = std::min(per, recvCount - off);
    for (int q = 0; q < world_; ++q)
      std::memcpy(slot(rank_) + q * n * esz, static_cast<const uint8_t*>(send) + (q * recvCount + off) * esz, size_t(n * esz));
    s = barrier();
    if (!s.ok()) break;
    for (int r = 0; r < world_; ++r) slots[r] = slot(r) + rank_ * n * esz;
    reduceSlots(slots.data(), world_, static_cast<uint8_t*>(recv) + off * esz, n, t, op);
    s = barrier();
  }
  return s;
}

CommStatus ShmComm::allGather(const void* send, void* recv, int64_t sendCount, DType t) {
  CommStatus s = begin(kAllGather, sendCount, t, CommOp::Sum, 0);
  const int64_t esz = dtypeSize(t), per = chunkBytes_ / esz;
  for (int64_t off = 0; s.ok() && off < sendCount; off += per) {
    const int64_t n = std::min(per, sendCount - off);
    std::memcpy(slot(rank_), static_cast<const uint8_t*>(send) + off * esz, size_t(n * esz));
    s = barrier();
    if (!s.ok()) break;
    for (int q = 0; q < world_; ++q)
      std::memcpy(static_cast<uint8_t*>(recv) + (q * sendCount + off) * esz, slot(q), size_t(n * esz));
    s = barrier();
  }
  return s;
}

CommStatus ShmComm::broadcast(const void* send, void* recv, int64_t count, DType t, int root) {
  CommStatus s = begin(kBroadcast, count, t, CommOp::Sum, root);
  const int64_t esz = dtypeSize(t), per = chunkBytes_ / esz;
  for (int64_t off = 0; s.ok() && off < count; off += per) {
    const int64_t n = std::min(per, count - off);
    const uint8_t* src = static_cast<const uint8_t*>(send) + off * esz;
    uint8_t* dst = static_cast<uint8_t*>(recv) + off * esz;
    if (rank_ == root) std::memcpy(slot(root), src, size_t(n * esz));
    s = barrier();
    if (!s.ok()) break;
    if (rank_ != root) std::memcpy(dst, slot(root), size_t(n * esz));
    else if (dst != src) std::memmove(dst, src, size_t(n * esz));
    s = barrier();
  }
  return s;
}

}  // namespace cpu
}  // namespace slimopt
