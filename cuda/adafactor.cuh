// Adafactor (Shazeer & Stern 2018, as transformers.optimization.Adafactor computes it): the
// descriptors and per-element math shared by the CUDA kernels and the CPU backend.
//
// For a tensor of 2 or more dims, viewed as batch x rows x cols (rows, cols: its last two dims,
// batch: the product of the others, as HF factors over the last two), the second moment is
// factored: R (batch x rows) and C (batch x cols) are running means of g^2 + eps1 over each row
// and each column; v_ij ~ R_i C_j / mean_i R_i. A 1-D tensor keeps the full v. With t the step:
//   beta2t = 1 - t^decayRate
//   lr_t   = (relativeStep ? min(warmupInit ? 1e-6 t : 1e-2, 1/sqrt(t)) : lr)
//            * (scaleParameter ? max(eps2, RMS(W)) : 1)
//   u      = g / sqrt(v)  (factored: g * rsqrt(R_i / mean R) * rsqrt(C_j))
//   u     *= lr_t / max(1, RMS(u) / clipThreshold)
//   beta1: m = beta1 m + (1 - beta1) u; u = m
//   W      = W - weightDecay lr_t W;  W = W - u
#pragma once
#include <cmath>
#include "adamw.cuh"

namespace slimopt {

struct AdafactorTensor {
  void* param;
  const void* grad;
  DType dtype;          // of the parameter and of the gradient
  int32_t factored;     // 1: rowState/colState; 0: fullState (rows = 1, cols = numel, batch = 1)
  int64_t batch, rows, cols;
  float* rowState;      // batch x rows
  float* colState;      // batch x cols
  float* fullState;     // numel (non-factored)
  float* expAvg;        // numel when beta1 is used, else null
  // Update-only mode (GaLoreAdafactor runs Adafactor on the projected gradient R): param is null,
  // the update (after beta1) is written to `update` (may alias grad), and RMS(W) for scaleParameter
  // is *paramNorm / sqrt(paramNumel) (paramNorm null: 0).
  float* update;
  const float* paramNorm;
  int64_t paramNumel;
};

struct AdafactorHyper {
  float lr, eps1, eps2, clipThreshold, decayRate, beta1, weightDecay;
  int32_t relativeStep, warmupInit, scaleParameter, firstMoment;
};

SLIMOPT_HD int64_t adafactorNumel(const AdafactorTensor& T) { return T.batch * T.rows * T.cols; }

// Column sums on the device run over row segments (so that a tall matrix keeps every SM busy),
// each segment's partial kept apart and summed in a fixed order.
SLIMOPT_HD int64_t adafactorColSegments(const AdafactorTensor& T) {
  const int64_t s = (T.rows + 127) / 128;
  return s < 1 ? 1 : (s > 64 ? 64 : s);
}

// f32 scratch a step of T needs on the device: [0..8) scalars, rowNew (batch*rows), colNew
// (batch*cols), rFactor (batch*rows), cFactor (batch*cols), rowMean (batch), pSq partials
// (batch*rows), uSq partials (batch*rows), column partials (segments*batch*cols).
// Non-factored: 8 + 2 * partial count. (The CPU keeps its sums on the heap.)
constexpr int64_t kAdafactorChunk = 4096;  // elements per partial of a non-factored tensor
SLIMOPT_HD int64_t adafactorScratchFloats(const AdafactorTensor& T) {
  if (!T.factored) return 8 + 2 * ((adafactorNumel(T) + kAdafactorChunk - 1) / kAdafactorChunk);
  const int64_t br = T.batch * T.rows, bc = T.batch * T.cols;
  return 8 + 2 * br + 2 * bc + T.batch + 2 * br + adafactorColSegments(T) * bc;
}

SLIMOPT_HD float adafactorBeta2(const AdafactorHyper& h, int32_t t) {
  return float(1.0 - pow(double(t), double(h.decayRate)));
}

// The step size lr_t of step t for a parameter of RMS paramRms.
SLIMOPT_HD float adafactorLr(const AdafactorHyper& h, int32_t t, float paramRms) {
  double rel = h.lr;
  if (h.relativeStep) {
    const double minStep = h.warmupInit ? 1e-6 * double(t) : 1e-2;
    const double inv = 1.0 / sqrt(double(t));
    rel = minStep < inv ? minStep : inv;
  }
  double scale = 1.0;
  if (h.scaleParameter) scale = double(h.eps2) > double(paramRms) ? double(h.eps2) : double(paramRms);
  return float(scale * rel);
}

// The divisor of the update clipping: max(1, RMS(u) / clipThreshold).
SLIMOPT_HD float adafactorClipDenom(double uSq, int64_t numel, float clipThreshold) {
  const float rms = float(sqrt(uSq / double(numel)));
  const float d = rms / clipThreshold;
  return d > 1.0f ? d : 1.0f;
}

// The update of one element from its unscaled value u (g / sqrt(v)): clipped, scaled, and through
// the first moment when beta1 is used.
SLIMOPT_HD float adafactorUpdate(float u, float* m, float denom, float lrT, const AdafactorHyper& h) {
  u = (u / denom) * lrT;
  if (h.firstMoment) {
    const float mi = *m * h.beta1 + (1.0f - h.beta1) * u;
    *m = mi;
    u = mi;
  }
  return u;
}

// Decoupled weight decay as HF applies it: W += W * (-weightDecay * lr_t).
SLIMOPT_HD float adafactorDecay(float w, float lrT, const AdafactorHyper& h) {
  return h.weightDecay != 0.0f ? w + w * (-h.weightDecay * lrT) : w;
}

// The new W from the unscaled update u.
SLIMOPT_HD float adafactorApply(float w, float u, float* m, float denom, float lrT, const AdafactorHyper& h) {
  const float upd = adafactorUpdate(u, m, denom, lrT, h);
  return adafactorDecay(w, lrT, h) - upd;
}

// GaLoreAdafactor's last step: W = decay(W) - scale * back(N).
SLIMOPT_HD float galoreAdafactorApply(float w, float back, float scale, float lrT, const AdafactorHyper& h) {
  return adafactorDecay(w, lrT, h) - back * scale;
}

// The RMS of W an update-only step scales by.
SLIMOPT_HD float adafactorParamRms(const AdafactorTensor& T, double w2) {
  if (T.param) return float(sqrt(w2 / double(adafactorNumel(T))));
  return T.paramNorm ? float(double(*T.paramNorm) / sqrt(double(T.paramNumel))) : 0.0f;
}

}  // namespace slimopt
