// CPU backend of blockwise quantization and quantized AdamW; the finder builder.
#include "quant.h"
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include "../../cuda/stochastic_round.cuh"
#include "cpu_backend.h"

namespace slimopt {
namespace cpu {

// ---- the map and its finder -------------------------------------------------------------------

std::vector<uint8_t> QuantMapHost::blob() const {
  std::vector<uint8_t> out(mapBlobBytes(finder));
  std::memcpy(out.data(), values.data(), values.size() * 4);
  std::memcpy(out.data() + values.size() * 4, table.data(), table.size() * 4);
  return out;
}

uint32_t nearestCode(const std::vector<float>& v, float x) {
  const int n = int(v.size());
  const int hi = int(std::lower_bound(v.begin(), v.end(), x) - v.begin());  // first v >= x
  if (hi == 0) return 0;
  if (hi == n) return uint32_t(n - 1);
  const int lo = hi - 1;
  // Exact: a difference of two f32 of nearby magnitude fits a double, and only nearby ones tie.
  const double dl = double(x) - double(v[lo]), dh = double(v[hi]) - double(x);
  if (dl < dh) return uint32_t(lo);
  if (dh < dl) return uint32_t(hi);
  return std::fabs(v[hi]) < std::fabs(v[lo]) ? uint32_t(hi) : uint32_t(lo);  // tie: toward 0
}

namespace {

// The code of the key `key` on one side (side 1: x < 0, the key is |x| bits ^ flipMask).
uint32_t codeOfKey(const std::vector<float>& v, const QuantFinder& f, int side, uint32_t key) {
  const float m = bitsFloat(side ? key ^ f.flipMask : key);
  return nearestCode(v, side ? -m : m);
}

}  // namespace

std::string buildQuantMap(const float* values, int n, QuantMapHost* out) {
  if (n != 16 && n != 256) return "a map has 16 or 256 entries";
  std::vector<float> v(values, values + n);
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(v[i]) || std::fabs(v[i]) > 1.0f) return "map entries must be finite and within [-1, 1]";
    if (i > 0 && !(v[i] > v[i - 1])) return "map entries must be strictly increasing";
  }
  // Where the code changes: the midpoints of neighbours, on either side of 0.
  double minMag = INFINITY, maxMag = 0;
  for (int i = 0; i + 1 < n; ++i) {
    const double mid = std::fabs((double(v[i]) + double(v[i + 1])) * 0.5);
    if (mid == 0) continue;  // between -a and +a: the sign picks the side, no bucket needed
    minMag = std::min(minMag, mid);
    maxMag = std::max(maxMag, mid);
  }
  if (!(minMag <= maxMag)) return "map has no distinct neighbours";
  const int baseExp = int(std::floor(std::log2(minMag)));
  const int topExp = int(std::floor(std::log2(maxMag))) + 1;  // <= 0: midpoints are below 1
  if (baseExp < -126) return "map entries are too close to 0 for the code finder";
  QuantFinder f{};
  f.baseBits = uint32_t(baseExp + 127) << 23;
  f.topBits = uint32_t(topExp + 127) << 23;
  f.nCodes = uint32_t(n);
  // The smallest aligned block of 2^k exponents holding those of base and top; the negative side
  // is mirrored into its sibling block.
  const uint32_t eLo = f.baseBits >> 23, eHi = f.topBits >> 23;
  int k = 0;
  while ((eLo >> k) != (eHi >> k)) ++k;
  f.flipMask = (1u << (24 + k)) - 1;
  const uint32_t posLo = f.baseBits >> kFinderShift, posHi = f.topBits >> kFinderShift;
  const uint32_t negLo = (f.topBits ^ f.flipMask) >> kFinderShift, negHi = (f.baseBits ^ f.flipMask) >> kFinderShift;
  f.firstBucket = std::min(posLo, negLo);
  const uint32_t last = std::max(posHi, negHi);
  f.entries = (last - f.firstBucket + 2) & ~1u;
  f.posEntry = posLo - f.firstBucket;
  if (f.entries > 16384) return "map spans too many binades for the code finder";
  std::vector<uint32_t> table(f.entries, 0);
  for (int side = 0; side < 2; ++side) {
    // The side's keys: [base, top] for x >= 0; for x < 0 the same |x| mirrored.
    const uint32_t kMin = side ? f.topBits ^ f.flipMask : f.baseBits;
    const uint32_t kMax = side ? f.baseBits ^ f.flipMask : f.topBits;
    for (uint32_t b = kMin >> kFinderShift; b <= kMax >> kFinderShift; ++b) {
      const uint32_t lo = std::max(kMin, b << kFinderShift);
      const uint32_t hi = std::min(kMax, (b << kFinderShift) | ((1u << kFinderShift) - 1));
      const uint32_t below = codeOfKey(v, f, side, lo), above = codeOfKey(v, f, side, hi);
      uint32_t thr = 0xffffu;
      if (below != above) {
        if (above != below + 1) return "map too dense for the code finder (a jump of two codes)";
        // The first key in (lo, hi] whose code differs from lo's (the code is monotone in the key).
        uint32_t l = lo, h = hi;
        while (h - l > 1) {
          const uint32_t mid = l + (h - l) / 2;
          if (codeOfKey(v, f, side, mid) == below) l = mid;
          else h = mid;
        }
        if (codeOfKey(v, f, side, h) != above) return "map too dense for the code finder (two changes in one bucket)";
        thr = l & 0xffffu;
      }
      table[b - f.firstBucket] = (below << 24) + 0xffffffu - thr - (b << kFinderShift);
    }
  }
  // Below base and above top the code is constant: no midpoint lies there.
  out->finder = f;
  out->values = std::move(v);
  out->table = std::move(table);
  return "";
}

