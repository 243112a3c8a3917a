// Shared by the CUDA kernels and the C++ CPU backend: dtypes, conversions, the counter-based
// generator. Everything here is plain arithmetic so that both backends compute the same bits.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SLIMOPT_HD __host__ __device__ __forceinline__
#else
#define SLIMOPT_HD inline
#endif

namespace slimopt {

enum class DType : int32_t { F32 = 0, BF16 = 1, F16 = 2, U8 = 3, I32 = 4 };

SLIMOPT_HD int dtypeSize(DType d) {
  return d == DType::F32 || d == DType::I32 ? 4 : (d == DType::U8 ? 1 : 2);
}

SLIMOPT_HD uint32_t floatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u; std::memcpy(&u, &f, 4); return u;
#endif
}
SLIMOPT_HD float bitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; std::memcpy(&f, &u, 4); return f;
#endif
}

// bf16: the top half of an f32. Round to nearest even; NaN stays NaN (quiet).
SLIMOPT_HD float bf16ToFloat(uint16_t h) { return bitsFloat(uint32_t(h) << 16); }
SLIMOPT_HD uint16_t floatToBf16(float f) {
  uint32_t u = floatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
// Stochastic rounding to bf16: add 16 random bits below the kept mantissa, then truncate.
// Unbiased in expectation; used for bf16 parameters so tiny updates are not always lost.
SLIMOPT_HD uint16_t floatToBf16Stochastic(float f, uint32_t random16) {
  uint32_t u = floatBits(f);
  if ((u & 0x7f800000u) == 0x7f800000u) return floatToBf16(f);  // inf/nan unchanged
  uint32_t r = u + (random16 & 0xffffu);
  if ((r & 0x7f800000u) == 0x7f800000u) return floatToBf16(f);  // never round up into inf
  return uint16_t(r >> 16);
}

// IEEE binary16 <-> f32, round to nearest even, subnormals and inf/nan handled.
SLIMOPT_HD float f16ToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bitsFloat(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bitsFloat(sign);
    // subnormal: value = man * 2^-24
    float v = float(man) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bitsFloat(sign | ((exp + 112u) << 23) | (man << 13));
}
SLIMOPT_HD uint16_t floatToF16(float f) {
  uint32_t u = floatBits(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);        // nan
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);       // rounds to >= 65520: inf
  if (a < 0x38800000u) {                                        // below 2^-14: subnormal or 0
    if (a < 0x33000000u) return sign;                           // below half the smallest subnormal
    uint32_t exp = a >> 23;
    uint32_t man = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - exp;                                // 14..24 bits dropped below 2^-24
    uint32_t kept = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (kept & 1u))) kept++;
    return uint16_t(sign | kept);
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
  return uint16_t(sign | ((r - 0x38000000u) >> 13));
}

SLIMOPT_HD float loadAsFloat(const void* p, DType d, int64_t i) {
  switch (d) {
    case DType::BF16: return bf16ToFloat(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16ToFloat(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
SLIMOPT_HD void storeFromFloat(void* p, DType d, int64_t i, float x) {
  switch (d) {
    case DType::BF16: static_cast<uint16_t*>(p)[i] = floatToBf16(x); break;
    case DType::F16: static_cast<uint16_t*>(p)[i] = floatToF16(x); break;
    default: static_cast<float*>(p)[i] = x;
  }
}

// ---- Philox4x32-10: counter-based, so any element can be generated independently on either
// backend. Key = 64-bit seed, counter = (element block index, stream id).
struct Philox4 { uint32_t v[4]; };

SLIMOPT_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32); lo = uint32_t(p);
}

SLIMOPT_HD Philox4 philox4x32(uint64_t counterLo, uint64_t counterHi, uint64_t key) {
  uint32_t c0 = uint32_t(counterLo), c1 = uint32_t(counterLo >> 32);
  uint32_t c2 = uint32_t(counterHi), c3 = uint32_t(counterHi >> 32);
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c0, hi0, lo0);
    mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
  }
  Philox4 out; out.v[0] = c0; out.v[1] = c1; out.v[2] = c2; out.v[3] = c3;
  return out;
}

// Exactly rounded double ops on the device (no FMA contraction), plain ops on the host (the CPU
// backend is compiled with -ffp-contract=off): the normal draws are then the same bits on both.
#if defined(__CUDA_ARCH__)
#define SLIMOPT_DMUL(a, b) __dmul_rn((a), (b))
#define SLIMOPT_DADD(a, b) __dadd_rn((a), (b))
#define SLIMOPT_DDIV(a, b) __ddiv_rn((a), (b))
#define SLIMOPT_DSQRT(a) __dsqrt_rn(a)
#else
#define SLIMOPT_DMUL(a, b) ((a) * (b))
#define SLIMOPT_DADD(a, b) ((a) + (b))
#define SLIMOPT_DDIV(a, b) ((a) / (b))
#define SLIMOPT_DSQRT(a) __builtin_sqrt(a)
#endif

