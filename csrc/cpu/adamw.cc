// cpu::adamwStep: the reference for the CUDA kernel (same per-element function adamwElement, same
// skip rule, same stochastic-rounding bits). The f32 loop vectorizes only when the build passes
// -fno-math-errno: with errno semantics g++ guards each sqrtf with a branch, and the per-function
// optimize pragma cannot lift that (errno-ness of builtins is fixed for the whole compilation).
#include <algorithm>
#include <atomic>
#include <vector>
#include "../../cuda/stochastic_round.cuh"
#include "cpu_backend.h"

namespace slimopt {
namespace cpu {

namespace {

constexpr int64_t kPiece = 16384;  // elements per unit of parallel work

struct Piece {
  int32_t tensor;
  int64_t begin, end;
};

struct StepCtx {
  const AdamwTensor* tensors;
  const Piece* pieces;
  AdamwScalars s;
  uint64_t seed;
  int32_t t;
  bool stochastic;
  DType stateDtype;
  std::atomic<bool> nonFinite{false};
};

template <DType D>
inline float ld(const void* p, int64_t i) { return loadAsFloat(p, D, i); }
template <DType D>
inline void st(void* p, int64_t i, float x) { storeFromFloat(p, D, i, x); }

// Phase 1: any NaN/Inf among the gradients of this piece?
void scanPieces(void* c, int64_t p0, int64_t p1) {
  StepCtx& k = *static_cast<StepCtx*>(c);
  for (int64_t p = p0; p < p1 && !k.nonFinite.load(std::memory_order_relaxed); ++p) {
    const Piece& pc = k.pieces[p];
    const AdamwTensor& T = k.tensors[pc.tensor];
    uint32_t acc = 0;
    if (T.gradDtype == DType::F32) {
      const uint32_t* g = static_cast<const uint32_t*>(T.grad);
      // Exponent all ones <=> (bits & 0x7f800000) + 0x00800000 carries into bit 31.
      for (int64_t i = pc.begin; i < pc.end; ++i) acc |= (g[i] & 0x7f800000u) + 0x00800000u;
      acc &= 0x80000000u;
    } else {
      const uint16_t* g = static_cast<const uint16_t*>(T.grad);
      uint16_t mask = T.gradDtype == DType::BF16 ? 0x7f80u : 0x7c00u;
      uint16_t one = T.gradDtype == DType::BF16 ? 0x0080u : 0x0400u;
      uint16_t a16 = 0;
      for (int64_t i = pc.begin; i < pc.end; ++i) a16 |= uint16_t((g[i] & mask) + one);
      acc = a16 & 0x8000u;
    }
    if (acc) k.nonFinite.store(true, std::memory_order_relaxed);
  }
}

// The all-f32 case as a plain loop over float*, which the compiler vectorizes. The convention is
// made a constant of each loop so that adamwElement's branch folds away (a branch in the body
// stops the vectorizer).
template <AdamConvention C>
void updateF32Loop(const AdamwTensor& T, int64_t b, int64_t e, AdamwScalars s) {
  s.convention = C;
  float* __restrict__ w = static_cast<float*>(T.param);
  const float* __restrict__ g = static_cast<const float*>(T.grad);
  float* __restrict__ m = static_cast<float*>(T.expAvg);
  float* __restrict__ v = static_cast<float*>(T.expAvgSq);
  for (int64_t i = b; i < e; ++i) {
    float mi = m[i], vi = v[i];
    w[i] = adamwElement(w[i], g[i], mi, vi, s);
    m[i] = mi;
    v[i] = vi;
  }
}
void updateF32(const AdamwTensor& T, int64_t b, int64_t e, const AdamwScalars& s) {
  if (s.convention == AdamConvention::Torch) updateF32Loop<AdamConvention::Torch>(T, b, e, s);
  else updateF32Loop<AdamConvention::Galore>(T, b, e, s);
}

template <DType PT, DType GT, DType ST>
void updateGeneric(const AdamwTensor& T, int64_t b, int64_t e, const StepCtx& k) {
  const AdamwScalars s = k.s;
  Philox4 r{};
  int64_t rBlock = -1;
  for (int64_t i = b; i < e; ++i) {
    float m = ld<ST>(T.expAvg, i), v = ld<ST>(T.expAvgSq, i);
    float w = adamwElement(ld<PT>(T.param, i), ld<GT>(T.grad, i), m, v, s);
    st<ST>(T.expAvg, i, m);
    st<ST>(T.expAvgSq, i, v);
    if (PT == DType::BF16 && k.stochastic) {
      if ((i >> 2) != rBlock) {
        rBlock = i >> 2;
        r = srBlock(k.seed, T.seedSalt, k.t, i);
      }
      static_cast<uint16_t*>(T.param)[i] = floatToBf16Stochastic(w, srBits(r, i));
    } else {
      st<PT>(T.param, i, w);
    }
  }
}

template <DType PT, DType GT>
void dispatchState(const AdamwTensor& T, int64_t b, int64_t e, const StepCtx& k) {
  if (k.stateDtype == DType::BF16) updateGeneric<PT, GT, DType::BF16>(T, b, e, k);
  else updateGeneric<PT, GT, DType::F32>(T, b, e, k);
}

template <DType PT>
void dispatchGrad(const AdamwTensor& T, int64_t b, int64_t e, const StepCtx& k) {
  switch (T.gradDtype) {
    case DType::BF16: dispatchState<PT, DType::BF16>(T, b, e, k); break;
    case DType::F16: dispatchState<PT, DType::F16>(T, b, e, k); break;
    default: dispatchState<PT, DType::F32>(T, b, e, k); break;
  }
}

void updatePieces(void* c, int64_t p0, int64_t p1) {
  const StepCtx& k = *static_cast<const StepCtx*>(c);
  for (int64_t p = p0; p < p1; ++p) {
    const Piece& pc = k.pieces[p];
    const AdamwTensor& T = k.tensors[pc.tensor];
    if (T.paramDtype == DType::F32 && T.gradDtype == DType::F32 && k.stateDtype == DType::F32) {
      updateF32(T, pc.begin, pc.end, k.s);
      continue;
    }
    switch (T.paramDtype) {
      case DType::BF16: dispatchGrad<DType::BF16>(T, pc.begin, pc.end, k); break;
      case DType::F16: dispatchGrad<DType::F16>(T, pc.begin, pc.end, k); break;
      default: dispatchGrad<DType::F32>(T, pc.begin, pc.end, k); break;
    }
  }
}

}  // namespace

void adamwStep(const AdamwTensor* tensors, int32_t nTensors, const AdamwHyper& hyper,
               AdamwCounters* counters) {
  std::vector<Piece> pieces;
  for (int32_t k = 0; k < nTensors; ++k)
    for (int64_t b = 0; b < tensors[k].numel; b += kPiece)
      pieces.push_back({k, b, std::min(tensors[k].numel, b + kPiece)});
  const int64_t n = int64_t(pieces.size());
  const int64_t grain = 4;  // pieces: about 64K elements before a second thread helps

  StepCtx k;
  k.tensors = tensors;
  k.pieces = pieces.data();
  k.seed = hyper.seed;
  k.t = counters->step + 1;
  k.stochastic = hyper.stochasticRounding != 0;
  k.stateDtype = hyper.stateDtype;
  k.s = adamwScalars(hyper, k.t);

  if (hyper.skipNonFinite) {
    parallelFor(n, grain, scanPieces, &k);
    if (k.nonFinite.load()) {
      counters->skipped += 1;
      return;
    }
  }
  parallelFor(n, grain, updatePieces, &k);
  counters->step += 1;
}

}  // namespace cpu
}  // namespace slimopt
