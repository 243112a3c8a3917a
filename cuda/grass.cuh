// Grass (structured sparse projection, DESIGN §4): the tensor descriptor, the per-element and
// per-slot math, the selection's random draws and its reduction orders, shared by the CUDA kernels
// (cuda/grass.cu) and the CPU backend (csrc/cpu/grass.cc) so that both pick the same lines.
//
// Vocabulary. W is viewed as m×n (dim0 × rest). Grass selects r *lines* along the larger side:
// rows when m >= n (mode Rows: a line is a row of n elements), columns otherwise (mode Cols: a line
// is a column of m elements, read with stride n; nothing is transposed in memory). Slot j (0..r-1)
// holds line sigma_j; the slots are sorted by line index, duplicates (multinomial draws) adjacent.
// The compact gradient C and the moments m, v are r×n in Rows mode and m×r in Cols mode (the
// natural sub-matrix G[sigma,:] or G[:,sigma]); C = rho·G restricted to the selection.
// Mode Dense is plain Adam (GaLore convention) on a tensor that is not projected (1-D parameters
// of a group with a rank): a single slot, never reselected, so it shares the group's skip rule.
//
// Determinism. Selections must be identical on both backends, so everything that decides them is
// computed with exactly rounded double operations in one fixed order: row norms (a 256-lane
// pattern and a fixed tree), column norms (fixed segments of rows), the multinomial CDF (a fixed
// 1024-part scan), the draws (Philox words turned into doubles exactly) and rho. The Adam math
// that follows is f32 and may differ in the last bit between backends (FMA contraction on the
// device), like AdamW's.
#pragma once
#include <cstddef>
#include <cstdint>
#include "adamw.cuh"  // AdamwCounters, isFiniteFloat (and common.cuh)
#include "quant.cuh"  // the 8-bit state's code finder and rounding ops

