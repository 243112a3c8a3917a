// cpu::fillRandn and cpu::convert. fillRandn is bit-identical to the CUDA kernel: normal4() is
// the shared exactly-rounded generator, and x = mean + std*z is two rounded f32 ops here because
// this file is compiled with -ffp-contract=off (the device side spells them __fmul_rn/__fadd_rn).
#include <cstring>
#include "cpu_backend.h"

namespace slimopt {
namespace cpu {

namespace {

struct RandnCtx {
  void* out;
  DType dtype;
  int64_t n;
  uint64_t seed;
  float mean, std;
};

template <DType D>
void randnRange(void* c, int64_t b0, int64_t b1) {  // [b0, b1) are blocks of 4 elements
  const RandnCtx& k = *static_cast<const RandnCtx*>(c);
  for (int64_t b = b0; b < b1; ++b) {
    float z[4];
    normal4(k.seed, uint64_t(b), kStreamRandn, z);
    for (int j = 0; j < 4; ++j) {
      int64_t i = b * 4 + j;
      if (i < k.n) {
        float x = k.mean + k.std * z[j];
        storeFromFloat(k.out, D, i, x);
      }
    }
  }
}

struct ConvertCtx {
  const void* src;
  void* dst;
};

template <DType S, DType D>
void convertRange(void* c, int64_t b, int64_t e) {
  const ConvertCtx& k = *static_cast<const ConvertCtx*>(c);
  for (int64_t i = b; i < e; ++i) storeFromFloat(k.dst, D, i, loadAsFloat(k.src, S, i));
}

template <DType S>
void (*convertFn(DType d))(void*, int64_t, int64_t) {
  switch (d) {
    case DType::F32: return convertRange<S, DType::F32>;
    case DType::BF16: return convertRange<S, DType::BF16>;
    default: return convertRange<S, DType::F16>;
  }
}

}  // namespace

void fillRandn(void* out, DType dtype, int64_t n, uint64_t seed, float mean, float std) {
  if (n <= 0) return;
  RandnCtx k{out, dtype, n, seed, mean, std};
  void (*fn)(void*, int64_t, int64_t) = dtype == DType::BF16 ? randnRange<DType::BF16>
                                        : dtype == DType::F16 ? randnRange<DType::F16>
                                                              : randnRange<DType::F32>;
  parallelFor((n + 3) / 4, 2048, fn, &k);
}

void convert(const void* src, DType srcType, void* dst, DType dstType, int64_t n) {
  if (n <= 0) return;
  if (srcType == dstType) {  // same as the CUDA side: a plain copy (NaN payloads kept)
    std::memmove(dst, src, size_t(n) * dtypeSize(srcType));
    return;
  }
  ConvertCtx k{src, dst};
  void (*fn)(void*, int64_t, int64_t) = srcType == DType::BF16 ? convertFn<DType::BF16>(dstType)
                                        : srcType == DType::F16 ? convertFn<DType::F16>(dstType)
                                                                : convertFn<DType::F32>(dstType);
  parallelFor(n, 1 << 16, fn, &k);
}

}  // namespace cpu
}  // namespace slimopt
