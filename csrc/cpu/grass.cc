// cpu::grassStep and friends: the reference for cuda/grass.cu. The selection (norms, draws, CDF,
// rho) follows the orders fixed in cuda/grass.cuh with exactly rounded double operations (this
// file is compiled with -ffp-contract=off), so both backends select the same lines; the Adam math
// is the shared grassAdam. Order of a step: scan what the step reads (a NaN/Inf skips the whole
// group: only the skip counter moves), reselect on refresh steps, per-slot step sizes, update.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>
#include "cpu_backend.h"
#include "quant.h"

namespace slimopt {
namespace cpu {

namespace {

template <typename T>
T* at(void* ws, size_t off) { return static_cast<T*>(static_cast<void*>(static_cast<uint8_t*>(ws) + off)); }

template <DType D>
inline float ld(const void* p, int64_t i) { return loadAsFloat(p, D, i); }
template <DType D>
inline void st(void* p, int64_t i, float x) { storeFromFloat(p, D, i, x); }

bool rangeNonFinite(const void* p, DType d, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i)
    if (!isFiniteFloat(loadAsFloat(p, d, i))) return true;
  return false;
}

// The run [j0, j1) of slots holding line idx[j0] when j0 owns it (as ownedRun in grass.cu).
bool ownedRun(const int32_t* idx, int64_t r, int64_t lines, int64_t j0, int32_t* line, int64_t* j1) {
  const int32_t x = idx[j0];
  if (x < 0 || int64_t(x) >= lines) return false;
  if (j0 > 0 && idx[j0 - 1] == x) return false;
  int64_t e = j0 + 1;
  while (e < r && idx[e] == x) ++e;
  *line = x;
  *j1 = e;
  return true;
}

// ---- scan ---------------------------------------------------------------------------------------

struct ScanCtx {
  const GrassTensor* T;
  bool refreshing;
  std::atomic<bool> bad{false};
};

void scanTensors(void* c, int64_t k0, int64_t k1) {
  ScanCtx& x = *static_cast<ScanCtx*>(c);
  for (int64_t k = k0; k < k1 && !x.bad.load(std::memory_order_relaxed); ++k) {
    const GrassTensor& T = x.T[k];
    const DType d = T.paramDtype;
    bool bad = false;
    if (T.mode == GrassMode::Dense || x.refreshing) {
      bad = rangeNonFinite(T.grad, d, 0, grassNumel(T));
    } else if (T.compact != nullptr) {
      bad = rangeNonFinite(T.compact, d, 0, grassCompactNumel(T));
    } else if (T.mode == GrassMode::Rows) {
      for (int64_t j = 0; j < T.rank && !bad; ++j) {
        const int32_t line = T.indices[j];
        if (line >= 0 && int64_t(line) < T.rows)
          bad = rangeNonFinite(T.grad, d, int64_t(line) * T.cols, int64_t(line) * T.cols + T.cols);
      }
    } else {
      for (int64_t k2 = 0; k2 < T.rows && !bad; ++k2)
        for (int64_t j = 0; j < T.rank && !bad; ++j) {
          const int32_t c2 = T.indices[j];
          if (c2 >= 0 && int64_t(c2) < T.cols) bad = !isFiniteFloat(loadAsFloat(T.grad, d, k2 * T.cols + c2));
        }
    }
    if (bad) x.bad.store(true, std::memory_order_relaxed);
  }
}

// ---- norms ----------------------------------------------------------------------------------------

struct NormCtx {
  const GrassTensor* T;
  double* norms;
  double* part;  // Cols: one segment's partial per column
  double* total;
  int64_t k0, k1;  // Cols: the segment's rows
};

template <DType D>
void rowNorms(void* c, int64_t r0, int64_t r1) {
  const NormCtx& x = *static_cast<const NormCtx*>(c);
  const int64_t n = x.T->cols;
  double lanes[kGrassNormLanes];
  for (int64_t row = r0; row < r1; ++row) {
    std::fill(lanes, lanes + kGrassNormLanes, 0.0);
    const int64_t base = row * n;
    for (int64_t i = 0; i < n; ++i) {
      const double v = double(ld<D>(x.T->grad, base + i));
      double& a = lanes[(i >> 2) & (kGrassNormLanes - 1)];
      a = a + v * v;
    }
    for (int off = kGrassNormLanes / 2; off > 0; off >>= 1)
      for (int t = 0; t < off; ++t) lanes[t] = lanes[t] + lanes[t + off];
    x.norms[row] = __builtin_sqrt(lanes[0]);
  }
}

template <DType D>
void colPartials(void* c, int64_t c0, int64_t c1) {
  const NormCtx& x = *static_cast<const NormCtx*>(c);
  const int64_t n = x.T->cols;
  for (int64_t col = c0; col < c1; ++col) x.part[col] = 0.0;
  for (int64_t k = x.k0; k < x.k1; ++k)
    for (int64_t col = c0; col < c1; ++col) {
      const double v = double(ld<D>(x.T->grad, k * n + col));
      x.part[col] = x.part[col] + v * v;
    }
  for (int64_t col = c0; col < c1; ++col) x.total[col] = x.total[col] + x.part[col];
}

template <DType D>
void norms(const GrassTensor& T, void* ws, const GrassWorkspace& L) {
  NormCtx x{&T, at<double>(ws, L.norms), at<double>(ws, L.partials), at<double>(ws, L.norms), 0, 0};
  if (T.mode == GrassMode::Rows) {
    parallelFor(T.rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, T.cols)), rowNorms<D>, &x);
    return;
  }
  // Cols: totals accumulate segment by segment in segment order, as normsColsFinishKernel.
  std::fill(x.total, x.total + T.cols, 0.0);
  for (int64_t s = 0; s * kGrassColSegment < T.rows; ++s) {
    x.k0 = s * kGrassColSegment;
    x.k1 = std::min(T.rows, x.k0 + kGrassColSegment);
    parallelFor(T.cols, 1024, colPartials<D>, &x);
  }
  for (int64_t col = 0; col < T.cols; ++col) x.norms[col] = __builtin_sqrt(x.total[col]);
}

