// Blockwise quantization: the code finder, the quantized-state layout and the per-element Adam
// math of AdamW8bit/AdamW4bit, shared by the CUDA kernels and the CPU backend so that both
// compute the same codes.
//
// Codes. A map is a sorted table of 16 or 256 f32 values in [-1, 1] (lib/quant.ts builds the
// bitsandbytes dynamic maps). A value x (already divided by its block's absmax) is stored as the
// index of the nearest map entry; at an exact tie, the entry of smaller magnitude (and, between
// two of equal magnitude, the lower index). That is the definition both backends follow, checked
// against a brute-force search in the tests.
//
// Finder. Instead of searching the map, the code is read off the float's bits. |x| is clamped to
// [base, top] (both powers of two; NaN clamps to top) and turned into a key: its bits for x >= 0;
// for x < 0 its bits XOR flipMask, which mirrors the negative side into the exponent block next to
// the positive one (flipMask = 2^(24+k) - 1, where the exponents of [base, top] share one aligned
// block of 2^k). Within each side the code is monotone non-decreasing in the key (for x < 0 the key
// falls as |x| grows, and so does the code). key >> 16 picks a bucket (128 per binade), and the
// host builds the table so that each bucket holds at most one point where the code changes, by
// exactly one. With q = key & 0xffff and thr = the last q of the bucket still at the lower code
// `below` (0xffff if none changes), the bucket's entry is
//   e = (below << 24) + 0xffffff - thr - (bucket << 16)   (mod 2^32),
// so that e + key = (below << 24) + 0xffffff - thr + q: the sum carries into byte 3 exactly when
// q > thr, and byte 3 of e + key is the code. One shared-memory load and one add per value, no
// compare, no sign branch; packers take byte 3. The builder derives every entry from the
// brute-force definition, so the result is the nearest code by construction.
#pragma once
#include <cmath>
#include "adamw.cuh"
#include "common.cuh"

