// The random bits of stochastic rounding, shared by the CUDA kernels and the CPU backend so that
// both draw the same bits for the same element of the same step.
#pragma once
#include "common.cuh"

namespace slimopt {

// Philox4x32-10 keyed by the group's seed. Element i (index inside its tensor) of step t uses word
// i % 4 of the block counter (lo = i / 4, hi = t << 32 | seedSalt), low 16 bits. randn uses the
// same key with hi = kStreamRandn = 0, and here hi >= 2^32 (t >= 1), so the two never share a
// counter. One Philox call serves 4 consecutive elements: callers aligned on 4 call srBlock once.
SLIMOPT_HD Philox4 srBlock(uint64_t seed, uint32_t seedSalt, int32_t t, int64_t i) {
  return philox4x32(uint64_t(i) >> 2, (uint64_t(uint32_t(t)) << 32) | seedSalt, seed);
}
// (Selects without indexing r.v by a run-time value, which would put r in local memory on the GPU.)
SLIMOPT_HD uint32_t srBits(const Philox4& r, int64_t i) {
  uint32_t w = (i & 2) ? ((i & 1) ? r.v[3] : r.v[2]) : ((i & 1) ? r.v[1] : r.v[0]);
  return w & 0xffffu;
}

}  // namespace slimopt