// ---- selection -------------------------------------------------------------------------------------

// Inclusive prefix sums in the 1024-part order of prefixKernel.
void prefixSums(const double* v, int64_t L, double* prefix) {
  const int64_t chunk = grassCeilDiv(L, kGrassScanParts);
  std::vector<double> part(kGrassScanParts, 0.0);
  for (int t = 0; t < kGrassScanParts; ++t) {
    const int64_t b = std::min(L, t * chunk), e = std::min(L, b + chunk);
    double acc = 0.0;
    for (int64_t i = b; i < e; ++i) acc = acc + v[i];
    part[t] = acc;
  }
  double off = 0.0;
  for (int t = 0; t < kGrassScanParts; ++t) {
    const double p = part[t];
    part[t] = off;
    off = off + p;
  }
  for (int t = 0; t < kGrassScanParts; ++t) {
    const int64_t b = std::min(L, t * chunk), e = std::min(L, b + chunk);
    double run = part[t];
    for (int64_t i = b; i < e; ++i) {
      run = run + v[i];
      prefix[i] = run;
    }
  }
}

// A strict weak order even on NaN norms (only the selection-only helper can see them).
inline double normKey(double x) { return x == x ? x : -1.0; }

void select(const GrassTensor& T, const GrassHyper& h, void* ws, const GrassWorkspace& L) {
  const int64_t lines = grassLines(T), r = T.rank;
  double* nrm = at<double>(ws, L.norms);
  double* prefix = at<double>(ws, L.prefix);
  int32_t* vals = at<int32_t>(ws, L.valsA);
  int32_t* counts = at<int32_t>(ws, L.counts);
  if (h.select != GrassSelect::Uniform) {
    switch (T.paramDtype) {
      case DType::BF16: norms<DType::BF16>(T, ws, L); break;
      case DType::F16: norms<DType::F16>(T, ws, L); break;
      default: norms<DType::F32>(T, ws, L); break;
    }
  }
  std::fill(counts, counts + lines, 0);
  if (h.select == GrassSelect::Multinomial) {
    prefixSums(nrm, lines, prefix);
    for (int64_t j = 0; j < r; ++j) counts[grassPick(prefix, nrm, lines, grassDrawU(T.seed, h.refreshIndex, j))] += 1;
  } else {
    for (int64_t i = 0; i < lines; ++i) vals[i] = int32_t(i);
    if (h.select == GrassSelect::TopK) {
      // Descending norm, ties by lower index: the order of a stable descending radix sort.
      std::partial_sort(vals, vals + r, vals + lines, [nrm](int32_t a, int32_t b) {
        const double x = normKey(nrm[a]), y = normKey(nrm[b]);
        return x > y || (x == y && a < b);
      });
    } else {
      uint64_t* keys = at<uint64_t>(ws, L.keysA);
      for (int64_t i = 0; i < lines; ++i) keys[i] = grassUniformKey(T.seed, h.refreshIndex, i);
      std::partial_sort(vals, vals + r, vals + lines, [keys](int32_t a, int32_t b) {
        return keys[a] < keys[b] || (keys[a] == keys[b] && a < b);
      });
    }
    for (int64_t j = 0; j < r; ++j) counts[vals[j]] = 1;
  }
  int32_t* newIdx = at<int32_t>(ws, L.newIdx);
  float* newRho = at<float>(ws, L.newRho);
  const bool multi = h.select == GrassSelect::Multinomial;
  const double total = multi ? prefix[lines - 1] : 0.0;
  int64_t o = 0;
  for (int64_t i = 0; i < lines; ++i) {
    if (counts[i] <= 0) continue;
    const float rho = grassRho(h.select, lines, r, multi ? nrm[i] : 0.0, total);
    for (int32_t k = 0; k < counts[i] && o < r; ++k, ++o) {
      newIdx[o] = int32_t(i);
      newRho[o] = rho;
    }
  }
}

