// APOLLO: the random projection, the descriptors and the per-tensor scalar math shared by the CUDA
// kernels and the CPU backend (both compute the same function; the projection the same bits).
//
// Layout (row-major, W viewed as rows x cols, r = rank), DESIGN §4 (std side choice):
//   rows >= cols ("right"): P is r x cols, R = G P^T (rows x r), channel i = row i of G and of R
//   rows <  cols ("left"):  P is rows x r, R = P^T G (r x cols), channel j = column j of G and R
// P's element e (row-major index in P) is normal4(seed, e / 4, apolloStream(refreshIndex))[e % 4]
// times the f32 constant 1/sqrt(r): one rounded f32 product, so both backends give the same bits.
// refreshIndex = completed steps / updateProjGap (steps counted before the increment), so P is
// regenerated at steps 0, T, 2T, ... and a skipped step does not move the schedule.
//
// Channel norms of G are summed in `slabs` partial sums per channel (a fixed partition, the same on
// both backends), added in slab order where they are used.
#pragma once
#include <cmath>
#include "galore.cuh"

namespace slimopt {

enum : uint64_t { kStreamApolloProjection = 2 };

// Philox counter high word of the projection of refresh `refreshIndex`: the stream id in the low
// 32 bits (distinct from every other stream), the refresh index above it.
SLIMOPT_HD uint64_t apolloStream(uint32_t refreshIndex) {
  return (uint64_t(refreshIndex) << 32) | uint64_t(kStreamApolloProjection);
}

// The f32 constant every normal of P is multiplied by.
SLIMOPT_HD float apolloProjScale(int64_t rank) {
#if defined(__CUDA_ARCH__)
  return float(1.0 / sqrt(double(rank)));
#else
  return float(1.0 / __builtin_sqrt(double(rank)));
#endif
}

SLIMOPT_HD bool apolloLeft(int64_t rows, int64_t cols) { return rows < cols; }
SLIMOPT_HD int64_t apolloChannels(int64_t rows, int64_t cols) { return apolloLeft(rows, cols) ? cols : rows; }
SLIMOPT_HD int64_t apolloRNumel(int64_t rows, int64_t cols, int64_t r) { return apolloLeft(rows, cols) ? r * cols : rows * r; }
SLIMOPT_HD int64_t apolloPNumel(int64_t rows, int64_t cols, int64_t r) { return apolloLeft(rows, cols) ? rows * r : r * cols; }
// Row slabs of the column norms (left side); a row's norm (right side) is one sum.
SLIMOPT_HD int64_t apolloNormSlabs(int64_t rows, int64_t cols) {
  if (!apolloLeft(rows, cols)) return 1;
  return rows < 32 ? rows : 32;
}
// Floats of the per-tensor norm scratch (filled by the scan, read by the step).
SLIMOPT_HD int64_t apolloNormFloats(int64_t rows, int64_t cols) {
  return apolloNormSlabs(rows, cols) * apolloChannels(rows, cols);
}
// Floats of the per-step channel scratch: sum R^2, sum N^2, coefficient per channel, then the
// decay factor.
SLIMOPT_HD int64_t apolloChanFloats(int64_t rows, int64_t cols) { return 3 * apolloChannels(rows, cols) + 1; }

// One parameter. Pointers are device pointers for CUDA, host for the CPU.
struct ApolloTensor {
  void* param; DType paramDtype;
  const void* grad; DType gradDtype;
  float* expAvg;      // m, shaped like R
  float* expAvgSq;    // v, shaped like R
  float* prevNorm;    // the limiter's last norm (< 0: none yet)
  const float* gradNorms;  // apolloNormFloats: partial sums of squares of G per channel
  int64_t rows, cols, rank;
  uint64_t seed;
};

struct ApolloHyper {
  float lr, beta1, beta2, eps, weightDecay;
  double scale;          // sqrt(scale) multiplies the update
  double growthRate;     // gamma of the limiter
  int32_t updateProjGap;
  int32_t channel;       // 1 channel scaling, 0 tensor scaling
  int32_t scaleFront;    // sqrt(scale) before the limiter
  int32_t limiter;       // norm-growth limiter on
  GemmMode mode;
};

// Inputs of the per-tensor decision, reduced over the channels (in double).
struct ApolloSums {
  double r2, n2, g2;   // tensor scaling: sum R^2, sum N^2, sum G^2
  double scaledG2;     // channel scaling: sum_j s_j^2 |G_j|^2
};

// s_j of channel scaling from the channel's sums of squares, in f32 (reference: |N_j| / (|R_j| + 1e-8)).
SLIMOPT_HD float apolloChannelScale(float r2, float n2) {
  return sqrtf(n2) / (sqrtf(r2) + 1e-8f);
}

// The step's decision from the reduced sums: the tensor scale s (tensor scaling; 1 for channel),
// the base coefficient c such that the update of channel j is W += c * s_j * G_j (before the
// decay), and the new limiter norm. Follows apollo_torch: |G~| with sqrt(scale) folded in when
// scaleFront; no limiting at the first step (prev < 0); limiter = max(|G~| / (prev + 1e-8), gamma)
// / gamma; prev <- |G~| / limiter.
struct ApolloDecision { double s, coef; float prevNorm; };

SLIMOPT_HD ApolloDecision apolloDecide(const ApolloHyper& h, const ApolloSums& sums, float prev, int32_t t) {
  ApolloDecision d;
#if defined(__CUDA_ARCH__)
#define SLIMOPT_SQRT_D(x) sqrt(x)
#else
#define SLIMOPT_SQRT_D(x) __builtin_sqrt(x)
#endif
  double norm;
  if (h.channel) {
    d.s = 1.0;
    norm = SLIMOPT_SQRT_D(sums.scaledG2);
  } else {
    d.s = double(float(SLIMOPT_SQRT_D(sums.n2)) / (float(SLIMOPT_SQRT_D(sums.r2)) + 1e-8f));
    norm = d.s * SLIMOPT_SQRT_D(sums.g2);
  }
  const double rootScale = SLIMOPT_SQRT_D(h.scale);
  if (h.scaleFront) norm *= rootScale;
  double f = 1.0;
  d.prevNorm = prev;
  if (h.limiter) {
    if (prev < 0.0f) {
      d.prevNorm = float(norm);
    } else {
      double ratio = norm / (double(prev) + 1e-8);
      double lim = (ratio > h.growthRate ? ratio : h.growthRate) / h.growthRate;
      f = 1.0 / lim;
      d.prevNorm = float(norm / lim);
    }
  }
#undef SLIMOPT_SQRT_D
  AdamwHyper a{};
  a.lr = h.lr; a.beta1 = h.beta1; a.beta2 = h.beta2; a.eps = h.eps; a.weightDecay = h.weightDecay;
  a.convention = AdamConvention::Galore;
  AdamwScalars sc = adamwScalars(a, t);
  d.coef = -double(sc.stepSize) * rootScale * f;
  return d;
}

SLIMOPT_HD float apolloDecay(const ApolloHyper& h) {
  return float(1.0 - double(h.lr) * double(h.weightDecay));
}

}  // namespace slimopt
