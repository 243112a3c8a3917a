// cpu::parallelFor: a small persistent pool (one worker per core, the caller included), so that a
// step over many small tensors does not pay a thread start per call.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>
#include "cpu_backend.h"

namespace slimopt {
namespace cpu {

namespace {

thread_local bool tInsideJob = false;  // nested parallelFor runs serially (no deadlock)

class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) std::thread([this] { loop(); }).detach();
  }
  int threads() const { return nThreads_; }
  void setThreads(int n) { nThreads_ = n; }

  // Runs the job on the caller plus every worker; returns when all pieces are done.
  void run(int64_t n, int64_t piece, void (*fn)(void*, int64_t, int64_t), void* ctx) {
    {
      std::lock_guard<std::mutex> lock(m_);
      fn_ = fn; ctx_ = ctx; n_ = n; piece_ = piece;
      next_.store(0, std::memory_order_relaxed);
      active_ = nThreads_ - 1;
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(m_);
    done_.wait(lock, [this] { return active_ == 0; });
  }

 private:
  void work() {
    tInsideJob = true;
    for (;;) {
      int64_t b = next_.fetch_add(piece_, std::memory_order_relaxed);
      if (b >= n_) break;
      fn_(ctx_, b, std::min(n_, b + piece_));
    }
    tInsideJob = false;
  }
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
      }
      work();
      std::lock_guard<std::mutex> lock(m_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  int nThreads_ = 1;
  std::mutex m_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  int active_ = 0;
  void (*fn_)(void*, int64_t, int64_t) = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0, piece_ = 1;
  std::atomic<int64_t> next_{0};
};

std::mutex gPoolMutex;  // one job at a time; a second caller meanwhile runs serially

Pool* pool() {
  // Leaked on purpose: workers blocked in wait() must not be joined at process exit.
  static Pool* p = [] {
    int n = int(std::max(1u, std::thread::hardware_concurrency()));
    Pool* q = new Pool(n - 1);
    q->setThreads(n);
    return q;
  }();
  return p;
}

}  // namespace

void parallelFor(int64_t n, int64_t grain, void (*fn)(void* ctx, int64_t begin, int64_t end), void* ctx) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (n <= grain || tInsideJob) {
    fn(ctx, 0, n);
    return;
  }
  Pool* p = pool();
  std::unique_lock<std::mutex> lock(gPoolMutex, std::try_to_lock);
  if (p->threads() <= 1 || !lock.owns_lock()) {
    fn(ctx, 0, n);
    return;
  }
  // Pieces of at least `grain`, about 4 per thread so uneven pieces still balance.
  int64_t piece = std::max(grain, (n + 4 * p->threads() - 1) / (4 * p->threads()));
  p->run(n, piece, fn, ctx);
}

}  // namespace cpu
}  // namespace slimopt