// out = the moments `in` carried to the new slots (srcSlot/srcScale; scale squared for v), 0 for
// slots without a source.
void remapMoments(const GrassTensor& T, const int32_t* srcSlot, const float* srcScale, const float* in, float* out,
                  bool squared) {
  const int64_t r = T.rank, len = grassLineLen(T);
  if (T.mode == GrassMode::Rows) {
    for (int64_t j = 0; j < r; ++j) {
      const int32_t src = srcSlot[j];
      const float s = squared ? srcScale[j] * srcScale[j] : srcScale[j];
      for (int64_t i = 0; i < len; ++i) out[j * len + i] = src >= 0 ? in[int64_t(src) * len + i] * s : 0.0f;
    }
  } else {
    for (int64_t k = 0; k < T.rows; ++k)
      for (int64_t j = 0; j < r; ++j) {
        const int32_t src = srcSlot[j];
        const float s = squared ? srcScale[j] * srcScale[j] : srcScale[j];
        out[k * r + j] = src >= 0 ? in[k * r + src] * s : 0.0f;
      }
  }
}

// 8-bit states at a refresh. keepState: each state is dequantized into f32 staging, carried like
// the f32 path's, and quantized again (refresh steps only: the staging is the f32 path's). Reset:
// the code of 0 with absmax 0.
void commitQuantized(const GrassTensor& T, const GrassHyper& h, void* ws, const GrassWorkspace& L,
                     const QuantMapHost& mapA, const QuantMapHost& mapB) {
  const int64_t count = grassCompactNumel(T), blocks = grassQBlocks(T);
  if (h.keepState) {
    float* carried = at<float>(ws, L.stagingM);
    float* old = at<float>(ws, L.stagingV);
    const int32_t* srcSlot = at<int32_t>(ws, L.srcSlot);
    const float* srcScale = at<float>(ws, L.srcScale);
    dequantizeBlockwise(T.codeM, T.absmaxM, count, old, DType::F32, kGrassQBlock, mapA);
    remapMoments(T, srcSlot, srcScale, old, carried, false);
    quantizeBlockwise(carried, DType::F32, count, T.codeM, T.absmaxM, kGrassQBlock, mapA);
    dequantizeBlockwise(T.codeV, T.absmaxV, count, old, DType::F32, kGrassQBlock, mapB);
    remapMoments(T, srcSlot, srcScale, old, carried, true);
    quantizeBlockwise(carried, DType::F32, count, T.codeV, T.absmaxV, kGrassQBlock, mapB);
    return;
  }
  const QuantFinder fA = mapA.finder, fB = mapB.finder;
  std::memset(T.codeM, int(quantFind<true>(0.0f, fA, mapA.table.data())), size_t(count));
  std::memset(T.codeV, int(quantFind<false>(0.0f, fB, mapB.table.data())), size_t(count));
  std::fill(T.absmaxM, T.absmaxM + blocks, 0.0f);
  std::fill(T.absmaxV, T.absmaxV + blocks, 0.0f);
}