namespace slimopt {

enum class GrassMode : int32_t { Rows = 0, Cols = 1, Dense = 2 };
enum class GrassSelect : int32_t { TopK = 0, Multinomial = 1, Uniform = 2 };

// One tensor of a group. Pointers are device pointers for CUDA, host pointers for the CPU.
struct GrassTensor {
  void* param;             // W, m×n row-major (Dense: numel elements)
  const void* grad;        // full gradient, same layout and dtype as W
  const void* compact;     // compact gradient (r×n Rows, m×r Cols) or null: read G's selected lines
  float* expAvg;           // compact-shaped (Dense: numel); null when quantized
  float* expAvgSq;
  // stateBits 8 (quantized): m and v as codes of the signed / unsigned dynamic map, compact-shaped,
  // blocks of 256 in flattened compact order, one absmax per block and state (as AdamW8bit).
  uint8_t* codeM;
  uint8_t* codeV;
  float* absmaxM;          // [grassQBlocks]
  float* absmaxV;
  float* newAbsmax;        // workspace [2 * grassQBlocks]: this step's absmax of m, v per block
  int32_t* indices;        // [rank], sorted ascending
  float* rho;              // [rank] (unused for Dense)
  int32_t* ages;           // [rank]: Adam steps each slot's moments have seen (Dense: [1])
  float* coef;             // [rank]: this step's step size per slot, lr·alpha·rho·sqrt(bc2)/bc1
  int64_t rows;            // m (Dense: 1)
  int64_t cols;            // n (Dense: numel)
  int64_t rank;            // r (Dense: 1)
  uint64_t seed;           // Philox key of this tensor's draws
  // First unit of this tensor in each multi-tensor launch (exclusive prefix over the list; set by
  // the glue for the compact/full configuration of the plan).
  int64_t scanBeginRefresh;
  int64_t scanBeginStep;
  int64_t updateBegin;
  int64_t slotBegin;
  int64_t qBlockBegin;     // first 8-bit block of this tensor in the group's quantized launches
  GrassMode mode;
  DType paramDtype;        // the gradient and the compact gradient have this dtype too
  int32_t quantized;       // 1: m, v are codeM/codeV + absmax (never for Dense)
  int32_t pad1;
};


struct GrassHyper {
  float lr, beta1, beta2, eps, weightDecay, scale;
  int32_t skipNonFinite;   // 1: a group with a non-finite gradient (what the step reads) is skipped
  int32_t refreshing;      // 1: this step reselects every Rows/Cols tensor of the group
  GrassSelect select;
  int32_t keepState;       // on reselection: carry the moments of lines selected again
  uint64_t refreshIndex;   // key of this refresh's draws (with each tensor's seed)
  Q8Maps q8;          // blobs null when no tensor of the group is quantized
};

// Units of each multi-tensor launch of a group (totals of the *Begin prefixes).
struct GrassUnits {
  int64_t scanRefresh = 0, scanStep = 0, update = 0, slot = 0, qBlocks = 0;
};

// ---- units of the multi-tensor launches -------------------------------------------------------

constexpr int kGrassThreads = 256;
constexpr int64_t kGrassFlatUnit = 16384;  // elements per unit of flat work (a multiple of 8)
constexpr int kGrassColRows = 4;           // W rows per unit in Cols mode
constexpr int kGrassNormLanes = 256;       // row norms: lane of element i is (i / 4) % 256
constexpr int64_t kGrassColSegment = 256;  // column norms: partial sums over 256 rows each
constexpr int kGrassScanParts = 1024;      // prefix sums: 1024 contiguous parts

SLIMOPT_HD int64_t grassCeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
SLIMOPT_HD int64_t grassLines(const GrassTensor& T) { return T.mode == GrassMode::Cols ? T.cols : T.rows; }
SLIMOPT_HD int64_t grassLineLen(const GrassTensor& T) { return T.mode == GrassMode::Cols ? T.rows : T.cols; }
SLIMOPT_HD int64_t grassNumel(const GrassTensor& T) { return T.rows * T.cols; }
SLIMOPT_HD int64_t grassCompactNumel(const GrassTensor& T) {
  return T.mode == GrassMode::Dense ? T.rows * T.cols : T.rank * grassLineLen(T);
}

// Non-finite scan: what the step reads. At a refresh (and for Dense tensors) the whole gradient
// (the norms read all of it); otherwise the compact gradient, or G's selected lines.
SLIMOPT_HD int64_t grassScanUnits(const GrassTensor& T, bool refreshing) {
  if (T.mode == GrassMode::Dense || refreshing) return grassCeilDiv(grassNumel(T), kGrassFlatUnit);
  if (T.compact != nullptr) return grassCeilDiv(grassCompactNumel(T), kGrassFlatUnit);
  if (T.mode == GrassMode::Rows) return T.rank;
  return grassCeilDiv(T.rows, kGrassColRows);
}
SLIMOPT_HD int64_t grassUpdateUnits(const GrassTensor& T) {
  if (T.mode == GrassMode::Dense) return grassCeilDiv(grassNumel(T), kGrassFlatUnit);
  if (T.mode == GrassMode::Rows) return T.rank;
  return grassCeilDiv(T.rows, kGrassColRows);
}
SLIMOPT_HD int64_t grassSlotUnits(const GrassTensor& T) { return grassCeilDiv(T.rank, kGrassThreads); }
constexpr int64_t kGrassQBlock = kQ8Block;
SLIMOPT_HD int64_t grassQBlocks(const GrassTensor& T) {
  return T.quantized ? grassCeilDiv(grassCompactNumel(T), kGrassQBlock) : 0;
}

// Exactly rounded double arithmetic: SLIMOPT_DDIV / SLIMOPT_DSQRT from common.cuh.

// b^t by binary exponentiation (the same products on both backends; pow() is not exactly rounded).
SLIMOPT_HD double grassPowInt(double b, int32_t t) {
  double r = 1.0, x = b;
  for (uint32_t e = uint32_t(t > 0 ? t : 0); e != 0; e >>= 1) {
    if (e & 1u) r = SLIMOPT_DMUL(r, x);
    x = SLIMOPT_DMUL(x, x);
  }
  return r;
}

// Step size of a slot whose moments have seen t steps (t >= 1): lr·alpha·rho·sqrt(bc2)/bc1, the
// GaLore convention (eps inside, before bias correction). Bias correction is per slot because
// moments restart at zero when a line is (re)selected.
SLIMOPT_HD float grassCoef(float lr, float alpha, float rho, float beta1, float beta2, int32_t t) {
  double bc1 = SLIMOPT_DADD(1.0, -grassPowInt(double(beta1), t));
  double bc2 = SLIMOPT_DADD(1.0, -grassPowInt(double(beta2), t));
  double s = SLIMOPT_DMUL(SLIMOPT_DMUL(double(lr), double(alpha)), double(rho));
  return float(SLIMOPT_DDIV(SLIMOPT_DMUL(s, SLIMOPT_DSQRT(bc2)), bc1));
}

// Decoupled decay after the update (GaLore order), applied to the lines a step writes.
SLIMOPT_HD float grassDecay(float lr, float wd) {
  return float(SLIMOPT_DADD(1.0, -SLIMOPT_DMUL(double(lr), double(wd))));
}

// The direction N = m/(sqrt(v) + eps) from the new moments (eps inside, GaLore convention).
SLIMOPT_HD float grassDirection(float m, float v, float eps) { return m / (sqrtf(v) + eps); }

// Adam on one compact element c = rho·g. Returns N.
SLIMOPT_HD float grassAdam(float c, float& m, float& v, float beta1, float beta2, float eps) {
  m = beta1 * m + (1.0f - beta1) * c;
  v = beta2 * v + (1.0f - beta2) * c * c;
  return grassDirection(m, v, eps);
}

// ---- 8-bit states (stateBits 8) -------------------------------------------------------------------
//
// The same Adam as grassAdam; only the storage of m and v changes. A step runs in three passes so
// that no f32 copy of the moments (nor of the direction N) is ever held: (1) per 256-block, the
// new m, v of every element (dequantized with the old absmax, updated with every op rounded on
// its own, so both passes and both backends get the same bits), their new absmax into newAbsmax;
// (2) the update as in the f32 path, recomputing m, v from the old codes, N from the f32 m, v, and
// re-encoding m, v with the new absmax (nearest code, as AdamW8bit); (3) absmax <- newAbsmax.
// Elements of a slot whose line is out of range (only a corrupt checkpoint has one) keep their
// value; pass 1 re-encodes them, since pass 2 never visits them.


// Where compact element e lives: its slot j and the gradient element it reads (in G, or in the
// compact gradient). False when the slot's line is out of range (the update skips it).
SLIMOPT_HD bool grassCompactElement(const GrassTensor& T, int64_t e, int64_t* j, int64_t* gi, const void** gsrc) {
  int64_t line;
  if (T.mode == GrassMode::Rows) {
    const int64_t jj = e / T.cols, i = e - jj * T.cols;
    line = T.indices[jj];
    *j = jj;
    *gi = T.compact != nullptr ? e : line * T.cols + i;
    if (line < 0 || line >= T.rows) return false;
  } else {
    const int64_t k = e / T.rank, jj = e - k * T.rank;
    line = T.indices[jj];
    *j = jj;
    *gi = T.compact != nullptr ? e : k * T.cols + line;
    if (line < 0 || line >= T.cols) return false;
  }
  *gsrc = T.compact != nullptr ? T.compact : T.grad;
  return true;
}

// m, v of compact element e before this step (dequantized with the block's current absmax).
SLIMOPT_HD void grassQ8Load(const GrassTensor& T, const Q8View& q, int64_t e, float& m, float& v) {
  const int64_t b = e / kGrassQBlock;
  q8Decode(T.codeM[e], T.codeV[e], T.absmaxM[b], T.absmaxV[b], q, m, v);
}

// Adam on compact element e of slot j (c = rho_j·g, rounded alone): its new f32 m, v.
SLIMOPT_HD void grassQ8Moments(const GrassTensor& T, const Q8View& q, int64_t e, int64_t j, float g, float beta1,
                               float beta2, float& m, float& v) {
  grassQ8Load(T, q, e, m, v);
  adamMomentsRn(SLIMOPT_FMUL(T.rho[j], g), m, v, beta1, beta2);
}

// Re-encodes element e's m, v with the block's new absmax (pass 1's newAbsmax).
SLIMOPT_HD void grassQ8Store(const GrassTensor& T, const Q8View& q, int64_t e, float m, float v) {
  const int64_t b = e / kGrassQBlock;
  T.codeM[e] = q8EncodeM(m, quantInverse(T.newAbsmax[2 * b]), q);
  T.codeV[e] = q8EncodeV(v, quantInverse(T.newAbsmax[2 * b + 1]), q);
}

// Pass 2 of compact element e of slot j: the same m, v as pass 1, re-encoded; N from the f32 m, v.
SLIMOPT_HD float grassQ8Adam(const GrassTensor& T, const Q8View& q, int64_t e, int64_t j, float g, float beta1,
                             float beta2, float eps) {
  float m, v;
  grassQ8Moments(T, q, e, j, g, beta1, beta2, m, v);
  grassQ8Store(T, q, e, m, v);
  return grassDirection(m, v, eps);
}

// ---- random draws --------------------------------------------------------------------------------

// Counter hi word of refresh k's draws: k in the top half, a tag of its own in the bottom half
// (randn uses hi = 0, stochastic rounding hi = t << 32 | tensor index: no overlap in practice).
constexpr uint32_t kGrassTag = 0x47525300u;  // "GRS"
SLIMOPT_HD uint64_t grassCounterHi(uint64_t refresh, uint32_t purpose) {
  return (refresh << 32) | uint64_t(kGrassTag + purpose);
}

// Uniform selection: line i's 64-bit key; the r smallest (ties: lower index) are the selection,
// a uniformly random r-subset.
SLIMOPT_HD uint64_t grassUniformKey(uint64_t seed, uint64_t refresh, int64_t line) {
  Philox4 p = philox4x32(uint64_t(line), grassCounterHi(refresh, 0), seed);
  return (uint64_t(p.v[0]) << 32) | uint64_t(p.v[1]);
}

// Multinomial draw j: a uniform double in [0, 1) with 53 random bits (exact, no rounding).
SLIMOPT_HD double grassDrawU(uint64_t seed, uint64_t refresh, int64_t j) {
  Philox4 p = philox4x32(uint64_t(j) >> 1, grassCounterHi(refresh, 1), seed);
  int h = int(j & 1);
  uint64_t a = uint64_t(p.v[2 * h] >> 5), b = uint64_t(p.v[2 * h + 1] >> 6);
  return double((a << 26) | b) * (1.0 / 9007199254740992.0);
}

// The line of draw u from the inclusive prefix sums of the line norms (total = prefix[L-1]).
// A zero total (all-zero gradient) falls back to uniform draws. The prefix is monotone up to one
// rounding at the seams of the scan's parts, so a zero-norm line is never returned: the walk
// moves to the nearest line with a positive norm (always one when total > 0).
SLIMOPT_HD int64_t grassPick(const double* prefix, const double* norms, int64_t L, double u) {
  const double total = prefix[L - 1];
  if (!(total > 0)) {
    int64_t i = int64_t(SLIMOPT_DMUL(u, double(L)));
    return i < 0 ? 0 : (i < L ? i : L - 1);
  }
  const double target = SLIMOPT_DMUL(u, total);
  int64_t lo = 0, hi = L;
  while (lo < hi) {
    int64_t mid = (lo + hi) >> 1;
    if (prefix[mid] > target) hi = mid;
    else lo = mid + 1;
  }
  if (lo >= L) lo = L - 1;
  int64_t i = lo;
  while (i < L && !(norms[i] > 0)) ++i;
  if (i == L) {
    i = lo;
    while (i > 0 && !(norms[i] > 0)) --i;
  }
  return i;
}

// rho of line i. topk 1; uniform sqrt(L/r); multinomial 1/sqrt(r·q_i), q_i = norm_i / total (with
// a zero total the draws were uniform, and so is rho).
SLIMOPT_HD float grassRho(GrassSelect sel, int64_t L, int64_t r, double norm, double total) {
  if (sel == GrassSelect::TopK) return 1.0f;
  if (sel == GrassSelect::Multinomial && total > 0 && norm > 0)
    return float(SLIMOPT_DSQRT(SLIMOPT_DDIV(total, SLIMOPT_DMUL(double(r), norm))));
  return float(SLIMOPT_DSQRT(SLIMOPT_DDIV(double(L), double(r))));
}

// Moments carried to a new slot are rescaled to the new rho (they estimate rho·G).
SLIMOPT_HD float grassCarryScale(float newRho, float oldRho) {
  float s = newRho / oldRho;
  return (oldRho > 0.0f && isFiniteFloat(s)) ? s : 1.0f;
}

// ---- workspace ---------------------------------------------------------------------------------

// One block of scratch per group, reused by each tensor's refresh in turn (they are serial on the
// stream), plus each tensor's per-step coefficients. Offsets in bytes, 256-aligned.
struct GrassWorkspace {
  size_t flag = 0, norms = 0, prefix = 0, partials = 0, keysA = 0, keysB = 0, valsA = 0, valsB = 0;
  size_t counts = 0, offsets = 0, newIdx = 0, newRho = 0, newAges = 0, srcSlot = 0, srcScale = 0;
  size_t stagingM = 0, stagingV = 0, cub = 0, coef = 0, qAbsmax = 0, total = 0;
  size_t cubBytes = 0;
  int64_t maxLines = 0, maxRank = 0, maxCompact = 0, maxPartials = 0, coefCount = 0, qBlockCount = 0;
  bool staging = false;
};

inline GrassWorkspace grassWorkspaceLayout(int64_t maxLines, int64_t maxRank, int64_t maxCompact,
                                           int64_t maxPartials, int64_t coefCount, bool staging,
                                           size_t cubBytes, int64_t qBlockCount = 0) {
  GrassWorkspace w;
  w.qBlockCount = qBlockCount;
  w.maxLines = maxLines; w.maxRank = maxRank; w.maxCompact = maxCompact;
  w.maxPartials = maxPartials; w.coefCount = coefCount; w.staging = staging; w.cubBytes = cubBytes;
  size_t at = 0;
  auto take = [&](size_t bytes) {
    size_t o = at;
    at += (bytes + 255) / 256 * 256;
    return o;
  };
  const size_t L = size_t(maxLines), R = size_t(maxRank);
  w.flag = take(16);
  w.norms = take(8 * L);
  w.prefix = take(8 * L);
  w.partials = take(8 * size_t(maxPartials));
  w.keysA = take(8 * L);
  w.keysB = take(8 * L);
  w.valsA = take(4 * L);
  w.valsB = take(4 * L);
  w.counts = take(4 * L);
  w.offsets = take(4 * L);
  w.newIdx = take(4 * R);
  w.newRho = take(4 * R);
  w.newAges = take(4 * R);
  w.srcSlot = take(4 * R);
  w.srcScale = take(4 * R);
  w.stagingM = take(staging ? 4 * size_t(maxCompact) : 0);
  w.stagingV = take(staging ? 4 * size_t(maxCompact) : 0);
  w.cub = take(cubBytes);
  w.coef = take(4 * size_t(coefCount));
  w.qAbsmax = take(8 * size_t(qBlockCount));  // each quantized tensor's newAbsmax
  w.total = at;
  return w;
}

}  // namespace slimopt