namespace slimopt {

constexpr int kFinderShift = 16;  // 23 - 7 mantissa bits per bucket

struct QuantFinder {
  uint32_t baseBits;     // |x| bits of the first bucket (a binade's start); smaller |x| clamp here
  uint32_t topBits;      // a power of two past the last change of code; larger |x| (and NaN) clamp here
  uint32_t flipMask;     // key of x < 0 = clamped |x| bits ^ flipMask
  uint32_t firstBucket;  // key >> 16 of the table's entry 0 (the negative side's, where it has one)
  uint32_t entries;      // table entries, even (padding and the gap between the sides unused)
  uint32_t posEntry;     // entry of |x| = base, x >= 0: [posEntry, entries) serves x >= 0 alone
  uint32_t nCodes;       // 16 or 256
};

// A map as the kernels read it: nCodes values, then the table's entries (u32), in one allocation.
// mapBlobBytes() is its size, a multiple of 8.
SLIMOPT_HD size_t mapBlobBytes(const QuantFinder& f) {
  return size_t(f.nCodes) * 4 + size_t(f.entries) * 4;
}

// The key of x (see above). kSigned = false skips the sign: for values known to be >= 0 (Adam's
// v), only the entries from posEntry on are read.
template <bool kSigned>
SLIMOPT_HD uint32_t quantKey(float x, const QuantFinder& f) {
#if defined(__CUDA_ARCH__)
  // The clamp in two FMNMX (|x| is an operand modifier): on non-negative floats the float order is
  // the order of the bits, and fminf(NaN, top) = top as the unsigned compare gives.
  uint32_t c = __float_as_uint(fmaxf(fminf(fabsf(x), __uint_as_float(f.topBits)), __uint_as_float(f.baseBits)));
  if (kSigned) c ^= uint32_t(int32_t(__float_as_uint(x)) >> 31) & f.flipMask;
#else
  const uint32_t u = floatBits(x);
  uint32_t c = u & 0x7fffffffu;
  c = c < f.baseBits ? f.baseBits : c;
  c = c > f.topBits ? f.topBits : c;
  if (kSigned && (u >> 31)) c ^= f.flipMask;
#endif
  return c;
}

// Byte 3 of the result is the code of `key` in its bucket's entry e (the other bytes are not
// zero: packers take byte 3).
SLIMOPT_HD uint32_t quantPick(uint32_t key, uint32_t e) { return e + key; }

// `table` indexed by key >> 16 (the table's storage moved back by firstBucket entries).
template <bool kSigned = true>
SLIMOPT_HD uint32_t quantFind(float x, const QuantFinder& f, const uint32_t* table) {
  const uint32_t key = quantKey<kSigned>(x, f);
  return quantPick(key, table[(key >> kFinderShift) - f.firstBucket]) >> 24;
}

// Round-to-nearest ops that the CUDA compiler may not fuse (an FMA rounds once, the CPU twice), so
// that codes, absmax and moments are the same bits on both backends. The CPU build uses
// -ffp-contract=off.
#if defined(__CUDA_ARCH__)
#define SLIMOPT_FMUL(a, b) __fmul_rn((a), (b))
#define SLIMOPT_FADD(a, b) __fadd_rn((a), (b))
#define SLIMOPT_FRCP(a) __frcp_rn(a)
#else
#define SLIMOPT_FMUL(a, b) ((a) * (b))
#define SLIMOPT_FADD(a, b) ((a) + (b))
#define SLIMOPT_FRCP(a) (1.0f / (a))
#endif

// 1/absmax, or 0 for an all-zero block (its codes are then the code of 0).
SLIMOPT_HD float quantInverse(float absmax) { return absmax > 0.0f ? SLIMOPT_FRCP(absmax) : 0.0f; }

// ---- quantized Adam ----------------------------------------------------------------------------

constexpr int kQuantTile = 256;  // elements per unit of work (one 8-bit block, two 4-bit blocks)

SLIMOPT_HD int quantBlockSize(int bits) { return bits == 8 ? 256 : 128; }

// One tensor of a quantized-Adam group. Quantized tensors hold codes (u8 for 8 bits, two codes
// per byte for 4 bits, element 2j in the low nibble) and one f32 absmax per block and state;
// tensors under minSize8bit hold f32 m and v (`quantized` = 0) and run the same math unquantized.
struct alignas(16) QAdamTensor {  // 80 bytes, 16-aligned: the kernels load it in five 16-byte reads
  void* param;
  const void* grad;      // same dtype as param
  void* stateA;          // m: codes, or f32
  void* stateB;          // v: codes, or f32
  float* absmaxA;        // per block (quantized only)
  float* absmaxB;
  int64_t numel;
  int64_t tileBegin;     // index of this tensor's first tile in the group
  DType paramDtype;
  int32_t quantized;
  int32_t vectorOk;      // param and grad 16-byte aligned: full tiles use 16-byte accesses
  uint32_t seedSalt;     // stochastic-rounding stream of this tensor (its index in the group)
};

struct QAdamHyper {
  float lr, beta1, beta2, eps, weightDecay;
  int32_t bits;                // 8 or 4
  int32_t stochasticRounding;  // bf16 params only
  int32_t skipNonFinite;
  uint64_t seed;
};

// beta^t by squaring: exactly rounded double products on both backends, unlike pow().
SLIMOPT_HD double powInt(double b, int32_t t) {
  double r = 1.0;
  while (t > 0) {
    if (t & 1) r = SLIMOPT_DMUL(r, b);
    b = SLIMOPT_DMUL(b, b);
    t >>= 1;
  }
  return r;
}

// The scalars of step t (torch AdamW convention), the same bits on both backends.
SLIMOPT_HD AdamwScalars qadamScalars(const QAdamHyper& h, int32_t t) {
  const double bc1 = SLIMOPT_DADD(1.0, -powInt(double(h.beta1), t));
  const double bc2 = SLIMOPT_DADD(1.0, -powInt(double(h.beta2), t));
  AdamwScalars s;
  s.lr = h.lr; s.beta1 = h.beta1; s.beta2 = h.beta2; s.eps = h.eps;
  s.decayFactor = float(SLIMOPT_DADD(1.0, -SLIMOPT_DMUL(double(h.lr), double(h.weightDecay))));
  s.convention = AdamConvention::Torch;
  s.stepSize = float(SLIMOPT_DDIV(double(h.lr), bc1));
  s.invSqrtBc2 = float(SLIMOPT_DDIV(1.0, SLIMOPT_DSQRT(bc2)));
  return s;
}

// Adam's moments of one element, every op rounded on its own: the same bits on both backends, so
// the codes (a function of m and v only) are too.
SLIMOPT_HD void adamMomentsRn(float g, float& m, float& v, float beta1, float beta2) {
  m = SLIMOPT_FADD(SLIMOPT_FMUL(beta1, m), SLIMOPT_FMUL(1.0f - beta1, g));
  v = SLIMOPT_FADD(SLIMOPT_FMUL(beta2, v), SLIMOPT_FMUL(SLIMOPT_FMUL(1.0f - beta2, g), g));
}
SLIMOPT_HD void qadamMoments(float g, float& m, float& v, const AdamwScalars& s) {
  adamMomentsRn(g, m, v, s.beta1, s.beta2);
}

// The parameter update from the new moments (torch AdamW convention). On the device sqrt and the
// division are the hardware approximations (a few ulp; the exact ones cost ~18 instructions per
// element, a fifth of the step's arithmetic); W alone depends on them, never the states.
// kNormalDenom: the caller knows that eps >= 2^-126 (FLT_MIN) and eps >= k * 2^-37 (k =
// invSqrtBc2; qadamNormalDenom). The first makes every denominator sqrt(v)*k + eps normal (>= eps,
// or NaN/inf): the approximate division's rescaling of subnormal divisors is then dead, and
// m * rcp(denom) is its result bit for bit, in 2 instructions instead of 6. The second lets the
// sqrt flush a subnormal v to 0 (1 instruction instead of 4): sqrt(v) < 2^-63 there, so sqrt(v)*k
// is below half an ulp of eps and the denominator rounds to eps either way, the same bits.
SLIMOPT_HD bool qadamNormalDenom(const AdamwScalars& s) {
  return s.eps >= 0x1p-126f && s.eps >= s.invSqrtBc2 * 0x1p-37f;
}

template <bool kNormalDenom = false>
SLIMOPT_HD float qadamParam(float w, float m, float v, const AdamwScalars& s) {
#if defined(__CUDA_ARCH__)
  float sq;
  if (kNormalDenom) asm("sqrt.approx.ftz.f32 %0, %1;" : "=f"(sq) : "f"(v));
  else asm("sqrt.approx.f32 %0, %1;" : "=f"(sq) : "f"(v));
  const float denom = fmaf(sq, s.invSqrtBc2, s.eps);
  float q;
  if (kNormalDenom) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(denom));
    q = __fmul_rn(m, r);
  } else {
    q = __fdividef(m, denom);
  }
  return fmaf(-s.stepSize, q, w * s.decayFactor);