// Replaces T's selection by ws.newIdx/newRho: moments remapped (keepState) or reset.
void commit(const GrassTensor& T, const GrassHyper& h, void* ws, const GrassWorkspace& L, const QuantMapHost* mapA,
            const QuantMapHost* mapB) {
  const int64_t r = T.rank, count = grassCompactNumel(T);
  const int32_t* newIdx = at<int32_t>(ws, L.newIdx);
  const float* newRho = at<float>(ws, L.newRho);
  int32_t* srcSlot = at<int32_t>(ws, L.srcSlot);
  float* srcScale = at<float>(ws, L.srcScale);
  int32_t* newAges = at<int32_t>(ws, L.newAges);
  const bool keep = h.keepState != 0;
  for (int64_t j = 0; j < r; ++j) {
    int32_t src = -1;
    if (keep) {
      const int32_t* p = std::lower_bound(T.indices, T.indices + r, newIdx[j]);
      if (p != T.indices + r && *p == newIdx[j]) src = int32_t(p - T.indices);
    }
    srcSlot[j] = src;
    srcScale[j] = src >= 0 ? grassCarryScale(newRho[j], T.rho[src]) : 1.0f;
    newAges[j] = src >= 0 ? T.ages[src] : 0;
  }
  if (T.quantized) {
    commitQuantized(T, h, ws, L, *mapA, *mapB);
  } else if (keep) {
    float* sm = at<float>(ws, L.stagingM);
    float* sv = at<float>(ws, L.stagingV);
    remapMoments(T, srcSlot, srcScale, T.expAvg, sm, false);
    remapMoments(T, srcSlot, srcScale, T.expAvgSq, sv, true);
    std::memcpy(T.expAvg, sm, size_t(count) * 4);
    std::memcpy(T.expAvgSq, sv, size_t(count) * 4);
  } else {
    std::fill(T.expAvg, T.expAvg + count, 0.0f);
    std::fill(T.expAvgSq, T.expAvgSq + count, 0.0f);
  }
  std::memcpy(T.indices, newIdx, size_t(r) * 4);
  std::memcpy(T.rho, newRho, size_t(r) * 4);
  std::memcpy(T.ages, newAges, size_t(r) * 4);
}

// ---- 8-bit states: pass 1 (the blocks' new absmax) and pass 3 (absmax takes it) -------------------

struct QBlockCtx {
  const GrassTensor* T;
  Q8View q;
  float beta1, beta2;
};

void quantizedAbsmax(void* c, int64_t b0, int64_t b1) {
  const QBlockCtx& x = *static_cast<const QBlockCtx*>(c);
  const GrassTensor& T = *x.T;
  const int64_t count = grassCompactNumel(T);
  float mBuf[kGrassQBlock], vBuf[kGrassQBlock];
  bool kept[kGrassQBlock];
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t s = b * kGrassQBlock, e = std::min(count, s + kGrassQBlock);
    float mx = 0.0f, vx = 0.0f;
    bool anyKept = false;
    for (int64_t i = s; i < e; ++i) {
      int64_t j, gi;
      const void* src;
      float m, v;
      kept[i - s] = !grassCompactElement(T, i, &j, &gi, &src);
      if (kept[i - s]) {
        grassQ8Load(T, x.q, i, m, v);
        anyKept = true;
      } else {
        grassQ8Moments(T, x.q, i, j, loadAsFloat(src, T.paramDtype, gi), x.beta1, x.beta2, m, v);
      }
      mBuf[i - s] = m;
      vBuf[i - s] = v;
      const float a = std::fabs(m);
      mx = a > mx ? a : mx;  // NaN never wins, as fmaxf on the device
      vx = v > vx ? v : vx;
    }
    T.newAbsmax[2 * b] = mx;
    T.newAbsmax[2 * b + 1] = vx;
    if (!anyKept) continue;
    for (int64_t i = s; i < e; ++i)
      if (kept[i - s]) grassQ8Store(T, x.q, i, mBuf[i - s], vBuf[i - s]);
  }
}

// ---- update ----------------------------------------------------------------------------------------

struct UpdateCtx {
  const GrassTensor* T;
  float beta1, beta2, eps, decay;
  Q8View q;
};

inline float quantizedAdam(const UpdateCtx& x, int64_t e, int64_t j, float g) {
  return grassQ8Adam(*x.T, x.q, e, j, g, x.beta1, x.beta2, x.eps);
}

