// cpu::adafactorStep: three passes over the gradient (sums of g^2 per row and column and of W^2;
// the sum of the update's squares for the clipping; the update), sums in double. Non-factored
// tensors need two (the new v is recomputed in the last pass, so that nothing is written before
// the step is known to go ahead).
#include <vector>
#include "adafactor.h"
#include "cpu_backend.h"

namespace slimopt {
namespace cpu {

namespace {

struct Ctx {
  const AdafactorTensor* T;
  const AdafactorHyper* h;
  float beta2t;
  const float* rF;   // batch*rows
  const float* cF;   // batch*cols
  double* rowSum;    // batch*rows: sum over the row of g^2 + eps1
  double* pSq;       // batch*rows
  double* uSq;       // batch*rows
  float denom, lrT;
};

inline float ld(const void* p, DType d, int64_t i) { return loadAsFloat(p, d, i); }

// Pass 1 over rows: row sums of g^2 + eps1 and of W^2.
void rowsPass1(void* c, int64_t b, int64_t e) {
  Ctx& k = *static_cast<Ctx*>(c);
  const AdafactorTensor& T = *k.T;
  for (int64_t r = b; r < e; ++r) {
    double s = 0.0, w2 = 0.0;
    for (int64_t j = 0; j < T.cols; ++j) {
      const int64_t i = r * T.cols + j;
      const float g = ld(T.grad, T.dtype, i), w = T.param ? ld(T.param, T.dtype, i) : 0.0f;
      s += double(g * g + k.h->eps1);
      w2 += double(w) * double(w);
    }
    k.rowSum[r] = s;
    k.pSq[r] = w2;
  }
}

// Pass 2 over rows: sums of the squared unscaled update.
void rowsPass2(void* c, int64_t b, int64_t e) {
  Ctx& k = *static_cast<Ctx*>(c);
  const AdafactorTensor& T = *k.T;
  for (int64_t r = b; r < e; ++r) {
    const int64_t bi = r / T.rows;
    double s = 0.0;
    for (int64_t j = 0; j < T.cols; ++j) {
      const float u = (k.rF[r] * k.cF[bi * T.cols + j]) * ld(T.grad, T.dtype, r * T.cols + j);
      s += double(u) * double(u);
    }
    k.uSq[r] = s;
  }
}

void rowsPass3(void* c, int64_t b, int64_t e) {
  Ctx& k = *static_cast<Ctx*>(c);
  const AdafactorTensor& T = *k.T;
  for (int64_t r = b; r < e; ++r) {
    const int64_t bi = r / T.rows;
    for (int64_t j = 0; j < T.cols; ++j) {
      const int64_t i = r * T.cols + j;
      const float u = (k.rF[r] * k.cF[bi * T.cols + j]) * ld(T.grad, T.dtype, i);
      float* m = T.expAvg ? T.expAvg + i : nullptr;
      if (!T.param) T.update[i] = adafactorUpdate(u, m, k.denom, k.lrT, *k.h);
      else storeFromFloat(T.param, T.dtype, i, adafactorApply(ld(T.param, T.dtype, i), u, m, k.denom, k.lrT, *k.h));
    }
  }
}

// Non-factored, per chunk: W^2 and u^2 sums (u = g / sqrt(v_new)).
void fullPass1(void* c, int64_t b, int64_t e) {
  Ctx& k = *static_cast<Ctx*>(c);
  const AdafactorTensor& T = *k.T;
  const int64_t n = adafactorNumel(T);
  for (int64_t ch = b; ch < e; ++ch) {
    double w2 = 0.0, u2 = 0.0;
    for (int64_t i = ch * kAdafactorChunk; i < n && i < (ch + 1) * kAdafactorChunk; ++i) {
      const float g = ld(T.grad, T.dtype, i), w = ld(T.param, T.dtype, i);
      const float v = k.beta2t * T.fullState[i] + (1.0f - k.beta2t) * (g * g + k.h->eps1);
      const float u = g / sqrtf(v);
      w2 += double(w) * double(w);
      u2 += double(u) * double(u);
    }
    k.pSq[ch] = w2;
    k.uSq[ch] = u2;
  }
}

void fullPass2(void* c, int64_t b, int64_t e) {
  Ctx& k = *static_cast<Ctx*>(c);
  const AdafactorTensor& T = *k.T;
  for (int64_t i = b; i < e; ++i) {
    const float g = ld(T.grad, T.dtype, i);
    const float v = k.beta2t * T.fullState[i] + (1.0f - k.beta2t) * (g * g + k.h->eps1);
    T.fullState[i] = v;
    float* m = T.expAvg ? T.expAvg + i : nullptr;
    storeFromFloat(T.param, T.dtype, i, adafactorApply(ld(T.param, T.dtype, i), g / sqrtf(v), m, k.denom, k.lrT, *k.h));
  }
}

}  // namespace

void adafactorStep(const AdafactorTensor& T, const AdafactorHyper& h, const AdamwCounters* counters,
                   const int32_t* flag, float* scratch) {
  // The CPU keeps its sums in double on the heap; scratch (when given) receives lr_t and the clip
  // divisor, as on the device.
  if (*flag != 0) return;
  const int32_t t = counters->step + 1;
  const int64_t n = adafactorNumel(T);
  Ctx k{};
  k.T = &T;
  k.h = &h;
  k.beta2t = adafactorBeta2(h, t);
  if (!T.factored) {
    const int64_t chunks = (n + kAdafactorChunk - 1) / kAdafactorChunk;
    std::vector<double> pSq(chunks), uSq(chunks);
    k.pSq = pSq.data();
    k.uSq = uSq.data();
    parallelFor(chunks, 4, fullPass1, &k);
    double w2 = 0.0, u2 = 0.0;
    for (int64_t c = 0; c < chunks; ++c) { w2 += pSq[c]; u2 += uSq[c]; }
    k.lrT = adafactorLr(h, t, float(__builtin_sqrt(w2 / double(n))));
    k.denom = adafactorClipDenom(u2, n, h.clipThreshold);
    if (scratch) { scratch[0] = k.lrT; scratch[1] = k.denom; }
    parallelFor(n, 1 << 15, fullPass2, &k);
    return;
  }
  const int64_t BR = T.batch * T.rows, BC = T.batch * T.cols;
  std::vector<double> rowSum(BR), pSq(BR), uSq(BR), colSum(BC, 0.0);
  std::vector<float> rowNew(BR), colNew(BC), rF(BR), cF(BC);
  k.rowSum = rowSum.data();
  k.pSq = pSq.data();
  k.uSq = uSq.data();
  parallelFor(BR, 16, rowsPass1, &k);
  for (int64_t r = 0; r < BR; ++r) {
    const int64_t bi = r / T.rows;
    for (int64_t j = 0; j < T.cols; ++j) {
      const float g = ld(T.grad, T.dtype, r * T.cols + j);
      colSum[bi * T.cols + j] += double(g * g + h.eps1);
    }
  }
  const float b2 = k.beta2t;
  for (int64_t r = 0; r < BR; ++r) rowNew[r] = b2 * T.rowState[r] + (1.0f - b2) * float(rowSum[r] / double(T.cols));
  for (int64_t c = 0; c < BC; ++c) colNew[c] = b2 * T.colState[c] + (1.0f - b2) * float(colSum[c] / double(T.rows));
  for (int64_t bi = 0; bi < T.batch; ++bi) {
    double s = 0.0;
    for (int64_t i = 0; i < T.rows; ++i) s += rowNew[bi * T.rows + i];
    const float mean = float(s / double(T.rows));
    for (int64_t i = 0; i < T.rows; ++i) rF[bi * T.rows + i] = 1.0f / sqrtf(rowNew[bi * T.rows + i] / mean);
  }
  for (int64_t c = 0; c < BC; ++c) cF[c] = 1.0f / sqrtf(colNew[c]);
  k.rF = rF.data();
  k.cF = cF.data();
  parallelFor(BR, 16, rowsPass2, &k);
  double w2 = 0.0, u2 = 0.0;
  for (int64_t r = 0; r < BR; ++r) { w2 += pSq[r]; u2 += uSq[r]; }
  k.lrT = adafactorLr(h, t, adafactorParamRms(T, w2));
  k.denom = adafactorClipDenom(u2, n, h.clipThreshold);
  if (scratch) { scratch[0] = k.lrT; scratch[1] = k.denom; }
  parallelFor(BR, 16, rowsPass3, &k);
  for (int64_t r = 0; r < BR; ++r) T.rowState[r] = rowNew[r];
  for (int64_t c = 0; c < BC; ++c) T.colState[c] = colNew[c];
}

void galoreAdafactorStep(const GaloreTensor& G, const AdafactorTensor& R, const AdafactorHyper& h, float scale,
                         const AdamwCounters* counters, const int32_t* flag, float* sR, float* sT, float* scratch) {
  if (*flag != 0) return;
  galoreProject(G, sR, sT);
  adafactorStep(R, h, counters, flag, scratch);  // N into R.update (= sR); lr_t into scratch[0]
  std::vector<float> back(size_t(G.rows * G.cols));
  galoreBackF32(G, R.update, back.data(), sT);
  const float lrT = scratch[0];
  for (int64_t i = 0; i < G.rows * G.cols; ++i)
    storeFromFloat(G.param, G.paramDtype, i, galoreAdafactorApply(ld(G.param, G.paramDtype, i), back[i], scale, lrT, h));
}

}  // namespace cpu
}  // namespace slimopt