// ---- quantize / dequantize ----------------------------------------------------------------------

namespace {

struct QuantCtx {
  const void* x;
  DType dtype;
  int64_t n;
  uint8_t* codes;
  float* absmax;
  const void* cin;
  const float* ain;
  void* out;
  int64_t block;
  const QuantMapHost* map;
};

void quantizeBlocks(void* c, int64_t b0, int64_t b1) {
  const QuantCtx& k = *static_cast<const QuantCtx*>(c);
  const QuantFinder f = k.map->finder;
  const uint32_t* table = k.map->table.data();
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t s = b * k.block, e = std::min(k.n, s + k.block);
    float mx = 0.0f;
    for (int64_t i = s; i < e; ++i) {
      const float a = std::fabs(loadAsFloat(k.x, k.dtype, i));
      mx = a > mx ? a : mx;  // NaN never wins, as with fmaxf on the device
    }
    const float inv = quantInverse(mx);
    for (int64_t i = s; i < e; ++i)
      k.codes[i] = uint8_t(quantFind(SLIMOPT_FMUL(loadAsFloat(k.x, k.dtype, i), inv), f, table));
    k.absmax[b] = mx;
  }
}

void dequantizeBlocks(void* c, int64_t b0, int64_t b1) {
  const QuantCtx& k = *static_cast<const QuantCtx*>(c);
  const float* values = k.map->values.data();
  const uint32_t mask = k.map->finder.nCodes - 1;
  const uint8_t* codes = static_cast<const uint8_t*>(k.cin);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t s = b * k.block, e = std::min(k.n, s + k.block);
    const float am = k.ain[b];
    for (int64_t i = s; i < e; ++i) storeFromFloat(k.out, k.dtype, i, SLIMOPT_FMUL(values[codes[i] & mask], am));
  }
}

}  // namespace

void quantizeBlockwise(const void* x, DType dtype, int64_t n, uint8_t* codes, float* absmax,
                       int64_t blockSize, const QuantMapHost& map) {
  QuantCtx k{};
  k.x = x; k.dtype = dtype; k.n = n; k.codes = codes; k.absmax = absmax; k.block = blockSize; k.map = &map;
  const int64_t blocks = (n + blockSize - 1) / blockSize;
  parallelFor(blocks, std::max<int64_t>(1, 65536 / blockSize), quantizeBlocks, &k);
}

void dequantizeBlockwise(const uint8_t* codes, const float* absmax, int64_t n, void* out, DType dtype,
                         int64_t blockSize, const QuantMapHost& map) {
  QuantCtx k{};
  k.cin = codes; k.ain = absmax; k.n = n; k.out = out; k.dtype = dtype; k.block = blockSize; k.map = &map;
  const int64_t blocks = (n + blockSize - 1) / blockSize;
  parallelFor(blocks, std::max<int64_t>(1, 65536 / blockSize), dequantizeBlocks, &k);
}