template <DType PT>
void updateRows(void* c, int64_t j0a, int64_t j0b) {
  const UpdateCtx& x = *static_cast<const UpdateCtx*>(c);
  const GrassTensor& T = *x.T;
  const int64_t n = T.cols;
  for (int64_t j0 = j0a; j0 < j0b; ++j0) {
    int32_t line;
    int64_t j1;
    if (!ownedRun(T.indices, T.rank, T.rows, j0, &line, &j1)) continue;
    const int64_t wb = int64_t(line) * n;
    for (int64_t i = 0; i < n; ++i) {
      const float w = ld<PT>(T.param, wb + i);
      float acc = 0.0f;
      for (int64_t j = j0; j < j1; ++j) {
        const float g = T.compact != nullptr ? ld<PT>(T.compact, j * n + i) : ld<PT>(T.grad, wb + i);
        const float nn = T.quantized ? quantizedAdam(x, j * n + i, j, g)
                                     : grassAdam(T.rho[j] * g, T.expAvg[j * n + i], T.expAvgSq[j * n + i], x.beta1,
                                                 x.beta2, x.eps);
        acc = acc + T.coef[j] * nn;
      }
      st<PT>(T.param, wb + i, (w - acc) * x.decay);
    }
  }
}

template <DType PT>
void updateCols(void* c, int64_t k0, int64_t k1) {
  const UpdateCtx& x = *static_cast<const UpdateCtx*>(c);
  const GrassTensor& T = *x.T;
  const int64_t n = T.cols, r = T.rank;
  for (int64_t k = k0; k < k1; ++k) {
    for (int64_t j0 = 0; j0 < r; ++j0) {
      int32_t col;
      int64_t j1;
      if (!ownedRun(T.indices, r, n, j0, &col, &j1)) continue;
      const int64_t wi = k * n + col;
      const float w = ld<PT>(T.param, wi);
      float acc = 0.0f;
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t ci = k * r + j;
        const float g = T.compact != nullptr ? ld<PT>(T.compact, ci) : ld<PT>(T.grad, wi);
        const float nn = T.quantized ? quantizedAdam(x, ci, j, g)
                                     : grassAdam(T.rho[j] * g, T.expAvg[ci], T.expAvgSq[ci], x.beta1, x.beta2, x.eps);
        acc = acc + T.coef[j] * nn;
      }
      st<PT>(T.param, wi, (w - acc) * x.decay);
    }
  }
}

template <DType PT>
void updateDense(void* c, int64_t b, int64_t e) {
  const UpdateCtx& x = *static_cast<const UpdateCtx*>(c);
  const GrassTensor& T = *x.T;
  const float cf = T.coef[0];
  for (int64_t i = b; i < e; ++i) {
    const float nn = grassAdam(ld<PT>(T.grad, i), T.expAvg[i], T.expAvgSq[i], x.beta1, x.beta2, x.eps);
    const float acc = 0.0f + cf * nn;
    st<PT>(T.param, i, (ld<PT>(T.param, i) - acc) * x.decay);
  }
}

template <DType PT>
void updateTensor(UpdateCtx& x) {
  const GrassTensor& T = *x.T;
  if (T.mode == GrassMode::Rows) {
    parallelFor(T.rank, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, T.cols)), updateRows<PT>, &x);
  } else if (T.mode == GrassMode::Cols) {
    parallelFor(T.rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, T.rank)), updateCols<PT>, &x);
  } else {
    parallelFor(grassNumel(T), 16384, updateDense<PT>, &x);
  }
}

}  // namespace

