// cpu:: training-loop helpers: the reference of cuda/train.cu. Sums of squares are taken per
// tensor in double (the CUDA kernel's f32 partials agree to f32 rounding) and added to partial 0.
#include "train.h"
#include "cpu_backend.h"

namespace slimopt {
namespace cpu {

namespace {

struct ScaleCtx { const GradRef* g; float f; };

void scaleRange(void* c, int64_t b, int64_t e) {
  const ScaleCtx& k = *static_cast<const ScaleCtx*>(c);
  for (int64_t i = b; i < e; ++i) storeFromFloat(k.g->ptr, k.g->dtype, i, loadAsFloat(k.g->ptr, k.g->dtype, i) * k.f);
}

struct AddCtx { void* dst; DType dt; const void* src; DType st; float alpha; };

void addRange(void* c, int64_t b, int64_t e) {
  const AddCtx& k = *static_cast<const AddCtx*>(c);
  for (int64_t i = b; i < e; ++i)
    storeFromFloat(k.dst, k.dt, i, loadAsFloat(k.dst, k.dt, i) + k.alpha * loadAsFloat(k.src, k.st, i));
}

}  // namespace

void gradAdd(void* dst, DType dt, const void* src, DType st, int64_t n, float alpha) {
  AddCtx c{dst, dt, src, st, alpha};
  parallelFor(n, 1 << 16, addRange, &c);
}

void gradSumSquares(const GradRef* list, int32_t n, float* ws, bool reset) {
  float* partials = ws + kGradWsHeader;
  if (reset) for (int i = 0; i < kGradPartials; ++i) partials[i] = 0.0f;
  double s = 0.0;
  for (int32_t k = 0; k < n; ++k) {
    const GradRef& g = list[k];
    for (int64_t i = 0; i < g.numel; ++i) {
      const double x = loadAsFloat(g.ptr, g.dtype, i);
      s += x * x;
    }
  }
  partials[0] = float(double(partials[0]) + s);
}

void gradNormFinish(float* ws, float maxNorm) {
  double s = 0.0;
  for (int i = 0; i < kGradPartials; ++i) s += ws[kGradWsHeader + i];
  const float norm = float(__builtin_sqrt(s));
  ws[0] = norm;
  ws[1] = clipFactor(norm, maxNorm);
}

void gradScale(const GradRef* list, int32_t n, const float* factor, float value) {
  const float f = factor ? *factor : value;
  if (f == 1.0f) return;
  for (int32_t k = 0; k < n; ++k) {
    ScaleCtx c{&list[k], f};
    parallelFor(list[k].numel, 1 << 16, scaleRange, &c);
  }
}

}  // namespace cpu
}  // namespace slimopt