// ---- quantized AdamW --------------------------------------------------------------------------

namespace {

constexpr int64_t kPiece = 16384;  // elements per unit of parallel work (whole blocks)

struct Piece {
  int32_t tensor;
  int64_t begin, end;
};

struct StepCtx {
  const QAdamTensor* tensors;
  const Piece* pieces;
  AdamwScalars s;
  uint64_t seed;
  int32_t t;
  int32_t bits;
  bool stochastic;
  const QuantMapHost* mapA;
  const QuantMapHost* mapB;
  std::atomic<bool> nonFinite{false};
};

// Phase 1: any NaN/Inf among the gradients of these pieces? (Exponent all ones <=> the masked
// exponent plus one carries into the top bit.)
void scanPieces(void* c, int64_t p0, int64_t p1) {
  StepCtx& k = *static_cast<StepCtx*>(c);
  for (int64_t p = p0; p < p1 && !k.nonFinite.load(std::memory_order_relaxed); ++p) {
    const Piece& pc = k.pieces[p];
    const QAdamTensor& T = k.tensors[pc.tensor];
    uint32_t acc = 0;
    if (T.paramDtype == DType::F32) {
      const uint32_t* g = static_cast<const uint32_t*>(T.grad);
      for (int64_t i = pc.begin; i < pc.end; ++i) acc |= (g[i] & 0x7f800000u) + 0x00800000u;
      acc &= 0x80000000u;
    } else {
      const uint16_t* g = static_cast<const uint16_t*>(T.grad);
      const uint16_t mask = T.paramDtype == DType::BF16 ? 0x7f80u : 0x7c00u;
      const uint16_t one = T.paramDtype == DType::BF16 ? 0x0080u : 0x0400u;
      uint16_t a16 = 0;
      for (int64_t i = pc.begin; i < pc.end; ++i) a16 |= uint16_t((g[i] & mask) + one);
      acc = a16 & 0x8000u;
    }
    if (acc) k.nonFinite.store(true, std::memory_order_relaxed);
  }
}

template <DType PT>
inline void storeParam(const StepCtx& k, const QAdamTensor& T, int64_t i, float w) {
  if (PT == DType::BF16 && k.stochastic) {
    static_cast<uint16_t*>(T.param)[i] = floatToBf16Stochastic(w, srBits(srBlock(k.seed, T.seedSalt, k.t, i), i));
  } else {
    storeFromFloat(T.param, PT, i, w);
  }
}

inline uint32_t readCode(const void* codes, int bits, int64_t i) {
  const uint8_t* c = static_cast<const uint8_t*>(codes);
  return bits == 8 ? c[i] : (c[i >> 1] >> ((i & 1) * 4)) & 15u;
}

template <DType PT>
void updateQuantized(const StepCtx& k, const QAdamTensor& T, int64_t begin, int64_t end) {
  const int qb = quantBlockSize(k.bits);
  const float* valA = k.mapA->values.data();
  const float* valB = k.mapB->values.data();
  const QuantFinder fA = k.mapA->finder, fB = k.mapB->finder;
  const uint32_t* tabA = k.mapA->table.data();
  const uint32_t* tabB = k.mapB->table.data();
  uint8_t* ca = static_cast<uint8_t*>(T.stateA);
  uint8_t* cb = static_cast<uint8_t*>(T.stateB);
  float mBuf[256], vBuf[256];
  for (int64_t s = begin; s < end; s += qb) {
    const int64_t e = std::min(end, s + qb), blk = s / qb;
    const float am = T.absmaxA[blk], av = T.absmaxB[blk];
    float mx = 0.0f, vx = 0.0f;
    for (int64_t i = s; i < e; ++i) {
      float m = SLIMOPT_FMUL(valA[readCode(ca, k.bits, i)], am);
      float v = SLIMOPT_FMUL(valB[readCode(cb, k.bits, i)], av);
      const float w = qadamElement(loadAsFloat(T.param, PT, i), loadAsFloat(T.grad, PT, i), m, v, k.s);
      storeParam<PT>(k, T, i, w);
      mBuf[i - s] = m;
      vBuf[i - s] = v;
      const float a = std::fabs(m);
      mx = a > mx ? a : mx;
      vx = v > vx ? v : vx;
    }
    const float ia = quantInverse(mx), ib = quantInverse(vx);
    if (k.bits == 8) {
      for (int64_t i = s; i < e; ++i) {
        ca[i] = uint8_t(quantFind<true>(SLIMOPT_FMUL(mBuf[i - s], ia), fA, tabA));
        cb[i] = uint8_t(quantFind<false>(SLIMOPT_FMUL(vBuf[i - s], ib), fB, tabB));
      }
    } else {
      for (int64_t i = s; i < e; i += 2) {  // blocks start even: element i is a low nibble
        uint32_t a0 = quantFind<true>(SLIMOPT_FMUL(mBuf[i - s], ia), fA, tabA);
        uint32_t b0 = quantFind<false>(SLIMOPT_FMUL(vBuf[i - s], ib), fB, tabB);
        uint32_t a1 = 0, b1 = 0;
        if (i + 1 < e) {
          a1 = quantFind<true>(SLIMOPT_FMUL(mBuf[i + 1 - s], ia), fA, tabA);
          b1 = quantFind<false>(SLIMOPT_FMUL(vBuf[i + 1 - s], ib), fB, tabB);
        }
        ca[i >> 1] = uint8_t(a0 | (a1 << 4));
        cb[i >> 1] = uint8_t(b0 | (b1 << 4));
      }
    }
    T.absmaxA[blk] = mx;
    T.absmaxB[blk] = vx;
  }
}

template <DType PT>
void updatePlain(const StepCtx& k, const QAdamTensor& T, int64_t begin, int64_t end) {
  float* ma = static_cast<float*>(T.stateA);
  float* vb = static_cast<float*>(T.stateB);
  for (int64_t i = begin; i < end; ++i) {
    float m = ma[i], v = vb[i];
    const float w = qadamElement(loadAsFloat(T.param, PT, i), loadAsFloat(T.grad, PT, i), m, v, k.s);
    storeParam<PT>(k, T, i, w);
    ma[i] = m;
    vb[i] = v;
  }
}

template <DType PT>
void updateTyped(const StepCtx& k, const QAdamTensor& T, int64_t b, int64_t e) {
  if (T.quantized) updateQuantized<PT>(k, T, b, e);
  else updatePlain<PT>(k, T, b, e);
}

void updatePieces(void* c, int64_t p0, int64_t p1) {
  const StepCtx& k = *static_cast<const StepCtx*>(c);
  for (int64_t p = p0; p < p1; ++p) {
    const Piece& pc = k.pieces[p];
    const QAdamTensor& T = k.tensors[pc.tensor];
    switch (T.paramDtype) {
      case DType::BF16: updateTyped<DType::BF16>(k, T, pc.begin, pc.end); break;
      case DType::F16: updateTyped<DType::F16>(k, T, pc.begin, pc.end); break;
      default: updateTyped<DType::F32>(k, T, pc.begin, pc.end); break;
    }
  }
}

}  // namespace

void qadamStep(const QAdamTensor* tensors, int32_t nTensors, const QAdamHyper& hyper,
               const QuantMapHost& mapA, const QuantMapHost& mapB, AdamwCounters* counters) {
  std::vector<Piece> pieces;
  for (int32_t k = 0; k < nTensors; ++k)
    for (int64_t b = 0; b < tensors[k].numel; b += kPiece)
      pieces.push_back({k, b, std::min(tensors[k].numel, b + kPiece)});
  const int64_t n = int64_t(pieces.size());

  StepCtx k;
  k.tensors = tensors;
  k.pieces = pieces.data();
  k.seed = hyper.seed;
  k.t = counters->step + 1;
  k.bits = hyper.bits;
  k.stochastic = hyper.stochasticRounding != 0;
  k.mapA = &mapA;
  k.mapB = &mapB;
  k.s = qadamScalars(hyper, k.t);

  if (hyper.skipNonFinite) {
    parallelFor(n, 4, scanPieces, &k);
    if (k.nonFinite.load()) {
      counters->skipped += 1;
      return;
    }
  }
  parallelFor(n, 1, updatePieces, &k);
  counters->step += 1;
}

}  // namespace cpu
}  // namespace slimopt
