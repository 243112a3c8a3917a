// cpu::galore*: the reference of the CUDA GaLore path. Project with the GEMM, Adam on R (in place:
// R becomes N), project back with the update and the decay in the GEMM's epilogue:
// W <- beta W + alpha back(N), so no gradient-sized buffer is ever made.
#include <algorithm>
#include <cmath>
#include <cstring>
#include "cpu_backend.h"

namespace slimopt {
namespace cpu {

namespace {

struct AdamCtx { float* r; float* m; float* v; float b1, b2, eps; };

void adamRange(void* c, int64_t b, int64_t e) {
  const AdamCtx& k = *static_cast<const AdamCtx*>(c);
  for (int64_t i = b; i < e; ++i) {
    float m = k.m[i], v = k.v[i];
    k.r[i] = galoreAdamElement(k.r[i], m, v, k.b1, k.b2, k.eps);
    k.m[i] = m;
    k.v[i] = v;
  }
}

// 8-bit states: blocks [b0, b1) of R become N; each block's m, v re-encoded with its new absmax.
struct Q8Ctx { const GaloreTensor* T; float* r; Q8View q; float b1, b2, eps; };

void adamQ8Blocks(void* c, int64_t b0, int64_t b1) {
  const Q8Ctx& k = *static_cast<const Q8Ctx*>(c);
  const GaloreTensor& T = *k.T;
  const int64_t n = galoreRNumel(T);
  float mBuf[kQ8Block], vBuf[kQ8Block];
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t s = b * kQ8Block, e = std::min(n, s + kQ8Block);
    float mx = 0.0f, vx = 0.0f;
    for (int64_t i = s; i < e; ++i) {
      float& m = mBuf[i - s];
      float& v = vBuf[i - s];
      k.r[i] = galoreQ8Element(T, k.q, i, k.r[i], k.b1, k.b2, k.eps, m, v);
      const float a = std::fabs(m);
      mx = a > mx ? a : mx;  // NaN never wins, as fmaxf on the device
      vx = v > vx ? v : vx;
    }
    const float ia = quantInverse(mx), iv = quantInverse(vx);
    for (int64_t i = s; i < e; ++i) {
      T.codeM[i] = q8EncodeM(mBuf[i - s], ia, k.q);
      T.codeV[i] = q8EncodeV(vBuf[i - s], iv, k.q);
    }
    T.absmaxM[b] = mx;
    T.absmaxV[b] = vx;
  }
}

GemmArgs mk(int64_t M, int64_t N, int64_t K, const void* A, DType at, int64_t lda, bool ta,
            const void* B, DType bt, int64_t ldb, bool tb, void* C, DType ct, int64_t ldc, float alpha, float beta) {
  GemmArgs g;
  g.M = M; g.N = N; g.K = K;
  g.A = A; g.aType = at; g.lda = lda; g.transA = ta;
  g.B = B; g.bType = bt; g.ldb = ldb; g.transB = tb;
  g.C = C; g.cType = ct; g.ldc = ldc;
  g.alpha = alpha; g.beta = beta;
  return g;
}

}  // namespace

bool anyNonFinite(const void* x, DType t, int64_t n) {
  bool bad = false;
  finiteNonZero(x, t, n, &bad);
  return bad;
}

void galoreProject(const GaloreTensor& T, float* sR, float* sT) {
  const int64_t m = T.rows, n = T.cols, r = T.rank;
  const DType F = DType::F32;
  switch (T.side) {
    case GaloreSide::Right:  // R = G P^T (m x r)
      gemm(mk(m, r, n, T.grad, T.gradDtype, n, false, T.projA, F, n, true, sR, F, r, 1.0f, 0.0f));
      break;
    case GaloreSide::Left:   // R = P^T G (r x n)
      gemm(mk(r, n, m, T.projA, F, r, true, T.grad, T.gradDtype, n, false, sR, F, n, 1.0f, 0.0f));
      break;
    case GaloreSide::Full:   // T = A^T G (r x n), R = T B^T (r x r)
      gemm(mk(r, n, m, T.projA, F, r, true, T.grad, T.gradDtype, n, false, sT, F, n, 1.0f, 0.0f));
      gemm(mk(r, r, n, sT, F, n, false, T.projB, F, n, true, sR, F, r, 1.0f, 0.0f));
      break;
  }
}

void galoreBackF32(const GaloreTensor& T, const float* N, float* out, float* sT) {
  const int64_t m = T.rows, n = T.cols, r = T.rank;
  const DType F = DType::F32;
  switch (T.side) {
    case GaloreSide::Right: gemm(mk(m, n, r, N, F, r, false, T.projA, F, n, false, out, F, n, 1.0f, 0.0f)); break;
    case GaloreSide::Left: gemm(mk(m, n, r, T.projA, F, r, false, N, F, n, false, out, F, n, 1.0f, 0.0f)); break;
    case GaloreSide::Full:
      gemm(mk(r, n, r, N, F, r, false, T.projB, F, n, false, sT, F, n, 1.0f, 0.0f));
      gemm(mk(m, n, r, T.projA, F, r, false, sT, F, n, false, out, F, n, 1.0f, 0.0f));
      break;
  }
}

void galoreStep(const GaloreTensor& T, const GaloreHyper& h, const AdamwCounters* counters,
                const int32_t* flag, float* sR, float* sT) {
  if (*flag != 0) return;
  const int64_t m = T.rows, n = T.cols, r = T.rank;
  const DType F = DType::F32;
  if (T.projected != nullptr) {
    if (T.projected != sR) std::memcpy(sR, T.projected, size_t(galoreRNumel(T)) * 4);  // else R is in place
  }
  else galoreProject(T, sR, sT);
  if (T.quantized) {
    Q8Ctx q{&T, sR, q8View(h.q8.blobA, h.q8.blobB, h.q8.fA, h.q8.fB), h.beta1, h.beta2, h.eps};
    parallelFor((galoreRNumel(T) + kQ8Block - 1) / kQ8Block, 256, adamQ8Blocks, &q);
  } else {
    AdamCtx a{sR, T.expAvg, T.expAvgSq, h.beta1, h.beta2, h.eps};
    parallelFor(galoreRNumel(T), 1 << 16, adamRange, &a);
  }
  float alpha, beta;
  galoreEpilogue(h, counters->step + 1, &alpha, &beta);
  switch (T.side) {
    case GaloreSide::Right:  // W = beta W + alpha N P
      gemm(mk(m, n, r, sR, F, r, false, T.projA, F, n, false, T.param, T.paramDtype, n, alpha, beta));
      break;
    case GaloreSide::Left:   // W = beta W + alpha P N
      gemm(mk(m, n, r, T.projA, F, r, false, sR, F, n, false, T.param, T.paramDtype, n, alpha, beta));
      break;
    case GaloreSide::Full:   // T = N B (r x n); W = beta W + alpha A T
      gemm(mk(r, n, r, sR, F, r, false, T.projB, F, n, false, sT, F, n, 1.0f, 0.0f));
      gemm(mk(m, n, r, T.projA, F, r, false, sT, F, n, false, T.param, T.paramDtype, n, alpha, beta));
      break;
  }
}

}  // namespace cpu
}  // namespace slimopt