void grassStep(GrassTensor* tensors, int32_t n, const GrassHyper& h, AdamwCounters* counters, void* ws,
               const GrassWorkspace& L, const QuantMapHost* mapA, const QuantMapHost* mapB) {
  if (h.skipNonFinite) {
    ScanCtx sc;
    sc.T = tensors;
    sc.refreshing = h.refreshing != 0;
    parallelFor(n, 1, scanTensors, &sc);
    if (sc.bad.load()) {
      counters->skipped += 1;  // the previous selection, the moments and W stay as they are
      return;
    }
  }
  if (h.refreshing) {
    for (int32_t k = 0; k < n; ++k) {
      if (tensors[k].mode == GrassMode::Dense) continue;
      select(tensors[k], h, ws, L);
      commit(tensors[k], h, ws, L, mapA, mapB);
    }
  }
  for (int32_t k = 0; k < n; ++k) {
    const GrassTensor& T = tensors[k];
    const bool dense = T.mode == GrassMode::Dense;
    for (int64_t j = 0; j < T.rank; ++j) {
      const int32_t t = T.ages[j] + 1;
      T.ages[j] = t;
      T.coef[j] = grassCoef(h.lr, dense ? 1.0f : h.scale, dense ? 1.0f : T.rho[j], h.beta1, h.beta2, t);
    }
  }
  const Q8View q8 = h.q8.blobA != nullptr ? q8View(h.q8.blobA, h.q8.blobB, h.q8.fA, h.q8.fB) : Q8View{};
  for (int32_t k = 0; k < n; ++k) {
    if (!tensors[k].quantized) continue;
    QBlockCtx qc{tensors + k, q8, h.beta1, h.beta2};
    parallelFor(grassQBlocks(tensors[k]), 16, quantizedAbsmax, &qc);
  }
  UpdateCtx x{nullptr, h.beta1, h.beta2, h.eps, grassDecay(h.lr, h.weightDecay), q8};
  for (int32_t k = 0; k < n; ++k) {
    x.T = tensors + k;
    switch (tensors[k].paramDtype) {
      case DType::BF16: updateTensor<DType::BF16>(x); break;
      case DType::F16: updateTensor<DType::F16>(x); break;
      default: updateTensor<DType::F32>(x); break;
    }
  }
  for (int32_t k = 0; k < n; ++k) {
    const GrassTensor& T = tensors[k];
    for (int64_t b = 0; b < grassQBlocks(T); ++b) {
      T.absmaxM[b] = T.newAbsmax[2 * b];
      T.absmaxV[b] = T.newAbsmax[2 * b + 1];
    }
  }
  counters->step += 1;
}

void grassSelect(const GrassTensor& T, const GrassHyper& h, void* ws, const GrassWorkspace& L, int32_t* idxOut,
                 float* rhoOut) {
  select(T, h, ws, L);
  std::memcpy(idxOut, at<int32_t>(ws, L.newIdx), size_t(T.rank) * 4);
  std::memcpy(rhoOut, at<float>(ws, L.newRho), size_t(T.rank) * 4);
}

void grassGatherRows(void* out, const void* src, DType d, int64_t rows, int64_t cols, const int32_t* idx,
                     int64_t count, const float* scale) {
  for (int64_t j = 0; j < count; ++j) {
    const int32_t line = idx[j];
    if (line < 0 || int64_t(line) >= rows) continue;
    const float sc = scale != nullptr ? scale[j] : 1.0f;
    for (int64_t i = 0; i < cols; ++i)
      storeFromFloat(out, d, j * cols + i, sc * loadAsFloat(src, d, int64_t(line) * cols + i));
  }
}

void grassGatherCols(void* out, const void* src, DType d, int64_t rows, int64_t cols, const int32_t* idx,
                     int64_t count) {
  const size_t es = size_t(dtypeSize(d));
  for (int64_t k = 0; k < rows; ++k)
    for (int64_t j = 0; j < count; ++j) {
      const int32_t col = idx[j];
      if (col < 0 || int64_t(col) >= cols) continue;
      std::memcpy(static_cast<uint8_t*>(out) + size_t(k * count + j) * es,
                  static_cast<const uint8_t*>(src) + size_t(k * cols + col) * es, es);
    }
}

void grassScatterRows(void* dst, DType d, int64_t rows, int64_t cols, const int32_t* idx, int64_t count,
                      const void* src, float alpha, const float* scale) {
  for (int64_t j0 = 0; j0 < count; ++j0) {
    int32_t line;
    int64_t j1;
    if (!ownedRun(idx, count, rows, j0, &line, &j1)) continue;
    const int64_t base = int64_t(line) * cols;
    for (int64_t i = 0; i < cols; ++i) {
      float acc = 0.0f;
      for (int64_t j = j0; j < j1; ++j) acc = acc + (alpha * (scale != nullptr ? scale[j] : 1.0f)) * loadAsFloat(src, d, j * cols + i);
      storeFromFloat(dst, d, base + i, loadAsFloat(dst, d, base + i) + acc);
    }
  }
}

}  // namespace cpu
}  // namespace slimopt