// ln(x) for x in (0, 1], from + * / only. x = 2^e * m with m in [sqrt(1/2), sqrt(2));
// ln m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172: the series to s^21 is exact to < 1e-16.
SLIMOPT_HD double portableLog(double x) {
  int e = 0;
  while (x < 0.70710678118654752) { x = SLIMOPT_DMUL(x, 2.0); --e; }
  double s = (x - 1.0) / (x + 1.0);
  double s2 = SLIMOPT_DMUL(s, s);
  double p = 1.0 / 21;
  p = SLIMOPT_DADD(SLIMOPT_DMUL(p, s2), 1.0 / 19);
  p = SLIMOPT_DADD(SLIMOPT_DMUL(p, s2), 1.0 / 17);
  p = SLIMOPT_DADD(SLIMOPT_DMUL(p, s2), 1.0 / 15);
  p = SLIMOPT_DADD(SLIMOPT_DMUL(p, s2), 1.0 / 13);
  p = SLIMOPT_DADD(SLIMOPT_DMUL(p, s2), 1.0 / 11);
  p = SLIMOPT_DADD(SLIMOPT_DMUL(p, s2), 1.0 / 9);
  p = SLIMOPT_DADD(SLIMOPT_DMUL(p, s2), 1.0 / 7);
  p = SLIMOPT_DADD(SLIMOPT_DMUL(p, s2), 1.0 / 5);
  p = SLIMOPT_DADD(SLIMOPT_DMUL(p, s2), 1.0 / 3);
  p = SLIMOPT_DADD(SLIMOPT_DMUL(p, s2), 1.0);
  double lnm = SLIMOPT_DMUL(2.0, SLIMOPT_DMUL(s, p));
  return SLIMOPT_DADD(lnm, SLIMOPT_DMUL(double(e), 0.69314718055994531));
}

// sin and cos of 2*pi*u for u in [0, 1): reduce to an octant exactly in u, then Taylor series on
// |x| <= pi/4 (to x^17: error < 1e-17).
SLIMOPT_HD void portableSinCos2Pi(double u, double& s, double& c) {
  double q = SLIMOPT_DMUL(u, 4.0);      // exact
  int k = int(q + 0.5);                 // nearest quadrant 0..4
  double r = SLIMOPT_DADD(q, -double(k));  // exact, in [-0.5, 0.5]
  double x = SLIMOPT_DMUL(r, 1.5707963267948966);
  double x2 = SLIMOPT_DMUL(x, x);
  double ps = 1.0 / 355687428096000.0;                 // 1/17!
  ps = SLIMOPT_DADD(SLIMOPT_DMUL(ps, -x2), 1.0 / 1307674368000.0);
  ps = SLIMOPT_DADD(SLIMOPT_DMUL(ps, -x2), 1.0 / 6227020800.0);
  ps = SLIMOPT_DADD(SLIMOPT_DMUL(ps, -x2), 1.0 / 39916800.0);
  ps = SLIMOPT_DADD(SLIMOPT_DMUL(ps, -x2), 1.0 / 362880.0);
  ps = SLIMOPT_DADD(SLIMOPT_DMUL(ps, -x2), 1.0 / 5040.0);
  ps = SLIMOPT_DADD(SLIMOPT_DMUL(ps, -x2), 1.0 / 120.0);
  ps = SLIMOPT_DADD(SLIMOPT_DMUL(ps, -x2), 1.0 / 6.0);
  ps = SLIMOPT_DADD(SLIMOPT_DMUL(ps, -x2), 1.0);
  double sr = SLIMOPT_DMUL(x, ps);
  double pc = 1.0 / 6402373705728000.0;                // 1/18!
  pc = SLIMOPT_DADD(SLIMOPT_DMUL(pc, -x2), 1.0 / 20922789888000.0);
  pc = SLIMOPT_DADD(SLIMOPT_DMUL(pc, -x2), 1.0 / 87178291200.0);
  pc = SLIMOPT_DADD(SLIMOPT_DMUL(pc, -x2), 1.0 / 479001600.0);
  pc = SLIMOPT_DADD(SLIMOPT_DMUL(pc, -x2), 1.0 / 3628800.0);
  pc = SLIMOPT_DADD(SLIMOPT_DMUL(pc, -x2), 1.0 / 40320.0);
  pc = SLIMOPT_DADD(SLIMOPT_DMUL(pc, -x2), 1.0 / 720.0);
  pc = SLIMOPT_DADD(SLIMOPT_DMUL(pc, -x2), 1.0 / 24.0);
  pc = SLIMOPT_DADD(SLIMOPT_DMUL(pc, -x2), 0.5);
  double cr = SLIMOPT_DADD(1.0, -SLIMOPT_DMUL(x2, pc));
  switch (k & 3) {
    case 0: s = sr; c = cr; break;
    case 1: s = cr; c = -sr; break;
    case 2: s = -sr; c = -cr; break;
    default: s = -cr; c = sr; break;
  }
}

// The i-th standard normal of the stream keyed by seed: Box-Muller on one Philox block, which
// yields 4 words -> 2 uniform pairs -> 4 normals. Element i uses block i/4, output i%4.
SLIMOPT_HD void normal4(uint64_t seed, uint64_t block, uint64_t streamId, float out[4]) {
  Philox4 r = philox4x32(block, streamId, seed);
  for (int h = 0; h < 2; ++h) {
    // u1 in (0, 1] so the log is finite; u2 in [0, 1).
    double u1 = (double(r.v[2 * h] >> 8) + 1.0) * (1.0 / 16777216.0);
    double u2 = double(r.v[2 * h + 1] >> 8) * (1.0 / 16777216.0);
    double rad = -2.0 * portableLog(u1);
#if defined(__CUDA_ARCH__)
    rad = __dsqrt_rn(rad);
#else
    rad = __builtin_sqrt(rad);
#endif
    double sn, cs;
    portableSinCos2Pi(u2, sn, cs);
    out[2 * h] = float(SLIMOPT_DMUL(rad, cs));
    out[2 * h + 1] = float(SLIMOPT_DMUL(rad, sn));
  }
}

// Stream ids separate independent uses of one seed.
enum : uint64_t { kStreamRandn = 0, kStreamStochasticRound = 1 };

}  // namespace slimopt