#else
  w = w * s.decayFactor;
  const float denom = std::sqrt(v) * s.invSqrtBc2 + s.eps;
  return w - s.stepSize * (m / denom);
#endif
}

template <bool kNormalDenom = false>
SLIMOPT_HD float qadamElement(float w, float g, float& m, float& v, const AdamwScalars& s) {
  qadamMoments(g, m, v, s);
  return qadamParam<kNormalDenom>(w, m, v, s);
}

// ---- 8-bit Adam states (Grass, GaLore: stateBits 8) --------------------------------------------

constexpr int64_t kQ8Block = 256;  // elements per block of 8-bit states (AdamW8bit's), flattened order

// The maps of 8-bit states as the kernels read them (QuantMap blobs: values, then the finder's
// table): signed for m (A), unsigned for v (B). Host blobs for the CPU, device blobs for CUDA.
struct Q8Maps {
  const uint8_t* blobA;
  const uint8_t* blobB;
  QuantFinder fA, fB;
};

// A map pair as the 8-bit helpers read it: values and finder tables (views of the blobs, or of
// their copies staged in shared memory).
struct Q8View {
  const float* valA;
  const float* valB;
  const uint32_t* tabA;
  const uint32_t* tabB;
  QuantFinder fA, fB;
};
SLIMOPT_HD const float* q8Values(const uint8_t* blob) { return reinterpret_cast<const float*>(blob); }
SLIMOPT_HD const uint32_t* q8Table(const uint8_t* blob, const QuantFinder& f) {
  return reinterpret_cast<const uint32_t*>(blob + size_t(f.nCodes) * 4);
}
SLIMOPT_HD Q8View q8View(const uint8_t* blobA, const uint8_t* blobB, const QuantFinder& fA, const QuantFinder& fB) {
  return {q8Values(blobA), q8Values(blobB), q8Table(blobA, fA), q8Table(blobB, fB), fA, fB};
}

// m, v of an element from its codes and its block's absmax (as dequantizeBlockwise).
SLIMOPT_HD void q8Decode(uint8_t codeM, uint8_t codeV, float absmaxM, float absmaxV, const Q8View& q, float& m,
                         float& v) {
  m = SLIMOPT_FMUL(q.valA[codeM], absmaxM);
  v = SLIMOPT_FMUL(q.valB[codeV], absmaxV);
}

// Nearest codes of m (signed map) and v (unsigned map) scaled by a block's 1/absmax.
SLIMOPT_HD uint8_t q8EncodeM(float m, float inv, const Q8View& q) {
  return uint8_t(quantFind<true>(SLIMOPT_FMUL(m, inv), q.fA, q.tabA));
}
SLIMOPT_HD uint8_t q8EncodeV(float v, float inv, const Q8View& q) {
  return uint8_t(quantFind<false>(SLIMOPT_FMUL(v, inv), q.fB, q.tabB));
}

}  // namespace slimopt
